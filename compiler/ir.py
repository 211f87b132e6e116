"""The typed IR: one immutable `Node` type with an `Op` enum, and the `Graph` that orders them.

The checker (`compiler.check`) builds it, the reference evaluator (`compiler.reference`) defines
what it means, and the code generator walks `graph.nodes` front to back. Every node is one value:
its op, its operand nodes, its shape (a tuple, `()` for a 0-d result), its dtype ("f32" or
"bf16"), op attributes (`axis`, `value`), a name (the DSL name if the value is bound, else `%tN`
with N its id) and the source position (line, col) of the token that introduced it.

Op set (operands are always tensors, never bare numbers):

    input                       a declared input; no operands
    param      init=I           a declared param (weights, optimizer state): read like an input,
                                but it lives in SRAM from one run to the next; no operands.
                                `init` (an `Init`) is how it starts when no value is given
    const      value=V          a splat of V (already rounded to dtype) in the node's shape
    broadcast                   numpy broadcast_to of its operand to the node's shape (a view)
    cast                        dtype conversion; f32 -> bf16 rounds, bf16 -> f32 is exact, and a
                                cast to the same dtype is a copy (used when `y = x` names a value)
    transpose      perm=P       permute the axes: result axis k is operand axis P[k] (numpy
                                transpose); without perm, swap the two axes of a 2-D operand
    reshape                     the operand's elements in row-major order, in the node's shape
                                (same size; exact): `reshape(x, [...])`, and the unit axes of
                                `keepdims` and of the reductions over every axis
    neg abs relu                elementwise, exact
    exp tanh sigmoid sqrt       elementwise, computed in f64 and rounded to f32 (then to bf16)
    log                         elementwise, the f32 algorithm compiler.reference.log_f32
                                (then rounded to bf16)
    erf gelu                    elementwise, computed in f64 and rounded to f32 (then to bf16);
                                gelu is 0.5 x erfc(-x / sqrt(2)), the erf form
    add sub mul div             elementwise on two operands of the node's own shape and dtype
    maximum minimum             elementwise, exact
    pow                         elementwise a ** b, computed in f64 (C's pow) and rounded to f32
                                (then to bf16)
    gt ge lt le eq ne           elementwise comparison a > b, a >= b, a < b, a <= b, a == b,
                                a != b: 1 where true, else 0, in the operands' dtype (exact);
                                gt and ge are also the masks of the backward pass
    where                       where(c, a, b): a where c != 0, else b (exact). The one
                                elementwise op whose first operand, c, may have another dtype
                                than the node (it is never rounded: a NaN counts as nonzero)
    matmul                      [..., M, K] @ [..., K, N] -> f32 [..., M, N] (numpy matmul:
                                2-D to 4-D operands, batch dimensions broadcast, each product
                                [M, K] @ [K, N]); operands share a dtype; f32 sums
    slice          index=I      numpy basic indexing x[I]: I has one entry per operand axis, an
                                int (the axis is removed) or a normalised (start, stop, step),
                                step > 0, with a nonempty result (exact)
    unslice        index=I      the transpose of slice: zeros of the node's shape, with the
                                operand at the elements `slice[index=I]` reads (the gradient of
                                a slice; exact)
    concat         axis=K       the operands (at least one, one dtype) joined along axis K
    conv2d         window=W     x [N, C, H, W], w [K, C, R, S] (one dtype) -> f32 [N, K, H', W']:
                                the ONNX Conv of x padded with zeros (W: stride, pad, dilation),
                                f32 products summed in f32
    conv2d_transpose window=W   (g [N, K, H', W'], w [K, C, R, S]) -> f32 [N, C, H, W], the
                                node's shape: the transpose of conv2d with respect to x (each
                                g element times w, added where conv2d read it); its gradient
    maxpool2d      window=W     x [N, C, H, W] -> [N, C, H', W']: the largest element of each
                                window over the last two axes, padding ignored (exact)
    avgpool2d      window=W     the same windows: their f32 sum in window order, divided in f32
                                by the count (W.count_pad: of the window's elements inside the
                                padded input, else inside the input), rounded to the dtype
    im2col         window=W     x [N, C, H, W] -> [N H' W', C R S]: row (n, oh, ow) holds the
                   value=F      window of output (oh, ow), column (c, r, s) the element under
                                tap (r, s) of channel c, or F (0 or -inf) where the tap lies
                                in the padding (exact): the patches of the gradients
    col2im         window=W     its transpose: f32 [N H' W', C R S] -> the node's shape
                                [N, C, H, W], every entry added (f32) into the element it was
                                read from; padding entries dropped
    sum max mean   axis=K       reduce one axis (0 <= K < ndim), dropping it; f32 accumulation
    min            axis=K       the minimum along K, dropping it (exact)
    argmax         axis=K       the index of the first maximum along K, dropping it, as a value
                                of the operand's dtype (rounded to bf16 for a bf16 operand)
    layernorm      axis=K       (x - mean) / sqrt(var + eps) along K, eps the node's `value`;
                   value=eps    computed in f32 (mean = sum / n, var = sum((x - mean)^2) / n),
                                rounded once
    softmax        axis=K       max-subtracted softmax along K, computed in f32
    log_softmax    axis=K       x - max - log(sum(exp(x - max))) along K, computed in f32
    max_mask       axis=K       1 at the first maximal element along K, 0 elsewhere; the
                                operand's shape and dtype (exact): where a max sends its gradient
    grad                        dL/dp for operands (L, p), L 0-d; f32, p's shape. Only between
                                `check` and `differentiate` (compiler.grad), which replaces every
                                grad node by ordinary ops: no later pass ever sees one

Besides its outputs a graph has `updates`: one `Update(param, value)` per `update` statement,
the value `param` holds after the run. Every update reads the values from before the step (the
graph computes all of them, then they take effect together), and `value` has exactly the
param's shape and dtype (the checker inserts the rounding cast of an f32 value for a bf16 param).

Design rules the code generator can rely on:

* Broadcasting is explicit. Operands of elementwise ops have exactly the node's shape and dtype:
  the checker inserts `broadcast` for a smaller operand, `cast` (exact widening) for a bf16
  operand meeting an f32 one, and `const` for a number literal. `broadcast_dims` tells which
  result axes a broadcast stretches. (The condition of `where` has the node's shape but keeps
  its own dtype.)
* Rounding points are explicit. A node's result is rounded to its dtype at that node and
  nowhere else; `Node.rounds` is True exactly where an f32 result is rounded to bf16
  (round-to-nearest-even). Exact ops never round.
* `mean` and `softmax` stay single ops: lowering them to primitives would add bf16 rounding
  points that the language does not have, and a code generator can fuse them better whole.
* `graph.nodes` is in source order, which is also a topological order; inputs and params are
  nodes too. `graph.inputs` holds the input nodes and `graph.params` the param nodes, each in
  declaration order; a pass tells them apart by op (`Op.INPUT`, `Op.PARAM`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from d1isa.errors import D1Error
from d1isa.numbers import round_to  # noqa: F401 (compiler.ir.round_to is public)

DTYPES = ("f32", "bf16")
ITEMSIZE = {"f32": 4, "bf16": 2}
MAX_INPUT_DIMS = 4


class IRError(RuntimeError):
    """The IR broke an invariant: always a compiler bug, never the user's mistake."""


