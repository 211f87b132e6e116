"""`d1 train`, `d1 run --params` and `d1 compile --params` end to end, as subprocesses.

The data is a noisy linear map that programs/train_linear.d1k learns; what `d1 train` writes
(params.npz, history.csv, loss.png, --json) is checked against the numpy reference trained on
the same batches (d1.train documents the batching, so numpy can repeat it).
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.reference import init_params, train_step
from d1.params import load_params, params_npz

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ROOT / "programs" / "train_linear.d1k"
GRAPH = compiler.check_source(LINEAR.read_text())


def d1(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 16)).astype(np.float32)
    y = (x @ rng.standard_normal((16, 4)) + 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def reference(x, y, epochs, shuffle=None, params=None, seed=0):
    params = init_params(GRAPH, seed) if params is None else params
    rng = np.random.default_rng(shuffle) if shuffle is not None else None
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
        for k in range(len(x) // 64):
            pick = order[k * 64:(k + 1) * 64]
            params, out = train_step(GRAPH, params, {"x": x[pick], "y": y[pick]})
            losses.append(out["loss"])
    return params, losses


def test_train_writes_params_history_plot_and_json(dataset):
    d, x, y = dataset
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--epochs", "3", "--shuffle", "4", "--mesh", "4x4", "--out-dir", str(d / "out"),
             "--json", str(d / "t.json"))
    assert run.returncode == 0, run.stderr
    assert ("note: 150 samples make 2 batches of 64; the last 22 (a partial batch) are "
            "dropped each epoch") in run.stderr
    assert "epoch 3/3: step 6" in run.stderr               # not a terminal: a line per epoch
    assert "trained 6 steps of 64 samples on d1-4x4" in run.stdout
    params, losses = reference(x, y, 3, shuffle=4)
    got = load_params(d / "out" / "params.npz")
    assert set(got) == {"w", "b"}
    for name, value in params.items():
        assert np.max(np.abs(got[name] - value)) <= 1e-4 * max(1.0, np.max(np.abs(value)))
    rows = list(csv.reader((d / "out" / "history.csv").open()))
    assert rows[0] == ["step", "epoch", "loss", "cycles"]
    assert [(int(r[0]), int(r[1])) for r in rows[1:]] == [(1, 1), (2, 1), (3, 2), (4, 2),
                                                         (5, 3), (6, 3)]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(losses, rel=1e-4)
    cycles = {int(r[3]) for r in rows[1:]}
    assert len(cycles) == 1 and cycles.pop() > 0
    png = (d / "out" / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    doc = json.loads((d / "t.json").read_text())
    assert (doc["samples"], doc["batch_size"], doc["batches_per_epoch"],
            doc["dropped_per_epoch"], doc["epochs"], doc["interrupted"]) == (150, 64, 2, 22, 3,
                                                                            False)
    assert [r["loss"] for r in doc["history"]] == [float(r[2]) for r in rows[1:]]
    md = doc["totals"]["modelled"]
    assert md["cycles"] == sum(r["cycles"] for r in doc["history"])
    for key in ("seconds_per_step", "tflops_per_second", "link_bytes", "sram_high_water_bytes"):
        assert md[key] > 0, key


def test_the_note_on_the_dropped_samples_counts_them_in_words():
    from d1.commands.train import dropped_note
    from d1.train import Plan
    assert dropped_note(Plan(129, 64, 2, 1)) == ("note: 129 samples make 2 batches of 64; the "
                                                 "last sample (a partial batch) is dropped "
                                                 "each epoch")
    assert dropped_note(Plan(2_050, 2_048, 1, 2)).endswith("1 batch of 2048; the last 2 (a "
                                                           "partial batch) are dropped each epoch")


def test_quiet_hides_the_progress_and_json_can_go_to_stdout(dataset):
    d, _, _ = dataset
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--mesh", "4x4", "--out-dir", str(d / "out"), "--quiet", "--json", "-")
    assert run.returncode == 0, run.stderr
    assert "epoch" not in run.stderr.replace("each epoch", "")
    doc = json.loads(run.stdout)
    assert doc["totals"]["steps"] == 2 and "trained 2 steps" in run.stderr


def test_a_diverged_loss_is_null_in_the_json_which_stays_standard(dataset):
    # JSON has no NaN or infinity: json.dumps would write NaN and -Infinity, which jq,
    # JavaScript's JSON.parse and most parsers reject. history.csv keeps nan and -inf.
    d, _, _ = dataset
    prog = d / "log.d1k"
    prog.write_text("input x: f32[64, 16]\ninput y: f32[64, 4]\nparam w: f32[16, 1] = 0\n"
                    "loss = sum(log(x @ w))\nupdate w = w - grad(loss, w)\noutput loss\n")
    run = d1("train", str(prog), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--mesh", "4x4", "--out-dir", str(d / "out"), "--quiet", "--json", "-")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert [r["loss"] for r in doc["history"]] == [None, None]
    rows = list(csv.reader((d / "out" / "history.csv").open()))
    assert [r[2] for r in rows[1:]] == ["-inf", "nan"]


def test_params_start_from_a_file_and_the_rest_from_init_with_the_seed(dataset):
    d, x, y = dataset
    w = np.full((16, 4), 0.125, dtype=np.float32)
    (d / "start.npz").write_bytes(params_npz({"w": w, "momentum": np.zeros(3)}))
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--mesh", "4x4", "--out-dir", str(d / "out"), "--params", str(d / "start.npz"),
             "--init", "3", "--quiet")
    assert run.returncode == 0, run.stderr
    assert "--params" in run.stderr and "momentum is not a param of" in run.stderr
    start = init_params(GRAPH, 3) | {"w": w}
    params, _ = reference(x, y, 1, params=start)
    got = load_params(d / "out" / "params.npz")
    assert np.max(np.abs(got["w"] - params["w"])) <= 1e-4


def test_a_param_of_the_wrong_shape_in_the_file_exits_2_naming_the_file(dataset):
    d, _, _ = dataset
    (d / "bad.npz").write_bytes(params_npz({"w": np.zeros((3, 3), np.float32)}))
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--mesh", "4x4", "--out-dir", str(d / "out"), "--params", str(d / "bad.npz"),
             "--quiet")
    assert run.returncode == 2
    assert (f"--params {d / 'bad.npz'}: param 'w' has shape (3, 3), the program declares "
            "(16, 4)") in run.stderr
    assert "Traceback" not in run.stderr and not (d / "out" / "params.npz").exists()


def test_inputs_with_different_sample_counts_exit_2(dataset):
    d, x, _ = dataset
    np.save(d / "short.npy", np.zeros((100, 4), dtype=np.float32))
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input",
             f"y={d / 'short.npy'}", "--mesh", "4x4", "--out-dir", str(d / "out"))
    assert run.returncode == 2
    assert "every input must hold the same number of samples; got x 150, y 100" in run.stderr
    assert not (d / "out" / "params.npz").exists()


def test_without_input_data_the_error_names_the_inputs_or_says_there_are_none(tmp_path):
    run = d1("train", str(LINEAR), "--mesh", "4x4", "--out-dir", str(tmp_path / "out"))
    assert run.returncode == 2
    assert "give the data set of every input (x, y) with --input NAME=FILE.npy" in run.stderr
    prog = tmp_path / "noin.d1k"
    prog.write_text("param w: f32[4] = 1\nl = sum(w * w)\nupdate w = w - 0.1 * grad(l, w)\n"
                    "output l\n")
    run = d1("train", str(prog), "--mesh", "2x2", "--out-dir", str(tmp_path / "out"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"error: {prog} has no inputs, so there is no data set to cut into batches" in \
        run.stderr
    # with an --input anyway: the same, not the Python API's "run its steps with step({})"
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    run = d1("train", str(prog), "--mesh", "2x2", "--input", f"x={tmp_path / 'x.npy'}",
             "--out-dir", str(tmp_path / "out"))
    assert run.returncode == 2 and "run its steps with step" not in run.stderr
    assert f"error: {prog} has no inputs, so there is no data set to cut into batches" in \
        run.stderr


def test_destinations_are_checked_before_any_work(dataset):
    d, _, _ = dataset
    (d / "file").write_text("")
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--out-dir", str(d / "file"))
    assert run.returncode == 2 and "'--out-dir'" in run.stderr and "is a file" in run.stderr
    (d / "out").mkdir()
    (d / "out" / "params.npz").write_bytes(params_npz({"w": np.zeros((16, 4))}))
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--out-dir", str(d / "out"), "--params", str(d / "out" / "params.npz"))
    assert run.returncode == 2
    assert "would replace" in run.stderr and "refusing" in run.stderr
    # --json naming one of the files the run writes is not "an input of this command".
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--out-dir", str(d / "out"), "--json", str(d / "out" / "history.csv"))
    assert run.returncode == 2 and "an input" not in run.stderr
    assert (f"error: history.csv ({d / 'out' / 'history.csv'}) is also the --json file of "
            "this run; give each its own file") in run.stderr


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--init", "-1"], "Invalid value for '--init'"),
    (["--shuffle", "x"], "Invalid value for '--shuffle'"),
    (["--threads", "5000"], "5000 is not in the range 0<=x<=4096"),     # as d1 run's
])
def test_integer_options_are_bounded(dataset, args, message):
    d, _, _ = dataset
    run = d1("train", str(LINEAR), "--input", f"x={d / 'x.npy'}", *args)
    assert run.returncode == 2 and message in run.stderr


def test_ctrl_c_stops_after_the_step_and_still_writes_params_and_history(dataset):
    d, _, _ = dataset
    proc = subprocess.Popen([sys.executable, "-m", "d1", "train", str(LINEAR), "--input",
                             f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}", "--mesh", "4x4",
                             "--epochs", "1000000", "--out-dir", str(d / "out")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until steps are running (a line per epoch on a pipe), then press Ctrl-C.
        for line in proc.stderr:
            if line.startswith("epoch 5/"):
                break
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: stopped after step" in err
    steps = int(err.split("interrupted: stopped after step ")[1].split()[0].replace(",", ""))
    rows = list(csv.reader((d / "out" / "history.csv").open()))
    assert len(rows) - 1 == steps >= 10
    assert set(load_params(d / "out" / "params.npz")) == {"w", "b"}


def test_ctrl_c_while_setting_up_stops_before_the_first_step(dataset, monkeypatch):
    """A Ctrl-C during the compile (here: sent from inside it) waits for the set-up, runs no
    step, and still writes the starting params and the empty history (exit 130)."""
    import os

    from click.testing import CliRunner

    import d1.commands.run  # noqa: F401  (binds the real load_program: see below)
    import d1.program
    from d1.cli import cli

    d, _, _ = dataset
    load = d1.program.load_program
    # d1.commands.run binds load_program when first imported: were that during the patch,
    # every later `d1 run` of this process (other tests') would be interrupted too.

    def interrupted_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return load(*args, **kwargs)

    monkeypatch.setattr(d1.program, "load_program", interrupted_load)
    res = CliRunner().invoke(cli, ["train", str(LINEAR), "--input", f"x={d / 'x.npy'}",
                                   "--input", f"y={d / 'y.npy'}", "--mesh", "4x4", "--quiet",
                                   "--init", "3", "--out-dir", str(d / "out")])
    assert res.exit_code == 130, res.output
    assert "interrupted: stopped before the first step" in res.output
    rows = list(csv.reader((d / "out" / "history.csv").open()))
    assert rows == [["step", "epoch", "loss", "cycles"]]
    got = load_params(d / "out" / "params.npz")
    want = init_params(GRAPH, 3)
    assert all(np.array_equal(got[k], want[k]) for k in ("w", "b"))


def test_a_trapped_run_leaves_no_earlier_runs_params_or_plot_in_out_dir(dataset):
    """After a trap OUT_DIR holds this run's history and plot; the params of an earlier run
    there are removed, not left to pass for this run's (exit 1)."""
    from click.testing import CliRunner

    from d1.cli import cli

    d, _, _ = dataset
    out = d / "out"
    out.mkdir()
    stale = {name: b"an earlier run's " + name.encode() for name in
             ("params.npz", "history.csv", "loss.png")}
    for name, data in stale.items():
        (out / name).write_bytes(data)
    res = CliRunner().invoke(cli, ["train", str(LINEAR), "--input", f"x={d / 'x.npy'}",
                                   "--input", f"y={d / 'y.npy'}", "--mesh", "2x2", "--quiet",
                                   "--max-cycles", "50", "--out-dir", str(out)])
    assert res.exit_code == 1 and "step 1: run trapped" in str(res.exception)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "loss.png"]
    assert (out / "history.csv").read_text() == "step,epoch,loss,cycles\n"
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert f"removed {out / 'params.npz'}, an earlier run's" in res.output


