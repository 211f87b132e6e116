"""The Numba emulator against hand-computed values: one idea per test.

Programs are built word by word with d1isa.isa.encode and run on small meshes (SRAM shrunk to
4 KiB so state is small and runs are fast). Expected values are worked out by hand from
docs/ISA.md and docs/TIMING.md, with the arithmetic next to them. Network timing, deadlocks and
the CLI have their own files (test_emulator_net.py, test_emulator_cli.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from progkit import MASK64, SRAM, F, li, machine, make_obj, vec  # noqa: F401

from d1isa import traps
from d1isa.errors import D1Error
from d1isa.isa import encode as E
from d1isa.isa import f32_bits
from d1isa.machine import TIMING_CLASSES
from d1isa.objfile import CodeBlock, InitRegs, ObjectFile, TensorLayout, TensorPiece
from emulator import Emulator, numerics, simd
from emulator import kernel as K

INT64_MIN = -(1 << 63)
QNAN = 0x7FC0_0000
CLS = {c: i for i, c in enumerate(TIMING_CLASSES)}


# ---- helpers ----------------------------------------------------------------------------------





def run(programs: dict[int, list[int]], m=None, data=(), **kw) -> tuple[Emulator, object]:
    emu = Emulator(make_obj(m or machine(), programs, data), **kw)
    return emu, emu.run()


def run1(words: list[int], data=(), m=None, **kw) -> Emulator:
    """Run a program on node 0 alone (it must halt); the emulator."""
    emu, res = run({0: words + [E("halt")]}, m=m, data=data, **kw)
    assert res.status == "halted", res.report()
    return emu








def vreg(emu: Emulator, r: int, node: int = 0) -> list[int]:
    return [int(u) for u in emu.vregs(node)[r]]


def load_v(r: int, addr: int) -> list[int]:
    return li(20, addr) + [E("vld", rd=r, rs1=20, imm=0)]


def u64(v: int) -> int:
    return v & MASK64


# ---- scalar -----------------------------------------------------------------------------------

def test_add_sub_wrap_at_64_bits():
    emu = run1(li(1, (1 << 63) - 1) + [E("movi", rd=2, imm=1), E("add", rd=3, rs1=1, rs2=2),
                                        E("sub", rd=4, rs1=0, rs2=3)])
    r = emu.regs(0)
    assert r[3] == INT64_MIN           # 2^63 - 1 + 1 wraps to -2^63
    assert r[4] == INT64_MIN           # 0 - (-2^63) wraps to -2^63 again


def test_shifts_use_the_low_six_bits():
    emu = run1([E("movi", rd=1, imm=-16), E("movi", rd=2, imm=68),     # 68 & 63 = 4
                E("sll", rd=3, rs1=1, rs2=2), E("srl", rd=4, rs1=1, rs2=2),
                E("sra", rd=5, rs1=1, rs2=2), E("srli", rd=6, rs1=1, shamt=60)])
    r = emu.regs(0)
    assert r[3] == -256                                 # -16 << 4
    assert u64(int(r[4])) == (u64(-16) >> 4)            # logical: 0x0fff...ff
    assert r[5] == -1                                   # arithmetic: -16 >> 4
    assert r[6] == 15                                   # top 4 bits of 0xffff...f0


def test_signed_and_unsigned_compares():
    emu = run1([E("movi", rd=1, imm=-1), E("movi", rd=2, imm=1),
                E("slt", rd=3, rs1=1, rs2=2), E("sltu", rd=4, rs1=1, rs2=2),
                E("slti", rd=5, rs1=2, imm=-5), E("sltiu", rd=6, rs1=2, imm=-5),
                E("seq", rd=7, rs1=1, rs2=1)])
    r = emu.regs(0)
    assert (r[3], r[4]) == (1, 0)       # -1 < 1 signed; 2^64-1 > 1 unsigned
    assert (r[5], r[6]) == (0, 1)       # 1 < -5 false; 1 < 2^64-5 true
    assert r[7] == 1


@pytest.mark.parametrize("a, b, q, rem, qu, remu", [
    (7, 2, 3, 1, 3, 1),
    (-7, 2, -3, -1, (u64(-7)) // 2, u64(-7) % 2),        # toward zero; rem keeps a's sign
    (7, -2, -3, 1, 0, 7),
    (5, 0, -1, 5, MASK64, 5),                            # x / 0 = -1 (all ones); x rem 0 = x
    (INT64_MIN, -1, INT64_MIN, 0, 0, INT64_MIN),         # the one signed overflow
])
def test_division_never_traps(a, b, q, rem, qu, remu):
    emu = run1(li(1, a) + li(2, b) + [E("div", rd=3, rs1=1, rs2=2), E("rem", rd=4, rs1=1, rs2=2),
                                      E("divu", rd=5, rs1=1, rs2=2),
                                      E("remu", rd=6, rs1=1, rs2=2)])
    r = [int(v) for v in emu.regs(0)]
    assert r[3] == q and r[4] == rem
    assert u64(r[5]) == u64(qu) and u64(r[6]) == u64(remu)


def test_mul_keeps_the_low_64_bits():
    emu = run1(li(1, 0x1_0000_0001) + li(2, 0x1_0000_0003) + [E("mul", rd=3, rs1=1, rs2=2),
                                                              E("muli", rd=4, rs1=1, imm=-1)])
    # (2^32 + 1)(2^32 + 3) = 2^64 + 4 * 2^32 + 3 -> low 64 bits 4 * 2^32 + 3
    assert emu.regs(0)[3] == 4 * (1 << 32) + 3
    assert emu.regs(0)[4] == -0x1_0000_0001


def test_movi_sign_extends_and_movhi_keeps_the_low_word():
    emu = run1([E("movi", rd=1, imm=-2), E("movhi", rd=1, uimm=0x1234_5678)])
    assert u64(int(emu.regs(0)[1])) == 0x1234_5678_FFFF_FFFE


def test_r0_reads_zero_after_writes():
    emu = run1([E("movi", rd=0, imm=5), E("addi", rd=1, rs1=0, imm=2),
                E("getid", rd=0), E("add", rd=2, rs1=0, rs2=0)])
    assert list(emu.regs(0)[:3]) == [0, 2, 0]


# ---- control and system -----------------------------------------------------------------------

def test_loop_and_statistics():
    # r1 = 5; loop: r2 += 3; r1 -= 1; bne r1, r0, loop  -> r2 = 15
    emu = run1([E("movi", rd=1, imm=5), E("addi", rd=2, rs1=2, imm=3),
                E("addi", rd=1, rs1=1, imm=-1), E("bne", rs1=1, rs2=0, off=-2)])
    assert emu.regs(0)[2] == 15
    sd = emu.state_dict()
    count = sd["stats"]["count"][0]
    assert count[CLS["alu"]] == 11 and count[CLS["branch"]] == 5 and count[CLS["sys"]] == 1
    # every d1 cost here is 1 cycle: 17 instructions, halt included
    assert sd["clock"][0] == 17 and sd["stats"]["busy"][0] == 17 and sd["stats"]["stall"][0] == 0


def test_jal_and_jalr_link():
    prog = [E("jal", rd=31, off=3),            # 0: call 3
            E("movi", rd=2, imm=9),            # 1: return lands here
            E("halt"),                         # 2
            E("movi", rd=1, imm=7),            # 3
            E("jalr", rd=0, rs1=31, imm=0)]    # 4: return to 1
    emu, res = run({0: prog})
    assert res.status == "halted"
    assert emu.regs(0)[31] == 1 and emu.regs(0)[1] == 7 and emu.regs(0)[2] == 9
    assert emu.pc(0) == 2                      # halt leaves the pc on itself


def test_node_identity_on_a_harvested_mesh():
    m = machine("h6x5")
    prog = [E("getx", rd=1), E("gety", rd=2), E("getid", rd=3), E("getw", rd=4),
            E("geth", rd=5), E("getn", rd=6), E("halt")]
    emu, res = run({i: prog for i in range(m.n_live)}, m=m)
    assert res.status == "halted"
    nid = m.node_id(4, 1)          # (2,1) is harvested: (4,1) is id 9 (6 in row 0, then 0,1,3)
    assert nid == 9
    assert list(emu.regs((4, 1))[1:7]) == [4, 1, 9, 6, 5, 28]


def test_rdcycle_reads_the_clock_before_the_instruction():
    emu = run1([E("nop"), E("movi", rd=1, imm=1), E("mul", rd=2, rs1=1, rs2=1),
                E("rdcycle", rd=3)])
    assert emu.regs(0)[3] == 1 + 1 + 3         # nop, movi (alu 1), mul (3)


def test_halted_node_without_code():
    emu, res = run({1: [E("halt")]})
    assert res.status == "halted"
    assert emu.node_states()[0] == "halted" and emu.clock(0) == 0 and emu.clock(1) == 1


# ---- memory -----------------------------------------------------------------------------------

def test_loads_extend_and_stores_truncate():
    data = [(0, 64, bytes([0x80, 0xFF, 0x01, 0x80, 0xFE, 0xFF, 0xFF, 0xFF]))]
    emu = run1([E("movi", rd=9, imm=64),
                E("ld8", rd=1, rs1=9, imm=0), E("ld8u", rd=2, rs1=9, imm=0),
                E("ld16", rd=3, rs1=9, imm=2), E("ld32u", rd=4, rs1=9, imm=4),
                E("ld64", rd=5, rs1=9, imm=0),
                E("movi", rd=6, imm=-2), E("st16", rs1=9, rs2=6, imm=16),
                E("ld32", rd=7, rs1=9, imm=16)], data=data)
    r = [int(v) for v in emu.regs(0)]
    assert r[1] == -128 and r[2] == 0x80
    assert r[3] == -32767                       # 0x8001 sign-extended
    assert r[4] == 0xFFFF_FFFE
    assert u64(r[5]) == 0xFFFF_FFFE_8001_FF80
    assert r[7] == 0xFFFE                       # st16 wrote 2 bytes of -2
    assert emu.state_dict()["stats"]["sram_hwm"][0] == 64 + 16 + 2


# ---- traps: every cause ------------------------------------------------------------------------

def trap_of(words: list[int], m=None, **kw) -> tuple[Emulator, object]:
    emu, res = run({0: words}, m=m, **kw)
    assert res.status == "trapped", res.report()
    return emu, res.traps[0]


def test_trap_illegal_word_and_missing_register():
    m = machine(scalar_regs=8)
    emu, t = trap_of([E("nop"), 0xFF00_0000_0000_0000], m=m)
    assert (t.cause, t.pc) == (traps.ILLEGAL_INSTRUCTION, 1)
    emu, t = trap_of([E("addi", rd=9, rs1=0, imm=1)], m=m)
    assert t.cause == traps.ILLEGAL_INSTRUCTION and "r9 does not exist" in t.detail
    assert emu.clock(0) == 0 and emu.state_dict()["stats"]["count"][0].sum() == 0


def test_trap_pc_out_of_range_by_falling_off_and_by_jumping():
    emu, t = trap_of([E("nop")])
    assert (t.cause, t.pc) == (traps.PC_OUT_OF_RANGE, 1)
    assert t.detail == "execution fell off the end of the code (1 instruction)"
    # a jump just past a last halt did not fall off the end
    emu, t = trap_of([E("jal", rd=0, off=2), E("halt")])
    assert (t.cause, t.pc) == (traps.PC_OUT_OF_RANGE, 2)
    assert t.detail == ("a jump went to pc 2, just past the end of the code (2 instructions; "
                        "the last, halt, does not fall through)")
    emu, t = trap_of([E("nop"), E("jal", rd=1, off=-5)])
    assert (t.cause, t.pc) == (traps.PC_OUT_OF_RANGE, -4)
    assert emu.regs(0)[1] == 2                  # the jump itself completed
    emu, t = trap_of(li(5, 1 << 40) + [E("jalr", rd=0, rs1=5, imm=0)])
    assert (t.cause, t.pc) == (traps.PC_OUT_OF_RANGE, 1 << 40)


def test_trap_sram_range_is_checked_before_alignment():
    emu, t = trap_of(li(2, SRAM - 4) + [E("ld64", rd=1, rs1=2, imm=0)])
    assert t.cause == traps.SRAM_OUT_OF_RANGE
    emu, t = trap_of([E("movi", rd=2, imm=-8), E("st8", rs1=2, rs2=0, imm=0)])
    assert t.cause == traps.SRAM_OUT_OF_RANGE
    emu, t = trap_of([E("movi", rd=2, imm=6), E("ld64", rd=1, rs1=2, imm=0)])
    assert (t.cause, t.pc) == (traps.MISALIGNED, 1)
    assert t.detail == "ld64: address 6 (0x6) is not 8-aligned"      # the alignment it needs
    # rs1 + imm wraps in 64 bits: the report names the address the machine formed
    emu, t = trap_of(li(2, (1 << 63) - 1) + [E("ld64", rd=1, rs1=2, imm=8)])
    assert t.detail == (f"ld64: address {7 - (1 << 63)} (0x8000000000000007); "
                        f"SRAM is 0..{SRAM - 1}")


def test_trap_vector_and_tile_addresses():
    # vlds lane 14 past the end -> range, even though lane 0 is misaligned
    emu, t = trap_of([E("movi", rd=1, imm=2), E("movi", rd=2, imm=300),
                      E("vlds", rd=0, rs1=1, rs2=2, imm=0)])
    assert t.cause == traps.SRAM_OUT_OF_RANGE
    assert t.detail == (f"vlds: lane 14 address 4202 (0x106a) = 2 + 14 x stride 300 is "
                        f"outside SRAM (0..{SRAM - 1})")
    # a strided misalignment names the alignment, not the SRAM range
    emu, t = trap_of([E("movi", rd=1, imm=4), E("movi", rd=2, imm=62),
                      E("vsts", rs2=0, rs1=1, rs3=2, imm=0)])
    assert t.detail == "vsts: lane 1 address 66 (0x42) = 4 + 1 x stride 62 is not 4-aligned"
    emu, t = trap_of([E("movi", rd=1, imm=2), E("vld", rd=0, rs1=1, imm=0)])
    assert t.cause == traps.MISALIGNED
    assert t.detail == "vld: address 2 (0x2) is not 4-aligned"
    emu, t = trap_of([E("movi", rd=1, imm=0), E("movi", rd=2, imm=1),
                      E("mma.bf16", rd=0, rs1=1, rs2=2, sa=16, sb=16)])
    assert t.cause == traps.MISALIGNED
    assert t.detail == "mma.bf16: a tile row is not 2-aligned"
    emu, t = trap_of(li(1, SRAM - 100) + [E("acc.st", rd=0, rs1=1, sa=32)])
    assert t.cause == traps.SRAM_OUT_OF_RANGE
    assert t.detail == f"acc.st: a tile row is outside SRAM (0..{SRAM - 1})"
    assert emu.state_dict()["stats"]["sram_hwm"][0] == 0      # a trapping store wrote nothing


def test_trap_no_neighbour_bad_length_user_and_cycle_limit():
    emu, t = trap_of([E("send", dir=0, rs1=0)])                # node 0 is on the north edge
    assert t.cause == traps.NO_NEIGHBOUR
    assert t.detail == "there is no live node N of this node (mesh edge)"
    # a relay names the one of its two directions that has no neighbour
    emu, t = trap_of([E("relay", dir=1, dir2=3)])
    assert t.detail == "there is no live node W of this node (mesh edge)"
    emu, t = trap_of([E("movi", rd=2, imm=0), E("sendb", dir=1, rs1=0, rs2=2)])
    assert t.cause == traps.BAD_MESSAGE_LENGTH
    emu, t = trap_of([E("trap", uimm=0xBEEF)])
    assert (t.cause, t.code) == (traps.USER_TRAP, 0xBEEF) and emu.clock(0) == 0
    emu, t = trap_of([E("jal", rd=0, off=0)], max_cycles=100)
    assert t.cause == traps.CYCLE_LIMIT and emu.clock(0) == 101   # clock > 100 before fetch


def test_trap_message_length_mismatch_leaves_the_message():
    prog0 = [E("movi", rd=1, imm=42), E("send", dir=1, rs1=1), E("halt")]
    prog1 = [E("vrecv", rd=0, dir=3)]
    emu, res = run({0: prog0, 1: prog1})
    assert res.status == "trapped" and res.traps[0].cause == traps.MESSAGE_LENGTH_MISMATCH
    assert emu.fifo(1, "W")[0][0] == 8 and emu.fifo(1, "W")[0][2] == (42).to_bytes(8, "little")
    assert "is 8 B, the instruction expects 64 B" in res.traps[0].detail


def test_trap_report_names_node_instruction_and_source():
    m = machine()
    block = CodeBlock(np.array([E("nop"), E("trap", uimm=7)], dtype=np.uint64),
                      np.array([[0, 3, 5, 1, 40], [0, 4, 9, 1, 41]], dtype=np.int32))
    obj = ObjectFile(m, [block], np.array([-1, 0, -1, -1], dtype=np.int32),
                     files=["prog.d1k", "prog.d1s"])
    res = Emulator(obj).run()
    text = res.report()
    assert "node (1,0) [id 1] trapped at pc 1: user trap (code 7)" in text
    assert "trap 7" in text and "prog.d1k:4:9 (asm prog.d1s:41)" in text


# ---- floating point -----------------------------------------------------------------------------

def test_vector_arithmetic_rounds_each_operation_and_canonicalises_nan():
    a = [F(1.0), F(1e30), 0x7F80_0001, F(3.0), F(-0.0), F(0.1)]
    b = [F(2.0 ** -24), F(1e30), F(1.0), F(0.0), F(0.0), F(0.2)]
    c = [F(-1.0), F(-1e30), F(2.0), 0xFF80_0000, F(0.0), F(0.3)]
    data = [(0, 0, vec(a) + vec(b) + vec(c))]
    emu = run1(load_v(1, 0) + load_v(2, 64) + load_v(3, 128) + [
        E("vadd", rd=4, rs1=1, rs2=2), E("vfma", rd=5, rs1=1, rs2=2, rs3=3),
        E("vdiv", rd=6, rs1=1, rs2=2), E("vsub", rd=7, rs1=1, rs2=1)], data=data)
    vadd, vfma, vdiv = vreg(emu, 4), vreg(emu, 5), vreg(emu, 6)
    assert vadd[0] == F(1.0)                  # 1 + 2^-24 ties to even: 1.0
    assert vadd[2] == QNAN                    # a signalling NaN in, the canonical NaN out
    assert vfma[0] == 0xBF7F_FFFF             # 1 * 2^-24 - 1 = -(1 - 2^-24), exact
    assert vfma[1] == 0x7F80_0000             # f32(1e30 * 1e30) = inf; inf - 1e30 = inf
    assert vfma[2] == QNAN
    assert vfma[3] == 0xFF80_0000             # 3 * 0 + -inf
    assert vfma[4] == 0                       # -0 * 0 + 0 = +0
    assert vdiv[3] == 0x7F80_0000             # 3 / 0 = +inf
    assert vdiv[4] == QNAN                    # -0 / 0 = NaN, canonical
    assert vreg(emu, 7)[2] == QNAN            # NaN - NaN


def test_vfma_products_and_sums_hand_checked():
    # 0.1f * 0.2f = 0x3CA3D70B (rounded); + 0.3f = 0x3EB33334 (vs fused 0x3EB33333)
    data = [(0, 0, vec([F(0.1)]) + vec([F(0.2)]) + vec([F(0.3)]))]
    emu = run1(load_v(1, 0) + load_v(2, 64) + load_v(3, 128)
               + [E("vfma", rd=4, rs1=1, rs2=2, rs3=3), E("vmul", rd=5, rs1=1, rs2=2)],
               data=data)
    assert vreg(emu, 5)[0] == 0x3CA3_D70B
    assert vreg(emu, 4)[0] == f32_bits(float(np.float32(np.float32(0.1) * np.float32(0.2))
                                             + np.float32(0.3)))
    assert emu.state_dict()["stats"]["flops"][0] == 32 + 16


def test_vmax_vmin_signed_zero_and_nan():
    a = [F(-0.0), F(0.0), F(1.0), 0x7FC0_0001, F(-3.0)]
    b = [F(0.0), F(-0.0), F(2.0), F(1.0), F(-2.0)]
    emu = run1(load_v(1, 0) + load_v(2, 64) + [E("vmax", rd=3, rs1=1, rs2=2),
                                               E("vmin", rd=4, rs1=1, rs2=2)],
               data=[(0, 0, vec(a) + vec(b))])
    assert vreg(emu, 3)[:5] == [F(0.0), F(0.0), F(2.0), QNAN, F(-2.0)]
    assert vreg(emu, 4)[:5] == [F(-0.0), F(-0.0), F(1.0), QNAN, F(-3.0)]


def test_compares_and_bit_operations_move_bits():
    a = [0x7FC0_0001, F(-0.0), F(1.0)]
    b = [F(1.0), F(0.0), F(2.0)]
    emu = run1(load_v(1, 0) + load_v(2, 64) + [
        E("vcmplt", rd=3, rs1=1, rs2=2), E("vcmpeq", rd=4, rs1=1, rs2=2),
        E("vneg", rd=5, rs1=1), E("vsel", rd=6, rs1=3, rs2=1, rs3=2)],
        data=[(0, 0, vec(a) + vec(b))])
    assert vreg(emu, 3)[:3] == [0, 0, 0xFFFF_FFFF]       # NaN < 1 false
    assert vreg(emu, 4)[:3] == [0, 0xFFFF_FFFF, 0]       # -0 == +0
    assert vreg(emu, 5)[0] == 0xFFC0_0001                # vneg flips the sign, keeps payload
    assert vreg(emu, 6)[:3] == [F(1.0), F(0.0), F(1.0)]


def test_reductions_go_in_lane_order():
    # 2^24 + 1 + 1 + ... : in order every +1 is lost (ties to even), so the sum stays 2^24
    lanes = [F(2.0 ** 24)] + [F(1.0)] * 15
    emu = run1(load_v(1, 0) + [E("vredsum", rd=2, rs1=1), E("vredmax", rd=3, rs1=1)],
               data=[(0, 0, vec(lanes))])
    assert emu.regs(0)[2] == F(2.0 ** 24)
    assert emu.regs(0)[3] == F(2.0 ** 24)


def test_special_functions_in_fp64_then_rounded():
    lanes = [F(1.0), F(-200.0), F(200.0), F(0.5)]
    emu = run1(load_v(1, 0) + [E("vexp", rd=2, rs1=1), E("vsigmoid", rd=3, rs1=1),
                               E("vtanh", rd=4, rs1=1), E("vsqrt", rd=5, rs1=1)],
               data=[(0, 0, vec(lanes))])
    assert vreg(emu, 2)[0] == f32_bits(float(np.float32(np.exp(1.0))))
    assert vreg(emu, 2)[1] == 0 and vreg(emu, 2)[2] == 0x7F80_0000
    assert vreg(emu, 3)[1] == 0                  # 1 / (1 + exp(200)) underflows to +0
    assert vreg(emu, 3)[2] == F(1.0)
    assert vreg(emu, 4)[3] == f32_bits(float(np.float32(np.tanh(0.5))))
    assert vreg(emu, 5)[1] == QNAN               # sqrt(-200)


def test_erf_gelu_and_pow_in_fp64_then_rounded():
    import math
    lanes = [F(1.0), F(-2.0), F(0.5), F(-8.0)]
    expo = [F(3.0), F(-1.0), F(0.5), F(1 / 3)]
    emu = run1(load_v(1, 0) + load_v(2, 64) + [
        E("verf", rd=3, rs1=1), E("vgelu", rd=4, rs1=1), E("vpow", rd=5, rs1=1, rs2=2)],
        data=[(0, 0, vec(lanes)), (0, 64, vec(expo))])
    assert vreg(emu, 3)[:2] == [f32_bits(math.erf(1.0)), f32_bits(math.erf(-2.0))]
    gelu = [0.5 * x * math.erfc(-x / math.sqrt(2.0)) for x in (1.0, -2.0)]
    assert vreg(emu, 4)[:2] == [f32_bits(g) for g in gelu]
    assert vreg(emu, 5)[:4] == [F(1.0), F(-0.5), f32_bits(math.sqrt(0.5)), QNAN]


def test_int_conversions_truncate_and_saturate():
    lanes = [F(2.9), F(-2.9), F(3e9), F(-3e9), QNAN, 0x7F80_0000]
    emu = run1(load_v(1, 0) + [E("vcvt.i32.f32", rd=2, rs1=1), E("vcvt.f32.i32", rd=3, rs1=2)],
               data=[(0, 0, vec(lanes))])
    assert vreg(emu, 2)[:6] == [2, 0xFFFF_FFFE, 0x7FFF_FFFF, 0x8000_0000, 0, 0x7FFF_FFFF]
    assert vreg(emu, 3)[:4] == [F(2.0), F(-2.0), F(2147483648.0), F(-2147483648.0)]


@pytest.mark.parametrize("u, want", [
    (0x3F80_8000, 0x3F80),      # tie, even below: stays
    (0x3F81_8000, 0x3F82),      # tie, odd below: rounds up to even
    (0x3F80_8001, 0x3F81),      # above the tie
    (0x7F7F_FFFF, 0x7F80),      # beyond bf16 range: inf
    (0x7F80_0001, 0x7FC0),      # NaN: the quiet NaN
    (0x8000_0000, 0x8000),      # -0
])
def test_bf16_round_to_nearest_even(u, want):
    assert numerics.bf16_rne(u) == want
    assert numerics.bf16_rne.py_func(u) == want
    emu = run1(load_v(1, 0) + [E("vcvt.bf16", rd=2, rs1=1)] + li(5, 256)
               + [E("vstn.bf16", rs2=1, rs1=5, imm=0)], data=[(0, 0, vec([u]))])
    assert vreg(emu, 2)[0] == want << 16
    assert int.from_bytes(emu.sram(0, 256, 2).tobytes(), "little") == want


def test_input_values_round_to_bf16_as_the_machine_does():
    """set_input's host conversion (emulator._to_raw) equals the machine's vcvt.bf16 on edge
    values and on random bit patterns of every kind."""
    from emulator.emulator import _to_raw

    edges = [0x3F80_8000, 0x3F81_8000, 0x3F80_8001, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F80_0000,
             0xFF80_0000, 0x7F80_0001, 0xFFFF_FFFF, 0xFFFF_8000, 0x7FFF_FFFF, 0x8000_0000, 0,
             0x0000_8000, 0x0001_8000]
    rng = np.random.default_rng(3)
    bits = np.concatenate([np.array(edges, dtype=np.uint32),
                           rng.integers(0, 1 << 32, 4096, dtype=np.uint64).astype(np.uint32)])
    layout = TensorLayout("x", "bf16", (bits.size,), "input", [])
    got = _to_raw(bits.view(np.float32), layout)
    assert got.dtype == np.uint16
    assert got.tolist() == [numerics.bf16_rne(int(u)) for u in bits]


def test_float64_inputs_beyond_fp32_round_to_infinity_without_a_warning():
    from emulator.emulator import _to_raw

    values = np.array([1e300, -1e300, 1.5], dtype=np.float64)
    for dtype, want in (("f32", [0x7F80_0000, 0xFF80_0000, 0x3FC0_0000]),
                        ("bf16", [0x7F80, 0xFF80, 0x3FC0])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # numpy's overflow warning would raise
            got = _to_raw(values, TensorLayout("x", dtype, (3,), "input", []))
        assert got.tolist() == want


def test_widen_and_narrow_lanes():
    lanes = [0x4000_3F80, 0xC000_BF80]          # bf16 lanes 0..3: 1, 2, -1, -2
    emu = run1(load_v(1, 0) + [E("vwiden.lo", rd=2, rs1=1), E("vnarrow", rd=3, rs1=2, rs2=2),
                               E("vwiden.lo", rd=1, rs1=1)],
               data=[(0, 0, vec(lanes))])
    assert vreg(emu, 2)[:4] == [F(1.0), F(2.0), F(-1.0), F(-2.0)]
    assert vreg(emu, 3)[:2] == lanes and vreg(emu, 3)[8:10] == lanes
    assert vreg(emu, 1)[:4] == [F(1.0), F(2.0), F(-1.0), F(-2.0)]     # vd == vs1


def splitmix(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def test_stochastic_rounding_draws_from_the_node_generator():
    u = 0x3F80_7000                             # 1.0 + a bit under half a bf16 ulp
    m = machine()
    seed = 5
    emu = run1(load_v(1, 0) + [E("vcvt.bf16.sr", rd=2, rs1=1)], data=[(0, 0, vec([u] * 16))],
               m=m, seed=seed)
    state = (seed * 0x9E3779B97F4A7C15 + 0 + 1) & MASK64
    want = []
    for _ in range(16):
        state, r = splitmix(state)
        want.append(((u + (r & 0xFFFF)) >> 16) << 16)
    assert vreg(emu, 2) == want
    assert int(emu.state_dict()["sr_state"][0]) == state
    again = run1(load_v(1, 0) + [E("vcvt.bf16.sr", rd=2, rs1=1)], data=[(0, 0, vec([u] * 16))],
                 m=m, seed=seed)
    assert vreg(again, 2) == want               # the same seed, the same draws


def test_srseed_zero_restores_the_default_state():
    emu = run1(li(1, 12345) + [E("srseed", rs1=1), E("vcvt.bf16.sr", rd=2, rs1=3),
                               E("srseed", rs1=0)], seed=3)
    assert int(emu.state_dict()["sr_state"][0]) == (3 * 0x9E3779B97F4A7C15 + 1) & MASK64


# ---- matrix -----------------------------------------------------------------------------------

def bf16_bytes(m: np.ndarray) -> bytes:
    return (np.asarray(m, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def k_ordered(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """acc[i][j] = f32(acc[i][j] + f32(a[i][k] * b[k][j])) for k = 0..7, in numpy fp32."""
    out = acc.astype(np.float32).copy()
    with np.errstate(all="ignore"):
        for k in range(8):
            out = out + (a[:, k:k + 1].astype(np.float32) * b[k:k + 1, :].astype(np.float32))
    return out


def test_mma_bf16_matches_k_ordered_fp32_accumulation():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32) * 1000
    a = (a.view(np.uint32) & 0xFFFF0000).view(np.float32)     # exactly bf16
    b = (b.view(np.uint32) & 0xFFFF0000).view(np.float32)
    acc0 = rng.standard_normal((8, 8)).astype(np.float32)
    data = [(0, 0, bf16_bytes(a)), (0, 256, bf16_bytes(b)), (0, 512, acc0.tobytes())]
    emu = run1(li(1, 0) + li(2, 256) + li(3, 512) + [
        E("acc.ld", rd=2, rs1=3, sa=32), E("mma.bf16", rd=2, rs1=1, rs2=2, sa=16, sb=16),
        E("acc.st", rd=2, rs1=3, sa=32)], data=data)
    want = k_ordered(acc0, a, b)
    assert np.array_equal(emu.acc(0)[2].view(np.uint32), want.view(np.uint32))
    got = np.frombuffer(emu.sram(0, 512, 256).tobytes(), dtype=np.float32).reshape(8, 8)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert emu.state_dict()["stats"]["flops"][0] == 1024


def test_mma_f32_strided_tile_and_mmak_steps():
    rng = np.random.default_rng(3)
    big_a = rng.standard_normal((8, 24)).astype(np.float32)      # A is 8 x 24, row stride 96
    big_b = rng.standard_normal((24, 8)).astype(np.float32)      # B is 24 x 8, row stride 32
    data = [(0, 0, big_a.tobytes()), (0, 1024, big_b.tobytes())]
    emu = run1(li(1, 0) + li(2, 1024) + [E("movi", rd=3, imm=3),
                                         E("mmak.f32", rd=1, rs1=1, rs2=2, rs3=3, sa=96, sb=32),
                                         E("acc.zero", rd=2),
                                         E("mma.f32", rd=2, rs1=1, rs2=2, sa=96, sb=32)],
               data=data)
    want = np.zeros((8, 8), np.float32)
    for s in range(3):
        want = k_ordered(want, big_a[:, 8 * s:8 * s + 8], big_b[8 * s:8 * s + 8])
    assert np.array_equal(emu.acc(0)[1].view(np.uint32), want.view(np.uint32))
    one = k_ordered(np.zeros((8, 8), np.float32), big_a[:, :8], big_b[:8])
    assert np.array_equal(emu.acc(0)[2].view(np.uint32), one.view(np.uint32))
    sd = emu.state_dict()
    assert sd["stats"]["flops"][0] == 4 * 1024
    assert sd["stats"]["count"][0][CLS["mma_f32"]] == 2
    m = machine()
    # mmak with 3 steps costs 3 mma.f32; the other one 1
    assert sd["clock"][0] - (len(li(1, 0)) * 2 + 1 + 1 + 1) == 4 * m.cost_mma_f32


def test_mma_bf16_products_beyond_fp32_are_exact():
    # A product of bf16 values is exact in the ISA, even outside the fp32 range:
    # acc -2^127 plus the product 2^64 * 2^64 = 2^128 is 2^127 (an fp32 product would be inf);
    # acc -2^-149 plus (1 + 2^-7)^2 * 2^-150 is -0.49 * 2^-149, which rounds to -0 (an fp32
    # product would round to 2^-149 first and give +0). It is the last k, so no +0 follows.
    a = np.zeros((8, 8), np.float32)
    b = np.zeros((8, 8), np.float32)
    acc0 = np.zeros((8, 8), np.float32)
    a[0, 0] = b[0, 0] = 2.0 ** 64
    acc0[0, 0] = -(2.0 ** 127)
    a[1, 7] = b[7, 1] = (1 + 2.0 ** -7) * 2.0 ** -75
    acc0[1, 1] = -(2.0 ** -149)
    data = [(0, 0, bf16_bytes(a)), (0, 256, bf16_bytes(b)), (0, 512, acc0.tobytes())]
    emu = run1(li(1, 0) + li(2, 256) + li(3, 512) + [
        E("acc.ld", rd=0, rs1=3, sa=32), E("mma.bf16", rd=0, rs1=1, rs2=2, sa=16, sb=16)],
        data=data)
    t = emu.acc(0)[0]
    from emulator.reference import ReferenceEmulator
    ref = ReferenceEmulator(emu.obj)
    ref.run()
    assert np.array_equal(ref.state_dict()["acc"][0, 0], t.view(np.uint32))
    assert t[0, 0] == 2.0 ** 127
    assert t.view(np.uint32)[1, 1] == 0x8000_0000


def test_acc_store_bf16_rounds_to_nearest_even():
    tile = np.full((8, 8), np.uint32(0x3F81_8000), dtype=np.uint32).view(np.float32)
    emu = run1(li(3, 512) + [E("acc.ld", rd=0, rs1=3, sa=32), E("acc.st.bf16", rd=0, rs1=3,
                                                                sa=16)],
               data=[(0, 512, tile.tobytes())])
    assert np.frombuffer(emu.sram(0, 512, 2).tobytes(), "<u2")[0] == 0x3F82


# ---- numerics helpers, jitted and as plain Python ----------------------------------------------

def test_numerics_helpers_agree_with_their_python_versions():
    with np.errstate(over="ignore"):
        for st in (0, 1, 0x9E3779B97F4A7C15, MASK64):
            s1, z1 = numerics.splitmix64(np.uint64(st))
            s2, z2 = numerics.splitmix64.py_func(np.uint64(st))
            assert (int(s1), int(z1)) == (int(s2), int(z2)) == splitmix(st)
    for a, b in ((F(-0.0), F(0.0)), (F(1.0), QNAN), (F(2.0), F(1.0))):
        assert numerics.fmax_bits(a, b) == numerics.fmax_bits.py_func(np.uint32(a), np.uint32(b))
        assert numerics.fmin_bits(a, b) == numerics.fmin_bits.py_func(np.uint32(a), np.uint32(b))
    assert numerics.div_signed(INT64_MIN, -1) == INT64_MIN
    assert numerics.div_signed.py_func(np.int64(-7), np.int64(2)) == -3


def test_simd_helpers_agree_with_numpy_versions():
    from numba import njit

    @njit(_nrt=False)
    def jitted(v, t, m8, am):
        simd.vfma16(v, 0, 16, 32, 48)
        simd.vector_binop(simd.VB_MUL, v, 64, 16, 32)
        simd.store32(m8, 300, simd.load32(m8, 2) + np.uint32(1))
        return simd.mma_bf16_step(t, 0, m8, 0, 16, 128, 16, am)

    rng = np.random.default_rng(11)
    v = rng.standard_normal(80).astype(np.float32).view(np.uint32)
    v[20] = 0x7F80_0001
    t = rng.standard_normal(64).astype(np.float32)
    m16 = (rng.standard_normal(256).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    m8 = m16.view(np.uint8)
    v2, t2, m8b = v.copy(), t.copy(), m8.copy()
    am = np.zeros(64, np.float32)
    assert jitted(v, t, m8, am) == 1
    simd.store32(m8b, 300, simd.load32(m8b, 2) + np.uint32(1))
    assert simd.mma_bf16_step(t2, 0, m8b, 0, 16, 128, 16, am) == 1
    assert np.array_equal(m8, m8b)
    simd.vfma16(v2, 0, 16, 32, 48)
    simd.vector_binop(simd.VB_MUL, v2, 64, 16, 32)
    assert np.array_equal(v, v2) and v[4] == QNAN
    assert np.array_equal(t.view(np.uint32), t2.view(np.uint32))



def test_mma_bf16_steps_agree_with_single_steps():
    """An mmak.bf16's steps with the tile kept in registers (and NaNs made canonical once, at
    the end) give the bits of that many single steps, NaNs, infinities and subnormals included."""
    from numba import njit

    @njit(_nrt=False)
    def jitted(t, m8, a_off, sa, b_off, sb, steps, am):
        simd.mma_bf16_steps(t, 0, m8, a_off, sa, b_off, sb, steps, am)

    @njit(_nrt=False)
    def single(t, m8, a_off, sa, b_off, sb, steps, am):
        for s in range(steps):
            simd.mma_bf16_step(t, 0, m8, a_off + 16 * s, sa, b_off + 8 * s * sb, sb, am)

    rng = np.random.default_rng(5)
    am = np.zeros(64, np.float32)
    for trial in range(40):
        steps = int(rng.integers(1, 9))
        sa = 16 * int(rng.integers(1, 5)) + 16 * steps
        sb = 16 * int(rng.integers(1, 3))
        need = max(8 * sa, 16 * steps + 7 * sa, 8 * steps * sb) + 64
        words = rng.standard_normal(need // 4 + 64).astype(np.float32).view(np.uint32)
        if trial % 2:
            # specials: NaNs of any payload, infinities, huge values, subnormals
            special = np.array([0x7F80_0000, 0xFF80_0000, 0x7FC0_1234, 0xFFA0_0000, 0x7F7F_0000,
                                0x0001_0000, 0x8000_0000], dtype=np.uint32)
            hit = rng.random(words.size) < 0.05
            words[hit] = special[rng.integers(0, special.size, hit.sum())]
        m8 = words.view(np.uint8)[:need].copy()
        t = rng.standard_normal(64).astype(np.float32)
        if trial % 4 == 1:
            t[3] = np.uint32(0x7FC0_0001).view(np.float32)
        t1, t2, t3 = t.copy(), t.copy(), t.copy()
        jitted(t1, m8, 0, sa, 16, sb, steps, am)
        single(t2, m8, 0, sa, 16, sb, steps, am)
        simd.mma_bf16_steps(t3, 0, m8, 0, sa, 16, sb, steps, am)
        assert np.array_equal(t1.view(np.uint32), t2.view(np.uint32)), trial
        assert np.array_equal(t1.view(np.uint32), t3.view(np.uint32)), trial



def test_vector_load_store_intrinsics_agree():
    """vld / vst / vldw.bf16 / vstn.bf16 through emulator.simd, jitted and in numpy, against the
    lane-by-lane definition (numerics.bf16_rne for the narrowing, NaNs and rounding ties)."""
    from numba import njit

    @njit(_nrt=False)
    def jitted(v, m8, a):
        simd.vload_words(v, 16, m8, a)
        simd.vstore_words(m8, a + 200, v, 32)
        simd.vload_bf16(v, 48, m8, a + 2)
        simd.vstore_bf16(m8, a + 300, v, 64)

    def numpy_side(v, m8, a):
        simd.vload_words(v, 16, m8, a)
        simd.vstore_words(m8, a + 200, v, 32)
        simd.vload_bf16(v, 48, m8, a + 2)
        simd.vstore_bf16(m8, a + 300, v, 64)

    rng = np.random.default_rng(3)
    for trial in range(20):
        v = rng.integers(0, 1 << 32, 80, dtype=np.uint64).astype(np.uint32)
        # round-to-even ties, NaNs of both signs, infinities, the largest finite values
        v[64:80] = np.array([0x3F80_8000, 0x3F81_8000, 0x7FC0_0001, 0xFF80_0001, 0x7F80_0000,
                             0xFF80_0000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x0000_8000, 0x8001_8000,
                             0x7FFF_FFFF, 0xFFFF_FFFF, 0, 0x8000_0000, 0x4049_0FDB,
                             0x3EAA_AAAB], dtype=np.uint32)
        if trial:
            v[64:80] = rng.permutation(v[64:80]) if trial % 2 else v[64:80]
        m8 = rng.integers(0, 256, 600, dtype=np.uint8)
        a = 4 * int(rng.integers(0, 40))
        v1, m1, v2, m2 = v.copy(), m8.copy(), v.copy(), m8.copy()
        jitted(v1, m1, a)
        numpy_side(v2, m2, a)
        assert np.array_equal(v1, v2) and np.array_equal(m1, m2), trial
        assert np.array_equal(v1[16:32], m8[a:a + 64].view(np.uint32))
        assert np.array_equal(m1[a + 200:a + 264], v[32:48].view(np.uint8))
        assert list(v1[48:64]) == [int(h) << 16 for h in m8[a + 2:a + 34].view(np.uint16)]
        assert list(m1[a + 300:a + 332].view(np.uint16)) == [
            numerics.bf16_rne(np.uint32(w)) for w in v[64:80]]


# ---- host interface ---------------------------------------------------------------------------

def tensor_obj():
    m = machine()
    # x: f32[2, 4], replicated on nodes 0 and 1 (row-major at 0) ; y: bf16[4] on node 2 with
    # stride 4 (padding); z: i32[2, 2] split by rows over nodes 3 and 0.
    x = TensorLayout("x", "f32", (2, 4), "input", [
        TensorPiece(0, 0, (0, 0), (2, 4), (16, 4)), TensorPiece(1, 64, (0, 0), (2, 4), (16, 4))])
    y = TensorLayout("y", "bf16", (4,), "input", [TensorPiece(2, 128, (0,), (4,), (4,))])
    z = TensorLayout("z", "i32", (2, 2), "output", [
        TensorPiece(3, 256, (0, 0), (1, 2), (8, 4)), TensorPiece(0, 256, (1, 0), (1, 2), (8, 4))])
    return make_obj(m, {0: [E("halt")]}, tensors=[x, y, z])


def test_set_input_scatters_to_every_piece_and_output_gathers():
    emu = Emulator(tensor_obj())
    x = np.arange(8, dtype=np.float64).reshape(2, 4) / 3
    emu.set_input("x", x)
    assert np.array_equal(emu.output("x"), x.astype(np.float32))
    assert emu.sram(1, 64, 32).tobytes() == x.astype(np.float32).tobytes()   # the replica
    emu.set_input("y", np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, np.nan]))
    got = emu.output("y")
    assert got.dtype == np.float32
    assert list(got[:3]) == [1.0, 1.0, 1.0 + 4 * 2 ** -8]       # ties to even in bf16
    assert got.view(np.uint32)[3] == QNAN
    assert emu.sram(2, 128 + 4, 2).tobytes() == (0x3F80).to_bytes(2, "little")
    emu.set_input("z", np.array([[1, -2], [3, 4]]))
    assert emu.output("z").dtype == np.int32 and emu.output("z").tolist() == [[1, -2], [3, 4]]
    assert emu.state_dict()["stats"]["sram_hwm"][0] == 256 + 8


def test_set_input_writes_the_same_bytes_by_index_or_by_piece_views(monkeypatch):
    """A tensor is written through index arrays worked out on its second write, or (pieces
    whose strides are not whole elements, or too many elements) through a view per piece:
    both leave the same SRAM bytes and high-water marks, write after write."""
    import emulator.emulator as E_mod
    m = machine()
    # w: f32[3, 5], a transposed copy on node 0 (strides 4, 12) and row blocks on nodes 1, 2;
    # u: bf16[2, 3] with rows 7 bytes apart: not a whole number of 2-byte elements.
    w = TensorLayout("w", "f32", (3, 5), "input", [
        TensorPiece(0, 64, (0, 0), (3, 5), (4, 12)),
        TensorPiece(1, 0, (0, 0), (2, 5), (32, 4)), TensorPiece(2, 8, (2, 0), (1, 5), (20, 4))])
    u = TensorLayout("u", "bf16", (2, 3), "input", [TensorPiece(3, 2, (0, 0), (2, 3), (7, 2))])
    obj = make_obj(m, {0: [E("halt")]}, tensors=[w, u])
    states = []
    for limit in (None, 0):
        if limit is not None:
            monkeypatch.setattr(E_mod._ScatterPlan, "MAX_INDEXED", limit)
        emu = Emulator(obj)
        rng = np.random.default_rng(3)
        for _ in range(2):
            a, b = rng.standard_normal((3, 5)), rng.standard_normal((2, 3))
            emu.set_input("w", a)
            emu.set_input("u", b)
            assert np.array_equal(emu.output("w"), a.astype(np.float32))
            assert emu.sram(0, 116, 4).tobytes() == a.astype(np.float32)[1, 4].tobytes()
        assert (emu._plans["w"].words is None) == (limit == 0)
        assert emu._plans["u"].words is None            # 7-byte rows: views
        states.append((list(emu.state.hwm[:4]),
                       emu.state.sram[:4, :128].copy()))
    assert states[0][0] == states[1][0] == [124, 52, 28, 15]
    assert np.array_equal(states[0][1], states[1][1])


def test_set_input_errors_are_clear():
    emu = Emulator(tensor_obj())
    with pytest.raises(D1Error, match=r"must have shape \(2, 4\)"):
        emu.set_input("x", np.zeros(8))
    with pytest.raises(D1Error, match="no tensor named 'w'"):
        emu.set_input("w", np.zeros(3))
    with pytest.raises(D1Error, match="i32"):
        emu.set_input("z", np.full((2, 2), 0.5))
    # a ragged nested list was numpy's ValueError from np.asarray
    with pytest.raises(D1Error, match="input 'x' cannot be read as an array"):
        emu.set_input("x", [[1, 2, 3, 4], [5]])
    # and the emulator is still usable after each refusal
    emu.set_input("x", np.ones((2, 4)))
    assert emu.run().status == "halted" and emu.output("x").tolist() == [[1.0] * 4] * 2


@pytest.mark.parametrize("call, says", [
    (lambda e: e.run(max_instructions=-1), r"max_instructions must be >= 0, got -1"),
    (lambda e: e.run(max_instructions=1.5), "max_instructions must be an integer, not float"),
    (lambda e: e.run(max_instructions="3"), "max_instructions must be an integer, not str"),
    (lambda e: e.run(max_instructions=float("nan")), "max_instructions must be an integer"),
    (lambda e: e.run(max_instructions=float("inf")), "max_instructions must be an integer"),
    (lambda e: e.fifo(0, None), "direction must be N, E, S, W or 0..3, got None"),
    (lambda e: e.fifo(0, 1.5), "direction must be N, E, S, W or 0..3, got 1.5"),
    (lambda e: e.set_stop(0, None), "a pc is an integer, got None"),
    (lambda e: e.set_stop(0, 0.5), "a pc is an integer, got 0.5"),
    (lambda e: e.where(0, "a"), "a pc is an integer, got 'a'"),
    (lambda e: e.regs(True), "a node is an id or"),
    (lambda e: e.step(1, node=(True, 0)), "a node is an id or"),
    (lambda e: e.output("z", chip=5), r"a chip is \(cx, cy\)"),
    (lambda e: e.output("z", chip=("x", 0)), r"a chip is \(cx, cy\)"),
    (lambda e: e.output("z", chip=(1, 0)), r"chip \(1, 0\) is outside the 1x1 grid"),
])
def test_wrong_run_fifo_pc_node_and_chip_arguments_are_clear_errors(call, says):
    """Each was a raw TypeError, ValueError or OverflowError, or (run(-1), a float count, a
    float pc or direction, node True) silently read as something else."""
    emu = Emulator(tensor_obj())
    with pytest.raises(D1Error, match=says):
        call(emu)
    assert emu.run(max_instructions=np.int64(5)).status == "halted"


def test_a_0d_output_comes_back_0d_as_the_reference_gives_it():
    """A 0-d DSL output is held as one element (layout shape [1]); output() gave it back with
    shape (1,), unlike compiler.reference's (); now both are 0-d."""
    import compiler
    src = "input a: f32[4, 8]\ns = sum(a)\nc = relu(a)\noutput s, c\n"
    emu = Emulator(compiler.compile_source(src, machine=machine()))
    a = np.arange(32, dtype=np.float32).reshape(4, 8) - 5
    emu.set_input("a", a)
    assert emu.run().ok
    ref = compiler.reference(src, {"a": a})
    for name in ("s", "c"):
        got = emu.output(name)
        assert got.shape == ref[name].shape and got.dtype == np.float32
        assert np.array_equal(got, ref[name])
    assert emu.output("s").shape == () and emu.output("s", chip=(0, 0)).shape == ()


