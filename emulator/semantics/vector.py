"""Vector instructions: lane-wise arithmetic, comparisons and conversions, moves between scalar
and vector registers, reductions, and the vector loads and stores.

Why together: all of them work on one node's 16-lane registers (v[node], uint32 bits of fp32
lanes). The hot ones, vfma/vadd/vsub/vmul, go through emulator.simd's explicit vector IR
(`vector_fast`, inlined into the run loop's inner loop); the rest are plain lane loops.
Stochastic rounding draws from the node's generator in lane order (`sr_draw`).
"""

from __future__ import annotations

import math

import numpy as np

from emulator.jit.helper import helper
from emulator.numerics import (
    CANON_NAN,
    bf16_rne,
    bf16_sr,
    canon_bits,
    f32_to_i32_bits,
    fmax_bits,
    fmin_bits,
    i32_to_f32_bits,
    splitmix64,
)
from emulator.opcodes import (
    FLOPS_VADD,
    FLOPS_VFMA,
    FLOPS_VMUL,
    FLOPS_VSUB,
    MEM_ALIGN,
    MEM_BYTES,
    VABS,
    VADD,
    VAND,
    VBCAST,
    VBCASTI,
    VCMPEQ,
    VCMPLE,
    VCMPLT,
    VCVT_BF16,
    VCVT_BF16_SR,
    VCVT_F32_I32,
    VCVT_I32_F32,
    VDIV,
    VERF,
    VEXP,
    VEXT,
    VFMA,
    VGELU,
    VINS,
    VIOTA,
    VLD,
    VLDS,
    VLDSW,
    VLDW,
    VMAX,
    VMIN,
    VMOV,
    VMUL,
    VNARROW,
    VNEG,
    VOR,
    VPOW,
    VRCP,
    VREDSUM,
    VSEL,
    VSIGMOID,
    VSPLAT,
    VSQRT,
    VST,
    VSTN,
    VSTN_SR,
    VSTS,
    VSUB,
    VTANH,
    VWIDEN_HI,
    VWIDEN_LO,
    VXOR,
)
from emulator.semantics.memory import mem_check, strided_check
from emulator.simd import (
    VB_ADD,
    VB_MUL,
    VB_SUB,
    vector_binop,
    vfma16,
    vload_bf16,
    vload_words,
    vstore_bf16,
    vstore_words,
)

SQRT2 = math.sqrt(2.0)      # vgelu's x / sqrt(2), the fp64 constant


@helper(inline="always")
def vector_fast(op, vn, rd, rs1, rs2, rs3):
    """vfma, vadd, vsub, vmul through emulator.simd (vn: the node's vector registers, flat).
    Returns the instruction's FLOPs. Inlined: the run loop's inner loop calls it with a
    constant `op`, which leaves one emulator.simd operation after constant folding."""
    d = np.int64(rd) * 16
    a = np.int64(rs1) * 16
    b = np.int64(rs2) * 16
    if op == VFMA:
        vfma16(vn, d, a, b, np.int64(rs3) * 16)
        return FLOPS_VFMA
    if op == VADD:
        vector_binop(VB_ADD, vn, d, a, b)
        return FLOPS_VADD
    if op == VSUB:
        vector_binop(VB_SUB, vn, d, a, b)
        return FLOPS_VSUB
    vector_binop(VB_MUL, vn, d, a, b)
    return FLOPS_VMUL


@helper(inline="always")
def vector_mem_fast(op, vn, rd, rs2, a, m8, sram_bytes):
    """vld, vst, vldw.bf16 and vstn.bf16 at byte a through emulator.simd (vn: the node's
    vector registers, flat; m8: its SRAM). Returns (cause, highest byte written + 1 or 0), as
    vector_mem does for them, which the outer path still runs when the address traps.
    Inlined: the run loop's inner loop calls it with a constant `op`, which leaves one address
    check and one emulator.simd copy after constant folding."""
    c = mem_check(a, MEM_BYTES[op], MEM_ALIGN[op], sram_bytes)
    if c:
        return c, np.int64(0)
    if op == VLD:
        vload_words(vn, np.int64(rd) * 16, m8, a)
        return 0, np.int64(0)
    if op == VLDW:
        vload_bf16(vn, np.int64(rd) * 16, m8, a)
        return 0, np.int64(0)
    if op == VST:
        vstore_words(m8, a, vn, np.int64(rs2) * 16)
    else:
        vstore_bf16(m8, a, vn, np.int64(rs2) * 16)
    return 0, a + MEM_BYTES[op]


