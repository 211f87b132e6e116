"""The scaling study behind `d1 scale`: one program on machines of more and more chips.

For each chip grid the program is compiled for the machine of that many copies of the chosen
chip and run once (one training step for a training program, which the compiler runs
data-parallel: compiler.dataparallel). A point records the modelled time and share of the
peak, the link bytes that stayed on a chip and those that crossed a chip edge, how busy the
busiest chip-edge link was, and the *scaling efficiency* against the first grid of the list:

- strong scaling (the program as written, the same work on every machine):
  efficiency = (T_first x chips_first) / (T x chips): 100 % means N chips are N times faster;
- weak scaling (`weak`: the batch, axis 0 of every input, multiplied by the chip count, so
  every chip has the work the program declares): efficiency = T_first / T: 100 % means the
  bigger machine takes no longer.

The same study runs again with the chip-edge links' bandwidth (`chip_link_bytes_per_cycle`)
halved and doubled: the co-design question of how much the chip edges decide. A machine of
one chip has no chip edge, so its run is shared by the three series.

Inputs and params keep the object's initial SRAM contents (zeros): the timing model does not
depend on the values (docs/TIMING.md).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d1isa.errors import D1Error
from d1isa.machine import Machine, load_machine, parse_chips

BANDWIDTH_SCALES = (1.0, 0.5, 2.0)
CSV_FIELDS = ["chip_link_bytes_per_cycle", "bandwidth_scale", "chips", "chip_count", "nodes",
              "batch", "parallel", "cycles", "seconds", "percent_of_peak", "peak_dtype",
              "on_chip_bytes", "chip_edge_bytes", "busiest_edge_link",
              "busiest_edge_utilisation", "efficiency", "status", "error"]


@dataclass
class Point:
    """One machine of the study, measured (all figures modelled)."""

    chips: tuple[int, int]
    bandwidth: int                       # chip_link_bytes_per_cycle
    scale: float                         # of the machine's own chip-edge bandwidth
    nodes: int = 0
    batch: int | None = None
    parallel: str = ""                   # "data" or "whole"
    cycles: int | None = None
    seconds: float | None = None
    percent: float | None = None
    peak_dtype: str = ""
    on_chip_bytes: int = 0
    chip_edge_bytes: int = 0
    busiest_edge: str = ""
    busiest_edge_util: float | None = None
    efficiency: float | None = None
    status: str = "ok"
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.chips[0] * self.chips[1]

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.cycles is not None


def parse_chip_list(text: str) -> list[tuple[int, int]]:
    """'1x1,2x2,5x5' -> [(1, 1), (2, 2), (5, 5)]; D1Error (exit 2) for anything else."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise D1Error(f"--chips expects a list of chip grids such as 1x1,2x2,5x5, got '{text}'")
    grids = [parse_chips(t) for t in items]
    if len(set(grids)) != len(grids):
        raise D1Error(f"--chips lists a chip grid twice: '{text}'")
    return grids


def machines(base: dict[str, Any], grids: list[tuple[int, int]]) -> list[Machine]:
    """The study's machines at the nominal chip-edge bandwidth. `base`: the keyword arguments
    of `load_machine` (name, mesh, overrides) without chips."""
    return [load_machine(base.get("name"), mesh=base.get("mesh"), chips=g,
                         overrides=base.get("overrides")) for g in grids]


def program_text(text: str, filename: str, chips: int, weak: bool) -> tuple[str, int | None]:
    """The program a machine of `chips` chips runs, and its batch (None unless its inputs
    agree on axis 0)."""
    from compiler.dataparallel import scale_batch
    from compiler.parse import parse

    if weak:
        text = scale_batch(text, chips, filename)
    from compiler.ast import Input
    dims = [s.dims[0].value for s in parse(text, filename).statements
            if isinstance(s, Input) and s.dims]
    return text, (int(dims[0]) if dims and len(set(dims)) == 1 else None)


