"""The reference interpreter against hand-computed values: one idea per test.

Programs are built word by word with d1isa.isa.encode and run on small meshes (SRAM shrunk to 4 KiB
so the runs stay fast). Expected values are worked out by hand from docs/ISA.md and docs/TIMING.md,
with the arithmetic written next to them.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from progkit import EAST, MASK64, SRAM, F, N, S, W, li, machine, make_obj, vec  # noqa: F401

from d1isa import traps
from d1isa.isa import encode as E
from d1isa.machine import OPPOSITE, TIMING_CLASSES, load_machine
from d1isa.objfile import CodeBlock, ObjectFile
from emulator.reference import (
    BLOCKED_RECV,
    BLOCKED_SEND,
    HALTED,
    RUNNING,
    TRAPPED,
    ReferenceEmulator,
    compare_states,
    splitmix64,
)

INT64_MIN = -(1 << 63)
QNAN = 0x7FC0_0000


# ---- helpers ----------------------------------------------------------------------------------





def run(programs: dict[int, list[int]], m=None, data=(), **kw) -> tuple[ReferenceEmulator, dict]:
    emu = ReferenceEmulator(make_obj(m or machine(), programs, data), **kw)
    emu.status_after_run = emu.run()
    return emu, emu.state_dict()


def run1(words: list[int], data=(), m=None, **kw) -> dict:
    """Run a program on node 0 alone; its state dict."""
    return run({0: words}, m=m, data=data, **kw)[1]








def vec_op(word: int, *inputs: list[int], seed: int = 0, prologue=()) -> list[int]:
    """Load inputs into v1, v2, v3 (SRAM 0, 64, 128), run `word` (writing v10), return v10."""
    data = [(0, 64 * k, vec(lanes)) for k, lanes in enumerate(inputs)]
    loads = [E("vld", rd=k + 1, rs1=0, imm=64 * k) for k in range(len(inputs))]
    st = run1(list(prologue) + loads + [word, E("halt")], data=data, seed=seed)
    assert st["state"][0] == HALTED
    return [int(u) for u in st["v"][0, 10]]


def vv(mnemonic: str, a: list[int], b: list[int], c: list[int] | None = None) -> list[int]:
    if c is None:
        return vec_op(E(mnemonic, rd=10, rs1=1, rs2=2), a, b)
    return vec_op(E(mnemonic, rd=10, rs1=1, rs2=2, rs3=3), a, b, c)


def v1(mnemonic: str, a: list[int]) -> list[int]:
    return vec_op(E(mnemonic, rd=10, rs1=1), a)


def scalar(mnemonic: str, a: int, b: int) -> int:
    st = run1(li(1, a) + li(2, b) + [E(mnemonic, rd=3, rs1=1, rs2=2), E("halt")])
    return int(st["x"][0, 3])


def scalar_imm(mnemonic: str, a: int, imm: int, field: str = "imm") -> int:
    st = run1(li(1, a) + [E(mnemonic, rd=3, rs1=1, **{field: imm}), E("halt")])
    return int(st["x"][0, 3])


def splitmix_stream(state: int, n: int) -> list[int]:
    """SplitMix64 written out again from docs/ISA.md, independently of the module's copy."""
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out


def cls(name: str) -> int:
    return TIMING_CLASSES.index(name)


# ---- scalar -----------------------------------------------------------------------------------

def test_add_sub_wrap_to_64_bits():
    assert scalar("add", (1 << 63) - 1, 1) == INT64_MIN
    assert scalar("sub", 0, 1) == -1
    assert scalar("sub", INT64_MIN, 1) == (1 << 63) - 1


def test_bitwise_ops():
    a, b = 0xFF00_FF00_1234_5678, 0x0F0F_0F0F_FFFF_0000
    assert scalar("and", a, b) & MASK64 == 0x0F00_0F00_1234_0000
    assert scalar("or", a, b) & MASK64 == 0xFF0F_FF0F_FFFF_5678
    assert scalar("xor", a, b) & MASK64 == 0xF00F_F00F_EDCB_5678


def test_shifts_use_low_six_bits_of_amount():
    assert scalar("sll", 1, 65) == 2                 # 65 & 63 = 1
    assert scalar("sll", 1, -1) == INT64_MIN         # -1 & 63 = 63
    assert scalar("srl", -1, 60) == 0xF              # logical
    assert scalar("sra", -16, 2) == -4               # arithmetic
    assert scalar("sra", -16, 64 + 2) == -4


def test_comparisons_signed_and_unsigned():
    assert scalar("slt", -1, 1) == 1
    assert scalar("sltu", -1, 1) == 0                # 2^64 - 1 is not < 1
    assert scalar("seq", 7, 7) == 1
    assert scalar("seq", 7, -7) == 0


def test_mul_keeps_low_64_bits():
    assert scalar("mul", 1 << 32, 1 << 32) == 0
    assert scalar("mul", -3, 5) == -15
    assert scalar("mul", (1 << 63) - 1, 3) == (1 << 63) - 3   # (2^63 - 1) * 3 mod 2^64


@pytest.mark.parametrize("op,a,b,want", [
    ("div", -7, 2, -3), ("div", 7, -2, -3), ("div", -7, -2, 3), ("div", 5, 0, -1),
    ("div", INT64_MIN, -1, INT64_MIN),
    ("divu", -1, 2, (1 << 63) - 1), ("divu", 5, 0, -1),
    ("rem", -7, 2, -1), ("rem", 7, -2, 1), ("rem", 5, 0, 5), ("rem", INT64_MIN, -1, 0),
    ("remu", -1, 10, 5), ("remu", -9, 0, -9),       # 18446744073709551615 mod 10 = 5
])
def test_division_table(op, a, b, want):
    assert scalar(op, a, b) == want


def test_immediates_are_sign_extended():
    assert scalar_imm("addi", 10, -11) == -1
    assert scalar_imm("andi", -1, -256) == -256
    assert scalar_imm("ori", 0, -2) == -2
    assert scalar_imm("xori", 0x5, -1) == ~0x5
    assert scalar_imm("slti", -5, -4) == 1
    assert scalar_imm("sltiu", 5, -1) == 1           # 5 < 2^64 - 1
    assert scalar_imm("muli", 7, -3) == -21


def test_immediate_shifts():
    assert scalar_imm("slli", 3, 62, "shamt") == INT64_MIN + (1 << 62)   # 3 << 62 wraps
    assert scalar_imm("srli", INT64_MIN, 63, "shamt") == 1
    assert scalar_imm("srai", INT64_MIN, 63, "shamt") == -1


def test_movi_movhi_build_constants():
    st = run1([E("movi", rd=1, imm=0x1234_5678), E("movhi", rd=1, uimm=0x9ABC_DEF0),
               E("movi", rd=2, imm=-1), E("movi", rd=3, imm=-2), E("movhi", rd=3, uimm=0),
               E("halt")])
    assert int(st["x"][0, 1]) & MASK64 == 0x9ABC_DEF0_1234_5678
    assert st["x"][0, 2] == -1
    assert st["x"][0, 3] == 0xFFFF_FFFE                 # movhi replaced the high half with 0


def test_r0_is_hard_zero():
    st = run1([E("addi", rd=0, rs1=0, imm=5), E("movhi", rd=0, uimm=7),
               E("add", rd=1, rs1=0, rs2=0), E("addi", rd=2, rs1=0, imm=3), E("halt")])
    assert st["x"][0, 0] == 0
    assert st["x"][0, 1] == 0
    assert st["x"][0, 2] == 3


# ---- memory -----------------------------------------------------------------------------------

def test_loads_extend_and_stores_are_little_endian():
    st = run1(li(1, 0x8877_6655_4433_2211) + [
        E("st64", rs1=0, rs2=1, imm=16),
        E("ld8", rd=2, rs1=0, imm=23), E("ld8u", rd=3, rs1=0, imm=23),
        E("ld16", rd=4, rs1=0, imm=22), E("ld16u", rd=5, rs1=0, imm=22),
        E("ld32", rd=6, rs1=0, imm=20), E("ld32u", rd=7, rs1=0, imm=20),
        E("ld64", rd=8, rs1=0, imm=16),
        E("st8", rs1=0, rs2=1, imm=32), E("st16", rs1=0, rs2=1, imm=34),
        E("st32", rs1=0, rs2=1, imm=36), E("halt")])
    x = [int(v) for v in st["x"][0]]
    assert x[2] == 0x88 - 256 and x[3] == 0x88
    assert x[4] == 0x8877 - 65536 and x[5] == 0x8877
    assert x[6] == 0x8877_6655 - (1 << 32) and x[7] == 0x8877_6655
    assert x[8] & MASK64 == 0x8877_6655_4433_2211
    assert bytes(st["sram"][0, 16:24]) == bytes.fromhex("1122334455667788")
    assert bytes(st["sram"][0, 32:40]) == bytes.fromhex("1100112211223344")


