"""Matrix products, softmax, reductions and the shape operators."""

from __future__ import annotations

import math

import numpy as np

from compiler.onnx_import import expr as X
from compiler.onnx_import.convert import BadModel, NodeCtx, Unsupported, reshape
from compiler.onnx_import.expr import E
from compiler.onnx_import.ops.common import broadcast, copy, norm_axes, reshaped
from compiler.onnx_import.registry import converter


def _matmul_dtype(ctx: NodeCtx, *idx: int) -> str:
    return ctx.tensor_dtype(*idx)


def _rounded(e: E, dtype: str) -> E:
    """A product is f32 in the DSL; an ONNX product of bf16 operands is bf16."""
    return X.call("cast", e, "bf16") if dtype == "bf16" else e


@converter("MatMul", 1, 9, 13)
def matmul(ctx: NodeCtx) -> None:
    """`a @ b` with numpy's rules: a 1-D operand gets a unit axis (removed again by
    reshape); a 2-D `b` under a 3-D or 4-D `a` multiplies the rows of every batch at once
    (`reshape(a, [B*M, K]) @ b`); other batched operands use the DSL's batched `@`."""
    a, b = ctx.input(0), ctx.input(1)
    dtype = _matmul_dtype(ctx, 0, 1)
    if a.rank == 0 or b.rank == 0:
        raise BadModel("MatMul of a 0-d value")
    ka = a.shape[-1]
    kb = b.shape[0] if b.rank == 1 else b.shape[-2]
    if ka != kb:
        raise BadModel(f"matmul dimension mismatch: {list(a.shape)} @ {list(b.shape)}")
    ea, eb = ctx.x(0, dtype), ctx.x(1, dtype)
    a_shape, b_shape = a.shape, b.shape
    if a.rank == 1:
        ea, a_shape = ctx.x(0, dtype, (1, ka)), (1, ka)
    if b.rank == 1:
        eb, b_shape = ctx.x(1, dtype, (kb, 1)), (kb, 1)
    m, n = a_shape[-2], b_shape[-1]
    if len(a_shape) == 2 and len(b_shape) == 2:
        e, got = X.binop("@", ea, eb), (m, n)
    elif len(b_shape) == 2:
        rows = int(np.prod(a_shape[:-1]))
        flat = reshape(ea, a_shape, (rows, ka))
        e, got = X.binop("@", flat, eb), (rows, n)
        e = reshape(e, got, (*a_shape[:-1], n))
        got = (*a_shape[:-1], n)
    else:
        batch = broadcast(a_shape[:-2], b_shape[:-2])
        rank = len(batch) + 2
        a_full = (1,) * (rank - len(a_shape)) + tuple(a_shape)
        b_full = (1,) * (rank - len(b_shape)) + tuple(b_shape)
        e = X.with_features(X.binop("@", reshape(ea, a_shape, a_full),
                                    reshape(eb, b_shape, b_full)), "batched_matmul")
        got = (*batch, m, n)
    if a.rank == 1 and b.rank == 1:
        shape = ()
    elif a.rank == 1:
        shape = (*b.shape[:-2], n)
    elif b.rank == 1:
        shape = tuple(a.shape[:-1])
    else:
        shape = (*broadcast(a.shape[:-2], b.shape[:-2]), m, n)
    ctx.out(0, _rounded(reshape(e, got, shape), dtype), shape, dtype)


