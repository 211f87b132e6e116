"""The trace recorder: region statistics, the Chrome / Perfetto trace, `d1 run --trace`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import compiler
from d1isa import asm
from d1isa.machine import load_machine
from emulator import Emulator
from emulator.trace import RS_COLS, region_table

ROOT = Path(__file__).resolve().parents[1]
ASM = ROOT / "programs" / "asm"
PROGRAMS = ROOT / "programs"

# ---- a validator for the trace-event format ------------------------------------------------------
# The rules of Google's "Trace Event Format" document (the JSON object form) that matter here.

PHASES = {"B", "E", "X", "i", "I", "C", "M", "s", "t", "f", "b", "e", "n"}
EPS = 1e-9          # microseconds: float rounding when nesting X slices


def validate_trace(doc: dict) -> dict:
    """Raise AssertionError on any broken rule; return counts by phase."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)
    assert doc.get("displayTimeUnit") in ("ms", "ns")
    counts: dict[str, int] = defaultdict(int)
    named_pids: set[int] = set()
    named_threads: set[tuple[int, int]] = set()
    used_threads: set[tuple[int, int]] = set()
    stacks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    xs: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    flow_s: dict[tuple[str, object], dict] = {}
    flow_f: dict[tuple[str, object], dict] = {}
    last_ts: dict[tuple[int, int], float] = {}
    for e in doc["traceEvents"]:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in e, f"event without '{key}': {e}"
        ph = e["ph"]
        assert ph in PHASES, e
        assert isinstance(e["name"], str) and e["name"], e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        counts[ph] += 1
        thread = (e["pid"], e["tid"])
        if ph == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index",
                                 "thread_sort_index", "process_labels"), e
            assert isinstance(e.get("args"), dict), e
            if e["name"] == "process_name":
                assert isinstance(e["args"].get("name"), str)
                named_pids.add(e["pid"])
            if e["name"] == "thread_name":
                assert isinstance(e["args"].get("name"), str)
                named_threads.add(thread)
            continue
        if ph in ("X", "B", "E"):
            used_threads.add(thread)
            # on one thread, slices come in time order
            assert e["ts"] >= last_ts.get(thread, 0.0) - EPS, e
            last_ts[thread] = e["ts"]
        if ph == "X":
            assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, e
            xs[thread].append((e["ts"], e["ts"] + e["dur"]))
        elif ph == "B":
            stacks[thread].append(e)
        elif ph == "E":
            assert stacks[thread], f"E without B: {e}"
            b = stacks[thread].pop()
            assert e["ts"] >= b["ts"], e
        elif ph == "C":
            args = e.get("args")
            assert isinstance(args, dict) and args, e
            assert all(isinstance(v, (int, float)) for v in args.values()), e
        elif ph in ("s", "f", "t"):
            assert "id" in e and "cat" in e, e
            key = (e["cat"], e["id"])
            if ph == "s":
                assert key not in flow_s, f"flow id used twice: {e}"
                flow_s[key] = e
            elif ph == "f":
                assert key not in flow_f, f"flow id finished twice: {e}"
                assert e.get("bp") == "e", "flow finish should bind to its enclosing slice"
                flow_f[key] = e
    assert all(not s for s in stacks.values()), "B without E"
    assert set(flow_s) == set(flow_f), "every flow start needs a finish with the same id"
    for key, s in flow_s.items():
        assert flow_f[key]["ts"] >= s["ts"], (s, flow_f[key])
    # X slices on a thread nest: each starts after its parent starts and ends before it ends
    for thread, spans in xs.items():
        open_: list[tuple[float, float]] = []
        for t0, t1 in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
            while open_ and open_[-1][1] <= t0 + EPS:
                open_.pop()
            if open_:
                assert t1 <= open_[-1][1] + EPS, f"slice {t0}..{t1} overlaps its parent " \
                                                 f"{open_[-1]} on {thread}"
            open_.append((t0, t1))
    for s in list(flow_s.values()) + list(flow_f.values()):
        used_threads.add((s["pid"], s["tid"]))
    pids = {e["pid"] for e in doc["traceEvents"] if e["ph"] != "M"}
    assert pids <= named_pids, f"processes without a name: {pids - named_pids}"
    assert used_threads <= named_threads, f"threads without a name: {used_threads - named_threads}"
    return dict(counts)


