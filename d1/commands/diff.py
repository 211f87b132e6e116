"""`d1 diff`: two runs' statistics side by side, and what changed most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from d1.analysis import (
    Change,
    class_changes,
    link_changes,
    load_run,
    node_changes,
    reading,
    region_changes,
    table,
    total_changes,
)
from d1isa import units


def fmt(value: float | None, unit: str) -> str:
    """A value with its unit; None (absent in that run) as '-'."""
    if value is None:
        return "-"
    if unit == "s":
        return units.seconds(value)
    if unit == "FLOP/s":
        return units.si(value, "FLOP/s")
    if unit == "%":
        return f"{value:.3g}%"
    return f"{int(value):,} {unit}"


def fmt_change(c: Change) -> str:
    if c.a == c.b:
        return "same"
    d = c.delta
    if c.unit == "%":
        text = f"{d:+.3g} points"
    elif c.unit == "s":
        text = ("+" if d > 0 else "-") + units.seconds(abs(d))
    elif c.unit == "FLOP/s":
        text = ("+" if d > 0 else "-") + units.si(abs(d), "FLOP/s")
    else:
        text = f"{int(d):+,} {c.unit}"
    r = c.ratio
    if r is not None and c.unit != "%":
        text += f" (x{r:.3g})"
    return text


def _describe(doc: dict[str, Any]) -> str:
    s = doc["stats"]
    return (f"{doc.get('file', '?')} on {s['machine']} "
            f"({units.number(s['live_nodes'])} live nodes, {doc.get('status', '?')})")


def diff_text(a: dict[str, Any], b: dict[str, Any], top: int = 5) -> str:
    sa, sb = a["stats"], b["stats"]
    out = [f"A: {_describe(a)}", f"B: {_describe(b)}", ""]
    totals = total_changes(sa, sb)
    rows = [[c.what, fmt(c.a, c.unit), fmt(c.b, c.unit), fmt_change(c)] for c in totals]
    out.append("totals (modelled)")
    out.append(table(["figure", "A", "B", "B - A"], rows))
    # relative change |B - A| / max(|A|, |B|), over the totals (not their parts, not the same
    # figure in other units)
    moved = [c for c in totals if c.a != c.b and c.unit not in ("s", "%", "FLOP/s")
             and not c.what.startswith(" ")]
    moved.sort(key=lambda c: -abs(c.delta) / max(abs(c.a or 0), abs(c.b or 0)))
    if moved:
        out.append("changed most: " + "; ".join(
            f"{c.what.strip()} {fmt_change(c)}" for c in moved[:3]))
    else:
        out.append("changed most: nothing; the two runs have the same totals")

    for metric, what in (("busy", "busy cycles"), ("stall", "stalled cycles"),
                         ("clock", "finish time (node clock)")):
        ch = node_changes(sa, sb, metric, top)
        out.append("")
        out.append(f"nodes whose {what} changed most (modelled, cycles)")
        if not ch:
            out.append("  none changed")
            continue
        out.append(table(["node", "A", "B", "B - A"],
                         [[f"({c.xy[0]},{c.xy[1]})", fmt(c.a, "cycles"), fmt(c.b, "cycles"),
                           f"{c.delta:+,} cycles"] for c in ch]))

    lc = link_changes(sa, sb, top)
    out.append("")
    out.append("links whose busy cycles or bytes changed most (modelled)")
    if lc:
        out.append(table(["link", "busy A", "busy B", "bytes A", "bytes B"],
                         [[f"({c.src[0]},{c.src[1]}) -{c.direction}->",
                           fmt(c.busy_a, "cycles"), fmt(c.busy_b, "cycles"),
                           fmt(c.bytes_a, "B"), fmt(c.bytes_b, "B")] for c in lc]))
    else:
        out.append("  none changed")

    cc = class_changes(sa, sb)
    out.append("")
    out.append("instructions by timing class (modelled)")
    out.append(table(["class", "A (instructions)", "B (instructions)", "B - A"],
                     [[c.what, f"{int(c.a or 0):,}", f"{int(c.b or 0):,}", fmt_change(c)]
                      for c in cc]))

    rc = region_changes(sa, sb) if sa.get("regions") and sb.get("regions") else []
    if rc:
        out.append("")
        out.append("regions (DSL operations; span = first entry to last exit, modelled)")
        rows = []
        for label, ra, rb in rc:
            def span(r: dict | None) -> str:
                return "-" if r is None else \
                    f"{int(r['end_cycle']) - int(r['start_cycle']):,} cycles"
            rows.append([label, span(ra), span(rb),
                         "-" if ra is None else f"{int(ra['link_bytes']):,} B",
                         "-" if rb is None else f"{int(rb['link_bytes']):,} B",
                         "-" if ra is None else f"{int(ra['stall_cycles']):,} cycles",
                         "-" if rb is None else f"{int(rb['stall_cycles']):,} cycles"])
        out.append(table(["region", "span A", "span B", "link A", "link B", "stalled A",
                          "stalled B"], rows))
    else:
        out.append("")
        which = "only run A recorded them" if sa.get("regions") else \
            ("only run B recorded them" if sb.get("regions") else "not recorded")
        out.append(f"regions: {which} (make them with `d1 run --regions` or `--trace`)")
    return "\n".join(out)


@click.command()
@click.argument("a_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many nodes and links to list per table.")
def diff(a_file: Path, b_file: Path, top: int) -> None:
    """Compare two runs: A_FILE and B_FILE are what `d1 run --json` wrote.

    Prints the totals side by side (kernel time, FLOPs, share of peak, busy and stalled
    node-cycles, link bytes, SRAM), then the nodes, links, timing classes and DSL regions
    whose figures changed most. Nodes and links are matched by mesh position, so runs on
    different machines compare too. All figures are modelled.

    \b
    Example:
      d1 run programs/matmul.d1k --mesh 4x4 --json summa.json
      d1 run programs/matmul.d1k --mesh 4x4 -O matmul=naive --json naive.json
      d1 diff summa.json naive.json
    """
    a, b = load_run(a_file), load_run(b_file)
    with reading(a_file, b_file):
        text = diff_text(a, b, top)
    click.echo(text)
