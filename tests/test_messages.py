"""Messages for the smaller hostile-input cases: each names what is wrong, in the user's terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import compiler
from d1.program import load_program
from d1isa.asm import assemble
from d1isa.errors import ObjectFormatError, SourceError
from d1isa.machine import load_machine
from d1isa.objfile import ObjectFile, pack_sections
from emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
M2 = load_machine(mesh="2x2")


def test_dsl_accepts_a_utf8_byte_order_mark():
    text = "\ufeffinput a: f32[4]\nb = a * 2\noutput b\n"
    obj = compiler.compile_source(text, M2)
    assert [t.name for t in obj.tensors] == ["a", "b"]
    with pytest.raises(SourceError) as e:
        compiler.compile_source("\ufeffinput a: f32[4]\nb = a * zz\noutput b\n", M2, "k.d1k")
    assert "k.d1k:2:9: error: unknown name 'zz'" in str(e.value)


def test_control_characters_of_a_quoted_source_line_are_shown_as_question_marks():
    """A NUL showed nothing and an escape sequence acted on the terminal; each is one '?', so
    the caret stays under its column."""
    with pytest.raises(SourceError) as e:
        compiler.compile_source("input a: f32[4]\nc = a +\x1b[31m b\x00\noutput c\n", M2, "k.d1k")
    assert str(e.value).splitlines() == ["k.d1k:2:8: error: unexpected character '\\x1b'",
                                         "    c = a +?[31m b?", "           ^"]
    with pytest.raises(SourceError) as e:
        assemble("\t.text all\n\tbogus r1\x07\n", "k.d1s", M2)
    assert str(e.value).splitlines()[1:] == ["     bogus r1?", "     ^~~~~"]


def test_control_characters_quoted_in_a_message_are_spelled_as_escapes():
    """The assembler quoted raw bytes: an escape sequence in a mnemonic or an operand acted on
    the terminal ('unknown instruction 'halt'; did you mean 'halt'?' after clearing it)."""
    with pytest.raises(SourceError) as e:
        assemble(".text all\n    halt\x1b[2J\n    movi r1, foo\x1b[31m\n", "k.d1s", M2)
    lines = str(e.value).splitlines()
    assert "k.d1s:2:5: error: unknown instruction 'halt\\x1b[2J'; did you mean 'halt'?" in lines
    assert "k.d1s:3:17: error: unexpected character '\\x1b'" in lines
    assert not any("\x1b" in line for line in lines)


def test_a_strided_load_trap_names_the_faulting_lane_and_its_address():
    obj = assemble(".text all\n  li r1, 0\n  li r2, 100000\n  vlds v1, [r1+0], r2\n  halt\n",
                   "s.d1s", M2)
    emu = Emulator(obj)
    result = emu.run()
    assert result.status == "trapped"
    detail = result.traps[0].detail
    # 13 x 100000 + 4 fits the d1 node's 1,310,720 B; lane 14 does not
    assert detail.startswith("vlds: lane 14 address 1400000 (0x155cc0) = 0 + 14 x stride 100000")
    assert "outside SRAM" in detail


def test_a_corrupted_embedded_source_is_reported_against_the_object(tmp_path):
    obj = load_program(ROOT / "programs" / "elementwise.d1k", M2).obj
    name = obj.meta["source"]
    obj.sources[name] = obj.sources[name].replace("output", "outptu", 1)
    path = tmp_path / "bad.d1o"
    obj.save(path)
    prog = load_program(path)
    with pytest.raises(SourceError) as e:
        _ = prog.graph
    (d,) = e.value.diagnostics
    assert d.file == f"{path}[{name}]" and "outptu" in d.source_line


def _repacked(obj: ObjectFile, **meta_changes) -> bytes:
    """The object's bytes with top-level META fields replaced (CRC recomputed)."""
    raw = obj.to_bytes()
    sections = []
    import struct
    n = struct.unpack_from("<I", raw, 12)[0]
    for i in range(n):
        tag, _, off, length = struct.unpack_from("<4sIQQ", raw, 32 + 24 * i)
        payload = raw[off:off + length]
        if tag == b"META":
            meta = json.loads(payload)
            meta.update(meta_changes)
            payload = json.dumps(meta).encode()
        sections.append((tag, payload))
    return pack_sections(sections)


