"""The compiler back end: every program compiles and runs correctly on many machines.

Each run compiles a .d1k program, scatters seeded inputs, runs the emulator and compares every
output with the reference evaluator under the --check tolerance (compiler.compare_outputs).
Machines: a 4 x 4 mesh, the full d1 chip (a few, since a d1 run costs seconds), the harvested
h6x5, tiny and odd meshes, and FIFOs of depth 1 with small messages (no deadlock is possible by
construction; these runs check it).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.compare import BF16_TOLERANCE, F32_TOLERANCE
from compiler.grid import choose_grid
from compiler.pipeline import CompileOptions, compile_text, emit_stage
from d1isa.asm import assemble
from d1isa.errors import D1Error, SourceError
from d1isa.machine import load_machine
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(p.stem for p in (ROOT / "programs").glob("*.d1k"))


def machine(name: str = "d1", mesh: str | None = None, **sets):
    return load_machine(name, mesh=mesh, overrides=sets or None)


def run_program(text: str, m, options: CompileOptions | None = None, seed: int = 0,
                filename: str = "prog.d1k"):
    """Compile, run and compare; return (rows, emulator, result)."""
    obj = compiler.compile_source(text, m, filename, options)
    graph = compiler.check_source(text, m, filename)
    inputs = compiler.make_inputs(graph, seed)
    ref = compiler.evaluate(graph, inputs)
    emu = Emulator(obj, max_cycles=20_000_000)
    for name, value in inputs.items():
        emu.set_input(name, value)
    result = emu.run()
    assert result.ok, result.report()
    outs = {o.name: emu.output(o.name) for o in graph.outputs}
    rows = compiler.compare_outputs(graph, outs, ref)
    for name, abs_err, rel_err, tol, ok in rows:
        assert ok, f"{name}: max |err| {abs_err:.3g} > {tol:.3g} (relative {rel_err:.3g})"
    return rows, emu, result


def source(name: str) -> str:
    return (ROOT / "programs" / f"{name}.d1k").read_text()


# ---- the shipped programs ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PROGRAMS)
def test_program_on_4x4(name: str) -> None:
    run_program(source(name), machine("m4x4"), filename=f"{name}.d1k")


@pytest.mark.parametrize("name", ["mlp", "attention"])
def test_program_on_d1(name: str) -> None:
    rows, emu, result = run_program(source(name), machine("d1"), filename=f"{name}.d1k")
    # The work is spread over the chip, not run on a corner of it.
    assert sum(1 for c in emu.stats()["nodes"]["clock"] if c > 0) > 200


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_on_harvested_h6x5(name: str) -> None:
    run_program(source(name), machine("h6x5"), filename=f"{name}.d1k")


@pytest.mark.parametrize("name", ["mlp", "attention", "layernorm", "softmax"])
def test_fifo_depth_1_small_messages_never_deadlock(name: str) -> None:
    m = machine("h6x5", fifo_depth=1, max_message_bytes=64)
    run_program(source(name), m, filename=f"{name}.d1k")


def test_fifo_depth_1_with_multi_hop_summa_phases() -> None:
    m = machine("d1", mesh="5x5", fifo_depth=1, max_message_bytes=256)
    run_program(source("matmul"), m, CompileOptions(reach=3), filename="matmul.d1k")


@pytest.mark.parametrize("mesh", ["1x1", "2x2", "3x7"])
@pytest.mark.parametrize("name", ["residual", "softmax", "matmul_odd"])
def test_small_and_odd_meshes(mesh: str, name: str) -> None:
    run_program(source(name), machine("d1", mesh=mesh), filename=f"{name}.d1k")


# ---- matmul shapes and options ----------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype,mesh,opts", [
    ((37, 53, 29), "f32", "3x2", {}),
    ((9, 17, 33), "bf16", "4x4", {}),
    ((64, 40, 24), "bf16", "4x4", {"matmul": "naive"}),
    ((50, 70, 30), "bf16", "4x4", {"double_buffer": False}),
    ((33, 100, 20), "bf16", "4x4", {"preskew": False}),
    ((1, 7, 1), "f32", "2x2", {}),
    ((100, 8, 3), "bf16", "2x3", {}),
    ((24, 130, 17), "f32", "3x7", {"matmul": "naive"}),
    ((40, 90, 70), "bf16", "5x5", {"reach": 3}),
    # B panels of several messages each: usable only once the last one is in
    ((64, 784, 256), "bf16", "3x7", {}),
])
def test_matmul_shapes_and_options(shape, dtype, mesh, opts) -> None:
    M, K, N = shape
    text = (f"input a: {dtype}[{M}, {K}]\ninput b: {dtype}[{K}, {N}]\n"
            f"c = a @ b\noutput c\n")
    run_program(text, machine("d1", mesh=mesh), CompileOptions(**opts))


def test_matmul_on_harvested_nonsquare_grid_with_unequal_panels() -> None:
    # h6x5's grid is 4 x 5: A's K blocks (over 5 columns) and B's (over 4 rows) differ, so
    # panels are packed sub-blocks.
    text = "input a: bf16[45, 77]\ninput b: bf16[77, 52]\nc = a @ b\noutput c\n"
    run_program(text, machine("h6x5"))


def test_chained_matmuls_and_elementwise_between() -> None:
    text = """input x: bf16[40, 24]
