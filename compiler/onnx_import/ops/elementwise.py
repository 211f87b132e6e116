"""Arithmetic, activations, comparisons, selection, casts and the copy-like operators."""

from __future__ import annotations

import math

import numpy as np

from compiler.onnx_import import expr as X
from compiler.onnx_import.convert import (
    BFLOAT16,
    BOOL,
    FLOAT,
    BadModel,
    NodeCtx,
    Unsupported,
    elem_name,
)
from compiler.onnx_import.ops.common import broadcast, copy
from compiler.onnx_import.registry import converter

F32_MAX = float(np.finfo(np.float32).max)


def _binary(ctx: NodeCtx, op: str) -> None:
    a, b = ctx.input(0), ctx.input(1)
    dtype = ctx.tensor_dtype(0, 1)
    shape = broadcast(a.shape, b.shape)
    ctx.out(0, X.binop(op, ctx.x(0, dtype), ctx.x(1, dtype)), shape, dtype)


@converter("Add", 7, 13, 14)
def add(ctx: NodeCtx) -> None:
    """`a + b` (numpy broadcasting)."""
    _binary(ctx, "+")


@converter("Sub", 7, 13, 14)
def sub(ctx: NodeCtx) -> None:
    """`a - b`."""
    _binary(ctx, "-")


@converter("Mul", 7, 13, 14)
def mul(ctx: NodeCtx) -> None:
    """`a * b`."""
    _binary(ctx, "*")


@converter("Div", 7, 13, 14)
def div(ctx: NodeCtx) -> None:
    """`a / b`."""
    _binary(ctx, "/")


def _unary(ctx: NodeCtx, fn: str) -> None:
    v = ctx.input(0)
    dtype = ctx.tensor_dtype(0)
    ctx.out(0, X.call(fn, ctx.x(0)), v.shape, dtype)


@converter("Neg", 6, 13)
def neg(ctx: NodeCtx) -> None:
    """`-x`."""
    v = ctx.input(0)
    ctx.out(0, X.neg(ctx.x(0)), v.shape, ctx.tensor_dtype(0))


def _register_unary(op: str, fn: str, versions: tuple[int, ...]) -> None:
    def convert(ctx: NodeCtx) -> None:
        _unary(ctx, fn)
    convert.__doc__ = f"`{fn}(x)`."
    convert.__name__ = op.lower()
    converter(op, *versions)(convert)


for _op, _fn, _versions in (("Abs", "abs", (6, 13)), ("Sqrt", "sqrt", (6, 13)),
                            ("Exp", "exp", (6, 13)), ("Log", "log", (6, 13)),
                            ("Erf", "erf", (9, 13)), ("Relu", "relu", (6, 13, 14)),
                            ("Sigmoid", "sigmoid", (6, 13)), ("Tanh", "tanh", (6, 13))):
    _register_unary(_op, _fn, _versions)


@converter("Pow", 7, 12, 13, 15)
def pow_(ctx: NodeCtx) -> None:
    """`a ** b` (`a * a` for a constant exponent 2, which is the same number); an integer
    exponent is read as float."""
    a = ctx.input(0)
    b = ctx.input(1)
    dtype = ctx.tensor_dtype(0) if not a.is_const else ctx.tensor_dtype(0, 1)
    shape = broadcast(a.shape, b.shape)
    base = ctx.x(0, dtype)
    if b.is_const and b.const is not None and b.const.size == 1 and b.rank == 0 \
            and float(b.const) == 2.0:
        ctx.out(0, X.binop("*", base, base), shape, dtype)
        return
    exponent = ctx.x(1, dtype)
    if not b.is_const and b.dtype != dtype:
        exponent = X.call("cast", exponent, dtype)
    ctx.out(0, X.binop("**", base, exponent), shape, dtype)


@converter("LeakyRelu", 6, 16)
def leaky_relu(ctx: NodeCtx) -> None:
    """`maximum(x, alpha * x)` for 0 <= alpha <= 1, else `where(x < 0, alpha * x, x)`."""
    v = ctx.input(0)
    alpha = float(ctx.attr("alpha", 0.01))
    x = ctx.x(0)
    scaled = X.binop("*", X.number(alpha), x)
    if 0.0 <= alpha <= 1.0:
        e = X.call("maximum", x, scaled)
    else:
        e = X.call("where", X.binop("<", x, X.number(0)), scaled, x)
    ctx.out(0, e, v.shape, ctx.tensor_dtype(0))


