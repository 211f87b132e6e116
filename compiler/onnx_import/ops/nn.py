"""Normalisation, convolution and pooling."""

from __future__ import annotations

import numpy as np

from compiler.onnx_import import expr as X
from compiler.onnx_import.convert import BadModel, NodeCtx, Unsupported, reshape
from compiler.onnx_import.ops.common import (
    broadcast,
    dsl_pads,
    pair,
    window_ints,
    window_out,
    window_pads,
)
from compiler.onnx_import.ops.tensor import _rounded
from compiler.onnx_import.registry import converter


@converter("LayerNormalization", 17)
def layer_norm(ctx: NodeCtx) -> None:
    """`layernorm(x, axis=-1, eps=E) * scale + bias`, every axis from `axis` on merged into
    one by `reshape` (and split again) when there are several; the optional Mean and
    InvStdDev outputs are `mean(x, axis=-1, keepdims=1)` and `1 / sqrt(mean(d * d, ...) +
    E)` with d = x - Mean, computed in f32."""
    v = ctx.input(0)
    if v.rank == 0:
        raise BadModel("LayerNormalization of a 0-d value")
    if int(ctx.attr("stash_type", 1)) != 1:
        raise Unsupported("a stash_type other than float")
    axis = ctx.axis(int(ctx.attr("axis", -1)), v.rank)
    eps = float(ctx.attr("epsilon", 1e-5))
    dtype = ctx.tensor_dtype(0)
    lead = tuple(v.shape[:axis])
    flat = (*lead, int(np.prod(v.shape[axis:])))
    stats = (*lead, *([1] * (v.rank - axis)))
    xr = reshape(ctx.x(0), v.shape, flat)
    y = reshape(X.call("layernorm", xr, axis=-1, eps=eps), flat, v.shape)
    for i, op in ((1, "*"), (2, "+")):
        if ctx.has_input(i):
            p = ctx.input(i)
            if broadcast(p.shape, v.shape) != v.shape:
                raise BadModel(f"{'scale' if i == 1 else 'bias'} {list(p.shape)} does not "
                               f"broadcast to {list(v.shape)}")
            y = X.binop(op, y, ctx.x(i, dtype))
    ctx.out(0, y, v.shape, dtype)
    if not (ctx.wants(1) or ctx.wants(2)):
        return
    xf = xr if dtype == "f32" else X.call("cast", xr, "f32")
    if dtype != "f32" or xr.prec != X.ATOM or "(" in xr.text:
        xf = ctx.tmp(f"{ctx.imp.names.dsl.get(ctx.node.output[0], 'ln')}_x", xf)
    kept = (*lead, 1)
    mean = X.call("mean", xf, axis=-1, keepdims=1)
    if ctx.wants(1):
        ctx.out(1, reshape(mean, kept, stats), stats, "f32")
        m = ctx.imp.values[ctx.node.output[1]].expr
        assert m is not None
        m = reshape(m, stats, kept)
    else:
        m = mean
    if ctx.wants(2):
        d = ctx.tmp(f"{ctx.imp.names.dsl.get(ctx.node.output[0], 'ln')}_d", X.binop("-", xf, m))
        var = X.call("mean", X.binop("*", d, d), axis=-1, keepdims=1)
        isd = X.binop("/", X.number(1), X.call("sqrt", X.binop("+", var, X.number(eps))))
        ctx.out(2, reshape(isd, kept, stats), stats, "f32")


@converter("BatchNormalization", 7, 9, 14, 15)
def batch_norm(ctx: NodeCtx) -> None:
    """Inference: `(x - mean) / sqrt(var + eps) * scale + bias`, each [C] vector read as [C, 1,
    ...] to meet axis 1. Training mode (and its running-statistics outputs) is not
    supported."""
    v = ctx.input(0)
    if ctx.version < 9 and int(ctx.attr("spatial", 1)) != 1:
        raise Unsupported("spatial=0 (per-activation statistics)")
    if ctx.version >= 14 and int(ctx.attr("training_mode", 0)):
        raise Unsupported("training mode")
    if any(ctx.wants(i) for i in range(1, 5)):
        raise Unsupported("the running statistics outputs (training mode)")
    if v.rank < 2:
        raise BadModel(f"BatchNormalization needs [N, C, ...], got {list(v.shape)}")
    c = v.shape[1]
    cshape = (c, *([1] * (v.rank - 2)))
    dtype = ctx.tensor_dtype(0)
    params = []
    for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")):
        p = ctx.input(i)
        if p.shape != (c,):
            raise BadModel(f"{what} has shape {list(p.shape)}, expected [{c}]")
        params.append(ctx.x(i, dtype, cshape))
    scale, bias, mean, var = params
    eps = float(ctx.attr("epsilon", 1e-5))
    e = X.binop("/", X.binop("-", ctx.x(0), mean),
                X.call("sqrt", X.binop("+", var, X.number(eps))))
    e = X.binop("+", X.binop("*", e, scale), bias)
    ctx.out(0, e, v.shape, dtype)


def _lift(values: list[int], fill: int) -> list[int]:
    """A 1-D window's parameter as the 2-D one of a [N, C, 1, L] view."""
    return [fill, *values]


