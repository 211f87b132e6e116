"""`d1 bench`: the suites it runs, and the bookkeeping of the training bench (its figures are
measured by `d1 bench train` itself, never here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.compiler_bench import ENCODER, import_and_compile, print_encoder, useful_flops
from benchmarks.train_bench import MLP, mlp_flops, numpy_step, parts_of
from d1.cli import cli
from d1.commands.bench import SUITES
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]


def test_every_suite_is_a_benchmark_module_and_all_runs_them():
    assert {"emulator", "compiler", "debugger", "train"} <= set(SUITES)
    for module in SUITES.values():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    out = CliRunner().invoke(cli, ["bench", "--help"]).output
    assert "|".join(SUITES) + "|all]" in out


def test_the_useful_flops_of_a_step_are_its_eight_matmuls():
    f = mlp_flops(256, (784, 256, 256, 10))
    forward = 2 * 256 * (784 * 256 + 256 * 256 + 256 * 10)
    assert f["forward"] == forward
    # a weight gradient per layer, an activation gradient for every layer but the first
    assert f["backward"] == forward + 2 * 256 * (256 * 256 + 256 * 10)


def test_steps_are_told_apart_by_the_grad_calls_and_update_statements():
    text = MLP.read_text()
    grads, updates = parts_of(text, "programs/train_mlp784.d1k")
    lines = text.splitlines()
    update_lines = {k + 1 for k, line in enumerate(lines) if line.startswith("update ")}
    assert updates == update_lines and len(updates) == 6
    # one backward pass, at the position of the first grad call
    assert all(lines[ln - 1][col - 1:].startswith("grad(") for ln, col in grads)
    assert min(grads) == (min(update_lines), lines[min(update_lines) - 1].index("grad(") + 1)


def test_the_numpy_baseline_computes_a_cross_entropy_step():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    ws = [rng.standard_normal(s).astype(np.float32) * np.float32(0.1)
          for s in ((6, 5), (5,), (5, 4), (4,), (4, 3), (3,))]
    loss = numpy_step(x, y, *ws)
    h = np.maximum(np.maximum(x @ ws[0] + ws[1], 0) @ ws[2] + ws[3], 0)
    z = h @ ws[4] + ws[5]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.isclose(loss, -np.mean(np.log(p[y == 1])), rtol=1e-5)


def test_the_useful_flops_of_the_encoder_are_its_matmuls():
    # Four projections [64, 128] @ [128, 128], two batched products of 4 heads ([64, 32] @
    # [32, 64] and [64, 64] @ [64, 32]) and the FFN's [64, 128] @ [128, 256] and back.
    imported, result = import_and_compile(ENCODER, load_machine("m4x4"))
    assert useful_flops(result.graph) == (4 * 2 * 64 * 128 * 128 + 2 * 2 * 4 * 64 * 64 * 32
                                          + 2 * 2 * 64 * 128 * 256)
    assert [o.name for o in result.graph.outputs] == ["y"] and "wq" in imported.params


def _encoder_figures(util: float, wall: float) -> dict:
    run = {"util_own": util, "cycles": 7000, "dtype": "f32", "ok": True}
    return {"wall": wall, "cpu": wall / 2, "times": [(wall, wall / 2)] * 3, "load": 1.0,
            "flops": 18_874_368, "runs": {"default": run, "row_bands=false": run,
                                          "batched=sequential": run}}


@pytest.mark.parametrize("util, wall, verdicts", [
    (23.8, 2.5, ["PASS", "PASS"]), (19.9, 2.5, ["FAIL", "PASS"]), (23.8, 3.1, ["PASS", "FAIL"])])
def test_the_encoder_section_prints_each_figure_against_its_target(capsys, util, wall,
                                                                   verdicts):
    print_encoder(_encoder_figures(util, wall))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("encoder block") and "target >= 20 % of the f32 peak" in lines[0]
    assert "baseline row_bands=false" in lines[1] and "batched=sequential" in lines[2]
    assert "d1 import + compile" in lines[3] and "CPU time" in lines[3]
    assert [line.split(": ")[1].split(";")[0] for line in (lines[0], lines[3])] == verdicts


@pytest.mark.parametrize("module, good", [("compiler_bench", "spmd"), ("debugger_bench", None),
                                          ("emulator_bench", None), ("train_bench", None),
                                          ("scale_bench", "data")])
def test_a_benchmark_given_an_argument_it_does_not_take_is_a_usage_error(module, good, capsys):
    # `python -m benchmarks.compiler_bench --help` (or a misspelt `spmd`) ran the whole
    # several-minute suite, ignoring the argument; it is now a usage error, before anything runs.
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    for bad in (["--help"], ["spdm"], [good, "extra"] if good else ["x"]):
        with pytest.raises(SystemExit) as info:
            main(bad)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"usage: python -m benchmarks.{module}")
        assert repr(" ".join(bad)) in err