def test_a_node_or_sram_range_that_is_not_an_integer_is_a_clear_error():
    emu = Emulator(tensor_obj())
    assert emu.node_id(np.int64(1)) == 1 and emu.node_id((np.int32(1), 0)) == 1
    for bad in ("a", 1.5, (0.5, 0), ("0", "0")):
        with pytest.raises(D1Error, match="a node is an id or"):
            emu.regs(bad)
    # the same for an SRAM range (a float or a string raised TypeError from numpy or from <)
    assert emu.sram(0, np.int64(0), np.int32(4)).shape == (4,)
    for addr, n in ((1.5, 4), ("0", 4), (0, 2.5)):
        with pytest.raises(D1Error, match="an SRAM address and length are integers"):
            emu.sram(0, addr, n)


def test_snapshot_and_restore_replay_identically():
    m = machine()
    prog = [E("getid", rd=1), E("movi", rd=2, imm=50), E("addi", rd=3, rs1=3, imm=7),
            E("st64", rs1=0, rs2=3, imm=8), E("addi", rd=2, rs1=2, imm=-1),
            E("bne", rs1=2, rs2=0, off=-3), E("halt")]
    emu = Emulator(make_obj(m, {i: prog for i in range(4)}))
    res = emu.step(20)
    assert res.status == "running" and emu.pc(0) > 0
    snap = emu.snapshot()
    emu.run()
    final = emu.state_dict()
    emu.restore(snap)
    assert emu.pc(0) == int(snap["pc"][0])
    emu.run()
    assert_same_state(final, emu.state_dict())
    assert emu.regs(3)[3] == 350