def test_validator_rejects_broken_traces():
    ok = {"displayTimeUnit": "ns", "traceEvents": [
        {"name": "process_name", "ph": "M", "ts": 0, "pid": 1, "tid": 0, "args": {"name": "p"}},
        {"name": "thread_name", "ph": "M", "ts": 0, "pid": 1, "tid": 3, "args": {"name": "t"}},
        {"name": "a", "ph": "X", "ts": 1.0, "dur": 5.0, "pid": 1, "tid": 3},
        {"name": "b", "ph": "X", "ts": 2.0, "dur": 1.0, "pid": 1, "tid": 3},
    ]}
    assert validate_trace(ok) == {"M": 2, "X": 2}
    bad = json.loads(json.dumps(ok))
    bad["traceEvents"][3]["dur"] = 9.0                 # sticks out of its parent
    with pytest.raises(AssertionError):
        validate_trace(bad)
    bad = json.loads(json.dumps(ok))
    bad["traceEvents"].append({"name": "m", "ph": "s", "id": 1, "cat": "c", "ts": 1.5,
                               "pid": 1, "tid": 3})      # a flow that never finishes
    with pytest.raises(AssertionError):
        validate_trace(bad)
    bad = json.loads(json.dumps(ok))
    bad["traceEvents"].append({"name": "x", "ph": "X", "ts": 9.0, "dur": 1, "pid": 1, "tid": 4})
    with pytest.raises(AssertionError):                  # thread 4 has no name
        validate_trace(bad)


# ---- region statistics ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matmul_runs():
    """matmul.d1k on a 4 x 4 mesh, untraced and traced."""
    m = load_machine(mesh="4x4")
    obj = compiler.compile_file(PROGRAMS / "matmul.d1k", m)
    plain = Emulator(obj)
    assert plain.run().ok
    traced = Emulator(obj, trace="full")
    assert traced.run().ok
    return plain, traced


def test_tracing_changes_no_result_and_no_timing(matmul_runs):
    plain, traced = matmul_runs
    a, b = plain.stats(), traced.stats()
    assert a["nodes"] == b["nodes"] and a["links"] == b["links"]
    assert {k: v for k, v in b["modelled"].items() if k != "sram_bytes"} == a["modelled"]
    assert np.array_equal(plain.output("c"), traced.output("c"))
    assert "regions" not in a and "sram_bytes" not in a["modelled"]


def test_region_totals_add_up_to_the_run(matmul_runs):
    _, emu = matmul_runs
    s = emu.stats()
    regs = s["regions"]
    assert [r["op"] for r in regs] == ["matmul[summa]"]
    md = s["modelled"]
    assert sum(r["flops"] for r in regs) == md["flops"] == 2 * 128 * 256 * 96
    assert sum(r["link_bytes"] for r in regs) == md["link_bytes"]
    assert sum(r["link_messages"] for r in regs) == md["link_messages"]
    assert sum(r["stall_cycles"] for r in regs) == md["stall_cycles"]
    assert sum(r["node_cycles"] for r in regs) == sum(s["nodes"]["clock"])
    assert sum(r["busy_cycles"] for r in regs) == md["busy_cycles"]
    r = regs[0]
    assert r["entries"] == 16 and r["start_cycle"] == 0 and r["end_cycle"] == md["kernel_cycles"]
    by_class = {c: sum(x["instructions_by_class"][c] for x in regs)
                for c in md["instructions_by_class"]}
    assert by_class == md["instructions_by_class"]
    # SRAM: every mma step reads two 8x8 bf16 tiles (256 B); accumulator tiles move 256 B;
    # vector and scalar loads and stores at most 64 and 8 B; message payloads are not counted
    steps = md["flops"] // 1024
    c = md["instructions_by_class"]
    most = 256 * c["acc"] + 64 * (c["vload"] + c["vstore"]) + 8 * (c["load"] + c["store"])
    assert 256 * steps <= md["sram_bytes"] <= 256 * steps + most


