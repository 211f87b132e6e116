"""`d1 info` and `d1 docs`: the machine description, and regenerating the ISA reference."""

from __future__ import annotations

import json

import click

from d1.options import machine_from_options, machine_options
from d1isa import units
from d1isa.machine import DIRECTIONS, PARAMS, PUBLISHED, Machine, System, published_system

# What to say where the model and D1 differ, or how a modelled figure is made.
NOTES = {
    "total_sram_bytes": "model: sram_bytes x live nodes. Tesla quotes 1.25 MB per node and "
                        "totals that multiply it by node counts (354 x 1.25 MB -> ~440 MB, "
                        "25 x 440 MB = 11 GB); the model reads that MB as MiB, so a "
                        "published total of N MB compares with N MiB",
    "bisection_bytes_per_s": "model: one link per neighbour pair across the narrower middle "
                             "cut, each at its own rate; D1's quoted figure implies wider "
                             "aggregate paths",
    "peak_bf16_flops": "matrix unit: 8x8x8 mma in cost_mma_bf16 cycles per node; Tesla quotes "
                       "the same peak for BF16 and CFP8 (the model has no CFP8 matrix mode)",
    "peak_f32_flops": "16-lane fp32 vfma in cost_vfma cycles per node",
    "chip_edge": "one link per chip row (east and west edges) or column (north and south) "
                 "at chip_link_bytes_per_cycle; published 4 TB/s per edge = 576 SerDes lanes "
                 "x 112 Gb/s over 4 edges, 2 TB/s each way (docs/MACHINE.md)",
    "chip_bisection": "the narrower of the two cuts between the middle chip columns or rows",
}


def _vs(model: float, published: float) -> str:
    """The model's difference from a published figure, as a signed percentage."""
    return f"{100.0 * (model / published - 1.0):+.1f}%"


def _sram_total(nbytes: int) -> str:
    """A modelled SRAM total in MiB first: the unit its published counterpart compares in."""
    mib = nbytes / (1 << 20)
    if nbytes < 1 << 30:
        return units.nbytes(nbytes)
    text = f"{mib:,.0f}" if mib.is_integer() else f"{mib:,.1f}"
    return f"{text} MiB = {units.nbytes(nbytes).split(' (')[0]}"


def _sram_published(system: System) -> str:
    if system.chips == 1:
        return system.sram_text
    return f"{system.sram_text} = {system.sram_mb:,.0f} MB"


def _derived(system: System, key: str, text: str) -> str:
    return f"{text} (derived)" if key in system.derived else text


