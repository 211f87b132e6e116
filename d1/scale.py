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

Every point is compiled before any runs (`compile_points`; the halved and doubled machines
too, as the compiler times messages with the link bandwidth): a point that does not compile
is an error before anything has run, and only a run that fails is a row with an error.

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

from d1isa.errors import D1Error, SourceError
from d1isa.machine import MAX_LINK_BYTES, Machine, load_machine, parse_chips

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
    # Until it runs: the compiled object (compile_points), or the point whose run this one
    # shares (a machine of one chip, the same at every chip-edge bandwidth).
    obj: Any = field(default=None, repr=False, compare=False)
    same: Point | None = field(default=None, repr=False, compare=False)

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


def compile_points(text: str, filename: str, base: dict[str, Any],
                   grids: list[tuple[int, int]], options: Any = None, weak: bool = False,
                   scales: tuple[float, ...] = BANDWIDTH_SCALES,
                   progress: Callable[[Point], None] | None = None) -> list[Point]:
    """Every point of the study, compiled and not yet run: for each bandwidth scale (the
    nominal one first), each chip grid in the order given. The halved and doubled series are
    compiled too, because the compiler times its messages with the machine's link bandwidth.
    A point that does not compile is a D1Error (exit status 2) naming its chip grid: nothing
    has run yet. Each point holds its object until it runs (a few MB even for 25 d1 chips,
    little next to the state of the machine that runs it); a machine of one chip has no chip
    edge, so its halved and doubled points share the nominal one's (`Point.same`)."""
    from compiler.pipeline import compile_text

    nominal = machines(base, grids)
    batch0 = program_text(text, filename, 1, False)[1] if weak else None
    points: list[Point] = []
    single: dict[tuple[int, int], Point] = {}
    for sc in scales:
        for g, m0 in zip(grids, nominal, strict=True):
            # within the parameter's range: doubling the largest bandwidth was a MachineError
            bw = min(MAX_LINK_BYTES, max(1, round(m0.chip_link_bytes_per_cycle * sc)))
            m = m0 if sc == 1.0 else m0.replace(chip_link_bytes_per_cycle=bw)
            p = Point(g, bw, sc, nodes=m.n_live)
            if m.chips == 1 and g in single:
                p.same = single[g]
                p.batch, p.parallel = p.same.batch, p.same.parallel
            else:
                # --weak's errors about the program's batch (none, or several) are the
                # program's, not this machine's: program_text raises them as they are
                prog, p.batch = program_text(text, filename, m.chips, weak)
                try:
                    result = compile_text(prog, m, filename, options)
                except D1Error as e:
                    raise _compile_error(e, p, m, text, prog, filename, batch0) from None
                p.obj = result.obj
                p.parallel = "data" if isinstance(p.obj.meta.get("parallel"), dict) else "whole"
                p.extra["notes"] = list(result.notes)
                if m.chips == 1:
                    single[g] = p
            points.append(p)
            if progress is not None:
                progress(p)
    return points


def _compile_error(e: D1Error, p: Point, m: Machine, text: str, prog: str, filename: str,
                   batch0: int | None) -> D1Error:
    """The error of a point that does not compile: which machine, and why. `text` is the
    program as written, `prog` the one compiled for the point (with --weak, `batch0` is the
    batch of `text`, and `prog` has it times the chips)."""
    from compiler.check import check
    from compiler.parse import parse

    what = f"{p.chips[0]}x{p.chips[1]} chips of {m.cols} x {m.rows} nodes"
    if p.scale != 1.0:
        name = {0.5: "halved", 2.0: "doubled"}.get(p.scale, f"x{p.scale:g}")
        what += f" with the chip-edge bandwidth {name} ({p.bandwidth} B/cycle)"

    def checks(source: str) -> D1Error | None:
        """The shape and type errors of `source` (cheap: parse and check, no mapping)."""
        try:
            check(parse(source, filename), m, filename, source)
        except D1Error as err:
            return err
        return None

    scaled = batch0 is not None and prog != text
    if scaled:
        # The program as written may be wrong already: then that is the error to show.
        own = checks(text)
        if own is not None:
            e, scaled = own, False
    reason = str(e).strip() or type(e).__name__
    sep = "\n" if isinstance(e, SourceError) or "\n" in reason else " "
    if not scaled:
        return D1Error(f"the program does not compile for {what}:{sep}{reason}")
    msg = (f"the program could not be scaled to {what}: at a batch of {batch0 * m.chips:,} "
           f"({batch0:,} x {m.chips} chips, --weak) it does not compile:{sep}{reason}")
    if checks(prog) is not None:
        # a shape error that the program as written does not have: the batch did it
        msg += "\n" + _weak_hint(e, batch0)
    return D1Error(msg)


