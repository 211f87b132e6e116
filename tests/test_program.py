"""The one loader (d1/program.py): what each kind of file becomes, and how a requested machine
meets an object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from d1.cli import cli, main
from d1.program import load_program
from d1isa.errors import D1Error
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parent.parent
EW = ROOT / "programs" / "elementwise.d1k"
RING = ROOT / "programs" / "asm" / "token_ring.d1s"
M4 = load_machine(mesh="4x4")


def test_each_suffix_becomes_its_kind():
    dsl = load_program(EW, M4)
    assert dsl.kind == "dsl" and dsl.compiled is not None and dsl.dsl[1] == str(EW)
    assert dsl.graph is dsl.compiled.graph and dsl.inputs and dsl.outputs
    asm = load_program(RING, M4)
    assert asm.kind == "asm" and asm.dsl is None and asm.graph is None
    assert asm.tolerance is None


def test_an_object_keeps_its_dsl_and_any_suffix_with_the_magic_is_an_object(tmp_path):
    obj = load_program(EW, M4).obj
    odd = tmp_path / "kernel.bin"
    obj.save(odd)
    prog = load_program(odd)
    assert prog.kind == "object" and prog.dsl[0] == EW.read_text()
    assert prog.machine.to_dict() == M4.to_dict() and prog.notes == []
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(D1Error, match="unknown kind of program"):
        load_program(text)
    with pytest.raises(D1Error, match="no such file"):
        load_program(tmp_path / "missing.d1o")


def test_timing_only_options_apply_to_the_object_with_a_note(tmp_path):
    path = tmp_path / "ew.d1o"
    load_program(EW, M4).obj.save(path)
    before = path.read_bytes()
    prog = load_program(path, M4.replace(hop_latency=7, clock_hz=1e9))
    assert prog.kind == "object" and prog.compiled is None
    assert prog.machine.hop_latency == 7 and prog.machine.clock_hz == 1e9
    assert len(prog.notes) == 1 and "clock_hz, hop_latency" in prog.notes[0]
    assert path.read_bytes() == before


@pytest.mark.parametrize("change", [{"link_bytes_per_cycle": 16}, {"fifo_depth": 2},
                                    {"sram_bytes": 1 << 19}])
def test_code_generating_options_recompile_from_the_embedded_source(tmp_path, change):
    path = tmp_path / "ew.d1o"
    load_program(EW, M4).obj.save(path)
    want = M4.replace(**change)
    prog = load_program(path, want)
    assert prog.kind == "dsl" and prog.compiled is not None
    assert prog.machine.to_dict() == want.to_dict()
    assert "recompiled" in prog.notes[0] and next(iter(change)) in prog.notes[0]


def test_an_object_without_source_cannot_change_code_generating_options(tmp_path):
    obj = load_program(EW, M4).obj
    obj.sources.clear()
    path = tmp_path / "bare.d1o"
    obj.save(path)
    with pytest.raises(D1Error, match="link_bytes_per_cycle, which changes code generation"):
        load_program(path, M4.replace(link_bytes_per_cycle=16))
    # timing still applies; and without a DSL source there is nothing to --check against
    prog = load_program(path, M4.replace(hop_latency=3))
    assert prog.graph is None
    with pytest.raises(D1Error, match="--check needs a DSL program"):
        prog.check({}, {})


def test_link_width_does_not_rebuild_hand_written_assembly(tmp_path):
    path = tmp_path / "ring.d1o"
    load_program(RING, M4).obj.save(path)
    prog = load_program(path, M4.replace(link_bytes_per_cycle=8))
    assert prog.kind == "object" and "requested timing" in prog.notes[0]
    prog = load_program(path, load_machine(mesh="3x3"))
    assert prog.kind == "asm" and "re-assembled" in prog.notes[0]


def test_compiler_options_apply_to_dsl_programs_only():
    from compiler.pipeline import CompileOptions
    with pytest.raises(D1Error, match="-O compiler options apply to .d1k"):
        load_program(RING, M4, CompileOptions(matmul="naive"))


def test_run_check_parses_and_checks_the_source_once(tmp_path, monkeypatch):
    calls = {"parse": 0, "check": 0}

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    import compiler
    import compiler.pipeline
    monkeypatch.setattr(compiler.pipeline, "parse", counting("parse", compiler.parse.parse))
    monkeypatch.setattr(compiler.pipeline, "check", counting("check", compiler.check.check))
    monkeypatch.setattr(compiler, "_parse", counting("parse", compiler.parse.parse))
    monkeypatch.setattr(compiler, "_check", counting("check", compiler.check.check))
    r = CliRunner().invoke(cli, ["run", str(EW), "--mesh", "4x4", "--check", "--threads", "1",
                                 "--out-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "ok" in r.output
    assert calls == {"parse": 1, "check": 1}


def test_input_arrays_draw_missing_dsl_inputs_and_reject_unknown_names():
    prog = load_program(EW, M4)
    arrays, missing = prog.input_arrays({}, seed=3)
    assert set(arrays) == set(prog.inputs) and missing == []
    again, _ = prog.input_arrays({}, seed=3)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    with pytest.raises(D1Error, match="no input tensor 'nope'"):
        prog.input_arrays({"nope": np.zeros(3)}, seed=0)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "programs").glob("*.d1k")))
def test_an_unchecked_object_run_draws_the_inputs_the_graph_would(tmp_path, name):
    """`d1 run X.d1o` without --check draws its inputs from the object's record (no compiler
    import, no second check of the embedded source); the numbers must be make_inputs's."""
    import compiler

    obj = load_program(ROOT / "programs" / name, M4).obj
    obj.save(tmp_path / "p.d1o")
    prog = load_program(tmp_path / "p.d1o")
    quick = prog._drawn_without_graph(seed=5)
    if prog.params:
        assert quick is None                    # a param's INIT needs the graph
        return
    assert quick is not None and "graph" not in prog.__dict__
    want = compiler.make_inputs(prog.graph, 5)
    assert list(quick) == list(want)
    for k in want:
        assert quick[k].shape == want[k].shape and quick[k].dtype == want[k].dtype
        assert np.array_equal(quick[k].view(np.uint32), want[k].view(np.uint32)), k
    arrays, _ = prog.input_arrays({}, seed=5, checked=False)
    assert all(np.array_equal(arrays[k], want[k]) for k in want)