@helper(error_model="numpy")
def vector_arith(op, v, node, d, s1, s2, s3):
    """Lane-wise fp32 arithmetic, comparisons, bit operations and conversions on node's vector
    registers (vfma, vadd, vsub, vmul: through vector_fast)."""
    vr = v[node]
    if op == VFMA or op == VADD or op == VSUB or op == VMUL:
        vector_fast(op, vr.reshape(vr.size), d, s1, s2, s3)
    elif op == VDIV:
        for i in range(16):
            r = np.uint32(vr[s1, i]).view(np.float32) / np.uint32(vr[s2, i]).view(np.float32)
            vr[d, i] = np.uint32(CANON_NAN) if r != r else np.float32(r).view(np.uint32)
    elif op == VMAX:
        for i in range(16):
            vr[d, i] = fmax_bits(vr[s1, i], vr[s2, i])
    elif op == VMIN:
        for i in range(16):
            vr[d, i] = fmin_bits(vr[s1, i], vr[s2, i])
    elif op == VCMPLT or op == VCMPLE or op == VCMPEQ:
        for i in range(16):
            a = np.uint32(vr[s1, i]).view(np.float32)
            b = np.uint32(vr[s2, i]).view(np.float32)
            if op == VCMPLT:
                t = a < b
            elif op == VCMPLE:
                t = a <= b
            else:
                t = a == b
            vr[d, i] = np.uint32(0xFFFFFFFF) if t else np.uint32(0)
    elif op == VSEL:
        for i in range(16):
            vr[d, i] = vr[s2, i] if vr[s1, i] != 0 else vr[s3, i]
    elif op == VAND:
        for i in range(16):
            vr[d, i] = vr[s1, i] & vr[s2, i]
    elif op == VOR:
        for i in range(16):
            vr[d, i] = vr[s1, i] | vr[s2, i]
    elif op == VXOR:
        for i in range(16):
            vr[d, i] = vr[s1, i] ^ vr[s2, i]
    elif op == VMOV:
        for i in range(16):
            vr[d, i] = vr[s1, i]
    elif op == VNEG:
        for i in range(16):
            vr[d, i] = vr[s1, i] ^ np.uint32(0x80000000)
    elif op == VABS:
        for i in range(16):
            vr[d, i] = vr[s1, i] & np.uint32(0x7FFFFFFF)
    elif op == VSQRT:
        for i in range(16):
            vr[d, i] = canon_bits(np.sqrt(np.uint32(vr[s1, i]).view(np.float32)))
    elif op == VRCP:
        for i in range(16):
            vr[d, i] = canon_bits(np.float32(1.0) / np.uint32(vr[s1, i]).view(np.float32))
    elif op == VEXP:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(math.exp(x)))
    elif op == VTANH:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(math.tanh(x)))
    elif op == VSIGMOID:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(1.0 / (1.0 + math.exp(-x))))
    elif op == VERF:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(math.erf(x)))
    elif op == VGELU:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(0.5 * x * math.erfc(-x / SQRT2)))
    elif op == VPOW:
        for i in range(16):
            x = np.float64(np.uint32(vr[s1, i]).view(np.float32))
            y = np.float64(np.uint32(vr[s2, i]).view(np.float32))
            vr[d, i] = canon_bits(np.float32(math.pow(x, y)))
    elif op == VCVT_BF16:
        for i in range(16):
            vr[d, i] = np.uint32(bf16_rne(vr[s1, i]) << 16)
    elif op == VCVT_F32_I32:
        for i in range(16):
            vr[d, i] = i32_to_f32_bits(vr[s1, i])
    elif op == VCVT_I32_F32:
        for i in range(16):
            vr[d, i] = f32_to_i32_bits(vr[s1, i])
    elif op == VWIDEN_LO or op == VWIDEN_HI:
        # Source lanes are read before any destination lane is written (vd may equal vs1):
        # widen.lo writes lane i from word i // 2 <= i, so go downward; widen.hi reads words
        # 8 + i // 2 >= i, so go upward.
        if op == VWIDEN_LO:
            for i in range(15, -1, -1):
                w = np.int64(vr[s1, i >> 1])
                vr[d, i] = np.uint32(((w >> (16 * (i & 1))) & 0xFFFF) << 16)
        else:
            for i in range(16):
                w = np.int64(vr[s1, 8 + (i >> 1)])
                vr[d, i] = np.uint32(((w >> (16 * (i & 1))) & 0xFFFF) << 16)
    elif op == VNARROW:
        # vd may equal vs1 or vs2: word k reads lanes 2k, 2k+1 of one source, which for k < 8
        # are never written before they are read when filling words upward from vs1, but vs2's
        # lanes are needed for words 8..15, so compute all 16 words first (in registers).
        w0 = _narrow_pair(vr[s1, 0], vr[s1, 1])
        w1 = _narrow_pair(vr[s1, 2], vr[s1, 3])
        w2 = _narrow_pair(vr[s1, 4], vr[s1, 5])
        w3 = _narrow_pair(vr[s1, 6], vr[s1, 7])
        w4 = _narrow_pair(vr[s1, 8], vr[s1, 9])
        w5 = _narrow_pair(vr[s1, 10], vr[s1, 11])
        w6 = _narrow_pair(vr[s1, 12], vr[s1, 13])
        w7 = _narrow_pair(vr[s1, 14], vr[s1, 15])
        w8 = _narrow_pair(vr[s2, 0], vr[s2, 1])
        w9 = _narrow_pair(vr[s2, 2], vr[s2, 3])
        w10 = _narrow_pair(vr[s2, 4], vr[s2, 5])
        w11 = _narrow_pair(vr[s2, 6], vr[s2, 7])
        w12 = _narrow_pair(vr[s2, 8], vr[s2, 9])
        w13 = _narrow_pair(vr[s2, 10], vr[s2, 11])
        w14 = _narrow_pair(vr[s2, 12], vr[s2, 13])
        w15 = _narrow_pair(vr[s2, 14], vr[s2, 15])
        vr[d, 0], vr[d, 1], vr[d, 2], vr[d, 3] = w0, w1, w2, w3
        vr[d, 4], vr[d, 5], vr[d, 6], vr[d, 7] = w4, w5, w6, w7
        vr[d, 8], vr[d, 9], vr[d, 10], vr[d, 11] = w8, w9, w10, w11
        vr[d, 12], vr[d, 13], vr[d, 14], vr[d, 15] = w12, w13, w14, w15
    elif op == VSPLAT:
        w = vr[s1, s3]          # s3 carries the lane here (see run_loop)
        for i in range(16):
            vr[d, i] = w
    elif op == VIOTA:
        for i in range(16):
            vr[d, i] = np.float32(i).view(np.uint32)