@pytest.mark.parametrize("changes", [{"tensors": 7}, {"blocks": "x"}, {"symbols": [[1]]},
                                     {"meta": {"outputs": 7}}, {"files": None}])
def test_object_errors_name_the_file_and_no_python_exception(changes):
    obj = load_program(ROOT / "programs" / "elementwise.d1k", M2).obj
    with pytest.raises(ObjectFormatError) as e:
        ObjectFile.from_bytes(_repacked(obj, **changes), "k.d1o")
    msg = str(e.value)
    assert msg.startswith("k.d1o: ")
    for word in ("TypeError", "KeyError", "ValueError", "IndexError", "Traceback"):
        assert word not in msg


@pytest.mark.parametrize("names, says", [
    (["x"], "META field 'embedded_params' names 'x', which is not a param"),
    (["nosuch"], "META field 'embedded_params' names 'nosuch', which is not a param"),
    (7, "META field 'embedded_params' must be a list of tensor names, got 7")])
def test_embedded_params_must_name_params(names, says):
    # Unchecked, these reached d1 run as errors that named no file ("no tensor named
    # 'nosuch' in this object"), after the object had loaded.
    obj = load_program(ROOT / "programs" / "train_linear.d1k", M2).obj
    meta = {**obj.meta, "embedded_params": names}
    with pytest.raises(ObjectFormatError) as e:
        ObjectFile.from_bytes(_repacked(obj, meta=meta), "k.d1o")
    assert str(e.value) == f"k.d1o: {says}"


def test_a_compiler_limit_is_reported_at_its_statement():
    text = ("input a: f32[8, 20000]\n"
            "input b: f32[20000, 8]\n"
            "c = a @ b\n"
            "output c\n")
    m = load_machine(mesh="1x1", overrides={"sram_bytes": 1 << 24})
    with pytest.raises(SourceError) as e:
        compiler.compile_source(text, m, "wide.d1k")
    (d,) = e.value.diagnostics
    assert (d.file, d.line, d.source_line) == ("wide.d1k", 3, "c = a @ b")
    assert "matmul 'c': a row of A is 80,000 bytes per node" in d.message
    assert d.message.endswith("(a limit of this compiler: the mma instructions' row stride "
                              "field holds at most 65,535 bytes; use a wider grid or split the "
                              "matmul)")


def test_assembler_limits_are_located_errors_not_crashes():
    long_literal = ".equ big, " + "9" * 5000 + "\n.text all\n  li r1, big\n  halt\n"
    with pytest.raises(SourceError) as e:
        assemble(long_literal, "big.d1s", M2)
    (d,) = e.value.diagnostics
    assert (d.line, d.col) == (1, 11) and "is too long (at most 256 characters)" in d.message
    assert len(d.render().splitlines()[1]) < 140          # a window of the long line
    growing = ".equ a, 1 << 4000\n.equ b, a * a\n.text all\n  li r1, b\n  halt\n"
    with pytest.raises(SourceError, match="8002 bits, more than the 4,160"):
        assemble(growing, "mul.d1s", M2)


@pytest.mark.parametrize("stmt", ["input x: f32[{n}]", "input x: f32[4]\ny = sum(x, axis={n})",
                                  "input x: f32[4]\ny = x + {n}.5"])
def test_a_dsl_number_too_long_for_python_is_a_located_error(stmt):
    """int() reads at most 4,300 digits: a longer dimension or axis was an internal error."""
    text = stmt.format(n="9" * 5000) + "\noutput x\n"
    with pytest.raises(SourceError) as e:
        compiler.compile_source(text, M2, "long.d1k")
    (d,) = e.value.diagnostics
    assert d.file == "long.d1k" and d.line == text.count("\n") - 1
    assert "is too long (at most 256 characters)" in d.message and len(d.render()) < 600


@pytest.mark.parametrize("n, ok", [(200, True), (999, True), (1500, False)])
def test_chained_forward_equates(n, ok):
    text = "".join(f".equ e{i}, e{i + 1} + 1\n" for i in range(n))
    text += f".equ e{n}, 1\n.text all\n  li r1, e0\n  halt\n"
    if ok:
        obj = assemble(text, "chain.d1s", M2)
        emu = Emulator(obj)
        emu.run()
        assert int(emu.regs(0)[1]) == n + 1
    else:
        with pytest.raises(SourceError, match="a chain of more than 1,000 equates"):
            assemble(text, "chain.d1s", M2)
