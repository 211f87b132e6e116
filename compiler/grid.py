"""The logical processor grid: which live nodes own tensor blocks, and the chains that link them.

Harvested nodes break the perfect mesh, so the compiler picks a set of physical rows `ys` and
columns `xs` such that every (x, y) in xs x ys is live, as large as possible (`choose_grid`).
Grid node (i, j) is the live node at (xs[j], ys[i]); P = len(ys) grid rows, Q = len(xs) grid
columns. Every row `ys[i]` is a *row chain*: the live nodes between xs[0] and xs[-1] in x order,
which is exactly the order a message sent east visits them (sends pass straight through
harvested routers). Live nodes on a chain that are not grid nodes relay traffic; live nodes on no
chain stay idle. Column chains are the same along y.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import combinations

import numpy as np

from d1isa.machine import Machine

# Exhaustive search over subsets of rows (or columns) holding harvested nodes up to this many.
_EXHAUSTIVE_LIMIT = 14


@dataclass(frozen=True)
class Grid:
    """A P x Q grid of live nodes inside the machine's mesh."""

    machine: Machine
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @property
    def P(self) -> int:
        return len(self.ys)

    @property
    def Q(self) -> int:
        return len(self.xs)

    @property
    def size(self) -> int:
        return self.P * self.Q

    def node(self, i: int, j: int) -> int:
        """Live-node id of grid node (i, j)."""
        return self.machine.node_id(self.xs[j], self.ys[i])

    @cached_property
    def nodes(self) -> tuple[tuple[int, ...], ...]:
        """nodes[i][j]: live-node id of grid node (i, j)."""
        return tuple(tuple(self.node(i, j) for j in range(self.Q)) for i in range(self.P))

    @cached_property
    def position(self) -> dict[int, tuple[int, int]]:
        """Grid coordinates (i, j) of each grid node's live id."""
        return {self.nodes[i][j]: (i, j) for i in range(self.P) for j in range(self.Q)}

    @cached_property
    def row_chains(self) -> tuple[tuple[int, ...], ...]:
        """For each grid row, the live nodes from grid column 0 to Q-1 in west-to-east order."""
        m = self.machine
        out = []
        for y in self.ys:
            out.append(tuple(m.node_id(x, y) for x in range(self.xs[0], self.xs[-1] + 1)
                             if m.live_grid[y, x]))
        return tuple(out)

    @cached_property
    def col_chains(self) -> tuple[tuple[int, ...], ...]:
        """For each grid column, the live nodes from grid row 0 to P-1 in north-to-south order."""
        m = self.machine
        out = []
        for x in self.xs:
            out.append(tuple(m.node_id(x, y) for y in range(self.ys[0], self.ys[-1] + 1)
                             if m.live_grid[y, x]))
        return tuple(out)

    def row_chain_index(self, i: int) -> tuple[int, ...]:
        """Positions of the grid nodes (i, 0..Q-1) inside row chain i."""
        return self._row_chain_indices[i]

    def col_chain_index(self, j: int) -> tuple[int, ...]:
        """Positions of the grid nodes (0..P-1, j) inside column chain j."""
        return self._col_chain_indices[j]

    @cached_property
    def _row_chain_indices(self) -> tuple[tuple[int, ...], ...]:
        # once per grid: the shared-code matmuls ask for every line's again and again
        return _positions(self.row_chains, self.nodes)

    @cached_property
    def _col_chain_indices(self) -> tuple[tuple[int, ...], ...]:
        return _positions(self.col_chains, tuple(zip(*self.nodes, strict=True)))

    def describe(self) -> str:
        m = self.machine
        relays = len({n for c in self.row_chains + self.col_chains for n in c}) - self.size
        return (f"{self.P} x {self.Q} grid nodes ({self.size} of {m.n_live} live nodes; "
                f"{relays} relay nodes), rows y={list(self.ys)}, columns x={list(self.xs)}")


def _positions(chains: tuple[tuple[int, ...], ...], lines) -> tuple[tuple[int, ...], ...]:
    """For each chain, the positions in it of its line's grid nodes (`lines[k]`, in order)."""
    out = []
    for chain, nodes in zip(chains, lines, strict=True):
        at = {n: k for k, n in enumerate(chain)}
        out.append(tuple(at[n] for n in nodes))
    return tuple(out)


