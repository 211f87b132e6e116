"""Reverse mode: `differentiate` rewrites every `grad` node of the checked IR into ordinary IR.

The checker turns `grad(L, p)` into a `grad` node. This pass replaces each one by the backward
pass that computes dL/dp, made of the same ops as the forward pass (a transpose and a matmul for
a matmul, sums over the broadcast axes for a broadcast, ...), so later passes, the reference
evaluator and the code generator see no new kind of node, only a few new ops (see RULES).

The backward pass of a loss L is built once, at its first `grad` node, for every p that some
`grad(L, p)` asks for: several grad calls of the same L share one pass. It walks the nodes L
depends on in reverse topological order, and for each node that lies between L and one of the
p's it applies that op's rule from RULES: "given the gradient g of this node's result, the
gradients of its operands". Contributions to an operand that is read several times are added.

Gradient numerics (docs/DSL.md, "Gradients"):

* The backward pass is f32 whatever the forward dtypes: bf16 forward values a rule needs are
  widened (exactly) to f32 first, and every gradient is f32.
* A rounding to bf16 has derivative 1 (straight-through): a cast passes g on unchanged.
* At a kink: relu and abs have derivative 0 at 0; maximum(a, b) and minimum(a, b) send the
  whole gradient to a on a tie; a max (min) reduction sends it to the first maximal (minimal)
  element; where(c, a, b) sends it to a where c != 0, else to b. Comparisons and argmax are
  piecewise constant: derivative 0.
* a ** b: d/da = b a^(b-1), taken as 0 where b == 0; d/db = y log(a), taken as 0 where a == 0
  and b >= 0 (PyTorch's conventions; elsewhere a negative a gives NaN, as the real log does).
* A broadcast's gradient is the sum over the axes it stretched (numpy's convention).
* Rules that need an op's result (exp, tanh, sigmoid, sqrt, softmax) read the forward value.

Nodes a rule creates that no gradient ends up needing (the gradient of an input nobody asked
about, say) are dropped at the end, so the IR holds exactly the backward pass asked for. Every
new node carries the position of the first `grad(L, ...)` call of its pass. Splats are folded
where that is exact (the gradient of `sum(x)` is a splat of 1, not a chain of broadcasts), and
the backward IR keeps the checker's invariant that splats and broadcasts are read in place by
elementwise ops only: any other op reads a stored copy (`Backward.stored`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from compiler.ir import (
    BINARY_OPS,
    LEAF_OPS,
    UNARY_OPS,
    Graph,
    GraphBuilder,
    IRError,
    Node,
    Op,
    Window,
    broadcast_dims,
    format_type,
    need_graph,
    result_type,
    round_scalar,
    transpose_perm,
)


class Backward:
    """Emits the f32 ops of one backward pass at one source position."""

    def __init__(self, builder: GraphBuilder, line: int, col: int) -> None:
        self.builder = builder
        self.line, self.col = line, col
        self.widened: dict[int, Node] = {}
        self.copies: dict[int, Node] = {}

    def op(self, op: Op, *xs: Node, axis: int | None = None,
           perm: tuple[int, ...] | None = None, index: tuple | None = None,
           window: Window | None = None) -> Node:
        """A new node, except where constants make it trivial: arithmetic on splats is folded
        (in f64, rounded once to f32, which for + - * / is the f32 result itself; a sum of a
        splat is the splat times the count, a mean or max of one is the splat), and a product
        with a splat of 1 is its other operand."""
        if all(x.op is Op.CONST for x in xs):
            c = [np.float64(x.value) for x in xs]
            folded = None
            with np.errstate(all="ignore"):
                if op in _FOLD:
                    folded = _FOLD[op](*c)
                elif op in (Op.SUM, Op.MEAN, Op.MAX, Op.TRANSPOSE, Op.SLICE):
                    folded = c[0] * xs[0].shape[axis] if op is Op.SUM else c[0]
                elif op is Op.CONCAT and len(set(c)) == 1:
                    folded = c[0]
            if folded is not None:
                shape, _ = result_type(op, xs, axis, perm, index, window)
                return self.const(float(folded), shape)
        if op is Op.MUL:
            for one, other in ((xs[0], xs[1]), (xs[1], xs[0])):
                if one.op is Op.CONST and one.value == 1.0:
                    return other
        if op not in READS_IN_PLACE:
            xs = tuple(self.stored(x) for x in xs)
        return self.builder.add(op, xs, axis=axis, perm=perm, index=index, window=window,
                                line=self.line, col=self.col)

    def windowed(self, op: Op, xs: tuple[Node, ...], window: Window,
                 shape: tuple[int, ...] | None = None, fill: float | None = None) -> Node:
        """A conv2d, conv2d_transpose (of `shape`), im2col (filling its padding with `fill`)
        or col2im (back to `shape`) node over stored operands."""
        return self.builder.add(op, tuple(self.stored(x) for x in xs), shape=shape,
                                dtype="f32" if shape is not None else None, window=window,
                                value=fill, line=self.line, col=self.col)

    def stored(self, x: Node) -> Node:
        """x as a value of its own. A splat or a broadcast is only ever read in place by an
        elementwise op (the back end never stores one), so before any other op reads one, it
        is copied (an exact f32 cast), once per pass."""
        if x.op not in (Op.CONST, Op.BROADCAST):
            return x
        if x.id not in self.copies:
            self.copies[x.id] = self.builder.add(Op.CAST, (x,), shape=x.shape, dtype=x.dtype,
                                                 line=self.line, col=self.col)
        return self.copies[x.id]

    def f32(self, x: Node) -> Node:
        """A forward value as f32 (exact: bf16 widens without rounding); one cast per value."""
        if x.dtype == "f32":
            return x
        if x.id not in self.widened:
            self.widened[x.id] = self.builder.add(Op.CAST, (x,), shape=x.shape, dtype="f32",
                                                  line=self.line, col=self.col)
        return self.widened[x.id]

    def const(self, v: float, shape: tuple[int, ...]) -> Node:
        return self.builder.add(Op.CONST, shape=shape, dtype="f32",
                                value=round_scalar(v, "f32"), line=self.line, col=self.col)

    def add(self, a: Node, b: Node) -> Node:
        return self.op(Op.ADD, a, b)

    def sub(self, a: Node, b: Node) -> Node:
        return self.op(Op.SUB, a, b)

    def mul(self, a: Node, b: Node) -> Node:
        return self.op(Op.MUL, a, b)

    def div(self, a: Node, b: Node) -> Node:
        return self.op(Op.DIV, a, b)

    def neg(self, a: Node) -> Node:
        return self.op(Op.NEG, a)

    def scale(self, a: Node, v: float) -> Node:
        return self.mul(a, self.const(v, a.shape))

    def rsub(self, v: float, a: Node) -> Node:
        """v - a for a number v."""
        return self.sub(self.const(v, a.shape), a)

    def mask(self, op: Op, a: Node, b: Node | float) -> Node:
        """1.0 where `a op b` (op GT or GE), else 0.0, on f32 operands."""
        a = self.f32(a)
        b = self.const(b, a.shape) if isinstance(b, float) else self.f32(b)
        return self.op(op, a, b)

    def select(self, c: Node, a: Node, b: Node) -> Node:
        """where(c, a, b); a splat condition picks one side at build time."""
        if c.op is Op.CONST:
            return a if c.value != 0 else b
        return self.op(Op.WHERE, c, a, b)

    def reshape(self, x: Node, shape: tuple[int, ...]) -> Node:
        if x.shape == shape:
            return x
        if x.op is Op.CONST:
            return self.const(x.value, shape)
        return self.builder.add(Op.RESHAPE, (self.stored(x),), shape=shape, dtype=x.dtype,
                                line=self.line, col=self.col)

    def broadcast(self, x: Node, shape: tuple[int, ...]) -> Node:
        """x broadcast to `shape`: a splat stays a splat, and a broadcast of a broadcast is one
        broadcast of the original (broadcasting is transitive)."""
        if x.shape == shape:
            return x
        if x.op is Op.CONST:
            return self.const(x.value, shape)
        if x.op is Op.BROADCAST:
            x = x.inputs[0]
        return self.builder.add(Op.BROADCAST, (x,), shape=shape, dtype=x.dtype,
                                line=self.line, col=self.col)

    def sum_to(self, g: Node, shape: tuple[int, ...]) -> Node:
        """The transpose of broadcasting `shape` to g's shape: sum g over the stretched axes
        (last first, so the remaining axis numbers stay valid) and restore the unit axes."""
        for axis in reversed(broadcast_dims(shape, g.shape)):
            g = self.op(Op.SUM, g, axis=axis)
        return self.reshape(g, shape)

    def unreduce(self, g: Node, shape: tuple[int, ...], axis: int) -> Node:
        """The gradient of a reduction along `axis` spread back over `shape`: the reduced axis
        comes back with length 1 (a leading one is restored by broadcasting alone)."""
        if axis != 0:
            g = self.reshape(g, shape[:axis] + (1,) + shape[axis + 1:])
        return self.broadcast(g, shape)


# Ops that read a splat or broadcast operand in place, as the checker's IR always has them.
READS_IN_PLACE = UNARY_OPS | BINARY_OPS | {Op.CAST, Op.WHERE}

_FOLD: dict[Op, Callable[..., Any]] = {
    Op.NEG: lambda a: -a, Op.ADD: lambda a, b: a + b, Op.SUB: lambda a, b: a - b,
    Op.MUL: lambda a, b: a * b, Op.DIV: lambda a, b: a / b, Op.POW: np.power,
    Op.EQ: lambda a, b: float(a == b), Op.GE: lambda a, b: float(a >= b),
}


# ---- the rules --------------------------------------------------------------------------------
# RULES[op](b, node, g): the gradients of node's operands (None: none flows there), given the f32
# gradient g of its result. `b` emits the ops. Each rule is the whole story of its op.

Rule = Callable[[Backward, Node, Node], tuple[Node | None, ...]]


def _x(n: Node, b: Backward) -> Node:
    """The operand of a unary op, in f32."""
    return b.f32(n.inputs[0])


def _abs(b: Backward, n: Node, g: Node) -> tuple[Node]:
    # sign(x), which is 0 at 0
    return (b.mul(g, b.sub(b.mask(Op.GT, n.inputs[0], 0.0),
                           b.op(Op.GT, b.const(0.0, n.shape), _x(n, b)))),)


def _div(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    x, y = (b.f32(i) for i in n.inputs)
    da = b.div(g, y)
    return da, b.neg(b.div(b.mul(da, x), y))     # d(x/y)/dy = -x/y^2


def _matmul(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    x, y = (b.f32(i) for i in n.inputs)
    return (b.op(Op.MATMUL, g, b.op(Op.TRANSPOSE, y)),
            b.op(Op.MATMUL, b.op(Op.TRANSPOSE, x), g))


def _swap_last(b: Backward, x: Node) -> Node:
    """x with its last two axes swapped (the plain transpose of a 2-D value)."""
    if x.ndim == 2:
        return b.op(Op.TRANSPOSE, x)
    return b.op(Op.TRANSPOSE, x, perm=tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def _batched_matmul(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    """A @ B with 3-D or 4-D operands: g @ B^T and A^T @ g (last two axes swapped), each
    summed over the batch axes its operand was broadcast along. A 2-D B (the same matrix for
    every batch entry) gets its gradient as one 2-D product over all rows of A and g."""
    x, y = (b.f32(i) for i in n.inputs)
    da = b.sum_to(b.op(Op.MATMUL, g, _swap_last(b, y)), x.shape)
    if y.ndim == 2:
        rows_x = b.reshape(x, (x.size // x.shape[-1], x.shape[-1]))
        rows_g = b.reshape(g, (g.size // g.shape[-1], g.shape[-1]))
        return da, b.op(Op.MATMUL, b.op(Op.TRANSPOSE, rows_x), rows_g)
    return da, b.sum_to(b.op(Op.MATMUL, _swap_last(b, x), g), y.shape)


def _transpose(b: Backward, n: Node, g: Node) -> tuple[Node]:
    """The inverse permutation of g."""
    if n.perm is None:
        return (b.op(Op.TRANSPOSE, g),)
    perm = transpose_perm(n)
    inverse = tuple(perm.index(k) for k in range(len(perm)))
    return (b.op(Op.TRANSPOSE, g, perm=inverse),)


def _slice(b: Backward, n: Node, g: Node) -> tuple[Node]:
    """g put back where the slice read, zeros elsewhere."""
    x = n.inputs[0]
    return (b.builder.add(Op.UNSLICE, (b.stored(g),), shape=x.shape, dtype="f32",
                          index=n.index, line=b.line, col=b.col),)


def _concat(b: Backward, n: Node, g: Node) -> tuple[Node, ...]:
    """Each operand's part of g along the axis."""
    out = []
    start = 0
    for x in n.inputs:
        stop = start + x.shape[n.axis]
        index = tuple((0, d, 1) if k != n.axis else (start, stop, 1)
                      for k, d in enumerate(g.shape))
        out.append(b.op(Op.SLICE, g, index=index))
        start = stop
    return tuple(out)


