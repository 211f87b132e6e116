"""The jitted run loop: every live node's instruction stream, round-robin, a quantum at a time.

`run_loop` owns scheduling: it visits the nodes in id order and lets each running or blocked node
execute up to `quantum` instructions per turn, until no node can make progress, an instruction
budget (global or per node) is spent, or a node reaches a slot flagged for the debugger. Its
inner loop runs the frequent instructions inline; the semantics of every instruction group also
live in small helpers below (`scalar_op`, `scalar_mem`, `vector_arith`, `vector_mem`, `mma_op`,
`acc_op`, `net_op`, ...), each testable through `.py_func`. The hot floating-point paths are
explicit SIMD (emulator.simd).

State arrives as four tuples of numpy arrays, allocated by `emulator.state.State` (nothing is
allocated here):

    node  = (x, v, acc, sram8, sram16, sram32, sram64, pc, clock, state, cause, trap_arg,
             sr, sr_init, skip, sram_flat)
    fifo  = (fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free)
    stats = (stall, stall_send, link_bytes, link_msgs, link_busy)
    geo   = (code, real_op, node_base, node_len, out_link, link_lat, link_bw, xy, flops_tab,
             link_src, wake, cfg)
    trace = None, or the recorder's tuple (emulator.trace.Recorder.kernel_arg):
            (rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill)

Tracing is a separate compiled variant: `run_loop` is called with trace=None normally, and
Numba prunes every `if trace is not None:` branch from that specialisation, so the loop without
tracing carries no tracing code. With a tuple, the loop checks each instruction's region before
running it (`trace_step`) and records waits and messages after each network instruction
(`trace_net`); emulator.trace describes the records.

x is each node's register row, widened (emulator.decode): the scalar registers, a sink column
for writes to r0, then the node's SRAM high-water mark, FLOP count and instruction counts per
timing class, so the run loop updates them through the one row it already holds.

Opcode numbers come from `d1isa.isa.OP` (and inner-loop indexes from emulator.decode) as module
constants, which Numba freezes into the code; machine values arrive in `cfg`, never as globals.
Numba's cache is keyed on this file, not on the ISA table, so `_check_isa_fingerprint` drops
cached code compiled for another table. Timing follows docs/TIMING.md exactly and
depends only on each node's program order and each link's message order, so results do not
depend on the quantum.

Threads: Emulator.run(threads=T) calls this loop from T Python threads at once (it releases the
GIL), each starting on its own contiguous range of nodes (cfg[K_LO], cfg[K_HI]) with its own cfg,
out and scratch arrays, and helping with other ranges when its own has nothing to run (see
run_loop); a turn holds the node's claim word (emulator.sync), so a node runs on one thread at
a time. A node writes only its own state, the FIFOs it sends into (payload, arrival time,
length, `pushed`) and the consumption side of those it receives from (`consumed`, `popped`);
each link therefore has one writer per field at a time, and the payload-then-counter order is
fenced (emulator.sync). Results are identical to a serial run, whichever thread runs which
turn, for the reason they do not depend on the quantum: a node's behaviour depends only on its
own program and on each incoming link's message order, and a blocked instruction changes
nothing, so seeing a message a little later only means retrying it (see Emulator.run for the
termination rule).

Debugging: set NUMBA_DISABLE_JIT=1 to run this module as plain Python (slow, but every line is
steppable in pdb), or NUMBA_BOUNDSCHECK=1 to make Numba check every array index (an IndexError
then means an address check is missing here); use the latter with a fresh NUMBA_CACHE_DIR, as
Numba's cache does not key on it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher

from d1isa.isa import FLOPS, INSTRUCTIONS, OP
from d1isa.machine import TIMING_CLASSES
from d1isa.traps import (
    BAD_MESSAGE_LENGTH,
    CYCLE_LIMIT,
    ILLEGAL_INSTRUCTION,
    MESSAGE_LENGTH_MISMATCH,
    MISALIGNED,
    NO_NEIGHBOUR,
    PC_OUT_OF_RANGE,
    SRAM_OUT_OF_RANGE,
    USER_TRAP,
)
from emulator import precompile
from emulator.decode import (
    CODE_COLS,
    FELL_OFF,
    ILLEGAL,
    INNER,
    STOP_MARK,
    XCOL_CLAIM,
    XCOL_COUNT,
    XCOL_FLOPS,
    XCOL_HWM,
)
from emulator.memcopy import copy_bytes
from emulator.numerics import (
    CANON_NAN,
    bf16_rne,
    bf16_sr,
    canon_bits,
    div_signed,
    div_unsigned,
    f32_to_i32_bits,
    fmax_bits,
    fmin_bits,
    i32_to_f32_bits,
    rem_signed,
    rem_unsigned,
    splitmix64,
)
from emulator.pipeline import LeanCompiler
from emulator.prefetch import prefetch
from emulator.simd import (
    VB_ADD,
    VB_MUL,
    VB_SUB,
    load16,
    load32,
    load64,
    mma_bf16_step,
    mma_f32_step,
    store16,
    store32,
    store64,
    vector_binop,
    vfma16,
)
from emulator.sync import claim, fence, release

# ---- node states, stop reasons, cfg slots -------------------------------------------------------
RUNNING, BLOCKED_SEND, BLOCKED_RECV, HALTED, TRAPPED = 0, 1, 2, 3, 4
STATE_NAMES = ("running", "blocked on send", "blocked on receive", "halted", "trapped")

# scalar_op results
S_NEXT, S_JUMP, S_HALT, S_TRAP, S_ILLEGAL = range(5)

# Why run_loop returned (out[O_REASON]).
R_IDLE, R_STOP, R_BUDGET = 0, 1, 2

# Trace records (emulator.trace reads them): rows of EV_COLS int64 (kind, node, a, b, t0, t1).
EV_REGION, EV_WAIT_RECV, EV_WAIT_SEND, EV_SEND, EV_RECV = 1, 2, 3, 4, 5
EV_COLS = 6
# fill counters: stored slice rows, dropped slice rows, stored message rows, dropped message rows
F_EV, F_EV_DROP, F_MSG, F_MSG_DROP = range(4)
# columns of the per-region totals (and of each node's snapshot at its last region switch)
(RS_CYCLES, RS_STALL, RS_STALL_SEND, RS_FLOPS, RS_SRAM, RS_LINK_BYTES, RS_LINK_MSGS,
 RS_ENTRIES) = range(8)
RS_COUNT = 8                            # then one column per timing class
RS_COLS = RS_COUNT + len(TIMING_CLASSES)

# cfg slots (machine values and run controls, int64)
(K_N, K_WIDTH, K_HEIGHT, K_SRAM, K_DEPTH, K_MAXMSG, K_COST_SEND, K_COST_RECV, K_MAX_CYCLES,
 K_QUANTUM, K_BUDGET, K_ONLY_NODE, K_USE_NODE_BUDGET, K_SRAM_ROW, K_LO, K_HI) = range(16)
CFG_SIZE = 16

# out slots (O_HELPED: instructions a thread ran on other threads' nodes)
O_EXECUTED, O_STOP_NODE, O_STOP_PC, O_REASON, O_HELPED = range(5)
OUT_SIZE = 5


# ---- opcodes (derived from the ISA table, never written by hand) --------------------------------
NOP, HALT, TRAP = OP["nop"], OP["halt"], OP["trap"]
GETX, GETY, GETID, GETW, GETH, GETN = (OP["getx"], OP["gety"], OP["getid"], OP["getw"],
                                       OP["geth"], OP["getn"])
RDCYCLE, SRSEED = OP["rdcycle"], OP["srseed"]
ADD, SUB, AND, OR, XOR = OP["add"], OP["sub"], OP["and"], OP["or"], OP["xor"]
SLL, SRL, SRA, SLT, SLTU, SEQ = OP["sll"], OP["srl"], OP["sra"], OP["slt"], OP["sltu"], OP["seq"]
MUL, DIV, DIVU, REM, REMU = OP["mul"], OP["div"], OP["divu"], OP["rem"], OP["remu"]
ADDI, ANDI, ORI, XORI = OP["addi"], OP["andi"], OP["ori"], OP["xori"]
SLLI, SRLI, SRAI, SLTI, SLTIU = OP["slli"], OP["srli"], OP["srai"], OP["slti"], OP["sltiu"]
MULI, MOVI, MOVHI = OP["muli"], OP["movi"], OP["movhi"]
LD8, LD8U, LD16, LD16U = OP["ld8"], OP["ld8u"], OP["ld16"], OP["ld16u"]
LD32, LD32U, LD64 = OP["ld32"], OP["ld32u"], OP["ld64"]
ST8, ST16, ST32, ST64 = OP["st8"], OP["st16"], OP["st32"], OP["st64"]
BEQ, BNE, BLT, BGE, BLTU, BGEU = (OP["beq"], OP["bne"], OP["blt"], OP["bge"], OP["bltu"],
                                  OP["bgeu"])
JAL, JALR = OP["jal"], OP["jalr"]
VLD, VST, VLDW, VSTN, VSTN_SR = (OP["vld"], OP["vst"], OP["vldw.bf16"], OP["vstn.bf16"],
                                 OP["vstn.bf16.sr"])
VLDS, VLDSW, VSTS, VSTSN = OP["vlds"], OP["vldsw.bf16"], OP["vsts"], OP["vstsn.bf16"]
VADD, VSUB, VMUL, VDIV = OP["vadd"], OP["vsub"], OP["vmul"], OP["vdiv"]
VMAX, VMIN, VFMA = OP["vmax"], OP["vmin"], OP["vfma"]
VCMPLT, VCMPLE, VCMPEQ, VSEL = OP["vcmplt"], OP["vcmple"], OP["vcmpeq"], OP["vsel"]
VAND, VOR, VXOR = OP["vand"], OP["vor"], OP["vxor"]
VMOV, VNEG, VABS, VSQRT, VRCP = OP["vmov"], OP["vneg"], OP["vabs"], OP["vsqrt"], OP["vrcp"]
VEXP, VTANH, VSIGMOID = OP["vexp"], OP["vtanh"], OP["vsigmoid"]
VCVT_BF16, VCVT_BF16_SR = OP["vcvt.bf16"], OP["vcvt.bf16.sr"]
VWIDEN_LO, VWIDEN_HI, VNARROW, VNARROW_SR = (OP["vwiden.lo"], OP["vwiden.hi"], OP["vnarrow"],
                                             OP["vnarrow.sr"])
VCVT_F32_I32, VCVT_I32_F32 = OP["vcvt.f32.i32"], OP["vcvt.i32.f32"]
VBCAST, VBCASTI, VEXT, VINS, VSPLAT, VIOTA = (OP["vbcast"], OP["vbcasti"], OP["vext"],
                                              OP["vins"], OP["vsplat"], OP["viota"])
VREDSUM, VREDMAX = OP["vredsum"], OP["vredmax"]
MMA_BF16, MMA_F32 = OP["mma.bf16"], OP["mma.f32"]
MMAK_BF16, MMAK_F32 = OP["mmak.bf16"], OP["mmak.f32"]
ACC_ZERO, ACC_LD, ACC_ST, ACC_ST_BF16 = (OP["acc.zero"], OP["acc.ld"], OP["acc.st"],
                                         OP["acc.st.bf16"])
SEND, RECV, VSEND, VRECV = OP["send"], OP["recv"], OP["vsend"], OP["vrecv"]
SENDB, RECVB, RELAY, RELAYB = OP["sendb"], OP["recvb"], OP["relay"], OP["relayb"]

# Inner-loop indexes (emulator.decode.INNER_OPS): the inner loop dispatches on these.
I_ADDI, I_BNE, I_ADD, I_BLT, I_VFMA = (INNER["addi"], INNER["bne"], INNER["add"], INNER["blt"],
                                       INNER["vfma"])
I_MMA_BF16, I_MMA_F32, I_BEQ, I_BGE = (INNER["mma.bf16"], INNER["mma.f32"], INNER["beq"],
                                       INNER["bge"])
I_SUB, I_MOVI, I_SLLI, I_SRLI, I_SRAI = (INNER["sub"], INNER["movi"], INNER["slli"],
                                         INNER["srli"], INNER["srai"])
I_AND, I_OR, I_XOR, I_ANDI, I_ORI, I_XORI = (INNER["and"], INNER["or"], INNER["xor"],
                                             INNER["andi"], INNER["ori"], INNER["xori"])
I_MUL, I_MULI, I_JAL, I_JALR, I_BLTU, I_BGEU = (INNER["mul"], INNER["muli"], INNER["jal"],
                                                INNER["jalr"], INNER["bltu"], INNER["bgeu"])
I_VADD, I_VMUL, I_VSUB = INNER["vadd"], INNER["vmul"], INNER["vsub"]
I_LD8, I_LD8U, I_LD16, I_LD16U = INNER["ld8"], INNER["ld8u"], INNER["ld16"], INNER["ld16u"]
I_LD32, I_LD32U, I_LD64 = INNER["ld32"], INNER["ld32u"], INNER["ld64"]
I_ST8, I_ST16, I_ST32, I_ST64 = INNER["st8"], INNER["st16"], INNER["st32"], INNER["st64"]
assert I_ST64 - I_LD8 == 10 and INNER["ld64"] < INNER["st8"]

# FLOPs of the vector instructions the inner loop runs (counted there without a table lookup).
FLOPS_VFMA = FLOPS["vfma"]
FLOPS_VBIN = FLOPS["vadd"]
FLOPS_MMA = FLOPS["mma.bf16"]
assert FLOPS["mma.f32"] == FLOPS_MMA
assert FLOPS["vsub"] == FLOPS_VBIN == FLOPS["vmul"]

# The outer path dispatches on opcode ranges, one per ISA group; check the table keeps them.
_SCALAR_MAX = max(i.opcode for i in INSTRUCTIONS
                  if i.group in ("system", "scalar", "memory", "control"))
assert all(_SCALAR_MAX < i.opcode < MMA_BF16 for i in INSTRUCTIONS if i.group == "vector")
assert all(MMA_BF16 <= i.opcode < SEND for i in INSTRUCTIONS if i.group == "matrix")
assert all(SEND <= i.opcode < ILLEGAL for i in INSTRUCTIONS if i.group == "network")


# Options of the helpers below, which only jitted code calls: Numba builds neither a C nor a
# Python entry point for them (each costs compile time: the Python wrappers were about 2 s of a
# cold start). Calling one from Python therefore raises TypeError (_JitOnly, at the end of this
# module) instead of entering code that does not exist; tests call `helper.py_func`. Constant
# arguments to them are written np.int64(...): Numba compiles a helper again for every distinct
# literal argument.
_HELPER = {"no_cfunc_wrapper": True, "no_cpython_wrapper": True, "pipeline_class": LeanCompiler}


# ---- memory ------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False, **_HELPER)
def mem_check(a, size, align, sram_bytes):
    """Cause code for an access of `size` bytes at `a`: range first, then alignment (0 = ok)."""
    if a < 0 or a > sram_bytes - size:
        return SRAM_OUT_OF_RANGE
    if a & (align - 1):
        return MISALIGNED
    return 0


@njit(cache=True, _nrt=False, **_HELPER)
def strided_check(a, stride, size, align, sram_bytes):
    """Check the 16 lane addresses a + i * stride: all in range, then all aligned."""
    return rows_check(a, stride, np.int64(16), size, align, sram_bytes)


@njit(cache=True, _nrt=False, **_HELPER)
def rows_check(a, stride, rows, size, align, sram_bytes):
    """Check the addresses a + i * stride, i < rows (64-bit wrapping arithmetic, as the
    hardware computes them): any out of range -> cause 3, else any misaligned -> cause 4."""
    for i in range(rows):
        e = a + i * stride
        if e < 0 or e > sram_bytes - size:
            return SRAM_OUT_OF_RANGE
    if align > 1:
        for i in range(rows):
            if (a + i * stride) & (align - 1):
                return MISALIGNED
    return 0


# ---- vector ------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy", _nrt=False, **_HELPER)
def vector_arith(op, v, node, d, s1, s2, s3):
    """Lane-wise fp32 arithmetic (other than vfma/vadd/vsub/vmul, see emulator.simd),
    comparisons, bit operations and conversions on node's vector registers."""
    vr = v[node]
    if op == VDIV:
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
        w = vr[s1, s3]          # s3 carries the lane here (see vector_op)
        for i in range(16):
            vr[d, i] = w
    elif op == VIOTA:
        for i in range(16):
            vr[d, i] = np.float32(i).view(np.uint32)


