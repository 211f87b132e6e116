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

from d1.scale import compile_points, parse_chip_list, study
from d1isa.errors import D1Error
from d1isa.machine import MAX_LINK_BYTES

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "programs" / "train_digits.d1k"
MATMUL = ROOT / "programs" / "matmul.d1k"
LENET = ROOT / "programs" / "lenet.d1k"      # its reshape spells out the batch, 64


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
    assert one[3] == "whole"            # as in scale.csv: one chip is the whole machine
    assert "edges x0.5 (25 B/cycle)" in out and "edges x2 (100 B/cycle)" in out
    rows = list(csv.DictReader((tmp_path / "scale.csv").open()))
    assert len(rows) == 6
    assert {r["bandwidth_scale"] for r in rows} == {"1.0", "0.5", "2.0"}
    nominal = {r["chips"]: r for r in rows if r["bandwidth_scale"] == "1.0"}
    assert int(nominal["2x2"]["chip_edge_bytes"]) > 0 and nominal["1x1"]["chip_edge_bytes"] == "0"
    assert nominal["1x1"]["parallel"] == one[3] and nominal["2x2"]["parallel"] == four[3]
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
    # the table's parallel column is the CSV's, one chip included
    table: dict[str, list[str]] = {}
    for ln in r.stdout.splitlines():             # the first table's rows, not the second's
        if ln.split() and ln.split()[0] in ("1x1", "2x1"):
            table.setdefault(ln.split()[0], ln.split())
    assert table["1x1"][3] == table["2x1"][3] == "whole"
    assert {r["parallel"] for r in rows} == {"whole"}
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
    # --set cannot make every machine of the study the same chip grid behind --chips' back
    (["--chips", "1x1,2x1", "--set", "chips_x=2"],
     "--set chips_x: --chips gives the chip grids of the study"),
    (["--chips", "1x1,2x1", "-O", "parallel=data"],
     "-O parallel=data splits the batch over several chips, and --chips lists 1x1"),
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


@pytest.mark.parametrize("weak", [[], ["--weak"]])
def test_a_compile_error_is_reported_once_before_anything_runs(tmp_path, weak):
    bad = tmp_path / "bad.d1k"
    bad.write_text("input x: f32[8, 4]\ny = relu(x) @ x\noutput y\n")
    r = d1("scale", str(bad), "--mesh", "4x4", "--chips", "2x1,1x1", "--out-dir",
           str(tmp_path), *weak)
    assert r.returncode == 2
    assert "does not compile for 2x1 chips of 4 x 4 nodes:" in r.stderr
    assert r.stderr.count("bad.d1k:2:13: error: matmul dimension mismatch") == 1
    # the program is wrong as written: not a matter of --weak's batch
    assert "could not be scaled" not in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == "" and not (tmp_path / "scale.csv").exists()


