"""DSL expressions as text, parenthesised by precedence, with the language features they use.

Converters build each statement's right-hand side from these helpers instead of formatting
strings, so an operand is wrapped in parentheses exactly when the DSL's precedence needs it
(docs/DSL.md, loosest first: comparisons, `+ -`, `* / @`, unary `-`, `**`, atoms), and every
expression knows which of the newer forms (FEATURES) it relies on: the importer reports them,
so a test can tell "this build has no `where` yet" from a wrong conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CMP, ADD, MUL, UNARY, POW, ATOM = range(6)
_PREC = {"<": CMP, "<=": CMP, ">": CMP, ">=": CMP, "==": CMP, "!=": CMP,
         "+": ADD, "-": ADD, "*": MUL, "/": MUL, "@": MUL, "**": POW}

# The forms of the language issue (docs/DSL.md), by the name a feature probe uses.
FEATURES = ("compare", "where", "pow", "erf", "gelu", "min_reduce", "argmax", "layernorm",
            "reshape", "concat", "slice", "transpose_perm", "batched_matmul", "conv2d",
            "maxpool2d", "avgpool2d")
_CALL_FEATURES = {"where": "where", "erf": "erf", "gelu": "gelu", "min": "min_reduce",
                  "argmax": "argmax", "layernorm": "layernorm", "reshape": "reshape",
                  "concat": "concat", "conv2d": "conv2d", "maxpool2d": "maxpool2d",
                  "avgpool2d": "avgpool2d", "pow": "pow"}


class ConstantError(ValueError):
    """A number the DSL has no literal for (inf, nan)."""


@dataclass(frozen=True)
class E:
    """An expression: its text, the precedence of its outermost operator, the features used."""

    text: str
    prec: int = ATOM
    features: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.text


def _feat(*parts: object) -> frozenset[str]:
    out: set[str] = set()
    for p in parts:
        if isinstance(p, E):
            out |= p.features
    return frozenset(out)


def name(n: str) -> E:
    return E(n)


def number(v: float) -> E:
    """A literal for `v`: the shortest decimal that rounds back to the same float32 (or the
    integer itself), so the DSL, which rounds a literal to the dtype of the tensor it meets,
    sees exactly the ONNX constant."""
    v = float(v)
    if math.isnan(v):
        raise ConstantError(f"the constant {v} has no DSL literal")
    if math.isinf(v):       # beyond every dtype's range: the DSL rounds it to infinity
        return E("1e39" if v > 0 else "-1e39", ATOM if v > 0 else UNARY)
    if v == int(v) and abs(v) < 2 ** 24 and not (v == 0 and math.copysign(1, v) < 0):
        text = str(int(v))
    else:
        text = str(np.float32(v))
    return E(text, UNARY if text.startswith("-") else ATOM)


def wrap(e: E, need: bool) -> str:
    return f"({e.text})" if need else e.text


def binop(op: str, a: E, b: E) -> E:
    p = _PREC[op]
    if op == "**":      # right associative; a negated operand needs parentheses either side
        text = f"{wrap(a, a.prec < ATOM)} ** {wrap(b, b.prec < POW)}"
    else:
        text = f"{wrap(a, a.prec < p or (p == CMP and a.prec == CMP))} {op} " \
               f"{wrap(b, b.prec <= p)}"
    features = _feat(a, b) | ({"compare"} if p == CMP else set()) \
        | ({"pow"} if op == "**" else set())
    return E(text, p, frozenset(features))


def neg(a: E) -> E:
    return E(f"-{wrap(a, a.prec <= UNARY)}", UNARY, a.features)


def _arg(a: object) -> tuple[str, frozenset[str]]:
    if isinstance(a, E):
        return a.text, a.features
    if isinstance(a, list | tuple):
        parts = [_arg(x) for x in a]
        return "[" + ", ".join(t for t, _ in parts) + "]", frozenset().union(
            *(f for _, f in parts))
    if isinstance(a, bool):
        return str(int(a)), frozenset()
    if isinstance(a, int | np.integer):
        return str(int(a)), frozenset()
    if isinstance(a, float | np.floating):
        return number(float(a)).text, frozenset()
    if isinstance(a, str):          # a dtype or another bare word
        return a, frozenset()
    raise TypeError(f"cannot write {a!r} as a DSL argument")


def call(fn: str, *args: object, **keywords: object) -> E:
    """`fn(args..., key=value...)`; keyword arguments whose value is None are left out."""
    parts = [_arg(a) for a in args]
    parts += [(f"{k}={t}", f) for k, v in keywords.items() if v is not None
              for t, f in [_arg(v)]]
    features = frozenset().union(*(f for _, f in parts)) if parts else frozenset()
    extra = {_CALL_FEATURES[fn]} if fn in _CALL_FEATURES else set()
    if fn == "transpose" and len(args) > 1:
        extra.add("transpose_perm")
    return E(f"{fn}({', '.join(t for t, _ in parts)})", ATOM, features | extra)


def index(x: E, items: list[str]) -> E:
    """`x[items...]` (each item already written: `a:b:c`, `:` or an integer)."""
    return E(f"{wrap(x, x.prec < ATOM)}[{', '.join(items)}]", ATOM, x.features | {"slice"})


def with_features(e: E, *features: str) -> E:
    return E(e.text, e.prec, e.features | frozenset(features))
