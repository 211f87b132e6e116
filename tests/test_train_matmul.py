"""The matmuls of a backward pass on the bf16 matrix unit, and inputs the host places transposed.

A backward pass multiplies f32 gradients by forward values, which in a bf16 network are bf16
values widened to f32 (`transpose(cast(h, f32)) @ g`). The back end reads those as bf16 and
splits the f32 operand into three bf16 pieces that add up to it exactly (SplitBf16), so every
product is exact and the sums are f32: the f32 matmul of the language, at f32 accuracy (far
inside the bf16 tolerance the --check applies to such programs), on the bf16 unit. An input
that a matmul reads transposed is written transposed by the host, beside its own placement.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_train_kernels import assert_same_bits, kinds

import compiler
from compiler.ir import round_to
from compiler.layout import make_layout
from compiler.pipeline import CompileOptions, compile_text
from d1isa.machine import load_machine
from emulator import Emulator

MACHINES = {"2x2": load_machine(mesh="2x2"), "4x4": load_machine(mesh="4x4"),
            "h6x5": load_machine("h6x5")}

# Two bf16 layers and a squared error; every gradient matmul has one bf16 operand (x, h, v, w
# widened) and one f32 one (a gradient).
LAYERS = """input x: bf16[40, 56]
param w: bf16[56, 24]
param v: bf16[24, 16]
input y: f32[40, 16]
h = cast(relu(x @ w), bf16)
d = h @ v - y
loss = sum(sum(d * d, axis=1), axis=0)
gw = grad(loss, w)
gv = grad(loss, v)
output loss, gw, gv
"""


def run(text: str, m, options: CompileOptions | None = None,
        inputs: dict[str, np.ndarray] | None = None) -> tuple[dict, dict, object]:
    """Compile and run `text` (seeded inputs, params from their INIT); outputs, reference."""
    c = compile_text(text, m, "t.d1k", options)
    given = compiler.make_inputs(c.graph, 0)
    given.update({k: round_to(v, c.graph[k].dtype) for k, v in (inputs or {}).items()})
    params = compiler.init_params(c.graph, 0)
    emu = Emulator(c.obj)
    for name, value in (given | params).items():
        emu.set_input(name, value)
    result = emu.run()
    assert result.ok, result.report()
    outs = {o.name: emu.output(o.name).reshape(o.shape) for o in c.graph.outputs}
    return outs, compiler.evaluate(c.graph, given, params), c


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1.0))


@pytest.mark.parametrize("options", [None, CompileOptions(matmul="naive"),
                                     CompileOptions(double_buffer=False)],
                         ids=["summa", "naive", "no-double-buffer"])
@pytest.mark.parametrize("mesh", sorted(MACHINES))
def test_gradient_matmuls_run_on_the_bf16_unit_at_f32_accuracy(mesh, options):
    outs, ref, c = run(LAYERS, MACHINES[mesh], options)
    ops = kinds(c.obj)
    # The gradients of d and of h, each split by the elementwise kernel that computes it;
    # gathered first (naive), they are split where they arrive, d's in each of two layouts.
    naive = options is not None and options.matmul == "naive"
    fused = [k for k in ops if k.startswith("elementwise(") and k.endswith(" split)")]
    assert (len(fused), ops.count("split(bf16x3)")) == ((0, 3) if naive else (2, 0))
    asm = c.asm
    assert "mmak.f32" not in asm and "mmak.bf16" in asm
    for name in ("loss", "gw", "gv"):
        # f32 accuracy: the --check tolerance of a bf16 program would be 2e-2
        assert rel_err(outs[name], ref[name]) < 2e-6, name


def test_a_split_of_its_own_when_no_elementwise_kernel_computes_the_operand(monkeypatch):
    """An operand that is an input, or that an elementwise kernel computing it cannot store
    split, gets a SplitBf16 step of its own: the same numbers."""
    import compiler.lower as lower_mod
    fused, _, _ = run(LAYERS, MACHINES["4x4"])
    monkeypatch.setattr(lower_mod.Mapper, "split_where_computed", lambda self, v, p: False)
    outs, ref, c = run(LAYERS, MACHINES["4x4"])
    assert kinds(c.obj).count("split(bf16x3)") == 2
    for name in ("loss", "gw", "gv"):
        assert_same_bits(outs[name], fused[name], name)


def test_the_split_holds_with_depth_1_fifos_and_small_messages():
    m = MACHINES["h6x5"].replace(fifo_depth=1, max_message_bytes=64)
    outs, ref, _ = run(LAYERS, m)
    for name in ("gw", "gv"):
        assert rel_err(outs[name], ref[name]) < 2e-6, name


def test_one_product_per_element_is_within_an_ulp_of_the_f32_product():
    """With one nonzero per row of the f32 operand, each element is a single product a * b:
    the pieces' exact products summed in f32 (two roundings at most) are within one ulp of
    numpy's f32 product; infinities and NaN propagate as in f32 (bit for bit), and values
    near the top of the f32 range do not overflow in the split."""
    text = ("input a: f32[16, 24]\ninput b: bf16[24, 16]\n"
            "c = a @ cast(b, f32)\noutput c\n")
    rng = np.random.default_rng(5)
    a = np.zeros((16, 24), dtype=np.float32)
    cols = rng.permutation(24)[:16]
    vals = rng.standard_normal(16).astype(np.float32) * np.float32(3.1)
    vals[:6] = [np.inf, -np.inf, np.nan, 3.4e38, -1.7e38, 1e-30]
    a[np.arange(16), cols] = vals
    b = rng.standard_normal((24, 16))
    b[cols[3], :] = rng.uniform(0.25, 1.0, 16)         # 3.4e38 times at most 1: finite
    for mesh in ("2x2", "4x4"):
        outs, ref, c = run(text, MACHINES[mesh], inputs={"a": a, "b": b})
        assert "split(bf16x3)" in kinds(c.obj)
        got, want = outs["c"], ref["c"]
        finite = np.isfinite(want)
        assert_same_bits(np.where(finite, 0, got), np.where(finite, 0, want), f"c on {mesh}")
        ulp = np.spacing(np.abs(want[finite]))
        assert np.all(np.abs(got[finite] - want[finite]) <= ulp), mesh
        assert np.isinf(got[0]).any() and np.isnan(got[2]).all() and np.isfinite(got[3]).all()


def test_two_widened_bf16_operands_make_a_bf16_matmul_without_a_split():
    text = ("input a: bf16[24, 40]\ninput b: bf16[40, 16]\n"
            "c = cast(a, f32) @ cast(b, f32)\noutput c\n")
    outs, ref, c = run(text, MACHINES["4x4"])
    assert kinds(c.obj) == ["matmul[summa]"]
    assert "mmak.bf16" in c.asm and "mmak.f32" not in c.asm
    assert rel_err(outs["c"], ref["c"]) < 2e-6


def test_f32_matmuls_are_unchanged():
    text = "input a: f32[24, 40]\ninput b: f32[40, 16]\nc = a @ b\noutput c\n"
    _, _, c = run(text, MACHINES["4x4"])
    assert kinds(c.obj) == ["matmul[summa]"] and "mmak.f32" in c.asm


@pytest.mark.parametrize("mesh", ["4x4", "h6x5"])
def test_an_input_read_transposed_is_placed_transposed_by_the_host(mesh):
    m = MACHINES[mesh]
    text = "input q: f32[48, 24]\ninput k: bf16[40, 24]\ns = q @ transpose(k)\noutput s\n"
    outs, ref, c = run(text, m)
    assert kinds(c.obj) == ["split(bf16x3)", "matmul[summa]"]     # no redistribution
    assert rel_err(outs["s"], ref["s"]) < 2e-6
    k = c.obj.tensor("k")
    strides = {p.strides for p in k.pieces}
    assert (2, k.pieces[-1].strides[1]) in strides and any(s[1] == 2 for s in strides)
    # every element of k is in the transposed copy once, in its own placement at least once
    swapped = [p for p in k.pieces if p.strides[0] == 2]
    assert sum(int(np.prod(p.shape)) for p in swapped) == 40 * 24


def test_a_transposed_input_keeps_its_own_placement_skewed_for_the_forward_matmul():
    text = """input x: bf16[64, 64]
