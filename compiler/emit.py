"""The `emit` pass and the back end's last step: per-node programs as data, linked into an object.

Each step appends instructions to the programs of the nodes it involves (compiler.plan.Ctx,
compiler.asmgen.Code: instructions checked and encoded as they are built). `collect` gathers
them into an `Emitted`: one body per distinct node program, each ending in `halt`; long runs of
identical relays, which only relay nodes execute, become counted loops. Nodes that play the same
role share one body (compiler.spmd): where their programs differ only in the values some `li`s
load, those become registers each node starts with its own value in (the object's initial
registers). Then, from that one record:

- `link` lays it out into the `ObjectFile` through the assembler's own layout code
  (d1isa.asm.layout.Linker: labels and branches, code blocks shared by identical programs, the
  node map, tensor layouts, symbols, line table), with no assembly text in between. Every
  instruction's line-table row is (0, DSL line, DSL column, -1, -1): file 0 is the DSL source,
  and the assembly columns are -1 because the object comes from no assembly file.
- `assembly_text` writes it as `.d1s` for `--emit asm`: the machine, the DSL source (`.file` and
  `.source`, so the debugger can list it), a `.meta` record, one `.tensor` with `.piece`s per
  input, param and output, one `.text` section per distinct program, its instructions after
  `.loc` lines naming their DSL line and column, and the nodes' initial registers as `.init`
  lines in `.data` sections. `d1 asm` turns that text into the identical object.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler.asmgen import Code, CompilerLimit
from compiler.grid import Grid
from compiler.layout import flat_boxes
from compiler.plan import Ctx, Step, Value
from compiler.spmd import RELAY_LOOP_MIN, compress_relays, share  # noqa: F401 (tests use it)
from d1isa.asm import is_plain_name, quote
from d1isa.asm.layout import Linker, no_globals
from d1isa.asm.program import Instr, InstrSet, Item, render, section
from d1isa.asm.syntax import Diagnostics
from d1isa.errors import D1Error, SourceError
from d1isa.machine import Machine
from d1isa.objfile import DataInit, ObjectFile

PRODUCER = "d1 compile"


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
    init: dict[int, dict[int, int]] = field(default_factory=dict)   # node -> {register: value}
    data: list[DataInit] = field(default_factory=list)    # per-node tables (Ctx.table), resolved
    # Per live node with code: the pc at which each step begins on it, then the pc of its
    # `halt` (`step_pcs`; the debugger's record of how far a node is, compiler.debuginfo).
    step_pcs: dict[int, list[int]] = field(default_factory=dict)
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
    to every node that holds a copy (and to the host-placed transposes in `v.copies`, pieces
    with their strides swapped), outputs read from one holder per block."""
    out = _pieces(v, grid, role, nd_shape)
    if role in ("input", "param"):
        for c in v.copies:
            if not c.transposed:
                out += _pieces(c, grid, role, nd_shape)
                continue
            L = c.layout
            isz = L.itemsize
            for i, j in L.holders():
                r0, r1, c0, c1 = L.block(i, j)
                x, y = grid.machine.node_xy(grid.nodes[i][j])
                out.append((x, y, c.addr, (c0, r0), (c1 - c0, r1 - r0), (isz, L.stride)))
    return out


def _pieces(v: Value, grid: Grid, role: str, nd_shape: tuple[int, ...]
            ) -> list[tuple[int, int, int, tuple, tuple, tuple]]:
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


def item_pcs(body: list[Item]) -> list[int]:
    """The pc of each item of `body`, then the pc just past it."""
    pcs = [0] * (len(body) + 1)
    pc = 0
    for i, it in enumerate(body):
        pcs[i] = pc
        if type(it) is Instr:
            pc += len(it.words)
    pcs[len(body)] = pc
    return pcs


def step_pcs(marks: list[tuple[int, int]], index: list[int], body: list[Item], nsteps: int,
             pcs: list[int] | None = None) -> list[int]:
    """The pc at which each of `nsteps` steps begins in `body` (a node's final program, `halt`
    last), then the pc of that `halt`.

    `marks` are the node's (step, item index) starts recorded while emitting (Ctx.starts), in
    the items before relay compression; `index` maps those positions into `body`. A step that
    put no code on the node begins where the next one does. Steps never branch into each other
    (each kernel's loops stay within its own code), so a node whose pc lies in
    [pcs[k], pcs[k + 1]) is inside step k, and pcs[-1] is where it halts. `pcs`, if given, is
    `item_pcs(body)` (nodes sharing a program compute it once)."""
    if pcs is None:
        pcs = item_pcs(body)
    end = len(index) - 1                      # the old program's length: where `halt` goes
    out = []
    j = 0
    for k in range(nsteps):
        while j < len(marks) and marks[j][0] < k:
            j += 1
        out.append(pcs[index[marks[j][1] if j < len(marks) else end]])
    out.append(pcs[index[end]])
    return out


