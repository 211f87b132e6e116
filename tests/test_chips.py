"""Chips as part of the machine: `--chips CxR`, chip-edge links in the timing model, the
on-chip / chip-edge split of link bytes in `d1 run` and `d1 train`, the tray, cabinet and ExaPOD
descriptions and their published totals (docs/MACHINE.md, "Chips").

Small machines throughout (`--mesh 4x4 --chips 2x2`, 64 nodes); the ExaPOD only through figures
that are counted, never emulated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from progkit import EAST, W, compile_program, make_obj, run_and_compare

from d1.commands.info import headline_rows, info_dict
from d1.program import from_object
from d1isa.errors import D1Error, MachineError
from d1isa.isa import encode as E
from d1isa.machine import (
    DIR_DELTA,
    MAX_CHIPS_EDGE,
    SYSTEMS,
    load_machine,
    machine_names,
    parse_chips,
    published_system,
)
from emulator import Emulator
from emulator.state import check_host_memory, host_bytes
from emulator.traffic import chip_traffic, split_bytes

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "programs"


def d1(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


# ---- the machine -------------------------------------------------------------------------------

def test_tile_is_five_by_five_d1_chips_in_every_parameter_but_its_name():
    tile, built = load_machine("tile"), load_machine("d1", chips="5x5")
    a, b = tile.to_dict(), built.to_dict()
    assert [k for k in a if a[k] != b[k]] == ["name", "description"]
    assert built.name == "d1-chips5x5" and "5 x 5 chips" in built.description
    assert built.n_live == 8850 and built.chips == 25


def test_chips_copy_the_chosen_chip_after_mesh_and_before_set():
    m = load_machine("m4x4", chips="2x2")
    assert (m.cols, m.rows, m.chips_x, m.chips_y, m.width, m.height) == (4, 4, 2, 2, 8, 8)
    assert load_machine(mesh="4x4", chips=(2, 2)).to_dict() | {"name": "", "description": ""} \
        == m.to_dict() | {"name": "", "description": ""}
    # --chips replaces the chip grid of a multi-chip machine; --set still has the last word
    assert load_machine("tile", chips="2x1").chips == 2
    assert load_machine(mesh="4x4", chips="2x2", overrides={"chips_x": 3}).chips_x == 3
    assert load_machine(mesh="4x4", chips="1x1").chips == 1
    assert load_machine(mesh="4x4", chips=" 2 x 3 ").chips == 6
    # --mesh is one chip, whatever the base machine's chip grid (docs/MACHINE.md)
    assert load_machine("tile", mesh="4x4").chips == 1
    assert load_machine("tile", mesh="4x4", chips="5x5").n_live == 25 * 16


@pytest.mark.parametrize("text, message", [
    ("2", "--chips expects CHIPS_ACROSSxCHIPS_DOWN such as 2x2, got '2'"),
    ("2x", "got '2x'"), ("axb", "got 'axb'"), ("2x2x2", "got '2x2x2'"), ("-1x2", "got '-1x2'"),
    ("0x2", f"--chips dimensions must be in 1 .. {MAX_CHIPS_EDGE}, got '0x2'"),
    (f"{MAX_CHIPS_EDGE + 1}x1", "must be in 1 .. "),
    # spaces may stand around a number, not inside it: '1 0x2' was read as 10 x 2
    ("1 0x2", "got '1 0x2'"), ("2x1 6", "got '2x1 6'"),
])
def test_bad_chip_grids_are_refused_with_the_expected_form(text, message):
    with pytest.raises(MachineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_chips(text)


def test_bad_chips_text_on_the_command_line_is_a_usage_error():
    for args in (["info", "--chips", "5by5"], ["run", "programs/asm/vadd.d1s", "--chips", "0x1"]):
        r = d1(*args)
        assert r.returncode == 2, r
        assert "error: --chips" in r.stderr and "Traceback" not in r.stderr


def test_chip_index_and_the_links_that_cross_chip_edges():
    m = load_machine(mesh="4x4", chips="2x2")
    for nid in range(m.n_live):
        x, y = m.node_xy(nid)
        cx, cy = m.chip_of(x, y)
        assert m.chip_index[nid] == cy * 2 + cx
    # each of the two boundaries has 8 rows (columns) crossed both ways
    assert int(m.link_crosses_chip.sum()) == 2 * 2 * 8
    a, b = m.node_id(3, 1), m.node_id(4, 1)
    assert m.link_crosses_chip[a, EAST] and m.link_crosses_chip[b, W]
    assert not m.link_crosses_chip[m.node_id(2, 1), EAST]
    assert m.link_latency[a, EAST] == m.chip_hop_latency
    assert m.link_bandwidth[a, EAST] == m.chip_link_bytes_per_cycle


def _walk_links(m):
    """The neighbour tables by walking every (node, direction) hop by hop (the definition)."""
    n = m.n_live
    nbr = np.full((n, 4), -1, dtype=np.int32)
    hops = np.zeros((n, 4), dtype=np.int32)
    lat = np.zeros((n, 4), dtype=np.int64)
    bw = np.zeros((n, 4), dtype=np.int64)
    for nid in range(n):
        x0, y0 = m.node_xy(nid)
        for d, (dx, dy) in enumerate(DIR_DELTA):
            x, y, k, latency, band = x0, y0, 0, 0, None
            while 0 <= x + dx < m.width and 0 <= y + dy < m.height:
                crosses = m.chip_of(x, y) != m.chip_of(x + dx, y + dy)
                latency += m.chip_hop_latency if crosses else m.hop_latency
                b = m.chip_link_bytes_per_cycle if crosses else m.link_bytes_per_cycle
                band = b if band is None else min(band, b)
                k, x, y = k + 1, x + dx, y + dy
                if m.id_grid[y, x] >= 0:
                    nbr[nid, d], hops[nid, d], lat[nid, d], bw[nid, d] = \
                        m.id_grid[y, x], k, latency, band
                    break
    return nbr, hops, lat, bw


def _walk_cut(m, vertical, mid):
    d = 1 if vertical else 2
    links = band = 0
    for nid in range(m.n_live):
        t = int(m.neighbors[nid, d])
        if t >= 0:
            a, b = (m.node_xy(nid)[0], m.node_xy(t)[0]) if vertical else \
                (m.node_xy(nid)[1], m.node_xy(t)[1])
            if a < mid <= b:
                links, band = links + 1, band + int(m.link_bandwidth[nid, d])
    return links, band


EDGY = [  # dead nodes on chip edges and corners, whole dead rows, one-wide meshes
    load_machine("h6x5", chips="3x2"),
    load_machine(mesh="4x3", chips="3x2", overrides={
        "harvested": [[3, 1], [0, 2], [0, 0], [3, 0]], "chip_link_bytes_per_cycle": 80,
        "chip_hop_latency": 7}),
    load_machine(mesh="3x3", chips="2x3", overrides={"harvested": [[0, 1], [1, 1], [2, 1]]}),
    load_machine(mesh="1x5", chips="1x3", overrides={"harvested": [[0, 0], [0, 4]]}),
    load_machine(mesh="5x1", chips="4x1", overrides={"harvested": [[4, 0]]}),
]


@pytest.mark.parametrize("m", EDGY, ids=lambda m: m.name)
def test_neighbour_tables_and_cuts_equal_a_hop_by_hop_walk(m):
    for ours, walked in zip(m._links, _walk_links(m), strict=True):
        assert np.array_equal(ours, walked)
    for vertical, size in ((True, m.width), (False, m.height)):
        for mid in range(1, size):
            assert m._cut(vertical, mid) == _walk_cut(m, vertical, mid), (vertical, mid)


def test_chip_edge_and_bisection_figures():
    d1m, tile = load_machine("d1"), load_machine("tile")
    assert d1m.chip_edge_links == {"east_west": 20, "north_south": 18}
    assert d1m.chip_edge_bytes_per_s["east_west"] == 20 * 50 * 2e9   # 2 TB/s each way
    assert d1m.chip_bisection_links == 0
    # the tile's middle chip boundaries: 5 chips x 18 columns, 5 x 20 rows; the narrower
    assert tile.chip_bisection_links == 90
    assert tile.chip_bisection_bytes_per_s == 90 * 50 * 2e9
    # its middle cuts fall inside the middle chips: on-chip links
    assert tile.bisection_links == 90 and tile.bisection_bytes_per_s == 90 * 64 * 2e9
    # on a 2 x 2 grid the middle cut is the chip boundary, at the chip-edge rate
    m = load_machine(mesh="4x4", chips="2x2", overrides={"chip_link_bytes_per_cycle": 10})
    assert m.bisection_links == 8 and m.bisection_bytes_per_s == 8 * 10 * 2e9


# ---- the systems and their published totals ----------------------------------------------------

@pytest.mark.parametrize("name, chips, grid", [
    ("d1", 1, (1, 1)), ("tile", 25, (5, 5)), ("tray", 150, (10, 15)),
    ("cabinet", 300, (10, 30)), ("exapod", 3000, (50, 60))])
def test_shipped_systems_reproduce_the_published_totals(name, chips, grid):
    assert name in machine_names()
    m = load_machine(name)
    assert (m.chips_x, m.chips_y) == grid and m.chips == chips
    assert m.n_live == 354 * chips
    sysm = published_system(m)
    assert sysm is not None and sysm.chips == chips
    assert abs(m.peak_flops["bf16"] / sysm.peak_bf16_flops - 1) < 0.02
    assert abs(m.peak_flops["f32"] / sysm.peak_f32_flops - 1) < 0.02
    sram = m.total_sram_bytes / sysm.sram_bytes - 1
    if name == "exapod":
        # 1.3 TB is 1,062,000 x 1.25 MB rounded to two digits: +2.1%, explained in the note
        assert 0.02 < sram < 0.025 and "rounded to two digits" in sysm.note
        assert f"{m.total_sram_bytes / (1 << 20) / 1e6:.1f}" == "1.3"
    else:
        assert abs(sram) < 0.02


def test_the_exapod_figures_need_no_per_node_array():
    m = load_machine("exapod")
    assert m.n_live == 1_062_000
    rows = headline_rows(m)
    doc = info_dict(m)
    # only counted figures: no live grid, id grid, coordinates or neighbour tables were built
    assert not {"live_grid", "id_grid", "xy", "_links"} & set(vars(m))
    got = {r[0]: r for r in rows}
    assert got["peak BF16"][2] == "1.1 EFLOP/s" and got["peak BF16"][3] == "-1.1%"
    assert got["SRAM total"][1].startswith("1,327,500 MiB")
    assert doc["published_system"]["name"] == "ExaPOD"
    assert doc["derived"]["chip_bisection_links"] == 900


def test_machines_too_large_to_emulate_are_refused_before_anything_is_built():
    for name in ("tray", "cabinet", "exapod"):
        m = load_machine(name)
        with pytest.raises(D1Error, match=f"machine '{name}' .* host memory"):
            check_host_memory(m, available=host_bytes(load_machine("tile")))


def test_exapod_commands_stop_at_the_host_memory_error(tmp_path):
    need = host_bytes(load_machine("exapod"))
    from emulator.state import physical_memory
    if (physical_memory() or 0) >= need:
        pytest.skip("this host could hold an ExaPOD")
    x = tmp_path / "x.npy"
    y = tmp_path / "y.npy"
    np.save(x, np.zeros((64, 16), np.float32))
    np.save(y, np.zeros((64, 4), np.float32))
    for args in (["run", "programs/mlp.d1k"],
                 ["train", "programs/train_linear.d1k", "--input", f"x={x}", "--input",
                  f"y={y}", "--out-dir", str(tmp_path / "out")]):
        r = d1(*args, "--machine", "exapod")
        assert r.returncode == 2, r
        assert "machine 'exapod' (1,062,000 live nodes): the emulator needs" in r.stderr
        assert "Traceback" not in r.stderr


def test_info_shows_the_chip_grid_and_both_bandwidths():
    r = d1("info", "--machine", "tile")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "published (training tile)" in out
    assert "5 x 5 chips of 18 x 20 nodes (354 live each)" in out
    assert "64 B/cycle = 128 GB/s per direction" in out
    assert "50 B/cycle = 100 GB/s per direction, 100 cycles a hop" in out
    assert "2 TB/s E/W (20 links), 1.8 TB/s N/S (18), each way" in out
    assert "9 TB/s per direction (90 chip-edge links)" in out
    r = d1("info", "--mesh", "4x4", "--chips", "2x2", "--set", "chip_link_bytes_per_cycle=8")
    assert r.returncode == 0, r.stderr
    assert "machine d1-4x4-chips2x2: 2 x 2 chips of 4 x 4 nodes" in r.stdout
    assert "8 B/cycle = 16 GB/s per direction" in r.stdout
    assert "vs published" not in r.stdout                  # no Dojo system of 4 x 4 chips


# ---- timing across a chip edge -----------------------------------------------------------------

def _edge_run(src: int, dst: int, **overrides) -> int:
    """Clock of `dst` after it takes a 4096-byte message from `src` (its west neighbour), on a
    row of two 2 x 1 chips: nodes 0 1 | 2 3."""
    m = load_machine(mesh="2x1", chips="2x1", overrides={"sram_bytes": 4096, **overrides})
    length = [E("movi", rd=1, imm=0), E("movi", rd=2, imm=4096)]
    emu = Emulator(make_obj(m, {
        src: length + [E("sendb", dir=EAST, rs1=1, rs2=2), E("halt")],
        dst: length + [E("recvb", dir=W, rs1=1, rs2=2), E("halt")]}))
    assert emu.run().ok
    return emu.clock(dst)


def test_a_message_across_a_chip_edge_takes_the_chip_link_figures():
    # sent at cycle 2: arrives at 2 + latency + ceil(4096 / bandwidth); recvb then halt: + 2
    assert _edge_run(1, 2) == 2 + 100 + 82 + 2                     # 50 B/cycle, 100 cycles
    assert _edge_run(1, 2, chip_link_bytes_per_cycle=8) == 2 + 100 + 512 + 2
    assert _edge_run(1, 2, chip_hop_latency=400) == 2 + 400 + 82 + 2
    # on one chip the same message takes the on-chip figures, whatever the chip links are
    assert _edge_run(0, 1) == _edge_run(0, 1, chip_link_bytes_per_cycle=8) == 2 + 1 + 64 + 2


def test_a_kernel_slows_down_when_its_chip_edges_narrow():
    text = (PROGRAMS / "matmul.d1k").read_text()
    cycles = {}
    for bw in (50, 4):
        m = load_machine(mesh="4x4", chips="2x2", overrides={"chip_link_bytes_per_cycle": bw})
        emu = Emulator(compile_program(text, m, "matmul.d1k"))
        assert emu.run().ok
        md = emu.stats()["modelled"]
        assert md["chip_edge_bytes"] > 0
        cycles[bw] = md["kernel_cycles"]
    assert cycles[4] > cycles[50]


# ---- link bytes on chip and across chip edges --------------------------------------------------

def test_stats_split_link_bytes_by_chip_edge_and_per_chip():
    m = load_machine(mesh="4x4", chips="2x2")
    text = (PROGRAMS / "matmul.d1k").read_text()
    obj = compile_program(text, m, "matmul.d1k")
    _, emu, _, _ = run_and_compare(obj, text, m, "matmul.d1k")
    s = emu.stats()
    md, lb = s["modelled"], np.array(s["links"]["bytes"])
    # the split, recomputed link by link from coordinates
    edge = sum(int(lb[nid, d]) for nid in range(m.n_live) for d in range(4)
               if m.neighbors[nid, d] >= 0
               and m.chip_of(*m.node_xy(nid)) != m.chip_of(*m.node_xy(int(m.neighbors[nid, d]))))
    assert md["chip_edge_bytes"] == edge > 0
    assert md["on_chip_bytes"] + md["chip_edge_bytes"] == md["link_bytes"] == int(lb.sum())
    per = s["chips"]["per_chip"]
    assert [r["chip"] for r in per] == [[0, 0], [1, 0], [0, 1], [1, 1]]
    assert sum(r["edge_bytes_out"] for r in per) == sum(r["edge_bytes_in"] for r in per) == edge
    assert sum(r["on_chip_bytes"] for r in per) == md["on_chip_bytes"]
    for r in per:
        assert sum(r["edge_bytes_out_by_dir"].values()) == r["edge_bytes_out"]
    # chip (0,0) is the north-west chip: nothing leaves it north or west
    assert per[0]["edge_bytes_out_by_dir"]["N"] == per[0]["edge_bytes_out_by_dir"]["W"] == 0
    assert all(r["chip_edge"] for r in s["chips"]["busiest_edge_links"])
    assert emu.totals()["chip_edge_bytes"] == edge
    assert emu.totals()["chip_edge_bytes_by_chip"] == [r["edge_bytes_out"] for r in per]
    assert chip_traffic(m, lb) == per and split_bytes(m, lb) == (md["on_chip_bytes"], edge)


def test_one_chip_has_no_chip_edge_bytes():
    m = load_machine(mesh="4x4")
    text = (PROGRAMS / "matmul.d1k").read_text()
    emu = Emulator(compile_program(text, m, "matmul.d1k"))
    assert emu.run().ok
    s = emu.stats()
    assert s["modelled"]["chip_edge_bytes"] == 0
    assert s["modelled"]["on_chip_bytes"] == s["modelled"]["link_bytes"] > 0
    assert "chips" not in s and "chip_edge_bytes_by_chip" not in emu.totals()


def test_run_stats_and_json_report_chip_edge_bytes(tmp_path):
    r = d1("run", "programs/matmul.d1k", "--mesh", "4x4", "--chips", "2x2", "--check",
           "--stats", "--json", str(tmp_path / "run.json"), "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    md = doc["stats"]["modelled"]
    assert md["chip_edge_bytes"] > 0 and doc["stats"]["machine"] == "d1-4x4-chips2x2"
    assert f"across chip edges        {md['chip_edge_bytes'] / 1024:.4g} KiB " \
           f"({md['chip_edge_bytes']:,} B) (2 x 2 chips)" in r.stdout
    assert "per chip (bytes out across its edges / in across them / on chip):" in r.stdout
    assert "busiest chip-edge link" in r.stdout


def test_train_reports_chip_edge_bytes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", x @ rng.standard_normal((16, 4)).astype(np.float32))
    r = d1("train", "programs/train_linear.d1k", "--input", f"x={tmp_path / 'x.npy'}",
           "--input", f"y={tmp_path / 'y.npy'}", "--mesh", "4x4", "--chips", "2x2",
           "--out-dir", str(tmp_path / "out"), "--json", "-", "--quiet", "--stats")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    md = doc["totals"]["modelled"]
    assert doc["machine"] == "d1-4x4-chips2x2"
    assert md["chip_edge_bytes"] > 0
    assert md["on_chip_bytes"] + md["chip_edge_bytes"] == md["link_bytes"]
    per = doc["totals"]["chips"]["per_chip"]
    assert len(per) == 4 and sum(r["edge_bytes_out"] for r in per) == md["chip_edge_bytes"]
    assert sum(r["edge_bytes_in"] for r in per) == md["chip_edge_bytes"]
    assert sum(r["on_chip_bytes"] for r in per) == md["on_chip_bytes"]
    assert all(sum(r["edge_bytes_out_by_dir"].values()) == r["edge_bytes_out"] for r in per)
    assert "per step across chip edges" in r.stderr
    # --stats: the whole run's figures, on chip and across chip edges apart, and per chip
    assert f"    on chip                  {md['on_chip_bytes'] / 1024:.4g} KiB" in r.stderr
    assert f"across chip edges        {md['chip_edge_bytes'] / 1024:.4g} KiB " \
           f"({md['chip_edge_bytes']:,} B) (2 x 2 chips)" in r.stderr
    assert "per chip (bytes out across its edges / in across them / on chip):" in r.stderr
    assert f"instructions        {md['instructions']:,}" in r.stderr


# ---- chips and objects -------------------------------------------------------------------------

def test_a_chip_grid_is_structural_for_objects_and_chip_latency_is_timing():
    text = (PROGRAMS / "matmul.d1k").read_text()
    base = load_machine(mesh="4x4")
    obj = compile_program(text, base, "matmul.d1k")
    obj.meta.update(producer="d1 compile", source="matmul.d1k")
    obj.sources["matmul.d1k"] = text
    chips = load_machine(mesh="4x4", chips="2x2")
    prog = from_object(obj, chips)
    assert prog.kind == "dsl" and prog.machine.chips == 4
    assert "chips_x, chips_y change code generation" in prog.notes[0]
    again = from_object(prog.obj, chips.replace(chip_hop_latency=300))
    assert again.kind == "object" and again.machine.chip_hop_latency == 300
    assert "chip_hop_latency (timing only" in again.notes[0]
    # the compiler sizes its messages for the link widths: recompiled for a new chip link
    wider = from_object(prog.obj, chips.replace(chip_link_bytes_per_cycle=20))
    assert wider.kind == "dsl" and "chip_link_bytes_per_cycle changes" in wider.notes[0]


def test_machine_options_on_an_object_change_the_object_s_own_machine(tmp_path):
    # --set alone retimes the machine the object was built for (it used to swap in the
    # one-chip d1 machine and recompile for it); --chips copies the object's chip.
    obj = tmp_path / "mm.d1o"
    r = d1("compile", "programs/matmul.d1k", "--mesh", "4x4", "--chips", "2x2", "-o", str(obj))
    assert r.returncode == 0, r.stderr
    r = d1("run", str(obj), "--set", "chip_hop_latency=300", "--json", "-",
           "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stats"]["machine"] == "d1-4x4-chips2x2"
    assert "chip_hop_latency (timing only" in r.stderr and "recompiled" not in r.stderr
    r = d1("run", str(obj), "--chips", "2x1", "--json", "-", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stats"]["machine"] == "d1-4x4-chips2x1"
    assert "for machine 'd1-4x4-chips2x1'" in r.stderr
    # assembly that names its machine in a leading .machine directive, likewise
    asm = tmp_path / "mm.d1s"
    assert d1("disasm", str(obj), "-o", str(asm)).returncode == 0
    r = d1("asm", str(asm), "--set", "chip_hop_latency=300", "-o", str(tmp_path / "a.d1o"))
    assert r.returncode == 0, r.stderr
    assert "machine d1-4x4-chips2x2" in r.stdout


def test_a_derived_machine_says_what_it_is():
    m = load_machine(mesh="4x4", chips="2x2", overrides={"chips_x": 3})
    assert m.name == "d1-4x4-chips3x2"
    assert m.description == "3 x 2 chips of 4 x 4 nodes (16 live each), 96 live nodes"
    assert load_machine(mesh="4x4", overrides={"harvested": [[0, 0]]}).description == \
        "4 x 4 mesh, 1 harvested node"
    assert load_machine("tile").description.startswith("Training tile")
    base = load_machine(mesh="4x4", chips="2x2")
    assert load_machine(base=base, chips="3x1").name == "d1-4x4-chips3x1"
    assert load_machine(base=base, overrides={"cost_alu": 2}).name == "d1-4x4-chips2x2"
    # the name's mesh is the one the machine ends with
    m = load_machine(mesh="4x4", overrides={"cols": 8})
    assert (m.name, m.cols, m.rows) == ("d1-8x4", 8, 4)
    assert load_machine(mesh="4x4", chips="2x2", overrides={"rows": 2}).name == "d1-4x2-chips2x2"


def test_a_machine_file_on_a_base_is_named_after_itself(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "d1"\ncols = 4\nrows = 4\nharvested = []\nchips_x = 2\n')
    m = load_machine(str(f))
    assert m.name == "mine"
    assert m.description == "2 x 1 chips of 4 x 4 nodes (16 live each), 32 live nodes"
    g = tmp_path / "slow.toml"
    g.write_text('base = "d1"\ncost_alu = 2\n')
    assert load_machine(str(g)).name == "slow"
    assert load_machine(str(g)).description == load_machine("d1").description


def test_dsl_programs_pass_check_on_two_by_two_chips():
    m = load_machine(mesh="4x4", chips="2x2")
    for name in ("elementwise", "softmax", "mlp"):
        text = (PROGRAMS / f"{name}.d1k").read_text()
        rows, emu, _, _ = run_and_compare(compile_program(text, m, f"{name}.d1k"), text, m,
                                          f"{name}.d1k")
        assert rows and emu.stats()["modelled"]["link_bytes"] >= 0


def test_sweep_takes_chip_grids(tmp_path):
    r = d1("sweep", "programs/matmul.d1k", "--mesh", "2x2", "--chips", "1x1,2x1",
           "--csv", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("mesh,chips,") and lines[0].endswith(",chip_edge_bytes")
    assert len(lines) == 3 and lines[1].endswith(",0") and ",2x1," in lines[2]
    assert int(lines[2].rsplit(",", 1)[1]) > 0
    r = d1("sweep", "programs/elementwise.d1k", "--chips", "1x1,2y1")
    assert r.returncode == 2 and "--chips expects" in r.stderr


def test_machine_md_documents_the_machines_and_the_per_chip_figures():
    doc = (ROOT / "docs" / "MACHINE.md").read_text()
    for name in machine_names():
        assert f"| `{name}` " in doc, name
    for s in SYSTEMS:
        assert f"| {s.name} |" in doc, s.name
    m = load_machine(mesh="2x1", chips="2x1")
    row = chip_traffic(m, np.zeros((m.n_live, 4), dtype=np.int64))[0]
    for key in row:                                  # the per-chip table
        assert f"| `{key}` |" in doc, key
    for key in ("chip_edge_bytes", "on_chip_bytes", "stats.chips.busiest_edge_links"):
        assert f"`{key}`" in doc, key
    # every key of `d1 info --json`, and of its `derived` figures, is described
    info = info_dict(load_machine("tile"))
    for key in list(info) + list(info["derived"]) + list(info["published_system"]):
        assert f"`{key}`" in doc, key


def test_info_shows_node_ids_and_sends_through_harvested_routers():
    from d1.commands.info import info_dict, node_lines

    h6 = load_machine("h6x5")                   # harvested (2,1) and (3,3)
    lines = node_lines(h6)
    assert lines[1:4] == ["  x=      0   1   2   3   4   5",
                          "  y=0     0   1   2   3   4   5",
                          "  y=1     6   7   x   8   9  10"]
    assert "(1,1) -E-> (3,1)" in lines[-1] and "(2,0) -S-> (2,2)" in lines[-1]
    nodes = info_dict(h6)["nodes"]
    assert nodes["xy"][8] == [3, 1] and nodes["neighbors"][7] == [1, 8, 12, 6]
    assert node_lines(load_machine(mesh="2x2"))[-1].endswith("(no harvested routers to pass)")
    assert info_dict(load_machine("exapod"))["nodes"] is None


SPMD_ACROSS_CHIPS = """
.text all                     # one block for every node of both chips: no node symbol in the code
        getx    r1
        blt     r1, r21, send
        j       recv
