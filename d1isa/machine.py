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

import json
import math
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from d1isa.errors import D1Error, MachineError
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
            return "any text"
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
MAX_LINK_BYTES = 1 << 20
MAX_FIFO_DEPTH = 1024
MAX_MESSAGE = 1 << 24
# A cost or latency is at most this many cycles, so that one instruction moves a clock by at
# most 2^20 x (its steps): with --max-cycles at most MAX_RUN_CYCLES no clock can overflow.
MAX_CYCLES_PER_STEP = 1 << 20
MAX_RUN_CYCLES = 1 << 40

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
    "clock_hz": (2e9, "Hz"),
}


def _check_value(p: Param, value: Any) -> Any:
    """Type-check and range-check one parameter value; returns the normalised value."""
    if p.kind == "str":
        if not isinstance(value, str):
            raise MachineError(f"machine parameter '{p.key}' must be a string, got {value!r}")
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
    def from_dict(cls, params: dict[str, Any]) -> Machine:
        """Validate a complete parameter dict and build the machine."""
        unknown = sorted(set(params) - set(PARAM_BY_KEY))
        if unknown:
            raise MachineError(f"unknown machine parameter(s): {', '.join(unknown)}; "
                               f"known: {', '.join(p.key for p in PARAMS)}")
        missing = [p.key for p in PARAMS if p.key not in params]
        if missing:
            raise MachineError(f"machine description lacks: {', '.join(missing)}; a machine "
                               'file may start with base = "d1" to take every parameter it '
                               "does not list from the d1 machine")
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
        if self.n_live > 1 << 20:
            raise MachineError(f"{self.n_live} live nodes is more than this toolchain supports "
                               f"({1 << 20})")

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

    @cached_property
    def n_live(self) -> int:
        return int(self.live_grid.sum())

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
        """Walk every (node, direction) through harvested routers to the next live node."""
        n = self.n_live
        nbr = np.full((n, 4), -1, dtype=np.int32)
        hops = np.zeros((n, 4), dtype=np.int32)
        lat = np.zeros((n, 4), dtype=np.int64)
        bw = np.zeros((n, 4), dtype=np.int64)
        ids, w, h = self.id_grid, self.width, self.height
        for nid in range(n):
            x0, y0 = (int(v) for v in self.xy[nid])
            for d, (dx, dy) in enumerate(DIR_DELTA):
                x, y = x0, y0
                k, latency, band = 0, 0, None
                while True:
                    nx, ny = x + dx, y + dy
                    if not (0 <= nx < w and 0 <= ny < h):
                        break
                    crosses = self.chip_of(x, y) != self.chip_of(nx, ny)
                    latency += self.chip_hop_latency if crosses else self.hop_latency
                    b = self.chip_link_bytes_per_cycle if crosses else self.link_bytes_per_cycle
                    band = b if band is None else min(band, b)
                    k += 1
                    x, y = nx, ny
                    if ids[y, x] >= 0:
                        nbr[nid, d] = ids[y, x]
                        hops[nid, d] = k
                        lat[nid, d] = latency
                        bw[nid, d] = band
                        break
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

    @cached_property
    def bisection_links(self) -> int:
        """Directed links, one way, crossing the narrower of the two middle cuts of the mesh."""
        cuts = []
        if self.width > 1:
            cuts.append(self._cut_links(vertical=True))
        if self.height > 1:
            cuts.append(self._cut_links(vertical=False))
        return min(cuts) if cuts else 0

    def _cut_links(self, vertical: bool) -> int:
        """Count paths crossing the middle cut eastward (vertical cut) or southward."""
        d = 1 if vertical else 2
        mid = self.width // 2 if vertical else self.height // 2
        count = 0
        for nid in range(self.n_live):
            x, y = self.node_xy(nid)
            t = int(self.neighbors[nid, d])
            if t < 0:
                continue
            tx, ty = self.node_xy(t)
            a, b = (x, tx) if vertical else (y, ty)
            if a < mid <= b:
                count += 1
        return count

    @property
    def bisection_bytes_per_s(self) -> float:
        """Bisection bandwidth, one direction, at the on-chip link rate."""
        return self.bisection_links * self.link_bytes_per_cycle * self.clock_hz

    def summary(self) -> dict[str, Any]:
        """Derived headline figures with units (what `d1 info` prints)."""
        return {
            "mesh": f"{self.width} x {self.height}",
            "chips": f"{self.chips_x} x {self.chips_y}",
            "live_nodes": self.n_live,
            "harvested_nodes": self.width * self.height - self.n_live,
            "peak_bf16_flops": self.peak_flops["bf16"],
            "peak_f32_flops": self.peak_flops["f32"],
            "sram_bytes_per_node": self.sram_bytes,
            "total_sram_bytes": self.total_sram_bytes,
            "bisection_links": self.bisection_links,
            "bisection_bytes_per_s": self.bisection_bytes_per_s,
            "link_bytes_per_s": self.link_bytes_per_cycle * self.clock_hz,
            "clock_hz": self.clock_hz,
        }


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---- loading ----------------------------------------------------------------------------------

