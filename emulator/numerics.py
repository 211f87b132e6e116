"""Bit-exact numerics of the ISA (docs/ISA.md, "Execution rules"), as small @njit scalar helpers.

Each helper is a plain function of integers and floats, so tests can call it jitted or through
`.py_func`. Values that are bit patterns are passed as integers; fp32 values as numpy float32.
No helper uses fastmath: that would let LLVM reorder or fuse the roundings the ISA fixes.
No helper gets a C entry point (no_cfunc_wrapper), which only costs compile time; the Python
one stays, for the tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

CANON_NAN = 0x7FC00000          # canonical quiet NaN (fp32 bits)
BF16_NAN = 0x7FC0               # the same, as bf16 bits
INT64_MIN = -(1 << 63)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, no_cfunc_wrapper=True)
def canon_bits(value):
    """Bits of an fp32 arithmetic result: the canonical NaN if it is a NaN."""
    if value != value:
        return np.uint32(CANON_NAN)
    return np.float32(value).view(np.uint32)


@njit(cache=True, no_cfunc_wrapper=True)
def is_nan_bits(u):
    return (np.int64(u) & 0x7FFFFFFF) > 0x7F800000


@njit(cache=True, no_cfunc_wrapper=True)
def bf16_rne(u):
    """fp32 bits -> bf16 bits, round to nearest even; a NaN becomes 0x7fc0."""
    w = np.int64(u) & 0xFFFFFFFF
    if (w & 0x7FFFFFFF) > 0x7F800000:
        return np.int64(BF16_NAN)
    return (w + 0x7FFF + ((w >> 16) & 1)) >> 16


@njit(cache=True, no_cfunc_wrapper=True)
def bf16_sr(u, r):
    """fp32 bits -> bf16 bits with stochastic rounding by the random value `r`."""
    w = np.int64(u) & 0xFFFFFFFF
    if (w & 0x7FFFFFFF) > 0x7F800000:
        return np.int64(BF16_NAN)
    return (w + (np.int64(r) & 0xFFFF)) >> 16


@njit(cache=True, no_cfunc_wrapper=True)
def splitmix64(state):
    """One SplitMix64 step: returns (new state, output), all uint64 arithmetic mod 2^64."""
    s = np.uint64(state) + _GOLDEN
    z = s
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return s, z ^ (z >> np.uint64(31))


def initial_sr_state(seed: int, node: int) -> int:
    """A node's initial generator state: (seed * golden + id + 1) mod 2^64."""
    return (int(seed) * 0x9E3779B97F4A7C15 + int(node) + 1) & 0xFFFFFFFFFFFFFFFF


@njit(cache=True, no_cfunc_wrapper=True)
def fmax_bits(a, b):
    """vmax on fp32 bit patterns: NaN if either is NaN; max(-0, +0) = +0."""
    if is_nan_bits(a) or is_nan_bits(b):
        return np.uint32(CANON_NAN)
    fa = np.uint32(a).view(np.float32)
    fb = np.uint32(b).view(np.float32)
    if fa > fb:
        return np.uint32(a)
    if fb > fa:
        return np.uint32(b)
    return np.uint32(np.uint32(a) & np.uint32(b))     # equal: +0 wins over -0


@njit(cache=True, no_cfunc_wrapper=True)
def fmin_bits(a, b):
    """vmin on fp32 bit patterns: NaN if either is NaN; min(-0, +0) = -0."""
    if is_nan_bits(a) or is_nan_bits(b):
        return np.uint32(CANON_NAN)
    fa = np.uint32(a).view(np.float32)
    fb = np.uint32(b).view(np.float32)
    if fa < fb:
        return np.uint32(a)
    if fb < fa:
        return np.uint32(b)
    return np.uint32(np.uint32(a) | np.uint32(b))     # equal: -0 wins over +0


@njit(cache=True, no_cfunc_wrapper=True)
def f32_to_i32_bits(u):
    """vcvt.i32.f32 on one lane: truncate toward zero, saturate, NaN -> 0; int32 bits."""
    if is_nan_bits(u):
        return np.uint32(0)
    f = np.float64(np.uint32(u).view(np.float32))
    if f >= 2147483647.0:
        return np.uint32(0x7FFFFFFF)
    if f <= -2147483648.0:
        return np.uint32(0x80000000)
    return np.uint32(np.int64(f) & 0xFFFFFFFF)


@njit(cache=True, no_cfunc_wrapper=True)
def i32_to_f32_bits(u):
    """vcvt.f32.i32 on one lane: the int32 in `u` to fp32, nearest even."""
    i = np.int64(u) & 0xFFFFFFFF
    if i >= 0x80000000:
        i -= 0x100000000
    return np.float32(np.int32(i)).view(np.uint32)


@njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
def div_signed(a, b):
    """div: toward zero; x / 0 = -1; INT64_MIN / -1 = INT64_MIN."""
    a = np.int64(a)
    b = np.int64(b)
    if b == 0:
        return np.int64(-1)
    if b == -1:
        return np.int64(0) - a          # wraps for INT64_MIN
    q = a // b
    if q < 0 and q * b != a:
        q += 1                          # floor -> toward zero
    return q


@njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
def rem_signed(a, b):
    """rem: a - b * div(a, b); x rem 0 = x; INT64_MIN rem -1 = 0."""
    a = np.int64(a)
    b = np.int64(b)
    if b == 0:
        return a
    if b == -1:
        return np.int64(0)
    return a - b * div_signed(a, b)


@njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
def div_unsigned(a, b):
    """divu on 64-bit patterns held in int64: x / 0 = 2^64 - 1."""
    ua = np.uint64(np.int64(a))
    ub = np.uint64(np.int64(b))
    if ub == 0:
        return np.int64(-1)
    return np.int64(ua // ub)


@njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
def rem_unsigned(a, b):
    """remu: x mod 0 = x."""
    ua = np.uint64(np.int64(a))
    ub = np.uint64(np.int64(b))
    if ub == 0:
        return np.int64(a)
    return np.int64(ua % ub)
