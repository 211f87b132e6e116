"""The decorator of the run loop's group helpers, and the dispatcher class that guards them.

Why: only jitted code calls the helpers (emulator.semantics, emulator.trace_hooks), so Numba
builds neither a C nor a Python entry point for them; each costs compile time (the Python
wrappers were about 2 s of a cold start). Calling one from Python then raises TypeError
(`JitOnly`) instead of entering code that does not exist; tests call `helper.py_func`.
Constant arguments to helpers are written np.int64(...): Numba compiles a helper again for
every distinct literal argument.

`JitOnly.compile` first waits for the second compile process (emulator.jit.precompile) if that
process is compiling the same helper, and then loads its result from the cache.
"""

from __future__ import annotations

from typing import Any

from numba import njit
from numba.core.registry import CPUDispatcher

from emulator.jit import precompile
from emulator.jit.pipeline import LeanCompiler

_OPTIONS = {"cache": True, "_nrt": False, "no_cfunc_wrapper": True, "no_cpython_wrapper": True,
            "pipeline_class": LeanCompiler}


class JitOnly(CPUDispatcher):
    """A helper compiled without a Python entry point: calling it from Python is an error."""

    def compile(self, sig):
        # A second process may be compiling this very helper (emulator.jit.precompile): let it
        # finish, and load its result from the cache, rather than compile it here too.
        precompile.wait_for(self.py_func.__name__)
        return super().compile(sig)

    def __call__(self, *args, **kws):
        raise TypeError(f"{self.py_func.__module__}.{self.py_func.__name__} has no Python "
                        f"entry point; call it from jitted code, or its .py_func from Python")


def helper(func: Any = None, **options: Any) -> Any:
    """`@helper` or `@helper(error_model="numpy", inline="always")`: njit with the helpers'
    options (cached, no runtime, no entry points, the lean pipeline) plus `options`."""
    def wrap(f: Any) -> Any:
        disp = njit(**_OPTIONS, **options)(f)
        if isinstance(disp, CPUDispatcher):         # not under NUMBA_DISABLE_JIT=1
            disp.__class__ = JitOnly
        return disp
    return wrap if func is None else wrap(func)