def _sum(b: Backward, n: Node, g: Node) -> tuple[Node]:
    return (b.unreduce(g, n.inputs[0].shape, n.axis),)


def _mean(b: Backward, n: Node, g: Node) -> tuple[Node]:
    x = n.inputs[0]
    return (b.unreduce(b.div(g, b.const(x.shape[n.axis], g.shape)), x.shape, n.axis),)


def _max(b: Backward, n: Node, g: Node) -> tuple[Node]:
    x = _x(n, b)
    return (b.mul(b.unreduce(g, x.shape, n.axis), b.op(Op.MAX_MASK, x, axis=n.axis)),)


def _softmax(b: Backward, n: Node, g: Node) -> tuple[Node]:
    y = b.f32(n)
    dot = b.op(Op.SUM, b.mul(g, y), axis=n.axis)
    return (b.mul(y, b.sub(g, b.unreduce(dot, y.shape, n.axis))),)


def _log_softmax(b: Backward, n: Node, g: Node) -> tuple[Node]:
    s = b.op(Op.SOFTMAX, _x(n, b), axis=n.axis)
    total = b.op(Op.SUM, g, axis=n.axis)
    return (b.sub(g, b.mul(s, b.unreduce(total, s.shape, n.axis))),)


def _min(b: Backward, n: Node, g: Node) -> tuple[Node]:
    # the first minimal element of x is the first maximal element of -x
    x = _x(n, b)
    return (b.mul(b.unreduce(g, x.shape, n.axis), b.op(Op.MAX_MASK, b.neg(x), axis=n.axis)),)