class Op(enum.Enum):
    INPUT = "input"
    PARAM = "param"
    CONST = "const"
    BROADCAST = "broadcast"
    CAST = "cast"
    TRANSPOSE = "transpose"
    RESHAPE = "reshape"
    NEG = "neg"
    ABS = "abs"
    RELU = "relu"
    EXP = "exp"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    SQRT = "sqrt"
    LOG = "log"
    ERF = "erf"
    GELU = "gelu"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"
    EQ = "eq"
    NE = "ne"
    POW = "pow"
    WHERE = "where"
    MATMUL = "matmul"
    SUM = "sum"
    MAX = "max"
    MEAN = "mean"
    MIN = "min"
    ARGMAX = "argmax"
    LAYERNORM = "layernorm"
    SOFTMAX = "softmax"
    LOG_SOFTMAX = "log_softmax"
    MAX_MASK = "max_mask"
    SLICE = "slice"
    UNSLICE = "unslice"
    CONCAT = "concat"
    CONV2D = "conv2d"
    CONV2D_TRANSPOSE = "conv2d_transpose"
    MAXPOOL2D = "maxpool2d"
    AVGPOOL2D = "avgpool2d"
    IM2COL = "im2col"
    COL2IM = "col2im"
    GRAD = "grad"


UNARY_OPS = frozenset({Op.NEG, Op.ABS, Op.RELU, Op.EXP, Op.TANH, Op.SIGMOID, Op.SQRT, Op.LOG,
                       Op.ERF, Op.GELU})
