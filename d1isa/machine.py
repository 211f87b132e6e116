"""The machine description: one immutable `Machine`, loaded from `d1isa/machines/*.toml`.

The TOML file holds independent parameters only; everything else (live-node ids, neighbour tables,
link latencies, peak FLOP/s, total SRAM, bisection bandwidth) is derived here. The compiler, the
emulator and the CLI all receive the same `Machine` object, so a change in one file moves the
compiled code and the emulated timing together.

Coordinates: x is the column (0 = west edge), y is the row (0 = north edge). With several chips,
coordinates are global over the whole (cols * chips_x) x (rows * chips_y) mesh. Live nodes are
numbered row-major, skipping harvested ones. Directions are N=0, E=1, S=2, W=3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from d1isa.errors import D1Error, MachineError, printable
from d1isa.files import read_text

MACHINES_DIR = Path(__file__).parent / "machines"

DIRECTIONS = ("N", "E", "S", "W")
DIR_DELTA = ((0, -1), (1, 0), (0, 1), (-1, 0))
OPPOSITE = (2, 3, 0, 1)

# The instruction timing classes; each has a `cost_<class>` parameter. The ISA table names one of
# these for every instruction, and a test checks the two agree.
TIMING_CLASSES = (
    "alu", "mul", "div", "load", "store", "branch", "sys",
    "vload", "vstore", "valu", "vfma", "vdiv", "vsfu", "vred", "vcvt",
    "mma_bf16", "mma_f32", "acc", "send", "recv",
)


@dataclass(frozen=True)
class Param:
    """One independent machine parameter: its type, unit, meaning, and whether code depends on it.

    Structural parameters change what a compiled object means (its node ids, its addresses, its
    registers). Timing parameters only change how long things take, so an object may be re-run
    under different timing. A few timing parameters are `compiled` in as well: the compiler
    chooses its message sizes and its send schedule for them (link width, FIFO depth), so an
    object built for other values still runs correctly but is not what the compiler would make;
    the loader (d1.program) recompiles for a change of these, as for a structural one.
    """

    key: str
    kind: str          # "int", "float", "str", "coords"
    unit: str
    doc: str
    structural: bool
    minimum: float | None = 1
    compiled: bool = False
    maximum: float | None = None

    def range_text(self) -> str:
        """The valid values, as docs/MACHINE.md and error messages state them."""
        if self.kind == "str":
            return f"printable text, at most {MAX_TEXT_CHARS:,} characters"
        if self.kind == "coords":
            return "[x, y] pairs inside the chip"
        lo, hi = _number(self.minimum), _number(self.maximum)
        if not hi:
            return f">= {lo}" if lo else "any number"
        return f"{lo or '-inf'} .. {hi}"

    @property
    def changes_code(self) -> bool:
        """Whether code generation depends on this parameter (structural or compiled in)."""
        return self.structural or self.compiled


# Upper bounds. Register-number fields in the encoding are 6 bits wide (see d1isa/isa.py).
MAX_REGS = 64
# SRAM addresses are byte offsets that fit the 32-bit immediate/address model with room to add.
MAX_SRAM = 1 << 30
MAX_EDGE = 1024
MAX_CHIPS_EDGE = 256
# Live nodes of the whole machine: room for an ExaPOD (3,000 D1 = 1,062,000 nodes). Nothing in
# the encoding limits node ids (they live in 64-bit registers); the bound keeps a hostile machine
# description from asking for gigabytes of neighbour tables.
MAX_LIVE_NODES = 1 << 21
MAX_LINK_BYTES = 1 << 20
MAX_FIFO_DEPTH = 1024
MAX_MESSAGE = 1 << 24
# A cost or latency is at most this many cycles, so that one instruction moves a clock by at
# most 2^20 x (its steps): with --max-cycles at most MAX_RUN_CYCLES no clock can overflow.
MAX_CYCLES_PER_STEP = 1 << 20
MAX_RUN_CYCLES = 1 << 40
# Instructions a node runs per turn: the run loop keeps it, as the cycle limit, in an int64.
MAX_QUANTUM = 1 << 30
# A machine's name and description are shown on the terminal and written into every object:
# printable text of at most this many characters.
MAX_TEXT_CHARS = 1024

def largest_fixed_message() -> tuple[int, str]:
    """(bytes, mnemonic) of the largest message an instruction of the ISA table sends with a
    size of its own (vsend: a vector register); every machine's FIFO slots must hold it."""
    from d1isa import isa  # the ISA table imports this module

    return max((ins.network.nbytes, ins.mnemonic) for ins in isa.INSTRUCTIONS
               if ins.network is not None and ins.network.nbytes)


def _number(v: float | None) -> str:
    if v is None:
        return ""
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