@njit(cache=True, _nrt=False, **_HELPER)
def _narrow_pair(lo, hi):
    """Two fp32 lanes (bits) -> one word of two bf16s, round to nearest even. Lane values, not
    constant lane numbers, are passed: Numba compiles a helper once per literal argument."""
    return np.uint32(bf16_rne(lo) | (bf16_rne(hi) << 16))


@njit(cache=True, _nrt=False, **_HELPER)
def sr_draw(sr, node):
    """Draw one value from node's stochastic-rounding generator."""
    s, z = splitmix64(sr[node])
    sr[node] = s
    return z


@njit(cache=True, error_model="numpy", _nrt=False, **_HELPER)
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


@njit(cache=True, _nrt=False, **_HELPER)
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


@njit(cache=True, _nrt=False, **_HELPER)
def vector_mem(op, node, v, d, s2, a, stride, sram16, sram32, sr, sram_bytes):
    """Vector loads and stores at a (strided forms: lane i at a + i * stride).

    Returns (cause, highest byte written + 1 or 0). Every address is checked before anything
    is read, written or drawn, so a trapping instruction changes nothing.
    """
    vr = v[node]
    m16 = sram16[node]
    m32 = sram32[node]
    if op == VLD or op == VST:
        c = mem_check(a, np.int64(64), np.int64(4), sram_bytes)
        if c:
            return c, 0
        b = a >> 2
        if op == VLD:
            for i in range(16):
                vr[d, i] = m32[b + i]
            return 0, 0
        for i in range(16):
            m32[b + i] = vr[s2, i]
        return 0, a + 64
    if op == VLDW:
        c = mem_check(a, np.int64(32), np.int64(2), sram_bytes)
        if c:
            return c, 0
        b = a >> 1
        for i in range(16):
            vr[d, i] = np.uint32(np.uint32(m16[b + i]) << 16)
        return 0, 0
    if op == VSTN or op == VSTN_SR:
        c = mem_check(a, np.int64(32), np.int64(2), sram_bytes)
        if c:
            return c, 0
        b = a >> 1
        if op == VSTN:
            for i in range(16):
                m16[b + i] = np.uint16(bf16_rne(vr[s2, i]))
        else:
            for i in range(16):
                m16[b + i] = np.uint16(bf16_sr(vr[s2, i], sr_draw(sr, node)))
        return 0, a + 32
    if op == VLDS or op == VSTS:
        c = strided_check(a, stride, np.int64(4), np.int64(4), sram_bytes)
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
            hw = max(hw, e + 4)
        return 0, hw
    # VLDSW, VSTSN: bf16 elements
    c = strided_check(a, stride, np.int64(2), np.int64(2), sram_bytes)
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
        hw = max(hw, e + 2)
    return 0, hw


