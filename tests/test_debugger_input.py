"""`d1 debug` facing what the user types: breakpoint conditions that cannot be evaluated stop
with the error (as gdb does), and tab completion completes every word of a command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prompt_toolkit.document import Document

from d1.cli import cli
from d1.commands.debug import Session, prompt_completer
from d1.program import load_program
from d1isa.machine import load_machine
from emulator.debugger import Debugger

ROOT = Path(__file__).resolve().parent.parent
ASM = "programs/asm"


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def batch(file: str, *commands: str, mesh: str = "2x2") -> dict[str, list[str]]:
    """`d1 debug FILE --batch -ex ...` in-process: each echoed command -> the lines after it."""
    args = ["debug", file, "--batch", "--mesh", mesh]
    for c in commands:
        args += ["-ex", c]
    res = CliRunner().invoke(cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code == 0, res.output
    out: dict[str, list[str]] = {}
    cur = None
    for line in res.output.splitlines():
        if line.startswith("(d1) "):
            cur = line[5:]
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


# ---- counts -----------------------------------------------------------------------------------

def test_a_superscript_digit_is_no_register_number():
    # '²' passes str.isdigit but not int(): vregs ² and acc ² were internal errors
    out = batch(f"{ASM}/token_ring.d1s", "vregs \u00b2", "acc \u2074", mesh="4x4")
    assert out["vregs \u00b2"] == ["error: no register '\u00b2' (0..31)"]
    assert out["acc \u2074"] == ["error: no register '\u2074' (0..7)"]


def test_numbers_longer_than_int_takes_are_usage_errors():
    # int() refuses more than 4,300 digits: these were internal errors
    many = "9" * 5000
    out = batch(f"{ASM}/token_ring.d1s", f"vregs {many}", f"break {many}",
                f"break token_ring.d1s:3:{many}", mesh="4x4")
    assert out[f"vregs {many}"] == [f"error: no register '{many}' (0..31)"]
    assert out[f"break {many}"][0].startswith("error: cannot read location '999")
    assert out[f"break token_ring.d1s:3:{many}"][0].startswith("error: cannot read location")


def test_delete_asks_for_a_breakpoint_number_not_a_count():
    out = batch(f"{ASM}/token_ring.d1s", "delete x", "stepi x", mesh="4x4")
    assert out["delete x"] == ["error: expected a breakpoint number, got 'x'"]
    assert out["stepi x"] == ["error: expected a count, got 'x'"]


def test_print_shows_a_value_beyond_64_bits_in_full_hex():
    # its hex was masked to 64 bits (0xdcc80cd2e3ffffff) beside the full decimal
    out = batch(f"{ASM}/token_ring.d1s", "p 99999999999999999999999999", "p -1", mesh="4x4")
    assert out["p 99999999999999999999999999"] == [
        "99999999999999999999999999 (0x52b7d2dcc80cd2e3ffffff, beyond 64 bits)"]
    assert out["p -1"] == ["-1 (0xffffffffffffffff)"]


def test_a_count_beyond_int64_runs_or_undoes_everything():
    # reverse-stepi N and stepi N all took N from numpy int64 counts: an OverflowError, shown
    # as "internal error" and "This is a bug in d1".
    huge = "99999999999999999999"
    out = batch(f"{ASM}/vadd.d1s", "stepi 5", f"reverse-stepi {huge}", "p pc",
                f"stepi {huge} all", f"reverse-stepi {huge} all", "p pc")
    text = "\n".join(line for lines in out.values() for line in lines)
    assert "internal error" not in text and "bug in d1" not in text, text
    assert out["p pc"] == ["0 (0x0)"]
    assert out[f"stepi {huge} all"][0].startswith("Program finished"), out


# ---- conditions that cannot be evaluated ------------------------------------------------------

def test_a_division_by_zero_in_a_condition_stops_there_with_the_error():
    out = batch(f"{ASM}/vadd.d1s", "break loop if 1/0", "run", "p pc", "info b")
    assert out["run"][:4] == [
        "Error in testing condition for breakpoint 1: division by zero in expression",
        "    1/0",
        "     ^",
        "Breakpoint 1, node (0,0) [id 0], T=2",
    ]
    assert out["p pc"] == ["2 (0x2)"]                 # stopped at `loop`, before it ran
    assert out["info b"][1].split()[:4] == ["1", "breakpoint", "y", "1"]


def test_an_address_outside_sram_in_a_condition_stops_at_the_first_node_testing_it():
    # A line breakpoint on every node: (0,0) reaches line 36 first and stops there.
    out = batch(f"{ASM}/vadd.d1s", "break 36 if mem64[999999999999] == 0", "run", "c")
    assert out["run"][0] == ("Error in testing condition for breakpoint 1: mem64[999999999999]: "
                             "address outside SRAM or misaligned")
    assert out["run"][3] == "Breakpoint 1, node (0,0) [id 0], T=4"
    # continuing tests it again at its next hit (the same node's next pass), failing alike
    assert out["c"][0] == out["run"][0]
    assert out["c"][3] == "Breakpoint 1, node (0,0) [id 0], T=10"


def test_a_condition_that_evaluates_is_tested_as_before():
    # at `loop` r2 steps 0, 64, 128, 192: 64 / (r2 + 64) is 1 at first, then 0
    out = batch(f"{ASM}/vadd.d1s", "break loop if 64 / (r2 + 64) == 0", "run", "p r2")
    assert out["run"][0] == "Breakpoint 1, node (0,0) [id 0], T=8"
    assert out["p r2"] == ["64 (0x40)"]


def test_a_failing_condition_is_reported_again_by_reverse_continue():
    out = batch(f"{ASM}/vadd.d1s", "break loop if 1/0", "run", "c", "reverse-continue")
    assert out["c"][3] == "Breakpoint 1, node (0,0) [id 0], T=8"
    assert out["reverse-continue"][0] == ("Error in testing condition for breakpoint 1: "
                                          "division by zero in expression")
    assert out["reverse-continue"][3] == "Breakpoint 1, node (0,0) [id 0], T=2"


def test_a_label_missing_from_the_tested_node_is_an_error_there():
    # row_broadcast's `take` is in the code of the east column only; (0,0) tests first
    out = batch(f"{ASM}/row_broadcast.d1s", "break *0 all if pc == take", "run", mesh="4x4")
    assert out["run"][0] == ("Error in testing condition for breakpoint 1: label 'take' is "
                             "not in the code of node (0,0)")
    assert out["run"][1] == "Breakpoint 1, node (0,0) [id 0], T=0"


# ---- completion -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session():
    obj = load_program(ROOT / ASM / "token_ring.d1s", load_machine(mesh="4x4")).obj
    return Session(Debugger(obj), out=lambda text: None)


@pytest.mark.parametrize("line, word, expected", [
    ("", "", ["run", "continue", "step"]),                       # the first three commands
    ("b", "b", ["break"]),
    ("rev", "rev", ["reverse-step", "reverse-stepi", "reverse-continue"]),
    ("break bu", "bu", ["bump"]),
    ("break ", "", ["bump", "done", "start", "token_ring.d1s:", "node", "all", "if"]),
    ("tbreak token", "token", ["token_ring.d1s:"]),
    ("break bump node 1", "1", ["1,0", "1,1", "1,2", "1,3"]),
    ("node 3,", "3,", ["3,0", "3,1", "3,2", "3,3"]),
    ("break 52 if r1 >= 1", "1", []),                            # a number: nothing to add
    ("break 52 if r1+r3", "r3", ["r3", "r30", "r31"]),
    ("break bump all if cl", "cl", ["clock"]),
    ("print (r1 + co", "co", ["count"]),
    ("p mem6", "mem6", ["mem64["]),
    ("mem cou", "cou", ["count"]),
    ("mem count 4 as ", "", ["f32", "bf16", "i32", "i64", "hex"]),
    ("x count as i", "i", ["i32", "i64"]),
    ("tensor ", "", ["count", "live"]),
    ("t l", "l", ["live"]),
    ("info ", "", ["breakpoints", "registers", "checkpoints", "position"]),
    ("i c", "c", ["checkpoints"]),
    ("help wa", "wa", ["watch"]),
    ("watch ", "", ["mem", "link", "r0", "zero", "sp", "ra"]),
    ("watch link 2,", "2,", ["2,0", "2,1", "2,2", "2,3"]),
    ("watch link 2,1 ", "", ["N", "E", "S", "W"]),
    ("watch mem cou", "cou", ["count"]),
    ("watch r5 n", "n", ["node"]),
    ("vregs v3", "v3", ["v3", "v30", "v31"]),
    ("acc a", "a", ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]),
    ("step ", "", ["all", "node"]),
    ("regs node 0,", "0,", ["0,0", "0,1", "0,2", "0,3"]),
    ("until d", "d", ["done"]),
    ("nosuchcommand x", "x", []),
])
def test_completion_of_any_word(session, line, word, expected):
    got_word, found = session.complete(line)
    assert got_word == word
    if line == "":
        assert found[:3] == expected and len(found) == 31
    elif line == "break ":
        assert sorted(found) == sorted(expected)
    elif line == "watch ":
        assert set(expected) <= set(found) and "r31" in found and len(found) == 2 + 32 + 3
    else:
        assert sorted(found) == sorted(expected)


def test_completion_sorts_numbers_naturally(session):
    _, found = session.complete("break 52 if r")
    assert found[:4] == ["r0", "r1", "r2", "r3"] and found.index("r10") > found.index("r9")


def test_breakpoint_numbers_complete_once_set(session):
    assert session.complete("delete ") == ("", [])
    session.execute("break bump")
    session.execute("break done")
    try:
        assert session.complete("delete ") == ("", ["1", "2"])
        assert session.complete("disable 2") == ("2", ["2"])
    finally:
        session.execute("delete")


def test_the_prompt_completer_replaces_only_the_word_before_the_cursor(session):
    c = prompt_completer(session)
    got = [(x.text, x.start_position)
           for x in c.get_completions(Document("break bump all if r1+cl"), None)]
    assert got == [("clock", -2)]
    got = [(x.text, x.start_position) for x in c.get_completions(Document("tensor li"), None)]
    assert got == [("live", -2)]


# ---- params from a file -----------------------------------------------------------------------

def test_params_from_a_file_start_the_session_as_d1_run_does(tmp_path):
    """--params FILE.npz places the file's params (as `d1 run --params`), notes names that are
    not params, and refuses a param of the wrong shape before the session starts (exit 2)."""
    good, bad = tmp_path / "p.npz", tmp_path / "bad.npz"
    np.savez(good, b2=np.full(10, 0.5, np.float32), other=np.zeros(3))
    np.savez(bad, b2=np.zeros(11, np.float32))
    args = ["debug", "programs/train_digits.d1k", "--mesh", "4x4", "--batch", "-ex", "tensor b2"]
    res = CliRunner().invoke(cli, args + ["--params", str(good)])
    assert res.exit_code == 0, res.output
    assert "other is not a param of programs/train_digits.d1k; ignored" in res.output
    assert "[0.5 0.5 0.5 0.5 0.5 0.5 0.5 0.5 0.5 0.5]" in res.output
    plain = CliRunner().invoke(cli, args)
    assert "[0. 0. 0. 0. 0. 0. 0. 0. 0. 0.]" in plain.output      # b2's INIT: zeros
    run = subprocess.run([sys.executable, "-m", "d1", *args, "--params", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert (f"error: --params {bad}: param 'b2' has shape (11,), the program declares (10,)"
            in run.stderr)
    assert "Traceback" not in run.stderr and "(d1)" not in run.stdout