def test_python_api_wrong_argument_types_are_d1_errors():
    """A machine name where a Machine goes, bytes or None where text goes, an object where a
    path goes, anything but a snapshot to restore: a D1Error that says what to pass, not an
    AttributeError or TypeError from deep inside."""
    import compiler
    from emulator import Emulator

    src = "input a: f32[4, 4]\nc = relu(a)\noutput c\n"
    with pytest.raises(D1Error, match=r"load_machine\('m4x4'\)"):
        compiler.compile_source(src, machine="m4x4")
    with pytest.raises(D1Error, match="not int"):
        compiler.reference(src, {"a": np.zeros((4, 4))}, machine=4)
    with pytest.raises(D1Error, match="must be a str, not bytes"):
        compiler.compile_source(src.encode(), machine=M4)
    with pytest.raises(D1Error, match="must be a str, not NoneType"):
        compiler.compile_source(None, machine=M4)
    with pytest.raises(D1Error, match=r"load_machine\('m4x4'\)"):
        load_program(EW, "m4x4")
    obj = compiler.compile_source(src, machine=M4)
    for bad in (None, 1, obj):
        with pytest.raises(D1Error, match="takes the path of a program file"):
            load_program(bad, M4)
    emu = Emulator(obj)
    for bad in (None, {}):
        with pytest.raises(D1Error, match="takes a Snapshot"):
            emu.restore(bad)
    other = Emulator(compiler.compile_source(src, machine=load_machine(mesh="2x2")))
    with pytest.raises(D1Error, match="another machine"):
        emu.restore(other.snapshot())


def test_python_api_wrong_options_seeds_and_kinds_are_d1_errors():
    """Options that are not a CompileOptions, a negative or textual init seed and an unknown
    kind used to be AttributeError, numpy's ValueError or TypeError, and ValueError."""
    import compiler
    from d1.train import Trainer

    src = "input a: f32[4, 4]\nc = relu(a)\noutput c\n"
    with pytest.raises(D1Error, match="options must be a compiler.CompileOptions, not str"):
        compiler.compile_source(src, machine=M4, options="matmul=naive")
    with pytest.raises(D1Error, match="options must be a compiler.CompileOptions, not dict"):
        load_program(EW, M4, options={"matmul": "naive"})
    with pytest.raises(D1Error, match="unknown program kind 'zzz'"):
        load_program(EW, M4, kind="zzz")
    for bad in (-1, "1", 1.5, True):
        with pytest.raises(D1Error, match=r"Trainer\(init_seed=...\) takes an integer >= 0"):
            Trainer(ROOT / "programs" / "train_linear.d1k", machine=M4, init_seed=bad)