@converter("Conv", 1, 11, 22)
def conv(ctx: NodeCtx) -> None:
    """`conv2d(x, w, stride=S, pad=[top, left, bottom, right], dilation=D)` + `bias` read as
    [K, 1, 1]; group 1; auto_pad becomes explicit pads; a 1-D Conv runs as a 2-D one on a
    [N, C, 1, L] view."""
    x, w = ctx.input(0), ctx.input(1)
    if x.rank not in (3, 4):
        raise Unsupported(f"a {x.rank - 2}-D convolution (d1 has 1-D and 2-D)")
    group = int(ctx.attr("group", 1))
    if group != 1:
        raise Unsupported(f"group={group} (only group 1)")
    if w.rank != x.rank:
        raise BadModel(f"the weight {list(w.shape)} does not fit the input {list(x.shape)}")
    n, c = x.shape[:2]
    k, cw = w.shape[:2]
    if cw != c:
        raise BadModel(f"the weight has {cw} input channels, the input {c}")
    sp = x.rank - 2
    kernel = list(w.shape[2:])
    given = ctx.ints("kernel_shape")
    if given is not None and list(given) != kernel:
        raise BadModel(f"kernel_shape {given} differs from the weight's {kernel}")
    strides = window_ints(ctx, "strides", sp)
    dil = window_ints(ctx, "dilations", sp)
    pads = window_pads(ctx, x.shape[2:], kernel, strides, dil)
    out_sp = [window_out(x.shape[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[sp + i])
              for i in range(sp)]
    dtype = ctx.tensor_dtype(0, 1)
    if sp == 1:
        x4, w4 = (n, c, 1, x.shape[2]), (k, c, 1, kernel[0])
        strides, dil = _lift(strides, 1), _lift(dil, 1)
        pads = [0, pads[0], 0, pads[1]]
        out4 = (n, k, 1, out_sp[0])
    else:
        x4, w4, out4 = x.shape, w.shape, (n, k, *out_sp)
    e = X.call("conv2d", ctx.x(0, dtype, x4), ctx.x(1, dtype, w4),
               stride=pair(strides) if strides != [1, 1] else None,
               pad=dsl_pads(pads) if any(pads) else None,
               dilation=pair(dil) if dil != [1, 1] else None)
    if ctx.has_input(2):
        b = ctx.input(2)
        if b.shape != (k,):
            raise BadModel(f"the bias has shape {list(b.shape)}, expected [{k}]")
        e = X.binop("+", e, ctx.x(2, dtype, (k, 1, 1)))
    shape = (n, k, *out_sp)
    ctx.out(0, _rounded(reshape(e, out4, shape), dtype), shape, dtype)


def _pool(ctx: NodeCtx, fn: str) -> None:
    v = ctx.input(0)
    if v.rank not in (3, 4):
        raise Unsupported(f"{v.rank - 2}-D pooling (d1 has 1-D and 2-D)")
    if fn == "maxpool2d" and ctx.wants(1):
        raise Unsupported("the Indices output")
    sp = v.rank - 2
    if ctx.ints("kernel_shape") is None:
        raise BadModel("kernel_shape is missing")
    kernel = window_ints(ctx, "kernel_shape", sp)
    strides = window_ints(ctx, "strides", sp)
    dil = window_ints(ctx, "dilations", sp)
    ceil = bool(int(ctx.attr("ceil_mode", 0)))
    pads = window_pads(ctx, v.shape[2:], kernel, strides, dil)
    out_sp = [window_out(v.shape[2 + i], kernel[i], strides[i], dil[i], pads[i], pads[sp + i],
                         ceil) for i in range(sp)]
    n, c = v.shape[:2]
    if sp == 1:
        x4 = (n, c, 1, v.shape[2])
        kernel, strides, dil = _lift(kernel, 1), _lift(strides, 1), _lift(dil, 1)
        pads = [0, pads[0], 0, pads[1]]
        out4 = (n, c, 1, out_sp[0])
    else:
        x4, out4 = v.shape, (n, c, *out_sp)
    keywords: dict[str, object] = {
        "size": pair(kernel),
        "stride": pair(strides) if strides != kernel else None,
        "pad": dsl_pads(pads) if any(pads) else None,
        "dilation": pair(dil) if dil != [1, 1] else None,
        "ceil": 1 if ceil else None,
    }
    if fn == "avgpool2d" and int(ctx.attr("count_include_pad", 0)):
        keywords["count_pad"] = 1
    e = X.call(fn, ctx.x(0, None, x4), **keywords)
    shape = (n, c, *out_sp)
    ctx.out(0, reshape(e, out4, shape), shape, ctx.tensor_dtype(0))


@converter("MaxPool", 1, 8, 10, 11, 12, 22)
def max_pool(ctx: NodeCtx) -> None:
    """`maxpool2d(x, size=K, stride=S, pad=P, dilation=D, ceil=1)` (1-D on a [N, C, 1, L]
    view); auto_pad becomes explicit pads; the Indices output is not supported."""
    _pool(ctx, "maxpool2d")


@converter("AveragePool", 1, 7, 10, 11, 19, 22)
def average_pool(ctx: NodeCtx) -> None:
    """`avgpool2d(x, size=K, stride=S, pad=P, dilation=D, ceil=1, count_pad=1)` (1-D on a
    [N, C, 1, L] view); auto_pad becomes explicit pads."""
    _pool(ctx, "avgpool2d")


@converter("GlobalAveragePool", 1, 22)
def global_average_pool(ctx: NodeCtx) -> None:
    """`mean(mean(x, axis=3, keepdims=1), axis=2, keepdims=1)`: the mean over every spatial
    axis, kept as length 1."""
    v = ctx.input(0)
    if v.rank < 3:
        raise BadModel(f"GlobalAveragePool needs [N, C, ...], got {list(v.shape)}")
    e = ctx.x(0)
    for a in reversed(range(2, v.rank)):
        e = X.call("mean", e, axis=a, keepdims=1)
    ctx.out(0, e, (*v.shape[:2], *([1] * (v.rank - 2))), ctx.tensor_dtype(0))
