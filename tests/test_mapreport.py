"""The mapping report (compiler/mapreport.py, `d1 compile --report`, `--emit map`, `--json`).

The report counts, at compile time, the link bytes of every message of every step, split into
the bytes that cross chip edges and those that stay on a chip. The emulator counts the same
bytes when the program runs (emulator/traffic.py), so the two must agree exactly. It also says
which slices of each tensor cross each chip edge; those are checked against the elements'
routes worked out here from the layouts. Small machines only: chips of 4 x 4 nodes, 2 x 2 of
them (the shared-code stream matmul, which only large grids use, on 8 x 2 chips of 8 x 16
nodes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.ir import ITEMSIZE
from compiler.layout import make_layout
from compiler.mapreport import byte_slices, format_report, merge_rects
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


def cells(slices) -> set[tuple[int, int]]:
    """The view elements of the report's slices ({"rows": [r0, r1], "cols": [c0, c1]} each)."""
    return {(r, c) for s in slices for r in range(*s["rows"]) for c in range(*s["cols"])}


def edge_key(e: dict) -> tuple:
    return tuple(e["from"]), tuple(e["to"])


def check_slices(rep: dict) -> None:
    """Every chip edge of every tensor either says which slices crossed it or says why not;
    slices lie in the tensor's view, do not overlap, and hold no more elements than the
    edge's bytes (padded blocks carry their padding too)."""
    for st in rep["steps"]:
        dtypes = {t["name"]: t["dtype"] for t in st["tensors"]}
        for r in st["traffic"]:
            if not r["chip_edges"]:
                continue
            if r["slices_note"] is not None:
                assert r["slices_note"].startswith("not recorded")
                assert all(e["slices"] is None for e in r["chip_edges"])
                continue
            R, C = r["view"]
            for e in r["chip_edges"]:
                area = 0
                for s in e["slices"]:
                    (r0, r1), (c0, c1) = s["rows"], s["cols"]
                    assert 0 <= r0 < r1 <= R and 0 <= c0 < c1 <= C, (r["tensor"], s)
                    area += (r1 - r0) * (c1 - c0)
                if len(e["slices"]) < 50:
                    assert len(cells(e["slices"])) == area       # disjoint
                size = ITEMSIZE[dtypes.get(r["tensor"].split("[")[0], "bf16")]
                assert area * size <= e["bytes"], (st["kind"], r["tensor"], e)


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
    check_slices(rep)
    # only the kernels' reductions along grid lines cannot say which slices they send
    for st in rep["steps"]:
        for r in st["traffic"]:
            if r["chip_edges"] and r["slices_note"] is not None:
                assert st["kind"].split("[")[0] in ("softmax", "sum", "mean", "max", "min",
                                                    "layernorm", "log_softmax"), st["kind"]
                assert "partial results of a reduction" in r["slices_note"]


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
    assert ", on 4 chips," in text


def test_the_report_says_which_slices_of_the_matmuls_operands_cross_each_chip_edge():
    """SUMMA sends every panel of a grid row (column) along it once: across the chip edge
    between two chips of a chip row each element of A's rows there crosses exactly once, east
    or west; B's columns likewise north or south."""
    m = machine_from_options(None, "4x4", (), "2x2")
    rep = compile_text(MATMUL.read_text(), m, "matmul.d1k", report=True).report
    (st,) = rep["steps"]
    moved = {r["tensor"]: r for r in st["traffic"]}
    a, b = moved["a"], moved["b"]
    assert a["view"] == [128, 256] and b["view"] == [256, 96]
    assert a["slices_note"] is None and b["slices_note"] is None
    ea = {edge_key(e): e for e in a["chip_edges"]}
    for y in (0, 1):
        east, west = (cells(ea[((0, y), (1, y))]["slices"]),
                      cells(ea[((1, y), (0, y))]["slices"]))
        assert not east & west
        assert east | west == {(r, c) for r in range(64 * y, 64 * y + 64) for c in range(256)}
    for e in a["chip_edges"]:
        # A's blocks are 16 x 32 bf16, rows of 64 bytes without padding: bytes = elements x 2
        assert len(cells(e["slices"])) * 2 == e["bytes"]
    eb = {edge_key(e): e for e in b["chip_edges"]}
    columns = []
    for x in (0, 1):
        south, north = (cells(eb[((x, 0), (x, 1))]["slices"]),
                        cells(eb[((x, 1), (x, 0))]["slices"]))
        assert not south & north
        cols = {c for _, c in south | north}
        assert south | north == {(r, c) for r in range(256) for c in cols}
        columns.append(cols)
    assert not columns[0] & columns[1] and columns[0] | columns[1] == set(range(96))
    text = format_report(rep)
    first = min(ea[((0, 0), (1, 0))]["slices"], key=lambda s: (s["rows"], s["cols"]))
    shown = f"a[{first['rows'][0]}:{first['rows'][1]}, {first['cols'][0]}:{first['cols'][1]}]"
    assert f"    chip edge (0,0) -E-> (1,0): 16,384 B: {shown}, " in text
    n = len(ea[((0, 0), (1, 0))]["slices"])
    assert n > 3 and f" +{n - 3} more\n" in text