def test_step_one_node_and_all_nodes():
    m = machine()
    prog = [E("addi", rd=1, rs1=1, imm=1)] * 10 + [E("halt")]
    emu = Emulator(make_obj(m, {i: prog for i in range(4)}))
    emu.step(3, node=(1, 0))
    assert [emu.pc(i) for i in range(4)] == [0, 3, 0, 0]
    res = emu.step(2)
    assert [emu.pc(i) for i in range(4)] == [2, 5, 2, 2] and res.status == "running"
    assert emu.run().status == "halted"


def test_initial_registers_are_set_at_start_and_again_on_restart():
    """Four nodes share one block; what differs between them is in their initial registers,
    which the reference interpreter applies too."""
    from emulator.reference import ReferenceEmulator
    m = machine()
    words = [E("add", rd=1, rs1=20, rs2=21), E("addi", rd=20, rs1=20, imm=1), E("halt")]
    init = InitRegs.from_nodes(4, {n: {20: 10 * n, 21: (1 << 63) + n} for n in range(4)})
    obj = ObjectFile(m, [CodeBlock(np.array(words, np.uint64))], np.zeros(4, np.int32),
                     init=init)
    emu = Emulator(obj)
    ref = ReferenceEmulator(obj)
    assert emu.run().status == "halted" and ref.run() == "halted"
    want = [(10 * n + (1 << 63) + n) & MASK64 for n in range(4)]
    for n in range(4):
        assert int(emu.regs(n)[1]) & MASK64 == want[n] and emu.regs(n)[20] == 10 * n + 1
        assert ref.nodes[n].x[1] & MASK64 == want[n] and ref.nodes[n].x[20] == 10 * n + 1
    emu.restart()
    assert emu.regs(3)[20] == 30 and emu.regs(3)[1] == 0
    emu.run()
    assert emu.regs(3)[20] == 31
    emu.reset()
    assert emu.regs(2)[20] == 20


