"""Byte-block copies for the network instructions: one `llvm.memcpy` instead of a byte loop.

A `sendb`, `recvb` or `relayb` moves up to max_message_bytes (4 KiB on d1) between a node's
SRAM and a link FIFO. Numba compiles `for i in range(n): dst[d + i] = src[s + i]` to a byte
loop that LLVM does not vectorise (the two arrays might overlap), about a byte per cycle; the
compiled 1024^3 matmul moves 75 MB through links, so that loop was a large part of its
emulation time. The source and destination here never overlap (SRAM and FIFO rows are separate
buffers), so memcpy is exact.

`copy_bytes` is a plain Python function (a slice copy) for NUMBA_DISABLE_JIT=1 runs and the
tests; jitted code uses the overload. Both arrays must be 1-D uint8 views whose elements
[off, off + n) are contiguous (a row of the SRAM or of a FIFO slot); callers check the bounds.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def copy_bytes(dst: np.ndarray, doff: int, src: np.ndarray, soff: int, n: int) -> None:
    """dst[doff:doff + n] = src[soff:soff + n] (non-overlapping)."""
    dst[doff:doff + n] = src[soff:soff + n]


@intrinsic
def _memcpy(typingctx, dst, doff, src, soff, n):
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == types.uint8 and src.dtype == types.uint8
            and dst.ndim == 1 and src.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        d, do, s, so, count = args
        dty, _, sty, _, _ = signature.args
        dp = context.make_array(dty)(context, builder, value=d).data
        sp = context.make_array(sty)(context, builder, value=s).data
        cgutils.raw_memcpy(builder, builder.gep(dp, [do]), builder.gep(sp, [so]), count, 1)
        return context.get_dummy_value()

    return types.void(dst, types.int64, src, types.int64, types.int64), codegen


@overload(copy_bytes, jit_options={"cache": True, "_nrt": False})
def _copy_bytes_overload(dst, doff, src, soff, n):
    def impl(dst, doff, src, soff, n):
        _memcpy(dst, np.int64(doff), src, np.int64(soff), np.int64(n))

    return impl
