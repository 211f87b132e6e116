"""`d1 sweep`: compile and run one kernel for every combination of machine parameters."""

from __future__ import annotations

import csv
import io
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import click

from d1.analysis import ROOF_NAMES, kernel_point, roofs_for, run_program, table
from d1.options import max_cycles_option, program_machine
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import check_destination, refuse_overwrite, refuse_twice, write_atomic
from d1isa.machine import Machine, load_machine, machine_files, parse_chips, parse_mesh, parse_value

CSV_FIELDS = ["status", "error", "kernel_cycles", "kernel_seconds", "flops", "flops_per_second",
              "percent_of_peak", "peak_dtype", "link_bytes", "link_messages", "sram_traffic_bytes",
              "busy_cycles", "stall_cycles", "binding_roof", "percent_of_roof", "chip_edge_bytes"]


# Every point is a compile and a run (a second or more each): a sweep of more points would run
# for days, and listing its points first took gigabytes before the first one ran (1,000 values
# on each of three parameters are 10^9 points).
MAX_POINTS = 100_000


def split_values(text: str, option: str = "") -> list[str]:
    """'16,32,64' -> ['16', '32', '64']; commas inside [...] do not split ('[[1,1]],[]')."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    if any(v == "" for v in out):
        raise D1Error(f"{option + ': ' if option else ''}empty value in '{text}'")
    return out


def parse_axes(sets: tuple[str, ...], meshes: str | None,
               chips: str | None = None) -> list[tuple[str, list[str]]]:
    """The swept axes in order: ("mesh", [...]) first if given, then ("chips", [...]), then
    each --set KEY=V1,V2."""
    axes: list[tuple[str, list[str]]] = []
    for name, text, check in (("mesh", meshes, parse_mesh), ("chips", chips, parse_chips)):
        if text is not None:            # an empty list is an error, not "no axis"
            vals = split_values(text, f"--{name}")
            grids = [check(v) for v in vals]
            if len(set(grids)) < len(grids):    # as d1 scale: one point each
                what = "mesh" if name == "mesh" else "chip grid"
                raise D1Error(f"--{name} lists a {what} twice: '{text}'")
            axes.append((name, vals))
    for item in sets:
        if "=" not in item:
            raise D1Error(f"--set expects KEY=V1,V2,..., got '{item}'")
        key, text = (s.strip() for s in item.split("=", 1))
        if key in (a for a, _ in axes):
            raise D1Error(f"--set {key} is given twice; list all its values in one --set")
        vals = split_values(text, f"--set {key}")
        for v in vals:
            parse_value(key, v)         # the type check, with the parameter's own message
        axes.append((key, vals))
    if not axes:
        raise D1Error("nothing to sweep: give --set KEY=V1,V2,..., --mesh CxR,CxR and/or "
                      "--chips CxR,CxR")
    count = math.prod(len(vals) for _, vals in axes)
    if count > MAX_POINTS:
        sizes = " x ".join(f"{len(vals):,} {name}" for name, vals in axes)
        raise D1Error(f"{sizes} values are {count:,} sweep points, more than the "
                      f"{MAX_POINTS:,} a sweep runs; give fewer values")
    return axes


def run_point(file: Path, machine_name: str | None, params: dict[str, str], options: Any,
              max_cycles: int, own: Machine | None = None) -> dict[str, Any]:
    """One sweep point: its figures, or its error (the sweep goes on), and the loader's notes
    (a timing change applied to an object, a recompile from its embedded source)."""
    row: dict[str, Any] = {"params": params, "status": "ok", "error": "", "cycles": None,
                           "percent": None, "notes": []}
    try:
        overrides = {k: parse_value(k, v) for k, v in params.items()
                     if k not in ("mesh", "chips")}
        # a program's own machine (`own`) is the base, as for d1 run, unless a mesh is swept
        m = load_machine(machine_name, mesh=params.get("mesh"), chips=params.get("chips"),
                         overrides=overrides, base=own if "mesh" not in params else None)
        emu, result = run_program(file, m, options, regions=True, max_cycles=max_cycles,
                                  notes=row["notes"])
    except D1Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        row.update(status="error", error=first.split(": error: ", 1)[-1])
        return row
    stats = emu.stats()
    md = stats["modelled"]
    kp = kernel_point(stats)
    key, att = kp.binding(roofs_for(m))
    row.update(
        status="ok" if result.ok else result.status,
        # the status is its own column: "deadlock: a cycle of ...", not "deadlock: deadlock: ..."
        error="" if result.ok else _first_line(result.report()).removeprefix(
            f"{result.status}: "),
        cycles=md["kernel_cycles"], seconds=md["kernel_seconds"], flops=md["flops"],
        flops_per_second=md["flops_per_second"], percent=md["percent_of_peak"],
        peak_dtype=md["peak_dtype"], link_bytes=md["link_bytes"],
        chip_edge_bytes=md["chip_edge_bytes"],
        link_messages=md["link_messages"], sram_bytes=md.get("sram_bytes"),
        busy_cycles=md["busy_cycles"], stall_cycles=md["stall_cycles"],
        binding=ROOF_NAMES[key] if kp.flops > 0 else "-",
        roof_percent=(100.0 * kp.flops_per_s / att) if att > 0 and kp.flops > 0 else None)
    del emu
    return row


def _first_line(report: str) -> str:
    """What went wrong, in one line: the line after the report's status line."""
    lines = [ln.strip() for ln in report.splitlines() if ln.strip()]
    return (lines[1] if len(lines) > 1 else lines[0]).rstrip(":")


