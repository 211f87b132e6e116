"""Data-parallel training across chips (compiler.dataparallel, docs/COMPILER.md).

On a machine of several chips a training program splits its batch over the chips, every chip
keeps a full copy of the params and runs the same per-chip program, and the batch reductions
(the gradients, the loss) are all-reduced over the chip-edge links. These tests check, on
4 x 4 chips: the plan's rule (what is split, what is all-reduced, what cannot be), that the
params stay bit-identical on every chip over several steps and equal the single-chip
reference of the same global batch, that `d1 train` trains unchanged, and what a program that
cannot run data-parallel gets instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.dataparallel import NotDataParallel, plan, scale_batch
from compiler.ir import round_to
from compiler.pipeline import CompileOptions, compile_text
from compiler.reference import train_step
from d1.train import Trainer
from d1isa.errors import D1Error
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "programs" / "train_digits.d1k"
LINEAR = ROOT / "programs" / "train_linear.d1k"


def chips(grid: str):
    return load_machine(mesh="4x4", chips=grid)


def d1(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "d1", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=900)


def graph_of(text: str, m):
    return compiler.differentiate(compiler.check_source(text, m, "prog.d1k"))


# ---- the plan ---------------------------------------------------------------------------------


def test_plan_splits_the_batch_and_all_reduces_the_loss_and_gradients():
    m = chips("2x2")
    dp = plan(graph_of(DIGITS.read_text(), m), m)
    assert (dp.chips_x, dp.chips_y, dp.batch, dp.local_batch) == (2, 2, 64, 16)
    assert dp.split["x"] == dp.split["y"] == 0
    assert all(dp.split[p] is None for p in ("w1", "b1", "w2", "b2", "m1", "loss"))
    g = dp.graph
    assert g["x"].shape == (16, 64) and g["w1"].shape == (64, 32)
    # one all-reduce per gradient (as the learning rate scales it: linear, so still partial)
    # and one for the loss, all of them sums or means of per-chip partials
    reduced = {g.nodes[k].name: op for k, op in dp.reduce.items()}
    assert reduced["loss"] == "mean" and len(reduced) == 5
    assert set(reduced.values()) <= {"sum", "mean"}
    assert dp.describe()["batch_per_chip"] == 16


def test_the_per_chip_program_keeps_the_global_constants():
    # mean's gradient holds 1 / (global batch): a chip's partial gradient is its share of the
    # global gradient, so the all-reduced sum is exactly the global gradient
    m = chips("1x2")
    text = "input x: f32[8, 4]\nparam w: f32[4, 2] = 1\nloss = mean(x @ w)\n" \
           "update w = w - 0.5 * grad(loss, w)\noutput loss\n"
    dp = plan(graph_of(text, m), m)
    consts = {n.value for n in dp.graph.nodes if n.value is not None}
    assert 1 / 16 in consts           # 1 / (8 x 2) elements, not 1 / (4 x 2)


@pytest.mark.parametrize("text, why", [
    ("input x: f32[8, 4]\nparam w: f32[4, 4] = 1\ns = softmax(x @ w, axis=0)\n"
     "loss = sum(s * s)\nupdate w = w - grad(loss, w)\noutput loss\n",
     "softmax along the batch split over the chips"),
    ("input x: f32[8, 4]\nparam w: f32[4, 4] = 1\ns = layernorm(x @ w, axis=0)\n"
     "loss = sum(s * x)\nupdate w = w - grad(loss, w)\noutput loss\n",
     "layernorm along the batch split over the chips"),
    ("input x: f32[8, 4]\ninput y: f32[4, 4]\nparam w: f32[4, 4] = 1\n"
     "loss = sum(x @ w) + sum(y)\nupdate w = w - grad(loss, w)\noutput loss\n",
     "the inputs differ in axis 0"),
    ("input x: f32[6, 4]\nparam w: f32[4, 2] = 1\nloss = sum(x @ w)\n"
     "update w = w - grad(loss, w)\noutput loss\n",
     "the batch of 6 does not split evenly over 4 chips"),
    ("input x: f32[8, 4]\nparam w: f32[8, 4] = 1\nloss = sum(x * w)\n"
     "update w = w - grad(loss, w)\noutput loss\n",
     "a value computed whole on every chip \\(not a literal or a broadcast\\) meets values "
     "split over the chips \\('w', line 2\\)"),
    # a param with the batch's own axis: each chip would need its own slice of it
    ("input x: f32[8, 4, 4]\nparam w: f32[8, 4, 2] = 1\nloss = sum(x @ w)\n"
     "update w = w - grad(loss, w)\noutput loss\n",
     "a value computed whole on every chip \\(not a literal or a broadcast\\) meets values "
     "split over the chips \\('w', line 2\\)"),
])
def test_a_program_that_cannot_run_data_parallel_is_mapped_whole_with_a_note(text, why):
    m = chips("2x2")
    with pytest.raises(NotDataParallel, match=why):
        plan(graph_of(text, m), m)
    c = compile_text(text, m, "prog.d1k")
    assert "parallel" not in c.obj.meta and c.parallel is None
    assert len(c.notes) == 1 and re.search(why, c.notes[0])
    assert "mapped onto the whole machine instead" in c.notes[0]
    with pytest.raises(D1Error, match="cannot run data-parallel: " + why):
        compile_text(text, m, "prog.d1k", CompileOptions(parallel="data"))


def test_parallel_options():
    m = chips("2x2")
    text = LINEAR.read_text()
    assert compile_text(text, m, "l.d1k").parallel is not None
    assert compile_text(text, m, "l.d1k", CompileOptions(parallel="whole")).parallel is None
    with pytest.raises(D1Error, match="machine 'd1-4x4' has one"):
        compile_text(text, load_machine(mesh="4x4"), "l.d1k", CompileOptions(parallel="data"))
    assert CompileOptions.parse(["parallel=whole"]).parallel == "whole"
    with pytest.raises(D1Error, match="unknown parallel mode 'both'"):
        CompileOptions.parse(["parallel=both"])
    # an inference program runs whole unless asked, and then data-parallel too
    mlp = "input x: f32[32, 16]\nparam w: f32[16, 8] = 0.5\nz = relu(x @ w)\noutput z\n"
    assert compile_text(mlp, m, "m.d1k").parallel is None
    assert compile_text(mlp, m, "m.d1k", CompileOptions(parallel="data")).parallel is not None


def test_inference_data_parallel_outputs_gather_every_chips_slice():
    # per-sample outputs come back from the chip that computed them; a max over the batch is
    # all-reduced with max (exact), a mean with sum / chips
    from progkit import run_and_compare
    m = chips("2x2")
    text = ("input x: f32[32, 16]\nparam w: f32[16, 8] = normal(0.5)\nz = relu(x @ w)\n"
            "top = max(z, axis=0)\navg = mean(z)\noutput z, top, avg\n")
    obj = compiler.compile_source(text, m, "inf.d1k", CompileOptions(parallel="data"))
    assert obj.meta["parallel"]["batch_per_chip"] == 8
    rows, _, _, outs = run_and_compare(obj, text, m, "inf.d1k", seed=3)
    assert {r[0] for r in rows} == {"z", "top", "avg"}
    # the maximum over all chips' samples, exactly
    assert np.array_equal(outs["top"], outs["z"].max(axis=0))


MIN_ARGMAX = """
input x: f32[16, 8]
param w: f32[8, 4] = normal(0.5)
h = x @ w
s = sum(h, axis=0)
{body}
loss = mean(h * h)
update w = w - 0.1 * grad(loss, w)
output loss, r
"""


@pytest.mark.parametrize("body, why", [
    # along the batch: the all-reduce has sum, mean and max, and no index (was KeyError
    # 'min' / 'argmax', an internal error)
    ("r = min(h, axis=0)", "min along the batch split over the chips"),
    ("r = argmax(h, axis=0)", "argmax along the batch split over the chips"),
    # of a per-chip partial sum: min and argmax are not linear, so the partial is all-reduced
    # first (they were taken of each chip's partial, and the results summed: wrong values)
    ("r = min(s)", None),
    ("r = argmax(s)", None),
])
def test_min_and_argmax_over_the_batch_or_of_a_partial(body, why):
    from progkit import run_and_compare
    m = chips("2x2")
    text = MIN_ARGMAX.format(body=body)
    c = compile_text(text, m, "p.d1k")
    if why is None:
        assert c.parallel is not None
    else:
        assert c.parallel is None and why in c.notes[0]
    run_and_compare(c.obj, text, m, "p.d1k", seed=2)


# ---- training -------------------------------------------------------------------------------


def _steps(path: Path, m, steps: int, seed: int = 5):
    """Train `steps` steps on `m` and in numpy (the global batch); the trainer and the
    reference's params."""
    text = path.read_text()
    tr = Trainer(path, machine=m)
    g = compiler.check_source(text, m, str(path))
    params = tr.params()
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = {n.name: round_to(rng.standard_normal(n.shape), n.dtype) for n in g.inputs}
        got = tr.step(batch)
        params, scalars = train_step(g, params, batch)
        losses.append((got["loss"], float(scalars["loss"])))
    return tr, params, losses