# ---- matrix ------------------------------------------------------------------------------------

@njit(cache=True, _nrt=False, **_HELPER)
def mma_check(a_addr, b_addr, sa, sb, row, steps, sram_bytes):
    """Trap cause (0 = fine) for `steps` mma steps: A rows at a_addr + s * row + i * sa, B rows
    at b_addr + (8 s + i) * sb, each `row` bytes. The strides are unsigned, so addresses only
    grow with s and i: the first and the last row bound them all (range first), and all are
    aligned exactly when the first address and the stride are."""
    top = sram_bytes - row
    if (a_addr < 0 or a_addr > top or a_addr + row * (steps - 1) + 7 * sa > top
            or b_addr < 0 or b_addr > top or b_addr + (8 * (steps - 1) + 7) * sb > top):
        return SRAM_OUT_OF_RANGE
    if ((a_addr | sa | b_addr | sb) & (row // 8 - 1)) != 0:
        return MISALIGNED
    return 0


@njit(cache=True, _nrt=False, **_HELPER)
def mma_op(op, an, t_off, a_addr, b_addr, ksteps, imm, m8, sram_bytes, am):
    """mma.* (one step) and mmak.* (`ksteps` steps) into the tile an[t_off:t_off + 64].

    Returns (trap cause or 0, steps run). Step s reads A at a_addr + s * row bytes and B at
    b_addr + 8 * s * sb, rows sa / sb bytes apart. Every row of every step is range-checked,
    then alignment-checked, before step 0 runs; an mmak with 0 steps does nothing.
    an: the node's accumulators (flat float32); m8: its SRAM; am: float32[64] scratch.
    """
    sa = np.int64(imm) & 0xFFFF
    sb = np.int64(imm) >> 16
    bf16 = op == MMA_BF16 or op == MMAK_BF16
    row = 16 if bf16 else 32
    if ksteps == 0:
        return 0, 0
    # A advances `row` bytes a step, so a larger count always runs out of SRAM.
    if ksteps > np.uint64(sram_bytes // row + 2):
        return SRAM_OUT_OF_RANGE, 0
    ns = np.int64(ksteps)
    c = mma_check(a_addr, b_addr, sa, sb, row, ns, sram_bytes)
    if c:
        return c, 0
    for s in range(ns):
        a_off = a_addr + row * s
        b_off = b_addr + 8 * s * sb
        if bf16:
            mma_bf16_step(an, t_off, m8, a_off, sa, b_off, sb, am)
        else:
            mma_f32_step(an, t_off, m8, a_off, sa, b_off, sb)
    return 0, ns


@njit(cache=True, _nrt=False, **_HELPER)
def acc_op(op, acc, node, d, a_addr, imm, sram16, sram32, sram_bytes):
    """acc.ld, acc.st, acc.st.bf16 on tile d. Returns (cause, highest byte written + 1 or 0)."""
    t = acc[node, d]
    m16 = sram16[node]
    m32 = sram32[node]
    sa = np.int64(imm) & 0xFFFF
    if op == ACC_ST_BF16:
        c = rows_check(a_addr, sa, np.int64(8), np.int64(16), np.int64(2), sram_bytes)
        if c:
            return c, 0
        hw = np.int64(0)
        for i in range(8):
            rb = (a_addr + i * sa) >> 1
            for j in range(8):
                m16[rb + j] = np.uint16(bf16_rne(np.float32(t[i, j]).view(np.uint32)))
            hw = max(hw, a_addr + i * sa + 16)
        return 0, hw
    c = rows_check(a_addr, sa, np.int64(8), np.int64(32), np.int64(4), sram_bytes)
    if c:
        return c, 0
    if op == ACC_LD:
        for i in range(8):
            rb = (a_addr + i * sa) >> 2
            for j in range(8):
                t[i, j] = np.uint32(m32[rb + j]).view(np.float32)
        return 0, 0
    hw = np.int64(0)
    for i in range(8):
        rb = (a_addr + i * sa) >> 2
        for j in range(8):
            m32[rb + j] = np.float32(t[i, j]).view(np.uint32)
        hw = max(hw, a_addr + i * sa + 32)
    return 0, hw


# ---- network -----------------------------------------------------------------------------------

@njit(cache=True, _nrt=False, **_HELPER)
def fifo_room(l, pushed, popped, depth):
    """Slot for the next message on link l, or -1 if its FIFO is full."""
    j = pushed[l]
    if j - popped[l] >= depth:
        return -1
    fence()             # acquire: the receiver's consumption of that slot is complete
    return j % depth


@njit(cache=True, _nrt=False, **_HELPER)
def send_commit(l, sl, nbytes, c, flen, farr, pushed, consumed, wire_free, link_lat, link_bw,
                depth, cost_send):
    """Timing of a send whose payload is already in its slot (docs/TIMING.md).

    Returns (issue time, new clock, serialisation cycles).
    """
    j = pushed[l]
    slot = j % depth
    free_at = consumed[l, slot] if j >= depth else 0
    issue = max(c, free_at)
    depart = max(issue, wire_free[l])
    bw = link_bw[sl]
    ser = (nbytes + bw - 1) // bw
    farr[l, slot] = depart + link_lat[sl] + ser
    flen[l, slot] = nbytes
    wire_free[l] = depart + ser
    fence()             # release: the payload, length and arrival time before the count
    pushed[l] = j + 1
    return issue, issue + cost_send, ser


@njit(cache=True, _nrt=False, **_HELPER)
def recv_commit(l, c, farr, popped, consumed, depth, cost_recv):
    """Timing of taking the head message of link l. Returns (start time, new clock)."""
    j = popped[l]
    slot = j % depth
    start = max(c, farr[l, slot])
    done = start + cost_recv
    consumed[l, slot] = done
    fence()             # release: the payload was read and consumed[] set before the count
    popped[l] = j + 1
    return start, done


@njit(cache=True, error_model="numpy", _nrt=False, **_HELPER)
def net_op(op, node, rd, rs1, rs2, dr, c, x, v, sram8, fifo, stats, out_link, link_lat, link_bw,
           link_src, wake, cfg):
    """One network instruction of `node` at clock c.

    Returns (status, new clock, highest SRAM byte written + 1 or 0); status is 0 when it ran,
    a trap cause, or -BLOCKED_SEND / -BLOCKED_RECV when it must wait (and changed nothing).
    A push wakes the receiving node and a pop wakes the sending node (wake flags, see run_loop).
    """
    fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free = fifo
    stall, stall_send, link_bytes, link_msgs, link_busy = stats
    sram_bytes = cfg[K_SRAM]
    depth = cfg[K_DEPTH]
    cost_send = cfg[K_COST_SEND]
    cost_recv = cfg[K_COST_RECV]
    hw = np.int64(0)
    if op == RELAY or op == RELAYB:
        dout = np.int64(rd)
        ol = out_link[node * 4 + dout]
        if out_link[node * 4 + dr] < 0 or ol < 0:
            return NO_NEIGHBOUR, c, 0
        il = node * 4 + dr
        j = popped[il]
        if pushed[il] == j:
            return -BLOCKED_RECV, c, 0
        fence()         # acquire: the message is complete before it is read
        oslot = fifo_room(ol, pushed, popped, depth)
        if oslot < 0:
            return -BLOCKED_SEND, c, 0
        islot = j % depth
        nb = flen[il, islot]
        if op == RELAYB:
            if nb != x[node, rs2]:
                return MESSAGE_LENGTH_MISMATCH, c, 0
            a = x[node, rs1]
            if a < 0 or a > sram_bytes - nb:
                return SRAM_OUT_OF_RANGE, c, 0
            copy_bytes(sram8[node], a, fifo8[il, islot], 0, nb)
            hw = a + nb
        copy_bytes(fifo8[ol, oslot], 0, fifo8[il, islot], 0, nb)
        start, c1 = recv_commit(il, c, farr, popped, consumed, depth, cost_recv)
        issue, c2, ser = send_commit(ol, node * 4 + dout, nb, c1, flen, farr, pushed, consumed,
                                     wire_free, link_lat, link_bw, depth, cost_send)
        stall[node] += (start - c) + (issue - c1)
        stall_send[node] += issue - c1
        link_bytes[node, dout] += nb
        link_msgs[node, dout] += 1
        link_busy[node, dout] += ser
        wake[link_src[il]] = 1
        wake[ol >> 2] = 1
        return 0, c2, hw
    if op == SEND or op == VSEND or op == SENDB:
        sl = node * 4 + dr
        ol = out_link[sl]
        if ol < 0:
            return NO_NEIGHBOUR, c, 0
        nb = np.int64(8)
        if op == VSEND:
            nb = np.int64(64)
        elif op == SENDB:
            nb = x[node, rs2]
            if nb < 1 or nb > cfg[K_MAXMSG]:
                return BAD_MESSAGE_LENGTH, c, 0
            a = x[node, rs1]
            if a < 0 or a > sram_bytes - nb:
                return SRAM_OUT_OF_RANGE, c, 0
        oslot = fifo_room(ol, pushed, popped, depth)
        if oslot < 0:
            return -BLOCKED_SEND, c, 0
        if op == SEND:
            fifo64[ol, oslot, 0] = np.uint64(x[node, rs1])
        elif op == VSEND:
            for i in range(16):
                fifo32[ol, oslot, i] = v[node, rs1, i]
        else:
            copy_bytes(fifo8[ol, oslot], 0, sram8[node], x[node, rs1], nb)
        issue, c2, ser = send_commit(ol, sl, nb, c, flen, farr, pushed, consumed, wire_free,
                                     link_lat, link_bw, depth, cost_send)
        stall[node] += issue - c
        stall_send[node] += issue - c
        link_bytes[node, dr] += nb
        link_msgs[node, dr] += 1
        link_busy[node, dr] += ser
        wake[ol >> 2] = 1
        return 0, c2, 0
    # RECV, VRECV, RECVB
    if out_link[node * 4 + dr] < 0:
        return NO_NEIGHBOUR, c, 0
    il = node * 4 + dr
    j = popped[il]
    if pushed[il] == j:
        return -BLOCKED_RECV, c, 0
    fence()             # acquire: the message is complete before it is read
    islot = j % depth
    nb = flen[il, islot]
    if op == RECV:
        if nb != 8:
            return MESSAGE_LENGTH_MISMATCH, c, 0
        x[node, rd] = np.int64(fifo64[il, islot, 0])
    elif op == VRECV:
        if nb != 64:
            return MESSAGE_LENGTH_MISMATCH, c, 0
        for i in range(16):
            v[node, rd, i] = fifo32[il, islot, i]
    else:
        if nb != x[node, rs2]:
            return MESSAGE_LENGTH_MISMATCH, c, 0
        a = x[node, rs1]
        if a < 0 or a > sram_bytes - nb:
            return SRAM_OUT_OF_RANGE, c, 0
        copy_bytes(sram8[node], a, fifo8[il, islot], 0, nb)
        hw = a + nb
    start, c2 = recv_commit(il, c, farr, popped, consumed, depth, cost_recv)
    stall[node] += start - c
    wake[link_src[il]] = 1
    return 0, c2, hw


# ---- rarer scalar work -------------------------------------------------------------------------

@njit(cache=True, _nrt=False, **_HELPER)
def scalar_op(op, node, rd, rs1, rs2, imm, p, c, x, xy, sr, sr_init, cfg):
    """Every scalar, control and system instruction except memory, at pc p and clock c.

    Returns (status, target): S_NEXT, S_JUMP to pc `target` (a taken branch or jump, maybe out
    of the code), S_HALT, S_TRAP (user trap) or S_ILLEGAL. The run loop executes the frequent
    ones itself; this is the general path (rare ones, and any instruction after a stop flag).
    """
    a = x[node, rs1]
    b = x[node, rs2]
    si = np.int64(np.int32(imm))
    if op == ADD:
        x[node, rd] = a + b
    elif op == SUB:
        x[node, rd] = a - b
    elif op == AND:
        x[node, rd] = a & b
    elif op == OR:
        x[node, rd] = a | b
    elif op == XOR:
        x[node, rd] = a ^ b
    elif op == SLL:
        x[node, rd] = a << (b & 63)
    elif op == SRL:
        x[node, rd] = np.int64(np.uint64(a) >> np.uint64(b & 63))
    elif op == SRA:
        x[node, rd] = a >> (b & 63)
    elif op == SLT:
        x[node, rd] = 1 if a < b else 0
    elif op == SLTU:
        x[node, rd] = 1 if np.uint64(a) < np.uint64(b) else 0
    elif op == SEQ:
        x[node, rd] = 1 if a == b else 0
    elif op == MUL:
        x[node, rd] = a * b
    elif op == DIV:
        x[node, rd] = div_signed(a, b)
    elif op == DIVU:
        x[node, rd] = div_unsigned(a, b)
    elif op == REM:
        x[node, rd] = rem_signed(a, b)
    elif op == REMU:
        x[node, rd] = rem_unsigned(a, b)
    elif op == ADDI:
        x[node, rd] = a + si
    elif op == ANDI:
        x[node, rd] = a & si
    elif op == ORI:
        x[node, rd] = a | si
    elif op == XORI:
        x[node, rd] = a ^ si
    elif op == SLLI:
        x[node, rd] = a << np.int64(imm & 63)
    elif op == SRLI:
        x[node, rd] = np.int64(np.uint64(a) >> np.uint64(imm & 63))
    elif op == SRAI:
        x[node, rd] = a >> np.int64(imm & 63)
    elif op == SLTI:
        x[node, rd] = 1 if a < si else 0
    elif op == SLTIU:
        x[node, rd] = 1 if np.uint64(a) < np.uint64(si) else 0
    elif op == MULI:
        x[node, rd] = a * si
    elif op == MOVI:
        x[node, rd] = si
    elif op == MOVHI:
        x[node, rd] = (np.int64(imm) << 32) | (x[node, rd] & 0xFFFFFFFF)
    elif op == BEQ or op == BNE or op == BLT or op == BGE or op == BLTU or op == BGEU:
        if op == BEQ:
            taken = a == b
        elif op == BNE:
            taken = a != b
        elif op == BLT:
            taken = a < b
        elif op == BGE:
            taken = a >= b
        elif op == BLTU:
            taken = np.uint64(a) < np.uint64(b)
        else:
            taken = np.uint64(a) >= np.uint64(b)
        if taken:
            return S_JUMP, p + si
    elif op == JAL:
        x[node, rd] = p + 1
        return S_JUMP, p + si
    elif op == JALR:
        x[node, rd] = p + 1
        return S_JUMP, a + si          # rs1 was read before rd was written
    elif op == NOP:
        pass
    elif op == HALT:
        return S_HALT, 0
    elif op == TRAP:
        return S_TRAP, 0
    elif op == GETX:
        x[node, rd] = xy[node, 0]
    elif op == GETY:
        x[node, rd] = xy[node, 1]
    elif op == GETID:
        x[node, rd] = node
    elif op == GETW:
        x[node, rd] = cfg[K_WIDTH]
    elif op == GETH:
        x[node, rd] = cfg[K_HEIGHT]
    elif op == GETN:
        x[node, rd] = cfg[K_N]
    elif op == RDCYCLE:
        x[node, rd] = c
    elif op == SRSEED:
        s = np.uint64(a)
        sr[node] = sr_init[node] if s == 0 else s
    else:
        return S_ILLEGAL, 0
    return S_NEXT, 0


@njit(cache=True, _nrt=False, **_HELPER)
def scalar_mem(op, rd, rs1, rs2, imm, xr, m8, sram_bytes):
    """Scalar loads and stores on one node (xr: its register row, m8: its SRAM).
    Returns (trap cause or 0, highest byte written + 1 or 0)."""
    a = xr[rs1] + np.int64(np.int32(imm))
    if op == LD8 or op == LD8U or op == ST8:
        size = 1
    elif op == LD16 or op == LD16U or op == ST16:
        size = 2
    elif op == LD32 or op == LD32U or op == ST32:
        size = 4
    else:
        size = 8
    c = mem_check(a, size, size, sram_bytes)
    if c:
        return c, 0
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
    return 0, 0


@njit(cache=True, _nrt=False, **_HELPER)
def vector_fast(op, vn, rd, rs1, rs2, rs3):
    """vfma, vadd, vsub, vmul through emulator.simd (vn: the node's vector registers, flat)."""
    if op == VFMA:
        vfma16(vn, np.int64(rd) * 16, np.int64(rs1) * 16, np.int64(rs2) * 16, np.int64(rs3) * 16)
    else:
        kind = VB_ADD if op == VADD else (VB_SUB if op == VSUB else VB_MUL)
        vector_binop(kind, vn, np.int64(rd) * 16, np.int64(rs1) * 16, np.int64(rs2) * 16)


@njit(cache=True, _nrt=False, **_HELPER)
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


# ---- tracing (emulator.trace; only in the traced variant of run_loop) ----------------------------

NCLASSES = len(TIMING_CLASSES)        # instruction-count columns in x and in region stats


@njit(cache=True, _nrt=False, **_HELPER)
def _put(buf, cap, fill, fi, fdrop, kind, node, a, b, t0, t1):
    """Append one event row to buf, or count it as dropped when buf is full."""
    i = fill[fi]
    if i < cap:
        buf[i, 0] = kind
        buf[i, 1] = node
        buf[i, 2] = a
        buf[i, 3] = b
        buf[i, 4] = t0
        buf[i, 5] = t1
        fill[fi] = i + 1
    else:
        fill[fdrop] += 1


@njit(cache=True, _nrt=False, **_HELPER)
def region_switch(trace, node, r, c, xr, fl, stats):
    """Node enters region r at clock c: add what it did since its last switch to the region it
    leaves, take a new snapshot, note the span and record the event."""
    rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill = trace
    stall, stall_send, link_bytes, link_msgs, link_busy = stats
    lb = link_bytes[node, 0] + link_bytes[node, 1] + link_bytes[node, 2] + link_bytes[node, 3]
    lm = link_msgs[node, 0] + link_msgs[node, 1] + link_msgs[node, 2] + link_msgs[node, 3]
    flops = xr[XCOL_FLOPS] + fl
    old = cur[node]
    if old >= 0:
        rstat[old, RS_CYCLES] += c - last[node, RS_CYCLES]
        rstat[old, RS_STALL] += stall[node] - last[node, RS_STALL]
        rstat[old, RS_STALL_SEND] += stall_send[node] - last[node, RS_STALL_SEND]
        rstat[old, RS_FLOPS] += flops - last[node, RS_FLOPS]
        rstat[old, RS_SRAM] += sram[node] - last[node, RS_SRAM]
        rstat[old, RS_LINK_BYTES] += lb - last[node, RS_LINK_BYTES]
        rstat[old, RS_LINK_MSGS] += lm - last[node, RS_LINK_MSGS]
        for k in range(NCLASSES):
            rstat[old, RS_COUNT + k] += xr[XCOL_COUNT + k] - last[node, RS_COUNT + k]
        if c > rspan[old, 1]:
            rspan[old, 1] = c
    last[node, RS_CYCLES] = c
    last[node, RS_STALL] = stall[node]
    last[node, RS_STALL_SEND] = stall_send[node]
    last[node, RS_FLOPS] = flops
    last[node, RS_SRAM] = sram[node]
    last[node, RS_LINK_BYTES] = lb
    last[node, RS_LINK_MSGS] = lm
    for k in range(NCLASSES):
        last[node, RS_COUNT + k] = xr[XCOL_COUNT + k]
    rstat[r, RS_ENTRIES] += 1
    if c < rspan[r, 0]:
        rspan[r, 0] = c
    cur[node] = r
    _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_REGION, node, r, 0, c, 0)


@njit(cache=True, _nrt=False, **_HELPER)
def trace_step(trace, node, slot, c, xr, fl, stats):
    """Before node runs the instruction in code slot `slot` at clock c: switch regions if it
    starts another one, and count the SRAM bytes its loads, stores and mma steps move."""
    rtab = trace[0]
    cur = trace[4]
    r = rtab[slot]
    if r != cur[node]:
        region_switch(trace, node, r, c, xr, fl, stats)
    smul = trace[2]
    b = trace[1][slot]
    if smul[slot] != 0:
        b += smul[slot] * xr[trace[3][slot]]
    trace[8][node] += b


@njit(cache=True, _nrt=False, **_HELPER)
def trace_net(trace, op, node, rd, dr, c, c2, fifo, out_link, cfg):
    """After a network instruction of node ran from clock c to c2: its waits and its messages
    (sent: link, number, issue, arrival, bytes; consumed: link, number, start, done), read back
    from the FIFO state. Message payloads count as link bytes, not SRAM bytes."""
    rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill = trace
    fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free = fifo
    depth = cfg[K_DEPTH]
    cost_send = cfg[K_COST_SEND]
    cost_recv = cfg[K_COST_RECV]
    if op == RELAY or op == RELAYB:
        il = node * 4 + dr
        ji = popped[il] - 1
        done = consumed[il, ji % depth]
        start = done - cost_recv
        ol = out_link[node * 4 + np.int64(rd)]
        jo = pushed[ol] - 1
        issue = c2 - cost_send
        nb = flen[ol, jo % depth]
        if start > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_RECV, node, dr, out_link[il] // 4,
                 c, start)
        if issue > done:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_SEND, node, np.int64(rd), ol // 4,
                 done, issue)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_RECV, node, il, ji, start, done)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_SEND + (nb << 8), node, ol, jo, issue,
             farr[ol, jo % depth])
    elif op == SEND or op == VSEND or op == SENDB:
        ol = out_link[node * 4 + dr]
        jo = pushed[ol] - 1
        issue = c2 - cost_send
        nb = flen[ol, jo % depth]
        if issue > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_SEND, node, dr, ol // 4, c, issue)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_SEND + (nb << 8), node, ol, jo, issue,
             farr[ol, jo % depth])
    else:
        il = node * 4 + dr
        ji = popped[il] - 1
        done = c2
        start = done - cost_recv
        if start > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_RECV, node, dr, out_link[il] // 4,
                 c, start)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_RECV, node, il, ji, start, done)