def test_stop_flags_stop_before_the_instruction_and_resume_past_it():
    m = machine()
    prog = CodeBlock(np.array([E("addi", rd=1, rs1=1, imm=1)] * 5 + [E("halt")], np.uint64))
    emu = Emulator(ObjectFile(m, [prog], np.array([0, -1, 0, -1], dtype=np.int32)))
    emu.set_stop(0, 3)                 # nodes 0 and 2 share the block: both stop there
    res = emu.run()
    assert res.status == "stopped" and (res.stop.node, res.stop.pc) == (0, 3)
    assert emu.regs(0)[1] == 3 and "addi r1, r1, 1" in res.report()
    res = emu.run()
    assert res.status == "stopped" and (res.stop.node, res.stop.pc) == (2, 3)
    assert emu.node_states()[0] == "halted"
    res = emu.run()
    assert res.status == "halted" and emu.regs(0)[1] == 5 and emu.regs(2)[1] == 5


def test_run_with_an_instruction_budget():
    emu = Emulator(make_obj(machine(), {0: [E("jal", rd=0, off=0)]}))
    res = emu.run(max_instructions=1000)
    assert res.status == "running" and res.instructions == 1000 and emu.clock(0) == 1000


# ---- determinism and robustness ------------------------------------------------------------------

def assert_same_state(a: dict, b: dict) -> None:
    for key in a:
        if key == "fifos":
            assert a[key] == b[key]
        elif key == "stats":
            for sk in a[key]:
                assert np.array_equal(a[key][sk], b[key][sk]), sk
        else:
            assert np.array_equal(a[key], b[key]), key


