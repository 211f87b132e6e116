"""`d1 viz`: pictures of a run on the mesh, from the statistics `d1 run --json` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from d1.analysis import geometry, ignored_machine_note, load_run, machine_of, reading
from d1.options import machine_from_options, machine_given, machine_options
from d1isa import units
from d1isa.errors import D1Error
from d1isa.files import check_destination, refuse_overwrite
from d1isa.machine import machine_files

METRICS = ("busy", "stall", "sram", "flops")

# Background colours of the terminal heatmap, low to high (viridis at six points).
_RAMP = ((68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81),
         (253, 231, 37))


def metric_values(doc: dict[str, Any], metric: str, fallback=None) -> tuple[list[float], str]:
    """Per-node percentages for `metric`, and a legend line saying what 100% is (with units)."""
    stats = doc["stats"]
    nodes = stats["nodes"]
    md = stats["modelled"]
    k = int(md["kernel_cycles"])
    kk = k or 1
    if metric == "busy":
        vals = [100.0 * int(v) / kk for v in nodes["busy"]]
        what = (f"busy: % of the kernel time ({k:,} cycles, modelled) each node spent executing "
                f"instructions; mesh total {int(md['busy_cycles']):,} node-cycles")
    elif metric == "stall":
        vals = [100.0 * int(v) / kk for v in nodes["stall"]]
        what = (f"stall: % of the kernel time ({k:,} cycles, modelled) each node spent waiting "
                f"for a message or FIFO room; mesh total {int(md['stall_cycles']):,} node-cycles")
    elif metric == "sram":
        m = machine_of(stats, fallback)
        vals = [100.0 * int(v) / m.sram_bytes for v in nodes["sram_hwm"]]
        what = (f"sram: high-water mark as % of the node's SRAM ({units.nbytes(m.sram_bytes)}); "
                f"largest {units.nbytes(md['sram_high_water_bytes'])} (modelled)")
    elif metric == "flops":
        m = machine_of(stats, fallback)
        dtype = md.get("peak_dtype", "bf16")
        per = m.flops_per_cycle[dtype]
        vals = [100.0 * int(v) / (kk * per) for v in nodes["flops"]]
        what = (f"flops: FLOPs as % of the node's {dtype} peak ({per:g} FLOP/cycle) over the "
                f"kernel time ({k:,} cycles, modelled); mesh total {int(md['flops']):,} FLOP")
    else:
        raise D1Error(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
    return vals, what


def _colour(v: float) -> tuple[int, int, int]:
    t = min(max(v / 100.0, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    f = t - i
    a, b = _RAMP[i], _RAMP[i + 1]
    return tuple(int(round(a[c] + (b[c] - a[c]) * f)) for c in range(3))   # type: ignore


def term_heatmap(doc: dict[str, Any], metric: str, fallback=None):
    """A rich Text of the mesh: one 4-character cell per position, the percentage in it, XX for
    a harvested node; coloured by value when the console supports colour."""
    from rich.style import Style
    from rich.text import Text

    stats = doc["stats"]
    g = geometry(stats)
    vals, what = metric_values(doc, metric, fallback)
    at = {(x, y): v for x, y, v in zip(g.xs, g.ys, vals, strict=True)}
    dead = set(g.harvested)
    text = Text()
    text.append(f"{doc.get('file', '?')} on {stats['machine']}: {metric} per node "
                f"({g.width} x {g.height} mesh, {g.n} live)\n")
    text.append("  y\\x" + "".join(f"{x:>3} " for x in range(g.width)) + "\n")
    for y in range(g.height):
        text.append(f"{y:>4} ")
        for x in range(g.width):
            if (x, y) in at:
                v = at[(x, y)]
                r, gg, b = _colour(v)
                fg = "black" if (0.299 * r + 0.587 * gg + 0.114 * b) > 140 else "white"
                cell = f"{min(round(v), 999):>3}"
                text.append(cell, Style(color=fg, bgcolor=f"rgb({r},{gg},{b})"))
                text.append(" ")
            elif (x, y) in dead:
                text.append(" XX", Style(color="white", bgcolor="rgb(90,90,90)"))
                text.append(" ")
            else:
                text.append("    ")
        text.append("\n")
    lo = min(vals) if vals else 0.0
    hi = max(vals) if vals else 0.0
    mean = sum(vals) / len(vals) if vals else 0.0
    text.append(f"{what}\n")
    text.append(f"cells: % (modelled); min {lo:.1f}%, mean {mean:.1f}%, max {hi:.1f}% over "
                f"{len(vals)} live nodes" + (f"; XX = harvested ({len(dead)})" if dead else ""))
    return text


@click.command()
@click.argument("stats_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write: four panels (busy %, stalled %, bytes per link, SRAM "
                   "high-water mark).")
@click.option("--term", is_flag=True, help="Print a heatmap of one metric in the terminal.")
@click.option("--metric", type=click.Choice(METRICS), default="busy", show_default=True,
              help="What --term shows: busy or stalled % of kernel time, SRAM high water as "
                   "% of the node's SRAM, or FLOPs as % of the node's peak.")
@click.option("--dpi", type=click.IntRange(20, 400), default=100, show_default=True,
              help="PNG resolution: the picture is 12 x 10 inches.")
@click.option("--color/--no-color", "color", default=None,
              help="Colour the terminal heatmap (default: when printing to a terminal).")
@machine_options
def viz(stats_file: Path, output: Path | None, term: bool, metric: str, dpi: int,
        color: bool | None, machine_name: str | None, mesh: str | None, chips: str | None,
        sets: tuple[str, ...]) -> None:
    """Draw a run on the mesh: STATS_FILE is what `d1 run FILE --json STATS_FILE` wrote.

    With -o, writes one PNG of four panels: busy and stalled percentage of the kernel time per
    node, bytes sent over each directed link (arrows; width and colour by bytes) and each
    node's SRAM high-water mark; harvested nodes are grey and hatched. With --term, prints a
    heatmap of one metric instead (colour in a terminal, numbers always). The machine options
    are needed only for statistics files that lack the machine's parameters.

    \b
    Examples:
      d1 run programs/matmul.d1k --json run.json && d1 viz run.json -o run.png
      d1 viz run.json --term --metric stall
    """
    if output is not None:
        refuse_overwrite(output, [stats_file, *machine_files(machine_name)], "-o")
        check_destination(output, "-o")
    doc = load_run(stats_file)
    fallback = machine_from_options(machine_name, mesh, sets, chips) \
        if machine_given(machine_name, mesh, sets, chips) else None
    note = ignored_machine_note(doc["stats"], stats_file) if fallback is not None else None
    if note:
        click.echo(note, err=True)
    if output is None and not term:
        raise click.UsageError("give -o OUT.png for a picture, or --term for a terminal heatmap")
    if term:
        from rich.console import Console
        console = Console(highlight=False, soft_wrap=True, force_terminal=color,
                          no_color=(color is False), width=max(80, 6 + 4 * 200))
        with reading(stats_file):
            heatmap = term_heatmap(doc, metric, fallback)
        console.print(heatmap)
    if output is not None:
        from d1.plots import mesh_png
        stats = doc["stats"]
        sram = None
        try:
            sram = machine_of(stats, fallback).sram_bytes
        except D1Error:
            pass
        with reading(stats_file):
            w, h = mesh_png(doc, output, dpi=dpi, machine_sram=sram)
            g = geometry(stats)
        click.echo(f"wrote {output} ({w} x {h} px): busy %, stalled %, bytes per link and SRAM "
                   f"high water on the {g.width} x {g.height} mesh (modelled)")