input w1: bf16[24, 48]
input w2: f32[48, 12]
input b: f32[48]
h = tanh(x @ w1 + b)
y = h @ w2
z = transpose(y) * 0.5
output y, z
"""
    run_program(text, machine("h6x5"))


# ---- N-d values: the replicated fallbacks ------------------------------------------------------

ND = """input x: f32[3, 4, 5]
input r: f32[4, 1]
input w: bf16[5]
input s0: f32[1]
y = x * r + w
s = sum(y, axis=1)
m = max(x, axis=0)
mn = mean(x, axis=2)
p = softmax(x, axis=1)
q = softmax(cast(x, bf16), axis=-1)
z = sum(sum(w, axis=0) * s0, axis=0)
output s, m, mn, p, q, z
"""


@pytest.mark.parametrize("mesh", ["1x1", "3x2"])
def test_nd_broadcasts_reductions_softmax(mesh: str) -> None:
    run_program(ND, machine("d1", mesh=mesh))


def test_4d_input_and_output_layout_covers_every_element() -> None:
    text = "input x: bf16[2, 3, 4, 5]\ny = relu(x) + 1\noutput y\n"
    rows, emu, _ = run_program(text, machine("d1", mesh="3x2"))
    t = emu.obj.tensor("y")
    covered = np.zeros(t.shape, dtype=int)
    for p in t.pieces:
        covered[tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))] += 1
    assert covered.min() >= 1


# ---- properties of the object -----------------------------------------------------------------

def test_compiling_twice_gives_identical_bytes() -> None:
    m = machine("h6x5")
    a = compiler.compile_source(source("attention"), m, "attention.d1k").to_bytes()
    b = compiler.compile_source(source("attention"), m, "attention.d1k").to_bytes()
    assert a == b


@pytest.mark.parametrize("name", ["mlp", "layernorm"])
def test_emitted_asm_reassembles_to_the_same_object(name: str) -> None:
    m = machine("m4x4")
    obj = compiler.compile_source(source(name), m, f"{name}.d1k")
    asm = emit_stage(source(name), "asm", m, f"{name}.d1k")
    assert assemble(asm, f"{name}.d1s").to_bytes() == obj.to_bytes()


def test_every_instruction_maps_to_a_dsl_line() -> None:
    text = source("mlp")
    obj = compiler.compile_source(text, machine("m4x4"), "mlp.d1k")
    assert obj.files == ["mlp.d1k"]
    assert obj.sources["mlp.d1k"] == text
    nlines = len(text.splitlines())
    for b in obj.blocks:
        assert (b.lines[:, 0] == 0).all()
        assert ((b.lines[:, 1] >= 1) & (b.lines[:, 1] <= nlines)).all()
    # The matmul's instructions point at the '@' of line 6.
    regions = obj.meta["regions"]
    assert {"op": "matmul[summa]", "name": "%t4", "line": 6, "col": 12} in regions


def test_tensor_layouts_roles_and_dtypes() -> None:
    obj = compiler.compile_source(source("mlp"), machine("m4x4"), "mlp.d1k")
    roles = {t.name: (t.role, t.dtype, t.shape) for t in obj.tensors}
    assert roles == {"x": ("input", "bf16", (64, 784)), "w1": ("input", "bf16", (784, 256)),
                     "b1": ("input", "f32", (256,)), "w2": ("input", "bf16", (256, 10)),
                     "logits": ("output", "f32", (64, 10))}
    # b1 is read as a row vector by every node: it is replicated down the grid rows.
    b1 = obj.tensor("b1")
    assert len(b1.pieces) == 16
    assert obj.meta["inputs"] == ["x", "w1", "b1", "w2"]
    assert obj.meta["outputs"] == ["logits"]


def test_grid_on_d1_uses_only_live_nodes() -> None:
    m = machine("d1")
    g = choose_grid(m)
    assert (g.P, g.Q) == (16, 16)
    for y in g.ys:
        for x in g.xs:
            assert m.live_grid[y, x]


def test_program_too_large_for_per_node_sram_names_the_sizes() -> None:
    m = machine("d1", mesh="2x2", sram_bytes=65536)
    text = "input a: f32[200, 200]\ninput b: f32[200, 200]\nc = a + b\noutput c\n"
    with pytest.raises(SourceError) as e:
        compiler.compile_source(text, m, "big.d1k")
    msg = str(e.value)
    assert "big.d1k:" in msg and "does not fit in a node's SRAM" in msg
    assert "65,536 B" in msg


def test_machine_without_enough_registers_is_a_clear_error() -> None:
    m = machine("d1", mesh="2x2", scalar_regs=8)
    with pytest.raises(D1Error, match="at least 16 scalar"):
        compiler.compile_source(source("matmul"), m)


def test_options_parse_and_reject_unknown_values() -> None:
    o = CompileOptions.parse(["matmul=naive", "double_buffer=false", "reach=2"])
    assert o == CompileOptions(matmul="naive", double_buffer=False, reach=2)
    with pytest.raises(D1Error, match="positive integer"):
        CompileOptions.parse(["reach=0x"])
    with pytest.raises(D1Error, match="unknown compiler option"):
        CompileOptions.parse(["tiles=3"])
    with pytest.raises(D1Error, match="unknown matmul algorithm"):
        CompileOptions(matmul="cannon")


def test_pipeline_reports_each_pass() -> None:
    c = compile_text(source("softmax"), machine("m4x4"), "softmax.d1k")
    assert list(c.seconds) == ["parse", "check", "lower", "map", "schedule", "allocate",
                               "emit", "assemble"]


# ---- compare_outputs ------------------------------------------------------------------------

def test_compare_outputs_tolerances() -> None:
    f32 = compiler.check_source("input x: f32[4]\ny = x * 2\noutput y\n")
    bf = compiler.check_source("input x: bf16[4]\ny = x * 2\noutput y\n")
    ref = {"y": np.array([100.0, -3.0, 0.5, 0.0], dtype=np.float32)}
    close = {"y": ref["y"] + np.float32(0.02)}
    [(name, abs_err, rel_err, tol, ok)] = compiler.compare_outputs(f32, close, ref)
    assert name == "y" and not ok and tol == pytest.approx(F32_TOLERANCE * 100)
    assert abs_err == pytest.approx(0.02, rel=1e-3) and rel_err == pytest.approx(2e-4, 1e-2)
    assert compiler.compare_outputs(f32, {"y": ref["y"] + np.float32(0.009)}, ref)[0][4]
    [(_, _, _, tol, ok)] = compiler.compare_outputs(bf, close, ref)
    assert ok and tol == pytest.approx(BF16_TOLERANCE * 100)
    nan = {"y": np.array([np.nan, np.inf, 1, 1], dtype=np.float32)}
    assert compiler.compare_outputs(f32, nan, nan)[0][4]
    assert not compiler.compare_outputs(f32, {"y": nan["y"]}, ref)[0][4]
    assert not compiler.compare_outputs(f32, {}, ref)[0][4]


# ---- the CLI ----------------------------------------------------------------------------------

def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from d1.cli import main
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_compile_writes_an_object(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mm.d1o"
    code, _, err = _cli(["compile", str(ROOT / "programs" / "matmul.d1k"), "-o", str(out),
                         "--mesh", "2x2", "-O", "matmul=naive"], capsys)
    assert code == 0, err
    obj = compiler.compile_source(source("matmul"), machine("d1", mesh="2x2"),
                                  str(ROOT / "programs" / "matmul.d1k"),
                                  CompileOptions(matmul="naive"))
    assert out.read_bytes() == obj.to_bytes()


def test_cli_emit_stages(capsys) -> None:
    path = str(ROOT / "programs" / "residual.d1k")
    code, out, _ = _cli(["compile", path, "--emit", "ir", "--mesh", "2x2"], capsys)
    assert code == 0 and "matmul" in out and "rounds to bf16" in out
    code, out, _ = _cli(["compile", path, "--emit", "ast"], capsys)
    assert code == 0 and out.strip()
    code, out, _ = _cli(["compile", path, "--emit", "asm", "--mesh", "2x2"], capsys)
    assert code == 0 and ".machine {" in out and ".loc 0 " in out and "mmak.bf16" in out


def test_cli_dsl_error_exits_2_with_location_and_no_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.d1k"
    bad.write_text("input x: f32[4, 3]\ny = x @ x\noutput y\n")
    code, _, err = _cli(["compile", str(bad)], capsys)
    assert code == 2
    assert f"{bad}:2:7: error: matmul dimension mismatch" in err
    assert "Traceback" not in err


def test_cli_bad_option_exits_2(capsys) -> None:
    code, _, err = _cli(["compile", str(ROOT / "programs" / "mlp.d1k"), "-O", "matmul=x"],
                        capsys)
    assert code == 2 and "unknown matmul algorithm" in err


def test_f32_bits_helper_matches_struct() -> None:
    from compiler.asmgen import f32_hex
    assert f32_hex(1.0) == "0x3f800000"
    assert int(f32_hex(-2.5), 16) == struct.unpack("<I", struct.pack("<f", -2.5))[0]
