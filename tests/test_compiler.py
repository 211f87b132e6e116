"""The compiler back end: every program compiles and runs correctly on many machines.

Each run compiles a .d1k program, scatters seeded inputs, runs the emulator and compares every
output with the reference evaluator under the --check tolerance (compiler.compare_outputs).
Machines: a 4 x 4 mesh (every program), the harvested h6x5, tiny and odd meshes, and FIFOs of
depth 1 or 2 with small messages (no deadlock is possible by construction; these runs check it).
Every program on the full d1 chip is in tests/test_programs_d1.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from progkit import compile_program, run_and_compare

import compiler
from compiler.compare import BF16_TOLERANCE, F32_TOLERANCE
from compiler.grid import choose_grid
from compiler.pipeline import CompileOptions, compile_text, emit_stage
from d1isa.asm import assemble
from d1isa.errors import D1Error, SourceError
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(p.stem for p in (ROOT / "programs").glob("*.d1k"))


def machine(name: str = "d1", mesh: str | None = None, **sets):
    return load_machine(name, mesh=mesh, overrides=sets or None)


def run_program(text: str, m, options: CompileOptions | None = None, seed: int = 0,
                filename: str = "prog.d1k"):
    """Compile, run and compare; return (rows, emulator, result)."""
    obj = compile_program(text, m, filename, options)
    rows, emu, result, _ = run_and_compare(obj, text, m, filename, seed)
    return rows, emu, result


def source(name: str) -> str:
    return (ROOT / "programs" / f"{name}.d1k").read_text()


# ---- the shipped programs ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PROGRAMS)
def test_program_on_4x4(name: str) -> None:
    run_program(source(name), machine("m4x4"), filename=f"{name}.d1k")


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


@pytest.mark.parametrize("name", ["mlp", "attention"])
@pytest.mark.parametrize("sets", [{"fifo_depth": 2}, {"fifo_depth": 2, "max_message_bytes": 128},
                                  {"fifo_depth": 3, "max_message_bytes": 256}])
def test_fifo_depth_2_and_3_across_relay_nodes(name: str, sets: dict) -> None:
    # Depth 2 with one message per link and round: receives across relay nodes are deferred
    # by a round; with several chunks per panel they are not, and rounds get sub-rounds.
    run_program(source(name), machine("h6x5", **sets), filename=f"{name}.d1k")


def summa_steps(text: str, m, options: CompileOptions | None = None) -> list:
    """The planned, allocated SUMMA matmul steps of a program."""
    from compiler.alloc import allocate, schedule
    from compiler.lower import lower, map_to_mesh
    from compiler.matmul import Matmul
    graph = compiler.check_source(text, m)
    mapper = map_to_mesh(graph, lower(graph), choose_grid(m), m, options or CompileOptions())
    sched = schedule(mapper.steps, mapper.inputs, [mapper.values[o.id] for o in graph.outputs])
    allocate(sched, m.sram_bytes, "x.d1k", text)
    return [st for st in sched.steps if isinstance(st, Matmul) and st.mode == "summa"]


@pytest.mark.parametrize("name,sets,reach", [
    ("h6x5", {}, 1), ("h6x5", {"fifo_depth": 1}, 1), ("h6x5", {"fifo_depth": 2}, 1),
    ("h6x5", {"max_message_bytes": 64}, 1), ("h6x5", {"fifo_depth": 2}, 2),
    ("d1", {}, 1), ("d1", {"fifo_depth": 2}, 1),
    ("d1", {"fifo_depth": 1, "max_message_bytes": 1024}, 1),
])
def test_summa_rounds_respect_the_fifo_bound(name: str, sets: dict, reach: int) -> None:
    """The conditions of the deadlock-freedom argument (compiler.matmul, docs/COMPILER.md), on
    the planned messages: a leg is received in its send round or the next; on every link the
    messages that may be unconsumed together (sent by round r, received in round r or later)
    are at most fifo_depth; and each link is consumed in the order it is sent."""
    m = machine(name, **sets)
    text = source("mlp").replace("[64, 784]", "[128, 784]")
    deferred = 0
    for st in summa_steps(text, m, CompileOptions(reach=reach)):
        links: dict[tuple, list] = {}
        for msg in st._messages():
            assert msg.key[:2] >= msg.send
            assert msg.key[0] - msg.send[0] in (0, 1) and (msg.key[1] == msg.send[1]
                                                            or msg.key[0] > msg.send[0])
            deferred += msg.key[0] > msg.send[0]
            links.setdefault((msg.sender, msg.d), []).append(msg)
        for msgs in links.values():
            sent = sorted(msgs, key=lambda x: (x.send, x.key))
            assert [x.key for x in sent] == sorted(x.key for x in msgs)
            for r in {x.send for x in msgs}:
                live = [x for x in msgs if x.send <= r <= x.key[:2]]
                assert len(live) <= m.fifo_depth
    # On d1 (a square grid: one panel per owner, and relay nodes on every line) receives
    # across relay nodes are deferred when the FIFOs hold two messages.
    if name == "d1" and reach == 1 and m.fifo_depth >= 2:
        assert deferred
    if m.fifo_depth == 1 or reach > 1:
        assert not deferred


@pytest.mark.parametrize("depth", [4, 1])
def test_summa_legs_across_chip_edges_are_received_a_round_late(depth: int) -> None:
    """A chip-edge hop costs chip_hop_latency and runs at the slower chip-edge rate, so, as a
    leg across relay nodes, a leg across a chip edge is received in the round after its send
    (where the FIFO bound allows it; never with depth-1 FIFOs), keeping the rounds short; on a
    plain mesh of 2 x 2 chips those are the only deferred legs."""
    m = load_machine(mesh="4x4", chips="2x2", overrides={"fifo_depth": depth})
    (st,) = summa_steps("input a: bf16[128, 256]\ninput b: bf16[256, 96]\nc = a @ b\n"
                        "output c\n", m)
    chip = m.chip_index
    msgs = st._messages()
    for msg in msgs:
        sender = st.grid.nodes[msg.sender[0]][msg.sender[1]]
        ends = [sender] + [nid for nid, _, _ in msg.hops]
        crosses = any(chip[u] != chip[v] for u, v in zip(ends, ends[1:], strict=False))
        assert msg.key[0] - msg.send[0] == (1 if crosses and depth > 1 else 0)
    assert any(msg.key[0] > msg.send[0] for msg in msgs) == (depth > 1)


def test_summa_sends_panels_only_toward_nodes_that_use_them() -> None:
    # N = 10 is two 8-column blocks on a 4 x 4 grid: only grid columns 0 and 1 compute, so
    # A's panels travel toward them (hop by hop, stored and forwarded on the way) and no
    # further; B's panels stay in those columns.
    m = machine("m4x4")
    (st,) = summa_steps("input a: bf16[64, 64]\ninput b: bf16[64, 10]\nc = a @ b\n"
                        "output c\n", m)
    assert {j for (_, j), nd in st.nodes.items() if nd.nc > 0} == {0, 1}
    msgs = st._messages()
    east = {node[1] for msg in msgs if msg.kind == "A" and msg.d == 1
            for _, node, _ in msg.hops}
    assert east == {1}                                  # only column 0 sends east, to 1
    assert {msg.sender[1] for msg in msgs if msg.kind == "A"} == {0, 1, 2, 3}
    assert {node[1] for msg in msgs if msg.kind == "B" for _, node, _ in msg.hops} == {0, 1}


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


@pytest.mark.parametrize("mesh, kib, text", [
    # along the last axis an N-d value's 2-D view's rows are reduced where they lie, as
    # softmax does: x (64 KiB) fits 2 x 2 nodes of 48 KiB only split
    ("2x2", 48, "input x: f32[8, 16, 128]\ns = sum(x, axis=-1)\nmn = mean(x, axis=2, keepdims=1)\n"
                "a = argmax(x, axis=2)\nlo = min(x, axis=-1) + max(x, axis=-1)\n"),
    # along the leading or a middle axis the columns of the matrix [K, rest] gathered from x
    # once: x (128 KiB) fits 4 x 4 nodes of 96 KiB only split
    ("4x4", 96, "input x: f32[32, 16, 64]\ns = sum(x, axis=0)\nmn = mean(x, axis=-3, keepdims=1)\n"
                "a = argmax(x, axis=0)\nlo = min(x, axis=1) + max(x, axis=-2)\n"),
])
def test_nd_reductions_are_not_replicated(mesh: str, kib: int, text: str) -> None:
    """sum/mean/max/min/argmax of an N-d value along any axis: the replicated fallback wanted
    all of x on every node ("does not fit")."""
    m = machine("d1", mesh=mesh, sram_bytes=kib * 1024)
    rows, _, _ = run_program(text + "output s, mn, a, lo\n", m)
    assert [r[0] for r in rows] == ["s", "mn", "a", "lo"] and all(r[4] for r in rows)


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
    # "no" was read as its truth value (double buffering on), a numpy integer reach refused,
    # and a single string (or None) iterated as characters or a TypeError
    with pytest.raises(D1Error, match="'double_buffer' is True or False, got 'no'"):
        CompileOptions(double_buffer="no")
    with pytest.raises(D1Error, match="'spmd' is True or False, got 0"):
        CompileOptions(spmd=0)
    assert CompileOptions(reach=np.int64(2)) == CompileOptions(reach=2)
    assert CompileOptions(preskew=np.bool_(False)).preskew is False
    for bad in ("matmul=naive", None):
        with pytest.raises(D1Error, match="takes a list of 'KEY=VALUE' strings"):
            CompileOptions.parse(bad)


GRAPH_TEXT = "input a: f32[2, 3]\nparam w: f32[3] = 1\ns = sum(a * w)\n" \
             "update w = w - grad(s, w)\noutput s\n"


@pytest.mark.parametrize("call, says", [
    (lambda g: compiler.make_inputs(GRAPH_TEXT), "make_inputs takes a checked program .* not str: "
                                                 "check the text first"),
    (lambda g: compiler.init_params(None), "init_params takes a checked program"),
    (lambda g: compiler.evaluate(GRAPH_TEXT, {}), "evaluate takes a checked program"),
    (lambda g: compiler.train_step(GRAPH_TEXT, None, {}), "train_step takes a checked program"),
    (lambda g: compiler.differentiate(GRAPH_TEXT), "differentiate takes a checked program"),
    (lambda g: compiler.format_ir(None), "format_ir takes a checked program"),
    (lambda g: compiler.verify(3), "verify takes a checked program"),
    (lambda g: compiler.evaluate(g, {"a": np.zeros((2, 3), "M8[s]")}),
     "input 'a' must be an array of real numbers"),
    (lambda g: compiler.compare_outputs(g, None, {"s": 1.0}), "outputs must be a mapping"),
    (lambda g: compiler.compare_outputs(g, {"s": "x"}, {"s": 1.0}),
     "output 's' is not an array of real numbers"),
    (lambda g: compiler.compare_outputs(g, {"s": [[1], [2, 3]]}, {"s": 1.0}),
     "output 's' is not an array of real numbers"),
    (lambda g: compiler.compare_outputs(g, {"s": 1.0}, {"s": 1j}),
     "reference output 's' is not an array of real numbers"),
    (lambda g: compiler.check_source(GRAPH_TEXT, None, None),
     "file name of the program text must be a str, not NoneType"),
    (lambda g: compiler.compile_source(GRAPH_TEXT, machine("m4x4"), 7),
     "file name of the program text must be a str, not int"),
    (lambda g: assemble(".text all\n halt\n", 7), "file name of the assembly text must be a str"),
])
def test_python_api_arguments_of_the_wrong_kind_are_d1_errors(call, says):
    """Each was an AttributeError or TypeError from deep inside, a datetime input was read as
    numbers, and a file name that is not a str an 'internal compiler error' (compile_source)
    or an object whose bytes did not load ('bad file list', assemble)."""
    g = compiler.check_source(GRAPH_TEXT)
    with pytest.raises(D1Error, match=says):
        call(g)


def test_pipeline_reports_each_pass() -> None:
    c = compile_text(source("softmax"), machine("m4x4"), "softmax.d1k")
    assert list(c.seconds) == ["parse", "check", "differentiate", "lower", "map", "writeback",
                               "schedule", "allocate", "emit", "assemble"]


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


def test_the_reach_compiler_option_takes_ascii_digits_only():
    with pytest.raises(D1Error, match="'reach' is a positive integer, got '\u00b2'"):
        CompileOptions.parse(["reach=\u00b2"])
    assert CompileOptions.parse(["reach=" + "9" * 5000]).reach == 10 ** 18    # not int()
    with pytest.raises(D1Error, match="'reach' is a positive integer, got 0"):
        CompileOptions.parse(["reach=000"])
    assert CompileOptions.parse(["reach=2"]).reach == 2
