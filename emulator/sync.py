"""Memory ordering for the threaded run loop: a compiler-and-CPU fence callable from jitted code.

When two threads run disjoint ranges of nodes, a link whose ends sit on different threads is
written by one thread and read by the other. Each side publishes with the same pattern: write
the payload (message bytes, arrival time, length; or the consumption time of a slot), then a
release fence, then the counter (`pushed` or `popped`); the other side reads the counter, then
an acquire fence, then the payload. Without the fences LLVM (or the CPU) could move the payload
accesses across the counter access. On x86 both fences compile to no instruction at all; they
only stop the compiler from reordering, so the serial loop pays nothing for them.

`fence()` is also a plain Python function (a no-op) for NUMBA_DISABLE_JIT=1 runs. Its overload
is deliberately not `inline="always"`: Numba's IR inliner mishandled this void call (statements
after it were lost: tests/test_differential.py caught it); as a normal call LLVM still inlines it.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic, overload


def fence() -> None:
    """Order memory accesses before the call against those after it (acquire + release)."""


@intrinsic
def _fence_ir(typingctx):
    def codegen(context, builder, signature, args):
        builder.fence("acq_rel")
        return context.get_dummy_value()

    return types.void(), codegen


@overload(fence, jit_options={"cache": True, "_nrt": False})
def _fence_overload():
    def impl():
        _fence_ir()

    return impl