def test_a_redistributions_slices_are_the_elements_whose_route_crosses_the_edge():
    """softmax.d1k transposes x [32, 100] (block layout on the 8 x 8 grid) into xt: each
    element goes from its holder along the holder's grid row to its destination's grid column,
    then along that column (compiler.comm.Redistribute). Work out, element by element, which
    chip edges it crosses, and compare with the report's slices."""
    m = machine_from_options(None, "4x4", (), "2x2")
    c = compile_text((PROGRAMS / "softmax.d1k").read_text(), m, "softmax.d1k", report=True)
    (st,) = [s for s in c.report["steps"] if s["kind"] == "redistribute^T" and s["name"] == "xt"]
    g = c.grid
    L1 = make_layout((32, 100), "f32", "P", "Q", g)
    L2 = make_layout((100, 32), "f32", "P", "Q", g)
    layouts = {t["name"]: t["layout"] for t in st["tensors"]}
    assert (layouts["x"], layouts["xt"]) == (L1.describe(), L2.describe())

    def node(L, r, col):
        (i, j), = [(i, j) for i, j in L.holders()
                   if L.block(i, j)[0] <= r < L.block(i, j)[1]
                   and L.block(i, j)[2] <= col < L.block(i, j)[3]]
        return i, j

    def chip(i, j):
        return m.chip_of(g.xs[j], g.ys[i])

    want: dict[tuple, set] = {}
    for r in range(32):
        for col in range(100):
            (hi, hj), (di, dj) = node(L1, r, col), node(L2, col, r)
            route = [(hi, j) for j in range(hj, dj + (1 if dj >= hj else -1),
                                            1 if dj >= hj else -1)]
            route += [(i, dj) for i in range(hi, di + (1 if di >= hi else -1),
                                             1 if di >= hi else -1)][1:]
            for u, v in zip(route, route[1:], strict=False):
                if chip(*u) != chip(*v):
                    want.setdefault((chip(*u), chip(*v)), set()).add((r, col))
    (x,) = st["traffic"]
    got = {edge_key(e): cells(e["slices"]) for e in x["chip_edges"]}
    assert want and got == want


def test_an_all_reduce_gives_each_tensor_its_own_bytes_and_slices():
    """train_digits.d1k on 2 x 2 chips all-reduces the loss and four gradients in one step;
    each gets its own bytes (the loss: one f32 in a 64-byte vector over each of the tree's six
    chip edges), each crosses every chip edge of the tree whole, and they add up to what the
    emulator measures."""
    m = machine_from_options(None, "4x4", (), "2x2")
    name = "train_digits.d1k"
    c = compile_text((PROGRAMS / name).read_text(), m, name, report=True)
    rep = c.report
    (st,) = [s for s in rep["steps"] if s["kind"] == "allreduce(chips)"]
    moved = {r["tensor"]: r for r in st["traffic"]}
    assert set(moved) == {"loss", "g1", "%t27", "%t31", "%t35"}
    assert moved["loss"]["chip_edge_bytes"] == 6 * 64
    assert moved["g1"]["chip_edge_bytes"] > 0.75 * rep["totals"]["chip_edge_bytes"]
    shapes = {t["name"]: t["shape"] for t in st["tensors"]}
    for t, r in moved.items():
        assert len(r["chip_edges"]) == 6 and r["slices_note"] is None
        rows, cols = r["view"]
        assert r["view"] == ([1, 1] if not shapes[t] else [1, shapes[t][0]]
                             if len(shapes[t]) == 1 else shapes[t])
        for e in r["chip_edges"]:
            assert e["slices"] == [{"rows": [0, rows], "cols": [0, cols]}]
    assert moved["%t35"]["label"] == "%t35 (for update b1, line 16)"
    # the copies to the replicas after it (on chip) are each value's own too
    (share,) = [s for s in rep["steps"] if s["kind"] == "share(chips)"]
    assert {r["tensor"] for r in share["traffic"]} == {"loss", "%t27", "%t35"}
    assert moved["g1"]["label"] == "g1"
    by_tensor = rep["totals"]["chip_edge_bytes_by_tensor"]
    assert by_tensor == {t: r["chip_edge_bytes"] for t, r in moved.items()}
    assert sum(by_tensor.values()) == measured(c.obj)["chip_edge_bytes"]
    check_slices(rep)
    text = format_report(rep)
    assert "  moves g1: " in text and "    chip edge (0,0) -E-> (1,0): 16,384 B: all of g1" in text
    assert "  loss across chip edges: 384 B\n" in text
    assert "  moves %t35 (for update b1, line 16): " in text
    assert "  %t31 (for update w2, line 17) across chip edges: 24,576 B" in text


