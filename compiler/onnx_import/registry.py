"""One converter per ONNX operator and opset, as TVM's frontend keeps them.

`@converter("Softmax", 1)` registers a function for Softmax from opset 1 on, until a later
registration (`@converter("Softmax", 13)`) takes over: a model that declares opset N gets the
converter with the largest version <= N. An operator whose first converter is newer than the
model's opset is not supported at that opset. Each converter's docstring is its row of the
operator table in docs/ONNX.md (`operator_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Converter = Callable[[Any], None]
CONVERTERS: dict[str, dict[int, Converter]] = {}


def converter(op: str, *versions: int) -> Callable[[Converter], Converter]:
    """Register the decorated function for `op` from each of `versions` on."""
    def register(fn: Converter) -> Converter:
        for v in versions:
            table = CONVERTERS.setdefault(op, {})
            if v in table:
                raise ValueError(f"two converters for {op} at opset {v}")
            table[v] = fn
        return fn
    return register


def since_version(op: str, opset: int) -> int | None:
    """The opset in which the definition of `op` that holds at `opset` appeared (onnx's own
    schemas), None if `op` has no definition there."""
    import onnx

    try:
        return int(onnx.defs.get_schema(op, opset).since_version)
    except Exception:  # onnx.defs.SchemaError: no such operator at that opset
        return None


def lookup(op: str, opset: int) -> tuple[int, Converter] | None:
    """(the version, the converter) that applies to `op` at `opset`, or None.

    The definition of `op` in force at `opset` (onnx.defs) must be one a converter was
    registered for: a model of a newer opset whose operator changed since is refused rather
    than read with the old rules."""
    table = CONVERTERS.get(op, {})
    since = since_version(op, opset) if table else None
    if since is None or since not in table:
        return None
    return since, table[since]


def why_not(op: str, opset: int) -> str:
    """A short reason `lookup` found nothing, for the error message ('' if none to add)."""
    table = CONVERTERS.get(op, {})
    if not table:
        return ""
    since = since_version(op, opset)
    if since is None:
        return f": {op} is not defined at opset {opset}"
    if since > max(table):
        return (f": {op} changed in opset {since}, after the newest definition d1 converts "
                f"(opset {max(table)})")
    return f": d1 converts {op} from opset {min(table)} on"


def operator_table() -> list[tuple[str, list[int], str]]:
    """(operator, the opsets its converters start at, what it becomes) for every operator,
    sorted by name; the text is the converters' docstrings, one per distinct function."""
    rows = []
    for op in sorted(CONVERTERS):
        table = CONVERTERS[op]
        seen: list[Converter] = []
        texts = []
        for v in sorted(table):
            fn = table[v]
            if fn in seen:
                continue
            seen.append(fn)
            doc = " ".join((fn.__doc__ or "").split())
            first = min(w for w in table if table[w] is fn)
            texts.append((first, doc))
        if len(texts) == 1:
            rows.append((op, sorted(table), texts[0][1]))
        else:
            rows.append((op, sorted(table), " ".join(f"From opset {v}: {d}" for v, d in texts)))
    return rows
