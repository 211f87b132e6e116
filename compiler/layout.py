"""Distributions of tensors over the grid, and how a node stores its part.

Every value is seen as a 2-D *view* [R, C]: a 0-d value is [1, 1], a 1-D value [C] is [1, C],
and an N-d value is [prod(shape[:-1]), shape[-1]] (leading dimensions folded into rows).

A `Layout` splits each view dimension over one grid axis or replicates it:

    row_axis, col_axis in {"P", "Q", None}      P = grid rows, Q = grid columns, None = replicated

so ("P", "Q") is the 2-D block layout, (None, "Q") a vector split along grid columns and
replicated down every grid row (what makes adding a bias [N] to an [M, N] block local),
("P", None) a column of per-row values, (None, "P") a vector split along grid rows (what a
row reduction produces), and (None, None) a full copy on every grid node. Splits are in units of
`tile` (the machine's mma_dim), as even as possible (`split`).

The row axis "PQ" splits the rows over every grid node, whole rows each, in snake order (grid
row 0 west to east, row 1 east to west, ...), so consecutive blocks sit on neighbouring nodes:
the layout of the vision kernels (compiler.conv), whose windows read a few rows past their
block's ends. Its row bounds are always given (`row_split`), in rows, not tiles.

A node stores its block row-major at one address that is the same on every node (so code can be
shared), `alloc_rows` rows of `stride` bytes: the row count is padded to a multiple of `tile` so
matrix tiles never leave the buffer, and rows to a multiple of `lanes` elements (the machine's
f32 vector lanes) so every row is whole vector registers. A *dense* layout has no padding
(stride = C x itemsize): the N-d fallback kernels use it, because their strides are plain numpy
strides. Every buffer has `SLACK` bytes (one vector register) at the end so a vector store at the
last row may overrun into it.

A layout of `pieces` > 1 stores each row as that many padded parts side by side, `piece_bytes`
apart: a matmul operand split into bf16 pieces (compiler.matmul.SplitBf16) keeps its hi, mid and
lo parts of a row together, so every message that carries rows carries all three.

A *banded* layout (`bands`: grid-column bounds, one band per entry of a batch) is the batched
layout of a batch whose entries sit side by side: entry e of the view [n M, C] (`band_rows` =
M) lives on the grid columns [bands[e], bands[e + 1]) and every grid row, its M rows split over
the grid rows and its C columns over the band's columns, in tiles. A node then holds rows of one
entry only, as with `row_split` bands of grid rows, and the entry's blocks are a 2-D block
layout of its own column band. It is where the heads of a projection [S, H D] already are: head
h's columns are the blocks of grid columns [h Q / H, (h + 1) Q / H), so splitting the heads
(`transpose(reshape(q, [S, H, D]), [1, 0, 2])`) and merging them back move nothing. With
row_axis None (a row vector read by every row of such a batch) the whole rows are on every
node, and the columns are split within each band the same way.

With `band_axis` "P" the bands are of grid rows, and band e holds the view's column block
[e band_cols, (e + 1) band_cols): rows split over the band's grid rows, the block's columns
over all grid columns. It is the result of a matmul whose few rows leave half the grid rows
idle, computed as one product per band, each a block of N (compiler.batched.BandMatmul); a
matmul that reads such a value as A multiplies each band's block of K where it lies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING

import numpy as np

from compiler.ir import ITEMSIZE

if TYPE_CHECKING:
    from compiler.grid import Grid

SLACK = 64      # bytes of one vector register of the ISA (512 bits)


def view_of(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view [rows, cols] of a shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return math.prod(shape[:-1]), shape[-1]


def round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def split(n: int, parts: int, align: int) -> tuple[int, ...]:
    """Block boundaries 0 = b[0] <= ... <= b[parts] = n, in units of `align`, as even as possible;
    earlier blocks take the extra units, later blocks may be empty."""
    units = -(-n // align)
    base, extra = divmod(units, parts)
    bounds = [0]
    for k in range(parts):
        size = (base + (1 if k < extra else 0)) * align
        bounds.append(min(n, bounds[-1] + size))
    return tuple(bounds)


@dataclass(frozen=True)
class Layout:
    """Where the blocks of an R x C view live on a P x Q grid, and how each is stored
    (`lanes`: f32 lanes of a vector register, `tile`: the matrix unit's tile edge)."""

    rows: int
    cols: int
    dtype: str
    row_axis: str | None
    col_axis: str | None
    P: int
    Q: int
    lanes: int
    tile: int
    dense: bool = False
    skew: str | None = None
    skew_ab: tuple[int, int] = (1, 1)
    row_split: tuple[int, ...] | None = None
    pieces: int = 1
    bands: tuple[int, ...] | None = None
    band_rows: int = 0
    band_axis: str = "Q"
    band_cols: int = 0

    def __post_init__(self) -> None:
        if self.row_axis is not None and self.row_axis == self.col_axis:
            raise ValueError("a layout cannot split both view dimensions over one grid axis")
        if self.row_axis == "PQ" and (self.col_axis is not None or self.row_split is None
                                      or len(self.row_split) != self.P * self.Q + 1):
            raise ValueError("rows over the whole grid need whole rows and their bounds")
        if self.bands is not None:
            n = len(self.bands) - 1
            by_cols = self.band_axis == "Q"
            if (self.row_axis not in ("P", None) or self.col_axis not in ("Q", None)
                    or self.row_split is not None or self.skew is not None or self.dense
                    or self.band_axis not in ("P", "Q") or self.bands[0] != 0
                    or self.bands[-1] != (self.Q if by_cols else self.P)
                    or (by_cols and self.row_axis == "P"
                        and (self.band_rows <= 0 or self.rows != self.band_rows * n))
                    or (not by_cols and self.col_axis == "Q"
                        and (self.band_cols <= 0 or self.cols != self.band_cols * n))):
                raise ValueError("a banded layout splits rows over grid rows and columns over "
                                 "grid columns within bands, one band per entry")
        if self.skew is not None and ((self.row_axis, self.col_axis) != ("P", "Q")
                                      or self.P != self.Q or self.skew not in ("A", "B")):
            raise ValueError("only a 2-D block layout on a square grid can be skewed")

    # ---- splits -------------------------------------------------------------------------------

    def _parts(self, axis: str | None) -> int:
        if axis == "PQ":
            return self.P * self.Q
        return 1 if axis is None else (self.P if axis == "P" else self.Q)

    @cached_property
    def row_bounds(self) -> tuple[int, ...]:
        if self.row_split is not None:
            return self.row_split
        return split(self.rows, self._parts(self.row_axis), self.tile)

    @cached_property
    def col_bounds(self) -> tuple[int, ...]:
        return split(self.cols, self._parts(self.col_axis), self.tile)

    def _index(self, axis: str | None, i: int, j: int) -> int:
        if axis == "PQ":
            return snake(i, j, self.Q)
        return 0 if axis is None else (i if axis == "P" else j)

    def block_index(self, i: int, j: int) -> tuple[int, int]:
        """(row block, column block) held by grid node (i, j). A skewed layout places blocks by
        a Latin square L(i, j) = (a i + b j) mod n (`skew_ab` = (a, b)): "A" puts block
        (i, L(i, j)) on node (i, j), "B" block (L(i, j), j), so that node (i, j) holds A's and
        B's K block number L(i, j): a matching pair to multiply straight away. (a, b) = (1, 1)
        is Cannon's initial alignment."""
        bi = self._index(self.row_axis, i, j)
        bj = self._index(self.col_axis, i, j)
        if self.skew is not None:
            a, b = self.skew_ab
            k = (a * i + b * j) % self.P
            if self.skew == "A":
                bj = k
            else:
                bi = k
        return bi, bj

    def band_of(self, k: int) -> int:
        """The band (entry) of grid column k (of grid row k, band_axis "P") in a banded
        layout."""
        b = self.bands
        for e in range(len(b) - 1):
            if k < b[e + 1]:
                return e
        raise IndexError(k)

    @property
    def band_kw(self) -> dict:
        """The banding of this layout, as make_layout's keyword arguments."""
        return {"bands": self.bands, "band_rows": self.band_rows, "band_axis": self.band_axis,
                "band_cols": self.band_cols}

    @cached_property
    def _band_splits(self) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        """A banded layout's bounds, per band, of the rows over the grid rows and of the
        columns over the grid columns that hold them ((0, n): one whole block, where not
        split)."""
        b = self.bands
        n = len(b) - 1
        if self.band_axis == "Q":
            rbs = ((split(self.band_rows, self.P, self.tile) if self.row_axis == "P"
                    else (0, self.rows)),) * n
            cbs = tuple(split(self.cols, b[e + 1] - b[e], self.tile) if self.col_axis == "Q"
                        else (0, self.cols) for e in range(n))
        else:
            rbs = tuple(split(self.rows, b[e + 1] - b[e], self.tile) if self.row_axis == "P"
                        else (0, self.rows) for e in range(n))
            cbs = ((split(self.band_cols, self.Q, self.tile) if self.col_axis == "Q"
                    else (0, self.cols)),) * n
        return rbs, cbs

    def block(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1): the view rectangle grid node (i, j) holds (possibly empty)."""
        if self.bands is not None:
            rbs, cbs = self._band_splits
            if self.band_axis == "Q":
                e = self.band_of(j)
                jj = j - self.bands[e] if self.col_axis == "Q" else 0
                ii = i if self.row_axis == "P" else 0
                r0 = e * self.band_rows if self.row_axis == "P" else 0
                c0 = 0
            else:
                e = self.band_of(i)
                ii = i - self.bands[e] if self.row_axis == "P" else 0
                jj = j if self.col_axis == "Q" else 0
                r0 = 0
                c0 = e * self.band_cols if self.col_axis == "Q" else 0
            rb, cb = rbs[e], cbs[e]
            return r0 + rb[ii], r0 + rb[ii + 1], c0 + cb[jj], c0 + cb[jj + 1]
        bi, bj = self.block_index(i, j)
        return (self.row_bounds[bi], self.row_bounds[bi + 1],
                self.col_bounds[bj], self.col_bounds[bj + 1])

    def block_shape(self, i: int, j: int) -> tuple[int, int]:
        r0, r1, c0, c1 = self.block(i, j)
        return r1 - r0, c1 - c0

    @cached_property
    def max_rows(self) -> int:
        if self.bands is not None:
            return max(rb[k + 1] - rb[k] for rb in self._band_splits[0]
                       for k in range(len(rb) - 1))
        b = self.row_bounds
        return max(b[k + 1] - b[k] for k in range(len(b) - 1))

    @cached_property
    def max_cols(self) -> int:
        if self.bands is not None:
            return max(cb[k + 1] - cb[k] for cb in self._band_splits[1]
                       for k in range(len(cb) - 1))
        b = self.col_bounds
        return max(b[k + 1] - b[k] for k in range(len(b) - 1))

    def locate(self, rows: np.ndarray, cols: np.ndarray
               ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """For view elements (rows, cols): the index of the block each lies in, and the blocks'
        rectangles (r0, r1, c0, c1), as `block` gives them to their holders."""
        if self.bands is None:
            rb, cb = self.row_bounds, self.col_bounds
            bi = np.searchsorted(rb, rows, side="right") - 1
            bj = np.searchsorted(cb, cols, side="right") - 1
            nbj = len(cb) - 1
            rects = [(rb[a], rb[a + 1], cb[b], cb[b + 1])
                     for a in range(len(rb) - 1) for b in range(nbj)]
            return bi * nbj + bj, rects
        rects = sorted({self.block(i, j) for i in range(self.P) for j in range(self.Q)
                        if self.block_shape(i, j)[0] > 0 and self.block_shape(i, j)[1] > 0})
        which = np.full(np.shape(rows), -1, dtype=np.int64)
        for k, (r0, r1, c0, c1) in enumerate(rects):
            which[(rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)] = k
        return which, rects

    # ---- storage ------------------------------------------------------------------------------

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @cached_property
    def piece_bytes(self) -> int:
        """Bytes of one piece of a stored row (the whole row unless `pieces` > 1)."""
        if self.dense:
            return max(self.cols, 1) * self.itemsize
        return round_up(max(self.max_cols, 1), self.lanes) * self.itemsize

    @cached_property
    def stride(self) -> int:
        """Bytes from one stored row to the next."""
        return self.pieces * self.piece_bytes

    @cached_property
    def alloc_rows(self) -> int:
        if self.dense:
            return max(self.max_rows, 1)
        return round_up(max(self.max_rows, 1), self.tile)

    @cached_property
    def nbytes(self) -> int:
        """Bytes each node reserves for its block (the same on every node), with slack."""
        return self.alloc_rows * self.stride + SLACK

    def same_distribution(self, other: Layout) -> bool:
        """True if both place the same elements on the same nodes with the same storage."""
        return (self.rows, self.cols, self.row_axis, self.col_axis, self.P, self.Q,
                self.dense, self.stride, self.skew, self.skew_ab, self.row_bounds,
                self.pieces, self.bands, self.band_rows, self.band_axis, self.band_cols) == (
            other.rows, other.cols, other.row_axis, other.col_axis, other.P, other.Q,
            other.dense, other.stride, other.skew, other.skew_ab, other.row_bounds,
            other.pieces, other.bands, other.band_rows, other.band_axis, other.band_cols)

    def holders(self) -> list[tuple[int, int]]:
        """Grid nodes that hold a nonempty block."""
        out = []
        for i in range(self.P):
            for j in range(self.Q):
                nr, nc = self.block_shape(i, j)
                if nr > 0 and nc > 0:
                    out.append((i, j))
        return out

    def owners(self) -> list[tuple[int, int]]:
        """One holder per distinct block (the first in row-major grid order): who is read back."""
        seen = set()
        out = []
        for i, j in self.holders():
            key = self.block(i, j)
            if key not in seen:
                seen.add(key)
                out.append((i, j))
        return out

    def describe(self) -> str:
        kind = {("P", "Q"): "block", ("Q", "P"): "block^T", (None, "Q"): "cols/Q",
                (None, "P"): "cols/P", ("P", None): "rows/P", ("Q", None): "rows/Q",
                (None, None): "replicated", ("PQ", None): "rows/grid"}[(self.row_axis,
                                                                        self.col_axis)]
        extra = ((" dense" if self.dense else "") + (f" skew-{self.skew}" if self.skew else "")
                 + (f" x{self.pieces} pieces" if self.pieces > 1 else ""))
        extra += " batched" if self.row_split is not None and self.row_axis != "PQ" else ""
        if self.bands is not None:
            extra += (f" in {len(self.bands) - 1} "
                      f"{'column' if self.band_axis == 'Q' else 'row'} bands")
        return f"{kind}{extra} [{self.rows}x{self.cols}]"


def make_layout(shape: tuple[int, ...], dtype: str, row_axis: str | None,
                col_axis: str | None, grid: Grid, dense: bool = False,
                skew: str | None = None, skew_ab: tuple[int, int] = (1, 1),
                row_split: tuple[int, ...] | None = None, pieces: int = 1,
                bands: tuple[int, ...] | None = None, band_rows: int = 0,
                band_axis: str = "Q", band_cols: int = 0) -> Layout:
    """The layout of a value of `shape` on `grid` (which gives P, Q and the machine);
    `row_split` gives the row blocks' bounds instead of the even split (a batched layout);
    `pieces` > 1 stores each row as that many parts (a matmul operand split into bf16 pieces);
    `bands` makes it banded: entries of `band_rows` rows side by side on bands of grid
    columns, or (band_axis "P") column blocks of `band_cols` on bands of grid rows. The
    banding a layout of this shape does not use (a vector's rows, say) is dropped, so
    `**L.band_kw` may be passed for any operand read alongside L."""
    r, c = view_of(shape)
    m = grid.machine
    keep_rows = bands is not None and band_axis == "Q" and row_axis == "P"
    keep_cols = bands is not None and band_axis == "P" and col_axis == "Q"
    return Layout(r, c, dtype, row_axis, col_axis, grid.P, grid.Q, m.vector_lanes_f32,
                  m.mma_dim, dense, skew, skew_ab, row_split, pieces, bands,
                  band_rows if keep_rows else 0, band_axis if bands is not None else "Q",
                  band_cols if keep_cols else 0)


def batch_bands(entries: int, Q: int) -> tuple[int, ...]:
    """The grid-column bounds of `entries` <= Q bands (as even as possible, in order)."""
    return tuple(e * Q // entries for e in range(entries + 1))


def snake(i: int, j: int, Q: int) -> int:
    """The position of grid node (i, j) in snake order: grid row 0 west to east, row 1 east to
    west, ..., so that consecutive positions are neighbours."""
    return i * Q + (j if i % 2 == 0 else Q - 1 - j)


def grid_rows_layout(shape: tuple[int, ...], dtype: str, grid: Grid,
                     bounds: tuple[int, ...] | None = None) -> Layout:
    """Rows of the 2-D view of `shape` over every grid node in snake order (`bounds`, or as
    even as possible)."""
    rows = view_of(shape)[0]
    if bounds is None:
        bounds = split(rows, grid.P * grid.Q, 1)
    return make_layout(shape, dtype, "PQ", None, grid, row_split=tuple(bounds))


def batch_groups(entries: int, P: int) -> list[tuple[int, int]]:
    """For `entries` <= P matrices of a batch, the grid rows [g0, g1) each one is spread over
    (as even as possible, in order)."""
    return [(e * P // entries, (e + 1) * P // entries) for e in range(entries)]


def batched_row_split(entries: int, rows: int, P: int, tile: int) -> tuple[int, ...]:
    """Row bounds of the 2-D view [entries * rows, C] of a batch of `entries` matrices with
    `rows` rows each, such that no grid row holds parts of two entries: with entries <= P,
    entry e has the grid rows of `batch_groups` and its rows are split over them in tiles;
    with more, grid row p holds whole entries [p * entries // P, (p + 1) * entries // P)."""
    if entries <= P:
        bounds = [0]
        for e, (g0, g1) in enumerate(batch_groups(entries, P)):
            bounds += [e * rows + b for b in split(rows, g1 - g0, tile)[1:]]
        return tuple(bounds)
    return tuple((p * entries // P) * rows for p in range(P + 1))


@cache
def choose_skew(n: int) -> tuple[int, int]:
    """The Latin square L(i, j) = (a i + b j) mod n for skewed matmul operands on an n x n
    grid: the one whose worst node waits least for matching panels, in a simple model where a
    panel travels one grid hop per 300 cycles and a panel takes 1024 cycles to use. (The
    cyclic (1, 1) leaves the two anti-diagonal corners without a nearby pair for n/2 hops;
    multipliers such as 11 on 16 x 16 spread the pairs out.)"""
    units = [a for a in range(1, n) if math.gcd(a, n) == 1] or [1]
    best = None
    for a in units:
        b = 1
        cost = 0
        for i in range(n):
            col = {(a * i + b * j) % n: j for j in range(n)}
            for j in range(n):
                row = {(a * r + b * j) % n: r for r in range(n)}
                h = sorted(max(abs(j - col[p]), abs(i - row[p])) for p in range(n))
                cost = max(cost, max(h[k] * 300 - k * 1024 for k in range(n)))
        if best is None or cost < best[0]:
            best = (cost, (a, b))
    return best[1]


def flat_boxes(lead: tuple[int, ...], r0: int, r1: int
               ) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Split the flattened row range [r0, r1) of leading dims `lead` into boxes.

    Returns (offset, shape, first_row) per box, where offset/shape are over `lead` and
    first_row is the flat index of the box's first element.
    """
    if not lead:
        return [((), (), 0)] if r1 > r0 else []
    out: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []
    _boxes(lead, r0, r1, 0, (), out)
    return out


def _boxes(lead: tuple[int, ...], r0: int, r1: int, base: int, prefix: tuple[int, ...],
           out: list) -> None:
    if r0 >= r1:
        return
    ones = (1,) * len(prefix)
    if len(lead) == 1:
        out.append((prefix + (r0,), ones + (r1 - r0,), base + r0))
        return
    inner = math.prod(lead[1:])
    a0, a1 = r0 // inner, (r1 - 1) // inner
    if a0 == a1:
        _boxes(lead[1:], r0 - a0 * inner, r1 - a0 * inner, base + a0 * inner, prefix + (a0,),
               out)
        return
    start = a0
    if r0 % inner:
        _boxes(lead[1:], r0 - a0 * inner, inner, base + a0 * inner, prefix + (a0,), out)
        start = a0 + 1
    end = a1 if r1 % inner else a1 + 1
    if end > start:
        rest = tuple(lead[1:])
        out.append((prefix + (start,) + (0,) * len(rest), ones + (end - start,) + rest,
                    base + start * inner))
    if r1 % inner:
        _boxes(lead[1:], 0, r1 - a1 * inner, base + a1 * inner, prefix + (a1,), out)