def test_sram_bytes_and_label_regions_of_vadd():
    m = load_machine(mesh="2x2")
    emu = Emulator(asm.assemble_file(ASM / "vadd.d1s", machine=m), trace="regions")
    assert emu.run().ok
    s = emu.stats()
    regs = {r["name"]: r for r in s["regions"]}
    assert set(regs) == {"entry", "loop"}
    # 4 trips of vld, vld, vst (64 B each) on each of the 4 nodes
    assert regs["loop"]["sram_bytes"] == 4 * 3 * 64 * 4 == s["modelled"]["sram_bytes"]
    assert regs["entry"]["sram_bytes"] == 0
    assert regs["loop"]["flops"] == 4 * 4 * 16
    assert regs["entry"]["instructions_by_class"]["alu"] == 2 * 4
    assert regs["loop"]["label"].startswith("loop (vadd.d1s:")


TWO_SECTIONS = """\
.text node 0,0
        movi r1, 2
loop:   addi r1, r1, -1
        bnez r1, loop
        halt
.text node 1,0
        movi r1, 3
        movi r2, 5
loop:   mul r2, r2, r2
        addi r1, r1, -1
        bnez r1, loop
        halt
"""


def test_label_regions_of_two_sections_are_apart_and_named_by_their_lines():
    # each section's own `loop:` and code before it were one region, named after the first
    # section's line, with the second section's figures added in
    emu = Emulator(asm.assemble(TWO_SECTIONS, "two.d1s", load_machine(mesh="2x2")),
                   trace="regions")
    assert emu.run().ok
    s = emu.stats()
    regs = {r["label"]: r for r in s["regions"] if r["entries"]}
    assert set(regs) == {"entry (two.d1s:2)", "loop (two.d1s:3)", "entry (two.d1s:7)",
                         "loop (two.d1s:9)"}
    assert regs["loop (two.d1s:3)"]["instructions_by_class"]["mul"] == 0
    assert regs["loop (two.d1s:9)"]["instructions_by_class"]["mul"] == 3
    assert regs["entry (two.d1s:7)"]["busy_cycles"] == 2
    assert sum(r["busy_cycles"] for r in regs.values()) == s["modelled"]["busy_cycles"]


def test_region_table_merges_steps_at_one_dsl_position():
    m = load_machine(mesh="2x2")
    obj = compiler.compile_file(PROGRAMS / "softmax.d1k", m)
    emu = Emulator(obj)
    regions, rtab = region_table(obj, emu.code)
    labels = [r.label for r in regions]
    assert "e = redistribute + elementwise(sub exp) @14:5" in labels
    assert labels[-1] == "(other)"
    assert len(regions) == len({(r["line"], r["col"]) for r in obj.meta["regions"]}) + 1
    assert rtab.shape == (emu.code.total,) and rtab.min() >= 0 and rtab.max() < len(regions)
    assert RS_COLS == 8 + 20


# ---- the trace document --------------------------------------------------------------------------

def test_matmul_trace_is_valid_and_agrees_with_the_statistics(matmul_runs):
    _, emu = matmul_runs
    doc = emu.chrome_trace(program="matmul.d1k")
    counts = validate_trace(doc)
    info = doc["otherData"]
    assert doc["metadata"] == info
    assert info["flow_sampling"] == "every message" and not info["truncated"]
    s = emu.stats()
    assert counts["s"] == counts["f"] == s["modelled"]["link_messages"] == info["flows"]
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert "(0,0) id 0" in names and len(names) == 16
    # one region slice per node; waits add up to each node's stalled cycles
    per_us = 2e9 / 1e6
    stall = defaultdict(int)
    regions = 0
    for e in doc["traceEvents"]:
        if e.get("cat") == "wait":
            stall[e["tid"]] += e["args"]["cycles"]
            assert round(e["dur"] * per_us) == e["args"]["cycles"]
        if e.get("cat") == "region":
            regions += 1
            assert e["name"] == "c = matmul[summa] @9:7"
            assert e["args"]["end_cycle"] == s["nodes"]["clock"][e["tid"]]
    assert regions == 16
    assert [stall[i] for i in range(16)] == s["nodes"]["stall"]
    # counters: FIFO occupancy of the busiest links never exceeds the FIFO depth
    counters = [e for e in doc["traceEvents"] if e["ph"] == "C"]
    assert counters and max(e["args"]["messages"] for e in counters) <= 4
    assert min(e["args"]["messages"] for e in counters) >= 0
    assert len({e["name"] for e in counters}) == 8
    # timestamps are modelled microseconds
    last = max(e["ts"] + e.get("dur", 0) for e in doc["traceEvents"])
    assert last == pytest.approx(s["modelled"]["kernel_cycles"] / per_us)