TRANSCENDENTAL_OPS = frozenset({Op.EXP, Op.TANH, Op.SIGMOID, Op.SQRT, Op.LOG, Op.ERF, Op.GELU,
                                Op.POW})
COMPARE_OPS = frozenset({Op.GT, Op.GE, Op.LT, Op.LE, Op.EQ, Op.NE})
BINARY_OPS = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM, Op.POW}
                       ) | COMPARE_OPS
REDUCE_OPS = frozenset({Op.SUM, Op.MAX, Op.MEAN, Op.MIN, Op.ARGMAX})
AXIS_OPS = REDUCE_OPS | {Op.SOFTMAX, Op.LOG_SOFTMAX, Op.MAX_MASK, Op.LAYERNORM}
LEAF_OPS = frozenset({Op.INPUT, Op.PARAM, Op.CONST})
# On bf16 operands these give bf16-exact results, so they never round.
EXACT_OPS = frozenset({Op.INPUT, Op.PARAM, Op.CONST, Op.BROADCAST, Op.TRANSPOSE, Op.RESHAPE,
                       Op.NEG, Op.ABS, Op.RELU, Op.MAXIMUM, Op.MINIMUM, Op.MAX,
                       Op.MAX_MASK, Op.WHERE, Op.MIN, Op.SLICE, Op.UNSLICE,
                       Op.CONCAT, Op.MAXPOOL2D, Op.IM2COL}) | COMPARE_OPS
# The data-movement ops: they only rearrange elements (compiler.gather moves them on the mesh).
SHAPE_OPS = frozenset({Op.SLICE, Op.UNSLICE, Op.CONCAT, Op.IM2COL})
# Ops that carry an `axis` attribute.
AXIS_ATTR_OPS = AXIS_OPS | {Op.CONCAT}
# The windowed ops over the last two axes of a 4-D value (`Node.window`).
WINDOW_OPS = frozenset({Op.CONV2D, Op.CONV2D_TRANSPOSE, Op.MAXPOOL2D, Op.AVGPOOL2D, Op.IM2COL,
                        Op.COL2IM})
POOL_OPS = frozenset({Op.MAXPOOL2D, Op.AVGPOOL2D})
# The kinds of `Init`, how a param starts: every element `value`; uniform in
# +-sqrt(6 / (fan_in + fan_out)) over the last two axes; normal with standard deviation `value`.
INIT_KINDS = ("const", "glorot", "normal")


# ---- dtypes -----------------------------------------------------------------------------------

def round_scalar(value: float, dtype: str) -> float:
    """A Python float rounded to `dtype` (via f32, as `round_to` does)."""
    return float(round_to(np.float64(value), dtype))


def promote(a: str, b: str) -> str:
    """The dtype of an elementwise op on `a` and `b`: f32 if either is f32."""
    return "f32" if "f32" in (a, b) else "bf16"


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy's broadcast of two shapes, or None if they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(out))