def headline_rows(m: Machine) -> list[tuple[str, str, str, str, str]]:
    """(figure, modelled, published, model vs published, note) rows. The published column
    has the totals of the Dojo system `m` models (the same number of 354-node chips), else
    one D1 chip's figures; the comparison is made only against a system's totals."""
    s = m.summary()
    sysm = published_system(m)
    one = PUBLISHED
    per_chip = sysm is None or sysm.chips == 1
    rows: list[tuple[str, str, str, str, str]] = [
        ("live nodes", f"{s['live_nodes']:,} ({s['mesh']} mesh, {s['harvested_nodes']:,} "
                       "harvested)",
         f"{one['live_nodes'][0]} per chip" if per_chip else
         f"{sysm.live_nodes:,} ({sysm.chips:,} x {one['live_nodes'][0]})",
         _vs(s["live_nodes"], sysm.live_nodes) if sysm else "",
         "mesh shape and harvest positions: modelling choice"),
    ]
    if m.chips > 1:
        rows.append(("chips", f"{s['chips']} chips of {s['chip_mesh']} nodes "
                              f"({s['live_nodes_per_chip']:,} live each)",
                     f"{sysm.name}: {sysm.chips:,} D1" if sysm else "", "", ""))
    rows += [
        ("clock", units.si(m.clock_hz, "Hz"), units.si(one["clock_hz"][0], "Hz"), "", ""),
        ("peak BF16", units.si(s["peak_bf16_flops"], "FLOP/s", 4),
         _derived(sysm, "peak_bf16_flops", units.si(sysm.peak_bf16_flops, "FLOP/s"))
         if sysm else units.si(one["peak_bf16_flops"][0], "FLOP/s"),
         _vs(s["peak_bf16_flops"], sysm.peak_bf16_flops) if sysm else "",
         NOTES["peak_bf16_flops"]),
        ("peak FP32", units.si(s["peak_f32_flops"], "FLOP/s", 4),
         _derived(sysm, "peak_f32_flops", units.si(sysm.peak_f32_flops, "FLOP/s"))
         if sysm else units.si(one["peak_f32_flops"][0], "FLOP/s"),
         _vs(s["peak_f32_flops"], sysm.peak_f32_flops) if sysm else "",
         NOTES["peak_f32_flops"]),
        ("SRAM per node", units.nbytes(m.sram_bytes), "1.25 MB", "", ""),
        ("SRAM total", _sram_total(s["total_sram_bytes"]),
         _derived(sysm, "sram", _sram_published(sysm)) if sysm else "~440 MB per chip",
         _vs(s["total_sram_bytes"], sysm.sram_bytes) if sysm else "",
         NOTES["total_sram_bytes"]),
        ("on-chip link", f"{m.link_bytes_per_cycle} B/cycle = "
                         f"{units.si(s['link_bytes_per_s'], 'B/s')} per direction, "
                         f"{m.hop_latency} cycle{'s' if m.hop_latency != 1 else ''} a hop",
         "64 B/cycle per direction", "", ""),
        ("bisection", f"{units.si(s['bisection_bytes_per_s'], 'B/s')} per direction "
                      f"({s['bisection_links']:,} links)",
         units.si(one["bisection_bytes_per_s"][0], "B/s") + " per direction per chip", "",
         NOTES["bisection_bytes_per_s"]),
        ("chip-edge link", f"{m.chip_link_bytes_per_cycle} B/cycle = "
                           f"{units.si(s['chip_link_bytes_per_s'], 'B/s')} per direction, "
                           f"{m.chip_hop_latency} cycles a hop", "", "", ""),
        ("chip edge", f"{units.si(s['chip_edge_bytes_per_s']['east_west'], 'B/s')} E/W "
                      f"({s['chip_edge_links']['east_west']} links), "
                      f"{units.si(s['chip_edge_bytes_per_s']['north_south'], 'B/s')} N/S "
                      f"({s['chip_edge_links']['north_south']}), each way",
         units.si(one["chip_edge_bytes_per_s"][0], "B/s") + " per edge, both ways", "",
         NOTES["chip_edge"]),
    ]
    if m.chips > 1:
        rows.append(("chip-grid bisection",
                     f"{units.si(s['chip_bisection_bytes_per_s'], 'B/s')} per direction "
                     f"({s['chip_bisection_links']:,} chip-edge links)", "", "",
                     NOTES["chip_bisection"]))
    return rows


def info_dict(m: Machine) -> dict:
    sysm = published_system(m)
    doc = {
        "parameters": m.to_dict(),
        "derived": m.summary() | {"flops_per_cycle_per_node": m.flops_per_cycle},
        "published": {k: {"value": v, "unit": u} for k, (v, u) in PUBLISHED.items()},
        "published_system": None,
        "units": {p.key: p.unit for p in PARAMS if p.unit},
    }
    doc["nodes"] = node_tables(m)
    if sysm is not None:
        s = doc["derived"]
        doc["published_system"] = {
            "name": sysm.name, "chips": sysm.chips, "live_nodes": sysm.live_nodes,
            "peak_bf16_flops": sysm.peak_bf16_flops, "peak_f32_flops": sysm.peak_f32_flops,
            "total_sram_bytes": sysm.sram_bytes, "sram_as_published": sysm.sram_text,
            "derived": list(sysm.derived), "source": sysm.source, "note": sysm.note,
            "model_over_published": {
                "peak_bf16_flops": s["peak_bf16_flops"] / sysm.peak_bf16_flops,
                "peak_f32_flops": s["peak_f32_flops"] / sysm.peak_f32_flops,
                "total_sram_bytes": s["total_sram_bytes"] / sysm.sram_bytes,
            },
        }
    return doc


# The per-node tables (ids and neighbours) grow with the machine: up to a training tile they are
# printed; beyond it `d1 info --machine exapod` stays as quick as `d1 info` without them.
MAX_TABLE_NODES = 10_000
MAX_MAP_COLS, MAX_MAP_ROWS = 36, 40
MAX_PASS_THROUGH = 24


def node_tables(m: Machine) -> dict | None:
    """The live-node ids' (x, y) and the neighbour of each id in each direction (-1: none),
    or None for a machine of more than MAX_TABLE_NODES nodes."""
    if m.n_live > MAX_TABLE_NODES:
        return None
    return {"directions": list(DIRECTIONS), "xy": m.xy.tolist(),
            "neighbors": m.neighbors.tolist()}


