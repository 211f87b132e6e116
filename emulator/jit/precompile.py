"""A second process that compiles the run loop's helpers while the first compiles the loop.

Why: with an empty Numba cache the first run of the emulator spends most of its time compiling.
About half of that is the helpers (`scalar_op`, `vector_arith`, `net_op`, ...), which Numba compiles
one after another as type inference of `run_loop` meets their calls. Numba holds one compile lock
per process, so threads cannot share that work; a second process can. When the emulator is about
to compile `run_loop` and finds nothing cached, it starts this module
(`python -m emulator.jit.precompile --helpers`). That process first compiles the overloaded
functions `run_loop` calls (emulator.simd's loads, stores and vector steps: small, but needed
before any helper), then the helpers into the same on-disk cache, starting from the last one
`run_loop` meets, while the emulator's own compile works from the first. When the emulator
reaches a helper the other process has finished, Numba loads it from the cache; if the other
process is compiling that very helper (it keeps a claim file named after it while it does), the
emulator waits for it rather than compile it a second time. The two meet in the middle and the
second process stops at the first helper it finds cached. A cached library keeps its LLVM bitcode
for linking, so the compiled loop is the same code either way. The emulator stops the second
process with SIGTERM once its own compile is done; the handler raises an ordinary exception, so
Numba's cache writer removes any half-written file.

A helper's signature is fixed by the argument types at its call site in `run_loop`, so the
second process needs them before that call site is typed: they are recorded, in call order, in
emulator/jit/helper_signatures.py by `python -m emulator.jit.precompile --write`, and
`python -m emulator.jit.precompile --check` (run by the tests) checks that the record matches what
`run_loop` asks for and that what the second process compiles is what the first then loads. A
stale record costs only time, never correctness: the first process compiles whatever it does not
find in the cache. Helpers Numba inlines (`inline="always"`: `scalar_mem`, `vector_fast`,
`mma_steps`, `mma_k_steps`, `mem_check`) are not in the record: they become part of their
caller's own code.

Set D1_PRECOMPILE=0 to never start the second process. It is also not started on one CPU,
without the JIT (NUMBA_DISABLE_JIT=1), or when any variant of the loop is already cached.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# (argparse, json, shutil, signal, subprocess and tempfile are imported where they are used:
# every emulator run imports this module, and only a cold start needs them.)

# Children started by start() that may still be running; kept so they are reaped, not leaked.
_children: list[Any] = []
# The running helper process and its claims directory: while it compiles a helper it keeps a file
# named after it there, and the emulator, reaching that helper, waits for it (wait_for) instead
# of compiling it a second time.
_active: dict[str, Any] = {}

RECORD = Path(__file__).with_name("helper_signatures.py")


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _index(dispatcher: Any) -> dict | None:
    """The on-disk cache index of a dispatcher (None if it has no disk cache)."""
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:
        return None
    try:
        return cache_file._load_index()
    except Exception:
        return None


def is_cached(dispatcher: Any, sig: tuple) -> bool:
    """Whether Numba's disk cache holds `dispatcher` compiled for argument types `sig`."""
    index = _index(dispatcher)
    if not index:
        return False
    try:
        key = dispatcher._cache._index_key(sig, dispatcher.targetctx.codegen())
    except Exception:
        return False
    return key in index


def start(run_loop: Any) -> Any:
    """Start the helper-compiling process (a subprocess.Popen) if `run_loop` is about to be
    compiled from nothing and a second CPU can help; otherwise None. "From nothing": not compiled
    in this process and no variant of it in the disk cache (so a first traced run, which compiles
    the traced variant, does not start it). Never raises: it is only a speed-up."""
    _reap()
    try:
        if os.environ.get("D1_PRECOMPILE", "1") == "0" or _usable_cpus() < 2:
            return None
        index = _index(run_loop)
        if index is None or index or run_loop.overloads:
            return None                 # no JIT or no disk cache, or already compiled once
        import shutil
        import subprocess
        import tempfile
        claims = tempfile.mkdtemp(prefix="d1-precompile-")
    except Exception:
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "emulator.jit.precompile", "--helpers"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env(D1_PRECOMPILE_CLAIMS=claims))
    except Exception:
        shutil.rmtree(claims, ignore_errors=True)
        return None
    _children.append(proc)
    _active.update(proc=proc, claims=Path(claims))
    return proc