def broadcast_dims(src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of `dst` along which a broadcast from `src` repeats values (leading new axes and
    axes where `src` has extent 1)."""
    lead = len(dst) - len(src)
    return tuple(i for i in range(len(dst)) if i < lead or (src[i - lead] == 1 and dst[i] != 1))


IndexEntry = int | tuple[int, int, int]


def index_shape(shape: tuple[int, ...], index: tuple[IndexEntry, ...]) -> tuple[int, ...] | None:
    """The shape of `x[index]` for x of `shape` (index normalised: one entry per axis, an int
    in range or (start, stop, step) with 0 <= start, step > 0), or None if it does not fit."""
    if len(index) != len(shape):
        return None
    out = []
    for n, e in zip(shape, index, strict=True):
        if isinstance(e, int):
            if not 0 <= e < n:
                return None
            continue
        start, stop, step = e
        if step <= 0 or not 0 <= start < n or not start < stop <= n:
            return None
        out.append(len(range(start, stop, step)))
    return tuple(out)


def numpy_index(index: tuple[IndexEntry, ...]) -> tuple[int | slice, ...]:
    """A normalised index as numpy's basic indexing tuple."""
    return tuple(e if isinstance(e, int) else slice(*e) for e in index)


def format_index(index: tuple[IndexEntry, ...]) -> str:
    """`0, 1:3, 0:8:2`: an index as the DSL writes it (steps of 1 left out)."""
    parts = []
    for e in index:
        if isinstance(e, int):
            parts.append(str(e))
        else:
            start, stop, step = e
            parts.append(f"{start}:{stop}" + (f":{step}" if step != 1 else ""))
    return ", ".join(parts)


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy matmul's result shape for 2-D to 4-D operands (batch dimensions broadcast), or
    None if the inner dimensions or the batch dimensions do not fit."""
    if not (2 <= len(a) <= MAX_INPUT_DIMS and 2 <= len(b) <= MAX_INPUT_DIMS):
        return None
    if a[-1] != b[-2]:
        return None
    batch = broadcast_shape(a[:-2], b[:-2])
    if batch is None:
        return None
    return batch + (a[-2], b[-1])


def transpose_perm(node: Node) -> tuple[int, ...]:
    """The permutation a transpose node applies (its `perm`, or the 2-D swap)."""
    return node.perm if node.perm is not None else tuple(reversed(range(node.inputs[0].ndim)))


def format_shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_type(shape: tuple[int, ...], dtype: str) -> str:
    return f"{dtype}{format_shape(shape)}"


# ---- nodes and graphs -------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """The sliding window of conv2d, the pools, im2col and col2im, over the last two axes (H,
    W) of a 4-D value, with ONNX's meaning: `size` (R, S) taps, `stride` (h, w), `pad` (top,
    left, bottom, right) elements of padding, `dilation` (h, w) between taps. Output (oh, ow)
    reads input row oh * stride_h - top + r * dilation_h for tap row r (columns likewise).
    `ceil` rounds the output size up as ONNX `ceil_mode` does (the last window must still start
    inside the input or its top/left padding); `count_pad` makes avgpool2d count the padding
    in its divisor."""

    size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil: bool = False
    count_pad: bool = False

    def extent(self, axis: int) -> int:
        """How many input elements one window spans along axis 0 (H) or 1 (W)."""
        return (self.size[axis] - 1) * self.dilation[axis] + 1

    def out_len(self, n: int, axis: int) -> int:
        """The output length along `axis` for an input of length n (< 1: nothing fits)."""
        s = self.stride[axis]
        lo, hi = self.pad[axis], self.pad[axis + 2]
        span = n + lo + hi - self.extent(axis)
        if span < 0:
            return 0
        if not self.ceil:
            return span // s + 1
        out = -(-span // s) + 1
        if (out - 1) * s >= n + lo:
            out -= 1
        return out

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return self.out_len(h, 0), self.out_len(w, 1)

    def __str__(self) -> str:
        def two(p: tuple[int, ...]) -> str:
            return "x".join(map(str, p))
        text = (f"size={two(self.size)} stride={two(self.stride)} "
                f"pad={','.join(map(str, self.pad))} dilation={two(self.dilation)}")
        return text + (" ceil" if self.ceil else "") + (" count_pad" if self.count_pad else "")


@dataclass(frozen=True)
class Init:
    """How a param starts when no value is given for it: `kind` is one of INIT_KINDS; `value` is
    the constant (rounded to the param's dtype) or the normal's standard deviation."""

    kind: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind == "const":
            return f"{self.value:.17g}"
        return "glorot" if self.kind == "glorot" else f"normal({self.value:.17g})"


@dataclass(frozen=True, eq=False)
class Node:
    """One value. Compared by identity; `id` is its index in `Graph.nodes`."""

    id: int
    op: Op
    inputs: tuple[Node, ...]
    shape: tuple[int, ...]
    dtype: str
    name: str
    line: int = 0
    col: int = 0
    axis: int | None = None
    value: float | None = None
    init: Init | None = None
    perm: tuple[int, ...] | None = None
    index: tuple[IndexEntry, ...] | None = None
    window: Window | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]

    @property
    def rounds(self) -> bool:
        """True where this node rounds an f32 result to bf16: the language's rounding points."""
        if self.dtype != "bf16" or self.op in EXACT_OPS:
            return False
        if self.op is Op.CAST:
            return self.inputs[0].dtype == "f32"
        return True

    @property
    def attrs(self) -> dict[str, Any]:
        """The op attributes that are set, e.g. {'axis': 1}."""
        out: dict[str, Any] = {}
        if self.axis is not None:
            out["axis"] = self.axis
        if self.value is not None:
            out["value"] = self.value
        if self.init is not None:
            out["init"] = self.init
        if self.perm is not None:
            out["perm"] = self.perm
        if self.index is not None:
            out["index"] = self.index
        if self.window is not None:
            out["window"] = self.window
        return out

    def __repr__(self) -> str:
        return f"<Node {self.name} = {self.op.value} : {format_type(self.shape, self.dtype)}>"


@dataclass(frozen=True)
class Update:
    """`update NAME = EXPR`: `param` holds `value` after the run (same shape and dtype); `line`
    and `col` place the statement."""

    param: Node
    value: Node
    line: int = 0
    col: int = 0


@dataclass(frozen=True)
class Graph:
    """A checked program: inputs in declaration order, all nodes in source (topological) order,
    outputs in the order the `output` statements name them; params in declaration order and the
    updates in the order of their `update` statements.

    `grad_calls` (set by `differentiate`): the (line, col) of every `grad(L, p)` call and the
    node that holds its value, so a gradient nobody named can still be found by its spelling
    (the debugger's `tensor grad(loss, w)`).

    `constants`: the (name, value, line, col) of every name bound to a constant (`scale =
    1 / sqrt(32)`), which is folded into the code that reads it and is no node, so that the
    debugger can still say what the name is."""

    inputs: tuple[Node, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Node, ...]
    filename: str = "<string>"
    params: tuple[Node, ...] = ()
    updates: tuple[Update, ...] = ()
    grad_calls: tuple[tuple[int, int, Node], ...] = ()
    constants: tuple[tuple[str, float, int, int], ...] = ()

    def __getitem__(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def users(self) -> dict[int, list[Node]]:
        """For each node id, the nodes that read it, in order."""
        out: dict[int, list[Node]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i.id].append(n)
        return out

    @property
    def is_training(self) -> bool:
        """True if running the program changes a param (it has an `update`)."""
        return bool(self.updates)


def result_type(op: Op, inputs: tuple[Node, ...], axis: int | None = None,
                perm: tuple[int, ...] | None = None,
                index: tuple[IndexEntry, ...] | None = None,
                window: Window | None = None) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of an op whose result type follows from its operands.

    The single statement of the typing rules: the builder uses it to create nodes and `verify`
    uses it to re-check them. Raises IRError for operands the op does not accept.
    """
    def need(cond: bool, why: str) -> None:
        if not cond:
            types = ", ".join(format_type(i.shape, i.dtype) for i in inputs)
            raise IRError(f"{op.value}({types}): {why}")

    if op in UNARY_OPS:
        need(len(inputs) == 1, "needs one operand")
        return inputs[0].shape, inputs[0].dtype
    if op in BINARY_OPS:
        need(len(inputs) == 2, "needs two operands")
        a, b = inputs
        need(a.shape == b.shape and a.dtype == b.dtype, "operands differ in shape or dtype")
        return a.shape, a.dtype
    if op is Op.WHERE:
        need(len(inputs) == 3, "needs a condition and two operands")
        c, a, b = inputs
        need(c.shape == a.shape == b.shape and a.dtype == b.dtype,
             "operands differ in shape, or the two values in dtype")
        return a.shape, a.dtype
    if op is Op.MATMUL:
        need(len(inputs) == 2, "needs two operands")
        a, b = inputs
        need(2 <= a.ndim <= MAX_INPUT_DIMS and 2 <= b.ndim <= MAX_INPUT_DIMS,
             "operands must have 2 to 4 dimensions")
        shape = matmul_shape(a.shape, b.shape)
        need(shape is not None, "inner dimensions or batch dimensions differ")
        need(a.dtype == b.dtype, "operands differ in dtype")
        return shape, "f32"
    if op is Op.TRANSPOSE:
        need(len(inputs) == 1, "needs one operand")
        x = inputs[0]
        if perm is None:
            need(x.ndim == 2, "needs a 2-D operand or a perm")
            return x.shape[::-1], x.dtype
        need(sorted(perm) == list(range(x.ndim)), f"perm {perm} is not a permutation")
        return tuple(x.shape[p] for p in perm), x.dtype
    if op is Op.SLICE:
        need(len(inputs) == 1 and index is not None, "needs one operand and an index")
        shape = index_shape(inputs[0].shape, index)
        need(shape is not None, f"index {index} does not fit")
        return shape, inputs[0].dtype
    if op is Op.CONCAT:
        need(len(inputs) >= 1, "needs operands")
        x = inputs[0]
        need(axis is not None and 0 <= axis < x.ndim, f"axis {axis} out of range")
        need(all(i.dtype == x.dtype and i.ndim == x.ndim
                 and i.shape[:axis] + i.shape[axis + 1:] == x.shape[:axis] + x.shape[axis + 1:]
                 for i in inputs), "operands differ in dtype or in a dimension off the axis")
        total = sum(i.shape[axis] for i in inputs)
        return x.shape[:axis] + (total,) + x.shape[axis + 1:], x.dtype
    if op in (Op.CONV2D, Op.IM2COL) or op in POOL_OPS:
        need(len(inputs) == (2 if op is Op.CONV2D else 1), "wrong number of operands")
        x = inputs[0]
        need(x.ndim == 4 and window is not None, "needs a 4-D operand and a window")
        oh, ow = window.out_hw(x.shape[2], x.shape[3])
        need(oh >= 1 and ow >= 1, f"window {window} does not fit {format_shape(x.shape)}")
        n, c = x.shape[:2]
        if op is Op.IM2COL:
            return (n * oh * ow, c * window.size[0] * window.size[1]), x.dtype
        if op in POOL_OPS:
            return (n, c, oh, ow), x.dtype
        w = inputs[1]
        need(w.ndim == 4 and w.shape[1] == c and w.shape[2:] == window.size
             and w.dtype == x.dtype and not window.ceil and not window.count_pad,
             "weights do not fit the input or the window")
        return (n, w.shape[0], oh, ow), "f32"
    if op in AXIS_OPS:
        need(len(inputs) == 1, "needs one operand")
        x = inputs[0]
        need(axis is not None and 0 <= axis < x.ndim, f"axis {axis} out of range")
        if op in REDUCE_OPS:
            return x.shape[:axis] + x.shape[axis + 1:], x.dtype
        return x.shape, x.dtype
    if op is Op.GRAD:
        need(len(inputs) == 2, "needs a loss and a param or input")
        loss, p = inputs
        need(loss.ndim == 0, "the loss must be 0-d")
        need(p.op in (Op.PARAM, Op.INPUT), "differentiates with respect to a param or input")
        return p.shape, "f32"
    raise IRError(f"{op.value}: result type is not implied by operands")


# Ops whose result type is given when the node is made rather than implied by the operands.
EXPLICIT_TYPE_OPS = frozenset({Op.INPUT, Op.PARAM, Op.CONST, Op.BROADCAST, Op.CAST, Op.RESHAPE,
                               Op.UNSLICE, Op.CONV2D_TRANSPOSE, Op.COL2IM})


def need_graph(graph: Any, call: str) -> None:
    """A D1Error unless `graph` is a checked program (the text itself, or anything else, was
    an AttributeError from deep inside)."""
    if not isinstance(graph, Graph):
        hint = (": check the text first, with compiler.check_source(text)"
                if isinstance(graph, str) else "")
        raise D1Error(f"{call} takes a checked program (a compiler.Graph, from "
                      f"compiler.check_source), not {type(graph).__name__}{hint}")


class GraphBuilder:
    """Appends nodes in order, giving each its id and, if unnamed, a `%tN` name."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, op: Op, inputs: tuple[Node, ...] = (), *, shape: tuple[int, ...] | None = None,
            dtype: str | None = None, axis: int | None = None, value: float | None = None,
            init: Init | None = None, name: str | None = None, line: int = 0, col: int = 0,
            perm: tuple[int, ...] | None = None, index: tuple[IndexEntry, ...] | None = None,
            window: Window | None = None) -> Node:
        """A new node. `shape`/`dtype` are given for input, param, const, broadcast, cast,
        reshape, unslice, conv2d_transpose and col2im, and derived by `result_type` for every
        other op."""
        if op in EXPLICIT_TYPE_OPS:
            if shape is None or dtype is None:
                raise IRError(f"{op.value} needs an explicit shape and dtype")
            if op in (Op.RESHAPE, Op.UNSLICE, Op.COL2IM) and inputs:
                dtype = inputs[0].dtype
            if op is Op.CONV2D_TRANSPOSE:
                dtype = "f32"
        else:
            shape, dtype = result_type(op, inputs, axis, perm, index, window)
        nid = len(self.nodes)
        node = Node(nid, op, tuple(inputs), tuple(shape), dtype, name or f"%t{nid}", line, col,
                    axis, value, init, perm, index, window)
        self.nodes.append(node)
        return node

    def rename(self, node: Node, name: str) -> Node:
        """Give the newest node a DSL name; only it can be renamed, since nothing reads it yet."""
        if not self.nodes or self.nodes[-1] is not node:
            raise IRError(f"only the newest node can be renamed, not {node.name}")
        named = replace(node, name=name)
        self.nodes[-1] = named
        return named

    def finish(self, outputs: Iterable[Node], filename: str = "<string>",
               updates: Iterable[Update] = ()) -> Graph:
        inputs = tuple(n for n in self.nodes if n.op is Op.INPUT)
        params = tuple(n for n in self.nodes if n.op is Op.PARAM)
        return Graph(inputs, tuple(self.nodes), tuple(outputs), filename, params,
                     tuple(updates))


# ---- verification -----------------------------------------------------------------------------

def verify(graph: Graph) -> None:
    """Check the invariants the rest of the compiler relies on; raise IRError if one is broken."""
    need_graph(graph, "verify")
    names: set[str] = set()
    for index, node in enumerate(graph.nodes):
        where = f"node {index} ({node.name})"
        if node.id != index:
            raise IRError(f"{where}: id {node.id} is not its position")
        if node.name in names:
            raise IRError(f"{where}: name {node.name!r} is used twice")
        names.add(node.name)
        if node.dtype not in DTYPES:
            raise IRError(f"{where}: unknown dtype {node.dtype!r}")
        if not all(isinstance(d, int) and d >= 1 for d in node.shape):
            raise IRError(f"{where}: bad shape {node.shape!r}")
        for operand in node.inputs:
            if operand.id >= index or graph.nodes[operand.id] is not operand:
                raise IRError(f"{where}: operand {operand.name} is not an earlier node")
        _verify_types(node, where)
    declared = tuple(n for n in graph.nodes if n.op is Op.INPUT)
    if graph.inputs != declared:
        raise IRError("graph.inputs are not the input nodes in declaration order")
    if graph.params != tuple(n for n in graph.nodes if n.op is Op.PARAM):
        raise IRError("graph.params are not the param nodes in declaration order")
    seen: set[int] = set()
    for out in graph.outputs:
        if not _in_graph(graph, out):
            raise IRError(f"output {out.name} is not a node of the graph")
        if out.id in seen or out.name.startswith("%"):
            raise IRError(f"output {out.name} is repeated or unnamed")
        seen.add(out.id)
    updated: set[int] = set()
    for u in graph.updates:
        if not (_in_graph(graph, u.param) and _in_graph(graph, u.value)):
            raise IRError(f"update of {u.param.name}: not a node of the graph")
        if u.param.op is not Op.PARAM or u.param.id in updated:
            raise IRError(f"update of {u.param.name}: not a param, or updated twice")
        if (u.value.shape, u.value.dtype) != (u.param.shape, u.param.dtype):
            raise IRError(f"update of {u.param.name}: value {u.value.name} is "
                          f"{format_type(u.value.shape, u.value.dtype)}, not "
                          f"{format_type(u.param.shape, u.param.dtype)}")
        updated.add(u.param.id)
    for line, col, node in graph.grad_calls:
        if not _in_graph(graph, node):
            raise IRError(f"grad call at {line}:{col}: {node.name} is not a node of the graph")


def _in_graph(graph: Graph, node: Node) -> bool:
    return node.id < len(graph.nodes) and graph.nodes[node.id] is node


def _verify_types(node: Node, where: str) -> None:
    op, ins = node.op, node.inputs
    if (node.init is not None) != (op is Op.PARAM):
        raise IRError(f"{where}: an init belongs to a param, not to {op.value}")
    if op in (Op.INPUT, Op.PARAM):
        ok = not ins and 1 <= node.ndim <= MAX_INPUT_DIMS
        if op is Op.PARAM and node.init.kind not in INIT_KINDS:
            raise IRError(f"{where}: unknown init {node.init.kind!r}")
    elif op is Op.CONST:
        ok = (not ins and node.value is not None
              and _same_float(round_scalar(node.value, node.dtype), node.value))
    elif op is Op.BROADCAST:
        ok = (len(ins) == 1 and ins[0].dtype == node.dtype and ins[0].shape != node.shape
              and broadcast_shape(ins[0].shape, node.shape) == node.shape)
    elif op is Op.CAST:
        ok = len(ins) == 1 and ins[0].shape == node.shape
    elif op is Op.RESHAPE:
        ok = (len(ins) == 1 and ins[0].dtype == node.dtype
              and math.prod(ins[0].shape) == math.prod(node.shape))
    elif op is Op.UNSLICE:
        ok = (len(ins) == 1 and ins[0].dtype == node.dtype and node.index is not None
              and index_shape(node.shape, node.index) == ins[0].shape)
    elif op in (Op.CONV2D_TRANSPOSE, Op.COL2IM):
        ok = node.window is not None and node.ndim == 4
        if ok:
            # The shape this op gives back is the one the forward window was applied to.
            n, c, h, w = node.shape
            oh, ow = node.window.out_hw(h, w)
            R, S = node.window.size
            if op is Op.COL2IM:
                ok = (len(ins) == 1 and node.dtype == ins[0].dtype == "f32" and oh >= 1
                      and ow >= 1
                      and ins[0].shape == (n * oh * ow, c * R * S))
            else:
                g, wt = ins if len(ins) == 2 else (None, None)
                ok = (g is not None and node.dtype == "f32" and g.dtype == wt.dtype
                      and g.shape == (n, wt.shape[0], oh, ow) and wt.shape[1:] == (c, R, S)
                      and not node.window.ceil)
    else:
        try:
            shape, dtype = result_type(op, ins, node.axis, node.perm, node.index, node.window)
        except IRError as e:
            raise IRError(f"{where}: {e}") from None
        ok = (shape, dtype) == (node.shape, node.dtype)
    if not ok:
        raise IRError(f"{where}: {op.value} with operands "
                      f"{[format_type(i.shape, i.dtype) for i in ins]} cannot give "
                      f"{format_type(node.shape, node.dtype)}")
    if (node.axis is not None) != (op in AXIS_ATTR_OPS):
        raise IRError(f"{where}: axis attribute on {op.value}")
    if op is Op.LAYERNORM and not (node.value is not None and math.isfinite(node.value)
                                   and node.value >= 0):
        raise IRError(f"{where}: layernorm needs a finite eps >= 0, not {node.value!r}")
    if node.perm is not None and op is not Op.TRANSPOSE:
        raise IRError(f"{where}: perm attribute on {op.value}")
    if (node.index is not None) != (op in (Op.SLICE, Op.UNSLICE)):
        raise IRError(f"{where}: index attribute on {op.value}")
    if (node.window is not None) != (op in WINDOW_OPS):
        raise IRError(f"{where}: window attribute on {op.value}")
    if op is Op.IM2COL and node.value not in (0.0, -math.inf):
        raise IRError(f"{where}: im2col fills its padding with 0 or -inf, not {node.value}")


def _same_float(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


# ---- printing ---------------------------------------------------------------------------------

def format_node(node: Node) -> tuple[str, str, str, str]:
    """(name, type, right-hand side, position) of one node, for `format_ir`."""
    attrs = ""
    if node.axis is not None and node.value is not None:
        attrs = f"[axis={node.axis}, eps={node.value!r}]"
    elif node.axis is not None:
        attrs = f"[axis={node.axis}]"
    elif node.window is not None:
        fill = f" fill={node.value:g}" if node.op is Op.IM2COL and node.value else ""
        attrs = f"[{node.window}{fill}]"
    elif node.value is not None:
        attrs = f" {node.value!r}"
    elif node.init is not None:
        attrs = f"[init={node.init}]"
    elif node.perm is not None:
        attrs = f"[perm={list(node.perm)}]"
    elif node.index is not None:
        attrs = f"[{format_index(node.index)}]"
    rhs = node.op.value + attrs
    if node.inputs:
        rhs += " " + ", ".join(i.name for i in node.inputs)
    if node.rounds:
        rhs += "  ; rounds to bf16"
    return node.name, format_type(node.shape, node.dtype), rhs, f"{node.line}:{node.col}"


def _count(items: tuple[Node, ...], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def format_ir(graph: Graph) -> str:
    """A readable listing, one node a line (what `d1 compile --emit ir` prints)."""
    need_graph(graph, "format_ir")
    rows = [format_node(n) for n in graph.nodes]
    wn = max((len(r[0]) for r in rows), default=0)
    wt = max((len(r[1]) for r in rows), default=0)
    wr = max((len(r[2]) for r in rows), default=0)
    params = f"{_count(graph.params, 'param')}, " if graph.params else ""
    updates = f", {_count(graph.updates, 'update')}" if graph.updates else ""
    lines = [f"# {graph.filename}: {_count(graph.inputs, 'input')}, {params}"
             f"{_count(graph.nodes, 'node')}, {_count(graph.outputs, 'output')}{updates}"]
    for name, typ, rhs, pos in rows:
        lines.append(f"{name:<{wn}} : {typ:<{wt}} = {rhs:<{wr}}  @ {pos}")
    if graph.outputs or not graph.updates:
        lines.append("output " + ", ".join(o.name for o in graph.outputs))
    for u in graph.updates:
        lines.append(f"update {u.param.name} = {u.value.name}")
    return "\n".join(lines)
