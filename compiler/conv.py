"""The vision kernels on the mesh: conv2d as an implicit GEMM on the matrix unit, and the pools.

Both work on *output rows*: a conv2d's rows are (image n, output row oh), with every output
channel and column; a pool's are (n, channel c, oh). They are split over every grid node in
snake order (compiler.layout, row axis "PQ"), consecutive rows on neighbouring nodes, so the few
input rows past a block's ends that a window also reads (its halo) come from a neighbour. Each
kernel is three steps:

1. A `Gather` builds each node's *slab*: the input rows its windows read, padding included (0,
   or -inf for a max), from wherever the input lies, by line messages between neighbours
   (compiler.gather). A slab row holds one *phase* of an input row: with a column stride s,
   phase p is the elements at columns p, p + s, p + 2 s, ..., so that the elements a tap reads
   for consecutive outputs are consecutive in memory, whatever the stride.
2. The kernel computes on its slab alone, with no messages.
3. The result's rows go where the value's layout wants them (for conv2d, one more gather: see
   below).

A pool whose input rows every node already holds (a 2 x 2 pool after a conv2d whose rows were
split the same way) skips the slab and reads its input in place with strided loads.

**conv2d** (`ConvKernel`). With output channels as matrix rows, an 8 x 8 output tile (8
channels k, 8 consecutive columns ow of one row (n, oh)) is, for each input channel c, kernel
row r and phase p, one `mmak` of

    A = the weights [8 k, 8 taps]      row k at stride sa, taps consecutive
    B = the slab    [8 taps, 8 ow]     B[kk][j] = slab[row(c, oh, r, p)][ow0 + j + kk]

B's rows are consecutive *elements* of one slab row (row stride sb = one element): B is a
Hankel matrix read in place, which is what makes the GEMM implicit. The taps of a kernel row
in phase p are its columns s with s * dilation = p + stride * kk; the weights matrix (gathered
once onto every node, zeros where no tap is) has 8 columns per chunk of 8 such kk, so a 5-tap
row is one 8-deep `mmak` (3 zero taps) and the result accumulates in f32 over (c, r, p). The
tiles of a node are computed in groups that fit the accumulators, with one pointer register
per distinct weight tile row and per distinct output position, advanced by `addi` between
steps; the steps of one input channel are unrolled and the channels are a counted loop.
Accumulators are stored (`acc.st`, f32) to a *work* value in row order (n, oh, k), which a
final gather moves into the result's rows (n, k, oh).

conv2d_transpose (the gradient of conv2d with respect to its input) is the same kernel: the
slab reads g dilated by the stride (zeros between its elements) and padded by
(R - 1) dilation - pad, and the weights are w with k and c swapped and the taps reversed.

**maxpool2d and avgpool2d** (`PoolKernel`). A node holds whole output rows (n, c, oh); each
vector of 16 output columns is the `vmax` (or, in f32, the `vadd`, then a `vdiv` by the count)
of one vector load per tap, in window order, as the reference computes it. Loads widen bf16,
the store rounds once.

`-O conv=im2col` maps conv2d the explicit way instead, as a comparison point: the patches
matrix and the weights gathered into block layouts and multiplied by the SUMMA matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.asmgen import CompilerLimit, f32_bits
from compiler.gather import Gather
from compiler.ir import Node, Op, Window
from compiler.kernels import Elementwise, Leaf
from compiler.layout import grid_rows_layout, make_layout, round_up, snake, split, view_of
from compiler.matmul import Matmul
from compiler.plan import Ctx, Step, Value, scratch
from compiler.windows import im2col_index

ACC = tuple(f"a{k}" for k in range(8))
# Pointer registers of the conv kernel's tiles (r1 counts channels, r11 holds the mmak depth;
# r14 and r15 are the message registers).
POINTER_REGS = ("r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r12", "r13")


def _node_order(P: int, Q: int) -> list[tuple[int, int]]:
    """Grid nodes of a P x Q grid in snake order: position t of a "PQ" layout's blocks."""
    out = [(0, 0)] * (P * Q)
    for i in range(P):
        for j in range(Q):
            out[snake(i, j, Q)] = (i, j)
    return out