def emit_program(ctx: Ctx, steps: list[Step]) -> None:
    """Run every step's emitter in order: the global message order of the whole program."""
    for k, st in enumerate(steps):
        ctx.loc = st.loc
        ctx.step = k
        if ctx.traffic is not None:
            # messages are the step's first operand's unless the step says otherwise
            ctx.traffic.begin(k, st.ins[0].name if st.ins else st.label)
        try:
            st.emit(ctx)
        except CompilerLimit as e:
            if e.loc is None:
                e.loc = st.loc
            raise


def collect(ctx: Ctx, filename: str, source: str,
            tensors: list[tuple[str, str, Value, tuple[int, ...]]], meta: dict,
            nsteps: int = 0) -> Emitted:
    """The nodes' programs, each ending in `halt`, grouped into shared ones: by identical
    content, and with `options.spmd` also by role (compiler.spmd). Instructions, labels and
    marks are interned by `InstrSet`, so equal programs are equal item tuples. Each node's
    `step_pcs` over the `nsteps` steps are recorded too, in the program it runs."""
    programs: dict[int, list[Item]] = {}
    instrs = ctx.instrs
    spmd = getattr(ctx.options, "spmd", True)
    # Nodes may share one Code object (every chip of a data-parallel program runs chip 0's):
    # each distinct object is turned into one program list, which share() hashes once.
    made: dict[int, list[Item]] = {}
    for nid in sorted(ctx.progs):
        code: Code = ctx.progs[nid]
        if code.ninstr == 0:
            continue
        program = made.get(id(code))
        if program is None:
            program = made[id(code)] = list(code.items) + [instrs.instr("halt", (), code.loc)]
        programs[nid] = program
    init: dict[int, dict[int, int]] = {}
    pcs: dict[int, list[int]] = {}
    bodies: list[tuple[list[Item], list[int]]] = []
    if spmd:
        # share() makes the relay loops itself, also for runs whose length differs by node
        for body, nids, values, indexes in share(programs, instrs, ctx.machine):
            bodies.append((body, nids))
            init.update(values)
            at = item_pcs(body)
            seen: dict[tuple, list[int]] = {}   # nodes of one index and starts: one answer
            for n in nids:
                marks = ctx.starts.get(n, [])
                key = (id(indexes[n]), tuple(marks))
                got = seen.get(key)
                if got is None:
                    # the index covers the items and the halt, then the end: step_pcs wants
                    # the items, then the halt's position
                    got = seen[key] = step_pcs(marks, indexes[n][:-1], body, nsteps, at)
                pcs[n] = got
    else:
        groups: dict[tuple, list[int]] = {}
        for nid, raw in programs.items():
            index: list[int] = []
            body = compress_relays(raw, instrs, index)
            pcs[nid] = step_pcs(ctx.starts.get(nid, []), index[:-1], body, nsteps)
            groups.setdefault(tuple(body), []).append(nid)
        bodies = [(list(body), nids) for body, nids in groups.items()]
        bodies.sort(key=lambda bn: bn[1][0])
    return Emitted(ctx.machine, ctx.grid, instrs, bodies, filename, source, tensors, meta, init,
                   resolve_tables(ctx.tables, bodies), pcs)


def resolve_tables(tables: list[tuple[int, int, list[int | str]]],
                   bodies: list[tuple[list[Item], list[int]]]) -> list[DataInit]:
    """Per-node tables as initial SRAM bytes: a label entry becomes the code address of that
    label in the program the node runs."""
    if not tables:
        return []
    body_of = {n: k for k, (_, nids) in enumerate(bodies) for n in nids}
    labels: dict[int, dict[str, int]] = {}
    out = []
    for nid, addr, entries in tables:
        k = body_of[nid]
        if k not in labels:
            labels[k] = section(bodies[k][0]).labels
        words = [labels[k][e] if isinstance(e, str) else e for e in entries]
        out.append(DataInit(nid, addr, struct.pack(f"<{len(words)}I",
                                                   *(w & 0xFFFFFFFF for w in words))))
    return out


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
    for nid, regs in em.init.items():
        for reg, value in regs.items():
            linker.set_init(nid, reg, value)
    linker.data.extend(em.data)
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
    for d in em.data:
        x, y = machine.node_xy(d.node)
        lines.append(f".data node {x},{y}")
        lines.append(f".org {d.addr}")
        words = struct.unpack(f"<{len(d.data) // 4}I", d.data)
        for k in range(0, len(words), 8):
            lines.append(".i32 " + ", ".join(str(w) for w in words[k:k + 8]))
    rows: dict[tuple, list[int]] = {}
    for nid in sorted(em.init):
        rows.setdefault(tuple(sorted(em.init[nid].items())), []).append(nid)
    for row, nids in rows.items():
        lines.append(".data list " + " ".join("{},{}".format(*machine.node_xy(n)) for n in nids))
        lines.extend(f".init r{reg}, {value}" for reg, value in row)
    return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    return name if is_plain_name(name) else quote(name)
