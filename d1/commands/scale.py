"""`d1 scale`: a scaling study, one program on machines of more and more chips."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import click

from d1.options import check_emulated_memory, max_cycles_option
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import check_destination, check_output_dir, read_text, refuse_overwrite
from d1isa.machine import machine_files

OUT_FILES = ("scale.csv", "scale.png")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chips", "chip_list", metavar="CxR,CxR,...", default="1x1,2x2",
              show_default=True,
              help="The chip grids to compare, e.g. 1x1,2x2,5x5; efficiencies are against "
                   "the first.")
@click.option("--weak", is_flag=True,
              help="Weak scaling: multiply the batch (axis 0 of every input) by the number "
                   "of chips, so every chip keeps the work the program declares.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default="out",
              show_default=True, help="Where scale.csv and scale.png are written.")
@click.option("--machine", "machine_name", metavar="NAME|FILE",
              help="The chip every machine is made of (d1, m4x4, h6x5, or a .toml file). "
                   "Default: d1.")
@click.option("--mesh", metavar="CxR",
              help="Use a COLSxROWS chip with no harvested nodes, e.g. --mesh 4x4.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a machine parameter of every machine (repeatable).")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option (repeatable), as for `d1 compile`.")
@max_cycles_option("Per run: a node whose clock passes this many cycles traps.")
def scale(file: Path, chip_list: str, weak: bool, out_dir: Path, machine_name: str | None,
          mesh: str | None, sets: tuple[str, ...], opts: tuple[str, ...],
          max_cycles: int) -> None:
    """Run FILE (.d1k) on machines of more and more chips and say how well it scales.

    For each chip grid of --chips the program is compiled for that many copies of the chip
    (--machine, --mesh and --set choose it) and run once: one training step for a training
    program, which runs data-parallel (the batch split over the chips, gradients all-reduced
    over the chip-edge links), one run for any other program (mapped onto the whole machine).
    The table gives, per machine, the modelled time and share of the peak, the bytes that
    crossed links inside a chip and across chip edges, how busy the busiest chip-edge link
    was, and the scaling efficiency against the first grid: strong scaling by default (the
    same program everywhere: 100 % means N chips are N times faster), weak scaling with
    --weak (the batch times the chips: 100 % means no slower). The whole study runs again with
    the chip-edge bandwidth halved and doubled.

    OUT_DIR gets scale.csv (every run of the three studies) and scale.png (efficiency against
    chips; the three bandwidths side by side). Every machine of the study is compiled before
    any runs: a bad --chips list, a program that does not compile for one of the machines
    (with --weak: at one of the batches, e.g. a reshape that spells out the batch instead of
    -1), or a machine this host cannot emulate is an error (status 2) before anything runs.
    A run that fails (a trap, a deadlock, --max-cycles) shows its error in its row and the
    study goes on (exit status 1).

    \b
    Examples:
      d1 scale programs/train_digits.d1k --mesh 4x4 --chips 1x1,2x2,4x4 --weak
      d1 scale programs/matmul.d1k --mesh 8x8 --chips 1x1,2x2
      d1 scale programs/train_mlp784.d1k --chips 1x1,2x2,5x5 --weak --out-dir scale
    """
    from compiler.pipeline import CompileOptions
    from d1.commands.run import mpi_ranks
    from d1.scale import BANDWIDTH_SCALES, machines, parse_chip_list, study, write_csv
    from d1isa.machine import parse_sets

    grids = parse_chip_list(chip_list)
    options = CompileOptions.parse(opts)
    if file.suffix.lower() != ".d1k":
        raise D1Error(f"{file}: d1 scale takes a .d1k program (it recompiles it for every "
                      "machine, and with --weak changes its batch)")
    base = {"name": machine_name, "mesh": mesh, "overrides": list(sets)}
    fixed = sorted({k for k in parse_sets(list(sets)) if k in ("chips_x", "chips_y")})
    if fixed:
        raise D1Error(f"--set {fixed[0]}: --chips gives the chip grids of the study; --set "
                      "cannot change them")
    single = [f"{a}x{b}" for a, b in grids if a * b == 1]
    if options.parallel == "data" and single:
        raise D1Error(f"-O parallel=data splits the batch over several chips, and --chips "
                      f"lists {single[0]}, a machine of one: leave it out, or leave the "
                      "choice to the compiler (parallel=auto)")
    text = read_text(file)
    ms = machines(base, grids)
    for m in ms:
        check_emulated_memory(m)
    check_output_dir(out_dir)
    paths = {name: out_dir / name for name in OUT_FILES}
    for name, path in paths.items():
        refuse_overwrite(path, [file, *machine_files(machine_name)], f"{name} ({path})")
        check_destination(path, "--out-dir")

    t0 = time.perf_counter()
    tty = sys.stderr.isatty()

    def compiled(p) -> None:
        if tty and p.same is None:
            click.echo(f"  compiled {p.chips[0]}x{p.chips[1]} at {p.bandwidth} B/cycle",
                       err=True)

    def progress(p) -> None:
        if tty:
            click.echo(f"  {p.chips[0]}x{p.chips[1]} at {p.bandwidth} B/cycle: "
                       + (f"{p.cycles:,} cycles" if p.ok else p.status), err=True)

    click.echo(f"{file}: {'weak' if weak else 'strong'} scaling over "
               f"{', '.join(f'{a}x{b}' for a, b in grids)} chips of "
               f"{ms[0].cols} x {ms[0].rows} nodes ({len(grids) * len(BANDWIDTH_SCALES)} "
               "runs)", err=True)
    # Every point is compiled before any runs: a program that does not compile for one of
    # the machines (or, with --weak, at one of the batches) is an error before anything runs.
    points = study(text, str(file), base, grids, options, weak, max_cycles, BANDWIDTH_SCALES,
                   progress=progress, comm=mpi_ranks(), compiled=compiled)
    host = time.perf_counter() - t0
    notes = sorted({n for p in points for n in p.extra.get("notes", [])})
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(_table(points, weak))
    click.echo(_bandwidth_table(points))
    write_csv(paths["scale.csv"], points)
    from d1.plots import scale_png
    kind = "weak" if weak else "strong"
    with warnings.catch_warnings():
        # every run failed: an empty plot, and matplotlib's warning that it has no legend
        warnings.filterwarnings("ignore", message="No artists with labels found")
        w, h = scale_png(points, paths["scale.png"],
                         f"{file}: {kind} scaling on {ms[0].cols} x {ms[0].rows}-node chips "
                         "(modelled)", weak)
    click.echo(f"wrote {paths['scale.csv']} ({len(points)} rows) and {paths['scale.png']} "
               f"({w} x {h} px)")
    click.echo(f"studied in {host:.1f} s (measured on the host)")
    failed = [p for p in points if not p.ok]
    if failed:
        raise RuntimeFault(f"{len(failed)} of {len(points)} runs failed (see the status "
                           "column)")


def _table(points, weak: bool) -> str:
    from d1.analysis import table
    from d1.scale import nominal

    rows = []
    for p in nominal(points):
        # what the compiler chose, as in scale.csv: on one chip, "whole" (the one chip)
        head = [f"{p.chips[0]}x{p.chips[1]}", f"{p.count}", f"{p.batch:,}" if p.batch else "-",
                p.parallel or "-"]
        if not p.ok:
            rows.append([*head, "-", "-", "-", "-", "-", "-", "-", f"{p.status}: {p.error}"])
            continue
        rows.append([
            *head, f"{p.cycles:,}", units.seconds(p.seconds),
            f"{p.percent:.3g}%",
            units.nbytes(p.on_chip_bytes).split(" (")[0],
            units.nbytes(p.chip_edge_bytes).split(" (")[0] if p.count > 1 else "-",
            f"{100 * p.busiest_edge_util:.1f}%" if p.busiest_edge_util is not None else "-",
            f"{100 * p.efficiency:.1f}%" if p.efficiency is not None else "-"])
    header = ["chips", "count", "batch", "parallel", "cycles", "time", "% of peak",
              "on-chip bytes", "chip-edge bytes", "busiest edge link", "efficiency"]
    if any(not p.ok for p in nominal(points)):
        header.append("status")
        rows = [r + [""] * (len(header) - len(r)) for r in rows]
    kind = "weak" if weak else "strong"
    return (f"modelled, at the machine's chip-edge bandwidth; {kind}-scaling efficiency "
            "against the first row:\n" + table(header, rows, set(range(1, 11))))


def _bandwidth_table(points) -> str:
    from d1.analysis import table

    scales = sorted({p.scale for p in points})
    grids = list(dict.fromkeys(p.chips for p in points))
    rows = []
    for g in grids:
        row = [f"{g[0]}x{g[1]}"]
        for sc in scales:
            p = next(q for q in points if q.chips == g and q.scale == sc)
            row.append(f"{100 * p.efficiency:.1f}%" if p.efficiency is not None else "-")
        rows.append(row)
    bw = {sc: next(p.bandwidth for p in points if p.scale == sc) for sc in scales}
    header = ["chips", *(f"edges x{sc:g} ({bw[sc]} B/cycle)" for sc in scales)]
    return ("efficiency with the chip-edge bandwidth changed (modelled):\n"
            + table(header, rows, set(range(1, len(header)))))
