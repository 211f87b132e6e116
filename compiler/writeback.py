"""The `write_back` pass: each `update` lands in its param's own buffer at the end of the run.

A param is weight-resident: it has one SRAM address on its nodes for the object's whole life
(`schedule` keeps every param live from before the first step to after the last, so `allocate`
never lends its buffer to a temporary), and the host writes it once. An `update NAME = EXPR`
computes the new value like any other value; this pass then makes it the param's contents
after every read of the old value, so the next run of the same loaded program reads it, with
nothing scattered or gathered between the runs.

Two ways, cheapest first:

- **in place**: the step that computes the new value is an elementwise kernel, its result has
  the param's layout and dtype, and no later step reads the param (the kernel itself may: it
  reads each element before it writes it). The result is then stored straight into the param's
  buffer (`Value.alias`), and no step is added. SGD updates such as `w - 0.05 * grad(loss, w)`,
  placed after the backward pass, land here.
- **at the end**: otherwise a write-back step after all the program's steps copies the value
  into the param's buffer (an elementwise copy, or a `Redistribute` when the layouts differ).
  An update whose value is another updated param's old value (`update m = w` with `w` updated
  too, a swap) first copies that old value aside, so every write-back reads values from
  before the step, as the language says.

The update value of a bf16 param is already rounded by the checker (a cast node), so every
write is a plain copy.
"""

from __future__ import annotations

from compiler.asmgen import CompilerLimit
from compiler.comm import Redistribute
from compiler.grid import Grid
from compiler.ir import Graph, Op
from compiler.kernels import Elementwise, Leaf
from compiler.plan import Step, Value

COPY = ("op", Op.CAST, (("leaf", 0),), False)


def write_back(graph: Graph, steps: list[Step], values: dict[int, Value], grid: Grid
               ) -> list[Value]:
    """Make every update of `graph` write its param, appending steps to `steps` (the mapped
    program, in order; `values` by IR node id, on `grid`). Returns the values that must
    survive to the end of the run: every param's buffer, and each update value stored in
    place."""
    params = [values[p.id] for p in graph.params]
    kept = list(params)
    outputs = {o.id for o in graph.outputs}
    for u in graph.updates:
        if u.param.id in outputs:
            raise CompilerLimit(f"'{u.param.name}' is both updated and an output",
                                "an output of an updated param would be read after the "
                                f"update; output a copy instead (`{u.param.name}_old = "
                                f"{u.param.name}`)",
                                (u.line, u.col))
    # Old values of updated params that some write-back reads: they stay put until the end.
    updated = {u.param.id for u in graph.updates}
    read_at_end = {u.value.id for u in graph.updates
                   if u.value.op is Op.PARAM and u.value.id in updated}
    in_place = InPlace(steps)
    aliased: set[int] = set()
    pending: list[tuple[Value, Value, tuple[int, int]]] = []
    for u in graph.updates:
        p, v = values[u.param.id], values[u.value.id]
        loc = (u.line, u.col)
        if v is p:
            continue                                 # `update w = w`: nothing changes
        if id(v) not in aliased and u.param.id not in read_at_end and in_place.allows(v, p):
            v.alias = p
            aliased.add(id(v))
            kept.append(v)
            continue
        pending.append((p, v, loc))
    # Old param values that other write-backs read are copied aside before any is written.
    copies: dict[int, Value] = {}
    for _, v, loc in pending:
        if v.node is not None and v.node.id in read_at_end and id(v) not in copies:
            c = Value(f"{v.name}.old", v.shape, v.dtype, v.layout)
            steps.append(Elementwise(c, COPY, [Leaf("full", v)], loc, v.name, ["copy"]))
            copies[id(v)] = c
    for p, v, loc in pending:
        src = copies.get(id(v), v)
        if src.layout.same_distribution(p.layout) and src.dtype == p.dtype:
            steps.append(Elementwise(p, COPY, [Leaf("full", src)], loc, p.name, ["update"]))
        else:
            steps.append(Redistribute(p, src, False, loc, p.name, grid))
    return kept


class InPlace:
    """Whether a value may be stored in another's buffer (`Value.alias`) as the elementwise
    kernel that computes it goes: an update in its param (above), a running sum in the one
    before it (compiler.splitk)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.producer = {id(st.out): k for k, st in enumerate(steps) if st.out is not None}
        self.last_read: dict[int, int] = {}
        for k, st in enumerate(steps):
            for v in st.ins:
                self.last_read[id(v)] = k

    def allows(self, v: Value, p: Value) -> bool:
        """v's step is one elementwise kernel, no later step reads p, and the kernel reads p
        element for element in v's own layout and dtype."""
        k = self.producer.get(id(v))
        return (k is not None and isinstance(self.steps[k], Elementwise)
                and self.last_read.get(id(p), -1) <= k and v.dtype == p.dtype
                and v.layout.same_distribution(p.layout)
                and _reads_only_in_full(self.steps[k], p))


def _reads_only_in_full(st: Elementwise, p: Value) -> bool:
    """An elementwise kernel may overwrite `p` as it goes only if it reads `p` element for
    element (a full operand in the result's own layout), never as a broadcast row or column."""
    return all(lf.mode == "full" for lf in st.leaves if lf.value is p)

