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

Relays are the other thing that differs between nodes of one role: in a redistribution every
grid node passes on the pieces of the nodes on one side of it bound for the other side, so the
runs of `relay` between its own messages have lengths that depend on where it is. Such runs are
blanked out of the shape too, and the shared program holds the longest run, entered by each node
at its own place (`jalr r0, rE, 0`, the address in an initial register), inside a counted loop
of four relays if it is long. That jump is the one thing sharing costs: one cycle per such run
on each node (measured: +9 cycles of 4,519 on layernorm, +11 of 3,051 on softmax, both on d1,
for objects 12 and 6.6 times smaller; every other recorded program's cycles are unchanged).
Runs of one length on every node stay as they were (counted loops from RELAY_LOOP_MIN relays).
"""

from __future__ import annotations

from collections.abc import Hashable

from compiler.asmgen import MIN_SCALAR_REGS
from d1isa.asm.program import Instr, InstrSet, Item, section
from d1isa.machine import Machine

ALIASES = {"zero": 0, "sp": 30, "ra": 31}
# Runs of this many identical relays become counted loops (four relays a trip) in RELAY_LOOP_REG.
RELAY_LOOP_MIN = 12
RELAY_LOOP_REG = "r13"
# A run whose length differs between the nodes of a group is unrolled up to this length (each
# node jumps to its own entry); longer ones loop.
DUFF_UNROLLED = 64


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


def tokens(body: list[Item], where: list[int] | None = None) -> tuple[list[Item], list[int]]:
    """The program with each run of one `relay` instruction written once, and the runs'
    lengths in order. `where`, if given, receives each item's token index."""
    toks: list[Item] = []
    runs: list[int] = []
    k, n = 0, len(body)
    while k < n:
        it = body[k]
        if type(it) is Instr and it.mnemonic == "relay":
            e = k + 1
            while e < n and body[e] is it:
                e += 1
            runs.append(e - k)
            if where is not None:
                where.extend([len(toks)] * (e - k))
            toks.append(it)
            k = e
            continue
        if where is not None:
            where.append(len(toks))
        toks.append(it)
        k += 1
    return toks, runs


def _shape(toks: list[Item]) -> tuple[Hashable, ...]:
    """The program with every `li` value blanked out and every relay run's length left out
    (interned items compare by identity)."""
    return tuple(("li", it.ops[0], it.loc) if type(it) is Instr and it.mnemonic == "li" else it
                 for it in toks)


Shared = tuple[list[Item], list[int], dict[int, dict[int, int]], dict[int, list[int]]]


def share(bodies: dict[int, list[Item]], instrs: InstrSet, machine: Machine) -> list[Shared]:
    """Node programs grouped into shared ones: (program, its nodes, {node: {register: value}},
    {node: index}) in order of each group's first node, where a node's index gives, for each
    item of its own program, the position in the shared one where it now begins (every relay
    of a run that became a loop, or a jump into a run, at the run's start), and then the length
    of the shared program. Runs of at least RELAY_LOOP_MIN relays of one length become counted
    loops, as `compress_relays` makes them. Identical programs are found first (by hashing them
    whole), so the work grows with the number of distinct programs, not of nodes."""
    distinct: dict[tuple, list[int]] = {}
    for nid in sorted(bodies):
        distinct.setdefault(tuple(bodies[nid]), []).append(nid)
    reps = list(distinct.values())
    free = free_registers(machine, used_registers([bodies[nids[0]] for nids in reps]))
    where: dict[int, list[int]] = {}
    toks = {}
    for nids in reps:
        where[nids[0]] = []
        toks[nids[0]] = tokens(bodies[nids[0]], where[nids[0]])
    shapes: dict[tuple, list[list[int]]] = {}
    for nids in reps:
        shapes.setdefault(_shape(toks[nids[0]][0]), []).append(nids)
    out: list[Shared] = []
    for members in shapes.values():
        group = _Group(instrs, free)
        shared = group.build([toks[nids[0]] for nids in members])
        if shared is None:
            # too many per-node values to share: one block per distinct program
            for nids in members:
                index: list[int] = []
                body = compress_relays(bodies[nids[0]], instrs, index)
                out.append((body, nids, {}, dict.fromkeys(nids, index)))
            continue
        values = group.init([nids[0] for nids in members])
        init = {n: values[nids[0]] for nids in members for n in nids} if values else {}
        indexes = {}
        for nids in members:
            index = [group.starts[t] for t in where[nids[0]]] + [len(shared)]
            for n in nids:
                indexes[n] = index
        out.append((shared, sorted(n for nids in members for n in nids), init, indexes))
    out.sort(key=lambda g: g[1][0])
    return out


class _Group:
    """The shared program of nodes of one shape, and the registers it reads their values
    from."""

    def __init__(self, instrs: InstrSet, free: list[int]) -> None:
        self.instrs = instrs
        self.free = free
        self.regs: dict[tuple[int, ...], int] = {}          # per-node values -> register
        self.entries: list[tuple[str, int, tuple[int, ...]]] = []   # label, reg, offsets
        self.taken = 0
        self.labels = 0
        self.starts: list[int] = []         # per token, where its code begins in the program

    def fresh(self) -> int | None:
        if self.taken == len(self.free):
            return None
        self.taken += 1
        return self.free[self.taken - 1]

    def reg(self, vec: tuple[int, ...]) -> int | None:
        """The register holding this per-node vector (None: no register is left)."""
        r = self.regs.get(vec)
        if r is None:
            r = self.fresh()
            if r is not None:
                self.regs[vec] = r
        return r

    def label(self) -> str:
        self.labels += 1
        return f".R{self.labels}"

    def build(self, progs: list[tuple[list[Item], list[int]]]) -> list[Item] | None:
        instrs = self.instrs
        first, _ = progs[0]
        body: list[Item] = []
        run = 0
        for k, it in enumerate(first):
            self.starts.append(len(body))
            if type(it) is not Instr:
                body.append(it)
                continue
            if it.mnemonic == "li":
                vec = tuple(p[0][k].ops[1] for p in progs)
                if all(v == vec[0] for v in vec):
                    body.append(it)
                    continue
                r = self.reg(vec)
                if r is None:
                    return None
                body.append(instrs.instr("mv", (it.ops[0], f"r{r}"), it.loc))
                continue
            if it.mnemonic == "relay":
                lengths = tuple(p[1][run] for p in progs)
                run += 1
                if all(n == lengths[0] for n in lengths):
                    body.extend(relay_run(it, lengths[0], instrs, self.label))
                elif not self._duff(body, it, lengths):
                    return None
                continue
            body.append(it)
        if self.entries:
            pcs = section(body).labels
            self.entries = [(name, r, tuple(pcs[name] + o for o in offsets))
                            for name, r, offsets in self.entries]
        return body

    def _duff(self, body: list[Item], it: Instr, lengths: tuple[int, ...]) -> bool:
        """Relay runs of different lengths on different nodes: one unrolled run that each node
        enters at its own place (`jalr` to a code address in a register: one cycle), inside a
        counted loop of four relays when the run is long."""
        instrs, loc = self.instrs, it.loc
        top = max(lengths)
        looped = top > DUFF_UNROLLED or min(lengths) >= RELAY_LOOP_MIN
        trips = tuple(-(-n // 4) for n in lengths)
        offsets = tuple(4 * t - n for t, n in zip(trips, lengths, strict=True)) if looped \
            else tuple(top - n for n in lengths)
        r_entry = self.fresh()          # each node's code address (known once laid out)
        r_trips = self.reg(trips) if looped and len(set(trips)) > 1 else None
        if r_entry is None or (looped and len(set(trips)) > 1 and r_trips is None):
            return False
        name = self.label()
        if looped:
            if r_trips is None:
                body.append(instrs.instr("li", (RELAY_LOOP_REG, trips[0]), loc))
            else:
                body.append(instrs.instr("mv", (RELAY_LOOP_REG, f"r{r_trips}"), loc))
        body.append(instrs.instr("jalr", ("r0", f"r{r_entry}", 0), loc))
        body.append(instrs.label(name))
        if looped:
            body.extend([it] * 4)
            body.append(instrs.instr("addi", (RELAY_LOOP_REG, RELAY_LOOP_REG, -1), loc))
            body.append(instrs.instr("bnez", (RELAY_LOOP_REG, name), loc))
        else:
            body.extend([it] * top)
        self.entries.append((name, r_entry, offsets))
        return True

    def init(self, nids: list[int]) -> dict[int, dict[int, int]]:
        vecs = [(r, vec) for vec, r in self.regs.items()] + [(r, v) for _, r, v in self.entries]
        if not vecs:
            return {}
        return {n: {r: vec[i] for r, vec in vecs} for i, n in enumerate(nids)}


def relay_run(it: Instr, n: int, instrs: InstrSet, label) -> list[Item]:
    """n relays, as a counted loop of four (counting down in RELAY_LOOP_REG) when n is at least
    RELAY_LOOP_MIN: the relay-only nodes' code does not grow with the traffic they pass on."""
    if n < RELAY_LOOP_MIN:
        return [it] * n
    name = label()
    trips, rest = divmod(n, 4)
    return ([instrs.instr("li", (RELAY_LOOP_REG, trips), it.loc), instrs.label(name)]
            + [it] * 4
            + [instrs.instr("addi", (RELAY_LOOP_REG, RELAY_LOOP_REG, -1), it.loc),
               instrs.instr("bnez", (RELAY_LOOP_REG, name), it.loc)]
            + [it] * rest)


def compress_relays(items: list[Item], instrs: InstrSet, index: list[int] | None = None
                    ) -> list[Item]:
    """Runs of at least RELAY_LOOP_MIN identical `relay` instructions (at one location, with no
    location change between them) become a loop counting down in RELAY_LOOP_REG (r13).

    `index`, if given, receives the new position of every old item and then the new length
    (len(items) + 1 entries); every relay of a compressed run maps to the loop's first item."""
    toks, runs = tokens(items)
    count = [0]

    def label() -> str:
        count[0] += 1
        return f".R{count[0]}"

    out: list[Item] = []
    k = 0
    for it in toks:
        if type(it) is Instr and it.mnemonic == "relay":
            n = runs[k]
            k += 1
            if index is not None:
                index.extend(range(len(out), len(out) + n) if n < RELAY_LOOP_MIN
                             else [len(out)] * n)
            out.extend(relay_run(it, n, instrs, label))
        else:
            if index is not None:
                index.append(len(out))
            out.append(it)
    if index is not None:
        index.append(len(out))
    return out
