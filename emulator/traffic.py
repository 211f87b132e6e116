"""Link bytes sorted by where they travel: inside a chip, or across a chip edge.

The run loop counts the bytes sent on each directed link, (sending node, direction). On a machine
of several chips the links whose receiving node is on another chip (`Machine.link_crosses_chip`)
are the chip-edge links: the SerDes links between dies, narrower and slower than the on-chip
mesh (`chip_link_bytes_per_cycle`, `chip_hop_latency`), and the resource that decides whether
more chips mean more speed. `d1 run --stats/--json` and `d1 train` report them apart.

Per chip, as docs/MACHINE.md defines them:
  edge_bytes_out   bytes its nodes sent across its edges to other chips, also by edge
                   (N, E, S, W: the direction the bytes left in)
  edge_bytes_in    bytes other chips' nodes sent across its edges into it
  on_chip_bytes    bytes sent from one of its nodes to another of its nodes
so the machine's `chip_edge_bytes` is the sum of every chip's edge_bytes_out (and of its
edge_bytes_in), and `link_bytes` = `on_chip_bytes` + `chip_edge_bytes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from d1isa.machine import DIRECTIONS, Machine


def split_bytes(machine: Machine, link_bytes: np.ndarray) -> tuple[int, int]:
    """(on-chip bytes, chip-edge bytes) of per-link byte counts int[n_live, 4]."""
    total = int(link_bytes.sum())
    if machine.chips == 1:
        return total, 0
    edge = int(link_bytes[machine.link_crosses_chip].sum())
    return total - edge, edge


def chip_traffic(machine: Machine, link_bytes: np.ndarray) -> list[dict[str, Any]]:
    """One row per chip, row-major over the chip grid (see the module docstring)."""
    m = machine
    chips = m.chips
    cross = m.link_crosses_chip
    chip = m.chip_index
    nbr = m.neighbors
    lb = np.asarray(link_bytes, dtype=np.int64)
    out_by_dir = np.stack([np.bincount(chip, weights=np.where(cross[:, d], lb[:, d], 0),
                                       minlength=chips) for d in range(4)], axis=1)
    to_chip = chip[np.maximum(nbr, 0)]
    inside = (nbr >= 0) & ~cross
    on_chip = np.bincount(chip, weights=np.where(inside, lb, 0).sum(axis=1), minlength=chips)
    received = np.bincount(to_chip[cross], weights=lb[cross], minlength=chips)
    rows = []
    for c in range(chips):
        cy, cx = divmod(c, m.chips_x)
        rows.append({
            "chip": [cx, cy],
            "edge_bytes_out": int(out_by_dir[c].sum()),
            "edge_bytes_out_by_dir": {DIRECTIONS[d]: int(out_by_dir[c, d]) for d in range(4)},
            "edge_bytes_in": int(received[c]),
            "on_chip_bytes": int(on_chip[c]),
        })
    return rows