param w: bf16[64, 32]
loss = sum(sum(x @ w, axis=1), axis=0)
update w = w - 0.1 * grad(loss, w)
output loss
"""
    m = MACHINES["4x4"]
    c = compile_text(text, m, "t.d1k")
    assert "redistribute^T" not in kinds(c.obj)
    from passkit import mapped
    mm = mapped(text, m)
    x = mm.value("x")
    assert x.layout.skew == "A" and [v.name for v in x.copies] == ["x^T"]
    assert mm.mapper.placed[-1] is x.copies[0]


def test_a_layout_of_pieces_keeps_them_side_by_side_in_each_row():
    from compiler.grid import choose_grid
    g = choose_grid(MACHINES["4x4"])
    one = make_layout((40, 24), "bf16", "P", "Q", g)
    three = make_layout((40, 24), "bf16", "P", "Q", g, pieces=3)
    assert three.piece_bytes == one.stride == 32 and three.stride == 3 * 32
    assert not three.same_distribution(one) and "x3 pieces" in three.describe()


def test_a_kernel_whose_only_reader_takes_its_split_result_is_kept():
    """relu's mask is the whole gradient here: only the matmul reads it, split; the kernel's
    f32 result is never read, but the step that writes both stays (its `also` value)."""
    text = """input x: bf16[32, 24]
param w: bf16[24, 16]
loss = sum(sum(relu(x @ w), axis=1), axis=0)
update w = w - 0.125 * grad(loss, w)
output loss
"""
    m = MACHINES["4x4"]
    c = compile_text(text, m, "t.d1k")
    ops = kinds(c.obj)
    assert any(k.startswith("elementwise(gt") and k.endswith(" split)") for k in ops), ops
    params = compiler.init_params(c.graph, 0)
    x = compiler.make_inputs(c.graph, 0)
    emu = Emulator(c.obj)
    for name, value in (x | params).items():
        emu.set_input(name, value)
    assert emu.run().ok
    ref = compiler.evaluate(c.graph, x, params)
    got = {"loss": emu.output("loss"), compiler.update_key("w"): emu.output("w")}
    assert all(row[4] for row in compiler.compare_outputs(c.graph, got, ref))
