"""`d1 viz`, `d1 roofline`, `d1 sweep` and `d1 diff`: pictures, tables and their figures."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from d1.analysis import (
    Point,
    geometry,
    kernel_point,
    load_run,
    roofs_for,
)
from d1.cli import cli
from d1.commands.sweep import split_values
from d1.plots import sram_axis_label, sweep_png
from d1isa.errors import D1Error
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]
ASM = ROOT / "programs" / "asm"
PROGRAMS = ROOT / "programs"


def d1(*args: str, ok: bool = True):
    """Run a d1 command in this process (the JIT is warm after the first)."""
    r = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def check_png(path: Path, width: int, height: int) -> np.ndarray:
    assert path.stat().st_size > 10_000
    assert png_size(path) == (width, height)
    from matplotlib.image import imread
    img = imread(path)
    assert img.shape[:2] == (height, width)
    assert float(img[..., :3].std()) > 0.05          # not a blank picture
    return img


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Statistics files of a few runs, as `d1 run --json` writes them."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    for name, args in {
        "ring": [str(ASM / "token_ring.d1s"), "--machine", "h6x5"],
        "mm64": [str(PROGRAMS / "matmul.d1k"), "--mesh", "4x4", "--regions"],
        "mm16": [str(PROGRAMS / "matmul.d1k"), "--mesh", "4x4", "--regions",
                 "--set", "link_bytes_per_cycle=16"],
    }.items():
        path = d / f"{name}.json"
        d1("run", *args, "--json", str(path), "--out-dir", str(d / "out"))
        out[name] = path
    return out


# ---- d1 viz --------------------------------------------------------------------------------------

def test_mesh_png_has_its_size_and_marks_harvested_nodes(runs, tmp_path):
    png = tmp_path / "ring.png"
    r = d1("viz", str(runs["ring"]), "-o", str(png))
    assert f"wrote {png} (1200 x 1000 px)" in r.output and "6 x 5 mesh" in r.output
    img = check_png(png, 1200, 1000)
    small = tmp_path / "small.png"
    d1("viz", str(runs["ring"]), "-o", str(small), "--dpi", "50")
    check_png(small, 600, 500)
    # the hatched grey of the two harvested nodes (0.8 grey face) appears in the picture
    grey = np.all(np.abs(img[..., :3] - 0.8) < 0.02, axis=-1)
    assert grey.sum() > 2000


@pytest.mark.parametrize("top, sram, label", [
    (256, 1_310_720, "B (of 1,310,720 B per node)"),          # was '1.31072e+06 B'
    (137_600, 1_310_720, "KiB (of 1,280 KiB per node)"),
    (2 << 20, 5 << 19, "MiB (of 2.5 MiB per node)"),
    (256, None, "B")])
def test_sram_panel_label_gives_the_node_sram_without_an_exponent(top, sram, label):
    assert sram_axis_label(top, sram) == label


def test_machine_options_beside_a_recorded_machine_get_a_note(runs, tmp_path):
    # the statistics record the machine they ran on: the options are not used, and say so
    note = f"note: {runs['ring']} records the machine it ran on"
    r = d1("viz", str(runs["ring"]), "-o", str(tmp_path / "v.png"), "--mesh", "4x4")
    assert note in r.output and "6 x 5 mesh" in r.output
    assert note in d1("roofline", str(runs["ring"]), "--mesh", "4x4").output
    assert note not in d1("viz", str(runs["ring"]), "-o", str(tmp_path / "w.png")).output


def test_terminal_heatmap_shows_every_node_and_the_harvested_ones(runs):
    doc = load_run(runs["ring"])
    s = doc["stats"]
    r = d1("viz", str(runs["ring"]), "--term", "--metric", "busy", "--no-color")
    lines = r.output.splitlines()
    grid = lines[2:7]
    assert lines[1].split() == ["y\\x", "0", "1", "2", "3", "4", "5"]
    cells = {}
    for y, row in enumerate(grid):
        vals = row.split()[1:]
        assert row.split()[0] == str(y) and len(vals) == 6
        for x, v in enumerate(vals):
            cells[(x, y)] = v
    assert sorted(xy for xy, v in cells.items() if v == "XX") == \
        sorted(tuple(h) for h in s["mesh"]["harvested"]) == [(2, 1), (3, 3)]
    k = s["modelled"]["kernel_cycles"]
    for x, y, busy in zip(s["nodes"]["x"], s["nodes"]["y"], s["nodes"]["busy"], strict=True):
        assert cells[(x, y)] == str(round(100 * busy / k))
    assert "% of the kernel time" in r.output and "cycles, modelled" in r.output
    assert "XX = harvested (2)" in r.output
    r = d1("viz", str(runs["ring"]), "--term", "--metric", "stall", "--no-color")
    # the token reaches the last node last: it waited longest
    assert r.output.splitlines()[6].split()[-1] == str(
        round(100 * max(s["nodes"]["stall"]) / k))
    for metric in ("sram", "flops"):
        r = d1("viz", str(runs["mm64"]), "--term", "--metric", metric, "--no-color")
        assert "(modelled)" in r.output and "4 x 4 mesh" in r.output
    r = d1("viz", str(runs["mm64"]), "--term", "--metric", "flops", "--color")
    assert "\x1b[" in r.output                         # colour when asked for


def test_viz_reads_old_statistics_without_geometry(runs, tmp_path):
    doc = json.loads(runs["ring"].read_text())
    for key in ("mesh", "machine_params"):
        del doc["stats"][key]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    g = geometry(load_run(old)["stats"])
    assert (g.width, g.height, sorted(g.harvested)) == (6, 5, [(2, 1), (3, 3)])
    png = tmp_path / "old.png"
    d1("viz", str(old), "-o", str(png))
    check_png(png, 1200, 1000)
    # h6x5 is a named machine: its parameters are found by name
    r = d1("viz", str(old), "--term", "--metric", "sram", "--no-color")
    assert "of the node's SRAM (1.25 MiB" in r.output
    doc = json.loads(runs["mm64"].read_text())
    for key in ("mesh", "machine_params"):
        del doc["stats"][key]
    old.write_text(json.dumps(doc))
    r = d1("viz", str(old), "--term", "--metric", "sram", ok=False)
    assert r.exit_code != 0 and "--machine" in str(r.exception)
    r = d1("viz", str(old), "--term", "--metric", "sram", "--mesh", "4x4",
           "--set", "sram_bytes=65536", "--no-color")
    assert "of the node's SRAM (64 KiB" in r.output
    r = d1("viz", str(old), ok=False)
    assert r.exit_code == 2 and "give -o OUT.png" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    r = d1("viz", str(bad), "--term", ok=False)
    assert "not a statistics file" in str(r.exception)


# ---- d1 roofline --------------------------------------------------------------------------------

def test_roofs_and_binding_roof_arithmetic():
    m = load_machine(mesh="4x4")
    roofs = roofs_for(m)
    assert roofs.links == 48 and roofs.nodes == 16
    assert roofs.link_bytes_per_s == 48 * 64 * 2e9
    assert roofs.sram_bytes_per_s == 192 * 16 * 2e9
    assert roofs.peak["bf16"] == 16 * 512 * 2e9
    # 1 FLOP per link byte: the link roof (6.1 TFLOP/s) is far below the bf16 peak
    p = Point("x", 1000, 1000, 10, 1e-6, "bf16")
    assert p.binding(roofs) == ("links", roofs.link_bytes_per_s)
    # no bytes at all: only the compute peak binds
    q = Point("y", 1000, 0, 0, 1e-6, "f32")
    assert math.isinf(q.link_intensity) and q.binding(roofs) == ("f32", roofs.peak["f32"])
    s = Point("z", 1000, 1, 1000, 1e-6, "bf16")
    assert s.binding(roofs)[0] == "sram"


def test_link_roof_of_several_chips_names_each_link_rate():
    """On-chip and chip-edge links differ in bandwidth: the link roof says how many of each,
    not every link at their average."""
    roofs = roofs_for(load_machine(mesh="4x4", chips="2x2"))      # chip edge 50 B/cycle
    assert roofs.link_rates == ((192, 64 * 2e9), (32, 50 * 2e9))
    assert roofs.link_bytes_per_s == (192 * 64 + 32 * 50) * 2e9
    assert ("27.78 TB/s  (192 directed links x 128 GB/s + 32 directed links x 100 GB/s)"
            in roofs.lines()[2])


def test_roofline_of_a_program_tabulates_every_operation(tmp_path):
    png = tmp_path / "roof.png"
    r = d1("roofline", str(PROGRAMS / "attention.d1k"), "--mesh", "4x4", "-o", str(png))
    out = r.output
    check_png(png, 1000, 700)
    for label in ("%t4 = matmul[summa] @15:12", "weights = softmax[rows] @16:11",
                  "out = matmul[summa] @17:27", "whole kernel"):
        assert label in out
    assert "link roof            6.144 TB/s  (48 directed links x 128 GB/s)" in out
    assert "all figures modelled" in out
    rows = {ln.split("  ")[0].strip(): ln for ln in out.splitlines() if "@1" in ln}
    # (k's transpose is placed by the host: the cast to bf16 is the step without FLOPs)
    assert "- (no FLOPs)" in rows["%t8 = elementwise(cast) @17:7"]
    # the matmuls' FLOP column is exact: 64 x 32 x 64 multiply-adds each
    assert f"{2 * 64 * 32 * 64:,}" in rows["%t4 = matmul[summa] @15:12"]
    kernel = next(ln for ln in out.splitlines() if ln.startswith("whole kernel "))
    assert any(name in kernel for name in ("SRAM bandwidth", "link bandwidth", "bf16 peak"))
    assert "whole kernel: " in out and "% of the roof that binds it" in out


def test_roofline_of_statistics_with_and_without_regions(runs, tmp_path):
    r = d1("roofline", str(runs["mm64"]))
    doc = load_run(runs["mm64"])
    kp = kernel_point(doc["stats"])
    assert "c = matmul[summa] @9:7" in r.output
    assert f"{kp.flops:,}" in r.output and f"{kp.link_bytes:,}" in r.output
    r = d1("roofline", str(runs["ring"]))
    assert "no per-operation figures" in r.output
    assert "whole kernel: no FLOPs" in r.output



def test_roofline_of_statistics_draws_the_png(runs, tmp_path):
    # Reading a statistics file is guarded twice (table, then picture); the second guard
    # used to be the first, already spent, context manager: an internal error.
    png = tmp_path / "mm64-roofline.png"
    r = d1("roofline", str(runs["mm64"]), "-o", str(png))
    assert f"wrote {png} (1000 x 700 px)" in r.output
    check_png(png, 1000, 700)



def test_a_dash_is_not_a_picture_or_table_file(runs, tmp_path, monkeypatch):
    # '-' means standard output only for --json; these wrote a file named '-'
    monkeypatch.chdir(tmp_path)
    for args in (["viz", str(runs["mm64"]), "-o", "-"],
                 ["roofline", str(runs["mm64"]), "-o", "-"],
                 ["sweep", str(ASM / "vadd.d1s"), "--mesh", "2x2", "--csv", "-"],
                 ["sweep", str(ASM / "vadd.d1s"), "--mesh", "2x2", "--plot", "-"]):
        r = d1(*args, ok=False)
        assert "needs a file name: '-' (standard output)" in str(r.exception), args
    assert not (tmp_path / "-").exists()
    # nor a directory: --out-dir - made one named '-'
    for args in (["run", str(ASM / "vadd.d1s"), "--mesh", "2x2", "--out-dir", "-"],
                 ["train", str(ROOT / "programs" / "train_linear.d1k"), "--mesh", "2x2",
                  "--input", "x=x.npy", "--input", "y=y.npy", "--out-dir", "-"]):
        r = d1(*args, ok=False)
        assert "--out-dir needs a directory name: '-'" in str(r.exception), args
    assert not (tmp_path / "-").exists()


# ---- d1 sweep -------------------------------------------------------------------------------

def test_sweep_refuses_compiler_options_for_assembly_at_once():
    # a usage error (exit 2), not the same failure in every point's row (exit 1)
    r = d1("sweep", str(ASM / "vadd.d1s"), "--mesh", "2x2,4x4", "-O", "matmul=naive", ok=False)
    assert isinstance(r.exception, D1Error) and "sweep" not in r.output
    assert str(r.exception).startswith("-O compiler options apply to .d1k programs")


def test_sweep_row_of_a_deadlock_names_it_once(tmp_path):
    csv_path = tmp_path / "dead.csv"
    r = d1("sweep", str(ASM / "deadlock.d1s"), "--mesh", "3x3", "--csv", str(csv_path),
           ok=False)
    assert "deadlock: a cycle of 2 waiting nodes" in r.output
    assert "deadlock: deadlock" not in r.output
    row = next(csv.DictReader(csv_path.open()))
    assert (row["status"], row["error"]) == ("deadlock", "a cycle of 2 waiting nodes")


def test_sweep_values_split_outside_brackets():
    assert split_values("16,32, 64") == ["16", "32", "64"]
    assert split_values("[[1,1],[2,3]],[]") == ["[[1,1],[2,3]]", "[]"]


def test_sweep_png_marks_a_combination_that_failed_at_every_point(tmp_path):
    # such a combination was skipped before its failed points were marked: nothing showed it
    def row(mesh, sram, cycles):
        return {"params": {"mesh": mesh, "sram_bytes": sram}, "cycles": cycles,
                "percent": None if cycles is None else 5.0}
    rows = [row("2x2", 512, None), row("2x2", 4096, 35), row("4x4", 512, None),
            row("4x4", 4096, 40)]
    png = tmp_path / "sweep.png"
    sweep_png(["mesh", "sram_bytes"], rows, png, "t")
    img = check_png(png, 1000, 800)
    red = img[..., 0] - (img[..., 1] + img[..., 2]) / 2 > 0.25       # the dotted red lines
    assert red.sum() > 100


def test_sweep_runs_every_point_and_keeps_going_after_errors(tmp_path, runs):
    out_csv = tmp_path / "s.csv"
    png = tmp_path / "s.png"
    r = d1("sweep", str(PROGRAMS / "matmul.d1k"), "--mesh", "4x4",
           "--set", "link_bytes_per_cycle=16,64", "--set", "sram_bytes=16384,1310720",
           "--csv", str(out_csv), "--plot", str(png), ok=False)
    out = r.output
    assert r.exit_code == 1, "a sweep with a failed point exits 1, after writing every row"
    assert "on d1 with each row's mesh: 4 points (all figures modelled)" in out, \
        "the header says the rows run on 4 x 4 meshes, not on d1's 354 nodes"
    assert out.count("error: does not fit in a node's SRAM") == 2
    assert "2 points failed" in out and "(measured on the host)" in out
    check_png(png, 1000, 800)
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["link_bytes_per_cycle"], r["sram_bytes"], r["status"]) for r in rows] == [
        ("16", "16384", "error"), ("16", "1310720", "ok"),
        ("64", "16384", "error"), ("64", "1310720", "ok")]
    # the 64 B/cycle point is the same run as `d1 run --mesh 4x4`
    ref = load_run(runs["mm64"])["stats"]["modelled"]
    assert int(rows[3]["kernel_cycles"]) == ref["kernel_cycles"]
    assert int(rows[3]["link_bytes"]) == ref["link_bytes"]
    assert int(rows[3]["sram_traffic_bytes"]) == ref["sram_bytes"]
    assert int(rows[1]["kernel_cycles"]) > int(rows[3]["kernel_cycles"])
    assert rows[1]["binding_roof"] in ("link bandwidth", "SRAM bandwidth", "bf16 peak")
    assert "fastest: mesh=4x4, link_bytes_per_cycle=64, sram_bytes=1310720" in out


def test_sweep_of_an_object_says_what_the_loader_did(tmp_path):
    """A timing parameter swept over an object is applied to it, and a code-generating one
    recompiles its embedded source: each point's note was dropped; the distinct notes are
    shown once, as d1 run and d1 roofline show them."""
    obj = tmp_path / "relu.d1o"
    d1("compile", str(PROGRAMS / "elementwise.d1k"), "--mesh", "4x4", "-o", str(obj))
    r = d1("sweep", str(obj), "--mesh", "4x4", "--set", "hop_latency=1,5")
    assert r.output.count("note: applying the requested timing to the object: "
                          "hop_latency") == 1
    r = d1("sweep", str(obj), "--mesh", "4x4", "--set", "link_bytes_per_cycle=16,32")
    assert r.output.count(f"note: recompiled {obj} from its embedded DSL source") == 1


def test_sweep_of_an_object_changes_its_own_machine(tmp_path):
    """Without --machine, --set changes the machine the object was built for, as it does for
    d1 run: the sweep used the default d1 instead, so sweeping a timing parameter recompiled
    a 4 x 4 object for 354 nodes."""
    obj = tmp_path / "relu.d1o"
    d1("compile", str(PROGRAMS / "elementwise.d1k"), "--mesh", "4x4", "-o", str(obj))
    r = d1("sweep", str(obj), "--set", "hop_latency=1,5")
    assert f"{obj} on d1-4x4: 2 points" in r.output
    assert "recompiled" not in r.output
    assert "note: applying the requested timing to the object: hop_latency" in r.output


def test_sweep_of_harvested_nodes_and_usage_errors():
    r = d1("sweep", str(ASM / "token_ring.d1s"), "--machine", "h6x5",
           "--set", "harvested=[],[[2,1],[3,3]]")
    lines = [ln for ln in r.output.splitlines() if ln.startswith(("[]", "[[2,1]"))]
    assert len(lines) == 2 and all(ln.rstrip().endswith("ok") for ln in lines)
    r = d1("sweep", str(ASM / "token_ring.d1s"), ok=False)
    assert "nothing to sweep" in str(r.exception)
    r = d1("sweep", str(ASM / "token_ring.d1s"), "--set", "fifo_depth=1,x", ok=False)
    assert "must be an integer" in str(r.exception)
    # an empty list is an error naming its option, not an axis left out of the sweep
    for opts in (["--chips", "", "--mesh", "4x4"], ["--mesh", "", "--set", "fifo_depth=1,2"]):
        r = d1("sweep", str(ASM / "token_ring.d1s"), *opts, ok=False)
        assert str(r.exception) == f"{opts[0]}: empty value in ''", r.output
    # a grid listed twice (however written) is one point, as d1 scale says; it ran twice
    for opt, text, what in (("--chips", "1x1, 1X1", "chip grid"), ("--mesh", "4x4,4x4", "mesh")):
        r = d1("sweep", str(ASM / "token_ring.d1s"), opt, text, ok=False)
        assert str(r.exception) == f"{opt} lists a {what} twice: '{text}'", r.output


def test_a_sweep_of_too_many_points_is_refused_before_listing_them(monkeypatch):
    # 1,000 values on each of three parameters: the 10^9 points were listed first, and the
    # process grew past 9 GB before running one. (The limit is lowered here so that a
    # regression fails this test instead of exhausting the host's memory.)
    from d1.commands import sweep as sweep_module
    limit = sweep_module.MAX_POINTS
    monkeypatch.setattr(sweep_module, "MAX_POINTS", 100)
    many = ",".join(str(v) for v in range(1, 12))
    r = d1("sweep", str(ASM / "token_ring.d1s"), "--set", f"cost_alu={many}",
           "--set", f"cost_mul={many}", ok=False)
    assert type(r.exception) is D1Error                   # exit status 2, not a failed run
    assert str(r.exception) == ("11 cost_alu x 11 cost_mul values are 121 sweep points, more "
                                "than the 100 a sweep runs; give fewer values")
    assert limit == 100_000


# ---- d1 diff ---------------------------------------------------------------------------------

def test_diff_shows_totals_and_what_changed_most(runs):
    r = d1("diff", str(runs["mm64"]), str(runs["mm16"]))
    out = r.output
    a = load_run(runs["mm64"])["stats"]["modelled"]
    b = load_run(runs["mm16"])["stats"]["modelled"]
    line = next(ln for ln in out.splitlines() if ln.startswith("kernel time") and "cycles" in ln)
    assert f"{a['kernel_cycles']:,} cycles" in line and f"{b['kernel_cycles']:,} cycles" in line
    assert f"{b['kernel_cycles'] - a['kernel_cycles']:+,} cycles" in line
    assert "changed most: " in out
    assert "nodes whose stalled cycles changed most (modelled, cycles)" in out
    assert "links whose busy cycles or bytes changed most (modelled)" in out
    assert "c = matmul[summa] @9:7" in out                 # regions, both runs have them
    flops = next(ln for ln in out.splitlines() if ln.startswith("FLOPs"))
    assert flops.rstrip().endswith("same")
    r = d1("diff", str(runs["mm64"]), str(runs["mm64"]))
    assert "changed most: nothing" in r.output and "none changed" in r.output
    r = d1("diff", str(runs["ring"]), str(runs["mm64"]))
    assert "regions: only run B recorded them" in r.output
    r = d1("diff", str(runs["ring"]), str(runs["ring"]))
    assert "regions: not recorded (make them with `d1 run --regions`" in r.output


# ---- every command on a representative set of programs ----------------------------------------

@pytest.mark.parametrize("program", ["asm/vadd.d1s", "asm/row_broadcast.d1s", "asm/matmul8.d1s",
                                     "elementwise.d1k", "softmax.d1k", "residual.d1k"])
def test_commands_on_example_programs(program, tmp_path):
    path = str(PROGRAMS / program)
    stats = tmp_path / "s.json"
    d1("run", path, "--mesh", "4x4", "--regions", "--json", str(stats),
       "--out-dir", str(tmp_path), "--trace", str(tmp_path / "t.json"))
    d1("viz", str(stats), "-o", str(tmp_path / "m.png"))
    d1("viz", str(stats), "--term", "--metric", "stall")
    r = d1("roofline", str(stats))
    assert "whole kernel" in r.output
    r = d1("diff", str(stats), str(stats))
    assert "changed most: nothing" in r.output
    r = d1("sweep", path, "--mesh", "4x4", "--set", "fifo_depth=1,4")
    assert r.output.count(" ok\n") == 2