# ---- the mesh ----------------------------------------------------------------------------------

_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(i) for i in range(1, 8))


@njit(cache=True, error_model="numpy", _nrt=False, nogil=True, pipeline_class=LeanCompiler)
def run_loop(node_st, fifo, stats, geo, node_budget, out, uscratch, fscratch, trace):
    """Round-robin over the nodes until nothing can progress, a stop flag, or the budget.

    Each running or blocked node, in id order, executes up to cfg[K_QUANTUM] instructions per
    turn. A sweep visits only nodes whose wake flag is set: a node that blocks clears its flag
    and is woken (flag set) when a message is pushed into the link it receives from or popped
    from the link it sends into, so a blocked node costs nothing until it can move; sweeps skip
    eight unwoken nodes at a time. Visiting a blocked node that cannot move changes nothing, so
    this gives exactly the results of visiting every node, while a program whose work hops from
    node to node (a token ring on 8,850 nodes) pays a word test per eight idle nodes per sweep
    instead of a visit per node. Fills out[O_EXECUTED], out[O_HELPED], out[O_REASON] and, for
    a stop, out[O_STOP_NODE] and out[O_STOP_PC].

    With threads (cfg[K_HI] > 0) each call sweeps its own range [K_LO, K_HI) forward; when a
    sweep of it makes no progress, it sweeps every other node backward, running turns of those
    it can claim (emulator.sync), and returns to its own range after any progress. So a thread
    whose nodes are done or blocked helps the others instead of waiting at the end of the
    phase: on a shared host one core is often slower than the other, and a static split would
    make the faster thread wait for the slower. The call returns when both kinds of sweep make
    no progress. Each turn holds the node's claim, so no node ever runs on two threads at once.

    A turn is two nested loops. The inner one runs the frequent instructions (scalar ALU,
    branches, scalar loads and stores, vfma/vadd/vsub/vmul, single mma steps) and contains no
    calls, so LLVM keeps its state in registers: it works on per-turn views of the node's code,
    register row (which also holds the node's counters, see emulator.decode), SRAM, vector
    registers and accumulators. Any other instruction, and any that must trap, leaves it for the
    outer loop, which runs that one instruction through the group helpers.

    No pc range check per instruction: every block is followed by a FELL_OFF sentinel slot and
    every taken jump checks its target (a jump out of the code ends the turn; the next turn's
    fetch check traps). Stop flags cost nothing here: the opcode column of the table the loop
    runs holds inner-loop indexes (emulator.decode.kernel_table) and flagged slots hold
    STOP_MARK, which the inner loop leaves to the outer one; the real opcodes are in real_op.

    `trace` is None (the normal, untraced variant: Numba removes the tracing branches) or the
    trace recorder's tuple (see the module docstring and emulator.trace).
    """
    (x, v, acc, sram8, sram16, sram32, sram64, pc, clock, state, cause, trap_arg,
     sr, sr_init, skip, sram_flat) = node_st
    (code, real_op, node_base, node_len, out_link, link_lat, link_bw, xy, flops_tab, link_src,
     wake, cfg) = geo

    n = cfg[K_N]
    quantum = cfg[K_QUANTUM]
    budget = cfg[K_BUDGET]
    only = cfg[K_ONLY_NODE]
    use_nb = cfg[K_USE_NODE_BUDGET] != 0
    sram_bytes = cfg[K_SRAM]
    sram_row = cfg[K_SRAM_ROW]
    maxc = cfg[K_MAX_CYCLES]
    vwords = v.shape[1] * 16
    awords = acc.shape[1] * 64
    vflat = v.reshape(v.size)
    xflat = x.reshape(x.size)
    xcols = x.shape[1]
    accflat = acc.reshape(acc.size)
    lo = 0
    hi = n
    threaded = cfg[K_HI] > 0
    if threaded:
        # one thread's share of the nodes (Emulator.run with threads > 1)
        lo = cfg[K_LO]
        hi = cfg[K_HI]
    if only >= 0:
        lo = only
        hi = only + 1
    # Loop-carried variables start with their final types (np.int64(0), not 0): a literal
    # start would be widened at the back edge, costing Numba extra type-inference rounds.
    total = np.int64(0)
    helped = np.int64(0)
    out[O_REASON] = R_IDLE
    out[O_STOP_NODE] = -1
    out[O_STOP_PC] = -1
    for node in range(lo, hi):
        wake[node] = 1 if state[node] < HALTED else 0
    wake64 = wake.view(np.uint64)
    glo = lo >> 3
    home_groups = ((hi + 7) >> 3) - glo
    all_groups = (n + 7) >> 3
    stealing = np.bool_(False)
    while True:
        progress = np.bool_(False)
        # A sweep: forward over the thread's own nodes; or, once those made no progress
        # (threads only), a stealing sweep backward over every other node, so that a thread
        # whose nodes are all blocked or done runs turns of the others' instead of idling.
        for gj in range(all_groups if stealing else home_groups):
            group = all_groups - 1 - gj if stealing else glo + gj
            if wake64[group] == 0:
                continue            # eight nodes that are blocked (and not woken) or done
            for gk in range(8):
                node = (group << 3) + (7 - gk if stealing else gk)
                if stealing:
                    if node >= n or (node >= lo and node < hi):
                        continue
                elif node < lo or node >= hi:
                    continue
                if wake[node] == 0:
                    continue
                claim_at = np.int64(node * xcols + XCOL_CLAIM)
                if threaded and not claim(xflat, claim_at):
                    continue                # another thread is running a turn of it
                if state[node] >= HALTED:
                    wake[node] = 0
                    if threaded:
                        release(xflat, claim_at)
                    continue
                q = quantum
                if budget >= 0 and budget - total < q:
                    q = budget - total
                if use_nb and node_budget[node] < q:
                    q = node_budget[node]
                base = node_base[node]
                length = node_len[node]
                c = clock[node]
                p = pc[node]
                # The fetch checks, in order: the cycle limit, then the pc.
                if q > 0 and c > maxc:
                    state[node] = TRAPPED
                    cause[node] = CYCLE_LIMIT
                    q = 0
                elif q > 0 and (p < 0 or p >= length):
                    state[node] = TRAPPED
                    cause[node] = PC_OUT_OF_RANGE
                    q = 0
                if q <= 0:
                    # still runnable (and awake) once the budget allows; or trapped
                    if threaded:
                        release(xflat, claim_at)
                    continue
                cn = code[base * CODE_COLS:]
                xr = x[node]
                if node + 1 < hi:
                    # the next node's registers and counters, while this one runs
                    prefetch(xflat, np.int64((node + 1) * xcols))
                    prefetch(xflat, np.int64((node + 1) * xcols + XCOL_HWM))
                # a contiguous view of the node's SRAM (rows of sram8 are padded, see State)
                m8 = sram_flat[node * sram_row:node * sram_row + sram_bytes]
                vn = vflat[node * vwords:(node + 1) * vwords]
                an = accflat[node * awords:(node + 1) * awords]
                st = RUNNING
                tcause = 0
                stopped = False
                left = q
                fl = np.int64(0)    # FLOPs of the inner loop's vector and matrix instructions
                # a jump to t outside the code: it completes, then the turn ends (the next
                # turn's fetch check traps)
                leave = np.bool_(False)
                t = np.int64(0)
                gi = np.uint64(0)
                while left > 0:
                    # ---- inner loop: frequent instructions, no calls --------------------------
                    slow = False
                    while left > 0:
                        if trace is not None:
                            trace_step(trace, node, base + p, c, xr, fl, stats)
                        if c > maxc:
                            slow = True
                            break
                        gi = np.uint64(p * CODE_COLS)
                        op = cn[gi]
                        rd = cn[gi + _U1]
                        rs1 = cn[gi + _U2]
                        if op == I_ADDI:
                            xr[rd] = xr[rs1] + np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_BNE:
                            if xr[rs1] != xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_ADD:
                            xr[rd] = xr[rs1] + xr[cn[gi + _U3]]
                        elif op == I_BLT:
                            if xr[rs1] < xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_VFMA:
                            vfma16(vn, np.int64(rd) * 16, np.int64(rs1) * 16,
                                   np.int64(cn[gi + _U3]) * 16, np.int64(cn[gi + _U4]) * 16)
                            fl += FLOPS_VFMA
                        elif op == I_MMA_BF16 or op == I_MMA_F32:
                            a = xr[rs1]
                            b = xr[cn[gi + _U3]]
                            imm = np.int64(cn[gi + _U5])
                            sa = imm & 0xFFFF
                            sb = imm >> 16
                            bf16 = op == I_MMA_BF16
                            if mma_check(a, b, sa, sb, 16 if bf16 else 32, np.int64(1),
                                         sram_bytes) != 0:
                                slow = True
                                break
                            if bf16:
                                mma_bf16_step(an, np.int64(rd) * 64, m8, a, sa, b, sb, fscratch)
                            else:
                                mma_f32_step(an, np.int64(rd) * 64, m8, a, sa, b, sb)
                            fl += FLOPS_MMA
                        elif op == I_BEQ:
                            if xr[rs1] == xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_BGE:
                            if xr[rs1] >= xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_SUB:
                            xr[rd] = xr[rs1] - xr[cn[gi + _U3]]
                        elif op == I_MOVI:
                            xr[rd] = np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_SLLI:
                            xr[rd] = xr[rs1] << np.int64(cn[gi + _U5] & 63)
                        elif op == I_SRLI:
                            xr[rd] = np.int64(np.uint64(xr[rs1]) >> np.uint64(cn[gi + _U5] & 63))
                        elif op == I_SRAI:
                            xr[rd] = xr[rs1] >> np.int64(cn[gi + _U5] & 63)
                        elif op == I_AND:
                            xr[rd] = xr[rs1] & xr[cn[gi + _U3]]
                        elif op == I_OR:
                            xr[rd] = xr[rs1] | xr[cn[gi + _U3]]
                        elif op == I_XOR:
                            xr[rd] = xr[rs1] ^ xr[cn[gi + _U3]]
                        elif op == I_ANDI:
                            xr[rd] = xr[rs1] & np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_ORI:
                            xr[rd] = xr[rs1] | np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_XORI:
                            xr[rd] = xr[rs1] ^ np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_MUL:
                            xr[rd] = xr[rs1] * xr[cn[gi + _U3]]
                        elif op == I_MULI:
                            xr[rd] = xr[rs1] * np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_JAL:
                            t = p + np.int64(np.int32(cn[gi + _U5]))
                            xr[rd] = p + 1
                            if t < 0 or t >= length:
                                leave = True        # completed after the turn loop
                                break
                            p = t - 1
                        elif op == I_JALR:
                            t = xr[rs1] + np.int64(np.int32(cn[gi + _U5]))
                            xr[rd] = p + 1
                            if t < 0 or t >= length:
                                leave = True        # completed after the turn loop
                                break
                            p = t - 1
                        elif op == I_BLTU:
                            if np.uint64(xr[rs1]) < np.uint64(xr[cn[gi + _U3]]):
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_BGEU:
                            if np.uint64(xr[rs1]) >= np.uint64(xr[cn[gi + _U3]]):
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_VADD or op == I_VMUL or op == I_VSUB:
                            kind = VB_ADD if op == I_VADD else (VB_MUL if op == I_VMUL else VB_SUB)
                            vector_binop(kind, vn, np.int64(rd) * 16, np.int64(rs1) * 16,
                                         np.int64(cn[gi + _U3]) * 16)
                            fl += FLOPS_VBIN
                        elif op >= I_LD8 and op <= I_ST64:
                            a = xr[rs1] + np.int64(np.int32(cn[gi + _U5]))
                            if op == I_LD64 or op == I_ST64:
                                size = 8
                            elif op == I_LD32 or op == I_LD32U or op == I_ST32:
                                size = 4
                            elif op == I_LD16 or op == I_LD16U or op == I_ST16:
                                size = 2
                            else:
                                size = 1
                            if a < 0 or a > sram_bytes - size or a & (size - 1):
                                slow = True         # the outer loop reports the trap
                                break
                            if op == I_LD64:
                                xr[rd] = np.int64(load64(m8, a))
                            elif op == I_LD32:
                                xr[rd] = np.int64(np.int32(load32(m8, a)))
                            elif op == I_LD32U:
                                xr[rd] = np.int64(load32(m8, a))
                            elif op == I_LD16:
                                xr[rd] = np.int64(np.int16(load16(m8, a)))
                            elif op == I_LD16U:
                                xr[rd] = np.int64(load16(m8, a))
                            elif op == I_LD8:
                                xr[rd] = np.int64(np.int8(m8[a]))
                            elif op == I_LD8U:
                                xr[rd] = np.int64(m8[a])
                            else:
                                val = xr[cn[gi + _U3]]
                                if op == I_ST64:
                                    store64(m8, a, val)
                                elif op == I_ST32:
                                    store32(m8, a, val)
                                elif op == I_ST16:
                                    store16(m8, a, val)
                                else:
                                    m8[a] = np.uint8(val & 0xFF)
                                if a + size > xr[XCOL_HWM]:
                                    xr[XCOL_HWM] = a + size
                        else:
                            slow = True
                            break
                        xr[cn[gi + _U6]] += 1
                        c += np.int64(cn[gi + _U7])
                        p += 1
                        left -= 1
                    if leave or not slow:
                        break
                    # ---- outer loop: one instruction the inner loop does not run --------------
                    if c > maxc:
                        tcause = CYCLE_LIMIT
                        break
                    gi = np.uint64(p * CODE_COLS)
                    op = real_op[base + p]
                    if cn[gi] == STOP_MARK:
                        if p != skip[node]:
                            stopped = True
                            break
                        skip[node] = -1
                    rd = cn[gi + _U1]
                    rs1 = cn[gi + _U2]
                    rs2 = cn[gi + _U3]
                    rs3 = cn[gi + _U4]
                    imm = cn[gi + _U5]
                    cost = np.int64(cn[gi + _U7])
                    if op <= _SCALAR_MAX:
                        if op >= LD8 and op <= ST64:
                            mc, mh = scalar_mem(op, rd, rs1, rs2, imm, xr, m8, sram_bytes)
                            if mc:
                                tcause = mc
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                        else:
                            r, t = scalar_op(op, node, rd, rs1, rs2, imm, p, c, x, xy, sr, sr_init,
                                             cfg)
                            if r == S_JUMP:
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                            elif r == S_HALT:
                                # halt completes (cost, count) and leaves the pc on itself
                                st = HALTED
                                xr[cn[gi + _U6]] += 1
                                c += cost
                                left -= 1
                                break
                            elif r == S_TRAP:
                                tcause = USER_TRAP
                                trap_arg[node] = np.int64(imm)
                                break
                            elif r == S_ILLEGAL:
                                tcause = ILLEGAL_INSTRUCTION
                                break
                    elif op < MMA_BF16:
                        if op == VFMA or op == VADD or op == VSUB or op == VMUL:
                            vector_fast(op, vn, rd, rs1, rs2, rs3)
                        elif op <= VSTSN:
                            a = xr[rs1] + np.int64(np.int32(imm))
                            stride = np.int64(0)
                            if op == VLDS or op == VLDSW:
                                stride = xr[rs2]
                            elif op == VSTS or op == VSTSN:
                                stride = xr[rs3]
                            vc, vh = vector_mem(op, node, v, rd, rs2, a, stride, sram16, sram32, sr,
                                                sram_bytes)
                            if vc:
                                tcause = vc
                                break
                            if vh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = vh
                        elif (op == VBCAST or op == VBCASTI or op == VEXT or op == VINS
                              or op == VREDSUM or op == VREDMAX):
                            vector_move(op, node, rd, rs1, imm, x, v)
                        elif op == VCVT_BF16_SR or op == VNARROW_SR:
                            vector_sr(op, node, v, rd, rs1, rs2, sr, uscratch)
                        elif op == VSPLAT:
                            vector_arith(op, v, node, rd, rs1, rs2, np.uint32(imm & 15))
                        else:
                            vector_arith(op, v, node, rd, rs1, rs2, rs3)
                        xr[XCOL_FLOPS] += flops_tab[op]
                    elif op < SEND:
                        if op == MMA_BF16 or op == MMA_F32 or op == MMAK_BF16 or op == MMAK_F32:
                            ks = np.uint64(1)
                            if op == MMAK_BF16 or op == MMAK_F32:
                                ks = np.uint64(xr[rs3])
                            mc, steps = mma_op(op, an, np.int64(rd) * 64, xr[rs1], xr[rs2], ks, imm,
                                               m8, sram_bytes, fscratch)
                            if mc:
                                tcause = mc
                                break
                            # an mmak costs max(steps, 1) mma and counts the FLOPs of each step
                            if steps > 1:
                                cost *= steps
                            xr[XCOL_FLOPS] += flops_tab[op] * steps
                        elif op == ACC_ZERO:
                            t0 = np.int64(rd) * 64
                            for i in range(64):
                                an[t0 + i] = np.float32(0.0)
                        else:
                            mc, mh = acc_op(op, acc, node, rd, xr[rs1], imm, sram16, sram32,
                                            sram_bytes)
                            if mc:
                                tcause = mc
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                    elif op < ILLEGAL:
                        # network: the clock moves by the timing equations, not by the cost
                        ns, c2, nh = net_op(op, node, rd, rs1, rs2, np.int64(rs3), c, x, v, sram8,
                                            fifo, stats, out_link, link_lat, link_bw, link_src,
                                            wake, cfg)
                        if ns != 0:
                            if ns < 0:
                                st = -ns
                                if cn[gi] == STOP_MARK:
                                    skip[node] = p      # retry it without stopping again
                            else:
                                tcause = ns
                            break
                        if nh > xr[XCOL_HWM]:
                            xr[XCOL_HWM] = nh
                        if trace is not None:
                            trace_net(trace, op, node, rd, np.int64(rs3), c, c2, fifo, out_link,
                                      cfg)
                        cost = c2 - c
                    elif op == FELL_OFF:
                        tcause = PC_OUT_OF_RANGE
                        break
                    else:
                        tcause = ILLEGAL_INSTRUCTION
                        break
                    xr[cn[gi + _U6]] += 1
                    c += cost
                    p += 1
                    left -= 1
                if leave:
                    xr[cn[gi + _U6]] += 1
                    c += np.int64(cn[gi + _U7])
                    p = t
                    left -= 1
                pc[node] = p
                clock[node] = c
                xr[XCOL_FLOPS] += fl
                # A running node's flag and state stay as they are: no write, so two threads
                # never fight over the cache line of flags at the edge of their ranges.
                if tcause:
                    state[node] = TRAPPED
                    cause[node] = tcause
                    wake[node] = 0
                elif st != RUNNING:
                    state[node] = st
                    wake[node] = 0
                elif state[node] != RUNNING:
                    state[node] = RUNNING
                if threaded:
                    release(xflat, claim_at)
                k = q - left
                total += k
                if stealing:
                    helped += k
                if use_nb:
                    node_budget[node] -= k
                if k > 0:
                    progress = True
                if stopped:
                    out[O_EXECUTED] = total
                    out[O_REASON] = R_STOP
                    out[O_STOP_NODE] = node
                    out[O_STOP_PC] = p
                    return
                if budget >= 0 and total >= budget:
                    out[O_EXECUTED] = total
                    out[O_HELPED] = helped
                    out[O_REASON] = R_BUDGET
                    return
        if progress:
            stealing = False        # back to the thread's own nodes: messages may have woken them
        elif threaded and not stealing:
            stealing = True
        else:
            break
    out[O_EXECUTED] = total
    out[O_HELPED] = helped