def sweep_table(names: list[str], rows: list[dict[str, Any]]) -> str:
    header = [*names, "cycles", "time", "% of peak", "link bytes", "stalled node-cycles",
              "binding roof", "status"]
    body = []
    for r in rows:
        cells = [str(r["params"][n]) for n in names]
        if r["cycles"] is None:
            err = r["error"] if len(r["error"]) <= 90 else r["error"][:87] + "..."
            body.append([*cells, "-", "-", "-", "-", "-", "-", f"{r['status']}: {err}"])
            continue
        roof = r["binding"] if r.get("roof_percent") is None else \
            f"{r['binding']} ({r['roof_percent']:.1f}% of it)"
        body.append([*cells, f"{r['cycles']:,}", units.seconds(r["seconds"]),
                     f"{r['percent']:.3g}%", units.nbytes(r["link_bytes"]).split(" (")[0],
                     f"{r['stall_cycles']:,}", roof,
                     r["status"] if not r["error"] else f"{r['status']}: {r['error']}"])
    right = set(range(len(names), len(names) + 5))
    return table(header, body, right)


def write_csv(path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
    keymap = {"kernel_cycles": "cycles", "kernel_seconds": "seconds",
              "sram_traffic_bytes": "sram_bytes",
              "percent_of_peak": "percent", "binding_roof": "binding",
              "percent_of_roof": "roof_percent"}
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow([*names, *CSV_FIELDS])
    for r in rows:
        vals = []
        for k in CSV_FIELDS:
            v = r.get(keymap.get(k, k))
            vals.append("" if v is None else v)
        w.writerow([*(r["params"][n] for n in names), *vals])
    write_atomic(path, f.getvalue())


def sweep_base(machine_name: str | None, names: list[str]) -> str:
    """The header's machine: the base machine, and which of its shapes each row replaces
    (a row of `--mesh 4x4` does not run on d1's 354 nodes, whatever the base)."""
    base = machine_name or "d1"
    shaped = [n for n in ("mesh", "chips") if n in names]
    return f"{base} with each row's {' and '.join(shaped)}" if shaped else base


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2,...",
              help="A machine parameter and the values to try (repeatable; every combination "
                   "runs), e.g. --set link_bytes_per_cycle=16,32,64.")
@click.option("--mesh", "meshes", metavar="CxR,CxR,...",
              help="Mesh sizes to try (no harvested nodes), e.g. --mesh 4x4,8x8.")
@click.option("--chips", "chip_grids", metavar="CxR,CxR,...",
              help="Chip grids to try (copies of the chip joined by chip-edge links), e.g. "
                   "--chips 1x1,2x2.")
@click.option("--machine", "machine_name", metavar="NAME|FILE",
              help="Base machine (d1, m4x4, h6x5, tile, tray, cabinet, exapod, or a .toml "
                   "file). Default: d1.")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option for every point, as for `d1 compile`.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every point as CSV (units in the column names).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw kernel time and share of peak against the first parameter (PNG).")