def ring_programs(m) -> dict[int, list[int]]:
    """Every node of a 2x2 ring passes a counter around 20 times, mixing compute and traffic.
    Node 0 sends one message more than node 1 receives: it stays in node 1's FIFO."""
    # ring: 0 -E-> 1 -S-> 3 -W-> 2 -N-> 0
    out_dir = {0: 1, 1: 2, 3: 3, 2: 0}
    in_dir = {1: 3, 3: 0, 2: 1, 0: 2}
    progs = {}
    for node in range(4):
        words = [E("movi", rd=5, imm=20), E("getid", rd=1)]
        if node == 0:
            words += [E("send", dir=out_dir[0], rs1=1)]
        loop = [E("recv", rd=2, dir=in_dir[node]), E("add", rd=1, rs1=1, rs2=2),
                E("mul", rd=3, rs1=1, rs2=1), E("vbcast", rd=1, rs1=3),
                E("vfma", rd=2, rs1=1, rs2=1, rs3=2), E("vcvt.bf16.sr", rd=3, rs1=2),
                E("send", dir=out_dir[node], rs1=1), E("addi", rd=5, rs1=5, imm=-1)]
        loop += [E("bne", rs1=5, rs2=0, off=-len(loop))]
        progs[node] = words + loop + [E("halt")]
    return progs


