"""`d1 scale`: a scaling study, one program on machines of more and more chips."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from d1.options import max_cycles_option
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import check_destination, check_output_dir, read_text, refuse_overwrite

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
    chips; the three bandwidths side by side). A run that fails shows its error in its row
    and the study goes on (exit status 1); a bad --chips list, a program that does not
    compile, or a machine this host cannot emulate is an error (status 2) before anything
    runs.

    \b
    Examples:
      d1 scale programs/train_digits.d1k --mesh 4x4 --chips 1x1,2x2,4x4 --weak
      d1 scale programs/matmul.d1k --mesh 8x8 --chips 1x1,2x2
      d1 scale train_mlp784.d1k --chips 1x1,2x2,5x5 --weak --out-dir scale
    """
    from compiler.pipeline import CompileOptions, compile_text
    from d1.commands.run import mpi_ranks
    from d1.scale import machines, parse_chip_list, program_text, study, write_csv
    from emulator.state import check_host_memory

    grids = parse_chip_list(chip_list)
    options = CompileOptions.parse(opts)
    if file.suffix.lower() != ".d1k":
        raise D1Error(f"{file}: d1 scale takes a .d1k program (it recompiles it for every "
                      "machine, and with --weak changes its batch)")
    text = read_text(file)
    base = {"name": machine_name, "mesh": mesh, "overrides": list(sets)}
    ms = machines(base, grids)
    for m in ms:
        check_host_memory(m)
    # A program that does not compile, or has no batch to scale, fails every point alike:
    # say so once, before anything runs.
    first, _ = program_text(text, str(file), ms[0].chips, weak)
    compile_text(first, ms[0], str(file), options, assemble_object=False)
    check_output_dir(out_dir)
    paths = {name: out_dir / name for name in OUT_FILES}
    for name, path in paths.items():
        refuse_overwrite(path, [file], f"{name} ({path})")
        check_destination(path, "--out-dir")

    t0 = time.perf_counter()
    total = len(grids) * 3

    def progress(p) -> None:
        if sys.stderr.isatty():
            click.echo(f"  {p.chips[0]}x{p.chips[1]} at {p.bandwidth} B/cycle: "
                       + (f"{p.cycles:,} cycles" if p.ok else p.status), err=True)

    click.echo(f"{file}: {'weak' if weak else 'strong'} scaling over "
               f"{', '.join(f'{a}x{b}' for a, b in grids)} chips of "
               f"{ms[0].cols} x {ms[0].rows} nodes ({total} runs)", err=True)
    points = study(text, str(file), base, grids, options, weak, max_cycles, progress=progress,
                   comm=mpi_ranks())
    host = time.perf_counter() - t0
    notes = sorted({n for p in points for n in p.extra.get("notes", [])})
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(_table(points, weak))
    click.echo(_bandwidth_table(points))
    write_csv(paths["scale.csv"], points)
    from d1.plots import scale_png
    kind = "weak" if weak else "strong"
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
        if not p.ok:
            rows.append([f"{p.chips[0]}x{p.chips[1]}", f"{p.count}", "-", "-", "-", "-", "-",
                         "-", "-", "-", f"{p.status}: {p.error}"])
            continue
        rows.append([
            f"{p.chips[0]}x{p.chips[1]}", f"{p.count}", f"{p.batch:,}" if p.batch else "-",
            p.parallel if p.count > 1 else "-", f"{p.cycles:,}", units.seconds(p.seconds),
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
