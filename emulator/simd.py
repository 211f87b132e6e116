"""Explicit SIMD for the two hot floating-point paths: 16-lane vector arithmetic and the 8x8x8 MMA.

Numba runs LLVM without the SLP vectoriser, and its loop vectoriser gives up on lane loops whose
source and destination registers live in the same array. These helpers therefore emit LLVM vector
IR directly (`numba.extending.intrinsic`): one `<16 x float>` operation per vector instruction,
one `<8 x float>` row update per (i, k) of an mma. The IR uses plain `fmul` / `fadd` without
fast-math flags, so LLVM can neither fuse a multiply-add nor reorder the k sum: each result is
rounded exactly as docs/ISA.md says. The one fused operation is deliberate: mma.bf16 adds the
exact product with one rounding, which is the definition of an fma (see mma_bf16_step).

Every helper is an ordinary Python function (numpy, used under NUMBA_DISABLE_JIT=1 and by the
tests) with an `@overload` that jitted code uses instead. Arrays are flat (1-D, C-contiguous) and
offsets are element indexes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from emulator.numerics import BF16_NAN

CANON_NAN = 0x7FC00000

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_F16V = ir.VectorType(_F32, 16)
_I16V = ir.VectorType(_I32, 16)
_F8V = ir.VectorType(_F32, 8)
_I8V = ir.VectorType(_I32, 8)

# Options of the jitted implementations. Each is compiled once per argument types and LLVM
# inlines it (forceinline: always, whatever its size), which costs far less compile time than
# Numba inlining its IR at every call site (`@overload(inline="always")`).
_JIT = {"cache": True, "_nrt": False, "forceinline": True, "no_cpython_wrapper": True,
        "no_cfunc_wrapper": True}

# Bytes of one row of a bf16 tile (8 values): how far an mmak.bf16's A moves each step.
BF16_ROW_BYTES = 16

# The lane-wise binary operations vector_binop knows, by code.
VB_ADD, VB_SUB, VB_MUL = 0, 1, 2


def _data(context, builder, ty, value, elem):
    """The element pointer of an array argument (or of an integer address argument)."""
    if isinstance(ty, types.Array):
        return context.make_array(ty)(context, builder, value=value).data
    return builder.inttoptr(value, elem.as_pointer())


def _vptr(builder, data, off, vty):
    return builder.bitcast(builder.gep(data, [off]), vty.as_pointer())


def _canon(builder, r, ity, n):
    """Bits of r, with every NaN lane replaced by the canonical NaN."""
    isnan = builder.fcmp_unordered("uno", r, r)
    bits = builder.bitcast(r, ity)
    return builder.select(isnan, ir.Constant(ity, [CANON_NAN] * n), bits)


# ---- vfma ---------------------------------------------------------------------------------------

def vfma16(v, d, a, b, c):
    """v[d:d+16] = bits(f32(f32(A * B) + C)) with A, B, C the fp32 lanes at a, b, c (uint32 v)."""
    with np.errstate(all="ignore"):
        r = (v[a:a + 16].view(np.float32) * v[b:b + 16].view(np.float32)
             + v[c:c + 16].view(np.float32))
    out = r.view(np.uint32).copy()
    out[np.isnan(r)] = CANON_NAN
    v[d:d + 16] = out


@intrinsic
def _vfma16(typingctx, v, d, a, b, c):
    sig = types.void(v, d, a, b, c)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, value=args[0])
        data = arr.data
        x = builder.load(_vptr(builder, data, args[2], _F16V), align=4)
        y = builder.load(_vptr(builder, data, args[3], _F16V), align=4)
        z = builder.load(_vptr(builder, data, args[4], _F16V), align=4)
        r = builder.fadd(builder.fmul(x, y), z)
        builder.store(_canon(builder, r, _I16V, 16), _vptr(builder, data, args[1], _I16V),
                      align=4)
        return context.get_dummy_value()

    return sig, codegen


@overload(vfma16, jit_options=_JIT)
def _ol_vfma16(v, d, a, b, c):
    def impl(v, d, a, b, c):
        _vfma16(v, np.int64(d), np.int64(a), np.int64(b), np.int64(c))
    return impl


# ---- vadd / vsub / vmul -------------------------------------------------------------------------

def vector_binop(kind, v, d, a, b):
    """v[d:d+16] = bits(f32(A op B)) for op = VB_ADD, VB_SUB or VB_MUL (canonical NaNs)."""
    x = v[a:a + 16].view(np.float32)
    y = v[b:b + 16].view(np.float32)
    with np.errstate(all="ignore"):
        r = x + y if kind == VB_ADD else (x - y if kind == VB_SUB else x * y)
    out = r.view(np.uint32).copy()
    out[np.isnan(r)] = CANON_NAN
    v[d:d + 16] = out


def _binop_intrinsic(kind: int):
    @intrinsic
    def _op(typingctx, v, d, a, b):
        sig = types.void(v, d, a, b)

        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, value=args[0])
            data = arr.data
            x = builder.load(_vptr(builder, data, args[2], _F16V), align=4)
            y = builder.load(_vptr(builder, data, args[3], _F16V), align=4)
            if kind == VB_ADD:
                r = builder.fadd(x, y)
            elif kind == VB_SUB:
                r = builder.fsub(x, y)
            else:
                r = builder.fmul(x, y)
            builder.store(_canon(builder, r, _I16V, 16), _vptr(builder, data, args[1], _I16V),
                          align=4)
            return context.get_dummy_value()

        return sig, codegen
    return _op


_vadd16 = _binop_intrinsic(VB_ADD)
_vsub16 = _binop_intrinsic(VB_SUB)
_vmul16 = _binop_intrinsic(VB_MUL)


@overload(vector_binop, jit_options=_JIT)
def _ol_vector_binop(kind, v, d, a, b):
    def impl(kind, v, d, a, b):
        if kind == VB_ADD:
            _vadd16(v, np.int64(d), np.int64(a), np.int64(b))
        elif kind == VB_SUB:
            _vsub16(v, np.int64(d), np.int64(a), np.int64(b))
        else:
            _vmul16(v, np.int64(d), np.int64(a), np.int64(b))
    return impl


# ---- the 8 x 8 x 8 mma step ---------------------------------------------------------------------

def mma8(t, t_off, am, bm):
    """t[t_off + 8i + j] += sum_k am[8i + k] * bm[8k + j], one fp32 rounding per multiply and per
    addition, k in order; then NaN entries become the canonical NaN. t, am, bm: flat float32."""
    with np.errstate(all="ignore"):
        for i in range(8):
            row = t[t_off + 8 * i:t_off + 8 * i + 8].copy()
            for k in range(8):
                row = row + am[8 * i + k] * bm[8 * k:8 * k + 8]
            bits = row.view(np.uint32).copy()
            bits[np.isnan(row)] = CANON_NAN
            t[t_off + 8 * i:t_off + 8 * i + 8] = bits.view(np.float32)


@intrinsic
def _mma8(typingctx, t, t_off, am, bm):
    sig = types.void(t, t_off, am, bm)

    def codegen(context, builder, signature, args):
        tdata = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        adata = context.make_array(signature.args[2])(context, builder, value=args[2]).data
        bdata = context.make_array(signature.args[3])(context, builder, value=args[3]).data
        i64 = ir.IntType(64)
        brows = [builder.load(_vptr(builder, bdata, ir.Constant(i64, 8 * k), _F8V), align=4)
                 for k in range(8)]
        undef = ir.Constant(_F8V, ir.Undefined)
        zeros = ir.Constant(ir.VectorType(_I32, 8), [0] * 8)
        for i in range(8):
            off = builder.add(args[1], ir.Constant(i64, 8 * i))
            acc = builder.load(_vptr(builder, tdata, off, _F8V), align=4)
            for k in range(8):
                a = builder.load(builder.gep(adata, [ir.Constant(i64, 8 * i + k)]), align=4)
                av = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(_I32, 0)),
                                            undef, zeros)
                acc = builder.fadd(acc, builder.fmul(av, brows[k]))
            builder.store(_canon(builder, acc, _I8V, 8), _vptr(builder, tdata, off, _I8V),
                          align=4)
        return context.get_dummy_value()

    return sig, codegen


@overload(mma8, jit_options={"cache": True, "_nrt": False})
def _ol_mma8(t, t_off, am, bm):
    def impl(t, t_off, am, bm):
        _mma8(t, np.int64(t_off), am, bm)
    return impl


# ---- one whole mma step, operands read straight from SRAM ------------------------------------

def _bytes_rows(m8, off, stride, dtype, n):
    return np.stack([m8[off + i * stride:off + i * stride + 8 * np.dtype(dtype).itemsize]
                     .view(dtype) for i in range(n)])


def mma_bf16_step(t, t_off, m8, a_off, sa, b_off, sb, am):
    """One mma.bf16 step: the tile t[t_off:t_off + 64] (flat float32) += A @ B, with A row i at
    byte m8[a_off + i * sa] and B row k at byte m8[b_off + k * sb] (m8: uint8 SRAM).

    For k in order, t[i][j] = f32(t[i][j] + A[i][k] * B[k][j]) with the exact product and one
    rounding (docs/ISA.md), then NaN entries become the canonical NaN. Here as in the reference:
    the product of two bf16 values is exact in fp64 and, with at most 16 significant bits
    against the accumulator's 24, the fp64 sum followed by the rounding to fp32 rounds once
    (where the fp64 sum is inexact, the smaller term is far below half an fp32 ulp of the
    larger one, so both ways round to what the larger term alone rounds to). The jitted version
    computes the same with an fma, which by definition rounds the exact a * b + acc once:
    bit-identical for every input, including products beyond the fp32 range, subnormals,
    infinities and NaNs, so it needs no operand check.

    Always returns 1 (the tile is updated). `am` (flat float32, 64 entries, ideally 64-byte
    aligned) is scratch for the jitted version's widened A tile.
    """
    a = _bytes_rows(m8, a_off, sa, np.uint16, 8).astype(np.uint32) << 16
    b = _bytes_rows(m8, b_off, sb, np.uint16, 8).astype(np.uint32) << 16
    acc = t[t_off:t_off + 64].reshape(8, 8).copy()
    with np.errstate(all="ignore"):
        a64 = a.view(np.float32).astype(np.float64)
        b64 = b.view(np.float32).astype(np.float64)
        for k in range(8):
            acc = (acc.astype(np.float64) + a64[:, k:k + 1] * b64[k:k + 1, :]).astype(np.float32)
    bits = acc.view(np.uint32).reshape(-1).copy()
    bits[np.isnan(acc.reshape(-1))] = CANON_NAN
    t[t_off:t_off + 64] = bits.view(np.float32)
    return 1


def mma_bf16_steps(t, t_off, m8, a_off, sa, b_off, sb, steps, am):
    """`steps` >= 1 mma.bf16 steps into the tile t[t_off:t_off + 64]: step s reads A at
    a_off + 16 s and B at b_off + 8 s sb (an mmak.bf16's steps), with the rows of each as in
    mma_bf16_step.

    Exactly `steps` calls of mma_bf16_step. The jitted version keeps the tile's rows in
    registers from the first step to the last and canonicalises NaN lanes once, at the end:
    the same bits, because a NaN lane stays NaN through every later fma (whatever its payload)
    and no other lane is touched by the canonicalisation; it saves each step's store, reload
    (a store-to-load forwarding on the rows' dependency chains) and NaN test.
    """
    for s in range(steps):
        mma_bf16_step(t, t_off, m8, a_off + BF16_ROW_BYTES * s, sa, b_off + 8 * s * sb, sb, am)


def mma_f32_step(t, t_off, m8, a_off, sa, b_off, sb):
    """One mma.f32 step, byte offsets and strides into m8; see mma_bf16_step."""
    a = _bytes_rows(m8, a_off, sa, np.float32, 8).reshape(-1)
    b = _bytes_rows(m8, b_off, sb, np.float32, 8).reshape(-1)
    mma8(t, t_off, a, b)


def _mma_core(builder, tdata, t_off, a_elem, b_row, fused=False):
    """acc rows += A @ B with A[i][k] broadcast by a_elem(i, k) and B row k from b_row(k)
    (<8 x float>), k outer and i inner so the 8 row chains interleave; each row still adds its
    k terms in order. Then canonical NaNs.

    fused: one fma per term, f32(acc + a * b) with the exact product (mma.bf16); otherwise the
    product is rounded first (mma.f32)."""
    offs = _row_offsets(builder, t_off)
    accs = [builder.load(_vptr(builder, tdata, offs[i], _F8V), align=4) for i in range(8)]
    accs = _mma_terms(builder, accs, a_elem, b_row, fused)
    _store_rows(builder, tdata, offs, accs)


def _row_offsets(builder, t_off):
    i64 = ir.IntType(64)
    return [builder.add(t_off, ir.Constant(i64, 8 * i)) for i in range(8)]


def _store_rows(builder, tdata, offs, accs):
    """The 8 accumulator rows back into the tile, NaN lanes as the canonical NaN."""
    for i in range(8):
        builder.store(_canon(builder, accs[i], _I8V, 8), _vptr(builder, tdata, offs[i], _I8V),
                      align=4)


def _mma_terms(builder, accs, a_elem, b_row, fused):
    """The 64 multiply-adds of one step on the rows `accs` (<8 x float> values); returns the
    new rows (see _mma_core)."""
    accs = list(accs)
    fma = None
    if fused:
        fma = cgutils.get_or_insert_function(builder.module,
                                             ir.FunctionType(_F8V, [_F8V, _F8V, _F8V]),
                                             "llvm.fma.v8f32")
    for k in range(8):
        bk = b_row(k)
        for i in range(8):
            if fma is not None:
                accs[i] = builder.call(fma, [a_elem(i, k), bk, accs[i]])
            else:
                accs[i] = builder.fadd(accs[i], builder.fmul(a_elem(i, k), bk))
    return accs


def _splat(builder, scalar, vty, n):
    undef = ir.Constant(vty, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(_I32, n), [0] * n)
    return builder.shuffle_vector(builder.insert_element(undef, scalar, ir.Constant(_I32, 0)),
                                  undef, zeros)


def _bptr(builder, data, off, ty):
    """A `ty` pointer at byte offset `off` of an i8 buffer."""
    return builder.bitcast(builder.gep(data, [off]), ty.as_pointer())


def _bf16_operands(builder, src, scratch, a_off, sa, b_off, sb):
    """(a_elem, b_row) of one mma.bf16 step whose A rows start at byte a_off of `src` (sa bytes
    apart) and B rows at b_off (sb apart); A is widened into `scratch` first.

    A widened into the scratch (fp32 is bf16 shifted up 16), then one broadcast load per
    A[i][k] from there. A compiler fence (no instruction) keeps LLVM from forwarding the
    stored rows into registers, where each A[i][k] would cost shuffles. A[i][0] comes from
    the widened row in its register instead (one broadcast), so the first fma of a row
    does not wait for the store-to-load forwarding. (Broadcasting each 32-bit pair straight
    from SRAM and clearing its low half costs a vpand per element: fewer loads but more
    instructions, and measured slower inside the emulator's loop.)"""
    i64 = ir.IntType(64)
    h8v = ir.VectorType(ir.IntType(16), 8)
    c16 = ir.Constant(_I8V, [16] * 8)
    arows = []
    for r in range(8):
        p = builder.add(a_off, builder.mul(sa, ir.Constant(i64, r)))
        w = builder.shl(builder.zext(builder.load(_bptr(builder, src, p, h8v), align=2),
                                     _I8V), c16)
        builder.store(w, _vptr(builder, scratch, ir.Constant(i64, 8 * r), _I8V), align=4)
        arows.append(builder.bitcast(w, _F8V))
    builder.fence("acq_rel", "singlethread")

    def a_elem(i, k):
        if k == 0:
            return builder.shuffle_vector(arows[i], ir.Constant(_F8V, ir.Undefined),
                                          ir.Constant(_I8V, [0] * 8))
        a = builder.load(builder.gep(scratch, [ir.Constant(i64, 8 * i + k)]), align=4)
        return _splat(builder, a, _F8V, 8)

    def b_row(k):
        p = builder.add(b_off, builder.mul(sb, ir.Constant(i64, k)))
        h = builder.load(_bptr(builder, src, p, h8v), align=2)
        return builder.bitcast(builder.shl(builder.zext(h, _I8V), c16), _F8V)

    return a_elem, b_row


@intrinsic
def _mma_bf16_step(typingctx, t, t_off, m8, a_off, sa, b_off, sb, am):
    sig = types.int64(t, t_off, m8, a_off, sa, b_off, sb, am)

    def codegen(context, builder, signature, args):
        tdata = _data(context, builder, signature.args[0], args[0], _F32)
        src = _data(context, builder, signature.args[2], args[2], ir.IntType(8))
        scratch = _data(context, builder, signature.args[7], args[7], _F32)
        a_elem, b_row = _bf16_operands(builder, src, scratch, args[3], args[4], args[5],
                                       args[6])
        _mma_core(builder, tdata, args[1], a_elem, b_row, fused=True)
        return ir.Constant(ir.IntType(64), 1)

    return sig, codegen


@intrinsic
def _mma_bf16_steps(typingctx, t, t_off, m8, a_off, sa, b_off, sb, steps, am):
    sig = types.void(t, t_off, m8, a_off, sa, b_off, sb, steps, am)

    def codegen(context, builder, signature, args):
        tdata = _data(context, builder, signature.args[0], args[0], _F32)
        src = _data(context, builder, signature.args[2], args[2], ir.IntType(8))
        scratch = _data(context, builder, signature.args[8], args[8], _F32)
        t_off, a_off, sa, b_off, sb, steps = (args[1], args[3], args[4], args[5], args[6],
                                              args[7])
        i64 = ir.IntType(64)
        offs = _row_offsets(builder, t_off)
        # The rows live in registers for all the steps (allocas LLVM promotes), rounded and
        # canonicalised once at the end.
        slots = [cgutils.alloca_once(builder, _F8V) for _ in range(8)]
        for i in range(8):
            builder.store(builder.load(_vptr(builder, tdata, offs[i], _F8V), align=4), slots[i])
        a_step = ir.Constant(i64, BF16_ROW_BYTES)
        b_step = builder.mul(sb, ir.Constant(i64, 8))
        with cgutils.for_range(builder, steps, intp=i64) as loop:
            s = loop.index
            a_elem, b_row = _bf16_operands(builder, src, scratch,
                                           builder.add(a_off, builder.mul(s, a_step)), sa,
                                           builder.add(b_off, builder.mul(s, b_step)), sb)
            accs = _mma_terms(builder, [builder.load(p) for p in slots], a_elem, b_row, True)
            for i in range(8):
                builder.store(accs[i], slots[i])
        _store_rows(builder, tdata, offs, [builder.load(p) for p in slots])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _mma_f32_step(typingctx, t, t_off, m8, a_off, sa, b_off, sb):
    sig = types.void(t, t_off, m8, a_off, sa, b_off, sb)

    def codegen(context, builder, signature, args):
        tdata = _data(context, builder, signature.args[0], args[0], _F32)
        src = _data(context, builder, signature.args[2], args[2], ir.IntType(8))
        i64 = ir.IntType(64)

        def a_elem(i, k):
            off = builder.add(builder.add(args[3], builder.mul(args[4], ir.Constant(i64, i))),
                              ir.Constant(i64, 4 * k))
            a = builder.load(_bptr(builder, src, off, _F32), align=4)
            return _splat(builder, a, _F8V, 8)

        def b_row(k):
            p = builder.add(args[5], builder.mul(args[6], ir.Constant(i64, k)))
            return builder.load(_bptr(builder, src, p, _F8V), align=4)

        _mma_core(builder, tdata, args[1], a_elem, b_row)
        return context.get_dummy_value()

    return sig, codegen


@overload(mma_bf16_step, jit_options=_JIT)
def _ol_mma_bf16_step(t, t_off, m8, a_off, sa, b_off, sb, am):
    def impl(t, t_off, m8, a_off, sa, b_off, sb, am):
        return _mma_bf16_step(t, np.int64(t_off), m8, np.int64(a_off), np.int64(sa),
                              np.int64(b_off), np.int64(sb), am)
    return impl


@overload(mma_bf16_steps, jit_options=_JIT)
def _ol_mma_bf16_steps(t, t_off, m8, a_off, sa, b_off, sb, steps, am):
    def impl(t, t_off, m8, a_off, sa, b_off, sb, steps, am):
        _mma_bf16_steps(t, np.int64(t_off), m8, np.int64(a_off), np.int64(sa),
                        np.int64(b_off), np.int64(sb), np.int64(steps), am)
    return impl


@overload(mma_f32_step, jit_options=_JIT)
def _ol_mma_f32_step(t, t_off, m8, a_off, sa, b_off, sb):
    def impl(t, t_off, m8, a_off, sa, b_off, sb):
        _mma_f32_step(t, np.int64(t_off), m8, np.int64(a_off), np.int64(sa), np.int64(b_off),
                      np.int64(sb))
    return impl


# ---- scalar SRAM access through one byte pointer ----------------------------------------------

def _load_bits(m8, off, nbytes):
    return int.from_bytes(m8[off:off + nbytes].tobytes(), "little")


def load16(m8, off):
    """The little-endian uint16 at byte `off` of m8 (uint8; any alignment the caller checked)."""
    return np.uint16(_load_bits(m8, off, 2))


def load32(m8, off):
    return np.uint32(_load_bits(m8, off, 4))


def load64(m8, off):
    return np.uint64(_load_bits(m8, off, 8))


def store16(m8, off, value):
    m8[off:off + 2] = np.frombuffer((int(value) & 0xFFFF).to_bytes(2, "little"), np.uint8)


def store32(m8, off, value):
    m8[off:off + 4] = np.frombuffer((int(value) & 0xFFFF_FFFF).to_bytes(4, "little"), np.uint8)


def store64(m8, off, value):
    m8[off:off + 8] = np.frombuffer((int(value) & ((1 << 64) - 1)).to_bytes(8, "little"),
                                    np.uint8)


def _load_intrinsic(bits: int, nbt):
    @intrinsic
    def _ld(typingctx, m8, off):
        sig = nbt(m8, off)

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
            return builder.load(_bptr(builder, data, args[1], ir.IntType(bits)), align=1)

        return sig, codegen
    return _ld


def _store_intrinsic(bits: int):
    @intrinsic
    def _st(typingctx, m8, off, value):
        sig = types.void(m8, off, value)

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
            val = args[2]
            ity = ir.IntType(bits)
            if val.type.width > bits:
                val = builder.trunc(val, ity)
            builder.store(val, _bptr(builder, data, args[1], ity), align=1)
            return context.get_dummy_value()

        return sig, codegen
    return _st


_ld16, _ld32, _ld64 = (_load_intrinsic(16, types.uint16), _load_intrinsic(32, types.uint32),
                       _load_intrinsic(64, types.uint64))
_st16, _st32, _st64 = _store_intrinsic(16), _store_intrinsic(32), _store_intrinsic(64)

# One overload each, calling its intrinsic as a global: an implementation that closed over the
# intrinsic would have a different Numba cache key in every process (the key hashes closure
# contents), so it would be compiled again by every cold start instead of loaded.

@overload(load16, jit_options=_JIT)
def _ol_load16(m8, off):
    def impl(m8, off):
        return _ld16(m8, np.int64(off))
    return impl


@overload(load32, jit_options=_JIT)
def _ol_load32(m8, off):
    def impl(m8, off):
        return _ld32(m8, np.int64(off))
    return impl


@overload(load64, jit_options=_JIT)
def _ol_load64(m8, off):
    def impl(m8, off):
        return _ld64(m8, np.int64(off))
    return impl


@overload(store16, jit_options=_JIT)
def _ol_store16(m8, off, value):
    def impl(m8, off, value):
        _st16(m8, np.int64(off), np.uint64(value))
    return impl


@overload(store32, jit_options=_JIT)
def _ol_store32(m8, off, value):
    def impl(m8, off, value):
        _st32(m8, np.int64(off), np.uint64(value))
    return impl


@overload(store64, jit_options=_JIT)
def _ol_store64(m8, off, value):
    def impl(m8, off, value):
        _st64(m8, np.int64(off), np.uint64(value))
    return impl


# ---- 16-lane vector loads and stores between SRAM and a vector register ------------------------
# vld / vst move 16 fp32 words, vldw.bf16 widens 16 bf16 values (shifted up 16 bits), vstn.bf16
# narrows 16 lanes to bf16 with round to nearest even (a NaN lane becomes BF16_NAN), as
# emulator.numerics.bf16_rne does lane by lane. v: a node's vector registers (flat uint32),
# d / s: the register's first element; m8: its SRAM (uint8), a: the byte address (checked by
# the caller). One vector load and one vector store each, instead of a 16-lane loop.


def vload_words(v, d, m8, a):
    """v[d:d+16] = the 16 little-endian uint32 at byte a of m8 (vld)."""
    v[d:d + 16] = m8[a:a + 64].view(np.uint32)


def vstore_words(m8, a, v, s):
    """The 16 words v[s:s+16] to byte a of m8 (vst)."""
    m8[a:a + 64] = v[s:s + 16].view(np.uint8)


def vload_bf16(v, d, m8, a):
    """v[d:d+16] = the 16 bf16 values at byte a of m8, as fp32 bits (vldw.bf16)."""
    v[d:d + 16] = m8[a:a + 32].view(np.uint16).astype(np.uint32) << 16


def vstore_bf16(m8, a, v, s):
    """v[s:s+16] rounded to bf16 (nearest even; NaN lanes BF16_NAN) to byte a (vstn.bf16)."""
    w = v[s:s + 16].astype(np.int64)
    r = (w + 0x7FFF + ((w >> 16) & 1)) >> 16
    r[(w & 0x7FFFFFFF) > 0x7F800000] = BF16_NAN
    m8[a:a + 32] = r.astype(np.uint16).view(np.uint8)


def _vmem_intrinsic(kind: str):
    """The jitted form of one of the four functions above: (v, voff, m8, a) for every kind."""
    i16v = ir.VectorType(ir.IntType(16), 16)

    @intrinsic
    def _op(typingctx, v, voff, m8, a):
        sig = types.void(v, voff, m8, a)

        def codegen(context, builder, signature, args):
            vdata = _data(context, builder, signature.args[0], args[0], _I32)
            src = _data(context, builder, signature.args[2], args[2], ir.IntType(8))
            reg = _vptr(builder, vdata, args[1], _I16V)
            mem = builder.gep(src, [args[3]])
            if kind == "ld":
                w = builder.load(builder.bitcast(mem, _I16V.as_pointer()), align=1)
                builder.store(w, reg, align=4)
            elif kind == "st":
                w = builder.load(reg, align=4)
                builder.store(w, builder.bitcast(mem, _I16V.as_pointer()), align=1)
            elif kind == "ldw":
                h = builder.load(builder.bitcast(mem, i16v.as_pointer()), align=1)
                w = builder.shl(builder.zext(h, _I16V), ir.Constant(_I16V, [16] * 16))
                builder.store(w, reg, align=4)
            else:
                # Non-NaN lanes are at most 0xff800000 (-inf), so w + 0x8000 fits 32 bits.
                w = builder.load(reg, align=4)
                odd = builder.and_(builder.lshr(w, ir.Constant(_I16V, [16] * 16)),
                                   ir.Constant(_I16V, [1] * 16))
                r = builder.lshr(builder.add(builder.add(w, ir.Constant(_I16V, [0x7FFF] * 16)),
                                             odd), ir.Constant(_I16V, [16] * 16))
                mag = builder.and_(w, ir.Constant(_I16V, [0x7FFFFFFF] * 16))
                nan = builder.icmp_unsigned(">", mag, ir.Constant(_I16V, [0x7F800000] * 16))
                r = builder.select(nan, ir.Constant(_I16V, [BF16_NAN] * 16), r)
                builder.store(builder.trunc(r, i16v), builder.bitcast(mem, i16v.as_pointer()),
                              align=1)
            return context.get_dummy_value()

        return sig, codegen
    return _op


_vld16, _vst16, _vldw16, _vstn16 = (_vmem_intrinsic(k) for k in ("ld", "st", "ldw", "stn"))


@overload(vload_words, jit_options=_JIT)
def _ol_vload_words(v, d, m8, a):
    def impl(v, d, m8, a):
        _vld16(v, np.int64(d), m8, np.int64(a))
    return impl


@overload(vstore_words, jit_options=_JIT)
def _ol_vstore_words(m8, a, v, s):
    def impl(m8, a, v, s):
        _vst16(v, np.int64(s), m8, np.int64(a))
    return impl


@overload(vload_bf16, jit_options=_JIT)
def _ol_vload_bf16(v, d, m8, a):
    def impl(v, d, m8, a):
        _vldw16(v, np.int64(d), m8, np.int64(a))
    return impl


@overload(vstore_bf16, jit_options=_JIT)
def _ol_vstore_bf16(m8, a, v, s):
    def impl(m8, a, v, s):
        _vstn16(v, np.int64(s), m8, np.int64(a))
    return impl