def test_address_is_base_plus_signed_offset():
    st = run1([E("movi", rd=1, imm=100), E("movi", rd=2, imm=77),
               E("st8", rs1=1, rs2=2, imm=-4), E("ld8u", rd=3, rs1=0, imm=96), E("halt")])
    assert st["x"][0, 3] == 77


@pytest.mark.parametrize("word,cause", [
    (E("ld64", rd=1, rs1=0, imm=SRAM - 4), traps.SRAM_OUT_OF_RANGE),
    (E("ld64", rd=1, rs1=0, imm=4), traps.MISALIGNED),
    (E("ld64", rd=1, rs1=0, imm=SRAM - 3), traps.SRAM_OUT_OF_RANGE),   # range checked first
    (E("ld8", rd=1, rs1=0, imm=-1), traps.SRAM_OUT_OF_RANGE),
    (E("ld16u", rd=1, rs1=0, imm=1), traps.MISALIGNED),
    (E("st32", rs1=0, rs2=0, imm=SRAM), traps.SRAM_OUT_OF_RANGE),
    (E("st16", rs1=0, rs2=0, imm=3), traps.MISALIGNED),
])
def test_memory_traps(word, cause):
    st = run1([E("nop"), word, E("halt")])
    assert st["state"][0] == TRAPPED
    assert st["cause"][0] == cause
    assert st["pc"][0] == 1


