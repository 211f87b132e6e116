"""`d1 info` and `d1 docs`: the machine description, and regenerating the ISA reference."""

from __future__ import annotations

import json

import click

from d1.options import machine_from_options, machine_options
from d1isa import units
from d1isa.machine import PARAMS, PUBLISHED, Machine

# How each headline figure is formatted, and what to say when the model and D1 differ.
NOTES = {
    "total_sram_bytes": "model: sram_bytes x live nodes; D1 quotes 1.25 MB/node, ~440 MB/chip",
    "bisection_bytes_per_s": "model: one 64 B/cycle link per neighbour pair across the narrower "
                             "middle cut; D1's quoted figure implies wider aggregate paths",
    "peak_bf16_flops": "matrix unit: 8x8x8 mma in cost_mma_bf16 cycles per node",
    "peak_f32_flops": "16-lane fp32 vfma in cost_vfma cycles per node",
}


def headline_rows(m: Machine) -> list[tuple[str, str, str, str]]:
    """(figure, modelled, published, note) rows."""
    s = m.summary()
    rows = [
        ("live nodes", f"{s['live_nodes']} ({s['mesh']} mesh, {s['harvested_nodes']} harvested)",
         f"{PUBLISHED['live_nodes'][0]} per chip", "mesh shape and harvest positions: "
         "modelling choice"),
        ("clock", units.si(m.clock_hz, "Hz"), units.si(PUBLISHED["clock_hz"][0], "Hz"), ""),
        ("peak BF16", units.si(s["peak_bf16_flops"], "FLOP/s", 4),
         units.si(PUBLISHED["peak_bf16_flops"][0], "FLOP/s"), NOTES["peak_bf16_flops"]),
        ("peak FP32", units.si(s["peak_f32_flops"], "FLOP/s", 4),
         units.si(PUBLISHED["peak_f32_flops"][0], "FLOP/s"), NOTES["peak_f32_flops"]),
        ("SRAM per node", units.nbytes(m.sram_bytes), "1.25 MB", ""),
        ("SRAM total", f"{units.nbytes(s['total_sram_bytes'])} = "
                       f"{units.si(s['total_sram_bytes'], 'B')}",
         "~" + units.si(PUBLISHED["total_sram_bytes"][0], "B"), NOTES["total_sram_bytes"]),
        ("link bandwidth", f"{m.link_bytes_per_cycle} B/cycle = "
                           f"{units.si(s['link_bytes_per_s'], 'B/s')} per direction",
         "64 B/cycle per direction", ""),
        ("bisection", f"{units.si(s['bisection_bytes_per_s'], 'B/s')} per direction "
                      f"({s['bisection_links']} links)",
         units.si(PUBLISHED["bisection_bytes_per_s"][0], "B/s") + " per direction",
         NOTES["bisection_bytes_per_s"]),
    ]
    if m.chips_x * m.chips_y > 1:
        rows.insert(1, ("chips", f"{s['chips']} ({m.n_live} live nodes in all)",
                        "training tile: 5 x 5 D1", ""))
    return rows


def info_dict(m: Machine) -> dict:
    return {
        "parameters": m.to_dict(),
        "derived": m.summary() | {"flops_per_cycle_per_node": m.flops_per_cycle},
        "published": {k: {"value": v, "unit": u} for k, (v, u) in PUBLISHED.items()},
        "units": {p.key: p.unit for p in PARAMS if p.unit},
    }


@click.command()
@machine_options
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(machine_name: str | None, mesh: str | None, sets: tuple[str, ...],
         as_json: bool) -> None:
    """Show the machine description and its derived figures beside the published D1 ones.

    \b
    Examples:
      d1 info
      d1 info --mesh 4x4
      d1 info --set link_bytes_per_cycle=32 --json
    """
    m = machine_from_options(machine_name, mesh, sets)
    if as_json:
        click.echo(json.dumps(info_dict(m), indent=2))
        return
    click.echo(f"machine {m.name}: {m.description}")
    click.echo("")
    rows = headline_rows(m)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    click.echo(f"{'figure':<{w0}}  {'modelled':<{w1}}  published D1")
    for name, model, pub, _ in rows:
        click.echo(f"{name:<{w0}}  {model:<{w1}}  {pub}")
    click.echo("")
    click.echo("notes:")
    for name, _, _, note in rows:
        if note:
            click.echo(f"  {name}: {note}")
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