def test_weak_scaling_a_reshape_that_spells_out_the_batch_fails_before_anything_runs(tmp_path):
    """lenet.d1k's reshape(h2, [64, 256]) compiles at batch 64 (1x1) but not at 128 (2x1):
    the study used to run 1x1 and then fail every 2x1 run (exit 1)."""
    r = d1("scale", str(LENET), "--mesh", "4x4", "--chips", "1x1,2x1", "--weak",
           "--out-dir", str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert ("error: the program could not be scaled to 2x1 chips of 4 x 4 nodes: at a batch "
            "of 128 (64 x 2 chips, --weak) it does not compile:") in r.stderr
    assert "lenet.d1k:26:20: error: cannot reshape [128, 16, 4, 4]" in r.stderr
    assert "write [64, 256] as [-1, 256] (-1 means the rest" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == "" and not (tmp_path / "scale.csv").exists()     # nothing ran
    # and the fix the note gives scales
    fixed = tmp_path / "lenet.d1k"
    fixed.write_text(LENET.read_text().replace("[64, 256]", "[-1, 256]"))
    pts = study(fixed.read_text(), str(fixed), {"mesh": "4x4"}, [(1, 1), (2, 1)], weak=True,
                scales=(1.0,))
    assert [p.batch for p in pts] == [64, 128] and all(p.ok for p in pts)


def test_every_point_compiles_before_any_runs(monkeypatch):
    import d1.scale as scale
    ran = []
    monkeypatch.setattr(scale, "measure", lambda *a, **k: ran.append(a))
    with pytest.raises(D1Error, match="could not be scaled to 2x1 chips"):
        study(LENET.read_text(), str(LENET), {"mesh": "4x4"}, [(1, 1), (2, 1)], weak=True)
    assert ran == []


def test_the_halved_and_doubled_bandwidths_are_compiled_for(monkeypatch):
    """The compiler times its messages with the link bandwidth, so each chip-edge bandwidth
    of a machine of several chips is a compile of its own, done before anything runs; a
    machine of one chip has no chip edge, and its three points share one object."""
    pts = compile_points(MATMUL.read_text(), str(MATMUL), {"mesh": "4x4"}, [(1, 1), (2, 1)])
    assert [(p.chips, p.scale) for p in pts] == [((1, 1), 1.0), ((2, 1), 1.0), ((1, 1), 0.5),
                                                ((2, 1), 0.5), ((1, 1), 2.0), ((2, 1), 2.0)]
    assert [p.same is pts[0] for p in pts] == [False, False, True, False, True, False]
    own = [p for p in pts if p.same is None]
    assert all(p.obj is not None and p.parallel == "whole" for p in own)
    assert [p.obj.machine.chip_link_bytes_per_cycle for p in own] == [50, 50, 25, 100]
    # a point that compiles only at the nominal bandwidth is still an error before any run
    import compiler.pipeline as pipeline
    real = pipeline.compile_text

    def fails_when_halved(text, machine, *args, **kwargs):
        if machine.chips > 1 and machine.chip_link_bytes_per_cycle == 25:
            raise D1Error("boom")
        return real(text, machine, *args, **kwargs)

    monkeypatch.setattr(pipeline, "compile_text", fails_when_halved)
    with pytest.raises(D1Error) as e:
        study(MATMUL.read_text(), str(MATMUL), {"mesh": "4x4"}, [(1, 1), (2, 1)])
    assert str(e.value) == ("the program does not compile for 2x1 chips of 4 x 4 nodes with "
                            "the chip-edge bandwidth halved (25 B/cycle): boom")


@pytest.mark.parametrize("nominal, series", [(1, [1, 1, 2]), (MAX_LINK_BYTES, [MAX_LINK_BYTES,
                                                   MAX_LINK_BYTES // 2, MAX_LINK_BYTES])])
def test_the_bandwidth_series_stay_within_the_parameter_s_range(nominal, series):
    """At the ends of chip_link_bytes_per_cycle's range (1 .. 2^20) halving or doubling is
    kept in range, as the table's header shows: doubling 2^20 was a MachineError (exit 2)."""
    text = "input a: f32[8, 16]\nb = a + a\noutput b\n"
    base = {"mesh": "2x2", "overrides": {"chip_link_bytes_per_cycle": nominal}}
    pts = compile_points(text, "ew.d1k", base, [(2, 1)])
    assert [p.obj.machine.chip_link_bytes_per_cycle for p in pts] == series


def test_a_grid_the_program_does_not_fit_is_named_before_anything_runs(tmp_path):
    """Strong scaling: 3 x 256 KiB of f32 fits on two chips of 32 KiB nodes, not on one."""
    prog = tmp_path / "ew.d1k"
    prog.write_text("input a: f32[256, 256]\ninput b: f32[256, 256]\nc = a * b + a\n"
                    "output c\n")
    r = d1("scale", str(prog), "--mesh", "4x4", "--set", "sram_bytes=32768", "--chips",
           "2x1,1x1", "--out-dir", str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "error: the program does not compile for 1x1 chips of 4 x 4 nodes:" in r.stderr
    assert "does not fit in a node's SRAM" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == "" and not (tmp_path / "scale.csv").exists()


def test_runs_that_fail_are_rows_and_exit_1(tmp_path):
    r = d1("scale", str(MATMUL), "--mesh", "4x4", "--chips", "1x1,2x1", "--max-cycles", "10",
           "--out-dir", str(tmp_path))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "error: 6 of 6 runs failed" in r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    rows = list(csv.DictReader((tmp_path / "scale.csv").open()))
    assert {r["status"] for r in rows} == {"trapped"}
    assert {r["parallel"] for r in rows} == {"whole"}      # known from the compile
    assert "cycle limit exceeded" in rows[0]["error"]
    line = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("2x1 "))
    assert line[3] == "whole" and "trapped:" in line
    assert (tmp_path / "scale.png").exists()


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


def test_the_picture_joins_points_by_chip_count_whatever_the_order_of_chips(tmp_path,
                                                                             monkeypatch):
    """`--chips 1x1,2x2,3x1` (the first grid is the baseline, the rest in any order): each
    line used to join the points in the list's order, 1 -> 4 -> 3 chips, a zigzag; and two
    grids of one count (2x1, 1x2) shared a tick named after only one of them."""
    from matplotlib.axes import Axes

    from d1.plots import scale_png
    from d1.scale import Point

    lines, ticks = [], []
    plot, set_labels = Axes.plot, Axes.set_xticklabels
    monkeypatch.setattr(Axes, "plot", lambda ax, x, *a, **k: (lines.append(list(x)),
                                                              plot(ax, x, *a, **k))[1])
    monkeypatch.setattr(Axes, "set_xticklabels", lambda ax, t, *a, **k: (
        ticks.append(list(t)), set_labels(ax, t, *a, **k))[1])
    points = [Point(chips=g, bandwidth=int(50 * sc), scale=sc, cycles=100 * g[0] * g[1],
                    efficiency=1.0 / (g[0] * g[1]))
              for sc in (1.0, 0.5, 2.0) for g in ((1, 1), (2, 2), (3, 1), (2, 1), (1, 2))]
    scale_png(points, tmp_path / "scale.png", "t", weak=True)
    assert len(lines) == 4 and all(x == sorted(x) for x in lines), lines
    assert ticks[0] == ["1x1\n(1)", "2x1, 1x2\n(2)", "3x1\n(3)", "2x2\n(4)"]