def node_lines(m: Machine) -> list[str]:
    """The id of every node as a map (x across, y down; x for a harvested node), and the
    sends that pass straight through a harvested router (every other send reaches the
    adjacent node, or no node at the mesh edge)."""
    if m.n_live > MAX_TABLE_NODES:
        return [f"nodes: ids number the live nodes row-major, skipping harvested ones; the "
                f"{m.n_live:,}-node tables are not printed (Machine.xy, Machine.neighbors)"]
    lines = ["nodes (ids row-major, skipping harvested ones; x = harvested):"]
    if m.width <= MAX_MAP_COLS and m.height <= MAX_MAP_ROWS:
        w = max(3, len(str(m.n_live - 1)))
        lines.append(f"  {'x=':<5}" + "".join(f"{x:>{w + 1}}" for x in range(m.width)))
        for y in range(m.height):
            ids = m.id_grid[y]
            lines.append(f"  y={y:<3}" + "".join(f"{'x' if i < 0 else i:>{w + 1}}"
                                                 for i in ids))
    else:
        lines.append(f"  (a {m.width} x {m.height} mesh: the map is not printed; "
                     "d1 info --json has every node)")
    passes = []
    xy, nbr = m.xy, m.neighbors
    for nid in range(m.n_live):
        for d, name in enumerate(DIRECTIONS):
            t = int(nbr[nid, d])
            if t >= 0 and int(m.link_hops[nid, d]) > 1:
                passes.append(f"({xy[nid, 0]},{xy[nid, 1]}) -{name}-> ({xy[t, 0]},{xy[t, 1]})")
    if passes:
        shown = ", ".join(passes[:MAX_PASS_THROUGH])
        more = f", and {len(passes) - MAX_PASS_THROUGH} more" \
            if len(passes) > MAX_PASS_THROUGH else ""
        lines.append(f"  sends through harvested routers: {shown}{more}")
    else:
        lines.append("  every send reaches the adjacent node (no harvested routers to pass)")
    return lines


@click.command()
@machine_options
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(machine_name: str | None, mesh: str | None, chips: str | None, sets: tuple[str, ...],
         as_json: bool) -> None:
    """Show the machine description and its derived figures beside the published D1 ones.

    \b
    Examples:
      d1 info
      d1 info --mesh 4x4
      d1 info --machine exapod
      d1 info --mesh 4x4 --chips 2x2
      d1 info --set link_bytes_per_cycle=32 --json
    """
    m = machine_from_options(machine_name, mesh, sets, chips)
    if as_json:
        click.echo(json.dumps(info_dict(m), indent=2))
        return
    click.echo(f"machine {m.name}: {m.description}")
    click.echo("")
    rows = headline_rows(m)
    sysm = published_system(m)
    head = f"published ({sysm.name})" if sysm is not None else "published D1"
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(head), *(len(r[2]) for r in rows))
    vs = any(r[3] for r in rows)
    click.echo((f"{'figure':<{w0}}  {'modelled':<{w1}}  {head:<{w2}}"
                + ("  vs published" if vs else "")).rstrip())
    for name, model, pub, diff, _ in rows:
        click.echo(f"{name:<{w0}}  {model:<{w1}}  {pub:<{w2}}  {diff}".rstrip())
    click.echo("")
    click.echo("notes:")
    for name, _, _, _, note in rows:
        if note:
            click.echo(f"  {name}: {note}")
    if sysm is not None and sysm.derived:
        click.echo(f"  (derived): not published for the {sysm.name}; worked out from the "
                   "published figures of the systems it is made of (docs/MACHINE.md)")
    if sysm is not None and sysm.note:
        click.echo(f"  {sysm.name}: {sysm.note}")
    if sysm is not None:
        click.echo(f"  published figures: {sysm.source}; all sources in docs/MACHINE.md")
    click.echo("")
    for line in node_lines(m):
        click.echo(line)
    click.echo("")
    click.echo("parameters (independent; everything above is derived from them):")
    d = m.to_dict()
    for p in PARAMS:
        if p.key in ("name", "description"):
            continue
        v = d[p.key]
        if p.key == "harvested":
            v = " ".join(f"({x},{y})" for x, y in v) or "none"
        elif p.key == "clock_hz":
            v = f"{v:g}"
        unit = f" {p.unit}" if p.unit else ""
        click.echo(f"  {p.key:<26} {v}{unit}  - {p.doc}")


@click.command()
@click.option("--check", is_flag=True, help="Only check that docs/ISA.md is up to date.")
def docs(check: bool) -> None:
    """Regenerate docs/ISA.md from the ISA table.

    \b
    Example:
      d1 docs            rewrite docs/ISA.md
      d1 docs --check    exit 1 if it is stale
    """
    from d1isa import isadoc

    if check:
        current = isadoc.DOC_PATH.read_text(encoding="utf-8") if isadoc.DOC_PATH.exists() else ""
        if current != isadoc.render():
            click.echo(f"{isadoc.DOC_PATH} is stale; run `d1 docs`", err=True)
            raise SystemExit(1)
        click.echo(f"{isadoc.DOC_PATH} is up to date")
        return
    click.echo(f"wrote {isadoc.write()}")