def test_downsampled_fifo_counters_end_at_the_fifo_final_fill(matmul_runs):
    # downsampling kept each bucket's largest fill, so a track squeezed into a few points ended
    # at a full FIFO (4 messages) although every message had been taken
    _, emu = matmul_runs

    def last(doc):
        out = {}
        for e in doc["traceEvents"]:
            if e["ph"] == "C":
                out[e["name"]] = e["args"]["messages"]
        return out
    full = last(emu.chrome_trace())
    assert full and set(full.values()) == {0}
    meta = sum(1 for e in emu.chrome_trace()["traceEvents"] if e["ph"] == "M")
    doc = emu.chrome_trace(max_events=meta + 16 + 3 * 8)
    validate_trace(doc)
    assert "downsampled" in doc["otherData"]["counters"]
    squeezed = last(doc)
    assert squeezed and all(full[k] == v for k, v in squeezed.items()), squeezed


def test_token_ring_flows_follow_the_token():
    m = load_machine("h6x5")
    emu = Emulator(asm.assemble_file(ASM / "token_ring.d1s", machine=m), trace="full")
    assert emu.run().ok
    doc = emu.chrome_trace()
    validate_trace(doc)
    starts = sorted((e for e in doc["traceEvents"] if e["ph"] == "s"), key=lambda e: e["ts"])
    assert len(starts) == m.n_live - 1
    # the token visits the nodes one after another: every flow starts where the last one ended
    finish = {e["id"]: e for e in doc["traceEvents"] if e["ph"] == "f"}
    for a, b in zip(starts, starts[1:], strict=False):
        assert finish[a["id"]]["tid"] == b["tid"]
        assert finish[a["id"]]["ts"] <= b["ts"]
    labels = {e["name"].split(" (")[0] for e in doc["traceEvents"] if e.get("cat") == "region"}
    assert labels == {"entry", "start", "bump", "done"}
    text = (ASM / "token_ring.d1s").read_text().splitlines()
    bump = next(e for e in doc["traceEvents"] if e["name"].startswith("bump ("))
    line = int(bump["name"].rsplit(":", 1)[1].rstrip(")"))
    assert text[line - 2].strip() == "bump:"      # its first instruction follows the label
    waits = [e for e in doc["traceEvents"] if e.get("cat") == "wait"]
    assert waits and all(e["name"].startswith("receive wait from ") for e in waits)


