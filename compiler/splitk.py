"""Matmuls too large for their panels: the product as a sum of products over slices of K.

A matmul node stores every panel of A's grid row and of B's grid column (compiler.matmul,
compiler.summa): about (M / P + N / Q) x K elements per node, whatever the machine's total
SRAM. On a 4 x 4 mesh a bf16 1024^3 product needs 0.79 MB of them per node, and with its
operands' and result's blocks 320 B more than a node has, while its tensors fill two fifths
of the mesh's SRAM. When a program does not fit (compiler.alloc), the pipeline tries once
more with this rewrite: every 2-D `A @ B` whose panels would take more than PANEL_SHARE of a
node's SRAM (and whose slices can be planned, MAX_SLICE_PLAN) becomes

    A[:, k0:k1] @ B[k0:k1, :] + A[:, k1:k2] @ B[k1:k2, :] + ...

in as few slices as bring each product's panels under that share (the slices in whole tiles).
Each slice is a layout change (compiler.gather) and each partial product is f32, added in
order: the same f32 products summed in f32 in another order, which the language allows
(docs/DSL.md, "@"). The sum keeps the matmul's name, so outputs, updates and the debugger find
it; the slices and partial products are temporaries. A program that fits is never rewritten,
so its code does not change.

The partial products are added in place (`accumulate_in_place`): each running sum is stored in
the buffer of the one before it, which nothing reads afterwards, so the products' sum takes one
result's SRAM however many slices there are, as the partial sums of the matmul kernels would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from compiler.grid import Grid
from compiler.ir import Graph, GraphBuilder, Node, Op
from compiler.writeback import InPlace
from d1isa.machine import Machine

if TYPE_CHECKING:
    from compiler.plan import Step, Value

# At most this share of a node's SRAM for one product's panels (with its operands' blocks, its
# result and the values live around it, the rest of the node is needed too).
PANEL_SHARE = 1 / 6
# The slices are layout changes whose plans the compiler makes element by element for every
# grid node (compiler.gather): at most this many (elements sliced x grid nodes) per matmul,
# some 2 GB of the compiler's memory. bf16 1024^3 on a 4 x 4 mesh is 2^25 (0.3 GB); 4096^3 on
# d1's 256 grid nodes would be 2^33, and is left to the error.
MAX_SLICE_PLAN = 1 << 28


def k_slices(node: Node, grid: Grid, machine: Machine) -> list[tuple[int, int]]:
    """The K ranges of a 2-D matmul's partial products ([(0, K)] when it needs no split)."""
    if node.op is not Op.MATMUL or any(len(x.shape) != 2 for x in node.inputs):
        return []
    a, b = node.inputs
    (m, k), n = a.shape, b.shape[1]
    t = machine.mma_dim
    rows = _tiles(_ceil(m, grid.P), t)              # a node's rows of C, in whole tiles
    cols = _tiles(_ceil(n, grid.Q), t)
    # bf16 panels hold 2 B an element; an f32 operand may be split in three bf16 pieces (6 B)
    size = 2 if a.dtype == b.dtype == "bf16" else 6
    panels = (rows + cols) * k * size
    budget = machine.sram_bytes * PANEL_SHARE
    parts = min(_ceil(panels, int(budget)), _ceil(k, t))
    # Each product also needs its own result block (rows x cols), and the slices copy the
    # operands' blocks: a split pays only where K, not the result, makes the panels large.
    if (parts <= 1 or k * (rows + cols) <= 2 * rows * cols
            or (m * k + k * n) * grid.size > MAX_SLICE_PLAN):
        return [(0, k)]
    step = _tiles(_ceil(k, parts), t)
    return [(k0, min(k0 + step, k)) for k0 in range(0, k, step)]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _tiles(n: int, t: int) -> int:
    """n rounded up to whole tiles of t."""
    return _ceil(n, t) * t


def split_matmuls(graph: Graph, grid: Grid, machine: Machine
                  ) -> tuple[Graph, list[str], set[int], list[int]] | None:
    """The program with its too-large matmuls written as sums over K slices, a note for each,
    the running sums, which must be stored (compiler.lower's `keep`: fused into one
    elementwise kernel, the additions would keep every partial product live at once), and
    every addition of a partial product (`accumulate_in_place`). None if no matmul needs it."""
    b = GraphBuilder()
    new: dict[int, Node] = {}
    notes: list[str] = []
    keep: set[int] = set()
    adds: list[int] = []
    for node in graph.nodes:
        ins = tuple(new[i.id] for i in node.inputs)
        ranges = k_slices(node, grid, machine)
        if len(ranges) <= 1:
            new[node.id] = b.add(node.op, ins, shape=node.shape, dtype=node.dtype,
                                 axis=node.axis, value=node.value, init=node.init,
                                 name=node.name, line=node.line, col=node.col, perm=node.perm,
                                 index=node.index, window=node.window)
            continue
        x, w = ins
        (m, k), n = x.shape, w.shape[1]
        at = {"line": node.line, "col": node.col}
        total = None
        for i, (k0, k1) in enumerate(ranges):
            # temporaries named after the matmul: the builder's own %tN names are taken
            xs = b.add(Op.SLICE, (x,), index=((0, m, 1), (k0, k1, 1)), name=f"{node.name}.a{i}",
                       **at)
            ws = b.add(Op.SLICE, (w,), index=((k0, k1, 1), (0, n, 1)), name=f"{node.name}.b{i}",
                       **at)
            part = b.add(Op.MATMUL, (xs, ws), name=f"{node.name}.p{i}", **at)
            if total is not None:
                keep.add(total.id)
                total = b.add(Op.ADD, (total, part), name=f"{node.name}.s{i}", **at)
                adds.append(total.id)
            else:
                total = part
        new[node.id] = b.rename(total, node.name)
        notes.append(f"line {node.line}: '{node.name}' ({m} x {k} @ {k} x {n}) is computed "
                     f"as {len(ranges)} products over slices of K of "
                     f"{ranges[0][1] - ranges[0][0]}, so that each one's panels fit a node's "
                     "SRAM")
    if not notes:
        return None
    out = b.finish([new[o.id] for o in graph.outputs], graph.filename,
                   [replace(u, param=new[u.param.id], value=new[u.value.id])
                    for u in graph.updates])
    return replace(out, grad_calls=tuple((line, col, new[n.id])
                                         for line, col, n in graph.grad_calls),
                   constants=graph.constants), notes, keep, adds


def accumulate_in_place(graph: Graph, adds: list[int], steps: list[Step],
                        values: dict[int, Value]) -> None:
    """Store each addition's result in its running sum's buffer (`Value.alias`, as an update
    in place, compiler.writeback.InPlace) where that is safe: the step is one elementwise
    kernel (storing no split copy), it reads the running sum element for element in the
    result's own layout and dtype, and no later step reads the running sum."""
    in_place = InPlace(steps)
    nodes = {n.id: n for n in graph.nodes}
    for nid in adds:
        prev = values.get(nodes[nid].inputs[0].id)
        v = values.get(nid)              # none: the last addition fused into its reader
        if (v is not None and prev is not None and prev.base is None
                and in_place.allows(v, prev) and not steps[in_place.producer[id(v)]].also):
            v.alias = prev
