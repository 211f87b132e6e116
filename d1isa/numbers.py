"""Rounding host values to the machine's data types, shared by the compiler's reference and the
command line.

`d1 run` of an object draws the inputs it is not given exactly as the compiler's `make_inputs`
does (a seeded standard normal, each rounded to its tensor's dtype), so the numbers are the same
whether or not the program is checked against the numpy reference. Keeping the rounding here,
below both, lets a run that does not check skip importing and re-checking the DSL program.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from d1isa.errors import D1Error


def round_to(a: Any, dtype: str) -> np.ndarray:
    """`a` rounded to `dtype`, as float32: f64 -> f32 and f32 -> bf16 round to nearest even."""
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf
        a = np.asarray(a, dtype=np.float32)
        if dtype == "bf16":
            return a.astype(ml_dtypes.bfloat16).astype(np.float32)
    return a


def draw_inputs(tensors: list[tuple[str, tuple[int, ...], str]], seed: int
                ) -> dict[str, np.ndarray]:
    """Inputs (name, shape, dtype), in declaration order, drawn from a standard normal seeded by
    `seed` and rounded to their dtypes: what `compiler.make_inputs` gives for the same
    declarations."""
    rng = np.random.default_rng(check_seed(seed))
    return {name: round_to(rng.standard_normal(shape), dtype) for name, shape, dtype in tensors}


def is_integer(value: Any) -> bool:
    """An int or a numpy integer, and not a bool (which Python counts as an int): what an
    argument that counts something, or seeds something, must be."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_seed(seed: Any, what: str = "seed") -> int:
    """A seed of numpy's default_rng: an integer >= 0, else a D1Error naming it (numpy says
    only "expected non-negative integer", or a TypeError about SeedSequence)."""
    if not is_integer(seed) or seed < 0:
        raise D1Error(f"{what} must be an integer >= 0, got {seed!r}")
    return int(seed)


def integer_arg(value: Any, what: str) -> int:
    """An integer argument of a call that the debugger's prompt also makes with text: an int
    or a numpy integer, or a str of one ("12", " -3"); anything else (a float, which int()
    truncated, a bool, None) is a D1Error naming `what`."""
    if is_integer(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isascii() and text.lstrip("+-").isdigit() and len(text) <= 100:
            return int(text)
    raise D1Error(f"{what} must be an integer, got {value!r}")
