"""CFP8, the configurable 8-bit floating-point formats, as a numpy reference.

Two layouts: 1-4-3 (sign, 4 exponent bits, 3 mantissa bits) and 1-5-2. The exponent bias is a
configurable unsigned 6-bit value (0..63). Normal values are (-1)^s x 1.m x 2^(E - bias). E = 0
encodes zero (m = 0) or a denormal 0.m x 2^(-bias), as the Dojo floating-point paper gives it.
There is no Inf and no NaN: every code is a finite number, and converting a value beyond the
largest magnitude clamps to it (infinities too); NaN converts to +0.

The conversion instructions will take opcodes from the reserved range 0xe0..0xef (docs/ISA.md);
this module is their definition and the reference the emulator will be tested against.
"""

from __future__ import annotations

from functools import cache

import numpy as np

LAYOUTS = {"1-4-3": (4, 3), "1-5-2": (5, 2)}
MAX_BIAS = 63


def _check(layout: str, bias: int) -> tuple[int, int]:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown CFP8 layout '{layout}'; layouts: {', '.join(LAYOUTS)}")
    if not (0 <= bias <= MAX_BIAS):
        raise ValueError(f"CFP8 bias must be 0..{MAX_BIAS}, got {bias}")
    return LAYOUTS[layout]


@cache
def value_table(layout: str, bias: int) -> np.ndarray:
    """float64[256]: the value of every code."""
    e_bits, m_bits = _check(layout, bias)
    codes = np.arange(256)
    sign = np.where(codes >> 7, -1.0, 1.0)
    e = (codes >> m_bits) & ((1 << e_bits) - 1)
    m = codes & ((1 << m_bits) - 1)
    frac = m / float(1 << m_bits)
    normal = (1.0 + frac) * np.exp2(e.astype(np.float64) - bias)
    denormal = frac * np.exp2(-float(bias))
    out = sign * np.where(e == 0, denormal, normal)
    out.setflags(write=False)
    return out


def decode(codes: np.ndarray, layout: str = "1-4-3", bias: int = 7) -> np.ndarray:
    """CFP8 codes (uint8) -> float32 values (exact: every CFP8 value fits fp32)."""
    return value_table(layout, bias)[np.asarray(codes, dtype=np.uint8)].astype(np.float32)


def max_value(layout: str = "1-4-3", bias: int = 7) -> float:
    return float(value_table(layout, bias)[0x7F])


@cache
def _positive(layout: str, bias: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes of codes 0x00..0x7f, which increase with the code, and those codes."""
    v = value_table(layout, bias)[:128]
    assert np.all(np.diff(v) > 0), "CFP8 magnitudes must increase with the code"
    return v, np.arange(128, dtype=np.uint8)


def encode(values: np.ndarray, layout: str = "1-4-3", bias: int = 7,
           rounding: str = "nearest", random_bits: np.ndarray | None = None) -> np.ndarray:
    """float values -> CFP8 codes (uint8).

    `rounding="nearest"`: round to the nearest value, ties to the even code (mantissa LSB 0).
    `rounding="stochastic"`: round up with probability (x - lo) / (hi - lo), using one uint16
    from `random_bits` per value (round up when r < (x - lo) / (hi - lo) x 65536), so the result
    is reproducible given the same bits. Magnitudes beyond the largest value clamp to it; NaN
    becomes +0; the sign of zero is kept.
    """
    x = np.asarray(values, dtype=np.float64)
    mags, codes = _positive(layout, bias)
    a = np.abs(np.nan_to_num(x, nan=0.0, posinf=np.inf, neginf=-np.inf))
    a = np.minimum(a, mags[-1])
    hi_idx = np.clip(np.searchsorted(mags, a, side="left"), 0, len(mags) - 1)
    lo_idx = np.where(mags[hi_idx] == a, hi_idx, np.maximum(hi_idx - 1, 0))
    lo, hi = mags[lo_idx], mags[hi_idx]
    span = np.where(hi > lo, hi - lo, 1.0)
    t = (a - lo) / span
    if rounding == "nearest":
        tie_even = (codes[lo_idx] & 1) == 0
        up = (t > 0.5) | ((t == 0.5) & ~tie_even)
    elif rounding == "stochastic":
        if random_bits is None:
            raise ValueError("stochastic rounding needs random_bits")
        r = np.asarray(random_bits, dtype=np.uint64).reshape(x.shape) & 0xFFFF
        up = r.astype(np.float64) < t * 65536.0
    else:
        raise ValueError(f"unknown rounding '{rounding}'")
    idx = np.where(up & (hi > lo), hi_idx, lo_idx)
    out = codes[idx].astype(np.uint8)
    negative = np.signbit(x) & ~np.isnan(x)
    return np.where(negative, out | 0x80, out).astype(np.uint8)
