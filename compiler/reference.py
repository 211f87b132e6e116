"""The numpy reference evaluator: the living definition of what every IR op computes.

Values are float32 arrays; a bf16 value is a float32 array whose elements are exactly
representable in bf16. Each op has one small kernel below. A kernel computes in f32 (the
transcendental ones in f64, rounded to f32) and its result is rounded to the node's dtype, so the
only bf16 roundings are the ones the IR marks with `Node.rounds`. Compiled code is tested
against this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from compiler.ir import Graph, Node, Op, format_type, round_to
from d1isa.errors import D1Error

Kernel = Callable[..., np.ndarray]


def evaluate(graph: Graph, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` (name -> array); return every output as a float32 array."""
    values: dict[int, np.ndarray] = dict(prepare_inputs(graph, inputs))
    with np.errstate(all="ignore"):  # inf and nan follow IEEE rules, as on the machine
        for node in graph.nodes:
            if node.op is not Op.INPUT:
                args = [values[i.id] for i in node.inputs]
                values[node.id] = KERNELS[node.op](node, *args)
    return {out.name: np.array(values[out.id], dtype=np.float32) for out in graph.outputs}


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


def _as_input(node: Node, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value)
        if np.iscomplexobj(a) or a.dtype == object:
            raise TypeError
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise D1Error(f"input '{node.name}' must be an array of real numbers") from None
    if a.shape != node.shape:
        raise D1Error(f"input '{node.name}' has shape {a.shape}, expected {node.shape}")
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


def _softmax(node: Node, x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x, axis=node.axis, keepdims=True)
    e = round_to(np.exp(shifted.astype(np.float64)), "f32")
    return round_to(e / np.sum(e, axis=node.axis, keepdims=True, dtype=np.float32), node.dtype)


KERNELS: dict[Op, Kernel] = {
    Op.CONST: lambda node: np.full(node.shape, node.value, dtype=np.float32),
    Op.BROADCAST: lambda node, x: np.broadcast_to(x, node.shape),
    Op.CAST: lambda node, x: round_to(x, node.dtype),
    Op.TRANSPOSE: lambda node, x: np.ascontiguousarray(x.T),
    Op.NEG: lambda node, x: -x,
    Op.ABS: lambda node, x: np.abs(x),
    Op.RELU: lambda node, x: np.maximum(x, np.float32(0)),
    Op.EXP: _in_f64(np.exp),
    Op.TANH: _in_f64(np.tanh),
    Op.SIGMOID: _in_f64(_sigmoid),
    Op.SQRT: _in_f64(np.sqrt),
    Op.ADD: _rounding(np.add),
    Op.SUB: _rounding(np.subtract),
    Op.MUL: _rounding(np.multiply),
    Op.DIV: _rounding(np.divide),
    Op.MAXIMUM: lambda node, a, b: np.maximum(a, b),
    Op.MINIMUM: lambda node, a, b: np.minimum(a, b),
    Op.MATMUL: lambda node, a, b: np.matmul(a, b, dtype=np.float32),
    Op.SUM: _sum,
    Op.MAX: lambda node, x: np.max(x, axis=node.axis),
    Op.MEAN: _mean,
    Op.SOFTMAX: _softmax,
}
