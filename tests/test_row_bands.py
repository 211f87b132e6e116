"""Matmuls whose rows fill at most half the grid rows run on bands of grid rows
(compiler.lower.Mapper.split_n / _split_k / band_of_matmul, compiler.batched.BandMatmul):

* split N: band e computes the column block e of the result from its own copy of A; the result
  is banded along the grid rows (layout band_axis "P");
* split K: a matmul that reads such a result as A multiplies each band's block of K where it
  lies, and the partial products are added;
* several matmuls of one program input with few rows alternate between two bands, each reading
  copies of A and B the host placed there.

Every program is checked against the numpy reference on small meshes (a harvested one, and one
with a depth-1 FIFO and 64-byte messages), with and without `-O row_bands=false`.
"""

from __future__ import annotations

import pytest
from passkit import mapped
from progkit import run_and_compare

import compiler
from compiler.pipeline import CompileOptions
from d1isa.machine import load_machine

M4 = load_machine("d1", mesh="4x4")
TINY = load_machine("d1", mesh="4x2", overrides={"fifo_depth": 1, "max_message_bytes": 64})
HARVESTED = load_machine("h6x5")

FFN = """
input x: f32[8, 32]
param w1: f32[32, 64]
param b1: f32[64]
param w2: f32[64, 16]
param wq: f32[32, 16]
param wk: f32[32, 16]
h = gelu(x @ w1 + b1)
y = h @ w2
q = x @ wq
k = x @ wk
s = softmax(y + q * k, axis=-1)
output s, h
"""


def kinds(text: str, machine, options=None) -> list[str]:
    return [s.kind for s in mapped(text, machine, options).mapper.steps]


def test_a_short_matmul_with_a_wide_result_runs_split_n_then_split_k():
    m = mapped(FFN, M4)
    steps = [s.kind for s in m.mapper.steps]
    assert "matmul[rows N/2]" in steps and "matmul[rows K/2]" in steps
    assert "matmul[band 1]" in steps
    h = m.value("h").layout
    assert (h.bands, h.band_axis, h.band_cols) == ((0, 2, 4), "P", 32)
    # w1 is placed in the bands by the host, x on both bands, b1 as the bands' columns: the
    # only redistributions are the partial product that band 1 hands back and k, computed on
    # band 1, for the product with q.
    redistributed = [s.ins[0].name for s in m.mapper.steps if s.kind == "redistribute"]
    assert sorted(redistributed) == ["k", "y.k1"]
    assert m.value("w1").layout.band_axis == "P" and m.value("b1").layout.bands == (0, 2, 4)
    assert m.value("wk").layout.row_bounds == (0, 0, 0, 16, 32) and m.value("x").copies


def test_row_bands_can_be_switched_off():
    steps = kinds(FFN, M4, CompileOptions(row_bands=False))
    assert not any(k.startswith(("matmul[rows", "matmul[band")) for k in steps)
    assert CompileOptions.parse(["row_bands=false"]) == CompileOptions(row_bands=False)


@pytest.mark.parametrize("machine", [M4, TINY, HARVESTED], ids=["4x4", "tiny", "h6x5"])
@pytest.mark.parametrize("row_bands", [True, False])
def test_row_band_programs_match_the_reference(machine, row_bands):
    obj = compiler.compile_source(FFN, machine, "ffn.d1k", CompileOptions(row_bands=row_bands))
    run_and_compare(obj, FFN, machine, "ffn.d1k", seed=4)


def test_a_split_n_result_read_by_other_kernels_is_redistributed_first():
    # A reduction, a transpose and a layernorm of a banded value read it in the default
    # layout; an elementwise kernel reads it where it lies.
    text = ("input x: f32[8, 16]\ninput w: f32[16, 64]\nh = x @ w\nr = sum(h, axis=1)\n"
            "t = transpose(h)\nl = layernorm(h * 2, axis=-1)\nm = max(h)\noutput r, t, l, m\n")
    m = mapped(text, M4)
    assert m.value("h").layout.band_axis == "P"
    for name in ("r", "l"):
        step = next(s for s in m.mapper.steps if s.label == name and s.kind != "redistribute")
        assert step.ins[0].layout.bands is None
    obj = compiler.compile_source(text, M4, "b.d1k")
    run_and_compare(obj, text, M4, "b.d1k", seed=5)


def test_bf16_products_keep_the_whole_grid():
    # A bf16 product is bound by its panel exchange, which every band would repeat: no bands
    # (programs/mlp.d1k at batch 64 would take 1,332 cycles on d1 instead of 1,003).
    text = ("input x: bf16[8, 16]\ninput w: bf16[16, 64]\ninput v: bf16[64, 8]\n"
            "input u: bf16[16, 8]\nh = relu(x @ w)\ny = cast(h, bf16) @ v + x @ u\n"
            "output y\n")
    steps = kinds(text, M4)
    assert not any(k.startswith(("matmul[rows", "matmul[band")) for k in steps)


def test_a_bf16_matmul_reading_a_banded_value_reads_it_redistributed():
    # Split K is for f32 products (bf16 ones are bound by the panel exchange, and a bf16
    # result would be rounded twice).
    text = ("input x: f32[8, 16]\ninput w: f32[16, 64]\ninput v: f32[64, 8]\n"
            "h = relu(x @ w)\ny = cast(h @ v, bf16)\nz = cast(h, bf16) @ cast(v, bf16)\n"
            "output y, z\n")
    steps = kinds(text, M4)
    assert "matmul[rows N/2]" in steps and steps.count("matmul[rows K/2]") == 1
    obj = compiler.compile_source(text, M4, "bf.d1k")
    run_and_compare(obj, text, M4, "bf.d1k", seed=6)
