"""Helpers for the gradient tests: a float64 forward evaluator of the IR (no rounding anywhere),
central finite differences with it, and seeded leaf values rounded to their dtypes."""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import Graph, Node, Op, numpy_index, round_to, transpose_perm
from compiler.reference import KERNELS
from compiler.windows import im2col_index, window_counts


def _softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


_ERF = np.vectorize(math.erf, otypes=[float])


def _layernorm64(x: np.ndarray, axis: int, eps: float) -> np.ndarray:
    d = x - x.mean(axis=axis, keepdims=True)
    return d / np.sqrt((d * d).mean(axis=axis, keepdims=True) + eps)


F64 = {
    Op.CONST: lambda n: np.full(n.shape, n.value),
    Op.BROADCAST: lambda n, x: np.broadcast_to(x, n.shape),
    Op.CAST: lambda n, x: x,
    Op.TRANSPOSE: lambda n, x: np.transpose(x, transpose_perm(n)),
    Op.RESHAPE: lambda n, x: np.reshape(x, n.shape),
    Op.NEG: lambda n, x: -x,
    Op.ABS: lambda n, x: np.abs(x),
    Op.RELU: lambda n, x: np.maximum(x, 0.0),
    Op.EXP: lambda n, x: np.exp(x),
    Op.TANH: lambda n, x: np.tanh(x),
    Op.SIGMOID: lambda n, x: 1 / (1 + np.exp(-x)),
    Op.SQRT: lambda n, x: np.sqrt(x),
    Op.LOG: lambda n, x: np.log(x),
    Op.ADD: lambda n, a, b: a + b,
    Op.SUB: lambda n, a, b: a - b,
    Op.MUL: lambda n, a, b: a * b,
    Op.DIV: lambda n, a, b: a / b,
    Op.MAXIMUM: lambda n, a, b: np.maximum(a, b),
    Op.MINIMUM: lambda n, a, b: np.minimum(a, b),
    Op.GT: lambda n, a, b: (a > b).astype(float),
    Op.GE: lambda n, a, b: (a >= b).astype(float),
    Op.LT: lambda n, a, b: (a < b).astype(float),
    Op.LE: lambda n, a, b: (a <= b).astype(float),
    Op.EQ: lambda n, a, b: (a == b).astype(float),
    Op.NE: lambda n, a, b: (a != b).astype(float),
    Op.WHERE: lambda n, c, a, b: np.where(c != 0, a, b),
    Op.POW: lambda n, a, b: np.power(a, b),
    Op.ERF: lambda n, x: _ERF(x),
    Op.GELU: lambda n, x: 0.5 * x * (1 + _ERF(x / np.sqrt(2.0))),
    Op.MIN: lambda n, x: x.min(axis=n.axis),
    Op.ARGMAX: lambda n, x: np.argmax(x, axis=n.axis).astype(float),
    Op.LAYERNORM: lambda n, x: _layernorm64(x, n.axis, n.value),
    Op.MATMUL: lambda n, a, b: a @ b,
    Op.SUM: lambda n, x: x.sum(axis=n.axis),
    Op.MEAN: lambda n, x: x.mean(axis=n.axis),
    Op.MAX: lambda n, x: x.max(axis=n.axis),
    Op.SOFTMAX: lambda n, x: _softmax64(x, n.axis),
    Op.LOG_SOFTMAX: lambda n, x: _log_softmax64(x, n.axis),
    Op.MAX_MASK: lambda n, x: KERNELS[Op.MAX_MASK](n, x).astype(float),
    Op.SLICE: lambda n, x: x[numpy_index(n.index)],
    Op.UNSLICE: lambda n, g: _unslice64(n, g),
    Op.CONCAT: lambda n, *xs: np.concatenate(xs, axis=n.axis),
    Op.IM2COL: lambda n, x: _patches64(x, n.window, n.value),
    Op.COL2IM: lambda n, p: _col2im64(p, n.shape, n.window),
    Op.CONV2D: lambda n, x, w: _conv64(n, x, w),
    Op.CONV2D_TRANSPOSE: lambda n, g, w: _col2im64(
        g.transpose(0, 2, 3, 1).reshape(-1, w.shape[0]) @ w.reshape(w.shape[0], -1),
        n.shape, n.window),
    Op.MAXPOOL2D: lambda n, x: _pool64(x, n.window, -np.inf).max(axis=-1),
    Op.AVGPOOL2D: lambda n, x: (_pool64(x, n.window, 0.0).sum(axis=-1)
                                / window_counts(n.window, *x.shape[2:])),
}


def _patches64(x: np.ndarray, win, fill: float) -> np.ndarray:
    idx = im2col_index(x.shape, win)
    return np.where(idx >= 0, x.ravel()[np.maximum(idx, 0)], fill)


def _col2im64(p: np.ndarray, shape, win) -> np.ndarray:
    idx = im2col_index(shape, win).ravel()
    out = np.zeros(int(np.prod(shape)))
    np.add.at(out, idx[idx >= 0], p.ravel()[idx >= 0])
    return out.reshape(shape)


def _conv64(n: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    nb, k, oh, ow = n.shape
    y = _patches64(x, n.window, 0.0) @ w.reshape(k, -1).T
    return y.reshape(nb, oh, ow, k).transpose(0, 3, 1, 2)


def _pool64(x: np.ndarray, win, fill: float) -> np.ndarray:
    nb, c, h, w = x.shape
    oh, ow = win.out_hw(h, w)
    return _patches64(x.reshape(nb * c, 1, h, w), win, fill).reshape(nb, c, oh, ow, -1)


def _unslice64(n: Node, g: np.ndarray) -> np.ndarray:
    out = np.zeros(n.shape)
    out[numpy_index(n.index)] = g
    return out


def forward64(graph: Graph, target: Node, leaves: dict[str, np.ndarray]) -> np.ndarray:
    """The value of `target` computed in float64, from leaf values by name."""
    need = {target.id}
    for n in reversed(graph.nodes[:target.id + 1]):
        if n.id in need:
            need.update(i.id for i in n.inputs)
    values: dict[int, np.ndarray] = {}
    for n in graph.nodes[:target.id + 1]:
        if n.id not in need:
            continue
        if n.op in (Op.INPUT, Op.PARAM):
            values[n.id] = np.asarray(leaves[n.name], dtype=np.float64)
        else:
            values[n.id] = F64[n.op](n, *(values[i.id] for i in n.inputs))
    return values[target.id]


def finite_difference(graph: Graph, loss: str, leaves: dict[str, np.ndarray], wrt: str,
                      h: float = 1e-6) -> np.ndarray:
    """dloss/dwrt by central differences in float64."""
    target = graph[loss]
    base = {k: np.array(v, dtype=np.float64) for k, v in leaves.items()}
    out = np.zeros(base[wrt].shape)
    for idx in np.ndindex(out.shape):
        x = base[wrt][idx]
        base[wrt][idx] = x + h
        up = float(forward64(graph, target, base))
        base[wrt][idx] = x - h
        down = float(forward64(graph, target, base))
        base[wrt][idx] = x
        out[idx] = (up - down) / (2 * h)
    return out


def leaf_values(graph: Graph, seed: int, positive: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Seeded standard-normal values for every input and param, rounded to f32 (those named in
    `positive` in [0.5, 2.5))."""
    rng = np.random.default_rng(seed)
    out = {}
    for n in graph.inputs + graph.params:
        v = rng.uniform(0.5, 2.5, n.shape) if n.name in positive else rng.standard_normal(n.shape)
        out[n.name] = round_to(v, n.dtype)
    return out
