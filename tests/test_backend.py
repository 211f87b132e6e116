"""The compiler's back end without assembly text: instructions as data, linking, and --emit asm.

Instructions are checked against the ISA table when they are built (a bad operand is an error
naming the instruction, the operand and the DSL location), and encode exactly as the assembler
encodes their text. The linker (d1isa.asm.layout, shared with the assembler) makes the blocks,
node map, branches and line rows a hand-written program expects. Every example program's
`--emit asm` text re-assembles to the very object the compiler links.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from progkit import compile_program

from compiler.asmgen import Code
from compiler.emit import RELAY_LOOP_MIN, compress_relays
from compiler.pipeline import compile_text, emit_stage
from d1isa import isa
from d1isa.asm import PLANS, assemble
from d1isa.asm.layout import Linker, no_globals
from d1isa.asm.program import Instr, InstrError, InstrSet, Label, render, section
from d1isa.asm.syntax import Diagnostics
from d1isa.machine import DIRECTIONS, default_machine, load_machine

ROOT = Path(__file__).resolve().parent.parent
D1 = default_machine()
M4 = load_machine(mesh="4x4")


def words_of_text(lines: list[str], machine=M4) -> list[int]:
    obj = assemble(".text all\n" + "\n".join(lines) + "\n", "t.d1s", machine)
    return [int(w) for w in obj.blocks[0].words]


# ---- instructions as data ---------------------------------------------------------------------

@pytest.mark.parametrize("mnemonic,ops,message", [
    ("vad", ("v1", "v2", "v3"), "'vad 'v1', 'v2', 'v3'': unknown instruction 'vad'; did you "
                                "mean 'vand'?"),
    ("addi", ("r1", "r2"), "'addi' takes 3 operands (addi rd, rs1, imm), got 2"),
    ("addi", ("v1", "r2", 1), "operand 1: expected a scalar register (r0..r31), got the vector "
                              "register 'v1'"),
    ("add", ("r1", "r40", "r2"), "operand 2: register 'r40' does not exist: this machine has 32 "
                                 "scalar registers (r0..r31)"),
    ("addi", ("r1", "r2", 1 << 31), "operand 3: immediate 2147483648 is out of range "
                                    "-2147483648..2147483647"),
    ("slli", ("r1", "r2", 64), "operand 3: shift amount 64 is out of range 0..63"),
    ("addi", ("r1", "r2", True), "operand 3: expected an integer, got True"),
    ("addi", ("r1", "r2", 1.5), "operand 3: expected an integer, got 1.5"),
    ("vld", ("v0", ("r1", 1 << 32)), "operand 2: memory offset 4294967296 is out of range"),
    ("vld", ("v0", "r1"), "operand 2: expected a memory operand (base register, offset), "
                          "got 'r1'"),
    ("sendb", (4, "r14", "r15"), "operand 1: direction 4 is out of range 0..3"),
    ("sendb", ("N", "r14", "r15"), "operand 1: expected a direction (0..3, an index of "
                                   "DIRECTIONS), got 'N'"),
    ("vbcasti", ("v0", 1 << 32), "operand 2: fp32 immediate 4294967296 is out of range"),
    ("li", ("r1", 1 << 64), "operand 2: li value 18446744073709551616 does not fit 64 bits"),
    ("mv", ("r1", "a0"), "operand 2: expected a scalar register (r0..r31), got the accumulator "
                         "register 'a0'"),
    ("acc.zero", ("a8",), "operand 1: register 'a8' does not exist: this machine has 8 "
                          "accumulator registers (a0..a7)"),
])
def test_instr_rejects_bad_operands(mnemonic, ops, message):
    instrs = InstrSet(D1, 0, "em.d1k")
    with pytest.raises(InstrError) as e:
        instrs.instr(mnemonic, ops, (3, 5))
    assert str(e.value).startswith("em.d1k:3:5: invalid instruction")
    assert message in str(e.value)


def test_instr_rejects_unhashable_operands():
    with pytest.raises(InstrError, match="operands must be registers, ints or"):
        InstrSet(D1).instr("vld", ("v0", ["r1", 0]))


def test_ra_needs_a_machine_with_32_registers():
    small = load_machine(mesh="2x2", overrides={"scalar_regs": 16})
    with pytest.raises(InstrError, match="'ra' is r31, but this machine has only 16"):
        InstrSet(small).instr("ret")


def test_code_op_fails_at_the_kernel_line_with_the_dsl_location():
    instrs = InstrSet(M4, 0, "net.d1k")
    code = Code(instrs)
    code.at((7, 12))
    code.op("addi", "r1", "r1", 4)
    with pytest.raises(InstrError, match=r"^net\.d1k:7:12: invalid instruction 'addi r1, r1, "
                                         r"4294967296': operand 3: immediate"):
        code.op("addi", "r1", "r1", 1 << 32)
    assert code.ninstr == 1


def test_identical_instructions_are_one_object():
    instrs = InstrSet(M4)
    a = instrs.instr("vadd", ("v1", "v2", "v3"), (1, 1))
    assert instrs.instr("vadd", ("v1", "v2", "v3"), (1, 1)) is a
    b = instrs.instr("vadd", ("v1", "v2", "v3"), (2, 1))
    assert b is not a and b.words == a.words and b.row != a.row
    assert instrs.rows[a.row] == (0, 1, 1, -1, -1) and instrs.rows[b.row] == (0, 2, 1, -1, -1)
    assert instrs.label(".L1") is instrs.label(".L1")


def test_li_is_one_or_two_words():
    instrs = InstrSet(M4)
    short, long_ = instrs.instr("li", ("r3", -5)), instrs.instr("li", ("r3", 1 << 40))
    assert list(short.words) == words_of_text(["li r3, -5"])
    assert list(long_.words) == words_of_text([f"li r3, {1 << 40}"])
    assert len(short.words) == 1 and len(long_.words) == 2


def _operand(draw, kind: int, vmin: int, vmax: int, machine):
    from d1isa.asm import encode as enc
    if kind <= enc.K_A:
        count = (machine.scalar_regs, machine.vector_regs, machine.accumulators)[kind]
        return f"{'rva'[kind]}{draw(st.integers(0, count - 1))}"
    if kind == enc.K_MEM:
        return (f"r{draw(st.integers(0, machine.scalar_regs - 1))}",
                draw(st.integers(enc.INT32[0], enc.INT32[1])))
    if kind == enc.K_DIR:
        return draw(st.integers(0, len(DIRECTIONS) - 1))
    if kind == enc.K_FLOAT:
        return draw(st.integers(0, 0xFFFFFFFF))
    return draw(st.integers(vmin, vmax))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(m for m, p in PLANS.items() if type(p).__name__ == "_Plan")),
       st.data())
def test_built_instructions_encode_like_their_text(mnemonic, data):
    plan = PLANS[mnemonic]
    ops = tuple(_operand(data.draw, kind, vmin, vmax, D1)
                for kind, _, _, vmin, vmax, _ in plan.ops)
    ins = InstrSet(D1).instr(mnemonic, ops)
    assert list(ins.words) == words_of_text([render(ins)], D1)
    assert isa.decode(ins.words[0])[0].mnemonic == mnemonic


@pytest.mark.parametrize("mnemonic,ops,text", [
    ("mv", ("r5", "r3"), "mv r5, r3"),
    ("neg", ("r1", "r2"), "neg r1, r2"),
    ("not", ("r1", "r2"), "not r1, r2"),
    ("ret", (), "ret"),
    ("relayb", (1, 3, "r14", "r15"), "relayb E, W, r14, r15"),
    ("vst", ("v0", ("r1", -64)), "vst v0, [r1-64]"),
    ("vbcasti", ("v1", 0xFF800000), "vbcasti v1, 0xff800000"),
    ("beq", ("r1", "r2", -3), "beq r1, r2, -3"),
])
def test_pseudo_and_special_operands_render_and_encode(mnemonic, ops, text):
    ins = InstrSet(M4).instr(mnemonic, ops)
    assert render(ins) == "  " + text
    assert list(ins.words) == words_of_text([text])


# ---- linking ----------------------------------------------------------------------------------

def _program(instrs: InstrSet, n: int, big: bool) -> list:
    """A counted loop; with `big`, a 64-bit li before the label shifts the branch target."""
    loc = (2, 1)
    items = [instrs.mark(loc), instrs.instr("li", ("r1", n), loc)]
    if big:
        items.append(instrs.instr("li", ("r2", 1 << 40), loc))
    items += [instrs.label(".L1"), instrs.instr("addi", ("r1", "r1", -1), (3, 4)),
              instrs.instr("bnez", ("r1", ".L1"), (3, 4)), instrs.instr("halt", (), (3, 4))]
    return items


def _text(items: list) -> list[str]:
    return [render(it) for it in items]


def test_linker_builds_shared_blocks_branches_and_line_rows():
    instrs = InstrSet(M4)
    progs = {0: _program(instrs, 5, False), 5: _program(instrs, 5, False),
             9: _program(instrs, 7, True)}
    diags = Diagnostics("t.d1k", [])
    linker = Linker(M4, diags, no_globals, instrs.rows)
    for nid, items in progs.items():
        sec = section(items)
        sec.nodes = [nid]
        linker.link_section(sec)
    obj = linker.finish([], [], ["t.d1k"], {"t.d1k": ""}, {})
    assert not diags and obj is not None
    # Nodes 0 and 5 run identical code: one block. Nodes without code point nowhere.
    assert len(obj.blocks) == 2
    assert obj.node_block.tolist() == [0, -1, -1, -1, -1, 0, -1, -1, -1, 1] + [-1] * 6
    # The branches and the two-word li encode as the assembler encodes the same text.
    for b, items in ((0, progs[0]), (1, progs[9])):
        want = assemble(".text all\n" + "\n".join(_text(items)).replace(".loc 0 ", "# ") + "\n",
                        "t.d1s", M4).blocks[0].words
        assert obj.blocks[b].words.tolist() == want.tolist()
    assert obj.blocks[1].words.size == 6
    assert isa.decode(int(obj.blocks[1].words[4]))[1]["off"] == -1
    # Line rows: file 0, the DSL line and column, no assembly location.
    assert obj.blocks[1].lines.tolist() == [[0, 2, 1, -1, -1]] * 3 + [[0, 3, 4, -1, -1]] * 3


def test_linker_reports_an_unplaced_label():
    instrs = InstrSet(M4)
    sec = section([instrs.instr("j", (".nowhere",), (4, 2))])
    sec.nodes = [0]
    diags = Diagnostics("t.d1k", ["", "", "", "c = a @ b"])
    linker = Linker(M4, diags, no_globals, instrs.rows)
    linker.link_section(sec)
    assert [d.message for d in diags.sorted()] == ["unknown label '.nowhere'"]
    assert diags.sorted()[0].line == 4


def test_a_label_placed_twice_is_an_error():
    instrs = InstrSet(M4)
    with pytest.raises(InstrError, match="label '.L1' is placed twice"):
        section([instrs.label(".L1"), instrs.instr("nop"), instrs.label(".L1")])


def test_long_runs_of_relays_become_a_loop_and_a_location_change_breaks_a_run():
    instrs = InstrSet(M4)
    code = Code(instrs)
    code.at((1, 1))
    for _ in range(RELAY_LOOP_MIN + 1):
        code.relay(3, 1)
    code.at((2, 1))
    code.at((1, 1))             # back at the same location: still a new run
    for _ in range(RELAY_LOOP_MIN - 1):
        code.relay(3, 1)
    out = compress_relays(code.items, instrs)
    text = _text(out)
    assert text[:4] == [".loc 0 1 1", "  li r13, 3", ".R1:", "  relay W, E"]
    assert text[4:9] == ["  relay W, E"] * 3 + ["  addi r13, r13, -1", "  bnez r13, .R1"]
    assert text[9:12] == ["  relay W, E", ".loc 0 2 1", ".loc 0 1 1"]
    assert text[12:] == ["  relay W, E"] * (RELAY_LOOP_MIN - 1)
    kinds = [type(it) for it in out]
    assert kinds.count(Label) == 1 and kinds.count(Instr) == 8 + RELAY_LOOP_MIN - 1


# ---- the compiler end to end --------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((ROOT / "programs").glob("*.d1k")),
                         ids=lambda p: p.name)
def test_emit_asm_reassembles_to_the_linked_object(path):
    text = path.read_text()
    name = f"programs/{path.name}"
    obj = compile_program(text, D1, name)
    asm = emit_stage(text, "asm", D1, name)
    again = assemble(asm, name[:-4] + ".d1s", D1)
    assert again.to_bytes() == obj.to_bytes()
    # The object holds the DSL source and the compiler's metadata, not the assembly text.
    assert obj.files == [name] and obj.sources == {name: text}
    assert obj.meta["producer"] == "d1 compile" and obj.symbols == []


def test_compiling_writes_and_parses_no_assembly_text(monkeypatch):
    import compiler.emit
    import compiler.pipeline
    import d1isa.asm.assembler

    def refuse(*args, **kwargs):
        raise AssertionError("assembly text made or parsed while compiling")
    monkeypatch.setattr(compiler.emit, "render", refuse)
    monkeypatch.setattr(compiler.emit, "assembly_text", refuse)
    monkeypatch.setattr(compiler.pipeline, "assembly_text", refuse)
    monkeypatch.setattr(d1isa.asm.assembler.Assembler, "run", refuse)
    c = compile_text((ROOT / "programs" / "residual.d1k").read_text(), M4, "r.d1k")
    rows = np.concatenate([b.lines for b in c.obj.blocks])
    assert (rows[:, 0] == 0).all() and (rows[:, 1] > 0).all() and (rows[:, 3:] == -1).all()
    monkeypatch.undo()
    assert c.asm.startswith("# Compiled by d1 compile from r.d1k")