def test_a_tensor_on_one_chip_is_on_1_chip():
    m = machine_from_options(None, "4x4", (), "2x2")
    name = "train_digits.d1k"
    text = format_report(compile_text((PROGRAMS / name).read_text(), m, name,
                                      report=True).report)
    assert ", on 1 chip, " in text and "on 1 chips" not in text


def test_reductions_along_grid_lines_say_their_slices_are_not_recorded():
    m = machine_from_options(None, "4x4", (), "2x2")
    rep = compile_text((PROGRAMS / "softmax.d1k").read_text(), m, "softmax.d1k",
                       report=True).report
    st = rep["steps"][0]
    assert st["kind"] == "softmax[rows]"
    (r,) = st["traffic"]
    assert r["chip_edge_bytes"] > 0 and r["slices_note"].startswith("not recorded (")
    assert all(e["slices"] is None for e in r["chip_edges"])
    text = format_report(rep)
    assert ("    slices: not recorded (its messages carry partial results of a reduction "
            "along grid lines, not slices of the tensor)\n    chip edge (0,0) -E-> (1,0): 256 B\n"
            in text)


def test_merge_rects_covers_the_union_with_few_disjoint_rectangles():
    assert merge_rects([]) == []
    assert merge_rects([(0, 2, 0, 2), (0, 2, 2, 4), (2, 4, 0, 4), (1, 2, 1, 3)]) == \
        [(0, 4, 0, 4)]
    # a column of single elements is one rectangle
    assert merge_rects([(r, r + 1, 5, 6) for r in range(10)]) == [(0, 10, 5, 6)]
    # a staircase: the union exactly, no overlaps
    stairs = [(k, k + 1, k, k + 3) for k in range(6)] + [(2, 5, 0, 2)]
    got = merge_rects(stairs)
    want = {(r, c) for r0, r1, c0, c1 in stairs for r in range(r0, r1) for c in range(c0, c1)}
    area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in got)
    assert area == len(want)
    assert {(r, c) for r0, r1, c0, c1 in got for r in range(r0, r1)
            for c in range(c0, c1)} == want
    assert len(got) <= len(stairs)


def test_byte_slices_name_the_elements_a_byte_range_of_a_stored_block_holds():
    # rows 10..13, columns 20..22 of f32, stored in rows of 64 bytes (16 lanes)
    block = (10, 14, 20, 23)
    assert byte_slices(block, 64, 64, 4, 0, 256) == [(10, 14, 20, 23)]
    assert byte_slices(block, 64, 64, 4, 8, 68) == [(10, 11, 22, 23), (11, 12, 20, 21)]
    assert byte_slices(block, 64, 64, 4, 12, 64) == []               # padding only
    assert byte_slices(block, 64, 64, 4, 64, 1024) == [(11, 14, 20, 23)]   # past the rows


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
    check_slices(c.report)
    (st,) = c.report["steps"]
    for r in st["traffic"]:
        assert r["slices_note"] is None and r["chip_edges"]
        # every block of a grid row (column) crosses each chip edge it lies on one side of
        union = set().union(*(cells(e["slices"]) for e in r["chip_edges"]))
        assert union == {(i, k) for i in range(r["view"][0]) for k in range(r["view"][1])}


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
    check_slices(c.report)
    assert all(r["slices_note"] is None for r in c.report["steps"][0]["traffic"])