send:   send    E, r20
recv:   beqz    r1, done
        recv    r3, W
        st32    r3, [r0+OUT]
done:   halt
.data all
OUT:    .zero 8
.init r20, @id * 10
.init r21, @w - 1
.tensor o output i32[@n, 2]
.piece o all OUT offset @id, 0 shape 1, 2
"""


def test_spmd_assembly_across_chips_is_one_block_and_its_listing_names_the_chip_grid():
    from d1isa.asm import assemble
    from d1isa.disasm import disassemble
    m = load_machine(mesh="3x2", chips="2x1")
    obj = assemble(SPMD_ACROSS_CHIPS, "spmd.d1s", m)
    assert len(obj.blocks) == 1 and (obj.node_block == 0).all()
    text = disassemble(obj)
    assert text.count("\n.text ") == 1 and "# block 0: 8 instructions, 12 nodes\n.text all" in text
    assert assemble(text, "again.d1s").to_bytes() == obj.to_bytes()
    # the plain listing says which options rebuild the machine, chips included, and they do
    plain = disassemble(obj, debug=False)
    assert "assemble it with the machine's --machine/--mesh options and --chips 2x1" in plain
    again = assemble(plain, "plain.d1s", load_machine(mesh="3x2", chips="2x1"))
    assert [b.words.tolist() for b in again.blocks] == [b.words.tolist() for b in obj.blocks]
    emu = Emulator(obj)
    assert emu.run().ok
    got = emu.output("o")[:, 0]
    ids = np.arange(m.n_live)
    xs = m.xy[:, 0]
    assert got.tolist() == np.where(xs > 0, (ids - 1) * 10, 0).tolist()
    # the sends of chip 0's east column (x = 2), 8 B in each of the 2 rows, cross the chip edge
    assert emu.stats()["modelled"]["chip_edge_bytes"] == 2 * 8


def test_every_command_that_takes_a_machine_takes_chips_and_the_readme_lists_them():
    import click

    from d1.cli import cli
    ctx = click.Context(cli)
    takes = []
    for name in cli.list_commands(ctx):
        opts = {o for p in cli.get_command(ctx, name).params for o in p.opts}
        if "--machine" in opts:
            assert {"--mesh", "--chips", "--set"} <= opts, name
            takes.append(name)
    listed = ", ".join(f"`{n}`" for n in takes)
    assert f"takes a machine ({listed}) takes" in " ".join((ROOT / "README.md").read_text().split())