@pytest.mark.parametrize("grid", ["2x2", "1x2"])
def test_params_stay_bit_identical_on_every_chip_and_equal_the_global_batch_reference(grid):
    m = chips(grid)
    tr, ref, losses = _steps(DIGITS, m, 4)
    assert tr.obj.meta["parallel"]["chips"] == [m.chips_x, m.chips_y]
    for got, want in losses:
        assert abs(got - want) <= 1e-4 * max(abs(want), 1)
    for name in tr.program.params:
        copies = [tr.emu.output(name, chip=(cx, cy))
                  for cy in range(m.chips_y) for cx in range(m.chips_x)]
        for c in copies[1:]:
            assert np.array_equal(c.view(np.uint32), copies[0].view(np.uint32)), name
        err = np.max(np.abs(copies[0] - ref[name]))
        assert err <= 1e-4 * max(float(np.max(np.abs(ref[name]))), 1), name
    # every step moved the same bytes across chip edges: the all-reduce
    edge = {f["chip_edge_bytes"] for f in tr.figures}
    assert len(edge) == 1 and edge.pop() > 0


BATCHED = """
input q: f32[32, 16, 8]
input k: f32[32, 16, 8]
param w: f32[8, 8]
qw = q @ w
s = qw @ transpose(k, [0, 2, 1])
p = softmax(s, axis=2)
t = transpose(p, [0, 2, 1])
loss = mean(p * s) + mean(sum(t, axis=1) * 0.5)
update w = w - 0.1 * grad(loss, w)
output loss
"""


