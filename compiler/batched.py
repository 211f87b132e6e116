"""Batched matrix multiply: `A @ B` with 3-D or 4-D operands, each product on the matrix unit.

numpy's matmul multiplies the last two axes and broadcasts the others (the batch). When B is
2-D (one matrix for every batch entry, as in `x @ W` of a transformer), the product is a single
2-D matmul over all rows of A's 2-D view, and `compiler.lower` compiles it as one. Otherwise
every entry e of the batch is its own [M, K] @ [K, N] product, which runs as the ordinary SUMMA
matmul (compiler.matmul) on a *sub-grid*:

* with at most Q entries whose tiles spread at least as well over a band of grid columns (all
  grid rows) as over a band of grid rows, entry e gets the band of consecutive grid columns
  `layout.batch_bands` and all grid rows (a *banded* layout), and the products run at the same
  time, each in its band: where the heads of a projection already are;
* else with at most P entries (P = grid rows), entry e gets a band of consecutive grid rows
  (`layout.batch_groups`) and all grid columns, and the entries' products run at the same time,
  each in its band;
* with more, and products narrower than the grid (N fewer tiles than Q), every grid node takes
  whole entries, in snake order (`layout.grid_rows_layout`, rows cut at entries), and
  multiplies them one after the other on its own: a 1 x Q row would leave grid columns idle
  and put all of a row's entries on the node of its one column block; so no messages at all;
* else grid row p takes whole entries [p n / P, (p + 1) n / P) one after the other, each on
  the 1 x Q sub-grid of that row.

This needs the operands and the result in a *batched layout* (`layout.batched_row_split`): the
2-D view [n M, K] whose row blocks never straddle two entries, so that the blocks of entry e
are exactly a 2-D block layout of [M, K] on its sub-grid, at the same address. Operands that
are broadcast along the batch (or, with more entries than grid rows, whose M or K is not a
multiple of the tile and so cannot be stacked) are first gathered (compiler.gather) into a
batch of their own, zero-padded to whole tiles where needed; the result is then gathered back.

The sub-grids' row chains are the grid's own rows, and their column chains are disjoint pieces
of the grid's columns (for column bands the other way round), so the products of different
bands touch disjoint nodes and links and each keeps the matmul's own deadlock-freedom
argument; products that share a band run one after another.
The products' scratch buffers (panel slots) are shared: one node only ever runs one product at
a time.

The other mapping, `-O batched=sequential`, runs the entries one after the other on the whole
grid: each entry's operands are gathered into ordinary block layouts, multiplied, and the
products gathered into the result (the comparison point).
"""

from __future__ import annotations

import copy

from compiler.grid import Grid
from compiler.layout import batch_groups, make_layout
from compiler.matmul import Matmul
from compiler.plan import Ctx, Step, Value, scratch


def sub_product(a: Value, b: Value, c: Value, suffix: str, mkn: tuple[int, int, int],
                sub: Grid, loc, label: str, machine, options) -> Matmul:
    """The SUMMA matmul of one product c = a @ b of shape `mkn` on the sub-grid `sub`: its
    operands are a, b and c's blocks there as plain block layouts (named NAME`suffix`), which
    must be stored with the whole values' row strides (checked) for the product to read and
    write the whole values' own bytes."""
    m, k, n = mkn
    parts = [Value(f"{v.name}{suffix}", shape, v.dtype, make_layout(shape, v.dtype, "P", "Q", sub))
             for v, shape in ((a, (m, k)), (b, (k, n)), (c, (m, n)))]
    for part, whole in zip(parts, (a, b, c), strict=True):
        if part.layout.stride != whole.layout.stride:   # pragma: no cover
            raise AssertionError(f"{part.name}: its blocks on the sub-grid are stored with "
                                 f"another row stride than {whole.name}'s")
    A, B, C = parts
    return Matmul(C, A, B, loc, label, sub, machine, "summa", options.double_buffer,
                  options.reach)


def share_panels(name: str, products: list[Matmul]) -> list[Value]:
    """One set of panel buffers for products that run side by side on disjoint sub-grids,
    each as large as the largest product needs; every product is given it."""
    shared: list[Value] = []
    for mm in products:
        for i, t in enumerate(mm.temps):
            if i == len(shared):
                shared.append(scratch(f"{name}.panels{i}", 0))
            shared[i].scratch_bytes = max(shared[i].scratch_bytes, t.scratch_bytes)
    for mm in products:
        mm.temps = shared[:len(mm.temps)]
    return shared