def machine_names() -> list[str]:
    """Names of the machine files shipped in d1isa/machines."""
    return sorted(p.stem for p in MACHINES_DIR.glob("*.toml"))


def read_machine_file(name_or_path: str | Path, _seen: frozenset[str] = frozenset()
                      ) -> dict[str, Any]:
    """Parameters from a named machine ('d1', 'm4x4') or a TOML file path, unvalidated."""
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith(".toml") or path.is_file()):
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
    except tomllib.TOMLDecodeError as e:
        raise MachineError(f"{path}: invalid TOML: {e}") from None
    base = params.pop("base", None)
    if base is None:
        return params
    # A file may name a base machine and list only what differs from it.
    if not isinstance(base, str):
        raise MachineError(f"{path}: 'base' must be a machine name or file")
    if len(_seen) > 16 or str(path.resolve()) in _seen:
        raise MachineError(f"{path}: 'base' chain loops or is too deep")
    merged = read_machine_file(path.parent / base if base.endswith(".toml") else base,
                               _seen=_seen | {str(path.resolve())})
    merged.update(params)
    return merged


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
        if p.kind == "int":
            v = float(text) if any(c in text for c in ".eE") and not text.lower().startswith("0x") \
                else int(text, 0)
            if isinstance(v, float):
                if not v.is_integer():
                    raise ValueError
                v = int(v)
            return v
        return float(text)
    except (ValueError, json.JSONDecodeError):
        raise MachineError(f"machine parameter '{key}' must be {_kind_text(p)}, "
                           f"got '{text}'") from None


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


def parse_mesh(text: str) -> tuple[int, int]:
    """'CxR' -> (cols, rows)."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise MachineError(f"--mesh expects COLSxROWS such as 4x4, got '{text}'")
    c, r = int(parts[0]), int(parts[1])
    if not (1 <= c <= MAX_EDGE and 1 <= r <= MAX_EDGE):
        raise MachineError(f"--mesh dimensions must be in 1 .. {MAX_EDGE:,}, got '{text}'")
    return c, r


def load_machine(name_or_path: str | Path | None = None, *, mesh: str | None = None,
                 overrides: dict[str, Any] | list[str] | tuple[str, ...] | None = None) -> Machine:
    """Load a machine by name or path (default 'd1'), then apply `--mesh` and `--set` overrides.

    `mesh` ('4x4') keeps every other parameter of the base machine but uses one chip of that size
    with no harvested nodes (add `harvested` to the overrides to put some back).
    """
    params = read_machine_file(name_or_path or "d1")
    if mesh is not None:
        c, r = parse_mesh(mesh)
        params.update(cols=c, rows=r, harvested=[], chips_x=1, chips_y=1,
                      name=f"{params.get('name', 'machine')}-{c}x{r}",
                      description=f"{c} x {r} mesh, no harvested nodes")
    if overrides:
        if not isinstance(overrides, dict):
            overrides = parse_sets(list(overrides))
        params.update(overrides)
    return Machine.from_dict(params)


DEFAULT_MACHINE_NAME = "d1"


def default_machine() -> Machine:
    return load_machine(DEFAULT_MACHINE_NAME)


__all__ = [
    "DIRECTIONS", "OPPOSITE", "PARAMS", "PUBLISHED", "TIMING_CLASSES", "Machine", "Param",
    "default_machine", "load_machine", "machine_names", "parse_mesh", "parse_sets", "parse_value",
]