def test_help_names_every_option_and_the_weight_resident_mode():
    run = d1("train", "--help")
    assert run.returncode == 0
    text = re.sub(r"(\w)-\s+(\w)", r"\1-\2", " ".join(run.stdout.split()))  # wrapped hyphens
    for option in ("--input", "--params", "--init", "--epochs", "--shuffle", "--machine",
                   "--out-dir", "--json", "--quiet"):
        assert option in text
    for words in ("weight-resident mode", "params.npz", "history.csv", "loss.png",
                  "default_rng(SEED)", "Ctrl-C stops after the current step",
                  # an object's embedded params come before the INITs, in the options too
                  "start from the values the object embeds (d1 compile --params), else from "
                  "their INIT", "of params that neither --params nor the object gives"):
        assert words in text
    assert "train" in d1("--help").stdout


def test_run_with_params_uses_them_and_checks_the_updated_params(dataset):
    d, x, y = dataset
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(16, 4)
    (d / "p.npz").write_bytes(params_npz({"w": w, "b": np.ones(4)}))
    np.save(d / "xb.npy", x[:64])
    np.save(d / "yb.npy", y[:64])
    run = d1("run", str(LINEAR), "--mesh", "4x4", "--params", str(d / "p.npz"), "--input",
             f"x={d / 'xb.npy'}", "--input", f"y={d / 'yb.npy'}", "--check", "--out-dir",
             str(d / "out"))
    assert run.returncode == 0, run.stderr
    assert "update:w" in run.stdout and "update:b" in run.stdout and "FAILED" not in run.stdout
    _, out = train_step(GRAPH, {"w": w, "b": np.ones(4)}, {"x": x[:64], "y": y[:64]})
    assert float(np.load(d / "out" / "loss.npy")) == pytest.approx(out["loss"], rel=1e-5)


