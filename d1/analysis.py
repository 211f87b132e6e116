"""Shared analysis for `d1 viz`, `d1 roofline`, `d1 sweep` and `d1 diff`.

Reading what `d1 run --json` wrote, the mesh geometry of a run, the roofline model, comparing two
runs, and compiling + running a kernel from Python. No matplotlib and no Numba at import time:
plots live in d1.plots, and the emulator is imported only by `run_program`.

## The roofline model (docs/TUTORIAL.md, step 6, shows it in use)

A kernel or one of its DSL operations (a *region*, see emulator.trace) does `F` FLOPs in `T`
modelled seconds and moves two kinds of bytes:

- **link bytes** `Bl`: bytes put on neighbour links (every hop of a relayed message counts),
  the `link_bytes` statistic;
- **SRAM bytes** `Bs`: bytes the region's instructions loaded from or stored to SRAM (scalar
  and vector loads and stores, both operands of every mma step, accumulator loads and stores).
  Message payloads, which `sendb`/`recvb`/`relayb` copy between SRAM and the network, are link
  bytes and are not counted again here. Counted by the trace recorder, so known only for runs
  made with `--regions` or `--trace` (and always for `d1 roofline PROGRAM` and `d1 sweep`).

Arithmetic intensity is `F / Bl` (FLOP per link byte) and `F / Bs` (FLOP per SRAM byte). The
roofs are derived from the machine parameters:

- compute: the machine's peak FLOP/s for bf16 (matrix unit) and f32 (`d1 info`); a region that
  issued any bf16 mma is held to the bf16 peak, any other to the f32 peak;
- links: the sum of every directed neighbour link's bandwidth x clock (all links busy at once);
- SRAM: `SRAM_PORT_BYTES_PER_CYCLE` (192 B/cycle per node: the published D1 ports, 2 x 64 B
  loads + 64 B store per cycle) x live nodes x clock. This is a modelling figure: the timing
  model itself does not limit SRAM bandwidth (docs/TIMING.md), so it is a roof, not a cost.

The attainable rate is `min(peak, (F/Bl) x link roof, (F/Bs) x SRAM roof)`; the *binding roof* is
whichever term is smallest. A point far below its attainable rate is bound by latency and waits
(docs/TIMING.md), not by a roof: the `% of roof` column says how close it comes.

A region's modelled time `T` is its span: from the first node entering it to the last node
leaving it, on the modelled clock. Regions overlap when nodes are at different steps, so their
times need not add up to the kernel time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d1isa import units
from d1isa.errors import D1Error, MachineError, printable
from d1isa.files import MAX_JSON_BYTES, read_text
from d1isa.machine import DIRECTIONS, Machine, load_machine, machine_names
from d1isa.objfile import MAX_MESH_NODES

# Modelled SRAM port bandwidth per node (see the module docstring).
SRAM_PORT_BYTES_PER_CYCLE = 192

ROOF_NAMES = {"bf16": "bf16 peak", "f32": "f32 peak", "links": "link bandwidth",
              "sram": "SRAM bandwidth"}


# ---- reading runs --------------------------------------------------------------------------------

def load_run(path: str | Path) -> dict[str, Any]:
    """A run document: what `d1 run --json` wrote ({"file", "status", "result", "stats"}), or a
    bare `Emulator.stats()` dict, which is wrapped into that shape. The file is read as every
    input is (d1isa.files: a regular file, at most MAX_JSON_BYTES)."""
    p = Path(path)
    text = read_text(p, MAX_JSON_BYTES, "statistics file")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise D1Error(f"{p}: not a JSON file ({reason})") from None
    if not isinstance(doc, dict):
        raise D1Error(f"{p}: expected a JSON object from `d1 run --json`")
    _printable_strings(doc)
    if "stats" not in doc and "modelled" in doc:
        doc = {"file": str(p), "status": "unknown", "stats": doc}
    stats = doc.get("stats")
    if not isinstance(stats, dict) or "modelled" not in stats or "nodes" not in stats:
        raise D1Error(f"{p}: not a statistics file; write one with `d1 run FILE --json {p.name}`")
    doc.setdefault("file", str(p))
    doc.setdefault("status", "unknown")
    return doc


def _printable_strings(doc: Any) -> None:
    """Spell every control character of the document's strings (keys too) as an escape: they
    are shown on the terminal (a file name, the machine's name, a region), where an escape
    sequence from the file would act. Walked without recursion (JSON nests to any depth)."""
    stack = [doc]
    while stack:
        x = stack.pop()
        items = x.items() if isinstance(x, dict) else enumerate(x)
        for k, v in list(items):
            if isinstance(v, str):
                x[k] = printable(v)
            elif isinstance(v, dict | list):
                stack.append(v)
        if isinstance(x, dict):
            for k in [k for k in x if not k.isprintable()]:
                x[printable(k)] = x.pop(k)


@contextmanager
def reading(*paths: str | Path) -> Iterator[None]:
    """Around the code that reads statistics documents: a document that parses as JSON but
    lacks what d1 reads from it (a missing key, a string for a number) is an error naming its
    file, not an internal error. Such documents are other programs' output or damaged, so
    every field is not checked one by one."""
    names = " or ".join(str(p) for p in dict.fromkeys(paths))
    try:
        yield
    except MachineError as e:
        raise MachineError(f"{names}: the machine of these statistics: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            ZeroDivisionError, RecursionError) as e:
        raise D1Error(f"{names}: not statistics written by `d1 run --json`, or damaged "
                      f"({type(e).__name__}: {str(e)[:200]})") from None


def ignored_machine_note(stats: dict[str, Any], path: Any) -> str | None:
    """The note for machine options given with a statistics file, if it records its machine's
    parameters (`machine_of` then does not use them); None if it does not."""
    if not isinstance(stats.get("machine_params"), dict):
        return None
    return (f"note: {path} records the machine it ran on ({stats.get('machine')}); the "
            "machine options are not used")


def machine_of(stats: dict[str, Any], fallback: Machine | None = None) -> Machine:
    """The machine a run was made on: its recorded parameters, else the named machine if its
    live-node count matches, else `fallback`."""
    params = stats.get("machine_params")
    if isinstance(params, dict):
        return Machine.from_dict(params)
    name = stats.get("machine")
    if isinstance(name, str) and name in machine_names():
        m = load_machine(name)
        if m.n_live == stats.get("live_nodes"):
            return m
    if fallback is not None:
        return fallback
    raise D1Error(f"the statistics name machine '{name}' without its parameters; "
                  "give it with --machine/--mesh/--set, or re-run with this version of `d1 run`")


@dataclass
class Geometry:
    """Where the live nodes of a run sit, and which grid positions are harvested."""

    width: int
    height: int
    xs: list[int]
    ys: list[int]
    harvested: list[tuple[int, int]]

    @property
    def n(self) -> int:
        return len(self.xs)


def geometry(stats: dict[str, Any]) -> Geometry:
    """The mesh of a run: from its recorded `mesh` entry, else inferred from the live nodes'
    positions (positions inside their bounding box without a live node count as harvested).

    The statistics may be damaged or hostile: a mesh larger than an object may describe
    (MAX_MESH_NODES), or a node outside it, is a ValueError (`reading` names the file), not
    a picture or a heatmap of 10^18 cells that exhausts memory or never ends."""
    xs = [int(v) for v in stats["nodes"]["x"]]
    ys = [int(v) for v in stats["nodes"]["y"]]
    mesh = stats.get("mesh")
    if isinstance(mesh, dict):
        w, h = int(mesh["width"]), int(mesh["height"])
    else:
        w = max(xs) + 1 if xs else 0
        h = max(ys) + 1 if ys else 0
    if min(w, h) < 0:
        raise ValueError(f"a {w:,} x {h:,} mesh: a mesh has no negative side")
    if w * h > MAX_MESH_NODES:
        raise ValueError(f"a {w:,} x {h:,} mesh, more than the {MAX_MESH_NODES:,} nodes of "
                         "any machine d1 emulates")
    outside = next(((x, y) for x, y in zip(xs, ys, strict=True)
                    if not (0 <= x < w and 0 <= y < h)), None)
    if outside is not None:
        raise ValueError(f"node {outside} is outside the {w} x {h} mesh")
    if isinstance(mesh, dict):
        harvested = [(int(x), int(y)) for x, y in mesh.get("harvested", [])]
        return Geometry(w, h, xs, ys, harvested)
    live = set(zip(xs, ys, strict=True))
    harvested = [(x, y) for y in range(h) for x in range(w) if (x, y) not in live]
    return Geometry(w, h, xs, ys, harvested)


def node_label(x: int, y: int, nid: int | None = None) -> str:
    return f"({x},{y})" if nid is None else f"({x},{y}) id {nid}"


# ---- the roofline ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roofs:
    """The roofs of one machine, whole-machine rates."""

    peak: dict[str, float]          # FLOP/s by dtype
    link_bytes_per_s: float         # all directed neighbour links at once
    sram_bytes_per_s: float         # SRAM_PORT_BYTES_PER_CYCLE on every live node
    links: int                      # directed neighbour links
    nodes: int
    clock_hz: float
    # (directed links, B/s each) per distinct link rate, fastest first (on-chip links, then
    # chip-edge ones, on a machine of several chips); empty: every link at the average rate
    link_rates: tuple[tuple[int, float], ...] = ()

    def lines(self) -> list[str]:
        """One line per roof, with units and where it comes from."""
        per_link = self.link_bytes_per_s / self.links if self.links else 0.0
        rates = self.link_rates or ((self.links, per_link),)
        return [
            f"compute roof (bf16)  {units.si(self.peak['bf16'], 'FLOP/s', 4)}  "
            f"(matrix unit, {self.nodes:,} live nodes)",
            f"compute roof (f32)   {units.si(self.peak['f32'], 'FLOP/s', 4)}  "
            f"(vector unit / fp32 mma, {self.nodes:,} live nodes)",
            f"link roof            {units.si(self.link_bytes_per_s, 'B/s', 4)}  "
            "(" + " + ".join(f"{n} directed links x {units.si(r, 'B/s')}"
                             for n, r in rates) + ")",
            f"SRAM roof            {units.si(self.sram_bytes_per_s, 'B/s', 4)}  "
            f"({SRAM_PORT_BYTES_PER_CYCLE} B/cycle/node: 2 x 64 B load + 64 B store ports, "
            "a modelling figure)",
        ]


def roofs_for(m: Machine) -> Roofs:
    bw = m.link_bandwidth
    nbr = m.neighbors
    total_bw = float(bw[nbr >= 0].sum())
    links = int((nbr >= 0).sum())
    rate, count = np.unique(bw[nbr >= 0], return_counts=True)
    return Roofs(peak={k: float(v) for k, v in m.peak_flops.items()},
                 link_bytes_per_s=total_bw * m.clock_hz,
                 sram_bytes_per_s=float(SRAM_PORT_BYTES_PER_CYCLE) * m.n_live * m.clock_hz,
                 links=links, nodes=m.n_live, clock_hz=m.clock_hz,
                 link_rates=tuple((int(n), float(r) * m.clock_hz)
                                  for r, n in zip(rate[::-1], count[::-1], strict=True)))


@dataclass
class Point:
    """One roofline point: a region (DSL operation) or the whole kernel."""

    name: str
    flops: int
    link_bytes: int
    sram_bytes: int | None          # None: not counted in this run
    seconds: float
    dtype: str                      # which compute roof applies: "bf16" or "f32"
    kind: str = "region"            # "region" or "kernel"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds if self.seconds > 0 else 0.0

    @property
    def link_intensity(self) -> float:
        """FLOP per link byte (inf when nothing crossed a link)."""
        if self.link_bytes <= 0:
            return math.inf if self.flops > 0 else 0.0
        return self.flops / self.link_bytes

    @property
    def sram_intensity(self) -> float | None:
        if self.sram_bytes is None:
            return None
        if self.sram_bytes <= 0:
            return math.inf if self.flops > 0 else 0.0
        return self.flops / self.sram_bytes

    def roof_values(self, roofs: Roofs) -> dict[str, float]:
        """The attainable FLOP/s under each roof at this point's intensities."""
        out = {self.dtype: roofs.peak[self.dtype],
               "links": self.link_intensity * roofs.link_bytes_per_s}
        si = self.sram_intensity
        if si is not None:
            out["sram"] = si * roofs.sram_bytes_per_s
        return out

    def binding(self, roofs: Roofs) -> tuple[str, float]:
        """(roof key, attainable FLOP/s): the lowest roof at this point."""
        vals = self.roof_values(roofs)
        key = min(vals, key=lambda k: (vals[k], k != self.dtype))
        return key, vals[key]


def _dtype_of(by_class: dict[str, int]) -> str:
    return "bf16" if by_class.get("mma_bf16", 0) > 0 else "f32"


def kernel_point(stats: dict[str, Any]) -> Point:
    md = stats["modelled"]
    return Point("whole kernel", int(md["flops"]), int(md["link_bytes"]),
                 None if md.get("sram_bytes") is None else int(md["sram_bytes"]),
                 float(md["kernel_seconds"]), _dtype_of(md["instructions_by_class"]), "kernel")


def region_points(stats: dict[str, Any]) -> list[Point]:
    """One point per region the run recorded (empty without region statistics)."""
    out = []
    clock = float(stats["clock_hz"])
    for r in stats.get("regions") or []:
        if not r.get("entries"):
            continue
        span = max(0, int(r["end_cycle"]) - int(r["start_cycle"]))
        out.append(Point(r["label"], int(r["flops"]), int(r["link_bytes"]), int(r["sram_bytes"]),
                         span / clock, _dtype_of(r["instructions_by_class"]), "region",
                         {"region": r}))
    return out


def fmt_intensity(v: float | None) -> str:
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


def roofline_rows(points: list[Point], roofs: Roofs) -> list[list[str]]:
    """Table rows: op, FLOPs, link bytes, SRAM bytes, intensities, modelled FLOP/s, time,
    binding roof, % of that roof."""
    rows = []
    for p in points:
        key, att = p.binding(roofs)
        pct = f"{100.0 * p.flops_per_s / att:.1f}%" if att > 0 else "-"
        rows.append([
            p.name, f"{p.flops:,}", f"{p.link_bytes:,}",
            "n/a" if p.sram_bytes is None else f"{p.sram_bytes:,}",
            fmt_intensity(p.link_intensity), fmt_intensity(p.sram_intensity),
            units.si(p.flops_per_s, "FLOP/s"), f"{round(p.seconds * roofs.clock_hz):,}",
            ROOF_NAMES[key] if p.flops > 0 else "- (no FLOPs)", pct if p.flops > 0 else "-",
        ])
    return rows


ROOFLINE_HEADER = ["op", "FLOP", "link B", "SRAM B", "FLOP/link B", "FLOP/SRAM B",
                   "modelled FLOP/s", "cycles", "binding roof", "% of roof"]


def table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A plain aligned text table (stable output for docs and tests)."""
    right = set(range(1, len(header))) if right is None else right
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


# ---- comparing two runs ------------------------------------------------------------------------

@dataclass
class Change:
    what: str
    a: float | None
    b: float | None
    unit: str

    @property
    def delta(self) -> float:
        return (self.b or 0) - (self.a or 0)

    @property
    def ratio(self) -> float | None:
        if not self.a:
            return None
        return (self.b or 0) / self.a


def total_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """Headline totals of two stats dicts."""
    ma, mb = a["modelled"], b["modelled"]
    out = [
        Change("kernel time", ma["kernel_cycles"], mb["kernel_cycles"], "cycles"),
        Change("kernel time", ma["kernel_seconds"], mb["kernel_seconds"], "s"),
        Change("FLOPs", ma["flops"], mb["flops"], "FLOP"),
        Change("throughput", ma["flops_per_second"], mb["flops_per_second"], "FLOP/s"),
        Change("share of peak", ma["percent_of_peak"], mb["percent_of_peak"], "%"),
        Change("instructions", ma["instructions"], mb["instructions"], "instructions"),
        Change("busy", ma["busy_cycles"], mb["busy_cycles"], "node-cycles"),
        Change("stalled", ma["stall_cycles"], mb["stall_cycles"], "node-cycles"),
        Change("  waiting for a message", ma["stall_recv_cycles"], mb["stall_recv_cycles"],
               "node-cycles"),
        Change("  waiting for FIFO room", ma["stall_send_cycles"], mb["stall_send_cycles"],
               "node-cycles"),
        Change("link traffic", ma["link_bytes"], mb["link_bytes"], "B"),
        Change("link messages", ma["link_messages"], mb["link_messages"], "messages"),
        Change("SRAM high water", ma["sram_high_water_bytes"], mb["sram_high_water_bytes"], "B"),
    ]
    if ma.get("sram_bytes") is not None and mb.get("sram_bytes") is not None:
        out.append(Change("SRAM traffic", ma["sram_bytes"], mb["sram_bytes"], "B"))
    # statistics files of runs on several chips (older files lack the key)
    if ma.get("chip_edge_bytes") or mb.get("chip_edge_bytes"):
        out.insert(out.index(next(c for c in out if c.what == "link messages")),
                   Change("  across chip edges", ma.get("chip_edge_bytes", 0),
                          mb.get("chip_edge_bytes", 0), "B"))
    return out


def _node_map(stats: dict[str, Any]) -> dict[tuple[int, int], int]:
    n = stats["nodes"]
    return {(int(x), int(y)): i for i, (x, y) in enumerate(zip(n["x"], n["y"], strict=True))}


@dataclass
class NodeChange:
    xy: tuple[int, int]
    metric: str
    a: int | None
    b: int | None

    @property
    def delta(self) -> int:
        return (self.b or 0) - (self.a or 0)


def node_changes(a: dict[str, Any], b: dict[str, Any], metric: str, top: int = 5
                 ) -> list[NodeChange]:
    """Nodes (matched by position) whose `metric` ("busy", "stall", "clock") changed most."""
    ma, mb = _node_map(a), _node_map(b)
    va, vb = a["nodes"][metric], b["nodes"][metric]
    out = []
    for xy in sorted(set(ma) | set(mb), key=lambda p: (p[1], p[0])):
        x = int(va[ma[xy]]) if xy in ma else None
        y = int(vb[mb[xy]]) if xy in mb else None
        ch = NodeChange(xy, metric, x, y)
        if ch.delta:
            out.append(ch)
    out.sort(key=lambda c: (-abs(c.delta), c.xy[1], c.xy[0]))
    return out[:top]


@dataclass
class LinkChange:
    src: tuple[int, int]
    direction: str
    bytes_a: int
    bytes_b: int
    busy_a: int
    busy_b: int

    @property
    def delta_busy(self) -> int:
        return self.busy_b - self.busy_a

    @property
    def delta_bytes(self) -> int:
        return self.bytes_b - self.bytes_a


def link_changes(a: dict[str, Any], b: dict[str, Any], top: int = 5) -> list[LinkChange]:
    """Directed links (matched by sender position and direction) whose busy cycles or bytes
    changed most."""
    def table_of(s: dict[str, Any]) -> dict[tuple[tuple[int, int], str], tuple[int, int]]:
        nodes, links = s["nodes"], s["links"]
        out = {}
        for i, (x, y) in enumerate(zip(nodes["x"], nodes["y"], strict=True)):
            for d in range(4):
                nb, busy = int(links["bytes"][i][d]), int(links["busy_cycles"][i][d])
                if nb or busy:
                    out[((int(x), int(y)), DIRECTIONS[d])] = (nb, busy)
        return out

    ta, tb = table_of(a), table_of(b)
    out = []
    for key in set(ta) | set(tb):
        ba, ua = ta.get(key, (0, 0))
        bb, ub = tb.get(key, (0, 0))
        ch = LinkChange(key[0], key[1], ba, bb, ua, ub)
        if ch.delta_busy or ch.delta_bytes:
            out.append(ch)
    out.sort(key=lambda c: (-abs(c.delta_busy), -abs(c.delta_bytes), c.src[1], c.src[0],
                            c.direction))
    return out[:top]


def class_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    ca = a["modelled"]["instructions_by_class"]
    cb = b["modelled"]["instructions_by_class"]
    out = [Change(k, ca.get(k, 0), cb.get(k, 0), "instructions") for k in dict.fromkeys([*ca, *cb])
           if ca.get(k, 0) or cb.get(k, 0)]
    out.sort(key=lambda c: -abs(c.delta))
    return out


def region_changes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, dict | None,
                                                                       dict | None]]:
    """Regions matched by label, in the first run's order then the second's."""
    ra = {r["label"]: r for r in a.get("regions") or []}
    rb = {r["label"]: r for r in b.get("regions") or []}
    return [(k, ra.get(k), rb.get(k)) for k in dict.fromkeys([*ra, *rb])]


# ---- running a program from Python ---------------------------------------------------------------

def run_program(path: str | Path, machine: Machine, options: Any = None, *, trace: bool = False,
                regions: bool = True, max_cycles: int = 50_000_000, seed: int = 0,
                notes: list[str] | None = None):
    """Compile/assemble/load `path` for `machine` and run it; returns (emulator, RunResult).

    `regions` collects per-region statistics (the roofline's SRAM bytes); `trace` records the
    events of a timeline trace too. Inputs keep the object's initial SRAM contents (zeros for
    compiled kernels): the timing model does not depend on the values. `notes`, when given,
    gets the loader's notes (a timing change applied to an object, a recompile) to show.
    """
    from d1.program import load_program
    from emulator import Emulator
    from emulator.state import check_host_memory

    check_host_memory(machine)          # before compiling or assembling for it
    prog = load_program(path, machine, options)
    if notes is not None:
        notes.extend(prog.notes)
    obj = prog.obj
    emu = Emulator(obj, seed=seed, max_cycles=max_cycles,
                   trace=("full" if trace else ("regions" if regions else None)))
    result = emu.run()
    return emu, result
