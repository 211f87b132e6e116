"""A software prefetch callable from jitted code (LLVM's llvm.prefetch), for the run loop.

On a large machine (the 8,850-node tile) a node's register row has left the caches by the
time its next turn comes, and the first instructions of every turn wait for it. The run loop
asks for the next node's row while the current node runs, which keeps the time per
instruction nearly independent of the number of nodes.

`prefetch` is a no-op plain Python function for NUMBA_DISABLE_JIT=1 runs; a prefetch never
faults and never changes results.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def prefetch(a, i) -> None:
    """Hint that element i of the 1-D or 2-D array a (a[i] or a[i, 0]) is about to be written."""


@intrinsic
def _prefetch_ir(typingctx, a, i):
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        arr, idx = args
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, value=arr)
        stride = cgutils.unpack_tuple(builder, ary.strides, aty.ndim)[0]
        base = builder.ptrtoint(ary.data, ir.IntType(64))
        addr = builder.add(base, builder.mul(idx, stride))
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        builder.call(fn, [builder.inttoptr(addr, i8p), ir.Constant(i32, 1),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(a, types.int64), codegen


@overload(prefetch, jit_options={"cache": True, "_nrt": False})
def _prefetch_overload(a, i):
    def impl(a, i):
        _prefetch_ir(a, i)

    return impl
