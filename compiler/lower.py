"""The `lower` and `map` passes: IR graph -> kernel ops -> steps over distributed values.

`lower` decides what kind of kernel computes each IR node. Elementwise nodes (unary, binary,
casts) are fused into trees: a node whose only reader is an elementwise node of the same shape,
and which is not an output, is computed inside its reader's loop instead of being stored.
Broadcasts and literal splats are never stored either: a broadcast is read in place as a row
vector, a column or a scalar (`broadcast_mode`); only the N-d patterns that are none of these are
materialised, by the fallback kernel. Reductions (argmax too), softmax, log_softmax, layernorm
and the first-maximum mask of 1-D and 2-D values and all matmuls and transposes have
distributed kernels; those of 3-D and 4-D values fall back to computing on a replicated copy.
A reduction over every axis of a 2-D or larger value (in the IR a reshape to 1-D, then a
reduction) is one kernel that reduces the value where it lies. A reshape that keeps the 2-D
view, or turns a vector [N] into the column [N, 1], is read in place by elementwise kernels
(a relabelling); its own step, a local copy, runs only if another kernel reads it.

`map_to_mesh` then picks a layout for every value (2-D blocks for matrices, vectors split along
grid columns and replicated down rows, ...; see compiler.layout), inserts a `Redistribute` step
wherever a reader needs a value in another layout than it was produced in, and creates the
steps in program order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compiler.asmgen import CompilerLimit
from compiler.batched import BandMatmul, BatchedMatmul
from compiler.comm import Redistribute
from compiler.conv import conv_operand_layout, map_col2im, map_conv, map_pool
from compiler.gather import Gather, index_map
from compiler.grid import Grid
from compiler.ir import POOL_OPS, REDUCE_OPS, SHAPE_OPS, Graph, Node, Op
from compiler.kernels import (
    ArgMax,
    DenseReshape,
    Elementwise,
    LayerNorm,
    Leaf,
    LogSoftmax,
    MaxMask,
    NdBroadcast,
    NdReduce,
    Reduce,
    ReduceAll,
    Softmax,
)
from compiler.layout import (
    Layout,
    batch_bands,
    batched_row_split,
    choose_skew,
    grid_rows_layout,
    make_layout,
    round_up,
    split,
    view_of,
)
from compiler.matmul import SPLIT_PIECES, Matmul, SplitBf16
from compiler.plan import ELEMENTWISE_OPS, Step, Value
from compiler.summa import SpmdStream, SpmdSumma
from d1isa.machine import Machine

MAX_FUSED_OPS = 10
MAX_FUSED_STORED = 6


def broadcast_mode(src: tuple[int, ...], dst: tuple[int, ...]) -> str:
    """How an elementwise kernel reads a broadcast from `src` to `dst`: "scalar", "row" (a
    [C] vector reused by every row), "col" (one value per row), or "general"."""
    n = len(dst)
    s = (1,) * (n - len(src)) + tuple(src)
    if all(x == 1 for x in s):
        return "scalar"
    if n >= 1 and all(x == 1 for x in s[:-1]) and s[-1] == dst[-1]:
        return "row"
    if n >= 2 and s[-1] == 1 and s[:-1] == tuple(dst[:-1]):
        return "col"
    return "general"


# ---- lower ------------------------------------------------------------------------------------

@dataclass
class KOp:
    """One kernel: `kind` in input, fused, reduce, reduce_all, softmax (log_softmax too),
    max_mask, argmax, layernorm, matmul, transpose, reshape, broadcast, gather (slice, unslice,
    concat, im2col), conv (conv2d, conv2d_transpose), pool (maxpool2d, avgpool2d), col2im."""

    kind: str
    node: Node
    expr: tuple | None = None          # fused: tree over IR nodes, ("leaf", node) at the leaves;
                                       # gather: (operand nodes, flat index, ids of the
                                       # nodes fused in) of a chain of moves
    nops: list[str] = field(default_factory=list)


def lower(graph: Graph, keep: frozenset[int] | set[int] = frozenset()) -> list[KOp]:
    """Kernel ops in program order, with elementwise fusion decided. Nodes in `keep` are
    stored like outputs, never fused into their readers (a data-parallel program all-reduces
    them across chips, compiler.dataparallel)."""
    users = graph.users()
    # An update's value is stored like an output: the write-back (compiler.writeback) reads it.
    outputs = {o.id for o in graph.outputs} | {u.value.id for u in graph.updates} | set(keep)
    fused_into: set[int] = set()
    trees: dict[int, tuple[tuple, list[str]]] = {}

    def inlinable(x: Node, reader: Node) -> bool:
        return (x.op in ELEMENTWISE_OPS and x.id not in outputs and len(users[x.id]) == 1
                and x.shape == reader.shape)

    for node in reversed(graph.nodes):
        if node.op not in ELEMENTWISE_OPS or node.id in fused_into:
            continue
        state: dict = {"ops": MAX_FUSED_OPS, "stored": set()}
        names: list[str] = []

        def build(x: Node, reserve: int = 0, state: dict = state, names: list = names,
                  fused: list | None = None) -> tuple:
            """The expression tree of x. `reserve` stored values are still owed to x's
            ancestors' later operands, so a child is fused only if, with everything it brings
            in, the kernel still reads at most MAX_FUSED_STORED stored values; otherwise the
            attempt is undone and the child is read from SRAM."""
            state["ops"] -= 1
            names.append(x.op.value)
            kids = []
            for i, c in enumerate(x.inputs):
                owed = reserve + sum(1 for d in x.inputs[i + 1:] if d.op is not Op.CONST)
                if (c.op in ELEMENTWISE_OPS and inlinable(c, x) and state["ops"] > 0
                        and len(state["stored"]) + 1 + owed <= MAX_FUSED_STORED):
                    saved = (state["ops"], set(state["stored"]), len(names))
                    added: list[int] = [c.id]
                    tree = build(c, owed, fused=added)
                    if len(state["stored"]) + owed <= MAX_FUSED_STORED:
                        # Commit at the top; inside an attempt, the caller decides.
                        (fused_into.update if fused is None else fused.extend)(added)
                        kids.append(tree)
                        continue
                    state["ops"], state["stored"] = saved[0], saved[1]
                    del names[saved[2]:]
                if c.op is not Op.CONST:
                    state["stored"].add(c.id)
                kids.append(("leaf", c))
            return ("op", x.op, tuple(kids), x.rounds, x)

        trees[node.id] = (build(node), list(reversed(names)))
    # A reduction over every axis of a 2-D or larger value is a reshape to 1-D and a reduction
    # of axis 0 in the IR; unless the flat vector is needed itself, one kernel reduces the
    # value where it lies.
    reduce_all: set[int] = set()
    for node in graph.nodes:
        x = node.inputs[0] if node.op in REDUCE_OPS and node.op is not Op.ARGMAX else None
        if (x is not None and node.ndim == 0 and x.op is Op.RESHAPE and x.ndim == 1
                and x.inputs[0].ndim >= 2 and len(users[x.id]) == 1 and x.id not in outputs):
            reduce_all.update((node.id, x.id))
    moves = _fuse_moves(graph, users, outputs, reduce_all)
    out = []
    for node in graph.nodes:
        if node.op in (Op.INPUT, Op.PARAM):
            # A param is read like an input and placed like one; it just stays in SRAM.
            out.append(KOp("input", node))
        elif node.op in ELEMENTWISE_OPS:
            if node.id in fused_into:
                continue
            expr, names = trees[node.id]
            out.append(KOp("fused", node, expr, names))
        elif node.op is Op.BROADCAST:
            if broadcast_mode(node.inputs[0].shape, node.shape) == "general":
                out.append(KOp("broadcast", node))
        elif node.op is Op.CONST:
            continue
        elif node.op is Op.ARGMAX:
            out.append(KOp("argmax", node))
        elif node.op in REDUCE_OPS:
            out.append(KOp("reduce_all" if node.id in reduce_all else "reduce", node))
        elif node.op is Op.LAYERNORM:
            out.append(KOp("layernorm", node))
        elif node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX):
            out.append(KOp("softmax", node))
        elif node.op is Op.MAX_MASK:
            out.append(KOp("max_mask", node))
        elif node.id in moves:
            if moves[node.id] is not None:
                out.append(KOp("gather", node, moves[node.id]))
        elif node.op is Op.RESHAPE:
            if node.id not in reduce_all:
                out.append(KOp("reshape", node))
        elif node.op is Op.MATMUL:
            out.append(KOp("matmul", node))
        elif node.op is Op.TRANSPOSE:
            out.append(KOp("transpose", node))
        elif node.op in (Op.CONV2D, Op.CONV2D_TRANSPOSE):
            out.append(KOp("conv", node))
        elif node.op in POOL_OPS:
            out.append(KOp("pool", node))
        elif node.op is Op.COL2IM:
            out.append(KOp("col2im", node))
        elif node.op in SHAPE_OPS:
            out.append(KOp("gather", node))
        else:  # pragma: no cover - the IR has no other ops (grad nodes never reach lower)
            raise AssertionError(f"cannot lower {node.op}")
    return out


def _fuse_moves(graph: Graph, users: dict[int, list[Node]], outputs: set[int],
                reduce_all: set[int]) -> dict[int, tuple | None]:
    """Chains of data-movement ops gathered in one go. A slice, unslice, concat, reshape or
    transpose whose only reader is another such op that is gathered (and which is not stored
    for its own sake) is not computed: its reader's gather index is composed with its own, so
    `reshape(transpose(h, [1, 0, 2]), [64, 128])` moves every element once. Returns, for every
    node of a chain, its composed (operand nodes, flat index, ids of the nodes fused in) if it
    is gathered, or None if it is fused into its reader."""
    def movable(x: Node) -> bool:
        return (x.op in SHAPE_OPS or x.op in (Op.TRANSPOSE, Op.RESHAPE)) and (
            x.id not in outputs and x.id not in reduce_all and len(users[x.id]) == 1
            and not _fills(x))

    out: dict[int, tuple | None] = {}
    for node in reversed(graph.nodes):
        if node.id in out or not (node.op in SHAPE_OPS or node.op in (Op.TRANSPOSE, Op.RESHAPE)):
            continue
        if _fills(node):
            continue        # its -1 entries mean -inf, an operand's would mean 0
        if node.id in reduce_all or not any(movable(x) for x in node.inputs):
            continue
        if node.op is Op.RESHAPE:
            old, new = view_of(node.inputs[0].shape), view_of(node.shape)
            if old == new or (old == new[::-1] and 1 in old):
                continue        # read in place (a relabelling), not gathered
        out[node.id] = _compose(node, movable, out)
    return out


def _fills(node: Node) -> bool:
    """An im2col whose padding is not zero (-inf: the patches of a maxpool's gradient)."""
    return node.op is Op.IM2COL and bool(node.value)


def _compose(node: Node, movable, fused: dict[int, tuple | None]) -> tuple:
    """(operands, index, ids of the nodes fused in) of `node` with every movable operand
    (recursively) fused into it."""
    idx = index_map(node).ravel()
    srcs: list[Node] = []
    inner: list[int] = []
    new = np.full(idx.shape, -1, dtype=np.int64)
    base_in = base_out = 0
    for x in node.inputs:
        seg = (idx >= base_in) & (idx < base_in + x.size)
        if movable(x):
            fused[x.id] = None
            sub_srcs, sub_idx, sub_inner = _compose(x, movable, fused)
            inner += [*sub_inner, x.id]
            mapped = sub_idx[idx[seg] - base_in]
            new[seg] = np.where(mapped >= 0, mapped + base_out, -1)
            srcs += sub_srcs
            base_out += sum(s.size for s in sub_srcs)
        else:
            new[seg] = idx[seg] - base_in + base_out
            srcs.append(x)
            base_out += x.size
        base_in += x.size
    return tuple(srcs), new, tuple(inner)


# ---- map --------------------------------------------------------------------------------------

class Mapper:
    """Builds the steps: picks layouts and inserts redistributions."""

    def __init__(self, graph: Graph, grid: Grid, machine: Machine, options) -> None:
        self.graph = graph
        self.grid = grid
        self.machine = machine
        self.options = options
        self.steps: list[Step] = []
        self.values: dict[int, Value] = {}
        self.cache: dict[tuple, Value] = {}
        self.inputs: list[Value] = []
        self.users = graph.users()
        self.outputs = {o.id for o in graph.outputs} | {u.value.id for u in graph.updates}
        self.updated = {u.param.id for u in graph.updates}
        self.ntemp = 0
        self.split_memo: dict[int, int] = {}
        self.vision = _vision_derived(graph)
        self.deferred: set[int] = set()       # general broadcasts gathered by their readers

    @property
    def placed(self) -> list[Value]:
        """Every value the host writes before a run: the inputs and params, and the copies of
        inputs it places besides (`Value.copies`)."""
        return self.inputs + [c for v in self.inputs for c in v.copies]

    # ---- layouts ------------------------------------------------------------------------------

    def layout(self, shape: tuple[int, ...], dtype: str, ra: str | None, ca: str | None,
               dense: bool = False) -> Layout:
        return make_layout(shape, dtype, ra, ca, self.grid, dense)

    def default(self, shape: tuple[int, ...], dtype: str) -> Layout:
        if len(shape) >= 2:
            return self.layout(shape, dtype, "P", "Q")
        if len(shape) == 1:
            return self.layout(shape, dtype, None, "Q")
        return self.layout(shape, dtype, None, None)

    def input_layout(self, node: Node) -> Layout:
        """An input read only as broadcast rows, columns or scalars is placed that way up
        front (looking through a widening cast), so reading it needs no communication."""
        users = self.users[node.id]
        g = self.grid
        if users and all(self.vision_broadcast(u) for u in users) and node.size <= 4096:
            # a per-channel bias of a vision value: a copy everywhere, gathered locally
            return self.layout(node.shape, node.dtype, None, None)
        batched = self.batched_operand_layout(node)
        if batched is not None:
            return batched
        banded = self.band_operand_layout(node)
        if banded is not None:
            return banded
        vision = conv_operand_layout(self, node)
        if vision is not None:
            return vision
        # Not an updated param: its new value comes out of unskewed kernels, and would need a
        # redistribution every step to be written back skewed.
        if (users and g.P == g.Q and g.P > 1 and self.options.matmul == "summa"
                and self.options.preskew and node.ndim == 2 and node.id not in self.updated):
            # Matmuls that read it transposed (a backward pass's transpose(x) @ g) read a
            # copy of their own, so only the others decide.
            reads = self.matmul_reads(node)
            plain = {(mm.id, k) for mm, k, t in reads or () if not t}
            for k, skew in ((0, "A"), (1, "B")):
                if reads is not None and plain and all(kk == k for _, kk in plain) and not any(
                        (mm, 1 - k) in plain for mm, _ in plain):
                    return make_layout(node.shape, node.dtype, "P", "Q", g, skew=skew,
                                       skew_ab=choose_skew(g.P))
        modes = set()
        for u in users:
            if u.op is Op.BROADCAST:
                modes.add(broadcast_mode(node.shape, u.shape))
            elif (u.op is Op.CAST and self.users[u.id]
                  and all(v.op is Op.BROADCAST for v in self.users[u.id])):
                modes.update(broadcast_mode(u.shape, v.shape) for v in self.users[u.id])
            else:
                modes.add("full")
        if modes == {"col"}:
            return self.layout(node.shape, node.dtype, "P", None)
        if modes == {"scalar"}:
            return self.layout(node.shape, node.dtype, None, None)
        if modes == {"row"}:
            return self.layout(node.shape, node.dtype, None, "Q")
        return self.default(node.shape, node.dtype)

    def matmul_reads(self, node: Node) -> list[tuple[Node, int, bool]] | None:
        """How matmuls read `node`, looking through exact widening casts and transposes (the
        forms `matmul_operand` reads through): (matmul, operand index, transposed) for each, or
        None if anything else reads it or one of those casts and transposes."""
        out: list[tuple[Node, int, bool]] = []

        def walk(n: Node, t: bool) -> bool:
            for u in self.users[n.id]:
                if u.op is Op.MATMUL:
                    out.extend((u, k, t) for k, x in enumerate(u.inputs) if x is n)
                elif u.op is Op.TRANSPOSE or _widens(u):
                    if u.id in self.outputs or not walk(u, t != (u.op is Op.TRANSPOSE)):
                        return False
                else:
                    return False
            return True

        return out if walk(node, False) else None

    def matmul_operand(self, x: Node) -> tuple[Value, bool] | None:
        """What a matmul reads for operand x, if not x's own value: looking through transposes
        and exact widening casts (as a backward pass reads forward values:
        transpose(cast(h, f32))), a stored 2-D value that is bf16 (read as bf16: no f32 copy,
        no f32 transpose) or an input read transposed (the host places its transpose); that
        value and whether it is read transposed."""
        t = False
        n = x
        while n.op is Op.TRANSPOSE or _widens(n):
            t = t != (n.op is Op.TRANSPOSE)
            n = n.inputs[0]
        if n is x or n.id not in self.values or n.ndim != 2:
            return None
        v = self.values[n.id]
        if v.dtype == "bf16" or (t and n.op is Op.INPUT):
            return v, t
        return None

    def oriented(self, v: Value, transposed: bool, loc, label: str) -> Value:
        """v, or its transpose in the 2-D block layout: a copy the host places for an input
        (`Value.copies`, written with the input at no run-time cost), else a transposing
        redistribution."""
        if not transposed:
            return v
        L = self.layout(v.shape[::-1], v.dtype, "P", "Q")
        if v in self.inputs and v.node.op is Op.INPUT:
            key = (id(v), "host^T")
            hit = self.cache.get(key)
            if hit is None:
                hit = self.cache[key] = Value(f"{v.name}^T", v.shape[::-1], v.dtype, L,
                                              copy_of=v, transposed=True)
                v.copies.append(hit)
            return hit
        return self.ensure(v, L, loc, label, transpose=True)

    def host_copy(self, v: Value, L: Layout, loc, label: str) -> Value:
        """v in layout L: for a program input or a param that is not updated, a copy the host
        writes with it (`Value.copies`, no run-time cost); else `ensure`."""
        if v.layout.same_distribution(L) and v.dtype == L.dtype:
            return v
        if (v in self.inputs and v.node is not None and v.node.id not in self.updated
                and not L.dense):
            key = (id(v), "host", L)
            hit = self.cache.get(key)
            if hit is None:
                hit = self.cache[key] = Value(f"{v.name}'{self._n()}", v.shape, v.dtype, L,
                                              copy_of=v)
                v.copies.append(hit)
            return hit
        return self.ensure(v, L, loc, label)

    def split(self, v: Value, loc, label: str) -> Value:
        """v (f32) as bf16 pieces in its own distribution (SplitBf16), made once: by the
        elementwise kernel that computes v, in the same loop, if there is one (a gradient
        masked by relu's derivative, say), else by a step of its own."""
        key = (id(v), "split")
        hit = self.cache.get(key)
        if hit is None:
            L = v.layout
            P = make_layout(v.shape, "bf16", L.row_axis, L.col_axis, self.grid, L.dense,
                            L.skew, L.skew_ab, pieces=SPLIT_PIECES)
            hit = self.cache[key] = Value(f"{v.name}.x{SPLIT_PIECES}", v.shape, "bf16", P)
            if not self.split_where_computed(v, hit):
                self.steps.append(SplitBf16(hit, v, loc, label))
        return hit

    def split_where_computed(self, v: Value, pieces: Value) -> bool:
        """Make the elementwise kernel that computes v also store it as `pieces`, if v comes
        from one (and no other split); True if it does."""
        producer = next((st for st in self.steps if st.out is v), None)
        if isinstance(producer, Elementwise) and producer.split is None and not v.layout.dense:
            producer.store_split(pieces)
            return True
        return False

    def ensure(self, v: Value, L: Layout, loc, label: str, transpose: bool = False) -> Value:
        """`v` in layout L: itself, or a redistributed copy (made once per layout)."""
        if not transpose and v.layout.same_distribution(L) and v.dtype == L.dtype:
            return v
        key = (id(v), L.rows, L.cols, L.row_axis, L.col_axis, L.dense, transpose, L.row_split,
               L.bands, L.band_axis, L.band_rows, L.band_cols)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        out = Value(f"{v.name}'{self._n()}", v.shape if not transpose else v.shape[::-1],
                    v.dtype, L)
        self.steps.append(Redistribute(out, v, transpose, loc, label, self.grid))
        self.cache[key] = out
        return out

    def _n(self) -> int:
        self.ntemp += 1
        return self.ntemp

    def new_value(self, node: Node, L: Layout) -> Value:
        v = Value(node.name, node.shape, node.dtype, L, node)
        self.values[node.id] = v
        return v

    # ---- walking the kernels ------------------------------------------------------------------

    def run(self, kops: list[KOp]) -> list[Step]:
        for k in kops:
            try:
                getattr(self, "_" + k.kind)(k)
            except CompilerLimit as e:
                if e.loc is None:
                    e.loc = self._loc(k.node)
                raise
        return self.steps

    def _input(self, k: KOp) -> None:
        v = self.new_value(k.node, self.input_layout(k.node))
        self.inputs.append(v)

    def _loc(self, node: Node) -> tuple[int, int]:
        return (node.line, node.col)

    def _fused(self, k: KOp) -> None:
        node = k.node
        loc = self._loc(node)
        # The result takes the layout of the first operand that is read in full.
        L = None
        for leaf in _leaf_nodes(k.expr):
            if leaf.op is Op.CONST or (leaf.op is Op.BROADCAST and leaf.id not in self.values):
                continue
            src = self.values[leaf.id].layout
            L = make_layout(node.shape, node.dtype, src.row_axis, src.col_axis, self.grid,
                            src.dense, row_split=src.row_split, **src.band_kw)
            break
        if L is None:
            L = self.default(node.shape, node.dtype)

        def build(vcol: bool) -> tuple[tuple, list[Leaf]]:
            leaves: list[Leaf] = []
            index: dict[tuple, int] = {}

            def leaf_index(x: Node) -> int:
                if x.op is Op.CONST:
                    key = ("const", x.value, x.dtype)
                    lf = Leaf("const", const=float(x.value))
                elif x.id in self.deferred:
                    mode, v = self.gathered_broadcast(x, L, loc)
                    key = (mode, id(v))
                    lf = Leaf(mode, v)
                elif x.op is Op.BROADCAST and x.id not in self.values:
                    mode = broadcast_mode(x.inputs[0].shape, x.shape)
                    src_node, packed = _read_in_place(x.inputs[0], vcol and mode == "col"
                                                      and L.row_split is None
                                                      and L.bands is None)
                    src = self.values[src_node.id]
                    if packed:
                        mode = "vcol"
                        want = self.layout(src.shape, src.dtype, None, L.row_axis)
                    elif mode == "row":
                        want = make_layout(src.shape, src.dtype, None, L.col_axis, self.grid,
                                           **L.band_kw)
                    elif mode == "col":
                        want = make_layout(src.shape, src.dtype, L.row_axis, None, self.grid,
                                           row_split=L.row_split, **L.band_kw)
                    else:
                        want = self.layout(src.shape, src.dtype, None, None)
                    v = self.ensure(src, want, loc, node.name)
                    key = (mode, id(v))
                    lf = Leaf(mode, v)
                else:
                    v = self.values[_read_in_place(x, False)[0].id]
                    want = make_layout(v.shape, v.dtype, L.row_axis, L.col_axis, self.grid,
                                       L.dense, row_split=L.row_split, **L.band_kw)
                    v = self.ensure(v, want, loc, node.name)
                    key = ("full", id(v))
                    lf = Leaf("full", v)
                if key not in index:
                    index[key] = len(leaves)
                    leaves.append(lf)
                return index[key]

            def convert(e: tuple) -> tuple:
                if e[0] == "leaf":
                    return ("leaf", leaf_index(e[1]))
                _, op, kids, rounds, _ = e
                return ("op", op, tuple(convert(c) for c in kids), rounds)

            return convert(k.expr), leaves

        expr, leaves = build(True)
        packed = {id(lf.value) for lf in leaves if lf.mode == "vcol"}
        if any(lf.mode != "vcol" and id(lf.value) in packed for lf in leaves):
            # One pointer per stored value: a vector read both as a column and otherwise
            # is read as its reshaped copy.
            expr, leaves = build(False)
        out = self.new_value(node, L)
        self.steps.append(Elementwise(out, expr, leaves, loc, node.name, k.nops))

    def operand(self, x: Node, loc, label: str) -> Value:
        """x's value for a kernel that needs an ordinary layout: a value banded along grid
        rows (a split-N matmul's result, whose grid rows each hold one column block) is
        redistributed into the default layout first."""
        v = self.values[x.id]
        L = v.layout
        if L is not None and L.bands is not None and L.band_axis == "P":
            return self.ensure(v, self.default(v.shape, v.dtype), loc, label)
        return v

    def vision_broadcast(self, node: Node) -> bool:
        """A broadcast that no pattern of the elementwise kernels reads in place, whose
        readers are all elementwise and meet a value of a vision kernel (a per-channel bias
        [C, 1, 1] of conv2d's [N, C, H, W]): each reader gathers it into its own layout, as a
        column where it is constant along rows, instead of a dense copy on every node."""
        return (node.op is Op.BROADCAST
                and broadcast_mode(node.inputs[0].shape, node.shape) == "general"
                and bool(self.users[node.id])
                and all(u.op in ELEMENTWISE_OPS for u in self.users[node.id])
                and any(x.id in self.vision for u in self.users[node.id] for x in u.inputs))

    def _broadcast(self, k: KOp) -> None:
        node = k.node
        if self.vision_broadcast(node):
            self.deferred.add(node.id)
            return
        loc = self._loc(node)
        src = self.operand(node.inputs[0], loc, node.name)
        rep = self.ensure(src, self.layout(src.shape, src.dtype, None, None, True), loc,
                          node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdBroadcast(out, rep, loc, node.name))

    def gathered_broadcast(self, x: Node, L: Layout, loc) -> tuple[str, Value]:
        """A deferred broadcast (`vision_broadcast`) for a reader in layout L: gathered as the
        column [rows, 1] in L's rows ("col") when it is constant along the last axis, else
        whole in L ("full"); once per layout."""
        src = x.inputs[0]
        flat = np.broadcast_to(np.arange(src.size).reshape(src.shape), x.shape)
        if x.ndim >= 2 and src.shape[-1] == 1:
            mode, shape, index = "col", x.shape[:-1] + (1,), flat[..., :1]
            want = make_layout(shape, x.dtype, L.row_axis, None, self.grid,
                               row_split=L.row_split)
        else:
            mode, shape, index = "full", x.shape, flat
            want = make_layout(shape, x.dtype, L.row_axis, L.col_axis, self.grid, L.dense,
                               row_split=L.row_split)
        key = ("bcast", x.id, mode, want.row_axis, want.col_axis, want.dense, want.row_split)
        v = self.cache.get(key)
        if v is None:
            v = Value(f"{x.name}'{self._n()}", shape, x.dtype, want)
            self.steps.append(Gather(v, [self.values[src.id]],
                                     np.ascontiguousarray(index).reshape(view_of(shape)),
                                     loc, x.name, self.grid, "gather(broadcast)"))
            self.cache[key] = v
        return mode, v


    def _reduce(self, k: KOp, kernel: type | None = None) -> None:
        """A reduction along one axis (`kernel` ArgMax: an argmax, laid out the same)."""
        node = k.node
        loc = self._loc(node)
        x = self.operand(node.inputs[0], loc, node.name)
        op = node.op.value
        if x.layout.row_axis == "PQ" and len(x.shape) <= 2:
            # rows over the whole grid (a vision kernel's): reduced from the block layout
            x = self.ensure(x, self.default(x.shape, x.dtype), loc, node.name)
        if x.layout and len(x.shape) <= 2:
            rows = node.axis == len(x.shape) - 1
            axis = x.layout.row_axis if rows else x.layout.col_axis
            out = self.new_value(node, self.layout(node.shape, node.dtype, None, axis))
            along = "rows" if rows else "cols"
            if kernel is None:
                self.steps.append(Reduce(out, x, op, along, loc, node.name))
            else:
                self.steps.append(kernel(out, x, along, loc, node.name))
            return
        if (x.layout and node.axis == len(x.shape) - 1 and not x.layout.dense
                and x.layout.row_axis != "PQ"):
            # Along the last axis an N-d value is its 2-D view's rows, as for softmax: reduce
            # them in place into a vector of rows, then gather that (1/C of x) into the
            # result's shape, rather than replicate all of x on every node.
            self.reduce_to_vector(node, x, "rows", math.prod(x.shape[:-1]), x.layout.row_axis,
                                  op, kernel, loc)
            return
        if self.by_columns(x):
            # Along any other axis, reduce the columns of x's matrix [K, rest] and gather
            # that vector (1/K of x) into the result's shape, rather than replicate all of
            # x on every node.
            mat, _ = self.axis_matrix(x, node.axis, loc, node.name)
            self.reduce_to_vector(node, mat, "cols", mat.shape[1], mat.layout.col_axis, op,
                                  kernel, loc)
            return
        rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdReduce(out, rep, op, node.axis, loc, node.name))

    def reduce_to_vector(self, node: Node, src: Value, along: str, n: int, axis: str | None,
                         op: str, kernel: type | None, loc: tuple[int, int]) -> None:
        """Reduce the `along` ("rows" or "cols") of the 2-D `src` into a vector of its `n`
        other elements split over grid `axis` (with `kernel`, or `Reduce` by `op`), then
        gather that vector (1/K of the operand) into `node`'s shape."""
        flat = Value(f"{node.name}'{self._n()}", (n,), node.dtype,
                     self.layout((n,), node.dtype, None, axis))
        if kernel is None:
            self.steps.append(Reduce(flat, src, op, along, loc, node.name))
        else:
            self.steps.append(kernel(flat, src, along, loc, node.name))
        out = self.new_value(node, self.default(node.shape, node.dtype))
        self.steps.append(Gather(out, [flat], np.arange(n).reshape(view_of(node.shape)),
                                 loc, node.name, self.grid, "reshape"))

    def by_columns(self, x: Value) -> bool:
        """Whether an N-d value is worked on along an axis but the last through its matrix
        (`axis_matrix`): when it is distributed (not dense) over several grid nodes (on a
        single node the replicated copy is x itself: no gather)."""
        return bool(x.layout) and not x.layout.dense and self.grid.size > 1

    def axis_matrix(self, x: Value, axis: int, loc: tuple[int, int], name: str
                    ) -> tuple[Value, np.ndarray]:
        """x gathered as the matrix [K, rest] of `axis` against the others in order (for axis 0
        the same elements in the same order, but not the view [K*A, B]: one redistribution of
        x), and the flat index in x of each of its elements. Made once per (x, axis): sum,
        max and softmax along one axis share it."""
        key = ("axis matrix", id(x), axis)
        hit = self.cache.get(key)
        if hit is None:
            moved = np.moveaxis(np.arange(math.prod(x.shape)).reshape(x.shape), axis, 0)
            cols = np.ascontiguousarray(moved).reshape(x.shape[axis], -1)
            mat = Value(f"{name}'{self._n()}", cols.shape, x.dtype,
                        self.default(cols.shape, x.dtype))
            self.steps.append(Gather(mat, [x], cols, loc, name, self.grid, "gather(axis)"))
            hit = self.cache[key] = (mat, cols)
        return hit

    def _reduce_all(self, k: KOp) -> None:
        node = k.node
        x = self.operand(node.inputs[0].inputs[0], self._loc(node), node.name)  # via the reshape
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None))
        self.steps.append(ReduceAll(out, x, node.op.value, self._loc(node), node.name))

    def _softmax(self, k: KOp) -> None:
        """softmax and log_softmax: the same layouts, the same all-reductions."""
        self._along_axis(k, Softmax if k.node.op is Op.SOFTMAX else LogSoftmax)

    def _max_mask(self, k: KOp) -> None:
        self._along_axis(k, MaxMask)

    def _layernorm(self, k: KOp) -> None:
        self._along_axis(k, LayerNorm)

    def _argmax(self, k: KOp) -> None:
        """Laid out like a reduction's result; the same N-d fallback."""
        self._reduce(k, ArgMax)

    def _along_axis(self, k: KOp, kernel: type) -> None:
        """A kernel whose result has its operand's shape, computed along an axis: distributed
        for 1-D and 2-D values and along the last axis of N-d ones (the result in the
        operand's layout), else on a replicated copy."""
        node = k.node
        loc = self._loc(node)
        x = self.operand(node.inputs[0], loc, node.name)
        last = node.axis == len(x.shape) - 1
        if len(x.shape) <= 2 or (last and not x.layout.dense):
            # Along the last axis, an N-d value is its 2-D view along rows.
            L = x.layout
            out = self.new_value(node, make_layout(node.shape, node.dtype, L.row_axis,
                                                   L.col_axis, self.grid, L.dense,
                                                   row_split=L.row_split, bands=L.bands,
                                                   band_rows=L.band_rows))
            self.steps.append(kernel(out, x, "rows" if last else "cols", loc, node.name))
            return
        if not last and self.by_columns(x):
            # Along another axis: the kernel along the columns of x's matrix [K, rest], whose
            # result is gathered back into x's shape, rather than replicate all of x on every
            # node.
            mat, cols = self.axis_matrix(x, node.axis, loc, node.name)
            L = mat.layout
            res = Value(f"{node.name}'{self._n()}", mat.shape, node.dtype,
                        make_layout(mat.shape, node.dtype, L.row_axis, L.col_axis, self.grid,
                                    L.dense, row_split=L.row_split, bands=L.bands,
                                    band_rows=L.band_rows), node)   # (layernorm's eps)
            self.steps.append(kernel(res, mat, "cols", loc, node.name))
            back = np.empty(cols.size, dtype=np.int64)
            back[cols.reshape(-1)] = np.arange(cols.size)
            out = self.new_value(node, self.default(node.shape, node.dtype))
            self.steps.append(Gather(out, [res], back.reshape(view_of(node.shape)), loc,
                                     node.name, self.grid, "gather(axis)"))
            return
        rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdReduce(out, rep, node.op.value, node.axis, loc, node.name))

    def _reshape(self, k: KOp) -> None:
        """The same elements in row-major order, in another shape. Where the 2-D view does not
        change, the value keeps its layout: the same bytes read under the new shape
        (`Value.base`), or a local copy where the result is stored for its own sake (an
        output, an update) or its operand is a param that is updated in place (whose buffer
        is overwritten during the run); a vector turned into a column or
        back ([N] and [N, 1]) is a transposing redistribution into the swapped layout, local
        too; anything else goes through a dense replicated copy, whose bytes are already in
        the new shape's order."""
        node = k.node
        loc = self._loc(node)
        x = self.values[node.inputs[0].id]
        L = x.layout
        old, new = view_of(x.shape), view_of(node.shape)
        if old == new:
            out = self.new_value(node, L)
            if self._may_view(node, x):
                out.base = x.base or x
            else:
                self.steps.append(Redistribute(out, x, False, loc, node.name, self.grid))
        elif old == new[::-1] and 1 in old and not L.dense and L.row_axis != "PQ":
            out = self.new_value(node, self.layout(node.shape, node.dtype, L.col_axis,
                                                   L.row_axis))
            self.steps.append(Redistribute(out, x, True, loc, node.name, self.grid))
        elif L.dense:
            rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc,
                              node.name)
            out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
            self.steps.append(DenseReshape(out, rep, loc, node.name))
        else:
            self._gather(k)

    def _gather(self, k: KOp) -> None:
        """slice, unslice, concat, transpose with axes, a reshape that changes the 2-D view:
        the result's elements gathered from the operands where they lie (compiler.gather)."""
        node = k.node
        L = self.batched_operand_layout(node) or self.default(node.shape, node.dtype)
        operands, index = k.expr[:2] if k.expr is not None else (node.inputs, index_map(node))
        srcs = [self.values[x.id] for x in operands]
        out = self.new_value(node, L)
        step = Gather(out, srcs, index.reshape(view_of(node.shape)), self._loc(node),
                      node.name, self.grid, node.op.value,
                      fill=node.value if _fills(node) else 0.0)
        src = step.in_place()
        if src is not None and self._may_view(node, src):
            out.base = src.base or src          # the same bytes: nothing moves
            return
        self.steps.append(step)

    def _may_view(self, node: Node, src: Value) -> bool:
        """May `node`'s value be read from `src`'s buffer (`Value.base`)? Not if it is stored
        for its own sake (an output, an update), nor if src is a param updated during the run
        (its buffer is overwritten)."""
        base = src.base or src
        return node.id not in self.outputs and not (base.node is not None
                                                    and base.node.id in self.updated)

    # ---- vision (compiler.conv) ----------------------------------------------------------------

    def _conv(self, k: KOp) -> None:
        map_conv(self, k.node)

    def _pool(self, k: KOp) -> None:
        map_pool(self, k.node)

    def _col2im(self, k: KOp) -> None:
        map_col2im(self, k.node)

    # ---- batched matmul -----------------------------------------------------------------------

    def batch_split(self, entries: int, rows: int) -> tuple[int, ...]:
        return batched_row_split(entries, rows, self.grid.P, self.machine.mma_dim)

    def batched_plan(self, mm: Node) -> tuple[int, int, int, int, bool, str] | None:
        """(entries, M, K, N, padded, mode) of a matmul that runs as a batch of products on
        sub-grids, or None (2-D, B shared by the whole batch, or the sequential mapping).
        `padded`: with more entries than grid rows, M and K are rounded up to whole tiles.
        `mode`, where the products run (compiler.batched):
        "columns" on bands of grid columns (a banded layout), where the batch divides the grid
        columns and the products' tiles spread at least as well over a column band (all grid
        rows) as over a row band (all grid columns); a tie goes to the columns: the heads of
        a projection [S, H D] are column blocks already, so its head split and merge then
        move nothing.
        "nodes", one node each, whole entries on every grid node: with more entries than grid
        rows and products narrower than the grid (N fewer tiles than grid columns), where a
        1 x Q row sub-grid would leave grid columns idle and put all of a narrow batch on
        one node of each grid row.
        "rows" otherwise: on bands of grid rows, or whole entries on each grid row."""
        a, b = mm.inputs
        if mm.ndim == 2 or b.ndim == 2 or self.options.batched == "sequential":
            return None
        entries = math.prod(mm.shape[:-2])
        M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
        t = self.machine.mma_dim
        P, Q = self.grid.P, self.grid.Q
        padded = entries > P and (M % t != 0 or K % t != 0)
        mode = "rows"
        mt, nt = -(-M // t), -(-N // t)
        # Bands of equal width, so that every product's blocks are stored alike (the sub-grid
        # matmul addresses them with its own layout's row stride).
        if self.options.batched == "subgrid" and Q % entries == 0 and not padded:

            def tiles(rows: int, cols: int) -> int:
                return -(-mt // rows) * -(-nt // cols)

            by_rows = tiles(P // entries, Q) if entries <= P else math.inf
            if tiles(P, Q // entries) <= by_rows:
                mode = "columns"
        if mode == "rows" and entries > P and nt < Q:
            mode = "nodes"
        return entries, M, K, N, padded, mode

    def batch_layout(self, shape: tuple[int, ...], dtype: str, entries: int, rows: int,
                     mode: str) -> Layout:
        """The batched layout of a batch of `entries` matrices of `rows` rows for the products'
        `mode` (batched_plan): on bands of grid columns (banded), whole entries on every grid
        node (rows over all grid nodes, cut at entries), or on bands of grid rows."""
        if mode == "columns":
            return make_layout(shape, dtype, "P", "Q", self.grid,
                               bands=batch_bands(entries, self.grid.Q), band_rows=rows)
        if mode == "nodes":
            return grid_rows_layout(shape, dtype, self.grid, tuple(
                e * rows for e in split(entries, self.grid.P * self.grid.Q, 1)))
        return make_layout(shape, dtype, "P", "Q", self.grid,
                           row_split=self.batch_split(entries, rows))

    def batched_operand_layout(self, node: Node) -> Layout | None:
        """The batched layout `node` is placed in when every reader is a batched matmul that
        takes it as the same operand with no broadcast or padding (so no gather is needed)."""
        users = self.users[node.id]
        if not users or node.ndim < 3:
            return None
        layouts = set()
        for u in users:
            plan = self.batched_plan(u) if u.op is Op.MATMUL else None
            if plan is None or plan[4]:
                return None
            entries, M, K, N, _, mode = plan
            batch = u.shape[:-2]
            if u.inputs[0] is node and u.inputs[1] is not node:
                want = batch + (M, K)
                rows = M
            elif u.inputs[1] is node and u.inputs[0] is not node:
                want = batch + (K, N)
                rows = K
            else:
                return None
            if node.shape != want:
                return None
            layouts.add((rows, mode))
        if len(layouts) != 1:
            return None
        entries = math.prod(node.shape[:-2])
        return self.batch_layout(node.shape, node.dtype, entries, *layouts.pop())

    def batch_operand(self, mm: Node, k: int, entries: int, rows: int, cols: int,
                      loc, dtype: str, mode: str,
                      part: tuple[int, int] | None = None) -> Value:
        """Operand k of a batched matmul as a batch [entries, rows, cols] in its batched
        layout: the value itself (redistributed if needed), or gathered (broadcast along the
        batch and zero-padded to rows x cols). With `part` = (e0, e1), only entries e0..e1-1,
        always gathered (a padded batch run in parts, `padded_chunk`)."""
        x = mm.inputs[k]
        v = self.values[x.id]
        batch = mm.shape[:-2]
        r, c = x.shape[-2:]
        e0, e1 = part if part is not None else (0, entries)
        n = e1 - e0
        L = self.batch_layout((n, rows, cols), dtype, n, rows, mode)
        if part is None and x.shape == batch + (r, c) and (r, c) == (rows, cols):
            return self.ensure(v, self.batch_layout(x.shape, dtype, entries, rows, mode),
                               loc, mm.name)
        flat = np.broadcast_to(np.arange(x.size).reshape(x.shape), batch + (r, c))
        index = np.full((n, rows, cols), -1, dtype=np.int64)
        index[:, :r, :c] = flat.reshape(entries, r, c)[e0:e1]
        out = Value(f"{mm.name}.{'ab'[k]}{self._n()}", (n, rows, cols), dtype, L)
        self.steps.append(Gather(out, [v], index.reshape(n * rows, cols), loc, mm.name,
                                 self.grid))
        return out

    def unpad(self, out: Value, c: Value, loc, label: str) -> None:
        """Gather the products `c` of padded operands, [n, Mp, N], into `out` without their
        padding rows (n entries of M rows, in out's own shape)."""
        n, Mp, N = c.shape
        index = np.arange(n * Mp * N).reshape(n, Mp, N)[:, :out.shape[-2], :]
        self.steps.append(Gather(out, [c], index.reshape(view_of(out.shape)), loc, label,
                                 self.grid))

    def _batched_matmul(self, k: KOp) -> None:
        """A @ B with 3-D or 4-D operands (compiler.batched)."""
        node = k.node
        loc = self._loc(node)
        a_node, b_node = node.inputs
        if b_node.ndim == 2:
            # One matrix for the whole batch: one 2-D matmul over all rows of A's view.
            self._matmul_2d(node, self.values[a_node.id], self.values[b_node.id])
            return
        plan = self.batched_plan(node)
        if plan is None:
            self._sequential_matmul(node)
            return
        entries, M, K, N, padded, mode = plan
        t = self.machine.mma_dim
        Mp, Kp = (round_up(M, t), round_up(K, t)) if padded else (M, K)
        dtype = a_node.dtype
        if padded:
            per = self.padded_chunk(entries, Mp, Kp, N, dtype, mode)
            if per < entries:
                self._padded_in_chunks(node, per, M, N, Mp, Kp, loc, mode)
                return
        a = self.batch_operand(node, 0, entries, Mp, Kp, loc, dtype, mode)
        b = self.batch_operand(node, 1, entries, Kp, N, loc, dtype, mode)
        if not padded:
            out = self.new_value(node, self.batch_layout(node.shape, "f32", entries, Mp, mode))
        else:
            out = Value(f"{node.name}.c{self._n()}", (entries, Mp, N), "f32",
                        self.batch_layout((entries, Mp, N), "f32", entries, Mp, mode))
        self.steps.append(BatchedMatmul(out, a, b, entries, Mp, Kp, N, loc, node.name,
                                        self.grid, self.machine, self.options))
        if padded:
            self.unpad(self.new_value(node, self.default(node.shape, "f32")), out, loc,
                       node.name)

    def padded_chunk(self, entries: int, Mp: int, Kp: int, N: int, dtype: str,
                     mode: str) -> int:
        """How many entries of a padded batched matmul run at once. A grid row (or in mode
        "nodes" a grid node) takes whole entries one after another: a large batch of small
        matrices, each padded to whole tiles (a [5832, 1, 1] @ [5832, 1, 7] takes 64 times
        A's bytes), might not fit. The batch is then cut so that one part's padded operands
        and result take at most a quarter of a node's SRAM (at least one entry per grid row
        or node)."""
        size = 2 if dtype == "bf16" else 4
        per_entry = Mp * Kp * size + Kp * N * size + Mp * N * 4
        holders = self.grid.P * (self.grid.Q if mode == "nodes" else 1)
        fits = max(1, self.machine.sram_bytes // 4 // per_entry)
        return entries if -(-entries // holders) <= fits else fits * holders

    def _padded_in_chunks(self, node: Node, per: int, M: int, N: int, Mp: int, Kp: int,
                          loc, mode: str) -> None:
        """A padded batched matmul part by part (`padded_chunk`): each part's operands are
        gathered and zero-padded, multiplied on the row sub-grids, and its products gathered
        unpadded into a value of their own, so that only one part's padded values are live at
        a time; the parts are then gathered into the result."""
        entries = math.prod(node.shape[:-2])
        dtype = node.inputs[0].dtype
        parts = []
        for e0 in range(0, entries, per):
            e1 = min(entries, e0 + per)
            n = e1 - e0
            a, b = (self.batch_operand(node, k, entries, rows, cols, loc, dtype, mode,
                                       part=(e0, e1))
                    for k, rows, cols in ((0, Mp, Kp), (1, Kp, N)))
            c = Value(f"{node.name}.c{self._n()}", (n, Mp, N), "f32",
                      self.batch_layout((n, Mp, N), "f32", n, Mp, mode))
            self.steps.append(BatchedMatmul(c, a, b, n, Mp, Kp, N, loc, node.name,
                                            self.grid, self.machine, self.options))
            part = Value(f"{node.name}.p{self._n()}", (n, M, N), "f32",
                         self.default((n, M, N), "f32"))
            self.unpad(part, c, loc, node.name)
            parts.append(part)
        res = self.new_value(node, self.default(node.shape, "f32"))
        index = np.arange(node.size).reshape(view_of(node.shape))
        self.steps.append(Gather(res, parts, index, loc, node.name, self.grid))

    def _sequential_matmul(self, node: Node) -> None:
        """`-O batched=sequential`: entry after entry on the whole grid, each operand gathered
        into a 2-D block layout, the products gathered into the result."""
        loc = self._loc(node)
        a_node, b_node = node.inputs
        batch = node.shape[:-2]
        entries = math.prod(batch)
        products = []
        for e in range(entries):
            ops = []
            for k, x in enumerate((a_node, b_node)):
                r, c = x.shape[-2:]
                flat = np.broadcast_to(np.arange(x.size).reshape(x.shape), batch + (r, c))
                index = flat.reshape(entries, r, c)[e]
                v = Value(f"{node.name}.{'ab'[k]}{self._n()}", (r, c), x.dtype,
                          self.default((r, c), x.dtype))
                self.steps.append(Gather(v, [self.values[x.id]], index, loc, node.name,
                                         self.grid))
                ops.append(v)
            M, N = node.shape[-2:]
            c = Value(f"{node.name}.c{self._n()}", (M, N), "f32", self.default((M, N), "f32"))
            self.steps.append(Matmul(c, ops[0], ops[1], loc, node.name, self.grid,
                                     self.machine, "summa", self.options.double_buffer,
                                     self.options.reach))
            products.append(c)
        out = self.new_value(node, self.default(node.shape, "f32"))
        index = np.arange(node.size).reshape(view_of(node.shape))
        self.steps.append(Gather(out, products, index, loc, node.name, self.grid))

    def _transpose(self, k: KOp) -> None:
        node = k.node
        if node.perm is not None:
            self._gather(k)
            return
        loc = self._loc(node)
        x = self.values[node.inputs[0].id]
        L = self.layout(node.shape, node.dtype, "P", "Q")
        out = Value(node.name, node.shape, node.dtype, L, node)
        self.steps.append(Redistribute(out, x, True, loc, node.name, self.grid))
        self.values[node.id] = out

    def _matmul(self, k: KOp) -> None:
        """A matmul, in SUMMA or gathered first (naive). An operand that is exactly a bf16
        value (widened, maybe transposed: `matmul_operand`) is read as bf16; if the other one
        is truly f32, that one is split into bf16 pieces (SplitBf16), so the product runs on
        the bf16 matrix unit with f32 results."""
        node = k.node
        if max(node.ndim, node.inputs[0].ndim, node.inputs[1].ndim) > 2:
            self._batched_matmul(k)
            return
        loc = self._loc(node)
        a, b = (self.oriented(*r, loc, node.name) if r is not None else self.values[x.id]
                for x, r in zip(node.inputs, (self.matmul_operand(x) for x in node.inputs),
                                strict=True))
        self._matmul_2d(node, a, b)

    def _matmul_2d(self, node: Node, a: Value, b: Value) -> None:
        """The matmul of two 2-D views (an N-d A is [prod(leading), K])."""
        loc = self._loc(node)
        if self._split_k(node, a, b):
            return
        if a is self.values[node.inputs[0].id] and b is self.values[node.inputs[1].id]:
            if self.split_n(node):
                self._split_n(node, a, b)
                return
            band = self.band_of_matmul(node)
            if band:
                self._on_band(node, a, b, band)
                return
        split = None
        if a.dtype != b.dtype:
            split = "A" if a.dtype == "f32" else "B"
        naive = self.options.matmul == "naive"
        if naive:
            a = self.ensure(a, self.layout(a.shape, a.dtype, "P", None), loc, node.name)
            b = self.ensure(b, self.layout(b.shape, b.dtype, None, "Q"), loc, node.name)
        else:
            # Any 2-D block layout will do, skewed ones included (inputs placed for Cannon).
            if not (a.layout.row_axis == "P" and a.layout.col_axis == "Q" and not a.layout.dense
                    and a.layout.skew in (None, "A") and a.layout.row_split is None
                    and a.layout.bands is None):
                a = self.ensure(a, self.layout(a.shape, a.dtype, "P", "Q"), loc, node.name)
            if not (b.layout.row_axis == "P" and b.layout.col_axis == "Q" and not b.layout.dense
                    and b.layout.skew in (None, "B") and b.layout.row_split is None
                    and b.layout.bands is None):
                b = self.ensure(b, self.layout(b.shape, b.dtype, "P", "Q"), loc, node.name)
        if split == "A":
            a = self.split(a, loc, node.name)
        elif split == "B":
            b = self.split(b, loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, "P", "Q"))
        for spmd in (SpmdSumma, SpmdStream):
            if not naive and spmd.applicable(a, b, self.grid, self.machine, self.options):
                self.steps.append(spmd(out, a, b, loc, node.name, self.grid, self.machine))
                return
        self.steps.append(Matmul(out, a, b, loc, node.name, self.grid, self.machine,
                                 "local" if naive else "summa", self.options.double_buffer,
                                 self.options.reach))


    # ---- matmuls on bands of grid rows --------------------------------------------------------

    def split_n(self, mm: Node) -> int:
        """n >= 2 if the matmul `mm` runs as n products on n bands of grid rows, each computing
        a block of N columns (split N), else 0: an f32 matmul with a 2-D B read as it is,
        whose rows (A's 2-D view) fit in P / n grid rows, so that it would leave the other
        grid rows idle, and whose N fills all grid columns n times over (whole tiles per
        band). Not if A comes banded that way itself (then it runs split K where A lies:
        `_split_k`). f32 only: the matrix unit's f32 rate (16 times slower than bf16 on d1)
        makes those products compute-bound, which more grid rows speed up; a bf16 product of
        the same shape is bound by the panel exchange, which every band repeats."""
        memo = self.split_memo
        if mm.id in memo:
            return memo[mm.id]
        memo[mm.id] = 0
        a, b = mm.inputs
        g, t = self.grid, self.machine.mma_dim
        n = 0
        if (mm.op is Op.MATMUL and self.options.row_bands and self.options.matmul == "summa"
                and b.ndim == 2 and a.dtype == b.dtype == "f32" and b.op is not Op.TRANSPOSE
                and a.op is not Op.TRANSPOSE and not _widens(a) and not _widens(b)
                and self.banded_by_rows(a) == 0):
            mt = -(-view_of(a.shape)[0] // t)
            N = b.shape[1]
            for k in range(g.P // max(mt, 1), 1, -1):
                if g.P % k == 0 and N % (k * t) == 0 and N // (k * t) >= g.Q:
                    n = k
                    break
        memo[mm.id] = n
        return n

    def banded_by_rows(self, node: Node) -> int:
        """The number of bands of grid rows `node`'s value will be banded along (a split-N
        product, or an elementwise result or same-view reshape of one: an elementwise kernel
        takes the layout of its first operand read in full), else 0."""
        if node.op is Op.MATMUL:
            return self.split_n(node)
        if node.op is Op.RESHAPE and view_of(node.shape) == view_of(node.inputs[0].shape):
            return self.banded_by_rows(node.inputs[0])
        if node.op in ELEMENTWISE_OPS:
            for x in node.inputs:
                if x.op is Op.CONST or x.op is Op.BROADCAST:
                    continue
                if x.shape != node.shape and x.op is not Op.RESHAPE:
                    return 0
                return self.banded_by_rows(x)
        return 0

    def row_band_layout(self, shape: tuple[int, ...], dtype: str, n: int, e: int) -> Layout:
        """A value's rows on band e of n bands of grid rows (split in tiles over the band),
        its columns over all grid columns: a product's operand or result on that band."""
        P, t = self.grid.P, self.machine.mma_dim
        h = P // n
        M = view_of(shape)[0]
        bounds = (0,) * (e * h + 1) + split(M, h, t)[1:] + (M,) * (P - (e + 1) * h)
        return make_layout(shape, dtype, "P", "Q", self.grid, row_split=bounds)

    def col_band_layout(self, shape: tuple[int, ...], dtype: str, n: int, ra: str | None,
                        ca: str | None) -> Layout:
        """Banded along n bands of grid rows: band e holds the column block e of n."""
        h = self.grid.P // n
        return make_layout(shape, dtype, ra, ca, self.grid, bands=tuple(range(0, n * h + 1, h)),
                           band_axis="P", band_cols=view_of(shape)[1] // n)

    def band_operand_layout(self, node: Node) -> Layout | None:
        """Where the host places an input or param that split-N or split-K matmuls read as B
        (column blocks on their bands, or row blocks), or that elementwise kernels over a
        split-N result read as a row vector (a bias: its column blocks on the bands), so that
        nothing is moved at run time."""
        users = self.users[node.id]
        if not users or node.id in self.updated or node.ndim > 2:
            return None
        want: set[tuple] = set()
        t = self.machine.mma_dim
        for u in users:
            if u.op is Op.MATMUL and node.ndim == 2 and u.inputs[1] is node \
                    and u.inputs[0] is not node:
                n = self.split_n(u)
                if n:
                    want.add(("N", n))
                    continue
                e = self.band_of_matmul(u)
                if e:
                    want.add(("band", e))
                    continue
                k = self.banded_by_rows(u.inputs[0])
                K = node.shape[0]
                if k and u.dtype == "f32" and K % (k * t) == 0:
                    want.add(("K", k))
                    continue
            elif u.op is Op.BROADCAST and broadcast_mode(node.shape, u.shape) == "row":
                readers = self.users[u.id]
                ks = {self.banded_by_rows(r) for r in readers}
                if len(ks) == 1 and 0 not in ks and node.shape[-1] % (min(ks) * t) == 0:
                    want.add(("row", ks.pop()))
                    continue
            return None
        if len(want) != 1:
            return None
        kind, n = want.pop()
        if kind == "band":
            return self.row_band_layout(node.shape, node.dtype, 2, n)
        if kind == "N":
            return self.col_band_layout(node.shape, node.dtype, n, "P", "Q")
        if kind == "row":
            return self.col_band_layout(node.shape, node.dtype, n, None, "Q")
        return make_layout(node.shape, node.dtype, "P", "Q", self.grid,
                           row_split=batched_row_split(n, node.shape[0] // n, self.grid.P, t))

    def band_of_matmul(self, mm: Node) -> int:
        """The band of grid rows (of two) that a matmul runs on when several read the same
        program input (or param that is not updated) as A, each f32 (see `split_n`) with rows
        that fill at most half the grid rows (and no split N): the first on band 0, where its
        rows are anyway,
        the next on band 1, and so on alternately, so that two run at once. The host places
        the input on both bands (`placed`), and each B where its product runs."""
        plan = self.cache.get(("bands",))
        if plan is None:
            groups: dict[int, list[int]] = {}
            t, P = self.machine.mma_dim, self.grid.P
            for u in self.graph.nodes:
                if u.op is not Op.MATMUL:
                    continue
                a, b = u.inputs
                src = a.inputs[0] if (a.op is Op.RESHAPE and view_of(a.shape)
                                      == view_of(a.inputs[0].shape)) else a
                if (self.options.row_bands and self.options.matmul == "summa" and P % 2 == 0
                        and b.ndim == 2 and a.dtype == b.dtype == "f32" and src.ndim >= 2
                        and src.op in (Op.INPUT, Op.PARAM) and src.id not in self.updated
                        and b.op in (Op.INPUT, Op.PARAM) and b.id not in self.updated
                        and -(-view_of(a.shape)[0] // t) <= P // 2 and not self.split_n(u)):
                    groups.setdefault(src.id, []).append(u.id)
            plan = self.cache[("bands",)] = {m: r % 2 for g in groups.values()
                                             for r, m in enumerate(g)}
        return plan.get(mm.id, 0)

    def _on_band(self, node: Node, a: Value, b: Value, e: int) -> None:
        """C = A @ B on band e of two bands of grid rows (`band_of_matmul`), from copies of A
        and B the host placed there; C is left on the band's rows."""
        loc = self._loc(node)
        base = a.base or a
        av = self.host_copy(base, self.row_band_layout(base.shape, base.dtype, 2, e), loc,
                         node.name)
        bv = self.host_copy(b, self.row_band_layout(b.shape, b.dtype, 2, e), loc, node.name)
        out = self.new_value(node, self.row_band_layout(node.shape, node.dtype, 2, e))
        M, K = view_of(a.shape)
        self.steps.append(BandMatmul(f"matmul[band {e}]", out, [],
                                     [(self._band_grid(2, e), av, bv, out)], M, K,
                                     b.shape[1], loc, node.name, self.machine, self.options))

    def _band_grid(self, n: int, e: int) -> Grid:
        h = self.grid.P // n
        return Grid(self.machine, self.grid.xs, self.grid.ys[e * h:(e + 1) * h])

    def _split_n(self, node: Node, a: Value, b: Value) -> None:
        """C = A @ B as n products on bands of grid rows (compiler.batched.BandMatmul): band e
        computes C's column block e from its own copy of A (band 0's is A itself, unless A
        is a skewed input) and B's column block e; C is banded along the grid rows. Copies
        of a program input are placed by the host."""
        loc = self._loc(node)
        n = self.split_n(node)
        M, K = view_of(a.shape)
        N = b.shape[1]
        bv = self.host_copy(b, self.col_band_layout(b.shape, b.dtype, n, "P", "Q"), loc,
                            node.name)
        base = a.base or a
        av = [self.host_copy(base, self.row_band_layout(base.shape, base.dtype, n, e), loc,
                             node.name) for e in range(n)]
        out = self.new_value(node, self.col_band_layout(node.shape, node.dtype, n, "P", "Q"))
        products = [(self._band_grid(n, e), av[e], bv, out) for e in range(n)]
        self.steps.append(BandMatmul(f"matmul[rows N/{n}]", out, [], products, M, K, N // n,
                                     loc, node.name, self.machine, self.options))

    def _split_k(self, node: Node, a: Value, b: Value) -> bool:
        """If A comes banded along n bands of grid rows (band e holding its column block e),
        C = A @ B as n products where A lies (compiler.batched.BandMatmul): band e multiplies
        its block of A by B's row block e into a partial product on its rows; the partials
        are then added (an elementwise kernel, after moving band e's to the rows of band 0).
        Only for f32 operands and results (each partial is an f32 sum, as the matmul's own
        accumulator; and see `split_n`)."""
        L = a.layout
        if (L.bands is None or L.band_axis != "P" or L.row_axis != "P" or L.col_axis != "Q"
                or node.dtype != "f32" or not a.dtype == b.dtype == "f32" or len(b.shape) != 2
                or self.options.matmul != "summa"):
            return False
        n = len(L.bands) - 1
        P, t = self.grid.P, self.machine.mma_dim
        h = P // n
        M, K = view_of(a.shape)
        N = b.shape[1]
        if (P % n or L.bands != tuple(range(0, P + 1, h)) or L.band_cols * n != K
                or L.band_cols % t or -(-M // t) > h):
            return False
        loc = self._loc(node)
        Kb = K // n
        bv = self.ensure(b, make_layout(b.shape, b.dtype, "P", "Q", self.grid,
                                        row_split=batched_row_split(n, Kb, P, t)),
                         loc, node.name)
        parts = [Value(f"{node.name}.k{e}", node.shape, "f32",
                       self.row_band_layout(node.shape, "f32", n, e)) for e in range(n)]
        products = [(self._band_grid(n, e), a, bv, parts[e]) for e in range(n)]
        self.steps.append(BandMatmul(f"matmul[rows K/{n}]", parts[0], parts[1:], products, M,
                                     Kb, N, loc, node.name, self.machine, self.options))
        out = self.new_value(node, self.layout(node.shape, "f32", "P", "Q"))
        leaves = [Leaf("full", parts[0])] + [
            Leaf("full", self.ensure(p, out.layout, loc, node.name)) for p in parts[1:]]
        expr: tuple = ("leaf", 0)
        for e in range(1, n):
            expr = ("op", Op.ADD, (expr, ("leaf", e)), False)
        self.steps.append(Elementwise(out, expr, leaves, loc, node.name, ["add"] * (n - 1)))
        return True


def _widens(n: Node) -> bool:
    """A cast of a bf16 value to f32: exact, so a reader may take the bf16 value instead."""
    return n.op is Op.CAST and n.dtype == "f32" and n.inputs[0].dtype == "bf16"
def _vision_derived(graph: Graph) -> set[int]:
    """Ids of the values of vision kernels (conv2d, conv2d_transpose, the pools) and of the
    elementwise values computed from them."""
    out: set[int] = set()
    vision = (Op.CONV2D, Op.CONV2D_TRANSPOSE) + tuple(POOL_OPS)
    for n in graph.nodes:
        if n.op in vision or (n.op in ELEMENTWISE_OPS and any(i.id in out for i in n.inputs)):
            out.add(n.id)
    return out


def _read_in_place(x: Node, vcol: bool) -> tuple[Node, bool]:
    """The node whose stored value an elementwise kernel reads for operand x. A reshape that
    keeps the 2-D view is a relabelling: its operand is read in place. With `vcol`, so is a
    vector [N] reshaped into the column [N, 1] (a column split over grid rows holds the same
    elements as the vector split over grid rows, only packed): then True."""
    if x.op is Op.RESHAPE:
        y = x.inputs[0]
        if view_of(y.shape) == view_of(x.shape):
            return y, False
        if vcol and y.ndim == 1 and view_of(x.shape) == (y.shape[0], 1):
            return y, True
    return x, False


def _leaf_nodes(e: tuple) -> list[Node]:
    if e[0] == "leaf":
        return [e[1]]
    out = []
    for c in e[2]:
        out.extend(_leaf_nodes(c))
    return out


def map_to_mesh(graph: Graph, kops: list[KOp], grid: Grid, machine: Machine, options
                ) -> Mapper:
    """Layouts for every value and the steps that compute them, in program order."""
    m = Mapper(graph, grid, machine, options)
    m.run(kops)
    return m

