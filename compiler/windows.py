"""Where the windows of conv2d, the pools, im2col and col2im read: index maps in numpy.

One definition serves the reference evaluator (compiler.reference) and the mesh kernels
(compiler.conv): for output (oh, ow) and tap (r, s) of a `Window`, the input element read is
row `oh * stride_h - top + r * dilation_h`, column `ow * stride_w - left + s * dilation_w`; a
position outside the input is padding (ONNX Conv, MaxPool and AveragePool).

`im2col_index` gives, for the patches matrix [N H' W', C R S], the flat (row-major) index into
x [N, C, H, W] of every entry, or -1 where its tap lies in the padding. col2im is the same map
read backwards: each entry is added into the element it names.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Window


def tap_rows(win: Window, n: int, axis: int) -> np.ndarray:
    """[out_len, size]: the input position (along `axis`, 0 = H, 1 = W) of every tap of every
    output position; outside [0, n) is padding."""
    out = win.out_len(n, axis)
    o = np.arange(out)[:, None] * win.stride[axis] - win.pad[axis]
    return o + np.arange(win.size[axis])[None, :] * win.dilation[axis]


def im2col_index(shape: tuple[int, int, int, int], win: Window) -> np.ndarray:
    """[N H' W', C R S] int64: the flat index into x of `shape` that each patches entry reads
    (row (n, oh, ow), column (c, r, s)), -1 in the padding."""
    n, c, h, w = shape
    rows = tap_rows(win, h, 0)                       # [H', R]
    cols = tap_rows(win, w, 1)                       # [W', S]
    oh, R = rows.shape
    ow, S = cols.shape
    hh = rows[None, :, None, None, :, None]          # n, oh, ow, c, r, s
    ww = cols[None, None, :, None, None, :]
    nn = np.arange(n)[:, None, None, None, None, None]
    cc = np.arange(c)[None, None, None, :, None, None]
    inside = (hh >= 0) & (hh < h) & (ww >= 0) & (ww < w)
    flat = ((nn * c + cc) * h + hh) * w + ww
    idx = np.where(inside, flat, -1)
    return np.ascontiguousarray(np.broadcast_to(idx, (n, oh, ow, c, R, S))
                                ).reshape(n * oh * ow, c * R * S)


def window_counts(win: Window, h: int, w: int) -> np.ndarray:
    """[H', W'] float32: avgpool2d's divisor, the number of taps of each window inside the
    input (or, with `count_pad`, inside the input and its padding)."""
    def along(n: int, axis: int) -> np.ndarray:
        pos = tap_rows(win, n, axis)
        lo, hi = (-win.pad[axis], n + win.pad[axis + 2]) if win.count_pad else (0, n)
        return ((pos >= lo) & (pos < hi)).sum(axis=1)
    return (along(h, 0)[:, None] * along(w, 1)[None, :]).astype(np.float32)


def patches(x: np.ndarray, win: Window, fill: float = 0.0) -> np.ndarray:
    """im2col of x [N, C, H, W] (float32): [N H' W', C R S], `fill` in the padding."""
    idx = im2col_index(x.shape, win)
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    return np.where(idx >= 0, flat[np.maximum(idx, 0)], np.float32(fill)).astype(np.float32)


def col2im(p: np.ndarray, shape: tuple[int, int, int, int], win: Window) -> np.ndarray:
    """The transpose of `patches`: every entry of p added (f32, in row-major order of p) into
    the element of x it was read from; padding entries dropped."""
    idx = im2col_index(shape, win).ravel()
    keep = idx >= 0
    out = np.zeros(int(np.prod(shape)), dtype=np.float32)
    np.add.at(out, idx[keep], np.asarray(p, dtype=np.float32).ravel()[keep])
    return out.reshape(shape)


def pool_view(x: np.ndarray, win: Window, fill: float) -> np.ndarray:
    """[N, C, H', W', R S]: every window of x over its last two axes, `fill` in the padding."""
    n, c, h, w = x.shape
    oh, ow = win.out_hw(h, w)
    p = patches(np.reshape(x, (n * c, 1, h, w)), win, fill)
    return p.reshape(n, c, oh, ow, win.size[0] * win.size[1])
