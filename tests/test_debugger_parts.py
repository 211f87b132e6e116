"""The debugger's parts on their own: the expression language, the store facts its watchpoints
read from the ISA table, the State snapshots its checkpoints are made of, and its inputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from progkit import machine, make_obj

from d1isa import isa
from d1isa.errors import D1Error
from d1isa.isa import encode as E
from emulator import Emulator
from emulator.debugger import Debugger, ExprError
from emulator.debugger import expr as X
from emulator.debugger.breakpoints import SCALAR_WRITERS, store_extents
from emulator.state import _STATE_ARRAYS

ROOT = Path(__file__).resolve().parent.parent


# ---- the expression language --------------------------------------------------------------------

class FakeLookup:
    """Names a, b (by node), and an SRAM whose every 4-byte word holds its address."""

    def name(self, ident: str):
        if ident == "a":
            return lambda node: 10 * node
        if ident == "b":
            return lambda node: 3
        raise ExprError(f"unknown name {ident!r}")

    def memory(self, node: int, width: int, addr: int) -> int:
        if addr >= 1000:
            raise ExprError(f"mem{width * 8}[{addr}]: address outside SRAM or misaligned")
        return addr


def ev(text: str, node: int = 1) -> int:
    return X.compile(X.parse(text), FakeLookup(), text)(node)


def test_parse_builds_a_tree_with_c_precedence_and_positions():
    tree = X.parse("a + b * 2 == 16 && !b")
    assert tree == X.Binary("&&", X.Binary("==", X.Binary(
        "+", X.Name("a"), X.Binary("*", X.Name("b"), X.Num(2))), X.Num(16)),
        X.Unary("!", X.Name("b")))
    assert tree.pos == 16 and tree.left.pos == 10 and tree.right.pos == 19
    assert tree.left.left.right.pos == 6                       # the '*'
    assert X.parse("mem32[a + 4]") == X.Mem(4, X.Binary("+", X.Name("a"), X.Num(4)))
    assert X.parse("  (1)") == X.Num(1) and X.parse("  (1)").pos == 3


def test_compiled_expressions_evaluate_per_node():
    assert ev("a + b * 2") == 16 and ev("a", node=4) == 40
    assert ev("-7 / 2") == -3 and ev("-7 % 2") == -1
    assert ev("mem64[a + 8]") == 18
    assert ev("a > 5 and not 0 or 0") == 1
    assert ev("0x10 | 0b1 << 2") == 20


@pytest.mark.parametrize("text, pos, message", [
    ("", 0, "empty expression"),
    ("1 +", 3, "expression '1 +' ends too early"),
    ("(1 + 2", 6, "missing ')'"),
    ("mem8[1", 6, "missing ']'"),
    ("1 2", 2, "unexpected 2"),
    ("a # b", 2, "unexpected character '#'"),
    ("1 + )", 4, "unexpected ')'"),
])
def test_syntax_errors_carry_their_position(text, pos, message):
    with pytest.raises(ExprError, match=re.escape(message)) as e:
        X.parse(text)
    assert e.value.pos == pos and e.value.column == pos + 1


@pytest.mark.parametrize("text, pos, message", [
    ("b + nosuch", 4, "unknown name 'nosuch'"),
    ("1 + a / (b - 3)", 6, "division by zero in expression"),
    ("b << 9999", 2, "shift count 9999 is outside 0..4096"),
    ("1 + mem32[2000]", 4, "mem32[2000]: address outside SRAM"),
])
def test_lookup_and_evaluation_errors_carry_their_position(text, pos, message):
    with pytest.raises(ExprError, match=re.escape(message)) as e:
        ev(text)
    assert e.value.pos == pos
    assert e.value.caret() == f"{text}\n{' ' * pos}^"


def test_an_error_message_stays_without_its_position():
    with pytest.raises(ExprError) as e:
        ev("1 / 0")
    assert str(e.value) == "division by zero in expression"


# ---- ISA facts the watchpoints use --------------------------------------------------------------

def test_store_extents_cover_exactly_the_stores_of_the_isa_table():
    m = machine("4x4")
    assert set(store_extents(m)) == set(isa.STORE_OPCODES)
    assert set(SCALAR_WRITERS) == {i.opcode for i in isa.INSTRUCTIONS if i.writes == "x"}


def test_store_extents_agree_with_the_table_widths():
    """Packed (element-sized strides), every store's span is the bytes the table says it writes."""
    m = machine("4x4")
    x = np.zeros(64, dtype=np.int64)
    x[1] = 256                       # base address
    x[2] = 40                        # length register of a message
    for op, ext in store_extents(m).items():
        ins = isa.BY_OPCODE[op]
        row = [op, 0, 1, 2, 3, 0]
        if ext.shape == "strided":
            x[row[ext.stride]] = ins.memory.width
        if ext.shape == "tile":
            row[5] = ins.memory.width << ext.field.lo
        lo, hi = ext.span(tuple(row), x)
        want = 40 if ext.shape == "message" else ins.memory.nbytes(m.vector_lanes_f32, m.mma_dim)
        assert (lo, hi) == (256, 256 + want), ins.mnemonic


