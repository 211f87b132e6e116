"""Data parallelism across chips: every chip runs one per-chip program on its share of the batch.

On a machine of several chips (`--chips CxR`) a training program (one with `update`s) is not
spread over the whole mesh. Instead:

- the batch, axis 0 of every input, is split into C equal shares, one per chip (chip c =
  cy * chips_x + cx, row-major over the chip grid, gets samples c*b .. c*b + b - 1, b = B / C);
- every chip keeps a full copy of every param and runs the same per-chip program: the
  program compiled for one chip (its grid, its layouts, its kernels) with b in place of B;
- wherever that program reduces over the batch (a `sum`/`mean`/`max` along the split axis,
  a matmul that contracts it, as `transpose(x) @ g` does in every weight gradient), each chip
  computes its partial result and the partials are **all-reduced over the chip-edge links**
  (`ChipAllReduce`); after it, every chip holds the same bits, so the updates, computed from
  those values and the params, are the same on every chip and the params stay identical.

**The rule.** `plan` follows the split through the differentiated IR of the whole program
(global shapes; the constants the backward pass holds, such as the 1/B of a `mean`'s
gradient, are global too). Every value is either *split* along one axis (each chip holds its
slice of the global value) or *whole* (each chip holds all of it, the same on every chip):

- input: split along axis 0; param, literal: whole;
- elementwise ops, casts, broadcasts: if an operand is split along a, the result is split along
  a, and each whole operand is taken as its slice (possible without communication only for a
  literal, a broadcast along a, or elementwise ops of those);
- transpose, reshape: split along the axis the split one moves to (a reshape keeps axis 0
  split if its new axis 0 is a multiple of C, or if it only adds or drops unit axes);
- `x @ w` with x split along 0 and w whole: split along 0 (`w @ x`, x split along 1: along 1);
- `a @ b` with the contracted axis split in both: each chip's product is a partial sum,
  all-reduced: whole;
- sum, mean, max along the split axis: each chip's partial, all-reduced (sum, sum / C, max):
  whole; along another axis (and softmax, log_softmax, the max mask): still split.

So a loss that is a sum or mean over the batch comes out whole on every chip (the global
value), a gradient with respect to a param is the all-reduced sum of per-chip partials (the
global gradient: a `mean` in the loss has already put the global 1/B into it), and an `update`
must have a whole value. Anything else (softmax along the batch, a max's gradient along it,
two values split along different axes meeting, a whole [B, ...] value that is not a
broadcast) makes the program not data-parallel: `plan` raises `NotDataParallel` with the
reason, and the compiler maps the program onto the whole machine instead, with a note.

The all-reduce (`ChipAllReduce`): each value's block on grid node (i, j) is reduced with the
blocks of the same grid node on the other chips, in chunks, along a tree rooted at the middle
chip: along each chip row the partials flow from both ends toward the middle chip column
(each chip adds its own and passes the sum on), then down the middle chip column to the middle
chip, which scales a mean, and the total flows back out the same way, stored on every chip.
The messages travel along the mesh's rows and columns across the chip edges, relayed by the
nodes in between, as every other transfer (compiler.comm "line messages"), in one global
order, so nothing deadlocks. Chunks are software-pipelined: in round t the row reduction of
chunk t, the column reduction of chunk t - 1, the column broadcast of t - 2 and the row
broadcast of t - 3 are under way. One chip computes each total, so every chip gets the same
bits. `ShareBlocks` then copies the result to the grid nodes of a chip that hold a replicated
copy (a bias gradient is held by every grid row).

**One program for every chip.** The steps of the per-chip program are emitted once, into the
programs of chip 0's nodes (`ChipCtx`); only the all-reduce differs from chip to chip (who
sends, who adds, who relays), so it is emitted per chip into segments, and `ChipCtx.merge`
splices each chip's segments into a copy of chip 0's programs. Nodes whose programs come out
equal (chips with the same role in the tree) share one code block in the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.asmgen import Code, CompilerLimit, f32_bits
from compiler.comm import LineMsg, chunks, emit_msg
from compiler.grid import Grid, choose_grid
from compiler.ir import (
    BINARY_OPS,
    REDUCE_OPS,
    UNARY_OPS,
    Graph,
    GraphBuilder,
    Node,
    Op,
    Update,
    broadcast_dims,
    verify,
)
from compiler.lower import KOp, Mapper
from compiler.plan import Ctx, Step, Value, scratch
from d1isa.machine import Machine

# Bytes of one all-reduce message: small enough that a chunk crosses a chip's width of relay
# nodes quickly (every hop stores and forwards it), large enough that relaying costs few
# instructions per byte. A multiple of the vector size, so chunks are whole vectors.
CHUNK_BYTES = 1024
# Rounds between a chunk's phases in the software pipeline (row reduce, column reduce, column
# broadcast, row broadcast).
PHASE_LAG = 1


class NotDataParallel(Exception):
    """Why a program cannot run data-parallel (the compiler then maps it onto the whole
    machine); `node` is the IR node where the split cannot go on, if any."""

    def __init__(self, reason: str, node: Node | None = None) -> None:
        where = f" ('{node.name}', line {node.line})" if node is not None and node.line else ""
        super().__init__(reason + where)
        self.reason = reason + where


@dataclass
class DataParallel:
    """The plan: the per-chip program and how the global tensors are split over the chips."""

    machine: Machine
    chips_x: int
    chips_y: int
    batch: int                                   # B: axis 0 of every input, the global batch
    graph: Graph                                 # the per-chip program (local shapes)
    reduce: dict[int, str]                       # local node id -> all-reduce op
    split: dict[str, int | None]                 # tensor name -> axis split over chips
    global_shape: dict[str, tuple[int, ...]]
    grid: Grid = field(init=False)

    def __post_init__(self) -> None:
        chip = self.machine.replace(chips_x=1, chips_y=1)
        g = choose_grid(chip)
        self.grid = Grid(self.machine, g.xs, g.ys)

    @property
    def chips(self) -> int:
        return self.chips_x * self.chips_y

    @property
    def local_batch(self) -> int:
        return self.batch // self.chips

    def describe(self) -> dict[str, Any]:
        """What the object's metadata records (`meta["parallel"]`)."""
        names = sorted(n.name for n in self.graph.nodes if n.id in self.reduce)
        return {"mode": "data", "chips": [self.chips_x, self.chips_y], "batch": self.batch,
                "batch_per_chip": self.local_batch, "allreduced": names}

    # ---- tensor pieces ------------------------------------------------------------------------

    def pieces(self, name: str, role: str, pieces: list[tuple]) -> list[tuple]:
        """Chip 0's pieces of tensor `name` (in per-chip coordinates) -> every chip's: a split
        tensor's pieces on chip c cover its slice of the global tensor; a whole one is written
        to every chip's copy (inputs, params) and read back from chip 0 (outputs)."""
        m = self.machine
        axis = self.split.get(name)
        shape = self.global_shape[name]
        out = []
        for c in range(self.chips):
            cy, cx = divmod(c, self.chips_x)
            if axis is None and role == "output" and c:
                break
            for x, y, addr, off, shp, strides in pieces:
                off = list(off)
                if axis is not None:
                    off[axis] += c * (shape[axis] // self.chips)
                out.append((x + cx * m.cols, y + cy * m.rows, addr, tuple(off), shp, strides))
        return out


# ---- the split ------------------------------------------------------------------------------


def plan(graph: Graph, machine: Machine) -> DataParallel:
    """The data-parallel plan of a differentiated `graph` on `machine` (several chips), or
    NotDataParallel saying why there is none."""
    C = machine.chips
    if C < 2:
        raise NotDataParallel("the machine has one chip")
    if not graph.inputs:
        raise NotDataParallel("the program has no inputs to split")
    sizes = {n.shape[0] for n in graph.inputs}
    if len(sizes) > 1:
        raise NotDataParallel("the inputs differ in axis 0 ("
                              + ", ".join(f"{n.name} {n.shape[0]}" for n in graph.inputs)
                              + "), so there is no one batch to split")
    B = sizes.pop()
    if B % C:
        raise NotDataParallel(f"the batch of {B} does not split evenly over {C} chips")
    s = _Splitter(graph, C)
    s.run()
    local = s.finish()
    verify(local)
    split: dict[str, int | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for n in (*graph.inputs, *graph.params, *graph.outputs):
        split[n.name] = s.state[n.id]
        shapes[n.name] = n.shape if n.shape else (1,)
    return DataParallel(machine, machine.chips_x, machine.chips_y, B, local, s.reduce, split,
                        shapes)


class _Splitter:
    """Walks the global graph in order, giving every node its split (None: whole) and a node
    of the per-chip graph with the per-chip shape."""

    def __init__(self, graph: Graph, chips: int) -> None:
        self.g = graph
        self.C = chips
        self.b = GraphBuilder()
        self.state: dict[int, int | None] = {}
        self.local: dict[int, Node] = {}
        self.sliced: dict[tuple[int, int], Node] = {}
        self.reduce: dict[int, str] = {}
        self.names = {n.name for n in graph.nodes}

    # ---- helpers --------------------------------------------------------------------------

    def shape(self, shape: tuple[int, ...], axis: int | None) -> tuple[int, ...]:
        if axis is None:
            return shape
        return shape[:axis] + (shape[axis] // self.C,) + shape[axis + 1:]

    def add(self, node: Node, inputs: tuple[Node, ...], axis: int | None,
            name: str | None = None, **kw: Any) -> Node:
        """A per-chip copy of `node` with its shape split along `axis`."""
        shape = self.shape(node.shape, axis)
        return self.b.add(node.op, inputs, shape=shape, dtype=node.dtype, axis=node.axis,
                          value=node.value, init=node.init, name=name or node.name,
                          line=node.line, col=node.col, **kw)

    def fresh(self, base: str) -> str:
        k = 1
        while f"{base}.c{k}" in self.names:
            k += 1
        name = f"{base}.c{k}"
        self.names.add(name)
        return name

    def fail(self, reason: str, node: Node) -> None:
        raise NotDataParallel(reason, node)

    # ---- the walk -------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.g.nodes:
            handler = getattr(self, "_" + node.op.name.lower(), None)
            if handler is None:
                if node.op in UNARY_OPS or node.op in BINARY_OPS:
                    handler = self._elementwise
                elif node.op in REDUCE_OPS:
                    handler = self._reduce
                elif node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX, Op.MAX_MASK):
                    handler = self._along
                else:  # pragma: no cover - grad nodes are gone after differentiate
                    self.fail(f"{node.op.value} has no data-parallel rule", node)
            handler(node)

    def put(self, node: Node, local: Node, axis: int | None) -> None:
        self.local[node.id] = local
        self.state[node.id] = axis

    def _input(self, node: Node) -> None:
        self.put(node, self.add(node, (), 0), 0)

    def _param(self, node: Node) -> None:
        self.put(node, self.add(node, (), None), None)

    def _const(self, node: Node) -> None:
        self.put(node, self.add(node, (), None), None)

    def _broadcast(self, node: Node) -> None:
        src = node.inputs[0]
        a = self.state[src.id]
        if a is None:
            self.put(node, self.add(node, (self.local[src.id],), None), None)
            return
        axis = a + node.ndim - src.ndim
        self.put(node, self._bcast(node, self.local[src.id], axis), axis)

    def _bcast(self, node: Node, src: Node, axis: int, name: str | None = None) -> Node:
        """A broadcast of per-chip `src` to `node`'s shape split along `axis`: a view, or the
        source itself if the per-chip shapes agree (a batch share of one sample)."""
        shape = self.shape(node.shape, axis)
        if shape == src.shape:
            return src
        return self.b.add(Op.BROADCAST, (src,), shape=shape, dtype=node.dtype,
                          name=name or node.name, line=node.line, col=node.col)

    def _cast(self, node: Node) -> None:
        self._elementwise(node)

    def _elementwise(self, node: Node) -> None:
        axes = {self.state[x.id] for x in node.inputs} - {None}
        if len(axes) > 1:
            self.fail("values split over the chips along different axes meet", node)
        axis = axes.pop() if axes else None
        ins = tuple(self.local[x.id] if self.state[x.id] == axis else self.slice(x, axis)
                    for x in node.inputs)
        self.put(node, self.add(node, ins, axis), axis)

    def slice(self, x: Node, axis: int) -> Node:
        """Whole value `x` as each chip's slice along `axis`: possible without communication
        for a literal, a broadcast along `axis`, and elementwise ops of those."""
        key = (x.id, axis)
        hit = self.sliced.get(key)
        if hit is not None:
            return hit
        if x.op is Op.CONST:
            out = self.add(x, (), axis, name=self.fresh(x.name))
        elif x.op is Op.BROADCAST:
            src = x.inputs[0]
            lead = x.ndim - src.ndim
            if axis in broadcast_dims(src.shape, x.shape):
                inner = self.local[src.id]
            else:
                inner = self.slice(src, axis - lead)
            out = self._bcast(x, inner, axis, self.fresh(x.name))
        elif x.op in UNARY_OPS or x.op in BINARY_OPS or x.op is Op.CAST:
            ins = tuple(self.slice(i, axis) for i in x.inputs)
            out = self.add(x, ins, axis, name=self.fresh(x.name))
        else:
            self.fail(f"'{x.name}' is computed whole on every chip but is combined with "
                      "values split over the chips", x)
        self.sliced[key] = out
        return out

    def _transpose(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        axis = None if a is None else 1 - a
        self.put(node, self.add(node, (self.local[x.id],), axis), axis)

    def _reshape(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        if a is None:
            self.put(node, self.add(node, (self.local[x.id],), None), None)
            return
        axis = None
        if a == 0 and node.shape and node.shape[0] % self.C == 0:
            axis = 0
        else:
            src = [k for k, d in enumerate(x.shape) if d != 1]
            dst = [k for k, d in enumerate(node.shape) if d != 1]
            if [x.shape[k] for k in src] == [node.shape[k] for k in dst] and a in src:
                axis = dst[src.index(a)]
        if axis is None:
            self.fail("a reshape moves the batch split over the chips", node)
        self.put(node, self.add(node, (self.local[x.id],), axis), axis)

    def _matmul(self, node: Node) -> None:
        a, b = node.inputs
        sa, sb = self.state[a.id], self.state[b.id]
        la, lb = self.local[a.id], self.local[b.id]
        if sa is None and sb is None:
            self.put(node, self.add(node, (la, lb), None), None)
        elif sa == 0 and sb is None:
            self.put(node, self.add(node, (la, lb), 0), 0)
        elif sa is None and sb == 1:
            self.put(node, self.add(node, (la, lb), 1), 1)
        elif sa == 1 or sb == 0:
            # the contracted axis is split: each chip's product is a partial sum
            if sa not in (None, 1) or sb not in (None, 0):
                self.fail("a matmul's operands are split over the chips along different axes",
                          node)
            la = la if sa == 1 else self.slice(a, 1)
            lb = lb if sb == 0 else self.slice(b, 0)
            out = self.add(node, (la, lb), None)
            self.reduce[out.id] = "sum"
            self.put(node, out, None)
        else:
            self.fail("a matmul's operands are split over the chips along different axes", node)

    def _reduce(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        k = node.axis
        lx = self.local[x.id]
        if a is None:
            self.put(node, self.add(node, (lx,), None), None)
        elif k == a:
            out = self.add(node, (lx,), None)
            self.reduce[out.id] = node.op.value
            self.put(node, out, None)
        else:
            axis = a - 1 if k < a else a
            self.put(node, self.add(node, (lx,), axis), axis)

    def _along(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        if a is not None and a == node.axis:
            self.fail(f"{node.op.value} along the batch split over the chips", node)
        self.put(node, self.add(node, (self.local[x.id],), a), a)

    def finish(self) -> Graph:
        g = self.g
        for u in g.updates:
            if self.state[u.value.id] is not None:
                self.fail(f"the update of '{u.param.name}' differs from chip to chip (it is "
                          "not reduced over the batch)", u.value)
        for o in g.outputs:
            if o.ndim == 0 and self.state[o.id] is not None:  # pragma: no cover - no axis
                self.fail("a 0-d output is split", o)
        outputs = [self.local[o.id] for o in g.outputs]
        updates = [Update(self.local[u.param.id], self.local[u.value.id], u.line, u.col)
                   for u in g.updates]
        return self.b.finish(outputs, g.filename, updates)


# ---- mapping: where the all-reductions go -----------------------------------------------------


class ChipMapper(Mapper):
    """The per-chip program's steps, with a `ChipAllReduce` before the first step that reads a
    value that is still a per-chip partial (and at the end for outputs and updates). Partials
    waiting together are reduced in one step: the gradients of a backward pass, read only by
    the updates at the end, go in one all-reduce."""

    def __init__(self, dp: DataParallel, graph: Graph, machine: Machine, options: Any) -> None:
        super().__init__(graph, dp.grid, machine, options)
        self.dp = dp
        self.pending: dict[int, tuple[Value, str]] = {}
        self.steps = _Steps(self)

    def run(self, kops: list[KOp]) -> list[Step]:
        super().run(kops)
        ends = {o.id for o in self.graph.outputs} | {u.value.id for u in self.graph.updates}
        keep = {k: p for k, p in self.pending.items()
                if p[0].node is not None and p[0].node.id in ends}
        self.pending = keep
        if keep:
            self.flush()
        return self.steps

    def flush(self) -> None:
        values = list(self.pending.values())
        self.pending = {}
        first = values[0][0].node
        loc = (first.line, first.col) if first is not None else (0, 0)
        label = ",".join(v.name for v, _ in values)
        list.append(self.steps, ChipAllReduce(values, loc, label, self.dp))
        shared = [v for v, _ in values if len(v.layout.holders()) > len(v.layout.owners())]
        if shared:
            list.append(self.steps, ShareBlocks(shared, loc, label))


class _Steps(list):
    """The mapper's step list: appending a step that reads a pending partial first appends
    the all-reduce; appending one that makes a partial marks its value pending."""

    def __init__(self, mapper: ChipMapper) -> None:
        super().__init__()
        self.mapper = mapper

    def append(self, st: Step) -> None:
        m = self.mapper
        if m.pending and any(id(v) in m.pending for v in st.ins):
            m.flush()
        super().append(st)
        out = st.out
        if out is not None and out.node is not None and out.node.id in m.dp.reduce \
                and m.values.get(out.node.id) is out:
            m.pending[id(out)] = (out, m.dp.reduce[out.node.id])


# ---- emitting: chip 0's programs, and every chip's all-reduce --------------------------------


class SegmentCode(Code):
    """A node's part of one all-reduce: its labels are kept apart from the rest of the
    program's (`.S<k>...`)."""

    __slots__ = ("segment",)

    def __init__(self, instrs: Any, segment: int) -> None:
        super().__init__(instrs)
        self.segment = segment

    def label(self, prefix: str = "L") -> str:
        return super().label(f"S{self.segment}{prefix}")


@dataclass
class ChipCtx(Ctx):
    """The emit context of a data-parallel program: the ordinary steps write chip 0's
    programs (global node ids of chip 0); between `begin_segment` and `end_segment` every
    node of every chip gets code of its own (the all-reduce). `merge` then gives every node
    of every chip chip 0's program for its position with its own segments spliced in where
    they were emitted."""

    dp: DataParallel | None = None
    segments: list[tuple[dict[int, int], dict[int, Code]]] = field(default_factory=list)
    seg: dict[int, Code] | None = None

    def code(self, nid: int) -> Code:
        if self.seg is None:
            return super().code(nid)
        c = self.seg.get(nid)
        if c is None:
            c = self.seg[nid] = SegmentCode(self.instrs, len(self.segments) - 1)
        c.at(self.loc)
        return c

    def begin_segment(self) -> None:
        cuts = {nid: len(c.items) for nid, c in self.progs.items()}
        self.seg = {}
        self.segments.append((cuts, self.seg))

    def end_segment(self) -> None:
        self.seg = None
        for c in self.progs.values():
            # the segment used registers freely and left its own location behind
            c.known.clear()
            c.loc = None

    def merge(self) -> None:
        """Every chip's programs (see the class docstring), replacing `progs`."""
        m = self.machine
        base = self.progs
        nodes = set()
        for cy in range(self.dp.chips_y):
            for cx in range(self.dp.chips_x):
                for n0 in base:
                    x, y = m.node_xy(n0)
                    nodes.add(m.node_id(x + cx * m.cols, y + cy * m.rows))
        for _, seg in self.segments:
            nodes.update(seg)
        shared: dict[tuple, Code] = {}
        progs: dict[int, Code] = {}
        for n in sorted(nodes):
            x, y = m.node_xy(n)
            n0 = m.node_id(x % m.cols, y % m.rows)
            b = base.get(n0)
            parts = tuple(seg.get(n) for _, seg in self.segments)
            key = (n0, tuple(None if p is None else tuple(p.items) for p in parts))
            hit = shared.get(key)
            if hit is None:
                hit = shared[key] = self._spliced(b, n0, parts)
            if hit.ninstr:
                progs[n] = hit
        self.progs = progs

    def _spliced(self, b: Code | None, n0: int, parts: tuple[Code | None, ...]) -> Code:
        out = Code(self.instrs)
        items: list = []
        prev = 0
        ninstr = nrelay = 0
        loc = None
        for (cuts, _), part in zip(self.segments, parts, strict=True):
            if b is not None:
                pos = cuts.get(n0, 0)
                items.extend(b.items[prev:pos])
                prev = pos
            if part is not None:
                items.extend(part.items)
                ninstr += part.ninstr
                nrelay += part.nrelay
                loc = part.loc
        if b is not None:
            if len(b.items) > prev:
                loc = b.loc if b.loc is not None else loc
            items.extend(b.items[prev:])
            ninstr += b.ninstr
            nrelay += b.nrelay
        out.items = items
        out.ninstr = ninstr
        out.nrelay = nrelay
        out.loc = loc if loc is not None else (0, 0)
        return out


# ---- the all-reduce across chips --------------------------------------------------------------


def add_into(code: Code, op: str, dst: int, src: int, nbytes: int, dtype: str) -> None:
    """dst[...] = dst op src over `nbytes` bytes of `dtype` values, in whole vectors (a bf16
    sum is rounded to bf16 as it is stored)."""
    step = code.lanes * (4 if dtype == "f32" else 2)
    nv = -(-nbytes // step)
    vop = "vmax" if op == "max" else "vadd"

    def one(k: int) -> None:
        code.vload("v0", "r1", step * k, dtype)
        code.vload("v1", "r2", step * k, dtype)
        code.op(vop, "v0", "v0", "v1")
        code.vstore("v0", "r1", step * k, dtype)

    code.li("r1", dst)
    code.li("r2", src)
    if nv <= 8:
        for k in range(nv):
            one(k)
        return
    full, rest = divmod(nv, 4)

    def body() -> None:
        for k in range(4):
            one(k)
        code.op("addi", "r1", "r1", 4 * step)
        code.op("addi", "r2", "r2", 4 * step)

    code.counted("r3", full, body)
    for k in range(rest):
        one(k)


def scale(code: Code, addr: int, nbytes: int, dtype: str, factor: float) -> None:
    """addr[...] *= factor over `nbytes` bytes of `dtype` values, in whole vectors."""
    step = code.lanes * (4 if dtype == "f32" else 2)
    code.li("r1", addr)
    code.op("vbcasti", "v2", f32_bits(factor))
    for k in range(-(-nbytes // step)):
        code.vload("v0", "r1", step * k, dtype)
        code.op("vmul", "v0", "v0", "v2")
        code.vstore("v0", "r1", step * k, dtype)


class ChipAllReduce(Step):
    """All-reduce `values` (each with its op: sum, mean or max) over the chips, block by
    block: every chip's grid node (i, j) ends with the same total of the blocks the grid
    nodes (i, j) of all chips held. The tree, chunks and rounds are described in the module
    docstring; only each block's owner takes part (`ShareBlocks` copies it on)."""

    def __init__(self, values: list[tuple[Value, str]], loc: tuple[int, int], label: str,
                 dp: DataParallel) -> None:
        super().__init__("allreduce(chips)", None, [v for v, _ in values], loc, label)
        self.reduced = values
        self.dp = dp
        m = dp.machine
        self.chunk = max(64, min(CHUNK_BYTES, m.max_message_bytes) // 64 * 64)
        self.temps = [scratch(f"{label}.chips", self.chunk)]
        self._rows: dict[tuple[int, int], tuple[tuple[int, ...], dict[int, int]]] = {}
        self._cols: dict[tuple[int, int], tuple[tuple[int, ...], dict[int, int]]] = {}

    # ---- geometry ---------------------------------------------------------------------------

    def node(self, cx: int, cy: int, i: int, j: int) -> int:
        m, g = self.dp.machine, self.dp.grid
        return m.node_id(cx * m.cols + g.xs[j], cy * m.rows + g.ys[i])

    def row_chain(self, cy: int, i: int) -> tuple[tuple[int, ...], dict[int, int]]:
        """The live nodes of grid row i of chip row cy, west to east across every chip."""
        key = (cy, i)
        hit = self._rows.get(key)
        if hit is None:
            m, g = self.dp.machine, self.dp.grid
            y = cy * m.rows + g.ys[i]
            last = (self.dp.chips_x - 1) * m.cols + g.xs[-1]
            chain = tuple(m.node_id(x, y) for x in range(g.xs[0], last + 1)
                          if m.live_grid[y, x])
            hit = self._rows[key] = (chain, {n: k for k, n in enumerate(chain)})
        return hit

    def col_chain(self, cx: int, j: int) -> tuple[tuple[int, ...], dict[int, int]]:
        """The live nodes of grid column j of chip column cx, north to south across chips."""
        key = (cx, j)
        hit = self._cols.get(key)
        if hit is None:
            m, g = self.dp.machine, self.dp.grid
            x = cx * m.cols + g.xs[j]
            last = (self.dp.chips_y - 1) * m.rows + g.ys[-1]
            chain = tuple(m.node_id(x, y) for y in range(g.ys[0], last + 1)
                          if m.live_grid[y, x])
            hit = self._cols[key] = (chain, {n: k for k, n in enumerate(chain)})
        return hit

    # ---- emission ---------------------------------------------------------------------------

    def work(self) -> dict[tuple[int, int], list[tuple[int, int, str, str]]]:
        """Per owner grid node: its chunks (address, bytes, dtype, op), value by value."""
        out: dict[tuple[int, int], list[tuple[int, int, str, str]]] = {}
        for v, op in self.reduced:
            L = v.layout
            for i, j in L.owners():
                r0, r1, _, _ = L.block(i, j)
                for off, n in chunks((r1 - r0) * L.stride, self.chunk):
                    out.setdefault((i, j), []).append((v.addr + off, n, v.dtype, op))
        return out

    def emit(self, ctx: Ctx) -> None:
        if not isinstance(ctx, ChipCtx):  # pragma: no cover - the pipeline makes a ChipCtx
            raise CompilerLimit("an all-reduce across chips needs the data-parallel emitter",
                                "internal")
        work = self.work()
        if not work:
            return
        rounds = max(len(w) for w in work.values())
        ctx.begin_segment()
        try:
            for t in range(rounds + 3 * PHASE_LAG):
                for phase, r in ((self.row_reduce, t), (self.col_reduce, t - PHASE_LAG),
                                 (self.col_bcast, t - 2 * PHASE_LAG),
                                 (self.row_bcast, t - 3 * PHASE_LAG)):
                    if 0 <= r < rounds:
                        items = [(p, w[r]) for p, w in sorted(work.items()) if r < len(w)]
                        phase(ctx, items)
        finally:
            ctx.end_segment()

    def _levels(self, n: int, mid: int) -> list[list[tuple[int, int]]]:
        """The reduction toward `mid` along a line of n chips, by distance from the ends:
        level l holds the (from, to) pairs whose sender has received all it waits for."""
        out = []
        for lev in range(1, max(mid, n - 1 - mid) + 1):
            pairs = []
            if lev - 1 < mid:
                pairs.append((lev - 1, lev))
            if n - lev > mid:
                pairs.append((n - lev, n - lev - 1))
            out.append(pairs)
        return out

    def row_reduce(self, ctx: ChipCtx, items: list) -> None:
        dp = self.dp
        tmp = self.temps[0].addr
        mid = dp.chips_x // 2
        for pairs in self._levels(dp.chips_x, mid):
            for cy in range(dp.chips_y):
                for (i, j), (addr, n, dtype, op) in items:
                    chain, at = self.row_chain(cy, i)
                    for a, b in pairs:
                        src, dst = self.node(a, cy, i, j), self.node(b, cy, i, j)
                        emit_msg(ctx, LineMsg(chain, False, at[src], addr, n, {at[dst]: tmp}))
                        add_into(ctx.code(dst), op, addr, tmp, n, dtype)

    def col_reduce(self, ctx: ChipCtx, items: list) -> None:
        dp = self.dp
        tmp = self.temps[0].addr
        cx, mid = dp.chips_x // 2, dp.chips_y // 2
        for pairs in self._levels(dp.chips_y, mid):
            for (i, j), (addr, n, dtype, op) in items:
                chain, at = self.col_chain(cx, j)
                for a, b in pairs:
                    src, dst = self.node(cx, a, i, j), self.node(cx, b, i, j)
                    emit_msg(ctx, LineMsg(chain, True, at[src], addr, n, {at[dst]: tmp}))
                    add_into(ctx.code(dst), op, addr, tmp, n, dtype)
        for (i, j), (addr, n, dtype, op) in items:
            if op == "mean":
                scale(ctx.code(self.node(cx, mid, i, j)), addr, n, dtype, 1.0 / dp.chips)

    def col_bcast(self, ctx: ChipCtx, items: list) -> None:
        dp = self.dp
        cx, mid = dp.chips_x // 2, dp.chips_y // 2
        for (i, j), (addr, n, _, _) in items:
            chain, at = self.col_chain(cx, j)
            for side in (range(mid - 1, -1, -1), range(mid + 1, dp.chips_y)):
                stops = {at[self.node(cx, cy, i, j)]: addr for cy in side}
                if stops:
                    emit_msg(ctx, LineMsg(chain, True, at[self.node(cx, mid, i, j)], addr, n,
                                          stops))

    def row_bcast(self, ctx: ChipCtx, items: list) -> None:
        dp = self.dp
        mid = dp.chips_x // 2
        for cy in range(dp.chips_y):
            for (i, j), (addr, n, _, _) in items:
                chain, at = self.row_chain(cy, i)
                for side in (range(mid - 1, -1, -1), range(mid + 1, dp.chips_x)):
                    stops = {at[self.node(cx, cy, i, j)]: addr for cx in side}
                    if stops:
                        emit_msg(ctx, LineMsg(chain, False, at[self.node(mid, cy, i, j)], addr,
                                              n, stops))


class ShareBlocks(Step):
    """Copy each value's blocks from their owners to the other grid nodes of the chip that
    hold a replicated copy: along the owner's grid row, then down the grid columns (line
    messages, as compiler.comm sends them). Emitted once, run by every chip."""

    def __init__(self, values: list[Value], loc: tuple[int, int], label: str) -> None:
        super().__init__("share(chips)", None, list(values), loc, label)

    def emit(self, ctx: Ctx) -> None:
        g = ctx.grid
        maxmsg = ctx.machine.max_message_bytes
        for v in self.ins:
            L = v.layout
            blocks: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
            for i, j in L.holders():
                blocks.setdefault(L.block(i, j), []).append((i, j))
            for rect, hs in sorted(blocks.items()):
                oi, oj = hs[0]
                nbytes = (rect[1] - rect[0]) * L.stride
                cols = sorted({j for _, j in hs})
                rows = sorted({i for i, _ in hs})
                if any((i, j) not in hs for i in rows for j in cols):
                    raise CompilerLimit(f"'{v.name}' is replicated in a pattern the chip "
                                        "all-reduce cannot share", "data parallelism")
                chain, pos = g.row_chains[oi], g.row_chain_index(oi)
                for side in ([j for j in cols if j > oj], [j for j in cols if j < oj]):
                    if side:
                        for off, n in chunks(nbytes, maxmsg):
                            emit_msg(ctx, LineMsg(chain, False, pos[oj], v.addr + off, n,
                                                  {pos[j]: v.addr + off for j in side}))
                for j in cols:
                    chain, pos = g.col_chains[j], g.col_chain_index(j)
                    for side in ([i for i in rows if i > oi], [i for i in rows if i < oi]):
                        if side:
                            for off, n in chunks(nbytes, maxmsg):
                                emit_msg(ctx, LineMsg(chain, True, pos[oi], v.addr + off, n,
                                                      {pos[i]: v.addr + off for i in side}))
