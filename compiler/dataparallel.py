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
  literal, a broadcast along a, elementwise ops of those, or a 2-D matmul of one of those
  and a whole operand, whose slice each chip computes);
- transpose, reshape: split along the axis the split one moves to (a reshape keeps axis 0
  split if its new axis 0 is a multiple of C, or if it only adds or drops unit axes);
- `x @ w` with x split along 0 and w whole: split along 0 (`w @ x`, x split along 1: along 1);
- `a @ b` with the contracted axis split in both: each chip's product is a partial sum,
  all-reduced: whole;
- sum, mean, max along the split axis: each chip's partial, all-reduced (sum, sum / C, max):
  whole; along another axis (and softmax, log_softmax, the max mask): still split. `min` and
  `argmax` along it are not data-parallel (the all-reduce has no min, and an index is not a
  reduction of the chips' indices); of a partial, they read it all-reduced first.

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

from dataclasses import dataclass, field, replace
from typing import Any

from compiler.asmgen import Code, CompilerLimit, f32_bits
from compiler.comm import LineMsg, chunks, emit_msg
from compiler.grid import Grid, choose_grid
from compiler.ir import (
    BINARY_OPS,
    ITEMSIZE,
    REDUCE_OPS,
    UNARY_OPS,
    Graph,
    GraphBuilder,
    Node,
    Op,
    Update,
    broadcast_dims,
    transpose_perm,
    verify,
)
from compiler.lower import KOp, Mapper
from compiler.plan import Ctx, Step, Value, scratch
from d1isa.asm.program import Instr, Label, Mark
from d1isa.machine import Machine

# Bytes of one all-reduce message: small enough that a chunk crosses a chip's width of relay
# nodes quickly (every hop stores and forwards it), large enough that relaying costs few
# instructions per byte. A multiple of the vector size, so chunks are whole vectors.
CHUNK_BYTES = 2048
# Steps between receiving a chunk and adding it (and passing the sum on).
LAG = 1


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
    # local node id -> its state (State): split along an axis, whole, or a per-chip partial
    # that is never all-reduced itself (an all-reduced one is whole)
    states: dict[int, State] = field(default_factory=dict)
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
        nodes = [n for n in self.graph.nodes if n.id in self.reduce]
        return {"mode": "data", "chips": [self.chips_x, self.chips_y], "batch": self.batch,
                "batch_per_chip": self.local_batch,
                "allreduced": sorted(n.name for n in nodes),
                # what each chip contributes to the all-reduce: its partials, as f32
                "allreduce_bytes": sum(4 * n.size for n in nodes)}

    # ---- tensor pieces ------------------------------------------------------------------------

    def pieces(self, name: str, role: str, pieces: list[tuple]) -> list[tuple]:
        """Chip 0's pieces of tensor `name` (in per-chip coordinates) -> every chip's: a split
        tensor's pieces on chip c cover its slice of the global tensor; a whole one is written
        to every chip's copy (inputs, params) and read back from chip 0 (outputs)."""
        axis = self.split.get(name)
        part = self.global_shape[name][axis] // self.chips if axis is not None else 0
        return self.spread(pieces, axis, part,
                           1 if axis is None and role == "output" else self.chips)

    def spread(self, pieces: list[tuple], axis: int | None, part: int,
               chips: int | None = None) -> list[tuple]:
        """Chip 0's pieces of a value -> the pieces of the first `chips` chips (all by
        default): of a value split along `axis`, chip c's cover elements c*part .. c*part +
        part - 1 of that axis; of a whole one (axis None), each chip's copy."""
        m = self.machine
        out = []
        for c in range(self.chips if chips is None else chips):
            cy, cx = divmod(c, self.chips_x)
            for x, y, addr, off, shp, strides in pieces:
                off = list(off)
                if axis is not None:
                    off[axis] += c * part
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
    # Every gradient a `grad` call gives is all-reduced where it is computed, not later
    # through the linear ops that may follow it (`w - 0.1 * g` would all-reduce `0.1 * g`, as
    # many bytes): then it is the global gradient on every chip, which the debugger shows
    # (`tensor grad(loss, w)`), and the update scales the sum as the one-chip program does.
    marked: set[int] = {node.id for _, _, node in graph.grad_calls}
    while True:
        s = _Splitter(graph, C, marked)
        s.run()
        local = s.finish()
        if not s.dirty:
            break
    verify(local)
    split: dict[str, int | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for n in (*graph.inputs, *graph.params, *graph.outputs):
        st = s.state[n.id]
        split[n.name] = st if isinstance(st, int) else None
        shapes[n.name] = n.shape if n.shape else (1,)
    states = {s.local[n.id].id: s.state[n.id] for n in graph.nodes
              if s.local[n.id].name == n.name}
    return DataParallel(machine, machine.chips_x, machine.chips_y, B, local, s.reduce, split,
                        shapes, states)


# A value's state: None (whole: the same on every chip), an int (split along that axis), or a
# partial (a str, the all-reduce that makes it whole: "sum", "mean", "max").
State = int | str | None


class _Splitter:
    """Walks the global graph in order, giving every node its state and a node of the
    per-chip graph with the per-chip shape.

    A partial stays partial through linear ops (negation, exact casts, sums of partials,
    products with whole values, broadcasts, reshapes, transposes, sums and means, matmuls
    with a whole operand), so a loss `-mean(...)` is all-reduced once, with the gradients.
    Where a partial meets anything else it must be made whole first: the walk marks it and
    starts again (`dirty`), until nothing new is marked; a marked partial is all-reduced
    right after it is computed (`reduce`), and is whole from then on."""

    def __init__(self, graph: Graph, chips: int, marked: set[int]) -> None:
        self.g = graph
        self.C = chips
        self.marked = marked
        self.dirty = False
        self.b = GraphBuilder()
        self.state: dict[int, State] = {}
        self.local: dict[int, Node] = {}
        self.sliced: dict[tuple[int, int], Node] = {}
        self.reduce: dict[int, str] = {}
        self.names = {n.name for n in graph.nodes}

    # ---- helpers --------------------------------------------------------------------------

    def shape(self, shape: tuple[int, ...], axis: State) -> tuple[int, ...]:
        if not isinstance(axis, int):
            return shape
        return shape[:axis] + (shape[axis] // self.C,) + shape[axis + 1:]

    def add(self, node: Node, inputs: tuple[Node, ...], axis: State,
            name: str | None = None, **kw: Any) -> Node:
        """A per-chip copy of `node` with its shape split along `axis`."""
        shape = self.shape(node.shape, axis)
        kw.setdefault("perm", node.perm)       # a transpose's permutation (N-d)
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

    def partial(self, x: Node) -> bool:
        return isinstance(self.state[x.id], str)

    def whole(self, *xs: Node) -> None:
        """These operands must not be partials: mark those that are (the walk restarts)."""
        for x in xs:
            # a broadcast or a reshape is read in place, never stored: reduce its source
            while x.op in (Op.BROADCAST, Op.RESHAPE) and self.partial(x.inputs[0]):
                self.state[x.id] = None
                x = x.inputs[0]
            if self.partial(x):
                self.marked.add(x.id)
                self.dirty = True
                self.state[x.id] = None

    # ---- the walk -------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.g.nodes:
            handler = getattr(self, "_" + node.op.name.lower(), None)
            if handler is None:
                if node.op in UNARY_OPS or node.op in BINARY_OPS or node.op is Op.WHERE:
                    handler = self._elementwise
                elif node.op in REDUCE_OPS:
                    handler = self._reduce
                elif node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX, Op.MAX_MASK, Op.LAYERNORM):
                    handler = self._along
                else:  # pragma: no cover - grad nodes are gone after differentiate
                    self.fail(f"{node.op.value} has no data-parallel rule", node)
            handler(node)

    def put(self, node: Node, local: Node, state: State) -> None:
        self.local[node.id] = local
        if isinstance(state, str) and node.id in self.marked:
            self.reduce[local.id] = state
            state = None
        self.state[node.id] = state

    def _input(self, node: Node) -> None:
        self.put(node, self.add(node, (), 0), 0)

    def _param(self, node: Node) -> None:
        self.put(node, self.add(node, (), None), None)

    def _const(self, node: Node) -> None:
        self.put(node, self.add(node, (), None), None)

    def _broadcast(self, node: Node) -> None:
        src = node.inputs[0]
        a = self.state[src.id]
        if not isinstance(a, int):
            self.put(node, self.add(node, (self.local[src.id],), None), a)
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

    def _linear(self, node: Node) -> State:
        """The partial an elementwise node keeps, if its operands keep it linear; else the
        partial operands are made whole and None is returned."""
        ins = node.inputs
        ops = [self.state[x.id] for x in ins if self.partial(x)]
        if not ops:
            return None
        op = ops[0]
        rest = [x for x in ins if not self.partial(x)]
        keep = False
        if op != "max" and all(o == op for o in ops):
            if node.op is Op.NEG:
                keep = True
            elif node.op is Op.CAST:
                keep = not node.rounds
            elif node.op in (Op.ADD, Op.SUB):
                keep = not rest
            elif node.op is Op.MUL:
                keep = len(ops) == 1 and self.state[rest[0].id] is None
            elif node.op is Op.DIV:
                keep = self.partial(ins[0]) and self.state[ins[1].id] is None
        if keep:
            return op
        self.whole(*ins)
        return None

    def _elementwise(self, node: Node) -> None:
        p = self._linear(node)
        if p is not None:
            self.put(node, self.add(node, tuple(self.local[x.id] for x in node.inputs), None),
                     p)
            return
        axes = {self.state[x.id] for x in node.inputs} - {None}
        if len(axes) > 1:
            self.fail("values split over the chips along different axes meet", node)
        axis = axes.pop() if axes else None
        ins = tuple(self.local[x.id] if self.state[x.id] == axis else self.slice(x, axis)
                    for x in node.inputs)
        self.put(node, self.add(node, ins, axis), axis)

    def slice(self, x: Node, axis: int) -> Node:
        """Whole value `x` as each chip's slice along `axis`: possible without communication
        for a literal, a broadcast along `axis`, elementwise ops of those, and a 2-D matmul
        of one of those and a whole operand (recomputed at the slice's shape)."""
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
        elif (x.op is Op.MATMUL and x.ndim == 2 and x.id not in self.marked
              and self.state[x.inputs[1 - axis].id] is None):
            # a @ b sliced by rows is a's rows @ b, by columns a @ b's columns: the other
            # operand is whole on every chip (as `g @ transpose(w)` in a backward pass whose
            # upstream gradient is a broadcast literal, the gradient of a mean)
            a, b = x.inputs
            ins = ((self.slice(a, 0), self.local[b.id]) if axis == 0
                   else (self.local[a.id], self.slice(b, 1)))
            out = self.add(x, ins, axis, name=self.fresh(x.name))
        else:
            self.fail("a value computed whole on every chip (not a literal or a broadcast) "
                      "meets values split over the chips", x)
        self.sliced[key] = out
        return out

    def _transpose(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        # result axis k is operand axis perm[k]: the split axis moves to where perm puts it
        axis = transpose_perm(node).index(a) if isinstance(a, int) else a
        self.put(node, self.add(node, (self.local[x.id],), axis), axis)

    def _reshape(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        if not isinstance(a, int):
            self.put(node, self.add(node, (self.local[x.id],), None), a)
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
        if isinstance(sa, str) or isinstance(sb, str):
            if (isinstance(sa, str) and sa != "max" and sb is None) or \
                    (isinstance(sb, str) and sb != "max" and sa is None):
                p = sa if isinstance(sa, str) else sb
                self.put(node, self.add(node, (self.local[a.id], self.local[b.id]), None), p)
                return
            self.whole(a, b)
            sa, sb = self.state[a.id], self.state[b.id]
        la, lb = self.local[a.id], self.local[b.id]
        if sa is None and sb is None:
            self.put(node, self.add(node, (la, lb), None), None)
        elif node.ndim > 2:
            self._batched_matmul(node, sa, sb)
        elif sa == 0 and sb is None:
            self.put(node, self.add(node, (la, lb), 0), 0)
        elif sa is None and sb == 1:
            self.put(node, self.add(node, (la, lb), 1), 1)
        elif sa in (None, 1) and sb in (None, 0):
            # the contracted axis is split: each chip's product is a partial sum
            la = la if sa == 1 else self.slice(a, 1)
            lb = lb if sb == 0 else self.slice(b, 0)
            self.put(node, self.add(node, (la, lb), None), "sum")
        else:
            self.fail("a matmul's operands are split over the chips along different axes", node)

    def _batched_matmul(self, node: Node, sa: int | None, sb: int | None) -> None:
        """A matmul of 3-D or 4-D operands, one of them split: only along a batch axis (not
        the last two), where the other operand has that axis too (split alike, or whole and
        sliced like a literal), or broadcasts along it (length 1, or no such axis: `x @ W`);
        the product is then split along it. Anything else runs on the whole machine."""
        a, b = node.inputs
        lead = node.ndim - 2
        axis = None
        for x, s in ((a, sa), (b, sb)):
            if s is not None:
                k = s + node.ndim - x.ndim                 # the result's axis
                if not k < lead or axis not in (None, k):
                    self.fail("a batched matmul's operands are split over the chips along "
                              "other axes than one batch axis", node)
                axis = k
        ins = []
        for x, s in ((a, sa), (b, sb)):
            k = axis - (node.ndim - x.ndim)
            if s is None and k >= 0 and x.shape[k] != 1:
                ins.append(self.slice(x, k))
            else:
                ins.append(self.local[x.id])
        self.put(node, self.add(node, tuple(ins), axis), axis)

    def _reduce(self, node: Node) -> None:
        x = node.inputs[0]
        a = self.state[x.id]
        k = node.axis
        # only sum and mean are linear: of a partial (a sum or mean one) they give a partial
        if isinstance(a, str) and (a == "max" or node.op not in (Op.SUM, Op.MEAN)):
            self.whole(x)
            a = None
        lx = self.local[x.id]
        if a is None or isinstance(a, str):
            self.put(node, self.add(node, (lx,), None), a)
        elif k == a:
            if node.op not in (Op.SUM, Op.MEAN, Op.MAX):
                # the all-reduce has sum, mean and max; an index is not a reduction of indices
                self.fail(f"{node.op.value} along the batch split over the chips", node)
            self.put(node, self.add(node, (lx,), None), node.op.value)
        else:
            axis = a - 1 if k < a else a
            self.put(node, self.add(node, (lx,), axis), axis)

    def _along(self, node: Node) -> None:
        x = node.inputs[0]
        self.whole(x)
        a = self.state[x.id]
        if a is not None and a == node.axis:
            self.fail(f"{node.op.value} along the batch split over the chips", node)
        self.put(node, self.add(node, (self.local[x.id],), a), a)

    def finish(self) -> Graph:
        g = self.g
        self.whole(*g.outputs, *(u.value for u in g.updates))
        for u in g.updates:
            if self.state[u.value.id] is not None:
                self.fail(f"the update of '{u.param.name}' differs from chip to chip (it is "
                          "not reduced over the batch)", u.value)
        outputs = [self.local[o.id] for o in g.outputs]
        updates = [Update(self.local[u.param.id], self.local[u.value.id], u.line, u.col)
                   for u in g.updates]
        # the debugger finds each grad(L, p) call's value by its spelling (compiler.debuginfo)
        calls = tuple((line, col, self.local[n.id]) for line, col, n in g.grad_calls)
        return replace(self.b.finish(outputs, g.filename, updates), grad_calls=calls,
                       constants=g.constants)


# ---- mapping: where the all-reductions go -----------------------------------------------------


def hoist(graph: Graph, kops: list[KOp], reduce: dict[int, str]) -> list[KOp]:
    """`kops` reordered so that all-reductions can go together: each kernel's *depth* is the
    number of all-reduced values on its longest chain of operands, and the kernels run by
    depth, in program order within a depth. So everything that does not wait for an
    all-reduction (the other gradients, their scaling by the learning rate) is computed
    before the first one, and the partials all-reduce in one `ChipAllReduce`, not one per
    update; the order of dependent kernels is kept."""
    depth: dict[int, int] = {}
    for n in graph.nodes:
        depth[n.id] = max((depth[x.id] + (1 if x.id in reduce else 0) for x in n.inputs),
                          default=0)
    order = sorted(range(len(kops)), key=lambda k: (depth[kops[k].node.id], k))
    return [kops[k] for k in order]


class ChipMapper(Mapper):
    """The per-chip program's steps, with a `ChipAllReduce` before the first step that reads a
    value that is still a per-chip partial (and at the end for outputs and updates). Partials
    waiting together are reduced in one step: the gradients of a backward pass, read only by
    the updates at the end, go in one all-reduce."""

    def __init__(self, dp: DataParallel, graph: Graph, machine: Machine, options: Any) -> None:
        super().__init__(graph, dp.grid, machine, options)
        self.dp = dp
        self.pending: dict[int, tuple[Value, str]] = {}
        self.made: set[int] = set()
        self.steps = _Steps(self)

    def run(self, kops: list[KOp]) -> list[Step]:
        super().run(kops)
        users = self.graph.users()
        ends = {o.id for o in self.graph.outputs} | {u.value.id for u in self.graph.updates}
        lost = [n for n in self.graph.nodes if n.id in self.dp.reduce and n.id not in self.made
                and (users[n.id] or n.id in ends)]
        if lost:  # pragma: no cover - lower stores every node it is told to keep
            raise CompilerLimit(f"internal error: the partial '{lost[0].name}' is read but "
                                "never stored, so it cannot be all-reduced", "data parallelism")
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
        if out is not None and out.node is not None and out.node.id in m.dp.reduce:
            m.pending[id(out)] = (out, m.dp.reduce[out.node.id])
            m.made.add(out.node.id)


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
    node of every chip gets code of its own (the all-reduce). `merge` then gives the nodes at
    one position of every chip one program: chip 0's, with each segment spliced in where it
    was emitted. Where the chips' segments differ (a chip at the end of a line sends, the
    middle one adds and broadcasts, the others add and pass on), the program holds each
    distinct one once and picks its own by the chip it runs on (`getx`, `gety`), so every
    chip runs the same code and the object grows with the roles, not with the chips."""

    dp: DataParallel | None = None
    # Per segment: each node's item count when it began, every node's code, its location and
    # the step that emitted it.
    segments: list[tuple[dict[int, int], dict[int, Code], tuple[int, int], int]] = field(
        default_factory=list)
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
        self.segments.append((cuts, self.seg, self.loc, self.step))

    def end_segment(self) -> None:
        self.seg = None
        for c in self.progs.values():
            # the segment used registers freely and left its own location behind
            c.known.clear()
            c.loc = None

    def _at_chip(self, n0: int, cx: int, cy: int) -> int:
        m = self.machine
        x, y = m.node_xy(n0)
        return m.node_id(x + cx * m.cols, y + cy * m.rows)

    def merge(self) -> None:
        """One program per position, for every chip (see the class docstring), replacing
        `progs`; each node's step starts (`starts`) and tables follow it into the merged
        program, on every chip."""
        m, dp = self.machine, self.dp
        chips = [(cx, cy) for cy in range(dp.chips_y) for cx in range(dp.chips_x)]
        local = set(self.progs)
        for _, seg, _, _ in self.segments:
            for n in seg:
                x, y = m.node_xy(n)
                local.add(m.node_id(x % m.cols, y % m.rows))
        progs: dict[int, Code] = {}
        starts: dict[int, list[tuple[int, int]]] = {}
        for n0 in sorted(local):
            code, marks = self._program(n0, chips)
            if code.ninstr:
                for cx, cy in chips:
                    progs[self._at_chip(n0, cx, cy)] = code
                    starts[self._at_chip(n0, cx, cy)] = marks
        self.progs = progs
        self.starts = starts
        # a node's tables (SPMD matmuls) hold the same words on every chip, whose node runs
        # the same program
        self.tables = [(self._at_chip(n, cx, cy), addr, entries)
                       for n, addr, entries in self.tables for cx, cy in chips]

    def _program(self, n0: int, chips: list[tuple[int, int]]
                 ) -> tuple[Code, list[tuple[int, int]]]:
        """The merged program of position n0, and its (step, item index) starts."""
        b = self.progs.get(n0)
        old = self.starts.get(n0, [])
        marks: list[tuple[int, int]] = []
        m = 0                                   # the next of `old` to place
        items: list = []
        prev = 0
        for k, (cuts, seg, loc, step) in enumerate(self.segments):
            if b is not None:
                pos = cuts.get(n0, 0)
                # a start at the cut belongs before the segment if its step is not later
                while m < len(old) and (old[m][1] < pos or
                                        (old[m][1] == pos and old[m][0] <= step)):
                    marks.append((old[m][0], old[m][1] - prev + len(items)))
                    m += 1
                items.extend(b.items[prev:pos])
                prev = pos
            if not marks or marks[-1][0] < step:
                marks.append((step, len(items)))
            groups: dict[tuple, list[int]] = {}
            for c, (cx, cy) in enumerate(chips):
                part = seg.get(self._at_chip(n0, cx, cy))
                groups.setdefault(tuple(part.items) if part is not None else (), []).append(c)
            if len(groups) == 1:
                items.extend(next(iter(groups)))
            else:
                items.extend(self._dispatch(k, groups, loc))
        if b is not None:
            marks.extend((st, i - prev + len(items)) for st, i in old[m:])
            items.extend(b.items[prev:])
        out = Code(self.instrs)
        out.items = items
        instrs = [it for it in items if type(it) is Instr]
        out.ninstr = len(instrs)
        out.nrelay = sum(1 for it in instrs if it.mnemonic == "relay")
        last = next((it.loc for it in reversed(items) if type(it) is Mark), None)
        out.loc = last if last is not None else (b.loc if b is not None and b.loc else (0, 0))
        return out, marks

    def _dispatch(self, k: int, groups: dict[tuple, list[int]], loc: tuple[int, int]
                  ) -> list:
        """Each distinct segment once, behind a branch on this node's chip number
        (cy * chips_x + cx, from its coordinates): the largest group falls through."""
        m, dp = self.machine, self.dp
        ins = self.instrs

        def op(mnemonic: str, *ops: object) -> Instr:
            return ins.instr(mnemonic, ops, loc)

        bodies = sorted(groups.items(), key=lambda bg: (-len(bg[1]), bg[1]))
        end = f".D{k}e"
        out: list = [ins.mark(loc), op("getx", "r1"), op("li", "r3", m.cols),
                     op("divu", "r1", "r1", "r3"), op("gety", "r2"), op("li", "r3", m.rows),
                     op("divu", "r2", "r2", "r3"), op("li", "r3", dp.chips_x),
                     op("mul", "r2", "r2", "r3"), op("add", "r1", "r1", "r2")]
        for g, (_, cs) in enumerate(bodies[1:], 1):
            for c in cs:
                out += [op("li", "r3", c), op("beq", "r1", "r3", f".D{k}g{g}")]
        for g, (body, _) in enumerate(bodies):
            if g:
                out.append(ins.label(f".D{k}g{g}"))
            out.extend(_relabel(ins, body, f"g{g}"))
            if g < len(bodies) - 1:
                out += [ins.mark(loc), op("j", end)]
        out.append(ins.label(end))
        return out


def _relabel(ins: Any, items: tuple, suffix: str) -> list:
    """`items` with every label (and every branch to one) renamed with `suffix`, so that
    several chips' versions of a segment can sit in one program."""
    out: list = []
    for it in items:
        if type(it) is Label:
            out.append(ins.label(it.name + suffix))
        elif type(it) is Instr and it.branch is not None:
            ops = tuple(o + suffix if isinstance(o, str) and o.startswith(".") else o
                        for o in it.ops)
            out.append(ins.instr(it.mnemonic, ops, it.loc))
        else:
            out.append(it)
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


def _round64(n: int) -> int:
    return -(-n // 64) * 64


def _send(ctx: Ctx, msg: LineMsg, carried) -> None:
    """emit_msg, telling the mapping report (if one is asked for) what the message carries:
    `carried()` gives (value name, bytes, view rectangles) per value (compiler.mapreport)."""
    if ctx.traffic is None:
        emit_msg(ctx, msg)
        return
    with ctx.traffic.carrying(carried()):
        emit_msg(ctx, msg)


def _block_part(v: Value, rect: tuple[int, int, int, int], off: int, n: int) -> list:
    """Bytes [off, off + n) of v's stored block `rect`, as the mapping report takes them."""
    from compiler.mapreport import byte_slices
    L = v.layout
    return [(v.name, n, byte_slices(rect, L.stride, L.piece_bytes, L.itemsize, off, off + n))]


def convert_copy(code: Code, src: int, sdt: str, dst: int, ddt: str, n: int) -> None:
    """dst[0:n] = src[0:n] converted from `sdt` to `ddt` (bf16 widened exactly, or rounded to
    nearest even), in whole vectors of f32 lanes (the last may run past n)."""
    nv = -(-n // code.lanes)
    ss, ds = code.lanes * ITEMSIZE[sdt], code.lanes * ITEMSIZE[ddt]
    code.li("r1", src)
    code.li("r2", dst)
    if nv <= 8:
        for k in range(nv):
            code.vload("v0", "r1", ss * k, sdt)
            code.vstore("v0", "r2", ds * k, ddt)
        return
    full, rest = divmod(nv, 4)

    def body() -> None:
        for k in range(4):
            code.vload("v0", "r1", ss * k, sdt)
            code.vstore("v0", "r2", ds * k, ddt)
        code.op("addi", "r1", "r1", 4 * ss)
        code.op("addi", "r2", "r2", 4 * ds)

    code.counted("r3", full, body)
    for k in range(rest):
        code.vload("v0", "r1", ss * k, sdt)
        code.vstore("v0", "r2", ds * k, ddt)


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
        # receive slots (a chunk is added LAG steps after it arrives), and the pack: each
        # node's blocks side by side, as f32
        self.temps = [scratch(f"{label}.chips", 2 * LAG * self.chunk),
                      scratch(f"{label}.pack", 0)]
        packed = [rows[-1][3] + _round64(rows[-1][2] * 4 // ITEMSIZE[rows[-1][0].dtype])
                  for rows in self.blocks().values()]
        self.temps[1].scratch_bytes = max(packed, default=0)
        self._chains: dict[tuple[bool, int, int], tuple[tuple[int, ...], dict[int, int]]] = {}
        # blocks(), while it is emitted with a mapping report (see `carried`)
        self.packs: dict[tuple[int, int], list[tuple[Value, str, int, int]]] = {}

    # ---- geometry ---------------------------------------------------------------------------

    def node(self, cx: int, cy: int, i: int, j: int) -> int:
        m, g = self.dp.machine, self.dp.grid
        return m.node_id(cx * m.cols + g.xs[j], cy * m.rows + g.ys[i])

    # ---- emission ---------------------------------------------------------------------------

    def blocks(self) -> dict[tuple[int, int], list[tuple[Value, str, int, int]]]:
        """Per owner grid node: the blocks it all-reduces (value, op, bytes as stored, byte
        offset in its pack buffer), sums first, then means, then maxima, so that each op's
        blocks are contiguous in the pack."""
        order = {"sum": 0, "mean": 1, "max": 2}
        out: dict[tuple[int, int], list[tuple[Value, str, int, int]]] = {}
        for v, op in sorted(self.reduced, key=lambda vo: order[vo[1]]):
            L = v.layout
            for i, j in L.owners():
                r0, r1, _, _ = L.block(i, j)
                nbytes = (r1 - r0) * L.stride
                rows = out.setdefault((i, j), [])
                at = 0
                if rows:
                    _, _, n, off = rows[-1]
                    at = off + _round64(n * 4 // ITEMSIZE[rows[-1][0].dtype])
                rows.append((v, op, nbytes, at))
        return out

    def work(self) -> dict[tuple[int, int], list[tuple[int, int, str, str]]]:
        """Per owner grid node: its chunks (address in the pack, bytes, "f32", op). The pack
        holds the node's blocks as f32; a chunk never spans two ops."""
        base = self.temps[1].addr
        out: dict[tuple[int, int], list[tuple[int, int, str, str]]] = {}
        for pos, rows in self.blocks().items():
            segs: list[list[int]] = []
            ops: list[str] = []
            for v, op, n, at in rows:
                size = n * 4 // ITEMSIZE[v.dtype]
                if ops and ops[-1] == op:
                    segs[-1][1] = at + size
                else:
                    segs.append([at, at + size])
                    ops.append(op)
            for (a, b), op in zip(segs, ops, strict=True):
                for off, n in chunks(b - a, self.chunk):
                    out.setdefault(pos, []).append((base + a + off, n, "f32", op))
        return out

    def carried(self, pos: tuple[int, int], addr: int, n: int) -> list[tuple[str, int, list]]:
        """What the chunk of `n` bytes at `addr` in grid node `pos`'s pack holds, for the
        mapping report: per value its bytes (the padding after a value is its own) and the
        view rectangles of its block they hold."""
        from compiler.mapreport import byte_slices
        rows = self.packs[pos]
        lo = addr - self.temps[1].addr
        hi = lo + n
        out = []
        for k, (v, _, nbytes, at) in enumerate(rows):
            w = 4 // ITEMSIZE[v.dtype]                    # the pack holds it as f32
            end = rows[k + 1][3] if k + 1 < len(rows) else at + nbytes * w
            a, b = max(lo, at), min(hi, end)
            if b > a:
                L = v.layout
                out.append((v.name, b - a, byte_slices(L.block(*pos), L.stride * w,
                                                       L.piece_bytes * w, 4, a - at, b - at)))
        return out

    def pack(self, ctx: Ctx, back: bool) -> None:
        """Copy every owner's blocks into its pack buffer as f32 (bf16 widened, exactly), or
        with `back` the totals out again (bf16 rounded once): shared code, run by every
        chip."""
        base = self.temps[1].addr
        for (i, j), rows in sorted(self.blocks().items()):
            code = ctx.gcode(i, j)
            for v, _, n, at in rows:
                src, sdt, dst, ddt = v.addr, v.dtype, base + at, "f32"
                if back:
                    src, sdt, dst, ddt = dst, ddt, src, sdt
                convert_copy(code, src, sdt, dst, ddt, n // ITEMSIZE[v.dtype])

    def owner(self, i: int, j: int) -> tuple[int, int]:
        """The chip that computes the total of grid position (i, j)'s blocks: the middle chip.
        (Spreading the owners over the chips, so that every chip adds a share, was measured
        slower: both halves of every row then carry traffic both ways, and a node, which
        relays its row's messages one after another, cannot serve both directions at once.)"""
        dp = self.dp
        return dp.chips_x // 2, dp.chips_y // 2

    def emit(self, ctx: Ctx) -> None:
        if not isinstance(ctx, ChipCtx):  # pragma: no cover - the pipeline makes a ChipCtx
            raise CompilerLimit("an all-reduce across chips needs the data-parallel emitter",
                                "internal")
        work = self.work()
        if not work:
            return
        dp = self.dp
        self.packs = self.blocks() if ctx.traffic is not None else {}
        self.pack(ctx, False)
        ctx.begin_segment()
        try:
            for vertical in (False, True):
                self._reduce(ctx, work, vertical, (True, False))
            scales = [(self.node(*self.owner(i, j), i, j), addr, n, dtype)
                      for (i, j), w in sorted(work.items())
                      for addr, n, dtype, op in w if op == "mean"]
            for dst, addr, n, dtype in scales:
                scale(ctx.code(dst), addr, n, dtype, 1.0 / dp.chips)
            for vertical in (True, False):
                self._bcast(ctx, work, vertical, (False, True))
        finally:
            ctx.end_segment()
        self.pack(ctx, True)

    # A phase runs along one grid axis: toward the middle chip (a reduction) or away from it
    # (a broadcast), so each link carries its messages one way, and only the middle chip's
    # nodes see both directions. The order of a step's messages is the order they come by:
    # those going east (or south) first, the one whose sender is farthest east (south)
    # first, so no node relays a message from far behind before it has sent its own; then
    # those going west (north), mirrored. A node adds what it received only after the
    # step's messages, so adding never holds up a message it must relay.

    def _chips_line(self, vertical: bool) -> int:
        return self.dp.chips_y if vertical else self.dp.chips_x

    def _place(self, vertical: bool, line: int, c: int, i: int, j: int) -> int:
        """Node (i, j) of the chip at place c along a chip row (or chip column) `line`."""
        return self.node(line, c, i, j) if vertical else self.node(c, line, i, j)

    def _chain(self, vertical: bool, line: int, i: int, j: int
               ) -> tuple[tuple[int, ...], dict[int, int]]:
        """The live nodes of grid row i of chip row `line`, west to east across every chip
        (vertical: of grid column j of chip column `line`, north to south), and each one's
        place in that order."""
        key = (vertical, line, j if vertical else i)
        hit = self._chains.get(key)
        if hit is None:
            m, g = self.dp.machine, self.dp.grid
            if vertical:
                x = line * m.cols + g.xs[j]
                last = (self.dp.chips_y - 1) * m.rows + g.ys[-1]
                xys = [(x, y) for y in range(g.ys[0], last + 1)]
            else:
                y = line * m.rows + g.ys[i]
                last = (self.dp.chips_x - 1) * m.cols + g.xs[-1]
                xys = [(x, y) for x in range(g.xs[0], last + 1)]
            chain = tuple(m.node_id(x, y) for x, y in xys if m.live_grid[y, x])
            hit = self._chains[key] = (chain, {n: k for k, n in enumerate(chain)})
        return hit

    def _lines(self, vertical: bool, owner: tuple[int, int]) -> list[int]:
        """Chip rows (or, vertically, the owner's chip column) a phase runs along."""
        return [owner[0]] if vertical else list(range(self.dp.chips_y))

    def _reduce(self, ctx: ChipCtx, work: dict, vertical: bool, directions: tuple) -> None:
        """Partials flow toward each position's owner from one end of every line: the chip
        at place c adds what it got from place c -+ 1 to its own and passes the sum on. The
        chain is pipelined over the chunks: the chip `lev` places from the end sends chunk r
        in step r + LAG * lev into receive slot r mod LAG, and the receiver adds it at the end
        of step r + LAG * lev + LAG - 1, just before it passes the sum on (or, at the owner,
        before the slot is reused), so an addition never waits for a message."""
        n_chips = self._chips_line(vertical)
        if n_chips < 2:
            return
        tmp = self.temps[0].addr
        rounds = max(len(w) for w in work.values())
        adds_at: dict[int, list] = {}
        for t in range(rounds + LAG * (n_chips - 1)):
            msgs = []
            for (i, j), w in sorted(work.items()):
                own = self.owner(i, j)
                o = own[1] if vertical else own[0]
                for forward in directions:
                    senders = range(0, o) if forward else range(n_chips - 1, o, -1)
                    for lev, c in enumerate(senders):
                        r = t - LAG * lev
                        if r < 0 or r >= len(w):
                            continue
                        addr, n, dtype, op = w[r]
                        nxt = c + 1 if forward else c - 1
                        # the middle chip receives from both sides in one step
                        into = tmp + (2 * (r % LAG) + (not forward)) * self.chunk
                        for line in self._lines(vertical, own):
                            chain, at = self._chain(vertical, line, i, j)
                            src = self._place(vertical, line, c, i, j)
                            dst = self._place(vertical, line, nxt, i, j)
                            key = -at[src] if forward else at[src]
                            msgs.append(((not forward, line, key), LineMsg(
                                chain, vertical, at[src], addr, n, {at[dst]: into}), (i, j)))
                            adds_at.setdefault(t + LAG - 1, []).append(
                                (dst, addr, n, dtype, op, into))
            for _, msg, pos in sorted(msgs, key=lambda km: km[0]):
                self._send(ctx, msg, pos)
            for dst, addr, n, dtype, op, into in adds_at.pop(t, []):
                add_into(ctx.code(dst), op, addr, into, n, dtype)
        for t in sorted(adds_at):
            for dst, addr, n, dtype, op, into in adds_at[t]:
                add_into(ctx.code(dst), op, addr, into, n, dtype)

    def _bcast(self, ctx: ChipCtx, work: dict, vertical: bool, directions: tuple) -> None:
        """Each owner's totals flow out to the chips on one side of it along every line,
        stored on each of them (the column phase from the owner chip itself, the row phase
        from every chip of the owner's chip column)."""
        n_chips = self._chips_line(vertical)
        if n_chips < 2:
            return
        rounds = max(len(w) for w in work.values())
        for r in range(rounds):
            msgs = []
            for (i, j), w in sorted(work.items()):
                if r >= len(w):
                    continue
                addr, n, _, _ = w[r]
                own = self.owner(i, j)
                o = own[1] if vertical else own[0]
                for forward in directions:
                    side = range(o + 1, n_chips) if forward else range(o)
                    if not side:
                        continue
                    for line in self._lines(vertical, own):
                        chain, at = self._chain(vertical, line, i, j)
                        src = at[self._place(vertical, line, o, i, j)]
                        stops = {at[self._place(vertical, line, c, i, j)]: addr for c in side}
                        msgs.append(((not forward, line, -src if forward else src),
                                     LineMsg(chain, vertical, src, addr, n, stops), (i, j)))
            for _, msg, pos in sorted(msgs, key=lambda km: km[0]):
                self._send(ctx, msg, pos)

    def _send(self, ctx: ChipCtx, msg: LineMsg, pos: tuple[int, int]) -> None:
        """A chunk of grid node `pos`'s pack (its owner's, on every chip)."""
        _send(ctx, msg, lambda: self.carried(pos, msg.addr, msg.nbytes))


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
                            _send(ctx, LineMsg(chain, False, pos[oj], v.addr + off, n,
                                               {pos[j]: v.addr + off for j in side}),
                                  lambda v=v, r=rect, o=off, n=n: _block_part(v, r, o, n))
                for j in cols:
                    chain, pos = g.col_chains[j], g.col_chain_index(j)
                    for side in ([i for i in rows if i > oi], [i for i in rows if i < oi]):
                        if side:
                            for off, n in chunks(nbytes, maxmsg):
                                _send(ctx, LineMsg(chain, True, pos[oi], v.addr + off, n,
                                                   {pos[i]: v.addr + off for i in side}),
                                      lambda v=v, r=rect, o=off, n=n: _block_part(v, r, o, n))


# ---- weak scaling -----------------------------------------------------------------------------


def scale_batch(text: str, factor: int, filename: str = "<string>") -> str:
    """`text` with its batch (axis 0 of every input) multiplied by `factor`: the program a
    weak-scaling study runs on `factor` chips, each with the original batch. The inputs must
    agree on axis 0 (D1Error otherwise); a SourceError if the text does not parse."""
    from compiler.ast import Input
    from compiler.parse import parse
    from d1isa.errors import D1Error

    program = parse(text, filename)
    dims = [s.dims[0] for s in program.statements if isinstance(s, Input) and s.dims]
    if not dims:
        raise D1Error(f"{filename}: the program has no inputs, so no batch to scale")
    if len({d.value for d in dims}) > 1:
        raise D1Error(f"{filename}: the inputs differ in axis 0 ("
                      + ", ".join(d.text for d in dims) + "), so there is no one batch to "
                      "scale")
    lines = text.split("\n")
    for d in sorted(dims, key=lambda d: (d.line, d.col), reverse=True):
        row = lines[d.line - 1]
        lines[d.line - 1] = (row[:d.col - 1] + str(int(d.value) * factor)
                             + row[d.end_col - 1:])
    return "\n".join(lines)
