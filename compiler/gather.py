"""Gather: move elements between layouts by an index map, with explicit neighbour messages.

The data-movement ops of the language — slicing, `concat`, `transpose` with axes, a `reshape`
that changes the 2-D view, the broadcast of a batched matmul's operand, the gradients' scatters
(`unslice`) and the patches of a window (`im2col`) — all say, for every element of the result,
which element of which operand it is (or that it is zero, or -inf: a gather's `fill`). `Gather`
takes exactly that: an integer array over the result's 2-D view whose entries are flat
(row-major) element indices into the operands, numbered one after the other, or -1 for a zero. It
works for any source and destination layouts (blocks, vectors, replicated, dense, skewed,
batched).

Planning, per destination grid node and its block: every element's source is looked up in its
operand's layout; the node reads each source block from the holder `comm.Redistribute` would
pick (itself, else one in its grid row, then its grid column, then the nearest). Elements a
node holds itself are copied locally; the rest form one *piece* per (holder, operand): the
source elements in the destination's row-major order. Pieces with the same source elements
for several destinations (a replicated result) are multicast. A holder packs a piece into a
contiguous buffer (or sends it straight from its storage when the elements are contiguous
there), the piece travels along the holder's grid row to each destination column and down or
up that column, exactly the four phases (east, west, south, north) and message order of
`comm.Redistribute`, so the same argument makes it deadlock-free for any FIFO depth; the
destination unpacks it (or receives it straight into its storage when its elements are
contiguous there).

Copies by offset lists are compressed twice: into *runs* (elements whose source and
destination offsets both advance by a constant stride: one strided or contiguous vector load
and store per 16 elements, `vlds`/`vsts` for strides) and runs into *families* (runs of one
length whose starts advance by constant steps: a counted loop). A transposed block is one
family of strided runs, a block of whole rows one family of contiguous runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from compiler.asmgen import Code, E, N, S, W, f32_bits
from compiler.comm import LineMsg, _pick_holder, chunks, emit_msg
from compiler.ir import Node, Op, numpy_index, transpose_perm
from compiler.layout import Layout, view_of
from compiler.plan import Ctx, Step, Value, scratch
from compiler.windows import im2col_index

SLACK_BYTES = 64          # room for one vector's overrun after every buffer


@dataclass
class _Piece:
    """Elements of operand `k` that `holder` sends: `src` are element offsets in the holder's
    stored block (row stride included), in the order they are packed; every destination node
    has its own element offsets `dst[node]` in its stored block of the result."""

    holder: tuple[int, int]
    k: int
    src: np.ndarray
    dst: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    pack_off: int = -1
    direct: bool = False
    recv: dict[tuple[int, int], int] = field(default_factory=dict)   # node -> scratch offset

    @property
    def n(self) -> int:
        return len(self.src)


def index_map(node: Node) -> np.ndarray:
    """The gather index of a data-movement node over its 2-D view: for every result element,
    the flat index of the operand element it is (operands numbered one after the other), or
    -1 for a zero."""
    op = node.op
    if op is Op.SLICE:
        x = node.inputs[0]
        a = np.arange(x.size).reshape(x.shape)[numpy_index(node.index)]
    elif op is Op.UNSLICE:
        g = node.inputs[0]
        a = np.full(node.shape, -1, dtype=np.int64)
        a[numpy_index(node.index)] = np.arange(g.size).reshape(g.shape)
    elif op is Op.CONCAT:
        parts, base = [], 0
        for x in node.inputs:
            parts.append(np.arange(base, base + x.size).reshape(x.shape))
            base += x.size
        a = np.concatenate(parts, axis=node.axis)
    elif op is Op.TRANSPOSE:
        x = node.inputs[0]
        a = np.arange(x.size).reshape(x.shape).transpose(transpose_perm(node))
    elif op is Op.RESHAPE:
        a = np.arange(node.size)
    elif op is Op.IM2COL:
        a = im2col_index(node.inputs[0].shape, node.window)
    else:  # pragma: no cover - only data-movement ops are gathered
        raise AssertionError(f"no index map for {op}")
    return np.ascontiguousarray(a, dtype=np.int64).reshape(view_of(node.shape))


class Gather(Step):
    """out = the elements `index` names, from `srcs` (see the module docstring)."""

    def __init__(self, out: Value, srcs: list[Value], index: np.ndarray, loc: tuple[int, int],
                 label: str, grid, kind: str = "gather", fill: float = 0.0,
                 by_columns: bool = False) -> None:
        super().__init__(kind, out, list(srcs), loc, label)
        self.grid = grid
        self.fill = fill            # what an entry -1 of the index stands for
        # Local copies and fills may go down the destination's columns (strided runs) where
        # that makes fewer runs: a transposing gather such as the weights of a conv2d.
        self.by_columns = by_columns
        self.index = np.asarray(index, dtype=np.int64)
        if self.index.shape != out.view:
            raise ValueError(f"gather index {self.index.shape} is not the view {out.view}")
        self.local: list[tuple[tuple[int, int], int, np.ndarray, np.ndarray]] = []
        self.zeros: list[tuple[tuple[int, int], np.ndarray]] = []
        self.pieces: list[_Piece] = []
        self._plan()

    # ---- planning -----------------------------------------------------------------------------

    def _plan(self) -> None:
        L2: Layout = self.out.layout
        srcs = self.ins
        isz = L2.itemsize
        sizes = [v.view[0] * v.view[1] for v in srcs]
        bases = np.cumsum([0] + sizes)
        idx = self.index
        valid = idx >= 0
        k_of = np.where(valid, np.searchsorted(bases[1:], idx, side="right"), -1)
        local = np.where(valid, idx - bases[np.maximum(k_of, 0)], 0)
        cols = np.array([v.view[1] for v in srcs], dtype=np.int64)
        c1 = cols[np.maximum(k_of, 0)]
        srow, scol = local // c1, local % c1
        # The block of its operand's layout every element lies in, as one code per (k, block)
        # (in the order of k, then the block's row and column).
        which = np.zeros_like(idx)
        rects: list[list[tuple[int, int, int, int]]] = []
        for k, v in enumerate(srcs):
            sel = k_of == k
            which[sel], rk = v.layout.locate(srow[sel], scol[sel])
            rects.append(rk)
        nb = max(len(r) for r in rects)
        code = np.where(valid, k_of * nb + which, -1)
        holders: list[dict[tuple[int, int, int, int], list[tuple[int, int]]]] = []
        for v in srcs:
            hs: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
            for i, j in v.layout.holders():
                hs.setdefault(v.layout.block(i, j), []).append((i, j))
            holders.append(hs)
        pieces: dict[tuple, _Piece] = {}
        dstride = L2.stride // isz
        g = self.grid
        for di in range(g.P):
            for dj in range(g.Q):
                r0, r1, c0, c1_ = L2.block(di, dj)
                if r1 <= r0 or c1_ <= c0:
                    continue
                d = (di, dj)
                sub = code[r0:r1, c0:c1_]
                zr, zc = np.nonzero(sub < 0)
                if len(zr):
                    z = zr * dstride + zc
                    if self.by_columns:
                        z = _cheaper_order(None, z, dstride)[1]
                    self.zeros.append((d, z))
                for c in np.unique(sub[sub >= 0]):
                    k, rest = divmod(int(c), nb)
                    L1 = srcs[k].layout
                    rect = rects[k][rest]
                    h = _pick_holder(holders[k][rect], di, dj)
                    rr, cc = np.nonzero(sub == c)
                    sstride = L1.stride // isz
                    s_off = ((srow[r0:r1, c0:c1_][rr, cc] - rect[0]) * sstride
                             + scol[r0:r1, c0:c1_][rr, cc] - rect[2])
                    d_off = rr * dstride + cc
                    if h == d:
                        if self.by_columns:
                            s_off, d_off = _cheaper_order(s_off, d_off, dstride)
                        self.local.append((d, k, s_off, d_off))
                        continue
                    key = (h, k, s_off.tobytes())
                    p = pieces.get(key)
                    if p is None:
                        p = pieces[key] = _Piece(h, k, s_off)
                    p.dst[d] = d_off
        self.pieces = [pieces[key] for key in sorted(pieces, key=lambda t: (t[0], t[1], t[2]))]
        used: dict[tuple[int, int], int] = {}

        def take(node: tuple[int, int], nbytes: int) -> int:
            off = used.get(node, 0)
            used[node] = off + -(-nbytes // SLACK_BYTES) * SLACK_BYTES + SLACK_BYTES
            return off

        for p in self.pieces:
            p.direct = _contiguous(p.src)
            if not p.direct:
                p.pack_off = take(p.holder, p.n * isz)
            for node in self._stops(p):
                if not self._direct_recv(p, node):
                    p.recv[node] = take(node, p.n * isz)
        need = max(used.values(), default=0)
        self.temps = [scratch(f"{self.out.name}.xfer", need)] if need else []

    def in_place(self) -> Value | None:
        """The operand, if the result is exactly its stored bytes: every element stays on its
        node at the same offset, every node's block has the operand's block shape and row
        stride (so their padding coincides too), and nothing is zero. Such a gather (the head
        split of a projection into a banded batch, and the merge back) need not run: the
        result can be read from the operand's buffer (compiler.lower)."""
        if self.pieces or self.zeros or len(self.ins) != 1:
            return None
        src = self.ins[0]
        L1, L2 = src.layout, self.out.layout
        if (src.dtype != self.out.dtype or L1.stride != L2.stride or L2.nbytes > L1.nbytes
                or L1.pieces != 1 or L2.pieces != 1):
            return None
        for d, _, s_off, d_off in self.local:
            if L1.block_shape(*d) != L2.block_shape(*d) or not np.array_equal(s_off, d_off):
                return None
        return src

    def _stops(self, p: _Piece) -> list[tuple[int, int]]:
        """Nodes that store the piece: the corners of its row phase and its destinations."""
        hi, hj = p.holder
        out = {(hi, dj) for _, dj in p.dst if dj != hj}
        out.update(p.dst)
        return sorted(out)

    def _direct_recv(self, p: _Piece, node: tuple[int, int]) -> bool:
        return node in p.dst and _contiguous(p.dst[node])

    def _where(self, p: _Piece, node: tuple[int, int]) -> int:
        """Address where `node` keeps the piece."""
        if self._direct_recv(p, node):
            return self.out.addr + int(p.dst[node][0]) * self.out.layout.itemsize
        return self.temps[0].addr + p.recv[node]

    def _source_addr(self, p: _Piece) -> int:
        if p.direct:
            return self.ins[p.k].addr + int(p.src[0]) * self.out.layout.itemsize
        return self.temps[0].addr + p.pack_off

    # ---- emission -----------------------------------------------------------------------------

    def emit(self, ctx: Ctx) -> None:
        out = self.out
        dtype = out.dtype
        isz = out.layout.itemsize
        obuf = (out.addr, out.layout.nbytes)
        for node, d_off in self.zeros:
            copy_offsets(ctx.gcode(*node), None, None, d_off, obuf, dtype, self._dst_ok(node),
                         self.fill)
        for node, k, s_off, d_off in self.local:
            src = self.ins[k]
            copy_offsets(ctx.gcode(*node), s_off, (src.addr, src.layout.nbytes), d_off, obuf,
                         dtype, self._dst_ok(node))
        tbuf = (self.temps[0].addr, self.temps[0].nbytes) if self.temps else (0, 0)
        for p in self.pieces:
            if not p.direct:
                src = self.ins[p.k]
                pack = tbuf[0] + p.pack_off
                copy_offsets(ctx.gcode(*p.holder), p.src, (src.addr, src.layout.nbytes),
                             np.arange(p.n), (pack, p.n * isz + SLACK_BYTES), dtype,
                             lambda run: True)
        g = ctx.grid
        maxmsg = ctx.machine.max_message_bytes
        for phase in (E, W, S, N):
            for p in self.pieces:
                hi, hj = p.holder
                nbytes = p.n * isz
                if phase in (E, W):
                    cols = sorted({dj for _, dj in p.dst if (dj > hj if phase == E else dj < hj)})
                    if not cols:
                        continue
                    chain, pos = g.row_chains[hi], g.row_chain_index(hi)
                    stops = {pos[dj]: self._where(p, (hi, dj)) for dj in cols}
                    self._send(ctx, chain, False, pos[hj], self._source_addr(p), nbytes, stops,
                               maxmsg, p, [(hi, dj) for dj in cols], tbuf)
                else:
                    for cj in sorted({dj for _, dj in p.dst}):
                        rows = sorted({di for di, dj in p.dst if dj == cj
                                       and (di > hi if phase == S else di < hi)})
                        if not rows:
                            continue
                        chain, pos = g.col_chains[cj], g.col_chain_index(cj)
                        base = (self._source_addr(p) if cj == hj else self._where(p, (hi, cj)))
                        stops = {pos[di]: self._where(p, (di, cj)) for di in rows}
                        self._send(ctx, chain, True, pos[hi], base, nbytes, stops, maxmsg, p,
                                   [(di, cj) for di in rows], tbuf)

    def _send(self, ctx: Ctx, chain, vertical: bool, src_pos: int, base: int, nbytes: int,
              stops: dict[int, int], maxmsg: int, p: _Piece,
              stop_nodes: list[tuple[int, int]], tbuf: tuple[int, int]) -> None:
        for off, ln in chunks(nbytes, maxmsg):
            emit_msg(ctx, LineMsg(chain, vertical, src_pos, base + off, ln,
                                  {q: a + off for q, a in stops.items()}))
        out = self.out
        for node in stop_nodes:
            if node in p.dst and not self._direct_recv(p, node):
                d_off = p.dst[node]
                copy_offsets(ctx.gcode(*node), np.arange(p.n), (self._where(p, node), nbytes),
                             d_off, (out.addr, out.layout.nbytes), out.dtype,
                             self._dst_ok(node))

    def _dst_ok(self, node: tuple[int, int]):
        """Whether a contiguous run of `node`'s block of the result may be overrun by a whole
        vector: when it ends the row's elements and the row's padding has room for it."""
        L = self.out.layout
        stride_e = L.stride // L.itemsize
        nc = L.block_shape(*node)[1]
        lanes = L.lanes

        def ok(run: tuple[int, int]) -> bool:
            start, length = run
            col = start % stride_e
            return (not L.dense and col + length == nc
                    and col + -(-length // lanes) * lanes <= stride_e)

        return ok


def _copy_cost(src: np.ndarray | None, dst: np.ndarray) -> int:
    """About how many instructions `copy_offsets` spends: per run its vectors and pointer
    work, per family its loop."""
    rs = runs(np.zeros(len(dst), dtype=np.int64) if src is None else src, dst)
    cost = 4 * len(families(rs))
    for _s, _d, n, ss, ts in rs:
        # a short strided run is copied one element at a time (its vector would leave the
        # buffer), a contiguous or full one by vectors
        strided = n > 1 and (ts != 1 or (src is not None and ss != 1))
        cost += 2 * n + 3 if strided and n < 16 else 2 * -(-n // 16) + 3
    return cost


def _cheaper_order(src: np.ndarray | None, dst: np.ndarray, dstride: int
                   ) -> tuple[np.ndarray | None, np.ndarray]:
    """The copy's (src, dst) offsets in the destination's row order or down its columns,
    whichever `copy_offsets` does in fewer instructions."""
    order = np.lexsort((dst // dstride, dst % dstride))
    src = None if src is None else np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if _columns_cheaper(None if src is None else src.tobytes(), dst.tobytes(),
                        order.astype(np.int64).tobytes()):
        return (None if src is None else src[order]), dst[order]
    return src, dst


@lru_cache(maxsize=1024)
def _columns_cheaper(src: bytes | None, dst: bytes, order: bytes) -> bool:
    s = None if src is None else np.frombuffer(src, dtype=np.int64)
    d = np.frombuffer(dst, dtype=np.int64)
    o = np.frombuffer(order, dtype=np.int64)
    return _copy_cost(None if s is None else s[o], d[o]) < _copy_cost(s, d)


def _contiguous(offs: np.ndarray) -> bool:
    return len(offs) > 0 and int(offs[-1]) - int(offs[0]) == len(offs) - 1 and (
        len(offs) == 1 or bool(np.all(np.diff(offs) == 1)))


# ---- copies by offsets ------------------------------------------------------------------------

def runs(src: np.ndarray, dst: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Greedy runs (src start, dst start, length, src step, dst step): maximal stretches where
    both offsets advance by constant steps."""
    n = len(dst)
    if n == 0:
        return []
    if n == 1:
        return [(int(src[0]), int(dst[0]), 1, 1, 1)]
    ds = np.diff(src)
    dt = np.diff(dst)
    change = np.ones(n - 1, dtype=bool)
    change[1:] = (ds[1:] != ds[:-1]) | (dt[1:] != dt[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n - 1)            # pair segment [start, end)
    seg_end = np.repeat(ends, np.diff(np.append(starts, n - 1)))
    out = []
    a = 0
    while a < n:
        if a == n - 1:
            out.append((int(src[a]), int(dst[a]), 1, 1, 1))
            break
        e = int(seg_end[a])                        # elements a..e share the step of pair a
        out.append((int(src[a]), int(dst[a]), e - a + 1, int(ds[a]), int(dt[a])))
        a = e + 1
    return out


def families(rs: list[tuple[int, int, int, int, int]]) -> list[tuple]:
    """Runs grouped into (count, src start, dst start, src delta, dst delta, length, src step,
    dst step): consecutive runs alike but for starts that advance by constant deltas."""
    out = []
    i = 0
    while i < len(rs):
        s0, d0, ln, ss, ts = rs[i]
        j = i + 1
        da = db = 0
        if j < len(rs) and rs[j][2:] == (ln, ss, ts):
            da, db = rs[j][0] - s0, rs[j][1] - d0
            while (j < len(rs) and rs[j][2:] == (ln, ss, ts)
                   and rs[j][0] - rs[j - 1][0] == da and rs[j][1] - rs[j - 1][1] == db):
                j += 1
        out.append((j - i, s0, d0, da, db, ln, ss, ts))
        i = j
    return out


def copy_offsets(code: Code, src: np.ndarray | None, sbuf: tuple[int, int] | None,
                 dst: np.ndarray, dbuf: tuple[int, int], dtype: str, dst_ok,
                 fill: float = 0.0) -> None:
    """dst_buffer[dst[i]] = src_buffer[src[i]] (element offsets from each buffer's start; `src`
    None: `fill`, 0 or -inf). `sbuf` and `dbuf` are (address, bytes) of the buffers: a tail
    that a strided vector would carry past its buffer is done one element at a time.
    `dst_ok((start, length))` says whether a contiguous destination run may be overrun by a
    whole vector; otherwise its tail is merged under a lane mask."""
    if len(dst) == 0:
        return
    zero = src is None
    if zero:
        bits = f32_bits(fill) if fill else 0
        code.op("vbcasti", "v3", bits)
        code.li("r12", bits if dtype == "f32" else bits >> 16)
    key_src = None if zero else np.asarray(src, dtype=np.int64).tobytes()
    for fam in _families_of(key_src, np.asarray(dst, dtype=np.int64).tobytes()):
        _copy_family(code, fam, zero, sbuf, dbuf, dtype, dst_ok)


@lru_cache(maxsize=4096)
def _families_of(src: bytes | None, dst: bytes) -> tuple[tuple, ...]:
    """The families of runs of a copy by offsets (int64 bytes; src None: a fill), computed
    once for the many nodes whose copies are the same (a replicated or evenly split value)."""
    d = np.frombuffer(dst, dtype=np.int64)
    if src is None:
        rs = [(0, d0, ln, 0, ts) for _, d0, ln, _, ts in
              runs(np.zeros(len(d), dtype=np.int64), d)]
    else:
        rs = runs(np.frombuffer(src, dtype=np.int64), d)
    return tuple(families(rs))


def _copy_family(code: Code, fam: tuple, zero: bool, sbuf: tuple[int, int] | None,
                 dbuf: tuple[int, int], dtype: str, dst_ok) -> None:
    """One family of runs (see `families`) as a counted loop (`copy_offsets`)."""
    count, s0, d0, da, db, ln, ss, ts = fam
    size = 4 if dtype == "f32" else 2
    lanes = code.lanes
    ld = "ld32u" if size == 4 else "ld16u"
    st = "st32" if size == 4 else "st16"
    full, tail = divmod(ln, lanes) if ln > 1 else (0, 0)

    def fits(buf: tuple[int, int], start: int, step: int, limit: int | None = None) -> bool:
        """Every lane of the tail vector of the run at `start` lies in `buf` (with `limit`:
        in the node's SRAM, [0, limit) bytes)."""
        lo = start + full * lanes * step
        hi = lo + (lanes - 1) * step
        if limit is not None:
            return buf[0] + min(lo, hi) * size >= 0 and buf[0] + (max(lo, hi) + 1) * size <= limit
        return min(lo, hi) >= 0 and (max(lo, hi) + 1) * size <= buf[1]

    members_s = (s0, s0 + (count - 1) * da)
    members_d = (d0, d0 + (count - 1) * db)
    vec_tail = tail > 0
    if vec_tail and not zero and ss != 1:
        # A strided load may read past the source buffer: the lanes past the run are merged
        # away under the mask, or land in the destination row's padding.
        sram = code.instrs.machine.sram_bytes
        vec_tail = all(fits(sbuf, a, ss, sram) for a in members_s)
    if vec_tail and ts != 1:
        vec_tail = all(fits(dbuf, a, ts) for a in members_d)
    overrun = ts == 1 and all(dst_ok((d0 + q * db, ln)) for q in range(count))
    if not zero:
        code.li("r4", sbuf[0] + s0 * size)
        if ss != 1:
            code.li("r10", ss * size)
    code.li("r5", dbuf[0] + d0 * size)
    if ts != 1:
        code.li("r11", ts * size)
    if vec_tail and not overrun:
        code.lane_mask("v2", tail, "v1")

    def load(v: str, base: str, off: int, step: int, reg: str) -> None:
        if step == 1:
            code.vload(v, base, off, dtype)
        else:
            code.op("vlds" if dtype == "f32" else "vldsw.bf16", v, (base, off), reg)

    def store(v: str, base: str, off: int) -> None:
        if ts == 1:
            code.vstore(v, base, off, dtype)
        else:
            code.op("vsts" if dtype == "f32" else "vstsn.bf16", v, (base, off), "r11")

    def vectors(sb: str, dbr: str, n: int) -> None:
        for q in range(n):
            if zero:
                store("v3", dbr, q * lanes * ts * size)
            else:
                load("v0", sb, q * lanes * ss * size, ss, "r10")
                store("v0", dbr, q * lanes * ts * size)

    def one_run() -> None:
        if ln == 1:
            if not zero:
                code.op(ld, "r13", ("r4", 0))
            code.op(st, "r12" if zero else "r13", ("r5", 0))
            return
        sb, dbr = "r4", "r5"
        q = full
        if full > 8:
            # A long run: a loop over groups of 4 vectors, on copies of the pointers.
            groups, q = divmod(full, 4)
            sb, dbr = "r6", "r7"
            if not zero:
                code.op("mv", "r6", "r4")
            code.op("mv", "r7", "r5")

            def four() -> None:
                vectors(sb, dbr, 4)
                if not zero:
                    code.op("addi", "r6", "r6", 4 * lanes * ss * size)
                code.op("addi", "r7", "r7", 4 * lanes * ts * size)

            code.counted("r8", groups, four)
        vectors(sb, dbr, q)
        if not tail:
            return
        at_s, at_d = q * lanes * ss * size, q * lanes * ts * size
        if not vec_tail:
            for t in range(tail):
                if not zero:
                    code.op(ld, "r13", (sb, at_s + t * ss * size))
                code.op(st, "r12" if zero else "r13", (dbr, at_d + t * ts * size))
            return
        v = "v3" if zero else "v0"
        if not zero:
            load("v0", sb, at_s, ss, "r10")
        if not overrun:
            load("v1", dbr, at_d, ts, "r11")
            code.op("vsel", "v1", "v2", v, "v1")
            v = "v1"
        store(v, dbr, at_d)

    def body() -> None:
        one_run()
        if count > 1:
            if not zero and da:
                code.op("addi", "r4", "r4", da * size)
            if db:
                code.op("addi", "r5", "r5", db * size)

    code.counted("r9", count, body)
