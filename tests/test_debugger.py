"""`d1 debug` and `emulator.debugger.Debugger`: the REPL through --batch, breakpoints,
watchpoints, steps, reverse execution, and that debugging never changes a run.

Run this file as a script to regenerate the session transcript in docs/DEBUGGER.md:

    .venv/bin/python tests/test_debugger.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from d1.cli import cli
from d1.program import load_program as _load
from d1isa.asm import assemble
from d1isa.errors import D1Error
from d1isa.machine import load_machine
from emulator.debugger import Debugger, ExprError, parse_expr
from emulator.debugger.expr import Binary, Name, Num
from emulator.emulator import Emulator


def load_program(path, machine=None):
    """The object `d1 debug` would debug (the one loader, d1.program)."""
    return _load(path, machine).obj


ROOT = Path(__file__).resolve().parent.parent
ASM = "programs/asm"
DOC = ROOT / "docs" / "DEBUGGER.md"


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    # Paths in the transcripts are relative to the repository root.
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def m4():
    return load_machine(mesh="4x4")


def batch(file: str, *commands: str, mesh: str | None = "4x4", stdin: str | None = None,
          extra: tuple[str, ...] = ()) -> str:
    """Run `d1 debug FILE --batch -ex ...` in-process; return what it printed."""
    args = ["debug", file, "--batch", *extra]
    if mesh:
        args += ["--mesh", mesh]
    for c in commands:
        args += ["-ex", c]
    res = CliRunner().invoke(cli, args, input=stdin)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code == 0, res.output
    return res.output


def replies(output: str) -> dict[str, list[str]]:
    """Map each echoed command to the lines printed after it (the last occurrence wins)."""
    out: dict[str, list[str]] = {}
    cur = None
    for line in output.splitlines():
        if line.startswith("(d1) "):
            cur = line[5:]
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


def canon(sd: dict) -> dict:
    """A state_dict with numpy arrays as bytes, for exact comparison."""
    def conv(v):
        if isinstance(v, np.ndarray):
            return (v.dtype.str, v.shape, v.tobytes())
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(sd)


def same_state(a: dict, b: dict) -> bool:
    return canon(a) == canon(b)


CALLS = """\
# a loop that calls a function that calls another
.data all
total:  .i64 0

.text node 0,0
        movi    r1, 0
        movi    r2, 3
loop:
        call    work            # r1 += 6
        addi    r2, r2, -1
        bnez    r2, loop
        st64    r1, [total]
        halt
work:
        mv      r9, ra          # keep the return address: the call below overwrites ra
        addi    r1, r1, 5
        call    inc
        jalr    r0, r9, 0
inc:
        addi    r1, r1, 1
        ret
