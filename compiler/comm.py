"""Explicit neighbour communication: line messages, reductions along lines, redistribution.

Every transfer is a *line message*: one block of bytes that travels along one row chain or one
column chain, in one direction, from its sender to the farthest node that needs it. Nodes on the
way that need it too store it while forwarding (`relayb`), nodes that only pass it on `relay` it,
and the farthest one `recvb`s it. Payloads larger than `max_message_bytes` are cut into several
messages.

Why nothing can deadlock, whatever the FIFO depth: the compiler emits the programs of all nodes by
walking one global list of messages (steps in program order; inside a step, messages in a fixed
order that both ends compute the same way) and appending to each node's program only the sends,
relays and receives of the messages it touches. Every node therefore meets its messages in the
same global order. Take the first message in that order that is not yet consumed: its sender has
finished everything before it (all earlier messages are consumed), so it has sent it (a full FIFO
would hold an earlier, unconsumed message of that link); its receiver has finished everything
before it too, so it is waiting for exactly this message, and a relay finds room downstream for
the same reason. So the first unconsumed message always makes progress, with FIFOs of any depth.

`Redistribute` moves a value from one layout to another (optionally transposing it) in four
phases: all eastward row messages, westward, southward, northward. A piece travels along its
source's grid row to the destination column (the corner node stores it), then down or up that
column; pieces for several nodes on the way are multicast.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.asmgen import Code, E, N, S, W
from compiler.layout import Layout, round_up
from compiler.plan import Ctx, Step, Value, scratch
from d1isa.machine import OPPOSITE


def chunks(nbytes: int, maxmsg: int) -> list[tuple[int, int]]:
    """(offset, length) of the messages that carry `nbytes` bytes."""
    out = []
    off = 0
    while off < nbytes:
        n = min(maxmsg, nbytes - off)
        out.append((off, n))
        off += n
    return out


@dataclass
class LineMsg:
    """One message along a chain (increasing index = east for rows, south for columns)."""

    chain: tuple[int, ...]
    vertical: bool
    src: int
    addr: int
    nbytes: int
    stops: dict[int, int]           # chain position -> address where that node stores it


def emit_msg(ctx: Ctx, m: LineMsg) -> None:
    """Append the sends, relays and receives of one message to every node on its path."""
    if not m.stops:
        return
    far = max(m.stops, key=lambda p: abs(p - m.src))
    step = 1 if far > m.src else -1
    d_to = (S if m.vertical else E) if step > 0 else (N if m.vertical else W)
    d_from = OPPOSITE[d_to]
    if ctx.traffic is not None:
        ctx.traffic.path(None, m.chain[m.src:far + 1] if step > 0
                         else m.chain[far:m.src + 1][::-1], m.nbytes)
    ctx.code(m.chain[m.src]).sendb(d_to, m.addr, m.nbytes)
    for pos in range(m.src + step, far + step, step):
        code = ctx.code(m.chain[pos])
        if pos == far:
            code.recvb(d_from, m.stops[pos], m.nbytes)
        elif pos in m.stops:
            code.relayb(d_from, d_to, m.stops[pos], m.nbytes)
        else:
            code.relay(d_from, d_to)


def line_of(ctx: Ctx, axis: str, i: int, j: int) -> tuple[tuple[int, ...], bool, list[int],
                                                          int]:
    """The chain along grid axis `axis` ('Q': the grid row of (i, j); 'P': its grid column),
    whether it is vertical, the chain positions of its grid nodes, and (i, j)'s index on it."""
    g = ctx.grid
    if axis == "Q":
        return g.row_chains[i], False, list(g.row_chain_index(i)), j
    return g.col_chains[j], True, list(g.col_chain_index(j)), i


def lines_of(ctx: Ctx, axis: str) -> list[list[tuple[int, int]]]:
    """Grid nodes grouped by the lines along `axis`: rows of the grid for 'Q', columns for 'P'."""
    g = ctx.grid
    if axis == "Q":
        return [[(i, j) for j in range(g.Q)] for i in range(g.P)]
    return [[(i, j) for i in range(g.P)] for j in range(g.Q)]


# ---- reductions along lines -------------------------------------------------------------------

COMBINE = {"sum": "vadd", "max": "vmax", "min": "vmin"}