PARAMS: tuple[Param, ...] = (
    Param("name", "str", "", "machine name", False, None),
    Param("description", "str", "", "one-line description", False, None),
    Param("cols", "int", "nodes", "mesh columns per chip", True, maximum=MAX_EDGE),
    Param("rows", "int", "nodes", "mesh rows per chip", True, maximum=MAX_EDGE),
    Param("harvested", "coords", "", "dead nodes per chip, as [x, y]", True, None),
    Param("chips_x", "int", "chips", "chips across", True, maximum=MAX_CHIPS_EDGE),
    Param("chips_y", "int", "chips", "chips down", True, maximum=MAX_CHIPS_EDGE),
    Param("chip_link_bytes_per_cycle", "int", "B/cycle", "chip-edge link bandwidth per direction",
          False, compiled=True, maximum=MAX_LINK_BYTES),
    Param("chip_hop_latency", "int", "cycles", "latency of one chip-edge hop", False, 0,
          maximum=MAX_CYCLES_PER_STEP),
    Param("sram_bytes", "int", "B", "SRAM per node (a multiple of 64)", True, 64,
          maximum=MAX_SRAM),
    Param("scalar_regs", "int", "", "64-bit scalar registers per node", True, 2,
          maximum=MAX_REGS),
    Param("vector_regs", "int", "", "vector registers per node", True, maximum=MAX_REGS),
    Param("vector_bits", "int", "bit", "vector register width (the ISA needs 512)", True, 512,
          maximum=512),
    Param("mma_dim", "int", "", "matrix-unit tile edge (tiles are mma_dim x mma_dim; the ISA "
          "needs 8)", True, 8, maximum=8),
    Param("accumulators", "int", "", "fp32 accumulator tiles per node", True, maximum=MAX_REGS),
    Param("clock_hz", "float", "Hz", "node clock", False, 1, maximum=1e13),
    Param("link_bytes_per_cycle", "int", "B/cycle", "on-chip link bandwidth per direction", False,
          compiled=True, maximum=MAX_LINK_BYTES),
    Param("hop_latency", "int", "cycles", "latency of one router hop", False, 0,
          maximum=MAX_CYCLES_PER_STEP),
    Param("fifo_depth", "int", "messages", "slots in each directed link FIFO", False,
          compiled=True, maximum=MAX_FIFO_DEPTH),
    Param("max_message_bytes", "int", "B", "largest single message (a multiple of 8, at most "
          "sram_bytes)", True, 8, maximum=MAX_MESSAGE),
) + tuple(
    Param(f"cost_{c}", "int", "cycles", f"cost of a '{c}' instruction", False,
          maximum=MAX_CYCLES_PER_STEP)
    for c in TIMING_CLASSES
)

PARAM_BY_KEY = {p.key: p for p in PARAMS}


# The published D1 figures shown next to the modelled ones (sources: docs/MACHINE.md).
PUBLISHED = {
    "live_nodes": (354, "nodes"),
    "peak_bf16_flops": (362e12, "FLOP/s"),
    "peak_f32_flops": (22.6e12, "FLOP/s"),
    "total_sram_bytes": (440e6, "B"),
    "bisection_bytes_per_s": (10e12, "B/s"),
    "chip_edge_bytes_per_s": (4e12, "B/s"),
    "clock_hz": (2e9, "Hz"),
}


@dataclass(frozen=True)
class System:
    """The published totals of one Dojo system (sources in docs/MACHINE.md).

    SRAM totals are kept as Tesla states them, in its "MB": the products of its per-node
    "1.25 MB" and node counts (354 x 1.25 = 442.5 -> "440 MB"; 25 x 440 MB = "11 GB"). The
    model reads that per-node figure as 1.25 MiB, so a published total of N MB compares with
    N MiB. `derived` names the figures Tesla did not state for this system, worked out here
    from a smaller one (a tray's SRAM is six tiles' SRAM).
    """

    name: str
    chips: int
    peak_bf16_flops: float
    peak_f32_flops: float
    sram_mb: float
    sram_text: str
    source: str
    derived: tuple[str, ...] = ()
    note: str = ""

    @property
    def live_nodes(self) -> int:
        return PUBLISHED["live_nodes"][0] * self.chips

    @property
    def sram_bytes(self) -> float:
        """The SRAM total in bytes as the model reads it (MB as MiB)."""
        return self.sram_mb * (1 << 20)


SYSTEMS: tuple[System, ...] = (
    System("D1 chip", 1, 362e12, 22.6e12, 440, "~440 MB",
           "Tesla AI Day 2021; Hot Chips 34 (2022)"),
    System("training tile", 25, 9e15, 565e12, 11_000, "11 GB", "Tesla AI Day 2021"),
    System("system tray", 150, 54e15, 6 * 565e12, 6 * 11_000, "66 GB", "Tesla AI Day 2022",
           derived=("peak_f32_flops", "sram")),
    System("cabinet", 300, 2 * 54e15, 12 * 565e12, 12 * 11_000, "132 GB", "Tesla AI Day 2022",
           derived=("peak_bf16_flops", "peak_f32_flops", "sram")),
    System("ExaPOD", 3000, 1.1e18, 120 * 565e12, 1_300_000, "1.3 TB", "Tesla AI Day 2021/2022",
           derived=("peak_f32_flops",),
           note="the published 1.3 TB is 1,062,000 nodes x 1.25 MB = 1,327,500 MB rounded to "
                "two digits, so no model with the published 1.25 MB per node comes within 2% "
                "of it; the model has exactly 1,062,000 x 1.25 MiB"),
)


def published_system(m: Machine) -> System | None:
    """The published system `m` models: the same number of chips, each a 354-node D1 die."""
    if m.live_per_chip != PUBLISHED["live_nodes"][0]:
        return None
    return next((s for s in SYSTEMS if s.chips == m.chips), None)