"""


@pytest.fixture()
def calls_file(tmp_path):
    p = tmp_path / "calls.d1s"
    p.write_text(CALLS)
    return str(p)


# ---- the REPL -----------------------------------------------------------------------------------

def test_help_lists_every_command_and_explains_one():
    out = replies(batch(f"{ASM}/deadlock.d1s", "help", "help break", "help rsi"))
    text = "\n".join(out["help"])
    for name in ("run", "continue", "step", "stepi", "next", "finish", "until", "reverse-step",
                 "reverse-stepi", "reverse-continue", "node X,Y", "where", "regs", "vregs", "acc",
                 "mem ADDR", "tensor NAME", "links", "list", "disasm", "stats", "break LOC",
                 "tbreak", "watch mem", "delete", "enable", "disable", "info", "print", "quit"):
        assert name in text, name
    assert out["help break"][0].startswith("break LOC [node X,Y|all] [if COND]    (break, b, br)")
    assert "mem32[ADDR]" in "\n".join(out["help break"])
    assert out["help rsi"][0].startswith("reverse-stepi [N] [all]")


def test_bad_commands_give_one_line_errors_and_the_session_goes_on():
    bad = ["bogus", "break", "break nosuchlabel", "stepi x", "stepi 0", "mem", "mem 99999999",
           "node 9,9", "node 1,2,3", "watch r99", "watch link 3,0 E", "watch mem", "tensor nope",
           "delete 42", "info nope", "p 1/0", "p __import__('os')", "break 5 if r1 ==",
           "x 0 4 as q", "until 999", "rc", "list 1 2", "enable x", "list 999", "list 0", "node 1,",
           "disasm -3", "disasm 0", "watch mem 0 0", "info b 3", "info position x",
           "watch link 0,0 E > -1", "watch link 0,0 E > 4", "help break extra", "quit foo"]
    bad.append("re")                             # ambiguous: reverse-*, regs
    out = replies(batch(f"{ASM}/token_ring.d1s", *bad, "p 1 + 2 * 3", "wat r3", "inf b"))
    for cmd in bad:
        lines = out[cmd]
        assert len(lines) == 1 and lines[0].startswith("error: "), (cmd, lines)
    assert out["bogus"] == ["error: unknown command 'bogus'; type 'help' for the list"]
    assert out["node 9,9"] == ["error: node (9,9) is outside the 4x4 mesh"]
    assert out["watch link 3,0 E"] == ["error: node (3,0) has no link toward E (mesh edge)"]
    assert out["p 1/0"] == ["error: division by zero in expression"]
    n = len((ROOT / ASM / "token_ring.d1s").read_text().splitlines())
    assert out["watch link 0,0 E > 4"] == ["error: a FIFO holds 0..4 messages: watch '> N' for "
                                           "N in 0..3, got 4"]
    assert out["watch mem 0 0"] == ["error: a watched SRAM range is at least 1 byte long, got 0"]
    assert out["list 999"] == [f"error: line 999 is outside {ASM}/token_ring.d1s (lines 1..{n})"]
    assert out["rc"] == ["error: no enabled breakpoints: nothing to go back to"]
    assert out["p 1 + 2 * 3"] == ["7 (0x7)"]
    assert out["re"] == ["error: ambiguous command 're': regs, reverse-continue, reverse-step, "
                         "reverse-stepi"]
    # a unique prefix of a command's name works, as in gdb
    assert out["wat r3"] == ["Watchpoint 1: r3 on (0,0) (0 instructions can change it)"]
    assert out["inf b"][1].startswith("1    watchpoint  y")


def test_internal_errors_are_one_line_too(monkeypatch):
    from emulator.debugger import Debugger as D

    def boom(self, *a, **k):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(D, "mesh", boom)
    out = replies(batch(f"{ASM}/deadlock.d1s", "where", "p 2"))
    assert out["where"] == ["internal error: RuntimeError: kaboom"]
    assert out["p 2"] == ["2 (0x2)"]


def test_batch_reads_commands_from_stdin_and_quit_ends_it():
    out = batch(f"{ASM}/deadlock.d1s", "node 1,0", stdin="p x\n\nquit\np 99\n")
    r = replies(out)
    assert r["p x"] == ["1 (0x1)"]
    assert "p 99" not in r


def test_exit_codes_of_the_process(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "d1", "debug", f"{ASM}/deadlock.d1s", "--mesh",
                         "4x4", "--batch", "-ex", "run", "-ex", "bogus"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "Deadlock at T=2" in ok.stdout
    assert "error: unknown command 'bogus'" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "d1", "debug", str(tmp_path / "none.d1s"),
                          "--batch"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "no such file" in bad.stderr


def test_without_batch_a_plain_prompt_reads_stdin():
    res = CliRunner().invoke(cli, ["debug", f"{ASM}/deadlock.d1s", "--mesh", "4x4", "-ex",
                                   "node 1,0"], input="p x + 10\nquit\n")
    assert res.exit_code == 0, res.output
    assert "(d1) 11 (0xb)" in res.output
    assert "focus (1,0) [id 1], running" in res.output


def test_assembly_on_the_default_machine():
    out = replies(batch(f"{ASM}/token_ring.d1s", "break bump all if x == 2 && y == 2", "run",
                        "p r1", "where", "c", "rc", "rsi", "stepi", "tensor count", mesh=None))
    assert out["run"][0].startswith("Breakpoint 1, node (2,2) [id ")
    assert out["p r1"] == ["38 (0x26)"]         # two rows of 18, then (0,2)..(2,2) minus one
    grid = out["where"]
    assert grid[0].split() == [str(i) for i in range(18)]
    assert sum(line.count(" X ") + line.count("[ X ]") for line in grid[1:21]) == 6
    assert out["c"][0].startswith("Program finished at T=")
    assert out["rc"][0] == out["run"][0]
    assert out["stepi"][0].startswith("(2,2) pc 6 `addi r1, r1, 1`")
    assert out["tensor count"][1] == "[0]"      # back before the end: nothing stored yet


def test_a_d1o_object_debugs_like_its_source(tmp_path):
    obj = tmp_path / "ring.d1o"
    res = CliRunner().invoke(cli, ["asm", f"{ASM}/token_ring.d1s", "--mesh", "4x4", "-o",
                                   str(obj)])
    assert res.exit_code == 0, res.output
    out = replies(batch(str(obj), "break 52", "run", "c", mesh=None))
    assert out["run"][0] == "Breakpoint 1, node (0,0) [id 0], T=4"
    assert out["c"][0] == "Breakpoint 1, node (1,0) [id 1], T=13"
    assert out["c"][2].startswith("    52 |         addi    r1, r1, 1")


def test_ctrl_c_interrupts_a_run_and_the_session_goes_on(monkeypatch):
    from emulator.emulator import Emulator
    real = Emulator.run_until
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(Emulator, "run_until", interrupted)
    out = replies(batch(f"{ASM}/token_ring.d1s", "continue", "c"))
    assert out["continue"][0] == "Interrupted at T=0"
    assert out["c"] == ["Program finished at T=145: all 16 nodes halted, 100 cycles "
                        "(50 ns modelled)"]


# ---- stops: deadlock and trap -------------------------------------------------------------------

def test_deadlock_stop_shows_the_cycle_with_source_and_marks_the_mesh():
    out = replies(batch(f"{ASM}/deadlock.d1s", "run", "where"))
    run = out["run"]
    assert run[0] == "Deadlock at T=2: no node can make progress"
    assert run[1] == "deadlock: a cycle of 2 waiting nodes:"
    assert "(0,0) pc 1 `recv r2, E` (programs/asm/deadlock.d1s:17:9) waits to receive from E " \
        "(1,0)" in run[2]
    assert "(1,0) pc 1 `recv r2, W` (programs/asm/deadlock.d1s:23:9)" in run[3]
    assert run[4].strip() == "... and (0,0) again (a cycle)"
    # the mesh follows, with both nodes marked as in the cycle, (0,0) focused
    row0 = next(line for line in run if line.startswith("   0  "))
    assert row0.split() == ["0", "[rE*]", "rW*", "-", "-"]
    assert any(line.startswith("T=2: 2 blocked, 14 halted") for line in run)
    assert any("in a wait-for cycle" in line for line in out["where"])


def test_trap_stop_shows_the_cause_and_continue_finishes():
    out = replies(batch(f"{ASM}/trap.d1s", "continue", "where", "c"))
    text = "\n".join(out["continue"])
    assert out["continue"][0] == "Trap at T=7:"
    assert "node (0,0) [id 0] trapped at pc 1: misaligned SRAM access" in text
    assert "at programs/asm/trap.d1s:13:9" in text
    assert "node (0,1) [id 4] trapped at pc 4: user trap (code 42)" in text
    assert "illegal instruction" in text and "SRAM access out of range" in text
    row0 = next(line for line in out["where"] if line.startswith("   0  "))
    assert row0.split() == ["0", "[", "T", "]", "T", "-", "-"]
    assert out["c"] == ["Program finished at T=7: 4 nodes trapped, 12 halted"]


# ---- breakpoints --------------------------------------------------------------------------------

def test_breakpoints_on_a_pc_a_label_and_a_source_line():
    out = replies(batch(f"{ASM}/token_ring.d1s",
                        "break *6 node 1,0", "run",
                        "delete", "break done all", "c", "p x", "p y",
                        "delete 2", "break token_ring.d1s:53", "r", "continue", "info b"))
    assert out["break *6 node 1,0"] == ["Breakpoint 1 at *6 on (1,0) (1 instruction)"]
    assert out["run"][0] == "Breakpoint 1, node (1,0) [id 1], T=13"
    assert out["run"][1].startswith("(1,0) pc 6 `addi r1, r1, 1`")
    assert out["run"][2] == "    52 |         addi    r1, r1, 1               # count this node"
    # every node has its own block (the code uses @x, @y); `done` is in each of them, and
    # only the last node of the path, (0,3) on a 4x4 mesh, reaches it
    assert out["break done all"] == ["Breakpoint 2 at done on all nodes (16 instructions)"]
    assert out["c"][0].startswith("Breakpoint 2, node (0,3) [id 12], T=")
    assert out["p x"] == ["0 (0x0)"] and out["p y"] == ["3 (0x3)"]
    assert out["delete 2"] == ["deleted 2"]
    assert out["break token_ring.d1s:53"] == [
        "Breakpoint 3 at token_ring.d1s:53 on all nodes (16 instructions)"]
    assert out["r"][0] == "Breakpoint 3, node (0,0) [id 0], T=5"
    assert out["continue"][0] == "Breakpoint 3, node (1,0) [id 1], T=14"
    info = out["info b"]
    assert info[0].split() == ["Num", "Type", "Enb", "Hits", "What"]
    assert info[1].split() == ["3", "breakpoint", "y", "2", "token_ring.d1s:53", "on", "all",
                               "nodes"]


def test_line_and_column_breakpoints_with_and_without_the_file(m4):
    """`LINE:COL` is a line and a column, and `FILE:LINE:COL` names the file (both were read
    as a file name ending in `:LINE`)."""
    dbg = Debugger(load_program("programs/train_digits.d1k", m4))
    whole = dbg.break_at("10").slots                  # z = h @ w2 + b2: columns 7 and 12
    at7, at12 = dbg.break_at("10:7").slots, dbg.break_at("10:12").slots
    assert at7 == whole and at12 and not at12 & at7   # the matmul starts the line on a node
    assert dbg.break_at("train_digits.d1k:10:12").slots == at12
    assert dbg.break_at("programs/train_digits.d1k:10:12").slots == at12
    assert dbg.break_at("train_digits.d1k:10").slots == whole
    with pytest.raises(D1Error, match="no code for line 10:8"):
        dbg.break_at("10:8")
    with pytest.raises(D1Error, match="no file 'other.d1k'"):
        dbg.break_at("other.d1k:10:7")
    # from Python an int is a line, as a bare number is at the prompt
    assert dbg.break_at(10).slots == whole
    assert dbg.until(10).reason == "breakpoint"


def test_a_source_line_breakpoint_defaults_to_every_node(m4):
    dbg = Debugger(load_program(f"{ASM}/token_ring.d1s", m4))
    bp = dbg.break_at("52")                      # `addi r1, r1, 1`, the count on every node
    assert bp.nodes is None and len(bp.slots) == 16
    seen = []
    while (stop := dbg.cont()).reason == "breakpoint":
        seen.append((stop.where.x, stop.where.y, dbg.regs()["r1"]))
    assert stop.reason == "halted"
    # the token visits the serpentine path in order, carrying the count so far
    path = [(x, 0) for x in range(4)] + [(x, 1) for x in (3, 2, 1, 0)] + \
        [(x, 2) for x in range(4)] + [(x, 3) for x in (3, 2, 1, 0)]
    assert [(x, y) for x, y, _ in seen] == path
    assert [r for _, _, r in seen] == list(range(16))
    assert int(dbg.tensor("count")[0]) == 16


def test_conditional_breakpoints_use_the_expression_language():
    out = replies(batch(f"{ASM}/token_ring.d1s",
                        "break bump all if x == 2 && y == 1", "run", "p r1", "p clock > 0",
                        "tbreak 52 if r1 >= 14 and not (x == 3)", "c", "info b", "c"))
    assert out["run"][0].startswith("Breakpoint 1, node (2,1) [id 6]")
    assert out["p r1"] == ["5 (0x5)"]          # (0,0)..(3,0), (3,1) passed it on: 5
    assert out["p clock > 0"] == ["1 (0x1)"]
    assert out["c"] == ["Program finished at T=145: all 16 nodes halted, 100 cycles "
                        "(50 ns modelled)"]
    assert out["info b"][1].split()[:4] == ["1", "breakpoint", "y", "1"]
    assert len(out["info b"]) == 2              # the temporary breakpoint is gone after its hit
    r = replies(batch(f"{ASM}/token_ring.d1s", "tbreak 52 if r1 >= 14 and not (x == 3)",
                      "run", "p r1", "p x"))
    assert r["run"][0].startswith("Breakpoint 1, node (1,3)")
    assert r["p r1"] == ["14 (0xe)"]


def test_disable_enable_delete(m4):
    dbg = Debugger(load_program(f"{ASM}/token_ring.d1s", m4))
    a = dbg.break_at("52")
    dbg.enable(a.number, False)
    assert dbg.cont().reason == "halted"
    dbg.enable(a.number, True)
    assert dbg.run().reason == "breakpoint"
    assert dbg.delete() == 1
    assert dbg.cont().reason == "halted"


def test_breakpoints_at_the_same_place_all_hit_and_a_tbreak_there_goes(m4):
    """A tbreak on the instruction of another breakpoint: both count the hit, the stop names
    both, and the tbreak is deleted (it used to be shadowed by the first: never hit, never
    deleted); reverse-continue counts every breakpoint there too."""
    dbg = Debugger(load_program(f"{ASM}/token_ring.d1s", m4))
    a = dbg.break_at("52")
    t = dbg.break_at("bump", node="1,0", temporary=True)
    stop = dbg.run()
    assert (stop.node, stop.breakpoint.number) == (0, a.number)
    stop = dbg.cont()
    assert stop.node == 1 and [stop.breakpoint.number] + [
        h.number for h in stop.more_breakpoints] == [a.number, t.number]
    assert f"Breakpoint {t.number}, node (1,0)" in stop.describe()
    assert [b.number for b in dbg.points.breakpoints()] == [a.number] and a.hits == 2
    b = dbg.break_at("bump", node="all")
    stop = dbg.reverse_continue()
    assert stop.node == 0 and stop.more_breakpoints[0].number == b.number and b.hits == 1


# ---- watchpoints --------------------------------------------------------------------------------

def test_watch_memory_reports_old_and_new_bytes():
    out = replies(batch(f"{ASM}/row_broadcast.d1s", "watch mem buf+64 8 node 2,1", "run",
                        "mem buf+64 2 as f32 node 2,1"))
    assert out["watch mem buf+64 8 node 2,1"] == [
        "Watchpoint 1: mem 0x40..0x47 (8 B) on (2,1) (1 instruction can change it)"]
    run = out["run"]
    assert re.match(r"Watchpoint 1, node \(2,1\) \[id 6\], T=\d+: mem 0x40\.\.0x47 \(8 B\) on "
                    r"\(2,1\): 00 00 00 00 00 00 00 00 -> 00 00 e8 42 00 00 ea 42", run[0])
    assert run[1] == "  written by (2,1) pc 4 `relayb W, E, r4, r7` " \
        "(programs/asm/row_broadcast.d1s:74:9)"
    assert out["mem buf+64 2 as f32 node 2,1"][1] == "0x000040:  116  117"


def test_watch_register_and_links(m4):
    dbg = Debugger(load_program(f"{ASM}/row_broadcast.d1s", m4))
    w = dbg.watch_reg("r2", (3, 3))
    stop = dbg.cont()
    assert stop.reason == "watchpoint" and stop.watch.number == w.number
    assert (stop.watch.old, stop.watch.new) == (0, 1)      # movi r2, 0 changed nothing
    assert stop.watch.where.text == "addi r2, r2, 1"
    dbg.delete()
    dbg.restart()
    w = dbg.watch_link((0, 2), "E")
    hits = []
    while (stop := dbg.cont()).reason == "watchpoint":
        hits.append((stop.watch.old, stop.watch.new.split(",")[0]))
        assert stop.watch.where.text == "vsend E, v1"
    assert hits == [("0 messages", "1 message"), ("1 message", "2 messages"),
                    ("2 messages", "3 messages"), ("3 messages", "4 messages")]
    dbg.delete()
    dbg.restart()
    dbg.watch_link((0, 3), "E", above=1)
    stop = dbg.cont()
    assert stop.reason == "watchpoint"
    assert stop.watch.new == "2 waiting (> 1)"
    assert dbg.links((1, 3))[3].in_fill == 2


def test_watch_fill_old_is_the_fill_the_send_found(m4):
    # (0,0) fills the FIFO toward (1,0) and blocks; (1,0) takes one message, then the send
    # goes: the FIFO held 3 when the send ran, not the 4 it held when the send first waited.
    src = """