def measure(text: str, filename: str, machine: Machine, options: Any, max_cycles: int,
            comm: Any = None) -> dict[str, Any]:
    """Compile `text` for `machine` and run it once: the figures of one point. `comm`: an
    mpi4py communicator of several ranks runs the machine on them (one thread each)."""
    from compiler.pipeline import compile_text
    from emulator import Emulator, auto_threads

    result = compile_text(text, machine, filename, options)
    obj = result.obj
    emu = Emulator(obj, max_cycles=max_cycles,
                   threads=1 if comm is not None else auto_threads(machine.n_live), comm=comm)
    try:
        run = emu.run()
        stats = emu.stats()
    finally:
        if comm is not None:
            emu.close()         # the ranks let go of this machine's state before the next
    if not run.ok:
        lines = [ln.strip() for ln in run.report().splitlines() if ln.strip()]
        raise _PointFailed(run.status, (lines[1] if len(lines) > 1 else lines[0]).rstrip(":"))
    md = stats["modelled"]
    edges = (stats.get("chips") or {}).get("busiest_edge_links") or []
    top = edges[0] if edges else None
    parallel = obj.meta.get("parallel")
    return {
        "parallel": "data" if isinstance(parallel, dict) else "whole",
        "cycles": md["kernel_cycles"], "seconds": md["kernel_seconds"],
        "percent": md["percent_of_peak"], "peak_dtype": md["peak_dtype"],
        "on_chip_bytes": md["on_chip_bytes"], "chip_edge_bytes": md["chip_edge_bytes"],
        "busiest_edge": (f"({top['from'][0]},{top['from'][1]}) -{top['dir']}-> "
                         f"({top['to'][0]},{top['to'][1]})") if top else "",
        "busiest_edge_util": top["utilisation"] if top else None,
        "notes": list(result.notes),
    }


class _PointFailed(Exception):
    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def study(text: str, filename: str, base: dict[str, Any], grids: list[tuple[int, int]],
          options: Any = None, weak: bool = False, max_cycles: int = 50_000_000,
          scales: tuple[float, ...] = BANDWIDTH_SCALES,
          progress: Callable[[Point], None] | None = None, comm: Any = None) -> list[Point]:
    """Every point of the study: for each bandwidth scale (the nominal one first), each chip
    grid in the order given. A point that fails (does not fit, traps) records its error and
    the study goes on. `comm`: run every point on these MPI ranks (`measure`)."""
    nominal = machines(base, grids)
    points: list[Point] = []
    single: dict[tuple[int, int], Point] = {}
    for sc in scales:
        series: list[Point] = []
        for g, m0 in zip(grids, nominal, strict=True):
            bw = max(1, round(m0.chip_link_bytes_per_cycle * sc))
            m = m0 if sc == 1.0 else m0.replace(chip_link_bytes_per_cycle=bw)
            if m.chips == 1 and g in single:
                hit = single[g]
                p = Point(g, bw, sc, **{k: getattr(hit, k) for k in (
                    "nodes", "batch", "parallel", "cycles", "seconds", "percent", "peak_dtype",
                    "on_chip_bytes", "chip_edge_bytes", "busiest_edge", "busiest_edge_util",
                    "status", "error")})
            else:
                p = Point(g, bw, sc, nodes=m.n_live)
                try:
                    prog, p.batch = program_text(text, filename, m.chips, weak)
                    fig = measure(prog, filename, m, options, max_cycles, comm)
                except _PointFailed as e:
                    p.status, p.error = e.status, e.error
                except D1Error as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else "error"
                    p.status, p.error = "error", first.split(": error: ", 1)[-1]
                else:
                    p.extra["notes"] = fig.pop("notes")
                    for k, v in fig.items():
                        setattr(p, k, v)
                if m.chips == 1:
                    single[g] = p
            series.append(p)
            if progress is not None:
                progress(p)
        _efficiency(series, weak)
        points.extend(series)
    return points


def _efficiency(series: list[Point], weak: bool) -> None:
    first = series[0]
    if not first.ok:
        return
    for p in series:
        if not p.ok:
            continue
        if weak:
            p.efficiency = first.cycles / p.cycles
        else:
            p.efficiency = (first.cycles * first.count) / (p.cycles * p.count)


def nominal(points: list[Point]) -> list[Point]:
    return [p for p in points if p.scale == 1.0]


def write_csv(path: str | Path, points: list[Point]) -> None:
    from d1isa.files import write_atomic

    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(CSV_FIELDS)
    for p in points:
        row = {
            "chip_link_bytes_per_cycle": p.bandwidth, "bandwidth_scale": p.scale,
            "chips": f"{p.chips[0]}x{p.chips[1]}", "chip_count": p.count, "nodes": p.nodes,
            "batch": p.batch, "parallel": p.parallel, "cycles": p.cycles,
            "seconds": p.seconds, "percent_of_peak": p.percent, "peak_dtype": p.peak_dtype,
            "on_chip_bytes": p.on_chip_bytes if p.ok else None,
            "chip_edge_bytes": p.chip_edge_bytes if p.ok else None,
            "busiest_edge_link": p.busiest_edge,
            "busiest_edge_utilisation": p.busiest_edge_util, "efficiency": p.efficiency,
            "status": p.status, "error": p.error,
        }
        w.writerow(["" if row[k] is None else row[k] for k in CSV_FIELDS])
    write_atomic(path, f.getvalue())
