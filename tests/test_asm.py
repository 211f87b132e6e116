"""The assembler, the disassembler and `d1 asm`/`d1 disasm`.

Covers every syntax feature, every class of error (with its exact file:line:col and caret),
exact assemble -> disassemble -> assemble round trips (the example programs on several machines,
and random instruction words under hypothesis), and the example programs' behaviour, checked
with a small model of the ISA subset they use (written from docs/ISA.md; the emulator is tested
on its own).
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from d1isa import isa
from d1isa.asm import PLANS, assemble, assemble_file, bf16_from_f32_bits
from d1isa.disasm import disassemble, format_word, selector_text
from d1isa.errors import SourceError
from d1isa.machine import default_machine, load_machine
from d1isa.objfile import (
    CodeBlock,
    DataInit,
    InitRegs,
    ObjectFile,
    Symbol,
    TensorLayout,
    TensorPiece,
)

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "programs" / "asm").glob("*.d1s"))
M4 = load_machine(mesh="4x4")
D1 = default_machine()
H6 = load_machine("h6x5")          # harvested (2,1) and (3,3)


def asm(text: str, machine=M4, filename: str = "t.d1s") -> ObjectFile:
    return assemble(text, filename, machine)


def listing(obj: ObjectFile, block: int = 0) -> list[str]:
    return [format_word(int(w)) for w in obj.blocks[block].words]


def errors(text: str, machine=M4) -> SourceError:
    with pytest.raises(SourceError) as info:
        assemble(text, "t.d1s", machine)
    return info.value


def roundtrip(obj: ObjectFile) -> None:
    again = assemble(disassemble(obj), "again.d1s")
    assert again.to_bytes() == obj.to_bytes()


# ---- lines, labels, comments ---------------------------------------------------------------


def test_comments_labels_and_case():
    obj = asm(".text all   # code for every node\n"
              "start: ADDI r1, R2, 5   ; both comment styles\n"
              "a1b: b2: nop\n"
              "  halt # trailing\n")
    assert listing(obj) == ["addi r1, r2, 5", "nop", "halt"]
    syms = {(s.name, s.value) for s in obj.symbols if s.kind == "code"}
    assert syms == {("start", 0), ("a1b", 1), ("b2", 1)}


def test_strings_may_contain_comment_characters():
    obj = asm('.file 0 "we;ird#name.d1k"\n.loc 0 3 4\n.text all\n nop\n')
    assert obj.files == ["we;ird#name.d1k"]


def test_line_table_records_line_and_column_of_each_instruction():
    obj = asm(".text all\n  movi r1, 1\n\n      li r2, 0x100000000\n")
    rows = obj.blocks[0].lines.tolist()
    assert rows == [[0, 2, 3, 0, 2], [0, 4, 7, 0, 4], [0, 4, 7, 0, 4]]
    assert obj.files == ["t.d1s"]
    assert obj.sources == {"t.d1s": ".text all\n  movi r1, 1\n\n      li r2, 0x100000000\n"}
    assert obj.meta == {"producer": "d1 asm"}


def test_crlf_line_endings():
    obj = asm(".text all\r\n  addi r1, r1, 1\r\n")
    assert listing(obj) == ["addi r1, r1, 1"]
    assert obj.blocks[0].lines[0].tolist() == [0, 2, 3, 0, 2]


# ---- expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize("expr, value", [
    ("42", 42), ("0x2a", 42), ("0b101010", 42), ("1_000", 1000), ("007", 7),
    ("-7 / 2", -3), ("-7 % 2", -1), ("7 / -2", -3), ("(1 + 2) * 3", 9), ("1 + 2 * 3", 7),
    ("1 << 4 | 3", 19), ("6 & 3 ^ 1", 3), ("~0", -1), ("!5", 0), ("!0", 1),
    ("3 > 2", 1), ("3 <= 2", 0), ("2 == 2", 1), ("2 != 2", 0), ("1 && 0", 0), ("0 || 3", 1),
    ("1 ? 10 : 20", 10), ("0 ? 10 : 20", 20), ("-(-5)", 5), ("+5", 5), ("256 >> 4", 16),
    ("@w * @h", 16), ("@n", 16), ("@sram", 1310720),
])
def test_expression_values(expr, value):
    obj = asm(f".text all\n li r1, {expr}\n")
    assert int(obj.blocks[0].words[0]) & 0xFFFFFFFF == value & 0xFFFFFFFF


def test_equates_both_forms_and_forward_references():
    obj = asm(".equ A, B * 2\nB = 3\nC=A+B\n.text all\n addi r1, r0, C\n")
    assert listing(obj) == ["addi r1, r0, 9"]
    assert [(s.name, s.kind, s.value) for s in obj.symbols] == [
        ("A", "equ", 6), ("B", "equ", 3), ("C", "equ", 9)]


def test_node_symbols_assemble_per_node_and_identical_blocks_are_shared():
    obj = asm(".text all\n li r1, @x\n li r2, @y * 4 + @x\n halt\n")
    assert len(obj.blocks) == 16
    for nid in range(16):
        x, y = M4.node_xy(nid)
        assert listing(obj, int(obj.node_block[nid]))[:2] == [f"movi r1, {x}",
                                                              f"movi r2, {4 * y + x}"]
    shared = asm(".text all\n li r1, @x\n halt\n")
    assert len(shared.blocks) == 4          # one block per column, shared down the column
    assert shared.node_block.tolist() == [0, 1, 2, 3] * 4


def test_node_dependent_equate_makes_section_per_node_but_not_symbol():
    obj = asm(".equ ME, @id\n.equ K, 5\n.text all\n addi r1, r0, ME\n")
    assert len(obj.blocks) == 16
    assert [s.name for s in obj.symbols if s.kind == "equ"] == ["K"]


def test_fp32_operands():
    obj = asm(".text all\n"
              " vbcasti v1, 0.5\n vbcasti v1, -1e-3\n vbcasti v1, inf\n vbcasti v1, -inf\n"
              " vbcasti v1, nan\n vbcasti v1, 0x3f800000\n vbcasti v1, 2\n vbcasti v1, 1 + 1\n"
              " vbcasti v1, -0.0\n")
    imms = [int(w) & 0xFFFFFFFF for w in obj.blocks[0].words]
    assert imms == [0x3F000000, isa.f32_bits(-1e-3), 0x7F800000, 0xFF800000, 0x7FC00000,
                    0x3F800000, 0x40000000, 0x40000000, 0x80000000]


# ---- operands ------------------------------------------------------------------------------


def test_register_aliases_and_directions():
    obj = asm(".text all\n add zero, sp, ra\n send e, r1\n recv r2, N\n"
              " relayb W, s, r3, r4\n send (@x & 1) ? E : W, r1\n")
    assert listing(obj, 0)[:4] == ["add r0, r30, r31", "send E, r1", "recv r2, N",
                                   "relayb W, S, r3, r4"]
    assert listing(obj, int(obj.node_block[1]))[4] == "send E, r1"
    assert listing(obj, int(obj.node_block[0]))[4] == "send W, r1"


def test_memory_operand_forms():
    obj = asm(".data all\n.org 96\nbuf: .zero 8\n.equ OFF, 24\n.text all\n"
              " ld64 r1, [r2]\n ld64 r1, [r2+16]\n ld64 r1, [r2-8]\n ld64 r1, [r2+buf]\n"
              " ld64 r1, [buf]\n ld64 r1, [ r2 + OFF * 2 ]\n st64 r1, [sp+8]\n"
              " ld64 r1, [buf+8]\n")
    assert listing(obj) == ["ld64 r1, [r2]", "ld64 r1, [r2+16]", "ld64 r1, [r2-8]",
                            "ld64 r1, [r2+96]", "ld64 r1, [r0+96]", "ld64 r1, [r2+48]",
                            "st64 r1, [r30+8]", "ld64 r1, [r0+104]"]


def test_branch_targets_labels_relative_and_end_of_section():
    obj = asm(".text all\nloop:\n nop\n beq r1, r2, loop\n bne r1, r2, +3\n blt r1, r2, -2\n"
              " jal ra, done\n nop\ndone:\n")
    assert listing(obj) == ["nop", "beq r1, r2, -1", "bne r1, r2, +3", "blt r1, r2, -2",
                            "jal r31, +2", "nop"]
    assert ("done", 6) in {(s.name, s.value) for s in obj.symbols}


def test_labels_are_local_to_their_section_and_dot_labels_are_not_symbols():
    obj = asm(".text node 0,0\nloop: nop\n j loop\n.text node 1,0\n nop\nloop: nop\n j loop\n"
              " j .Lx\n.Lx:\n")
    assert listing(obj, 0) == ["nop", "jal r0, -1"]
    assert listing(obj, 1) == ["nop", "nop", "jal r0, -1", "jal r0, +1"]
    assert [(s.name, s.value, s.block) for s in obj.symbols] == [("loop", 0, 0), ("loop", 1, 1)]


# ---- pseudo-instructions -------------------------------------------------------------------


def _li_value(words: list[int]) -> int:
    """What movi (+ movhi) leave in rd, per the ISA semantics."""
    ins, f = isa.decode(words[0])
    assert ins.mnemonic == "movi"
    v = f["imm"] & ((1 << 64) - 1)
    if len(words) == 2:
        ins2, f2 = isa.decode(words[1])
        assert ins2.mnemonic == "movhi" and f2["rd"] == f["rd"]
        v = (f2["uimm"] << 32) | (v & 0xFFFFFFFF)
    return v


@pytest.mark.parametrize("value, n_words", [
    (0, 1), (1, 1), (-1, 1), (2**31 - 1, 1), (-(2**31), 1), (2**31, 2), (0xFFFFFFFF, 2),
    (2**32, 2), (0x123456789ABCDEF0, 2), (-(2**63), 2), (2**64 - 1, 2), (-(2**31) - 1, 2),
    (0x8000000080000000, 2), (0x7FFFFFFF80000000, 2),
])
def test_li_builds_exact_64_bit_values(value, n_words):
    obj = asm(f".text all\n li r5, {value}\n")
    words = [int(w) for w in obj.blocks[0].words]
    assert len(words) == n_words
    assert _li_value(words) == value & ((1 << 64) - 1)


def test_li_with_forward_reference_sizes_itself_after_layout():
    obj = asm(".text all\n li r1, BIG\n li r2, SMALL\nafter: j after\n"
              ".equ BIG, 0x100000000\n.equ SMALL, 7\n")
    words = [int(w) for w in obj.blocks[0].words]
    assert _li_value(words[:2]) == 2**32
    assert _li_value(words[2:3]) == 7
    assert [(s.name, s.value) for s in obj.symbols if s.kind == "code"] == [("after", 3)]


def test_other_pseudo_instructions():
    obj = asm(".data all\nx: .zero 8\ny: .zero 8\n.text all\nf: la r1, y\n mv r2, r1\n"
              " not r3, r2\n neg r4, r3\n call f\n ret\n j f\n beqz r1, f\n bnez r1, f\n"
              " bgt r1, r2, f\n ble r1, r2, f\n bgtu r1, r2, f\n bleu r1, r2, f\n"
              " .word 0xff00000000000000, 7\n")
    assert listing(obj) == [
        "movi r1, 8", "addi r2, r1, 0", "xori r3, r2, -1", "sub r4, r0, r3", "jal r31, -4",
        "jalr r0, r31, 0", "jal r0, -6", "beq r1, r0, -7", "bne r1, r0, -8", "blt r2, r1, -9",
        "bge r2, r1, -10", "bltu r2, r1, -11", "bgeu r2, r1, -12",
        ".word 0xff00000000000000", ".word 0x0000000000000007"]   # 7: nop with reserved bits


# ---- sections and selectors ----------------------------------------------------------------


@pytest.mark.parametrize("selector, nodes", [
    ("all", list(range(16))), ("", list(range(16))), ("node 2,1", [6]),
    ("list 0,0 3,3 1,0", [0, 1, 15]), ("row 2", [8, 9, 10, 11]), ("col 3", [3, 7, 11, 15]),
    ("rect 1,1,2,3", [5, 6, 9, 10, 13, 14]), ("col @w - 1", [3, 7, 11, 15]),
])
def test_text_selectors(selector, nodes):
    obj = asm(f".text {selector}\n nop\n")
    assert np.nonzero(obj.node_block == 0)[0].tolist() == nodes
    assert (obj.node_block[[n for n in range(16) if n not in nodes]] == -1).all()


def test_rest_takes_the_unselected_nodes_and_harvested_nodes_are_skipped():
    obj = asm(".text rect 1,0,3,2\n nop\n.text rest\n halt\n", H6)
    inside = {H6.node_id(x, y) for x in range(1, 4) for y in range(3) if (x, y) != (2, 1)}
    assert {int(n) for n in np.nonzero(obj.node_block == 0)[0]} == inside
    assert (obj.node_block >= 0).all() and len(inside) == 8
    assert selector_text(H6, sorted(inside)) == "rect 1,0,3,2"


def test_sections_without_node_symbols_are_assembled_once_and_shared():
    obj = asm(".text row 0\n nop\n.text row 1\n nop\n")
    assert len(obj.blocks) == 2            # same words, but the line rows differ (lines 2, 4)
    obj = asm(".loc none\n.text row 0\n nop\n.text row 1\n nop\n")
    assert len(obj.blocks) == 1            # same words and same rows: one shared block
    assert obj.node_block.tolist() == [0] * 8 + [-1] * 8


def test_empty_and_unused_sections():
    obj = asm(".text list\n nop\n.text node 0,0\n")
    assert [len(b) for b in obj.blocks] == [1, 0]
    assert obj.node_block.tolist() == [1] + [-1] * 15


# ---- data ----------------------------------------------------------------------------------


def test_data_directives_layout_and_bytes():
    obj = asm(".data all\n"
              "a: .i8 1, -1, 255\n"
              ".align 4\n"
              "b: .i16 0x1234, -2\n"
              "c: .i32 -1\n"
              "d: .i64 0x0102030405060708\n"
              "e: .f32 1.5, 0x7f800000\n"
              "f: .bf16 1.0, 0.1, 0x7fc0\n"
              "g: .zero 3\n"
              ".org 0x40\n"
              "h: .i8 9\n"
              ".text node 0,0\n la r1, h\n")
    want = (bytes([1, 0xFF, 0xFF, 0]) + struct.pack("<hh", 0x1234, -2) + struct.pack("<i", -1)
            + struct.pack("<Q", 0x0102030405060708) + struct.pack("<fI", 1.5, 0x7F800000)
            + struct.pack("<HHH", 0x3F80, 0x3DCD, 0x7FC0) + bytes(3))
    assert [(d.node, d.addr, d.data) for d in obj.data[:16:15]] == [(0, 0, want), (15, 0, want)]
    assert [(d.node, d.addr, d.data) for d in obj.data[16:18]] == [(0, 0x40, b"\x09"),
                                                                   (1, 0x40, b"\x09")]
    labels = {s.name: s.value for s in obj.symbols if s.kind == "data"}
    assert labels == {"a": 0, "b": 4, "c": 8, "d": 12, "e": 20, "f": 28, "g": 34, "h": 64}
    assert listing(obj) == ["movi r1, 64"]


def test_one_data_counter_across_sections_and_per_node_values():
    obj = asm(".data node 0,0\nx: .i32 1\n.data row 1\ny: .i32 @x, @y\n"
              ".text all\n ld32 r1, [y+4]\n")
    assert {s.name: s.value for s in obj.symbols} == {"x": 0, "y": 4}
    assert [(d.node, d.addr, d.data) for d in obj.data] == [(0, 0, struct.pack("<i", 1))] + [
        (4 + i, 4, struct.pack("<ii", i, 1)) for i in range(4)]
    assert listing(obj) == ["ld32 r1, [r0+8]"]


def test_bf16_rounds_to_nearest_even():
    assert bf16_from_f32_bits(0x3F808000) == 0x3F80     # tie -> even
    assert bf16_from_f32_bits(0x3F818000) == 0x3F82     # tie -> even (up)
    assert bf16_from_f32_bits(0x3F808001) == 0x3F81
    assert bf16_from_f32_bits(0x7F7FFFFF) == 0x7F80     # beyond bf16's range: inf
    assert bf16_from_f32_bits(0xFFC12345) == 0x7FC0     # any NaN: canonical
    obj = asm(".data all\n.bf16 3.14159, -2.5e-3\n")
    want = [bf16_from_f32_bits(isa.f32_bits(v)) for v in (3.14159, -2.5e-3)]
    assert struct.unpack("<HH", obj.data[0].data) == tuple(want) == (0x4049, 0xBB24)


def test_a_hex_literal_is_a_bit_pattern_and_any_other_expression_a_value():
    """docs/ASSEMBLY.md: only a hex *literal* is an fp32 (or bf16) bit pattern; an expression
    that starts with one (`0x10 * 2`) is a value like any other."""
    obj = asm(".data all\n.f32 0x3f80_0000, 0x10 * 2, -0x1\n.bf16 0x3f80, 0x10 * 2\n"
              ".text node 0,0\n vbcasti v1, 0x10 * 2\n vbcasti v2, 0x40000000\n")
    assert obj.data[0].data == struct.pack("<fffHH", 1.0, 32.0, -1.0, 0x3F80, 0x4200)
    assert listing(obj) == ["vbcasti v1, 32.0", "vbcasti v2, 2.0"]
    e = errors(".data all\n.bf16 0x1g\n")
    assert [(d.line, d.col, d.message) for d in e.diagnostics] == [(2, 7, "bad number '0x1g'")]


def test_a_float_literal_beyond_even_fp64_is_outside_fp32_not_infinity():
    """`1e400` is a finite value beyond the fp32 range, an error like `1e39`; float() alone would
    read it as inf. `inf` itself is still infinity."""
    e = errors(".data all\n.f32 1e39\n.bf16 -1e400\n.text all\n vbcasti v1, 1e400\n")
    assert [(d.line, d.col, d.message) for d in e.diagnostics] == [
        (2, 6, "1e+39 is outside the fp32 range (write inf for infinity)"),
        (3, 7, "-1e400 is outside the fp32 range (write inf for infinity)"),
        (5, 14, "1e400 is outside the fp32 range (write inf for infinity)")]
    obj = asm(".data all\n.f32 inf, -Infinity\n.text node 0,0\n vbcasti v1, inf\n")
    assert obj.data[0].data == struct.pack("<II", 0x7F800000, 0xFF800000)
    assert listing(obj) == ["vbcasti v1, 0x7f800000"]


# ---- tensors -------------------------------------------------------------------------------


def test_tensor_pieces_defaults_explicit_and_per_node():
    obj = asm(".data all\nA: .zero 64\nB: .zero 256\n"
              ".tensor a input f32[@n, 4]\n.piece a all A offset @id, 0 shape 1, 4\n"
              ".tensor w internal bf16[8, 8]\n.piece w 1,0 B\n"
              ".tensor p output i32[2, 4]\n.piece p 0,0 B offset 0,0 shape 2,4 strides 64,4\n")
    a, w, p = obj.tensors
    assert (a.name, a.role, a.dtype, a.shape) == ("a", "input", "f32", (16, 4))
    assert [(q.node, q.addr, q.offset, q.shape, q.strides) for q in a.pieces[:2]] == [
        (0, 0, (0, 0), (1, 4), (16, 4)), (1, 0, (1, 0), (1, 4), (16, 4))]
    assert len(a.pieces) == 16
    assert [(q.node, q.addr, q.offset, q.shape, q.strides) for q in w.pieces] == [
        (1, 64, (0, 0), (8, 8), (16, 2))]
    assert p.pieces[0].strides == (64, 4)


# ---- debug directives and the machine ------------------------------------------------------


def test_explicit_debug_directives_replace_own_records():
    text = ('.file 0 "model.d1k"\n.file 1 "gen.d1s"\n.source "model.d1k" "x = 1\\ny = \\"2\\"\\n"\n'
            '.symbol my_sym code 1 0\n.symbol "odd name" equ -5 -1\n.meta {"producer": "dslc"}\n'
            ".text all\n.loc 0 7 3 1 40\n nop\n nop\n.loc none\nlab: halt\n.loc 0 8 1\n halt\n")
    obj = asm(text)
    assert obj.files == ["model.d1k", "gen.d1s"]
    assert obj.sources == {"model.d1k": 'x = 1\ny = "2"\n'}
    assert [(s.name, s.kind, s.value, s.block) for s in obj.symbols] == [
        ("my_sym", "code", 1, 0), ("odd name", "equ", -5, -1)]
    assert obj.meta == {"producer": "dslc"}
    assert obj.blocks[0].lines.tolist() == [[0, 7, 3, 1, 40], [0, 7, 3, 1, 40],
                                            [-1] * 5, [0, 8, 1, -1, -1]]


def test_machine_directive_is_used_and_checked():
    text = f".machine {H6.to_json()}\n.text node 5,4\n halt\n"
    obj = assemble(text, "m.d1s")
    assert obj.machine == H6
    assert assemble(text, "m.d1s", H6.replace(fifo_depth=8)).machine == H6  # timing may differ
    e = errors(text, M4)
    assert "t.d1s:1:10: error: this file was assembled for another machine: cols, rows, " \
           "harvested differ from the requested machine 'd1-4x4'" in str(e)
    assert assemble(".machine m4x4\n.text all\n nop\n", "n.d1s").machine.name == "m4x4"


def test_a_machine_directive_takes_another_chip_grid_of_its_chip():
    """docs/MACHINE.md: `--chips` on a file with a leading `.machine` makes copies of that chip
    (`d1 asm f.d1s --chips 2x1`, `d1 run prog.d1o --chips 2x1` re-assembling its source)."""
    text = ".machine h6x5\n.text node @w - 1, 4\n halt\n"
    two = load_machine("h6x5", chips="2x1")
    obj = assemble(text, "m.d1s", two)
    assert obj.machine == two and obj.node_block[two.node_id(11, 4)] == 0
    e = errors(text, load_machine(mesh="6x5", chips="2x1"))
    assert [(d.line, d.col, d.message) for d in e.diagnostics] == [
        (1, 10, "this file was assembled for another machine: harvested differ from the "
                "requested machine 'd1-6x5-chips2x1'")]


def test_register_counts_come_from_the_machine():
    small = M4.replace(scalar_regs=16, vector_regs=8, accumulators=2)
    obj = asm(".text all\n add r15, r14, r0\n vadd v7, v6, v5\n acc.zero a1\n", small)
    assert listing(obj) == ["add r15, r14, r0", "vadd v7, v6, v5", "acc.zero a1"]
    e = errors(".text all\n add r16, r1, r1\n vmov v8, v1\n acc.zero a2\n mv sp, r1\n ret\n",
               small)
    msgs = [(d.line, d.col, d.message) for d in e.diagnostics]
    assert msgs == [
        (2, 6, "register 'r16' does not exist: this machine has 16 scalar registers (r0..r15)"),
        (3, 7, "register 'v8' does not exist: this machine has 8 vector registers (v0..v7)"),
        (4, 11, "register 'a2' does not exist: this machine has 2 accumulator registers "
                "(a0..a1)"),
        (5, 5, "'sp' is r30, but this machine has only 16 scalar registers (r0..r15)"),
        (6, 2, "'ret' uses ra (r31), but this machine has only 16 scalar registers")]


# ---- errors ----------------------------------------------------------------------------------

ERROR_CASES = [
    # (source, line, col, message)
    (".text all\n vad v1, v2, v3\n", 2, 2, "unknown instruction 'vad'; did you mean 'vand'?"),
    (".txt all\n", 1, 1, "unknown directive '.txt'; did you mean '.text'?"),
    (".text all\n addi r1, r2\n", 2, 2, "'addi' takes 3 operands (addi rd, rs1, imm), got 2"),
    (".text all\n add r1, r40, r2\n", 2, 10,
     "register 'r40' does not exist: this machine has 32 scalar registers (r0..r31)"),
    (".text all\n vadd v1, r2, v3\n", 2, 11,
     "expected a vector register (v0..v31), got the scalar register 'r2'"),
    (".text all\n add r1, foo, r2\n", 2, 10,
     "expected a scalar register (r0..r31), got 'foo'"),
    (".text all\n slli r1, r2, 64\n", 2, 15, "shift amount 64 is out of range 0..63"),
    (".text all\n vext r1, v2, 16\n", 2, 15, "lane 16 is out of range 0..15"),
    (".text all\n mma.bf16 a0, r1, r2, 65536, 16\n", 2, 23,
     "stride sa 65536 is out of range 0..65535"),
    (".text all\n acc.st a0, r1, -1\n", 2, 17, "stride sa -1 is out of range 0..65535"),
    (".text all\n addi r1, r1, 2147483648\n", 2, 15,
     "immediate 2147483648 is out of range -2147483648..2147483647"),
    (".text all\n trap -1\n", 2, 7, "unsigned immediate -1 is out of range 0..4294967295"),
    (".text all\n beq r1, r2, +2147483648\n", 2, 14,
     "branch offset 2147483648 is out of range -2147483648..2147483647"),
    (".text all\n li r1, 1 << 64\n", 2, 9, "li value 18446744073709551616 does not fit 64 bits"),
    (".text all\n ld64 r1, r2\n", 2, 11,
     "expected a memory operand such as [r2+16] or [label], got 'r2'"),
    (".text all\n ld64 r1, [2000000]\n", 2, 12, "address 2000000 is outside SRAM (0..1310719)"),
    (".text all\n send X, r1\n", 2, 7, "expected a direction (N, E, S or W), got 'X'"),
    (".text all\n send 4, r1\n", 2, 7, "direction 4 is out of range: write N, E, S or W (0..3)"),
    (".text all\n addi r1, r1, nope\n", 2, 15, "unknown name 'nope'"),
    (".text all\n j nowhere\n", 2, 4, "unknown label 'nowhere'"),
    (".equ SIZE, 4\n.text all\n addi r1, r1, SIZ\n", 3, 15,
     "unknown name 'SIZ'; did you mean 'SIZE'?"),
    (".text node 0,0\nf: nop\n.text node 1,0\n j f\n", 4, 4,
     "'f' is a code label of another .text section (line 2); code labels are visible only "
     "inside their own section"),
    (".text all\nx: nop\nx: nop\n", 3, 1,
     "label 'x' is already defined in this section at line 2"),
    (".equ A, 1\nA = 2\n", 2, 1, "'A' is already defined as an equate at line 1"),
    (".equ A, 1\n.text all\nA: nop\n", 3, 1,
     "label 'A' is already defined as an equate at line 1"),
    (".text all\nr3: nop\n", 2, 1, "'r3' is a register name and cannot be a label"),
    (" nop\n", 1, 2, "instruction 'nop' outside any section; code belongs after a "
                     "'.text SELECTOR' line"),
    (".i32 5\n", 1, 1, ".i32 outside any section; data belongs after a '.data SELECTOR' line"),
    (".text all\n.i32 5\n", 2, 1,
     ".i32 in a .text section; data belongs after a '.data SELECTOR' line"),
    ("x: .i32 1\n", 1, 1, "label 'x' is outside any .text or .data section"),
    (".text node 2,1\n nop\n", 1, 12, "node (2,1) is harvested (dead)"),
    (".text node 6,0\n nop\n", 1, 12, "node (6,0) is outside the 6x5 mesh"),
    (".text row 9\n", 1, 11, "row 9 is outside the 6x5 mesh (rows 0..4)"),
    (".text rect 3,3,1,1\n", 1, 12, "rect needs X0 <= X1 and Y0 <= Y1 (inclusive corners)"),
    (".text list 0,0 0,0\n", 1, 16, "node (0,0) is listed twice"),
    (".text row 0\n nop\n.text col 0\n nop\n", 3, 7,
     "node (0,0) is selected by two .text sections: this one and the one at line 1"),
    (".text rest\n.text rest\n", 2, 7,
     "only one '.text rest' section is allowed (the first is at line 1)"),
    (".text every\n", 1, 7, "expected a node selector (all, rest, node X,Y, row Y, col X, "
                            "rect X0,Y0,X1,Y1, list X,Y ...), got 'every'"),
    (".data all\n.i8 300\n", 2, 5, "300 does not fit .i8 (-128..255)"),
    (".data all\n.f32 1e39\n", 2, 6, "1e+39 is outside the fp32 range (write inf for infinity)"),
    (".data all\n.org 1310720\n.i8 1\n", 3, 1,
     "data runs past the end of SRAM: 1310720 + 1 bytes > 1310720"),
    (".data all\n.align 3\n", 2, 8, ".align needs a power of two, got 3"),
    (".data all\n.org -4\n", 2, 6, ".org -4 is outside SRAM (0..1310720)"),
    (".data all\n.zero @x\n", 2, 7, "the .zero value cannot depend on the node (@x, @y, @id)"),
    (".data all\n.i32 1, 2\n.org 4\n.i32 3\n", 4, 1,
     "data overlaps the data of line 2 on node (0,0) (bytes 4..7)"),
    # an error about a whole indented statement points at it, not at its indentation
    (".data all\n  .i32 1, 2\n  .org 4\n  .i32 3\n", 4, 3,
     "data overlaps the data of line 2 on node (0,0) (bytes 4..7)"),
    (".data all\n .org 1310720\n .i8 1\n", 3, 2,
     "data runs past the end of SRAM: 1310720 + 1 bytes > 1310720"),
    (".equ A, B\n.equ B, A\n.text all\n addi r1, r1, A\n", 1, 9,
     "'A' is defined in terms of itself"),
    (".text all\n addi r1, r1, 1 / (2 - 2)\n", 2, 17, "division by zero"),
    (".text all\n addi r1, r1, 1.5\n", 2, 15,
     "'1.5' is not an integer (a float is allowed only as an fp32 value)"),
    (".text all\n addi r1, r1, 3 $ 4\n", 2, 17, "unexpected '$'"),
    (".text all\n addi r1, r1, 3 ` 4\n", 2, 17, "unexpected character '`'"),
    # Only ASCII digits are digits, on the operand fast paths too (int() reads any script's)
    (".text all\n addi r1, r1, \u0661\u0662\n", 2, 15, "unexpected character '\u0661'"),
    (".text all\n ld64 r1, [r2+\u0661\u0666]\n", 2, 15, "unexpected character '\u0661'"),
    (".text all\n vbcasti v1, 0x\u0663f\n", 2, 16, "unexpected character '\u0663'"),
    (".text all\n vbcasti v1, \u0663.\u0665\n", 2, 14, "unexpected character '\u0663'"),
    (".text all\n addi r1, r1, (3\n", 2, 17, "expected ')', found the end of the line"),
    (".tensor t weights f32[4]\n", 1, 11, "expected a tensor role (input, param, output, "
                                          "internal), got 'weights'"),
    (".tensor t input f16[4]\n", 1, 17, "expected a dtype (f32, bf16, i32), got 'f16'"),
    (".piece q 0,0 0\n", 1, 8, "no tensor named 'q' is declared with .tensor"),
    (".tensor t input f32[4]\n.piece t list 0,0 1,0 0\n", 2, 10,
     "a piece's selector is all, node X,Y, row Y, col X or rect X0,Y0,X1,Y1 (or X,Y), not 'list'"),
    (".tensor t input f32[4]\n.piece t rest 0\n", 2, 10,
     "a piece's selector is all, node X,Y, row Y, col X or rect X0,Y0,X1,Y1 (or X,Y), not 'rest'"),
    (".tensor t input f32[4]\n.piece t 0,0 2\n", 2, 1,
     "tensor 't': bad piece address or strides (piece on node (0,0))"),
    (".tensor t input f32[4]\n.piece t 0,0 0 offset 2 shape 4\n", 2, 1,
     "tensor 't': piece lies outside the tensor (piece on node (0,0))"),
    (".tensor t output f32[4]\n.piece t 0,0 0 shape 3\n", 1, 9,
     "output tensor 't' is not covered by its pieces: element [3] is in none"),
    (".text all\n.machine d1\n", 2, 1, ".machine must be the first statement of the file"),
    (".machine {\"cols\": 3\n", 1, 10, "bad machine JSON: Expecting ',' delimiter"),
    (".loc 0 1 1\n", 1, 6, "file index 0 has not been declared with .file"),
    ('.file 1 "a"\n', 1, 7, "file index 1 skips ahead: the next file index is 0"),
    (".meta [1]\n", 1, 7, ".meta must be a JSON object"),
]


@pytest.mark.parametrize("source, line, col, message", ERROR_CASES)
def test_error_location_message_and_caret(source, line, col, message):
    machine = H6 if ("6x5" in message or "harvested" in message) else D1 if "1310" in source \
        or "1310" in message else M4
    e = errors(source, machine)
    d = e.diagnostics[0]
    assert (d.file, d.line, d.col) == ("t.d1s", line, col), str(e)
    assert d.message.startswith(message), d.message
    src_line = source.split("\n")[line - 1]
    rendered = d.render().split("\n")
    assert rendered[0] == f"t.d1s:{line}:{col}: error: {d.message}"
    assert rendered[1] == "    " + src_line
    assert rendered[2].startswith("    " + " " * (col - 1) + "^")


def test_an_incomplete_machine_json_gets_advice_that_fits_a_directive():
    # the advice was a machine file's (base = "d1"), which the JSON form refuses as unknown
    msg = errors('.machine {"cols": 2}\n', M4).diagnostics[0].message
    assert msg.startswith("bad machine: machine description lacks: name, ")
    assert "base" not in msg and "`.machine NAME` names a shipped machine" in msg


def test_many_errors_are_reported_in_one_pass_in_line_order():
    e = errors(".text all\n add r1, r99, r2\n bogus r1\n slli r1, r1, 99\n ok: nop\n"
               " beq r1, r2, missing\n")
    assert [(d.line, d.col) for d in e.diagnostics] == [(2, 10), (3, 2), (4, 15), (6, 14)]
    assert str(e).endswith("\n4 errors")


def test_errors_inside_per_node_code_name_the_node():
    e = errors(".text all\n addi r1, r1, @x == 3 ? 1 << 40 : 0\n")
    assert [d.message for d in e.diagnostics] == [
        "immediate 1099511627776 is out of range -2147483648..2147483647 (on node (3,0))"]


HUGE = "0x" + "f" * 20_000        # its decimal form is past Python's 4,300-digit str() limit


@pytest.mark.parametrize("text", [
    f".text all\n li r1, {HUGE}\n", f".text all\n addi r1, r1, {HUGE}\n",
    f".text all\n beq r0, r0, +{HUGE}\n", f".text all\n ld32 r1, [r1+{HUGE}]\n",
    f".text all\n ld32 r1, [{HUGE}]\n", f".text all\n .word {HUGE}\n",
    f".text all\n vbcasti v1, {HUGE}\n", f".data all\n.i32 {HUGE}\n",
    f".data all\n.f32 {HUGE}\n", f".data all\n.f32 {'9' * 5000}.5\n",
    f".file 0 \"a\"\n.source {'9' * 5000} \"x\"\n"])
def test_a_literal_too_long_for_the_expression_language_is_too_long_everywhere(text):
    """Operands read by the fast paths (int(t, 0)) refuse what the expression language refuses;
    they used to reach a range message whose decimal value Python cannot print."""
    assert "is too long (at most 256 characters)" in errors(text).diagnostics[0].message


@pytest.mark.parametrize("text", [f".file 0 \"a\"\n.text all\n.loc 0 {HUGE} 1\n halt\n",
                                  f".symbol s equ {HUGE} -1\n"])
def test_a_debug_directive_with_a_huge_literal_is_an_error(text):
    assert "integers" in errors(text).diagnostics[0].message


def test_overlapping_data_on_every_node_is_one_error():
    e = errors(".data all\n.i32 1\n.org 0\n.i32 2\n"
               ".data node 1,1\n.org 64\n.i8 3\n.i8 4\n.org 65\n.i8 5\n")
    assert [(d.line, d.message) for d in e.diagnostics] == [
        (4, "data overlaps the data of line 2 on node (0,0) (bytes 0..3) and on 15 more nodes"),
        (10, "data overlaps the data of line 7 on node (1,1) (bytes 65..65)")]


def test_a_guarded_division_by_a_machine_symbol_assembles_where_the_guard_holds():
    text = ".equ STEP, @w > 1 ? 64 / (@w - 1) : 64\n.text all\n addi r1, r0, STEP\n halt\n"
    assert listing(asm(text, load_machine(mesh="1x4")))[0] == "addi r1, r0, 64"
    assert listing(asm(text))[0] == "addi r1, r0, 21"
    e = errors(".equ A, 1 && 1 / 0\n.text all\n halt\n")
    assert [(d.line, d.col, d.message) for d in e.diagnostics] == [(1, 16, "division by zero")]


def test_error_in_an_equate_is_reported_at_the_equate_once():
    e = errors(".equ BAD, 1 / 0\n.text all\n addi r1, r1, BAD\n addi r2, r2, BAD\n")
    assert [(d.line, d.col, d.message) for d in e.diagnostics] == [(1, 13, "division by zero")]


def test_too_many_errors_stops_with_a_note():
    e = errors(".text all\n" + " bogus\n" * 150)
    assert len([d for d in e.diagnostics if d.severity == "error"]) == 100
    assert e.diagnostics[-1].message == "too many errors (100); stopping"


_SOUP = sorted(PLANS) + [
    ".text", ".data", ".equ", ".org", ".align", ".zero", ".i8", ".i64", ".f32", ".bf16", ".word",
    ".tensor", ".piece", ".file", ".loc", ".source", ".symbol", ".meta", ".machine", ".init",
    "r1", "r99",
    "v2", "a1", "sp", "ra", "N", "e", "[", "]", "[r2+4]", "[x]", "+3", "-2", ",", ",", ":", "x:",
    "loop:", "loop", "x", "=", "==", "?", "(", ")", "@x", "@id", "@w", "@q", "0x10", "1e3", "inf",
    "nan", "-", "*", "/", "%", "<<", ">>", "&&", "!", "~", '"', '"a\\"b"', "#", ";", "all",
    "rest", "node", "row", "col", "rect", "list", "0,0", "1,1", "9,9", "offset", "shape",
    "strides", "f32[2,2]", "input", "output", "{", "}", "none", "99999999999999999999", "-1",
    "0", "1", "3", "\t", "$", "code", "equ", "1.5", ".L1", ".L1:"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_SOUP), max_size=7).map(" ".join), min_size=1,
                max_size=8), st.booleans())
def test_any_text_assembles_or_raises_source_error(lines, with_section):
    text = "\n".join([".text all"] * with_section + lines)
    try:
        obj = assemble(text, "soup.d1s", load_machine(mesh="3x3"))
    except SourceError as e:
        assert e.diagnostics and all(d.line >= 1 and d.col >= 1 for d in e.diagnostics)
        assert all(d.render().startswith(f"soup.d1s:{d.line}:{d.col}: ") for d in e.diagnostics)
    else:
        roundtrip(obj)


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("machine", [D1, M4], ids=["d1", "4x4"])
@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_programs_round_trip_exactly(path, machine):
    obj = assemble_file(path, machine)
    text = disassemble(obj)
    again = assemble(text, "again.d1s")
    assert again.to_bytes() == obj.to_bytes()
    # The plain listing is valid assembly too, and has the same code words.
    plain = assemble(disassemble(obj, debug=False), "plain.d1s", machine)
    assert [b.words.tolist() for b in plain.blocks] == [b.words.tolist() for b in obj.blocks]
    assert plain.node_block.tolist() == obj.node_block.tolist()


def test_programs_cover_every_instruction_group():
    used = set()
    for path in PROGRAMS:
        obj = assemble_file(path, M4)
        for b in obj.blocks:
            for w in b.words.tolist():
                try:
                    used.add(isa.decode(w)[0].group)
                except isa.EncodingError:
                    pass
    assert used == set(isa.GROUPS)


def test_disassembly_uses_labels_and_selectors():
    obj = asm(".text row 1\nloop: addi r1, r1, 1\n bne r1, r2, loop\n beq r1, r2, +5\n")
    text = disassemble(obj)
    assert ".text row 1\nloop:\n.loc 0 2 7 0 2\n    addi r1, r1, 1\n" in text
    assert "    bne r1, r2, loop\n" in text and "    beq r1, r2, +5\n" in text
    plain = disassemble(obj, debug=False)
    assert ".loc" not in plain and ".machine" not in plain and "t.d1s:3" in plain


def test_words_for_registers_the_machine_lacks_disassemble_as_words():
    word = isa.encode("add", rd=40, rs1=1, rs2=2)
    obj = ObjectFile(M4, [CodeBlock(np.array([word], dtype=np.uint64))], np.zeros(16, np.int32))
    text = disassemble(obj)
    assert f".word 0x{word:016x}  # add r40, r1, r2: not on this machine" in text
    roundtrip(obj)


def _random_word(draw) -> int:
    ins = draw(st.sampled_from(isa.INSTRUCTIONS))
    values = {}
    for f in ins.fields:
        lo, hi = f.value_range()
        values[f.name] = draw(st.integers(lo, hi))
    return isa.encode(ins.mnemonic, **values)


@st.composite
def _objects(draw):
    n_blocks = draw(st.integers(1, 3))
    # odd names that must round-trip; control characters (a newline) are refused at load
    files = draw(st.sampled_from([[], ["a.d1k"], ["a.d1k", 'b d1s "q" \\']]))
    blocks = []
    for _ in range(n_blocks):
        n = draw(st.integers(0, 12))
        words = [_random_word(draw) if draw(st.booleans()) else draw(st.integers(0, 2**64 - 1))
                 for _ in range(n)]
        rows = np.full((n, 5), -1, dtype=np.int32)
        for i in range(n):
            if files and draw(st.booleans()):
                rows[i] = [draw(st.integers(-1, len(files) - 1)), draw(st.integers(-1, 2**31 - 1)),
                           draw(st.integers(-1, 500)), draw(st.integers(-1, len(files) - 1)),
                           draw(st.integers(-1, 9999))]
        blocks.append(CodeBlock(np.array(words, dtype=np.uint64), rows))
    # The assembler stores identical blocks once, so an object with two identical blocks is
    # not one it can produce (see docs/ASSEMBLY.md); such objects are not generated.
    keys = [b.words.tobytes() + b.lines.tobytes() for b in blocks]
    assume(len(set(keys)) == len(keys))
    node_block = np.array([draw(st.integers(-1, n_blocks - 1)) for _ in range(4)], np.int32)
    names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
    symbols = [Symbol(draw(names), "code", draw(st.integers(0, 12)),
                      draw(st.integers(0, n_blocks - 1)))
               for _ in range(draw(st.integers(0, 2)))]
    data = [DataInit(draw(st.integers(0, 3)), draw(st.integers(0, 1000)),
                     draw(st.binary(min_size=1, max_size=20)))
            for _ in range(draw(st.integers(0, 2)))]
    sources = {f: draw(st.text(max_size=30)) for f in files if draw(st.booleans())}
    meta = draw(st.sampled_from([{}, {"producer": "x", "n": [1, 2.5, None]}]))
    init = {draw(st.integers(0, 3)): {draw(st.integers(1, 31)): draw(st.integers(-2**63,
                                                                              2**64 - 1))}
            for _ in range(draw(st.integers(0, 3)))}
    return ObjectFile(load_machine(mesh="2x2"), blocks, node_block, data, symbols, [], files,
                      sources, meta, InitRegs.from_nodes(4, init))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects())
def test_random_objects_round_trip_exactly(obj):
    obj.data = [d for i, d in enumerate(obj.data)
                if not any(e.node == d.node and e.addr < d.addr + len(d.data)
                           and d.addr < e.addr + len(e.data) for e in obj.data[:i])]
    roundtrip(obj)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_valid_instructions_round_trip(data):
    word = _random_word(data.draw)
    obj = ObjectFile(M4, [CodeBlock(np.array([word, word ^ 1], dtype=np.uint64))],
                     np.zeros(16, np.int32))
    again = assemble(disassemble(obj), "again.d1s")
    assert again.blocks[0].words.tolist() == [word, word ^ 1]
    assert again.to_bytes() == obj.to_bytes()


@pytest.mark.parametrize("mnemonic", sorted(m for m, p in PLANS.items()
                                            if type(p).__name__ == "_Plan"))
def test_every_mnemonic_encodes_like_the_isa_encoder(mnemonic):
    ins = isa.BY_MNEMONIC[mnemonic]
    values = {f.name: (f.value_range()[1] if f.kind != "reg" else 7) for f in ins.fields}
    word = isa.encode(mnemonic, **values)
    obj = asm(f".text all\n {format_word(word)}\n")
    assert int(obj.blocks[0].words[0]) == word



# ---- the command line ------------------------------------------------------------------------


def _d1(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_asm_disasm_round_trip(tmp_path):
    src = tmp_path / "ring.d1s"
    src.write_text((ROOT / "programs" / "asm" / "token_ring.d1s").read_text())
    r = _d1("asm", "ring.d1s", "--mesh", "4x4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote ring.d1o: " in r.stdout and "16 of 16 nodes with code" in r.stdout
    r = _d1("disasm", "ring.d1o", "-o", "again.d1s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _d1("asm", "again.d1s", "-o", "again.d1o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again.d1o").read_bytes() == (tmp_path / "ring.d1o").read_bytes()
    r = _d1("disasm", "ring.d1o", "--plain", cwd=tmp_path)
    assert r.returncode == 0 and ".text" in r.stdout and ".machine" not in r.stdout
    r = _d1("asm", "again.d1s", "--mesh", "5x5", cwd=tmp_path)
    assert r.returncode == 2 and "again.d1s:1:10: error: this file was assembled for " \
                                 "another machine" in r.stderr


def test_cli_asm_reports_errors_with_exit_status_2(tmp_path):
    (tmp_path / "bad.d1s").write_text(".text all\n    addi r1, r2, 99999999999\n    vad v1\n")
    r = _d1("asm", "bad.d1s", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[:3] == [
        "bad.d1s:2:18: error: immediate 99999999999 is out of range -2147483648..2147483647",
        "        addi r1, r2, 99999999999",
        "                     ^~~~~~~~~~~"]
    assert "bad.d1s:3:5: error: unknown instruction 'vad'; did you mean 'vand'?" in r.stderr
    assert not (tmp_path / "bad.d1o").exists()
    r = _d1("disasm", "missing.d1o", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read missing.d1o")


def test_cli_asm_of_an_object_says_it_is_not_assembly(tmp_path, capsys):
    from d1.cli import main

    (tmp_path / "prog.d1o").write_bytes(asm(".text all\n halt\n").to_bytes())
    with pytest.raises(SystemExit) as info:
        main(["asm", str(tmp_path / "prog.d1o")])       # the default output is the input
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "prog.d1o is an object (.d1o), not assembly; d1 run and d1 disasm take it" in err
    assert "would replace" not in err


def test_cli_help_has_examples():
    r = _d1("--help", cwd=ROOT)
    assert r.returncode == 0 and "asm" in r.stdout and "disasm" in r.stdout
    r = _d1("asm", "--help", cwd=ROOT)
    assert r.returncode == 0 and "d1 asm programs/asm/vadd.d1s -o vadd.d1o" in r.stdout
    r = _d1("disasm", "--help", cwd=ROOT)
    assert r.returncode == 0 and "d1 disasm vadd.d1o" in r.stdout


def test_assemble_file_errors_are_d1_errors(tmp_path):
    from d1isa.errors import D1Error

    with pytest.raises(D1Error, match="cannot read"):
        assemble_file(tmp_path / "nope.d1s")
    (tmp_path / "bin.d1s").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(D1Error, match="not UTF-8"):
        assemble_file(tmp_path / "bin.d1s")


def test_init_sets_registers_per_node_and_the_code_stays_shared():
    obj = asm(".text all\n add r1, r20, r21\n halt\n.data all\n.init r20, @x * 64\n"
              ".init r21, @y - 1\n.data node 1,1\n.init r22, 0xffffffffffffffff\n")
    assert len(obj.blocks) == 1
    assert obj.init.of(M4.node_id(0, 0)) == {21: -1}
    assert obj.init.of(M4.node_id(1, 1)) == {20: 64, 22: -1}      # r21 = 0 is not stored
    assert obj.init.of(M4.node_id(3, 2)) == {20: 192, 21: 1}
    text = disassemble(obj)
    assert ".init r20, 192\n.init r21, 1\n" in text
    roundtrip(obj)


@pytest.mark.parametrize("source, message", [
    (".data all\n.init r0, 1\n", "r0 always reads 0"),
    (".data all\n.init r40, 1\n", "register 'r40' does not exist"),
    (".data all\n.init v1, 1\n", "expected a scalar register"),
    (".data all\n.init r3\n", ".init expects REGISTER, VALUE"),
    (".text all\n.init r3, 1\n", ".init in a .text section"),
    (".data all\n.init r3, 1\n.data node 1,1\n.init r3, 2\n", "given an initial r3 twice"),
    (".data all\n.init r3, 1 << 64\n", "does not fit 64 bits"),
])
def test_init_errors(source, message):
    with pytest.raises(SourceError, match=message):
        asm(source)


def test_tensor_layouts_round_trip_through_disassembly():
    obj = asm(".data all\nA: .zero 64\n.tensor a input f32[@n, 4]\n"
              ".piece a all A offset @id, 0 shape 1, 4\n.tensor \"odd name\" internal i32[2]\n"
              ".piece \"odd name\" 3,3 0 strides 8\n")
    assert [t.name for t in obj.tensors] == ["a", "odd name"]
    assert obj.tensors[1].pieces == [TensorPiece(15, 0, (0,), (2,), (8,))]
    roundtrip(obj)
    assert isinstance(obj.tensors[0], TensorLayout)


def test_python_api_wrong_argument_types_are_d1_errors():
    """As compiler.compile_source says what to pass: bytes or None as the text, a machine's
    name as the machine, a path to disassemble were a TypeError or an AttributeError."""
    from d1isa.errors import D1Error

    with pytest.raises(D1Error, match=r"must be a str, not bytes \(decode the bytes first\)"):
        assemble(b".text all\n halt\n")
    with pytest.raises(D1Error, match="must be a str, not NoneType"):
        assemble(None)
    with pytest.raises(D1Error, match=r"make one with load_machine\('m4x4'\)"):
        assemble(".text all\n halt\n", machine="m4x4")
    with pytest.raises(D1Error, match="disassemble takes an ObjectFile, not str"):
        disassemble("prog.d1o")
    # the machine passed second, where the file name goes: a TypeError when disassembled
    with pytest.raises(D1Error, match=r"assembly text must be a str, not Machine \(pass the "):
        assemble(".text all\n halt\n", load_machine("m4x4"))


def test_the_listing_header_counts_with_thousands_separators():
    obj = assemble(".text all\n halt\n", machine=load_machine("m4x4", chips=(8, 8)))
    assert "(32x32, 1,024 live nodes), 1 code block, 1,024 nodes with code" in \
        disassemble(obj).splitlines()[1]
