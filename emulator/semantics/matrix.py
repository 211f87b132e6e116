"""The matrix unit: 8 x 8 x 8 mma steps from SRAM tiles into accumulator tiles, and loading,
storing and zeroing the accumulators.

Why together: every one works on a node's accumulator tiles (acc[node], 8 x 8 fp32), and the mma
forms share one address check (`mma_check`) and one step loop (`mma_steps`, inlined into the run
loop's inner loop, which runs single mma steps itself, and into `mma_op` once per precision).
The arithmetic is emulator.simd's.
"""

from __future__ import annotations

import numpy as np

from d1isa.traps import MISALIGNED, SRAM_OUT_OF_RANGE
from emulator.jit.helper import helper
from emulator.numerics import bf16_rne
from emulator.opcodes import (
    ACC_LD,
    ACC_ST_BF16,
    ACC_ZERO,
    MEM_ALIGN,
    MEM_BYTES,
    MMA_BF16,
    MMA_F32,
    MMAK_BF16,
    TILE_ROWS,
)
from emulator.semantics.memory import rows_check
from emulator.simd import BF16_ROW_BYTES, mma_bf16_step, mma_bf16_steps, mma_f32_step

# an mmak.bf16 step's A is one tile row further on (emulator.simd.mma_bf16_steps moves it so)
assert MEM_BYTES[MMA_BF16] == BF16_ROW_BYTES


@helper
def mma_check(a_addr, b_addr, sa, sb, row, align, steps, sram_bytes):
    """Trap cause (0 = fine) for `steps` mma steps: A rows at a_addr + s * row + i * sa, B rows
    at b_addr + (8 s + i) * sb, each `row` bytes, every address a multiple of `align`. The
    strides are unsigned, so addresses only grow with s and i: the first and the last row bound
    them all (range first), and all are aligned exactly when the first address and the stride
    are."""
    top = sram_bytes - row
    last = TILE_ROWS - 1
    if (a_addr < 0 or a_addr > top or a_addr + row * (steps - 1) + last * sa > top
            or b_addr < 0 or b_addr > top
            or b_addr + (TILE_ROWS * (steps - 1) + last) * sb > top):
        return SRAM_OUT_OF_RANGE
    if ((a_addr | sa | b_addr | sb) & (align - 1)) != 0:
        return MISALIGNED
    return 0


@helper(inline="always")
def mma_steps(op, an, t_off, a_addr, b_addr, imm, steps, m8, sram_bytes, am):
    """`steps` >= 1 steps of mma `op` into the tile an[t_off:t_off + 64]; returns the trap
    cause or 0. Step s reads A at a_addr + s * row bytes and B at b_addr + 8 * s * sb, rows
    sa / sb bytes apart (sa, sb: the low and high 16 bits of imm). Every row of every step is
    range-checked, then alignment-checked, before step 0 runs.

    Inlined: the run loop's inner loop runs single mma steps through it (`steps` the constant
    1, which leaves one check and one emulator.simd step after constant folding), and
    `mma_op` the steps of every mma and mmak, with `op` a constant (see there).
    an: the node's accumulators (flat float32); m8: its SRAM; am: float32[64] scratch.
    """
    sa = np.int64(imm) & 0xFFFF
    sb = np.int64(imm) >> 16
    row = MEM_BYTES[op]
    c = mma_check(a_addr, b_addr, sa, sb, row, MEM_ALIGN[op], steps, sram_bytes)
    if c:
        return c
    if op == MMA_BF16 or op == MMAK_BF16:
        # one step (the inner loop's mma: `steps` is the constant 1), or all of an mmak's with
        # the tile kept in registers between them (emulator.simd.mma_bf16_steps)
        if steps == 1:
            mma_bf16_step(an, t_off, m8, a_addr, sa, b_addr, sb, am)
        else:
            mma_bf16_steps(an, t_off, m8, a_addr, sa, b_addr, sb, steps, am)
        return 0
    for s in range(steps):
        mma_f32_step(an, t_off, m8, a_addr + row * s, sa, b_addr + TILE_ROWS * s * sb, sb)
    return 0


