"""SUMMA as SPMD code: every grid node runs the same program; where it is in the grid is data.

The message schedule is compiler.matmul's, unchanged: the same legs in the same rounds, the
same deferred receives across relay nodes, so the same argument says it cannot deadlock (each
node still meets its messages in the global order, and every link carries them in the order it
is filled). What changes is how a node's program is written. compiler.matmul writes each node's
rounds out in full, with the addresses of the panels it happens to receive, so on d1 every grid
node has its own thousand instructions, and on a 25-chip tile its own four thousand. Here:

- **Relative slots.** The operands are preskewed by a Latin square L(i, j) = (a i + b j) mod n,
  so node (i, j) holds K block k0 = L(i, j) of both A and B. The panel that comes from the grid
  node dj columns away is A's K block k0 + b dj, the one from di rows away is B's block
  k0 + a di: a node stores the pair of K block k0 + m (mod n) in slot m (m = 1..n-1, slot 0
  being its own storage), for every node the same function of (stream, number of panels
  received on it so far). Receives walk a pointer per stream (one `addi`, the step wrapping
  around at the ends of the slot range), and forwards send from where the panel was received.
- **Rounds as variants.** What a node does in one round (which directions it sends on, whose
  panel or its own, which it receives from, how many pieces it computes) is one of a few dozen
  *variants*; the program holds each variant once, as straight code ending in a jump to the
  next round's. A node's sequence of rounds is a per-node table in SRAM (placed by the object,
  Ctx.table): one code address per round in which the node does anything, `jalr` to it. A
  round costs four cycles of dispatch.
- **Compute.** Group 0 (the first 2 x 4 accumulator tiles) is open during the exchange: in each
  round after its sends a node multiplies one pair whose panels have both arrived, in the order
  they complete at that node (the pairs' slot offsets follow the round's entry in the table).
  After the last round it finishes group 0 from the table, stores it, and then computes every
  other group over its own pair and slots 1..n-1, straight code with the same immediates on every
  node. No accumulator is ever reloaded.

So a grid node's code depends only on the shape of its C block (and, where K is not a multiple
of the tile, on whether it owns the last K block): on d1, one block for all 256 grid nodes.

When the operands are not so arranged (a grid that is not square, preskew off, K blocks of
different widths, reach > 1, sub-rounds for a shallow FIFO), compiler.matmul's per-node code is
used, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from compiler.asmgen import COMM_LEN, Code, E, N, S, W
from compiler.comm import chunks
from compiler.layout import round_up
from compiler.matmul import ACC, ADDR_REG, B_LEN, REG, Matmul, _groups, _Node
from compiler.plan import Ctx, Value, scratch
from d1isa.machine import OPPOSITE

# Receive order inside a round: the global order's (see compiler.matmul): from W, N, E, S.
RECV_ORDER = (W, N, E, S)
SEND_ORDER = (E, W, S, N)
TABLE_REG = "r10"           # walks the node's table
STEPS_REG = "r11"
TMP = "r1"
COUNT_REG = B_LEN           # the group-0 remainder count, once the exchange is over
# What a round without a pair costs a node (it waits for the round's messages), and what computing
# another group's own pair while it waits costs it in all (zeroing and storing those tiles now, and
# loading them again later, against zeroing them then), in the compile-time model that decides
# when group 0 opens: a d1 round with 8 KiB panels, a 2 x 4 group of 8 x 8 tiles.
IDLE_COST = 145
FILL_COST = 80
# When the shared program is used (SpmdSumma.pays): on grids of at least SUMMA_SIDE x SUMMA_SIDE
# nodes (on smaller ones a round's few extra cycles are not lost in the few rounds there are, and
# per-node code is small anyway) whose nodes multiply at least ROUND_WORK cycles a round, or on
# any grid of SPMD_GRID nodes or more.
ROUND_WORK = 256
SUMMA_SIDE = 8
# At most this many registers (r5, r15 and r16 up) hold the chunk pointers and lengths of the
# exchange on several chips (SpmdSumma._registers); the rest stay free for compiler.spmd.
LEAN_REGS = 12
# B's tile-column pointers of a merged last group (SpmdSumma._node_groups), after the exchange.
MERGED_B = ("r6", "r7", "r8", "r9", "r3", ADDR_REG[N], ADDR_REG[S], ADDR_REG[W])
SPMD_GRID = 1024


def chip_grid_pays(graph, machine) -> bool:
    """Whether a program mapped onto a machine of several chips as one mesh should run on one
    chip's grid repeated (compiler.grid.choose_grid's per_chip): where that grid is square
    and its largest 2-D matmul gives every node at least ROUND_WORK cycles of matrix work per
    round of the preskewed SUMMA's exchange (the rounds number about P + Q), as 4096^3 on
    the tile's 80 x 80 does (49 tiles x 512 K steps a node). A smaller matmul (1024^3 there:
    2 x 2 tiles a node) would wait for its panels' 80 hops; it keeps the whole-mesh grid and
    the stream matmul."""
    from compiler.grid import chip_tiled_grid
    from compiler.ir import Op
    from compiler.layout import view_of
    if machine.chips < 2:
        return False
    g = chip_tiled_grid(machine)
    if g.P != g.Q:
        return False
    t = machine.mma_dim
    for node in graph.nodes:
        if node.op is not Op.MATMUL or max(x.ndim for x in node.inputs) > 2:
            continue
        (M, K), N = view_of(node.inputs[0].shape), node.inputs[1].shape[-1]
        cost = machine.cost_mma_bf16 if node.inputs[0].dtype == "bf16" else machine.cost_mma_f32
        mt, nt, kt = _ceil(_ceil(M, t), g.P), _ceil(_ceil(N, t), g.Q), _ceil(K, t)
        if mt * nt * kt * cost >= ROUND_WORK * (g.P + g.Q):
            return True
    return False


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class _Sends:
    """The first half of a node's round: its sends, then what it multiplies."""

    sends: tuple            # per SEND_ORDER: None, ("own", chunks) or ("fwd", chunks)
    work: tuple             # () | ("open", tiles) | ("pair", tiles) | ("fill", tiles)


@dataclass(frozen=True)
class _Recvs:
    """The second half: its receives, in the global order."""

    recvs: tuple            # per RECV_ORDER: None or (chunks, wraps)


@dataclass
class _Plan:
    """A grid node's table: per round it takes part in, its halves (with the pieces' slot
    offsets after a first half), then group 0's pieces left for after the exchange."""

    rounds: list[tuple[_Sends | None, list[int], _Recvs | None]] = field(default_factory=list)
    rest: list[int] = field(default_factory=list)
    opened: bool = False    # group 0 opened during the exchange
    filled: int = 0         # groups 1..filled have their own pair done (and stored)
    a_len: int = 0          # the first chunk of its row's A panels, its column's B panels
    b_len: int = 0

    def entries(self, labels: dict) -> list[int | str]:
        out: list[int | str] = []
        for snd, offsets, rcv in self.rounds:
            if snd is not None:
                out.append(labels[snd])
                out.extend(offsets)
            if rcv is not None:
                out.append(labels[rcv])
        return out