def test_batched_matmuls_and_n_d_transposes_split_along_the_batch(tmp_path):
    # 3-D products of two split operands and with a shared 2-D param, and transposes with a
    # perm (the split axis moves where the perm puts it) run data-parallel, as the reference does
    trains_data_parallel_like_the_reference(tmp_path, BATCHED, ("w",))


def trains_data_parallel_like_the_reference(tmp_path, text: str, params: tuple[str, ...]):
    """Two steps of `text` on 2 x 2 chips: data-parallel, the losses those of the reference
    on the global batch, and each param bit-identical on every chip and equal to it."""
    path = tmp_path / "prog.d1k"
    path.write_text(text)
    tr, ref, losses = _steps(path, chips("2x2"), 2)
    assert tr.obj.meta["parallel"]["chips"] == [2, 2]
    for got, want in losses:
        assert abs(got - want) <= 1e-4 * max(abs(want), 1)
    for name in params:
        copies = [tr.emu.output(name, chip=(cx, cy)) for cy in range(2) for cx in range(2)]
        assert all(np.array_equal(c.view(np.uint32), copies[0].view(np.uint32)) for c in copies)
        scale = max(float(np.max(np.abs(ref[name]))), 1)
        assert np.max(np.abs(copies[0] - ref[name])) <= 1e-4 * scale, name


WHERE_LAYERNORM = """
input x: f32[16, 6]
input y: f32[16, 5]
param w: f32[6, 5]
param b: f32[5]
h = x @ w + b
loss = mean(where(h > y, h, 0.1 * h) * layernorm(h) + layernorm(h, axis=1) * y)
update w = w - 0.1 * grad(loss, w)
update b = b - 0.1 * grad(loss, b)
output loss
"""


def test_where_and_layernorm_along_another_axis_keep_the_split(tmp_path):
    # elementwise `where` and a layernorm of each sample run on each chip's samples (they were
    # "where has no data-parallel rule" and "layernorm has no ...", mapped whole)
    trains_data_parallel_like_the_reference(tmp_path, WHERE_LAYERNORM, ("w", "b"))


