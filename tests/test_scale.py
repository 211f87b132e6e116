"""`d1 scale`: the scaling study (d1/scale.py, d1/commands/scale.py, docs/SCALE.md).

Small machines only: chips of 4 x 4 nodes (`--mesh 4x4`), at most 2 x 2 of them.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from d1.scale import parse_chip_list, study
from d1isa.errors import D1Error

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "programs" / "train_digits.d1k"
MATMUL = ROOT / "programs" / "matmul.d1k"


def d1(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "d1", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def test_weak_scaling_of_a_training_program(tmp_path):
    r = d1("scale", str(DIGITS), "--mesh", "4x4", "--chips", "1x1,2x2", "--weak",
           "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "weak-scaling efficiency against the first row" in out
    lines = [ln.split() for ln in out.splitlines()]
    one = next(ln for ln in lines if ln and ln[0] == "1x1")
    four = next(ln for ln in lines if ln and ln[0] == "2x2")
    assert one[2] == "64" and four[2] == "256"            # the batch times the chips
    assert four[3] == "data" and one[-1] == "100.0%"
    assert "edges x0.5 (25 B/cycle)" in out and "edges x2 (100 B/cycle)" in out
    rows = list(csv.DictReader((tmp_path / "scale.csv").open()))
    assert len(rows) == 6
    assert {r["bandwidth_scale"] for r in rows} == {"1.0", "0.5", "2.0"}
    nominal = {r["chips"]: r for r in rows if r["bandwidth_scale"] == "1.0"}
    assert int(nominal["2x2"]["chip_edge_bytes"]) > 0 and nominal["1x1"]["chip_edge_bytes"] == "0"
    eff = float(nominal["2x2"]["efficiency"])
    assert eff == pytest.approx(int(nominal["1x1"]["cycles"]) / int(nominal["2x2"]["cycles"]))
    assert 0 < float(nominal["2x2"]["busiest_edge_utilisation"]) < 1
    # one chip has no chip edge: the three series share its run
    ones = [r for r in rows if r["chips"] == "1x1"]
    assert len({r["cycles"] for r in ones}) == 1
    from PIL import Image
    with Image.open(tmp_path / "scale.png") as im:
        assert im.size == (1200, 500)


def test_strong_scaling_of_a_matmul_maps_it_onto_the_whole_machine(tmp_path):
    r = d1("scale", str(MATMUL), "--mesh", "4x4", "--chips", "1x1,2x1", "--out-dir",
           str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "strong-scaling efficiency" in r.stdout
    rows = list(csv.DictReader((tmp_path / "scale.csv").open()))
    two = next(r for r in rows if r["chips"] == "2x1" and r["bandwidth_scale"] == "1.0")
    assert two["parallel"] == "whole" and two["batch"] == ""
    c1 = int(next(r for r in rows if r["chips"] == "1x1")["cycles"])
    assert float(two["efficiency"]) == pytest.approx(c1 / (2 * int(two["cycles"])))


def test_study_from_python():
    pts = study(DIGITS.read_text(), str(DIGITS), {"mesh": "4x4"}, [(1, 1), (1, 2)],
                weak=True, scales=(1.0,))
    assert [p.chips for p in pts] == [(1, 1), (1, 2)]
    assert pts[1].parallel == "data" and pts[1].batch == 128 and pts[1].ok
    assert pts[0].efficiency == 1.0 and 0 < pts[1].efficiency <= 1.0


@pytest.mark.parametrize("args, message", [
    (["--chips", "2x"], "--chips expects CHIPS_ACROSSxCHIPS_DOWN"),
    (["--chips", "1x1,,2x2"], "--chips expects a list of chip grids"),
    (["--chips", "1x1,1x1"], "lists a chip grid twice"),
    (["--chips", "1x1,2x2", "--weak", "--program", "matmul"],
     "the inputs differ in axis 0 (128, 256), so there is no one batch to scale"),
    (["--chips", "1x1", "--program", "missing"], "cannot read"),
    (["--chips", "1x1", "--program", "asm"], "d1 scale takes a .d1k program"),
    (["--chips", "1x1,2x2", "-O", "parallel=maybe"], "unknown parallel mode 'maybe'"),
])
def test_usage_errors_exit_2(args, message, tmp_path):
    prog = {"matmul": str(MATMUL), "missing": str(tmp_path / "none.d1k"),
            "asm": str(ROOT / "programs" / "asm" / "vadd.d1s")}
    if "--program" in args:
        k = args.index("--program")
        path = prog[args[k + 1]]
        args = args[:k] + args[k + 2:]
    else:
        path = str(DIGITS)
    r = d1("scale", path, "--mesh", "4x4", "--out-dir", str(tmp_path / "o"), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "scale.csv").exists()


def test_a_compile_error_is_reported_once_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.d1k"
    bad.write_text("input x: f32[8, 4]\ny = relu(x) @ x\noutput y\n")
    r = d1("scale", str(bad), "--mesh", "4x4", "--chips", "1x1,2x2", "--out-dir",
           str(tmp_path))
    assert r.returncode == 2
    assert "bad.d1k:2:13: error: matmul dimension mismatch" in r.stderr


def test_a_machine_this_host_cannot_emulate_is_refused(tmp_path):
    from d1isa.machine import load_machine
    from emulator.state import host_bytes, physical_memory
    if (physical_memory() or 0) >= host_bytes(load_machine("d1", chips="60x60")):
        pytest.skip("this host could hold 3,600 chips")
    r = d1("scale", str(DIGITS), "--chips", "1x1,60x60", "--out-dir", str(tmp_path))
    assert r.returncode == 2
    assert "the emulator needs" in r.stderr


def test_parse_chip_list():
    assert parse_chip_list("1x1, 2x2,5x5") == [(1, 1), (2, 2), (5, 5)]
    with pytest.raises(D1Error):
        parse_chip_list("")
