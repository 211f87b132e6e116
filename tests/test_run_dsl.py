"""`d1 run` on DSL programs: in-memory compilation, seeded inputs, --check and its exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def d1(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_run_d1k_check_passes_and_writes_outputs(tmp_path):
    r = d1("run", "programs/softmax.d1k", "--mesh", "4x4", "--check", "--out-dir", str(tmp_path),
           "--json", str(tmp_path / "run.json"))
    assert r.returncode == 0, r.stderr
    assert "check against the numpy reference" in r.stdout
    assert "FAILED" not in r.stdout
    p = np.load(tmp_path / "p.npy")
    assert p.dtype == np.float32
    assert np.allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    doc = json.loads((tmp_path / "run.json").read_text())
    assert all(row["ok"] for row in doc["check"])


def test_given_input_is_used_and_seed_fills_the_rest(tmp_path):
    src = tmp_path / "k.d1k"
    src.write_text("input a: f32[4, 16]\ninput b: f32[16]\nc = a + b\noutput c\n")
    a = np.arange(64, dtype=np.float64).reshape(4, 16)
    np.save(tmp_path / "a.npy", a)
    outs = []
    for seed in ("1", "1", "2"):
        r = d1("run", str(src), "--mesh", "2x2", "--input", f"a={tmp_path / 'a.npy'}",
               "--seed", seed, "--check", "--out-dir", str(tmp_path / seed))
        assert r.returncode == 0, r.stderr
        outs.append(np.load(tmp_path / seed / "c.npy"))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    b = outs[0] - a.astype(np.float32)
    assert np.allclose(b, b[0])          # the same seeded b was added to every row


@pytest.mark.parametrize("args, message", [
    (["--input", "x=MISSING.npy"], "cannot read"),
    (["--input", "nope=BAD"], "has no input tensor 'nope'"),
    (["--input", "x=BAD"], "must have shape (64, 784)"),
])
def test_input_errors_exit_2_without_traceback(tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    args = [a.replace("BAD", str(tmp_path / "bad.npy")) for a in args]
    r = d1("run", "programs/mlp.d1k", "--mesh", "2x2", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_input_of_a_param_points_to_params(tmp_path):
    np.save(tmp_path / "b.npy", np.zeros(4, np.float32))
    r = d1("run", "programs/train_linear.d1k", "--mesh", "2x2", "--input",
           f"b={tmp_path / 'b.npy'}", "--out-dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("--input b: the program has no input tensor 'b' (inputs: x, y); it is a param: "
            "start it from --params FILE.npz") in r.stderr


def test_check_refuses_assembly_programs():
    r = d1("run", "programs/asm/vadd.d1s", "--mesh", "4x4", "--check")
    assert r.returncode == 2
    assert "--check needs a DSL program" in r.stderr


def test_check_of_a_compiled_object_uses_its_embedded_source(tmp_path):
    obj = tmp_path / "mm.d1o"
    assert d1("compile", "programs/matmul_odd.d1k", "--mesh", "4x4", "-o", str(obj)).returncode == 0
    r = d1("run", str(obj), "--check", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert " ok" in r.stdout
