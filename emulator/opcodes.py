"""The numbers the jitted code dispatches on, all derived from the ISA table (d1isa.isa).

Why a module of their own: Numba freezes module constants into the compiled code, so the loop and
its helpers name opcodes as constants (`ADDI = OP["addi"]`); this is the one place that derives
them, with the per-opcode facts the helpers need (SRAM bytes and alignment of an access, message
sizes, FLOPs), so no helper spells a width or an opcode set by hand.

Three numberings meet here:

- real opcodes (`ADDI`), which the outer path of the loop and the group helpers dispatch on;
- opcode values beyond the ISA's 0..255 that emulator.decode writes: ILLEGAL, FELL_OFF;
- inner-loop indexes (`I_ADDI`): the loop's inner loop runs the frequent instructions and
  dispatches on small dense numbers 1..N (one jump table), which emulator.decode.kernel_table
  writes into the table the loop runs (0: any other instruction; STOP_MARK: a debugger flag).
"""

from __future__ import annotations

import numpy as np

from d1isa.isa import BY_OPCODE, FLOPS, INSTRUCTIONS, OP, opcodes_where

# ---- real opcodes -------------------------------------------------------------------------------
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
VPOW, VERF, VGELU = OP["vpow"], OP["verf"], OP["vgelu"]
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

# ---- opcode values beyond the ISA's 0..255 (emulator.decode writes them) ------------------------
ILLEGAL = 256           # an invalid word, or a register the machine lacks
FELL_OFF = 257          # the sentinel slot after each block
STOP_MARK = 255         # a slot flagged by the debugger, in the table the loop runs (an index)
# The table the loop runs holds both numbers in its opcode column: the inner-loop index (or
# STOP_MARK) in the low 16 bits, the real opcode above them (emulator.decode.kernel_table), so
# the outer path reads the opcode from the row it has fetched anyway.
INNER_MASK = 0xFFFF
REAL_SHIFT = 16
assert FELL_OFF < (1 << (32 - REAL_SHIFT))

# ---- the outer path's dispatch: one opcode range per ISA group -----------------------------------
def _group(*groups: str) -> tuple[int, ...]:
    return opcodes_where(lambda i: i.group in groups)


SCALAR_MAX = max(_group("system", "scalar", "memory", "control"))
VECTOR_MAX = max(_group("vector"))
MATRIX_MAX = max(_group("matrix"))
assert all(SCALAR_MAX < o <= VECTOR_MAX for o in _group("vector"))
assert all(VECTOR_MAX < o <= MATRIX_MAX for o in _group("matrix"))
assert all(MATRIX_MAX < o < ILLEGAL for o in _group("network"))
VECTOR_MEM_MAX = max(opcodes_where(lambda i: i.group == "vector" and i.memory is not None))
# the vector loads and stores come first in their group (the outer path tests op <= VECTOR_MEM_MAX)
assert all(o > VECTOR_MEM_MAX for o in _group("vector") if BY_OPCODE[o].memory is None)
# scalar loads and stores: one range of opcodes
SCALAR_MEM = _group("memory")
SCALAR_MEM_FIRST, SCALAR_MEM_LAST = SCALAR_MEM[0], SCALAR_MEM[-1]
assert SCALAR_MEM == opcodes_where(lambda i: SCALAR_MEM_FIRST <= i.opcode <= SCALAR_MEM_LAST)


def _shape(kind: str, shape: str):
    return lambda i: i.memory is not None and i.memory.kind == kind and i.memory.shape == shape


# strided vector accesses: the stride is in rs2 for a load, rs3 for a store (their formats)
STRIDED_LOADS = opcodes_where(_shape("load", "strided"))
STRIDED_STORES = opcodes_where(_shape("store", "strided"))
assert all("rs2" in BY_OPCODE[o].operands for o in STRIDED_LOADS)
assert all("rs3" in BY_OPCODE[o].operands for o in STRIDED_STORES)
# the mma forms read two tiles (A and B); the mmak forms do so once per K step, count in rs3
MMA_OPCODES = opcodes_where(lambda i: i.memory is not None and i.memory.tiles == 2)
MMAK_OPCODES = opcodes_where(lambda i: i.opcode in MMA_OPCODES and "rs3" in i.operands)


# ---- per-opcode facts from the table, as arrays the jitted code indexes --------------------------

def _per_opcode(value) -> np.ndarray:
    out = np.zeros(ILLEGAL, dtype=np.int64)
    for ins in INSTRUCTIONS:
        out[ins.opcode] = value(ins)
    out.setflags(write=False)
    return out


def _element_bytes(ins) -> int:
    """The alignment an SRAM access needs: the bytes of one element (one lane of a contiguous
    vector access, one value of a tile row, else the access itself)."""
    m = ins.memory
    if m is None or m.shape == "message":
        return 1
    if m.shape == "contiguous" and ins.lanes:
        return m.width // ins.lanes
    if m.shape == "tile":
        return m.width // TILE_ROWS
    return m.width


