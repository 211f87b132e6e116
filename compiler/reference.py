"""The numpy reference evaluator: the living definition of what every IR op computes.

Values are float32 arrays; a bf16 value is a float32 array whose elements are exactly
representable in bf16. Each op has one small kernel below. A kernel computes in f32 (exp, tanh,
sigmoid and sqrt in f64, rounded to f32; log is the f32 algorithm `log_f32`) and its result is
rounded to the node's dtype, so the only bf16 roundings are the ones the IR marks with
`Node.rounds`. erf, gelu and pow are computed in f64 too (erf and erfc are the host's libm
functions, which the emulator's verf and vgelu call as well), then rounded like exp. Compiled
code is tested against this module.

Params: `evaluate` takes their values from `params`, and draws every param it is not given from
its declaration's INIT with `init_params` (the documented generator: numpy's
`default_rng(seed)`, nothing of d1isa, so the same seed gives the same params anywhere). Grads are
evaluated through their backward pass (compiler.grad.differentiate). `evaluate` returns the
outputs by name and each update's value under `update_key(NAME)` ("update:NAME");
`train_step` runs one training step: new params and the 0-d outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from compiler.grad import differentiate
from compiler.ir import (
    Graph,
    Node,
    Op,
    format_type,
    need_graph,
    numpy_index,
    round_to,
    transpose_perm,
)
from compiler.windows import col2im, patches, pool_view, window_counts
from d1isa.errors import D1Error
from d1isa.numbers import check_seed

Kernel = Callable[..., np.ndarray]

# ---- log: a defined f32 algorithm -------------------------------------------------------------
# The ISA has no log instruction, and emulating "log in f64, rounded to f32" bit for bit from f32
# instructions would take double-f32 arithmetic throughout and still depend, in the cases that
# round twice, on the last bit of the host's f64 log. So `log` is defined as this f32 algorithm
# (Cephes' logf), which the compiled kernel (compiler.kernels.emit_log) performs instruction for
# instruction: every step below is one IEEE f32 operation, `a * b + c` is two roundings (vfma).
# Over every positive finite f32 it is within 1 ulp of the f64 log rounded to f32, and equal to
# it for 99.36 % of them (measured exhaustively).
LOG_MIN_NORMAL = 2.0 ** -126          # below this, x is scaled by 2^25 first
LOG_SUBNORMAL_SCALE = 2.0 ** 25
LOG_EXP_MASK = 0x7F800000             # the exponent bits, read as an int32: biased exponent * 2^23
LOG_MANT_MASK = 0x007FFFFF
LOG_HALF_BITS = 0x3F000000            # mantissa | these = m in [0.5, 1)
LOG_SQRT_HALF = 0.70710678118654752   # m below it is doubled (and the exponent lowered by 1)
LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
            3.3333331174e-1)
# ln 2 = LOG_LN2_HI + LOG_LN2_LO; HI has 9 significant bits, so e * HI is exact.
LOG_LN2_LO = -2.12194440e-4
LOG_LN2_HI = 0.693359375


def log_f32(x: np.ndarray) -> np.ndarray:
    """The f32 natural log of `x` (float32), step for step as the kernel computes it: x = m 2^e
    with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), log x = f - f^2/2 + f^3 P(f) + e ln 2.
    log(+-0) = -inf, log(+inf) = +inf, log of a negative value or NaN is NaN."""
    f32 = np.float32
    x = np.asarray(x, dtype=f32)
    with np.errstate(all="ignore"):
        sub = x < f32(LOG_MIN_NORMAL)
        xs = np.where(sub, x * f32(LOG_SUBNORMAL_SCALE), x)
        bits = xs.view(np.uint32)
        ebits = (bits & np.uint32(LOG_EXP_MASK)).view(np.int32).astype(f32)
        e = ebits * f32(2.0 ** -23) + np.where(sub, f32(-151.0), f32(-126.0))
        m = ((bits & np.uint32(LOG_MANT_MASK)) | np.uint32(LOG_HALF_BITS)).view(f32)
        small = m < f32(LOG_SQRT_HALF)
        f = np.where(small, m + m, m) - f32(1.0)
        e = e - np.where(small, f32(1.0), f32(0.0))
        z = f * f
        y = np.full(f.shape, LOG_POLY[0], dtype=f32)
        for c in LOG_POLY[1:]:
            y = y * f + f32(c)
        y = (y * f) * z
        y = e * f32(LOG_LN2_LO) + y
        y = z * f32(-0.5) + y
        r = f + y
        r = e * f32(LOG_LN2_HI) + r
        r = np.where(f32(0.0) < x, r, np.where(x == f32(0.0), f32(-np.inf), f32(np.nan)))
        return np.where(x == f32(np.inf), f32(np.inf), r).astype(f32)


UPDATE_PREFIX = "update:"


def update_key(name: str) -> str:
    """The key of param `name`'s updated value in `evaluate`'s result: "update:NAME" (never a
    DSL name, so it cannot clash with an output, not even with the param output itself)."""
    return UPDATE_PREFIX + name


def evaluate(graph: Graph, inputs: Mapping[str, Any], params: Mapping[str, Any] | None = None,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` (name -> array) and `params` (name -> array; every param not
    given is drawn from its INIT by `init_params(graph, seed)`).

    Returns float32 arrays: every output under its name, then every update's value (what the
    param holds after the run) under `update_key(param)`, in the order of the statements.
    """
    need_graph(graph, "evaluate")
    graph, values = evaluate_nodes(graph, inputs, params, seed)
    result = {out.name: np.array(values[out.id], dtype=np.float32) for out in graph.outputs}
    for u in graph.updates:
        result[update_key(u.param.name)] = np.array(values[u.value.id], dtype=np.float32)
    return result