def _check_isa_fingerprint() -> None:
    """Drop stale cached machine code.

    Numba's cache is keyed on this file's timestamp only, but the compiled loop also freezes in
    d1isa's opcode numbers, inlines code from emulator.simd, .numerics and .decode, and is built
    by emulator.pipeline's passes. If any of those changed since the cache was written, flush
    every cached function of this module.
    """
    import hashlib
    import os

    from d1isa.isa import TABLE
    from d1isa.machine import TIMING_CLASSES
    from emulator import decode, memcopy, numerics, pipeline, prefetch, simd, sync

    h = hashlib.sha256(repr((TABLE, FLOPS, TIMING_CLASSES)).encode())
    for mod in (decode, memcopy, numerics, pipeline, prefetch, simd, sync):
        try:
            with open(mod.__file__, "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    digest = h.hexdigest()
    cache = getattr(run_loop, "_cache", None)
    path = getattr(cache, "cache_path", None)
    if not path:
        return
    stamp = os.path.join(path, "kernel.isa-fingerprint")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return
    except OSError:
        pass
    for disp in list(globals().values()):
        c = getattr(disp, "_cache", None)
        if c is not None and hasattr(c, "flush"):
            try:
                c.flush()
            except OSError:
                pass
    try:
        os.makedirs(path, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(digest + "\n")
    except OSError:
        pass


class _JitOnly(CPUDispatcher):
    """A helper compiled without a Python entry point: calling it from Python is an error."""

    def compile(self, sig):
        # A second process may be compiling this very helper (emulator.precompile): let it
        # finish, and load its result from the cache, rather than compile it here too.
        precompile.wait_for(self.py_func.__name__)
        return super().compile(sig)

    def __call__(self, *args, **kws):
        raise TypeError(f"emulator.kernel.{self.py_func.__name__} has no Python entry point; "
                        f"call it from jitted code, or its .py_func from Python")


def _jit_only() -> None:
    for obj in list(globals().values()):
        if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("no_cpython_wrapper"):
            obj.__class__ = _JitOnly


_jit_only()
_check_isa_fingerprint()