TILE_ROWS = 8               # an mma tile is 8 x 8 (emulator.simd.mma8)
# Bytes of one access (a tile row for the matrix forms, 0 for a message) and its alignment.
MEM_BYTES = _per_opcode(lambda i: i.memory.width if i.memory else 0)
MEM_ALIGN = _per_opcode(_element_bytes)
# Size of the message a network instruction sends or expects (0: its length register says).
MSG_BYTES = _per_opcode(lambda i: (i.network.nbytes or 0) if i.network else 0)
# The checks of vector_mem and mma_op take one size for the forms they share a branch for
# (mma_op runs an mmak's steps as those of the mma of its precision).
assert MEM_BYTES[VLD] == MEM_BYTES[VST] and MEM_BYTES[VSTN] == MEM_BYTES[VSTN_SR]
assert MEM_BYTES[MMA_BF16] == MEM_BYTES[MMAK_BF16] and MEM_BYTES[MMA_F32] == MEM_BYTES[MMAK_F32]
assert MEM_ALIGN[MMA_BF16] == MEM_ALIGN[MMAK_BF16] and MEM_ALIGN[MMA_F32] == MEM_ALIGN[MMAK_F32]
assert MEM_BYTES[ACC_LD] == MEM_BYTES[ACC_ST]

# FLOPs of the instructions the inner loop runs (it counts them without a table lookup).
FLOPS_VFMA, FLOPS_VADD, FLOPS_VSUB, FLOPS_VMUL = (FLOPS["vfma"], FLOPS["vadd"], FLOPS["vsub"],
                                                  FLOPS["vmul"])
FLOPS_MMA = FLOPS["mma.bf16"]
assert FLOPS["mma.f32"] == FLOPS_MMA == FLOPS["mmak.bf16"]

# ---- inner-loop indexes --------------------------------------------------------------------------
INNER: dict[int, int] = {}          # real opcode -> inner-loop index (emulator.decode reads it)


def _inner(opcode: int) -> int:
    """The next inner-loop index, for `opcode`."""
    INNER[opcode] = max(INNER.values(), default=0) + 1
    return INNER[opcode]


def _inner_block(opcodes: tuple[int, ...]) -> tuple[int, int, int]:
    """The next inner-loop indexes for a run of opcodes, laid out as the opcodes are (gaps
    included), so the inner loop turns an index of the block back into the opcode with one
    addition and runs it through the helper the outer path uses. Returns (first index, last
    index, opcode - index)."""
    first = max(INNER.values(), default=0) + 1
    for op in opcodes:
        INNER[op] = first + op - opcodes[0]
    return first, INNER[opcodes[-1]], opcodes[0] - first


I_ADDI = _inner(ADDI)
I_BNE = _inner(BNE)
I_ADD = _inner(ADD)
I_BLT = _inner(BLT)
I_VFMA = _inner(VFMA)
# mma.bf16 and mma.f32 (single steps; matrix.mma_steps)
I_MMA_FIRST, I_MMA_LAST, I_MMA_TO_OP = _inner_block(
    opcodes_where(lambda i: i.opcode in MMA_OPCODES and i.opcode not in MMAK_OPCODES))
# mmak.bf16 (any number of steps; matrix.mma_k_steps)
I_MMAK = _inner(MMAK_BF16)
I_BEQ = _inner(BEQ)
I_BGE = _inner(BGE)
I_SUB = _inner(SUB)
I_MOVI = _inner(MOVI)
I_SLLI = _inner(SLLI)
I_SRLI = _inner(SRLI)
I_SRAI = _inner(SRAI)
I_AND = _inner(AND)
I_OR = _inner(OR)
I_XOR = _inner(XOR)
I_ANDI = _inner(ANDI)
I_ORI = _inner(ORI)
I_XORI = _inner(XORI)
I_MUL = _inner(MUL)
I_MULI = _inner(MULI)
I_JAL = _inner(JAL)
I_JALR = _inner(JALR)
I_BLTU = _inner(BLTU)
I_BGEU = _inner(BGEU)
# vadd, vsub, vmul (vector.vector_fast)
I_VBIN_FIRST, I_VBIN_LAST, I_VBIN_TO_OP = _inner_block((VADD, VSUB, VMUL))
# vld, vst, vldw.bf16, vstn.bf16 (vector.vector_mem_fast)
I_VMEM_FIRST, I_VMEM_LAST, I_VMEM_TO_OP = _inner_block((VLD, VST, VLDW, VSTN))
# the scalar loads and stores (memory.scalar_mem)
I_MEM_FIRST, I_MEM_LAST, I_MEM_TO_OP = _inner_block(SCALAR_MEM)
assert I_MEM_LAST < STOP_MARK
assert all(o in BY_OPCODE for o in INNER) and len(set(INNER.values())) == len(INNER)
# Blocks hold consecutive opcodes only where the table puts them so (a gap is a wasted index).
assert I_MMA_LAST - I_MMA_FIRST == 1 and I_VBIN_LAST - I_VBIN_FIRST == 2
assert I_VMEM_LAST - I_VMEM_FIRST == 3
