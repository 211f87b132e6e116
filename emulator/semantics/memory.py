"""SRAM address checks, and the scalar loads and stores.

Why together: every access a program makes is checked by one of these three checks before it
touches memory (Numba checks no bounds), and the scalar loads and stores are the plain case.
`scalar_mem` and `mem_check` are inlined where they are called (`inline="always"`): the run
loop's inner loop runs every scalar load and store through them without a call.
"""

from __future__ import annotations

import numpy as np

from d1isa.traps import MISALIGNED, SRAM_OUT_OF_RANGE
from emulator.jit.helper import helper
from emulator.opcodes import LD8, LD8U, LD16, LD16U, LD32, LD32U, LD64, MEM_BYTES, ST16, ST32, ST64
from emulator.simd import load16, load32, load64, store16, store32, store64


@helper(inline="always")
def mem_check(a, size, align, sram_bytes):
    """Cause code for an access of `size` bytes at `a`: range first, then alignment (0 = ok)."""
    if a < 0 or a > sram_bytes - size:
        return SRAM_OUT_OF_RANGE
    if a & (align - 1):
        return MISALIGNED
    return 0


@helper
def strided_check(a, stride, size, align, sram_bytes):
    """Check the 16 lane addresses a + i * stride: all in range, then all aligned."""
    return rows_check(a, stride, np.int64(16), size, align, sram_bytes)


@helper
def rows_check(a, stride, rows, size, align, sram_bytes):
    """Check the addresses a + i * stride, i < rows (64-bit wrapping arithmetic, as the
    hardware computes them): any out of range -> SRAM_OUT_OF_RANGE, else any misaligned ->
    MISALIGNED."""
    for i in range(rows):
        e = a + i * stride
        if e < 0 or e > sram_bytes - size:
            return SRAM_OUT_OF_RANGE
    if align > 1:
        for i in range(rows):
            if (a + i * stride) & (align - 1):
                return MISALIGNED
    return 0


@helper(inline="always")
def scalar_mem(op, rd, rs1, rs2, imm, xr, m8, sram_bytes):
    """Scalar loads and stores on one node (xr: its register row, m8: its SRAM).
    Returns (trap cause or 0, highest byte written + 1 or 0)."""
    a = xr[rs1] + np.int64(np.int32(imm))
    size = MEM_BYTES[op]                    # a scalar access is aligned to its size
    c = mem_check(a, size, size, sram_bytes)
    if c:
        return c, np.int64(0)
    if op == LD64:
        xr[rd] = np.int64(load64(m8, a))
    elif op == LD32:
        xr[rd] = np.int64(np.int32(load32(m8, a)))
    elif op == LD32U:
        xr[rd] = np.int64(load32(m8, a))
    elif op == LD16:
        xr[rd] = np.int64(np.int16(load16(m8, a)))
    elif op == LD16U:
        xr[rd] = np.int64(load16(m8, a))
    elif op == LD8:
        xr[rd] = np.int64(np.int8(m8[a]))
    elif op == LD8U:
        xr[rd] = np.int64(m8[a])
    else:
        val = xr[rs2]
        if op == ST64:
            store64(m8, a, val)
        elif op == ST32:
            store32(m8, a, val)
        elif op == ST16:
            store16(m8, a, val)
        else:
            m8[a] = np.uint8(val & 0xFF)
        return 0, a + size
    return 0, np.int64(0)
