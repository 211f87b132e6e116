"""`d1 run` end to end, and every example program in programs/asm on the emulator."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from d1isa import asm, traps
from d1isa.machine import load_machine
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
ASM = ROOT / "programs" / "asm"


def d1(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def program(name: str, machine) -> Emulator:
    return Emulator(asm.assemble_file(ASM / f"{name}.d1s", machine=machine))


def machine_named(name: str | None):
    return load_machine("h6x5") if name == "h6x5" else load_machine(mesh=name)


# ---- the example programs ----------------------------------------------------------------------

@pytest.mark.parametrize("mesh", [None, "4x4", "h6x5", "1x3", "5x1"])
def test_token_ring_counts_every_live_node(mesh):
    m = machine_named(mesh)
    emu = program("token_ring", m)
    res = emu.run()
    assert res.status == "halted", res.report()
    assert emu.output("count").tolist() == [m.n_live]
    assert emu.output("live").tolist() == [m.n_live]
    assert emu.stats()["modelled"]["link_messages"] == m.n_live - 1


def test_vadd_adds_rows_on_every_node():
    m = load_machine(mesh="4x4")
    emu = program("vadd", m)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m.n_live, 64)).astype(np.float32)
    b = rng.standard_normal((m.n_live, 64)).astype(np.float32)
    emu.set_input("a", a)
    emu.set_input("b", b)
    assert emu.run().ok
    assert np.array_equal(emu.output("c"), a + b)


def test_matmul8_default_and_random_tiles():
    m = load_machine(mesh="4x4")
    emu = program("matmul8", m)
    assert emu.run().ok
    assert np.array_equal(emu.output("C"), np.arange(64, dtype=np.float32).reshape(8, 8))
    emu = program("matmul8", m)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    emu.set_input("A", a)
    emu.set_input("B", b)
    assert emu.run().ok
    ab = emu.output("A"), emu.output("B")          # the bf16-rounded operands
    want = np.zeros((8, 8), np.float32)
    for k in range(8):
        want = want + ab[0][:, k:k + 1] * ab[1][k:k + 1, :]
    assert np.array_equal(emu.output("C"), want)


@pytest.mark.parametrize("mesh", ["4x4", "h6x5", None])
def test_row_broadcast_reaches_every_node(mesh):
    m = machine_named(mesh)
    emu = program("row_broadcast", m)
    res = emu.run()
    assert res.ok, res.report()
    rows = emu.output("rows")
    for nid in range(m.n_live):
        y = int(m.xy[nid, 1])
        assert rows[nid].tolist() == [100 * y + j for j in range(64)]
    # every message, the acknowledgements too, was consumed
    assert all(not emu.fifo(n, d) for n in range(m.n_live) for d in range(4))


def test_deadlock_program_is_detected():
    m = load_machine(mesh="4x4")
    emu = program("deadlock", m)
    res = emu.run()
    assert res.status == "deadlock"
    waiting = [i for i, s in enumerate(emu.node_states()) if s.startswith("blocked")]
    assert waiting == [m.node_id(0, 0), m.node_id(1, 0)]
    assert [emu.pc(i) for i in waiting] == [1, 1]          # both on their recv
    assert emu.node_states().count("halted") == 14
    assert "deadlock: a cycle of 2 waiting nodes" in res.report()
    assert "deadlock.d1s:" in res.report()


def test_nodes_behind_a_deadlock_are_counted_in_plain_english():
    """One node waits to send into a FIFO of the cycle: "1 more blocked node waits", not
    "1 more blocked node wait"; two take the plural."""
    src = ".text node 0,0\n recv r1, E\n halt\n.text node 1,0\n recv r1, W\n halt\n"
    one = src + ".text node 0,1\nl: send N, r1\n j l\n"
    res = Emulator(asm.assemble(one, machine=load_machine(mesh="3x3"))).run()
    assert "\n  (1 more blocked node waits behind this chain)" in res.report()
    two = one + ".text node 1,1\nm: send N, r1\n j m\n"
    res = Emulator(asm.assemble(two, machine=load_machine(mesh="3x3"))).run()
    assert "\n  (2 more blocked nodes wait behind this chain)" in res.report()


def test_trap_program_reports_four_causes():
    emu = program("trap", load_machine(mesh="4x4"))
    res = emu.run()
    assert res.status == "trapped"
    causes = {(t.where.x, t.where.y): t.cause for t in res.traps}
    assert causes == {(0, 0): traps.MISALIGNED, (1, 0): traps.SRAM_OUT_OF_RANGE,
                      (0, 1): traps.USER_TRAP, (1, 1): traps.ILLEGAL_INSTRUCTION}
    assert [t.code for t in res.traps if t.cause == traps.USER_TRAP] == [42]
    pcs = {(t.where.x, t.where.y): emu.pc((t.where.x, t.where.y)) for t in res.traps}
    assert pcs == {(0, 0): 1, (1, 0): 2, (0, 1): 4, (1, 1): 1}


# ---- the command line --------------------------------------------------------------------------

def test_run_writes_outputs_and_prints_stats_with_units(tmp_path):
    m = load_machine(mesh="2x2")
    a = np.arange(m.n_live * 64, dtype=np.float32).reshape(m.n_live, 64)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a * 2)
    out = tmp_path / "out"
    r = d1("run", str(ASM / "vadd.d1s"), "--mesh", "2x2", "--input", f"a={tmp_path / 'a.npy'}",
           "--input", f"b={tmp_path / 'b.npy'}", "--out-dir", str(out), "--stats",
           "--json", str(tmp_path / "run.json"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(out / "c.npy"), a * 3)
    for unit in ("cycles", "FLOP/s", "% of the f32 peak", " B", "node-instructions/s",
                 "modelled", "measured on the host"):
        assert unit in r.stdout, unit
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "halted" and doc["stats"]["live_nodes"] == 4
    assert len(doc["stats"]["nodes"]["count"]) == 4 and doc["result"]["traps"] == []


def test_run_threads_option_changes_nothing_but_host_figures(tmp_path):
    docs = []
    for threads in ("1", "2"):
        js = tmp_path / f"run{threads}.json"
        r = d1("run", str(ASM / "token_ring.d1s"), "--mesh", "4x4", "--threads", threads,
               "--quantum", "5", "--stats", "--json", str(js), "--out-dir", str(tmp_path / "o"))
        assert r.returncode == 0, r.stderr
        assert (f"on {threads} threads" if threads != "1" else "on 1 thread") in r.stdout, \
            "this test needs two usable CPUs"
        doc = json.loads(js.read_text())
        assert doc["stats"]["host"]["threads"] == int(threads)
        for key in ("host",):
            del doc["stats"][key]
        docs.append(doc)
    assert docs[0] == docs[1]
    r = d1("run", str(ASM / "token_ring.d1s"), "--threads", "-1")
    assert r.returncode == 2 and "--threads" in r.stderr


def test_run_exits_1_with_a_report_on_deadlock_and_trap(tmp_path):
    r = d1("run", str(ASM / "deadlock.d1s"), "--mesh", "3x3", "--out-dir", str(tmp_path),
           "--json", str(tmp_path / "d.json"))
    assert r.returncode == 1
    assert "deadlock" in r.stderr and "waits to receive from E (1,0)" in r.stderr
    assert json.loads((tmp_path / "d.json").read_text())["result"]["deadlock"]["cycle"]
    r = d1("run", str(ASM / "trap.d1s"), "--mesh", "3x3", "--out-dir", str(tmp_path))
    assert r.returncode == 1 and "user trap (code 42)" in r.stderr


def test_run_object_with_other_timing_and_rebuilds_for_other_structure(tmp_path):
    obj = asm.assemble_file(ASM / "token_ring.d1s", machine=load_machine(mesh="3x2"))
    path = tmp_path / "ring.d1o"
    obj.save(path)
    r = d1("run", str(path), "--mesh", "3x2", "--set", "hop_latency=5", "--stats",
           "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "hop_latency" in r.stderr and "requested timing" in r.stderr
    assert np.load(tmp_path / "count.npy").tolist() == [6]
    # Another mesh: the object embeds its assembly source, so it is re-assembled for 4x4.
    r = d1("run", str(path), "--mesh", "4x4", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "re-assembled" in r.stderr and "cols, rows change code generation" in r.stderr
    assert np.load(tmp_path / "count.npy").tolist() == [16]
    # Without an embedded source there is nothing to rebuild from: a usage error naming them.
    obj.sources.clear()
    obj.save(path)
    r = d1("run", str(path), "--mesh", "4x4")
    assert r.returncode == 2 and "cols, rows" in r.stderr and "recompiled" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_compiled_object_recompiles_for_a_code_generating_option(tmp_path):
    path = tmp_path / "ew.d1o"
    r = d1("compile", str(ROOT / "programs" / "elementwise.d1k"), "--mesh", "2x2", "-o", str(path))
    assert r.returncode == 0, r.stderr
    r = d1("run", str(path), "--mesh", "2x2", "--set", "link_bytes_per_cycle=16", "--check",
           "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "recompiled" in r.stderr and "link_bytes_per_cycle changes code generation" in r.stderr
    r = d1("run", str(path), "--mesh", "2x2", "--set", "cost_valu=3", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "requested timing" in r.stderr and "cost_valu" in r.stderr
    assert "recompiled" not in r.stderr


@pytest.mark.parametrize("command", [["run", "--out-dir", "{tmp}/out"],
                                     ["debug", "--batch", "-ex", "run"]])
def test_an_input_given_twice_is_a_usage_error(tmp_path, command):
    # The second array used to replace the first silently (d1 train refused it already).
    m = load_machine(mesh="2x2")
    np.save(tmp_path / "a.npy", np.ones((m.n_live, 64), np.float32))
    r = d1(command[0], str(ASM / "vadd.d1s"), *(a.format(tmp=tmp_path) for a in command[1:]),
           "--mesh", "2x2", "--input", f"a={tmp_path / 'a.npy'}",
           "--input", f"a ={tmp_path / 'a.npy'}")
    assert r.returncode == 2, r.stderr
    assert "input 'a' is given twice" in r.stderr and "Traceback" not in r.stderr


def test_compile_counts_one_code_block_in_the_singular(tmp_path):
    # A one-node program said "1 code blocks", where `d1 asm` says "1 code block".
    (tmp_path / "one.d1k").write_text("input x: f32[8]\ny = x + 1\noutput y\n")
    r = d1("compile", str(tmp_path / "one.d1k"), "--mesh", "1x1", "-o", str(tmp_path / "one.d1o"))
    assert r.returncode == 0, r.stderr
    assert "(1 x 1 grid on d1-1x1, 1 code block, " in r.stderr


def test_asm_counts_with_thousands_separators_and_one_instruction_in_the_singular(tmp_path,
                                                                                capsys):
    # `d1 asm` said "16318 instructions" (every other count has separators: the debugger's
    # "16,318 instructions") and "1 instructions" for a one-instruction program.
    from d1.cli import main

    (tmp_path / "one.d1s").write_text(".text node 0,0\n halt\n")
    (tmp_path / "big.d1s").write_text(".text all\n" + " nop\n" * 1200 + " halt\n")
    for name, mesh, want in (("one", "1x1", "1 instruction in 1 code block, 1 of 1 nodes"),
                             ("big", "2x2", "1,201 instructions in 1 code block, 4 of 4 nodes")):
        with pytest.raises(SystemExit) as info:
            main(["asm", str(tmp_path / f"{name}.d1s"), "--mesh", mesh])
        assert info.value.code in (0, None)
        assert want in capsys.readouterr().out


def test_node_counts_of_a_thousand_and_more_have_separators(tmp_path, capsys, monkeypatch):
    # `d1 run` said "run halted on d1-chips2x2 (1416 live nodes at 2 GHz)", `d1 disasm` and
    # `d1 debug` likewise, where `d1 info` says "1,416"; the debugger also said "1 instructions".
    from d1.cli import main

    (tmp_path / "one.d1s").write_text(".text node 0,0\n halt\n")
    small = ["--mesh", "40x25", "--set", "sram_bytes=64", "--set", "max_message_bytes=64"]
    obj = str(tmp_path / "one.d1o")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))        # no commands for `d1 debug`
    for args, want in ((["asm", str(tmp_path / "one.d1s"), *small, "-o", obj], None),
                       (["run", obj, "--stats", "--out-dir", str(tmp_path)],
                        "run halted on d1-40x25 (1,000 live nodes at 2 GHz)"),
                       (["disasm", obj], "(40x25, 1,000 live nodes), 1 code block, 1 node with"),
                       (["debug", obj, "--batch"],
                        "one.d1o: 1 instruction in 1 code block; machine d1-40x25 (40x25, "
                        "1,000 live nodes)")):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code in (0, None)
        out = capsys.readouterr()
        assert want is None or want in out.out + out.err, args[0]


def test_run_d1k_with_a_compile_error_exits_2(tmp_path):
    src = tmp_path / "k.d1k"
    src.write_text("# nothing\n")
    r = d1("run", str(src), "--mesh", "2x2", "--out-dir", str(tmp_path))
    assert r.returncode == 2
    assert "no outputs" in r.stderr and "Traceback" not in r.stderr


def test_run_of_one_cycle_says_cycle(tmp_path, capsys):
    from d1.cli import main

    (tmp_path / "one.d1s").write_text(".text node 0,0\n halt\n")
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "one.d1s"), "--mesh", "1x1", "--stats",
              "--out-dir", str(tmp_path)])
    assert info.value.code in (0, None)
    out = capsys.readouterr()
    assert "  kernel time         1 cycle = 500 ps\n" in out.out
    assert "halted: 1 cycle = 500 ps modelled" in out.out + out.err


def test_stats_of_one_message_say_message_and_cycle(tmp_path, capsys):
    from d1.cli import main

    (tmp_path / "one.d1s").write_text(".text node 0,0\n send E, r0\n halt\n"
                                      ".text node 1,0\n recv r1, W\n halt\n")
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "one.d1s"), "--mesh", "2x1", "--stats",
              "--out-dir", str(tmp_path)])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "  link traffic        8 B in 1 message\n" in out
    assert "    (0,0) -E-> (1,0)  1 cycle, 8 B, " in out
    assert "    waiting for FIFO room    0 cycles\n" in out


def test_stats_of_a_threaded_run_of_one_phase_say_phase():
    from d1.commands.run import format_stats

    obj = asm.assemble(".text node 0,0\n send E, r0\n halt\n.text node 1,0\n recv r1, W\n"
                       " halt\n",
                       "p.d1s", load_machine(mesh="2x1"))
    emu = Emulator(obj, threads=2)
    res = emu.run()
    s = emu.stats()
    assert s["host"]["phases"] == 1
    assert "node-instructions/s on 2 threads (1 phase)\n" in format_stats(s, res.status, 1.0)


def test_run_names_a_param_left_at_its_initial_contents_a_param(tmp_path, capsys):
    from d1.cli import main

    (tmp_path / "p.d1s").write_text(
        ".data all\nW: .f32 1, 2\nX: .f32 3, 4\n.tensor w param f32[2]\n.piece w 0,0 W\n"
        ".tensor x input f32[2]\n.piece x 0,0 X\n.text node 0,0\n halt\n")
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "p.d1s"), "--mesh", "1x1", "--out-dir", str(tmp_path)])
    assert info.value.code in (0, None)
    assert ("note: input tensor(s) x and param(s) w not given; they keep the object's initial "
            "SRAM contents") in capsys.readouterr().err


def test_an_emulation_speed_below_a_thousand_has_one_space_before_its_unit():
    """Below 1,000 (a run of a few instructions, or many ranks) the rate has no prefix; it
    used to print as '12.4  node-instructions/s', with two spaces."""
    from d1.commands.run import format_stats

    emu = program("vadd", load_machine(mesh="2x2"))
    emu.run()
    s = emu.stats()
    s["host"]["node_instructions_per_second"] = 12.4
    assert "  emulation speed     12.4 node-instructions/s on 1 thread\n" in \
        format_stats(s, "halted", 0.1)


def test_mpi_windows_of_one_cycle_say_cycle():
    """A window of one cycle (chip_hop_latency=0 on several ranks) printed '1 cycles'."""
    from d1.commands.run import format_stats

    emu = program("vadd", load_machine(mesh="2x2"))
    emu.run()
    s = emu.stats()
    s["host"].update(ranks=3, windows=1, window_cycles=1, lookahead_cycles=1, sync_seconds=0.0,
                     sync_share=0.0, state_bytes_by_rank=[1, 2, 3])
    assert "  MPI ranks           3, 1 window of 1 cycle (lookahead 1);" in \
        format_stats(s, "halted", 0.1)
