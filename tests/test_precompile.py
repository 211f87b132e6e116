"""The second compile process for cold starts (emulator.precompile) and the kernel helpers'
missing Python entry points.

The record test compiles everything twice in empty cache directories (about 20 s): it is what
keeps emulator/helper_signatures.py honest, so it runs in the normal suite.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from progkit import machine, make_obj

from d1isa.isa import encode as E
from emulator import Emulator, precompile
from emulator import kernel as K

ROOT = Path(__file__).resolve().parent.parent


def test_record_matches_what_run_loop_compiles_and_the_cache_serves_it():
    # --check: the helper process compiles the record into an empty cache, then a fresh
    # process compiles run_loop against it; every helper must come from that cache and the
    # record must list exactly what run_loop asked for, in order.
    r = subprocess.run([sys.executable, "-m", "emulator.precompile", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_record_lists_the_group_helpers_in_call_order():
    from emulator.helper_signatures import CALLS
    helpers = [name for module, name, _ in CALLS if module == "emulator.kernel"]
    # the outer path's order in run_loop: scalar, vector, matrix, network
    for a, b in [("scalar_op", "vector_arith"), ("vector_arith", "mma_op"), ("mma_op", "net_op")]:
        assert helpers.index(a) < helpers.index(b)
    assert all(isinstance(t, str) for _, _, args in CALLS for t in args)


def test_a_helper_called_from_python_is_a_clear_error_and_its_py_func_works():
    with pytest.raises(TypeError, match="no Python entry point"):
        K.mem_check(0, 4, 4, 64)
    assert K.mem_check.py_func(0, 4, 4, 64) == 0
    assert K.mem_check.py_func(62, 4, 4, 64) != 0        # past the end of 64 bytes


def test_no_helper_process_once_the_loop_is_compiled(monkeypatch):
    emu = Emulator(make_obj(machine(), {0: [E("halt")]}))
    emu.run()                                          # compiled (or loaded) in this process
    assert precompile.start(K.run_loop) is None
    monkeypatch.setenv("D1_PRECOMPILE", "0")
    assert precompile.start(K.run_loop) is None


def _fake_helper_process(tmp_path, monkeypatch, claimed: bool):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    claims = tmp_path / "claims"
    claims.mkdir()
    if claimed:
        (claims / "net_op").touch()
    monkeypatch.setattr(precompile, "_active", {"proc": proc, "claims": claims})
    return proc, claims


def test_wait_for_returns_when_the_claim_is_released(tmp_path, monkeypatch):
    proc, claims = _fake_helper_process(tmp_path, monkeypatch, claimed=True)
    try:
        threading.Timer(0.3, (claims / "net_op").unlink).start()
        done = threading.Event()
        t = threading.Thread(target=lambda: (precompile.wait_for("net_op"), done.set()))
        t.start()
        assert not done.wait(0.1)                      # still claimed: waiting
        assert done.wait(10)                           # released: returns
        precompile.wait_for("scalar_op")               # not claimed: returns at once
    finally:
        proc.kill()
        proc.wait()


def test_wait_for_stops_waiting_when_the_helper_process_is_gone(tmp_path, monkeypatch):
    proc, claims = _fake_helper_process(tmp_path, monkeypatch, claimed=True)
    proc.kill()
    proc.wait()
    precompile.wait_for("net_op")                      # returns although the claim is left
    precompile.stop(proc)
    assert not claims.exists() and precompile._active == {}


def test_the_helper_process_exits_quietly_on_sigterm(tmp_path):
    # What stop() does to a helper process still compiling: it must end promptly, leaving no
    # temporary cache file behind.
    cache, claims = tmp_path / "cache", tmp_path / "claims"
    claims.mkdir()
    env = precompile._env(str(cache), D1_PRECOMPILE_CLAIMS=str(claims))
    proc = subprocess.Popen([sys.executable, "-m", "emulator.precompile", "--helpers"], env=env,
                            cwd=ROOT)
    deadline = time.monotonic() + 120
    while not any(claims.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)                               # until it is compiling a helper
    assert proc.poll() is None and any(claims.iterdir())
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert not list(cache.rglob("*.tmp.*"))


def test_results_do_not_depend_on_which_process_compiled_a_helper():
    # The loop in this process may have been built from helpers the second process compiled;
    # it must compute what the definition says (spot check; the whole suite runs on it).
    words = [E("movi", rd=1, imm=7), E("muli", rd=2, rs1=1, imm=6), E("halt")]
    emu = Emulator(make_obj(machine(), {0: words}))
    emu.run()
    assert np.int64(emu.regs(0)[2]) == 42
