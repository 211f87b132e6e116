"""The ISA: one table of instructions, one map of fields, checked when this module loads.

Every instruction is a 64-bit word. Bits 63..56 hold the opcode; the other bits belong to the
operand fields of the instruction's format; bits a format does not use are reserved and must be 0.
The encoder, the decoder, the assembler, the disassembler, the emulator's dispatch constants and
docs/ISA.md are all derived from `TABLE` below. No opcode number is written anywhere else.

Decoded form (for the emulator): each word becomes six int64s, one per *slot* of the word:
`[opcode, rd, rs1, rs2, rs3, imm]`. Every field lives inside one slot, and a field that does not
fill its slot leaves the rest of the slot reserved (zero), so the slot value equals the field value.
The one exception is the mma format, whose imm slot holds two fields: sa (bits 15..0) and sb
(bits 31..16). `opcode` is -1 for a word that is not a valid instruction.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from d1isa.machine import TIMING_CLASSES

WORD_BITS = 64
WORD_BYTES = 8
OPCODE_HI, OPCODE_LO = 63, 56

# The six slots of a word, as (hi, lo) bit ranges. Column order of the decoded form.
SLOTS = {"rd": (55, 50), "rs1": (49, 44), "rs2": (43, 38), "rs3": (37, 32), "imm": (31, 0)}
SLOT_COLUMN = {"opcode": 0, "rd": 1, "rs1": 2, "rs2": 3, "rs3": 4, "imm": 5}


@dataclass(frozen=True)
class Field:
    """A named bit range of the word, inside one slot; `kind` says how its value is read."""

    name: str
    slot: str
    hi: int
    lo: int
    kind: str   # "reg", "simm", "uimm", "f32", "dir"
    doc: str

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    @property
    def signed(self) -> bool:
        return self.kind == "simm"

    def value_range(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        return 0, (1 << self.width) - 1


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("rd", "rd", 55, 50, "reg", "destination register"),
    Field("rs1", "rs1", 49, 44, "reg", "first source register (base address for memory)"),
    Field("rs2", "rs2", 43, 38, "reg", "second source register (stored value for stores)"),
    Field("rs3", "rs3", 37, 32, "reg", "third source register"),
    Field("imm", "imm", 31, 0, "simm", "signed 32-bit immediate"),
    Field("uimm", "imm", 31, 0, "uimm", "unsigned 32-bit immediate"),
    Field("fimm", "imm", 31, 0, "f32", "fp32 immediate (its IEEE-754 bit pattern)"),
    Field("off", "imm", 31, 0, "simm", "signed branch offset in instructions, from this pc"),
    Field("shamt", "imm", 5, 0, "uimm", "shift amount 0..63"),
    Field("lane", "imm", 3, 0, "uimm", "fp32 lane 0..15"),
    Field("sa", "imm", 15, 0, "uimm", "row stride of operand A (or of the tile) in bytes"),
    Field("sb", "imm", 31, 16, "uimm", "row stride of operand B in bytes"),
    Field("dir", "rs3", 33, 32, "dir", "link direction N=0 E=1 S=2 W=3 (the one sent toward, "
          "or for relays the one received from)"),
    Field("dir2", "rd", 51, 50, "dir", "for relays: the direction sent on toward"),
)}

# Operand names used in formats: each names a field and the register file (x scalar, v vector,
# a accumulator) or value kind it takes in assembly. "[rs1+imm]" is one memory operand.
OPERANDS: dict[str, tuple[str, str]] = {
    "rd": ("rd", "x"), "rs1": ("rs1", "x"), "rs2": ("rs2", "x"), "rs3": ("rs3", "x"),
    "vd": ("rd", "v"), "vs1": ("rs1", "v"), "vs2": ("rs2", "v"), "vs3": ("rs3", "v"),
    "ad": ("rd", "a"),
    "imm": ("imm", "int"), "uimm": ("uimm", "int"), "fimm": ("fimm", "float"),
    "off": ("off", "label"), "shamt": ("shamt", "int"), "lane": ("lane", "int"),
    "sa": ("sa", "int"), "sb": ("sb", "int"),
    "dir": ("dir", "dir"), "dir2": ("dir2", "dir"),
}

# Formats: assembly operand order. "[rs1+imm]" is a memory operand made of two fields.
FORMATS: dict[str, str] = {
    "N": "",
    "D": "rd",
    "X1": "rs1",
    "T": "uimm",
    "R": "rd, rs1, rs2",
    "I": "rd, rs1, imm",
    "SH": "rd, rs1, shamt",
    "U": "rd, imm",
    "UH": "rd, uimm",
    "L": "rd, [rs1+imm]",
    "S": "rs2, [rs1+imm]",
    "B": "rs1, rs2, off",
    "J": "rd, off",
    "JR": "rd, rs1, imm",
    "VL": "vd, [rs1+imm]",
    "VS": "vs2, [rs1+imm]",
    "VLS": "vd, [rs1+imm], rs2",
    "VSS": "vs2, [rs1+imm], rs3",
    "VR": "vd, vs1, vs2",
    "V4": "vd, vs1, vs2, vs3",
    "VU": "vd, vs1",
    "V0": "vd",
    "VX": "vd, rs1",
    "VF": "vd, fimm",
    "XV": "rd, vs1",
    "XVL": "rd, vs1, lane",
    "VXL": "vd, rs1, lane",
    "VVL": "vd, vs1, lane",
    "MMA": "ad, rs1, rs2, sa, sb",
    "MMAK": "ad, rs1, rs2, rs3, sa, sb",
    "A": "ad",
    "AM": "ad, rs1, sa",
    "NS": "dir, rs1",
    "NR": "rd, dir",
    "NVS": "dir, vs1",
    "NVR": "vd, dir",
    "NB": "dir, rs1, rs2",
    "NRL": "dir, dir2",
    "NRB": "dir, dir2, rs1, rs2",
}

# Instruction groups, in the order docs/ISA.md presents them.
GROUPS = ("system", "scalar", "memory", "control", "vector", "matrix", "network")

# ---- THE TABLE --------------------------------------------------------------------------------
# (mnemonic, opcode, format, timing class, group, writes, memory, network, lanes, semantics).
#
# writes   the register file the instruction writes through its destination operand: "x" scalar
#          (rd), "v" vector (vd), "a" accumulator (ad), "" none.
# memory   the SRAM it touches, "" for none, else "r" (reads) or "w" (writes), then the bytes of one
#          element and the shape: no suffix, one contiguous access; "s" strided, one element per
#          fp32 lane with the stride in a register; "t" matrix tiles of mma_dim rows with a byte
#          stride, followed by how many tiles (the mma ops read A and B; the mmak ops do so once
#          per K step); "m" a message, as long as its length register (no byte count).
# network  its role on the links, "" for none: "send", "recv" or "relay", then the message size in
#          bytes, or "m" when a length register gives it ("relay" passes any message on).
# lanes    vector lanes it computes on (16 fp32 lanes; 32 bf16 lanes for the narrowing ops), 0
#          for scalar, matrix and network instructions.
#
# Semantics use the operand names of the format; x[...] is SRAM, sext() sign-extends,
# f32()/bf16() round to nearest even, and "lanes" are the 16 fp32 lanes of a vector register
# unless stated.
TABLE: tuple[tuple[str, int, str, str, str, str, str, str, int, str], ...] = (
    # system
    ("nop", 0x00, "N", "alu", "system", "", "", "", 0, "no operation"),
    ("halt", 0x01, "N", "sys", "system", "", "", "", 0, "stop this node (state: halted)"),
    ("trap", 0x02, "T", "sys", "system", "", "", "", 0,
     "raise a user trap with code uimm (state: trapped)"),
    ("getx", 0x03, "D", "sys", "system", "x", "", "", 0, "rd = this node's x (column)"),
    ("gety", 0x04, "D", "sys", "system", "x", "", "", 0, "rd = this node's y (row)"),
    ("getid", 0x05, "D", "sys", "system", "x", "", "", 0, "rd = this node's live-node id"),
    ("getw", 0x06, "D", "sys", "system", "x", "", "", 0, "rd = mesh width in nodes"),
    ("geth", 0x07, "D", "sys", "system", "x", "", "", 0, "rd = mesh height in nodes"),
    ("getn", 0x08, "D", "sys", "system", "x", "", "", 0, "rd = number of live nodes"),
    ("rdcycle", 0x09, "D", "sys", "system", "x", "", "", 0,
     "rd = this node's cycle clock before this instruction"),
    ("srseed", 0x0A, "X1", "sys", "system", "", "", "", 0,
     "stochastic-rounding state = rs1 (a zero state is replaced by the node's default seed)"),
    # scalar integer, 64-bit two's complement, wrapping
    ("add", 0x10, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 + rs2"),
    ("sub", 0x11, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 - rs2"),
    ("and", 0x12, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 & rs2"),
    ("or", 0x13, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 | rs2"),
    ("xor", 0x14, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 ^ rs2"),
    ("sll", 0x15, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 << (rs2 & 63)"),
    ("srl", 0x16, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 >> (rs2 & 63), logical"),
    ("sra", 0x17, "R", "alu", "scalar", "x", "", "", 0, "rd = rs1 >> (rs2 & 63), arithmetic"),
    ("slt", 0x18, "R", "alu", "scalar", "x", "", "", 0, "rd = 1 if rs1 < rs2 (signed) else 0"),
    ("sltu", 0x19, "R", "alu", "scalar", "x", "", "", 0, "rd = 1 if rs1 < rs2 (unsigned) else 0"),
    ("seq", 0x1A, "R", "alu", "scalar", "x", "", "", 0, "rd = 1 if rs1 == rs2 else 0"),
    ("mul", 0x1B, "R", "mul", "scalar", "x", "", "", 0, "rd = low 64 bits of rs1 * rs2"),
    ("div", 0x1C, "R", "div", "scalar", "x", "", "", 0,
     "rd = rs1 / rs2 signed, toward zero; x / 0 = -1; INT64_MIN / -1 = INT64_MIN"),
    ("divu", 0x1D, "R", "div", "scalar", "x", "", "", 0,
     "rd = rs1 / rs2 unsigned; x / 0 = 2^64 - 1"),
    ("rem", 0x1E, "R", "div", "scalar", "x", "", "", 0,
     "rd = rs1 - rs2 * (rs1 / rs2) signed; x rem 0 = x; INT64_MIN rem -1 = 0"),
    ("remu", 0x1F, "R", "div", "scalar", "x", "", "", 0, "rd = rs1 mod rs2 unsigned; x mod 0 = x"),
    ("addi", 0x20, "I", "alu", "scalar", "x", "", "", 0, "rd = rs1 + sext(imm)"),
    ("andi", 0x21, "I", "alu", "scalar", "x", "", "", 0, "rd = rs1 & sext(imm)"),
    ("ori", 0x22, "I", "alu", "scalar", "x", "", "", 0, "rd = rs1 | sext(imm)"),
    ("xori", 0x23, "I", "alu", "scalar", "x", "", "", 0, "rd = rs1 ^ sext(imm)"),
    ("slli", 0x24, "SH", "alu", "scalar", "x", "", "", 0, "rd = rs1 << shamt"),
    ("srli", 0x25, "SH", "alu", "scalar", "x", "", "", 0, "rd = rs1 >> shamt, logical"),
    ("srai", 0x26, "SH", "alu", "scalar", "x", "", "", 0, "rd = rs1 >> shamt, arithmetic"),
    ("slti", 0x27, "I", "alu", "scalar", "x", "", "", 0,
     "rd = 1 if rs1 < sext(imm) (signed) else 0"),
    ("sltiu", 0x28, "I", "alu", "scalar", "x", "", "", 0,
     "rd = 1 if rs1 < sext(imm) (both unsigned) else 0"),
    ("muli", 0x29, "I", "mul", "scalar", "x", "", "", 0, "rd = low 64 bits of rs1 * sext(imm)"),
    ("movi", 0x2A, "U", "alu", "scalar", "x", "", "", 0, "rd = sext(imm)"),
    ("movhi", 0x2B, "UH", "alu", "scalar", "x", "", "", 0,
     "rd = (uimm << 32) | (rd & 0xffffffff); with movi builds any 64-bit constant"),
    # memory: address = rs1 + sext(imm), must be aligned to the access size and inside SRAM
    ("ld8", 0x30, "L", "load", "memory", "x", "r1", "", 0, "rd = sext(x8[rs1 + imm])"),
    ("ld8u", 0x31, "L", "load", "memory", "x", "r1", "", 0, "rd = zext(x8[rs1 + imm])"),
    ("ld16", 0x32, "L", "load", "memory", "x", "r2", "", 0, "rd = sext(x16[rs1 + imm])"),
    ("ld16u", 0x33, "L", "load", "memory", "x", "r2", "", 0, "rd = zext(x16[rs1 + imm])"),
    ("ld32", 0x34, "L", "load", "memory", "x", "r4", "", 0, "rd = sext(x32[rs1 + imm])"),
    ("ld32u", 0x35, "L", "load", "memory", "x", "r4", "", 0, "rd = zext(x32[rs1 + imm])"),
    ("ld64", 0x36, "L", "load", "memory", "x", "r8", "", 0, "rd = x64[rs1 + imm]"),
    ("st8", 0x38, "S", "store", "memory", "", "w1", "", 0, "x8[rs1 + imm] = rs2 & 0xff"),
    ("st16", 0x39, "S", "store", "memory", "", "w2", "", 0, "x16[rs1 + imm] = rs2 & 0xffff"),
    ("st32", 0x3A, "S", "store", "memory", "", "w4", "", 0, "x32[rs1 + imm] = rs2 & 0xffffffff"),
    ("st64", 0x3B, "S", "store", "memory", "", "w8", "", 0, "x64[rs1 + imm] = rs2"),
    # control: pcs count instructions; off is relative to this instruction
    ("beq", 0x40, "B", "branch", "control", "", "", "", 0, "if rs1 == rs2: pc = pc + off"),
    ("bne", 0x41, "B", "branch", "control", "", "", "", 0, "if rs1 != rs2: pc = pc + off"),
    ("blt", 0x42, "B", "branch", "control", "", "", "", 0, "if rs1 < rs2 (signed): pc = pc + off"),
    ("bge", 0x43, "B", "branch", "control", "", "", "", 0, "if rs1 >= rs2 (signed): pc = pc + off"),
    ("bltu", 0x44, "B", "branch", "control", "", "", "", 0,
     "if rs1 < rs2 (unsigned): pc = pc + off"),
    ("bgeu", 0x45, "B", "branch", "control", "", "", "", 0,
     "if rs1 >= rs2 (unsigned): pc = pc + off"),
    ("jal", 0x46, "J", "branch", "control", "x", "", "", 0, "rd = pc + 1; pc = pc + off"),
    ("jalr", 0x47, "JR", "branch", "control", "x", "", "", 0,
     "t = rs1 + sext(imm); rd = pc + 1; pc = t"),
    # vector: 512-bit registers, 16 fp32 lanes (or 32 bf16 lanes where stated)
    ("vld", 0x50, "VL", "vload", "vector", "v", "r64", "", 16,
     "vd = 64 bytes at rs1 + imm (16 fp32 or 32 bf16 lanes, raw bits); address 4-aligned"),
    ("vst", 0x51, "VS", "vstore", "vector", "", "w64", "", 16,
     "64 bytes at rs1 + imm = vs2; address 4-aligned"),
    ("vldw.bf16", 0x52, "VL", "vload", "vector", "v", "r32", "", 16,
     "vd[i] = f32(bf16 at rs1 + imm + 2i), i = 0..15 (widening); address 2-aligned"),
    ("vstn.bf16", 0x53, "VS", "vstore", "vector", "", "w32", "", 16,
     "bf16 at rs1 + imm + 2i = bf16(vs2[i]), round to nearest even (narrowing); 2-aligned"),
    ("vstn.bf16.sr", 0x54, "VS", "vstore", "vector", "", "w32", "", 16,
     "bf16 at rs1 + imm + 2i = bf16(vs2[i]), stochastic rounding; 2-aligned"),
    ("vlds", 0x55, "VLS", "vload", "vector", "v", "r4s", "", 16,
     "vd[i] = f32 at rs1 + imm + i * rs2, i = 0..15 (strided); each address 4-aligned"),
    ("vldsw.bf16", 0x56, "VLS", "vload", "vector", "v", "r2s", "", 16,
     "vd[i] = f32(bf16 at rs1 + imm + i * rs2) (strided, widening); each 2-aligned"),
    ("vsts", 0x57, "VSS", "vstore", "vector", "", "w4s", "", 16,
     "f32 at rs1 + imm + i * rs3 = vs2[i] (strided); each address 4-aligned"),
    ("vstsn.bf16", 0x58, "VSS", "vstore", "vector", "", "w2s", "", 16,
     "bf16 at rs1 + imm + i * rs3 = bf16(vs2[i]) (strided, narrowing, nearest even)"),
    ("vadd", 0x60, "VR", "valu", "vector", "v", "", "", 16, "vd[i] = f32(vs1[i] + vs2[i])"),
    ("vsub", 0x61, "VR", "valu", "vector", "v", "", "", 16, "vd[i] = f32(vs1[i] - vs2[i])"),
    ("vmul", 0x62, "VR", "valu", "vector", "v", "", "", 16, "vd[i] = f32(vs1[i] * vs2[i])"),
    ("vdiv", 0x63, "VR", "vdiv", "vector", "v", "", "", 16,
     "vd[i] = f32(vs1[i] / vs2[i]) (IEEE-754)"),
    ("vmax", 0x64, "VR", "valu", "vector", "v", "", "", 16,
     "vd[i] = larger of vs1[i], vs2[i]; NaN if either is NaN; max(-0, +0) = +0"),
    ("vmin", 0x65, "VR", "valu", "vector", "v", "", "", 16,
     "vd[i] = smaller of vs1[i], vs2[i]; NaN if either is NaN; min(-0, +0) = -0"),
    ("vfma", 0x66, "V4", "vfma", "vector", "v", "", "", 16,
     "vd[i] = f32(f32(vs1[i] * vs2[i]) + vs3[i]) (two roundings, not fused)"),
    ("vcmplt", 0x67, "VR", "valu", "vector", "v", "", "", 16,
     "vd[i] = 0xffffffff if vs1[i] < vs2[i] else 0"),
    ("vcmple", 0x68, "VR", "valu", "vector", "v", "", "", 16,
     "vd[i] = 0xffffffff if vs1[i] <= vs2[i] else 0"),
    ("vcmpeq", 0x69, "VR", "valu", "vector", "v", "", "", 16,
     "vd[i] = 0xffffffff if vs1[i] == vs2[i] else 0"),
    ("vsel", 0x6A, "V4", "valu", "vector", "v", "", "", 16,
     "vd[i] = vs2[i] if bits(vs1[i]) != 0 else vs3[i]"),
    ("vand", 0x6B, "VR", "valu", "vector", "v", "", "", 16,
     "bits(vd[i]) = bits(vs1[i]) & bits(vs2[i])"),
    ("vor", 0x6C, "VR", "valu", "vector", "v", "", "", 16,
     "bits(vd[i]) = bits(vs1[i]) | bits(vs2[i])"),
    ("vxor", 0x6D, "VR", "valu", "vector", "v", "", "", 16,
     "bits(vd[i]) = bits(vs1[i]) ^ bits(vs2[i])"),
    ("vmov", 0x70, "VU", "valu", "vector", "v", "", "", 16, "vd = vs1 (all 512 bits)"),
    ("vneg", 0x71, "VU", "valu", "vector", "v", "", "", 16, "vd[i] = -vs1[i] (sign bit flipped)"),
    ("vabs", 0x72, "VU", "valu", "vector", "v", "", "", 16, "vd[i] = |vs1[i]| (sign bit cleared)"),
    ("vsqrt", 0x73, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(sqrt(vs1[i])), correctly rounded"),
    ("vrcp", 0x74, "VU", "vdiv", "vector", "v", "", "", 16,
     "vd[i] = f32(1 / vs1[i]), correctly rounded"),
    ("vexp", 0x75, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(exp(vs1[i])), exp computed in fp64 then rounded (error <= 0.5 ulp + 2^-29 ulp)"),
    ("vtanh", 0x76, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(tanh(vs1[i])), tanh computed in fp64 then rounded"),
    ("vsigmoid", 0x77, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(1 / (1 + exp(-vs1[i]))), computed in fp64 then rounded"),
    ("vpow", 0x88, "VR", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(pow(vs1[i], vs2[i])), C's pow computed in fp64 then rounded"),
    ("verf", 0x89, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(erf(vs1[i])), erf computed in fp64 then rounded"),
    ("vgelu", 0x8A, "VU", "vsfu", "vector", "v", "", "", 16,
     "vd[i] = f32(0.5 * x * erfc(-x / sqrt(2))) with x = vs1[i], computed in fp64 then rounded "
     "(the erf form of GELU, x * Phi(x))"),
    ("vcvt.bf16", 0x78, "VU", "vcvt", "vector", "v", "", "", 16,
     "vd[i] = bf16(vs1[i]) kept as f32, round to nearest even (NaN stays a quiet NaN)"),
    ("vcvt.bf16.sr", 0x79, "VU", "vcvt", "vector", "v", "", "", 16,
     "vd[i] = bf16(vs1[i]) kept as f32, stochastic rounding from the node's generator"),
    ("vwiden.lo", 0x7A, "VU", "vcvt", "vector", "v", "", "", 16,
     "vd[i] = f32(bf16 lane i of vs1), i = 0..15"),
    ("vwiden.hi", 0x7B, "VU", "vcvt", "vector", "v", "", "", 16,
     "vd[i] = f32(bf16 lane 16 + i of vs1)"),
    ("vnarrow", 0x7C, "VR", "vcvt", "vector", "v", "", "", 32,
     "bf16 lanes 0..15 of vd = bf16(vs1[i]), lanes 16..31 = bf16(vs2[i]), nearest even"),
    ("vnarrow.sr", 0x7D, "VR", "vcvt", "vector", "v", "", "", 32,
     "as vnarrow, with stochastic rounding"),
    ("vcvt.f32.i32", 0x7E, "VU", "vcvt", "vector", "v", "", "", 16,
     "vd[i] = f32(int32 bits of vs1[i]), nearest even"),
    ("vcvt.i32.f32", 0x7F, "VU", "vcvt", "vector", "v", "", "", 16,
     "int32 bits of vd[i] = vs1[i] truncated toward 0, saturating; NaN -> 0"),
    ("vbcast", 0x80, "VX", "valu", "vector", "v", "", "", 16,
     "bits(vd[i]) = rs1 & 0xffffffff, every lane"),
    ("vbcasti", 0x81, "VF", "valu", "vector", "v", "", "", 16, "vd[i] = fimm, every lane"),
    ("vext", 0x82, "XVL", "valu", "vector", "x", "", "", 16, "rd = zext(bits(vs1[lane]))"),
    ("vins", 0x83, "VXL", "valu", "vector", "v", "", "", 16, "bits(vd[lane]) = rs1 & 0xffffffff"),
    ("vsplat", 0x84, "VVL", "valu", "vector", "v", "", "", 16, "vd[i] = vs1[lane], every lane"),
    ("viota", 0x85, "V0", "valu", "vector", "v", "", "", 16, "vd[i] = f32(i)"),
    ("vredsum", 0x86, "XV", "vred", "vector", "x", "", "", 16,
     "rd = zext(bits(s)), s = f32 sum of lanes added in order 0, 1, ..., 15"),
    ("vredmax", 0x87, "XV", "vred", "vector", "x", "", "", 16,
     "rd = zext(bits(m)), m = vmax over lanes in order 0..15"),
    # matrix: 8 x 8 operand tiles read from SRAM with a row stride; fp32 accumulators
    ("mma.bf16", 0x90, "MMA", "mma_bf16", "matrix", "a", "r16t2", "", 0,
     "acc[ad] += A @ B; A, B 8x8 bf16 at rs1, rs2 with row strides sa, sb bytes; "
     "for k = 0..7: acc[i][j] = f32(acc[i][j] + A[i][k] * B[k][j])"),
    ("mma.f32", 0x91, "MMA", "mma_f32", "matrix", "a", "r32t2", "", 0,
     "as mma.bf16 with fp32 operands: for k = 0..7: "
     "acc[i][j] = f32(acc[i][j] + f32(A[i][k] * B[k][j]))"),
    ("mmak.bf16", 0x96, "MMAK", "mma_bf16", "matrix", "a", "r16t2", "", 0,
     "rs3 mma.bf16 steps along K: for s = 0..rs3-1: acc[ad] += A_s @ B_s, A_s at rs1 + 16s, "
     "B_s at rs2 + 8s * sb (strides sa, sb); rs3 = 0 does nothing; costs max(rs3, 1) mma"),
    ("mmak.f32", 0x97, "MMAK", "mma_f32", "matrix", "a", "r32t2", "", 0,
     "rs3 mma.f32 steps along K: A_s at rs1 + 32s, B_s at rs2 + 8s * sb; rs3 = 0 does nothing; "
     "costs max(rs3, 1) mma"),
    ("acc.zero", 0x92, "A", "alu", "matrix", "a", "", "", 0, "acc[ad] = 0"),
    ("acc.ld", 0x93, "AM", "acc", "matrix", "a", "r32t1", "", 0,
     "acc[ad][i][j] = f32 at rs1 + i * sa + 4j"),
    ("acc.st", 0x94, "AM", "acc", "matrix", "", "w32t1", "", 0,
     "f32 at rs1 + i * sa + 4j = acc[ad][i][j]"),
    ("acc.st.bf16", 0x95, "AM", "acc", "matrix", "", "w16t1", "", 0,
     "bf16 at rs1 + i * sa + 2j = bf16(acc[ad][i][j]), nearest even"),
    # network: messages to the four neighbours only, over bounded FIFOs; all of them block
    ("send", 0xA0, "NS", "send", "network", "", "", "send8", 0,
     "send an 8-byte message holding rs1 toward dir"),
    ("recv", 0xA1, "NR", "recv", "network", "x", "", "recv8", 0,
     "rd = the next 8-byte message from dir"),
    ("vsend", 0xA2, "NVS", "send", "network", "", "", "send64", 0,
     "send a 64-byte message holding vs1 toward dir"),
    ("vrecv", 0xA3, "NVR", "recv", "network", "v", "", "recv64", 0,
     "vd = the next 64-byte message from dir"),
    ("sendb", 0xA4, "NB", "send", "network", "", "rm", "sendm", 0,
     "send the rs2 bytes at rs1 as one message toward dir (1 <= rs2 <= max_message_bytes)"),
    ("recvb", 0xA5, "NB", "recv", "network", "", "wm", "recvm", 0,
     "store the next message from dir at rs1; its length must equal rs2"),
    ("relay", 0xA6, "NRL", "recv", "network", "", "", "relay", 0,
     "take the next message from dir and send it on, unchanged, toward dir2"),
    ("relayb", 0xA7, "NRB", "recv", "network", "", "wm", "relaym", 0,
     "take the next message from dir, store it at rs1 (length must equal rs2), "
     "and send it on toward dir2"),
)

# Floating-point operations each instruction counts toward FLOP statistics (default 0). A multiply-
# add counts as 2; an 8 x 8 x 8 mma is 512 multiply-adds.
FLOPS: dict[str, int] = {
    "vadd": 16, "vsub": 16, "vmul": 16, "vdiv": 16, "vmax": 16, "vmin": 16, "vfma": 32,
    "vsqrt": 16, "vrcp": 16, "vexp": 16, "vtanh": 16, "vsigmoid": 16, "verf": 16, "vgelu": 16,
    "vpow": 16,
    "vredsum": 15, "vredmax": 15, "mma.bf16": 1024, "mma.f32": 1024,
    # per K step: an mmak instruction counts 1024 x rs3
    "mmak.bf16": 1024, "mmak.f32": 1024,
}

# Encoding space kept free for later instructions. CFP8 conversions (layouts 1-4-3 and 1-5-2,
# with a bias operand) will take opcodes from the first range.
RESERVED = (
    (0xE0, 0xEF, "CFP8 / CFP16 conversions (reserved)"),
    (0xF0, 0xFF, "future extensions (reserved)"),
)


class ISAError(Exception):
    """The table itself is inconsistent (a bug in this file, caught at import)."""


REGISTER_FILES = {"x": "rd", "v": "vd", "a": "ad"}
MEMORY_SHAPES = {"": "contiguous", "s": "strided", "t": "tile", "m": "message"}
NET_ROLES = ("send", "recv", "relay")


@dataclass(frozen=True)
class MemAccess:
    """The SRAM an instruction touches: `kind` "load" or "store"; `width` the bytes of one element
    (of one tile row for "tile"; 0 for "message", whose length is in a register); `shape`
    "contiguous", "strided", "tile" or "message"; `tiles` how many matrix tiles ("tile" only)."""

    kind: str
    width: int
    shape: str
    tiles: int = 0

    def nbytes(self, lanes: int, tile_rows: int) -> int:
        """Bytes touched by one access (one K step for mmak): 0 for a message."""
        if self.shape == "strided":
            return lanes * self.width
        if self.shape == "tile":
            return self.tiles * tile_rows * self.width
        return self.width


@dataclass(frozen=True)
class NetRole:
    """An instruction's part in messaging: `role` "send", "recv" or "relay"; `nbytes` the message
    size, or None when a length register gives it (and for plain `relay`, which passes any
    message on)."""

    role: str
    nbytes: int | None


def _parse_memory(mnemonic: str, text: str) -> MemAccess | None:
    if not text:
        return None
    m = re.fullmatch(r"([rw])(\d*)([stm]?)(\d*)", text)
    if (m is None or (m[3] == "m") != (m[2] == "") or (m[3] == "t") != (m[4] != "")):
        raise ISAError(f"{mnemonic}: bad memory column '{text}'")
    width = int(m[2]) if m[2] else 0
    if width & (width - 1):
        raise ISAError(f"{mnemonic}: memory width {width} is not a power of two")
    return MemAccess("load" if m[1] == "r" else "store", width, MEMORY_SHAPES[m[3]],
                     int(m[4]) if m[4] else 0)


def _parse_network(mnemonic: str, text: str) -> NetRole | None:
    if not text:
        return None
    for role in NET_ROLES:
        if text.startswith(role):
            size = text[len(role):]
            if size in ("", "m"):
                return NetRole(role, None)
            if size.isdigit():
                return NetRole(role, int(size))
    raise ISAError(f"{mnemonic}: bad network column '{text}'")


@dataclass(frozen=True)
class Instruction:
    """One decoded table entry, with its operand list, fields and fixed bits."""

    mnemonic: str
    opcode: int
    format: str
    timing: str
    group: str
    writes: str                 # register file written through the destination operand, or ""
    memory: MemAccess | None
    network: NetRole | None
    lanes: int
    semantics: str
    operands: tuple[str, ...]
    fields: tuple[Field, ...]
    mask: int       # bits fixed by this instruction (opcode and reserved zero bits)
    match: int      # their required values

    @property
    def syntax(self) -> str:
        ops = FORMATS[self.format]
        return f"{self.mnemonic} {ops}".strip()


def _operand_fields(fmt: str) -> tuple[tuple[str, ...], tuple[Field, ...]]:
    text = FORMATS[fmt]
    operands, fields = [], []
    for part in [p.strip() for p in text.split(",")] if text else []:
        if part.startswith("["):
            operands.append(part)
            fields.extend((FIELDS["rs1"], FIELDS["imm"]))
        else:
            operands.append(part)
            fields.append(FIELDS[OPERANDS[part][0]])
    return tuple(operands), tuple(fields)


def _build() -> tuple[tuple[Instruction, ...], dict[str, Instruction], dict[int, Instruction]]:
    full = (1 << WORD_BITS) - 1
    opmask = ((1 << (OPCODE_HI - OPCODE_LO + 1)) - 1) << OPCODE_LO
    insns, by_name, by_op = [], {}, {}
    for f in FIELDS.values():
        shi, slo = SLOTS[f.slot]
        if not (slo <= f.lo and f.hi <= shi):
            raise ISAError(f"field {f.name} must lie inside slot {f.slot}")
    for mnemonic, opcode, fmt, timing, group, writes, mem, net, lanes, sem in TABLE:
        if mnemonic in by_name:
            raise ISAError(f"duplicate mnemonic {mnemonic}")
        if not 0 <= opcode < 256:
            raise ISAError(f"{mnemonic}: opcode {opcode:#x} does not fit 8 bits")
        if any(lo <= opcode <= hi for lo, hi, _ in RESERVED):
            raise ISAError(f"{mnemonic}: opcode {opcode:#x} is in a reserved range")
        if fmt not in FORMATS:
            raise ISAError(f"{mnemonic}: unknown format {fmt}")
        if timing not in TIMING_CLASSES:
            raise ISAError(f"{mnemonic}: unknown timing class {timing}")
        if group not in GROUPS:
            raise ISAError(f"{mnemonic}: unknown group {group}")
        operands, fields = _operand_fields(fmt)
        if writes and REGISTER_FILES.get(writes) not in operands:
            raise ISAError(f"{mnemonic}: writes '{writes}' but has no "
                           f"{REGISTER_FILES.get(writes, '?')} operand")
        memory = _parse_memory(mnemonic, mem)
        network = _parse_network(mnemonic, net)
        if (network is not None) != (group == "network"):
            raise ISAError(f"{mnemonic}: only network instructions have a network role")
        if lanes not in (0, 16, 32) or (lanes != 0) != (group == "vector"):
            raise ISAError(f"{mnemonic}: lanes {lanes} do not fit group {group}")
        used = opmask
        for f in fields:
            if used & f.mask:
                raise ISAError(f"{mnemonic}: field {f.name} overlaps another field or the opcode")
            used |= f.mask
        reserved = full & ~used
        # Every bit is defined: opcode bits, a field's bits, or a reserved bit that must be 0.
        if (opmask | reserved | (used & ~opmask)) != full:
            raise ISAError(f"{mnemonic}: some bits are undefined")
        ins = Instruction(mnemonic, opcode, fmt, timing, group, writes, memory, network, lanes,
                          sem, operands, fields,
                          mask=opmask | reserved, match=opcode << OPCODE_LO)
        for other in insns:
            common = ins.mask & other.mask
            if (ins.match & common) == (other.match & common):
                raise ISAError(f"{mnemonic} and {other.mnemonic} decode the same")
        insns.append(ins)
        by_name[mnemonic] = ins
        by_op[opcode] = ins
    for name in FLOPS:
        if name not in by_name:
            raise ISAError(f"FLOPS names unknown instruction {name}")
    return tuple(insns), by_name, by_op


INSTRUCTIONS, BY_MNEMONIC, BY_OPCODE = _build()

# Instructions after which execution never goes on to the next one: a stop, or an
# unconditional jump (a trap report's test for whether a node at pc = len fell off the end
# of its code or jumped there).
NO_FALL_THROUGH = frozenset(("halt", "trap", "jal", "jalr"))
assert NO_FALL_THROUGH <= BY_MNEMONIC.keys()

# Opcode numbers by mnemonic, for code that dispatches on them (the emulator). Derived, not copied.
OP: dict[str, int] = {i.mnemonic: i.opcode for i in INSTRUCTIONS}



def opcodes_where(predicate: Any) -> tuple[int, ...]:
    """The opcodes of every instruction for which `predicate(instruction)` holds, in table order:
    the one way code outside this module gets a set of opcodes (never a list of mnemonics)."""
    return tuple(i.opcode for i in INSTRUCTIONS if predicate(i))


def _net(role: str) -> Any:
    return lambda i: i.network is not None and i.network.role == role


SEND_OPCODES = opcodes_where(_net("send"))
RECV_OPCODES = opcodes_where(_net("recv"))
RELAY_OPCODES = opcodes_where(_net("relay"))
STORE_OPCODES = opcodes_where(lambda i: i.memory is not None and i.memory.kind == "store")
LOAD_OPCODES = opcodes_where(lambda i: i.memory is not None and i.memory.kind == "load")
BRANCH_OPCODES = opcodes_where(lambda i: "off" in i.operands)


class EncodingError(ValueError):
    """A value does not fit its field, or a word is not a valid instruction."""


def field_value(f: Field, value: int) -> int:
    """Check `value` against the field's range; return the bits to OR into the word."""
    lo, hi = f.value_range()
    if not lo <= value <= hi:
        raise EncodingError(f"{f.name} value {value} is out of range {lo}..{hi}")
    return (value & ((1 << f.width) - 1)) << f.lo