def test_a_data_parallel_program_sends_only_its_all_reduce_across_chip_edges():
    m = machine_from_options(None, "4x4", (), "2x2")
    name = "train_linear.d1k"
    c = compile_text((PROGRAMS / name).read_text(), m, name, report=True)
    assert c.report["parallel"] == "data"
    got = measured(c.obj)
    assert c.report["totals"]["chip_edge_bytes"] == got["chip_edge_bytes"] > 0
    # the per-chip steps' rows are chip 0's; the totals count them for every chip, as the
    # emulator does (they were chip 0's alone)
    assert c.report["totals"]["on_chip_bytes"] == got["on_chip_bytes"] > 0


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
    row = data["mapping"]["steps"][0]["traffic"][0]
    assert set(row) == {"tensor", "label", "messages", "on_chip_bytes", "chip_edge_bytes",
                        "chip_edges", "view", "slices_note"}
    e = row["chip_edges"][0]
    assert set(e) == {"from", "to", "bytes", "slices"}
    assert set(e["slices"][0]) == {"rows", "cols"}
    # --emit map prints the same report and writes no object
    e = d1("compile", str(MATMUL), "--mesh", "4x4", "--chips", "2x2", "--emit", "map")
    assert e.returncode == 0, e.stderr
    assert e.stdout.strip() == r.stdout.strip()


def test_d1_compile_json_dash_writes_to_standard_output(tmp_path):
    """`--json -` wrote a file named '-' in the current directory; it is standard output, as
    for d1 run and d1 train, and the --report text goes to standard error beside it."""
    r = subprocess.run([sys.executable, "-m", "d1", "compile", str(MATMUL), "--mesh", "2x2",
                        "-o", "m.d1o", "--report", "--json", "-"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["object"] == "m.d1o"
    assert "mapping report: " in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.d1o"]


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


def test_the_slices_of_an_n_d_tensor_are_written_as_boxes_of_its_axes():
    """lenet.d1k flattens h2 [64, 16, 4, 4] into [64, 256]: the JSON's slices are rows of the
    view [4096, 4], the text's boxes of h2's own axes; both name the same elements."""
    import numpy as np

    from compiler.mapreport import _boxes
    m = machine_from_options(None, "4x4", (), "2x2")
    rep = compile_text((PROGRAMS / "lenet.d1k").read_text(), m, "lenet.d1k",
                       report=True).report
    check_slices(rep)
    (st,) = [s for s in rep["steps"] if s["kind"] == "reshape"]
    (r,) = [r for r in st["traffic"] if r["tensor"] == "h2"]
    assert r["view"] == [4096, 4] and r["chip_edges"]
    for e in r["chip_edges"]:
        boxes = _boxes(e["slices"], [64, 16, 4, 4])
        flat = set()
        for box in boxes:
            idx = np.ix_(*[np.arange(a, b) for a, b in box])
            flat |= set(np.ravel_multi_index(idx, (64, 16, 4, 4)).ravel().tolist())
        assert flat == {row * 4 + col for row, col in cells(e["slices"])}
        assert len(boxes) <= len(e["slices"])
    text = format_report(rep)
    line = next(t for t in text.split("\n") if t.startswith("    chip edge (0,0) -E-> (1,0)")
                and "h2[" in t)
    assert re.search(r": [\d,]+ B: h2\[[\d:]+, [\d:]+, :, :\]", line), line


def test_a_gather_of_several_operands_gives_each_its_own_bytes_and_slices():
    """A concat's messages are recorded as its first operand's; matched to the gather's
    pieces, each operand gets its own (a's right half goes west to the chips that hold c's
    first 64 columns, b goes east to those of its last 32), and the sums stay measured."""
    m = machine_from_options(None, "4x4", (), "2x2")
    text = ("input a: f32[64, 64]\ninput b: f32[64, 32]\nc = concat(a, b, axis=1)\n"
            "d = transpose(c) @ c\noutput d\n")
    c = compile_text(text, m, "cat.d1k", report=True)
    rep = c.report
    check_slices(rep)
    st = rep["steps"][0]
    assert st["kind"] == "concat"
    moved = {r["tensor"]: r for r in st["traffic"]}
    assert set(moved) == {"a", "b"}
    for name, way, cols in (("a", -1, (32, 64)), ("b", 1, (0, 32))):
        for e in moved[name]["chip_edges"]:
            assert e["to"][0] - e["from"][0] == way and e["to"][1] == e["from"][1]
            y = e["from"][1]
            assert e["slices"] == [{"rows": [32 * y, 32 * y + 32], "cols": list(cols)}]
    got = measured(c.obj)
    t = rep["totals"]
    assert (t["on_chip_bytes"], t["chip_edge_bytes"]) == (got["on_chip_bytes"],
                                                          got["chip_edge_bytes"])
