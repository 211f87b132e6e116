"""The mapping report: where every tensor lives, and which of its slices cross chip edges.

On a machine of several chips the chip-edge links are the scarce resource (50 B/cycle and a
100-cycle SerDes hop against 64 B/cycle and one cycle on chip: docs/MACHINE.md), so the first
question about a mapping is what it sends across them. `d1 compile --report` (and `--emit map`,
and the `mapping` key of `d1 compile --json`) answers it per step: the layout of each tensor the
step reads or writes, and for each tensor the bytes its messages carry across every chip edge
they cross, with totals.

The figures are recorded while the steps are emitted, from the messages themselves: every line
message of compiler.comm (`emit_msg`: redistributions, gathers, the line reductions, the
data-parallel all-reduce) and every panel leg of the matmuls (compiler.matmul, compiler.summa)
reports its path of live nodes and its size to `Traffic.path`, which adds the bytes to each hop:
a hop whose two ends lie on different chips crosses that chip edge, the others stay on chip. So
the report counts exactly the link bytes the emulator will count (tests/test_mapreport.py
compares the two), but before anything runs, and for machines too large to emulate. Nothing is
recorded unless a report is asked for (`Ctx.traffic` is None), so compiling costs the same.

A data-parallel program (compiler.dataparallel) emits its per-chip steps once, for chip 0: their
on-chip bytes are chip 0's, and only the all-reduce crosses chip edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from d1isa.machine import Machine


@dataclass
class TensorTraffic:
    """The link bytes of one tensor's messages in one step."""

    edges: dict[tuple[tuple[int, int], tuple[int, int]], int] = field(default_factory=dict)
    on_chip: int = 0
    messages: int = 0

    @property
    def chip_edge(self) -> int:
        return sum(self.edges.values())