@converter("Gelu", 20)
def gelu(ctx: NodeCtx) -> None:
    """`gelu(x)`; approximate="tanh" as `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 *
    x * x * x)))`."""
    v = ctx.input(0)
    x = ctx.x(0)
    approximate = ctx.attr("approximate", "none")
    if approximate == "none":
        e = X.call("gelu", x)
    elif approximate == "tanh":
        cube = X.binop("*", X.binop("*", x, x), x)
        inner = X.binop("*", X.number(math.sqrt(2 / math.pi)),
                        X.binop("+", x, X.binop("*", X.number(0.044715), cube)))
        e = X.binop("*", X.binop("*", X.number(0.5), x),
                    X.binop("+", X.number(1), X.call("tanh", inner)))
    else:
        raise BadModel(f"unknown approximate='{approximate}'")
    ctx.out(0, e, v.shape, ctx.tensor_dtype(0))


@converter("Clip", 6)
def clip_v6(ctx: NodeCtx) -> None:
    """`minimum(maximum(x, min), max)`, bounds from the attributes (a default bound, the
    float32 extreme, is left out)."""
    v = ctx.input(0)
    lo = float(ctx.attr("min", -F32_MAX))
    hi = float(ctx.attr("max", F32_MAX))
    e = ctx.x(0)
    if lo > -F32_MAX:
        e = X.call("maximum", e, X.number(lo))
    if hi < F32_MAX:
        e = X.call("minimum", e, X.number(hi))
    ctx.out(0, e, v.shape, ctx.tensor_dtype(0))


@converter("Clip", 11, 12, 13)
def clip_v11(ctx: NodeCtx) -> None:
    """`minimum(maximum(x, min), max)`, bounds from the optional inputs (constant or
    computed); an absent bound is left out."""
    v = ctx.input(0)
    dtype = ctx.tensor_dtype(0)
    e = ctx.x(0)
    for i, fn in ((1, "maximum"), (2, "minimum")):
        if not ctx.has_input(i):
            continue
        b = ctx.input(i)
        if b.is_const and b.const is not None:
            if b.const.size != 1:
                raise BadModel(f"the {'min' if i == 1 else 'max'} bound must be a scalar")
            bound = float(b.const.reshape(()))
            if math.isinf(bound):
                continue
            e = X.call(fn, e, X.number(bound))
        else:
            e = X.call(fn, e, ctx.x(i, dtype))
    ctx.out(0, e, v.shape, dtype)


def _variadic(ctx: NodeCtx, fn: str) -> None:
    n = ctx.n_inputs()
    if n == 0:
        raise BadModel("no inputs")
    idx = [i for i in range(n) if ctx.has_input(i)]
    dtype = ctx.tensor_dtype(*idx)
    shape = broadcast(*(ctx.input(i).shape for i in idx))
    e = ctx.x(idx[0], dtype)
    if len(idx) == 1:
        ctx.out(0, e, shape, dtype)
        return
    for i in idx[1:]:
        e = X.call(fn, e, ctx.x(i, dtype))
    ctx.out(0, e, shape, dtype)


@converter("Max", 8, 12, 13)
def max_(ctx: NodeCtx) -> None:
    """`maximum(maximum(a, b), c)` over every input (one input: a copy)."""
    _variadic(ctx, "maximum")


@converter("Min", 8, 12, 13)
def min_(ctx: NodeCtx) -> None:
    """`minimum(minimum(a, b), c)` over every input (one input: a copy)."""
    _variadic(ctx, "minimum")


def _compare(ctx: NodeCtx, op: str) -> None:
    a, b = ctx.input(0), ctx.input(1)
    dtype = ctx.tensor_dtype(0, 1)
    shape = broadcast(a.shape, b.shape)
    ctx.out(0, X.binop(op, ctx.x(0, dtype), ctx.x(1, dtype)), shape, dtype, BOOL)


@converter("Greater", 7, 9, 13)
def greater(ctx: NodeCtx) -> None:
    """`a > b` (a bool is held as 1 or 0 in the operands' dtype)."""
    _compare(ctx, ">")


@converter("Less", 7, 9, 13)
def less(ctx: NodeCtx) -> None:
    """`a < b`."""
    _compare(ctx, "<")


@converter("GreaterOrEqual", 12, 16)
def greater_equal(ctx: NodeCtx) -> None:
    """`a >= b`."""
    _compare(ctx, ">=")