@helper
def _narrow_pair(lo, hi):
    """Two fp32 lanes (bits) -> one word of two bf16s, round to nearest even. Lane values, not
    constant lane numbers, are passed: Numba compiles a helper once per literal argument."""
    return np.uint32(bf16_rne(lo) | (bf16_rne(hi) << 16))


@helper
def sr_draw(sr, node):
    """Draw one value from node's stochastic-rounding generator."""
    s, z = splitmix64(sr[node])
    sr[node] = s
    return z


@helper(error_model="numpy")
def vector_sr(op, node, v, d, s1, s2, sr, words):
    """vcvt.bf16.sr and vnarrow.sr: one draw per lane, in lane order (`words`: uint32[16]
    scratch, since vd may be vs1 or vs2)."""
    vr = v[node]
    if op == VCVT_BF16_SR:
        for i in range(16):
            r = sr_draw(sr, node)
            vr[d, i] = np.uint32(bf16_sr(vr[s1, i], r) << 16)
    else:
        lo = np.int64(0)
        for i in range(16):
            r = sr_draw(sr, node)
            b = bf16_sr(vr[s1, i], r)
            if i & 1:
                words[i >> 1] = np.uint32(lo | (b << 16))
            else:
                lo = b
        for i in range(16):
            r = sr_draw(sr, node)
            b = bf16_sr(vr[s2, i], r)
            if i & 1:
                words[8 + (i >> 1)] = np.uint32(lo | (b << 16))
            else:
                lo = b
        for i in range(16):
            vr[d, i] = words[i]


