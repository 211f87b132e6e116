"""SPMD code: nodes that play the same role in the program run one shared code block.

Kernels write each node's program on its own (compiler.asmgen.Code), with that node's numbers
as immediates: its block's row count in a loop's `li`, the relays it passes on, the address of
its slot in a table. Two nodes whose programs are the same instruction for instruction, except
for the values some `li`s load, play the same role. `share` finds them: it groups the node
programs by *shape* (each program with its `li` values blanked out); inside a group, an `li`
whose value is the same on every node stays as it is, and one whose value differs becomes
`mv rd, rP`, where rP is a register each node of the group starts the program with its own value
in (the object's initial registers: docs/ASSEMBLY.md, `.init`). Every node of the group then
runs the one shared block.

Why nothing changes but the code's size:

- `mv rd, rP` is `addi rd, rP, 0`: one ALU cycle, what a 32-bit `li` (`movi`) costs, and one
  less than a 64-bit one (`movi` + `movhi`). So no node's modelled time goes up, and the values
  every register holds at every step are the same as before.
- rP is a register no node's program uses anywhere (the kernels use r1..r15), so it holds its
  value for the whole run; `Emulator.restart` sets it again for the next run.
- Identical vectors of values share one register. A group that would need more registers than
  the machine has free is split by exact content instead, as if nothing were shared.

The nodes of a group are the ones whose code is the same up to those numbers: the relay
nodes of a chain, the nodes of one role in a reduction, every grid node of an elementwise
kernel with equal block shapes; where kernels loop with per-node trip counts instead of
unrolling, nodes with different amounts of work share too.
"""

from __future__ import annotations

from collections.abc import Hashable

from compiler.asmgen import MIN_SCALAR_REGS
from d1isa.asm.program import Instr, InstrSet, Item
from d1isa.machine import Machine

ALIASES = {"zero": 0, "sp": 30, "ra": 31}


def register_number(op: object) -> int | None:
    """The scalar register an operand names (a name, or the base of a memory operand)."""
    if type(op) is tuple and op:
        op = op[0]
    if type(op) is not str:
        return None
    if op in ALIASES:
        return ALIASES[op]
    if len(op) > 1 and op[0] == "r" and op[1:].isdigit():
        return int(op[1:])
    return None


def used_registers(bodies: list[list[Item]]) -> set[int]:
    """Scalar register numbers any instruction of these programs names."""
    seen: set[int] = set()
    used: set[int] = set()
    for body in bodies:
        for it in body:
            if type(it) is not Instr or id(it) in seen:
                continue
            seen.add(id(it))
            for op in it.ops:
                r = register_number(op)
                if r is not None:
                    used.add(r)
    return used


def free_registers(machine: Machine, used: set[int]) -> list[int]:
    """Registers no program touches, above the ones the kernels use, lowest first."""
    return [r for r in range(MIN_SCALAR_REGS, machine.scalar_regs) if r not in used]


def _shape(body: list[Item]) -> tuple[Hashable, ...]:
    """The program with every `li` value blanked out (interned items compare by identity)."""
    out: list[Hashable] = []
    for it in body:
        if type(it) is Instr and it.mnemonic == "li":
            out.append(("li", it.ops[0], it.loc))
        else:
            out.append(it)
    return tuple(out)


def share(bodies: dict[int, list[Item]], instrs: InstrSet, machine: Machine
          ) -> list[tuple[list[Item], list[int], dict[int, dict[int, int]]]]:
    """Node programs grouped into shared ones: (program, its nodes, {node: {register: value}})
    in order of each group's first node."""
    free = free_registers(machine, used_registers(list(bodies.values())))
    shapes: dict[tuple, list[int]] = {}
    for nid in sorted(bodies):
        shapes.setdefault(_shape(bodies[nid]), []).append(nid)
    out: list[tuple[list[Item], list[int], dict[int, dict[int, int]]]] = []
    for nids in shapes.values():
        out.extend(_one_shape(bodies, nids, free, instrs))
    out.sort(key=lambda g: g[1][0])
    return out


def _one_shape(bodies: dict[int, list[Item]], nids: list[int], free: list[int],
               instrs: InstrSet) -> list[tuple[list[Item], list[int], dict[int, dict[int, int]]]]:
    first = bodies[nids[0]]
    if len(nids) == 1:
        return [(first, nids, {})]
    regs: dict[tuple[int, ...], int] = {}
    varying: dict[int, int] = {}
    for k, it in enumerate(first):
        if type(it) is not Instr or it.mnemonic != "li":
            continue
        vec = tuple(bodies[n][k].ops[1] for n in nids)
        if all(v == vec[0] for v in vec):
            continue
        if vec not in regs:
            if len(regs) == len(free):
                return _exact(bodies, nids)
            regs[vec] = free[len(regs)]
        varying[k] = regs[vec]
    if not varying:
        return [(first, nids, {})]
    body = list(first)
    for k, reg in varying.items():
        it = first[k]
        body[k] = instrs.instr("mv", (it.ops[0], f"r{reg}"), it.loc)
    init = {n: {reg: vec[i] for vec, reg in regs.items()} for i, n in enumerate(nids)}
    return [(body, nids, init)]


def _exact(bodies: dict[int, list[Item]], nids: list[int]
           ) -> list[tuple[list[Item], list[int], dict[int, dict[int, int]]]]:
    """Nodes grouped by identical programs only (too many per-node values to share)."""
    groups: dict[tuple, list[int]] = {}
    for n in nids:
        groups.setdefault(tuple(bodies[n]), []).append(n)
    return [(bodies[g[0]], g, {}) for g in groups.values()]