@converter("LessOrEqual", 12, 16)
def less_equal(ctx: NodeCtx) -> None:
    """`a <= b`."""
    _compare(ctx, "<=")


@converter("Equal", 7, 11, 13, 19)
def equal(ctx: NodeCtx) -> None:
    """`a == b`."""
    _compare(ctx, "==")


@converter("Where", 9, 16)
def where(ctx: NodeCtx) -> None:
    """`where(c, a, b)`."""
    c, a, b = ctx.input(0), ctx.input(1), ctx.input(2)
    dtype = ctx.tensor_dtype(1, 2)
    shape = broadcast(c.shape, a.shape, b.shape)
    elem = BOOL if a.elem == BOOL and b.elem == BOOL else None
    ctx.out(0, X.call("where", ctx.x(0, dtype), ctx.x(1, dtype), ctx.x(2, dtype)), shape,
            dtype, elem)


@converter("Cast", 6, 9, 13, 19, 21, 23, 24, 25, 28)
def cast(ctx: NodeCtx) -> None:
    """`cast(x, f32)` or `cast(x, bf16)`: to float or bfloat16 only (from a bool, which is
    held as 1 or 0, too)."""
    to = int(ctx.attr("to", 0))
    v = ctx.input(0)
    if to not in (FLOAT, BFLOAT16):
        raise Unsupported(f"Cast to {elem_name(to)}: d1 casts to float and bfloat16 only")
    dtype = "f32" if to == FLOAT else "bf16"
    ctx.out(0, X.call("cast", ctx.x(0), dtype), v.shape, dtype)


@converter("Identity", 1, 13, 14, 16, 19, 21, 23, 24, 25)
def identity(ctx: NodeCtx) -> None:
    """A copy: `y = x`."""
    copy(ctx)


@converter("Dropout", 7, 10, 12, 13, 22)
def dropout(ctx: NodeCtx) -> None:
    """Inference: a copy, `y = x`; the optional mask output is a constant of ones. Training
    mode (training_mode true) with a nonzero ratio is not supported."""
    if ctx.version >= 12:
        training = ctx.const(2, "training_mode")
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            ratio = ctx.const(1, "ratio")
            r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
            if r != 0.0:
                raise Unsupported("training mode (training_mode=1 with a nonzero ratio)")
    copy(ctx)
    if ctx.wants(1):
        ctx.set_const(1, np.ones(ctx.input(0).shape, dtype=np.bool_))


@converter("Constant", 1, 9, 11, 12, 13, 19, 21, 23, 24, 25)
def constant(ctx: NodeCtx) -> None:
    """A constant: a number literal where it is 0-d data, a param where it is a tensor, and
    read directly by the converters that take shapes, axes and bounds."""
    from onnx import numpy_helper

    if ctx.has_attr("value"):
        try:
            a = numpy_helper.to_array(ctx.attr("value"))
        except Exception as e:  # a malformed tensor
            raise BadModel(f"its value cannot be read: {e}") from None
    elif ctx.has_attr("value_float"):
        a = np.array(ctx.attr("value_float"), dtype=np.float32)
    elif ctx.has_attr("value_floats"):
        a = np.array(ctx.attr("value_floats"), dtype=np.float32)
    elif ctx.has_attr("value_int"):
        a = np.array(ctx.attr("value_int"), dtype=np.int64)
    elif ctx.has_attr("value_ints"):
        a = np.array(ctx.attr("value_ints"), dtype=np.int64)
    elif ctx.has_attr("sparse_value"):
        raise Unsupported("a sparse constant")
    elif ctx.has_attr("value_string") or ctx.has_attr("value_strings"):
        raise Unsupported("a string constant")
    else:
        raise BadModel("it has no value")
    ctx.set_const(0, np.asarray(a))


@converter("Shape", 1, 13, 15, 19, 21, 23, 24, 25)
def shape(ctx: NodeCtx) -> None:
    """A constant (every shape is known when the model is imported); start and end (opset
    15) slice it."""
    v = ctx.input(0)
    start = int(ctx.attr("start", 0)) if ctx.version >= 15 else 0
    end = ctx.attr("end") if ctx.version >= 15 else None
    ctx.set_const(0, np.array(v.shape[slice(start, None if end is None else int(end))],
                              dtype=np.int64))


@converter("Size", 1, 13, 19, 21, 23, 24, 25)
def size(ctx: NodeCtx) -> None:
    """A constant: the element count."""
    ctx.set_const(0, np.array(int(np.prod(ctx.input(0).shape)), dtype=np.int64))
