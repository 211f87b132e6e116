"""The second compile process for cold starts (emulator.jit.precompile), the group helpers'
missing Python entry points, and the cache fingerprint (emulator.jit.fingerprint).

The record test compiles everything twice in empty cache directories (about 20 s): it is what
keeps emulator/jit/helper_signatures.py honest, so it runs in the normal suite.
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
from emulator import Emulator
from emulator import kernel as K
from emulator.jit import fingerprint, precompile
from emulator.semantics.memory import rows_check

ROOT = Path(__file__).resolve().parent.parent


def test_record_matches_what_run_loop_compiles_and_the_cache_serves_it():
    # --check: the helper process compiles the record into an empty cache, then a fresh
    # process compiles run_loop against it; every helper must come from that cache and the
    # record must list exactly what run_loop asked for, in order.
    r = subprocess.run([sys.executable, "-m", "emulator.jit.precompile", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_record_lists_the_group_helpers_in_call_order():
    from emulator.jit.helper_signatures import CALLS
    helpers = [name for module, name, _ in CALLS if module.startswith("emulator.semantics.")]
    # the outer path's order in run_loop: scalar, vector, matrix, network
    for a, b in [("scalar_op", "vector_arith"), ("vector_arith", "mma_op"), ("mma_op", "net_op")]:
        assert helpers.index(a) < helpers.index(b)
    assert all(isinstance(t, str) for _, _, args in CALLS for t in args)


def test_a_helper_called_from_python_is_a_clear_error_and_its_py_func_works():
    with pytest.raises(TypeError, match="no Python entry point"):
        rows_check(0, 8, 2, 4, 4, 64)
    assert rows_check.py_func(0, 8, 2, 4, 4, 64) == 0
    assert rows_check.py_func(0, 64, 2, 4, 4, 64) != 0     # the second row is past 64 bytes


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
    proc = subprocess.Popen([sys.executable, "-m", "emulator.jit.precompile", "--helpers"], env=env,
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


def test_the_fingerprint_covers_every_module_the_loop_compiles_in():
    import emulator.semantics
    from emulator.jit.helper_signatures import CALLS
    names = set(fingerprint.modules("emulator.kernel"))
    semantics = {f"emulator.semantics.{p.stem}" for p in Path(emulator.semantics.__file__).parent
                 .glob("*.py") if p.stem != "__init__"}
    assert semantics <= names
    assert {module for module, _, _ in CALLS} <= names
    assert {"emulator.opcodes", "emulator.constants", "emulator.decode", "emulator.trace_hooks",
            "emulator.jit.pipeline", "d1isa.isa", "d1isa.traps", "d1isa.machine"} <= names
    # nothing the loop cannot see: the Python side of the emulator is not watched
    assert not {"emulator.emulator", "emulator.debugger", "emulator.trace"} & names


class _FakeCache:
    def __init__(self, path):
        self.cache_path = str(path)
        self.flushed = 0

    def flush(self):
        self.flushed += 1


def test_the_fingerprint_flushes_once_per_change_of_the_sources(tmp_path, monkeypatch):
    loop = type("Loop", (), {})()
    loop.__module__ = "emulator.kernel"
    loop._cache = _FakeCache(tmp_path)
    monkeypatch.setattr(fingerprint, "_dispatchers", lambda names: [loop])
    assert fingerprint.check(loop) and loop._cache.flushed == 1       # no stamp yet
    assert not fingerprint.check(loop) and loop._cache.flushed == 1   # stamp matches
    monkeypatch.setattr(fingerprint, "digest", lambda names: "another source")
    assert fingerprint.check(loop) and loop._cache.flushed == 2
    assert (tmp_path / fingerprint.STAMP).read_text().strip() == "another source"


def test_the_digest_changes_with_any_watched_file(tmp_path, monkeypatch):
    import types
    files = {}
    for name in ("emulator.fake_a", "emulator.fake_b"):
        files[name] = tmp_path / f"{name}.py"
        files[name].write_text("X = 1\n")
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(__file__=str(files[name])))
    before = fingerprint.digest(sorted(files))
    files["emulator.fake_b"].write_text("X = 2\n")
    assert fingerprint.digest(sorted(files)) != before
