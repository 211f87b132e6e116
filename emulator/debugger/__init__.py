"""The source-level debugger of the whole mesh, with reverse execution (docs/DEBUGGER.md).

    from emulator.debugger import Debugger
    dbg = Debugger(obj)              # an ObjectFile: load, assemble or compile it first
    dbg.break_at("bump", node="all")
    stop = dbg.cont()

The modules, each owning one idea:

- core: `Debugger`, which drives an Emulator through stop flags and budgets (the run loops)
- expr: the expression language of conditions, `print` and addresses
- blocks: per-block code facts (line keys, calls, returns, line entries)
- breakpoints: breakpoints and watchpoints, where they go, and when a watchpoint fires
- stepping: step, next, finish and until
- reverse: going to any position by checkpoint and replay; the reverse commands
- checkpoints: the checkpoints, when to take them and their memory budget
- values: `tensor NAME`, any named value of a compiled program, shown only while it is live
- views: what operations return (Stop, MeshView, LinkView, MemView, Listing) and how it prints
"""

from emulator.debugger.breakpoints import Breakpoint, BreakpointHit, WatchHit, Watchpoint
from emulator.debugger.core import Debugger
from emulator.debugger.expr import ExprError
from emulator.debugger.expr import compile as compile_expr
from emulator.debugger.expr import parse as parse_expr
from emulator.debugger.views import LinkView, Listing, MemView, MeshCell, MeshView, Stop

__all__ = ["Breakpoint", "BreakpointHit", "Debugger", "ExprError", "Listing", "LinkView",
           "MemView", "MeshCell", "MeshView", "Stop", "WatchHit", "Watchpoint",
           "compile_expr", "parse_expr"]