def test_trapping_store_changes_nothing():
    st = run1([E("movi", rd=1, imm=-1), E("st64", rs1=0, rs2=1, imm=SRAM - 4)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE
    assert not st["sram"][0].any()
    assert st["clock"][0] == 1                           # only the movi was paid for
    assert st["stats"]["count"][0].sum() == 1
    assert st["stats"]["sram_hwm"][0] == 0


# ---- control ----------------------------------------------------------------------------------

def test_loop_sums_one_to_ten():
    # r1 = 10; r2 = 0; loop: r2 += r1; r1 -= 1; bne r1, r0, loop
    st = run1([E("movi", rd=1, imm=10), E("movi", rd=2, imm=0),
               E("add", rd=2, rs1=2, rs2=1), E("addi", rd=1, rs1=1, imm=-1),
               E("bne", rs1=1, rs2=0, off=-2), E("halt")])
    assert st["x"][0, 2] == 55
    assert st["pc"][0] == 5
    assert st["stats"]["count"][0, cls("branch")] == 10


@pytest.mark.parametrize("op,a,b,taken", [
    ("beq", 3, 3, True), ("beq", 3, 4, False), ("bne", 3, 4, True),
    ("blt", -1, 0, True), ("bge", -1, 0, False), ("bge", 0, 0, True),
    ("bltu", -1, 0, False), ("bgeu", -1, 0, True),
])
def test_branch_conditions(op, a, b, taken):
    st = run1(li(1, a) + li(2, b) + [E(op, rs1=1, rs2=2, off=3), E("movi", rd=3, imm=1),
                                     E("halt"), E("movi", rd=3, imm=2), E("halt")])
    assert st["x"][0, 3] == (2 if taken else 1)


def test_jal_and_jalr_link():
    # 0: jal ra, +3 -> 3: jalr r5, ra, +1 (target computed before ra... r5 written)
    st = run1([E("jal", rd=31, off=3), E("halt"), E("halt"),
               E("jalr", rd=31, rs1=31, imm=1), E("halt")])
    # jal at 0 links ra = 1 and jumps to 3; jalr at 3 jumps to ra + 1 = 2 and links ra = 4
    assert st["pc"][0] == 2
    assert st["x"][0, 31] == 4


def test_falling_off_the_end_traps_with_pc_past_the_code():
    st = run1([E("nop"), E("nop")])
    assert st["cause"][0] == traps.PC_OUT_OF_RANGE
    assert st["pc"][0] == 2
    assert st["clock"][0] == 2


def test_jump_before_the_code_traps():
    st = run1([E("nop"), E("jal", rd=1, off=-5)])
    assert st["cause"][0] == traps.PC_OUT_OF_RANGE
    assert st["pc"][0] == -4
    assert st["x"][0, 1] == 2                        # the jal itself completed


# ---- system -----------------------------------------------------------------------------------

def test_geometry_queries_on_harvested_mesh():
    m = machine("h6x5")
    nid = m.node_id(3, 1)                            # row 1 skips the dead (2, 1): id 8
    assert nid == 8
    words = [E("getx", rd=1), E("gety", rd=2), E("getid", rd=3), E("getw", rd=4),
             E("geth", rd=5), E("getn", rd=6), E("halt")]
    _, st = run({nid: words}, m=m)
    assert [int(v) for v in st["x"][nid, 1:7]] == [3, 1, 8, 6, 5, 28]


def test_rdcycle_reads_the_clock_before_the_instruction():
    st = run1([E("mul", rd=1, rs1=0, rs2=0), E("nop"), E("rdcycle", rd=2), E("rdcycle", rd=3),
               E("halt")])
    assert st["x"][0, 2] == 4                        # mul 3 + nop 1
    assert st["x"][0, 3] == 5                        # + rdcycle (sys) 1
    assert st["clock"][0] == 7


def test_halt_is_counted_and_pc_stays_on_it():
    st = run1([E("nop"), E("halt"), E("nop")])
    assert st["state"][0] == HALTED
    assert st["pc"][0] == 1
    assert st["clock"][0] == 2
    assert st["stats"]["count"][0, cls("sys")] == 1


def test_nodes_without_code_are_halted_from_the_start():
    m = machine()
    obj = ObjectFile(m, [CodeBlock(np.array([E("halt")], dtype=np.uint64)),
                         CodeBlock(np.zeros(0, dtype=np.uint64))], np.array([0, 1, -1, -1]))
    emu = ReferenceEmulator(obj)
    assert emu.run() == "halted"
    st = emu.state_dict()
    assert list(st["state"]) == [HALTED] * 4
    assert list(st["clock"]) == [1, 0, 0, 0]
    assert list(st["pc"]) == [0, 0, 0, 0]


def test_initial_generator_state_and_srseed():
    golden = 0x9E3779B97F4A7C15
    m = machine()
    _, st = run({0: [E("halt")]}, m=m, seed=3)
    assert [int(s) for s in st["sr_state"]] == [(3 * golden + i + 1) & MASK64 for i in range(4)]
    st = run1(li(1, 0xDEAD_BEEF_0000_0001) + [E("srseed", rs1=1), E("halt")])
    assert int(st["sr_state"][0]) == 0xDEAD_BEEF_0000_0001
    st = run1(li(1, 99) + [E("srseed", rs1=1), E("srseed", rs1=0), E("halt")], seed=5)
    assert int(st["sr_state"][0]) == (5 * golden + 1) & MASK64     # zero restores the default


def test_splitmix64_known_answer():
    # The published SplitMix64 stream from state 0 begins 0xe220a8397b1dcdaf.
    assert splitmix64(0) == (0x9E3779B97F4A7C15, 0xE220A8397B1DCDAF)


# ---- traps ------------------------------------------------------------------------------------

@pytest.mark.parametrize("word", [
    0xFF << 56,                                      # reserved opcode
    E("add", rd=1, rs1=2, rs2=3) | 1,                # reserved bit set
    E("add", rd=40, rs1=1, rs2=2),                   # r40 on a 32-register machine
    E("vadd", rd=1, rs1=33, rs2=2),                  # v33
    E("acc.zero", rd=8),                             # a8 with 8 accumulators
    E("mma.bf16", rd=9, rs1=0, rs2=0, sa=16, sb=16),
    E("st64", rs1=0, rs2=32, imm=0),
])
def test_illegal_instruction(word):
    st = run1([E("nop"), word, E("halt")])
    assert st["cause"][0] == traps.ILLEGAL_INSTRUCTION
    assert st["pc"][0] == 1
    assert st["clock"][0] == 1


def test_register_count_comes_from_the_machine():
    st = run1([E("addi", rd=20, rs1=0, imm=1), E("halt")], m=machine(scalar_regs=16))
    assert st["cause"][0] == traps.ILLEGAL_INSTRUCTION
    st = run1([E("addi", rd=15, rs1=0, imm=1), E("halt")], m=machine(scalar_regs=16))
    assert st["x"].shape == (4, 16) and st["x"][0, 15] == 1


def test_user_trap_reports_its_code_and_costs_nothing():
    emu, st = run({0: [E("nop"), E("trap", uimm=0xFFFF_FFFF)], 1: [E("halt")]})
    assert emu.status_after_run == "trapped"
    assert st["state"][0] == TRAPPED and st["cause"][0] == traps.USER_TRAP
    assert st["trap_arg"][0] == 0xFFFF_FFFF
    assert st["pc"][0] == 1 and st["clock"][0] == 1
    assert st["stats"]["count"][0, cls("sys")] == 0
    assert st["state"][1] == HALTED and st["trap_arg"][1] == 0


def test_cycle_limit():
    st = run1([E("jal", rd=0, off=0)], max_cycles=100)
    # Each jal costs 1; the node traps before the instruction that would start at clock 101.
    assert st["cause"][0] == traps.CYCLE_LIMIT
    assert st["clock"][0] == 101
    assert st["stats"]["count"][0, cls("branch")] == 101
    assert st["pc"][0] == 0


def test_cycle_limit_not_reached_exactly_at_the_limit():
    st = run1([E("nop")] * 10 + [E("halt")], max_cycles=10)
    assert st["state"][0] == HALTED and st["clock"][0] == 11


def test_no_neighbour():
    st = run1([E("send", rs1=0, dir=W)])                 # node 0 is at the west edge
    assert st["cause"][0] == traps.NO_NEIGHBOUR
    st = run1([E("recv", rd=1, dir=N)])
    assert st["cause"][0] == traps.NO_NEIGHBOUR
    st = run1([E("relay", dir=EAST, dir2=N)])
    assert st["cause"][0] == traps.NO_NEIGHBOUR


@pytest.mark.parametrize("length", [0, -1, 4097])
def test_bad_message_length(length):
    st = run1(li(2, length) + [E("sendb", rs1=0, rs2=2, dir=EAST)])
    assert st["cause"][0] == traps.BAD_MESSAGE_LENGTH
    assert st["link_pushed"].sum() == 0


def test_sendb_range_trap():
    st = run1([E("movi", rd=1, imm=SRAM - 8), E("movi", rd=2, imm=9),
               E("sendb", rs1=1, rs2=2, dir=EAST)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE


def test_length_mismatch_leaves_the_message():
    emu, st = run({0: [E("movi", rd=1, imm=42), E("send", rs1=1, dir=EAST), E("halt")],
                   1: [E("vrecv", rd=1, dir=W)]})
    assert st["cause"][1] == traps.MESSAGE_LENGTH_MISMATCH
    assert st["pc"][1] == 0 and st["clock"][1] == 0
    # send at clock 1: arrives 1 + latency 1 + ceil(8 / 64) = 3
    assert st["fifos"][1 * 4 + W] == [(8, 3, (42).to_bytes(8, "little"))]


def test_recvb_length_mismatch_and_range():
    m = machine()
    prog0 = [E("movi", rd=2, imm=16), E("sendb", rs1=0, rs2=2, dir=EAST), E("halt")]
    _, st = run({0: prog0, 1: [E("movi", rd=2, imm=15), E("recvb", rs1=0, rs2=2, dir=W)]}, m=m)
    assert st["cause"][1] == traps.MESSAGE_LENGTH_MISMATCH
    _, st = run({0: prog0, 1: [E("movi", rd=1, imm=SRAM - 8), E("movi", rd=2, imm=16),
                               E("recvb", rs1=1, rs2=2, dir=W)]}, m=m)
    assert st["cause"][1] == traps.SRAM_OUT_OF_RANGE
    assert len(st["fifos"][1 * 4 + W]) == 1


# ---- vector: loads and stores -----------------------------------------------------------------

def test_vld_vst_move_raw_bits():
    lanes = [0x7F80_0001, 0xFFC0_1234] + list(range(14))
    st = run1([E("vld", rd=1, rs1=0, imm=0), E("vst", rs2=1, rs1=0, imm=128), E("halt")],
              data=[(0, 0, vec(lanes))])
    assert [int(u) for u in st["v"][0, 1]] == lanes
    assert bytes(st["sram"][0, 128:192]) == vec(lanes)


def test_vector_alignment():
    st = run1([E("vld", rd=1, rs1=0, imm=2)])
    assert st["cause"][0] == traps.MISALIGNED
    st = run1([E("vld", rd=1, rs1=0, imm=SRAM - 60)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE
    st = run1([E("vldw.bf16", rd=1, rs1=0, imm=1)])
    assert st["cause"][0] == traps.MISALIGNED
    st = run1([E("vldw.bf16", rd=1, rs1=0, imm=2), E("halt")])
    assert st["state"][0] == HALTED


def test_vldw_widens_and_vstn_narrows():
    halves = [0x3F80, 0x4000, 0xC040, 0x7F81] + [0] * 12
    data = struct.pack("<16H", *halves)
    st = run1([E("vldw.bf16", rd=1, rs1=0, imm=2), E("vstn.bf16", rs2=1, rs1=0, imm=100),
               E("halt")], data=[(0, 2, data)])
    assert [int(u) for u in st["v"][0, 1][:4]] == [0x3F80_0000, 0x4000_0000, 0xC040_0000,
                                                   0x7F81_0000]   # widening is a bit move
    # narrowing a NaN gives 0x7fc0; exact bf16 values narrow to themselves
    assert struct.unpack("<4H", bytes(st["sram"][0, 100:108])) == (0x3F80, 0x4000, 0xC040,
                                                                   0x7FC0)


def test_strided_loads_and_stores():
    words = list(range(1, 33))
    data = [(0, 0, struct.pack("<32I", *words))]
    st = run1([E("movi", rd=2, imm=8), E("vlds", rd=1, rs1=0, rs2=2, imm=4),
               E("movi", rd=3, imm=-4), E("movi", rd=4, imm=1000),
               E("vsts", rs2=1, rs1=4, rs3=3, imm=0), E("halt")], data=data)
    # lane i = word at 4 + 8i = words[1 + 2i] = 2 + 2i
    assert [int(u) for u in st["v"][0, 1]] == [2 + 2 * i for i in range(16)]
    # stride -4 stores lane i at 1000 - 4i: the lanes appear reversed from 940
    stored = struct.unpack("<16I", bytes(st["sram"][0, 940:1004]))
    assert list(stored) == [2 + 2 * (15 - k) for k in range(16)]
    assert st["stats"]["sram_hwm"][0] == 1004


def test_strided_bf16_forms():
    halves = [0x3F80 + i for i in range(64)]
    data = [(0, 0, struct.pack("<64H", *halves))]
    st = run1([E("movi", rd=2, imm=6), E("vldsw.bf16", rd=1, rs1=0, rs2=2, imm=0),
               E("movi", rd=3, imm=2), E("movi", rd=4, imm=512),
               E("vstsn.bf16", rs2=1, rs1=4, rs3=3, imm=0), E("halt")], data=data)
    assert [int(u) for u in st["v"][0, 1]] == [(0x3F80 + 3 * i) << 16 for i in range(16)]
    assert list(struct.unpack("<16H", bytes(st["sram"][0, 512:544]))) == [
        0x3F80 + 3 * i for i in range(16)]


def test_strided_overlapping_store_last_lane_wins():
    st = run1([E("viota", rd=1), E("movi", rd=4, imm=64),
               E("vsts", rs2=1, rs1=4, rs3=0, imm=0), E("halt")])     # stride 0
    assert struct.unpack("<I", bytes(st["sram"][0, 64:68]))[0] == F(15.0)


def test_strided_range_is_checked_before_alignment_over_all_lanes():
    # lane 0 misaligned (base 2), lane 1 out of range (stride 4096): out of range wins
    st = run1([E("movi", rd=2, imm=SRAM), E("vlds", rd=1, rs1=0, rs2=2, imm=2)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE
    st = run1([E("movi", rd=2, imm=2), E("vlds", rd=1, rs1=0, rs2=2, imm=0)])
    assert st["cause"][0] == traps.MISALIGNED            # lane 1 at address 2


# ---- vector: arithmetic -----------------------------------------------------------------------

def test_vadd_specials_and_subnormals():
    a = [F(1.0), F(float("inf")), 0x7F80_0001, 0x0000_0001, F(-0.0), F(3e38)]
    b = [F(2.0), F(float("-inf")), F(1.0), 0x0000_0001, F(-0.0), F(3e38)]
    assert vv("vadd", a, b)[:6] == [F(3.0), QNAN, QNAN, 0x0000_0002, 0x8000_0000, 0x7F80_0000]


def test_vsub_vmul():
    assert vv("vsub", [F(1.0), F(0.0)], [F(0.25), F(0.0)])[:2] == [F(0.75), 0]
    # min normal * 0.5 is the subnormal 2^-127 (no flush to zero); inf * 0 is NaN
    out = vv("vmul", [0x0080_0000, F(float("inf")), F(-2.0)], [F(0.5), F(0.0), F(3.0)])
    assert out[:3] == [0x0040_0000, QNAN, F(-6.0)]


def test_vdiv_ieee():
    out = vv("vdiv", [F(1.0), F(-1.0), F(0.0), F(1.0)], [F(0.0), F(0.0), F(0.0), F(3.0)])
    assert out[:4] == [0x7F80_0000, 0xFF80_0000, QNAN, 0x3EAA_AAAB]


def test_vmax_vmin_zeros_and_nans():
    a = [F(-0.0), F(0.0), F(1.0), 0x7F80_0001, F(5.0)]
    b = [F(0.0), F(-0.0), F(2.0), F(1.0), 0xFFC0_0000]
    assert vv("vmax", a, b)[:5] == [0, 0, F(2.0), QNAN, QNAN]
    assert vv("vmin", a, b)[:5] == [0x8000_0000, 0x8000_0000, F(1.0), QNAN, QNAN]


def test_vfma_rounds_twice():
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 rounds (tie to even) to 1 + 2^-11; minus 1 gives 2^-11.
    # A fused multiply-add would give 2^-11 + 2^-24.
    x = F(1.0 + 2.0 ** -12)
    out = vv("vfma", [x, F(2.0)], [x, F(3.0)], [F(-1.0), F(1.0)])
    assert out[:2] == [F(2.0 ** -11), F(7.0)]


def test_comparisons():
    a = [F(1.0), F(2.0), F(-0.0), 0x7FC0_0000, F(1.0)]
    b = [F(2.0), F(2.0), F(0.0), 0x7FC0_0000, 0x7F80_0001]
    t = 0xFFFF_FFFF
    assert vv("vcmplt", a, b)[:5] == [t, 0, 0, 0, 0]
    assert vv("vcmple", a, b)[:5] == [t, t, t, 0, 0]
    assert vv("vcmpeq", a, b)[:5] == [0, t, t, 0, 0]


def test_vsel_and_bitwise_move_bits():
    mask = [0xFFFF_FFFF, 0, 1, 0x8000_0000]
    a = [0x7F80_0001, 0x7F80_0002, 0x7F80_0003, 0x7F80_0004]
    b = [1, 2, 3, 4]
    assert vv("vsel", mask, a, b)[:4] == [0x7F80_0001, 2, 0x7F80_0003, 0x7F80_0004]
    assert vv("vand", a, [0xFFFF_FFFF] * 4)[:4] == a
    assert vv("vor", [0x7F80_0000], [0x0000_0001])[0] == 0x7F80_0001
    assert vv("vxor", [0x7FC0_0000], [0x8000_0001])[0] == 0xFFC0_0001


def test_vmov_vneg_vabs_move_bits():
    a = [0x7F80_0001, F(1.0), 0xFFC0_0001, 0]
    assert v1("vmov", a)[:4] == a
    assert v1("vneg", a)[:4] == [0xFF80_0001, F(-1.0), 0x7FC0_0001, 0x8000_0000]
    assert v1("vabs", a)[:4] == [0x7F80_0001, F(1.0), 0x7FC0_0001, 0]


def test_vsqrt_vrcp():
    out = v1("vsqrt", [F(4.0), F(-1.0), F(-0.0), F(2.0), 0x7F80_0000])
    assert out[:5] == [F(2.0), QNAN, 0x8000_0000, 0x3FB5_04F3, 0x7F80_0000]
    out = v1("vrcp", [F(3.0), F(0.0), F(-0.0), F(4.0)])
    assert out[:4] == [0x3EAA_AAAB, 0x7F80_0000, 0xFF80_0000, F(0.25)]


def test_transcendentals_in_fp64():
    out = v1("vexp", [F(0.0), F(1.0), F(100.0), F(1000.0), F(-1000.0), QNAN])
    assert out[:6] == [F(1.0), 0x402D_F854, 0x7F80_0000, 0x7F80_0000, 0, QNAN]
    out = v1("vtanh", [F(0.0), F(-0.0), F(20.0), F(-20.0), 0x7F80_0001])
    assert out[:5] == [0, 0x8000_0000, F(1.0), F(-1.0), QNAN]
    out = v1("vsigmoid", [F(0.0), F(-1000.0), F(1000.0), F(float("-inf"))])
    assert out[:4] == [F(0.5), 0, F(1.0), 0]


def test_erf_gelu_pow_in_fp64():
    out = v1("verf", [F(0.0), F(-0.0), F(1.0), F(10.0), 0xFF80_0000, QNAN])
    assert out[:6] == [0, 0x8000_0000, F(float(np.float32(math.erf(1.0)))), F(1.0), F(-1.0),
                       QNAN]
    gelu1 = 0.5 * math.erfc(-1 / math.sqrt(2))
    out = v1("vgelu", [F(0.0), F(1.0), F(-30.0), 0x7F80_0000, 0xFF80_0000, F(3e38)])
    assert out[:6] == [0, F(float(np.float32(gelu1))), 0x8000_0000, 0x7F80_0000, QNAN,
                       F(3e38)]
    out = vv("vpow", [F(2.0), F(-8.0), 0, 0x8000_0000, 0x8000_0000, F(-10.0), F(-10.0), QNAN,
                      F(1.0), F(10.0)],
             [F(10.0), F(1 / 3), F(-1.0), F(-1.0), F(-2.0), F(309.0), F(310.0), 0, QNAN,
              F(100.0)])
    assert out[:10] == [F(1024.0), QNAN, 0x7F80_0000, 0xFF80_0000, 0x7F80_0000, 0xFF80_0000,
                        0x7F80_0000, F(1.0), F(1.0), 0x7F80_0000]


def test_vcvt_bf16_round_to_nearest_even():
    a = [0x3F80_8000,   # tie, upper half even: stays 0x3f80
         0x3F81_8000,   # tie, upper half odd: rounds up to 0x3f82
         0x3F80_8001,   # above the tie: up
         0x3F80_7FFF,   # below the tie: down
         0x7F7F_FFFF,   # largest float rounds to inf
         0x7F80_0001,   # NaN
         0xFF80_0001,   # negative NaN
         0xBF80_8000]   # negative tie, even: stays
    out = v1("vcvt.bf16", a)
    assert out[:8] == [0x3F80_0000, 0x3F82_0000, 0x3F81_0000, 0x3F80_0000, 0x7F80_0000,
                       QNAN, QNAN, 0xBF80_0000]


def test_stochastic_rounding_draws_one_value_per_lane():
    a = [0x3F80_0000 + 0x1111 * i for i in range(16)]
    a[3] = 0x7F80_0001                                   # a NaN lane still draws
    out = vec_op(E("vcvt.bf16.sr", rd=10, rs1=1), a, seed=7)
    r = splitmix_stream((7 * 0x9E3779B97F4A7C15 + 1) & MASK64, 16)
    want = [((u + (ri & 0xFFFF)) >> 16) << 16 for u, ri in zip(a, r, strict=True)]
    want[3] = QNAN
    assert out == want


def test_vnarrow_sr_draws_vs1_then_vs2_and_advances_the_state():
    a = [F(1.0 + i / 64) for i in range(16)]
    b = [F(-3.0 - i / 64) + 0x7777 for i in range(16)]
    st = run1([E("vld", rd=1, rs1=0, imm=0), E("vld", rd=2, rs1=0, imm=64),
               E("vnarrow.sr", rd=10, rs1=1, rs2=2), E("halt")],
              data=[(0, 0, vec(a)), (0, 64, vec(b))], seed=0)
    r = splitmix_stream(1, 32)                            # node 0, seed 0: state 1
    halves = [(u + (ri & 0xFFFF)) >> 16 for u, ri in zip(a + b, r, strict=True)]
    assert [int(u) for u in st["v"][0, 10]] == [halves[2 * k] | halves[2 * k + 1] << 16
                                                for k in range(16)]
    state = 1
    for _ in range(32):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
    assert int(st["sr_state"][0]) == state


def test_vstn_sr_stores_stochastically_rounded_halves():
    a = [0x4049_0FDB + 0x0100 * i for i in range(16)]
    st = run1([E("vld", rd=1, rs1=0, imm=0), E("vstn.bf16.sr", rs2=1, rs1=0, imm=200),
               E("halt")], data=[(0, 0, vec(a))], seed=1)
    r = splitmix_stream((0x9E3779B97F4A7C15 + 1) & MASK64, 16)
    want = [(u + (ri & 0xFFFF)) >> 16 for u, ri in zip(a, r, strict=True)]
    assert list(struct.unpack("<16H", bytes(st["sram"][0, 200:232]))) == want


def test_vwiden_and_vnarrow_lane_order():
    raw = [((2 * k + 1) << 16) | (2 * k) for k in range(16)]   # bf16 lane i holds i
    assert v1("vwiden.lo", raw) == [i << 16 for i in range(16)]
    assert v1("vwiden.hi", raw) == [(16 + i) << 16 for i in range(16)]
    a = [F(float(i)) for i in range(16)]
    b = [F(float(16 + i)) for i in range(16)]
    halves = [F(float(i)) >> 16 for i in range(32)]
    assert vv("vnarrow", a, b) == [halves[2 * k] | halves[2 * k + 1] << 16 for k in range(16)]


def test_int_float_conversions():
    ints = [16777217, 0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 3]
    assert v1("vcvt.f32.i32", ints)[:5] == [F(16777216.0), F(-1.0), F(2.0 ** 31),
                                            F(-(2.0 ** 31)), F(3.0)]
    fl = [F(3.7), F(-3.7), QNAN, F(1e10), F(-1e10), 0x7F80_0000, 0xFF80_0000, F(-0.5)]
    assert v1("vcvt.i32.f32", fl)[:8] == [3, 0xFFFF_FFFD, 0, 0x7FFF_FFFF, 0x8000_0000,
                                          0x7FFF_FFFF, 0x8000_0000, 0]


def test_broadcast_insert_extract_splat_iota():
    st = run1(li(1, 0x1_2345_6789) + [
        E("vbcast", rd=1, rs1=1), E("vbcasti", rd=2, fimm=0x7F80_0001), E("viota", rd=3),
        E("vsplat", rd=4, rs1=3, lane=5), E("vins", rd=3, rs1=1, lane=2),
        E("vbcasti", rd=5, fimm=F(-1.0)), E("vext", rd=2, rs1=5, lane=7), E("halt")])
    v = st["v"][0]
    assert list(v[1]) == [0x2345_6789] * 16
    assert list(v[2]) == [0x7F80_0001] * 16                 # an immediate is moved, not computed
    assert list(v[3]) == [F(float(i)) for i in range(2)] + [0x2345_6789] + [
        F(float(i)) for i in range(3, 16)]
    assert list(v[4]) == [F(5.0)] * 16
    assert st["x"][0, 2] == 0xBF80_0000                     # zero-extended


def test_vredsum_adds_in_lane_order():
    # 2^24 + 1 rounds back to 2^24 (tie to even) fifteen times; a tree sum would give 2^24 + 16
    st = run1([E("vld", rd=1, rs1=0, imm=0), E("vredsum", rd=1, rs1=1),
               E("vld", rd=2, rs1=0, imm=64), E("vredsum", rd=2, rs1=2),
               E("vld", rd=3, rs1=0, imm=128), E("vredsum", rd=3, rs1=3), E("halt")],
              data=[(0, 0, vec([F(2.0 ** 24)] + [F(1.0)] * 15)),
                    (0, 64, vec([0x8000_0000] * 16)),
                    (0, 128, vec([F(1.0)] * 15 + [0x7F80_0001]))])
    assert st["x"][0, 1] == F(2.0 ** 24)
    assert st["x"][0, 2] == 0x8000_0000                     # -0 + -0 + ... stays -0
    assert st["x"][0, 3] == QNAN
    assert st["stats"]["flops"][0] == 45


def test_vredmax():
    st = run1([E("vld", rd=1, rs1=0, imm=0), E("vredmax", rd=1, rs1=1),
               E("vld", rd=2, rs1=0, imm=64), E("vredmax", rd=2, rs1=2),
               E("vld", rd=3, rs1=0, imm=128), E("vredmax", rd=3, rs1=3), E("halt")],
              data=[(0, 0, vec([F(-5.0)] * 10 + [F(3.5)] + [F(-1.0)] * 5)),
                    (0, 64, vec([0x8000_0000, 0] + [0x8000_0000] * 14)),
                    (0, 128, vec([0x7F80_0001] + [F(1.0)] * 15))])
    assert [int(v) for v in st["x"][0, 1:4]] == [F(3.5), 0, QNAN]


# ---- matrix -----------------------------------------------------------------------------------

def bf16_tile(values, stride: int = 16) -> bytes:
    """8 x 8 bf16 rows at `stride` bytes apart."""
    out = bytearray(stride * 8)
    for i in range(8):
        out[i * stride:i * stride + 16] = struct.pack("<8H", *values[i])
    return bytes(out)


def f32_tile(values, stride: int = 32) -> bytes:
    out = bytearray(stride * 8)
    for i in range(8):
        out[i * stride:i * stride + 32] = struct.pack("<8I", *values[i])
    return bytes(out)


def acc_of(st, node: int, a: int) -> list[list[int]]:
    return [[int(u) for u in row] for row in st["acc"][node, a]]


def test_mma_bf16_identity_times_b_accumulates():
    ident = [[0x3F80 if i == j else 0 for j in range(8)] for i in range(8)]
    b = [[F(float(8 * k + j)) >> 16 for j in range(8)] for k in range(8)]
    st = run1([E("movi", rd=1, imm=0), E("movi", rd=2, imm=512),
               E("mma.bf16", rd=3, rs1=1, rs2=2, sa=32, sb=16),
               E("mma.bf16", rd=3, rs1=1, rs2=2, sa=32, sb=16), E("halt")],
              data=[(0, 0, bf16_tile(ident, 32)), (0, 512, bf16_tile(b))])
    assert acc_of(st, 0, 3) == [[F(2.0 * (8 * i + j)) for j in range(8)] for i in range(8)]
    assert st["stats"]["flops"][0] == 2048
    assert st["stats"]["count"][0, cls("mma_bf16")] == 2


def test_mma_bf16_rounds_after_every_addition():
    # Row 0 of A = [2^24, 1, 1, 0...], column 0 of B = ones: 2^24 + 1 -> 2^24 twice.
    a = [[0] * 8 for _ in range(8)]
    a[0][:3] = [F(2.0 ** 24) >> 16, 0x3F80, 0x3F80]
    b = [[0x3F80] + [0] * 7 for _ in range(8)]
    st = run1([E("movi", rd=2, imm=256), E("mma.bf16", rd=0, rs1=0, rs2=2, sa=16, sb=16),
               E("halt")], data=[(0, 0, bf16_tile(a)), (0, 256, bf16_tile(b))])
    assert acc_of(st, 0, 0)[0][0] == F(2.0 ** 24)


def test_mma_bf16_adds_the_exact_product():
    # 2^-100 * -2^-100 = -2^-200 exactly; +0 + (-2^-200) rounds once to -0. (Rounding the
    # product to fp32 first would give -0 and then +0 + -0 = +0.)
    a = [[0] * 8 for _ in range(8)]
    b = [[0] * 8 for _ in range(8)]
    a[0][0] = F(2.0 ** -100) >> 16
    b[0][0] = F(-(2.0 ** -100)) >> 16
    for k in range(1, 8):
        a[0][k] = 0x8000                                   # -0 * 0 products leave -0 alone
    st = run1([E("movi", rd=2, imm=256), E("mma.bf16", rd=0, rs1=0, rs2=2, sa=16, sb=16),
               E("halt")], data=[(0, 0, bf16_tile(a)), (0, 256, bf16_tile(b))])
    assert acc_of(st, 0, 0)[0][0] == 0x8000_0000


def test_mma_f32_rounds_product_then_sum():
    x = F(1.0 + 2.0 ** -12)
    a = [[0] * 8 for _ in range(8)]
    b = [[0] * 8 for _ in range(8)]
    a[0][0], b[0][0] = x, x
    init = [[F(-1.0)] * 8 for _ in range(8)]
    st = run1([E("movi", rd=2, imm=256), E("movi", rd=3, imm=1024),
               E("acc.ld", rd=1, rs1=3, sa=32),
               E("mma.f32", rd=1, rs1=0, rs2=2, sa=32, sb=32), E("halt")],
              data=[(0, 0, f32_tile(a)), (0, 256, f32_tile(b)), (0, 1024, f32_tile(init))])
    acc = acc_of(st, 0, 1)
    assert acc[0][0] == F(2.0 ** -11)
    assert acc[0][1] == F(-1.0) and acc[5][5] == F(-1.0)


def test_mma_canonicalises_nan_accumulators():
    init = [[0x7F80_0001] * 8 for _ in range(8)]
    st = run1([E("movi", rd=3, imm=1024), E("acc.ld", rd=1, rs1=3, sa=32),
               E("acc.ld", rd=2, rs1=3, sa=32),
               E("mma.bf16", rd=1, rs1=0, rs2=0, sa=16, sb=16), E("halt")],
              data=[(0, 1024, f32_tile(init))])
    assert acc_of(st, 0, 1) == [[QNAN] * 8 for _ in range(8)]
    assert acc_of(st, 0, 2) == init                       # acc.ld moves raw bits


def test_mmak_bf16_steps_along_k():
    # A is 8 x 16 bf16 (row stride 32 B): [I | 2I]. B is 16 x 8 (row stride 16 B): rows 0..7 hold
    # 8k + j, rows 8..15 hold 1. Two K steps give A @ B = (8i + j) + 2.
    a = [[0] * 16 for _ in range(8)]
    for i in range(8):
        a[i][i], a[i][8 + i] = 0x3F80, 0x4000
    b = [[F(float(8 * k + j)) >> 16 for j in range(8)] for k in range(8)] + [[0x3F80] * 8] * 8
    data = [(0, 0, b"".join(struct.pack("<16H", *row) for row in a)),
            (0, 512, b"".join(struct.pack("<8H", *row) for row in b))]
    st = run1([E("movi", rd=2, imm=512), E("movi", rd=3, imm=2),
               E("mmak.bf16", rd=1, rs1=0, rs2=2, rs3=3, sa=32, sb=16), E("halt")], data=data)
    assert acc_of(st, 0, 1) == [[F(8.0 * i + j + 2) for j in range(8)] for i in range(8)]
    assert st["clock"][0] == 2 + 2 * 2 + 1              # two movi, 2 steps x cost_mma_bf16, halt
    assert st["stats"]["flops"][0] == 2048
    assert st["stats"]["count"][0, cls("mma_bf16")] == 1


def test_mmak_f32_one_step_is_mma_f32():
    tile = f32_tile([[F(float(i - j) / 4) for j in range(8)] for i in range(8)])
    st = run1([E("movi", rd=3, imm=1), E("mmak.f32", rd=1, rs1=0, rs2=0, rs3=3, sa=32, sb=32),
               E("mma.f32", rd=2, rs1=0, rs2=0, sa=32, sb=32), E("halt")], data=[(0, 0, tile)])
    assert acc_of(st, 0, 1) == acc_of(st, 0, 2)
    # (A @ A)[0][0] = sum_k (0 - k) / 4 * (k - 0) / 4 = -(0 + 1 + 4 + ... + 49) / 16 = -140 / 16
    assert acc_of(st, 0, 1)[0][0] == F(-140 / 16)
    assert st["stats"]["flops"][0] == 2048 and st["clock"][0] == 1 + 32 + 32 + 1


def test_mmak_zero_steps_does_nothing_but_costs_one_mma():
    init = [[0x7F80_0001] * 8 for _ in range(8)]
    st = run1([E("movi", rd=4, imm=1024), E("acc.ld", rd=1, rs1=4, sa=32), E("movi", rd=2,
                                                                             imm=-1),
               E("mmak.bf16", rd=1, rs1=2, rs2=2, rs3=0, sa=3, sb=3), E("halt")],
              data=[(0, 1024, f32_tile(init))])
    assert st["state"][0] == HALTED
    assert acc_of(st, 0, 1) == init                     # not even canonicalised
    assert st["stats"]["flops"][0] == 0
    assert st["clock"][0] == 1 + 4 + 1 + 2 + 1


def test_mmak_checks_every_step_before_running_any():
    # Steps 0 and 1 of B are inside SRAM, step 2 (rows at rs2 + 16 * (16..23)) runs past it.
    st = run1([E("movi", rd=2, imm=SRAM - 300), E("movi", rd=3, imm=3),
               E("mmak.bf16", rd=1, rs1=0, rs2=2, rs3=3, sa=16, sb=16)],
              data=[(0, 0, bf16_tile([[0x3F80] * 8] * 8))])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE
    assert acc_of(st, 0, 1) == [[0] * 8 for _ in range(8)] and st["clock"][0] == 2
    st = run1([E("movi", rd=3, imm=-1), E("mmak.f32", rd=1, rs1=0, rs2=0, rs3=3, sa=32, sb=32)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE    # rs3 is an unsigned count: 2^64 - 1


def test_acc_store_forms_and_zero():
    init = [[F(float(8 * i + j)) + 0x8000 for j in range(8)] for i in range(8)]  # ties
    st = run1([E("movi", rd=3, imm=1024), E("acc.ld", rd=1, rs1=3, sa=40),
               E("movi", rd=4, imm=2048), E("acc.st", rd=1, rs1=4, sa=32),
               E("movi", rd=5, imm=3072), E("acc.st.bf16", rd=1, rs1=5, sa=20),
               E("acc.zero", rd=1), E("halt")],
              data=[(0, 1024, f32_tile(init, 40))])
    assert f32_tile(init) == bytes(st["sram"][0, 2048:2048 + 256])
    for i in range(8):
        row = struct.unpack("<8H", bytes(st["sram"][0, 3072 + 20 * i:3072 + 20 * i + 16]))
        for j in range(8):
            u = init[i][j]
            assert row[j] == (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    assert acc_of(st, 0, 1) == [[0] * 8 for _ in range(8)]
    assert st["stats"]["count"][0, cls("acc")] == 3 and st["stats"]["count"][0, cls("alu")] == 4


def test_tile_row_alignment_and_range():
    st = run1([E("mma.bf16", rd=0, rs1=0, rs2=0, sa=3, sb=16)])
    assert st["cause"][0] == traps.MISALIGNED             # row 1 of A at address 3
    st = run1([E("mma.f32", rd=0, rs1=0, rs2=0, sa=32, sb=600)])
    assert st["cause"][0] == traps.SRAM_OUT_OF_RANGE      # row 7 of B at 4200
    st = run1([E("acc.st", rd=0, rs1=0, sa=2)])
    assert st["cause"][0] == traps.MISALIGNED


# ---- network ----------------------------------------------------------------------------------

def test_messages_arrive_in_order():
    prog0 = [E("movi", rd=1, imm=10), E("send", rs1=1, dir=EAST), E("movi", rd=1, imm=20),
             E("send", rs1=1, dir=EAST), E("movi", rd=1, imm=-30), E("send", rs1=1, dir=EAST),
             E("halt")]
    prog1 = [E("recv", rd=1, dir=W), E("recv", rd=2, dir=W), E("recv", rd=3, dir=W),
             E("halt")]
    emu, st = run({0: prog0, 1: prog1})
    assert emu.status_after_run == "halted"
    assert [int(v) for v in st["x"][1, 1:4]] == [10, 20, -30]
    assert st["link_pushed"][1 * 4 + W] == 3
    assert st["stats"]["link_msgs"][0, EAST] == 3 and st["stats"]["link_bytes"][0, EAST] == 24


def test_fifo_depth_one_blocks_the_sender_and_times_the_slots():
    m = machine(fifo_depth=1)
    prog0 = [E("send", rs1=0, dir=EAST)] * 3 + [E("halt")]
    prog1 = [E("mul", rd=1, rs1=0, rs2=0)] * 3 + [E("recv", rd=2, dir=W)] * 3 + [E("halt")]
    _, st = run({0: prog0, 1: prog1}, m=m, quantum=1)
    # node 0: send 0 at 0 -> arrives 0 + 1 + 1 = 2, wire free 1, clock 1.
    # node 1: muls to 9; recv 0 starts at 9, clock 10, slot 0 frees at 10.
    # node 0: send 1 issues at max(1, 10) = 10 (stall 9), arrives 12, clock 11.
    # node 1: recv 1 starts at max(10, 12) = 12 (stall 2), clock 13, slot frees at 13.
    # node 0: send 2 issues at 13 (stall 2), arrives 15, wire free 14, clock 14; halt -> 15.
    # node 1: recv 2 starts at 15 (stall 2), clock 16; halt -> 17.
    assert list(st["clock"][:2]) == [15, 17]
    assert list(st["stats"]["stall"][:2]) == [11, 4]
    assert list(st["stats"]["busy"][:2]) == [4, 13]
    assert st["link_wire_free"][1 * 4 + W] == 14
    assert st["stats"]["link_busy"][0, EAST] == 3


def test_blocked_send_and_deadlock_status():
    m = machine(fifo_depth=1)
    emu, st = run({0: [E("movi", rd=1, imm=5), E("send", rs1=1, dir=EAST),
                       E("send", rs1=1, dir=EAST), E("halt")]}, m=m)
    assert emu.status_after_run == "deadlock"
    assert st["state"][0] == BLOCKED_SEND and st["pc"][0] == 2
    assert st["clock"][0] == 2                         # the blocked send has not been paid for
    assert st["fifos"][1 * 4 + W] == [(8, 3, (5).to_bytes(8, "little"))]


def test_mutual_receive_deadlocks():
    emu, st = run({0: [E("recv", rd=1, dir=EAST)], 1: [E("recv", rd=1, dir=W)]})
    assert emu.status_after_run == "deadlock"
    assert list(st["state"]) == [BLOCKED_RECV, BLOCKED_RECV, HALTED, HALTED]


def test_vsend_vrecv_and_block_messages():
    lanes = [F(float(i)) for i in range(16)]
    payload = bytes(range(200))
    prog0 = [E("vld", rd=1, rs1=0, imm=0), E("vsend", rs1=1, dir=S),
             E("movi", rd=2, imm=64), E("movi", rd=3, imm=200),
             E("sendb", rs1=2, rs2=3, dir=S), E("halt")]
    prog2 = [E("vrecv", rd=4, dir=N), E("movi", rd=1, imm=1001), E("movi", rd=2, imm=200),
             E("recvb", rs1=1, rs2=2, dir=N), E("halt")]
    emu, st = run({0: prog0, 2: prog2}, data=[(0, 0, vec(lanes)), (0, 64, payload)])
    assert emu.status_after_run == "halted"
    assert [int(u) for u in st["v"][2, 4]] == lanes
    assert bytes(st["sram"][2, 1001:1201]) == payload
    assert st["stats"]["sram_hwm"][2] == 1201
    assert st["stats"]["link_bytes"][0, S] == 264
    assert st["stats"]["link_busy"][0, S] == 1 + 4      # ceil(64/64) + ceil(200/64)


def test_wire_free_serialises_back_to_back_messages():
    prog0 = [E("movi", rd=2, imm=200), E("sendb", rs1=0, rs2=2, dir=EAST),
             E("sendb", rs1=0, rs2=2, dir=EAST), E("halt")]
    _, st = run({0: prog0})
    # send 0 at 1: depart 1, arrive 1 + 1 + 4 = 6, wire free 5. send 1 at 2: departs at 5,
    # arrives 10, wire free 9.
    fifo = st["fifos"][1 * 4 + W]
    assert [(n, t) for n, t, _ in fifo] == [(200, 6), (200, 10)]
    assert st["link_wire_free"][1 * 4 + W] == 9
    assert st["clock"][0] == 4 and st["stats"]["stall"][0] == 0
    prog1 = [E("movi", rd=2, imm=200), E("recvb", rs1=0, rs2=2, dir=W),
             E("recvb", rs1=0, rs2=2, dir=W), E("halt")]
    _, st = run({0: prog0, 1: prog1})
    # recv 0 at 1 waits for 6 -> 7; recv 1 waits for 10 -> 11; halt -> 12
    assert st["clock"][1] == 12 and st["stats"]["stall"][1] == 5 + 3


def test_chip_edge_link_latency_and_bandwidth():
    m = load_machine("d1", overrides={"cols": 2, "rows": 1, "chips_x": 2, "harvested": [],
                                      "sram_bytes": SRAM})
    assert int(m.link_latency[1, EAST]) == 100 and int(m.link_bandwidth[1, EAST]) == 50
    prog1 = [E("vsend", rs1=0, dir=EAST), E("halt")]
    _, st = run({1: prog1, 2: [E("vrecv", rd=0, dir=W), E("halt")]}, m=m)
    # vsend at 0: arrive 0 + 100 + ceil(64/50) = 102; the receiver starts at 102, ends 103
    assert st["clock"][2] == 104
    assert st["stats"]["link_busy"][1, EAST] == 2


def test_sends_pass_through_harvested_nodes():
    m = machine("h6x5")
    west, east = m.node_id(1, 1), m.node_id(3, 1)           # (2, 1) is harvested
    north, south = m.node_id(2, 0), m.node_id(2, 2)
    assert int(m.neighbors[west, EAST]) == east and int(m.link_latency[west, EAST]) == 2
    progs = {
        west: [E("movi", rd=1, imm=77), E("send", rs1=1, dir=EAST), E("recv", rd=2, dir=EAST),
               E("halt")],
        east: [E("recv", rd=1, dir=W), E("addi", rd=1, rs1=1, imm=1), E("send", rs1=1, dir=W),
               E("halt")],
        north: [E("movi", rd=1, imm=5), E("send", rs1=1, dir=S), E("halt")],
        south: [E("recv", rd=1, dir=N), E("halt")],
    }
    emu, st = run(progs, m=m)
    assert emu.status_after_run == "halted"
    assert st["x"][west, 2] == 78 and st["x"][south, 1] == 5
    # west sends at 1, arrives 1 + 2 + 1 = 4; east receives 4 -> 5, addi -> 6, sends at 6
    # arriving 9; west receives at 9 -> 10, halt -> 11
    assert st["clock"][west] == 11 and st["clock"][east] == 8
    assert st["link_pushed"][east * 4 + W] == 1 and st["link_pushed"][west * 4 + EAST] == 1


def test_relay_is_receive_then_send():
    m = machine("3x1")
    progs = {0: [E("movi", rd=1, imm=9), E("send", rs1=1, dir=EAST), E("halt")],
             1: [E("relay", dir=W, dir2=EAST), E("halt")],
             2: [E("recv", rd=1, dir=W), E("halt")]}
    _, st = run(progs, m=m)
    # node 0 sends at 1 -> arrives 3. node 1: receive starts 3 (stall 3), ends 4; send issues at
    # 4, arrives 4 + 1 + 1 = 6; clock 5, halt 6. node 2 receives at 6 -> 7, halt 8.
    assert st["x"][2, 1] == 9
    assert list(st["clock"]) == [3, 6, 8]
    assert st["stats"]["count"][1, cls("recv")] == 1 and st["stats"]["count"][1, cls("send")] == 0
    assert st["stats"]["busy"][1] == 1 + 1 + 1 and st["stats"]["stall"][1] == 3
    assert st["stats"]["link_msgs"][1, EAST] == 1 and st["stats"]["link_busy"][1, EAST] == 1


def test_relayb_stores_and_forwards():
    m = machine("3x1")
    payload = bytes(range(1, 41))
    progs = {0: [E("movi", rd=2, imm=40), E("sendb", rs1=0, rs2=2, dir=EAST), E("halt")],
             1: [E("movi", rd=1, imm=300), E("movi", rd=2, imm=40),
                 E("relayb", dir=W, dir2=EAST, rs1=1, rs2=2), E("halt")],
             2: [E("movi", rd=1, imm=8), E("movi", rd=2, imm=40),
                 E("recvb", rs1=1, rs2=2, dir=W), E("halt")]}
    emu, st = run(progs, m=m, data=[(0, 0, payload)])
    assert emu.status_after_run == "halted"
    assert bytes(st["sram"][1, 300:340]) == payload and bytes(st["sram"][2, 8:48]) == payload
    assert list(st["stats"]["sram_hwm"]) == [40, 340, 48]


def test_relay_blocks_on_receive_then_on_send():
    m = machine("3x1", fifo_depth=1)
    progs = {0: [E("send", rs1=0, dir=EAST), E("send", rs1=0, dir=EAST), E("halt")],
             1: [E("relay", dir=W, dir2=EAST), E("relay", dir=W, dir2=EAST),
                 E("relay", dir=W, dir2=EAST)]}
    emu, st = run(progs, m=m)
    # The first relay fills node 2's only slot; the second has a message but no room.
    assert emu.status_after_run == "deadlock"
    assert st["state"][1] == BLOCKED_SEND and st["pc"][1] == 1
    assert len(st["fifos"][1 * 4 + W]) == 1 and len(st["fifos"][2 * 4 + W]) == 1
    progs[0] = [E("halt")]
    _, st = run(progs, m=m)
    assert st["state"][1] == BLOCKED_RECV and st["pc"][1] == 0


def test_fifo_index_is_receiver_and_incoming_direction():
    m = machine("4x4")
    nid = m.node_id(1, 1)
    for d in range(4):
        t = int(m.neighbors[nid, d])
        _, st = run({nid: [E("send", rs1=0, dir=d), E("halt")]}, m=m)
        assert st["link_pushed"][t * 4 + OPPOSITE[d]] == 1
        assert st["link_pushed"].sum() == 1
        assert st["stats"]["link_msgs"][nid, d] == 1


# ---- statistics, host writes, determinism ----------------------------------------------------

def test_statistics_by_class():
    st = run1([E("vfma", rd=1, rs1=1, rs2=1, rs3=1), E("mma.bf16", rd=0, rs1=0, rs2=0, sa=16,
                                                        sb=16),
               E("vredsum", rd=1, rs1=1), E("div", rd=1, rs1=1, rs2=1), E("ld64", rd=1, rs1=0),
               E("halt")])
    count = st["stats"]["count"][0]
    assert {TIMING_CLASSES[i]: int(c) for i, c in enumerate(count) if c} == {
        "vfma": 1, "mma_bf16": 1, "vred": 1, "div": 1, "load": 1, "sys": 1}
    assert st["stats"]["flops"][0] == 32 + 1024 + 15
    assert st["stats"]["busy"][0] == 1 + 2 + 4 + 20 + 2 + 1 == st["clock"][0]
    assert st["stats"]["stall"][0] == 0


def test_sram_high_water_mark():
    m = machine()
    obj = make_obj(m, {0: li(1, 7) + [E("st64", rs1=0, rs2=1, imm=296), E("halt")],
                       1: [E("halt")]},
                   data=[(0, 100, b"12345678"), (1, 0, b"")])
    emu = ReferenceEmulator(obj)
    assert emu.state_dict()["stats"]["sram_hwm"][0] == 108
    emu.write_sram(0, 200, b"abcd")
    emu.write_sram(1, 50, b"")
    assert emu.run() == "halted"
    st = emu.state_dict()
    assert list(st["stats"]["sram_hwm"][:2]) == [304, 0]
    assert bytes(st["sram"][0, 200:204]) == b"abcd"


def test_host_write_outside_sram_is_refused():
    emu = ReferenceEmulator(make_obj(machine(), {0: [E("halt")]}))
    with pytest.raises(Exception, match="outside"):
        emu.write_sram(0, SRAM - 2, b"abc")


def ring_program(m) -> dict[int, list[int]]:
    """Every node sends its id east and south, receives from west and north, sums with some
    arithmetic in between, and stores the result; edge nodes skip missing links."""
    progs = {}
    for nid in range(m.n_live):
        words = [E("getid", rd=1), E("movi", rd=5, imm=3)]
        for d in (EAST, S):
            if m.neighbors[nid, d] >= 0:
                words += [E("send", rs1=1, dir=d), E("send", rs1=5, dir=d)]
        words += [E("mul", rd=6, rs1=1, rs2=5), E("viota", rd=1), E("vsend", rs1=1, dir=EAST)
                  if m.neighbors[nid, EAST] >= 0 else E("nop")]
        for d in (W, N):
            if m.neighbors[nid, d] >= 0:
                words += [E("recv", rd=2, dir=d), E("recv", rd=3, dir=d),
                          E("add", rd=6, rs1=6, rs2=2), E("mul", rd=6, rs1=6, rs2=3)]
        if m.neighbors[nid, W] >= 0:
            words += [E("vrecv", rd=2, dir=W), E("vadd", rd=3, rs1=2, rs2=1),
                      E("vcvt.bf16.sr", rd=4, rs1=3)]
        words += [E("st64", rs1=0, rs2=6, imm=64), E("vst", rs2=4, rs1=0, imm=128), E("halt")]
        progs[nid] = words
    return progs


@pytest.mark.parametrize("mesh", ["4x4", "h6x5"])
def test_results_do_not_depend_on_the_quantum(mesh):
    m = machine(mesh, fifo_depth=1)
    progs = ring_program(m)
    states = []
    for quantum in (1, 2, 5, 64):
        emu, st = run(progs, m=m, quantum=quantum, seed=11)
        assert emu.status_after_run == "halted"
        states.append(st)
    for st in states[1:]:
        assert compare_states(states[0], st) == []
    assert states[0]["stats"]["stall"].sum() > 0           # the runs really did wait


def test_compare_states_names_the_first_difference():
    m = machine()
    _, a = run({0: [E("movi", rd=3, imm=1), E("halt")]}, m=m)
    _, b = run({0: [E("movi", rd=3, imm=2), E("halt")]}, m=m)
    assert compare_states(a, a) == []
    assert compare_states(a, b) == [
        "x [node 0 r3]: 1 != 2 (1 element(s) differ)"]
    a["v"][1, 2, 5] = 0x7FC0_0000
    a["fifos"][6].append((8, 3, b"12345678"))
    assert compare_states(a, b) == [
        "x [node 0 r3]: 1 != 2 (1 element(s) differ)",
        "v [node 1 v2 lane 5]: 0x7fc00000 != 0x00000000 (1 element(s) differ)",
        "fifos[node 1, from dir 2]: [(8, 3, b'12345678')] != []"]


def test_run_state_names():
    assert RUNNING == 0 and BLOCKED_SEND == 1 and BLOCKED_RECV == 2
    assert HALTED == 3 and TRAPPED == 4


@pytest.mark.parametrize("args, kw, says", [
    ((None,), {}, "ReferenceEmulator takes an ObjectFile, not NoneType"),
    (("prog.d1o",), {}, "ReferenceEmulator takes an ObjectFile, not str"),
    ((), {"quantum": "x"}, "quantum must be an integer, not str"),
    ((), {"seed": 1.5}, "seed must be an integer, not float"),
])
def test_the_reference_emulator_says_what_it_takes(args, kw, says):
    """These were an AttributeError ('NoneType' object has no attribute 'machine') or a
    TypeError from comparing 'x' with 1."""
    from d1isa.errors import D1Error

    obj = make_obj(machine(), {0: [E("halt")]})
    with pytest.raises(D1Error, match=says):
        ReferenceEmulator(*(args or (obj,)), **kw)