def test_results_do_not_depend_on_the_quantum():
    m = machine(fifo_depth=1)
    states = []
    for q in (1, 7, 64, 1000):
        emu = Emulator(make_obj(m, ring_programs(m)), seed=9, quantum=q)
        assert emu.run().status == "halted"
        states.append(emu.state_dict())
    for s in states[1:]:
        assert_same_state(states[0], s)
    assert states[0]["stats"]["link_msgs"].sum() == 81


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threads_give_the_serial_results(threads):
    m = machine(fifo_depth=1)
    serial = Emulator(make_obj(m, ring_programs(m)), seed=9)
    assert serial.run().status == "halted"
    for q in (1, 64):
        emu = Emulator(make_obj(m, ring_programs(m)), seed=9, quantum=q, threads=threads)
        res = emu.run()
        assert res.status == "halted"
        assert emu.phases >= 1 and emu.stats()["host"]["threads"] == threads
        assert_same_state(serial.state_dict(), emu.state_dict())


def test_a_thread_whose_nodes_are_done_runs_the_others_nodes():
    m = machine(mesh="4x4")
    loop = [E("movi", rd=1, imm=200_000), E("addi", rd=2, rs1=2, imm=3),
            E("xor", rd=3, rs1=3, rs2=2), E("addi", rd=1, rs1=1, imm=-1),
            E("bne", rs1=1, rs2=0, off=-3), E("halt")]
    # the first thread's range (nodes 0-7) halts at once; the second's runs long loops
    progs = {nid: [E("halt")] if nid < 8 else loop for nid in range(m.n_live)}
    serial = Emulator(make_obj(m, progs))
    assert serial.run().status == "halted"
    helped = []
    for _ in range(3):          # the split between threads depends on the host's timing
        emu = Emulator(make_obj(m, progs), threads=2)
        assert emu._partition(2) == [(0, 8), (8, 16)]
        assert emu.run().status == "halted"
        assert_same_state(serial.state_dict(), emu.state_dict())
        helped.append(emu.stats()["host"]["helped_instructions"])
        if helped[-1] > 0:
            break
    assert 0 < helped[-1] <= 8 * 800_002, helped