class SpmdSumma(Matmul):
    """C = A @ B with A skewed "A" and B skewed "B" by the same Latin square on an n x n grid,
    K cut into n blocks of equal width: compiler.matmul's SUMMA schedule, as one program."""

    @staticmethod
    def applicable(a: Value, b: Value, grid, machine, options) -> bool:
        LA, LB = a.layout, b.layout
        if not (grid.P == grid.Q >= 2 and options.reach == 1 and options.double_buffer
                and getattr(options, "spmd", True)):
            return False
        if LA.skew != "A" or LB.skew != "B" or LA.skew_ab != LB.skew_ab:
            return False
        if LA.col_bounds != LB.row_bounds or machine.accumulators < 8:
            return False
        t = machine.mma_dim
        kb = LA.col_bounds
        steps = {-(-(kb[k + 1] - kb[k]) // t) for k in range(len(kb) - 1)}
        if 0 in steps:
            return False
        # K blocks of different widths (4096 over 80 grid columns: 6 or 7 tiles): a node reads
        # each pair's step count from its table. Only on machines of several chips, so that
        # one chip's code stays what it was (compiler.matmul's per-node rounds).
        if len(steps) != 1 and machine.chips == 1:
            return False
        return SpmdSumma.pays(a, b, grid, machine)

    @staticmethod
    def pays(a: Value, b: Value, grid, machine) -> bool:
        """Whether one program for every node costs (about) nothing here: a round of the
        shared code costs a few cycles more than one written for its node (two jumps, a load
        per pair), which is lost in a node's matrix work when every node multiplies at least
        ROUND_WORK cycles per round of the exchange on a grid of at least SUMMA_SIDE rows; and on
        a grid of SPMD_GRID nodes or more the shared program is used whatever it costs, since
        per-node code would grow with the machine."""
        if grid.size >= SPMD_GRID:
            return True
        if grid.P < SUMMA_SIDE:
            return False
        t = machine.mma_dim
        cost = machine.cost_mma_bf16 if a.dtype == "bf16" else machine.cost_mma_f32
        mt = -(-a.layout.max_rows // t)
        nt = -(-b.layout.max_cols // t)
        kt = -(-a.layout.cols // t)
        work = mt * nt * kt * cost
        return work >= ROUND_WORK * (grid.P + grid.Q)

    def __init__(self, out: Value, a: Value, b: Value, loc, label, grid, machine) -> None:
        super().__init__(out, a, b, loc, label, grid, machine, "summa", True, 1)
        n = grid.P
        LA, LB = a.layout, b.layout
        self.n = n
        # Per K block, its mmak step count; "ragged" when they differ, and then a node reads
        # the count of each pair it multiplies from its table (compiler.summa's module notes).
        self.ksteps = [self._steps(p) for p in range(len(self.panels))]
        self.ragged = len(set(self.ksteps)) > 1
        self.steps = self.ksteps[0]
        slot_a = LA.alloc_rows * LA.stride
        slot_b = round_up(max(k1 - k0 for k0, k1 in self.panels), self.tile) * LB.stride
        self.slot = round_up(max(slot_a, slot_b), 64)
        self.msgs = self._messages()
        self.plans = self._plan_nodes()
        if self.plans is None:
            return          # sub-rounds: compiler.matmul's per-node code (its own temps)
        # Slots 1..n-1 of A and B panels; the table: the node's rounds, then group 0's rest.
        self.temps = [scratch(f"{out.name}.apanels", (n - 1) * self.slot),
                      scratch(f"{out.name}.bpanels", (n - 1) * self.slot)]
        self._registers()
        extra = (lambda p: len(p.rest) + self.n + 1) if self.ragged else (lambda p: 0)
        words = max((2 * len(p.rounds) + sum(len(o) for _, o, _ in p.rounds) + 4
                     + len(p.rest) + extra(p) for p in self.plans.values()), default=1)
        # (vector loads of the step counts may read a register's width past the end)
        self.tables = [scratch(f"{out.name}.rounds", 4 * words + 64 * bool(self.ptrs))]

    def _registers(self) -> None:
        """On a machine of several chips, where registers allow: one pointer per stream and
        chunk index (chunk k of every panel lies k * max_message_bytes from its start) and one
        register per chunk length the panels have, all set once before the first round. A
        forward then sends straight from the pointers, and a receive moves each pointer on by
        the same whole slots: no `li` and no pointer arithmetic between the chunks. Empty
        where it does not apply (one chip keeps its code)."""
        self.lens: dict[int, str] = {}
        self.ptrs: dict[int, tuple[str, ...]] = {}
        if self.machine.chips < 2:
            return
        sizes = set()
        for plan in self.plans.values():
            for snd, _, rcv in plan.rounds:
                sizes |= {x[1] for x in (snd.sends if snd else ()) if x is not None}
                sizes |= {x[0] for x in (rcv.recvs if rcv else ()) if x is not None}
        nch = max((len(x) for x in sizes), default=1)
        lens = sorted({n for x in sizes for n in x})
        free = [COMM_LEN, B_LEN] + [f"r{k}" for k in range(16, self.machine.scalar_regs)]
        need = len(lens) + 4 * (nch - 1)
        if need > min(len(free), LEAN_REGS):
            return
        self.lens = dict(zip(lens, free, strict=False))
        more = iter(free[len(lens):])
        self.ptrs = {d: (ADDR_REG[d],) + tuple(next(more) for _ in range(nch - 1))
                     for d in (E, W, S, N)}

    def _node_groups(self, nr: int, nc: int) -> tuple[list, bool]:
        """The node's accumulator groups, and whether the last is a merged one: on several
        chips a last band of one tile row whose groups fit the accumulators together is one
        group (7 tiles of a 7 x 7 block: 8 pointers and one step count per slot, against 9 and
        two). Computed after the exchange only (its B pointers use stream registers), never
        as a fill."""
        groups = _groups(nr, nc, self.gr, self.gc, self.tile)
        row = groups[-1][-1][0]                 # the last tile row
        last = [g for g in groups if {rt for rt, _ in g} == {row}]
        if (self.machine.chips < 2 or len(last) < 2 or len(last) == len(groups)
                or sum(len(g) for g in last) > len(ACC)):
            return groups, False
        return groups[:-len(last)] + [[t for g in last for t in g]], True

    def _steps(self, p: int) -> int:
        k0, k1 = self.panels[p]
        return -(-(k1 - k0) // self.tile)

    # ---- the relative slots -------------------------------------------------------------------

    def _k0(self, i: int, j: int) -> int:
        a, b = self.ins[0].layout.skew_ab
        return (a * i + b * j) % self.n

    def _stream_step(self, d: int) -> int:
        """How the relative slot moves from one panel of a stream to the next (mod n): panels
        travelling east come from the west (dj = -1, -2, ...), and so on."""
        a, b = self.ins[0].layout.skew_ab
        return {E: -b, W: b, S: -a, N: a}[d] % self.n

    def _pair_steps(self, k0: int, m: int) -> list[int]:
        """The table word after a pair's slot offset: its step count, where they differ."""
        return [self.ksteps[(k0 + m) % self.n]] if self.ragged else []

    def _slot_addr(self, kind: str, m: int) -> int:
        base = self.temps[0 if kind == "A" else 1].addr
        return base + (m - 1) * self.slot

    # ---- per-node plans -----------------------------------------------------------------------

    def _plan_nodes(self) -> dict[tuple[int, int], _Plan] | None:
        """Each grid node's rounds (variants) and compute, from the message schedule; None if
        the schedule has sub-rounds or a stream brings two panels to a node in one round."""
        g = self.grid
        sends: dict[tuple[int, int], dict[int, dict[int, list]]] = {}
        recvs: dict[tuple[int, int], dict[int, dict[int, list]]] = {}
        for m in self.msgs:
            if m.send[1] or m.key[1]:
                return None
            snd = sends.setdefault(m.sender, {}).setdefault(m.send[0], {})
            snd.setdefault(m.d, []).append(m)
            last = m.hops[-1]
            if last[1] is None:
                return None
            rcv = recvs.setdefault(last[1], {}).setdefault(m.key[0], {})
            rcv.setdefault(m.d, []).append(m)
        # one panel per stream and round, its chunks in order
        for per_round in list(sends.values()) + list(recvs.values()):
            for by_dir in per_round.values():
                for items in by_dir.values():
                    if len({(x.kind, x.panel) for x in items}) > 1:
                        return None
        plans: dict[tuple[int, int], _Plan] = {}
        for i in range(g.P):
            for j in range(g.Q):
                plans[(i, j)] = self._plan_node(i, j, sends.get((i, j), {}),
                                                recvs.get((i, j), {}))
        return plans

    def _plan_node(self, i: int, j: int, sends: dict, recvs: dict) -> _Plan:
        """The node's rounds, and what it multiplies in each (after its sends, before its
        receives): group 0 is opened (zeroed, the own pair) once a pair of received panels is
        complete, then takes one complete pair a round; until then a round that would wait
        computes the own pair of the next group (stored, so that group starts from it later).
        Pairs complete in different rounds at different nodes, so each node's order is its
        table's."""
        nd = self.nodes[(i, j)]
        computes = nd.nr > 0 and nd.nc > 0
        groups, merged = self._node_groups(nd.nr, nd.nc) if computes else ([], False)
        rounds = sorted(set(sends) | set(recvs))
        count = {d: 0 for d in (E, W, S, N)}        # panels received so far, per stream
        have_a: set[int] = set()
        have_b: set[int] = set()
        k0 = self._k0(i, j)
        done: list[int] = []                         # relative slots computed (group 0)
        ready: list[int] = []                        # complete pairs not yet computed
        plan = _Plan()
        nfill = len(groups) - merged       # groups that may be computed while waiting, + 1
        open_at = self._open_round(rounds, recvs, k0, nfill) if computes else 0
        for q, r in enumerate(rounds):
            by_send = sends.get(r, {})
            snd = []
            for d in SEND_ORDER:
                if d not in by_send:
                    snd.append(None)
                    continue
                snd.append(("own" if r == 0 else "fwd", tuple(x.nbytes for x in by_send[d])))
            work, offsets = (), []
            if computes:
                if plan.opened and ready:
                    m = ready.pop(0)
                    done.append(m)
                    offsets = [(m - 1) * self.slot] + self._pair_steps(k0, m)
                    work = ("pair", _tiles(groups[0]))
                elif not plan.opened and (q >= open_at or plan.filled + 1 >= nfill):
                    plan.opened = True
                    work = ("open", _tiles(groups[0]))
                elif not plan.opened:
                    plan.filled += 1
                    work = ("fill", _tiles(groups[plan.filled]))
            rcv = []
            by_recv = recvs.get(r, {})
            for d in RECV_ORDER:
                trav = OPPOSITE[d]              # panels from the west travel east
                items = by_recv.get(trav)
                if not items:
                    rcv.append(None)
                    continue
                step = self._stream_step(trav)
                before = (count[trav] * step) % self.n  # slot of the last panel (0 = start)
                after = before + step
                wraps = after >= self.n
                count[trav] += 1
                rcv.append((tuple(x.nbytes for x in items), wraps))
                last = items[-1]
                rel = (last.panel - k0) % self.n
                if rel != after % self.n:
                    raise AssertionError(f"matmul {self.label}: node ({i},{j}) receives panel "
                                         f"{last.panel} in slot {after % self.n}, not {rel}")
                (have_a if last.kind == "A" else have_b).add(rel)
                if rel in have_a and rel in have_b and computes:
                    ready.append(rel)
            half1 = _Sends(tuple(snd), work) if work or any(snd) else None
            half2 = _Recvs(tuple(rcv)) if any(rcv) else None
            plan.rounds.append((half1, offsets, half2))
            # the first chunk's length of its row's A panels and its column's B panels
            firsts = [(d, x[1][0]) for d, x in zip(SEND_ORDER, snd, strict=True) if x]
            firsts += [(d, x[0][0]) for d, x in zip(RECV_ORDER, rcv, strict=True) if x]
            for d, n in firsts:
                if d in (E, W):
                    plan.a_len = plan.a_len or n
                else:
                    plan.b_len = plan.b_len or n
        if computes:
            plan.rest = [w for m in ready for w in [(m - 1) * self.slot]
                         + self._pair_steps(k0, m)]
            if len(done) + len(ready) != self.n - 1:
                raise AssertionError(f"matmul {self.label}: node ({i},{j}) pairs "
                                     f"{sorted(done + ready)}")
        return plan

    def _open_round(self, rounds: list[int], recvs: dict, k0: int, ngroups: int) -> int:
        """The round (an index into the node's rounds) in which group 0 opens: the one that
        leaves the fewest rounds after it without a complete pair to multiply, given that the
        rounds before it compute other groups' own pairs (at most ngroups - 1 of them)."""
        usable: list[int] = []          # per pair, the first round index it can be used in
        seen_a: set[int] = set()
        seen_b: set[int] = set()
        for q, r in enumerate(rounds):
            for items in recvs.get(r, {}).values():
                last = items[-1]
                rel = (last.panel - k0) % self.n
                (seen_a if last.kind == "A" else seen_b).add(rel)
                if rel in seen_a and rel in seen_b:
                    usable.append(q + 1)
        best = (1 << 60, 0)
        for start in range(min(ngroups, len(rounds))):
            idle, used = 0, 0
            for q in range(start + 1, len(rounds)):
                if bisect_right(usable, q) > used:           # usable is in round order
                    used += 1
                else:
                    idle += 1
            best = min(best, (idle * IDLE_COST + start * FILL_COST, start))
        return best[1]

    # ---- emission -----------------------------------------------------------------------------

    def emit(self, ctx: Ctx) -> None:
        if self.plans is None:
            super().emit(ctx)
            return
        self._sanitize(ctx)
        self._report(ctx, self.msgs)
        self._emit_relays(ctx)
        halves = {h for p in self.plans.values() for r in p.rounds for h in (r[0], r[2])
                  if h is not None}
        halves = sorted(halves, key=repr)
        prefix = ctx.unique("M")
        labels = {h: f"{prefix}V{k}" for k, h in enumerate(halves)}
        done = f"{prefix}X"
        shared = Code(ctx.instrs)               # the rounds' code, once for every node
        shared.at(ctx.loc)
        for h in halves:
            shared.place(labels[h])
            if isinstance(h, _Sends):
                self._emit_sends(shared, h)
            else:
                self._emit_recvs(shared, h)
        finish: dict[tuple[int, int], Code] = {}
        for (i, j), plan in self.plans.items():
            nd = self.nodes[(i, j)]
            computes = nd.nr > 0 and nd.nc > 0
            if not (plan.rounds or computes):
                continue
            code = ctx.gcode(i, j)
            per = 2 if self.ragged else 1
            entries = (plan.entries(labels) + [done, int(plan.opened), len(plan.rest) // per]
                       + plan.rest + [plan.filled])
            if self.ragged:
                # word 0: the own pair's step count; after the rest: slot m's, m = 1..n-1
                k0 = self._k0(i, j)
                entries = ([self.ksteps[k0]] + entries
                           + [self.ksteps[(k0 + m) % self.n] for m in range(1, self.n)])
            ctx.table(ctx.grid.nodes[i][j], self.tables[0], entries)
            self._preamble(code, nd, plan)
            _append(code, shared)
            code.place(done)
            if computes:
                key = (nd.nr, nd.nc)
                if key not in finish:
                    finish[key] = Code(ctx.instrs)
                    finish[key].at(ctx.loc)
                    self._finish(finish[key], nd, prefix)
                _append(code, finish[key])

    def _emit_relays(self, ctx: Ctx) -> None:
        """Relay nodes pass the legs on in the global order, as compiler.matmul has them."""
        sends: dict[tuple, list] = {}
        recvs: dict[tuple, list] = {}
        for m in self.msgs:
            sends.setdefault(m.send, []).append(m)
            recvs.setdefault(m.key[:2], []).append(m)
        for rnd in sorted(set(sends) | set(recvs)):
            for m in sends.get(rnd, ()):
                h = 0
                while m.hops[h][1] is None:
                    ctx.code(m.hops[h][0]).relay(OPPOSITE[m.d], m.d)
                    h += 1
                m.h0 = h
            for m in recvs.get(rnd, ()):
                for h in range(m.h0, len(m.hops)):
                    nid, node, _ = m.hops[h]
                    if node is None:
                        ctx.code(nid).relay(OPPOSITE[m.d], m.d)

    def _preamble(self, code: Code, nd: _Node, plan: _Plan) -> None:
        """Group 0 open, every stream's pointer at its (virtual) slot 0 where its last chunk
        would be (a receive moves it on by whole slots, less the chunk offset it stands at),
        the chunk lengths, and the jump to the first round."""
        if self.ptrs:
            for d in (E, W, S, N):
                base = self._slot_addr("A" if d in (E, W) else "B", 0)
                for k, reg in enumerate(self.ptrs[d]):
                    code.op("li", reg, base + k * self.machine.max_message_bytes)
            for n, reg in self.lens.items():
                code.op("li", reg, n)
            code.op("li", TABLE_REG, self.tables[0].addr + 4 * self.ragged)
            if not self.ragged:
                code.op("li", STEPS_REG, self.steps)
            self._dispatch(code, 0)
            return
        last = {OPPOSITE[d]: sum(rv[0][:-1]) for _, _, rcv in plan.rounds if rcv is not None
                for d, rv in zip(RECV_ORDER, rcv.recvs, strict=True) if rv is not None
                and not self.ragged}
        for d in (E, W, S, N):
            code.op("li", ADDR_REG[d], self._slot_addr("A" if d in (E, W) else "B", 0)
                    + last.get(d, 0))
        code.op("li", COMM_LEN, plan.a_len)
        code.op("li", B_LEN, plan.b_len)
        if self.ragged:
            code.op("li", TABLE_REG, self.tables[0].addr + 4)
        else:
            code.op("li", STEPS_REG, self.steps)
            code.op("li", TABLE_REG, self.tables[0].addr)
        self._dispatch(code, 0)

    def _dispatch(self, code: Code, skip: int) -> None:
        """Jump to the next half-round: its address is the table word after `skip` words."""
        code.op("ld32u", TMP, (TABLE_REG, 4 * skip))
        code.op("addi", TABLE_REG, TABLE_REG, 4 * (skip + 1))
        code.op("jalr", "r0", TMP, 0)

    def _chunks(self, code: Code, op: str, d: int, reg: str, len_reg: str,
                sizes: tuple[int, ...]) -> None:
        """The chunks of one panel from/into [reg], reg ending at the last chunk; the length
        register holds the first chunk's length between messages."""
        for k, n in enumerate(sizes):
            if k:
                code.op("addi", reg, reg, sizes[k - 1])
            if n != sizes[0] or (k and sizes[k - 1] != n) or (self.ragged and not k):
                code.op("li", len_reg, n)
            code.op(op, d, reg, len_reg)
        if sizes[-1] != sizes[0] and not self.ragged:
            code.op("li", len_reg, sizes[0])
        if self.ragged and len(sizes) > 1 and reg != TMP:
            code.op("addi", reg, reg, -sum(sizes[:-1]))

    def _emit_sends(self, code: Code, h: _Sends) -> None:
        A, B = self.ins
        for d, s in zip(SEND_ORDER, h.sends, strict=True):
            if s is None:
                continue
            how, sizes = s
            if self.ptrs:
                self._lean_chunks(code, "sendb", d, d, sizes, how == "own")
                continue
            reg = ADDR_REG[d]
            len_reg = COMM_LEN if d in (E, W) else B_LEN
            if how == "own":
                reg = TMP
                code.op("li", TMP, A.addr if d in (E, W) else B.addr)
            elif len(sizes) > 1 and not self.ragged:
                code.op("addi", reg, reg, -sum(sizes[:-1]))
            self._chunks(code, "sendb", d, reg, len_reg, sizes)
        skip = 0
        if h.work:
            how, (rows, cols) = h.work
            tiles = [(rt, ct) for rt in rows for ct in cols]
            if how in ("open", "fill"):
                self._tiles_zero(code, tiles)
                self._own_steps(code)
                self._own_piece(code, rows, cols)
                if how == "fill":
                    self._tiles_store(code, tiles)
            else:
                code.op("ld32u", TMP, (TABLE_REG, 0))
                skip = 1
                if self.ragged:
                    code.op("ld32u", STEPS_REG, (TABLE_REG, 4))
                    skip = 2
                self._slot_piece(code, rows, cols, TMP)
        self._dispatch(code, skip)

    def _lean_chunks(self, code: Code, op: str, d: int, trav: int, sizes: tuple[int, ...],
                     own: bool) -> None:
        """The chunks of one panel toward or from d, through the stream's chunk pointers and
        the length registers (SpmdSumma._registers); a node's own panel from its block."""
        A, B = self.ins
        for k, n in enumerate(sizes):
            if own:
                reg = TMP
                if k:
                    code.op("addi", TMP, TMP, sizes[k - 1])
                else:
                    code.op("li", TMP, A.addr if d in (E, W) else B.addr)
            else:
                reg = self.ptrs[trav][k]
            code.op(op, d, reg, self.lens[n])

    def _emit_recvs(self, code: Code, h: _Recvs) -> None:
        for d, rv in zip(RECV_ORDER, h.recvs, strict=True):
            if rv is None:
                continue
            sizes, wraps = rv
            trav = OPPOSITE[d]                  # direction the panel travels
            step = self._stream_step(trav) - (self.n if wraps else 0)
            if self.ptrs:
                for reg in self.ptrs[trav]:     # every chunk's pointer, to the next slot
                    code.op("addi", reg, reg, step * self.slot)
                self._lean_chunks(code, "recvb", d, trav, sizes, False)
                continue
            reg = ADDR_REG[trav]
            len_reg = COMM_LEN if d in (E, W) else B_LEN
            back = 0 if self.ragged else sum(sizes[:-1])
            code.op("addi", reg, reg, step * self.slot - back)
            self._chunks(code, "recvb", d, reg, len_reg, sizes)
        self._dispatch(code, 0)

    # ---- compute ------------------------------------------------------------------------------

    def _group_tiles(self, rows: tuple, cols: tuple) -> list[tuple[int, int]]:
        return [(rt, ct) for rt in rows for ct in cols]

    def _own_steps(self, code: Code) -> None:
        """The own pair's step count, from word 0 of the table, where counts differ."""
        if self.ragged:
            code.op("li", TMP, self.tables[0].addr)
            code.op("ld32u", STEPS_REG, (TMP, 0))

    def _own_piece(self, code: Code, rows: tuple, cols: tuple, bregs: tuple = ()) -> None:
        A, B = self.ins
        bregs = bregs or REG[6:6 + len(cols)]
        for k, rt in enumerate(rows):
            code.op("li", REG[2 + k], A.addr + rt * self.tile * A.layout.stride)
        for k, ct in enumerate(cols):
            code.op("li", bregs[k], B.addr + ct * self.tile_bytes)
        self._mmaks(code, rows, cols, A.layout.stride, bregs)

    def _slot_piece(self, code: Code, rows: tuple, cols: tuple, off: str) -> None:
        """Group-0 tiles over the pair whose slot offset is in register `off`."""
        A, B = self.ins
        ta, tb = self._slot_addr("A", 1), self._slot_addr("B", 1)
        for k, rt in enumerate(rows):
            code.op("addi", REG[2 + k], off, ta + rt * self.tile * A.layout.stride)
        for k, ct in enumerate(cols):
            code.op("addi", REG[6 + k], off, tb + ct * self.tile_bytes)
        self._mmaks(code, rows, cols, A.layout.stride)

    def _mmaks(self, code: Code, rows: tuple, cols: tuple, sa: int, bregs: tuple = ()) -> None:
        sb = self.ins[1].layout.stride
        bregs = bregs or REG[6:6 + len(cols)]
        code.ops(self.mmak, [(ACC[a], REG[2 + rows.index(rt)], bregs[cols.index(ct)],
                              STEPS_REG, sa, sb)
                             for a, (rt, ct) in enumerate(self._group_tiles(rows, cols))])

    def _finish(self, code: Code, nd: _Node, prefix: str) -> None:
        """After the exchange (the table at: opened, count, the pairs' offsets, filled): group 0
        opened if it was not, its remaining pairs, stored; then every other group: from its
        stored own pair if the node computed that while waiting, else from zero and its own
        pair, over slots 1..n-1."""
        A = self.ins[0]
        groups, merged = self._node_groups(nd.nr, nd.nc)
        rows, cols = _tiles(groups[0])
        opened, skip, top = f"{prefix}O", f"{prefix}S", f"{prefix}G"
        code.op("ld32u", TMP, (TABLE_REG, 0))
        code.op("bnez", TMP, opened)
        self._tiles_zero(code, groups[0])
        self._own_steps(code)
        self._own_piece(code, rows, cols)
        code.place(opened)
        code.op("ld32u", COUNT_REG, (TABLE_REG, 4))
        code.op("addi", TABLE_REG, TABLE_REG, 8)
        code.op("beqz", COUNT_REG, skip)
        code.place(top)
        code.op("ld32u", TMP, (TABLE_REG, 0))
        if self.ragged:
            code.op("ld32u", STEPS_REG, (TABLE_REG, 4))
        code.op("addi", TABLE_REG, TABLE_REG, 8 if self.ragged else 4)
        self._slot_piece(code, rows, cols, TMP)
        code.op("addi", COUNT_REG, COUNT_REG, -1)
        code.op("bnez", COUNT_REG, top)
        code.place(skip)
        self._tiles_store(code, groups[0])
        lanes = self.machine.vector_lanes_f32
        vsteps = self.ragged and bool(self.ptrs) and -(-(self.n - 1) // lanes) <= \
            self.machine.vector_regs
        if len(groups) > 1:
            code.op("ld32u", COUNT_REG, (TABLE_REG, 0))      # groups whose own pair is done
            if vsteps:
                # slot m's step count in lane (m - 1) % lanes of vector register (m - 1) // lanes:
                # one `vext` (1 cycle) per group and slot instead of a load (2)
                for v in range(-(-(self.n - 1) // lanes)):
                    code.op("vld", f"v{v}", (TABLE_REG, 4 + 4 * lanes * v))
        for g, tiles in enumerate(groups[1:], start=1):
            rows, cols = _tiles(tiles)
            # a merged last group (one tile row): its B pointers in r3 (no second A row) and
            # the stream pointers, free after the exchange
            bregs = MERGED_B[:len(cols)] if merged and g == len(groups) - 1 else ()
            fresh, go = f"{prefix}F{g}", f"{prefix}P{g}"
            if bregs:
                go = fresh
            else:
                code.op("li", TMP, g)
                code.op("blt", COUNT_REG, TMP, fresh)
                self._tiles_store(code, tiles, load=True)
                code.op("j", go)
            code.place(fresh)
            self._tiles_zero(code, tiles)
            self._own_steps(code)
            self._own_piece(code, rows, cols, bregs)
            if not bregs:
                code.place(go)
            for m in range(1, self.n):
                if vsteps:
                    code.op("vext", STEPS_REG, f"v{(m - 1) // lanes}", (m - 1) % lanes)
                elif self.ragged:
                    code.op("ld32u", STEPS_REG, (TABLE_REG, 4 * m))
                for k, rt in enumerate(rows):
                    code.op("li", REG[2 + k], self._slot_addr("A", m)
                            + rt * self.tile * A.layout.stride)
                for k, ct in enumerate(cols):
                    code.op("li", (bregs or REG[6:])[k], self._slot_addr("B", m)
                            + ct * self.tile_bytes)
                self._mmaks(code, rows, cols, A.layout.stride, bregs)
            self._tiles_store(code, tiles)


def _tiles(tiles: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tile rows and columns of a group of C tiles."""
    return tuple(sorted({rt for rt, _ in tiles})), tuple(sorted({ct for _, ct in tiles}))


def _append(code: Code, part: Code) -> None:
    """A node's program continues with code built once for many nodes."""
    code.items.extend(part.items)
    code.ninstr += part.ninstr
    code.known.clear()


# ---- plain layouts on large grids: no table, a handful of numbers per node ----------------------


@dataclass
class _Stream:
    """One node's part in one direction of travel: whether it sends its own block that way,
    how many blocks it receives, and whether it passes them on (relayb: stores and forwards in
    one instruction) or is the last node that needs them (recvb)."""

    own: bool = False
    recvs: int = 0
    forward: bool = False


class SpmdStream(Matmul):
    """C = A @ B with both operands in plain block layouts on a large grid, as SPMD code whose
    per-node numbers are a few words of a table read once.

    A node owns A's K block j (j its grid column) and B's K block i (i its grid row), and the
    blocks flow as four streams, one per direction of travel. A node first sends its own block
    each way a node that multiplies it lies, then, in *iteration* k, takes the k-th block of
    each stream that reaches it (the block of grid column j - 1 - k from the west, j + 1 + k
    from the east, ...) with `relayb`, which stores it and sends it on, or with `recvb` at the
    last node that needs it. A node stores the block of grid column o (row o) in slot o, so where
    everything is, and what every pair of panels multiplies, is the same on every node: it copies
    its own blocks into their slots first, and multiplies the panels in K order once the
    exchange is over (the grids this is for have small blocks; the exchange is what takes
    time). Its numbers (the iterations, and per stream how many blocks it takes) are a table
    in SRAM: the code is the same for every node with the same C block and the same streams.

    Why it cannot deadlock, with FIFOs that hold a block's chunks (a node's own blocks go out
    before it takes any, so each must fit; otherwise compiler.matmul's rounds are used): order
    the blocks of a line by iteration and,
    within one, by the stream order E, W, S, N; every node takes each of its links' blocks in
    that order. By induction on this order, the first block not yet taken has been sent: its
    sender took everything before it (its own block, sent before iteration 0, or the block it
    passes on, which precedes it in the order). The node that takes it has taken everything
    before it too, so it is waiting for exactly this block, and where it passes it on there is
    room: what the next node has not yet taken on that link comes later in the order. Relay
    nodes between grid nodes pass each iteration's eastward block, then its westward one
    (southward, then northward), in the same order.
    """

    @staticmethod
    def applicable(a: Value, b: Value, grid, machine, options) -> bool:
        LA, LB = a.layout, b.layout
        if not (options.reach == 1 and getattr(options, "spmd", True)
                and grid.size >= SPMD_GRID):
            return False
        if LA.skew is not None or LB.skew is not None or machine.accumulators < 8:
            return False
        # A node's own blocks go out before it takes any: each must fit its link's FIFO.
        maxmsg, depth = machine.max_message_bytes, machine.fifo_depth
        return (len(chunks(LA.alloc_rows * LA.stride, maxmsg)) <= depth
                and len(chunks(LB.alloc_rows * LB.stride, maxmsg)) <= depth)

    def __init__(self, out: Value, a: Value, b: Value, loc, label, grid, machine) -> None:
        super().__init__(out, a, b, loc, label, grid, machine, "stream", True, 1)
        LA, LB = a.layout, b.layout
        g = grid
        self.slot_a = round_up(LA.alloc_rows * LA.stride, 64)
        self.b_bytes = LB.alloc_rows * LB.stride
        self.slot_b = round_up(self.b_bytes, 64)
        self.temps = [scratch(f"{out.name}.ablocks", g.Q * self.slot_a),
                      scratch(f"{out.name}.bblocks", g.P * self.slot_b)]
        self.tables = [scratch(f"{out.name}.streams", 4 * 7)]
        ka, kb = LA.col_bounds, LB.row_bounds
        bounds = sorted(set(ka) | set(kb))
        # panels: (A block, B block, k0, k1), the common refinement of both K splits
        self.parts = []
        for k0, k1 in zip(bounds, bounds[1:], strict=False):
            if k1 > k0:
                ja = max(x for x in range(len(ka) - 1) if ka[x] <= k0)
                ib = max(x for x in range(len(kb) - 1) if kb[x] <= k0)
                self.parts.append((ja, ib, k0, k1))
        self.nr = [LA.block_shape(i, 0)[0] for i in range(g.P)]
        self.nc = [LB.block_shape(0, j)[1] for j in range(g.Q)]
        # the grid columns and rows whose nodes multiply (every node's streams read them)
        self.col_users = [x for x in range(g.Q) if self.nc[x] > 0]
        self.row_users = [y for y in range(g.P) if self.nr[y] > 0]

    # ---- who sends and receives what ---------------------------------------------------------

    def _streams(self, i: int, j: int) -> dict[int, _Stream]:
        """Per direction of travel, node (i, j)'s part: blocks go only as far as the last node
        that multiplies them."""
        g = self.grid
        out = {d: _Stream() for d in (E, W, S, N)}
        users = self.col_users
        if self.nr[i] > 0 and users:
            self._line(out[E], out[W], j, g.Q, users[0], users[-1])
        users = self.row_users
        if self.nc[j] > 0 and users:
            self._line(out[S], out[N], i, g.P, users[0], users[-1])
        return out

    @staticmethod
    def _line(up: _Stream, down: _Stream, x: int, n: int, lo: int, hi: int) -> None:
        """Position x of a line of n nodes whose users lie in lo..hi: `up` travels towards
        higher positions (blocks of x - 1, x - 2, ...), `down` towards lower ones."""
        up.own = x < hi
        if 1 <= x <= hi:
            up.recvs = x
            up.forward = x < hi
        down.own = x > lo
        if lo <= x < n - 1:
            down.recvs = n - 1 - x
            down.forward = x > lo

    # ---- emission -----------------------------------------------------------------------------

    def emit(self, ctx: Ctx) -> None:
        self._sanitize(ctx)
        g = self.grid
        A = self.ins[0]
        maxmsg = self.machine.max_message_bytes
        prefix = ctx.unique("T")
        shared: dict[tuple, Code] = {}
        b_chunks = tuple(n for _, n in chunks(self.b_bytes, maxmsg))
        for i in range(g.P):
            a_chunks = tuple(n for _, n in chunks(self.nr[i] * A.layout.stride, maxmsg))
            for j in range(g.Q):
                st = self._streams(i, j)
                computes = self.nr[i] > 0 and self.nc[j] > 0
                if not computes and not any(s.own or s.recvs for s in st.values()):
                    continue
                code = ctx.gcode(i, j)
                self._own_copies(code, i, j)
                k = max(s.recvs for s in st.values())
                full = min((s.recvs for s in st.values() if s.recvs), default=0)
                words = [k, max(full - 1, 0), k - max(full, 1)] + \
                        [k - st[d].recvs for d in (E, W, S, N)]
                ctx.table(g.nodes[i][j], self.tables[0], words)
                key = (a_chunks, b_chunks,
                       tuple((st[d].own, st[d].recvs > 0, st[d].forward) for d in (E, W, S, N)),
                       (self.nr[i], self.nc[j]) if computes else None)
                part = shared.get(key)
                if part is None:
                    part = shared[key] = Code(ctx.instrs)
                    part.at(ctx.loc)
                    self._exchange(part, st, a_chunks, b_chunks, f"{prefix}{len(shared)}_")
                    if computes:
                        self._compute(part, i, j)
                self._registers(code, i, j, a_chunks, b_chunks)
                _append(code, part)
                if ctx.traffic is not None:
                    self._report_streams(ctx, i, j, st, a_chunks, b_chunks)
        self._relays(ctx)

    def _report_streams(self, ctx: Ctx, i: int, j: int, st: dict[int, _Stream],
                        a_chunks: tuple, b_chunks: tuple) -> None:
        """Node (i, j)'s own blocks, each way as far as the last node that multiplies them,
        for the mapping report."""
        for a_side, chain, a, b in self.own_legs(i, j, st):
            nids = chain[a:b + 1] if b > a else chain[b:a + 1][::-1]
            sizes = a_chunks if a_side else b_chunks
            v = self.ins[0 if a_side else 1]
            ctx.traffic.path(v.name, nids, sum(sizes), len(sizes), slices=[v.layout.block(i, j)])

    def own_legs(self, i: int, j: int, st: dict[int, _Stream] | None = None):
        """Each way node (i, j) sends its own blocks (as far as the last node that multiplies
        them): (A's block or not, the line's chain, the node's position on it, the far end's)."""
        g = self.grid
        for d, leg in (st or self._streams(i, j)).items():
            if not leg.own:
                continue
            a_side = d in (E, W)
            if a_side:
                chain, pos, x, users = g.row_chains[i], g.row_chain_index(i), j, self.col_users
            else:
                chain, pos, x, users = g.col_chains[j], g.col_chain_index(j), i, self.row_users
            yield a_side, chain, pos[x], pos[users[-1] if d in (E, S) else users[0]]

    def _own_copies(self, code: Code, i: int, j: int) -> None:
        """The node's own blocks into their slots: what it sends, and where the K-order
        multiplication reads them."""
        from compiler.comm import copy_rect
        A, B = self.ins
        if self.nr[i] > 0:
            copy_rect(code, A.addr, A.layout.stride, self._a_slot(j), A.layout.stride,
                      self.nr[i], A.layout.stride // A.layout.itemsize, A.dtype, True)
        if self.nc[j] > 0:
            copy_rect(code, B.addr, B.layout.stride, self._b_slot(i), B.layout.stride,
                      B.layout.alloc_rows, B.layout.stride // B.layout.itemsize, B.dtype, True)

    def _a_slot(self, o: int) -> int:
        return self.temps[0].addr + o * self.slot_a

    def _b_slot(self, o: int) -> int:
        return self.temps[1].addr + o * self.slot_b

    def _registers(self, code: Code, i: int, j: int, a_chunks: tuple, b_chunks: tuple) -> None:
        """Each stream's pointer at the node's own slot, the first chunk's lengths, and the
        table's numbers: the iteration count, and per stream the count at or below which it
        no longer receives (r8..r11)."""
        code.op("li", ADDR_REG[E], self._a_slot(j))
        code.op("li", ADDR_REG[W], self._a_slot(j))
        code.op("li", ADDR_REG[S], self._b_slot(i))
        code.op("li", ADDR_REG[N], self._b_slot(i))
        code.op("li", COMM_LEN, a_chunks[0] if a_chunks else 0)
        code.op("li", B_LEN, b_chunks[0] if b_chunks else 0)
        code.op("li", TMP, self.tables[0].addr)
        for k, reg in enumerate(STREAM_REGS):
            code.op("ld32u", reg, (TMP, 4 * (k + 3)))
        code.op("ld32u", TMP, (TMP, 0))

    def _exchange(self, code: Code, st: dict[int, _Stream], a_chunks: tuple, b_chunks: tuple,
                  prefix: str) -> None:
        """The own blocks out, then the iterations: r1 counts down the iterations left, and a
        stream takes a block while r1 is above its number. The iterations in which every
        stream the node takes part in still has a block (the table gives their count) run
        without a test; the first and the rest test each stream."""
        for d in SEND_ORDER:
            if st[d].own:
                sizes = a_chunks if d in (E, W) else b_chunks
                len_reg = COMM_LEN if d in (E, W) else B_LEN
                self._chunk_ops(code, "sendb", d, ADDR_REG[d], len_reg, sizes, back=True)
        if not any(s.recvs for s in st.values()):
            return
        fast, top, end, after = f"{prefix}F", f"{prefix}I", f"{prefix}D", f"{prefix}A"
        self._iteration(code, st, a_chunks, b_chunks, f"{prefix}0", test=True)
        code.op("li", TMP, self.tables[0].addr)
        code.op("ld32u", TMP, (TMP, 4))                 # iterations with every stream acting
        code.op("beqz", TMP, after)
        self._counted(code, fast, st, a_chunks, b_chunks, f"{prefix}1", test=False)
        code.place(after)
        code.op("li", TMP, self.tables[0].addr)
        code.op("ld32u", TMP, (TMP, 8))                 # the iterations left after those
        code.op("blt", TMP, "r0", end)
        code.op("beqz", TMP, end)
        self._counted(code, top, st, a_chunks, b_chunks, f"{prefix}2", test=True)
        code.place(end)

    def _counted(self, code: Code, label: str, st: dict[int, _Stream], a_chunks: tuple,
                 b_chunks: tuple, prefix: str, test: bool) -> None:
        """A loop of `_iteration`s at `label`, as many as TMP holds (at least one)."""
        code.place(label)
        self._iteration(code, st, a_chunks, b_chunks, prefix, test=test)
        code.op("addi", TMP, TMP, -1)
        code.op("bnez", TMP, label)

    def _iteration(self, code: Code, st: dict[int, _Stream], a_chunks: tuple, b_chunks: tuple,
                   prefix: str, test: bool) -> None:
        for n, trav in enumerate(SEND_ORDER):
            s = st[trav]
            if not s.recvs:
                continue
            skip = f"{prefix}r{trav}"
            if test:
                code.op("bge", STREAM_REGS[n], TMP, skip)
            a_side = trav in (E, W)
            sizes = a_chunks if a_side else b_chunks
            slot = self.slot_a if a_side else self.slot_b
            step = -slot if trav in (E, S) else slot    # from the west: block j-1, j-2, ...
            reg = ADDR_REG[trav]
            code.op("addi", reg, reg, step)
            len_reg = COMM_LEN if a_side else B_LEN
            if s.forward:
                self._relay_chunks(code, OPPOSITE[trav], trav, reg, len_reg, sizes)
            else:
                self._chunk_ops(code, "recvb", OPPOSITE[trav], reg, len_reg, sizes, back=True)
            if test:
                code.place(skip)

    def _chunk_ops(self, code: Code, op: str, d: int, reg: str, len_reg: str,
                   sizes: tuple[int, ...], back: bool = False) -> None:
        """The chunks of one block at [reg], the pointer back at the block's start."""
        for k, n in enumerate(sizes):
            if k:
                code.op("addi", reg, reg, sizes[k - 1])
            if n != sizes[0]:
                code.op("li", len_reg, n)
            code.op(op, d, reg, len_reg)
        if sizes[-1] != sizes[0]:
            code.op("li", len_reg, sizes[0])
        if back and len(sizes) > 1:
            code.op("addi", reg, reg, -sum(sizes[:-1]))

    def _relay_chunks(self, code: Code, d_from: int, d_to: int, reg: str, len_reg: str,
                      sizes: tuple[int, ...]) -> None:
        for k, n in enumerate(sizes):
            if k:
                code.op("addi", reg, reg, sizes[k - 1])
            if n != sizes[0]:
                code.op("li", len_reg, n)
            code.op("relayb", d_from, d_to, reg, len_reg)
        if sizes[-1] != sizes[0]:
            code.op("li", len_reg, sizes[0])
        if len(sizes) > 1:
            code.op("addi", reg, reg, -sum(sizes[:-1]))

    def _compute(self, code: Code, i: int, j: int) -> None:
        """Every group over every panel in K order, from the slots: the same code on every node
        with this C block."""
        A, B = self.ins
        sa, sb = A.layout.stride, B.layout.stride
        isz = A.layout.itemsize
        ka, kb = A.layout.col_bounds, B.layout.row_bounds
        steps = None
        for tiles in _groups(self.nr[i], self.nc[j], self.gr, self.gc, self.tile):
            rows, cols = _tiles(tiles)
            self._tiles_zero(code, tiles)
            for ja, ib, k0, k1 in self.parts:
                a0 = self._a_slot(ja) + (k0 - ka[ja]) * isz
                b0 = self._b_slot(ib) + (k0 - kb[ib]) * sb
                for k, rt in enumerate(rows):
                    code.op("li", REG[2 + k], a0 + rt * self.tile * sa)
                for k, ct in enumerate(cols):
                    code.op("li", REG[6 + k], b0 + ct * self.tile_bytes)
                if -(-(k1 - k0) // self.tile) != steps:
                    steps = -(-(k1 - k0) // self.tile)
                    code.op("li", STEPS_REG, steps)
                self._mmaks(code, rows, cols, sa)
            self._tiles_store(code, tiles)

    def _mmaks(self, code: Code, rows: tuple, cols: tuple, sa: int) -> None:
        sb = self.ins[1].layout.stride
        code.ops(self.mmak, [(ACC[a], REG[2 + rows.index(rt)], REG[6 + cols.index(ct)],
                              STEPS_REG, sa, sb)
                             for a, (rt, ct) in enumerate((rt, ct) for rt in rows
                                                          for ct in cols)])

    def _relays(self, ctx: Ctx) -> None:
        """Relay nodes between two grid nodes of a chain pass each iteration's block one way,
        then the other's (the eastward, then the westward; southward, then northward)."""
        g = self.grid
        maxmsg = self.machine.max_message_bytes
        A = self.ins[0]
        for i in range(g.P):
            chain, pos = g.row_chains[i], g.row_chain_index(i)
            c = len(chunks(self.nr[i] * A.layout.stride, maxmsg))
            for j in range(g.Q - 1):
                fwd = self._streams(i, j + 1)[E].recvs
                back = self._streams(i, j)[W].recvs
                for p in range(pos[j] + 1, pos[j + 1]):
                    self._relay_code(ctx.code(chain[p]), (W, E), (E, W), fwd, back, c)
        c = len(chunks(self.b_bytes, maxmsg))
        for j in range(g.Q):
            chain, pos = g.col_chains[j], g.col_chain_index(j)
            for i in range(g.P - 1):
                fwd = self._streams(i + 1, j)[S].recvs
                back = self._streams(i, j)[N].recvs
                for p in range(pos[i] + 1, pos[i + 1]):
                    self._relay_code(ctx.code(chain[p]), (N, S), (S, N), fwd, back, c)

    def _relay_code(self, code: Code, one: tuple[int, int], other: tuple[int, int], n1: int,
                    n2: int, c: int) -> None:
        both = min(n1, n2)
        for _ in range(both):
            for _ in range(c):
                code.relay(*one)
            for _ in range(c):
                code.relay(*other)
        rest, way = (n1 - both, one) if n1 > n2 else (n2 - both, other)
        for _ in range(rest * c):
            code.relay(*way)


# The table's per-stream numbers: at or below these, a stream (E, W, S, N order) takes no more.
STREAM_REGS = ("r8", "r9", "r10", "r11")
