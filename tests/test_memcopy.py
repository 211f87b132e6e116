"""emulator.memcopy: the jitted block copy equals the slice copy it replaces."""

from __future__ import annotations

import numpy as np
from numba import njit

from emulator.memcopy import copy_bytes


@njit(cache=False)
def _rows(dst, drow, doff, src, srow, soff, n):
    copy_bytes(dst[drow], doff, src[srow], soff, n)


def test_copy_bytes_moves_exactly_the_block_between_rows():
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, size=(3, 5000), dtype=np.uint8)
    for doff, soff, n in ((0, 0, 4096), (7, 13, 1), (100, 4000, 1000), (9, 0, 0)):
        dst = np.zeros((2, 6000), dtype=np.uint8)[:, :5500]      # padded rows, like SRAM
        expect = dst.copy()
        expect[1, doff:doff + n] = src[2, soff:soff + n]
        _rows(dst, 1, doff, src, 2, soff, n)
        assert np.array_equal(dst, expect)
        plain = np.zeros((2, 5500), dtype=np.uint8)
        copy_bytes(plain[1], doff, src[2], soff, n)             # the Python definition
        assert np.array_equal(plain, expect)