class Traffic:
    """Link bytes per (step, tensor), split into chip edges and on-chip hops."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        chips: list[tuple[int, int]] = []
        for nid in range(machine.n_live):
            chips.append(machine.chip_of(*machine.node_xy(nid)))
        self.chip = chips
        self.step = -1
        self.default = ""
        self.rows: dict[tuple[int, str], TensorTraffic] = {}

    def begin(self, step: int, name: str) -> None:
        """Messages of step `step` not attributed otherwise belong to tensor `name`."""
        self.step = step
        self.default = name

    def path(self, tensor: str | None, nids, nbytes: int, messages: int = 1) -> None:
        """A message of `nbytes` (or `messages` of them, `nbytes` in all) that leaves live
        node nids[0] and passes every later node of `nids` in order (one link per consecutive
        pair)."""
        if nbytes <= 0 or len(nids) < 2:
            return
        rec = self.rows.get((self.step, tensor or self.default))
        if rec is None:
            rec = self.rows[(self.step, tensor or self.default)] = TensorTraffic()
        rec.messages += messages
        chip = self.chip
        prev = chip[nids[0]]
        for n in nids[1:]:
            c = chip[n]
            if c == prev:
                rec.on_chip += nbytes
            else:
                key = (prev, c)
                rec.edges[key] = rec.edges.get(key, 0) + nbytes
            prev = c


def mapping_report(steps, traffic: Traffic, grid, machine: Machine, source: str,
                   parallel: dict | None = None) -> dict:
    """The report as plain data (what `--json` writes; `format_report` prints it)."""
    out_steps = []
    for k, st in enumerate(steps):
        tensors = []
        seen = set()
        for role, vals in (("out", [st.out] if st.out is not None else []), ("also", st.also),
                           ("in", st.ins)):
            for v in vals:
                if v is None or v.layout is None or id(v) in seen:
                    continue
                seen.add(id(v))
                tensors.append(_tensor(v, role, grid, machine))
        moved = []
        for (s, name), rec in traffic.rows.items():
            if s != k:
                continue
            moved.append({
                "tensor": name,
                "messages": rec.messages,
                "on_chip_bytes": rec.on_chip,
                "chip_edge_bytes": rec.chip_edge,
                "chip_edges": [{"from": list(a), "to": list(b), "bytes": n}
                               for (a, b), n in sorted(rec.edges.items())],
            })
        moved.sort(key=lambda r: (-r["chip_edge_bytes"], -r["on_chip_bytes"], r["tensor"]))
        out_steps.append({"step": k, "kind": st.kind, "name": st.label,
                          "line": st.loc[0], "col": st.loc[1], "tensors": tensors,
                          "traffic": moved})
    edges: dict[tuple, int] = {}
    per_tensor: dict[str, int] = {}
    on_chip = 0
    for (_, name), rec in traffic.rows.items():
        on_chip += rec.on_chip
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
        },
    }


def _per_chip(grid, machine: Machine) -> list[int]:
    """Grid rows x columns on the chip that holds grid node (0, 0) (the same on every chip of
    the grid's first chip row and column)."""
    c0 = machine.chip_of(grid.xs[0], grid.ys[0])
    rows = sum(1 for y in grid.ys if machine.chip_of(grid.xs[0], y)[1] == c0[1])
    cols = sum(1 for x in grid.xs if machine.chip_of(x, grid.ys[0])[0] == c0[0])
    return [rows, cols]


def _tensor(v, role: str, grid, machine: Machine) -> dict:
    L = v.layout
    chips = set()
    if L.P == grid.P and L.Q == grid.Q:
        for i, j in L.holders():
            chips.add(machine.chip_of(grid.xs[j], grid.ys[i]))
    return {"name": v.name, "role": role, "dtype": v.dtype, "shape": list(v.shape),
            "layout": L.describe(), "grid": [L.P, L.Q], "bytes_per_node": L.nbytes,
            "chips": len(chips)}


# ---- text -------------------------------------------------------------------------------------

def _b(n: int) -> str:
    if n >= 1 << 20:
        return f"{n:,} B ({n / (1 << 20):.1f} MiB)"
    return f"{n:,} B"


def _edge(e: dict) -> str:
    (ax, ay), (bx, by) = e["from"], e["to"]
    way = "E" if bx > ax else "W" if bx < ax else "S" if by > ay else "N"
    return f"({ax},{ay}) -{way}-> ({bx},{by})"


def format_report(rep: dict, edges_shown: int = 4) -> str:
    """The report as text: per step its tensors' layouts and what crossed chip edges (the
    busiest `edges_shown` chip edges of each tensor; --json has them all)."""
    g = rep["grid"]
    cx, cy = rep["chips"]
    multi = cx * cy > 1
    how = "data-parallel" if rep["parallel"] == "data" else "mapped onto the whole machine"
    lines = [f"mapping report: {rep['source']} on {rep['machine']}"
             + (f" ({cx} x {cy} chips, {how})" if multi else ""),
             f"grid: {g['P']} x {g['Q']} nodes"
             + (f" ({g['per_chip'][0]} x {g['per_chip'][1]} per chip)" if multi else "")]
    for st in rep["steps"]:
        lines.append(f"step {st['step']}: {st['kind']} -> {st['name']} "
                     f"(line {st['line']}:{st['col']})")
        for t in st["tensors"]:
            where = f", on {t['chips']} chips" if multi and t["chips"] else ""
            lines.append(f"  {t['role']:<4} {t['name']}: {t['dtype']}{t['shape']} "
                         f"{t['layout']} on {t['grid'][0]} x {t['grid'][1]} grid{where}, "
                         f"{t['bytes_per_node']:,} B per node")
        for r in st["traffic"]:
            lines.append(f"  moves {r['tensor']}: {r['messages']:,} messages, on chip "
                         f"{_b(r['on_chip_bytes'])}"
                         + (f", across chip edges {_b(r['chip_edge_bytes'])}" if multi else ""))
            edges = sorted(r["chip_edges"], key=lambda e: -e["bytes"])
            for e in edges[:edges_shown]:
                lines.append(f"    chip edge {_edge(e)}: {e['bytes']:,} B")
            if len(edges) > edges_shown:
                rest = sum(e["bytes"] for e in edges[edges_shown:])
                lines.append(f"    ... {len(edges) - edges_shown} more chip edges, {_b(rest)} "
                             "(all of them in --json)")
    t = rep["totals"]
    lines.append(f"totals: on chip {_b(t['on_chip_bytes'])}"
                 + (f", across chip edges {_b(t['chip_edge_bytes'])}" if multi else ""))
    if multi:
        for name, n in t["chip_edge_bytes_by_tensor"].items():
            lines.append(f"  {name} across chip edges: {_b(n)}")
        if t["chip_edges"]:
            busy = ", ".join(f"{_edge(e)} {e['bytes']:,} B" for e in t["chip_edges"][:3])
            lines.append(f"  busiest chip edges: {busy}")
    return "\n".join(lines)