def encode(mnemonic: str, **values: int) -> int:
    """Encode one instruction from field values (by field name: rd, rs1, imm, sa, dir...)."""
    ins = BY_MNEMONIC.get(mnemonic)
    if ins is None:
        raise EncodingError(f"unknown instruction '{mnemonic}'")
    names = {f.name for f in ins.fields}
    extra = set(values) - names
    if extra:
        raise EncodingError(f"{mnemonic} has no field(s) {', '.join(sorted(extra))}")
    word = ins.match
    for f in ins.fields:
        word |= field_value(f, int(values.get(f.name, 0)))
    return word


def decode(word: int) -> tuple[Instruction, dict[str, int]]:
    """Decode one word into its instruction and field values; EncodingError if invalid."""
    word &= (1 << WORD_BITS) - 1
    ins = BY_OPCODE.get(word >> OPCODE_LO)
    if ins is None or (word & ins.mask) != ins.match:
        raise EncodingError(f"{word:#018x} is not a valid instruction")
    values = {}
    for f in ins.fields:
        v = (word >> f.lo) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        values[f.name] = v
    return ins, values


def f32_bits(x: float) -> int:
    """IEEE-754 single bit pattern of x (rounded to nearest even)."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_f32(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b & 0xFFFFFFFF))[0]


# ---- vectorised decode for the emulator ------------------------------------------------------

def _lookup_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mask = np.zeros(256, dtype=np.uint64)
    match = np.zeros(256, dtype=np.uint64)
    valid = np.zeros(256, dtype=bool)
    imm_signed = np.zeros(256, dtype=bool)
    for ins in INSTRUCTIONS:
        mask[ins.opcode] = ins.mask
        match[ins.opcode] = ins.match
        valid[ins.opcode] = True
        imm_signed[ins.opcode] = any(f.slot == "imm" and f.signed for f in ins.fields)
    return mask, match, valid, imm_signed


_MASK, _MATCH, _VALID, _IMM_SIGNED = _lookup_tables()


def decode_array(words: np.ndarray) -> np.ndarray:
    """Decode uint64 words into int64 rows [opcode, rd, rs1, rs2, rs3, imm].

    Invalid words get opcode -1 (the emulator traps with 'illegal instruction' when it reaches
    one). `imm` is sign-extended for instructions whose imm slot holds a signed field, and
    zero-extended otherwise.
    """
    w = np.asarray(words, dtype=np.uint64)
    op = (w >> np.uint64(OPCODE_LO)).astype(np.int64)
    ok = _VALID[op] & ((w & _MASK[op]) == _MATCH[op])
    out = np.empty((w.shape[0], 6), dtype=np.int64)
    out[:, 0] = np.where(ok, op, -1)
    for name, (hi, lo) in SLOTS.items():
        width = hi - lo + 1
        out[:, SLOT_COLUMN[name]] = ((w >> np.uint64(lo)) & np.uint64((1 << width) - 1)).astype(
            np.int64)
    imm = out[:, 5]
    neg = _IMM_SIGNED[op] & (imm >= (1 << 31))
    out[:, 5] = np.where(neg, imm - (1 << 32), imm)
    return out


def timing_class_index() -> np.ndarray:
    """int64[256]: index into TIMING_CLASSES of each opcode's class (-1 for invalid)."""
    idx = np.full(256, -1, dtype=np.int64)
    for ins in INSTRUCTIONS:
        idx[ins.opcode] = TIMING_CLASSES.index(ins.timing)
    return idx


def costs_by_opcode(machine: Any) -> np.ndarray:
    """int64[256]: cycle cost of each opcode on `machine` (0 for invalid opcodes)."""
    out = np.zeros(256, dtype=np.int64)
    for ins in INSTRUCTIONS:
        out[ins.opcode] = machine.cost(ins.timing)
    return out


def flops_by_opcode() -> np.ndarray:
    """int64[256]: FLOPs counted for each opcode."""
    out = np.zeros(256, dtype=np.int64)
    for ins in INSTRUCTIONS:
        out[ins.opcode] = FLOPS.get(ins.mnemonic, 0)
    return out