def _where(b: Backward, n: Node, g: Node) -> tuple[None, Node, Node]:
    c = n.inputs[0]
    zero = b.const(0.0, g.shape)
    return None, b.select(c, g, zero), b.select(c, zero, g)


def _pow(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    # a literal operand stays a splat, so that its tests fold (x ** 2: no where, no log)
    x, e = (b.const(i.value, i.shape) if i.op is Op.CONST else b.f32(i) for i in n.inputs)
    zero = b.const(0.0, g.shape)
    e1 = b.sub(e, b.const(1.0, e.shape))
    power = x if e1.op is Op.CONST and e1.value == 1.0 else b.op(Op.POW, x, e1)  # x ** 2
    dx = b.select(b.op(Op.EQ, e, zero), zero, b.mul(e, power))
    at_zero = b.mul(b.op(Op.EQ, x, zero), b.op(Op.GE, e, zero))
    de = b.select(at_zero, zero, b.mul(b.f32(n), b.op(Op.LOG, x)))
    return b.mul(g, dx), b.mul(g, de)


def _erf(b: Backward, n: Node, g: Node) -> tuple[Node]:
    x = _x(n, b)        # d erf(x) = 2 / sqrt(pi) exp(-x^2)
    return (b.mul(g, b.scale(b.op(Op.EXP, b.neg(b.mul(x, x))), 2.0 / math.sqrt(math.pi))),)


def _gelu(b: Backward, n: Node, g: Node) -> tuple[Node]:
    # d gelu(x) = Phi(x) + x phi(x): Phi(x) = (1 + erf(x / sqrt(2))) / 2,
    # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    x = _x(n, b)
    cdf = b.scale(b.add(b.const(1.0, x.shape), b.op(Op.ERF, b.scale(x, math.sqrt(0.5)))), 0.5)
    pdf = b.scale(b.op(Op.EXP, b.scale(b.mul(x, x), -0.5)), 1.0 / math.sqrt(2.0 * math.pi))
    return (b.mul(g, b.add(cdf, b.mul(x, pdf))),)


def _layernorm(b: Backward, n: Node, g: Node) -> tuple[Node]:
    # y = d / s with d = x - mean(x), s = sqrt(var + eps):
    # dx = (g - mean(g) - y mean(g y)) / s, all means along the axis (y recomputed in f32)
    x, k = _x(n, b), n.axis
    d = b.sub(x, b.unreduce(b.op(Op.MEAN, x, axis=k), x.shape, k))
    var = b.op(Op.MEAN, b.mul(d, d), axis=k)
    eps = b.const(round_scalar(n.value, "f32"), var.shape)
    s = b.unreduce(b.op(Op.SQRT, b.add(var, eps)), x.shape, k)
    y = b.div(d, s)
    gm = b.unreduce(b.op(Op.MEAN, g, axis=k), x.shape, k)
    gym = b.unreduce(b.op(Op.MEAN, b.mul(g, y), axis=k), x.shape, k)
    return (b.div(b.sub(b.sub(g, gm), b.mul(y, gym)), s),)
# ---- windows: conv2d, the pools, im2col, col2im ------------------------------------------------
# conv2d is (patches of x) @ (w as a [K, C R S] matrix); its transpose with respect to x is
# conv2d_transpose, the patches' transpose is col2im, so the four ops are each other's
# gradients and no rule needs a new op.

def _channels_first(b: Backward, g: Node) -> Node:
    """g [N, K, H', W'] as the matrix [K, N H' W'] (rows: output channels)."""
    n, k, oh, ow = g.shape
    return b.reshape(b.op(Op.TRANSPOSE, g, perm=(1, 0, 2, 3)), (k, n * oh * ow))


def _filter_grad(b: Backward, g: Node, x: Node, w: Node, win: Window) -> Node:
    """The gradient of the weights of conv2d(x, w): (g as [K, N H' W']) @ patches(x)."""
    cols = b.windowed(Op.IM2COL, (x,), win, fill=0.0)
    return b.reshape(b.op(Op.MATMUL, _channels_first(b, g), cols), w.shape)


def _conv2d(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    x, w = (b.f32(i) for i in n.inputs)
    return (b.windowed(Op.CONV2D_TRANSPOSE, (g, w), n.window, shape=x.shape),
            _filter_grad(b, g, x, w, n.window))


def _conv2d_transpose(b: Backward, n: Node, g: Node) -> tuple[Node, Node]:
    """conv2d_transpose(y, w) is linear in both: conv2d of g gives y's gradient, and w's is
    the filter gradient with y in g's place and g in x's."""
    y, w = (b.f32(i) for i in n.inputs)
    return (b.windowed(Op.CONV2D, (g, w), n.window), _filter_grad(b, y, g, w, n.window))


def _by_window(b: Backward, n: Node, per_window: Node, x: Node, mask: Node | None) -> Node:
    """A pool's gradient: each window's value (`per_window`, of the pool's result shape)
    spread over its taps (times `mask`, [windows, taps], if given), summed back into x."""
    nb, c, h, w = x.shape
    win = n.window
    rows = per_window.size
    taps = win.size[0] * win.size[1]
    spread = b.broadcast(b.reshape(per_window, (rows, 1)), (rows, taps))
    if mask is not None:
        spread = b.mul(spread, mask)
    back = b.windowed(Op.COL2IM, (spread,), win, shape=(nb * c, 1, h, w))
    return b.reshape(back, x.shape)


def _maxpool2d(b: Backward, n: Node, g: Node) -> tuple[Node]:
    """g goes to the first largest element of each window (window order; padding is -inf)."""
    x = _x(n, b)
    nb, c, h, w = x.shape
    taps = b.windowed(Op.IM2COL, (b.reshape(x, (nb * c, 1, h, w)),), n.window, fill=-math.inf)
    return (_by_window(b, n, g, x, b.op(Op.MAX_MASK, taps, axis=1)),)


def _window_counts(b: Backward, win: Window, h: int, w: int) -> Node:
    """avgpool2d's divisors as an f32 [H', W'] value: how many taps of each window lie inside
    the input (count_pad: inside the padded input), counted on the mesh as the row sums of the
    patches of ones (the padded input's ones, and the overhang of ceil as padding)."""
    oh, ow = win.out_hw(h, w)
    R, S = win.size
    if win.count_pad:
        extra = [max(0, (o - 1) * win.stride[a] + win.extent(a) - (n + win.pad[a]
                                                                    + win.pad[a + 2]))
                 for a, (o, n) in enumerate(((oh, h), (ow, w)))]
        if extra == [0, 0]:
            return b.const(float(R * S), (oh, ow))
        h, w = h + win.pad[0] + win.pad[2], w + win.pad[1] + win.pad[3]
        win = Window(win.size, win.stride, (0, 0, extra[0], extra[1]), win.dilation)
    elif win.pad == (0, 0, 0, 0) and (oh - 1) * win.stride[0] + win.extent(0) <= h and \
            (ow - 1) * win.stride[1] + win.extent(1) <= w:
        return b.const(float(R * S), (oh, ow))
    ones = b.const(1.0, (1, 1, h, w))
    cols = b.windowed(Op.IM2COL, (ones,), win, fill=0.0)
    return b.reshape(b.op(Op.SUM, cols, axis=1), (oh, ow))


def _avgpool2d(b: Backward, n: Node, g: Node) -> tuple[Node]:
    """Each window's g divided by its count, to every tap inside the input."""
    x = n.inputs[0]
    counts = _window_counts(b, n.window, *x.shape[2:])
    return (_by_window(b, n, b.div(g, b.broadcast(counts, g.shape)), x, None),)


def _im2col(b: Backward, n: Node, g: Node) -> tuple[Node]:
    return (b.windowed(Op.COL2IM, (g,), n.window, shape=n.inputs[0].shape),)


def _no_gradient(b: Backward, n: Node, g: Node) -> tuple[None, ...]:
    """Piecewise-constant ops (the masks): derivative 0 almost everywhere."""
    return (None,) * len(n.inputs)


RULES: dict[Op, Rule] = {
    Op.CAST: lambda b, n, g: (g,),       # widening is exact; rounding is straight-through
    Op.RESHAPE: lambda b, n, g: (b.reshape(g, n.inputs[0].shape),),
    Op.BROADCAST: lambda b, n, g: (b.sum_to(g, n.inputs[0].shape),),
    Op.TRANSPOSE: _transpose,
    Op.NEG: lambda b, n, g: (b.neg(g),),
    Op.ABS: _abs,
    Op.RELU: lambda b, n, g: (b.mul(g, b.mask(Op.GT, n.inputs[0], 0.0)),),
    Op.EXP: lambda b, n, g: (b.mul(g, b.f32(n)),),
    Op.LOG: lambda b, n, g: (b.div(g, _x(n, b)),),
    Op.TANH: lambda b, n, g: (b.mul(g, b.rsub(1.0, b.mul(b.f32(n), b.f32(n)))),),
    Op.SIGMOID: lambda b, n, g: (b.mul(b.mul(g, b.f32(n)), b.rsub(1.0, b.f32(n))),),
    Op.SQRT: lambda b, n, g: (b.div(g, b.scale(b.f32(n), 2.0)),),
    Op.ADD: lambda b, n, g: (g, g),
    Op.SUB: lambda b, n, g: (g, b.neg(g)),
    Op.MUL: lambda b, n, g: (b.mul(g, b.f32(n.inputs[1])), b.mul(g, b.f32(n.inputs[0]))),
    Op.DIV: _div,
    Op.MAXIMUM: lambda b, n, g: (b.mul(g, b.mask(Op.GE, *n.inputs)),       # a >= b: a wins
                                 b.mul(g, b.mask(Op.GT, n.inputs[1], n.inputs[0]))),
    Op.MINIMUM: lambda b, n, g: (b.mul(g, b.mask(Op.GE, n.inputs[1], n.inputs[0])),
                                 b.mul(g, b.mask(Op.GT, *n.inputs))),     # a <= b: a wins
    Op.MATMUL: lambda b, n, g: (_matmul(b, n, g) if n.ndim == 2 and n.inputs[0].ndim == 2
                                and n.inputs[1].ndim == 2 else _batched_matmul(b, n, g)),
    Op.SUM: _sum,
    Op.MEAN: _mean,
    Op.MAX: _max,
    Op.SOFTMAX: _softmax,
    Op.LOG_SOFTMAX: _log_softmax,
    Op.MIN: _min,
    Op.WHERE: _where,
    Op.POW: _pow,
    Op.ERF: _erf,
    Op.GELU: _gelu,
    Op.LAYERNORM: _layernorm,
    Op.GT: _no_gradient,
    Op.GE: _no_gradient,
    Op.LT: _no_gradient,
    Op.LE: _no_gradient,
    Op.EQ: _no_gradient,
    Op.NE: _no_gradient,
    Op.ARGMAX: _no_gradient,
    Op.MAX_MASK: _no_gradient,
    Op.SLICE: _slice,
    Op.UNSLICE: lambda b, n, g: (b.op(Op.SLICE, g, index=n.index),),
    Op.CONCAT: _concat,
    Op.CONV2D: _conv2d,
    Op.CONV2D_TRANSPOSE: _conv2d_transpose,
    Op.MAXPOOL2D: _maxpool2d,
    Op.AVGPOOL2D: _avgpool2d,
    Op.IM2COL: _im2col,
    Op.COL2IM: lambda b, n, g: (b.windowed(Op.IM2COL, (g,), n.window, fill=0.0),),
}


# ---- the pass ---------------------------------------------------------------------------------

def differentiate(graph: Graph) -> Graph:
    """`graph` with every grad node replaced by ordinary ops (the graph itself if it has none)."""
    need_graph(graph, "differentiate")
    grads = [n for n in graph.nodes if n.op is Op.GRAD]
    if not grads:
        return graph
    builder = GraphBuilder()
    new: dict[int, Node] = {}                  # old node id -> its node in the new graph
    adjoint: dict[tuple[int, int], Node] = {}  # (new loss id, new p id) -> dL/dp
    forward: set[int] = set()                  # new ids of copied (not backward) nodes
    roots: set[int] = set()                    # backward nodes that must stay
    renames: dict[int, str] = {}
    calls: list[tuple[int, int, Node]] = []    # each grad call's position and its value
    stored = {o.id for o in graph.outputs} | {u.value.id for u in graph.updates}
    for node in graph.nodes:
        if node.op is not Op.GRAD:
            copy = builder.add(node.op, tuple(new[i.id] for i in node.inputs), shape=node.shape,
                               dtype=node.dtype, axis=node.axis, value=node.value,
                               init=node.init, name=node.name, line=node.line, col=node.col,
                               perm=node.perm, index=node.index, window=node.window)
            new[node.id] = copy
            forward.add(copy.id)
            continue
        loss, p = (new[i.id] for i in node.inputs)
        if (loss.id, p.id) not in adjoint:
            wanted = list(dict.fromkeys(new[g.inputs[1].id] for g in grads
                                        if g.inputs[0] is node.inputs[0]))
            results = backward(builder, loss, wanted, node.line, node.col)
            adjoint.update({(loss.id, q.id): r for q, r in zip(wanted, results, strict=True)})
        value = adjoint[(loss.id, p.id)]
        named = not node.name.startswith("%")
        if named or node.id in stored:
            if value.id in forward or value.id in renames or value.op in (Op.CONST,
                                                                         Op.BROADCAST):
                # A value of its own, as `y = x` gets: the gradient is stored and named.
                value = builder.add(Op.CAST, (value,), shape=value.shape, dtype="f32",
                                    line=node.line, col=node.col)
            if named:
                renames[value.id] = node.name
        roots.add(value.id)
        new[node.id] = value
        calls.append((node.line, node.col, value))
    return _rebuild(graph, builder.nodes, new, forward | roots, renames, calls)


def backward(builder: GraphBuilder, loss: Node, wanted: list[Node], line: int, col: int
             ) -> list[Node]:
    """Append the backward pass of 0-d `loss` to `builder`; dloss/dp for each p in `wanted`
    (params or inputs), f32, in p's shape."""
    depends = {p.id for p in wanted}
    for n in builder.nodes[:loss.id + 1]:
        if any(i.id in depends for i in n.inputs):
            depends.add(n.id)
    b = Backward(builder, line, col)
    adj: dict[int, Node] = {loss.id: b.const(1.0, ())}
    for n in reversed(builder.nodes[:loss.id + 1]):
        g = adj.get(n.id)
        if g is None or n.id not in depends or n.op in LEAF_OPS:
            continue
        for x, dx in zip(n.inputs, RULES[n.op](b, n, g), strict=True):
            if dx is None or x.id not in depends:
                continue
            if (dx.shape, dx.dtype) != (x.shape, "f32"):
                raise IRError(f"the {n.op.value} rule gives {format_type(dx.shape, dx.dtype)} "
                              f"for operand {x.name} ({format_type(x.shape, 'f32')})")
            adj[x.id] = b.add(adj[x.id], dx) if x.id in adj else dx
    return [adj.get(p.id) or b.const(0.0, p.shape) for p in wanted]


def _rebuild(graph: Graph, nodes: list[Node], new: dict[int, Node], keep: set[int],
             renames: dict[int, str], calls: list[tuple[int, int, Node]]) -> Graph:
    """The final graph: backward nodes nothing needs dropped, gradients named, `%tN` names
    renumbered to the new positions, and where each grad call's value went (`grad_calls`)."""
    live = set(keep)
    for n in reversed(nodes):
        if n.id in live:
            live.update(i.id for i in n.inputs)
    out: dict[int, Node] = {}
    kept: list[Node] = []
    for n in nodes:
        if n.id not in live:
            continue
        nid = len(kept)
        name = renames.get(n.id, n.name)
        if name.startswith("%"):
            name = f"%t{nid}"
        m = replace(n, id=nid, inputs=tuple(out[i.id] for i in n.inputs), name=name)
        out[n.id] = m
        kept.append(m)
    builder = GraphBuilder()
    builder.nodes = kept
    done = builder.finish([out[new[o.id].id] for o in graph.outputs], graph.filename,
                          [replace(u, param=out[new[u.param.id].id],
                                   value=out[new[u.value.id].id]) for u in graph.updates])
    return replace(done, grad_calls=tuple((line, col, out[v.id]) for line, col, v in calls),
                   constants=graph.constants)
