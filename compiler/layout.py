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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING

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

    def __post_init__(self) -> None:
        if self.row_axis is not None and self.row_axis == self.col_axis:
            raise ValueError("a layout cannot split both view dimensions over one grid axis")
        if self.row_axis == "PQ" and (self.col_axis is not None or self.row_split is None
                                      or len(self.row_split) != self.P * self.Q + 1):
            raise ValueError("rows over the whole grid need whole rows and their bounds")
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

    def block(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1): the view rectangle grid node (i, j) holds (possibly empty)."""
        bi, bj = self.block_index(i, j)
        return (self.row_bounds[bi], self.row_bounds[bi + 1],
                self.col_bounds[bj], self.col_bounds[bj + 1])

    def block_shape(self, i: int, j: int) -> tuple[int, int]:
        r0, r1, c0, c1 = self.block(i, j)
        return r1 - r0, c1 - c0

    @cached_property
    def max_rows(self) -> int:
        b = self.row_bounds
        return max(b[k + 1] - b[k] for k in range(len(b) - 1))

    @cached_property
    def max_cols(self) -> int:
        b = self.col_bounds
        return max(b[k + 1] - b[k] for k in range(len(b) - 1))

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
                self.pieces) == (
            other.rows, other.cols, other.row_axis, other.col_axis, other.P, other.Q,
            other.dense, other.stride, other.skew, other.skew_ab, other.row_bounds,
            other.pieces)

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
        return f"{kind}{extra} [{self.rows}x{self.cols}]"


def make_layout(shape: tuple[int, ...], dtype: str, row_axis: str | None,
                col_axis: str | None, grid: Grid, dense: bool = False,
                skew: str | None = None, skew_ab: tuple[int, int] = (1, 1),
                row_split: tuple[int, ...] | None = None, pieces: int = 1) -> Layout:
    """The layout of a value of `shape` on `grid` (which gives P, Q and the machine);
    `row_split` gives the row blocks' bounds instead of the even split (a batched layout);
    `pieces` > 1 stores each row as that many parts (a matmul operand split into bf16 pieces)."""
    r, c = view_of(shape)
    m = grid.machine
    return Layout(r, c, dtype, row_axis, col_axis, grid.P, grid.Q, m.vector_lanes_f32,
                  m.mma_dim, dense, skew, skew_ab, row_split, pieces)


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
