"""Node-local compute kernels: fused elementwise, reductions, softmax, and the N-d fallbacks.

All floating-point work runs on the vector unit (`machine.vector_lanes_f32` f32 lanes, written
`lanes` below): bf16 data is widened on load
(`vldw.bf16`) and narrowed, rounding to nearest even, on store (`vstn.bf16`), which is exactly
the IR's rounding point when the node's result is bf16. Inside a fused elementwise kernel an
intermediate value that the IR rounds gets a `vcvt.bf16`; exp/tanh/sigmoid/sqrt are single
instructions computed in f64 and rounded to f32, as the reference does.

Rows are whole vectors (a block's stride is padded to `lanes` elements), so a kernel may compute
garbage in a row's padding lanes; reductions mask those lanes (0 for sum, -inf for max) and the
matmul zeroes its K padding. Reductions and softmax combine per-node partials along grid lines
with `comm.allreduce`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.asmgen import Code, CompilerLimit, f32_bits
from compiler.comm import allreduce, copy_rect
from compiler.ir import Op
from compiler.layout import round_up
from compiler.plan import Ctx, Step, Value, scratch
from compiler.reference import (
    LOG_EXP_MASK,
    LOG_HALF_BITS,
    LOG_LN2_HI,
    LOG_LN2_LO,
    LOG_MANT_MASK,
    LOG_MIN_NORMAL,
    LOG_POLY,
    LOG_SQRT_HALF,
    LOG_SUBNORMAL_SCALE,
)

NEG_INF = 0xFF800000
POS_INF = 0x7F800000
QNAN = 0x7FC00000
ZERO = 0x00000000
ONE = 0x3F800000
VOPS = {Op.NEG: "vneg", Op.ABS: "vabs", Op.EXP: "vexp", Op.TANH: "vtanh",
        Op.SIGMOID: "vsigmoid", Op.SQRT: "vsqrt", Op.ADD: "vadd", Op.SUB: "vsub",
        Op.MUL: "vmul", Op.DIV: "vdiv", Op.MAXIMUM: "vmax", Op.MINIMUM: "vmin",
        Op.ERF: "verf", Op.GELU: "vgelu", Op.POW: "vpow"}
# a > b is b < a, a >= b is b <= a: the compare takes the operands swapped.
CMPOPS = {Op.GT: "vcmplt", Op.GE: "vcmple"}
# ... and these take them in order (a != b is the complement of a == b).
CMPOPS_IN_ORDER = {Op.LT: "vcmplt", Op.LE: "vcmple", Op.EQ: "vcmpeq", Op.NE: "vcmpeq"}
# Ops that need a register of zeros (relu's bound, where's and != 's test) or of ones (masks).
NEEDS_ZERO = (Op.RELU, Op.WHERE, Op.NE)
NEEDS_ONE = (Op.GT, Op.GE, Op.LT, Op.LE, Op.EQ, Op.NE)
# The f32 bits a bf16 value keeps (sign, exponent, 7 mantissa bits): a truncation to bf16.
HI_MASK = 0xFFFF0000


def split_vector(code: Code, x: str, base: str, off: int, piece: int,
                 t: tuple[str, str, str, str], himask: str, zero: str) -> None:
    """Store f32 vector register x as three bf16 pieces hi, mid, lo at [base+off], `piece`
    bytes apart, that add up to x exactly (compiler.matmul.SplitBf16 says why): hi = x
    truncated to bf16 (a NaN stays itself), mid = (x - hi) truncated, lo = the rest, which
    is a bf16 value; an infinity or NaN goes into hi alone. `t`: four temporaries; x is kept."""
    ok, hi, rest, mid = t
    code.op("vcmpeq", ok, x, x)                 # not NaN
    code.op("vand", hi, x, himask)
    code.op("vsel", hi, ok, hi, x)
    code.op("vstn.bf16", hi, (base, off))
    code.op("vsub", rest, x, hi)                # exact; NaN for an infinity or NaN
    code.op("vcmpeq", ok, rest, rest)
    code.op("vsel", rest, ok, rest, zero)
    code.op("vand", mid, rest, himask)
    code.op("vstn.bf16", mid, (base, off + piece))
    code.op("vsub", rest, rest, mid)            # lo, exact
    code.op("vstn.bf16", rest, (base, off + 2 * piece))


def _isz(dtype: str) -> int:
    return 4 if dtype == "f32" else 2


def splat_from(code: Code, vd: str, addr_reg: str, off: int, dtype: str, tmp: str) -> None:
    """vd = the element at [addr_reg+off] in every lane."""
    if dtype == "f32":
        code.op("ld32u", tmp, (addr_reg, off))
    else:
        code.op("ld16u", tmp, (addr_reg, off))
        code.op("slli", tmp, tmp, 16)          # bf16 bits are the high half of f32 bits
    code.op("vbcast", vd, tmp)


def emit_log(code: Code, d: str, x: str, t: tuple[str, str, str, str]) -> None:
    """d = log(x) in every lane, step for step as compiler.reference.log_f32 defines it (the
    ISA has no log instruction). `t`: four temporaries; d, x and t are distinct registers, and
    x is left unchanged. 62 instructions, 26 of them immediates (vbcasti), one cycle each on d1."""
    t0, t1, t2, t3 = t

    def imm(r: str, v: float) -> None:
        code.op("vbcasti", r, f32_bits(v))

    imm(t0, LOG_MIN_NORMAL)
    code.op("vcmplt", t0, x, t0)                # subnormal (or not positive)
    imm(t1, LOG_SUBNORMAL_SCALE)
    code.op("vmul", t1, x, t1)
    code.op("vsel", t1, t0, t1, x)              # xs: x, a subnormal scaled by 2^25
    imm(t2, -151.0)
    imm(t3, -126.0)
    code.op("vsel", t2, t0, t2, t3)             # the exponent's bias
    code.op("vbcasti", t3, LOG_EXP_MASK)
    code.op("vand", t3, t1, t3)
    code.op("vcvt.f32.i32", t3, t3)             # biased exponent * 2^23, exactly
    imm(t0, 2.0 ** -23)
    code.op("vfma", t2, t3, t0, t2)             # e
    code.op("vbcasti", t3, LOG_MANT_MASK)
    code.op("vand", t1, t1, t3)
    code.op("vbcasti", t3, LOG_HALF_BITS)
    code.op("vor", t1, t1, t3)                  # m in [0.5, 1)
    imm(t3, LOG_SQRT_HALF)
    code.op("vcmplt", t3, t1, t3)               # small
    code.op("vadd", t0, t1, t1)
    code.op("vsel", t1, t3, t0, t1)
    imm(t0, 1.0)
    code.op("vsub", t1, t1, t0)                 # f = m (or 2m) - 1, exact
    code.op("vand", t3, t3, t0)
    code.op("vsub", t2, t2, t3)                 # e, one less where m was doubled
    code.op("vmul", t3, t1, t1)                 # z = f * f
    imm(d, LOG_POLY[0])
    for c in LOG_POLY[1:]:
        imm(t0, c)
        code.op("vfma", d, d, t1, t0)
    code.op("vmul", d, d, t1)
    code.op("vmul", d, d, t3)                   # y = f^3 P(f)
    imm(t0, LOG_LN2_LO)
    code.op("vfma", d, t2, t0, d)
    imm(t0, -0.5)
    code.op("vfma", d, t3, t0, d)
    code.op("vadd", d, t1, d)
    imm(t0, LOG_LN2_HI)
    code.op("vfma", d, t2, t0, d)               # f + y + e ln 2
    # log(+-0) = -inf, log(+inf) = +inf, log(x < 0) and log(NaN) = NaN
    code.op("vbcasti", t0, ZERO)
    code.op("vcmplt", t1, t0, x)
    code.op("vcmpeq", t2, x, t0)
    code.op("vbcasti", t3, NEG_INF)
    code.op("vbcasti", t0, QNAN)
    code.op("vsel", t0, t2, t3, t0)
    code.op("vsel", d, t1, d, t0)
    code.op("vbcasti", t0, POS_INF)
    code.op("vcmpeq", t1, x, t0)
    code.op("vsel", d, t1, t0, d)


def log_vector(code: Code, addr: int, n: int) -> None:
    """The f32 vector of n values at addr replaced by its log (whole vectors)."""
    code.li("r1", addr)
    for k in range(-(-n // code.lanes)):
        code.op("vld", "v0", ("r1", code.vbytes * k))
        emit_log(code, "v1", "v0", ("v2", "v3", "v4", "v5"))
        code.op("vst", "v1", ("r1", code.vbytes * k))


# ---- fused elementwise ------------------------------------------------------------------------

@dataclass
class Leaf:
    """An operand of a fused elementwise kernel: a stored value read in some mode, or a constant.

    full: same shape and distribution as the result; row: a [1, C] vector reused for every row;
    col: an [R, 1] column, one value per row; vcol: the same column stored as a vector [R]
    (split like the result's rows, values packed); scalar: one value; const: an immediate.
    """

    mode: str
    value: Value | None = None
    const: float = 0.0


# Expressions: ("leaf", k) | ("op", Op, (children...), rounds)
Expr = tuple


class Elementwise(Step):
    """out = expr(leaves), one fused loop over each node's block."""

    def __init__(self, out: Value, expr: Expr, leaves: list[Leaf], loc: tuple[int, int],
                 label: str, ops: list[str]) -> None:
        ins = []
        for lf in leaves:
            if lf.value is not None and lf.value not in ins:
                ins.append(lf.value)
        super().__init__("elementwise(" + " ".join(ops) + ")", out, ins, loc, label)
        self.expr = expr
        self.leaves = leaves
        self.split: Value | None = None

    def store_split(self, pieces: Value) -> None:
        """Also store the result as bf16 pieces for a matmul (compiler.matmul.SplitBf16), in
        the same loop: no second pass over the value."""
        self.split = pieces
        self.also.append(pieces)
        self.kind = self.kind[:-1] + " split)"

    def emit(self, ctx: Ctx) -> None:
        L = self.out.layout
        nv_regs = min(ctx.machine.vector_regs, 32)
        for i, j in L.holders():
            r0, r1, c0, c1 = L.block(i, j)
            _emit_elementwise(ctx.gcode(i, j), self, r1 - r0, c1 - c0, nv_regs)


def _emit_elementwise(code: Code, st: Elementwise, nr: int, nc: int, nv_regs: int) -> None:
    out = st.out
    L = out.layout
    leaves = st.leaves
    split = st.split
    # Pieces have their own row stride: a split result goes row by row.
    flat = split is None and all(lf.mode in ("full", "scalar", "const") for lf in leaves)
    # Registers that hold the same thing for a whole loop count down from the top.
    fixed: dict[object, str] = {}
    top = [nv_regs - 1]

    def fixed_reg(key: object) -> str:
        r = f"v{top[0]}"
        top[0] -= 1
        fixed[key] = r
        return r

    for k, lf in enumerate(leaves):
        if lf.mode == "const":
            code.op("vbcasti", fixed_reg(k), f32_bits(lf.const))
        elif lf.mode == "scalar":
            code.li("r13", lf.value.addr)
            splat_from(code, fixed_reg(k), "r13", 0, lf.value.dtype, "r12")
    if any(_uses(st.expr, op) for op in NEEDS_ZERO) or split is not None:
        code.op("vbcasti", fixed_reg("zero"), ZERO)
    if any(_uses(st.expr, op) for op in NEEDS_ONE):
        code.op("vbcasti", fixed_reg("one"), ONE)
    if split is not None:
        code.op("vbcasti", fixed_reg("himask"), HI_MASK)
    # Pointer registers: the result in r3, each stored operand from r4 on, then the pieces.
    ptr: dict[object, str] = {"out": "r3"}
    for lf in leaves:
        if lf.mode in ("full", "row", "col", "vcol") and lf.value not in ptr:
            ptr[lf.value] = f"r{3 + len(ptr)}"
    if split is not None:
        ptr[split] = f"r{3 + len(ptr)}"

    def isz_of(key: object) -> int:
        return _isz(out.dtype if key == "out" else key.dtype)

    def reset() -> None:
        for key, reg in ptr.items():
            code.li(reg, out.addr if key == "out" else key.addr)

    def stride_of(key: object) -> int:
        """Bytes from one row's operand to the next row's."""
        if key == "out":
            return L.stride
        return _isz(key.dtype) if leaves_mode(leaves, key) == "vcol" else key.layout.stride

    def vector(off: int, held: dict[int, str], free_top: int, row: int = 0) -> None:
        """Compute and store the `lanes` elements at element offset `off` of row `row` past the
        current one, with temporaries taken from v0..v{free_top} and released as soon as they
        are used."""
        cached: dict[int, str] = dict(held)
        free = [f"v{n}" for n in range(free_top, -1, -1)]
        temps: set[str] = set()

        def new() -> str:
            if not free:
                raise CompilerLimit(f"the fused expression of '{st.label}' needs more vector "
                                    f"registers than the machine's {nv_regs}",
                                    "a fused elementwise expression keeps its temporaries in "
                                    "vector registers; split it into several statements",
                                    st.loc)
            r = free.pop()
            temps.add(r)
            return r

        def release(r: str) -> None:
            if r in temps and r not in cached.values():
                temps.discard(r)
                free.append(r)

        def leaf(k: int) -> str:
            if k in fixed:
                return fixed[k]
            if k not in cached:
                lf = leaves[k]
                r = new()
                # A row operand is the same for every row (it is not preloaded when registers
                # are short, e.g. with 16 vector registers).
                down = 0 if lf.mode == "row" else row * stride_of(lf.value)
                code.vload(r, ptr[lf.value], off * _isz(lf.value.dtype) + down, lf.value.dtype)
                cached[k] = r
            return cached[k]

        def gen(e: Expr, root: bool) -> str:
            if e[0] == "leaf":
                return leaf(e[1])
            _, op, kids, rounds = e
            args = [gen(c, False) for c in kids]
            if op is Op.CAST:
                r = args[0]
            else:
                r = new()
                if op is Op.RELU:
                    code.op("vmax", r, args[0], fixed["zero"])
                elif op is Op.LOG:
                    tmp = (new(), new(), new(), new())
                    emit_log(code, r, args[0], tmp)
                    for t in tmp:
                        release(t)
                elif op in CMPOPS:
                    code.op(CMPOPS[op], r, args[1], args[0])
                    code.op("vand", r, r, fixed["one"])
                elif op is Op.NE:
                    code.op("vcmpeq", r, args[0], args[1])
                    code.op("vsel", r, r, fixed["zero"], fixed["one"])
                elif op in CMPOPS_IN_ORDER:
                    code.op(CMPOPS_IN_ORDER[op], r, args[0], args[1])
                    code.op("vand", r, r, fixed["one"])
                elif op is Op.WHERE:
                    # c == 0 picks b; anything else (a NaN too) picks a
                    code.op("vcmpeq", r, args[0], fixed["zero"])
                    code.op("vsel", r, r, args[2], args[1])
                else:
                    code.op(VOPS[op], r, *args)
                for a in args:
                    if a != r:
                        release(a)
            if rounds and not root:
                if r in temps and r not in cached.values():
                    code.op("vcvt.bf16", r, r)
                else:
                    r2 = new()
                    code.op("vcvt.bf16", r2, r)
                    r = r2
            return r

        res = gen(st.expr, True)
        code.vstore(res, "r3", off * _isz(out.dtype) + row * L.stride, out.dtype)
        if split is not None:
            split_vector(code, res, ptr[split], off * 2 + row * split.layout.stride,
                         split.layout.piece_bytes, (new(), new(), new(), new()),
                         fixed["himask"], fixed["zero"])

    lanes = code.lanes
    reset()
    if flat:
        # Same distribution everywhere: the block is one run of whole vectors, 8 per trip.
        nv = -(-nr * (L.stride // _isz(out.dtype)) // lanes)
        full, rest = divmod(nv, 8)

        def eight() -> None:
            for k in range(8):
                vector(lanes * k, {}, top[0])
            for key, reg in ptr.items():
                code.op("addi", reg, reg, 8 * lanes * isz_of(key))

        code.counted("r1", full, eight)
        for k in range(rest):
            vector(lanes * k, {}, top[0])
        return
    # Row mode: column leaves are splatted once per row, row leaves preloaded when they fit.
    nvr = -(-nc // lanes)
    row_keys = [k for k, lf in enumerate(leaves) if lf.mode == "row"]
    col_keys = [k for k, lf in enumerate(leaves) if lf.mode in ("col", "vcol")]
    advancing = [key for key in ptr
                 if key == "out" or key is split
                 or leaves_mode(leaves, key) in ("full", "col", "vcol")]
    chunks = list(range(0, nvr, 8))
    for q0 in chunks:
        q1 = min(nvr, q0 + 8)
        if len(chunks) > 1:
            reset()
        held_col = {k: f"v{top[0] - n}" for n, k in enumerate(col_keys)}
        free = top[0] - len(col_keys)
        room = free + 1 - _size(st.expr) - (4 if split is not None else 0)
        pre: dict[tuple[int, int], str] = {}
        if row_keys and len(row_keys) * (q1 - q0) <= room:
            for k in row_keys:
                lf = leaves[k]
                for v in range(q0, q1):
                    r = pre[(k, v)] = f"v{free - len(pre)}"
                    code.vload(r, ptr[lf.value], lanes * v * _isz(lf.value.dtype),
                               lf.value.dtype)

        temp_top = free - len(pre)

        # Rows are unrolled (offsets in the instructions, one pointer update per trip): fully
        # for a small block, else about 8 vectors per trip.
        w = q1 - q0
        unroll = nr if nr * w <= 32 else max(1, 8 // w)

        def rows(n: int, step: bool, q0: int = q0, q1: int = q1, held_col: dict = held_col,
                 pre: dict = pre, temp_top: int = temp_top) -> None:
            for u in range(n):
                for k, r in held_col.items():
                    col = leaves[k].value
                    splat_from(code, r, ptr[col], u * stride_of(col), col.dtype, "r13")
                for v in range(q0, q1):
                    held = dict(held_col)
                    held.update({k: pre[(k, v)] for k in row_keys if (k, v) in pre})
                    vector(lanes * v, held, temp_top, u)
            if step:
                for key in advancing:
                    code.op("addi", ptr[key], ptr[key], n * stride_of(key))

        trips, rest = divmod(nr, unroll)
        step = trips > 1 or rest > 0
        code.counted("r1", trips, lambda n=unroll, step=step: rows(n, step))
        if rest:
            rows(rest, False)


def leaves_mode(leaves: list[Leaf], value: Value) -> str:
    for lf in leaves:
        if lf.value is value:
            return lf.mode
    return ""


def _uses(e: Expr, op: Op) -> bool:
    if e[0] == "leaf":
        return False
    return e[1] is op or any(_uses(c, op) for c in e[2])


def _size(e: Expr) -> int:
    """About how many vector registers computing `e` takes (log: its four temporaries too)."""
    if e[0] == "leaf":
        return 1
    return (6 if e[1] is Op.LOG else 2) + sum(_size(c) for c in e[2])


# ---- reductions -------------------------------------------------------------------------------

# What a reduction combines with ("sum", "max", "min") and the identity of each.
COMBINE_OPS = {"sum": "vadd", "max": "vmax", "min": "vmin"}
IDENTITY = {"sum": ZERO, "max": NEG_INF, "min": POS_INF}


def _mask_regs(code: Code, tail: int, op: str) -> tuple[str, str]:
    """Lane mask for a partial last vector (v14), and the identity (v15) for max and min."""
    code.lane_mask("v14", tail, "v13")
    if op != "sum":
        code.op("vbcasti", "v15", IDENTITY[op])
    return "v14", "v15"


def _masked(code: Code, v: str, op: str) -> None:
    if op != "sum":
        code.op("vsel", v, "v14", v, "v15")
    else:
        code.op("vand", v, v, "v14")


def _combine(code: Code, op: str, d: str, a: str, b: str) -> None:
    code.op(COMBINE_OPS[op], d, a, b)


def _reduce_lanes(code: Code, op: str, rd: str, v: str) -> None:
    """rd = the f32 bits of op over the lanes of v (lane order 0..15). The ISA has no lane
    minimum: min is -max(-v), exact (vneg flips the sign, v is clobbered); the sign of rd's
    bits is flipped back with xori, whose sign-extended immediate also sets the upper 32 bits,
    which st32 and vbcast ignore."""
    if op == "min":
        code.op("vneg", v, v)
        code.op("vredmax", rd, v)
        code.op("xori", rd, rd, -(1 << 31))
    else:
        code.op("vredmax" if op == "max" else "vredsum", rd, v)


def fill(code: Code, addr: int, n: int, bits: int) -> None:
    """n f32 values of the given bit pattern at addr (whole vectors)."""
    code.op("vbcasti", "v0", bits)
    code.li("r1", addr)
    for k in range(-(-n // code.lanes)):
        code.op("vst", "v0", ("r1", code.vbytes * k))


def narrow_rows(code: Code, nr: int, nc: int, *layouts) -> int:
    """How many leading rows of a block a row kernel takes `lanes` at a time, a row per lane
    (0 if none): rows of at most one vector (nc <= lanes) are read and written down their
    columns with strided loads and stores, so a line statistic costs a vector operation per
    column instead of a lane reduction per row. Only whole groups of `lanes` rows that stay
    inside every buffer in `layouts` (their padding rows may be computed, as padding may hold
    garbage); the rows after them take the row-by-row loop."""
    lanes = code.lanes
    if nc > lanes or nr < lanes // 2:
        return 0
    n = -(-nr // lanes) * lanes
    while n and any(n > L.alloc_rows for L in layouts):
        n -= lanes
    return n


def row_partials(code: Code, x: Value, nr: int, nc: int, op: str, part: int,
                 pre: tuple[str, str, str] | None = None) -> None:
    """part[r] (f32) = op over the nc elements of row r of x's block, for r < nr.

    With `pre` = (vsub_source_addr, "exp", ebuf_addr) each element is first replaced by
    exp(x - m[r]) with m[r] read from vsub_source, and the results are stored (f32) in ebuf
    with stride round_up(nc, lanes) * 4: the softmax numerator pass (ebuf None: not stored,
    as log_softmax needs only the sums). With "square" instead of "exp", by (x - m[r])^2:
    layernorm's variance pass. Narrow rows go `lanes` at a time (`narrow_rows`): the same
    operations in the same order (a lane reduction adds lanes 0, 1, ... in order, as the
    columns are added here), so the same results.
    """
    ident = IDENTITY[op]
    if nc <= 0:
        fill(code, part, nr, ident)
        return
    lanes, vb = code.lanes, code.vbytes
    done = narrow_rows(code, nr, nc, x.layout)
    if done:
        _row_partials_narrow(code, x, done, nc, op, part, pre)
        if done >= nr:
            return
        nr -= done
        part += 4 * done
        x = _rows_from(x, done)
        if pre is not None:
            ebuf = None if pre[2] is None else pre[2] + done * round_up(nc, lanes) * 4
            pre = (pre[0] + 4 * done, pre[1], ebuf)
    nvr = -(-nc // lanes)
    tail = nc % lanes
    if tail:
        _mask_regs(code, tail, op)
    isz = _isz(x.dtype)
    code.li("r3", x.addr)
    code.li("r4", part)
    if pre is not None:
        code.li("r5", pre[0])
        if pre[2] is not None:
            code.li("r6", pre[2])

    def row() -> None:
        if pre is not None:
            code.op("ld32u", "r13", ("r5", 0))
            code.op("vbcast", "v12", "r13")
        for k in range(nvr):
            t = "v0" if k == 0 else "v1"
            code.vload(t, "r3", lanes * k * isz, x.dtype)
            if pre is not None:
                code.op("vsub", t, t, "v12")
                _after_shift(code, pre[1], t)
                if pre[2] is not None:
                    code.op("vst", t, ("r6", vb * k))
            if k == nvr - 1 and tail:
                _masked(code, t, op)
            if k:
                _combine(code, op, "v0", "v0", "v1")
        _reduce_lanes(code, op, "r13", "v0")
        code.op("st32", "r13", ("r4", 0))
        code.op("addi", "r3", "r3", x.layout.stride)
        code.op("addi", "r4", "r4", 4)
        if pre is not None:
            code.op("addi", "r5", "r5", 4)
            if pre[2] is not None:
                code.op("addi", "r6", "r6", round_up(nc, lanes) * 4)

    code.counted("r1", nr, row)


def _rows_from(x: Value, r: int) -> Value:
    """x's block from its row r on, as a value of its own (the same layout, a later address)."""
    return Value(x.name, x.shape, x.dtype, x.layout, x.node, addr=x.addr + r * x.layout.stride)


def _row_partials_narrow(code: Code, x: Value, nr: int, nc: int, op: str, part: int,
                         pre: tuple | None) -> None:
    """row_partials for nr rows (a multiple of `lanes`), `lanes` rows at a time: lane k holds
    row r0 + k, and the columns are loaded down the rows and combined one after another."""
    lanes, vb = code.lanes, code.vbytes
    isz = _isz(x.dtype)
    load = "vlds" if x.dtype == "f32" else "vldsw.bf16"
    es = round_up(nc, lanes) * 4
    code.li("r7", x.layout.stride)
    code.li("r3", x.addr)
    code.li("r4", part)
    ebuf = pre is not None and pre[2] is not None
    if pre is not None:
        code.li("r5", pre[0])
        if ebuf:
            code.li("r6", pre[2])
            code.li("r8", es)

    def chunk() -> None:
        code.op("vbcasti", "v0", IDENTITY[op])
        if pre is not None:
            code.op("vld", "v12", ("r5", 0))
        for c in range(nc):
            code.op(load, "v1", ("r3", c * isz), "r7")
            if pre is not None:
                code.op("vsub", "v1", "v1", "v12")
                _after_shift(code, pre[1], "v1")
                if ebuf:
                    code.op("vsts", "v1", ("r6", 4 * c), "r8")
            _combine(code, op, "v0", "v0", "v1")
        code.op("vst", "v0", ("r4", 0))
        code.op("addi", "r3", "r3", lanes * x.layout.stride)
        code.op("addi", "r4", "r4", vb)
        if pre is not None:
            code.op("addi", "r5", "r5", vb)
            if ebuf:
                code.op("addi", "r6", "r6", lanes * es)

    code.counted("r1", nr // lanes, chunk)


def col_partials(code: Code, x: Value, nr: int, nc: int, op: str, part: int,
                 pre: tuple[int, int] | None = None, fn: str = "exp") -> None:
    """part[c] (f32) = op over the nr rows of column c of x's block (whole vectors).

    With `pre` = (m_addr, ebuf_addr): elements are first replaced by exp(x - m[c]) (`fn`
    "exp") or (x - m[c])^2 ("square") and stored (f32) in ebuf with stride
    round_up(nc, lanes) * 4 (ebuf None: not stored).
    """
    ident = IDENTITY[op]
    lanes, vb = code.lanes, code.vbytes
    nvr = -(-nc // lanes)
    if nr <= 0:
        fill(code, part, nc, ident)
        return
    isz = _isz(x.dtype)
    es = round_up(nc, lanes) * 4
    for q0 in range(0, nvr, 6):
        q1 = min(nvr, q0 + 6)
        code.li("r3", x.addr + lanes * q0 * isz)
        if pre is not None:
            if pre[1] is not None:
                code.li("r5", pre[1] + vb * q0)
            for v in range(q0, q1):
                code.li("r6", pre[0] + vb * v)
                code.op("vld", f"v{8 + v - q0}", ("r6", 0))
        for v in range(q0, q1):
            code.op("vbcasti", f"v{v - q0}", ident)

        def row(q0: int = q0, q1: int = q1) -> None:
            for v in range(q0, q1):
                code.vload("v14", "r3", lanes * (v - q0) * isz, x.dtype)
                if pre is not None:
                    code.op("vsub", "v14", "v14", f"v{8 + v - q0}")
                    _after_shift(code, fn, "v14")
                    if pre[1] is not None:
                        code.op("vst", "v14", ("r5", vb * (v - q0)))
                _combine(code, op, f"v{v - q0}", f"v{v - q0}", "v14")
            code.op("addi", "r3", "r3", x.layout.stride)
            if pre is not None and pre[1] is not None:
                code.op("addi", "r5", "r5", es)

        code.counted("r1", nr, row)
        code.li("r4", part + vb * q0)
        for v in range(q0, q1):
            code.op("vst", f"v{v - q0}", ("r4", vb * (v - q0)))


def _after_shift(code: Code, fn: str, v: str) -> None:
    """The function applied to x - m in a numerator or variance pass: exp, or the square."""
    if fn == "exp":
        code.op("vexp", v, v)
    else:
        code.op("vmul", v, v, v)


def store_vector(code: Code, src: int, n: int, out: Value, dst: int, divisor: float | None,
                 negate: bool = False) -> None:
    """out elements [dst, +n) = f32 vector at src (divided by `divisor`; with `negate`, 0 minus
    it, so that a -0 becomes +0), in out's dtype."""
    code.li("r1", src)
    code.li("r2", dst)
    if divisor is not None:
        code.op("vbcasti", "v15", f32_bits(divisor))
    if negate:
        code.op("vbcasti", "v14", ZERO)
    isz = _isz(out.dtype)
    lanes = code.lanes
    for k in range(-(-n // lanes)):
        code.op("vld", "v0", ("r1", code.vbytes * k))
        if divisor is not None:
            code.op("vdiv", "v0", "v0", "v15")
        if negate:
            code.op("vsub", "v0", "v14", "v0")
        code.vstore("v0", "r2", lanes * k * isz, out.dtype)



def line_members(ctx: Ctx, L, rows: bool) -> dict[tuple[int, int], tuple[int, int]]:
    """Grid nodes holding part of a reduction line, in grid order, with their block shapes
    (rows, cols). A node whose block has nothing along the kept axis takes no part."""
    shapes = {}
    for i in range(ctx.grid.P):
        for j in range(ctx.grid.Q):
            r0, r1, c0, c1 = L.block(i, j)
            nr, nc = r1 - r0, c1 - c0
            if (nr if rows else nc) > 0:
                shapes[(i, j)] = (nr, nc)
    return shapes


def holders(ctx: Ctx, L, rows: bool) -> dict[tuple[int, int], tuple[int, int]]:
    """The members of line_members that hold elements: what a kernel whose result has its
    operand's layout all-reduces among (a node with an empty block needs no line statistic;
    the older kernels, Reduce and Softmax, still count such nodes in)."""
    return {ij: (nr, nc) for ij, (nr, nc) in line_members(ctx, L, rows).items()
            if nr > 0 and nc > 0}


def line_reduce(ctx: Ctx, x: Value, shapes: dict[tuple[int, int], tuple[int, int]], rows: bool,
                op: str, part: int, tmp: int, exp_from: tuple[int, int] | None = None,
                fn: str = "exp") -> None:
    """Each member of the lines (`shapes`, from line_members) reduces its block along the line
    into `part` with `op`, then an all-reduce along the line (`tmp`: its receive buffer) leaves
    the line's result in every member's `part`. With `exp_from` = (m_addr, ebuf_addr) the
    elements are first replaced by exp(x - m) and stored in ebuf: the softmax numerator pass
    (`fn` "square": by (x - m)^2, layernorm's variance pass)."""
    for (i, j), (nr, nc) in shapes.items():
        code = ctx.gcode(i, j)
        if rows:
            pre = None if exp_from is None else (exp_from[0], fn, exp_from[1])
            row_partials(code, x, nr, nc, op, part, pre=pre)
        else:
            col_partials(code, x, nr, nc, op, part, pre=exp_from, fn=fn)
    L = x.layout
    nbytes = {ij: 4 * (nr if rows else nc) for ij, (nr, nc) in shapes.items()}
    allreduce(ctx, L.col_axis if rows else L.row_axis, list(shapes), part, tmp, nbytes, op)


class Reduce(Step):
    """sum/max/min/mean of a 1-D or 2-D value over its rows' elements ("rows": the last axis)
    or down its columns ("cols": axis 0 of a 2-D value)."""

    def __init__(self, out: Value, src: Value, op: str, along: str, loc, label) -> None:
        super().__init__(f"{op}[{along}]", out, [src], loc, label)
        self.op = op                      # "sum", "max", "min" or "mean"
        self.along = along
        L = src.layout
        n = (L.max_rows if along == "rows" else L.max_cols)
        size = round_up(max(n, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.part", size), scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x = self.ins[0]
        L = x.layout
        part, tmp = self.temps[0].addr, self.temps[1].addr
        comb = "sum" if self.op == "mean" else self.op
        rows = self.along == "rows"
        shapes = line_members(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, comb, part, tmp)
        div = None
        if self.op == "mean":
            div = float(L.cols if rows else L.rows)
        out = self.out
        for i, j in shapes:
            oc0, oc1 = out.layout.block(i, j)[2:]
            store_vector(ctx.gcode(i, j), part, oc1 - oc0, out, out.addr, div)


class Softmax(Step):
    """Max-subtracted softmax of a 1-D or 2-D value along "rows" (last axis) or "cols"."""

    def __init__(self, out: Value, src: Value, along: str, loc, label) -> None:
        super().__init__(f"softmax[{along}]", out, [src], loc, label)
        self.along = along
        L = src.layout
        n = L.max_rows if along == "rows" else L.max_cols
        size = round_up(max(n, 1), L.lanes) * 4
        ebytes = max(L.max_rows, 1) * round_up(max(L.max_cols, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.max", size), scratch(f"{out.name}.sum", size),
                      scratch(f"{out.name}.recv", size), scratch(f"{out.name}.exp", ebytes)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        mx, sm, tmp, eb = (t.addr for t in self.temps)
        rows = self.along == "rows"
        shapes = line_members(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, "max", mx, tmp)
        line_reduce(ctx, x, shapes, rows, "sum", sm, tmp, exp_from=(mx, eb))
        for (i, j), (nr, nc) in shapes.items():
            if nr <= 0 or nc <= 0:
                continue
            _divide(ctx.gcode(i, j), eb, round_up(nc, L.lanes) * 4, sm, rows, out, nr, nc)


def _divide(code: Code, eb: int, es: int, den: int, rows: bool, out: Value, nr: int,
            nc: int) -> None:
    """out[r][c] = e[r][c] / den[r] (rows) or / den[c] (cols)."""
    lanes, vb = code.lanes, code.vbytes
    done = narrow_rows(code, nr, nc, out.layout) if rows else 0
    if done:
        # `lanes` rows at a time, down the columns (see narrow_rows)
        store = "vsts" if out.dtype == "f32" else "vstsn.bf16"
        code.li("r3", eb)
        code.li("r4", out.addr)
        code.li("r5", den)
        code.li("r6", es)
        code.li("r7", out.layout.stride)

        def chunk() -> None:
            code.op("vld", "v15", ("r5", 0))
            for c in range(nc):
                code.op("vlds", "v0", ("r3", 4 * c), "r6")
                code.op("vdiv", "v0", "v0", "v15")
                code.op(store, "v0", ("r4", c * _isz(out.dtype)), "r7")
            code.op("addi", "r3", "r3", lanes * es)
            code.op("addi", "r4", "r4", lanes * out.layout.stride)
            code.op("addi", "r5", "r5", vb)

        code.counted("r1", done // lanes, chunk)
        if done >= nr:
            return
        eb, den, nr = eb + done * es, den + 4 * done, nr - done
        out = _rows_from(out, done)
    nvr = -(-nc // lanes)
    isz = _isz(out.dtype)
    for q0 in range(0, nvr, 8):
        q1 = min(nvr, q0 + 8)
        code.li("r3", eb + vb * q0)
        code.li("r4", out.addr + lanes * q0 * isz)
        code.li("r5", den)
        if not rows:
            for v in range(q0, q1):
                code.op("vld", f"v{8 + v - q0}", ("r5", vb * v))

        def row(q0: int = q0, q1: int = q1) -> None:
            if rows:
                code.op("ld32u", "r13", ("r5", 0))
                code.op("vbcast", "v15", "r13")
            for v in range(q0, q1):
                code.op("vld", "v0", ("r3", vb * (v - q0)))
                code.op("vdiv", "v0", "v0", "v15" if rows else f"v{8 + v - q0}")
                code.vstore("v0", "r4", lanes * (v - q0) * isz, out.dtype)
            code.op("addi", "r3", "r3", es)
            code.op("addi", "r4", "r4", out.layout.stride)
            if rows:
                code.op("addi", "r5", "r5", 4)

        code.counted("r1", nr, row)


class ReduceAll(Step):
    """sum/max/min/mean of every element of a value, whatever its layout, to a 0-d value held by
    every grid node: each node reduces its block, then partials are all-reduced along each grid
    axis that splits the value (replicas already agree along the others)."""

    def __init__(self, out: Value, src: Value, op: str, loc, label) -> None:
        super().__init__(f"{op}[all]", out, [src], loc, label)
        self.op = op                      # "sum", "max", "min" or "mean"
        size = src.layout.lanes * 4
        self.temps = [scratch(f"{out.name}.part", size), scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        part, tmp = self.temps[0].addr, self.temps[1].addr
        comb = "sum" if self.op == "mean" else self.op
        nodes = [(i, j) for i in range(ctx.grid.P) for j in range(ctx.grid.Q)]
        for i, j in nodes:
            nr, nc = L.block_shape(i, j)
            block_total(ctx.gcode(i, j), x, nr, nc, comb, part)
        for axis in (L.col_axis, L.row_axis):
            allreduce(ctx, axis, nodes, part, tmp, dict.fromkeys(nodes, 4), comb)
        div = float(math.prod(x.shape)) if self.op == "mean" else None
        for i, j in nodes:
            store_vector(ctx.gcode(i, j), part, 1, out, out.addr, div)


def block_total(code: Code, x: Value, nr: int, nc: int, op: str, dst: int) -> None:
    """The f32 at dst = op over every element of x's nr x nc block (the identity if empty)."""
    ident = IDENTITY[op]
    if nr <= 0 or nc <= 0:
        fill(code, dst, 1, ident)
        return
    lanes = code.lanes
    nvr = -(-nc // lanes)
    tail = nc % lanes
    if tail:
        _mask_regs(code, tail, op)
    isz = _isz(x.dtype)
    code.op("vbcasti", "v0", ident)
    code.li("r3", x.addr)

    def row() -> None:
        for k in range(nvr):
            code.vload("v1", "r3", lanes * k * isz, x.dtype)
            if k == nvr - 1 and tail:
                _masked(code, "v1", op)
            _combine(code, op, "v0", "v0", "v1")
        code.op("addi", "r3", "r3", x.layout.stride)

    code.counted("r1", nr, row)
    _reduce_lanes(code, op, "r13", "v0")
    code.li("r4", dst)
    code.op("st32", "r13", ("r4", 0))


class LogSoftmax(Step):
    """x - max - log(sum(exp(x - max))) of a 1-D or 2-D value along "rows" (last axis) or
    "cols": the softmax's two all-reductions (the exps are not stored), the log of the sums
    (one vector per node), then (x - max) - log(sum), rounded once."""

    def __init__(self, out: Value, src: Value, along: str, loc, label) -> None:
        super().__init__(f"log_softmax[{along}]", out, [src], loc, label)
        self.along = along
        L = src.layout
        n = L.max_rows if along == "rows" else L.max_cols
        size = round_up(max(n, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.max", size), scratch(f"{out.name}.sum", size),
                      scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        mx, sm, tmp = (t.addr for t in self.temps)
        rows = self.along == "rows"
        shapes = holders(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, "max", mx, tmp)
        line_reduce(ctx, x, shapes, rows, "sum", sm, tmp, exp_from=(mx, None))
        for (i, j), (nr, nc) in shapes.items():
            code = ctx.gcode(i, j)
            log_vector(code, sm, nr if rows else nc)
            _shift_log(code, x, mx, sm, rows, out, nr, nc)


def _shift_log(code: Code, x: Value, mx: int, ls: int, rows: bool, out: Value, nr: int,
               nc: int, second: str = "vsub") -> None:
    """out[r][c] = (x[r][c] - mx[r]) - ls[r] (rows) or with mx[c], ls[c] (cols), in f32; with
    `second` "vdiv", (x - mx) / ls: layernorm's last pass."""
    lanes, vb = code.lanes, code.vbytes
    done = narrow_rows(code, nr, nc, x.layout, out.layout) if rows else 0
    if done:
        # `lanes` rows at a time, down the columns (see narrow_rows)
        load = "vlds" if x.dtype == "f32" else "vldsw.bf16"
        store = "vsts" if out.dtype == "f32" else "vstsn.bf16"
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        code.li("r5", mx)
        code.li("r6", ls)
        code.li("r7", x.layout.stride)
        code.li("r8", out.layout.stride)

        def chunk() -> None:
            code.op("vld", "v14", ("r5", 0))
            code.op("vld", "v15", ("r6", 0))
            for c in range(nc):
                code.op(load, "v0", ("r3", c * _isz(x.dtype)), "r7")
                code.op("vsub", "v0", "v0", "v14")
                code.op(second, "v0", "v0", "v15")
                code.op(store, "v0", ("r4", c * _isz(out.dtype)), "r8")
            for r, st in (("r3", x.layout.stride), ("r4", out.layout.stride), ("r5", 4),
                          ("r6", 4)):
                code.op("addi", r, r, lanes * st)

        code.counted("r1", done // lanes, chunk)
        if done >= nr:
            return
        mx, ls, nr = mx + 4 * done, ls + 4 * done, nr - done
        x, out = _rows_from(x, done), _rows_from(out, done)
    nvr = -(-nc // lanes)
    xi, oi = _isz(x.dtype), _isz(out.dtype)
    width = 8 if rows else 6
    for q0 in range(0, nvr, width):
        q1 = min(nvr, q0 + width)
        code.li("r3", x.addr + lanes * q0 * xi)
        code.li("r4", out.addr + lanes * q0 * oi)
        code.li("r5", mx if rows else mx + vb * q0)
        code.li("r6", ls if rows else ls + vb * q0)
        if not rows:
            for v in range(q0, q1):
                code.op("vld", f"v{2 + v - q0}", ("r5", vb * (v - q0)))
                code.op("vld", f"v{8 + v - q0}", ("r6", vb * (v - q0)))

        def row(q0: int = q0, q1: int = q1) -> None:
            if rows:
                code.op("ld32u", "r13", ("r5", 0))
                code.op("vbcast", "v14", "r13")
                code.op("ld32u", "r13", ("r6", 0))
                code.op("vbcast", "v15", "r13")
            for v in range(q0, q1):
                code.vload("v0", "r3", lanes * (v - q0) * xi, x.dtype)
                code.op("vsub", "v0", "v0", "v14" if rows else f"v{2 + v - q0}")
                code.op(second, "v0", "v0", "v15" if rows else f"v{8 + v - q0}")
                code.vstore("v0", "r4", lanes * (v - q0) * oi, out.dtype)
            code.op("addi", "r3", "r3", x.layout.stride)
            code.op("addi", "r4", "r4", out.layout.stride)
            if rows:
                code.op("addi", "r5", "r5", 4)
                code.op("addi", "r6", "r6", 4)

        code.counted("r1", nr, row)


class MaxMask(Step):
    """1 at the first maximal element along "rows" (the last axis) or "cols" (axis 0) of a 1-D
    or 2-D value, 0 elsewhere: the maximum is all-reduced along the lines, then the first index
    holding it (as -index, so that the first is the largest: an all-reduce with max finds it),
    and every node marks that index in its block. A NaN counts as maximal, as numpy's argmax
    has it (the maximum is then NaN)."""

    def __init__(self, out: Value, src: Value, along: str, loc, label) -> None:
        super().__init__(f"max_mask[{along}]", out, [src], loc, label)
        self.along = along
        L = src.layout
        n = L.max_rows if along == "rows" else L.max_cols
        size = round_up(max(n, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.max", size), scratch(f"{out.name}.first", size),
                      scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        mx, first, tmp = (t.addr for t in self.temps)
        rows = self.along == "rows"
        shapes = holders(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, "max", mx, tmp)
        for (i, j), (nr, nc) in shapes.items():
            r0, _, c0, _ = L.block(i, j)
            code = ctx.gcode(i, j)
            if rows:
                _first_in_rows(code, x, nr, nc, mx, first, c0)
            else:
                _first_in_cols(code, x, nr, nc, mx, first, r0)
        nbytes = {ij: 4 * (nr if rows else nc) for ij, (nr, nc) in shapes.items()}
        allreduce(ctx, L.col_axis if rows else L.row_axis, list(shapes), first, tmp, nbytes,
                  "max")
        for (i, j), (nr, nc) in shapes.items():
            r0, _, c0, _ = L.block(i, j)
            if rows:
                _mark_rows(ctx.gcode(i, j), first, out, nr, nc, c0)
            else:
                _mark_cols(ctx.gcode(i, j), first, out, nr, nc, r0)


class ArgMax(Step):
    """The index of the first maximum along "rows" (the last axis) or "cols" (axis 0) of a 1-D
    or 2-D value, as a value of its dtype in a Reduce's result layout: MaxMask's first two
    phases (the line maximum, then the first index holding it as -index, all-reduced with max)
    over every member of the lines, so that each holder of the result has it, then stored
    negated. A NaN counts as maximal, as numpy's argmax has it."""

    def __init__(self, out: Value, src: Value, along: str, loc, label) -> None:
        super().__init__(f"argmax[{along}]", out, [src], loc, label)
        self.along = along
        L = src.layout
        n = L.max_rows if along == "rows" else L.max_cols
        size = round_up(max(n, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.max", size), scratch(f"{out.name}.first", size),
                      scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        mx, first, tmp = (t.addr for t in self.temps)
        rows = self.along == "rows"
        shapes = line_members(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, "max", mx, tmp)
        for (i, j), (nr, nc) in shapes.items():
            r0, _, c0, _ = L.block(i, j)
            code = ctx.gcode(i, j)
            if rows:
                _first_in_rows(code, x, nr, nc, mx, first, c0)
            else:
                _first_in_cols(code, x, nr, nc, mx, first, r0)
        nbytes = {ij: 4 * (nr if rows else nc) for ij, (nr, nc) in shapes.items()}
        allreduce(ctx, L.col_axis if rows else L.row_axis, list(shapes), first, tmp, nbytes,
                  "max")
        for i, j in shapes:
            oc0, oc1 = out.layout.block(i, j)[2:]
            store_vector(ctx.gcode(i, j), first, oc1 - oc0, out, out.addr, None, negate=True)


class LayerNorm(Step):
    """(x - mean) / sqrt(var + eps) of a 1-D or 2-D value along "rows" (the last axis) or
    "cols" (axis 0), in f32 and rounded once: the sums of x all-reduced along the lines among
    the nodes that hold elements, divided by n (the mean); the sums of (x - mean)^2 likewise,
    divided by n, plus eps, square-rooted (one vector per node); then every element shifted and
    divided. eps is the IR node's `value`, rounded to f32."""

    def __init__(self, out: Value, src: Value, along: str, loc, label) -> None:
        super().__init__(f"layernorm[{along}]", out, [src], loc, label)
        self.along = along
        L = src.layout
        n = L.max_rows if along == "rows" else L.max_cols
        size = round_up(max(n, 1), L.lanes) * 4
        self.temps = [scratch(f"{out.name}.mean", size), scratch(f"{out.name}.std", size),
                      scratch(f"{out.name}.recv", size)]

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        L = x.layout
        mean, std, tmp = (t.addr for t in self.temps)
        rows = self.along == "rows"
        count = float(L.cols if rows else L.rows)
        eps = out.node.value
        shapes = holders(ctx, L, rows)
        line_reduce(ctx, x, shapes, rows, "sum", mean, tmp)
        for (i, j), (nr, nc) in shapes.items():
            _scale_stats(ctx.gcode(i, j), mean, nr if rows else nc, count, None)
        line_reduce(ctx, x, shapes, rows, "sum", std, tmp, exp_from=(mean, None), fn="square")
        for (i, j), (nr, nc) in shapes.items():
            code = ctx.gcode(i, j)
            _scale_stats(code, std, nr if rows else nc, count, eps)
            _shift_log(code, x, mean, std, rows, out, nr, nc, second="vdiv")


def _scale_stats(code: Code, addr: int, n: int, count: float, eps: float | None) -> None:
    """The f32 vector of n sums at addr divided by count, in place: a mean; with eps, then
    sqrt(. + eps), the standard deviation layernorm divides by (whole vectors)."""
    code.li("r1", addr)
    code.op("vbcasti", "v15", f32_bits(count))
    if eps is not None:
        code.op("vbcasti", "v14", f32_bits(eps))
    for k in range(-(-n // code.lanes)):
        code.op("vld", "v0", ("r1", code.vbytes * k))
        code.op("vdiv", "v0", "v0", "v15")
        if eps is not None:
            code.op("vadd", "v0", "v0", "v14")
            code.op("vsqrt", "v0", "v0")
        code.op("vst", "v0", ("r1", code.vbytes * k))


def _candidates(code: Code, d: str, x: str, m: str, idx: str, eq: str, ninf: str) -> None:
    """d = idx where x equals m or is a NaN, else -inf (d, x, m, idx, eq distinct)."""
    code.op("vcmpeq", d, x, m)
    code.op("vcmpeq", eq, x, x)
    code.op("vsel", d, d, idx, ninf)
    code.op("vsel", d, eq, d, idx)


def _first_in_rows(code: Code, x: Value, nr: int, nc: int, mx: int, first: int, off: int
                   ) -> None:
    """first[r] = -(the global column index of row r's first element equal to mx[r]) over this
    block (columns off.. of the view), or -inf if there is none."""
    if nc <= 0:
        fill(code, first, nr, NEG_INF)
        return
    lanes = code.lanes
    nvr = -(-nc // lanes)
    tail = nc % lanes
    isz = _isz(x.dtype)
    code.op("viota", "v13")
    code.op("vneg", "v13", "v13")
    code.op("vbcasti", "v15", NEG_INF)
    if tail:
        code.lane_mask("v14", tail, "v12")
    code.li("r3", x.addr)
    code.li("r4", first)
    code.li("r5", mx)

    def row() -> None:
        code.op("ld32u", "r13", ("r5", 0))
        code.op("vbcast", "v12", "r13")
        code.op("vbcasti", "v0", NEG_INF)
        for k in range(nvr):
            code.vload("v1", "r3", lanes * k * isz, x.dtype)
            code.op("vbcasti", "v4", f32_bits(float(off + lanes * k)))
            code.op("vsub", "v4", "v13", "v4")
            _candidates(code, "v2", "v1", "v12", "v4", "v3", "v15")
            if k == nvr - 1 and tail:
                code.op("vsel", "v2", "v14", "v2", "v15")
            code.op("vmax", "v0", "v0", "v2")
        code.op("vredmax", "r13", "v0")
        code.op("st32", "r13", ("r4", 0))
        code.op("addi", "r3", "r3", x.layout.stride)
        code.op("addi", "r4", "r4", 4)
        code.op("addi", "r5", "r5", 4)

    code.counted("r1", nr, row)


def _first_in_cols(code: Code, x: Value, nr: int, nc: int, mx: int, first: int, off: int
                   ) -> None:
    """first[c] = -(the global row index of column c's first element equal to mx[c]) over this
    block (rows off.. of the view), or -inf if there is none (whole vectors)."""
    if nr <= 0:
        fill(code, first, nc, NEG_INF)
        return
    lanes, vb = code.lanes, code.vbytes
    nvr = -(-nc // lanes)
    isz = _isz(x.dtype)
    for q0 in range(0, nvr, 4):
        q1 = min(nvr, q0 + 4)
        code.li("r3", x.addr + lanes * q0 * isz)
        code.li("r5", mx + vb * q0)
        for v in range(q0, q1):
            code.op("vld", f"v{4 + v - q0}", ("r5", vb * (v - q0)))
            code.op("vbcasti", f"v{v - q0}", NEG_INF)
        code.op("vbcasti", "v11", f32_bits(float(-off)))
        code.op("vbcasti", "v12", ONE)
        code.op("vbcasti", "v15", NEG_INF)

        def row(q0: int = q0, q1: int = q1) -> None:
            for v in range(q0, q1):
                code.vload("v8", "r3", lanes * (v - q0) * isz, x.dtype)
                _candidates(code, "v9", "v8", f"v{4 + v - q0}", "v11", "v10", "v15")
                code.op("vmax", f"v{v - q0}", f"v{v - q0}", "v9")
            code.op("vsub", "v11", "v11", "v12")
            code.op("addi", "r3", "r3", x.layout.stride)

        code.counted("r1", nr, row)
        code.li("r4", first + vb * q0)
        for v in range(q0, q1):
            code.op("vst", f"v{v - q0}", ("r4", vb * (v - q0)))


def _mark_rows(code: Code, first: int, out: Value, nr: int, nc: int, off: int) -> None:
    """out[r][c] = 1 where off + c == -first[r], else 0."""
    lanes = code.lanes
    oi = _isz(out.dtype)
    code.op("viota", "v13")
    code.op("vneg", "v13", "v13")
    code.op("vbcasti", "v12", ONE)
    code.li("r4", out.addr)
    code.li("r5", first)

    def row() -> None:
        code.op("ld32u", "r13", ("r5", 0))
        code.op("vbcast", "v14", "r13")
        for k in range(-(-nc // lanes)):
            code.op("vbcasti", "v1", f32_bits(float(off + lanes * k)))
            code.op("vsub", "v1", "v13", "v1")
            code.op("vcmpeq", "v1", "v1", "v14")
            code.op("vand", "v1", "v1", "v12")
            code.vstore("v1", "r4", lanes * k * oi, out.dtype)
        code.op("addi", "r4", "r4", out.layout.stride)
        code.op("addi", "r5", "r5", 4)

    code.counted("r1", nr, row)


def _mark_cols(code: Code, first: int, out: Value, nr: int, nc: int, off: int) -> None:
    """out[r][c] = 1 where off + r == -first[c], else 0."""
    lanes, vb = code.lanes, code.vbytes
    nvr = -(-nc // lanes)
    oi = _isz(out.dtype)
    for q0 in range(0, nvr, 8):
        q1 = min(nvr, q0 + 8)
        code.li("r4", out.addr + lanes * q0 * oi)
        code.li("r5", first + vb * q0)
        for v in range(q0, q1):
            code.op("vld", f"v{2 + v - q0}", ("r5", vb * (v - q0)))
        code.op("vbcasti", "v11", f32_bits(float(-off)))
        code.op("vbcasti", "v12", ONE)

        def row(q0: int = q0, q1: int = q1) -> None:
            for v in range(q0, q1):
                code.op("vcmpeq", "v0", "v11", f"v{2 + v - q0}")
                code.op("vand", "v0", "v0", "v12")
                code.vstore("v0", "r4", lanes * (v - q0) * oi, out.dtype)
            code.op("vsub", "v11", "v11", "v12")
            code.op("addi", "r4", "r4", out.layout.stride)

        code.counted("r1", nr, row)


class DenseReshape(Step):
    """A reshape of a dense replicated value: the row-major bytes are the same, so every holder
    copies them into the result's buffer (no messages)."""

    def __init__(self, out: Value, src: Value, loc, label) -> None:
        super().__init__("reshape", out, [src], loc, label)

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        n = math.prod(x.shape)
        nbytes = n * _isz(x.dtype)
        for i, j in out.layout.holders():
            copy_rect(ctx.gcode(i, j), x.addr, nbytes, out.addr, nbytes, 1, n, x.dtype, True)


# ---- N-d fallbacks on dense replicated values -------------------------------------------------

def _abk(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


class NdReduce(Step):
    """sum/max/min/mean/argmax (or softmax, log_softmax, max_mask, layernorm) of a dense
    replicated N-d value along any axis, computed on every grid node (the result is dense and
    replicated too)."""

    def __init__(self, out: Value, src: Value, op: str, axis: int, loc, label) -> None:
        super().__init__(f"nd-{op}[axis={axis}]", out, [src], loc, label)
        # "sum", "max", "min", "mean", "argmax", "softmax", "log_softmax", "max_mask" or
        # "layernorm"
        self.op = op
        self.axis = axis
        A, K, B = _abk(src.shape, axis)
        if op == "softmax":
            self.temps = [scratch(f"{out.name}.exp", A * K * B * 4)]

    def emit(self, ctx: Ctx) -> None:
        for i, j in self.out.layout.holders():
            code = ctx.gcode(i, j)
            if self.op == "softmax":
                self._softmax(code)
            elif self.op == "log_softmax":
                self._log_softmax(code)
            elif self.op == "max_mask":
                self._max_mask(code)
            elif self.op == "argmax":
                self._argmax(code)
            elif self.op == "layernorm":
                self._layernorm(code)
            else:
                self._reduce(code)

    def _reduce(self, code: Code) -> None:
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        op = "sum" if self.op == "mean" else self.op
        ident = IDENTITY[op]
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes = code.lanes
        div = f32_bits(float(K)) if self.op == "mean" else None
        if div is not None:
            code.op("vbcasti", "v12", div)
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        if B == 1:
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                _mask_regs(code, tail, op)

            def one() -> None:
                code.op("vbcasti", "v0", ident)
                code.op("mv", "r5", "r3")

                def vec_k(last: bool) -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    if last and tail:
                        _masked(code, "v1", op)
                    _combine(code, op, "v0", "v0", "v1")
                    code.op("addi", "r5", "r5", lanes * xi)

                code.counted("r2", nvk - (1 if tail else 0), lambda: vec_k(False))
                if tail:
                    vec_k(True)
                _reduce_lanes(code, op, "r13", "v0")
                code.op("vbcast", "v0", "r13")
                if div is not None:
                    code.op("vdiv", "v0", "v0", "v12")
                _store_lane0(code, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", oi)

            code.counted("r1", A, one)
            return
        nvb = -(-B // lanes)

        def one_a() -> None:
            def bvec() -> None:
                code.op("mv", "r5", "r3")
                code.vload("v0", "r5", 0, x.dtype)

                def kstep() -> None:
                    code.op("addi", "r5", "r5", B * xi)
                    code.vload("v1", "r5", 0, x.dtype)
                    _combine(code, op, "v0", "v0", "v1")

                code.counted("r6", K - 1, kstep)
                if div is not None:
                    code.op("vdiv", "v0", "v0", "v12")
                code.vstore("v0", "r4", 0, out.dtype)
                code.op("addi", "r3", "r3", lanes * xi)
                code.op("addi", "r4", "r4", lanes * oi)

            code.counted("r2", nvb, bvec)
            # Undo the overshoot of the last vector: continue at the next a exactly.
            code.op("addi", "r3", "r3", (K * B - lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (B - lanes * nvb) * oi)

        code.counted("r1", A, one_a)

    def _argmax(self, code: Code) -> None:
        """The first index holding the maximum, as in _max_mask, stored as a value."""
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes = code.lanes
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        code.op("vbcasti", "v15", NEG_INF)
        if B == 1:
            # Along the contiguous axis: the largest -index among the candidates.
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                code.lane_mask("v14", tail, "v13")
            code.op("viota", "v13")
            code.op("vneg", "v13", "v13")

            def one() -> None:
                code.op("vbcasti", "v0", NEG_INF)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v1", "v14", "v1", "v15")
                    code.op("vmax", "v0", "v0", "v1")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                code.op("vbcasti", "v0", NEG_INF)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    code.op("vbcasti", "v4", f32_bits(float(lanes * k)))
                    code.op("vsub", "v4", "v13", "v4")
                    _candidates(code, "v5", "v1", "v2", "v4", "v3", "v15")
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v5", "v14", "v5", "v15")
                    code.op("vmax", "v0", "v0", "v5")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v0", "r13")
                code.op("vbcasti", "v6", ZERO)
                code.op("vsub", "v0", "v6", "v0")              # the index, +0 for the first
                _store_lane0(code, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", oi)

            code.counted("r1", A, one)
            return
        # Across rows: scan k in order, taking k where a lane meets its first candidate.
        code.op("vbcasti", "v11", ZERO)
        code.op("vbcasti", "v10", 0xFFFFFFFF)
        code.op("vbcasti", "v12", ONE)
        nvb = -(-B // lanes)

        def one_a() -> None:
            def bvec() -> None:
                _column_max(code, x.dtype, K, B * xi)
                code.op("mv", "r5", "r3")
                code.op("vbcasti", "v3", ZERO)               # found so far
                code.op("vbcasti", "v7", ZERO)               # the index
                code.op("vbcasti", "v8", ZERO)               # k

                def kscan() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vcmpeq", "v4", "v1", "v0")
                    code.op("vcmpeq", "v5", "v1", "v1")
                    code.op("vsel", "v4", "v5", "v4", "v10")   # a NaN is a candidate
                    code.op("vsel", "v5", "v3", "v11", "v4")   # the first candidate only
                    code.op("vsel", "v7", "v5", "v8", "v7")
                    code.op("vor", "v3", "v3", "v4")
                    code.op("vadd", "v8", "v8", "v12")
                    code.op("addi", "r5", "r5", B * xi)

                code.counted("r6", K, kscan)
                code.vstore("v7", "r4", 0, out.dtype)
                code.op("addi", "r3", "r3", lanes * xi)
                code.op("addi", "r4", "r4", lanes * oi)

            code.counted("r2", nvb, bvec)
            # Undo the overshoot of the last vector: continue at the next a exactly.
            code.op("addi", "r3", "r3", (K * B - lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (B - lanes * nvb) * oi)

        code.counted("r1", A, one_a)

    def _layernorm(self, code: Code) -> None:
        """(x - mean) / sqrt(var + eps) along the axis, as LayerNorm computes it on a line."""
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes = code.lanes
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        code.op("vbcasti", "v12", f32_bits(float(K)))
        code.op("vbcasti", "v11", f32_bits(out.node.value))
        if B == 1:
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                code.lane_mask("v14", tail, "v13")

            def one() -> None:
                code.op("vbcasti", "v0", ZERO)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    if k == nvk - 1 and tail:
                        code.op("vand", "v1", "v1", "v14")
                    code.op("vadd", "v0", "v0", "v1")
                code.op("vredsum", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                code.op("vdiv", "v2", "v2", "v12")             # the mean
                code.op("vbcasti", "v0", ZERO)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vmul", "v1", "v1", "v1")
                    if k == nvk - 1 and tail:
                        code.op("vand", "v1", "v1", "v14")
                    code.op("vadd", "v0", "v0", "v1")
                code.op("vredsum", "r13", "v0")
                code.op("vbcast", "v3", "r13")
                _std(code, "v3")
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vdiv", "v1", "v1", "v3")
                    code.vstore("v1", "r4", lanes * k * oi, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", K * oi)

            code.counted("r1", A, one)
            return
        nvb = -(-B // lanes)
        # b-vectors from the last to the first, as in _softmax.
        back = lanes * (nvb - 1)
        code.op("addi", "r3", "r3", back * xi)
        code.op("addi", "r4", "r4", back * oi)

        def one_a() -> None:
            def bvec() -> None:
                def ksum(square: bool) -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    if square:
                        code.op("vsub", "v1", "v1", "v2")
                        code.op("vmul", "v1", "v1", "v1")
                    code.op("vadd", "v0", "v0", "v1")
                    code.op("addi", "r5", "r5", B * xi)

                for square in (False, True):
                    code.op("mv", "r5", "r3")
                    code.op("vbcasti", "v0", ZERO)
                    code.counted("r6", K, lambda square=square: ksum(square))
                    if square:
                        code.op("vmov", "v3", "v0")
                        _std(code, "v3")
                    else:
                        code.op("vdiv", "v2", "v0", "v12")     # the mean
                code.op("mv", "r5", "r3")
                code.op("mv", "r9", "r4")

                def kout() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vdiv", "v1", "v1", "v3")
                    code.vstore("v1", "r9", 0, out.dtype)
                    code.op("addi", "r5", "r5", B * xi)
                    code.op("addi", "r9", "r9", B * oi)

                code.counted("r6", K, kout)
                code.op("addi", "r3", "r3", -lanes * xi)
                code.op("addi", "r4", "r4", -lanes * oi)

            code.counted("r2", nvb, bvec)
            code.op("addi", "r3", "r3", (K * B + lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (K * B + lanes * nvb) * oi)

        code.counted("r1", A, one_a)

    def _softmax(self, code: Code) -> None:
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes, vb = code.lanes, code.vbytes
        eb = self.temps[0].addr
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        code.li("r7", eb)
        if B == 1:
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                code.lane_mask("v14", tail, "v13")
            code.op("vbcasti", "v15", NEG_INF)

            def one() -> None:
                # max
                code.op("vbcasti", "v0", NEG_INF)
                code.op("mv", "r5", "r3")
                for k in range(nvk):
                    code.vload("v1", "r5", lanes * k * xi, x.dtype)
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v1", "v14", "v1", "v15")
                    code.op("vmax", "v0", "v0", "v1")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                # exp and sum
                code.op("vbcasti", "v0", ZERO)
                for k in range(nvk):
                    code.vload("v1", "r5", lanes * k * xi, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vexp", "v1", "v1")
                    code.op("vst", "v1", ("r7", vb * k))
                    if k == nvk - 1 and tail:
                        code.op("vand", "v1", "v1", "v14")
                    code.op("vadd", "v0", "v0", "v1")
                code.op("vredsum", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                for k in range(nvk):
                    code.op("vld", "v1", ("r7", vb * k))
                    code.op("vdiv", "v1", "v1", "v2")
                    code.vstore("v1", "r4", lanes * k * oi, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", K * oi)

            code.counted("r1", A, one)
            return
        nvb = -(-B // lanes)
        # b-vectors from the last to the first: the last one's overrun into the next k row
        # lands on elements that a later (lower) b-vector then writes correctly.
        back = lanes * (nvb - 1)
        code.op("addi", "r3", "r3", back * xi)
        code.op("addi", "r4", "r4", back * oi)
        code.op("addi", "r7", "r7", back * 4)

        def one_a() -> None:
            def bvec() -> None:
                _column_max(code, x.dtype, K, B * xi)
                code.op("vmov", "v2", "v0")
                code.op("mv", "r5", "r3")
                code.op("mv", "r8", "r7")
                code.op("vbcasti", "v0", ZERO)

                def kexp() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vexp", "v1", "v1")
                    code.op("vst", "v1", ("r8", 0))
                    code.op("vadd", "v0", "v0", "v1")
                    code.op("addi", "r5", "r5", B * xi)
                    code.op("addi", "r8", "r8", B * 4)

                code.counted("r6", K, kexp)
                code.op("mv", "r8", "r7")
                code.op("mv", "r9", "r4")

                def kdiv() -> None:
                    code.op("vld", "v1", ("r8", 0))
                    code.op("vdiv", "v1", "v1", "v0")
                    code.vstore("v1", "r9", 0, out.dtype)
                    code.op("addi", "r8", "r8", B * 4)
                    code.op("addi", "r9", "r9", B * oi)

                code.counted("r6", K, kdiv)
                code.op("addi", "r3", "r3", -lanes * xi)
                code.op("addi", "r4", "r4", -lanes * oi)
                code.op("addi", "r7", "r7", -vb)

            code.counted("r2", nvb, bvec)
            code.op("addi", "r3", "r3", (K * B + lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (K * B + lanes * nvb) * oi)
            code.op("addi", "r7", "r7", (K * B + lanes * nvb) * 4)

        code.counted("r1", A, one_a)


    def _log_softmax(self, code: Code) -> None:
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes = code.lanes
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        if B == 1:
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                code.lane_mask("v14", tail, "v13")
            code.op("vbcasti", "v15", NEG_INF)

            def one() -> None:
                code.op("vbcasti", "v0", NEG_INF)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v1", "v14", "v1", "v15")
                    code.op("vmax", "v0", "v0", "v1")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                code.op("vbcasti", "v0", ZERO)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vexp", "v1", "v1")
                    if k == nvk - 1 and tail:
                        code.op("vand", "v1", "v1", "v14")
                    code.op("vadd", "v0", "v0", "v1")
                code.op("vredsum", "r13", "v0")
                code.op("vbcast", "v3", "r13")
                emit_log(code, "v4", "v3", ("v5", "v6", "v7", "v8"))
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vsub", "v1", "v1", "v4")
                    code.vstore("v1", "r4", lanes * k * oi, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", K * oi)

            code.counted("r1", A, one)
            return
        nvb = -(-B // lanes)
        # b-vectors from the last to the first, as in _softmax.
        back = lanes * (nvb - 1)
        code.op("addi", "r3", "r3", back * xi)
        code.op("addi", "r4", "r4", back * oi)

        def one_a() -> None:
            def bvec() -> None:
                _column_max(code, x.dtype, K, B * xi)
                code.op("vmov", "v2", "v0")
                code.op("mv", "r5", "r3")
                code.op("vbcasti", "v0", ZERO)

                def kexp() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vexp", "v1", "v1")
                    code.op("vadd", "v0", "v0", "v1")
                    code.op("addi", "r5", "r5", B * xi)

                code.counted("r6", K, kexp)
                emit_log(code, "v3", "v0", ("v4", "v5", "v6", "v7"))
                code.op("mv", "r5", "r3")
                code.op("mv", "r9", "r4")

                def kout() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vsub", "v1", "v1", "v2")
                    code.op("vsub", "v1", "v1", "v3")
                    code.vstore("v1", "r9", 0, out.dtype)
                    code.op("addi", "r5", "r5", B * xi)
                    code.op("addi", "r9", "r9", B * oi)

                code.counted("r6", K, kout)
                code.op("addi", "r3", "r3", -lanes * xi)
                code.op("addi", "r4", "r4", -lanes * oi)

            code.counted("r2", nvb, bvec)
            code.op("addi", "r3", "r3", (K * B + lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (K * B + lanes * nvb) * oi)

        code.counted("r1", A, one_a)

    def _max_mask(self, code: Code) -> None:
        x, out = self.ins[0], self.out
        A, K, B = _abk(x.shape, self.axis)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        lanes = code.lanes
        code.li("r3", x.addr)
        code.li("r4", out.addr)
        code.op("vbcasti", "v12", ONE)
        code.op("vbcasti", "v15", NEG_INF)
        if B == 1:
            # Along the contiguous axis: the first index as in MaxMask, within one node.
            nvk = -(-K // lanes)
            tail = K % lanes
            if tail:
                code.lane_mask("v14", tail, "v13")
            code.op("viota", "v13")
            code.op("vneg", "v13", "v13")

            def neg_index(k: int) -> None:
                code.op("vbcasti", "v4", f32_bits(float(lanes * k)))
                code.op("vsub", "v4", "v13", "v4")

            def one() -> None:
                code.op("vbcasti", "v0", NEG_INF)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v1", "v14", "v1", "v15")
                    code.op("vmax", "v0", "v0", "v1")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v2", "r13")
                code.op("vbcasti", "v0", NEG_INF)
                for k in range(nvk):
                    code.vload("v1", "r3", lanes * k * xi, x.dtype)
                    neg_index(k)
                    _candidates(code, "v5", "v1", "v2", "v4", "v3", "v15")
                    if k == nvk - 1 and tail:
                        code.op("vsel", "v5", "v14", "v5", "v15")
                    code.op("vmax", "v0", "v0", "v5")
                code.op("vredmax", "r13", "v0")
                code.op("vbcast", "v6", "r13")
                for k in range(nvk):
                    neg_index(k)
                    code.op("vcmpeq", "v4", "v4", "v6")
                    code.op("vand", "v4", "v4", "v12")
                    code.vstore("v4", "r4", lanes * k * oi, out.dtype)
                code.op("addi", "r3", "r3", K * xi)
                code.op("addi", "r4", "r4", K * oi)

            code.counted("r1", A, one)
            return
        # Across rows: scan k in order, marking the first candidate of every lane.
        code.op("vbcasti", "v11", ZERO)
        code.op("vbcasti", "v10", 0xFFFFFFFF)
        nvb = -(-B // lanes)
        back = lanes * (nvb - 1)
        code.op("addi", "r3", "r3", back * xi)
        code.op("addi", "r4", "r4", back * oi)

        def one_a() -> None:
            def bvec() -> None:
                _column_max(code, x.dtype, K, B * xi)
                code.op("mv", "r5", "r3")
                code.op("mv", "r9", "r4")
                code.op("vbcasti", "v3", ZERO)               # found so far

                def kscan() -> None:
                    code.vload("v1", "r5", 0, x.dtype)
                    code.op("vcmpeq", "v4", "v1", "v0")
                    code.op("vcmpeq", "v5", "v1", "v1")
                    code.op("vsel", "v4", "v5", "v4", "v10")   # a NaN is a candidate
                    code.op("vsel", "v5", "v3", "v11", "v4")   # the first candidate only
                    code.op("vand", "v5", "v5", "v12")
                    code.vstore("v5", "r9", 0, out.dtype)
                    code.op("vor", "v3", "v3", "v4")
                    code.op("addi", "r5", "r5", B * xi)
                    code.op("addi", "r9", "r9", B * oi)

                code.counted("r6", K, kscan)
                code.op("addi", "r3", "r3", -lanes * xi)
                code.op("addi", "r4", "r4", -lanes * oi)

            code.counted("r2", nvb, bvec)
            code.op("addi", "r3", "r3", (K * B + lanes * nvb) * xi)
            code.op("addi", "r4", "r4", (K * B + lanes * nvb) * oi)

        code.counted("r1", A, one_a)

class NdBroadcast(Step):
    """Materialise a numpy broadcast of a dense replicated value into a dense replicated value
    (the N-d cases that are not a row vector, a column or a scalar)."""

    def __init__(self, out: Value, src: Value, loc, label) -> None:
        super().__init__("nd-broadcast", out, [src], loc, label)

    def emit(self, ctx: Ctx) -> None:
        x, out = self.ins[0], self.out
        d = out.shape
        s = (1,) * (len(d) - len(x.shape)) + tuple(x.shape)
        xi, oi = _isz(x.dtype), _isz(out.dtype)
        # numpy strides of the source, 0 along broadcast axes
        st = []
        acc = xi
        for k in range(len(s) - 1, -1, -1):
            st.append(0 if s[k] == 1 else acc)
            acc *= s[k]
        st.reverse()
        for i, j in out.layout.holders():
            code = ctx.gcode(i, j)
            _nd_copy(code, x.addr, st, out.addr, d, x.dtype, out.dtype, xi, oi)


def _store_lane0(code: Code, dtype: str) -> None:
    """The element at [r4] = lane 0 of v0, in `dtype` (bf16: rounded to nearest even)."""
    if dtype == "bf16":
        code.op("vcvt.bf16", "v0", "v0")
        code.op("vext", "r13", "v0", 0)
        code.op("srli", "r13", "r13", 16)      # the bf16 half of the f32 bits
        code.op("st16", "r13", ("r4", 0))
    else:
        code.op("vext", "r13", "v0", 0)
        code.op("st32", "r13", ("r4", 0))


def _std(code: Code, v: str) -> None:
    """v = sqrt(v / n + eps), with n in v12 and eps in v11: layernorm's divisor."""
    code.op("vdiv", v, v, "v12")
    code.op("vadd", v, v, "v11")
    code.op("vsqrt", v, v)


def _column_max(code: Code, dtype: str, K: int, row_bytes: int) -> None:
    """v0 = the lanewise max of the K vectors at [r3], [r3 + row_bytes], ... (a b-vector's
    column along the reduced axis); r5 walks the rows, r6 counts, v1 is scratch. The first
    pass of softmax, log_softmax and max_mask along a leading axis."""
    code.op("mv", "r5", "r3")
    code.vload("v0", "r5", 0, dtype)

    def kmax() -> None:
        code.op("addi", "r5", "r5", row_bytes)
        code.vload("v1", "r5", 0, dtype)
        code.op("vmax", "v0", "v0", "v1")

    code.counted("r6", K - 1, kmax)


def _nd_copy(code: Code, src: int, st: list[int], dst: int, d: tuple[int, ...], sdt: str,
             ddt: str, xi: int, oi: int) -> None:
    """dst (dense, shape d, up to 4-D) = src read with byte strides st, written in order."""
    outer = list(d[:-1])
    last = d[-1]
    lanes = code.lanes
    nvl = -(-last // lanes)
    regs = ["r5", "r6", "r7"]
    counters = ["r1", "r2", "r8"]
    code.li("r3", src)
    code.li("r4", dst)

    def inner(s_reg: str) -> None:
        if st[-1] == 0:
            splat_from(code, "v0", s_reg, 0, sdt, "r13")
            for k in range(nvl):
                code.vstore("v0", "r4", lanes * k * oi, ddt)
        else:
            for k in range(nvl):
                code.vload("v0", s_reg, lanes * k * xi, sdt)
                code.vstore("v0", "r4", lanes * k * oi, ddt)
        code.op("addi", "r4", "r4", last * oi)

    def level(k: int, parent: str) -> None:
        if k == len(outer):
            inner(parent)
            return
        p = regs[k]
        code.op("mv", p, parent)

        def body() -> None:
            level(k + 1, p)
            code.op("addi", p, p, st[k])

        code.counted(counters[k], outer[k], body)

    level(0, "r3")
