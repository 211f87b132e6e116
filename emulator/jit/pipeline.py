"""Numba's nopython pipeline minus two passes the emulator's jitted code never needs.

Why: compile time is the cost of a cold start (README, "The first run and Numba's cache"), and
Numba spends it per IR statement in every pass. `InlineClosureLikes` inlines closures, list
comprehensions and generator calls, and `NopythonRewrites` fuses whole-array expressions; the
kernel and its helpers contain neither (they work on scalars and explicit loops, with no
allocation: `_nrt=False`), so both passes only walked the IR without changing it, about half a
second of the run loop's compile. Should such code appear, Numba fails to compile it (an
allocation without the runtime is an error), so it cannot silently run differently.
"""

from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.typed_passes import NopythonRewrites
from numba.core.untyped_passes import InlineClosureLikes

_SKIP = (InlineClosureLikes, NopythonRewrites)


class LeanCompiler(CompilerBase):
    """`@njit(pipeline_class=LeanCompiler)`: the default nopython pipeline without _SKIP."""

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(p, d) for p, d in pm.passes if p not in _SKIP]
        pm.finalize()
        return [pm]