def phases(size: int, dilation: int, stride: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """The taps of a kernel row by phase: [(p, [(s, m), ...])] for every phase p that has taps,
    tap s lying at column p + stride * m of the window."""
    out: dict[int, list[tuple[int, int]]] = {}
    for s in range(size):
        x = s * dilation
        out.setdefault(x % stride, []).append((s, x // stride))
    return sorted(out.items())


@dataclass
class _Segment:
    """A run of one node's output rows [a, b) within one image (or plane) `n`: its slab rows
    start at `row0`, and it holds `nh` input rows (virtual coordinates from `hv0`) per channel,
    `nph` phase rows each."""

    n: int
    a: int
    b: int
    row0: int
    hv0: int
    nh: int


@dataclass
class SlabPlan:
    """Which output rows every node computes, and the slab of input rows that needs.

    `units` output rows (image or plane n, row oh: unit n * ho + oh) are split as evenly as
    possible over the grid nodes in snake order. For output row oh a window reads virtual
    input rows oh * stride + r * dilation (r < taps): a segment keeps all the rows from
    a * stride to (b - 1) * stride + (taps - 1) * dilation, for each of `channels` channels,
    one slab row per phase."""

    grid: object
    units: int
    ho: int
    channels: int
    taps: int
    stride: int
    dilation: int
    nph: int
    bounds: tuple[int, ...] = ()
    segments: list[list[_Segment]] = field(default_factory=list)
    slab_bounds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        G = self.grid.P * self.grid.Q
        self.bounds = split(self.units, G, 1)
        rows = [0]
        for t in range(G):
            segs = []
            u, u1 = self.bounds[t], self.bounds[t + 1]
            at = 0
            while u < u1:
                n, a = divmod(u, self.ho)
                b = min(self.ho, a + u1 - u)
                nh = (b - 1 - a) * self.stride + (self.taps - 1) * self.dilation + 1
                segs.append(_Segment(n, a, b, at, a * self.stride, nh))
                at += self.channels * nh * self.nph
                u += b - a
            self.segments.append(segs)
            rows.append(rows[-1] + at)
        self.slab_bounds = tuple(rows)

    def slab_index(self, width: int, source) -> np.ndarray:
        """The gather index of the slab [total rows, width]: `source(n, c, hv, p, m)` (arrays)
        gives the input element of phase p, element m of virtual row hv, or -1."""
        parts = []
        for segs in self.segments:
            for sg in segs:
                c = np.arange(self.channels)[:, None, None, None]
                hv = sg.hv0 + np.arange(sg.nh)[None, :, None, None]
                p = np.arange(self.nph)[None, None, :, None]
                m = np.arange(width)[None, None, None, :]
                idx = source(sg.n, c, hv, p, m)
                parts.append(np.broadcast_to(idx, (self.channels, sg.nh, self.nph, width)
                                             ).reshape(-1, width))
        if not parts:
            return np.zeros((0, width), dtype=np.int64)
        return np.concatenate(parts).astype(np.int64)


# ---- conv2d -----------------------------------------------------------------------------------

@dataclass
class ConvGeometry:
    """One convolution as the kernel sees it: out[n, k, oh, ow] = sum over c, r, s of
    W(k, c, r, s) V(n, c, oh * sh + r * dh, ow * sw + s * dw), V a virtual (padded or
    dilated) input that `source` maps to the operand's elements, W the weights that
    `weight` maps to the weight operand's."""

    nb: int
    cin: int
    kout: int
    ho: int
    wo: int
    size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    source: object           # (n, c, hv, wv) arrays -> flat index into the input, or -1
    weight: object           # (k, c, r, s) arrays -> flat index into the weights


def conv_geometry(node: Node) -> ConvGeometry:
    """The geometry of a conv2d or conv2d_transpose node."""
    win = node.window
    R, S = win.size
    if node.op is Op.CONV2D:
        x, w = node.inputs
        nb, cin, H, W = x.shape
        kout = w.shape[0]
        pt, pl = win.pad[0], win.pad[1]

        def source(n, c, hv, wv):
            h, ww = hv - pt, wv - pl
            ok = (h >= 0) & (h < H) & (ww >= 0) & (ww < W)
            return np.where(ok, ((n * cin + c) * H + h) * W + ww, -1)

        def weight(k, c, r, s):
            return ((k * cin + c) * R + r) * S + s

        return ConvGeometry(nb, cin, kout, node.shape[2], node.shape[3], win.size, win.stride,
                            win.dilation, source, weight)
    # conv2d_transpose: stride 1 over g dilated by the stride and padded by
    # (taps - 1) dilation - pad (which may crop), weights k <-> c with the taps reversed.
    g, w = node.inputs
    nb, kg, ho, wo = g.shape
    cout = w.shape[1]
    sh, sw = win.stride
    qt = (R - 1) * win.dilation[0] - win.pad[0]
    ql = (S - 1) * win.dilation[1] - win.pad[1]

    def source(n, c, hv, wv):
        h, ww = hv - qt, wv - ql
        ok = ((h >= 0) & (h % sh == 0) & (h // sh < ho) & (ww >= 0) & (ww % sw == 0)
              & (ww // sw < wo))
        return np.where(ok, ((n * kg + c) * ho + h // sh) * wo + ww // sw, -1)

    def weight(k, c, r, s):
        return ((c * cout + k) * R + (R - 1 - r)) * S + (S - 1 - s)

    return ConvGeometry(nb, kg, cout, node.shape[2], node.shape[3], win.size, (1, 1),
                        win.dilation, source, weight)


class ConvKernel(Step):
    """raw[(n, oh, k), ow] = the conv of one node's slab with the weights matrix (see the
    module docstring); `out` is the work value [units * kp, wo] in the plan's rows."""

    def __init__(self, out: Value, slab: Value, wmat: Value, geo: ConvGeometry, plan: SlabPlan,
                 ph: list, nch: list[int], loc, label: str, machine) -> None:
        super().__init__("conv2d", out, [slab, wmat], loc, label)
        self.geo, self.plan, self.ph, self.nch = geo, plan, ph, nch
        self.acc = min(machine.accumulators, 8)
        self.mmak = "mmak.bf16" if slab.dtype == "bf16" else "mmak.f32"
        self.kp = round_up(geo.kout, 8)
        if wmat.layout.stride > 0xFFFF:
            raise CompilerLimit(f"conv2d '{label}': a row of its weights matrix is "
                                f"{wmat.layout.stride:,} bytes",
                                "the mma instructions' row stride field holds at most 65,535 "
                                "bytes: fewer input channels or taps per conv2d", loc)

    def emit(self, ctx: Ctx) -> None:
        order = _node_order(ctx.grid.P, ctx.grid.Q)
        for t, segs in enumerate(self.plan.segments):
            if segs:
                self._node(ctx.gcode(*order[t]), t, segs)

    def _steps(self) -> list[tuple[int, int, int]]:
        """The (A offset, B offset, depth) of the mmaks of one input channel, in bytes from
        the channel's first: kernel rows r, then phases."""
        geo, plan = self.geo, self.plan
        slab, wmat = self.ins
        isz = slab.layout.itemsize
        out = []
        col = 0
        for r in range(geo.size[0]):
            for pi, (_p, _taps) in enumerate(self.ph):
                b = (r * geo.dilation[0] * plan.nph + pi) * slab.layout.stride
                out.append((col * isz, b, self.nch[pi]))
                col += 8 * self.nch[pi]
        return out

    def _node(self, code, t: int, segs: list[_Segment]) -> None:
        geo = self.geo
        slab = self.ins[0]
        isz = slab.layout.itemsize
        nkt, nwt = self.kp // 8, -(-geo.wo // 8)
        kc = min(nkt, self.acc)
        pc = max(1, min(self.acc // kc, len(POINTER_REGS) - kc))
        for sg in segs:
            positions = [(oh, wt) for oh in range(sg.a, sg.b) for wt in range(nwt)]
            for k0 in range(0, nkt, kc):
                kts = list(range(k0, min(nkt, k0 + kc)))
                for p0 in range(0, len(positions), pc):
                    self._group(code, t, sg, kts, positions[p0:p0 + pc], isz)

    def _group(self, code, t: int, sg: _Segment, kts: list[int],
               pos: list[tuple[int, int]], isz: int) -> None:
        """One group of output tiles (every weight tile row in `kts` at every position in
        `pos`), one accumulator each: zeroed, the mmaks of every input channel, stored."""
        geo, plan = self.geo, self.plan
        slab, wmat = self.ins
        raw = self.out
        sa, sst, rst = wmat.layout.stride, slab.layout.stride, raw.layout.stride
        steps = self._steps()
        a_chan = sum(8 * n for n in self.nch) * geo.size[0] * isz   # A bytes per channel
        b_chan = sg.nh * plan.nph * sst                              # B bytes per channel
        tiles = [(q, k) for q in range(len(pos)) for k in range(len(kts))]
        areg = POINTER_REGS[:len(kts)]
        breg = POINTER_REGS[len(kts):len(kts) + len(pos)]
        code.ops("acc.zero", [(ACC[a],) for a in range(len(tiles))])
        for k, kt in enumerate(kts):
            code.li(areg[k], wmat.addr + kt * 8 * sa)
        for q, (oh, wt) in enumerate(pos):
            row = sg.row0 + (oh - sg.a) * geo.stride[0] * plan.nph
            code.li(breg[q], slab.addr + row * sst + wt * 8 * isz)
        mmaks = [(ACC[a], areg[k], breg[q], "r11", sa, isz) for a, (q, k) in enumerate(tiles)]
        one_depth = len({n for _, _, n in steps}) == 1

        def advance(da: int, db: int) -> None:
            for reg in areg:
                if da:
                    code.op("addi", reg, reg, da)
            for reg in breg:
                if db:
                    code.op("addi", reg, reg, db)

        def channel() -> None:
            prev_a = prev_b = 0
            for a_off, b_off, n in steps:
                advance(a_off - prev_a, b_off - prev_b)
                prev_a, prev_b = a_off, b_off
                if not one_depth:
                    code.li("r11", n)
                code.ops(self.mmak, mmaks)
            if geo.cin > 1:
                advance(a_chan - prev_a, b_chan - prev_b)

        if one_depth:
            code.li("r11", steps[0][2])
        code.counted("r1", geo.cin, channel)
        first_unit = plan.bounds[t]
        for a, (q, k) in enumerate(tiles):
            oh, wt = pos[q]
            unit = sg.n * geo.ho + oh - first_unit
            code.li("r1", raw.addr + (unit * self.kp + kts[k] * 8) * rst + wt * 8 * 4)
            code.op("acc.st", ACC[a], "r1", rst)


def map_conv(mp, node: Node) -> None:
    """The steps of a conv2d or conv2d_transpose: slab and weights gathers, the kernel, the
    gather of its rows into the result (see the module docstring); with `-O conv=im2col`,
    the patches matrix and the 2-D matmul instead."""
    geo = conv_geometry(node)
    if mp.options.conv == "im2col":
        _map_im2col(mp, node, geo)
        return
    loc = mp._loc(node)
    x_node, w_node = node.inputs
    dtype = x_node.dtype
    grid = mp.grid
    R, S = geo.size
    ph = phases(S, geo.dilation[1], geo.stride[1])
    nch = [-(-(max(m for _, m in taps) + 1) // 8) for _, taps in ph]
    plan = SlabPlan(grid, geo.nb * geo.ho, geo.ho, geo.cin, R, geo.stride[0], geo.dilation[0],
                    len(ph))
    width = 8 * (-(-geo.wo // 8)) + 8 * max(nch) - 1
    phase_of = np.array([p for p, _ in ph])
    sw = geo.stride[1]

    def source(n, c, hv, pi, m):
        return geo.source(n, c, hv, m * sw + phase_of[pi])

    slab_index = plan.slab_index(width, source)
    slab = Value(f"{node.name}.slab{mp._n()}", (len(slab_index), width), dtype,
                 grid_rows_layout((len(slab_index), width), dtype, grid, plan.slab_bounds))
    mp.steps.append(Gather(slab, [mp.values[x_node.id]], slab_index, loc, node.name, grid,
                           "gather(slab)"))
    # The weights matrix [kp, cin R sum(8 nch)], on every node.
    kp = round_up(geo.kout, 8)
    cols = []
    for c in range(geo.cin):
        for r in range(R):
            for pi, (_p, taps) in enumerate(ph):
                block = np.full((kp, 8 * nch[pi]), -1, dtype=np.int64)
                for s, m in taps:
                    block[:geo.kout, m] = geo.weight(np.arange(geo.kout), c, r, s)
                cols.append(block)
    w_index = np.concatenate(cols, axis=1)
    wmat = Value(f"{node.name}.w{mp._n()}", w_index.shape, dtype,
                 make_layout(w_index.shape, dtype, None, None, grid))
    mp.steps.append(Gather(wmat, [mp.values[w_node.id]], w_index, loc, node.name, grid,
                           "gather(weights)", by_columns=True))
    raw_shape = (plan.units * kp, geo.wo)
    raw = Value(f"{node.name}.rows{mp._n()}", raw_shape, "f32",
                grid_rows_layout(raw_shape, "f32", grid, tuple(b * kp for b in plan.bounds)))
    mp.steps.append(ConvKernel(raw, slab, wmat, geo, plan, ph, nch, loc, node.name,
                               mp.machine))
    # raw row (n, oh, k) -> the result's row (n, k, oh)
    n, k, oh, ow = np.meshgrid(np.arange(geo.nb), np.arange(geo.kout), np.arange(geo.ho),
                               np.arange(geo.wo), indexing="ij")
    index = ((n * geo.ho + oh) * kp + k) * geo.wo + ow
    out = mp.new_value(node, grid_rows_layout(node.shape, "f32", grid))
    mp.steps.append(Gather(out, [raw], index.reshape(view_of(node.shape)), loc, node.name,
                           grid, "gather(conv rows)"))


def _map_im2col(mp, node: Node, geo: ConvGeometry) -> None:
    """`-O conv=im2col`: the patches [N H' W', C R S] and the weights [C R S, K] gathered into
    block layouts, the SUMMA matmul, and the rows (n, oh, ow) of its product moved into the
    result's (n, k, oh)."""
    loc = mp._loc(node)
    x_node, w_node = node.inputs
    R, S = geo.size
    n, oh, ow, c, r, s = np.meshgrid(np.arange(geo.nb), np.arange(geo.ho), np.arange(geo.wo),
                                     np.arange(geo.cin), np.arange(R), np.arange(S),
                                     indexing="ij")
    cols_index = geo.source(n, c, oh * geo.stride[0] + r * geo.dilation[0],
                            ow * geo.stride[1] + s * geo.dilation[1])
    shape = (geo.nb * geo.ho * geo.wo, geo.cin * R * S)
    cols = Value(f"{node.name}.cols{mp._n()}", shape, x_node.dtype,
                 mp.default(shape, x_node.dtype))
    mp.steps.append(Gather(cols, [mp.values[x_node.id]], cols_index.reshape(shape), loc,
                           node.name, mp.grid, "gather(im2col)"))
    k, c, r, s = np.meshgrid(np.arange(geo.kout), np.arange(geo.cin), np.arange(R),
                             np.arange(S), indexing="ij")
    w_index = geo.weight(k, c, r, s).reshape(geo.kout, -1).T
    wmat = Value(f"{node.name}.w{mp._n()}", w_index.shape, w_node.dtype,
                 mp.default(w_index.shape, w_node.dtype))
    mp.steps.append(Gather(wmat, [mp.values[w_node.id]], np.ascontiguousarray(w_index), loc,
                           node.name, mp.grid, "gather(weights)"))
    prod_shape = (shape[0], geo.kout)
    prod = Value(f"{node.name}.prod{mp._n()}", prod_shape, "f32", mp.default(prod_shape, "f32"))
    mp.steps.append(Matmul(prod, cols, wmat, loc, node.name, mp.grid, mp.machine, "summa",
                           mp.options.double_buffer, mp.options.reach))
    n, k, oh, ow = np.meshgrid(np.arange(geo.nb), np.arange(geo.kout), np.arange(geo.ho),
                               np.arange(geo.wo), indexing="ij")
    index = ((n * geo.ho + oh) * geo.wo + ow) * geo.kout + k
    out = mp.new_value(node, mp.default(node.shape, "f32"))
    mp.steps.append(Gather(out, [prod], index.reshape(view_of(node.shape)), loc, node.name,
                           mp.grid, "gather(conv rows)"))


# ---- pools ------------------------------------------------------------------------------------

class PoolKernel(Step):
    """out rows (n, c, oh) = the max or the average of each window: from the node's slab, or,
    in `direct` mode (every node holds, in its block of the input, all the rows its windows
    read, and no window touches padding), from the input itself with strided loads."""

    def __init__(self, out: Value, src: Value, win: Window, plan: SlabPlan, ph: list,
                 avg: bool, in_hw: tuple[int, int], direct: bool, loc, label: str) -> None:
        super().__init__("avgpool2d" if avg else "maxpool2d", out, [src], loc, label)
        self.win, self.plan, self.ph, self.avg = win, plan, ph, avg
        self.in_hw = in_hw
        self.direct = direct
        nv = -(-out.shape[3] // 16)
        if avg:
            self.temps = [scratch(f"{out.name}.counts", nv * 64)]

    def emit(self, ctx: Ctx) -> None:
        order = _node_order(ctx.grid.P, ctx.grid.Q)
        for t, segs in enumerate(self.plan.segments):
            if segs:
                self._node(ctx.gcode(*order[t]), t, segs, order[t])

    def _counts(self) -> tuple[np.ndarray, np.ndarray]:
        """The divisor's factors along H ([H']) and W ([W']): taps inside the input (or, with
        count_pad, inside the padded input)."""
        win = self.win
        out = []
        for axis, n in enumerate(self.in_hw):
            o = win.out_len(n, axis)
            pos = (np.arange(o)[:, None] * win.stride[axis] - win.pad[axis]
                   + np.arange(win.size[axis])[None, :] * win.dilation[axis])
            lo, hi = (-win.pad[axis], n + win.pad[axis + 2]) if win.count_pad else (0, n)
            out.append(((pos >= lo) & (pos < hi)).sum(axis=1))
        return out[0], out[1]

    def _node(self, code, t: int, segs: list[_Segment], ij: tuple[int, int]) -> None:
        out, src = self.out, self.ins[0]
        win, plan = self.win, self.plan
        lanes = code.lanes
        isz_in, isz_out = src.layout.itemsize, out.layout.itemsize
        sst, ost = src.layout.stride, out.layout.stride
        H = self.in_hw[0]
        wo = out.shape[3]
        nv = -(-wo // lanes)
        sh, sw = win.stride
        # Addressing: (bytes per virtual input row, per phase, per element, first row of seg)
        if self.direct:
            blk_r0 = src.layout.block(*ij)[0]
            row_b, ph_b, el_b = sst, isz_in, sw * isz_in
            code.li("r6", el_b)

            def seg_base(sg: _Segment, a: int) -> int:
                return src.addr + (sg.n * H + a * sh - win.pad[0] - blk_r0) * sst
        else:
            row_b, ph_b, el_b = plan.nph * sst, sst, isz_in

            def seg_base(sg: _Segment, a: int) -> int:
                return src.addr + (sg.row0 + (a - sg.a) * sh * plan.nph) * sst
        # window order: r, then s (the phases interleave the columns)
        where = {}
        for pi, (_p, ts) in enumerate(self.ph):
            for s, m in ts:
                where[s] = (pi, m)
        taps = [(r, *where[s]) for r in range(win.size[0]) for s in range(win.size[1])]
        ch, cw = self._counts() if self.avg else (None, None)
        if self.avg:
            # the column factors of the divisor, one vector per 16 output columns
            code.li("r1", self.temps[0].addr)
            for v in range(nv):
                for lane in range(lanes):
                    ow = v * lanes + lane
                    code.li("r2", f32_bits(float(cw[ow]) if ow < wo else 1.0))
                    code.op("st32", "r2", ("r1", (v * lanes + lane) * 4))
        first_row = plan.bounds[t]
        for sg in segs:
            runs = [(sg.a, sg.b)]
            if self.avg:
                # runs of rows with one divisor factor along H
                runs, a = [], sg.a
                for oh in range(sg.a + 1, sg.b + 1):
                    if oh == sg.b or ch[oh] != ch[a]:
                        runs.append((a, oh))
                        a = oh
            for a, b in runs:
                code.li("r3", seg_base(sg, a))
                code.li("r4", out.addr + (sg.n * plan.ho + a - first_row) * ost)
                if self.avg:
                    code.op("vbcasti", "v5", f32_bits(float(ch[a])))
                    code.li("r1", self.temps[0].addr)

                def row() -> None:
                    for v in range(nv):
                        for k, (r, pi, m) in enumerate(taps):
                            # a slab has a row per phase; in place, phase p is column p
                            phase = self.ph[pi][0] if self.direct else pi
                            off = (r * win.dilation[0] * row_b + phase * ph_b
                                   + (v * lanes + m) * el_b)
                            dst = "v0" if k == 0 else "v1"
                            if self.direct and sw > 1:
                                code.op("vlds" if src.dtype == "f32" else "vldsw.bf16", dst,
                                        ("r3", off), "r6")
                            else:
                                code.vload(dst, "r3", off, src.dtype)
                            if k:
                                code.op("vadd" if self.avg else "vmax", "v0", "v0", "v1")
                        if self.avg:
                            code.op("vld", "v2", ("r1", v * lanes * 4))
                            code.op("vmul", "v2", "v2", "v5")
                            code.op("vdiv", "v0", "v0", "v2")
                        code.vstore("v0", "r4", v * lanes * isz_out, out.dtype)
                    code.op("addi", "r3", "r3", sh * row_b)
                    code.op("addi", "r4", "r4", ost)

                code.counted("r5", b - a, row)


def _pool_direct(x: Value, win: Window, plan: SlabPlan, ph: list, in_hw: tuple[int, int],
                 wo: int, lanes: int) -> bool:
    """Whether every node holds in its block of x all the rows its windows read, whole, and
    no window of a valid output touches the padding, with every lane's load inside x's
    buffer: then the pool reads x in place."""
    L = x.layout
    H, W = in_hw
    if L.dense or L.col_bounds != (0, L.cols) or L.skew is not None:
        return False
    if win.pad[1] or (wo - 1) * win.stride[1] + win.extent(1) > W:
        return False
    nv = -(-wo // lanes)
    reach = ((nv * lanes - 1) * win.stride[1] + (win.size[1] - 1) * win.dilation[1] + 1)
    order = None
    for t, segs in enumerate(plan.segments):
        for sg in segs:
            lo = sg.a * win.stride[0] - win.pad[0]
            hi = lo + sg.nh
            if lo < 0 or hi > H:
                return False
            order = order or _node_order(L.P, L.Q)
            r0, r1, _, _ = L.block(*order[t])
            first, last = sg.n * H + lo, sg.n * H + hi
            if first < r0 or last > r1:
                return False
            # the last row's furthest lane stays in the buffer
            if (last - 1 - r0) * L.stride + reach * L.itemsize > L.nbytes:
                return False
    return True


def map_pool(mp, node: Node) -> None:
    """The steps of a maxpool2d or avgpool2d: the slab gather (unless the input can be read
    in place) and the kernel."""
    x_node = node.inputs[0]
    win = node.window
    loc = mp._loc(node)
    grid = mp.grid
    nb, c, H, W = x_node.shape
    _, _, ho, wo = node.shape
    avg = node.op is Op.AVGPOOL2D
    ph = phases(win.size[1], win.dilation[1], win.stride[1])
    plan = SlabPlan(grid, nb * c * ho, ho, 1, win.size[0], win.stride[0], win.dilation[0],
                    len(ph))
    lanes = mp.machine.vector_lanes_f32
    x = mp.values[x_node.id]
    out = mp.new_value(node, grid_rows_layout(node.shape, node.dtype, grid, plan.bounds))
    if _pool_direct(x, win, plan, ph, (H, W), wo, lanes):
        mp.steps.append(PoolKernel(out, x, win, plan, ph, avg, (H, W), True, loc, node.name))
        return
    # The slab: the columns valid outputs read (their vectors' other lanes read on, into
    # the row's padding or the next row, at most a vector past the buffer's last row).
    max_m = max(m for _, ts in ph for _, m in ts)
    nv = -(-wo // lanes)
    width = wo + max_m
    if nv * lanes + max_m - round_up(width, lanes) > lanes:
        width = nv * lanes + max_m
    phase_of = np.array([p for p, _ in ph])
    sw, pt, pl = win.stride[1], win.pad[0], win.pad[1]

    def source(n, _c, hv, pi, m):
        h = hv - pt
        w = m * sw + phase_of[pi] - pl
        ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        return np.where(ok, (n * H + h) * W + w, -1)

    slab_index = plan.slab_index(width, source)
    dtype = x_node.dtype
    slab = Value(f"{node.name}.slab{mp._n()}", (len(slab_index), width), dtype,
                 grid_rows_layout((len(slab_index), width), dtype, grid, plan.slab_bounds))
    mp.steps.append(Gather(slab, [x], slab_index, loc, node.name, grid,
                           "gather(slab)", fill=0.0 if avg else -math.inf))
    mp.steps.append(PoolKernel(out, slab, win, plan, ph, avg, (H, W), False, loc, node.name))


# ---- col2im: a sum of gathers -----------------------------------------------------------------

def map_col2im(mp, node: Node) -> None:
    """col2im: every patches entry added into the element it was read from. The taps (r, s)
    each scatter one-to-one; taps whose elements do not overlap are gathered together, and the
    groups' gathers (zeros where a group has no entry) are added by elementwise kernels."""
    p_node = node.inputs[0]
    win = node.window
    loc = mp._loc(node)
    nb, c, h, w = node.shape
    R, S = win.size
    idx = im2col_index(node.shape, win).reshape(-1, c, R * S)     # [rows, c, taps]
    flat = np.arange(p_node.size).reshape(-1, c, R * S)
    groups: list[tuple[set[int], list[int]]] = []
    for tap in range(R * S):
        dst = idx[:, :, tap]
        hit = set(dst[dst >= 0].tolist())
        for used, members in groups:
            if not used & hit:
                used |= hit
                members.append(tap)
                break
        else:
            groups.append((hit, [tap]))
    src = mp.values[p_node.id]
    L = mp.default(node.shape, node.dtype)
    parts = []
    for _used, members in groups:
        index = np.full(node.size, -1, dtype=np.int64)
        for tap in members:
            dst = idx[:, :, tap].ravel()
            keep = dst >= 0
            index[dst[keep]] = flat[:, :, tap].ravel()[keep]
        if len(groups) == 1:
            v = mp.new_value(node, L)
        else:
            v = Value(f"{node.name}.part{mp._n()}", node.shape, node.dtype, L)
        mp.steps.append(Gather(v, [src], index.reshape(view_of(node.shape)), loc, node.name,
                               mp.grid, "gather(col2im)"))
        parts.append(v)
    # Add the parts up, at most 6 stored operands per elementwise kernel (f32: col2im is only
    # ever made by the backward pass).
    while len(parts) > 1:
        take, rest = parts[:6], parts[6:]
        expr: tuple = ("leaf", 0)
        for k in range(1, len(take)):
            expr = ("op", Op.ADD, (expr, ("leaf", k)), False)
        if rest:
            out = Value(f"{node.name}.sum{mp._n()}", node.shape, node.dtype, L)
        else:
            out = mp.new_value(node, L)
        mp.steps.append(Elementwise(out, expr, [Leaf("full", v) for v in take], loc, node.name,
                                    ["add"] * (len(take) - 1)))
        parts = [out] + rest


def conv_operand_layout(mp, node: Node):
    """The layout an input or param read only by the vision kernels is placed in: rows over
    the grid when every reader takes it as its data operand (the slab gathers then read
    neighbours), a copy on every node when every reader takes it as weights (the weights
    matrix is then gathered without a message); else None."""
    users = mp.users[node.id]
    vision = (Op.CONV2D, Op.CONV2D_TRANSPOSE, Op.MAXPOOL2D, Op.AVGPOOL2D)
    if not users or not all(u.op in vision for u in users):
        return None
    if all(u.inputs[0] is node and (len(u.inputs) < 2 or u.inputs[1] is not node)
           for u in users):
        return grid_rows_layout(node.shape, node.dtype, mp.grid)
    if all(len(u.inputs) == 2 and u.inputs[1] is node and u.inputs[0] is not node
           for u in users):
        return make_layout(node.shape, node.dtype, None, None, mp.grid)
    return None