@max_cycles_option("Per point: a node whose clock passes this traps.")
def sweep(file: Path, sets: tuple[str, ...], meshes: str | None, chip_grids: str | None,
          machine_name: str | None, opts: tuple[str, ...], csv_file: Path | None,
          plot_file: Path | None, max_cycles: int) -> None:
    """Run FILE (.d1k, .d1s or .d1o) for every combination of machine parameters.

    Each point builds the machine (--machine, else the machine an object or an assembly
    file's `.machine` names, else d1; then --mesh and --chips, then the --set values),
    compiles or assembles FILE for it and runs it. The table gives the modelled kernel time,
    the share of peak, the bytes moved over links, the stalled node-cycles and the roof that
    binds (d1 roofline explains them). A point that fails (does not fit in SRAM, traps, ...) shows
    its error in its row, and the sweep goes on; every row is still written, and the exit
    status is 1 if any point failed.

    \b
    Examples:
      d1 sweep programs/matmul.d1k --mesh 4x4 --set link_bytes_per_cycle=8,16,32,64
      d1 sweep programs/mlp.d1k --set sram_bytes=65536,1310720 --set fifo_depth=1,4
      d1 sweep programs/matmul.d1k --mesh 2x2,4x4,8x8 --csv mesh.csv --plot mesh.png
      d1 sweep programs/matmul.d1k --mesh 4x4 --chips 1x1,2x2 --set chip_link_bytes_per_cycle=16,50
    """
    from compiler.pipeline import CompileOptions
    from d1.commands.run import one_process
    from d1.program import KINDS, refuse_options

    one_process("d1 sweep", "its per-operation statistics (the binding roof) need the single "
                "serial order of one process")
    options = CompileOptions.parse(opts)
    if not file.exists():
        raise D1Error(f"cannot read {file}: no such file")
    # a usage error, not the failure of every point
    refuse_options(file, KINDS.get(file.suffix.lower()), options)
    for dest, option in ((csv_file, "--csv"), (plot_file, "--plot")):
        if dest is not None:
            refuse_overwrite(dest, [file, *machine_files(machine_name)], option)
            check_destination(dest, option)
    if plot_file is not None:
        refuse_twice(plot_file, [(csv_file, "--csv")] if csv_file else [], f"--plot {plot_file}")
    axes = parse_axes(sets, meshes, chip_grids)
    # Without --machine, an object (or assembly with a leading .machine) is swept around the
    # machine it was built for, as `d1 run prog.d1o --set ...` retimes that machine; the
    # default d1 would recompile it (or, with no embedded source, fail every point).
    own = program_machine(file) if machine_name is None else None
    names = [a for a, _ in axes]
    points = [dict(zip(names, combo, strict=True))
              for combo in itertools.product(*(vals for _, vals in axes))]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console, transient=True,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("sweeping", total=len(points))
        for p in points:
            progress.update(task, description=", ".join(f"{k}={v}" for k, v in p.items()))
            rows.append(run_point(file, machine_name, p, options, max_cycles, own))
            progress.advance(task)
    host = time.perf_counter() - t0
    # What the loader did to an object, once per distinct note (the points of a --set sweep
    # share a machine name, so their notes are one line)
    for note in dict.fromkeys(n for r in rows for n in r["notes"]):
        click.echo(f"note: {note}", err=True)
    # the base a point's machine is built from: an object's own machine unless a mesh is swept
    base = sweep_base(machine_name or (own.name if own is not None and "mesh" not in names
                                       else None), names)
    click.echo(f"{file} on {base}: {len(points)} "
               f"point{'s' if len(points) != 1 else ''} (all figures modelled)")
    click.echo(sweep_table(names, rows))
    failed = sum(1 for r in rows if r["cycles"] is None or r["status"] != "ok")
    ok = [r for r in rows if r["cycles"] is not None and r["status"] == "ok"]
    if ok:
        best = min(ok, key=lambda r: r["cycles"])
        click.echo("fastest: " + ", ".join(f"{k}={v}" for k, v in best["params"].items())
                   + f" at {best['cycles']:,} cycles = {units.seconds(best['seconds'])} "
                   "(modelled)")
    if failed:
        click.echo(f"{failed} point{'s' if failed != 1 else ''} failed (see the status column)")
    if csv_file is not None:
        write_csv(csv_file, names, rows)
        click.echo(f"wrote {csv_file} ({len(rows)} rows)")
    if plot_file is not None:
        from d1.plots import sweep_png
        w, h = sweep_png(names, rows, plot_file, f"{file} on {base}: modelled kernel time "
                                                 "and share of peak")
        click.echo(f"wrote {plot_file} ({w} x {h} px)")
    click.echo(f"swept in {host:.2f} s (measured on the host)")
    if failed:
        raise RuntimeFault(f"{failed} of {len(points)} sweep point"
                           f"{'s' if len(points) != 1 else ''} failed")