.text node 0,0
        movi    r1, 7
        send    E, r1
        send    E, r1
        send    E, r1
        send    E, r1
        send    E, r1
        halt
.text node 1,0
        recv    r2, W
        halt
"""
    dbg = Debugger(assemble(src, "fill.d1s", m4))
    dbg.watch_link((0, 0), "E", above=3)
    stop = dbg.cont()
    assert (stop.watch.old, stop.watch.new) == ("3 waiting", "4 waiting (> 3)")
    stop = dbg.cont()
    assert stop.reason == "watchpoint"
    assert (stop.watch.old, stop.watch.new) == ("3 waiting", "4 waiting (> 3)")


def test_one_instruction_triggering_two_watchpoints_reports_both(m4):
    # relayb stores the message at (1,0) and sends it on east: a memory and a link watchpoint
    src = """
.data all
buf:    .zero 16
src:    .i64 0x1111111111111111, 0x2222222222222222
.text node 0,0
        li      r1, src
        movi    r2, 16
        sendb   E, r1, r2
        halt
.text node 1,0
        li      r1, buf
        movi    r2, 16
        relayb  W, E, r1, r2
        halt
.text node 2,0
        li      r1, buf
        movi    r2, 16
        recvb   W, r1, r2
        halt
"""
    dbg = Debugger(assemble(src, "relay.d1s", m4))
    wm = dbg.watch_mem("buf", 8, (1, 0))
    wl = dbg.watch_link((1, 0), "E")
    stop = dbg.cont()
    assert stop.reason == "watchpoint" and stop.where.text == "halt"
    assert [h.number for h in [stop.watch, *stop.more_watches]] == [wm.number, wl.number]
    assert wm.hits == wl.hits == 1
    text = stop.describe().splitlines()
    assert text[0].startswith(f"Watchpoint {wm.number}, node (1,0) [id 1], T=")
    assert text[1].startswith(f"Watchpoint {wl.number}, node (1,0) [id 1], T=")
    assert text[2].startswith("  written by (1,0) pc 2 `relayb W, E, r1, r2`")
    assert dbg.cont().reason == "halted"


def test_watch_link_through_the_repl():
    out = replies(batch(f"{ASM}/row_broadcast.d1s", "watch link 0,2 E", "c",
                        "watch link 0,3 E > 1", "delete 1", "continue", "links"))
    assert out["watch link 0,2 E"] == ["Watchpoint 1: link (0,2) -> (1,2) (E) (1 instruction "
                                       "can change it)"]
    assert "link (0,2) -> (1,2) (E): 0 messages -> 1 message, last 64 B: 00 00 48 43" \
        in out["c"][0]
    assert "link (0,3) -> (1,3) (E) FIFO > 1: 1 waiting -> 2 waiting (> 1)" \
        in out["continue"][0]
    links = out["links"]
    assert links[0] == "links of (0,3) (FIFO depth 4 messages):"
    east = next(line for line in links if line.startswith(" E "))
    assert east.split()[:6] == ["E", "(1,3)", "2/4", "(", "128", "B)"]


# ---- stepping -----------------------------------------------------------------------------------

def test_step_next_finish_until_through_calls(calls_file):
    out = batch(calls_file, "break loop", "run", "step", "step", "step", "step", "finish",
                "finish", "next", "next", "next", "next", "until", "until", "p r1",
                "until 12", "c", "mem total 1 as i64", mesh="2x2")
    locs = [m.group(1) for m in re.finditer(r"^\(0,0\) pc (\d+) ", out, re.M)]
    # run: the breakpoint at the call (pc 2); step x4: into work (7), its lines (8, 9), into
    # inc (11); finish: back in work (10); finish: back in the loop (3); next x4: 4, the
    # breakpoint at the loop head (2), over the call (3), 4; until: the breakpoint again (2),
    # over the call to a later line (3); until 12: the store (5)
    assert locs == ["2", "7", "8", "9", "11", "10", "3", "4", "2", "3", "4", "2", "3", "5"]
    r = replies(out)
    assert r["finish"][0] == "Run till exit: node (0,0) returned"
    assert r["p r1"] == ["18 (0x12)"]
    assert r["mem total 1 as i64"][1] == "0x000000:  18"


def test_stepi_and_step_all_move_every_node(m4):
    dbg = Debugger(load_program(f"{ASM}/vadd.d1s", m4))
    stop = dbg.stepi(3, all_nodes=True)
    assert list(dbg.counts()) == [3] * 16
    assert stop.detail == "16 nodes ran 3 instructions, 0 fewer, 0 none"
    stop = dbg.step(all_nodes=True)
    assert stop.reason == "step"
    assert list(dbg.counts()) == [4] * 16
    assert [dbg.where(n).pc for n in range(16)] == [4] * 16


def test_stepi_waits_for_the_nodes_it_depends_on(m4):
    dbg = Debugger(load_program(f"{ASM}/token_ring.d1s", m4))
    dbg.set_focus((0, 1))
    stop = dbg.step(4)                  # past its recv: the token must go round row 0 first
    assert stop.reason == "step"
    assert dbg.regs()["r1"] == 7            # (0,1) is the 8th node of the token's path
    assert dbg.counts()[0] > 0


# ---- reverse execution --------------------------------------------------------------------------

def test_reverse_stepi_is_the_inverse_of_stepi_and_equals_a_forward_run(m4):
    dbg = Debugger(load_program(f"{ASM}/vadd.d1s", m4))
    dbg.set_focus((2, 1))
    seen = [dbg.emu.state_dict()]
    for _ in range(12):
        dbg.stepi()
        seen.append(dbg.emu.state_dict())
    other = Debugger(load_program(f"{ASM}/vadd.d1s", m4))
    for i in range(11, -1, -1):
        stop = dbg.reverse_stepi()
        assert stop.reason == "step" and stop.position == i
        assert same_state(dbg.emu.state_dict(), seen[i])
        other.goto(dbg.counts())
        assert same_state(other.emu.state_dict(), dbg.emu.state_dict())
    assert dbg.reverse_stepi().reason == "start"


def test_reverse_step_returns_to_each_line_start(calls_file):
    m = load_machine(mesh="2x2")
    dbg = Debugger(load_program(calls_file, m))
    seen = [dbg.emu.state_dict()]
    for _ in range(9):
        assert dbg.step().reason == "step"
        seen.append(dbg.emu.state_dict())
    for i in range(8, -1, -1):
        assert dbg.reverse_step().reason == "step"
        assert same_state(dbg.emu.state_dict(), seen[i]), i
    assert dbg.reverse_step().reason == "start"


def test_reverse_continue_returns_to_each_earlier_hit(m4):
    import compiler
    src = "programs/mlp.d1k"
    obj = compiler.compile_file(src, machine=m4)
    inputs = compiler.make_inputs(compiler.check_source(Path(src).read_text(), m4), 1)
    dbg = Debugger(obj, inputs=inputs, checkpoint_interval=100)
    dbg.break_at("*40", node="all")
    seen = []
    for _ in range(6):
        stop = dbg.cont()
        assert stop.reason == "breakpoint"
        seen.append((stop.position, stop.node, dbg.emu.state_dict()))
    assert len(dbg.checkpoint_info()["positions"]) >= 2
    for i in range(4, -1, -1):
        stop = dbg.reverse_continue()
        assert (stop.position, stop.node) == seen[i][:2]
        assert same_state(dbg.emu.state_dict(), seen[i][2])
    stop = dbg.reverse_continue()
    assert stop.reason == "start" and stop.position == 0
    # forward again: the same hits, in the same order
    for i in range(6):
        stop = dbg.cont()
        assert (stop.position, stop.node) == seen[i][:2]
        assert same_state(dbg.emu.state_dict(), seen[i][2])


def test_reverse_commands_in_the_repl():
    out = replies(batch(f"{ASM}/token_ring.d1s", "break bump all", "run", "c", "c",
                        "reverse-continue", "rsi", "si", "s", "rs", "rc", "rsi 2 all",
                        "info position"))
    assert out["reverse-continue"][0] == "Breakpoint 1, node (1,0) [id 1], T=13"
    assert out["rsi"][0].startswith("(1,0) pc 4 `jal r0, +2` (programs/asm/token_ring.d1s:48:9)"
                                    ", T=12")
    assert out["si"][0].endswith(", T=13")
    assert out["s"][0].startswith("(1,0) pc 7 `bne r11, r0, +3`")
    assert out["rs"][0].startswith("(1,0) pc 6 `addi r1, r1, 1`")
    assert out["rc"][0] == "Breakpoint 1, node (0,0) [id 0], T=4"
    assert out["info position"] == ["T=2 instructions executed; focused node (0,0) has "
                                    "executed 2; per node min 0, max 2"]


def test_reverse_at_the_beginning_says_so():
    out = replies(batch(f"{ASM}/token_ring.d1s", "rsi", "rsi all"))
    assert out["rsi"][0] == "Already at the node's first instruction"
    assert out["rsi all"][0] == "Already at the beginning (T=0)"


def test_checkpoint_interval_and_budget_are_checked(m4):
    obj = load_program(f"{ASM}/token_ring.d1s", m4)
    for kw in ({"checkpoint_interval": 0}, {"checkpoint_interval": -5},
               {"checkpoint_bytes": -1}):
        with pytest.raises(D1Error, match="must be >= "):
            Debugger(obj, **kw)


def test_checkpoints_stay_within_their_memory_budget(m4):
    from benchmarks.debugger_bench import bench_object
    obj = bench_object(m4, total=2_000_000)
    budget = 600_000
    dbg = Debugger(obj, checkpoint_bytes=budget, checkpoint_interval=20_000)
    dbg.set_focus((2, 1))
    stop = dbg.cont()
    assert stop.reason == "halted"
    info = dbg.checkpoint_info()
    assert info["thinned"] >= 1 and info["bytes"] <= budget
    assert info["interval_instructions"] > 20_000
    end = dbg.counts().copy()
    dbg.reverse_stepi(5)
    back = dbg.counts().copy()
    assert back[dbg.focus] == end[dbg.focus] - 5
    plain = Debugger(obj)
    plain.goto(back)
    assert same_state(plain.emu.state_dict(), dbg.emu.state_dict())


# ---- debugging never changes behaviour ----------------------------------------------------------

def _plain_run(obj, inputs):
    emu = Emulator(obj)
    for k, v in inputs.items():
        emu.set_input(k, v)
    res = emu.run()
    return emu, res


def _stats_without_host(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("host", "debugger")}


@pytest.mark.parametrize("program", ["programs/mlp.d1k", "programs/softmax.d1k",
                                     f"{ASM}/row_broadcast.d1s", f"{ASM}/token_ring.d1s"])
def test_breakpoints_and_watchpoints_never_change_the_run(program, m4):
    import compiler
    obj = load_program(program, m4)
    inputs = {}
    if program.endswith(".d1k"):
        inputs = compiler.make_inputs(compiler.check_source(Path(program).read_text(), m4), 3)
    emu, res = _plain_run(obj, inputs)
    dbg = Debugger(obj, inputs=inputs, checkpoint_interval=2000)
    lines = sorted({int(v) for b in obj.blocks for v in b.lines[:, 1] if v > 0})
    for ln in lines[::2]:
        dbg.break_at(str(ln))
    dbg.break_at("*3", node="all", condition="x + y == 3")
    dbg.watch_mem(64, 64, (1, 1))
    dbg.watch_reg("r1", (2, 1))
    dbg.watch_link((1, 1), "E")
    dbg.watch_link((1, 2), "S", above=0)
    hits = 0
    while (stop := dbg.cont()).reason in ("breakpoint", "watchpoint"):
        hits += 1
    assert stop.reason == res.status == "halted"
    assert hits > 5
    assert same_state(emu.state_dict(), dbg.emu.state_dict())
    assert _stats_without_host(emu.stats()) == _stats_without_host(dbg.stats())
    assert dbg.stats()["modelled"]["kernel_cycles"] == res.cycles
    # checkpoints store SRAM below each node's high-water mark only: nothing is above it
    st = emu.state
    assert not any(st.sram[i, int(st.hwm[i]):].any() for i in range(emu.n))
    for name in emu.tensors("output"):
        assert np.array_equal(emu.output(name), dbg.tensor(name))


def test_stepping_and_reversing_never_change_the_run(m4):
    obj = assemble(Path(f"{ASM}/row_broadcast.d1s").read_text(), "row_broadcast.d1s", m4)
    emu, res = _plain_run(obj, {})
    dbg = Debugger(obj)
    dbg.set_focus((2, 2))
    dbg.step(3)
    dbg.stepi(5, all_nodes=True)
    dbg.reverse_step()
    dbg.next(all_nodes=True)
    dbg.reverse_stepi(4, all_nodes=True)
    assert dbg.cont().reason == "halted"
    assert same_state(emu.state_dict(), dbg.emu.state_dict())
    assert _stats_without_host(emu.stats()) == _stats_without_host(dbg.stats())


# ---- state views --------------------------------------------------------------------------------

def test_registers_vectors_accumulators_memory_and_tensors():
    out = replies(batch(f"{ASM}/matmul8.d1s", "break 50", "run", "regs", "acc", "acc 0",
                        "mem A 8 as bf16", "mem B 4 as bf16", "mem C 8 as f32",
                        "x C 16", "mem (C + 32) 2 as i32", "si", "x C 8 as f32", "tensor C",
                        "tensor A", "vregs", "vregs 1"))
    regs = out["regs"]
    assert regs[0] == "node (0,0) [id 0] pc 5 clock 6"
    assert regs[1].split()[:3] == ["r0", "zero", "0"]
    assert regs[2].split()[:3] == ["r1", "0", "0x0000000000000000"]
    assert regs[3].split()[:3] == ["r2", "128", "0x0000000000000080"]
    assert out["acc"][0] == "a0:" and len(out["acc"]) == 10
    assert out["acc"][-1] == "(7 all-zero accumulators not shown)"
    numbers = [float(v) for v in re.findall(r"\d+\.?\d*", " ".join(out["acc 0"][1:]))]
    assert numbers == [float(i) for i in range(64)]
    assert out["mem A 8 as bf16"][1] == "0x000000:  1  0  0  0  0  0  0  0"
    assert out["mem B 4 as bf16"][1] == "0x000080:  0  1  2  3"
    assert out["mem C 8 as f32"][1] == "0x000100:  0  0  0  0  0  0  0  0"
    assert out["x C 16"][1] == "0x000100:  " + " ".join(["00"] * 16)
    assert out["mem (C + 32) 2 as i32"][1] == "0x000120:  0  0"
    assert out["si"][0].startswith("(0,0) pc 6 `halt`")
    assert out["x C 8 as f32"][1] == "0x000100:  0  1  2  3  4  5  6  7"
    c = out["tensor C"]
    assert c[0] == "C: output f32[8, 8] in 1 piece"
    numbers = [float(v) for v in re.findall(r"\d+\.?\d*", " ".join(c[1:]))]
    assert numbers == [float(i) for i in range(64)]
    assert out["tensor A"][0] == "A: input bf16[8, 8] in 1 piece"
    assert out["vregs"] == ["(32 all-zero vector registers not shown)"]
    assert out["vregs 1"][0].startswith("v1   f32 0 0 0")
    r = replies(batch(f"{ASM}/matmul8.d1s", "run", "mem C 8 as f32", "mem C+32 8 as f32"))
    assert r["mem C 8 as f32"][1] == "0x000100:  0  1  2  3  4  5  6  7"
    assert r["mem C+32 8 as f32"][1] == "0x000120:  8  9  10  11  12  13  14  15"


def test_regs_shows_what_the_object_starts_a_node_with(tmp_path):
    src = tmp_path / "init.d1s"
    src.write_text(".text all\n add r1, r20, r21\n halt\n.data all\n.init r20, @x * 64\n"
                   ".init r21, 7\n")
    out = replies(batch(str(src), "node 2,1", "regs", "node 0,0", "regs"))
    assert out["regs"][-1] == "set at start by the object: r21 = 7"
    assert "r20                       128" in "\n".join(batch(str(src), "node 2,1",
                                                              "regs").splitlines())
    assert replies(batch(str(src), "node 2,1", "regs"))["regs"][-1] == \
        "set at start by the object: r20 = 128, r21 = 7"


def test_vector_registers_as_f32_and_hex():
    out = replies(batch(f"{ASM}/row_broadcast.d1s", "break 44 node 0,1", "run", "vregs 1"))
    v1 = out["vregs 1"]
    assert v1[0].split()[:6] == ["v1", "f32", "100", "101", "102", "103"]
    assert v1[1].split()[:4] == ["hex", "42c80000", "42ca0000", "42cc0000"]


def test_list_shows_source_and_assembly_side_by_side():
    out = replies(batch(f"{ASM}/deadlock.d1s", "node 1,0", "si", "list", "disasm 3"))
    lst = out["list"]
    assert lst[0].startswith("programs/asm/deadlock.d1s") and lst[0].endswith("| node pc")
    src = [line.split("|")[0] for line in lst if line.startswith("=>")]
    asm = [line.split("|")[1] for line in lst if "| =>" in line]
    assert len(src) == 1 and src[0].startswith("=>   23          recv    r2, W")
    assert len(asm) == 1 and asm[0].startswith(" =>    1  recv r2, W")
    assert out["disasm 3"] == ["node (1,0):",
                               "       0  movi r1, 2                         "
                               "programs/asm/deadlock.d1s:22:9",
                               "=>     1  recv r2, W                         "
                               "programs/asm/deadlock.d1s:23:9",
                               "       2  send W, r1                         "
                               "programs/asm/deadlock.d1s:24:9"]


def test_stats_have_units():
    out = replies(batch(f"{ASM}/token_ring.d1s", "run", "stats"))
    s = out["stats"]
    assert s[0] == "machine d1-4x4: 16 live nodes at 2 GHz; position T=145"
    assert s[1].startswith("modelled: 100 cycles = 50 ns; 145 instructions; 0 FLOP = 0 FLOP/s")
    assert "links 120 B in 15 messages" in s[2]
    assert "node-instructions emulated in" in s[3]
    assert s[4].startswith("checkpoints: 1 using")


def test_mesh_marks_harvested_and_blocked_nodes():
    out = replies(batch(f"{ASM}/row_broadcast.d1s", "break 55 node 5,0", "run", "where",
                        mesh=None, extra=("--machine", "h6x5")))
    w = out["where"]
    assert w[0].split() == [str(i) for i in range(6)]
    assert sum(line.count(" X ") for line in w[1:6]) == 2
    # row 0 has sent its vectors: the source and the relays wait for the acknowledgement
    # from the east, and the sink (5,0), focused, runs
    assert w[1].split() == ["0", "rE", "rE", "rE", "rE", "rE", "[", ".", "]"]


def test_node_focus_and_where():
    out = replies(batch(f"{ASM}/deadlock.d1s", "node 1", "node 0,0", "run", "node"))
    assert out["node 1"][0] == "focus (1,0) [id 1], running: (1,0) pc 0 `movi r1, 2` " \
        "(programs/asm/deadlock.d1s:22:9)"
    assert out["node"][0].startswith("focus (0,0) [id 0], blocked on receive:")


# ---- compiled kernels: the whole command set ----------------------------------------------------

SESSION = ["break 14", "run", "where", "list", "stepi 3", "next", "reverse-step", "step",
           "reverse-stepi", "stepi 2 all", "step all", "reverse-stepi 2 all", "continue",
           "reverse-continue", "regs", "vregs 12", "acc", "mem 0 8 as f32", "tensor x", "links",
           "disasm 4", "stats", "watch r13", "c", "delete", "until", "finish", "cont",
           "tensor p", "info breakpoints", "info checkpoints"]


def _check_kernel_session(out: str) -> dict[str, list[str]]:
    """What must hold on any machine (which node stops first depends on the mapping)."""
    r = replies(out)
    assert "error:" not in out, out

    def text(cmd: str) -> str:
        return "\n".join(r[cmd])

    assert r["run"][0].startswith("Breakpoint 1, node (")
    assert "(programs/softmax.d1k:14:" in r["run"][1]
    assert r["where"][-1].startswith("focus: " + r["run"][1].split(" `")[0])
    assert any(line.startswith("=>") and "e = exp(xt - max(x, axis=1))" in line
               for line in r["list"])
    assert "softmax.d1k:1" in text("stepi 3")
    assert "softmax.d1k:15" in text("next")                  # line 14 ends, 15 begins
    # back to the start of line 14: the breakpoint's pc
    assert r["reverse-step"][0].split(" `")[0] == r["run"][1].split(" `")[0]
    assert "softmax.d1k:15" in text("step")
    assert "softmax.d1k:14" in text("reverse-stepi")
    assert "nodes ran 2 instructions" in text("stepi 2 all") or \
        r["stepi 2 all"][0].startswith("Breakpoint 1")
    assert "nodes reached another source line" in text("step all")
    assert r["continue"][0].startswith(("Program finished at T=", "Breakpoint 1, node ("))
    assert r["reverse-continue"][0].startswith("Breakpoint 1, node (")
    # 16 lines of registers, and one naming those the object starts the node with, if any
    # (nodes that share a code block get their own numbers that way)
    assert r["regs"][0].startswith("node (") and len(r["regs"]) in (17, 18)
    assert len(r["regs"]) == 17 or r["regs"][17].startswith("set at start by the object: r")
    assert r["vregs 12"][0].startswith("v12  f32 ") and r["vregs 12"][1].startswith("     hex ")
    assert r["acc"] == ["(8 all-zero accumulators not shown)"]
    assert r["mem 0 8 as f32"][1].startswith("0x000000:  ")
    assert r["tensor x"][0].startswith("x: input f32[32, 100] in ")
    assert r["links"][0].endswith("(FIFO depth 4 messages):") and len(r["links"]) == 6
    assert sum(line.startswith("=>") for line in r["disasm 4"]) == 1
    assert "FLOP/s" in r["stats"][1] and "cycles" in r["stats"][1]
    assert r["watch r13"][0].startswith("Watchpoint 2: r13 on (")
    assert r["c"][0].startswith(("Watchpoint 2, node (", "Breakpoint 1, node (",
                                 "Program finished"))
    assert r["delete"] == ["deleted 2 breakpoints/watchpoints"]
    assert "softmax.d1k:15" in text("until")
    assert "halted" in text("finish") or "Run till exit" in text("finish")
    assert r["cont"][0].startswith("Program finished at T=")
    assert r["tensor p"][0].startswith("p: output f32[32, 100] in ")
    assert r["info breakpoints"] == ["no breakpoints or watchpoints"]
    assert " checkpoints, " in r["info checkpoints"][0]
    return r


@pytest.mark.parametrize("machine", [("--mesh", "4x4"), ()])
def test_the_whole_command_set_on_a_compiled_kernel(machine, tmp_path):
    import compiler
    if not hasattr(compiler, "compile_file"):
        pytest.skip("compiler.compile_file is not available")
    m = load_machine(mesh="4x4") if machine else load_machine()
    x = compiler.make_inputs(compiler.check_source(Path("programs/softmax.d1k").read_text(),
                                                   m), 0)["x"]
    np.save(tmp_path / "x.npy", x)
    out = batch("programs/softmax.d1k", *SESSION, mesh=None,
                extra=(*machine, "--input", f"x={tmp_path / 'x.npy'}"))
    r = _check_kernel_session(out)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    first_p = float(re.findall(r"-?\d+\.\d*(?:e-?\d+)?", r["tensor p"][1])[0])
    assert abs(first_p - p[0, 0]) < 1e-4
    # `tensor x` shows x only while its buffer holds it, else says when it was reused
    tx = r["tensor x"]
    if tx[1].startswith("overwritten at T="):
        assert len(tx) == 2
    else:
        first_x = float(re.findall(r"-?\d+\.\d*(?:e-?\d+)?", tx[1])[0])
        assert abs(first_x - x[0, 0]) < 1e-6


# ---- the expression language --------------------------------------------------------------------

def test_expressions_parse_with_c_precedence_and_never_eval(m4):
    dbg = Debugger(load_program(f"{ASM}/token_ring.d1s", m4))
    ev = dbg.evaluate
    assert ev("1 + 2 * 3") == 7
    assert ev("(1 + 2) * 3") == 9
    assert ev("-7 / 2") == -3 and ev("-7 % 2") == -1          # C: toward zero
    assert ev("1 << 4 | 1") == 17
    assert ev("3 > 2 && 2 > 1 || 0") == 1
    assert ev("not 0 and !0") == 1
    assert ev("0x10 + 0b11 + 1_000") == 1019
    assert ev("~0") == -1
    assert ev("count") == 0 and ev("live") == 4               # data labels
    assert ev("pc == 0 && x == 0 && y == 0 && id == 0") == 1
    assert ev("mem32[live] == 0") == 1
    for bad in ("__import__('os')", "1 +", "(1", "r99", "nosuch", "mem32[1]", "1 << 9999",
                "a.b()", "1 2"):
        with pytest.raises(ExprError):
            ev(bad)
    assert parse_expr("r1 == 3") == Binary("==", Name("r1"), Num(3))


# ---- the transcript in docs/DEBUGGER.md ---------------------------------------------------------

TRANSCRIPT_RE = re.compile(r"<!-- transcript: (.*?) -->\n```\n(.*?)```", re.S)


def transcripts() -> list[tuple[str, str, str]]:
    """(command line, recorded output, fresh output) of every transcript in the doc."""
    out = []
    for m in TRANSCRIPT_RE.finditer(DOC.read_text()):
        cmdline = m.group(1)
        args = _split(cmdline)
        assert args[:3] == ["python", "-m", "d1"], cmdline
        res = CliRunner().invoke(cli, args[3:])
        assert res.exit_code == 0, res.output
        out.append((cmdline, m.group(2), "$ " + cmdline + "\n" + res.output))
    return out


def _split(cmdline: str) -> list[str]:
    import shlex
    return shlex.split(cmdline)


def test_the_transcripts_in_the_docs_are_current():
    found = transcripts()
    assert len(found) >= 2
    for cmdline, recorded, fresh in found:
        assert recorded == fresh, f"docs/DEBUGGER.md is stale for: {cmdline}\n" \
            "regenerate it with: .venv/bin/python tests/test_debugger.py"


def test_the_python_api_example_in_the_docs_runs():
    block = re.search(r"## Python API.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, "docs/DEBUGGER.md", "exec"), scope)
    assert scope["stop"].reason == "watchpoint" and scope["bp"].hits >= 1


def main() -> None:
    """Rewrite the transcripts of docs/DEBUGGER.md from fresh runs."""
    import os
    os.chdir(ROOT)
    text = DOC.read_text()
    for cmdline, recorded, fresh in transcripts():
        text = text.replace(f"<!-- transcript: {cmdline} -->\n```\n{recorded}```",
                            f"<!-- transcript: {cmdline} -->\n```\n{fresh}```")
    DOC.write_text(text)
    print(f"rewrote {DOC}")


if __name__ == "__main__":
    main()


def test_step_all_speaks_of_other_nodes_only_when_there_are_some(tmp_path, capsys):
    """'step all' said 'the others wait, halted or trapped' when every node had stepped."""
    from d1.cli import main

    src = tmp_path / "st.d1s"
    src.write_text(".text all\n    addi r1, r0, 1\n    addi r1, r1, 1\n    halt\n")
    with pytest.raises(SystemExit):
        main(["debug", str(src), "--mesh", "2x2", "--batch", "-ex", "step all"])
    out = capsys.readouterr().out
    assert "4 of 4 nodes reached another source line\n" in out and "others" not in out


@pytest.mark.parametrize("call, says", [
    (lambda d: d.stepi(1.5), "a count must be an integer, got 1.5"),
    (lambda d: d.step(True), "a count must be an integer, got True"),
    (lambda d: d.disasm(count=2.5), "a count must be an integer, got 2.5"),
    (lambda d: d.mem(0, 1.5), "a count must be an integer, got 1.5"),
    (lambda d: d.watch_mem(0, 1.5), "a watched SRAM range's length must be an integer"),
    (lambda d: d.watch_link((2, 1), None), r"direction must be N, E, S, W or 0..3, got None"),
    (lambda d: d.watch_link((2, 1), "W", 1.5), "a watched FIFO's fill must be an integer"),
    (lambda d: d.break_at("bump", condition=3), "condition is an expression in a str"),
    (lambda d: d.break_at("bump", node=1.5), "a node is an id or"),
    (lambda d: d.regs(True), "a node is an id or"),
    (lambda d: d.enable(None), "a breakpoint number must be an integer, got None"),
    (lambda d: d.delete("x"), "a breakpoint number must be an integer, got 'x'"),
    (lambda d: d.evaluate(None), "an expression is a str, not NoneType"),
    (lambda d: d.tensor(None), "a value's name is a str, not NoneType"),
    (lambda d: d.value(3), "a value's name is a str, not int"),
    (lambda d: d.goto(None), "a position is a vector of 16 per-node counts"),
    (lambda d: d.goto("x"), "a position is a vector of 16 per-node counts"),
    (lambda d: d.goto([1.5] * 16), "a position is a vector of 16 per-node counts"),
    (lambda d: d.goto([-1] * 16), "a position is a vector of 16 per-node counts"),
    (lambda d: d.goto(2 ** 70), "a position is a vector of 16 per-node counts"),
    (lambda d: d.listing(context=1.5), "the listing's context must be an integer"),
    (lambda d: d.listing(context=-1), "the listing's context is a number of lines >= 0"),
    (lambda d: Debugger(d.obj, checkpoint_bytes=None), "checkpoint_bytes must be an integer"),
])
def test_python_api_arguments_of_the_wrong_kind_are_d1_errors(m4, call, says):
    """Each was a raw TypeError, ValueError or OverflowError, or (a float count, length, node
    or goto vector, a negative context) silently truncated or read as something else; the
    debugger goes on as before (counts given as text, as the prompt passes them, still work)."""
    dbg = Debugger(assemble((ROOT / ASM / "token_ring.d1s").read_text(), "token_ring.d1s", m4))
    with pytest.raises(D1Error, match=says):
        call(dbg)
    assert dbg.stepi("2").reason == "step" and dbg.position == 2
    assert dbg.run().reason == "halted"
