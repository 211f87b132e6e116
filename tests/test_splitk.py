"""A matmul whose panels do not fit a node's SRAM runs as a sum of products over slices of K
(compiler.splitk), and only then: a program that fits compiles as before."""

from __future__ import annotations

import pytest
from progkit import run_and_compare

import compiler.pipeline as pipeline
from compiler import check_source
from compiler.grid import choose_grid
from compiler.ir import Op
from compiler.splitk import k_slices, split_matmuls
from d1isa.errors import SourceError
from d1isa.machine import load_machine

# Four nodes of 128 KiB: small enough that a K of 512 overflows a node with panels.
SMALL = load_machine(mesh="2x2", overrides={"sram_bytes": 128 * 1024})
WIDE_K = "input a: f32[64, 512]\ninput b: f32[512, 64]\nc = a @ b\noutput c\n"


def test_a_matmul_whose_panels_do_not_fit_is_summed_over_slices_of_k_and_is_exact():
    r = pipeline.compile_text(WIDE_K, SMALL, "k.d1k")
    assert r.notes == ["line 3: 'c' (64 x 512 @ 512 x 64) is computed as 10 products over "
                       "slices of K of 56, so that each one's panels fit a node's SRAM"]
    assert r.sram_peak <= SMALL.sram_bytes
    rows, _, result, _ = run_and_compare(r.obj, WIDE_K, SMALL, "k.d1k")
    assert result.ok and all(row[4] for row in rows)
    # the running sums are added in place: one result block, not one per slice
    named = {v["name"]: v for v in r.obj.meta["values"]["named"]}
    assert named["c"]["stores"][0]["pieces"][0][1] == named["c.p0"]["stores"][0]["pieces"][0][1]


def test_without_the_split_it_would_not_fit(monkeypatch):
    monkeypatch.setattr(pipeline, "split_matmuls", lambda *a: None)
    with pytest.raises(SourceError, match="does not fit in a node's SRAM: 'c.[ab]panels'"):
        pipeline.compile_text(WIDE_K, SMALL, "k.d1k")


def test_the_split_is_relu_and_bf16_safe_and_keeps_the_name_for_what_reads_it():
    text = ("input a: bf16[64, 1024]\ninput b: bf16[1024, 64]\nc = relu(a @ b) * 2\n"
            "output c\n")
    r = pipeline.compile_text(text, SMALL, "k.d1k")
    assert len(r.notes) == 1 and "is computed as" in r.notes[0]
    rows, _, result, _ = run_and_compare(r.obj, text, SMALL, "k.d1k")
    assert result.ok and all(row[4] for row in rows)


def test_the_rewrite_is_a_chain_of_slices_products_and_sums():
    g = check_source(WIDE_K, SMALL, "k.d1k")
    grid = choose_grid(SMALL)
    graph, notes, keep, adds = split_matmuls(g, grid, SMALL)
    ops = [n.op for n in graph.nodes if n.name.startswith("c.") or n.name == "c"]
    assert ops.count(Op.SLICE) == 20 and ops.count(Op.MATMUL) == 10 and ops.count(Op.ADD) == 9
    assert graph.outputs[0].name == "c" and graph.outputs[0].op is Op.ADD
    assert len(keep) == 9 and len(adds) == 9 and graph.outputs[0].id == adds[-1]
    slices = k_slices(g["c"], grid, SMALL)
    assert slices[0] == (0, 56) and slices[-1] == (504, 512)
    assert all(b - a == 56 for a, b in slices[:-1])


def test_programs_that_fit_are_not_rewritten():
    m = load_machine(mesh="4x4")
    g = check_source(WIDE_K, m, "k.d1k")
    assert split_matmuls(g, choose_grid(m), m) is None
    assert pipeline.compile_text(WIDE_K, m, "k.d1k").notes == []


def test_slices_too_large_to_plan_are_not_made():
    # bf16 4096^3 on d1: 2^33 element-nodes of layout-change plans; the error stands
    d1 = load_machine("d1")
    g = check_source("input a: bf16[4096, 4096]\ninput b: bf16[4096, 4096]\nc = a @ b\n"
                     "output c\n", d1, "k.d1k")
    assert k_slices(g["c"], choose_grid(d1), d1) == [(0, 4096)]


def test_a_small_k_is_not_split_and_too_large_even_split_keeps_the_first_error():
    # K = 16: the result block, not K, makes the panels large; splitting would not help
    g = check_source("input a: f32[256, 16]\ninput b: f32[16, 256]\nc = a @ b\noutput c\n",
                     SMALL, "k.d1k")
    assert k_slices(g["c"], choose_grid(SMALL), SMALL) == [(0, 16)]
    text = "input a: f32[128, 512]\ninput b: f32[512, 128]\nc = a @ b\noutput c\n"
    with pytest.raises(SourceError, match="k.d1k:2:7: error: does not fit in a node's SRAM: "
                                          "'b' needs"):
        pipeline.compile_text(text, SMALL, "k.d1k")
