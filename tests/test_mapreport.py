"""The mapping report (compiler/mapreport.py, `d1 compile --report`, `--emit map`, `--json`).

The report counts, at compile time, the link bytes of every message of every step, split into
the bytes that cross chip edges and those that stay on a chip. The emulator counts the same
bytes when the program runs (emulator/traffic.py), so the two must agree exactly. Small
machines only: chips of 4 x 4 nodes, 2 x 2 of them (the shared-code stream matmul, which only
large grids use, on 8 x 2 chips of 8 x 16 nodes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.mapreport import format_report
from compiler.pipeline import compile_text
from d1.options import machine_from_options
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "programs"
MATMUL = PROGRAMS / "matmul.d1k"


def d1(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "d1", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def measured(obj) -> dict:
    emu = Emulator(obj)
    emu.run()
    return emu.stats()["modelled"]


@pytest.mark.parametrize("name", ["matmul.d1k", "softmax.d1k", "mlp.d1k", "layernorm.d1k",
                                  "attention.d1k"])
def test_the_report_counts_what_the_emulator_measures(name):
    m = machine_from_options(None, "4x4", (), "2x2")
    c = compile_text((PROGRAMS / name).read_text(), m, name, report=True)
    rep = c.report
    t = rep["totals"]
    got = measured(c.obj)
    assert (t["on_chip_bytes"], t["chip_edge_bytes"]) == (got["on_chip_bytes"],
                                                          got["chip_edge_bytes"])
    assert t["chip_edge_bytes"] > 0
    # every step's tensors add up to the totals, every chip edge to the per-edge totals
    steps = [r for st in rep["steps"] for r in st["traffic"]]
    assert sum(r["chip_edge_bytes"] for r in steps) == t["chip_edge_bytes"]
    assert sum(e["bytes"] for e in t["chip_edges"]) == t["chip_edge_bytes"]
    assert sum(t["chip_edge_bytes_by_tensor"].values()) == t["chip_edge_bytes"]
    for e in t["chip_edges"]:
        (ax, ay), (bx, by) = e["from"], e["to"]
        assert abs(ax - bx) + abs(ay - by) == 1            # neighbouring chips only


def test_the_matmuls_panels_cross_each_chip_edge_along_their_line():
    m = machine_from_options(None, "4x4", (), "2x2")
    rep = compile_text(MATMUL.read_text(), m, "matmul.d1k", report=True).report
    (st,) = rep["steps"]
    assert st["kind"] == "matmul[summa]"
    moved = {r["tensor"]: r for r in st["traffic"]}
    assert set(moved) == {"a", "b"}
    # A's panels travel along grid rows: they cross only east-west chip edges; B's only
    # north-south ones
    for e in moved["a"]["chip_edges"]:
        assert e["from"][1] == e["to"][1]
    for e in moved["b"]["chip_edges"]:
        assert e["from"][0] == e["to"][0]
    layouts = {t["name"]: t for t in st["tensors"]}
    assert layouts["c"]["role"] == "out" and layouts["c"]["chips"] == 4
    assert "skew-A" in layouts["a"]["layout"]
    text = format_report(rep)
    assert "moves a:" in text and "chip edge (0,0) -E-> (1,0)" in text
    assert "totals: on chip" in text and "across chip edges" in text


def test_the_shared_code_stream_matmul_is_counted_too():
    """Grids of 1,024 nodes or more that are not square use SpmdStream (the tile's matmul)."""
    m = machine_from_options(None, "8x16", (), "8x2")
    text = "input a: bf16[256, 256]\ninput b: bf16[256, 256]\nc = a @ b\noutput c\n"
    c = compile_text(text, m, "mm.d1k", report=True)
    assert [s["kind"] for s in c.report["steps"]] == ["matmul[stream]"]
    got = measured(c.obj)
    t = c.report["totals"]
    assert (t["on_chip_bytes"], t["chip_edge_bytes"]) == (got["on_chip_bytes"],
                                                          got["chip_edge_bytes"])


def test_the_preskewed_matmul_with_k_blocks_of_different_widths_is_counted_too():
    """On a square grid of several chips, K blocks of 6 and 7 tiles (4096^3 on the tile's
    80 x 80 grid; here 1000 = 125 tiles over 16 grid columns) run the shared-code SUMMA."""
    m = machine_from_options(None, "8x8", (), "2x2")
    text = "input a: bf16[1024, 1000]\ninput b: bf16[1000, 1024]\nc = a @ b\noutput c\n"
    c = compile_text(text, m, "mm.d1k", report=True)
    assert [s["kind"] for s in c.report["steps"]] == ["matmul[summa]"]
    assert len(c.obj.blocks) == 1
    got = measured(c.obj)
    t = c.report["totals"]
    assert t["chip_edge_bytes"] > 0
    assert (t["on_chip_bytes"], t["chip_edge_bytes"]) == (got["on_chip_bytes"],
                                                          got["chip_edge_bytes"])


def test_a_data_parallel_program_sends_only_its_all_reduce_across_chip_edges():
    m = machine_from_options(None, "4x4", (), "2x2")
    name = "train_linear.d1k"
    c = compile_text((PROGRAMS / name).read_text(), m, name, report=True)
    assert c.report["parallel"] == "data"
    got = measured(c.obj)
    assert c.report["totals"]["chip_edge_bytes"] == got["chip_edge_bytes"] > 0


def test_one_chip_has_no_chip_edges():
    m = machine_from_options(None, "4x4", (), None)
    c = compile_text(MATMUL.read_text(), m, "matmul.d1k", report=True)
    t = c.report["totals"]
    assert t["chip_edge_bytes"] == 0 and t["chip_edges"] == [] and t["on_chip_bytes"] > 0
    assert "across chip edges" not in format_report(c.report)


def test_no_report_unless_asked():
    m = machine_from_options(None, "4x4", (), "2x2")
    c = compile_text(MATMUL.read_text(), m, "matmul.d1k")
    assert c.report is None
    # and asking for it does not change the object
    r = compile_text(MATMUL.read_text(), m, "matmul.d1k", report=True)
    assert r.obj.to_bytes() == c.obj.to_bytes()


def test_d1_compile_report_and_json(tmp_path):
    out = tmp_path / "m.d1o"
    js = tmp_path / "m.json"
    r = d1("compile", str(MATMUL), "--mesh", "4x4", "--chips", "2x2", "-o", str(out),
           "--report", "--json", str(js))
    assert r.returncode == 0, r.stderr
    assert out.exists()
    assert r.stdout.startswith("mapping report: ")
    assert "step 0: matmul[summa] -> c" in r.stdout
    data = json.loads(js.read_text())
    assert data["object"] == str(out) and data["grid"] == [8, 8]
    assert data["mapping"]["totals"]["chip_edge_bytes"] == 131_072
    assert data["mapping"]["totals"]["chip_edge_bytes_by_tensor"] == {"a": 65_536,
                                                                     "b": 65_536}
    # --emit map prints the same report and writes no object
    e = d1("compile", str(MATMUL), "--mesh", "4x4", "--chips", "2x2", "--emit", "map")
    assert e.returncode == 0, e.stderr
    assert e.stdout.strip() == r.stdout.strip()


@pytest.mark.parametrize("args, message", [
    (["--emit", "asm", "--report"], "--report and --json go with compiling"),
    (["--emit", "map", "--json", "x.json"], "--report and --json go with compiling"),
    (["--report", "--json", str(MATMUL)], "would replace"),
    (["--report", "--json", "/dev/null"], "not a regular file"),
    (["--emit", "plan"], "Invalid value for '--emit'"),
])
def test_usage_errors_exit_2(args, message, tmp_path):
    r = d1("compile", str(MATMUL), "--mesh", "4x4", "--chips", "2x2",
           "-o", str(tmp_path / "m.d1o"), *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
