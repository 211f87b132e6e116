"""The mapping report: where every tensor lives, and which of its slices cross chip edges.

On a machine of several chips the chip-edge links are the scarce resource (50 B/cycle and a
100-cycle SerDes hop against 64 B/cycle and one cycle on chip: docs/MACHINE.md), so the first
question about a mapping is what it sends across them. `d1 compile --report` (and `--emit map`,
and the `mapping` key of `d1 compile --json`) answers it per step: the layout of each tensor the
step reads or writes, and for each tensor the bytes its messages carry across every chip edge
they cross, which slices of it those bytes are, and totals.

**Bytes.** The figures are recorded while the steps are emitted, from the messages themselves:
every line message of compiler.comm (`emit_msg`: redistributions, gathers, the line reductions,
the data-parallel all-reduce) and every panel leg of the matmuls (compiler.matmul,
compiler.summa) reports its path of live nodes and its size to `Traffic.path`, which adds the
bytes to each hop: a hop whose two ends lie on different chips crosses that chip edge, the
others stay on chip. So the report counts exactly the link bytes the emulator will count
(tests/test_mapreport.py compares the two), but before anything runs, and for machines too large
to emulate. Nothing is recorded unless a report is asked for (`Ctx.traffic` is None), so
compiling costs the same.

A message is the step's first operand's unless it says otherwise: the matmuls name the operand
of each panel, and a message sent inside `Traffic.carrying(parts)` is split among the tensors
whose bytes it carries (the data-parallel all-reduce: one chunk of an owner's pack may hold the
end of one gradient and the start of the next, so each tensor gets its own bytes). A tensor's
`messages` are those that carry any of its bytes.

**Slices.** For every chip edge a tensor's bytes cross, the report says which part of the
tensor they are. The JSON gives rectangles `{"rows": [r0, r1], "cols": [c0, c1]}` (half-open)
of the tensor's 2-D *view* (`view`; compiler.layout: an N-d tensor's leading axes folded into
rows, a vector [C] the one row [1, C], a scalar [1, 1]), merged into as few disjoint
rectangles as the union allows (`merge_rects`). The text writes them numpy style: `a[r0:r1,
c0:c1]` of a matrix, `b[c0:c1]` of a vector, and of an N-d tensor boxes of its own axes
(`h2[0:4, 8:16, :, :]`, `:` a whole axis), "all of a" when they are the whole tensor, the
first few of each chip edge and "+N more". A message that carries a
padded block carries its padding too; the slices name only the elements ("only padding" when a
chip edge sees no element at all: the empty blocks of a layout, sent anyway). Where they come
from:

- messages sent with their slices (`Traffic.path(..., slices=)`, `Traffic.carrying`): the
  data-parallel all-reduce and the copies to replicas after it (compiler.dataparallel) say, for
  each chunk, which rows and columns of which tensor's block it holds (`byte_slices`); a SUMMA
  matmul's panel legs (compiler.matmul `_report`: A's rows of the sender's grid row over the
  panel's K range, B's K range over its grid column's columns) and the stream matmul's own
  blocks (compiler.summa) say which panel or block they are;
- the other steps' messages are matched to the step's plan after emission (`derive`): a
  redistribution's groups (a rectangle of the source each), a gather's pieces (element offsets
  in the holder's block), each along the path its messages take. The slices are used only if
  that derivation gives every tensor of the step exactly the chip-edge bytes recorded for it
  (if it gives the step's totals but splits them differently among its operands, as a gather
  of several operands, whose messages are all recorded as its first operand's, the derived
  split is used), so they cannot disagree with the byte figures;
- the line reductions of the kernels (sum, max, softmax, layer norm ...) send partial results
  of the reduction, not slices of the tensor; those, and a step whose messages cannot be
  matched, say "slices: not recorded" rather than guessing.

Of a matmul of a batch (compiler.batched) each entry's product has its own operands, named
`a[e]` for entry e of a: their slices are of the entry's matrix.

A data-parallel program (compiler.dataparallel) emits its per-chip steps once, for chip 0: their
rows give chip 0's on-chip bytes, and the totals count them once per chip (every chip runs
them), so the totals are the whole machine's, as `d1 run --stats` counts them. Only the
all-reduce crosses chip edges. Its temporaries
(`%tN`, the all-reduced `0.05 * grad(loss, b1)` of an update, say) are labelled with the
`update` or `output` they feed and the line they are computed at (`label`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from d1isa.machine import Machine

Chip = tuple[int, int]
Edge = tuple[Chip, Chip]
Rect = tuple[int, int, int, int]          # view rows [r0, r1) x columns [c0, c1)
# One tensor's share of a message: (tensor, bytes, the view rectangles those bytes hold).
Part = tuple[str, int, list[Rect]]

# The steps of the kernels (compiler.kernels) that send messages all send partial results of
# a reduction along grid lines (compiler.comm.allreduce).
PARTIALS = ("not recorded (its messages carry partial results of a reduction along grid "
            "lines, not slices of the tensor)")
UNKNOWN = "not recorded for this step's messages"


@dataclass
class TensorTraffic:
    """The link bytes of one tensor's messages in one step, and the slices of the tensor that
    crossed each chip edge (`unsliced`: chip-edge bytes of messages that did not say)."""

    edges: dict[Edge, int] = field(default_factory=dict)
    on_chip: int = 0
    messages: int = 0
    slices: dict[Edge, set[Rect]] = field(default_factory=dict)
    unsliced: int = 0

    @property
    def chip_edge(self) -> int:
        return sum(self.edges.values())


class Traffic:
    """Link bytes per (step, tensor), split into chip edges and on-chip hops."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        chips: list[Chip] = []
        for nid in range(machine.n_live):
            chips.append(machine.chip_of(*machine.node_xy(nid)))
        self.chip = chips
        self.step = -1
        self.default = ""
        self.rows: dict[tuple[int, str], TensorTraffic] = {}
        self._carried: list[Part] | None = None

    def begin(self, step: int, name: str) -> None:
        """Messages of step `step` not attributed otherwise belong to tensor `name`."""
        self.step = step
        self.default = name

    @contextmanager
    def carrying(self, parts: list[Part]):
        """The messages sent inside carry `parts`: (tensor, bytes, view rectangles) each, the
        bytes adding up to each message's size (messages that name their tensor are not
        affected)."""
        self._carried = parts
        try:
            yield
        finally:
            self._carried = None

    def path(self, tensor: str | None, nids, nbytes: int, messages: int = 1,
             slices: list[Rect] | None = None) -> None:
        """A message of `nbytes` (or `messages` of them, `nbytes` in all) that leaves live
        node nids[0] and passes every later node of `nids` in order (one link per consecutive
        pair); `slices`, if known, the view rectangles of the tensor it carries."""
        if nbytes <= 0 or len(nids) < 2:
            return
        if tensor is None and self._carried is not None:
            parts = self._carried
            if sum(n for _, n, _ in parts) != nbytes:
                raise AssertionError(f"a message of {nbytes} B said it carries "
                                     f"{sum(n for _, n, _ in parts)} B")
        else:
            parts = [(tensor or self.default, nbytes, slices)]
        chip = self.chip
        for name, n, rects in parts:
            if n <= 0:
                continue
            rec = self.rows.get((self.step, name))
            if rec is None:
                rec = self.rows[(self.step, name)] = TensorTraffic()
            rec.messages += messages
            prev = chip[nids[0]]
            for nid in nids[1:]:
                c = chip[nid]
                if c == prev:
                    rec.on_chip += n
                else:
                    key = (prev, c)
                    rec.edges[key] = rec.edges.get(key, 0) + n
                    if rects is None:
                        rec.unsliced += n
                    else:
                        rec.slices.setdefault(key, set()).update(rects)
                prev = c