CHAIN = """
input x: f32[8, 3]
param a: f32[3, 4]
param c: f32[4, 2]
loss = mean((x @ a) @ c)
update a = a - 0.1 * grad(loss, a)
update c = c - 0.1 * grad(loss, c)
output loss
"""


def test_a_whole_upstream_gradient_through_a_matmul_is_sliced_on_each_chip(tmp_path):
    # the gradient of the mean is a broadcast literal, whole on every chip; `g @ transpose(c)`
    # of it met x's split rows ("a value computed whole on every chip ... meets values split")
    # and the program was mapped whole; its rows are now computed on each chip
    trains_data_parallel_like_the_reference(tmp_path, CHAIN, ("a", "c"))


def test_three_chips_in_a_line_reduce_to_the_middle_one():
    # a middle chip receives from both sides; a mean loss on bf16 values
    text = scale_batch(LINEAR.read_text(), 3, "linear.d1k")
    path_text = text.replace("input x: f32", "input x: bf16")
    m = chips("3x1")
    from progkit import run_and_compare
    obj = compiler.compile_source(path_text, m, "lin3.d1k")
    assert obj.meta["parallel"]["batch"] == 192
    run_and_compare(obj, path_text, m, "lin3.d1k", seed=2)


def test_every_chip_runs_the_same_code():
    one = compiler.compile_source(DIGITS.read_text(), chips("1x1"), "d.d1k")
    four = compiler.compile_source(DIGITS.read_text(), chips("2x2"), "d.d1k")
    nine = compiler.compile_source(scale_batch(DIGITS.read_text(), 9, "d"), chips("3x3"), "d")
    # one block per node position of a chip: the chips' all-reduce code differs, but each
    # version is held once in that position's program
    assert len(four.blocks) <= 16 and len(nine.blocks) <= 16
    nodes = {}
    for nid, b in enumerate(nine.node_block):
        x, y = nine.machine.node_xy(nid)
        nodes.setdefault((x % 4, y % 4), set()).add(int(b))
    assert all(len(bs) == 1 for bs in nodes.values())
    assert len(one.blocks) <= len(four.blocks)


def test_d1_train_on_two_by_two_chips_trains_like_one_chip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    labels = (x[:, :10] @ rng.standard_normal((10, 10))).argmax(axis=1)
    y = np.eye(10, dtype=np.float32)[labels]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    docs = {}
    for grid in ("1x1", "2x2"):
        r = d1("train", str(DIGITS), "--input", f"x={tmp_path / 'x.npy'}", "--input",
               f"y={tmp_path / 'y.npy'}", "--mesh", "4x4", "--chips", grid, "--epochs", "3",
               "--out-dir", str(tmp_path / grid), "--json", "-", "--quiet")
        assert r.returncode == 0, r.stderr
        docs[grid] = json.loads(r.stdout)
    one, four = docs["1x1"], docs["2x2"]
    l1 = [h["loss"] for h in one["history"]]
    l4 = [h["loss"] for h in four["history"]]
    assert len(l4) == len(l1) == 12
    assert np.allclose(l1, l4, rtol=1e-4, atol=1e-5)
    assert l4[-1] < l4[0]
    assert four["totals"]["modelled"]["chip_edge_bytes"] > 0
    p1, p4 = (np.load(tmp_path / g / "params.npz") for g in ("1x1", "2x2"))
    for name in p1.files:
        assert np.allclose(p1[name], p4[name], rtol=1e-4, atol=1e-5)


# ---- weak scaling's program ---------------------------------------------------------------


def test_scale_batch():
    text = LINEAR.read_text()
    out = scale_batch(text, 4, "l.d1k")
    assert "input x: f32[256, 16]" in out and "input y: f32[256, 4]" in out
    assert out.count("\n") == text.count("\n")
    with pytest.raises(D1Error, match="the inputs differ in axis 0 \\(128, 256\\)"):
        scale_batch((ROOT / "programs" / "matmul.d1k").read_text(), 2, "m.d1k")
    with pytest.raises(D1Error, match="no inputs"):
        scale_batch("param w: f32[4] = 1\noutput w\n", 2, "p.d1k")