@converter("Gemm", 7, 9, 11, 13)
def gemm(ctx: NodeCtx) -> None:
    """`alpha * (A' @ B') + beta * C`, A' = `transpose(A)` if transA (B' likewise; a constant
    is stored transposed instead); factors of 1 and an absent or zero-weighted C are left
    out."""
    a, b = ctx.input(0), ctx.input(1)
    if a.rank != 2 or b.rank != 2:
        raise BadModel(f"Gemm needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    dtype = _matmul_dtype(ctx, 0, 1)
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    m, k = (a.shape[1], a.shape[0]) if ta else a.shape
    kb, n = (b.shape[1], b.shape[0]) if tb else b.shape
    if k != kb:
        raise BadModel(f"Gemm dimension mismatch: A' is {[m, k]}, B' is {[kb, n]}")
    e = X.binop("@", ctx.x(0, dtype, transposed=bool(ta)), ctx.x(1, dtype, transposed=bool(tb)))
    if alpha != 1.0:
        e = X.binop("*", X.number(alpha), e)
    if ctx.has_input(2) and beta != 0.0:
        c = ctx.input(2)
        if broadcast(c.shape, (m, n)) != (m, n):
            raise BadModel(f"C {list(c.shape)} does not broadcast to {[m, n]}")
        ec = ctx.x(2, dtype)
        if beta != 1.0:
            ec = X.binop("*", X.number(beta), ec)
        e = X.binop("+", e, ec)
    ctx.out(0, _rounded(e, dtype), (m, n), dtype)


def _softmax(ctx: NodeCtx, fn: str, flatten: bool) -> None:
    v = ctx.input(0)
    dtype = ctx.tensor_dtype(0)
    if v.rank == 0:
        raise BadModel(f"{ctx.op} of a 0-d value")
    axis = ctx.axis(int(ctx.attr("axis", 1 if flatten else -1)), v.rank)
    x = ctx.x(0)
    if not flatten or axis == v.rank - 1:
        ctx.out(0, X.call(fn, x, axis=axis if axis != v.rank - 1 else -1), v.shape, dtype)
        return
    # Before opset 13 the input is read as a matrix [prod(shape[:axis]), prod(shape[axis:])]
    rows, cols = int(np.prod(v.shape[:axis])), int(np.prod(v.shape[axis:]))
    flat = reshape(x, v.shape, (rows, cols))
    ctx.out(0, reshape(X.call(fn, flat, axis=-1), (rows, cols), v.shape), v.shape, dtype)


@converter("Softmax", 1, 11)
def softmax_v1(ctx: NodeCtx) -> None:
    """`softmax(x, axis=-1)` of x flattened to a matrix from `axis` (default 1) on, then
    reshaped back."""
    _softmax(ctx, "softmax", True)


@converter("Softmax", 13)
def softmax_v13(ctx: NodeCtx) -> None:
    """`softmax(x, axis=K)` (default -1)."""
    _softmax(ctx, "softmax", False)


@converter("LogSoftmax", 1, 11)
def log_softmax_v1(ctx: NodeCtx) -> None:
    """`log_softmax(x, axis=-1)` of x flattened to a matrix from `axis` (default 1) on."""
    _softmax(ctx, "log_softmax", True)


@converter("LogSoftmax", 13)
def log_softmax_v13(ctx: NodeCtx) -> None:
    """`log_softmax(x, axis=K)` (default -1)."""
    _softmax(ctx, "log_softmax", False)


def _reduce(ctx: NodeCtx, fn: str, axes_from_input: bool) -> None:
    v = ctx.input(0)
    dtype = ctx.tensor_dtype(0)
    keep = bool(int(ctx.attr("keepdims", 1)))
    if axes_from_input:
        raw = ctx.const(1, "axes")
        noop = bool(int(ctx.attr("noop_with_empty_axes", 0)))
    else:
        raw = ctx.ints("axes")
        noop = False
    axes = norm_axes(raw, v.rank) if raw is not None else None
    if not axes:
        if noop:
            copy(ctx)
            return
        axes = list(range(v.rank))
    if v.rank == 0:
        copy(ctx)
        return
    if any(v.shape[a] == 0 for a in range(v.rank)):
        raise Unsupported("an empty tensor")
    x = ctx.x(0)
    keepdims = 1 if keep else None
    if sorted(axes) == list(range(v.rank)):
        # every axis: one reduction of the row-major flattening (one rounding)
        e = X.call(fn, x, keepdims=keepdims)
    else:
        e = x
        for a in sorted(axes, reverse=True):       # the last first, so indices stay valid
            e = X.call(fn, e, axis=a, keepdims=keepdims)
    shape = tuple(1 if i in axes else d for i, d in enumerate(v.shape)) if keep \
        else tuple(d for i, d in enumerate(v.shape) if i not in axes)
    ctx.out(0, e, shape, dtype, v.elem)


for _op, _fn, _input_from in (("ReduceSum", "sum", 13), ("ReduceMean", "mean", 18),
                              ("ReduceMax", "max", 18), ("ReduceMin", "min", 18)):
    def _attr_form(ctx: NodeCtx, fn: str = _fn) -> None:
        _reduce(ctx, fn, False)

    def _input_form(ctx: NodeCtx, fn: str = _fn) -> None:
        _reduce(ctx, fn, True)

    _attr_form.__doc__ = (f"`{_fn}(x, axis=K, keepdims=0|1)` nested over each axis of the "
                          f"`axes` attribute, from the last; `{_fn}(x)` (or keepdims=1) when "
                          "it names every axis or none.")
    _input_form.__doc__ = ("the same, with `axes` a constant input; noop_with_empty_axes=1 "
                           "and no axes: a copy.")
    _early = {"ReduceSum": (1, 11), "ReduceMean": (1, 11, 13), "ReduceMax": (1, 11, 12, 13),
              "ReduceMin": (1, 11, 12, 13)}[_op]
    _late = {"ReduceSum": (13,), "ReduceMean": (18,), "ReduceMax": (18, 20),
             "ReduceMin": (18, 20)}[_op]
    converter(_op, *_early)(_attr_form)
    converter(_op, *_late)(_input_form)


@converter("Transpose", 1, 13, 21, 23, 24, 25)
def transpose(ctx: NodeCtx) -> None:
    """`transpose(x)` for the 2-D swap, else `transpose(x, [p0, p1, ...])` (default: the axes
    reversed); the identity permutation is a copy."""
    v = ctx.input(0)
    perm = ctx.ints("perm", list(reversed(range(v.rank))))
    assert perm is not None
    if sorted(perm) != list(range(v.rank)):
        raise BadModel(f"perm {perm} is not a permutation of {v.rank} axes")
    if perm == list(range(v.rank)):
        copy(ctx)
        return
    e = X.call("transpose", ctx.x(0)) if v.rank == 2 else X.call("transpose", ctx.x(0), perm)
    ctx.out(0, e, tuple(v.shape[p] for p in perm), ctx.tensor_dtype(0), v.elem)


@converter("Reshape", 5, 13, 14, 19, 21, 23, 24, 25)
def reshape_(ctx: NodeCtx) -> None:
    """`reshape(x, [d0, d1, ...])` with the dims worked out when importing (0 copies the
    input's dim unless allowzero, -1 is inferred); the same shape is a copy."""
    v = ctx.input(0)
    target = ctx.const(1, "shape")
    if target is None:
        raise BadModel("the shape input is missing")
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    allowzero = ctx.version >= 14 and bool(int(ctx.attr("allowzero", 0)))
    total = int(np.prod(v.shape))
    out = []
    for i, d in enumerate(dims):
        if d == 0 and not allowzero:
            if i >= v.rank:
                raise BadModel(f"shape {dims}: a 0 at axis {i} copies an axis the "
                               f"{v.rank}-D input does not have")
            d = v.shape[i]
        out.append(d)
    if out.count(-1) > 1:
        raise BadModel(f"shape {dims} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise BadModel(f"cannot reshape {list(v.shape)} to {dims}")
        out[out.index(-1)] = total // known
    if any(d < 0 for d in out):
        raise BadModel(f"shape {dims} has a negative dimension")
    reshaped(ctx, v, ctx.x(0), tuple(out))


@converter("Flatten", 1, 9, 11, 13, 21, 23, 24, 25)
def flatten(ctx: NodeCtx) -> None:
    """`reshape(x, [prod(shape[:axis]), prod(shape[axis:])])` (default axis 1)."""
    v = ctx.input(0)
    axis = int(ctx.attr("axis", 1))
    if not -v.rank <= axis <= v.rank:
        raise BadModel(f"axis {axis} is out of range for a {v.rank}-D input")
    axis = axis + v.rank if axis < 0 else axis
    out = (int(np.prod(v.shape[:axis])), int(np.prod(v.shape[axis:])))
    reshaped(ctx, v, ctx.x(0), out)


def _squeeze(ctx: NodeCtx, axes_raw: object) -> None:
    v = ctx.input(0)
    axes = norm_axes(axes_raw, v.rank) if axes_raw is not None else None  # type: ignore[arg-type]
    if axes is None or len(axes) == 0:
        axes = [i for i, d in enumerate(v.shape) if d == 1]
    for a in axes:
        if v.shape[a] != 1:
            raise BadModel(f"cannot squeeze axis {a} of length {v.shape[a]}")
    reshaped(ctx, v, ctx.x(0), tuple(d for i, d in enumerate(v.shape) if i not in axes))


@converter("Squeeze", 1, 11)
def squeeze_v1(ctx: NodeCtx) -> None:
    """`reshape` to the shape without the `axes` attribute's unit axes (all of them if none
    are named); a 0-d result is `sum(x)` of the one element."""
    _squeeze(ctx, ctx.ints("axes"))


@converter("Squeeze", 13, 21, 23, 24, 25)
def squeeze_v13(ctx: NodeCtx) -> None:
    """the same, `axes` a constant input."""
    _squeeze(ctx, ctx.const(1, "axes"))


def _unsqueeze(ctx: NodeCtx, axes_raw: object) -> None:
    v = ctx.input(0)
    if axes_raw is None:
        raise BadModel("Unsqueeze needs axes")
    n = len(np.asarray(axes_raw).reshape(-1))
    axes = norm_axes(axes_raw, v.rank + n)  # type: ignore[arg-type]
    assert axes is not None
    dims = iter(v.shape)
    out = tuple(1 if i in axes else next(dims) for i in range(v.rank + n))
    reshaped(ctx, v, ctx.x(0), out)


@converter("Unsqueeze", 1, 11)
def unsqueeze_v1(ctx: NodeCtx) -> None:
    """`reshape` with a unit axis at each of the `axes` attribute's places."""
    _unsqueeze(ctx, ctx.ints("axes"))


@converter("Unsqueeze", 13, 21, 23, 24, 25)
def unsqueeze_v13(ctx: NodeCtx) -> None:
    """the same, `axes` a constant input."""
    _unsqueeze(ctx, ctx.const(1, "axes"))


@converter("Concat", 4, 11, 13)
def concat(ctx: NodeCtx) -> None:
    """`concat(a, b, ..., axis=K)`; a single input is a copy."""
    idx = [i for i in range(ctx.n_inputs()) if ctx.has_input(i)]
    if not idx:
        raise BadModel("no inputs")
    values = [ctx.input(i) for i in idx]
    rank = values[0].rank
    if ctx.attr("axis") is None:
        raise BadModel("Concat needs an axis")
    axis = ctx.axis(int(ctx.attr("axis")), rank)
    for v in values:
        if v.rank != rank or any(v.shape[d] != values[0].shape[d] for d in range(rank)
                                 if d != axis):
            raise BadModel("cannot concatenate shapes "
                           + ", ".join(str(list(w.shape)) for w in values)
                           + f" along axis {axis}")
    kept = [(i, v) for i, v in zip(idx, values, strict=True) if v.shape[axis] > 0]
    if not kept:
        raise Unsupported("an empty tensor")
    dtype = ctx.tensor_dtype(*idx)
    shape = tuple(sum(v.shape[axis] for _, v in kept) if d == axis else values[0].shape[d]
                  for d in range(rank))
    if len(kept) == 1:
        ctx.out(0, ctx.x(kept[0][0], dtype), shape, dtype)
        return
    parts = []
    for i, v in kept:
        e = ctx.x(i, dtype)
        if not v.is_const and v.dtype != dtype:
            e = X.call("cast", e, dtype)
        parts.append(e)
    ctx.out(0, X.call("concat", *parts, axis=axis), shape, dtype, values[0].elem)


def _slice(ctx: NodeCtx, starts: object, ends: object, axes: object, steps: object) -> None:
    v = ctx.input(0)
    st = [int(s) for s in np.asarray(starts).reshape(-1)]
    en = [int(e) for e in np.asarray(ends).reshape(-1)]
    if len(st) != len(en):
        raise BadModel("starts and ends differ in length")
    ax = norm_axes(axes, v.rank) if axes is not None else list(range(len(st)))  # type: ignore
    sp = [int(s) for s in np.asarray(steps).reshape(-1)] if steps is not None else [1] * len(st)
    assert ax is not None
    if not len(ax) == len(sp) == len(st):
        raise BadModel("starts, ends, axes and steps differ in length")
    items = [":"] * v.rank
    shape = list(v.shape)
    for a, s, e, step in zip(ax, st, en, sp, strict=True):
        dim = v.shape[a]
        if step == 0:
            raise BadModel("a step of 0")
        if step < 0:
            raise Unsupported("a negative step (the DSL slices forwards)")
        s = min(max(s + dim if s < 0 else s, 0), dim)
        e = min(max(e + dim if e < 0 else e, 0), dim)
        n = max(0, math.ceil((e - s) / step))
        if n == 0:
            raise Unsupported("an empty slice")
        shape[a] = n
        e = s + (n - 1) * step + 1
        if (s, e, step) != (0, dim, 1):
            items[a] = f"{s}:{e}" if step == 1 else f"{s}:{e}:{step}"
    while items and items[-1] == ":":
        items.pop()
    if not items:
        copy(ctx)
        return
    ctx.out(0, X.index(ctx.x(0), items), tuple(shape), ctx.tensor_dtype(0), v.elem)


@converter("Slice", 1)
def slice_v1(ctx: NodeCtx) -> None:
    """`x[a:b:c, ...]` with the starts, ends and axes attributes clamped as ONNX does."""
    _slice(ctx, ctx.ints("starts"), ctx.ints("ends"), ctx.ints("axes"), None)


@converter("Slice", 10, 11, 13)
def slice_v10(ctx: NodeCtx) -> None:
    """`x[a:b:c, ...]` from constant starts, ends, axes and steps inputs, clamped as ONNX
    does; a negative step is not supported."""
    starts, ends = ctx.const(1, "starts"), ctx.const(2, "ends")
    if starts is None or ends is None:
        raise BadModel("Slice needs starts and ends")
    _slice(ctx, starts, ends, ctx.const(3, "axes"), ctx.const(4, "steps"))
