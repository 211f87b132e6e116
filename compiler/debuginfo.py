"""What the debugger needs to show any named value: its layout and the span it is live in.

After `emit`, `describe_values` records every value the program names (inputs, params, each
`NAME = EXPR`, gradients bound to a name) and each `grad(L, p)` call by its spelling, in the
format of d1isa.debuginfo (written into the object's metadata as "values"):

- where it is stored: the value itself, plus any redistributed copy in another layout (the
  copy may outlive the original), each as the tensor pieces of one holder per block;
- the step that writes each store (-1: the host writes inputs and params before the start);
- the first later step that may write over its bytes: a value the allocator put at an
  overlapping address after this one's last reader (compiler.alloc), or, for a param, the
  update written into its buffer (compiler.writeback);
- per node, the pc at which each step begins (`Emitted.step_pcs`), against which the debugger
  tests each holding node's pc.

A named value that is never stored says why instead: fused into an elementwise kernel (it
lives in registers only), a constant, a broadcast or reshape read in place, or a value that
nothing the program outputs or updates reads (its step was dropped).

Of a data-parallel program (compiler.dataparallel) the record describes the global values:
a value split over the chips has its global shape and every chip's pieces; a whole one, chip
0's copy; an all-reduced one is written by the all-reduce (and the sharing step after it),
not by the step that computes chip 0's partial; and a partial that is never all-reduced
itself (only values computed from it are) is not stored as the value the program names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compiler.alloc import ALIGN, Schedule
from compiler.comm import Redistribute
from compiler.emit import tensor_pieces
from compiler.grid import Grid
from compiler.ir import Graph, Node, Op
from compiler.lower import KOp, Mapper
from compiler.plan import Value
from d1isa import debuginfo
from d1isa.debuginfo import NamedValue, Store
from d1isa.errors import line_of
from d1isa.objfile import MAX_NAME_CHARS, TensorLayout, TensorPiece

if TYPE_CHECKING:
    from compiler.dataparallel import DataParallel


def describe_values(graph: Graph, kops: list[KOp], mapper: Mapper, sched: Schedule,
                    grid: Grid, step_pcs: dict[int, list[int]], text: str,
                    dp: DataParallel | None = None) -> dict:
    """The "values" record of the program (d1isa.debuginfo.to_json); `graph` is the program
    mapped (of a data-parallel one, `dp`, the per-chip program)."""
    steps = sched.steps
    nsteps = len(steps)
    live = sched.live
    machine = grid.machine
    fused = _fused_into(kops)
    folded = {k.node.inputs[0].id: k.node for k in kops if k.kind == "reduce_all"}
    copies: dict[int, list[Value]] = {}
    for st in steps:
        if (isinstance(st, Redistribute) and not st.transpose and st.out.shape == st.ins[0].shape
                and st.out.dtype == st.ins[0].dtype):
            copies.setdefault(id(st.ins[0]), []).append(st.out)
    # Writes into a buffer that holds a value from before: the write-back of an update into
    # its param, as a step whose result is the param, or as a value stored in place.
    writes: dict[int, list[int]] = {}
    for k, st in enumerate(steps):
        if st.out is not None and live[id(st.out)][0] < k:
            writes.setdefault(id(st.out), []).append(k)
    for v in sched.values:
        if v.alias is not None:
            writes.setdefault(id(v.alias), []).append(live[id(v)][0])
    placed = [(v.addr, _size(v), live[id(v)][0], v) for v in sched.values
              if v.alias is None and v.base is None and v.addr >= 0]
    # Of a data-parallel program: the step after which an all-reduced value holds its total
    # (the all-reduce, or the step sharing its blocks), and how each value lies over the chips.
    reduced: dict[int, int] = {}
    states: dict = {}
    if dp is not None:
        from compiler.dataparallel import ChipAllReduce, ShareBlocks
        states = dp.states
        for k, st in enumerate(steps):
            if isinstance(st, (ChipAllReduce, ShareBlocks)):
                reduced.update((id(v), k) for v in st.ins)

    def until(v: Value) -> int:
        first, last = live[id(v)]
        lo, hi = v.addr, v.addr + _size(v)
        owner = v.alias or v.base or v
        later = [k for k in writes.get(id(owner), ()) if k > first]
        later += [start for a, size, start, w in placed
                  if w is not v and w is not owner and a < hi and lo < a + size
                  and start > last]
        return min(later, default=nsteps)

    def store(v: Value, name: str, axis: int | None) -> Store:
        got = tensor_pieces(v, grid, "output", v.shape)
        shape = tuple(v.shape) or (1,)
        if dp is not None and axis is not None:          # every chip's slice
            got = dp.spread(got, axis, shape[axis])
            shape = _whole(shape, axis, dp.chips)
        pieces = [TensorPiece(machine.node_id(x, y), addr, off, shp, strides)
                  for x, y, addr, off, shp, strides in got]
        layout = TensorLayout(name, v.dtype, shape, "internal", pieces)
        return Store(layout, reduced.get(id(v), live[id(v)][0]), until(v))

    def record(node: Node, name: str, kind: str, aliases: tuple[str, ...],
               at: tuple[int, int]) -> NamedValue:
        v = mapper.values.get(node.id)
        state = states.get(node.id)
        axis = state if isinstance(state, int) else None
        stores: list[Store] = []
        partial = isinstance(state, str) and v is not None and id(v) not in reduced
        if v is not None and id(v) in live and not partial:
            stores.append(store(v, name, axis))
            stores.extend(store(c, name, axis) for c in copies.get(id(v), ())
                          if id(c) in live)
        if stores:
            note = ""
        elif partial and id(v) in live:
            assert dp is not None
            note = (f"each of the {dp.chips} chips holds only its partial result over its "
                    "share of the batch (data-parallel), never the whole value: the chips "
                    "all-reduce values computed from it")
        else:
            note = _why_not_stored(node, v, fused, folded)
        shape = tuple(node.shape)
        if dp is not None and axis is not None:
            shape = _whole(shape, axis, dp.chips)
        return NamedValue(name, kind, node.dtype, shape, at[0], at[1],
                          aliases, tuple(stores), note)

    # A gradient's node carries the position of its backward pass; it is defined by its call.
    # A call written again (`a = grad(L, p)` and `b = grad(L,p)`: two values, or one node
    # reached twice) names its first value only, as the debugger finds a spelling once. A
    # spelling longer than an object's names may be (two long names) is left out: the value
    # is found by its own name, if it has one.
    grads: dict[int, list[str]] = {}
    called: dict[int, tuple[int, int]] = {}
    spellings: dict[str, tuple[Node, str, int, int]] = {}    # each spelling's first call
    for line, col, node in graph.grad_calls:
        grads.setdefault(node.id, [])
        called.setdefault(node.id, (line, col))
        spelt = _call_text(text, line, col)
        if len(spelt) <= MAX_NAME_CHARS:
            spellings.setdefault(debuginfo.spelling(spelt), (node, spelt, line, col))
    for node, spelt, _, _ in spellings.values():
        grads[node.id].append(spelt)
    outputs = {o.id for o in graph.outputs}
    values: list[NamedValue] = []
    taken: set[str] = set()
    for node in graph.nodes:
        if node.name.startswith("%"):
            continue
        kind = ("input" if node.op is Op.INPUT else "param" if node.op is Op.PARAM
                else "output" if node.id in outputs else "grad" if node.id in grads
                else "value")
        aliases = tuple(a for a in grads.get(node.id, ())
                        if debuginfo.spelling(a) != debuginfo.spelling(node.name))
        values.append(record(node, node.name, kind, aliases,
                             called.get(node.id, (node.line, node.col))))
        taken.update(debuginfo.spelling(n) for n in (node.name, *aliases))
    for key, (node, spelt, line, col) in spellings.items():
        if node.name.startswith("%") and key not in taken:     # an unnamed gradient
            values.append(record(node, spelt, "grad", (), (line, col)))
    for name, value, line, col in graph.constants:             # folded: never a node
        values.append(NamedValue(name, "value", "f32", (), line, col,
                                 note=f"a constant ({value:g}), folded into the code that "
                                      "reads it"))
    return debuginfo.to_json(nsteps, step_pcs, machine.n_live, values)


def _whole(shape: tuple[int, ...], axis: int, chips: int) -> tuple[int, ...]:
    """The global shape of a value split along `axis` over `chips` chips."""
    return shape[:axis] + (shape[axis] * chips,) + shape[axis + 1:]


def _size(v: Value) -> int:
    """The bytes the allocator reserves for v (compiler.alloc.allocate)."""
    return -(-v.nbytes // ALIGN) * ALIGN


def _fused_into(kops: list[KOp]) -> dict[int, Node]:
    """Every node computed inside another node's fused elementwise kernel -> that node."""
    out: dict[int, Node] = {}

    def walk(e: tuple, root: Node) -> None:
        if e[0] != "op":
            return
        if e[4] is not root:
            out[e[4].id] = root
        for kid in e[2]:
            walk(kid, root)

    for k in kops:
        if k.kind == "fused" and k.expr is not None:
            walk(k.expr, k.node)
    return out