class BatchedMatmul(Step):
    """C[e] = A[e] @ B[e] for every entry e of a batch of `entries` products, each on its
    sub-grid. `a`, `b` and `out` hold the views [entries M, K], [entries K, N] and
    [entries M, N] in the batched layouts of `grid`."""

    def __init__(self, out: Value, a: Value, b: Value, entries: int, m: int, k: int, n: int,
                 loc, label: str, grid: Grid, machine, options) -> None:
        super().__init__(f"matmul[batched {entries}]", out, [a, b], loc, label)
        self.products: list[tuple[Grid, Matmul, int, int, int]] = []
        P, Q = grid.P, grid.Q
        L = out.layout
        subs: list[tuple[Grid, list[tuple[int, int]]]] = []
        if L.bands is not None:
            # Banded layouts: entry e on the grid columns [bands[e], bands[e + 1]).
            subs = [(Grid(machine, grid.xs[L.bands[e]:L.bands[e + 1]], grid.ys), [(e, 0)])
                    for e in range(entries)]
        elif L.row_axis == "PQ":
            # Whole entries on every grid node, in snake order (rows cut at entries).
            for s in range(P * Q):
                i, j = divmod(s, Q)
                if i % 2:
                    j = Q - 1 - j
                e0, e1 = L.row_split[s] // m, L.row_split[s + 1] // m
                if e1 > e0:
                    subs.append((Grid(machine, grid.xs[j:j + 1], grid.ys[i:i + 1]),
                                 [(e, e - e0) for e in range(e0, e1)]))
        elif entries <= P:
            subs = [(Grid(machine, grid.xs, grid.ys[g0:g1]), [(e, 0)])
                    for e, (g0, g1) in enumerate(batch_groups(entries, P))]
        else:
            subs = [(Grid(machine, grid.xs, grid.ys[p:p + 1]),
                     [(e, e - p * entries // P)
                      for e in range(p * entries // P, (p + 1) * entries // P)])
                    for p in range(P)]
        for sub, members in subs:
            for e, slot in members:
                mm = sub_product(a, b, out, f"[{e}]", (m, k, n), sub, loc, label, machine,
                                 options)
                # Offsets of this entry inside each node's buffer (entries stacked in a band).
                self.products.append((sub, mm, slot * m * a.layout.stride,
                                      slot * k * b.layout.stride, slot * m * out.layout.stride))
        self.temps = share_panels(out.name, [mm for _, mm, *_ in self.products])

    def emit(self, ctx: Ctx) -> None:
        a, b = self.ins
        for sub, mm, oa, ob, oc in self.products:
            A, B = mm.ins
            A.addr, B.addr, mm.out.addr = a.addr + oa, b.addr + ob, self.out.addr + oc
            sctx = copy.copy(ctx)
            sctx.grid = sub
            mm.emit(sctx)


class BandMatmul(Step):
    """A 2-D matmul C = A @ B whose rows (M) fill at most a band of the grid rows, run as n
    products side by side on n bands of grid rows, so the grid rows it would leave idle
    compute too (compiler.lower.Mapper.row_bands):

    * split N (`kind` "matmul[rows N/n]"): band e computes the column block C[:, e N/n ...],
      from its own copy of A and B's column block; C is banded along grid rows
      (layout band_axis "P"), each band holding its column block;
    * split K ("matmul[rows K/n]"): A comes banded that way (a split-N product, through
      elementwise kernels), so band e holds A[:, e K/n ...]; it multiplies it by B's row
      block e into a partial product `parts[e]` on its own rows; the mapper adds the parts.

    `products` lists (band's sub-grid, A, B, C): full-grid values whose blocks on the band are
    exactly the plain block layouts of the product's operands on the sub-grid, at the values'
    own addresses (checked). Every product is the ordinary SUMMA matmul on its sub-grid; the
    bands' row chains are the grid's rows and their column chains disjoint pieces of the
    grid's columns, so the products touch disjoint nodes and links (the argument of
    BatchedMatmul), and they share one set of panel buffers."""

    def __init__(self, kind: str, out: Value, also: list[Value],
                 products: list[tuple[Grid, Value, Value, Value]], m: int, k: int, n: int,
                 loc, label: str, machine, options) -> None:
        ins: list[Value] = []
        for _, a, b, _ in products:
            for v in (a, b):
                if v not in ins:
                    ins.append(v)
        super().__init__(kind, out, ins, loc, label)
        self.also = list(also)
        self.products: list[tuple[Matmul, Value, Value, Value]] = []
        for sub, a, b, c in products:
            mm = sub_product(a, b, c, "@band", (m, k, n), sub, loc, label, machine, options)
            mm.report_slices = False       # its operands' coordinates are not the tensors'
            self.products.append((mm, a, b, c))
        self.temps = share_panels(out.name, [mm for mm, *_ in self.products])

    def emit(self, ctx: Ctx) -> None:
        for mm, a, b, c in self.products:
            A, B = mm.ins
            A.addr, B.addr, mm.out.addr = a.addr, b.addr, c.addr
            sctx = copy.copy(ctx)
            sctx.grid = mm.grid
            mm.emit(sctx)