@helper
def vector_reduce(op, vr, s1):
    """vredsum / vredmax: lanes combined strictly in order 0..15; returns the fp32 bits."""
    if op == VREDSUM:
        acc = np.uint32(vr[s1, 0]).view(np.float32)
        for i in range(1, 16):
            acc = acc + np.uint32(vr[s1, i]).view(np.float32)
        return np.int64(canon_bits(acc))
    m = np.uint32(vr[s1, 0])
    for i in range(1, 16):
        m = fmax_bits(m, vr[s1, i])
    if (np.int64(m) & 0x7FFFFFFF) > 0x7F800000:
        m = np.uint32(CANON_NAN)
    return np.int64(m)


@helper
def vector_move(op, node, rd, rs1, imm, x, v):
    """Moves between scalar and vector registers, and the reductions."""
    if op == VBCAST:
        w = np.uint32(x[node, rs1] & 0xFFFFFFFF)
        for i in range(16):
            v[node, rd, i] = w
    elif op == VBCASTI:
        w = np.uint32(imm)
        for i in range(16):
            v[node, rd, i] = w
    elif op == VEXT:
        x[node, rd] = np.int64(v[node, rs1, imm & 15])
    elif op == VINS:
        v[node, rd, imm & 15] = np.uint32(x[node, rs1] & 0xFFFFFFFF)
    else:
        x[node, rd] = vector_reduce(op, v[node], rs1)


@helper
def vector_mem(op, node, v, d, s2, a, stride, sram16, sram32, sr, sram_bytes):
    """Vector loads and stores at a (strided forms: lane i at a + i * stride).

    Returns (cause, highest byte written + 1 or 0). Every address is checked before anything
    is read, written or drawn, so a trapping instruction changes nothing.
    """
    vr = v[node]
    m16 = sram16[node]
    m32 = sram32[node]
    size = MEM_BYTES[op]
    align = MEM_ALIGN[op]
    if op == VLD or op == VST:
        c = mem_check(a, size, align, sram_bytes)
        if c:
            return c, 0
        b = a >> 2
        if op == VLD:
            for i in range(16):
                vr[d, i] = m32[b + i]
            return 0, 0
        for i in range(16):
            m32[b + i] = vr[s2, i]
        return 0, a + size
    if op == VLDW:
        c = mem_check(a, size, align, sram_bytes)
        if c:
            return c, 0
        b = a >> 1
        for i in range(16):
            vr[d, i] = np.uint32(np.uint32(m16[b + i]) << 16)
        return 0, 0
    if op == VSTN or op == VSTN_SR:
        c = mem_check(a, size, align, sram_bytes)
        if c:
            return c, 0
        b = a >> 1
        if op == VSTN:
            for i in range(16):
                m16[b + i] = np.uint16(bf16_rne(vr[s2, i]))
        else:
            for i in range(16):
                m16[b + i] = np.uint16(bf16_sr(vr[s2, i], sr_draw(sr, node)))
        return 0, a + size
    if op == VLDS or op == VSTS:
        c = strided_check(a, stride, size, align, sram_bytes)
        if c:
            return c, 0
        if op == VLDS:
            for i in range(16):
                vr[d, i] = m32[(a + i * stride) >> 2]
            return 0, 0
        hw = np.int64(0)
        for i in range(16):
            e = a + i * stride
            m32[e >> 2] = vr[s2, i]
            hw = max(hw, e + size)
        return 0, hw
    # VLDSW, VSTSN: bf16 elements
    c = strided_check(a, stride, size, align, sram_bytes)
    if c:
        return c, 0
    if op == VLDSW:
        for i in range(16):
            vr[d, i] = np.uint32(np.uint32(m16[(a + i * stride) >> 1]) << 16)
        return 0, 0
    hw = np.int64(0)
    for i in range(16):
        e = a + i * stride
        m16[e >> 1] = np.uint16(bf16_rne(vr[s2, i]))
        hw = max(hw, e + size)
    return 0, hw
