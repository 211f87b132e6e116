"""Matrix multiply on the grid: SUMMA with pipelined broadcasts in rounds, overlapped with the
matrix unit; and a "naive" variant that gathers operands first (for comparison).

C = A @ B with A [M, K], B [K, N] and C [M, N] in 2-D block layouts. K is cut into *panels*: the
common refinement of A's column blocks (over grid columns) and B's row blocks (over grid rows).
Every node (i, j) needs, for every panel p, A's rows of grid row i over p (held by the node in
column ja(p) of its row) and B's columns of grid column j over p (held by the node in row ib(p)
of its column). Each owner broadcasts its panels along its line, both ways but only as far as
the last node that uses them (one whose C block is not empty), one grid hop per *leg*: a node
forwards (from where it stored it) a panel it received, one leg per round.

Rounds. In round r every grid node first issues its *send phase* (the legs it starts in round
r: its own panels in round 0, then what it received in round r - 1), then its *receive phase*:
it takes the legs it receives in round r in the global order (round, anti-diagonal position of
the sender, kind, line, panel, chunk), computing between them. A leg that crosses relay nodes
(which store and forward it, so it takes about twice as long) is received in the round after it
is sent; receiving it in the same round would hold back everyone's next round. So is a leg that
crosses a chip edge (chip_hop_latency, and the chip edge's lower bandwidth). This is
deadlock-free for any FIFO depth, because no link ever holds more than `fifo_depth` messages
that may be unconsumed at once (those sent by round r and received in round r or later; rounds
with more are cut into sub-rounds, and receives are deferred only when the bound allows it):
by induction on rounds, a send phase never waits for anything but the consumption of earlier
rounds' messages, and in a receive phase the first unconsumed message in the global order has
been sent, and every node on its way has done all its earlier work, so it is consumed. Relay
nodes relay in the global order too. docs/COMPILER.md gives the argument in full. (With the
`reach` option R > 1 a leg crosses R grid nodes, which `relayb` it on within the round; the
global order puts a node's own sends on a link before what it forwards on that link.)

Between its sends and receives a node computes: C tiles (mma_dim x mma_dim) in groups that fit the
accumulators (2 x 4 tiles), one `mmak` per tile per panel, on panels that have arrived, in pieces
of a group's tile rows sized to the gap (the timing model of docs/TIMING.md runs at compile
time). So the messages of the next hop travel while the matrix unit works (double buffering:
the receive buffers of later panels fill while earlier ones are used). After the last round
every group finishes the panels it has not seen, with loops over the panel slots. Panels are
stored in slots in the order they arrive at the node, so those loops run over consecutive slots.

K padding: a partial last tile reads past K, so the owners zero A's columns and B's rows in
[K, round_up(K, tile)) before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.asmgen import COMM_ADDR, COMM_LEN, MIN_SCALAR_REGS, Code, CompilerLimit, E, N, S, W
from compiler.comm import chunks
from compiler.kernels import HI_MASK, split_vector
from compiler.layout import round_up
from compiler.plan import Ctx, Step, Value, scratch
from d1isa.machine import OPPOSITE

# Registers that hold message addresses and lengths during the exchange, so that forwarding a
# panel (from where it was received, one round later) needs no new `li`: one address register
# per direction of travel, and B panels' lengths apart from A's (which use COMM_LEN).
ADDR_REG = {E: COMM_ADDR, W: "r4", S: "r13", N: "r12"}
B_LEN = "r5"
# Registers the exchange keeps track of (see Code.stick): the above, the mmak step count and
# the pieces' operand pointers (r2, r3 for A's tile rows, r6.. for B's tile columns).
STICKY = ("r4", "r5", "r12", "r13", "r11", "r2", "r3", "r6", "r7", "r8", "r9", "r10")
REG = tuple(f"r{k}" for k in range(MIN_SCALAR_REGS))     # register names, for the tile code
ACC = tuple(f"a{k}" for k in range(8))


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


@dataclass(slots=True)
class _Msg:
    """One message of a leg: `hops` lists every live node after the sender up to the last stop,
    as (live id, grid node or None, address where it keeps the payload or None to relay)."""

    key: tuple
    kind: str
    panel: int
    usable: bool                 # the panel's last chunk: it is usable once this one is in
    sender: tuple[int, int]
    d: int
    addr: int
    nbytes: int
    hops: list
    send: tuple = (0, 0)         # the round of its send (the key starts with its receive's)
    h0: int = 0                  # first hop taken in the receive phase (after leading relays)
    t: int = 0                   # modelled arrival there

    @property
    def len_reg(self) -> str:
        return COMM_LEN if self.kind == "A" else B_LEN


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
        self._grid_at: dict[tuple[int, ...], dict[int, int]] = {}   # chain position -> grid index
        # The mapping report's slices of the panels: of the operands' own coordinates (a band
        # product's operands, compiler.batched.BandMatmul, are not the tensors', so it says none).
        self.report_slices = True
        A, B = a, b
        self.isz = A.layout.itemsize
        self.mmak = "mmak.bf16" if A.dtype == "bf16" else "mmak.f32"
        # An operand split into bf16 pieces (SplitBf16): each tile takes one mmak per piece.
        self.split = "A" if A.layout.pieces > 1 else "B" if B.layout.pieces > 1 else None
        self.npieces = max(A.layout.pieces, B.layout.pieces)
        self.tile = machine.mma_dim
        self.lanes = machine.vector_lanes_f32
        self.tile_bytes = self.tile * self.isz      # one tile row of an operand
        acc = min(machine.accumulators, 8)
        self.gr, self.gc = {8: (2, 4), 7: (2, 3), 6: (2, 3), 5: (1, 5), 4: (2, 2), 3: (1, 3),
                            2: (1, 2), 1: (1, 1)}[acc]
        # Registers pointing at A's tile rows: r2, r3, and on a machine with 32 registers
        # r16.. for taller groups (see _group_shape).
        self.a_regs = ("r2", "r3") + tuple(f"r{k}" for k in range(16, min(
            machine.scalar_regs, 24)))
        if self.split is not None:
            self.gr, self.gc = self._group_shape(out, acc)
        for what, stride in (("A", A.layout.stride), ("B", B.layout.stride),
                             ("C", out.layout.stride)):
            if stride > 0xFFFF:
                raise CompilerLimit(f"matmul '{label}': a row of {what} is {stride:,} bytes "
                                    "per node", "the mma instructions' row stride field holds "
                                    "at most 65,535 bytes; use a wider grid or split the "
                                    "matmul", loc)
        if mode == "summa":
            self._plan()

    def _group_shape(self, out: Value, acc: int) -> tuple[int, int]:
        """Tile rows x columns of an accumulator group for a split matmul: every (group, panel)
        loads a pointer per tile row and per tile column, those of the split operand once per
        piece, so the shape that loads fewest over the largest C block wins (the default
        2 x 4 on a tie; at most 5 columns, and rows as there are registers for)."""
        t = self.tile
        mt, nt = -(-out.layout.max_rows // t), -(-out.layout.max_cols // t)
        k = self.npieces
        best = None
        for gr in range(1, len(self.a_regs) + 1):
            for gc in range(1, 6):
                if gr * gc > acc:
                    continue
                er, ec = min(gr, mt), min(gc, nt)
                per = (k * er + ec if self.split == "A" else er + k * ec) + 1
                cost = -(-mt // gr) * -(-nt // gc) * per
                key = (cost, (gr, gc) != (2, 4), gr * gc != acc, gr)
                if best is None or key < best[0]:
                    best = (key, (gr, gc))
        return best[1]

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
        kwmax = max((k1 - k0 for k0, k1 in self.panels), default=self.tile)
        # The bytes from one piece of a stored A row to the next: in A's own storage, and in
        # the panel slots (the same when whole rows are sent, else a packed panel's width).
        self.a_piece_own = LA.piece_bytes
        self.a_piece_slot = (LA.piece_bytes if self.direct
                             else round_up(kwmax, self.lanes) * self.isz)
        self.sa_slot = LA.stride if self.direct else LA.pieces * self.a_piece_slot
        if self.sa_slot > 0xFFFF:
            raise CompilerLimit(f"matmul '{self.label}': panel rows of {self.sa_slot:,} bytes",
                                "the mma instructions' row stride field holds at most 65,535 "
                                "bytes", self.loc)
        self.slot_a_bytes = LA.alloc_rows * self.sa_slot
        self.slot_b_bytes = round_up(kwmax, self.tile) * LB.stride
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

    def _a_piece(self, nd: _Node, p: int) -> int:
        """Bytes from one piece of A's panel p to the next at node nd (split A)."""
        return self.a_piece_own if self.owner_a[nd.i][p] == nd.j else self.a_piece_slot

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
        return round_up(k1 - k0, self.tile) * self.ins[1].layout.stride

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
        codes = [ctx.gcode(i, j) for i in range(g.P) for j in range(g.Q)]
        for code in codes:
            code.stick(*STICKY, *self.a_regs[2:self.gr])
        msgs = self._messages()
        self._report(ctx, msgs)
        sends: dict[tuple, list[_Msg]] = {}
        recvs: dict[tuple, list[_Msg]] = {}
        for m in msgs:
            sends.setdefault(m.send, []).append(m)
            recvs.setdefault(m.key[:2], []).append(m)
        for rnd in sorted(set(sends) | set(recvs)):
            # One round (see the module docstring): every grid node first issues the sends that
            # start a leg in this round, then takes its receives in the global order, computing
            # until each message is due.
            for m in sends.get(rnd, ()):
                nid = g.nodes[m.sender[0]][m.sender[1]]
                code = ctx.code(nid)
                n0 = code.ninstr
                code.sendb(m.d, m.addr, m.nbytes, m.len_reg, ADDR_REG[m.d])
                t = sim.send(nid, m.d, m.nbytes, code.ninstr - n0 - 1)
                # Relay nodes before the first grid node only relay, in the global order.
                h = 0
                while m.hops[h][1] is None:
                    ctx.code(m.hops[h][0]).relay(OPPOSITE[m.d], m.d)
                    t = sim.relay(m.hops[h][0], t, m.d, m.nbytes, 0)
                    h += 1
                m.h0, m.t = h, t
            here = recvs.get(rnd, ())
            known: dict[int, list[int]] = {}
            for m in here:
                known.setdefault(m.hops[m.h0][0], []).append(m.t)
            first: set[int] = set()
            for m in here:
                back = OPPOSITE[m.d]
                t = m.t
                for h in range(m.h0, len(m.hops)):
                    nid, node, addr = m.hops[h]
                    code = ctx.code(nid)
                    wk = work.get(node) if node is not None else None
                    if self.overlap and wk is not None and wk.groups:
                        if nid not in first:
                            # The node's first gap of the round lasts until the last of the
                            # messages already on their way to it.
                            first.add(nid)
                            mine = known.get(nid, [])
                            ready = max(mine + [t])
                            spent = wk.gap(code, ready - sim.clock(nid) - 2 * len(mine))
                        else:
                            spent = wk.gap(code, t - sim.clock(nid) - 2, strict=True)
                        sim.busy(nid, spent)
                    last = h == len(m.hops) - 1
                    n0 = code.ninstr
                    if addr is None:
                        code.relay(back, m.d)
                    elif last:
                        code.recvb(back, addr, m.nbytes, m.len_reg, ADDR_REG[m.d])
                    else:
                        code.relayb(back, m.d, addr, m.nbytes, m.len_reg, ADDR_REG[m.d])
                    extra = code.ninstr - n0 - 1
                    if last:
                        sim.recv(nid, t, extra)
                    else:
                        t = sim.relay(nid, t, m.d, m.nbytes, extra)
                    if addr is not None and m.usable:
                        wk.arrived(m.panel, m.kind)
        for node in sorted(work):
            work[node].finish(ctx.gcode(*node))
        for code in codes:
            code.unstick(*STICKY, *self.a_regs[2:self.gr])

    def _report(self, ctx: Ctx, msgs: list[_Msg]) -> None:
        """Every chunk of every leg, sender to last stop, for the mapping report, with the
        slice of its operand a panel is: A's panel p on grid row i is A's rows of grid row i
        over the panel's K range, B's on grid column j the K range over B's columns of grid
        column j."""
        if ctx.traffic is None:
            return
        g = self.grid
        A, B = self.ins
        rects: dict[tuple[str, int, int], list[tuple[int, int, int, int]]] = {}
        for m in msgs:
            i, j = m.sender
            key = (m.kind, i if m.kind == "A" else j, m.panel)
            r = rects.get(key)
            if r is None:
                k0, k1 = self.panels[m.panel]
                if m.kind == "A":
                    r0, r1, _, _ = A.layout.block(i, self.owner_a[i][m.panel])
                    r = rects[key] = [(r0, r1, k0, k1)]
                else:
                    _, _, c0, c1 = B.layout.block(self.owner_b[j][m.panel], j)
                    r = rects[key] = [(k0, k1, c0, c1)]
            ctx.traffic.path((A if m.kind == "A" else B).name,
                             [g.nodes[i][j]] + [h[0] for h in m.hops], m.nbytes,
                             slices=r if self.report_slices else None)

    def _needs(self, kind: str, line: int) -> list[bool]:
        """Which grid nodes along a line use the panels broadcast on it: for A (grid row
        `line`) the columns with C columns, for B (grid column `line`) the rows with C rows."""
        g = self.grid
        if kind == "A":
            return [self.nodes[(line, j)].nc > 0 for j in range(g.Q)]
        return [self.nodes[(i, line)].nr > 0 for i in range(g.P)]

    def _messages(self) -> list[_Msg]:
        """Every leg of the broadcasts, with its rounds, in the global order (see the module
        docstring).

        A panel goes from its owner toward both ends of its line, as far as the last grid node
        that uses it. A *leg* carries it across the next `reach` grid nodes: each keeps a copy
        (the last `recvb`s it, the others `relayb` it on); relay nodes in between `relay` it.
        A payload above `max_message_bytes` is cut into chunks. A leg is sent in the round
        after the one in which its sender received the panel (round 0 for the owner), and
        received in the same round, or in the next one when it crosses relay nodes (those store
        and forward it, so it takes about twice as long; deferring its receive keeps the rounds
        short; so does a leg across a chip edge, for its latency and lower bandwidth). No link
        carries more than `fifo_depth` messages that may be unconsumed at once:
        deferring is done only if that holds, and otherwise rounds with too many sends on a
        link are cut into sub-rounds (the second element of a round).
        """
        g = self.grid
        maxmsg = self.machine.max_message_bytes
        paths: list[list[tuple[list[_Msg], bool]]] = []
        for kind in ("A", "B"):
            lines = g.P if kind == "A" else g.Q
            for line in range(lines):
                needs = self._needs(kind, line)
                if not any(needs):
                    continue
                if kind == "A":
                    chain, pos = g.row_chains[line], g.row_chain_index(line)
                    size = self._a_len(line)
                else:
                    chain, pos = g.col_chains[line], g.col_chain_index(line)
                for p in range(len(self.panels)):
                    if kind == "B":
                        size = self._b_len(line, p)
                    if size <= 0:
                        continue
                    owner = (self.owner_a if kind == "A" else self.owner_b)[line][p]
                    for step in (1, -1):
                        far = [x for x in range(len(needs))
                               if needs[x] and (x - owner) * step > 0]
                        if not far:
                            continue
                        end = max(far) if step > 0 else min(far)
                        users = list(range(owner + step, end + step, step))
                        src = owner
                        legs = []
                        for h0 in range(0, len(users), self.reach):
                            stops = users[h0:h0 + self.reach]
                            legs.append(self._leg(kind, line, p, step, src, stops, chain, pos,
                                                  size, maxmsg))
                            src = stops[-1]
                        paths.append(legs)
        depth = self.machine.fifo_depth
        out = [m for legs in paths for leg, _ in legs for m in leg]
        for defer in ((True, False) if self.reach == 1 else (False,)):
            for legs in paths:
                r = 0
                for leg, relayed in legs:
                    t = r + (1 if defer and relayed else 0)
                    for m in leg:
                        m.send = (r, 0)
                        m.key = (t, 0) + m.key[2:]
                    r = t + 1
            out.sort(key=lambda m: m.key)
            if defer:
                # Messages that may be unconsumed together on a link: sent by round r and
                # received in round r or later.
                alive: dict[tuple, int] = {}
                for m in out:
                    for r in range(m.send[0], m.key[0] + 1):
                        c = (r, m.sender, m.d)
                        alive[c] = alive.get(c, 0) + 1
                if max(alive.values(), default=0) <= depth:
                    return out
                continue
            # Sub-rounds: at most fifo_depth messages per link in one send phase.
            count = {}
            for m in out:
                c = (m.send[0], m.sender, m.d)
                n = count.get(c, 0)
                count[c] = n + 1
                m.send = (m.send[0], n // depth)
                m.key = m.send + m.key[2:]
            out.sort(key=lambda m: m.key)
        return out

    def _leg(self, kind: str, line: int, p: int, step: int, src: int, stops: list[int],
             chain, pos, size: int, maxmsg: int) -> tuple[list[_Msg], bool]:
        """The messages (chunks) of one leg, and whether it crosses relay nodes or a chip edge
        (then it is received a round late, where the FIFO bound allows)."""
        if kind == "A":
            s_node, r_nodes = (line, src), [(line, x) for x in stops]
            d = E if step > 0 else W
        else:
            s_node, r_nodes = (src, line), [(x, line) for x in stops]
            d = S if step > 0 else N
        snd = self.nodes[s_node]
        if kind == "A":
            base_s = self._send_a_addr(snd, p)
            base_r = [self.temps[0].addr + self.nodes[r].slot_a[p] * self.slot_a_bytes
                      for r in r_nodes]
        else:
            base_s = self._b_addr(snd, p)
            base_r = [self._b_addr(self.nodes[r], p) for r in r_nodes]
        # Every live node after the sender, up to the last stop, in travel order.
        stop_at = {pos[x]: k for k, x in enumerate(stops)}
        grid_at = self._grid_at.get(pos)
        if grid_at is None:
            grid_at = self._grid_at[pos] = {c: x for x, c in enumerate(pos)}
        a, b = pos[src], pos[stops[-1]]
        path = range(a + 1, b + 1) if step > 0 else range(a - 1, b - 1, -1)
        hops = []
        for c in path:
            x = grid_at.get(c)
            node = None if x is None else ((line, x) if kind == "A" else (x, line))
            hops.append((chain[c], node, stop_at.get(c)))
        se = step > 0
        diag = s_node[0] + s_node[1]
        parts = chunks(size, maxmsg)
        out = []
        for c, (off, ln) in enumerate(parts):
            key = (0, 0, -diag if se else diag, kind, line, p, c)
            out.append(_Msg(key, kind, p, c == len(parts) - 1, s_node, d, base_s + off, ln,
                            [(nid, node, None if k is None else base_r[k] + off)
                             for nid, node, k in hops]))
        # A line of the mesh passes through the chips in order, so the leg crosses a chip
        # edge exactly when its two ends lie on different chips.
        chip = self.machine.chip_index
        crosses = self.machine.chips > 1 and chip[chain[a]] != chip[chain[b]]
        return out, crosses or any(node is None for _, node, _ in hops)

    # ---- padding and packing ------------------------------------------------------------------

    def _sanitize(self, ctx: Ctx) -> None:
        """Zero A's columns and B's rows in [K, round_up(K, tile)) where they are stored."""
        A, B = self.ins
        K = A.layout.cols
        t = self.tile
        if K % t == 0:
            return
        g = ctx.grid
        for i in range(g.P):
            for j in range(g.Q):
                r0, r1, c0, c1 = A.layout.block(i, j)
                if c0 < K <= c1 + t - 1 and c1 == K and r1 > r0:
                    for q in range(A.layout.pieces):
                        zero_cols(ctx.gcode(i, j), A, r1 - r0, K - c0,
                                  q * A.layout.piece_bytes)
                r0, r1, c0, c1 = B.layout.block(i, j)
                if r1 == K and c1 > c0 and r1 > r0:
                    zero_rows(ctx.gcode(i, j), B, K - r0, round_up(K - r0, t))

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
                    for q in range(A.layout.pieces):
                        copy_rect(ctx.gcode(i, j), src + q * self.a_piece_own,
                                  A.layout.stride,
                                  self._send_a_addr(nd, p) + q * self.a_piece_slot,
                                  self.sa_slot, nr, round_up(k1 - k0, self.tile), A.dtype,
                                  True)

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
                if K % self.tile:
                    for q in range(A.layout.pieces):
                        zero_cols(code, A, nr, K, q * A.layout.piece_bytes)
                    zero_rows(code, B, K, round_up(K, self.tile))
                steps = -(-K // self.tile)
                for tiles in _groups(nr, nc, self.gr, self.gc, self.tile):
                    self._tiles_zero(code, tiles)
                    self._piece(code, tiles, A.addr, A.layout.stride, B.addr, B.layout.stride,
                                steps, a_piece=A.layout.piece_bytes)
                    self._tiles_store(code, tiles)

    # ---- code for tiles -----------------------------------------------------------------------

    def _tiles_zero(self, code: Code, tiles: list[tuple[int, int]]) -> None:
        code.ops("acc.zero", [(ACC[a],) for a in range(len(tiles))])

    def _tiles_store(self, code: Code, tiles: list[tuple[int, int]], load: bool = False
                     ) -> None:
        C = self.out
        st = C.layout.stride
        op = "acc.ld" if load else "acc.st"
        t = self.tile
        for a, (rt, ct) in enumerate(tiles):
            code.op("li", "r1", C.addr + rt * t * st + ct * t * C.layout.itemsize)
            code.op(op, ACC[a], "r1", st)

    def _piece(self, code: Code, tiles: list[tuple[int, int]], a_addr: int, sa: int,
               b_addr: int, sb: int, steps: int, accs: list[int] | None = None,
               rts: list[int] | None = None, cts: list[int] | None = None,
               a_piece: int = 0) -> None:
        """acc[tile] += A[tile row] @ B[tile col] over one panel, one mmak per tile (tile k in
        accumulator accs[k], by default k). A's tile row rts[k] is pointed to by r(2+k), B's
        tile column cts[k] by r(6+k) (by default the rows and columns of `tiles`); `li` skips
        the pointers a sticky register already holds. With a split operand the tiles take one
        mmak per piece, the split operand's pointers moved to the next piece in between
        (`a_piece`: bytes between A's pieces here; B's are its layout's)."""
        rts = rts or sorted({rt for rt, _ in tiles})
        cts = cts or sorted({ct for _, ct in tiles})
        mm = self.mmak
        accs = accs or list(range(len(tiles)))
        b_piece = self.ins[1].layout.piece_bytes
        for q in range(self.npieces):
            da = q * a_piece if self.split == "A" else 0
            db = q * b_piece if self.split == "B" else 0
            for k, rt in enumerate(rts):
                if any(t[0] == rt for t in tiles):
                    code.li(self.a_regs[k], a_addr + rt * self.tile * sa + da)
            for k, ct in enumerate(cts):
                if any(t[1] == ct for t in tiles):
                    code.li(f"r{6 + k}", b_addr + ct * self.tile_bytes + db)
            code.li("r11", steps)
            code.ops(mm, [(ACC[a], self.a_regs[rts.index(rt)], REG[6 + cts.index(ct)], "r11",
                           sa, sb) for a, (rt, ct) in zip(accs, tiles, strict=True)])

    def _slot_loop(self, code: Code, tiles: list[tuple[int, int]], nd: _Node, s0: int, s1: int,
                   steps: int) -> None:
        """The same tiles over panel slots s0..s1-1 (both operands received, equal steps)."""
        if s1 - s0 <= 1:
            if s1 > s0:
                p = nd.full[s0]
                a, sa = self._a_addr(nd, p)
                self._piece(code, tiles, a, sa, self._b_addr(nd, p), self.ins[1].layout.stride,
                            steps, a_piece=self._a_piece(nd, p))
            return
        rts = sorted({rt for rt, _ in tiles})
        cts = sorted({ct for _, ct in tiles})
        sa, sb = self.sa_slot, self.ins[1].layout.stride
        a0 = self.temps[0].addr + s0 * self.slot_a_bytes
        b0 = self.temps[1].addr + s0 * self.slot_b_bytes
        for k, rt in enumerate(rts):
            code.li(self.a_regs[k], a0 + rt * self.tile * sa)
        for k, ct in enumerate(cts):
            code.li(f"r{6 + k}", b0 + ct * self.tile_bytes)
        code.li("r11", steps)

        mm = self.mmak

        ar = self.a_regs
        mmaks = [(ACC[a], ar[rts.index(rt)], REG[6 + cts.index(ct)], "r11", sa, sb)
                 for a, (rt, ct) in enumerate(tiles)]
        # A split operand's pointers go from piece to piece, then on to the next slot.
        np_ = self.npieces
        a_back = (np_ - 1) * self.a_piece_slot if self.split == "A" else 0
        b_piece = self.ins[1].layout.piece_bytes
        b_back = (np_ - 1) * b_piece if self.split == "B" else 0
        steps_ab = ([(ar[k], ar[k], self.slot_a_bytes - a_back)
                     for k in range(len(rts))]
                    + [(REG[6 + k], REG[6 + k], self.slot_b_bytes - b_back)
                       for k in range(len(cts))])
        if self.split == "A":
            next_piece = [(ar[k], ar[k], self.a_piece_slot) for k in range(len(rts))]
        else:
            next_piece = [(REG[6 + k], REG[6 + k], b_piece) for k in range(len(cts))]

        def body() -> None:
            for q in range(np_):
                if q:
                    code.ops("addi", next_piece)
                code.ops(mm, mmaks)
            code.ops("addi", steps_ab)

        code.counted("r12", s1 - s0, body)


SPLIT_PIECES = 3


class SplitBf16(Step):
    """An f32 matmul operand as three bf16 pieces that add up to it exactly, so that the
    bf16 matrix unit can multiply it by an operand that is exactly bf16.

    hi = x truncated to bf16 (its top 8 significant bits), mid = (x - hi) truncated, lo =
    x - hi - mid: x - hi is exact and has at most 16 significant bits, so lo has at most 8 and
    is a bf16 value itself (except where x is so small that lo falls below the smallest
    normal). A bf16 product of b and each piece is exact, so b * hi + b * mid + b * lo, summed
    in the f32 accumulators, is the f32 matmul: exact products summed in f32, as the language
    defines `@` (summation order and roundings differ from the reference's BLAS as any tile
    order does). Three bf16 mmas (2 cycles each on d1) instead of one f32 mma (32 cycles).
    Infinities and NaN go into hi, with mid = lo = 0, so they propagate as in f32.

    The pieces of a row are stored side by side in one row of the output (a layout of
    `pieces` = 3, `piece_bytes` apart), in the source's distribution; only the matmul reads
    them (compiler.matmul.Matmul: one mmak per piece and tile)."""

    def __init__(self, out: Value, src: Value, loc, label) -> None:
        super().__init__(f"split(bf16x{SPLIT_PIECES})", out, [src], loc, label)

    def emit(self, ctx: Ctx) -> None:
        src, out = self.ins[0], self.out
        L = out.layout
        for i, j in L.holders():
            r0, r1, c0, c1 = L.block(i, j)
            split_block(ctx.gcode(i, j), src, out, r1 - r0, c1 - c0)


def split_block(code: Code, src: Value, out: Value, nr: int, nc: int) -> None:
    """One node's block of SplitBf16: every row's vectors as hi, mid and lo pieces."""
    lanes = code.lanes
    pb = out.layout.piece_bytes
    code.op("vbcasti", "v15", HI_MASK)
    code.op("vbcasti", "v14", 0)
    code.li("r3", out.addr)
    code.li("r4", src.addr)

    def row() -> None:
        for k in range(-(-nc // lanes)):
            code.op("vld", "v0", ("r4", 4 * lanes * k))
            split_vector(code, "v0", "r3", 2 * lanes * k, pb, ("v1", "v2", "v3", "v4"), "v15",
                         "v14")
        code.op("addi", "r3", "r3", out.layout.stride)
        code.op("addi", "r4", "r4", src.layout.stride)

    code.counted("r1", nr, row)


def _groups(nr: int, nc: int, gr: int, gc: int, tile: int) -> list[list[tuple[int, int]]]:
    """C tiles (tile x tile) of an nr x nc block in groups of at most gr x gc (one accumulator
    each)."""
    mt, nt = -(-nr // tile), -(-nc // tile)
    out = []
    for r0 in range(0, mt, gr):
        for c0 in range(0, nt, gc):
            out.append([(r, c) for r in range(r0, min(mt, r0 + gr))
                        for c in range(c0, min(nt, c0 + gc))])
    return out


class _Work:
    """The compute schedule of one grid node: which (group, panel) pieces it has done. A piece
    may be cut by tile rows (a part of the group's tiles over one panel) to fit a short gap."""

    def __init__(self, mm: Matmul, nd: _Node) -> None:
        self.mm = mm
        self.nd = nd
        self.groups = (_groups(nd.nr, nd.nc, mm.gr, mm.gc, mm.tile) if nd.nr > 0 and nd.nc > 0
                       else [])
        self.rows = [sorted({rt for rt, _ in tiles}) for tiles in self.groups]
        self.cols = [sorted({ct for _, ct in tiles}) for tiles in self.groups]
        self.have_a = {p for p in range(len(mm.panels)) if mm.owner_a[nd.i][p] == nd.j}
        self.have_b = {p for p in range(len(mm.panels)) if mm.owner_b[nd.j][p] == nd.i}
        self.ready: list[int] = [p for p in nd.order if p in self.have_a and p in self.have_b]
        self.done: list[set[int]] = [set() for _ in self.groups]
        self.part: dict[tuple[int, int], set[int]] = {}   # (group, panel) -> tile rows done
        self.cur = 0                    # group open in the accumulators, if self.open
        self.open = False
        self.started = [False] * len(self.groups)
        m = mm.machine
        self.per = (m.cost_mma_bf16 if mm.mmak == "mmak.bf16" else m.cost_mma_f32) * mm.npieces

    def arrived(self, p: int, kind: str) -> None:
        (self.have_a if kind == "A" else self.have_b).add(p)
        if p in self.have_a and p in self.have_b and p not in self.ready:
            self.ready.append(p)

    def _steps(self, p: int) -> int:
        k0, k1 = self.mm.panels[p]
        return -(-(k1 - k0) // self.mm.tile)

    def _left(self, g: int, p: int) -> list[int]:
        """Tile rows of group g still to do on panel p."""
        done = self.part.get((g, p), ())
        return [rt for rt in self.rows[g] if rt not in done]

    def _do(self, code: Code, g: int, p: int, rows: list[int] | None = None) -> None:
        mm, nd = self.mm, self.nd
        rows = self._left(g, p) if rows is None else rows
        tiles = [(k, t) for k, t in enumerate(self.groups[g]) if t[0] in rows]
        a, sa = mm._a_addr(nd, p)
        mm._piece(code, [t for _, t in tiles], a, sa, mm._b_addr(nd, p),
                  mm.ins[1].layout.stride, self._steps(p), [k for k, _ in tiles],
                  self.rows[g], self.cols[g], mm._a_piece(nd, p))
        done = self.part.setdefault((g, p), set())
        done.update(rows)
        if len(done) == len(self.rows[g]):
            del self.part[(g, p)]
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
        load and a store of its accumulators later. A piece is some tile rows of the group over
        one panel, as many as fit. A `strict` gap (before a later message of the round) starts
        nothing that does not fit.
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
            left = self._left(g, p)
            row = len(self.groups[g]) // len(self.rows[g]) * self._steps(p) * self.per + 4
            # Whole tile rows that fit the rest of the gap (half a row may overrun); the first
            # piece of a gap that is not strict does at least one row.
            n = min(len(left), (budget - spent + row // 2) // row)
            if n <= 0:
                if spent or strict:
                    break
                n = 1
            self._do(code, g, p, left[:n])
            spent += n * row + 4
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
            for p in rest:
                if (g, p) in self.part:
                    self._do(code, g, p)
            rest = [p for p in rest if p not in self.done[g]]
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
    """The timing model of docs/TIMING.md, run at compile time over the matmul's messages (clocks
    by live node id), so each gap is filled with just enough compute to end when that node's
    messages are due. `extra` counts the `li` instructions emitted before a network one."""

    def __init__(self, m) -> None:
        self.m = m
        self.t: dict[int, int] = {}
        self.wire: dict[tuple[int, int], int] = {}

    def clock(self, nid: int) -> int:
        return self.t.get(nid, 0)

    def busy(self, nid: int, cycles: int) -> None:
        self.t[nid] = self.clock(nid) + cycles

    def _depart(self, nid: int, d: int, at: int, nbytes: int) -> int:
        m = self.m
        ser = -(-nbytes // int(m.link_bandwidth[nid, d]))
        depart = max(at, self.wire.get((nid, d), 0))
        self.wire[(nid, d)] = depart + ser
        return depart + int(m.link_latency[nid, d]) + ser

    def send(self, nid: int, d: int, nbytes: int, extra: int) -> int:
        """A send; its arrival time at the next live node."""
        at = self.clock(nid) + extra * self.m.cost_alu
        self.t[nid] = at + self.m.cost_send
        return self._depart(nid, d, at, nbytes)

    def recv(self, nid: int, arrive: int, extra: int = 0) -> None:
        m = self.m
        self.t[nid] = max(self.clock(nid) + extra * m.cost_alu, arrive) + m.cost_recv

    def relay(self, nid: int, arrive: int, d: int, nbytes: int, extra: int) -> int:
        """A relay or relayb: a receive, then a send; the arrival time at the next node."""
        self.recv(nid, arrive, extra)
        at = self.t[nid]
        self.t[nid] = at + self.m.cost_send
        return self._depart(nid, d, at, nbytes)


def zero_cols(code: Code, v: Value, nrows: int, kc: int, base: int = 0) -> None:
    """Zero columns [kc, round_up(kc, lanes)) of the first nrows rows of v's block (of the
    piece `base` bytes into each row)."""
    lanes = code.lanes
    if kc % lanes == 0 or nrows <= 0:
        return
    size = v.layout.itemsize
    off = base + (kc // lanes) * lanes * size
    code.lane_mask("v14", kc % lanes, "v13")
    code.li("r1", v.addr + off)

    def row() -> None:
        code.vload("v0", "r1", 0, v.dtype)
        code.op("vand", "v0", "v0", "v14")
        code.vstore("v0", "r1", 0, v.dtype)
        code.op("addi", "r1", "r1", v.layout.stride)

    code.counted("r2", nrows, row)


def zero_rows(code: Code, v: Value, r0: int, r1: int) -> None:
    """Zero whole stored rows [r0, r1) of v's block: the bytes from row r0 to row r1, which
    are contiguous, in whole vector stores and, where they end in half a vector, a narrowing
    store of 16 bf16 zeros. A stored row of a layout that is not dense is a whole number of
    half vectors (16 bf16 lanes), and may be only one: a bf16 block of at most 16 columns."""
    if r1 <= r0:
        return
    vb = code.vbytes
    stride = v.layout.stride
    assert not v.layout.dense and stride % (vb // 2) == 0, v
    nv, half = divmod((r1 - r0) * stride, vb)
    code.op("vbcasti", "v0", 0)
    code.li("r1", v.addr + r0 * stride)
    for k in range(nv):
        code.op("vst", "v0", ("r1", vb * k))
    if half:
        code.op("vstn.bf16", "v0", ("r1", vb * nv))