def choose_grid(machine: Machine, per_chip: bool = False) -> Grid:
    """The largest all-live grid of physical rows x columns (ties: fewest relay hops, then the
    north-west-most choice), so that the result is deterministic.

    With `per_chip`, on a machine of several chips the grid of one chip repeated on every chip
    is a candidate too (every chip has the same harvested nodes, so it is all live): the search
    over the whole mesh is greedy once there are many chips (on the 5 x 5 tile it finds 70 x 90,
    14 x 18 a chip), while the repeated chip grid is the chip's best (16 x 16 on d1 chips: 80 x 80
    on the tile, larger, square, and with chip edges between whole blocks of grid nodes)."""
    best = _whole_mesh_grid(machine)
    if per_chip and machine.chips > 1:
        tiled = chip_tiled_grid(machine)
        if (tiled.size, -abs(tiled.P - tiled.Q)) > (best.size, -abs(best.P - best.Q)):
            return tiled
    return best


def chip_tiled_grid(machine: Machine) -> Grid:
    """One chip's best grid, repeated on every chip of the machine."""
    g = _whole_mesh_grid(machine.replace(chips_x=1, chips_y=1))
    xs = tuple(cx * machine.cols + x for cx in range(machine.chips_x) for x in g.xs)
    ys = tuple(cy * machine.rows + y for cy in range(machine.chips_y) for y in g.ys)
    return Grid(machine, xs, ys)


def _whole_mesh_grid(machine: Machine) -> Grid:
    live = np.asarray(machine.live_grid)
    h, w = live.shape
    dead_rows = sorted({int(y) for y in np.nonzero(~live.all(axis=1))[0]})
    dead_cols = sorted({int(x) for x in np.nonzero(~live.all(axis=0))[0]})
    candidates: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if not dead_rows:
        candidates.append((tuple(range(w)), tuple(range(h))))
    elif min(len(dead_rows), len(dead_cols)) <= _EXHAUSTIVE_LIMIT:
        by_rows = len(dead_rows) <= len(dead_cols)
        lines = dead_rows if by_rows else dead_cols
        for k in range(len(lines) + 1):
            for drop in combinations(lines, k):
                dropped = set(drop)
                if by_rows:
                    ys = tuple(y for y in range(h) if y not in dropped)
                    xs = tuple(x for x in range(w) if live[list(ys), x].all()) if ys else ()
                else:
                    xs = tuple(x for x in range(w) if x not in dropped)
                    ys = tuple(y for y in range(h) if live[y, list(xs)].all()) if xs else ()
                if xs and ys:
                    candidates.append((xs, ys))
    else:
        candidates.append(_greedy(live))
    best = max(candidates, key=lambda c: (len(c[0]) * len(c[1]), -_relay_hops(c, live),
                                          -abs(len(c[0]) - len(c[1])),
                                          tuple(-x for x in c[0]), tuple(-y for y in c[1])))
    return Grid(machine, best[0], best[1])


def _relay_hops(c: tuple[tuple[int, ...], tuple[int, ...]], live: np.ndarray) -> int:
    """Live non-grid nodes inside the chains: each adds a relay hop to every pipeline."""
    xs, ys = c
    inner_x = sum(1 for x in range(xs[0], xs[-1] + 1) if x not in xs)
    inner_y = sum(1 for y in range(ys[0], ys[-1] + 1) if y not in ys)
    return inner_x * len(ys) + inner_y * len(xs)


def _greedy(live: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Drop the row or column holding the most harvested nodes until none is left."""
    ys = list(range(live.shape[0]))
    xs = list(range(live.shape[1]))
    while True:
        sub = ~live[np.ix_(ys, xs)]
        if not sub.any():
            return tuple(xs), tuple(ys)
        per_row = sub.sum(axis=1)
        per_col = sub.sum(axis=0)
        r, c = int(per_row.argmax()), int(per_col.argmax())
        # Prefer the cut that keeps the larger product.
        if per_row[r] > per_col[c] or (per_row[r] == per_col[c]
                                       and (len(ys) - 1) * len(xs) >= len(ys) * (len(xs) - 1)):
            del ys[r]
        else:
            del xs[c]
