"""The digits demo: scikit-learn's digits, the fixed split, and programs/train_digits.d1k.

The loader is checked against scikit-learn itself; the program and its hyperparameters are
checked by training with the numpy reference exactly as `d1 train --shuffle 0 --init 0` batches
(>= 95% test accuracy within 30 epochs); then the same run end to end through `d1 train` and
`d1 run` on the d1 chip, which needs mesh kernels for log_softmax and the relu mask and is
skipped, naming the missing kernel, while the back end lacks them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from progkit import compile_program

import compiler
from compiler.reference import evaluate, init_params, train_step
from d1 import digits

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "programs" / "train_digits.d1k"
PREDICT = ROOT / "programs" / "digits_predict.d1k"
EXAMPLE_HEAD = "# Digits classifier, one SGD step with momentum per call."


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    digits.write(d)
    return d


def test_the_loader_gives_scaled_features_one_hot_labels_and_a_fixed_split(data):
    from sklearn.datasets import load_digits
    ref = load_digits()
    x, labels = digits.load()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert np.array_equal(x * 16, ref.data.astype(np.float32))
    assert x.min() == 0 and x.max() == 1
    s = digits.load_split(data / "digits.npz")                 # read without scikit-learn
    assert [s[n].shape for n in digits.ARRAYS] == [(1437, 64), (1437, 10), (360, 64), (360, 10)]
    assert np.all(s["y_train"].sum(axis=1) == 1) and set(np.unique(s["y_test"])) == {0, 1}
    order = np.random.default_rng(0).permutation(1797)
    assert np.array_equal(s["x_test"], x[order[:360]])
    assert np.array_equal(np.argmax(s["y_train"], axis=1), labels[order[360:]])
    for name in digits.ARRAYS:
        assert np.array_equal(np.load(data / f"{name}.npy"), s[name])
    # Every class is in the test split, about a tenth each.
    counts = np.bincount(np.argmax(s["y_test"], axis=1), minlength=10)
    assert counts.min() >= 25


def test_accuracy_counts_the_highest_score_at_the_label():
    y = digits.one_hot(np.array([0, 2, 1, 2]), 3)
    scores = np.array([[3, 1, 0], [0, 1, 2], [0, 5, 1], [9, 0, 1]], dtype=np.float32)
    assert digits.accuracy(scores, y) == 0.75


def test_the_program_is_the_issue_example_and_predict_reads_its_params():
    text = TRAIN.read_text()
    assert text.startswith(EXAMPLE_HEAD)
    g = compiler.check_source(text)
    p = compiler.check_source(PREDICT.read_text())
    shapes = {n.name: n.shape for n in g.params}
    assert {n.name: n.shape for n in p.params} == {k: v for k, v in shapes.items() if k != "m1"}
    assert [u.param.name for u in g.updates] == ["m1", "w1", "b1", "w2", "b2"]


def test_the_reference_learns_the_digits_to_95_percent_in_30_epochs(data):
    # The batches `d1 train --shuffle 0` makes: each epoch default_rng(0).permutation, drawn
    # once per epoch, cut into 22 batches of 64 (the last 29 samples dropped).
    s = digits.load_split(data / "digits.npz")
    g = compiler.check_source(TRAIN.read_text())
    p = compiler.check_source(PREDICT.read_text())
    params = init_params(g, 0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        order = rng.permutation(1437)
        for k in range(1437 // 64):
            pick = order[k * 64:(k + 1) * 64]
            params, out = train_step(g, params, {"x": s["x_train"][pick],
                                                 "y": s["y_train"][pick]})
    z = evaluate(p, {"x": s["x_test"]}, {k: v for k, v in params.items() if k != "m1"})["z"]
    assert digits.accuracy(z, s["y_test"]) >= 0.95
    assert out["loss"] < 0.5


def test_d1_train_learns_the_digits_on_the_chip(data, tmp_path):
    compile_program(TRAIN.read_text(), None, "programs/train_digits.d1k")

    def d1(*args):
        run = subprocess.run([sys.executable, "-m", "d1", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=3600)
        assert run.returncode == 0, run.stderr
        return run

    out = tmp_path / "digits"
    d1("train", str(TRAIN), "--input", f"x={data / 'x_train.npy'}", "--input",
       f"y={data / 'y_train.npy'}", "--init", "0", "--shuffle", "0", "--epochs", "30",
       "--out-dir", str(out), "--quiet")
    d1("run", str(PREDICT), "--params", str(out / "params.npz"), "--input",
       f"x={data / 'x_test.npy'}", "--out-dir", str(out))
    z = np.load(out / "z.npy")
    assert digits.accuracy(z, np.load(data / "y_test.npy")) >= 0.95


def test_the_command_line_writes_the_split_and_scores_predictions(tmp_path):
    def digits_cli(*args):
        return subprocess.run([sys.executable, "-m", "d1.digits", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    run = digits_cli(str(tmp_path / "data"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data" / "digits.npz").exists()
    y = np.load(tmp_path / "data" / "y_test.npy")
    scores = y.copy()
    scores[:36] = np.roll(y[:36], 1, axis=1)                  # 36 of 360 wrong
    np.save(tmp_path / "s.npy", scores)
    run = digits_cli("accuracy", str(tmp_path / "s.npy"), str(tmp_path / "data" / "y_test.npy"))
    assert run.returncode == 0 and run.stdout.startswith("accuracy 90.00%")
    assert digits_cli().returncode == 2 and "usage:" in digits_cli().stderr


def test_the_command_line_takes_no_option_for_a_directory(tmp_path, capsys, monkeypatch):
    # `python -m d1.digits --help` used to write the split into a directory named --help.
    monkeypatch.chdir(tmp_path)
    assert digits.main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage:")
    assert digits.main(["-o"]) == 2 and "usage:" in capsys.readouterr().err
    assert digits.main(["accuracy", "-x", "y.npy"]) == 2
    assert list(tmp_path.iterdir()) == []
