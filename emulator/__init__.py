"""The Numba-accelerated functional emulator of the whole mesh, with its timing model.

    from d1isa.objfile import ObjectFile
    from emulator import Emulator
    emu = Emulator(ObjectFile.load("prog.d1o"), seed=0)   # or d1.program.load_program(path).obj
    emu.set_input("a", a)
    res = emu.run()              # RunResult: status, cycles, traps, deadlock, .ok, .report()
    c = emu.output("c")          # of the declared shape (a 0-d output: 0-d)

Off by default, `Emulator(obj, trace="regions")` also collects statistics per DSL operation
(`emu.stats()["regions"]`) and `trace="full"` records a timeline (`emu.chrome_trace()`, a
Chrome / Perfetto trace-event document); emulator.trace explains both.

`Emulator(obj, threads=2)` runs the nodes on two host threads (each owns a contiguous range of
nodes; links between ranges are shared, see emulator.kernel); results are bit-identical to one
thread. `auto_threads(n_nodes)` is the count `d1 run` uses by default.

`Emulator(obj, comm=MPI.COMM_WORLD)` under `mpiexec -n R` (R > 1) runs the machine on R MPI
ranks, each holding a block of chips (emulator.distributed); every rank makes the same calls and
the results are bit-identical to one process (docs/SCALE.md). Without a communicator mpi4py is
never imported.

Importing this package is cheap: Numba and the jitted loop load on first use of `Emulator`.
The first run on a machine compiles the loop into Numba's on-disk cache (the __pycache__ beside
each module); a second process compiles the loop's helpers meanwhile (emulator.jit.precompile),
so on two CPUs that takes about 15 s; later processes load it in well under a second.

Debugging the emulator itself:

- NUMBA_DISABLE_JIT=1 runs the loop as plain Python: slow, but every line can be stepped in
  pdb, and results are identical.
- NUMBA_BOUNDSCHECK=1 makes Numba check every array index, so an address check missing from the
  loop shows up as an IndexError instead of a wrong answer.

Numba's cache is not keyed on these variables: combine them with a fresh cache directory,
e.g. `NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=/tmp/d1-boundscheck d1 run prog.d1o`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.debugger import Debugger
    from emulator.emulator import Emulator, auto_threads
    from emulator.report import Chain, Deadlock, RunResult, Trap, Wait, Where

__all__ = ["Chain", "Deadlock", "Debugger", "Emulator", "RunResult", "Trap", "Wait", "Where",
           "auto_threads"]

_HOME = {"Debugger": "emulator.debugger", "Emulator": "emulator.emulator",
         "auto_threads": "emulator.emulator",
         "Chain": "emulator.report", "Deadlock": "emulator.report", "RunResult": "emulator.report",
         "Trap": "emulator.report", "Wait": "emulator.report", "Where": "emulator.report"}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'emulator' has no attribute '{name}'")
    import importlib
    return getattr(importlib.import_module(home), name)
