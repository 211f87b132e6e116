"""Shape arithmetic the converters share (broadcasting, axes, windows and pads)."""

from __future__ import annotations

import math

import numpy as np

from compiler.onnx_import.convert import BadModel, NodeCtx, Unsupported, Value, reshape
from compiler.onnx_import.expr import E


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise BadModel("cannot broadcast shapes " + " and ".join(str(list(s)) for s in shapes)
                       ) from None


def copy(ctx: NodeCtx, i: int = 0, out: int = 0) -> None:
    """Output `out` is input `i` (a DSL copy, `y = x`)."""
    v = ctx.input(i)
    dtype = v.dtype or ctx.imp.const_dtype(v, None)
    ctx.out(out, ctx.x(i), v.shape, dtype, v.elem if not v.is_const else None)


def reshaped(ctx: NodeCtx, v: Value, e: E, shape: tuple[int, ...], out: int = 0) -> None:
    """Bind output `out` to `e` (a value of `v`'s shape) read as `shape`."""
    total = int(np.prod(v.shape))
    if int(np.prod(shape)) != total:
        raise BadModel(f"cannot reshape {list(v.shape)} ({total} elements) to {list(shape)}")
    if any(d == 0 for d in shape) or total == 0:
        raise Unsupported("an empty tensor")
    assert v.dtype is not None
    ctx.out(out, reshape(e, v.shape, shape), shape, v.dtype, v.elem)


def norm_axes(axes: list[int] | np.ndarray | None, rank: int) -> list[int] | None:
    if axes is None:
        return None
    given = [int(a) for a in np.asarray(axes).reshape(-1)]     # plain ints for the messages
    out = []
    for a in given:
        if not -rank <= a < rank:
            raise BadModel(f"axis {a} is out of range for a {rank}-D input")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise BadModel(f"axis repeated in {given}")
    return out


def same_pads(auto_pad: str, size: int, kernel: int, stride: int, dilation: int
              ) -> tuple[int, int]:
    """(begin, end) padding of one spatial axis under auto_pad SAME_UPPER / SAME_LOWER: the
    output is ceil(size / stride) long, the extra padding goes at the end (UPPER) or the
    beginning (LOWER)."""
    out = math.ceil(size / stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if auto_pad == "SAME_UPPER" else (big, small)


def window_ints(ctx: NodeCtx, name: str, sp: int) -> list[int]:
    """A Conv or pooling node's `strides` or `dilations` (default 1) or `kernel_shape`: one
    positive integer per spatial axis. Checked here, where a wrong count or a zero would
    otherwise fail deep in the shape arithmetic (an index past the list, a division by a
    zero stride) or be half read (a third stride of a 2-D window ignored)."""
    values = ctx.ints(name, [1] * sp)
    if values is None or len(values) != sp:
        raise BadModel(f"{name} {values} do not fit {sp} spatial ax{'es' if sp > 1 else 'is'}")
    if any(v < 1 for v in values):
        raise BadModel(f"{name} {values} must be positive")
    return values


def window_pads(ctx: NodeCtx, spatial: tuple[int, ...], kernel: list[int], strides: list[int],
                dilations: list[int]) -> list[int]:
    """The explicit [begin..., end...] pads of a Conv or pooling node, from `pads` or
    `auto_pad`."""
    n = len(spatial)
    auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = ctx.ints("pads", [0] * (2 * n))
        assert pads is not None
        if len(pads) != 2 * n:
            raise BadModel(f"pads {pads} do not fit {n} spatial axes")
        if any(p < 0 for p in pads):
            raise BadModel(f"pads {pads} must be non-negative")
        return pads
    if auto == "VALID":
        return [0] * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise BadModel(f"unknown auto_pad '{auto}'")
    pairs = [same_pads(auto, spatial[i], kernel[i], strides[i], dilations[i]) for i in range(n)]
    return [b for b, _ in pairs] + [e for _, e in pairs]


def window_out(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int,
               ceil: bool = False) -> int:
    """Output length of one spatial axis; with `ceil`, ONNX ceil_mode (a last window that
    would start in the end padding is dropped)."""
    span = (kernel - 1) * dilation + 1
    q = (size + begin + end - span) / stride
    out = (math.ceil(q) if ceil else math.floor(q)) + 1
    if ceil and (out - 1) * stride >= size + begin:
        out -= 1
    if out < 1:
        raise BadModel(f"a window of {span} does not fit an axis of {size} padded by "
                       f"{begin} and {end}")
    return out


def pair(values: list[int]) -> int | list[int]:
    """An int when every entry is the same (the DSL's short form), else the list."""
    return values[0] if len(set(values)) == 1 else list(values)


def dsl_pads(pads: list[int]) -> int | list[int]:
    """ONNX pads [top, left, bottom, right] (begin..., end...) in the DSL's order, which is
    the same: [top, left, bottom, right]."""
    return pair(pads)
