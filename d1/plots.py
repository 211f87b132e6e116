"""PNG pictures of runs, drawn with matplotlib's Agg backend (no display needed).

- `mesh_png`: one PNG of four panels on the mesh grid: busy % and stalled % of the kernel time
  per node, bytes per directed link as arrows (width and colour by bytes), and the SRAM
  high-water mark per node; harvested nodes are grey and hatched with an X.
- `roofline_png`: the roofline of a kernel and its regions (d1.analysis explains the model).
- `sweep_png`: modelled kernel time and share of peak across the points of a sweep.
- `history_png`: the 0-d outputs of a training run (`d1 train`'s loss.png) against the step.
- `scale_png`: a scaling study (`d1 scale`): efficiency against the number of chips, and the
  same study with the chip-edge bandwidth halved and doubled.

Every figure has a fixed size in inches (`MESH_SIZE`, ...), so its pixel size is that times the
dpi (100 unless asked otherwise). Every axis and colour bar names its unit and says "modelled".
Figures are built with `matplotlib.figure.Figure`, never pyplot, so nothing global changes.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from d1.analysis import ROOF_NAMES, Geometry, Point, Roofs, geometry
from d1isa.files import write_atomic

MESH_SIZE = (12.0, 10.0)        # inches: 1200 x 1000 px at 100 dpi
ROOFLINE_SIZE = (10.0, 7.0)     # 1000 x 700 px
SWEEP_SIZE = (10.0, 8.0)        # 1000 x 800 px
HISTORY_SIZE = (9.0, 3.0)       # 900 px wide, 300 px high per output
SCALE_SIZE = (12.0, 5.0)        # 1200 x 500 px

_DELTA = ((0, -1), (1, 0), (0, 1), (-1, 0))     # N E S W in grid (x, y), y grows southward


def _figure(size: tuple[float, float], dpi: int):
    from matplotlib.figure import Figure
    return Figure(figsize=size, dpi=dpi)


def _save(fig, path: str | Path) -> tuple[int, int]:
    """Save as PNG, atomically (d1isa.files); returns (width, height) in pixels."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    write_atomic(path, buf.getvalue())
    w, h = fig.get_size_inches() * fig.dpi
    return int(round(w)), int(round(h))


def _grid(g: Geometry, values: Sequence[float]) -> np.ndarray:
    a = np.full((g.height, g.width), np.nan)
    for x, y, v in zip(g.xs, g.ys, values, strict=True):
        a[y, x] = v
    return a


def _ticks(ax, g: Geometry) -> None:
    step = max(1, math.ceil(max(g.width, g.height) / 20))
    ax.set_xticks(range(0, g.width, step))
    ax.set_yticks(range(0, g.height, step))
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    ax.tick_params(labelsize=7)


def _harvested(ax, g: Geometry) -> None:
    from matplotlib.patches import Rectangle
    for x, y in g.harvested:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.8", edgecolor="0.3",
                               hatch="xx", linewidth=0.5, zorder=3))