def _check_value(p: Param, value: Any) -> Any:
    """Type-check and range-check one parameter value; returns the normalised value."""
    if p.kind == "str":
        if not isinstance(value, str):
            raise MachineError(f"machine parameter '{p.key}' must be a string, got "
                               f"{_shown(repr(value))}")
        if len(value) > MAX_TEXT_CHARS or not value.isprintable():
            # a control character would act on the terminal wherever the name is shown
            raise MachineError(f"machine parameter '{p.key}' must be {p.range_text()}, got "
                               f"{_shown(printable(repr(value)))}")
        return value
    if p.kind == "coords":
        if not isinstance(value, (list, tuple)):
            raise MachineError(f"machine parameter '{p.key}' must be a list of [x, y] pairs")
        out = []
        for item in value:
            if (not isinstance(item, (list, tuple)) or len(item) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
                raise MachineError(f"machine parameter '{p.key}': each entry must be [x, y] "
                                   f"integers, got {item!r}")
            out.append((int(item[0]), int(item[1])))
        return tuple(sorted(set(out), key=lambda xy: (xy[1], xy[0])))
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise MachineError(f"machine parameter '{p.key}' must be an integer, got {value!r}")
    elif p.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MachineError(f"machine parameter '{p.key}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise MachineError(f"machine parameter '{p.key}' must be finite, got {value!r}")
    if ((p.minimum is not None and value < p.minimum)
            or (p.maximum is not None and value > p.maximum)):
        raise MachineError(f"machine parameter '{p.key}' must be in {p.range_text()}, "
                           f"got {value!r}")
    return value


# What an incomplete machine description is told, by where it came from.
MACHINE_FILE_HINT = ('a machine file may start with base = "d1" to take every parameter it does '
                     "not list from the d1 machine")
MACHINE_JSON_HINT = ("a .machine {JSON} directive lists every parameter, as `d1 disasm` writes "
                     "them, and `.machine NAME` names a shipped machine")


@dataclass(frozen=True)
class Machine:
    """One machine description. Construct with `load_machine` or `Machine.from_dict`."""

    name: str
    description: str
    cols: int
    rows: int
    harvested: tuple[tuple[int, int], ...]
    chips_x: int
    chips_y: int
    chip_link_bytes_per_cycle: int
    chip_hop_latency: int
    sram_bytes: int
    scalar_regs: int
    vector_regs: int
    vector_bits: int
    mma_dim: int
    accumulators: int
    clock_hz: float
    link_bytes_per_cycle: int
    hop_latency: int
    fifo_depth: int
    max_message_bytes: int
    cost_alu: int
    cost_mul: int
    cost_div: int
    cost_load: int
    cost_store: int
    cost_branch: int
    cost_sys: int
    cost_vload: int
    cost_vstore: int
    cost_valu: int
    cost_vfma: int
    cost_vdiv: int
    cost_vsfu: int
    cost_vred: int
    cost_vcvt: int
    cost_mma_bf16: int
    cost_mma_f32: int
    cost_acc: int
    cost_send: int
    cost_recv: int

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, params: dict[str, Any], lacking: str = MACHINE_FILE_HINT) -> Machine:
        """Validate a complete parameter dict and build the machine. `lacking`: what the
        error for missing parameters advises (where the dict came from decides it)."""
        _refuse_unknown(params)
        missing = [p.key for p in PARAMS if p.key not in params]
        if missing:
            raise MachineError(f"machine description lacks: {', '.join(missing)}; {lacking}")
        values = {p.key: _check_value(p, params[p.key]) for p in PARAMS}
        m = cls(**values)
        m._validate()
        return m

    def _validate(self) -> None:
        for x, y in self.harvested:
            if not (0 <= x < self.cols and 0 <= y < self.rows):
                raise MachineError(
                    f"harvested node ({x},{y}) is outside the {self.cols}x{self.rows} grid")
        if len(self.harvested) >= self.cols * self.rows:
            raise MachineError("every node is harvested; a machine needs at least one live node")
        for key in ("scalar_regs", "vector_regs", "accumulators"):
            if getattr(self, key) > MAX_REGS:
                raise MachineError(f"{key} = {getattr(self, key)} exceeds the encoding's "
                                   f"limit of {MAX_REGS}")
        if self.sram_bytes % 64:
            raise MachineError(f"sram_bytes must be a multiple of 64, got {self.sram_bytes}")
        if self.max_message_bytes % 8:
            raise MachineError("max_message_bytes must be a multiple of 8")
        if self.max_message_bytes > self.sram_bytes:
            raise MachineError("max_message_bytes cannot exceed sram_bytes")
        need, sender = largest_fixed_message()
        if self.max_message_bytes < need:
            # a FIFO slot holds max_message_bytes: a smaller one could not take what `sender`
            # sends, whatever the program
            raise MachineError(f"max_message_bytes must be at least {need} (one {sender} "
                               f"message), got {self.max_message_bytes}")
        if self.n_live > MAX_LIVE_NODES:
            raise MachineError(f"{self.n_live:,} live nodes is more than this toolchain supports "
                               f"({MAX_LIVE_NODES:,})")

    def to_dict(self) -> dict[str, Any]:
        """All independent parameters, JSON-serialisable, in table order."""
        d = {}
        for p in PARAMS:
            v = getattr(self, p.key)
            d[p.key] = [list(xy) for xy in v] if p.kind == "coords" else v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    def replace(self, **overrides: Any) -> Machine:
        """A new, validated machine with some parameters changed (the Python `--set`)."""
        d = self.to_dict()
        d.update(overrides)
        return Machine.from_dict(d)

    def structural_differences(self, other: Machine) -> list[str]:
        """Keys of structural parameters that differ: objects are not portable across these."""
        a, b = self.to_dict(), other.to_dict()
        return [p.key for p in PARAMS if p.structural and a[p.key] != b[p.key]]

    def cost(self, timing_class: str) -> int:
        return getattr(self, f"cost_{timing_class}")

    # ---- derived: geometry --------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Columns of the whole (multi-chip) mesh."""
        return self.cols * self.chips_x

    @property
    def height(self) -> int:
        """Rows of the whole (multi-chip) mesh."""
        return self.rows * self.chips_y

    @cached_property
    def live_grid(self) -> np.ndarray:
        """bool[height, width]: True where a node is live."""
        chip = np.ones((self.rows, self.cols), dtype=bool)
        for x, y in self.harvested:
            chip[y, x] = False
        return _frozen(np.tile(chip, (self.chips_y, self.chips_x)))

    @cached_property
    def id_grid(self) -> np.ndarray:
        """int32[height, width]: live-node id at (y, x), or -1 for a harvested node."""
        grid = np.full((self.height, self.width), -1, dtype=np.int32)
        live = self.live_grid
        grid[live] = np.arange(int(live.sum()), dtype=np.int32)
        return _frozen(grid)

    @property
    def chips(self) -> int:
        """Number of chips: chips_x * chips_y."""
        return self.chips_x * self.chips_y

    @property
    def live_per_chip(self) -> int:
        return self.cols * self.rows - len(self.harvested)

    @cached_property
    def n_live(self) -> int:
        """Counted, not read off the grid: every chip has the same harvested pattern, so even an
        ExaPOD's count (`d1 info`) needs no per-node array."""
        return self.live_per_chip * self.chips

    @cached_property
    def xy(self) -> np.ndarray:
        """int32[n_live, 2]: (x, y) of each live node id."""
        ys, xs = np.nonzero(self.live_grid)
        return _frozen(np.stack([xs, ys], axis=1).astype(np.int32))

    def node_id(self, x: int, y: int) -> int:
        """Live-node id at (x, y); MachineError for a harvested or out-of-grid position."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise MachineError(f"node ({x},{y}) is outside the {self.width}x{self.height} mesh")
        nid = int(self.id_grid[y, x])
        if nid < 0:
            raise MachineError(f"node ({x},{y}) is harvested (dead)")
        return nid

    def node_xy(self, nid: int) -> tuple[int, int]:
        if not 0 <= nid < self.n_live:
            raise MachineError(f"node id {nid} is out of range 0..{self.n_live - 1}")
        x, y = self.xy[nid]
        return int(x), int(y)

    def chip_of(self, x: int, y: int) -> tuple[int, int]:
        return x // self.cols, y // self.rows

    @cached_property
    def _links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each (node, direction) walked through harvested routers to the next live node.

        Worked out for the whole grid at once: the next live position along each row or column,
        then the hops between, how many of them cross a chip edge (each costs
        `chip_hop_latency` and runs at `chip_link_bytes_per_cycle`; the others `hop_latency`
        and `link_bytes_per_cycle`), and the narrowest link on the way. A direction with no
        live node before the mesh edge has neighbour -1 and latency and bandwidth 0.
        """
        n = self.n_live
        nbr = np.full((n, 4), -1, dtype=np.int32)
        hops = np.zeros((n, 4), dtype=np.int32)
        lat = np.zeros((n, 4), dtype=np.int64)
        bw = np.zeros((n, 4), dtype=np.int64)
        xs, ys = self.xy[:, 0].astype(np.int64), self.xy[:, 1].astype(np.int64)
        live = self.live_grid
        for d in range(4):
            along_x = d in (1, 3)
            grid = live if along_x else live.T          # [line, position along the line]
            pos = np.arange(grid.shape[1], dtype=np.int64)
            if d in (1, 2):                               # toward higher positions
                marks = np.where(grid, pos, grid.shape[1])
                after = np.minimum.accumulate(marks[:, ::-1], axis=1)[:, ::-1]
                nxt = np.concatenate([after[:, 1:], np.full((len(grid), 1), grid.shape[1])],
                                     axis=1)
                valid = nxt < grid.shape[1]
            else:                                         # toward lower positions
                marks = np.where(grid, pos, -1)
                before = np.maximum.accumulate(marks, axis=1)
                nxt = np.concatenate([np.full((len(grid), 1), -1), before[:, :-1]], axis=1)
                valid = nxt >= 0
            line, at = (ys, xs) if along_x else (xs, ys)
            to = nxt[line, at]
            ok = valid[line, at]
            span = self.cols if along_x else self.rows
            k = np.abs(to - at)
            edges = np.abs(to // span - at // span)
            tx, ty = (to, ys) if along_x else (xs, to)
            idx = np.nonzero(ok)[0]
            nbr[idx, d] = self.id_grid[ty[idx], tx[idx]]
            hops[idx, d] = k[idx]
            lat[idx, d] = (edges[idx] * self.chip_hop_latency
                           + (k[idx] - edges[idx]) * self.hop_latency)
            on_chip = np.where(k > edges, self.link_bytes_per_cycle, MAX_LINK_BYTES + 1)
            across = np.where(edges > 0, self.chip_link_bytes_per_cycle, MAX_LINK_BYTES + 1)
            bw[idx, d] = np.minimum(on_chip, across)[idx]
        return _frozen(nbr), _frozen(hops), _frozen(lat), _frozen(bw)

    @property
    def neighbors(self) -> np.ndarray:
        """int32[n_live, 4]: the live node reached by a send in each direction, or -1."""
        return self._links[0]

    @property
    def link_hops(self) -> np.ndarray:
        """int32[n_live, 4]: routers traversed by that send (2+ when passing harvested nodes)."""
        return self._links[1]

    @property
    def link_latency(self) -> np.ndarray:
        """int64[n_live, 4]: total hop latency of that send, in cycles."""
        return self._links[2]

    @property
    def link_bandwidth(self) -> np.ndarray:
        """int64[n_live, 4]: bytes/cycle of the narrowest physical link on that path."""
        return self._links[3]

    # ---- derived: headline figures ------------------------------------------------------------

    @property
    def vector_lanes_f32(self) -> int:
        return self.vector_bits // 32

    @property
    def vector_bytes(self) -> int:
        return self.vector_bits // 8

    @property
    def mma_flops(self) -> int:
        """FLOPs of one mma instruction: mma_dim^3 multiply-adds."""
        return 2 * self.mma_dim ** 3

    @property
    def flops_per_cycle(self) -> dict[str, float]:
        """Peak FLOP/cycle of one node per data type: the faster of its matrix and vector paths."""
        vec = 2 * self.vector_lanes_f32 / self.cost_vfma
        return {
            "bf16": max(self.mma_flops / self.cost_mma_bf16, vec),
            "f32": max(self.mma_flops / self.cost_mma_f32, vec),
        }

    @property
    def peak_flops(self) -> dict[str, float]:
        """Peak FLOP/s of the whole machine per data type."""
        return {k: v * self.n_live * self.clock_hz for k, v in self.flops_per_cycle.items()}

    @property
    def total_sram_bytes(self) -> int:
        return self.n_live * self.sram_bytes

    # ---- derived: chips and cuts --------------------------------------------------------------

    @cached_property
    def chip_index(self) -> np.ndarray:
        """int32[n_live]: the chip of each live node, numbered row-major over the chip grid
        (chip (cx, cy) is cy * chips_x + cx)."""
        xs, ys = self.xy[:, 0], self.xy[:, 1]
        return _frozen(((ys // self.rows) * self.chips_x + xs // self.cols).astype(np.int32))

    @cached_property
    def link_crosses_chip(self) -> np.ndarray:
        """bool[n_live, 4]: whether the send from each node in each direction crosses a chip
        edge (its receiver is on another chip)."""
        nbr = self.neighbors
        chip = self.chip_index
        other = np.where(nbr >= 0, chip[np.maximum(nbr, 0)], -1)
        return _frozen((nbr >= 0) & (other != chip[:, None]))

    @cached_property
    def chip_edge_links(self) -> dict[str, int]:
        """Links crossing one chip edge, one way: one per chip row with a live node on the east
        and west edges, one per chip column with a live node on the north and south edges (a
        dead node's router passes traffic on, so a row's link crosses the edge wherever its
        outermost live nodes sit)."""
        chip = self._chip_live
        return {"east_west": int(chip.any(axis=1).sum()),
                "north_south": int(chip.any(axis=0).sum())}

    @property
    def chip_edge_bytes_per_s(self) -> dict[str, float]:
        """Bandwidth of one chip edge, one direction, at the chip-edge link rate."""
        rate = self.chip_link_bytes_per_cycle * self.clock_hz
        return {k: v * rate for k, v in self.chip_edge_links.items()}

    @cached_property
    def _chip_live(self) -> np.ndarray:
        """bool[rows, cols]: one chip's live nodes (every chip has the same pattern)."""
        chip = np.ones((self.rows, self.cols), dtype=bool)
        for x, y in self.harvested:
            chip[y, x] = False
        return _frozen(chip)

    def _cut(self, vertical: bool, mid: int) -> tuple[int, int]:
        """(links, bytes/cycle) of the sends crossing, eastward (vertical cut) or southward,
        between global column (row) mid - 1 and mid.

        Each mesh row (column) has at most one such send: from its last live node before the
        cut to its first live node after it. Worked out on one chip's rows (columns), since
        every chip has the same pattern, so it costs no per-node array even on an ExaPOD. Its
        bandwidth is the narrowest link on the way, as `link_bandwidth` has it.
        """
        lines = self._chip_live if vertical else self._chip_live.T
        along, span = (self.chips_x, self.cols) if vertical else (self.chips_y, self.rows)
        repeats = self.chips_y if vertical else self.chips_x
        cm, cr = divmod(mid, span)
        links = band = 0
        for line in lines:
            live = np.flatnonzero(line)
            if not len(live):
                continue
            before, after = live[live < cr], live[live >= cr]
            if len(before):
                a = cm * span + int(before[-1])
            elif cm >= 1:
                a = (cm - 1) * span + int(live[-1])
            else:
                continue
            if cm < along and len(after):
                b = cm * span + int(after[0])
            elif cm + 1 < along:
                b = (cm + 1) * span + int(live[0])
            else:
                continue
            edges = b // span - a // span
            rates = ([self.chip_link_bytes_per_cycle] if edges else []) + \
                    ([self.link_bytes_per_cycle] if b - a > edges else [])
            links += repeats
            band += repeats * min(rates)
        return links, band

    def _narrower(self, cuts: list[tuple[int, int]]) -> tuple[int, int]:
        return min(cuts, key=lambda c: (c[1], c[0])) if cuts else (0, 0)

    @cached_property
    def _bisection(self) -> tuple[int, int]:
        """(links, bytes/cycle) of the narrower (by bandwidth) of the two middle cuts."""
        cuts = []
        if self.width > 1:
            cuts.append(self._cut(True, self.width // 2))
        if self.height > 1:
            cuts.append(self._cut(False, self.height // 2))
        return self._narrower(cuts)

    @property
    def bisection_links(self) -> int:
        """Directed links, one way, crossing the narrower of the two middle cuts of the mesh."""
        return self._bisection[0]

    @property
    def bisection_bytes_per_s(self) -> float:
        """Bisection bandwidth, one direction: each link of the narrower middle cut at its own
        rate (a cut on a chip boundary runs at the chip-edge rate)."""
        return self._bisection[1] * self.clock_hz

    @cached_property
    def _chip_bisection(self) -> tuple[int, int]:
        """(links, bytes/cycle) of the narrower of the two middle cuts along chip boundaries
        (between chip columns chips_x // 2 - 1 and chips_x // 2, and likewise for rows)."""
        cuts = []
        if self.chips_x > 1:
            cuts.append(self._cut(True, self.chips_x // 2 * self.cols))
        if self.chips_y > 1:
            cuts.append(self._cut(False, self.chips_y // 2 * self.rows))
        return self._narrower(cuts)

    @property
    def chip_bisection_links(self) -> int:
        """Chip-edge links, one way, crossing the narrower middle cut of the chip grid (0 on
        one chip)."""
        return self._chip_bisection[0]

    @property
    def chip_bisection_bytes_per_s(self) -> float:
        return self._chip_bisection[1] * self.clock_hz

    def summary(self) -> dict[str, Any]:
        """Derived headline figures with units (what `d1 info` prints). Counted, not read off
        per-node arrays, so an ExaPOD's figures take no time."""
        return {
            "mesh": f"{self.width} x {self.height}",
            "chips": f"{self.chips_x} x {self.chips_y}",
            "chip_count": self.chips,
            "chip_mesh": f"{self.cols} x {self.rows}",
            "live_nodes_per_chip": self.live_per_chip,
            "live_nodes": self.n_live,
            "harvested_nodes": self.width * self.height - self.n_live,
            "peak_bf16_flops": self.peak_flops["bf16"],
            "peak_f32_flops": self.peak_flops["f32"],
            "sram_bytes_per_node": self.sram_bytes,
            "total_sram_bytes": self.total_sram_bytes,
            "bisection_links": self.bisection_links,
            "bisection_bytes_per_s": self.bisection_bytes_per_s,
            "link_bytes_per_s": self.link_bytes_per_cycle * self.clock_hz,
            "chip_link_bytes_per_s": self.chip_link_bytes_per_cycle * self.clock_hz,
            "chip_edge_links": self.chip_edge_links,
            "chip_edge_bytes_per_s": self.chip_edge_bytes_per_s,
            "chip_bisection_links": self.chip_bisection_links,
            "chip_bisection_bytes_per_s": self.chip_bisection_bytes_per_s,
            "clock_hz": self.clock_hz,
        }


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---- loading ----------------------------------------------------------------------------------

def machine_names() -> list[str]:
    """Names of the machine files shipped in d1isa/machines."""
    return sorted(p.stem for p in MACHINES_DIR.glob("*.toml"))


def machine_files(name_or_path: str | Path | None) -> list[Path]:
    """The files a `--machine` argument reads: the file itself and the files its `base` chain
    names (as read_machine_file tells a file from a name; none for a shipped machine):
    inputs of the command, which its outputs must never replace. A file that cannot be read
    ends the chain (loading the machine says why)."""
    files: list[Path] = []
    s = None if name_or_path is None else str(name_or_path)
    while s is not None and len(files) <= 16:
        path = _user_file(s)
        if path is None or path in files:
            break
        files.append(path)
        try:
            base = tomllib.loads(read_text(path, what="machine file").lstrip("\ufeff")).get("base")
        except (D1Error, tomllib.TOMLDecodeError, RecursionError):
            break
        s = str(_base_of(path, base)) if isinstance(base, str) else None
    return files


def _user_file(s: str) -> Path | None:
    """The file a machine name or path `s` means, or None for a shipped machine (or a name
    that is neither).

    A shipped machine's name means that machine even where the current directory holds a
    file of the same name (a script called `d1`, say): otherwise such a file would replace
    the default machine of every command. Any other text that names a file is that file."""
    path = Path(s)
    shipped = not s.endswith(".toml") and "/" not in s and (MACHINES_DIR / f"{s}.toml").is_file()
    return None if shipped or not (s.endswith(".toml") or path.is_file()) else path


def _base_of(path: Path, base: str) -> str | Path:
    """What a machine file's `base = ...` names: a .toml file beside it, or a machine name."""
    return path.parent / base if base.endswith(".toml") else base


def read_machine_file(name_or_path: str | Path, _seen: frozenset[str] = frozenset()
                      ) -> dict[str, Any]:
    """Parameters from a named machine ('d1', 'm4x4') or a TOML file path (`_user_file`),
    unvalidated."""
    s = str(name_or_path)
    path = _user_file(s)
    if path is None:
        path = MACHINES_DIR / f"{s}.toml"
        if not path.is_file():
            raise MachineError(f"unknown machine '{s}'; named machines: "
                               f"{', '.join(machine_names())}, or give a .toml file")
    try:
        text = read_text(path, what="machine file").lstrip("\ufeff")
    except D1Error as e:
        raise MachineError(str(e)) from None
    try:
        params = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        # tomllib reads nested arrays and tables recursively
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise MachineError(f"{path}: invalid TOML: {reason}") from None
    base = params.pop("base", None)
    _check_file_values(path, params)
    if base is None:
        return params
    # A file may name a base machine and list only what differs from it.
    if not isinstance(base, str):
        raise MachineError(f"{path}: 'base' must be a machine name or file")
    if len(_seen) > 16 or str(path.resolve()) in _seen:
        raise MachineError(f"{path}: 'base' chain loops or is too deep")
    merged = read_machine_file(_base_of(path, base), _seen=_seen | {str(path.resolve())})
    # The base's name and description are not this file's: unless the file gives its own,
    # it is named after the file, and a file that changes the nodes or chips is described
    # afresh (load_machine).
    merged["name"] = path.stem
    if any(k in params for k in GEOMETRY_KEYS):
        merged.pop("description", None)
    merged.update(params)
    return merged


def _check_file_values(path: Path, params: dict[str, Any]) -> None:
    """Each parameter a machine file lists, checked for its type and range where it is
    written, so that the error names the file (--set and --mesh are applied later, and the
    whole machine is checked again when it is built)."""
    _refuse_unknown(params, f"{path}: ")
    for key, value in params.items():
        try:
            _check_value(PARAM_BY_KEY[key], value)
        except MachineError as e:
            raise MachineError(f"{path}: {e}") from None


def _refuse_unknown(params: dict[str, Any], where: str = "") -> None:
    """A MachineError naming the keys of `params` that are no machine parameter, if any
    (`where`: the file they were read from), and every one there is."""
    unknown = sorted(k for k in params if k not in PARAM_BY_KEY)
    if unknown:
        raise MachineError(f"{where}unknown machine parameter(s): "
                           f"{_shown(printable(', '.join(unknown)))}; known: "
                           f"{', '.join(p.key for p in PARAMS)}")


def _shown(text: str, limit: int = 80) -> str:
    """A value quoted in an error, cut short: a --set value may be megabytes long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def parse_value(key: str, text: str) -> Any:
    """Convert a `--set KEY=VALUE` string to the parameter's type."""
    p = PARAM_BY_KEY.get(key)
    if p is None:
        raise MachineError(f"unknown machine parameter '{key}'; "
                           f"known: {', '.join(q.key for q in PARAMS)}")
    text = text.strip()
    try:
        if p.kind == "str":
            return text
        if p.kind == "coords":
            return json.loads(text) if text else []
        if not text.isascii():          # int() and float() read '٢' and '２' as 2
            raise ValueError
        if p.kind == "int":
            v = float(text) if any(c in text for c in ".eE") and not text.lower().startswith("0x") \
                else int(text, 0)
            if isinstance(v, float):
                if not v.is_integer():
                    raise ValueError
                v = int(v)
            return v
        return float(text)
    except (ValueError, RecursionError):       # json.JSONDecodeError is a ValueError
        raise MachineError(f"machine parameter '{key}' must be {_kind_text(p)}, "
                           f"got '{_shown(text)}'") from None


def _kind_text(p: Param) -> str:
    return {"int": "an integer", "float": "a number", "str": "a string",
            "coords": "a JSON list of [x, y] pairs"}[p.kind]


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse `KEY=VALUE` strings (CLI `--set`) into typed overrides."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise MachineError(f"--set expects KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(k.strip(), v)
    return out


def _decimal(part: str) -> bool:
    """ASCII decimal digits only: '²' and '⁴' are digits to str.isdigit, not to int()."""
    return part.isascii() and part.isdigit()


def digits_value(part: str) -> int:
    """The value of ASCII digits `part`, any length: beyond 18 significant digits only its
    being too large matters (int() refuses more than 4,300 digits), so such a number is 10^18."""
    digits = part.lstrip("0")
    return int(digits or "0") if len(digits) <= 18 else 10**18


def parse_mesh(text: str) -> tuple[int, int]:
    """'CxR' -> (cols, rows)."""
    return _grid(text, "--mesh", "COLSxROWS such as 4x4", MAX_EDGE)


def parse_chips(text: str) -> tuple[int, int]:
    """'CxR' -> (chips across, chips down), for `--chips`."""
    return _grid(text, "--chips", "CHIPS_ACROSSxCHIPS_DOWN such as 2x2", MAX_CHIPS_EDGE)


def _grid(text: str, option: str, form: str, top: int) -> tuple[int, int]:
    """'AxB' -> (A, B), each in 1 .. top; `option` and `form` say what was expected."""
    # spaces may stand around the numbers ('2 x 2'), not inside one ('1 0x2' is not 10x2)
    parts = [p.strip(" ") for p in text.lower().split("x")]
    if len(parts) != 2 or not all(_decimal(p) for p in parts):
        raise MachineError(f"{option} expects {form}, got '{_shown(text)}'")
    c, r = digits_value(parts[0]), digits_value(parts[1])
    if not (1 <= c <= top and 1 <= r <= top):
        raise MachineError(f"{option} dimensions must be in 1 .. {top:,}, got "
                           f"'{_shown(text)}'")
    return c, r


def load_machine(name_or_path: str | Path | None = None, *, mesh: str | None = None,
                 chips: str | tuple[int, int] | None = None,
                 overrides: dict[str, Any] | list[str] | tuple[str, ...] | None = None,
                 base: Machine | None = None) -> Machine:
    """Load a machine by name or path (default 'd1', or `base` when no name is given: the
    machine an object was built for), then apply `--mesh`, `--chips` and `--set`.

    `mesh` ('4x4') keeps every other parameter of the base machine but uses one chip of that size
    with no harvested nodes (add `harvested` to the overrides to put some back). `chips` ('5x5'
    or (5, 5)) makes the machine that many copies of its chip, across and down, joined by
    chip-edge links: `load_machine("d1", chips="5x5")` is the `tile` machine but for its name.
    The overrides come last, so `--set chips_x=...` still wins. The name says the mesh and the
    chip grid the machine ends with, and a machine whose nodes or chips were changed here gets
    a description of its own (unless the overrides give a name or description).
    """
    if mesh is not None and not isinstance(mesh, str):
        raise MachineError(f"mesh is a string such as '4x4', not {type(mesh).__name__}")
    if chips is not None and not (isinstance(chips, str) or (
            isinstance(chips, tuple) and len(chips) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in chips))):
        raise MachineError(f"chips is a string such as '2x2' or a pair of integers, not "
                           f"{chips!r}"[:200])
    params = (base.to_dict() if base is not None and name_or_path is None
              else read_machine_file(name_or_path or "d1"))
    if overrides and not isinstance(overrides, dict):
        overrides = parse_sets(list(overrides))
    overrides = dict(overrides or {})
    name = params.get("name", "machine")
    if mesh is not None:
        c, r = parse_mesh(mesh)
        params.update(cols=c, rows=r, harvested=[], chips_x=1, chips_y=1)
    if chips is not None:
        cx, cy = parse_chips(chips) if isinstance(chips, str) else chips
        if not (1 <= cx <= MAX_CHIPS_EDGE and 1 <= cy <= MAX_CHIPS_EDGE):
            raise MachineError(f"chips must be 1 .. {MAX_CHIPS_EDGE} across and down, got "
                               f"{cx} x {cy}")
        params.update(chips_x=cx, chips_y=cy)
    params.update(overrides)
    if mesh is not None:
        # the mesh the machine ends with: `--set cols=8` after `--mesh 4x4` makes it 8 x 4
        name = f"{name}-{params.get('cols')}x{params.get('rows')}"
    if chips is not None or "chips_x" in overrides or "chips_y" in overrides:
        # one chip-grid suffix: the base may be an object's machine, named with its own
        name = re.sub(r"-chips\d+x\d+$", "", name)
        name = f"{name}-chips{params.get('chips_x', 1)}x{params.get('chips_y', 1)}"
    if "name" not in overrides:
        params["name"] = name
    reshaped = (mesh is not None or chips is not None
                or any(k in overrides for k in GEOMETRY_KEYS))
    fresh = "description" not in params or (reshaped and "description" not in overrides)
    params.setdefault("description", "")
    m = Machine.from_dict(params)
    if fresh:
        # the base machine's description may describe another mesh or chip grid
        m = dataclasses.replace(m, description=describe_geometry(m))
    return m


GEOMETRY_KEYS = ("cols", "rows", "harvested", "chips_x", "chips_y")


def describe_geometry(m: Machine) -> str:
    """A one-line description of a machine's nodes and chips, for a machine derived from
    another by `--mesh`, `--chips`, `--set` or a file's `base` (whose description would be
    the base's)."""
    chip = (f"{m.cols} x {m.rows} mesh, "
            + (f"{len(m.harvested)} harvested node{'s' * (len(m.harvested) != 1)}"
               if m.harvested else "no harvested nodes"))
    if m.chips == 1:
        return chip
    return (f"{m.chips_x} x {m.chips_y} chips of {m.cols} x {m.rows} nodes "
            f"({m.live_per_chip:,} live each), {m.n_live:,} live nodes")


DEFAULT_MACHINE_NAME = "d1"


def default_machine() -> Machine:
    return load_machine(DEFAULT_MACHINE_NAME)


def machine_or_default(machine: Any) -> Machine:
    """`machine` for a function's `machine=` argument: a `Machine` as it is, None for the
    default d1, and a clear error for anything else (a name or a mesh is load_machine's)."""
    if machine is None:
        return default_machine()
    if not isinstance(machine, Machine):
        hint = (f": make one with load_machine({machine!r})"
                if isinstance(machine, str) else ": make one with d1isa.machine.load_machine(...)")
        raise MachineError(f"machine must be a d1isa.machine.Machine, not "
                           f"{type(machine).__name__}{hint}")
    return machine


__all__ = [
    "DIRECTIONS", "OPPOSITE", "PARAMS", "PUBLISHED", "SYSTEMS", "TIMING_CLASSES", "Machine",
    "Param", "System", "default_machine", "load_machine", "machine_names", "machine_or_default",
    "parse_chips", "parse_mesh", "parse_sets", "parse_value", "published_system",
]