def _named(node: Node) -> str:
    return f"'{node.name}' (line {node.line})" if not node.name.startswith("%") \
        else f"line {node.line}"


def _why_not_stored(node: Node, v: Value | None, fused: dict[int, Node],
                    folded: dict[int, Node]) -> str:
    """Why a named value has no store, as the debugger says it after "not stored: "."""
    if node.id in fused:
        return (f"fused into the elementwise kernel of {_named(fused[node.id])}, which "
                "computes it in registers")
    if node.op is Op.CONST:
        return f"a constant (every element is {node.value:g})"
    if node.op is Op.BROADCAST:
        return (f"a broadcast of {_named(node.inputs[0])}, read in place by the kernels that "
                "use it")
    if node.id in folded:
        return f"reduced where it lies by the kernel of {_named(folded[node.id])}"
    if node.op is Op.RESHAPE and v is not None:
        return (f"a reshape of {_named(node.inputs[0])}, read in place by the kernels that "
                "use it")
    return "nothing the program outputs or updates reads it, so it is never computed"


def _call_text(text: str, line: int, col: int) -> str:
    """The source text of the call starting at (line, col): `grad(loss, w1)`."""
    src = line_of(text, line) or ""
    i = max(col - 1, 0)
    open_at = src.find("(", i)
    depth = 0
    for j in range(open_at, len(src)) if open_at >= 0 else ():
        depth += {"(": 1, ")": -1}.get(src[j], 0)
        if depth == 0:
            return " ".join(src[i:j + 1].split())
    return f"grad@{line}:{col}"
