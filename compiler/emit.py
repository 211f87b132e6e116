"""The `emit` pass and the back end's last step: per-node programs as data, linked into an object.

Each step appends instructions to the programs of the nodes it involves (compiler.plan.Ctx,
compiler.asmgen.Code: instructions checked and encoded as they are built). `collect` gathers
them into an `Emitted`: one body per distinct node program (nodes that run identical code share
it, in order of their first node), each ending in `halt`; long runs of identical relays, which
only relay nodes execute, become counted loops. Then, from that one record:

- `link` lays it out into the `ObjectFile` through the assembler's own layout code
  (d1isa.asm.layout.Linker: labels and branches, code blocks shared by identical programs, the
  node map, tensor layouts, symbols, line table), with no assembly text in between. Every
  instruction's line-table row is (0, DSL line, DSL column, -1, -1): file 0 is the DSL source,
  and the assembly columns are -1 because the object comes from no assembly file.
- `assembly_text` writes it as `.d1s` for `--emit asm`: the machine, the DSL source (`.file` and
  `.source`, so the debugger can list it), a `.meta` record, one `.tensor` with `.piece`s per
  input, param and output, and one `.text` section per distinct program, its instructions after
  `.loc` lines naming their DSL line and column. `d1 asm` turns that text into the identical object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from compiler.asmgen import Code, CompilerLimit
from compiler.grid import Grid
from compiler.layout import flat_boxes
from compiler.plan import Ctx, Step, Value
from d1isa.asm import is_plain_name, quote
from d1isa.asm.layout import Linker, no_globals
from d1isa.asm.program import Instr, InstrSet, Item, render, section
from d1isa.asm.syntax import Diagnostics
from d1isa.errors import D1Error, SourceError
from d1isa.machine import Machine
from d1isa.objfile import ObjectFile

PRODUCER = "d1 compile"
RELAY_LOOP_MIN = 12
RELAY_LOOP_REG = "r13"


@dataclass
class Emitted:
    """The emitted program: per distinct node program its items and node ids, and what the
    object records besides code."""

    machine: Machine
    grid: Grid
    instrs: InstrSet
    bodies: list[tuple[list[Item], list[int]]]
    filename: str
    source: str
    tensors: list[tuple[str, str, Value, tuple[int, ...]]]
    meta: dict
    # A data-parallel program (compiler.dataparallel): chip 0's pieces of a tensor -> every
    # chip's (name, role, pieces).
    expand: Callable[[str, str, list[tuple]], list[tuple]] | None = None

    def pieces(self, name: str, role: str, v: Value, shape: tuple[int, ...]) -> list[tuple]:
        """The pieces of one tensor of the object (see `tensor_pieces`)."""
        out = tensor_pieces(v, self.grid, role, shape)
        return out if self.expand is None else self.expand(name, role, out)


def tensor_pieces(v: Value, grid: Grid, role: str, nd_shape: tuple[int, ...]
                  ) -> list[tuple[int, int, int, tuple, tuple, tuple]]:
    """(x, y, addr, offset, shape, strides) of every piece of `v`: inputs and params are written
    to every node that holds a copy, outputs read from one holder per block."""
    L = v.layout
    isz = L.itemsize
    shape = tuple(v.shape) if v.shape else (1,)
    holders = L.holders() if role in ("input", "param") else L.owners()
    out = []
    for i, j in holders:
        r0, r1, c0, c1 = L.block(i, j)
        nid = grid.nodes[i][j]
        x, y = grid.machine.node_xy(nid)
        if len(shape) == 1:
            out.append((x, y, v.addr, (c0,), (c1 - c0,), (isz,)))
            continue
        lead = shape[:-1]
        rstrides = []
        acc = L.stride
        for d in reversed(lead):
            rstrides.append(acc)
            acc *= d
        rstrides.reverse()
        for off, bshape, first in flat_boxes(lead, r0, r1):
            addr = v.addr + (first - r0) * L.stride
            out.append((x, y, addr, tuple(off) + (c0,), tuple(bshape) + (c1 - c0,),
                        tuple(rstrides) + (isz,)))
    return out


def compress_relays(items: list[Item], instrs: InstrSet) -> list[Item]:
    """Runs of at least RELAY_LOOP_MIN identical `relay` instructions (at one location, with no
    location change between them) become a loop counting down in r13."""
    out: list[Item] = []
    k = 0
    n = len(items)
    label = 0
    while k < n:
        it = items[k]
        if type(it) is Instr and it.mnemonic == "relay":
            e = k + 1
            while e < n and items[e] is it:
                e += 1
            run = e - k
            if run >= RELAY_LOOP_MIN:
                label += 1
                name = f".R{label}"
                body, rest = divmod(run, 4)
                out.append(instrs.instr("li", (RELAY_LOOP_REG, body), it.loc))
                out.append(instrs.label(name))
                out.extend([it] * 4)
                out.append(instrs.instr("addi", (RELAY_LOOP_REG, RELAY_LOOP_REG, -1), it.loc))
                out.append(instrs.instr("bnez", (RELAY_LOOP_REG, name), it.loc))
                out.extend([it] * rest)
            else:
                out.extend(items[k:e])
            k = e
            continue
        out.append(it)
        k += 1
    return out


def emit_program(ctx: Ctx, steps: list[Step]) -> None:
    """Run every step's emitter in order: the global message order of the whole program."""
    for st in steps:
        ctx.loc = st.loc
        try:
            st.emit(ctx)
        except CompilerLimit as e:
            if e.loc is None:
                e.loc = st.loc
            raise


