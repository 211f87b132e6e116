"""The `--check` tolerance: compiled outputs against the reference evaluator's.

A program whose values are all f32 must match to max |err| <= 1e-4 x max(max |ref|, 1); a
program with any bf16 value to 2e-2 x max(max |ref|, 1) (summation order on the mesh differs
from numpy's, and bf16 rounding points amplify that). NaN matches NaN and an infinity matches
the same infinity; anything else non-finite on one side only is an infinite error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from compiler.ir import Graph
from d1isa.errors import D1Error

F32_TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2


def tolerance_of(graph: Graph) -> float:
    """The relative tolerance of a program: bf16 anywhere makes it the bf16 one."""
    return BF16_TOLERANCE if any(n.dtype == "bf16" for n in graph.nodes) else F32_TOLERANCE


def compare_outputs(graph_or_text: Graph | str, outputs: Mapping[str, Any],
                    reference: Mapping[str, Any]) -> list[tuple[str, float, float, float, bool]]:
    """(name, max_abs_err, max_rel_err, tolerance, ok) for every reference output, in order.

    max_rel_err is max_abs_err / max(max |ref|, 1), and tolerance is the bound on max_abs_err.
    A missing or misshapen output is not ok, with infinite errors.
    """
    for what, given in (("outputs", outputs), ("reference", reference)):
        if not isinstance(given, Mapping):
            raise D1Error(f"compare_outputs: {what} must be a mapping of output names to "
                          f"arrays, not {type(given).__name__}")
    if isinstance(graph_or_text, Graph):
        graph = graph_or_text
    else:
        from compiler import check_source
        graph = check_source(graph_or_text)
    rtol = tolerance_of(graph)
    rows = []
    for name, ref in reference.items():
        r = _real(ref, f"reference output '{name}'")
        scale = max(float(np.max(np.abs(r[np.isfinite(r)]), initial=0.0)), 1.0)
        tol = rtol * scale
        got = outputs.get(name)
        if got is None:
            rows.append((name, float("inf"), float("inf"), tol, False))
            continue
        g = _real(got, f"output '{name}'")
        if g.size == r.size and g.shape != r.shape:
            g = g.reshape(r.shape)
        if g.shape != r.shape:
            rows.append((name, float("inf"), float("inf"), tol, False))
            continue
        same = (np.isnan(g) & np.isnan(r)) | (np.isinf(g) & (g == r))
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(g - r))
        err = np.where(np.isnan(err), np.inf, err)
        worst = float(err.max()) if err.size else 0.0
        rows.append((name, worst, worst / scale, tol, bool(worst <= tol)))
    return rows


def _real(value: Any, what: str) -> np.ndarray:
    """`value` as float64, or a D1Error naming it (text, complex numbers or a ragged list were
    numpy's ValueError or TypeError)."""
    try:
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise TypeError
        return a.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise D1Error(f"compare_outputs: {what} is not an array of real numbers") from None
