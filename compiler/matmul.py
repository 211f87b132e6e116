"""Matrix multiply on the grid: SUMMA with hop-phased pipelined broadcasts, overlapped with
the matrix unit; and a "naive" variant that gathers operands first (for comparison).

C = A @ B with A [M, K], B [K, N] and C [M, N] in 2-D block layouts. K is cut into *panels*: the
common refinement of A's column blocks (over grid columns) and B's row blocks (over grid rows).
Every node (i, j) needs, for every panel p, A's rows of grid row i over p (held by the node in
column ja(p) of its row) and B's columns of grid column j over p (held by the node in row ib(p)
of its column). Each owner broadcasts its panels along its line, both ways, one grid hop per
*phase*: in phase h every node forwards (from where it stored them) the panels it received in
phase h - 1, then receives the panels that are h hops from their owners. (With the `reach`
option R > 1 a panel crosses R grid nodes per phase, relayed with `relayb`; the order below
stays consistent.) A phase has two halves,
south-east (east and south messages) and north-west (west and north); in each half a node's sends
come before its receives, which the global message order (half, then anti-diagonal position of
the sender, then message) guarantees on every node at once, so the whole exchange is one
deadlock-free global order (compiler.comm explains why that suffices) for any FIFO depth.

Between its sends and receives in every half-phase a node computes: 8 x 8 C tiles in groups that
fit the accumulators (2 x 4 tiles), one `mmak` per tile per panel, on panels that have arrived.
So the messages of the next hop travel while the matrix unit works (double buffering: the
receive buffers of later panels fill while earlier ones are used). After the last phase every
group finishes the panels it has not seen, with loops over the panel slots. Panels are stored
in slots in the order they arrive at the node, so those loops run over consecutive slots.

K padding: a partial last tile reads past K, so the owners zero A's columns and B's rows in
[K, round_up(K, 8)) before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.asmgen import Code
from compiler.comm import chunks
from compiler.layout import round_up
from compiler.plan import Ctx, Step, Value, scratch
from d1isa.errors import D1Error

N, E, S, W = 0, 1, 2, 3
DIRS = ("N", "E", "S", "W")
# Grid hops a panel travels in one half-phase (relayed through the grid nodes on the way).
REACH = 8


@dataclass
class _Node:
    """What one grid node does in the matmul."""

    i: int
    j: int
    nr: int                                  # C rows (A rows of grid row i)
    nc: int                                  # C cols (B cols of grid column j)
    order: list[int] = field(default_factory=list)       # panels by availability
    avail: dict[int, int] = field(default_factory=dict)  # panel -> hop it becomes usable
    slot_a: dict[int, int] = field(default_factory=dict)  # received A panel -> slot
    slot_b: dict[int, int] = field(default_factory=dict)
    full: list[int] = field(default_factory=list)        # panels with both operands received


class Matmul(Step):
    """C = A @ B on the grid. mode "summa" (overlapped) or "local" (operands already gathered:
    A in rows-layout, B in cols-layout, as the naive option arranges)."""

    def __init__(self, out: Value, a: Value, b: Value, loc, label, grid, machine, mode: str,
                 overlap: bool, reach: int = 1) -> None:
        super().__init__(f"matmul[{mode}]", out, [a, b], loc, label)
        self.grid = grid
        self.machine = machine
        self.mode = mode
        self.overlap = overlap
        self.reach = max(1, reach)
        A, B = a, b
        self.isz = A.layout.itemsize
        self.mmak = "mmak.bf16" if A.dtype == "bf16" else "mmak.f32"
        self.tile_bytes = 8 * self.isz         # one tile row of an operand
        acc = min(machine.accumulators, 8)
        self.gr, self.gc = {8: (2, 4), 7: (2, 3), 6: (2, 3), 5: (1, 5), 4: (2, 2), 3: (1, 3),
                            2: (1, 2), 1: (1, 1)}[acc]
        for what, stride in (("A", A.layout.stride), ("B", B.layout.stride),
                             ("C", out.layout.stride)):
            if stride > 0xFFFF:
                raise D1Error(f"matmul '{label}': a row of {what} is {stride} bytes per node; "
                              "the mma instructions' row stride field holds at most 65535")
        if mode == "summa":
            self._plan()

    # ---- planning -----------------------------------------------------------------------------

    def _plan(self) -> None:
        A, B = self.ins
        LA, LB = A.layout, B.layout
        g = self.grid
        ka, kb = LA.col_bounds, LB.row_bounds
        bounds = sorted(set(ka) | set(kb))
        self.panels = [(k0, k1) for k0, k1 in zip(bounds, bounds[1:], strict=False) if k1 > k0]
        # K block of A (a column block) and of B (a row block) each panel lies in
        self.ka = [max(j for j in range(len(ka) - 1) if ka[j] <= k0) for k0, _ in self.panels]
        self.kb = [max(i for i in range(len(kb) - 1) if kb[i] <= k0) for k0, _ in self.panels]
        # who holds A's panel p in grid row i (a column), and B's in grid column j (a row)
        self.owner_a = []
        for i in range(g.P):
            where = {LA.block_index(i, j)[1]: j for j in range(g.Q)}
            self.owner_a.append([where[self.ka[p]] for p in range(len(self.panels))])
        self.owner_b = []
        for j in range(g.Q):
            where = {LB.block_index(i, j)[0]: i for i in range(g.P)}
            self.owner_b.append([where[self.kb[p]] for p in range(len(self.panels))])
        self.direct = set(kb) <= set(ka)
        kwmax = max((k1 - k0 for k0, k1 in self.panels), default=8)
        self.sa_slot = LA.stride if self.direct else round_up(kwmax, 16) * self.isz
        if self.sa_slot > 0xFFFF:
            raise D1Error(f"matmul '{self.label}': panel rows of {self.sa_slot} bytes exceed "
                          "the mma stride field")
        self.slot_a_bytes = LA.alloc_rows * self.sa_slot
        self.slot_b_bytes = round_up(kwmax, 8) * LB.stride
        self.nodes: dict[tuple[int, int], _Node] = {}
        na = nb = 0
        for i in range(g.P):
            for j in range(g.Q):
                nr = LA.block_shape(i, j)[0]
                nc = LB.block_shape(i, j)[1]
                nd = _Node(i, j, nr, nc)
                oa, ob = self.owner_a[i], self.owner_b[j]
                for p in range(len(self.panels)):
                    nd.avail[p] = max(abs(j - oa[p]), abs(i - ob[p]))
                nd.order = sorted(nd.avail, key=lambda p, nd=nd: (nd.avail[p], p))
                nd.full = [p for p in nd.order if oa[p] != j and ob[p] != i]
                for s, p in enumerate(nd.full):
                    nd.slot_a[p] = s
                    nd.slot_b[p] = s
                for p in nd.order:
                    if oa[p] != j and p not in nd.slot_a:
                        nd.slot_a[p] = len(nd.slot_a)
                    if ob[p] != i and p not in nd.slot_b:
                        nd.slot_b[p] = len(nd.slot_b)
                na = max(na, len(nd.slot_a))
                nb = max(nb, len(nd.slot_b))
                self.nodes[(i, j)] = nd
        temps = [scratch(f"{self.out.name}.apanels", na * self.slot_a_bytes),
                 scratch(f"{self.out.name}.bpanels", nb * self.slot_b_bytes)]
        if not self.direct:
            # Packed A panels at their owners, one slot per panel of the owner's block.
            per_owner = max(self.ka.count(k) for k in set(self.ka))
            temps.append(scratch(f"{self.out.name}.apack", per_owner * self.slot_a_bytes))
        self.temps = temps

    # ---- addresses ----------------------------------------------------------------------------

    def _a_addr(self, nd: _Node, p: int) -> tuple[int, int]:
        """(address of A's panel p tile row 0 at node nd, row stride)."""
        A = self.ins[0]
        if self.owner_a[nd.i][p] == nd.j:
            k0 = self.panels[p][0]
            return A.addr + (k0 - A.layout.col_bounds[self.ka[p]]) * self.isz, A.layout.stride
        return self.temps[0].addr + nd.slot_a[p] * self.slot_a_bytes, self.sa_slot

    def _b_addr(self, nd: _Node, p: int) -> int:
        B = self.ins[1]
        if self.owner_b[nd.j][p] == nd.i:
            k0 = self.panels[p][0]
            return B.addr + (k0 - B.layout.row_bounds[self.kb[p]]) * B.layout.stride
        return self.temps[1].addr + nd.slot_b[p] * self.slot_b_bytes

    def _send_a_addr(self, nd: _Node, p: int) -> int:
        """Where node nd sends A's panel p from (its storage, its pack buffer, or a slot)."""
        if self.owner_a[nd.i][p] == nd.j:
            if self.direct:
                return self.ins[0].addr
            k = sum(1 for q in range(p) if self.ka[q] == self.ka[p])
            return self.temps[2].addr + k * self.slot_a_bytes
        return self.temps[0].addr + nd.slot_a[p] * self.slot_a_bytes

    def _a_len(self, i: int) -> int:
        nr = self.ins[0].layout.block_shape(i, 0)[0]
        return nr * (self.ins[0].layout.stride if self.direct else self.sa_slot)

    def _b_len(self, j: int, p: int) -> int:
        nc = self.ins[1].layout.block_shape(0, j)[1]
        if nc <= 0:
            return 0
        k0, k1 = self.panels[p]
        return round_up(k1 - k0, 8) * self.ins[1].layout.stride

    # ---- emission -----------------------------------------------------------------------------

    def emit(self, ctx: Ctx) -> None:
        if self.mode == "local":
            self._emit_local(ctx)
            return
        self._sanitize(ctx)
        if not self.direct:
            self._pack(ctx)
        work = {key: _Work(self, nd) for key, nd in self.nodes.items()}
        sim = _Timing(self.machine)
        g = self.grid
        msgs = self._messages(ctx)
        k = 0
        while k < len(msgs):
            # One half-phase. Every node's sends come before its receives (see the module
            # docstring): first all sends, then the receives in the global order, each stop
            # computing until its message is due and then keeping (and forwarding) it.
            half = msgs[k][0][:2]
            e = k
            while e < len(msgs) and msgs[e][0][:2] == half:
                e += 1
            due = []
            known: dict[tuple[int, int], list[int]] = {}
            for _, sender, stops, segs, d, send_addr, _, nbytes, _, _ in msgs[k:e]:
                ctx.gcode(*sender).sendb(d, send_addr, nbytes)
                for nid in segs[0]:
                    ctx.code(nid).relay((d + 2) % 4, d)
                due.append(sim.send(sender, g.nodes[sender[0]][sender[1]], d, segs[0],
                                    nbytes))
                known.setdefault(stops[0], []).append(due[-1])
            first: set[tuple[int, int]] = set()
            for (_, _, stops, segs, d, _, recv_addrs, nbytes, panel, kind), arrive \
                    in zip(msgs[k:e], due, strict=True):
                back = (d + 2) % 4
                for s, node in enumerate(stops):
                    code = ctx.gcode(*node)
                    if self.overlap:
                        if node not in first:
                            # The node's first gap of the half lasts until the last of the
                            # messages already on their way to it.
                            first.add(node)
                            ready = max(known.get(node, [arrive]) + [arrive])
                            n = len(known.get(node, ()))
                            spent = work[node].gap(code, ready - sim.clock(node) - 2 * n)
                        else:
                            spent = work[node].gap(code, arrive - sim.clock(node) - 2,
                                                   strict=True)
                        sim.busy(node, spent)
                    last = s == len(stops) - 1
                    if last:
                        code.recvb(back, recv_addrs[s], nbytes)
                    else:
                        code.relayb(back, d, recv_addrs[s], nbytes)
                    sim.recv(node, arrive)
                    if kind is not None:
                        work[node].arrived(panel, kind)
                    if not last:
                        for nid in segs[s + 1]:
                            ctx.code(nid).relay(back, d)
                        arrive = sim.send(node, g.nodes[node[0]][node[1]], d, segs[s + 1],
                                          nbytes)
            k = e
        for node in sorted(work):
            work[node].finish(ctx.gcode(*node))

    def _messages(self, ctx: Ctx) -> list:
        """Every leg of the broadcasts, in the global order. A leg carries one chunk of a panel
        from the grid node `reach * (leg - 1)` hops from its owner across up to `reach` grid
        nodes, each of which keeps it (the last `recvb`s, the others `relayb`)."""
        g = self.grid
        maxmsg = self.machine.max_message_bytes
        out = []
        for kind in ("A", "B"):
            lines = g.P if kind == "A" else g.Q
            for line in range(lines):
                if kind == "A":
                    chain, pos = g.row_chains[line], g.row_chain_index(line)
                    size = self._a_len(line)
                else:
                    chain, pos = g.col_chains[line], g.col_chain_index(line)
                span = g.Q if kind == "A" else g.P
                for p in range(len(self.panels)):
                    if kind == "B":
                        size = self._b_len(line, p)
                    if size <= 0:
                        continue
                    owner = (self.owner_a if kind == "A" else self.owner_b)[line][p]
                    for step in (1, -1):
                        far = (span - 1 - owner) if step > 0 else owner
                        for h0 in range(1, far + 1, self.reach):
                            hops = range(h0, min(far, h0 + self.reach - 1) + 1)
                            out.extend(self._leg(kind, line, p, step, (h0 - 1) // self.reach,
                                                 owner + step * (h0 - 1),
                                                 [owner + step * h for h in hops], chain, pos,
                                                 size, maxmsg))
        out.sort(key=lambda m: m[0])
        return out

    def _leg(self, kind: str, line: int, p: int, step: int, leg: int, src: int,
             dsts: list[int], chain, pos, size: int, maxmsg: int) -> list:
        if kind == "A":
            s_node, r_nodes = (line, src), [(line, x) for x in dsts]
            d = E if step > 0 else W
        else:
            s_node, r_nodes = (src, line), [(x, line) for x in dsts]
            d = S if step > 0 else N
        se = step > 0
        diag = s_node[0] + s_node[1]
        snd = self.nodes[s_node]
        if kind == "A":
            base_s = self._send_a_addr(snd, p)
            base_r = [self.temps[0].addr + self.nodes[r].slot_a[p] * self.slot_a_bytes
                      for r in r_nodes]
        else:
            base_s = self._b_addr(snd, p)
            base_r = [self._b_addr(self.nodes[r], p) for r in r_nodes]
        # the relay nodes of each segment, in travel order
        segs = []
        prev = src
        for x in dsts:
            lo, hi = sorted((pos[prev], pos[x]))
            seg = [chain[k] for k in range(lo + 1, hi)]
            segs.append(seg if se else seg[::-1])
            prev = x
        out = []
        parts = chunks(size, maxmsg)
        for c, (off, ln) in enumerate(parts):
            key = (leg, 0 if se else 1, -diag if se else diag, kind, line, p, c)
            # Only the last chunk makes the panel usable (kind None marks the others).
            out.append((key, s_node, r_nodes, segs, d, base_s + off,
                        [b + off for b in base_r], ln, p, kind if c == len(parts) - 1 else None))
        return out

    # ---- padding and packing ------------------------------------------------------------------

    def _sanitize(self, ctx: Ctx) -> None:
        """Zero A's columns and B's rows in [K, round_up(K, 8)) where they are stored."""
        A, B = self.ins
        K = A.layout.cols
        if K % 8 == 0:
            return
        g = ctx.grid
        for i in range(g.P):
            for j in range(g.Q):
                r0, r1, c0, c1 = A.layout.block(i, j)
                if c0 < K <= c1 + 7 and c1 == K and r1 > r0:
                    zero_cols(ctx.gcode(i, j), A, r1 - r0, K - c0)
                r0, r1, c0, c1 = B.layout.block(i, j)
                if r1 == K and c1 > c0 and r1 > r0:
                    zero_rows(ctx.gcode(i, j), B, K - r0, round_up(K - r0, 8))

    def _pack(self, ctx: Ctx) -> None:
        from compiler.comm import copy_rect
        A = self.ins[0]
        g = ctx.grid
        for i in range(g.P):
            nr = A.layout.block_shape(i, 0)[0]
            if nr <= 0:
                continue
            for j in range(g.Q):
                nd = self.nodes[(i, j)]
                for p in range(len(self.panels)):
                    if self.owner_a[i][p] != j:
                        continue
                    k0, k1 = self.panels[p]
                    src = A.addr + (k0 - A.layout.col_bounds[self.ka[p]]) * self.isz
                    copy_rect(ctx.gcode(i, j), src, A.layout.stride, self._send_a_addr(nd, p),
                              self.sa_slot, nr, round_up(k1 - k0, 8), A.dtype, True)

    # ---- the naive variant --------------------------------------------------------------------

    def _emit_local(self, ctx: Ctx) -> None:
        """Operands already gathered (A rows-layout with all of K, B cols-layout): each node
        multiplies its whole block with one mmak per C tile."""
        A, B = self.ins
        K = A.layout.cols
        g = ctx.grid
        for i in range(g.P):
            for j in range(g.Q):
                nr = A.layout.block_shape(i, j)[0]
                nc = B.layout.block_shape(i, j)[1]
                if nr <= 0 or nc <= 0:
                    continue
                code = ctx.gcode(i, j)
                if K % 8:
                    zero_cols(code, A, nr, K)
                    zero_rows(code, B, K, round_up(K, 8))
                steps = -(-K // 8)
                for tiles in _groups(nr, nc, self.gr, self.gc):
                    self._tiles_zero(code, tiles)
                    self._piece(code, tiles, A.addr, A.layout.stride, B.addr, B.layout.stride,
                                steps)
                    self._tiles_store(code, tiles)

    # ---- code for tiles -----------------------------------------------------------------------

    def _tiles_zero(self, code: Code, tiles: list[tuple[int, int]]) -> None:
        code.ops([f"  acc.zero a{a}" for a in range(len(tiles))])

    def _tiles_store(self, code: Code, tiles: list[tuple[int, int]], load: bool = False
                     ) -> None:
        C = self.out
        st = C.layout.stride
        op = "acc.ld" if load else "acc.st"
        out = []
        for a, (rt, ct) in enumerate(tiles):
            out.append(f"  li r1, {C.addr + rt * 8 * st + ct * 32}")
            out.append(f"  {op} a{a}, r1, {st}")
        code.ops(out)

    def _piece(self, code: Code, tiles: list[tuple[int, int]], a_addr: int, sa: int,
               b_addr: int, sb: int, steps: int) -> None:
        """acc[tile] += A[tile row] @ B[tile col] over one panel, one mmak per tile."""
        rts = sorted({rt for rt, _ in tiles})
        cts = sorted({ct for _, ct in tiles})
        out = [f"  li r{2 + k}, {a_addr + rt * 8 * sa}" for k, rt in enumerate(rts)]
        out += [f"  li r{6 + k}, {b_addr + ct * self.tile_bytes}" for k, ct in enumerate(cts)]
        out.append(f"  li r11, {steps}")
        mm = self.mmak
        out += [f"  {mm} a{a}, r{2 + rts.index(rt)}, r{6 + cts.index(ct)}, r11, {sa}, {sb}"
                for a, (rt, ct) in enumerate(tiles)]
        code.ops(out)

    def _slot_loop(self, code: Code, tiles: list[tuple[int, int]], nd: _Node, s0: int, s1: int,
                   steps: int) -> None:
        """The same tiles over panel slots s0..s1-1 (both operands received, equal steps)."""
        if s1 - s0 <= 1:
            if s1 > s0:
                p = nd.full[s0]
                a, sa = self._a_addr(nd, p)
                self._piece(code, tiles, a, sa, self._b_addr(nd, p), self.ins[1].layout.stride,
                            steps)
            return
        rts = sorted({rt for rt, _ in tiles})
        cts = sorted({ct for _, ct in tiles})
        sa, sb = self.sa_slot, self.ins[1].layout.stride
        a0 = self.temps[0].addr + s0 * self.slot_a_bytes
        b0 = self.temps[1].addr + s0 * self.slot_b_bytes
        for k, rt in enumerate(rts):
            code.li(f"r{2 + k}", a0 + rt * 8 * sa)
        for k, ct in enumerate(cts):
            code.li(f"r{6 + k}", b0 + ct * self.tile_bytes)
        code.li("r11", steps)

        mm = self.mmak
        lines = [f"  {mm} a{a}, r{2 + rts.index(rt)}, r{6 + cts.index(ct)}, r11, {sa}, {sb}"
                 for a, (rt, ct) in enumerate(tiles)]
        lines += [f"  addi r{2 + k}, r{2 + k}, {self.slot_a_bytes}" for k in range(len(rts))]
        lines += [f"  addi r{6 + k}, r{6 + k}, {self.slot_b_bytes}" for k in range(len(cts))]

        def body() -> None:
            code.ops(lines)

        code.counted("r12", s1 - s0, body)


def _groups(nr: int, nc: int, gr: int, gc: int) -> list[list[tuple[int, int]]]:
    """C tiles of an nr x nc block in groups of at most gr x gc (one accumulator each)."""
    mt, nt = -(-nr // 8), -(-nc // 8)
    out = []
    for r0 in range(0, mt, gr):
        for c0 in range(0, nt, gc):
            out.append([(r, c) for r in range(r0, min(mt, r0 + gr))
                        for c in range(c0, min(nt, c0 + gc))])
    return out


class _Work:
    """The compute schedule of one grid node: which (group, panel) pieces it has done."""

    def __init__(self, mm: Matmul, nd: _Node) -> None:
        self.mm = mm
        self.nd = nd
        self.groups = _groups(nd.nr, nd.nc, mm.gr, mm.gc) if nd.nr > 0 and nd.nc > 0 else []
        self.have_a = {p for p in range(len(mm.panels)) if mm.owner_a[nd.i][p] == nd.j}
        self.have_b = {p for p in range(len(mm.panels)) if mm.owner_b[nd.j][p] == nd.i}
        self.ready: list[int] = [p for p in nd.order if p in self.have_a and p in self.have_b]
        self.done: list[set[int]] = [set() for _ in self.groups]
        self.cur = 0                    # group open in the accumulators, if self.open
        self.open = False
        self.started = [False] * len(self.groups)

    def arrived(self, p: int, kind: str) -> None:
        (self.have_a if kind == "A" else self.have_b).add(p)
        if p in self.have_a and p in self.have_b and p not in self.ready:
            self.ready.append(p)

    def _steps(self, p: int) -> int:
        k0, k1 = self.mm.panels[p]
        return -(-(k1 - k0) // 8)

    def _cost(self, tiles: list, p: int) -> int:
        m = self.mm.machine
        per = m.cost_mma_bf16 if self.mm.mmak == "mmak.bf16" else m.cost_mma_f32
        return len(tiles) * self._steps(p) * per + 8

    def _do(self, code: Code, g: int, p: int) -> None:
        mm, nd = self.mm, self.nd
        a, sa = mm._a_addr(nd, p)
        mm._piece(code, self.groups[g], a, sa, mm._b_addr(nd, p), mm.ins[1].layout.stride,
                  self._steps(p))
        self.done[g].add(p)

    def _open(self, code: Code, g: int) -> None:
        if self.started[g]:
            self.mm._tiles_store(code, self.groups[g], load=True)
        else:
            self.mm._tiles_zero(code, self.groups[g])
            self.started[g] = True
        self.cur, self.open = g, True

    def _close(self, code: Code) -> None:
        if self.open:
            self.mm._tiles_store(code, self.groups[self.cur])
            self.open = False

    def gap(self, code: Code, budget: int, strict: bool = False) -> int:
        """Compute about `budget` cycles' worth of pieces whose panels have arrived; return the
        modelled cycles spent.

        The open group goes on while it has arrived panels it has not used. When it has none,
        another group is opened (the one with the most catching up to do), but only if enough
        of the budget is left to pay for the switch: every extra session of a group costs a
        load and a store of its accumulators later. A `strict` gap (a short wait before a
        relayed message) starts nothing that does not fit.
        """
        spent = 0
        ng = len(self.groups)
        if not ng:
            return 0
        switch_cost = 2 * len(self.groups[0]) * self.mm.machine.cost_acc * 2
        while spent < budget:
            g = self.cur
            todo = [p for p in self.ready if p not in self.done[g]] if self.open else []
            if not todo:
                nready = len(self.ready)
                backlog = [(nready - len(self.done[h]), -h) for h in range(ng)]
                best, negh = max(backlog)
                need = switch_cost if (spent or strict) else 0
                if best == 0 or budget - spent < need:
                    break
                self._close(code)
                self.cur = -negh
                self._open(code, self.cur)
                continue
            p = todo[0]
            cost = self._cost(self.groups[g], p)
            if (spent or strict) and spent + cost // 2 > budget:
                break
            self._do(code, g, p)
            spent += cost
        return spent

    def finish(self, code: Code) -> None:
        """After all messages: every group completes the panels it has not done."""
        mm, nd = self.mm, self.nd
        if not self.groups:
            return
        order = [self.cur] + [g for g in range(len(self.groups)) if g != self.cur] \
            if self.open else range(len(self.groups))
        for g in order:
            rest = [p for p in nd.order if p not in self.done[g]]
            if not rest:
                if self.open and g == self.cur:
                    self._close(code)
                continue
            if not (self.open and g == self.cur):
                self._close(code)
                self._open(code, g)
            slots = sorted(nd.full.index(p) for p in rest if p in nd.full)
            for p in rest:
                if p not in nd.full:
                    self._do(code, g, p)
            # runs of consecutive slots with equal step counts become loops
            k = 0
            while k < len(slots):
                s0 = slots[k]
                steps = self._steps(nd.full[s0])
                e = k + 1
                while (e < len(slots) and slots[e] == slots[e - 1] + 1
                       and self._steps(nd.full[slots[e]]) == steps):
                    e += 1
                mm._slot_loop(code, self.groups[g], nd, s0, slots[e - 1] + 1, steps)
                for s in slots[k:e]:
                    self.done[g].add(nd.full[s])
                k = e
            self._close(code)


class _Timing:
    """The timing model of docs/TIMING.md, run at compile time over the matmul's messages, so
    each gap is filled with just enough compute to end when that node's messages are due."""

    def __init__(self, m) -> None:
        self.m = m
        self.t: dict[object, int] = {}
        self.wire: dict[tuple[int, int], int] = {}

    def clock(self, node) -> int:
        return self.t.get(node, 0)

    def busy(self, node, cycles: int) -> None:
        self.t[node] = self.clock(node) + cycles

    def send(self, node, nid: int, d: int, relays: list[int], nbytes: int) -> int:
        """A send from grid node `node` (live id nid) through `relays`; its arrival time."""
        m = self.m
        self.t[node] = self.clock(node) + m.cost_alu + m.cost_send
        at, src = self.t[node], nid
        for hop in relays + [None]:
            ser = -(-nbytes // int(m.link_bandwidth[src, d]))
            depart = max(at, self.wire.get((src, d), 0))
            self.wire[(src, d)] = depart + ser
            arrive = depart + int(m.link_latency[src, d]) + ser
            if hop is None:
                return arrive
            done = max(self.clock(hop), arrive) + m.cost_recv + m.cost_send
            self.t[hop] = done
            at, src = done, hop
        return at

    def recv(self, node, arrive: int) -> None:
        self.t[node] = max(self.clock(node) + self.m.cost_alu, arrive) + self.m.cost_recv


def zero_cols(code: Code, v: Value, nrows: int, kc: int) -> None:
    """Zero columns [kc, round_up(kc, 16)) of the first nrows rows of v's block."""
    if kc % 16 == 0 or nrows <= 0:
        return
    size = v.layout.itemsize
    off = (kc // 16) * 16 * size
    code.lane_mask("v14", kc % 16, "v13")
    code.li("r1", v.addr + off)

    def row() -> None:
        code.vload("v0", "r1", 0, v.dtype)
        code.op("vand v0, v0, v14")
        code.vstore("v0", "r1", 0, v.dtype)
        code.op(f"addi r1, r1, {v.layout.stride}")

    code.counted("r2", nrows, row)


def zero_rows(code: Code, v: Value, r0: int, r1: int) -> None:
    """Zero whole stored rows [r0, r1) of v's block."""
    if r1 <= r0:
        return
    code.op("vbcasti v0, 0x00000000")
    code.li("r1", v.addr + r0 * v.layout.stride)
    nv = v.layout.stride // 64
    for _ in range(r1 - r0):
        for k in range(nv):
            code.op(f"vst v0, [r1+{64 * k}]")
        code.op(f"addi r1, r1, {v.layout.stride}")