def test_input_arrays_and_make_inputs_check_their_arguments():
    """Inputs or params that are not mappings, and seeds that are not integers >= 0, were a
    TypeError, an AttributeError or numpy's ValueError."""
    import compiler

    prog = load_program(EW, M4)
    for given, params, says in [(None, None, "inputs must be a mapping"),
                                ({}, [1], "params must be a mapping")]:
        with pytest.raises(D1Error, match=f"input_arrays: {says} of tensor names"):
            prog.input_arrays(given, 0, params)
    for seed in (-1, "1", 2.0):
        with pytest.raises(D1Error, match=r"seed must be an integer >= 0, got "):
            prog.input_arrays({}, seed)
        with pytest.raises(D1Error, match=r"seed must be an integer >= 0, got "):
            compiler.make_inputs(prog.graph, seed)
    with pytest.raises(D1Error, match=r"the seed of the params' INITs must be an integer"):
        compiler.init_params(prog.graph, -1)


def test_the_note_on_ignored_params_names_a_few(capsys):
    """A --params file of 20,000 arrays that are not params printed every name in one note,
    a 150 KB line; it names SHOWN_IGNORED of them and counts the rest."""
    from d1.commands.run import SHOWN_IGNORED, params_for

    prog = load_program(ROOT / "programs" / "train_linear.d1k", M4)
    many = {f"m{i}": np.zeros(1) for i in range(20_000)}
    assert params_for(prog, many, Path("p.npz")) == {}
    err = capsys.readouterr().err
    shown = ", ".join(f"m{i}" for i in range(SHOWN_IGNORED))
    assert err == (f"note: --params p.npz: {shown} and 19,992 more are not params of "
                   f"{prog.path}; ignored\n")


@pytest.mark.parametrize("args, says", [
    (["compile", "prog.d1s"], "prog.d1s is assembly (.d1s), not a DSL program; d1 asm takes it"),
    (["compile", "prog.d1s", "--emit", "ir"], "prog.d1s is assembly"),
    (["compile", "prog.d1o"], "prog.d1o is an object (.d1o), not a DSL program"),
    (["asm", "prog.d1k"], "prog.d1k is a DSL program (.d1k), not assembly; d1 compile takes it"),
    (["disasm", "prog.d1s"], "prog.d1s is assembly (.d1s), not an object"),
    (["import", "prog.d1s"], "prog.d1s is assembly (.d1s), not an ONNX model"),
    # without -o the output is prog.d1k itself: the kind is said, not the overwrite refused
    (["import", "prog.d1k"], "prog.d1k is a DSL program (.d1k), not an ONNX model"),
    (["run", "prog.txt"], "expected .d1k DSL, .onnx model, .d1s assembly or .d1o object"),
])
def test_a_command_of_one_kind_names_a_file_of_another_kind(tmp_path, monkeypatch, capsys, args,
                                                             says):
    """`d1 compile prog.d1s` said "unexpected character '.'" at the first directive, and
    `d1 compile prog.d1o` "not UTF-8 text": a suffix of another kind is named as such."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.d1s").write_text(RING.read_text())
    (tmp_path / "prog.d1k").write_text(EW.read_text())
    (tmp_path / "prog.txt").write_text("hello\n")
    load_program(EW, M4).obj.save(tmp_path / "prog.d1o")
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err, err


def test_roofline_says_what_the_loader_did_to_an_object(tmp_path, capsys):
    """`d1 roofline OBJ --set hop_latency=3` applied the timing (or recompiled, for a
    code-generating option) without a word; `d1 run` and `d1 debug` print the loader's note."""
    obj = tmp_path / "ew.d1o"
    load_program(EW, M4).obj.save(obj)
    for option, says in (("hop_latency=3", "applying the requested timing"),
                         ("fifo_depth=2", "recompiled")):
        with pytest.raises(SystemExit) as e:
            main(["roofline", str(obj), "--set", option])
        err = capsys.readouterr().err
        assert e.value.code == 0 and f"note: {says}" in err, err