def _weak_hint(e: D1Error, batch0: int) -> str:
    """What to change in a program whose shapes --weak could not scale."""
    why = ("note: --weak multiplies axis 0 of every input by the number of chips and changes "
           "no other number of the program")
    diag = e.diagnostics[0] if isinstance(e, SourceError) and e.diagnostics else None
    if diag is None or "cannot reshape" not in diag.message:
        return f"{why}: a shape written out that depends on the batch does not follow it"
    fix = "write its batch axis as -1"
    written = (diag.source_line or "")[diag.col - 1:diag.col - 1 + diag.width].strip()
    if written.startswith("[") and written.endswith("]"):
        dims = [t.strip() for t in written[1:-1].split(",")]
        if dims[0] == str(batch0) and "-1" not in dims:
            fix = f"write {written} as [{', '.join(['-1', *dims[1:]])}]"
    return (f"{why}, so this reshape, which spells out the batch, does not follow it: {fix} "
            "(-1 means the rest, docs/DSL.md)")


def run_points(points: list[Point], max_cycles: int = 50_000_000,
               progress: Callable[[Point], None] | None = None, comm: Any = None) -> None:
    """Run every compiled point once, in order, and record its figures (`measure`). A run
    that fails (traps, deadlocks, passes `max_cycles`) records its error and the study goes
    on. A point's object is let go once it has run."""
    for p in points:
        if p.same is not None:
            for k in _SHARED:
                setattr(p, k, getattr(p.same, k))
        else:
            try:
                fig = measure(p.obj, max_cycles, comm)
            except _PointFailed as e:
                p.status, p.error = e.status, e.error
            except D1Error as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else "error"
                p.status, p.error = "error", first.split(": error: ", 1)[-1]
            else:
                for k, v in fig.items():
                    setattr(p, k, v)
            p.obj = None
        if progress is not None:
            progress(p)


# What a one-chip point of the halved or doubled series takes from the nominal one's run.
_SHARED = ("nodes", "batch", "parallel", "cycles", "seconds", "percent", "peak_dtype",
           "on_chip_bytes", "chip_edge_bytes", "busiest_edge", "busiest_edge_util",
           "status", "error")


def measure(obj: Any, max_cycles: int, comm: Any = None) -> dict[str, Any]:
    """Run a compiled object once: the figures of one point. `comm`: an mpi4py communicator
    of several ranks runs the machine on them (one thread each)."""
    from emulator import Emulator, auto_threads

    machine = obj.machine
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
    return {
        "cycles": md["kernel_cycles"], "seconds": md["kernel_seconds"],
        "percent": md["percent_of_peak"], "peak_dtype": md["peak_dtype"],
        "on_chip_bytes": md["on_chip_bytes"], "chip_edge_bytes": md["chip_edge_bytes"],
        "busiest_edge": (f"({top['from'][0]},{top['from'][1]}) -{top['dir']}-> "
                         f"({top['to'][0]},{top['to'][1]})") if top else "",
        "busiest_edge_util": top["utilisation"] if top else None,
    }


class _PointFailed(Exception):
    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def study(text: str, filename: str, base: dict[str, Any], grids: list[tuple[int, int]],
          options: Any = None, weak: bool = False, max_cycles: int = 50_000_000,
          scales: tuple[float, ...] = BANDWIDTH_SCALES,
          progress: Callable[[Point], None] | None = None, comm: Any = None,
          compiled: Callable[[Point], None] | None = None) -> list[Point]:
    """Every point of the study: for each bandwidth scale (the nominal one first), each chip
    grid in the order given. Every point is compiled before any runs (`compile_points`: a
    point that does not compile is a D1Error); a run that fails (traps, deadlocks) records
    its error and the study goes on. `comm`: run every point on these MPI ranks (`measure`).
    `compiled` is called with each point once it is compiled, `progress` once it has run."""
    points = compile_points(text, filename, base, grids, options, weak, scales, compiled)
    run_points(points, max_cycles, progress, comm)
    efficiencies(points, weak)
    return points


def efficiencies(points: list[Point], weak: bool) -> None:
    """Each point's scaling efficiency, against the first grid of its bandwidth series."""
    for sc in dict.fromkeys(p.scale for p in points):
        _efficiency([p for p in points if p.scale == sc], weak)


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
