"""Batched matrix multiply: `A @ B` with 3-D or 4-D operands, each product on the matrix unit.

numpy's matmul multiplies the last two axes and broadcasts the others (the batch). When B is
2-D (one matrix for every batch entry, as in `x @ W` of a transformer), the product is a single
2-D matmul over all rows of A's 2-D view, and `compiler.lower` compiles it as one. Otherwise
every entry e of the batch is its own [M, K] @ [K, N] product, which runs as the ordinary SUMMA
matmul (compiler.matmul) on a *sub-grid*:

* with at most P entries (P = grid rows), entry e gets a band of consecutive grid rows
  (`layout.batch_groups`) and all grid columns, and the entries' products run at the same time,
  each in its band;
* with more, grid row p takes whole entries [p n / P, (p + 1) n / P) one after the other, each
  on the 1 x Q sub-grid of that row.

This needs the operands and the result in a *batched layout* (`layout.batched_row_split`): the
2-D view [n M, K] whose row blocks never straddle two entries, so that the blocks of entry e
are exactly a 2-D block layout of [M, K] on its sub-grid, at the same address. Operands that
are broadcast along the batch (or, with more entries than grid rows, whose M or K is not a
multiple of the tile and so cannot be stacked) are first gathered (compiler.gather) into a
batch of their own, zero-padded to whole tiles where needed; the result is then gathered back.

The sub-grids' row chains are the grid's own rows, and their column chains are disjoint pieces
of the grid's columns, so the products of different bands touch disjoint nodes and each keeps
the matmul's own deadlock-freedom argument; products that share a band run one after another.
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


class BatchedMatmul(Step):
    """C[e] = A[e] @ B[e] for every entry e of a batch of `entries` products, each on its
    sub-grid. `a`, `b` and `out` hold the views [entries M, K], [entries K, N] and
    [entries M, N] in the batched layouts of `grid`."""

    def __init__(self, out: Value, a: Value, b: Value, entries: int, m: int, k: int, n: int,
                 loc, label: str, grid: Grid, machine, options) -> None:
        super().__init__(f"matmul[batched {entries}]", out, [a, b], loc, label)
        self.products: list[tuple[Grid, Matmul, int, int, int]] = []
        P = grid.P
        if entries <= P:
            bands = [(g0, g1, [(e, 0)]) for e, (g0, g1) in enumerate(batch_groups(entries, P))]
        else:
            bands = [(p, p + 1, [(e, e - p * entries // P)
                                 for e in range(p * entries // P, (p + 1) * entries // P)])
                     for p in range(P)]
        for g0, g1, members in bands:
            sub = Grid(machine, grid.xs, grid.ys[g0:g1])
            for e, slot in members:
                A = Value(f"{a.name}[{e}]", (m, k), a.dtype,
                          make_layout((m, k), a.dtype, "P", "Q", sub))
                B = Value(f"{b.name}[{e}]", (k, n), b.dtype,
                          make_layout((k, n), b.dtype, "P", "Q", sub))
                C = Value(f"{out.name}[{e}]", (m, n), out.dtype,
                          make_layout((m, n), out.dtype, "P", "Q", sub))
                mm = Matmul(C, A, B, loc, label, sub, machine, "summa", options.double_buffer,
                            options.reach)
                # Offsets of this entry inside each node's buffer (entries stacked in a band).
                self.products.append((sub, mm, slot * m * a.layout.stride,
                                      slot * k * b.layout.stride, slot * m * out.layout.stride))
        # One set of scratch buffers for all products, as large as the largest needs.
        shared: list[Value] = []
        for _, mm, *_ in self.products:
            for i, t in enumerate(mm.temps):
                if i == len(shared):
                    shared.append(scratch(f"{out.name}.panels{i}", 0))
                shared[i].scratch_bytes = max(shared[i].scratch_bytes, t.scratch_bytes)
        for _, mm, *_ in self.products:
            mm.temps = shared[:len(mm.temps)]
        self.temps = shared

    def emit(self, ctx: Ctx) -> None:
        a, b = self.ins
        for sub, mm, oa, ob, oc in self.products:
            A, B = mm.ins
            A.addr, B.addr, mm.out.addr = a.addr + oa, b.addr + ob, self.out.addr + oc
            sctx = copy.copy(ctx)
            sctx.grid = sub
            mm.emit(sctx)
