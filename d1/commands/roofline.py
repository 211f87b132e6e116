"""`d1 roofline`: a kernel and each of its DSL operations against the machine's roofs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click

from d1.analysis import (
    ROOF_NAMES,
    ROOFLINE_HEADER,
    ignored_machine_note,
    kernel_point,
    load_run,
    machine_of,
    reading,
    region_points,
    roofline_rows,
    roofs_for,
    run_program,
    table,
)
from d1.options import machine_from_options, machine_given, machine_options, max_cycles_option
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import check_destination, refuse_overwrite
from d1isa.machine import machine_files


def roofline_text(doc: dict[str, Any], machine) -> tuple[str, list, Any]:
    """The report, the points and the roofs of one run document."""
    stats = doc["stats"]
    roofs = roofs_for(machine)
    regions = region_points(stats)
    kernel = kernel_point(stats)
    points = [*regions, kernel]
    lines = [f"roofline of {doc.get('file', '?')} on {stats['machine']} "
             f"({units.number(stats['live_nodes'])} live nodes at "
             f"{units.si(stats['clock_hz'], 'Hz')}); "
             "all figures modelled", ""]
    lines += ["roofs (d1/analysis.py explains them):"] + [f"  {r}" for r in roofs.lines()]
    lines.append("")
    lines.append(table(ROOFLINE_HEADER, roofline_rows(points, roofs), set(range(1, 8)) | {9}))
    lines.append("")
    lines.append("FLOP/link B: FLOPs per byte put on neighbour links (every hop counts); "
                 "FLOP/SRAM B: per byte loaded or stored by instructions;")
    lines.append("cycles: the op's span, first node in to last node out (ops may overlap); "
                 "% of roof: modelled FLOP/s over the lowest roof at the op's intensities.")
    if not regions:
        lines.append("no per-operation figures: these statistics have no regions (run with "
                     "`d1 run --regions` or `--trace`, or give the program itself)")
    key, att = kernel.binding(roofs)
    if kernel.flops > 0:
        lines.append(f"whole kernel: {units.si(kernel.flops_per_s, 'FLOP/s')} = "
                     f"{100 * kernel.flops_per_s / att:.1f}% of the roof that binds it "
                     f"({ROOF_NAMES[key]}, {units.si(att, 'FLOP/s')} at its intensity); "
                     f"{100 * kernel.flops_per_s / roofs.peak[kernel.dtype]:.2f}% of the "
                     f"{kernel.dtype} peak")
    else:
        lines.append("whole kernel: no FLOPs, so no point on the roofline")
    return "\n".join(lines), points, roofs


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the roofline as a PNG (10 x 7 inches).")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option for a .d1k program, as for `d1 compile`.")
@click.option("--dpi", type=click.IntRange(20, 400), default=100, show_default=True,
              help="PNG resolution.")
@max_cycles_option("A node whose clock passes this traps.")
@machine_options
def roofline(file: Path, output: Path | None, opts: tuple[str, ...], dpi: int, max_cycles: int,
             machine_name: str | None, mesh: str | None, chips: str | None,
             sets: tuple[str, ...]) -> None:
    """Place a kernel and each of its DSL operations on the machine's roofline.

    FILE is a program (.d1k compiled, .d1s assembled, .d1o loaded) that is run with
    per-operation statistics, or a statistics file from `d1 run --json` (made with --regions
    or --trace to have per-operation figures). For every operation and the whole kernel it
    prints FLOPs, bytes moved over links and in SRAM, arithmetic intensity (FLOP per byte),
    modelled FLOP/s and the roof that binds it: the bf16 or f32 compute peak, the links'
    bandwidth, or SRAM bandwidth (a modelling figure of 192 B/cycle per node).

    \b
    Examples:
      d1 roofline programs/attention.d1k --mesh 4x4 -o attention-roofline.png
      d1 roofline programs/matmul.d1k --set link_bytes_per_cycle=16
      d1 run programs/mlp.d1k --regions --json mlp.json && d1 roofline mlp.json
    """
    given = machine_given(machine_name, mesh, sets, chips)
    failed = None
    if output is not None:
        refuse_overwrite(output, [file, *machine_files(machine_name)], "-o")
        check_destination(output, "-o")
    if file.suffix.lower() == ".json":
        if opts:
            raise D1Error("-O compiler options need a program, not a statistics file")
        doc = load_run(file)
        note = ignored_machine_note(doc["stats"], file) if given else None
        if note:
            click.echo(note, err=True)
        with reading(file):
            machine = machine_of(doc["stats"], machine_from_options(machine_name, mesh, sets, chips)
                                 if given else None)
    else:
        from d1.commands.run import one_process

        one_process("d1 roofline", "its per-operation statistics (--regions) need the "
                    "single serial order of one process")
        options = None
        if opts:
            from compiler.pipeline import CompileOptions
            options = CompileOptions.parse(opts)
        machine = machine_from_options(machine_name, mesh, sets, chips, file)
        notes: list[str] = []
        emu, result = run_program(file, machine, options, regions=True, max_cycles=max_cycles,
                                  notes=notes)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        doc = {"file": str(file), "status": result.status, "stats": emu.stats()}
        if not result.ok:
            failed = result
    def guard() -> AbstractContextManager[None]:
        """Figures from a statistics file may be damaged; those of a run made here are not.
        A fresh guard for each use: a @contextmanager object can be entered only once."""
        return reading(file) if file.suffix.lower() == ".json" else nullcontext()

    with guard():
        text, points, roofs = roofline_text(doc, machine)
    click.echo(text)
    if output is not None:
        from d1.plots import roofline_png
        with guard():
            w, h = roofline_png(points, roofs, output,
                                f"{doc.get('file', '?')} on {doc['stats']['machine']}: "
                                "modelled FLOP/s against the roofs", dpi=dpi)
        click.echo(f"wrote {output} ({w} x {h} px)")
    if failed is not None:
        raise RuntimeFault(f"the run did not finish, so the figures cover only what ran: "
                           f"{failed.status}\n{failed.report()}")