def test_store_extents_follow_strides_offsets_and_lengths():
    m = machine("4x4")
    ext = store_extents(m)
    x = np.zeros(64, dtype=np.int64)
    x[1], x[3] = 1000, -8
    row = (isa.OP["vsts"], 0, 1, 0, 3, 4)          # 16 f32 lanes at 1004, stride -8
    assert ext[isa.OP["vsts"]].span(row, x) == (1004 - 15 * 8, 1004 + 4)
    row = (isa.OP["acc.st"], 0, 1, 0, 0, 48)       # 8 rows of 32 B, row stride 48
    assert ext[isa.OP["acc.st"]].span(row, x) == (1000, 1000 + 7 * 48 + 32)
    row = (isa.OP["st16"], 0, 1, 0, 0, -2)
    assert ext[isa.OP["st16"]].span(row, x) == (998, 1000)


# ---- State snapshots ----------------------------------------------------------------------------

def _fifo_programs() -> dict[int, list[int]]:
    """Node 0 stores a vector and sends it east three times; node 1 counts to 60 before it
    receives them, so the messages wait in its FIFO, then stores what it got."""
    sender = [E("movi", rd=1, imm=7), E("vbcast", rd=1, rs1=1), E("vst", rs2=1, rs1=0, imm=64),
              E("vsend", dir=1, rs1=1), E("addi", rd=1, rs1=1, imm=1), E("vbcast", rd=1, rs1=1),
              E("vsend", dir=1, rs1=1), E("st64", rs1=0, rs2=1, imm=8), E("send", dir=1, rs1=1),
              E("halt")]
    receiver = [E("movi", rd=5, imm=60), E("addi", rd=5, rs1=5, imm=-1),
                E("bne", rs1=5, rs2=0, off=-1), E("vrecv", rd=2, dir=3),
                E("vrecv", rd=3, dir=3), E("recv", rd=4, dir=3),
                E("vst", rs2=3, rs1=0, imm=512), E("st64", rs1=0, rs2=4, imm=1024), E("halt")]
    return {0: sender, 1: receiver}


def test_a_state_snapshot_restores_exactly_fifos_included():
    emu = Emulator(make_obj(machine(), _fifo_programs()))
    emu.step(24)
    st = emu.state
    assert st.fifo_fill(1 * 4 + 3) == 3                  # all three messages wait at node 1
    arrays = {name: getattr(st, name).copy() for name in _STATE_ARRAYS}
    before = st.state_dict()
    snap = st.snapshot()
    assert snap.nbytes < st.nbytes // 5        # SRAM below the marks, 3 FIFO slots of 16
    assert emu.run().status == "halted"
    assert st.sram[1, 512:520].any() and st.fifo_fill(1 * 4 + 3) == 0
    st.fifo8[...] = 0xAB                  # as if later traffic had reused every slot
    st.restore(snap)
    after = st.state_dict()
    for name in _STATE_ARRAYS:
        if name != "fifo8":
            assert np.array_equal(getattr(st, name), arrays[name]), name
    assert after["fifos"] == before["fifos"] and len(after["fifos"][7]) == 3
    # and it runs on from there as it did the first time
    assert emu.run().status == "halted"
    assert emu.regs(1)[4] == 8 and emu.vregs(1)[3][0] == 8


def test_emulator_snapshots_are_state_snapshots_with_the_host_timing():
    emu = Emulator(make_obj(machine(), _fifo_programs()))
    emu.step(24)
    snap = emu.snapshot()
    assert snap.extra["host"] == (emu.host_seconds, emu.host_instructions)
    assert np.array_equal(snap["pc"], emu.state.pc)
    pcs = emu.state.pc.copy()
    emu.run()
    emu.restore(snap)
    assert np.array_equal(emu.state.pc, pcs)


# ---- what the Debugger takes --------------------------------------------------------------------

def test_the_debugger_takes_an_object_file_only():
    with pytest.raises(D1Error, match="Debugger takes an ObjectFile, not str"):
        Debugger("programs/asm/token_ring.d1s")


def test_the_debugger_package_needs_neither_assembler_nor_compiler():
    code = ("import sys, emulator.debugger; "
            "print(sorted(m for m in sys.modules if m == 'compiler' or m.startswith('compiler.')"
            " or m.startswith('d1isa.asm')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       check=True)
    assert r.stdout.strip() == "[]"