# ---- slices -----------------------------------------------------------------------------------

def byte_slices(block: Rect, row_bytes: int, piece_bytes: int, elem: int, lo: int,
                hi: int) -> list[Rect]:
    """The view rectangles held by bytes [lo, hi) of a block stored row-major: `block` the
    view rectangle it holds, `row_bytes` from one stored row to the next, each row `pieces`
    parts `piece_bytes` apart (compiler.layout), `elem` bytes an element. Padding holds
    nothing."""
    r0, r1, c0, c1 = block
    ncols = c1 - c0
    if ncols <= 0 or r1 <= r0 or hi <= lo:
        return []
    pieces = max(1, row_bytes // piece_bytes) if piece_bytes > 0 else 1
    out: list[Rect] = []

    def part_row(r: int, a: int, b: int) -> None:
        # bytes [a, b) of stored row r
        for q in range(pieces):
            s = q * piece_bytes
            x0 = max(a - s, 0)
            x1 = min(b - s, ncols * elem)
            if x1 > x0:
                out.append((r0 + r, r0 + r + 1, c0 + x0 // elem, c0 + -(-x1 // elem)))

    first, last = lo // row_bytes, (hi - 1) // row_bytes
    last = min(last, r1 - r0 - 1)
    if first > last:
        return []
    if first == last:
        part_row(first, lo - first * row_bytes, hi - first * row_bytes)
        return out
    full0 = first if lo % row_bytes == 0 else first + 1
    full1 = last + 1 if hi >= (last + 1) * row_bytes else last
    if full0 != first:
        part_row(first, lo - first * row_bytes, row_bytes)
    if full1 > full0:
        out.append((r0 + full0, r0 + full1, c0, c1))
    if full1 == last:
        part_row(last, 0, hi - last * row_bytes)
    return out


def element_slices(rows: np.ndarray, cols: np.ndarray) -> list[Rect]:
    """View elements (rows, cols) as runs along rows, one rectangle a run."""
    if len(rows) == 0:
        return []
    order = np.lexsort((cols, rows))
    r, c = rows[order], cols[order]
    brk = np.nonzero((np.diff(r) != 0) | (np.diff(c) != 1))[0] + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [len(r)]))
    return [(int(r[s]), int(r[s]) + 1, int(c[s]), int(c[e - 1]) + 1)
            for s, e in zip(starts, ends, strict=True)]


def merge_rects(rects) -> list[Rect]:
    """Disjoint rectangles covering exactly the union of `rects`, few of them: the union cut
    into bands between consecutive distinct row bounds, each band into its runs of covered
    columns, a run continued by an identical run in the next band growing downward; or the
    same with columns for rows, if that makes fewer. Sorted by first row, then first
    column."""
    rects = {r for r in rects if r[1] > r[0] and r[3] > r[2]}
    if len(rects) <= 1:
        return list(rects)
    by_rows = _bands(rects)
    by_cols = [(c0, c1, r0, r1) for r0, r1, c0, c1 in _bands({(c0, c1, r0, r1)
                                                             for r0, r1, c0, c1 in rects})]
    best = by_cols if len(by_cols) < len(by_rows) else by_rows
    return sorted(best, key=lambda r: (r[0], r[2], r[1], r[3]))


def _bands(rects: set[Rect]) -> list[Rect]:
    rb = sorted({r[0] for r in rects} | {r[1] for r in rects})
    cb = sorted({r[2] for r in rects} | {r[3] for r in rects})
    cover = np.zeros((len(rb) - 1, len(cb) - 1), dtype=bool)
    ri = {v: k for k, v in enumerate(rb)}
    ci = {v: k for k, v in enumerate(cb)}
    for a0, a1, b0, b1 in rects:
        cover[ri[a0]:ri[a1], ci[b0]:ci[b1]] = True
    out: list[Rect] = []
    open_: dict[tuple[int, int], int] = {}            # (c0, c1) -> first row of the rectangle
    for band in range(len(rb) - 1):
        row = np.concatenate(([False], cover[band], [False]))
        edges = np.flatnonzero(row[1:] != row[:-1])
        runs = {(cb[edges[k]], cb[edges[k + 1]]) for k in range(0, len(edges), 2)}
        for run in [r for r in open_ if r not in runs]:
            out.append((open_.pop(run), rb[band], *run))
        for run in runs:
            open_.setdefault(run, rb[band])
    out.extend((start, rb[-1], *run) for run, start in open_.items())
    return out


# ---- matching a step's messages to its plan ---------------------------------------------------

class _Derived:
    """What the messages of a step's plan carry, per tensor: the same figures as `Traffic`,
    with every message's slices. Messages go along one row or column of the mesh (a grid's
    row and column chains, compiler.grid), so the chip edges a message crosses are those
    between the chips of its two ends."""

    def __init__(self, machine: Machine) -> None:
        self.chip = machine.chip_index
        self.cx = machine.chips_x
        self.rows: dict[str, TensorTraffic] = {}
        self.ok = True

    def send(self, tensor: str, first: int, last: int, hops: int, nbytes: int, messages: int,
             rects: list[Rect]) -> None:
        """`messages` messages of `nbytes` in all from live node `first` to `last`, `hops`
        links apart."""
        if nbytes <= 0 or hops <= 0:
            return
        rec = self.rows.get(tensor)
        if rec is None:
            rec = self.rows[tensor] = TensorTraffic()
        rec.messages += messages
        a, b = divmod(int(self.chip[first]), self.cx), divmod(int(self.chip[last]), self.cx)
        (ay, ax), (by, bx) = a, b
        if ax != bx and ay != by:        # not along one row or column: cannot be matched
            self.ok = False
            return
        crossed = 0
        x, y = ax, ay
        while (x, y) != (bx, by):
            nx, ny = x + (bx > x) - (bx < x), y + (by > y) - (by < y)
            key = ((x, y), (nx, ny))
            rec.edges[key] = rec.edges.get(key, 0) + nbytes
            rec.slices.setdefault(key, set()).update(rects)
            crossed += 1
            x, y = nx, ny
        rec.on_chip += nbytes * (hops - crossed)

    def line(self, tensor: str, chain, a: int, b: int, nbytes: int, messages: int,
             rects: list[Rect]) -> None:
        """Along `chain` from position a to position b."""
        self.send(tensor, chain[a], chain[b], abs(b - a), nbytes, messages, rects)

    def four_phases(self, grid, tensor: str, holder: tuple[int, int], dsts, nbytes: int,
                    messages: int, rects: list[Rect]) -> None:
        """A piece that `holder` sends to the grid nodes `dsts` as compiler.comm.Redistribute
        (and compiler.gather.Gather) send it: along the holder's grid row as far as the
        farthest destination column each way, then from the holder's row down and up each
        destination column as far as its farthest destination."""
        hi, hj = holder
        chain, pos = grid.row_chains[hi], grid.row_chain_index(hi)
        cols = sorted({dj for _, dj in dsts})
        for far in _farthest(cols, hj):
            self.line(tensor, chain, pos[hj], pos[far], nbytes, messages, rects)
        for cj in cols:
            chain, pos = grid.col_chains[cj], grid.col_chain_index(cj)
            for far in _farthest(sorted(di for di, dj in dsts if dj == cj), hi):
                self.line(tensor, chain, pos[hi], pos[far], nbytes, messages, rects)


def _farthest(at: list[int], x: int) -> list[int]:
    """The farthest of the sorted positions `at` beyond x, on each side that has one."""
    return ([at[-1]] if at[-1] > x else []) + ([at[0]] if at[0] < x else [])


def derive(step, machine: Machine) -> tuple[dict[str, TensorTraffic] | None, str]:
    """Per tensor, what the messages of `step`'s plan carry (see the module docstring), or
    None and why not."""
    from compiler.batched import BandMatmul
    from compiler.comm import Redistribute, chunks
    from compiler.gather import Gather

    d = _Derived(machine)
    maxmsg = machine.max_message_bytes
    if isinstance(step, Redistribute):
        name = step.ins[0].name
        isz = step.ins[0].layout.itemsize
        for grp in step.groups:
            n = (grp.prows - 1) * grp.pstride + grp.pcols * isz
            d.four_phases(step.grid, name, grp.holder, grp.dsts, n, len(chunks(n, maxmsg)),
                          [grp.rect])
    elif isinstance(step, Gather):
        isz = step.out.layout.itemsize
        for p in step.pieces:
            src = step.ins[p.k]
            L1 = src.layout
            r0, _, c0, _ = L1.block(*p.holder)
            se = L1.stride // isz
            rects = element_slices(r0 + p.src // se, c0 + p.src % se)
            n = p.n * isz
            d.four_phases(step.grid, src.name, p.holder, list(p.dst), n,
                          len(chunks(n, maxmsg)), rects)
    elif isinstance(step, BandMatmul):
        return None, (UNKNOWN + " (each band's product is a matmul of its own operands, "
                      "whose coordinates are not the tensors')")
    elif type(step).__module__ == "compiler.kernels":
        return None, PARTIALS
    else:
        return None, UNKNOWN
    if not d.ok:
        return None, UNKNOWN
    return d.rows, ""


def _with_slices(step, recorded: dict[str, TensorTraffic], machine: Machine
                 ) -> tuple[dict[str, TensorTraffic], str]:
    """The step's rows with the slices of every chip edge, from the messages or matched to the
    plan (see the module docstring); otherwise the rows as recorded and why they have none."""
    if not any(r.unsliced for r in recorded.values()):
        return recorded, ""
    derived, why = derive(step, machine)
    if derived is None:
        return recorded, why
    names = {n for n, r in recorded.items() if r.edges} | {n for n, r in derived.items()
                                                            if r.edges}
    if all(n in recorded and n in derived and recorded[n].edges == derived[n].edges
           for n in names):
        out = {}
        for n, r in recorded.items():
            out[n] = TensorTraffic(r.edges, r.on_chip, r.messages,
                                   derived[n].slices if n in derived else {}, 0)
        return out, ""
    if (not any(r.slices for r in recorded.values())
            and _sums(recorded.values()) == _sums(derived.values())):
        return derived, ""
    return recorded, UNKNOWN + " (they do not match the step's plan)"


def _sums(rows) -> tuple:
    edges: dict[Edge, int] = {}
    on_chip = messages = 0
    for r in rows:
        on_chip += r.on_chip
        messages += r.messages
        for k, n in r.edges.items():
            edges[k] = edges.get(k, 0) + n
    return edges, on_chip, messages


# ---- labels -----------------------------------------------------------------------------------

def _labels(steps) -> dict[str, str]:
    """Readable labels of the temporaries (`%tN`) a data-parallel program all-reduces (the
    gradients that no name is bound to): the updates (with their lines) and outputs they
    feed. (The line a gradient is computed at is its backward pass's, the first grad call's:
    no help in telling them apart.)"""
    reduced = [v for st in steps if hasattr(st, "dp") for v in st.ins]
    if not reduced:
        return {}
    graph = next(st.dp.graph for st in steps if hasattr(st, "dp"))
    sinks: dict[int, list[str]] = {}
    for u in graph.updates:
        sinks.setdefault(u.value.id, []).append(f"update {u.param.name}"
                                                 + (f", line {u.line}" if u.line else ""))
    for o in graph.outputs:
        sinks.setdefault(o.id, []).append(f"output {o.name}")
    users = graph.users()
    out = {}
    for v in reduced:
        node = v.node
        if node is None or not v.name.startswith("%"):
            continue
        feeds: list[str] = []
        seen = {node.id}
        todo = [node]
        while todo:
            n = todo.pop()
            if n.id in sinks:
                feeds += [s for s in sinks[n.id] if s not in feeds]
                continue
            for u in users[n.id]:
                if u.id not in seen:
                    seen.add(u.id)
                    todo.append(u)
        if feeds:
            out[v.name] = f"{v.name} (for {'; '.join(sorted(feeds))})"
    return out


# ---- the report -------------------------------------------------------------------------------

def mapping_report(steps, traffic: Traffic, grid, machine: Machine, source: str,
                   parallel: dict | None = None) -> dict:
    """The report as plain data (what `--json` writes; `format_report` prints it)."""
    from compiler.layout import view_of

    labels = _labels(steps)
    by_step: dict[int, dict[str, TensorTraffic]] = {}
    for (s, name), rec in traffic.rows.items():
        by_step.setdefault(s, {})[name] = rec
    out_steps = []
    all_rows: list[tuple[str, TensorTraffic, int]] = []
    for k, st in enumerate(steps):
        # A data-parallel program's per-chip steps are recorded for chip 0 and run on every
        # chip; its all-reduce (a step with `dp`) is recorded for every chip.
        copies = machine.chips if parallel and not hasattr(st, "dp") else 1
        tensors = []
        seen = set()
        for role, vals in (("out", [st.out] if st.out is not None else []), ("also", st.also),
                           ("in", st.ins)):
            for v in vals:
                if v is None or v.layout is None or id(v) in seen:
                    continue
                seen.add(id(v))
                tensors.append(_tensor(v, role, grid, machine, labels))
        rows, why = _with_slices(st, by_step.get(k, {}), machine)
        shapes = {v.name: tuple(v.shape) for v in st.values() if v.layout is not None}
        for product in getattr(st, "products", ()):       # compiler.batched's sub-products
            for mm in product:
                shapes.update((v.name, tuple(v.shape)) for v in getattr(mm, "ins", ()))
        moved = []
        for name, rec in rows.items():
            all_rows.append((name, rec, copies))
            view = list(view_of(shapes[name])) if name in shapes else None
            known = rec.unsliced == 0
            moved.append({
                "tensor": name,
                "label": labels.get(name, name),
                "messages": rec.messages,
                "on_chip_bytes": rec.on_chip,
                "chip_edge_bytes": rec.chip_edge,
                "chip_edges": [{"from": list(a), "to": list(b), "bytes": n,
                                "slices": ([{"rows": [r0, r1], "cols": [c0, c1]}
                                            for r0, r1, c0, c1 in merge_rects(
                                                rec.slices.get((a, b), ()))]
                                           if known else None)}
                               for (a, b), n in sorted(rec.edges.items())],
                "view": view,
                "slices_note": None if known or not rec.edges else (why or UNKNOWN),
            })
        moved.sort(key=lambda r: (-r["chip_edge_bytes"], -r["on_chip_bytes"], r["tensor"]))
        out_steps.append({"step": k, "kind": st.kind, "name": st.label,
                          "line": st.loc[0], "col": st.loc[1], "tensors": tensors,
                          "traffic": moved})
    edges: dict[tuple, int] = {}
    per_tensor: dict[str, int] = {}
    on_chip = 0
    for name, rec, copies in all_rows:
        on_chip += rec.on_chip * copies
        per_tensor[name] = per_tensor.get(name, 0) + rec.chip_edge
        for key, n in rec.edges.items():
            edges[key] = edges.get(key, 0) + n
    busiest = sorted(edges.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "source": source,
        "machine": machine.name,
        "chips": [machine.chips_x, machine.chips_y],
        "grid": {"P": grid.P, "Q": grid.Q, "rows": list(grid.ys), "cols": list(grid.xs),
                 "per_chip": _per_chip(grid, machine)},
        "parallel": "data" if parallel else "whole",
        "steps": out_steps,
        "totals": {
            "chip_edge_bytes": sum(edges.values()),
            "on_chip_bytes": on_chip,
            "chip_edge_bytes_by_tensor": {t: n for t, n in sorted(per_tensor.items()) if n},
            "chip_edges": [{"from": list(a), "to": list(b), "bytes": n} for (a, b), n in busiest],
            "labels": {t: labels[t] for t in sorted(per_tensor) if t in labels},
        },
    }


def _per_chip(grid, machine: Machine) -> list[int]:
    """Grid rows x columns on the chip that holds grid node (0, 0) (the same on every chip of
    the grid's first chip row and column)."""
    c0 = machine.chip_of(grid.xs[0], grid.ys[0])
    rows = sum(1 for y in grid.ys if machine.chip_of(grid.xs[0], y)[1] == c0[1])
    cols = sum(1 for x in grid.xs if machine.chip_of(x, grid.ys[0])[0] == c0[0])
    return [rows, cols]


def _tensor(v, role: str, grid, machine: Machine, labels: dict[str, str]) -> dict:
    L = v.layout
    chips = set()
    if L.P == grid.P and L.Q == grid.Q:
        for i, j in L.holders():
            chips.add(machine.chip_of(grid.xs[j], grid.ys[i]))
    return {"name": v.name, "label": labels.get(v.name, v.name), "role": role,
            "dtype": v.dtype, "shape": list(v.shape), "layout": L.describe(), "grid": [L.P, L.Q],
            "bytes_per_node": L.nbytes, "chips": len(chips)}


# ---- text -------------------------------------------------------------------------------------

def _b(n: int) -> str:
    if n >= 1 << 20:
        return f"{n:,} B ({n / (1 << 20):.1f} MiB)"
    return f"{n:,} B"


def _edge(e: dict) -> str:
    (ax, ay), (bx, by) = e["from"], e["to"]
    way = "E" if bx > ax else "W" if bx < ax else "S" if by > ay else "N"
    return f"({ax},{ay}) -{way}-> ({bx},{by})"


def _boxes(sl: list[dict], shape: list[int]) -> list[tuple[tuple[int, int], ...]]:
    """View slices of an N-d tensor as boxes of its own axes ((start, stop) per axis): the
    boxes the view's rows make (compiler.layout.flat_boxes), then those that differ in one
    axis only, and meet along it, merged."""
    from compiler.layout import flat_boxes
    boxes = set()
    for s in sl:
        (r0, r1), (c0, c1) = s["rows"], s["cols"]
        for off, box, _ in flat_boxes(tuple(shape[:-1]), r0, r1):
            boxes.add(tuple((o, o + n) for o, n in zip(off, box, strict=True)) + ((c0, c1),))
    changed = True
    while changed:
        changed = False
        for ax in range(len(shape)):
            groups: dict[tuple, list] = {}
            for b in boxes:
                groups.setdefault(b[:ax] + b[ax + 1:], []).append(b)
            out = set()
            for bs in groups.values():
                bs.sort(key=lambda b: b[ax])
                cur = bs[0]
                for b in bs[1:]:
                    if b[ax][0] == cur[ax][1]:
                        cur = cur[:ax] + ((cur[ax][0], b[ax][1]),) + cur[ax + 1:]
                        changed = True
                    else:
                        out.add(cur)
                        cur = b
                out.add(cur)
            boxes = out
    return sorted(boxes)


def _slice_texts(name: str, sl: list[dict], shape: list[int] | None) -> list[str]:
    """Slices as the text writes them: [c0:c1] of a vector, [r0:r1, c0:c1] of a matrix (or of
    the view of a tensor whose shape the step does not list), and of an N-d tensor boxes of its
    own axes (`_boxes`), `:` for a whole axis, an index for one."""
    if shape is None or len(shape) == 2:
        return [f"{name}[{s['rows'][0]}:{s['rows'][1]}, {s['cols'][0]}:{s['cols'][1]}]"
                for s in sl]
    if len(shape) <= 1:
        return [f"{name}[{s['cols'][0]}:{s['cols'][1]}]" for s in sl]

    def axis(a: int, b: int, size: int) -> str:
        return ":" if (a, b) == (0, size) else str(a) if b == a + 1 else f"{a}:{b}"

    return [f"{name}[{', '.join(axis(a, b, d) for (a, b), d in zip(box, shape, strict=True))}]"
            for box in _boxes(sl, shape)]


def _slices(name: str, e: dict, view: list[int] | None, shape: list[int] | None,
            shown: int) -> str:
    sl = e["slices"]
    if not sl:
        return f"only padding, no elements of {name}"
    if view is not None and len(sl) == 1 and sl[0] == {"rows": [0, view[0]],
                                                       "cols": [0, view[1]]}:
        return f"all of {name}"
    text = _slice_texts(name, sl, shape)
    return ", ".join(text[:shown]) + (f" +{len(text) - shown} more" if len(text) > shown
                                      else "")


def format_report(rep: dict, edges_shown: int = 4, slices_shown: int = 3) -> str:
    """The report as text: per step its tensors' layouts and what crossed chip edges (the
    busiest `edges_shown` chip edges of each tensor, each with its first `slices_shown`
    slices; --json has them all)."""
    g = rep["grid"]
    cx, cy = rep["chips"]
    multi = cx * cy > 1
    how = "data-parallel" if rep["parallel"] == "data" else "mapped onto the whole machine"
    lines = [f"mapping report: {rep['source']} on {rep['machine']}"
             + (f" ({cx} x {cy} chips, {how})" if multi else ""),
             f"grid: {g['P']} x {g['Q']} nodes"
             + (f" ({g['per_chip'][0]} x {g['per_chip'][1]} per chip)" if multi else "")]
    labels = rep["totals"].get("labels", {})
    for st in rep["steps"]:
        shapes = {t["name"]: t["shape"] for t in st["tensors"]}
        lines.append(f"step {st['step']}: {st['kind']} -> {st['name']} "
                     f"(line {st['line']}:{st['col']})")
        for t in st["tensors"]:
            n = t["chips"]
            where = f", on {n} chip{'s' if n != 1 else ''}" if multi and n else ""
            lines.append(f"  {t['role']:<4} {t['label']}: {t['dtype']}{t['shape']} "
                         f"{t['layout']} on {t['grid'][0]} x {t['grid'][1]} grid{where}, "
                         f"{t['bytes_per_node']:,} B per node")
        for r in st["traffic"]:
            lines.append(f"  moves {r['label']}: {r['messages']:,} messages, on chip "
                         f"{_b(r['on_chip_bytes'])}"
                         + (f", across chip edges {_b(r['chip_edge_bytes'])}" if multi else ""))
            edges = sorted(r["chip_edges"], key=lambda e: -e["bytes"])
            if not edges:
                continue
            if r["slices_note"]:
                lines.append(f"    slices: {r['slices_note']}")
            shape = shapes.get(r["tensor"])
            for e in edges[:edges_shown]:
                what = ("" if e["slices"] is None
                        else ": " + _slices(r["tensor"], e, r["view"], shape, slices_shown))
                lines.append(f"    chip edge {_edge(e)}: {e['bytes']:,} B{what}")
            if len(edges) > edges_shown:
                rest = sum(e["bytes"] for e in edges[edges_shown:])
                lines.append(f"    ... {len(edges) - edges_shown} more chip edges, {_b(rest)} "
                             "(all of them in --json)")
    t = rep["totals"]
    lines.append(f"totals: on chip {_b(t['on_chip_bytes'])}"
                 + (f", across chip edges {_b(t['chip_edge_bytes'])}" if multi else ""))
    if multi:
        for name, n in t["chip_edge_bytes_by_tensor"].items():
            lines.append(f"  {labels.get(name, name)} across chip edges: {_b(n)}")
        if t["chip_edges"]:
            busy = ", ".join(f"{_edge(e)} {e['bytes']:,} B" for e in t["chip_edges"][:3])
            lines.append(f"  busiest chip edges: {busy}")
    return "\n".join(lines)
