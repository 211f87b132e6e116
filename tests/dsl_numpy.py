"""A numpy reading of `.d1k` text, for checking what the ONNX importer writes.

The importer writes forms the language issue adds (where, reshape, slicing, conv2d, pooling,
...) that a build of the compiler may not have yet. This module reads such a program line by
line with numpy, each builtin written from its definition in the language issue (the same
table docs/DSL.md carries), so the converters' choices (axes, shapes, pads, windows, ceil
mode) are checked against onnx's expected outputs whether or not this build compiles them.
It is a test oracle for the importer's text, not the compiler's reference evaluator
(compiler/reference.py): it keeps float32 throughout and rounds to bf16 only at `cast`, and
expressions are evaluated as Python, which has the DSL's precedence for every operator the
importer writes.
"""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np

F32 = np.float32
_DECL = re.compile(r"(input|param)\s+(\w+)\s*:\s*(\w+)\[([\d,\s]*)\]")


def _f(x: object) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def _bf16(x: object) -> np.ndarray:
    return _f(x).astype(ml_dtypes.bfloat16).astype(F32)


def _reduce(fn):
    def reduce(x, axis=None, keepdims=0):
        return _f(fn(_f(x), axis=axis, keepdims=bool(keepdims)))
    return reduce


def _softmax(x, axis):
    x = _f(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return _f(e / e.sum(axis=axis, keepdims=True))


def _log_softmax(x, axis):
    x = _f(x)
    s = x - x.max(axis=axis, keepdims=True)
    return _f(s - np.log(np.exp(s).sum(axis=axis, keepdims=True)))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _four(v, n: int = 2) -> list[int]:
    return [int(v)] * n if isinstance(v, int | np.integer) else [int(x) for x in v]


def _pads(pad) -> list[int]:
    """[top, left, bottom, right]."""
    return [int(pad)] * 4 if isinstance(pad, int | np.integer) else [int(p) for p in pad]


def _windows(x, size, stride, pad, dilation, ceil, fill_pad, fill_beyond):
    """Every window's values, [..., KH*KW, OH, OW], padding with `fill_pad` (explicit pads)
    and `fill_beyond` (what ceil mode reads past them)."""
    kh, kw = _four(size)
    sh, sw = _four(stride)
    dh, dw = _four(dilation)
    top, left, bottom, right = _pads(pad)
    h, w = x.shape[-2:]
    outs = []
    for n, k, s, d, b, e in ((h, kh, sh, dh, top, bottom), (w, kw, sw, dw, left, right)):
        span = (k - 1) * d + 1
        q = (n + b + e - span) / s
        o = (math.ceil(q) if ceil else math.floor(q)) + 1
        if ceil and (o - 1) * s >= n + b:
            o -= 1
        outs.append(o)
    oh, ow = outs
    need_h = (oh - 1) * sh + (kh - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw - 1) * dw + 1
    lead = x.shape[:-2]
    full = np.full((*lead, max(need_h, h + top + bottom), max(need_w, w + left + right)),
                   fill_beyond, dtype=np.float64)
    full[..., :h + top + bottom, :w + left + right] = fill_pad
    full[..., top:top + h, left:left + w] = x
    vals = [full[..., i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            for i in range(kh) for j in range(kw)]
    return np.stack(vals, axis=-3)


def _maxpool2d(x, size, stride=None, pad=0, dilation=1, ceil=0):
    v = _windows(_f(x), size, size if stride is None else stride, pad, dilation, ceil,
                 np.nan, np.nan)
    return _f(np.nanmax(v, axis=-3))


def _avgpool2d(x, size, stride=None, pad=0, dilation=1, ceil=0, count_pad=0):
    v = _windows(_f(x), size, size if stride is None else stride, pad, dilation, ceil,
                 0.0 if count_pad else np.nan, np.nan)
    return _f(np.nanmean(v, axis=-3))


def _conv2d(x, w, stride=1, pad=0, dilation=1):
    x, w = _f(x), _f(w)
    k, c, r, s = w.shape
    sh, sw = _four(stride)
    dh, dw = _four(dilation)
    top, left, bottom, right = _pads(pad)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (xp.shape[2] - ((r - 1) * dh + 1)) // sh + 1
    ow = (xp.shape[3] - ((s - 1) * dw + 1)) // sw + 1
    out = np.zeros((x.shape[0], k, oh, ow))
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                       j * dw:j * dw + (ow - 1) * sw + 1:sw]
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j])
    return _f(out)


def _layernorm(x, axis=-1, eps=1e-5):
    x = _f(x).astype(np.float64)
    m = x.mean(axis=axis, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axis, keepdims=True)
    return _f((x - m) / np.sqrt(v + eps))


def _transpose(x, perm=None):
    return _f(np.transpose(_f(x), perm))


BUILTINS = {
    "relu": lambda x: _f(np.maximum(x, 0)), "exp": lambda x: _f(np.exp(x)),
    "tanh": lambda x: _f(np.tanh(x)), "sigmoid": lambda x: _f(1 / (1 + np.exp(-_f(x)))),
    "sqrt": lambda x: _f(np.sqrt(x)), "abs": lambda x: _f(np.abs(x)),
    "log": lambda x: _f(np.log(x)), "erf": lambda x: _f(_erf(x)),
    "gelu": lambda x: _f(0.5 * _f(x) * (1 + _erf(_f(x) / math.sqrt(2)))),
    "maximum": lambda a, b: _f(np.maximum(a, b)), "minimum": lambda a, b: _f(np.minimum(a, b)),
    "sum": _reduce(np.sum), "mean": _reduce(np.mean), "max": _reduce(np.max),
    "min": _reduce(np.min), "softmax": _softmax, "log_softmax": _log_softmax,
    "transpose": _transpose, "where": lambda c, a, b: _f(np.where(_f(c) != 0, a, b)),
    "pow": lambda a, b: _f(np.power(_f(a), b)),
    "cast": lambda x, dt: _bf16(x) if dt == "bf16" else _f(x),
    "reshape": lambda x, shape: _f(np.reshape(x, shape)),
    "concat": lambda *xs, axis: _f(np.concatenate([_f(x) for x in xs], axis=axis)),
    "layernorm": _layernorm, "conv2d": _conv2d, "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d, "f32": "f32", "bf16": "bf16",
}


def run_text(text: str, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]
             ) -> dict[str, np.ndarray]:
    """Every output of the program `text`, as float32 arrays by name."""
    env: dict[str, object] = dict(BUILTINS)
    outputs: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _DECL.match(line)
        if m:
            kind, name, dtype, _ = m.groups()
            value = (inputs if kind == "input" else params)[name]
            env[name] = _bf16(value) if dtype == "bf16" else _f(value)
        elif line.startswith("output "):
            outputs += [n.strip() for n in line[len("output "):].split(",")]
        else:
            name, expr = (s.strip() for s in line.split("=", 1))
            with np.errstate(all="ignore"):
                value = eval(expr, {"__builtins__": {}}, env)  # noqa: S307 (test oracle)
            env[name] = _f(value) if not isinstance(value, float | int) else value
    return {n: _f(env[n]) for n in outputs}