def test_compile_embeds_params_and_run_and_train_start_from_them(dataset):
    d, x, y = dataset
    w = np.full((16, 4), -0.5, dtype=np.float32)
    (d / "p.npz").write_bytes(params_npz({"w": w}))
    obj = d / "lin.d1o"
    run = d1("compile", str(LINEAR), "--mesh", "4x4", "--params", str(d / "p.npz"), "-o",
             str(obj))
    assert run.returncode == 0, run.stderr
    assert "params embedded: w, b" in run.stderr
    np.save(d / "xb.npy", x[:64])
    np.save(d / "yb.npy", y[:64])
    run = d1("run", str(obj), "--input", f"x={d / 'xb.npy'}", "--input", f"y={d / 'yb.npy'}",
             "--check", "--out-dir", str(d / "out"))
    assert run.returncode == 0, run.stdout + run.stderr
    _, out = train_step(GRAPH, {"w": w, "b": np.zeros(4)}, {"x": x[:64], "y": y[:64]})
    assert float(np.load(d / "out" / "loss.npy")) == pytest.approx(out["loss"], rel=1e-5)
    run = d1("train", str(obj), "--input", f"x={d / 'x.npy'}", "--input", f"y={d / 'y.npy'}",
             "--out-dir", str(d / "trained"), "--quiet")
    assert run.returncode == 0, run.stderr
    params, _ = reference(x, y, 1, params={"w": w, "b": np.zeros(4, dtype=np.float32)})
    got = load_params(d / "trained" / "params.npz")
    assert np.max(np.abs(got["w"] - params["w"])) <= 1e-4
    assert d1("compile", str(LINEAR), "--params", str(d / "p.npz"), "--emit",
              "ir").returncode == 2


def test_an_init_seed_that_seeds_no_param_is_said(dataset):
    """train_linear's params start at 0: `--init 7` changes nothing, and d1 train says so
    (it was ignored in silence and recorded in the --json as if it had mattered)."""
    from click.testing import CliRunner

    from d1.cli import cli

    d, _, _ = dataset
    glorot = d / "glorot.d1k"
    glorot.write_text(LINEAR.read_text().replace("param w: f32[16, 4] = 0", "param w: f32[16, 4]"))
    said = "note: --init 7 seeds nothing: no param starts from a random INIT"
    for prog, init, noted in ((LINEAR, ["--init", "7"], True), (LINEAR, [], False),
                              (glorot, ["--init", "7"], False)):
        res = CliRunner().invoke(cli, ["train", str(prog), "--input", f"x={d / 'x.npy'}",
                                       "--input", f"y={d / 'y.npy'}", "--mesh", "2x2",
                                       "--quiet", *init, "--out-dir", str(d / "out")])
        assert res.exit_code == 0, res.output
        assert (said in res.output) == noted, (prog.name, init, res.output)