def evaluate_nodes(graph: Graph, inputs: Mapping[str, Any],
                   params: Mapping[str, Any] | None = None, seed: int = 0
                   ) -> tuple[Graph, dict[int, np.ndarray]]:
    """`evaluate`, keeping every value: the differentiated graph and each of its nodes' values
    by node id (what the debugger's `tensor NAME` is compared with; a `grad(L, p)` call's
    value is that of its node in `graph.grad_calls`)."""
    graph = differentiate(graph)
    values: dict[int, np.ndarray] = dict(prepare_inputs(graph, inputs))
    values.update(prepare_params(graph, params, seed))
    with np.errstate(all="ignore"):  # inf and nan follow IEEE rules, as on the machine
        for node in graph.nodes:
            if node.op not in (Op.INPUT, Op.PARAM):
                args = [values[i.id] for i in node.inputs]
                values[node.id] = KERNELS[node.op](node, *args)
    return graph, values


def train_step(graph: Graph, params: Mapping[str, Any] | None, batch: Mapping[str, Any],
               seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One training step in numpy: run `graph` on `batch` (its inputs) and `params` (missing
    ones drawn as `evaluate` does). Returns (new params, 0-d outputs): the value of every param
    after the step (its update, or its value unchanged if it has none) as a float32 array, and
    each 0-d output as a float, by name."""
    need_graph(graph, "train_step")
    before = {n.name: values for n, values in
              zip(graph.params, _param_values(graph, params, seed), strict=True)}
    out = evaluate(graph, batch, before)
    after = {name: out.get(update_key(name), value) for name, value in before.items()}
    scalars = {o.name: float(out[o.name]) for o in graph.outputs if o.ndim == 0}
    return after, scalars


# ---- params -----------------------------------------------------------------------------------

def init_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Every param's initial value from its declaration's INIT, as float32 rounded to its dtype.

    The generator: `rng = numpy.random.default_rng(seed)`, then for each param in declaration
    order: a number fills it (no draw); `glorot` draws `rng.uniform(-a, a, shape)` with
    a = sqrt(6 / (fan_in + fan_out)), fan_in = shape[-2], fan_out = shape[-1]; `normal(STD)`
    draws `rng.normal(0, STD, shape)`. Draws are float64, then rounded to f32 (and to bf16 for
    a bf16 param). Only the random inits consume the generator, so a param's value depends on
    the seed and on the random params declared before it, nothing else.

    `seed` is an integer >= 0 (anything else is a D1Error: `check_seed`).
    """
    need_graph(graph, "init_params")
    rng = np.random.default_rng(check_seed(seed, "the seed of the params' INITs"))
    out: dict[str, np.ndarray] = {}
    for p in graph.params:
        init = p.init
        if init.kind == "glorot":
            a = np.sqrt(6.0 / (p.shape[-2] + p.shape[-1]))
            drawn = rng.uniform(-a, a, size=p.shape)
        elif init.kind == "normal":
            drawn = rng.normal(0.0, init.value, size=p.shape)
        else:
            drawn = np.full(p.shape, init.value)
        out[p.name] = round_to(drawn, p.dtype)
    return out


def _param_values(graph: Graph, params: Mapping[str, Any] | None, seed: int) -> list[np.ndarray]:
    """Each param's value in declaration order: given (checked, rounded to its dtype) or
    drawn from its INIT."""
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise D1Error(f"params must be a mapping from param name to array, "
                      f"got {type(params).__name__}")
    declared = {p.name for p in graph.params}
    extra = sorted(str(k) for k in params if k not in declared)
    if extra:
        known = ", ".join(p.name for p in graph.params) or "none"
        raise D1Error(f"{', '.join(repr(e) for e in extra)}: not a param of this program "
                      f"(its params: {known})")
    drawn = init_params(graph, seed) if len(params) < len(declared) else {}
    return [_as_input(p, params[p.name], "param") if p.name in params else drawn[p.name]
            for p in graph.params]


def prepare_params(graph: Graph, params: Mapping[str, Any] | None, seed: int = 0
                   ) -> dict[int, np.ndarray]:
    """Every param's value keyed by node id (see `_param_values`)."""
    return {p.id: v for p, v in zip(graph.params, _param_values(graph, params, seed),
                                    strict=True)}


def prepare_inputs(graph: Graph, inputs: Mapping[str, Any]) -> dict[int, np.ndarray]:
    """Check names and shapes and round each input to its declared dtype; keyed by node id.

    Entries that name no input are ignored, so one dict can feed several programs; a misspelt
    name still fails, as the input it was meant for is then missing.
    """
    if not isinstance(inputs, Mapping):
        raise D1Error(f"inputs must be a mapping from input name to array, "
                      f"got {type(inputs).__name__}")
    declared = {n.name: n for n in graph.inputs}
    out: dict[int, np.ndarray] = {}
    for name, node in declared.items():
        if name not in inputs:
            extra = sorted(str(k) for k in inputs if k not in declared)
            hint = f"; given instead: {', '.join(extra)}" if extra else ""
            raise D1Error(f"missing input '{name}' ({format_type(node.shape, node.dtype)})"
                          f"{hint}")
        out[node.id] = _as_input(node, inputs[name])
    return out


def _as_input(node: Node, value: Any, kind: str = "input") -> np.ndarray:
    try:
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":      # complex, object, str, datetime, ...
            raise TypeError
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise D1Error(f"{kind} '{node.name}' must be an array of real numbers") from None
    if a.shape != node.shape:
        raise D1Error(f"{kind} '{node.name}' has shape {a.shape}, expected {node.shape}")
    return round_to(a, node.dtype)


# ---- kernels ----------------------------------------------------------------------------------

def _rounding(fn: Callable[..., Any]) -> Kernel:
    """A kernel that computes `fn` and rounds the result to the node's dtype."""
    return lambda node, *args: round_to(fn(*args), node.dtype)


def _in_f64(fn: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    """A transcendental kernel: computed in f64, rounded to f32, then to the node's dtype."""
    return lambda node, x: round_to(fn(x.astype(np.float64)), node.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sum(node: Node, x: np.ndarray) -> np.ndarray:
    return round_to(np.sum(x, axis=node.axis, dtype=np.float32), node.dtype)


def _mean(node: Node, x: np.ndarray) -> np.ndarray:
    total = np.sum(x, axis=node.axis, dtype=np.float32)
    return round_to(total / np.float32(x.shape[node.axis]), node.dtype)


def _log_softmax(node: Node, x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=node.axis, keepdims=True)
    e = round_to(np.exp(shifted.astype(np.float64)), "f32")
    total = np.sum(e, axis=node.axis, keepdims=True, dtype=np.float32)
    return round_to(shifted - log_f32(total), node.dtype)


def _max_mask(node: Node, x: np.ndarray) -> np.ndarray:
    first = np.expand_dims(np.argmax(x, axis=node.axis), node.axis)  # argmax: the first maximum
    out = np.zeros(x.shape, dtype=np.float32)
    np.put_along_axis(out, first, np.float32(1), axis=node.axis)
    return out


def _erf64(x: np.ndarray) -> np.ndarray:
    return _ERF64(x)


def _gelu64(x: np.ndarray) -> np.ndarray:
    """The erf form of GELU as the machine's vgelu computes it: 0.5 x erfc(-x / sqrt(2)) in f64
    (the same function as 0.5 x (1 + erf(x / sqrt(2))), without its cancellation for x < 0)."""
    return 0.5 * x * _ERFC64(-x / math.sqrt(2.0))


# math.erf and math.erfc are the host's libm functions, as the emulator's verf and vgelu use.
_ERF64 = np.vectorize(math.erf, otypes=[np.float64])
_ERFC64 = np.vectorize(math.erfc, otypes=[np.float64])


def _pow(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a ** b computed in f64 (IEEE/C pow: a negative base to a non-integer power is NaN, zero
    to a negative power is inf), rounded to f32, then to the node's dtype."""
    return round_to(np.power(a.astype(np.float64), b.astype(np.float64)), node.dtype)


def _where(node: Node, c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(c != 0, a, b)       # a NaN condition is nonzero: a


def _argmax(node: Node, x: np.ndarray) -> np.ndarray:
    """The index of the first maximum (a NaN counts as the maximum, as numpy's argmax has it),
    as a value of x's dtype: exact in f32, rounded to bf16 (exact up to 256) for bf16."""
    return round_to(np.argmax(x, axis=node.axis).astype(np.float64), node.dtype)


def _layernorm(node: Node, x: np.ndarray) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) along the axis, every step in f32: mean = sum / n,
    var = sum((x - mean)^2) / n (f32 sums), sqrt correctly rounded; rounded once at the end."""
    n = np.float32(x.shape[node.axis])
    mean = np.sum(x, axis=node.axis, keepdims=True, dtype=np.float32) / n
    d = x - mean
    var = np.sum(d * d, axis=node.axis, keepdims=True, dtype=np.float32) / n
    return round_to(d / np.sqrt(var + np.float32(node.value)), node.dtype)


def _softmax(node: Node, x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=node.axis, keepdims=True)
    e = round_to(np.exp(shifted.astype(np.float64)), "f32")
    return round_to(e / np.sum(e, axis=node.axis, keepdims=True, dtype=np.float32), node.dtype)


def _unslice(node: Node, g: np.ndarray) -> np.ndarray:
    out = np.zeros(node.shape, dtype=np.float32)
    out[numpy_index(node.index)] = g
    return out


def _conv2d(node: Node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The patches of x times the weights as a [K, C R S] matrix: f32 products, f32 sums."""
    n, k, oh, ow = node.shape
    cols = patches(x, node.window)
    y = np.matmul(cols, w.reshape(k, -1).T, dtype=np.float32)
    return np.ascontiguousarray(y.reshape(n, oh, ow, k).transpose(0, 3, 1, 2))


def _conv2d_transpose(node: Node, g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """col2im of (g as [N H' W', K]) @ (w as [K, C R S])."""
    k = w.shape[0]
    rows = g.transpose(0, 2, 3, 1).reshape(-1, k)
    return col2im(np.matmul(rows, w.reshape(k, -1), dtype=np.float32), node.shape, node.window)


def _avgpool2d(node: Node, x: np.ndarray) -> np.ndarray:
    """The window's elements summed in f32 one after the other in window order (padding adds
    0), divided in f32 by the count, rounded once."""
    taps = pool_view(x, node.window, 0.0)
    total = np.zeros(taps.shape[:-1], dtype=np.float32)
    for t in range(taps.shape[-1]):
        total = total + taps[..., t]
    return round_to(total / window_counts(node.window, *x.shape[2:]), node.dtype)


KERNELS: dict[Op, Kernel] = {
    Op.CONST: lambda node: np.full(node.shape, node.value, dtype=np.float32),
    Op.BROADCAST: lambda node, x: np.broadcast_to(x, node.shape),
    Op.CAST: lambda node, x: round_to(x, node.dtype),
    Op.TRANSPOSE: lambda node, x: np.ascontiguousarray(np.transpose(x, transpose_perm(node))),
    Op.RESHAPE: lambda node, x: np.reshape(x, node.shape),
    Op.NEG: lambda node, x: -x,
    Op.ABS: lambda node, x: np.abs(x),
    Op.RELU: lambda node, x: np.maximum(x, np.float32(0)),
    Op.EXP: _in_f64(np.exp),
    Op.TANH: _in_f64(np.tanh),
    Op.SIGMOID: _in_f64(_sigmoid),
    Op.SQRT: _in_f64(np.sqrt),
    Op.LOG: lambda node, x: round_to(log_f32(x), node.dtype),
    Op.ERF: _in_f64(_erf64),
    Op.GELU: _in_f64(_gelu64),
    Op.ADD: _rounding(np.add),
    Op.SUB: _rounding(np.subtract),
    Op.MUL: _rounding(np.multiply),
    Op.DIV: _rounding(np.divide),
    Op.MAXIMUM: lambda node, a, b: np.maximum(a, b),
    Op.MINIMUM: lambda node, a, b: np.minimum(a, b),
    Op.GT: lambda node, a, b: (a > b).astype(np.float32),
    Op.GE: lambda node, a, b: (a >= b).astype(np.float32),
    Op.LT: lambda node, a, b: (a < b).astype(np.float32),
    Op.LE: lambda node, a, b: (a <= b).astype(np.float32),
    Op.EQ: lambda node, a, b: (a == b).astype(np.float32),
    Op.NE: lambda node, a, b: (a != b).astype(np.float32),
    Op.POW: _pow,
    Op.WHERE: _where,
    Op.MATMUL: lambda node, a, b: np.matmul(a, b, dtype=np.float32),
    Op.SUM: _sum,
    Op.MAX: lambda node, x: np.max(x, axis=node.axis),
    Op.MEAN: _mean,
    Op.MIN: lambda node, x: np.min(x, axis=node.axis),
    Op.ARGMAX: _argmax,
    Op.LAYERNORM: _layernorm,
    Op.SOFTMAX: _softmax,
    Op.LOG_SOFTMAX: _log_softmax,
    Op.MAX_MASK: _max_mask,
    Op.SLICE: lambda node, x: np.array(x[numpy_index(node.index)], dtype=np.float32),
    Op.UNSLICE: _unslice,
    Op.CONCAT: lambda node, *xs: np.concatenate(xs, axis=node.axis),
    Op.CONV2D: _conv2d,
    Op.CONV2D_TRANSPOSE: _conv2d_transpose,
    Op.MAXPOOL2D: lambda node, x: np.max(pool_view(x, node.window, -np.inf), axis=-1),
    Op.AVGPOOL2D: _avgpool2d,
    Op.IM2COL: lambda node, x: patches(x, node.window, node.value),
    Op.COL2IM: lambda node, p: round_to(col2im(p, node.shape, node.window), node.dtype),
}