def combine_vectors(code: Code, op: str, acc: int, other: int, n: int) -> None:
    """acc[0:n] = acc op other, f32, in whole vectors (lanes past n are don't-care)."""
    nv = -(-n // code.lanes)
    vb = code.vbytes

    def one(off: int, base_a: str, base_b: str) -> None:
        code.op("vld", "v0", (base_a, off))
        code.op("vld", "v1", (base_b, off))
        code.op(COMBINE[op], "v0", "v0", "v1")
        code.op("vst", "v0", (base_a, off))

    code.li("r1", acc)
    code.li("r2", other)
    if nv <= 8:
        for k in range(nv):
            one(vb * k, "r1", "r2")
        return
    full, rest = divmod(nv, 4)

    def body() -> None:
        for k in range(4):
            one(vb * k, "r1", "r2")
        code.op("addi", "r1", "r1", 4 * vb)
        code.op("addi", "r2", "r2", 4 * vb)

    code.counted("r3", full, body)
    for k in range(rest):
        one(vb * k, "r1", "r2")


def allreduce(ctx: Ctx, axis: str | None, members: list[tuple[int, int]], vec: int, tmp: int,
              nbytes: dict[tuple[int, int], int], op: str,
              bands: tuple[int, ...] | None = None) -> None:
    """Combine the f32 vectors at address `vec` of the grid nodes in `members` along every line
    of grid axis `axis`, leaving the result at `vec` on all of them.

    Partials flow from both ends of a line to its middle node, which combines them and sends the
    result back out; `tmp` receives. nbytes[(i, j)] is the vector's size at that node (the same
    along a line). With axis None there is nothing to combine; "PQ" (rows over the whole grid)
    combines along the grid rows, then along the grid columns. `bands` (the grid-column bounds
    of a banded layout) cut every grid row into segments, each all-reduced on its own: the
    nodes of one band hold rows of one entry of a batch.
    """
    if axis is None:
        return
    if axis == "PQ":
        allreduce(ctx, "Q", members, vec, tmp, nbytes, op, bands)
        allreduce(ctx, "P", members, vec, tmp, nbytes, op)
        return
    member_set = set(members)
    for line in lines_of(ctx, axis):
        nodes = [p for p in line if p in member_set]
        if bands is not None and axis == "Q":
            for e in range(len(bands) - 1):
                _allreduce_line(ctx, axis, [p for p in nodes if bands[e] <= p[1] < bands[e + 1]],
                                vec, tmp, nbytes, op)
        else:
            _allreduce_line(ctx, axis, nodes, vec, tmp, nbytes, op)


def _allreduce_line(ctx: Ctx, axis: str, nodes: list[tuple[int, int]], vec: int, tmp: int,
                    nbytes: dict[tuple[int, int], int], op: str) -> None:
    """allreduce among `nodes`: grid nodes of one line, in order along it."""
    if len(nodes) < 2:
        return
    i0, j0 = nodes[0]
    chain, vertical, positions, _ = line_of(ctx, axis, i0, j0)
    idx = [p[0] if axis == "P" else p[1] for p in nodes]
    pos = [positions[k] for k in idx]
    n = nbytes[nodes[0]]
    if n <= 0:
        return
    mid = len(nodes) // 2
    parts = chunks(n, ctx.machine.max_message_bytes)
    # Reduce toward the middle: first from the low end, then from the high end.
    for order in (range(0, mid), range(len(nodes) - 1, mid, -1)):
        for k in order:
            nxt = k + 1 if k < mid else k - 1
            for off, ln in parts:
                emit_msg(ctx, LineMsg(chain, vertical, pos[k], vec + off, ln,
                                      {pos[nxt]: tmp + off}))
                c = ctx.gcode(*nodes[nxt])
                combine_vectors(c, op, vec + off, tmp + off, ln // 4)
    # Broadcast the result back out, both ways, storing on every node.
    for side in (range(mid - 1, -1, -1), range(mid + 1, len(nodes))):
        stops = {pos[k]: vec for k in side}
        if not stops:
            continue
        for off, ln in parts:
            emit_msg(ctx, LineMsg(chain, vertical, pos[mid], vec + off, ln,
                                  {p: a + off for p, a in stops.items()}))

# ---- local copies -----------------------------------------------------------------------------

def copy_rect(code: Code, src: int, sstride: int, dst: int, dstride: int, nrows: int,
              ncols: int, dtype: str, overrun_ok: bool) -> None:
    """dst[r][c] = src[r][c] for r < nrows, c < ncols (row strides in bytes)."""
    if nrows <= 0 or ncols <= 0:
        return
    size = 4 if dtype == "f32" else 2
    lanes = code.lanes
    if sstride == dstride == ncols * size and ncols * nrows > lanes:
        # Both sides contiguous: one long row.
        ncols, nrows = ncols * nrows, 1
    code.li("r4", src)
    code.li("r5", dst)
    nvec = ncols // lanes

    def row() -> None:
        if nvec <= 8:
            code.copy_row("r4", 0, "r5", 0, ncols, dtype, overrun_ok)
        else:
            full4, rest = divmod(nvec, 4)
            code.op("mv", "r6", "r4")
            code.op("mv", "r7", "r5")

            def four() -> None:
                for k in range(4):
                    code.vload("v0", "r6", lanes * size * k, dtype)
                    code.vstore("v0", "r7", lanes * size * k, dtype)
                code.op("addi", "r6", "r6", 4 * lanes * size)
                code.op("addi", "r7", "r7", 4 * lanes * size)

            code.counted("r8", full4, four)
            done = full4 * 4 * lanes
            code.copy_row("r6", 0, "r7", 0, ncols - done, dtype, overrun_ok)
        if nrows > 1:
            code.op("addi", "r4", "r4", sstride)
            code.op("addi", "r5", "r5", dstride)

    code.counted("r9", nrows, row)


def copy_rect_t(code: Code, src: int, sstride: int, dst: int, dstride: int, nrows: int,
                ncols: int, dtype: str) -> None:
    """dst[r][c] = src[c][r] for r < nrows, c < ncols: a transposing copy with strided loads;
    exact, no element past ncols is written."""
    if nrows <= 0 or ncols <= 0:
        return
    size = 4 if dtype == "f32" else 2
    lanes = code.lanes
    full, tail = divmod(ncols, lanes)
    load = "vlds" if dtype == "f32" else "vldsw.bf16"
    sld = "ld32u" if dtype == "f32" else "ld16u"
    sst = "st32" if dtype == "f32" else "st16"
    code.li("r4", src)
    code.li("r5", dst)
    code.li("r10", sstride)

    def row() -> None:
        code.op("mv", "r6", "r4")
        code.op("mv", "r7", "r5")

        def vec() -> None:
            code.op(load, "v0", ("r6", 0), "r10")
            code.vstore("v0", "r7", 0, dtype)
            code.op("addi", "r6", "r6", lanes * sstride)
            code.op("addi", "r7", "r7", lanes * size)

        code.counted("r8", full, vec)

        def scal() -> None:
            code.op(sld, "r11", ("r6", 0))
            code.op(sst, "r11", ("r7", 0))
            code.op("addi", "r6", "r6", sstride)
            code.op("addi", "r7", "r7", size)

        code.counted("r12", tail, scal)
        code.op("addi", "r4", "r4", size)
        code.op("addi", "r5", "r5", dstride)

    code.counted("r9", nrows, row)


# ---- redistribution ---------------------------------------------------------------------------

@dataclass
class _Group:
    """One piece of the source, sent from one holder to a set of destination nodes."""

    holder: tuple[int, int]
    rect: tuple[int, int, int, int]          # source view rows [a0, a1) x cols [b0, b1)
    dsts: list[tuple[int, int]]
    prows: int = 0
    pcols: int = 0
    pstride: int = 0
    direct: bool = False                     # sent straight from the holder's storage
    pack_off: int = -1
    idx: int = 0


class Redistribute(Step):
    """Move `src` into layout `out.layout` (transposing the view if `transpose`)."""

    def __init__(self, out: Value, src: Value, transpose: bool, loc: tuple[int, int],
                 label: str, grid) -> None:
        super().__init__("redistribute" + ("^T" if transpose else ""), out, [src], loc, label)
        self.transpose = transpose
        self.grid = grid
        self.local: list[tuple[tuple[int, int], tuple[int, int, int, int]]] = []
        self.groups: list[_Group] = []
        # Per node: byte offset of each buffer inside the scratch value.
        self.buf: dict[tuple[int, int], dict[object, int]] = {}
        self._plan()

    # A piece in destination (view) coordinates.
    def _dst_rect(self, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        a0, a1, b0, b1 = rect
        return (b0, b1, a0, a1) if self.transpose else rect

    def _plan(self) -> None:
        L1: Layout = self.ins[0].layout
        L2: Layout = self.out.layout
        g = self.grid
        holders: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
        for i, j in L1.holders():
            holders.setdefault(L1.block(i, j), []).append((i, j))
        groups: dict[tuple, _Group] = {}
        for di in range(g.P):
            for dj in range(g.Q):
                r0, r1, c0, c1 = L2.block(di, dj)
                if r1 <= r0 or c1 <= c0:
                    continue
                need = (c0, c1, r0, r1) if self.transpose else (r0, r1, c0, c1)
                for blk, hs in holders.items():
                    a0, a1 = max(need[0], blk[0]), min(need[1], blk[1])
                    b0, b1 = max(need[2], blk[2]), min(need[3], blk[3])
                    if a1 <= a0 or b1 <= b0:
                        continue
                    h = _pick_holder(hs, di, dj)
                    rect = (a0, a1, b0, b1)
                    if h == (di, dj):
                        self.local.append(((di, dj), rect))
                        continue
                    key = (h, rect)
                    grp = groups.get(key)
                    if grp is None:
                        grp = groups[key] = _Group(h, rect, [])
                    grp.dsts.append((di, dj))
        self.groups = [groups[k] for k in sorted(groups)]
        for k, grp in enumerate(self.groups):
            grp.idx = k
        isz = L1.itemsize
        sizes: dict[tuple[int, int], int] = {}

        def take(node: tuple[int, int], key: object, n: int) -> int:
            off = sizes.get(node, 0)
            self.buf.setdefault(node, {})[key] = off
            sizes[node] = off + n + 4 * L1.lanes     # room for a vector's overrun
            return off

        for k, grp in enumerate(self.groups):
            a0, a1, b0, b1 = grp.rect
            hi, hj = grp.holder
            hr0, hr1, hc0, hc1 = L1.block(hi, hj)
            if self.transpose:
                grp.prows, grp.pcols = b1 - b0, a1 - a0
            else:
                grp.prows, grp.pcols = a1 - a0, b1 - b0
            grp.direct = (not self.transpose and b0 == hc0 and b1 == hc1)
            if grp.direct:
                grp.pstride = L1.stride
            else:
                grp.pstride = grp.pcols * isz
                grp.pack_off = take(grp.holder, ("pack", k), grp.prows * grp.pstride)
            for node in self._stops(grp):
                if not self._direct_recv(grp, node):
                    take(node, ("recv", k), grp.prows * grp.pstride)
        need = max(sizes.values(), default=0)
        self.temps = [scratch(f"{self.out.name}.xfer", need)] if need else []

    def _stops(self, grp: _Group) -> list[tuple[int, int]]:
        """Nodes that store the piece: the corners of its row phase and its destinations."""
        hi, hj = grp.holder
        out = {(hi, dj) for _, dj in grp.dsts if dj != hj}
        out.update(grp.dsts)
        return sorted(out)

    def _direct_recv(self, grp: _Group, node: tuple[int, int]) -> bool:
        """Can `node` receive the piece straight into its destination storage?"""
        if node not in grp.dsts:
            return False
        L2 = self.out.layout
        r0, r1, c0, c1 = L2.block(*node)
        pr0, pr1, pc0, pc1 = self._dst_rect(grp.rect)
        return pc0 == c0 and pc1 == c1 and grp.pstride == L2.stride

    def _where(self, grp: _Group, node: tuple[int, int]) -> int:
        """Address where `node` keeps the piece."""
        if self._direct_recv(grp, node):
            L2 = self.out.layout
            r0 = L2.block(*node)[0]
            pr0 = self._dst_rect(grp.rect)[0]
            return self.out.addr + (pr0 - r0) * L2.stride
        return self.temps[0].addr + self.buf[node][("recv", grp.idx)]

    def emit(self, ctx: Ctx) -> None:
        src = self.ins[0]
        L1 = src.layout
        g = ctx.grid
        isz = L1.itemsize
        dtype = src.dtype
        maxmsg = ctx.machine.max_message_bytes
        for (i, j), rect in self.local:
            self._copy_in(ctx.gcode(i, j), (i, j), rect)
        for grp in self.groups:
            if grp.direct:
                continue
            a0, a1, b0, b1 = grp.rect
            hr0, _, hc0, _ = L1.block(*grp.holder)
            at = src.addr + (a0 - hr0) * L1.stride + (b0 - hc0) * isz
            dst = self.temps[0].addr + grp.pack_off
            code = ctx.gcode(*grp.holder)
            if self.transpose:
                copy_rect_t(code, at, L1.stride, dst, grp.pstride, grp.prows, grp.pcols, dtype)
            else:
                copy_rect(code, at, L1.stride, dst, grp.pstride, grp.prows, grp.pcols, dtype,
                          True)
        # Row phase (east, then west), then column phase (south, then north).
        for phase in (E, W, S, N):
            for grp in self.groups:
                hi, hj = grp.holder
                nbytes = (grp.prows - 1) * grp.pstride + grp.pcols * isz
                if phase in (E, W):
                    cols = sorted({dj for _, dj in grp.dsts if (dj > hj if phase == E
                                                                 else dj < hj)})
                    if not cols:
                        continue
                    chain = g.row_chains[hi]
                    pos = g.row_chain_index(hi)
                    stops = {pos[dj]: self._where(grp, (hi, dj)) for dj in cols}
                    base = self._source_addr(grp)
                    self._send(ctx, chain, False, pos[hj], base, nbytes, stops, maxmsg,
                               grp, [(hi, dj) for dj in cols])
                else:
                    for cj in sorted({dj for _, dj in grp.dsts}):
                        rows = sorted({di for di, dj in grp.dsts if dj == cj
                                       and (di > hi if phase == S else di < hi)})
                        if not rows:
                            continue
                        chain = g.col_chains[cj]
                        pos = g.col_chain_index(cj)
                        base = (self._source_addr(grp) if cj == hj
                                else self._where(grp, (hi, cj)))
                        stops = {pos[di]: self._where(grp, (di, cj)) for di in rows}
                        self._send(ctx, chain, True, pos[hi], base, nbytes, stops, maxmsg,
                                   grp, [(di, cj) for di in rows])

    def _source_addr(self, grp: _Group) -> int:
        src = self.ins[0]
        if grp.direct:
            hr0 = src.layout.block(*grp.holder)[0]
            return src.addr + (grp.rect[0] - hr0) * src.layout.stride
        return self.temps[0].addr + grp.pack_off

    def _send(self, ctx: Ctx, chain, vertical: bool, src_pos: int, base: int, nbytes: int,
              stops: dict[int, int], maxmsg: int, grp: _Group,
              stop_nodes: list[tuple[int, int]]) -> None:
        for off, ln in chunks(nbytes, maxmsg):
            emit_msg(ctx, LineMsg(chain, vertical, src_pos, base + off, ln,
                                  {p: a + off for p, a in stops.items()}))
        for node in stop_nodes:
            if node in grp.dsts and not self._direct_recv(grp, node):
                self._unpack(ctx, grp, node)

    def _unpack(self, ctx: Ctx, grp: _Group, node: tuple[int, int]) -> None:
        L2 = self.out.layout
        r0, r1, c0, c1 = L2.block(*node)
        pr0, pr1, pc0, pc1 = self._dst_rect(grp.rect)
        isz = L2.itemsize
        dst = self.out.addr + (pr0 - r0) * L2.stride + (pc0 - c0) * isz
        ok = (not L2.dense and pc1 == c1
              and (pc0 - c0) + round_up(pc1 - pc0, L2.lanes) <= L2.stride // isz)
        copy_rect(ctx.gcode(*node), self._where(grp, node), grp.pstride, dst, L2.stride,
                  pr1 - pr0, pc1 - pc0, self.out.dtype, ok)

    def _copy_in(self, code: Code, node: tuple[int, int], rect: tuple[int, int, int, int]
                 ) -> None:
        """A piece the destination node already holds: copy it from the source's storage."""
        L1, L2 = self.ins[0].layout, self.out.layout
        base = self.ins[0].addr
        a0, a1, b0, b1 = rect
        hr0, _, hc0, _ = L1.block(*node)
        r0, r1, c0, c1 = L2.block(*node)
        pr0, pr1, pc0, pc1 = self._dst_rect(rect)
        isz = L1.itemsize
        at = base + (a0 - hr0) * L1.stride + (b0 - hc0) * isz
        dst = self.out.addr + (pr0 - r0) * L2.stride + (pc0 - c0) * isz
        if self.transpose:
            copy_rect_t(code, at, L1.stride, dst, L2.stride, pr1 - pr0, pc1 - pc0,
                        self.out.dtype)
        else:
            ok = (not L2.dense and pc1 == c1
                  and (pc0 - c0) + round_up(pc1 - pc0, L2.lanes) <= L2.stride // isz)
            copy_rect(code, at, L1.stride, dst, L2.stride, pr1 - pr0, pc1 - pc0,
                      self.out.dtype, ok)


def _pick_holder(hs: list[tuple[int, int]], di: int, dj: int) -> tuple[int, int]:
    """The holder a destination reads a replicated block from: itself, else one in its grid
    row (a row message only), else in its grid column, else the nearest."""
    if (di, dj) in hs:
        return (di, dj)
    return min(hs, key=lambda h: (0 if h[0] == di else 1 if h[1] == dj else 2,
                                  abs(h[0] - di) + abs(h[1] - dj), h))