def _heatmap(fig, ax, g: Geometry, values: Sequence[float], title: str, cbar: str, cmap: str,
             vmax: float | None = None, fmt: str = "{:.0f}") -> None:
    a = _grid(g, values)
    finite = a[np.isfinite(a)]
    top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    im = ax.imshow(a, cmap=cmap, vmin=0.0, vmax=top if top > 0 else 1.0, origin="upper",
                   interpolation="nearest")
    _harvested(ax, g)
    _ticks(ax, g)
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label(cbar, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if g.width * g.height <= 100:
        for x, y, v in zip(g.xs, g.ys, values, strict=True):
            r, gg, b, _ = im.cmap(im.norm(v))
            dark = 0.299 * r + 0.587 * gg + 0.114 * b < 0.55
            ax.text(x, y, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black", zorder=4)


def link_targets(g: Geometry) -> dict[tuple[int, int, int], tuple[int, int]]:
    """(x, y, direction) -> the live node a send reaches (passing harvested positions)."""
    live = set(zip(g.xs, g.ys, strict=True))
    out = {}
    for x, y in live:
        for d, (dx, dy) in enumerate(_DELTA):
            tx, ty = x + dx, y + dy
            while 0 <= tx < g.width and 0 <= ty < g.height and (tx, ty) not in live:
                tx, ty = tx + dx, ty + dy
            if (tx, ty) in live:
                out[(x, y, d)] = (tx, ty)
    return out


def _links(fig, ax, g: Geometry, stats: dict[str, Any]) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import FancyArrow, Rectangle

    for x, y in zip(g.xs, g.ys, strict=True):
        ax.add_patch(Rectangle((x - 0.3, y - 0.3), 0.6, 0.6, facecolor="0.93", edgecolor="0.75",
                               linewidth=0.5, zorder=1))
    _harvested(ax, g)
    targets = link_targets(g)
    nbytes = stats["links"]["bytes"]
    arrows = []
    for i, (x, y) in enumerate(zip(g.xs, g.ys, strict=True)):
        for d in range(4):
            b = int(nbytes[i][d])
            if b > 0 and (x, y, d) in targets:
                arrows.append((x, y, d, targets[(x, y, d)], b))
    top = max((a[4] for a in arrows), default=0)
    norm = Normalize(vmin=0, vmax=top if top > 0 else 1)
    cmap = colormaps["plasma"]
    for x, y, d, (tx, ty), b in sorted(arrows, key=lambda a: a[4]):
        dx, dy = tx - x, ty - y
        dist = math.hypot(dx, dy)
        ux, uy = dx / dist, dy / dist
        # opposite directions sit on opposite sides of the line between the two nodes
        off = 0.14
        ox, oy = (uy * off, -ux * off) if d in (1, 3) else (-uy * off, ux * off)
        x0, y0 = x + 0.32 * ux + ox, y + 0.32 * uy + oy
        length = dist - 0.64
        width = 0.03 + 0.12 * b / top
        ax.add_patch(FancyArrow(x0, y0, ux * length, uy * length, width=width,
                                head_width=width * 2.2, head_length=min(0.15, length * 0.5),
                                length_includes_head=True, color=cmap(norm(b)), zorder=4,
                                linewidth=0))
    ax.set_xlim(-0.6, g.width - 0.4)
    ax.set_ylim(g.height - 0.4, -0.6)
    ax.set_aspect("equal")
    _ticks(ax, g)
    ax.set_title(f"bytes per directed link (modelled; {len(arrows)} links used)", fontsize=10)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("B sent over the link (modelled)", fontsize=8)
    cb.ax.tick_params(labelsize=7)


def sram_unit(top: int) -> tuple[int, str]:
    """(divisor, unit) for SRAM byte counts whose largest is `top`."""
    if top >= 1 << 20:
        return 1 << 20, "MiB"
    return (1 << 10, "KiB") if top >= 1 << 10 else (1, "B")


def sram_axis_label(top: int, machine_sram: int | None) -> str:
    """The SRAM panel's colour-bar label: the unit of its values, and the node's SRAM in it
    (`B (of 1,310,720 B per node)`, `KiB (of 1,280 KiB per node)`: never an exponent)."""
    scale, unit = sram_unit(top)
    if not machine_sram:
        return unit
    v = machine_sram / scale
    size = f"{v:,.0f}" if v == int(v) else f"{v:,.3f}".rstrip("0")
    return f"{unit} (of {size} {unit} per node)"


def mesh_png(doc: dict[str, Any], path: str | Path, dpi: int = 100,
             machine_sram: int | None = None) -> tuple[int, int]:
    """The four-panel mesh picture of one run (`d1 run --json` document). Returns pixels."""
    stats = doc["stats"]
    g = geometry(stats)
    nodes = stats["nodes"]
    md = stats["modelled"]
    k = int(md["kernel_cycles"]) or 1
    busy = [100.0 * int(v) / k for v in nodes["busy"]]
    stall = [100.0 * int(v) / k for v in nodes["stall"]]
    top_sram = max((int(v) for v in nodes["sram_hwm"]), default=0)
    scale, unit = sram_unit(top_sram)
    sram = [int(v) / scale for v in nodes["sram_hwm"]]
    fig = _figure(MESH_SIZE, dpi)
    axes = fig.subplots(2, 2)
    _heatmap(fig, axes[0, 0], g, busy, "busy, % of kernel time (modelled)",
             "% of kernel cycles busy", "viridis", 100.0)
    _heatmap(fig, axes[0, 1], g, stall, "stalled, % of kernel time (modelled)",
             "% of kernel cycles waiting (message or FIFO room)", "magma", 100.0)
    _links(fig, axes[1, 0], g, stats)
    _heatmap(fig, axes[1, 1], g, sram, "SRAM high-water mark per node (modelled)",
             sram_axis_label(top_sram, machine_sram),
             "Blues", None, "{:.3g}")
    from d1isa import units
    fig.suptitle(f"{doc.get('file', '?')} on {stats['machine']} ({g.width} x {g.height} mesh, "
                 f"{g.n} live, {len(g.harvested)} harvested): {k:,} cycles = "
                 f"{units.seconds(md['kernel_seconds'])} modelled, {doc.get('status', '?')}",
                 fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.95, bottom=0.06, top=0.92, wspace=0.3, hspace=0.3)
    return _save(fig, path)


# ---- roofline ------------------------------------------------------------------------------------

def roofline_png(points: list[Point], roofs: Roofs, path: str | Path, title: str,
                 dpi: int = 100) -> tuple[int, int]:
    """Roofs and points on log-log axes: x = FLOP per byte, y = modelled FLOP/s."""
    from matplotlib import colormaps

    fig = _figure(ROOFLINE_SIZE, dpi)
    ax = fig.add_subplot(1, 1, 1)
    finite = [v for p in points for v in (p.link_intensity, p.sram_intensity)
              if v is not None and 0 < v < math.inf]
    lo = min([*finite, 0.1]) / 10
    hi = max([*finite, 100.0]) * 10
    xs = np.logspace(math.log10(lo), math.log10(hi), 200)
    top = roofs.peak["bf16"]
    ax.axhline(roofs.peak["bf16"], color="black", lw=1.5)
    ax.text(lo * 1.3, roofs.peak["bf16"] * 1.12, f"bf16 peak {roofs.peak['bf16']:.3g} FLOP/s",
            fontsize=8)
    ax.axhline(roofs.peak["f32"], color="0.4", lw=1.2, ls="--")
    ax.text(lo * 1.3, roofs.peak["f32"] * 1.12, f"f32 peak {roofs.peak['f32']:.3g} FLOP/s",
            fontsize=8, color="0.3")
    ax.plot(xs, np.minimum(xs * roofs.link_bytes_per_s, top), color="tab:blue", lw=1.5,
            label=f"link roof {roofs.link_bytes_per_s:.3g} B/s (x = FLOP per link byte)")
    ax.plot(xs, np.minimum(xs * roofs.sram_bytes_per_s, top), color="tab:green", lw=1.5,
            ls="-.", label=f"SRAM roof {roofs.sram_bytes_per_s:.3g} B/s "
                           "(x = FLOP per SRAM byte)")
    cmap = colormaps["tab10"]
    ys = []
    shown = [p for p in points if p.flops > 0 and p.flops_per_s > 0]
    for i, p in enumerate(shown):
        colour = "black" if p.kind == "kernel" else cmap(i % 10)
        key, _ = p.binding(roofs)
        y = p.flops_per_s
        ys.append(y)
        li = p.link_intensity
        marker = "*" if p.kind == "kernel" else "o"
        size = 160 if p.kind == "kernel" else 60
        label = f"{p.name} (bound by {ROOF_NAMES[key]})"
        z = 5 if p.kind == "kernel" else 6          # a lone region stays visible on the star
        if math.isinf(li):
            ax.scatter([hi / 1.5], [y], marker=">", s=size, color=colour, zorder=z, label=label)
        else:
            ax.scatter([li], [y], marker=marker, s=size, color=colour, zorder=z, label=label)
        si = p.sram_intensity
        if si is not None and 0 < si < math.inf:
            ax.scatter([si], [y], marker="s", s=size * 0.7, facecolors="none",
                       edgecolors=colour, linewidths=1.5, zorder=z)
            if not math.isinf(li):
                ax.plot([li, si], [y, y], color=colour, lw=0.6, ls=":", zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    low = min([*ys, top / 1e4]) / 5
    ax.set_ylim(low, top * 3)
    ax.set_xlabel("arithmetic intensity, FLOP per byte (filled: link bytes, hollow square: "
                  "SRAM bytes)")
    ax.set_ylabel("FLOP/s (modelled)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", color="0.9")
    ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.09, top=0.93)
    return _save(fig, path)


# ---- sweeps --------------------------------------------------------------------------------------

def sweep_png(params: list[str], rows: list[dict[str, Any]], path: str | Path, title: str,
              dpi: int = 100) -> tuple[int, int]:
    """Kernel time (cycles) and % of peak against the first swept parameter that varies, one
    line per combination of the other varying ones; failed points are red dotted lines.
    `rows`: sweep points with "params", "cycles", "percent"."""
    fig = _figure(SWEEP_SIZE, dpi)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    # x: the first parameter that takes several values; one line per combination of the
    # other varying parameters
    varying = [p for p in params if len({str(r["params"][p]) for r in rows}) > 1]
    first = varying[0] if varying else params[0]
    others = [p for p in varying if p != first]
    values = list(dict.fromkeys(str(r["params"][first]) for r in rows))
    numeric = all(_is_number(v) for v in values)
    pos = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    series: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for r in rows:
        key = ", ".join(f"{p}={r['params'][p]}" for p in others) or "kernel"
        series.setdefault(key, []).append((pos[str(r["params"][first])], r))
    for key, pts in series.items():
        for x, r in pts:
            if r.get("cycles") is None:
                ax1.axvline(x, color="red", lw=0.8, ls=":")
        ok = [(x, r) for x, r in pts if r.get("cycles") is not None]
        if not ok:
            # no line to draw: the legend still names the combination, as failed
            ax1.plot([], [], color="red", lw=0.8, ls=":", label=f"{key}: every point failed")
            continue
        ok.sort(key=lambda t: t[0])
        ax1.plot([x for x, _ in ok], [r["cycles"] for _, r in ok], marker="o", label=key)
        ax2.plot([x for x, _ in ok], [r["percent"] for _, r in ok], marker="o", label=key)
    if numeric and len(values) > 1 and all(float(v) > 0 for v in values):
        fl = [float(v) for v in values]
        if max(fl) / min(fl) >= 8:
            ax1.set_xscale("log", base=2)
    if not numeric:
        ax2.set_xticks(range(len(values)))
        ax2.set_xticklabels(values, rotation=20, fontsize=8)
    elif len(values) <= 12:
        ax2.set_xticks([float(v) for v in values])
        ax2.set_xticklabels(values, fontsize=8)
    ax1.set_ylabel("kernel time, cycles (modelled)")
    ax2.set_ylabel("% of peak FLOP/s (modelled)")
    ax2.set_xlabel(first)
    ax1.grid(True, color="0.9")
    ax2.grid(True, color="0.9")
    if others or not any(r.get("cycles") is not None for r in rows):
        ax1.legend(fontsize=8)
    ax1.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93, hspace=0.08)
    return _save(fig, path)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def history_png(history: list[dict[str, Any]], names: list[str], path: str | Path, title: str,
                dpi: int = 100) -> tuple[int, int]:
    """One panel per 0-d output (`names`), its value against the step, with a faint line where
    each epoch starts after the first (up to 60 of them). `history`: rows with "step",
    "epoch" and each name (none: a run stopped before its first step, said on the plot)."""
    rows = max(1, len(names))
    fig = _figure((HISTORY_SIZE[0], HISTORY_SIZE[1] * rows), dpi)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    steps = [r["step"] for r in history]
    starts = [r["step"] for prev, r in itertools.pairwise(history)
              if r["epoch"] != prev["epoch"]]
    if len(starts) > 60:
        starts = []                 # too many to tell apart
    for ax, name in zip(axes, names, strict=False):
        values = [r[name] for r in history]
        ax.plot(steps, values, lw=1.2)
        finite = [v for v in values if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")
        for s in starts:
            ax.axvline(s - 0.5, color="0.85", lw=0.8, zorder=0)
        ax.set_ylabel(name)
        ax.grid(True, color="0.93")
    if not names or not history:
        axes[0].text(0.5, 0.5, "no steps were run" if not history
                     else "the program has no 0-d outputs", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[-1].set_xlabel("step" + (" (faint lines: a new epoch)" if starts else ""))
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def scale_png(points: list[Any], path: str | Path, title: str, weak: bool,
              dpi: int = 100) -> tuple[int, int]:
    """Two panels of a scaling study (d1.scale.Point rows): the scaling efficiency against
    the number of chips at the machine's chip-edge bandwidth, each point labelled with its
    modelled time; and the same study at every chip-edge bandwidth measured (halved,
    nominal, doubled). Failed points are left out (the CSV has them).

    `--chips` may list the grids in any order (the first is the baseline), so each line
    joins its points by chip count, left to right; grids of the same count (2x1 and 1x2)
    share a tick, which names them all."""
    fig = _figure(SCALE_SIZE, dpi)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    kind = "weak" if weak else "strong"
    counts = sorted({p.count for p in points})
    by_scale: dict[float, list[Any]] = {}
    for p in sorted(points, key=lambda p: p.count):
        by_scale.setdefault(p.scale, []).append(p)
    nominal = [p for p in by_scale.get(1.0, []) if p.efficiency is not None]
    grids: dict[int, list[str]] = {}
    for p in points:
        name = f"{p.chips[0]}x{p.chips[1]}"
        if name not in grids.setdefault(p.count, []):
            grids[p.count].append(name)
    labels = {c: ", ".join(names) for c, names in grids.items()}
    if nominal:
        ax1.plot([p.count for p in nominal], [100 * p.efficiency for p in nominal],
                 marker="o", color="C0", label=f"{nominal[0].bandwidth} B/cycle per link")
        for k, p in enumerate(nominal):
            last = k == len(nominal) - 1 and len(nominal) > 1
            ax1.annotate(f"{p.cycles:,} cycles", (p.count, 100 * p.efficiency),
                         textcoords="offset points", xytext=(-8 if last else 4, 6),
                         ha="right" if last else "left", fontsize=8)
    for ax in (ax1, ax2):
        ax.axhline(100, color="0.6", lw=0.8, ls="--")
        if len(counts) > 1 and max(counts) / min(counts) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(counts)
        ax.set_xticklabels([f"{labels[c]}\n({c})" for c in counts], fontsize=8)
        ax.minorticks_off()
        ax.margins(x=0.06)
        ax.set_xlabel("chips (grid, count)")
        ax.grid(True, color="0.9")
    ax1.set_ylabel(f"{kind} scaling efficiency, % (modelled)")
    ax1.set_title("efficiency against chips", fontsize=10)
    for sc, color in ((0.5, "C3"), (1.0, "C0"), (2.0, "C2")):
        pts = [p for p in by_scale.get(sc, []) if p.efficiency is not None]
        if pts:
            name = {0.5: "halved", 1.0: "nominal", 2.0: "doubled"}[sc]
            ax2.plot([p.count for p in pts], [100 * p.efficiency for p in pts], marker="o",
                     color=color, label=f"chip edges {name}: {pts[-1].bandwidth} B/cycle")
    ax2.set_title("the same study, chip-edge bandwidth halved and doubled", fontsize=10)
    ax2.legend(fontsize=8, loc="lower left")
    ax1.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.17, top=0.86, wspace=0.06)
    return _save(fig, path)