def wait_for(name: str, timeout: float = 120.0) -> None:
    """If the helper process is compiling helper `name` right now, wait until it has finished
    (then Numba loads the helper from the cache), it has exited, or `timeout` seconds."""
    if not _active:
        return
    claim = _active["claims"] / name
    proc = _active["proc"]
    end = time.monotonic() + timeout
    while claim.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)


def stop(proc: Any) -> None:
    """Tell the helper-compiling process to finish (its remaining work is no longer needed)."""
    if proc is not None and proc.poll() is None:
        try:
            proc.terminate()
        except OSError:
            pass
    if proc is not None and _active.get("proc") is proc:
        import shutil
        shutil.rmtree(_active["claims"], ignore_errors=True)
        _active.clear()
    _reap()


def _reap() -> None:
    _children[:] = [p for p in _children if p.poll() is None]


# ---- the second process ------------------------------------------------------------------------

class _Stopped(Exception):
    """Raised by SIGTERM: an Exception, so Numba's cache writer removes its temporary file."""


_stopping: list[bool] = []


def _on_term(signum: int, frame: Any) -> None:
    # Numba may wrap the exception (a TypingError, say), so remember the request as well.
    _stopping.append(True)
    raise _Stopped()


def _record() -> list[tuple[Any, tuple, bool]]:
    """The recorded calls as (function, argument types, is a group helper), in run_loop's order:
    a helper is a jitted function (emulator.semantics), the others are overloaded functions."""
    import importlib

    from numba.core import types
    from numba.core.dispatcher import Dispatcher

    from emulator.jit.helper_signatures import CALLS
    names = dict(vars(types))
    out = []
    for module, name, arg_types in CALLS:
        try:
            func = getattr(importlib.import_module(module), name)
            args = tuple(eval(t, names) for t in arg_types)      # our own generated file
        except Exception:
            continue                                            # stale entry: skip it
        out.append((func, args, isinstance(func, Dispatcher)))
    return out


def compile_helpers() -> int:
    """The second process: first the overloaded functions run_loop calls early (emulator.simd's
    intrinsics: cheap, and needed before any helper), then the helpers, last call first, until
    one is found already cached (the emulator got there first)."""
    import signal
    signal.signal(signal.SIGTERM, _on_term)
    claims = os.environ.get("D1_PRECOMPILE_CLAIMS")
    try:
        from numba.core.registry import cpu_target

        # The loop's module first: its import runs the cache fingerprint check
        # (emulator.jit.fingerprint), which would flush what this process compiles if it ran
        # only afterwards, in the emulator's process.
        import emulator.kernel  # noqa: F401
        calls = _record()
        ctx = cpu_target.typing_context
        ctx.refresh()
        for func, args, helper in calls:
            if not helper:
                _quietly(lambda f=func, a=args: ctx.resolve_function_type(
                    ctx.resolve_value_type(f), a, {}))
        for func, args, helper in reversed(calls):
            if not helper:
                continue
            if is_cached(func, args):
                break
            claim = Path(claims, func.py_func.__name__) if claims else None
            if claim is not None:
                claim.touch()
            _quietly(lambda f=func, a=args: f.compile(a))
            if claim is not None:
                claim.unlink(missing_ok=True)
    except _Stopped:
        pass
    return 0


def _quietly(step: Any) -> None:
    """One compile of the second process; a failure there is the emulator's to report (it
    compiles the same code), so it is skipped here. SIGTERM (_Stopped) still ends the process."""
    try:
        step()
    except Exception:
        if _stopping:
            raise _Stopped() from None


# ---- keeping the record right ------------------------------------------------------------------

Call = tuple[str, str, tuple[str, ...], bool]       # module, name, argument type reprs, cache hit


