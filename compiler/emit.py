"""The `emit` pass: per-node assembly text, with line table, sources and tensor layouts.

Each step appends instructions to the programs of the nodes it involves (compiler.plan.Ctx);
this module then writes one `.d1s` text: the machine, the DSL source (`.file`/`.source`, so the
debugger can list it), a `.meta` record, one `.tensor` with `.piece`s per input and output, and
one `.text` section per distinct program (nodes that run identical code share one section and
one code block). Every instruction follows a `.loc` naming the DSL line and column of the IR
node that caused it. Long runs of identical relays, which only relay nodes execute, become
counted loops.
"""

from __future__ import annotations

import json

from compiler.asmgen import Code
from compiler.grid import Grid
from compiler.layout import flat_boxes
from compiler.plan import Ctx, Step, Value
from d1isa.asm import is_plain_name, quote
from d1isa.machine import Machine

PRODUCER = "d1 compile"
RELAY_LOOP_MIN = 12


def tensor_pieces(v: Value, grid: Grid, role: str, nd_shape: tuple[int, ...]
                  ) -> list[tuple[int, int, int, tuple, tuple, tuple]]:
    """(x, y, addr, offset, shape, strides) of every piece of `v`: inputs are written to every
    node that holds a copy, outputs read from one holder per block."""
    L = v.layout
    isz = L.itemsize
    shape = tuple(v.shape) if v.shape else (1,)
    holders = L.holders() if role == "input" else L.owners()
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


def compress_relays(lines: list[str]) -> list[str]:
    """Runs of at least RELAY_LOOP_MIN identical `relay` lines become a loop in r13."""
    out: list[str] = []
    k = 0
    n = len(lines)
    label = 0
    while k < n:
        ln = lines[k]
        if ln.startswith("  relay "):
            e = k + 1
            while e < n and lines[e] == ln:
                e += 1
            run = e - k
            if run >= RELAY_LOOP_MIN:
                label += 1
                body, rest = divmod(run, 4)
                out.append(f"  li r13, {body}")
                out.append(f".R{label}:")
                out.extend([ln] * 4)
                out.append("  addi r13, r13, -1")
                out.append(f"  bnez r13, .R{label}")
                out.extend([ln] * rest)
            else:
                out.extend(lines[k:e])
            k = e
            continue
        out.append(ln)
        k += 1
    return out


def emit_program(ctx: Ctx, steps: list[Step]) -> None:
    """Run every step's emitter in order: the global message order of the whole program."""
    for st in steps:
        ctx.loc = st.loc
        st.emit(ctx)


def assembly_text(machine: Machine, grid: Grid, progs: dict[int, Code], filename: str,
                  source: str, tensors: list[tuple[str, str, Value, tuple[int, ...]]],
                  meta: dict) -> str:
    """The whole program as one .d1s text."""
    lines = [f"# Compiled by {PRODUCER} from {filename}; re-assembles with `d1 asm`.",
             f"# {grid.describe()}",
             f".machine {machine.to_json()}",
             f".file 0 {quote(filename)}",
             f".source 0 {quote(source)}",
             f".meta {json.dumps(meta, sort_keys=True, separators=(',', ':'))}"]
    for name, role, v, shape in tensors:
        dims = ",".join(str(d) for d in (shape if shape else (1,)))
        lines.append(f".tensor {_name(name)} {role} {v.dtype}[{dims}]")
        for x, y, addr, off, shp, strides in tensor_pieces(v, grid, role, shape):
            lines.append(f".piece {_name(name)} {x}, {y} {addr} offset "
                         f"{','.join(map(str, off))} shape {','.join(map(str, shp))} "
                         f"strides {','.join(map(str, strides))}")
    groups: dict[str, list[int]] = {}
    for nid in sorted(progs):
        code = progs[nid]
        if code.ninstr == 0:
            continue
        body = compress_relays(code.lines) if code.nrelay >= RELAY_LOOP_MIN else list(code.lines)
        body.append("  halt")
        groups.setdefault("\n".join(body), []).append(nid)
    for body, nids in sorted(groups.items(), key=lambda kv: kv[1][0]):
        where = [machine.node_xy(n) for n in nids]
        if len(where) == 1:
            lines.append(f".text node {where[0][0]},{where[0][1]}")
        else:
            lines.append(".text list " + " ".join(f"{x},{y}" for x, y in where))
        lines.append(body)
    return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    return name if is_plain_name(name) else quote(name)