def test_event_budget_and_full_buffers_are_reported():
    m = load_machine(mesh="4x4")
    obj = compiler.compile_file(PROGRAMS / "layernorm.d1k", m)
    emu = Emulator(obj, trace="full")
    assert emu.run().ok
    full = emu.chrome_trace()
    validate_trace(full)
    assert full["otherData"]["flow_sampling"] == "every message"
    assert not full["otherData"]["truncated"]
    regions = sum(1 for e in full["traceEvents"] if e.get("cat") == "region")
    waits = sum(1 for e in full["traceEvents"] if e.get("cat") == "wait")
    meta = sum(1 for e in full["traceEvents"] if e["ph"] == "M")
    assert waits > 40 and regions > 40
    budget = meta + regions + waits // 2
    small = emu.chrome_trace(max_events=budget)
    validate_trace(small)
    info = small["otherData"]
    assert info["truncated"] and len(small["traceEvents"]) == info["event_count"] <= budget
    assert info["notes"]["waits"].startswith(f"truncated: the {(budget - meta - regions) // 2:,}"
                                             f" longest of {waits:,} waits are shown")
    kept = [e["args"]["cycles"] for e in small["traceEvents"] if e.get("cat") == "wait"]
    every = sorted((e["args"]["cycles"] for e in full["traceEvents"] if e.get("cat") == "wait"),
                   reverse=True)
    assert sorted(kept, reverse=True) == every[:len(kept)]
    sampled = emu.chrome_trace(max_events=meta + regions + 2 * waits + 60)
    validate_trace(sampled)
    assert sampled["otherData"]["flow_sampling"].startswith("1 in ")
    assert not sampled["otherData"]["truncated"]
    tight = emu.chrome_trace(max_events=meta + 10)
    validate_trace(tight)
    assert "region_slices" in tight["otherData"]["notes"]
    assert tight["otherData"]["flow_sampling"].startswith("none of ")
    assert "names" not in tight["otherData"]["notes"]
    # no budget is overrun by the counters (each of 8 tracks took 2 points whatever the room)
    for b in range(meta, meta + 120, 7):
        doc = emu.chrome_trace(max_events=b)
        validate_trace(doc)
        assert len(doc["traceEvents"]) == doc["otherData"]["event_count"] <= b, b
    assert "counters" in tight["otherData"]["notes"]
    # a budget smaller than the names alone: they are written, and the trace says so
    names_only = emu.chrome_trace(max_events=meta - 1)
    validate_trace(names_only)
    assert len(names_only["traceEvents"]) == meta
    assert names_only["otherData"]["notes"]["names"] == (
        f"over budget: the {meta:,} process and thread names exceed the event budget of "
        f"{meta - 1:,}; they are written, and no slice, flow or counter")
    # a buffer too small for the run: the trace says where it ends
    tiny = Emulator(obj, trace="full", trace_events=20, trace_messages=50)
    assert tiny.run().ok
    doc = tiny.chrome_trace()
    validate_trace(doc)
    notes = doc["otherData"]["notes"]
    assert "event_buffer" in notes and "message_buffer" in notes
    # region totals stay exact whatever the buffers hold
    assert tiny.stats()["regions"] == emu.stats()["regions"]


def test_untraced_emulator_refuses_to_make_a_trace():
    m = load_machine(mesh="2x2")
    emu = Emulator(asm.assemble_file(ASM / "vadd.d1s", machine=m), trace="regions")
    emu.run()
    with pytest.raises(Exception, match="trace"):
        emu.chrome_trace()


# ---- the command line -------------------------------------------------------------------------

def d1(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_d1_run_trace_writes_a_valid_trace(tmp_path):
    out = tmp_path / "t.json"
    r = d1("run", "programs/attention.d1k", "--mesh", "4x4", "--trace", str(out), "--stats",
           "--out-dir", str(tmp_path), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "open it in ui.perfetto.dev" in r.stderr
    assert "regions (span: first entry to last exit" in r.stdout
    doc = json.loads(out.read_text())
    validate_trace(doc)
    stats = json.loads((tmp_path / "s.json").read_text())["stats"]
    labels = {e["name"] for e in doc["traceEvents"] if e.get("cat") == "region"}
    assert labels == {r["label"] for r in stats["regions"]}
    assert "out = matmul[summa] @17:27" in labels


def test_d1_run_trace_to_a_dash_is_refused(tmp_path, monkeypatch):
    # '-' is standard output for --json; --trace - wrote a file named '-' instead
    from click.testing import CliRunner

    from d1.cli import cli
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(ASM / "vadd.d1s"), "--mesh", "4x4", "--trace", "-"])
    assert str(r.exception) == ("--trace needs a file name: '-' (standard output) is taken "
                                "only by --json of d1 run, d1 train and d1 compile")
    assert not (tmp_path / "-").exists()


def test_d1_run_trace_of_a_deadlock_still_writes_the_trace(tmp_path):
    out = tmp_path / "dead.json"
    r = d1("run", str(ASM / "deadlock.d1s"), "--mesh", "3x3", "--trace", str(out),
           "--out-dir", str(tmp_path))
    assert r.returncode == 1 and "deadlock" in r.stderr
    validate_trace(json.loads(out.read_text()))


def test_d1_run_compiler_options(tmp_path):
    r = d1("run", "programs/matmul.d1k", "--mesh", "4x4", "-O", "matmul=naive", "--json",
           str(tmp_path / "n.json"), "--out-dir", str(tmp_path), "--check")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "n.json").read_text())
    assert doc["stats"]["machine_params"]["cols"] == 4
    r = d1("run", str(ASM / "vadd.d1s"), "--mesh", "2x2", "-O", "matmul=naive")
    assert r.returncode == 2 and "apply to .d1k programs" in r.stderr