def test_threads_report_a_deadlock_like_the_serial_run():
    m = machine(mesh="4x4")
    # every node waits to receive from its east neighbour first: a cycle across both threads
    progs = {}
    for nid in range(m.n_live):
        d = 1 if m.neighbors[nid, 1] >= 0 else 3          # east, else west
        progs[nid] = [E("recv", rd=1, dir=d), E("halt")]
    reports = []
    for threads in (1, 2):
        emu = Emulator(make_obj(m, progs), threads=threads)
        res = emu.run()
        assert res.status == "deadlock"
        reports.append(res.report())
    assert reports[0] == reports[1]


def test_run_until_reports_stops_and_budgets():
    m = machine(mesh="2x2")
    prog = [E("movi", rd=1, imm=5), E("addi", rd=1, rs1=1, imm=-1),
            E("bne", rs1=1, rs2=0, off=-1), E("halt")]
    emu = Emulator(make_obj(m, {0: prog, 1: prog}))
    emu.set_stop(0, 3)                     # the halts
    emu.set_stop(1, 3)
    assert emu.run_until(2) == (K.R_BUDGET, 2, -1)
    reason, executed, node = emu.run_until()
    assert (reason, node) == (K.R_STOP, 0) and emu.pc(0) == 3
    assert emu.run_until(only=(1, 0))[0] == K.R_STOP      # node 1 reaches its halt too
    reason, executed, node = emu.run_until()  # both resume over their flagged halts
    assert (reason, node) == (K.R_IDLE, -1) and emu.node_states()[:2] == ["halted"] * 2


