"""Memory ordering and node claims for the threaded run loop, callable from jitted code.

When several threads run the nodes, a link whose ends sit on different threads is written by
one thread and read by the other. Each side publishes with the same pattern: write the payload
(message bytes, arrival time, length; or the consumption time of a slot), then a release fence,
then the counter (`pushed` or `popped`); the other side reads the counter, then an acquire
fence, then the payload. Without the fences LLVM (or the CPU) could move the payload accesses
across the counter access. On x86 both fences compile to no instruction at all; they only stop
the compiler from reordering, so the serial loop pays nothing for them.

A thread whose own nodes are all blocked or done runs turns of other threads' nodes (see
emulator.kernel.run_loop); `claim` and `release` make each turn exclusive. A node's claim word
is 0 when free: `claim` swaps it to 1 atomically (acquire: everything the previous turn of the
node wrote, on any thread, is visible) and fails if another thread holds it; `release` stores
0 (release: this turn's writes are visible to the next claimer).

These are also plain Python functions for NUMBA_DISABLE_JIT=1 runs (`claim` under a lock).
Their overloads are deliberately not `inline="always"`: Numba's IR inliner mishandled a void
call like this (statements after it were lost: tests/test_differential.py caught it); as normal
calls LLVM still inlines them.
"""

from __future__ import annotations

import threading

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

_PY_LOCK = threading.Lock()


def fence() -> None:
    """Order memory accesses before the call against those after it (acquire + release)."""


def claim(a, i) -> bool:
    """Set a[i] (int64) from 0 to 1 atomically; False if it was not 0."""
    with _PY_LOCK:
        if a[i] != 0:
            return False
        a[i] = 1
        return True


def release(a, i) -> None:
    """a[i] = 0, after every access made while the claim was held."""
    a[i] = 0


@intrinsic
def _fence_ir(typingctx):
    def codegen(context, builder, signature, args):
        builder.fence("acq_rel")
        return context.get_dummy_value()

    return types.void(), codegen


def _element_ptr(context, builder, aty, arr, idx):
    ary = context.make_array(aty)(context, builder, value=arr)
    return builder.gep(ary.data, [idx])


@intrinsic
def _claim_ir(typingctx, a, i):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], *args)
        i64 = ir.IntType(64)
        res = builder.cmpxchg(ptr, ir.Constant(i64, 0), ir.Constant(i64, 1), "acquire",
                              "monotonic")
        return builder.extract_value(res, 1)

    return types.boolean(a, types.int64), codegen


@intrinsic
def _release_ir(typingctx, a, i):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_ptr(context, builder, signature.args[0], *args)
        builder.store_atomic(ir.Constant(ir.IntType(64), 0), ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(a, types.int64), codegen


_OPTIONS = {"cache": True, "_nrt": False}


@overload(fence, jit_options=_OPTIONS)
def _fence_overload():
    def impl():
        _fence_ir()

    return impl


@overload(claim, jit_options=_OPTIONS)
def _claim_overload(a, i):
    def impl(a, i):
        return _claim_ir(a, i)

    return impl


@overload(release, jit_options=_OPTIONS)
def _release_overload(a, i):
    def impl(a, i):
        _release_ir(a, i)

    return impl