def collect(ctx: Ctx, filename: str, source: str,
            tensors: list[tuple[str, str, Value, tuple[int, ...]]], meta: dict) -> Emitted:
    """The nodes' programs, each ending in `halt`, grouped by identical content. Instructions,
    labels and marks are interned by `InstrSet`, so equal programs are equal item tuples."""
    groups: dict[tuple, list[int]] = {}
    instrs = ctx.instrs
    # Nodes may share one Code object (every chip of a data-parallel program runs chip 0's):
    # each distinct object is turned into a body once.
    by_code: dict[int, list[int]] = {}
    for nid in sorted(ctx.progs):
        by_code.setdefault(id(ctx.progs[nid]), []).append(nid)
    for nids in by_code.values():
        code: Code = ctx.progs[nids[0]]
        if code.ninstr == 0:
            continue
        body = (compress_relays(code.items, instrs) if code.nrelay >= RELAY_LOOP_MIN
                else list(code.items))
        body.append(instrs.instr("halt", (), code.loc))
        groups.setdefault(tuple(body), []).extend(nids)
    bodies = [(list(body), sorted(nids)) for body, nids in groups.items()]
    bodies.sort(key=lambda bn: bn[1][0])
    return Emitted(ctx.machine, ctx.grid, instrs, bodies, filename, source, tensors, meta)


def _meta_json(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def link(em: Emitted) -> ObjectFile:
    """The object of the program, laid out by the assembler's layout code (no text)."""
    m = em.machine
    diags = Diagnostics(em.filename, em.source.split("\n"))
    linker = Linker(m, diags, no_globals, em.instrs.rows)
    defs = []
    for body, nids in em.bodies:
        sec = section(body)
        sec.nodes = nids
        linker.link_section(sec)
        defs.extend(("code", name, sec) for name in sec.labels)
    tensors = []
    for name, role, v, shape in em.tensors:
        layout = linker.tensor(name, role, v.dtype, tuple(shape) if shape else (1,), 1, 1)
        if layout is None:
            continue
        tensors.append(layout)
        for x, y, addr, off, shp, strides in em.pieces(name, role, v, shape):
            linker.piece(layout, m.node_id(x, y), addr, off, shp, strides, 1, 1)
        if role == "output":
            linker.check_cover(layout, 1, 1)
    symbols = linker.build_symbols(defs)
    # The metadata as the text would carry it: JSON with sorted keys.
    meta = json.loads(_meta_json(em.meta))
    obj = linker.finish(symbols, tensors, [em.filename], {em.filename: em.source}, meta)
    if obj is None:
        raise D1Error("internal compiler error: the generated program does not link:\n"
                      + SourceError(diags.sorted()).render())
    return obj


def assembly_text(em: Emitted) -> str:
    """The whole program as one .d1s text (it assembles to the object `link` makes)."""
    machine, grid = em.machine, em.grid
    lines = [f"# Compiled by {PRODUCER} from {em.filename}; re-assembles with `d1 asm`.",
             f"# {grid.describe()}",
             f".machine {machine.to_json()}",
             f".file 0 {quote(em.filename)}",
             f".source 0 {quote(em.source)}",
             f".meta {_meta_json(em.meta)}"]
    for name, role, v, shape in em.tensors:
        dims = ",".join(str(d) for d in (shape if shape else (1,)))
        lines.append(f".tensor {_name(name)} {role} {v.dtype}[{dims}]")
        for x, y, addr, off, shp, strides in em.pieces(name, role, v, shape):
            lines.append(f".piece {_name(name)} {x}, {y} {addr} offset "
                         f"{','.join(map(str, off))} shape {','.join(map(str, shp))} "
                         f"strides {','.join(map(str, strides))}")
    for body, nids in em.bodies:
        where = [machine.node_xy(n) for n in nids]
        if len(where) == 1:
            lines.append(f".text node {where[0][0]},{where[0][1]}")
        else:
            lines.append(".text list " + " ".join(f"{x},{y}" for x, y in where))
        lines.extend(render(it) for it in body)
    return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    return name if is_plain_name(name) else quote(name)