@helper(inline="always")
def mma_k_steps(op, an, t_off, a_addr, b_addr, ksteps, imm, m8, sram_bytes, am):
    """`ksteps` (unsigned, maybe 0) steps of mma `op`: mma_op's work for one opcode.
    Returns (trap cause or 0, steps run)."""
    if ksteps == 0:
        return 0, np.int64(0)
    # A advances `row` bytes a step, so a larger count always runs out of SRAM.
    if ksteps > np.uint64(sram_bytes // MEM_BYTES[op] + 2):
        return SRAM_OUT_OF_RANGE, np.int64(0)
    ns = np.int64(ksteps)
    c = mma_steps(op, an, t_off, a_addr, b_addr, imm, ns, m8, sram_bytes, am)
    if c:
        return c, np.int64(0)
    return 0, ns


@helper
def mma_op(op, an, t_off, a_addr, b_addr, ksteps, imm, m8, sram_bytes, am):
    """mma.* (one step) and mmak.* (`ksteps` steps) into the tile an[t_off:t_off + 64].

    Returns (trap cause or 0, steps run); an mmak with 0 steps does nothing (see mma_steps).
    """
    # An mmak's steps are those of the mma of its precision, so each precision runs one
    # inlined copy of the steps with that mma's opcode, a constant: its row size and alignment
    # (MEM_BYTES, MEM_ALIGN) then fold. With `op` unknown they were table loads, the step
    # bound a hardware division and the step loop short of registers (stack spills), and
    # emulating the 1024^3 bf16 matmul (262,144 mmak.bf16 of 8 steps) took 6% more thread CPU
    # than before the kernel split: ten interleaved runs, best of seven each, median 98.6 ms
    # against 92.6; with the constant, 92.6 (README, "The first run and Numba's cache").
    if op == MMA_BF16 or op == MMAK_BF16:
        return mma_k_steps(MMA_BF16, an, t_off, a_addr, b_addr, ksteps, imm, m8, sram_bytes, am)
    return mma_k_steps(MMA_F32, an, t_off, a_addr, b_addr, ksteps, imm, m8, sram_bytes, am)


@helper
def acc_op(op, acc, node, d, a_addr, imm, sram16, sram32, sram_bytes):
    """acc.zero, acc.ld, acc.st, acc.st.bf16 on tile d, rows sa = imm & 0xffff bytes apart.
    Returns (cause, highest byte written + 1 or 0)."""
    t = acc[node, d]
    if op == ACC_ZERO:
        for i in range(TILE_ROWS):
            for j in range(TILE_ROWS):
                t[i, j] = np.float32(0.0)
        return 0, np.int64(0)
    m16 = sram16[node]
    m32 = sram32[node]
    sa = np.int64(imm) & 0xFFFF
    row = MEM_BYTES[op]
    c = rows_check(a_addr, sa, np.int64(TILE_ROWS), row, MEM_ALIGN[op], sram_bytes)
    if c:
        return c, np.int64(0)
    if op == ACC_ST_BF16:
        hw = np.int64(0)
        for i in range(TILE_ROWS):
            rb = (a_addr + i * sa) >> 1
            for j in range(TILE_ROWS):
                m16[rb + j] = np.uint16(bf16_rne(np.float32(t[i, j]).view(np.uint32)))
            hw = max(hw, a_addr + i * sa + row)
        return 0, hw
    if op == ACC_LD:
        for i in range(TILE_ROWS):
            rb = (a_addr + i * sa) >> 2
            for j in range(TILE_ROWS):
                t[i, j] = np.uint32(m32[rb + j]).view(np.float32)
        return 0, np.int64(0)
    hw = np.int64(0)
    for i in range(TILE_ROWS):
        rb = (a_addr + i * sa) >> 2
        for j in range(TILE_ROWS):
            m32[rb + j] = np.float32(t[i, j]).view(np.uint32)
        hw = max(hw, a_addr + i * sa + row)
    return 0, hw