def test_threads_must_be_positive():
    with pytest.raises(D1Error, match="threads must be >= 1"):
        Emulator(make_obj(machine(), {0: [E("halt")]}), threads=0)


def test_integer_arguments_are_checked_when_the_emulator_is_made():
    """The command line's bounds hold for the Python API too: 2^63 cycles used to be an
    OverflowError at run time, and threads=10**20 counted that far in _partition (a hang);
    more threads than nodes are capped to the nodes."""
    obj = make_obj(machine(), {0: [E("halt")]})
    for kw, says in [({"max_cycles": 1 << 63}, "max_cycles must be in 0 .. "),
                     ({"quantum": 1 << 63}, "quantum must be in 1 .. "),
                     ({"threads": "2"}, "threads must be an integer, not str"),
                     ({"max_cycles": None}, "max_cycles must be an integer, not NoneType"),
                     ({"quantum": True}, "quantum must be an integer, not bool")]:
        with pytest.raises(D1Error, match=says):
            Emulator(obj, **kw)
    for kw in ({"trace": "full", "trace_events": 10 ** 12},     # was a 44 TiB MemoryError
               {"trace": "regions", "trace_messages": -5}):
        with pytest.raises(D1Error, match=r"trace_\w+ must be in 1 .. 67,108,864"):
            Emulator(obj, **kw)
    emu = Emulator(obj, threads=10**20)
    assert emu.threads == emu.n
    assert len(emu._partition(emu.threads)) <= emu.n


def test_methods_check_their_integer_arguments():
    """Counts beyond int64 were an OverflowError from the run loop's controls, a node id past
    the mesh an IndexError, a textual seed a ValueError; an instruction budget past int64 is
    no limit."""
    from emulator.debugger import Debugger

    obj = make_obj(machine(), {0: [E("addi", rd=1, rs1=1, imm=1), E("halt")]})
    with pytest.raises(D1Error, match="node id 99 is out of range"):
        Emulator(obj).where(99)
    with pytest.raises(D1Error, match="seed must be an integer, not str"):
        Emulator(obj, seed="x")
    with pytest.raises(D1Error, match="step count must be an integer, not tuple"):
        Emulator(obj).step((1, 2))
    with pytest.raises(D1Error, match=r"Debugger\(inputs=...\) takes a mapping"):
        Debugger(obj, inputs=[1])
    emu = Emulator(obj)
    assert emu.step(1 << 70, node=0).status == "halted"
    emu = Emulator(obj)
    emu.run_until(budget=1 << 70)
    assert emu.node_states()[0] == "halted" and emu.regs(0)[1] == 1


def test_fuzzed_words_never_crash():
    rng = np.random.default_rng(1234)
    m = machine(mesh="2x2", sram_bytes=1024, max_message_bytes=256)
    valid = [E("addi", rd=1, rs1=1, imm=1), E("send", dir=1, rs1=1), E("recv", rd=1, dir=3)]
    for trial in range(40):
        progs = {}
        for node in range(4):
            words = rng.integers(0, 2 ** 63, size=12, dtype=np.int64).astype(np.uint64)
            words[::3] = words[::3] & np.uint64(0x00FF_FFFF_FFFF_FFFF)   # some low opcodes
            words[::4] = np.uint64(valid[trial % 3])
            ops = rng.integers(0, 0xA8, size=12).astype(np.uint64) << np.uint64(56)
            words[1::2] = (words[1::2] & np.uint64((1 << 56) - 1)) | ops[1::2]
            progs[node] = [int(w) for w in words]
        emu = Emulator(make_obj(m, progs), max_cycles=20_000, quantum=1 + trial % 5)
        res = emu.run()
        assert res.status in ("halted", "trapped", "deadlock", "stuck")
        assert all(s in ("halted", "trapped", "blocked on send", "blocked on receive")
                   for s in emu.node_states())
        assert int(emu.state_dict()["clock"].max()) <= 20_000 + 100_000


def test_kernel_constants_come_from_the_isa_table():
    from d1isa.isa import OP
    from emulator import opcodes
    assert (opcodes.ADDI == OP["addi"] and opcodes.MMAK_BF16 == OP["mmak.bf16"]
            and opcodes.RELAYB == OP["relayb"])
    assert opcodes.FLOPS_VFMA == 32


def _spelled_opcode_sets(path):
    """(line, names) of each tuple, list or set literal in `path` made only of mnemonics."""
    import ast

    from d1isa.isa import OP
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1:
            names = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(names) == len(node.elts) and all(n in OP for n in names):
                found.append((node.lineno, names))
        if isinstance(node, ast.Constant) and node.value == "NESW":
            found.append((node.lineno, ["NESW"]))
    return found


def test_the_loop_and_its_helpers_spell_no_opcode_sets():
    # Opcode sets, widths and directions come from the ISA table (d1isa.isa.opcodes_where and
    # the derived tuples, d1isa.machine.DIRECTIONS); single opcodes may be named.
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "emulator"
    files = [root / f for f in ("kernel.py", "opcodes.py", "constants.py", "decode.py",
                                "state.py", "trace_hooks.py")]
    files += sorted((root / "semantics").glob("*.py")) + sorted((root / "jit").glob("*.py"))
    assert {f: _spelled_opcode_sets(f) for f in files} == {f: [] for f in files}
    assert _spelled_opcode_sets_example() == [(1, ["vadd", "vsub"])]


def _spelled_opcode_sets_example():
    # the check itself finds a spelled set (so the test above can fail)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "m.py"
        f.write_text('OPS = ("vadd", "vsub")\n')
        return _spelled_opcode_sets(f)


def test_reset_returns_to_the_loaded_state():
    m = machine()
    emu = Emulator(make_obj(m, {0: [E("movi", rd=1, imm=3), E("st64", rs1=0, rs2=1, imm=64),
                                    E("halt")]}, data=[(0, 8, b"\x07")]), seed=4)
    before = emu.state_dict()
    emu.run()
    emu.reset()
    assert_same_state(before, emu.state_dict())
    assert emu.sram(0, 8, 1).tolist() == [7] and emu.node_states()[1] == "halted"