def collect() -> list[Call]:
    """Run a tiny program, recording each call that run_loop's type inference compiles: kernel
    helpers and overloaded functions of the emulator's modules, in order, each signature once,
    with whether the compiled code came from the cache."""
    from numba.core import sigutils
    from numba.core.dispatcher import Dispatcher
    from numba.core.typing.templates import _OverloadFunctionTemplate

    from d1isa.asm import assemble
    from emulator.emulator import Emulator

    asked: list[Call] = []
    stack: list[str] = []
    overloaded: dict[int, Any] = {}         # id of an overload's implementation -> the function
    compile_dispatcher = Dispatcher.compile
    build_impl = _OverloadFunctionTemplate._build_impl

    building: list[Any] = []                # the overloaded function being built, if any

    def build_and_note(self: Any, cache_key: Any, args: Any, kws: Any) -> Any:
        building.append(self.key)
        try:
            disp, new_args = build_impl(self, cache_key, args, kws)
        finally:
            building.pop()
        if disp is not None:
            overloaded[id(disp)] = self.key
        return disp, new_args

    def compile_and_note(self: Any, sig: Any) -> Any:
        func = overloaded.get(id(self)) or (building[-1] if building else self.py_func)
        note = (func.__module__.startswith("emulator.") and func.__name__ != "run_loop"
                and stack[-1:] == ["run_loop"])
        hits = sum(self._cache_hits.values())
        stack.append(func.__name__)
        try:
            result = compile_dispatcher(self, sig)
        finally:
            stack.pop()
        if note:
            args = tuple(repr(t) for t in sigutils.normalize_signature(sig)[0])
            key = (func.__module__, func.__name__, args)
            if all(key != a[:3] for a in asked):
                asked.append(key + (sum(self._cache_hits.values()) > hits,))
        return result

    Dispatcher.compile = compile_and_note
    _OverloadFunctionTemplate._build_impl = build_and_note
    try:
        Emulator(assemble(".text all\n    halt\n")).run()
    finally:
        Dispatcher.compile = compile_dispatcher
        _OverloadFunctionTemplate._build_impl = build_impl
    return asked


def _env(cache_dir: str | None = None, **extra: str) -> dict[str, str]:
    """This environment with this package importable (and Numba's cache in `cache_dir`)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, **extra)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _collect_in(cache_dir: str) -> list[Call]:
    """collect() in a fresh process whose Numba cache is `cache_dir`, without a helper process."""
    import json
    import subprocess
    out = subprocess.run([sys.executable, "-m", "emulator.jit.precompile", "--collect"],
                         env=_env(cache_dir, D1_PRECOMPILE="0"), check=True, capture_output=True,
                         text=True).stdout
    return [(m, n, tuple(a), hit) for m, n, a, hit in json.loads(out)]


def render(asked: list[Call]) -> str:
    """The text of emulator/jit/helper_signatures.py for the calls `asked` records."""
    lines = ['"""Generated by `python -m emulator.jit.precompile --write`; do not edit.',
             "",
             "Each function emulator.kernel.run_loop calls that Numba compiles for it (group",
             "helpers, overloaded functions), with its argument types, in the order the loop's",
             "type inference compiles them (see emulator.jit.precompile).",
             '"""',
             "",
             "CALLS = ("]
    for module, name, args, _ in asked:
        lines.append(f"    ({module!r}, {name!r}, (")
        lines += [f"        {a!r}," for a in args]
        lines.append("    )),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def check() -> list[str]:
    """Problems with the record: compile the recorded calls in a fresh cache as the second process
    would, then compile run_loop against that cache and compare. Empty if all is well."""
    import subprocess
    import tempfile

    from emulator.jit.helper_signatures import CALLS
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-m", "emulator.jit.precompile", "--helpers"],
                       env=_env(cache), check=True)
        asked = _collect_in(cache)
    problems = []
    if [a[:3] for a in asked] != list(CALLS):
        problems.append("the record differs from what run_loop asks for; run "
                        "`python -m emulator.jit.precompile --write`")
    problems += [f"{module}.{name}{args} was compiled again instead of loaded from the cache"
                 for module, name, args, hit in asked if not hit]
    return problems


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import tempfile
    ap = argparse.ArgumentParser(prog="python -m emulator.jit.precompile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--helpers", action="store_true",
                      help="compile the recorded helpers into the Numba cache (the second process)")
    mode.add_argument("--write", action="store_true", help=f"regenerate {RECORD.name}")
    mode.add_argument("--check", action="store_true", help=f"check {RECORD.name}; exit 1 if stale")
    mode.add_argument("--collect", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.helpers:
        return compile_helpers()
    if a.collect:
        print(json.dumps(collect()))
        return 0
    if a.write:
        with tempfile.TemporaryDirectory() as cache:
            RECORD.write_text(render(_collect_in(cache)))
        print(f"wrote {RECORD}")
        return 0
    problems = check()
    for p in problems:
        print(f"emulator.jit.precompile: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
