"""The `lower` and `map` passes: IR graph -> kernel ops -> steps over distributed values.

`lower` decides what kind of kernel computes each IR node. Elementwise nodes (unary, binary,
casts) are fused into trees: a node whose only reader is an elementwise node of the same shape,
and which is not an output, is computed inside its reader's loop instead of being stored.
Broadcasts and literal splats are never stored either: a broadcast is read in place as a row
vector, a column or a scalar (`broadcast_mode`); only the N-d patterns that are none of these are
materialised, by the fallback kernel. Reductions, softmax, log_softmax and the first-maximum
mask of 1-D and 2-D values and all matmuls and transposes have distributed kernels; those of
3-D and 4-D values fall back to computing on a replicated copy. A reduction over every axis of
a 2-D or larger value (in the IR a reshape to 1-D, then a reduction) is one kernel that reduces
the value where it lies. A reshape that keeps the 2-D view, or turns a vector [N] into the
column [N, 1], is read in place by elementwise kernels (a relabelling); its own step, a local
copy, runs only if another kernel reads it.

`map_to_mesh` then picks a layout for every value (2-D blocks for matrices, vectors split along
grid columns and replicated down rows, ...; see compiler.layout), inserts a `Redistribute` step
wherever a reader needs a value in another layout than it was produced in, and creates the
steps in program order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.asmgen import CompilerLimit
from compiler.comm import Redistribute
from compiler.grid import Grid
from compiler.ir import REDUCE_OPS, Graph, Node, Op
from compiler.kernels import (
    DenseReshape,
    Elementwise,
    Leaf,
    LogSoftmax,
    MaxMask,
    NdBroadcast,
    NdReduce,
    Reduce,
    ReduceAll,
    Softmax,
)
from compiler.layout import Layout, choose_skew, make_layout, view_of
from compiler.matmul import Matmul
from compiler.plan import ELEMENTWISE_OPS, Step, Value
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
    max_mask, matmul, transpose, reshape, broadcast."""

    kind: str
    node: Node
    expr: tuple | None = None          # fused: tree over IR nodes, ("leaf", node) at the leaves
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
        x = node.inputs[0] if node.op in REDUCE_OPS else None
        if (x is not None and node.ndim == 0 and x.op is Op.RESHAPE and x.ndim == 1
                and x.inputs[0].ndim >= 2 and len(users[x.id]) == 1 and x.id not in outputs):
            reduce_all.update((node.id, x.id))
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
        elif node.op in REDUCE_OPS:
            out.append(KOp("reduce_all" if node.id in reduce_all else "reduce", node))
        elif node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX):
            out.append(KOp("softmax", node))
        elif node.op is Op.MAX_MASK:
            out.append(KOp("max_mask", node))
        elif node.op is Op.RESHAPE:
            if node.id not in reduce_all:
                out.append(KOp("reshape", node))
        elif node.op is Op.MATMUL:
            out.append(KOp("matmul", node))
        elif node.op is Op.TRANSPOSE:
            out.append(KOp("transpose", node))
        else:  # pragma: no cover - the IR has no other ops (grad nodes never reach lower)
            raise AssertionError(f"cannot lower {node.op}")
    return out


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
        self.updated = {u.param.id for u in graph.updates}
        self.ntemp = 0

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
        # Not an updated param: its new value comes out of unskewed kernels, and would need a
        # redistribution every step to be written back skewed.
        if (users and g.P == g.Q and g.P > 1 and self.options.matmul == "summa"
                and self.options.preskew and node.ndim == 2 and node.id not in self.updated):
            for k, skew in ((0, "A"), (1, "B")):
                if all(u.op is Op.MATMUL and u.inputs[k] is node
                       and u.inputs[1 - k] is not node for u in users):
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

    def ensure(self, v: Value, L: Layout, loc, label: str, transpose: bool = False) -> Value:
        """`v` in layout L: itself, or a redistributed copy (made once per layout)."""
        if not transpose and v.layout.same_distribution(L) and v.dtype == L.dtype:
            return v
        key = (id(v), L.rows, L.cols, L.row_axis, L.col_axis, L.dense, transpose)
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
            L = self.layout(node.shape, node.dtype, src.row_axis, src.col_axis, src.dense)
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
                elif x.op is Op.BROADCAST and x.id not in self.values:
                    mode = broadcast_mode(x.inputs[0].shape, x.shape)
                    src_node, packed = _read_in_place(x.inputs[0], vcol and mode == "col")
                    src = self.values[src_node.id]
                    if packed:
                        mode = "vcol"
                        want = self.layout(src.shape, src.dtype, None, L.row_axis)
                    elif mode == "row":
                        want = self.layout(src.shape, src.dtype, None, L.col_axis)
                    elif mode == "col":
                        want = self.layout(src.shape, src.dtype, L.row_axis, None)
                    else:
                        want = self.layout(src.shape, src.dtype, None, None)
                    v = self.ensure(src, want, loc, node.name)
                    key = (mode, id(v))
                    lf = Leaf(mode, v)
                else:
                    v = self.values[_read_in_place(x, False)[0].id]
                    want = self.layout(v.shape, v.dtype, L.row_axis, L.col_axis, L.dense)
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

    def _broadcast(self, k: KOp) -> None:
        node = k.node
        loc = self._loc(node)
        src = self.values[node.inputs[0].id]
        rep = self.ensure(src, self.layout(src.shape, src.dtype, None, None, True), loc,
                          node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdBroadcast(out, rep, loc, node.name))

    def _reduce(self, k: KOp) -> None:
        node = k.node
        loc = self._loc(node)
        x = self.values[node.inputs[0].id]
        op = node.op.value
        if x.layout and len(x.shape) <= 2:
            rows = node.axis == len(x.shape) - 1
            axis = x.layout.row_axis if rows else x.layout.col_axis
            out = self.new_value(node, self.layout(node.shape, node.dtype, None, axis))
            self.steps.append(Reduce(out, x, op, "rows" if rows else "cols", loc, node.name))
            return
        rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdReduce(out, rep, op, node.axis, loc, node.name))

    def _reduce_all(self, k: KOp) -> None:
        node = k.node
        x = self.values[node.inputs[0].inputs[0].id]      # through the reshape to 1-D
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None))
        self.steps.append(ReduceAll(out, x, node.op.value, self._loc(node), node.name))

    def _softmax(self, k: KOp) -> None:
        """softmax and log_softmax: the same layouts, the same all-reductions."""
        self._along_axis(k, Softmax if k.node.op is Op.SOFTMAX else LogSoftmax)

    def _max_mask(self, k: KOp) -> None:
        self._along_axis(k, MaxMask)

    def _along_axis(self, k: KOp, kernel: type) -> None:
        """A kernel whose result has its operand's shape, computed along an axis: distributed
        for 1-D and 2-D values (the result in the operand's layout), else on a replicated
        copy."""
        node = k.node
        loc = self._loc(node)
        x = self.values[node.inputs[0].id]
        if len(x.shape) <= 2:
            rows = node.axis == len(x.shape) - 1
            L = x.layout
            out = self.new_value(node, self.layout(node.shape, node.dtype, L.row_axis,
                                                   L.col_axis, L.dense))
            self.steps.append(kernel(out, x, "rows" if rows else "cols", loc, node.name))
            return
        rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
        self.steps.append(NdReduce(out, rep, node.op.value, node.axis, loc, node.name))

    def _reshape(self, k: KOp) -> None:
        """The same elements in row-major order, in another shape. Where the 2-D view does not
        change, the value keeps its layout (a local copy); a vector turned into a column or
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
            self.steps.append(Redistribute(out, x, False, loc, node.name, self.grid))
        elif old == new[::-1] and 1 in old and not L.dense:
            out = self.new_value(node, self.layout(node.shape, node.dtype, L.col_axis,
                                                   L.row_axis))
            self.steps.append(Redistribute(out, x, True, loc, node.name, self.grid))
        else:
            rep = self.ensure(x, self.layout(x.shape, x.dtype, None, None, True), loc,
                              node.name)
            out = self.new_value(node, self.layout(node.shape, node.dtype, None, None, True))
            self.steps.append(DenseReshape(out, rep, loc, node.name))

    def _transpose(self, k: KOp) -> None:
        node = k.node
        loc = self._loc(node)
        x = self.values[node.inputs[0].id]
        L = self.layout(node.shape, node.dtype, "P", "Q")
        out = Value(node.name, node.shape, node.dtype, L, node)
        self.steps.append(Redistribute(out, x, True, loc, node.name, self.grid))
        self.values[node.id] = out

    def _matmul(self, k: KOp) -> None:
        node = k.node
        loc = self._loc(node)
        a = self.values[node.inputs[0].id]
        b = self.values[node.inputs[1].id]
        naive = self.options.matmul == "naive"
        if naive:
            a = self.ensure(a, self.layout(a.shape, a.dtype, "P", None), loc, node.name)
            b = self.ensure(b, self.layout(b.shape, b.dtype, None, "Q"), loc, node.name)
        else:
            # Any 2-D block layout will do, skewed ones included (inputs placed for Cannon).
            if not (a.layout.row_axis == "P" and a.layout.col_axis == "Q" and not a.layout.dense
                    and a.layout.skew in (None, "A")):
                a = self.ensure(a, self.layout(a.shape, a.dtype, "P", "Q"), loc, node.name)
            if not (b.layout.row_axis == "P" and b.layout.col_axis == "Q" and not b.layout.dense
                    and b.layout.skew in (None, "B")):
                b = self.ensure(b, self.layout(b.shape, b.dtype, "P", "Q"), loc, node.name)
        out = self.new_value(node, self.layout(node.shape, node.dtype, "P", "Q"))
        self.steps.append(Matmul(out, a, b, loc, node.name, self.grid, self.machine,
                                 "local" if naive else "summa", self.options.double_buffer,
                                 self.options.reach))


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

