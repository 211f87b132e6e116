"""The `.d1o` object file: what the assembler and the compiler produce and the emulator runs.

An object is self-contained: it embeds the full description of the machine it was built for, so
running it needs no machine flags. It holds per-node code (as shared code blocks plus a node ->
block map), initial SRAM contents, the scalar registers nodes start with, symbols, a line table
from every instruction back to its source, the sources themselves (for the debugger's `list`),
and tensor layout metadata that tells the host which slice of which named tensor lives at which
address of which node.

Code does not grow with the machine: nodes that play the same role run one shared block (NMAP
says which), and what differs between them (a trip count, an address, a grid position) is in
their initial registers (REGS) or their initial SRAM (DATA), both stored as distinct rows or
payloads that nodes point at. Locations are stored as runs (LINE), so a block whose thousand
instructions come from one DSL line costs one row.

Binary layout (all integers little-endian), version 2:

    header   8s magic  b"D1OBJ\\r\\n\\x1a"   (catches text-mode and truncation damage)
             u32 version, u32 section count, u64 total file length,
             u32 CRC-32 of every byte after the header, u32 reserved (0)
    table    per section: 4s tag, u32 reserved (0), u64 offset, u64 length
    MACH     UTF-8 JSON: the machine's parameters (d1isa.machine.PARAMS)
    META     UTF-8 JSON: block sizes, symbols, tensors, data records, files, sources, extra meta
             (the compiler's metadata; its "values" entry is the debugger's record of every
             named DSL value, d1isa.debuginfo)
    CODE     uint64 words of every block, concatenated in block order
    LINE     int32 [runs, 6]: count, then the row shared by `count` consecutive words: file
             index, line, col, asm file index, asm line (-1 = none); META "line_runs" gives
             each block's number of runs (a block's counts add up to its size)
    NMAP     int32 [live nodes]: code block of each node, -1 for a node with no code
    DATA     the initial-SRAM payloads, concatenated; META's records point into it
    REGS     the initial scalar registers: int32 [live nodes] row of each node (-1 = none), then
             int64 [rows, k], k = len(META "init_regs"), the registers ascending (empty if k = 0)

Version 1 (still read) has no REGS section and one LINE row of 5 per word.

Loading validates everything against the file size and the embedded machine before allocating, so
a truncated, corrupted or hostile file raises `ObjectFormatError` and never crashes, hangs, or
allocates more than a small multiple of its own size.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d1isa.errors import D1Error, ObjectFormatError
from d1isa.files import MAX_OBJECT_BYTES, read_bytes, write_atomic
from d1isa.machine import Machine

MAGIC = b"D1OBJ\r\n\x1a"
VERSION = 2
READABLE = (1, 2)
HEADER = struct.Struct("<8sIIQII")
ENTRY = struct.Struct("<4sIQQ")
REQUIRED = (b"MACH", b"META", b"CODE", b"LINE", b"NMAP", b"DATA", b"REGS")
REQUIRED_V1 = REQUIRED[:-1]
LINE_COLS = 5
DTYPE_BYTES = {"f32": 4, "bf16": 2, "i32": 4}
# A param is written like an input (to every node holding a copy) but keeps its value in SRAM
# from one run to the next: the weights and optimizer state of a DSL `param`.
ROLES = ("input", "param", "output", "internal")
SYMBOL_KINDS = ("code", "data", "equ")
# A tensor the host would have to allocate is bounded, so a hostile layout cannot ask for 2^60 B.
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_DIMS = 8
# Checked before the embedded machine is built: building it allocates its whole grid, so a
# hostile 60000 x 60000 mesh would take gigabytes before the live-node limit could reject it.
MAX_MESH_NODES = 1 << 22
# Tensor names: any name is short printable text; input and output names are identifiers.
MAX_NAME_CHARS = 128
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Code blocks beyond one per node are unused; a file may not declare more than this many.
EXTRA_BLOCKS = 1024


@dataclass
class CodeBlock:
    """Instructions shared by one or more nodes, with one line-table row per instruction."""

    words: np.ndarray                       # uint64[n]
    lines: np.ndarray | None = None         # int32[n, 5]; None = no locations

    def __post_init__(self) -> None:
        self.words = np.ascontiguousarray(self.words, dtype=np.uint64)
        if self.lines is None:
            self.lines = np.full((len(self.words), LINE_COLS), -1, dtype=np.int32)
        self.lines = np.ascontiguousarray(self.lines, dtype=np.int32)
        if self.lines.shape != (len(self.words), LINE_COLS):
            raise ValueError("line table must have one row of 5 per instruction")

    def __len__(self) -> int:
        return len(self.words)


class InitRegs:
    """The scalar registers nodes start with (every other register starts at 0).

    Stored as the object stores them: `regs`, the register numbers (ascending, r0 excluded);
    `rows`, int64 [R, len(regs)], the distinct value rows; `index`, int32 [n_live], each node's
    row or -1 (all zero). `from_nodes` builds the canonical form (no all-zero register or row,
    rows in order of their first node), so equal contents give equal bytes."""

    __slots__ = ("regs", "rows", "index")

    def __init__(self, regs: tuple[int, ...], rows: np.ndarray, index: np.ndarray) -> None:
        self.regs = tuple(int(r) for r in regs)
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.index = np.ascontiguousarray(index, dtype=np.int32)

    @classmethod
    def empty(cls, n_live: int) -> InitRegs:
        return cls((), np.zeros((0, 0), np.int64), np.full(n_live, -1, np.int32))

    @classmethod
    def from_nodes(cls, n_live: int, values: dict[int, dict[int, int]]) -> InitRegs:
        """Canonical form of {node: {register: value}} (values taken as 64-bit patterns)."""
        regs = sorted({r for vals in values.values() for r, v in vals.items()
                       if v & 0xFFFFFFFFFFFFFFFF})
        index = np.full(n_live, -1, np.int32)
        rows: dict[tuple[int, ...], int] = {}
        for node in sorted(values):
            vals = values[node]
            row = tuple(_i64(vals.get(r, 0)) for r in regs)
            if any(row):
                index[node] = rows.setdefault(row, len(rows))
        table = np.array(list(rows), dtype=np.int64).reshape(len(rows), len(regs))
        return cls(tuple(regs), table, index)

    def of(self, node: int) -> dict[int, int]:
        """{register: value} node `node` starts with (registers left at 0 omitted)."""
        k = int(self.index[node])
        if k < 0:
            return {}
        return {r: int(v) for r, v in zip(self.regs, self.rows[k].tolist(), strict=True) if v}

    def nodes(self) -> dict[int, dict[int, int]]:
        """{node: {register: value}} of every node that starts with a register set."""
        return {int(n): self.of(int(n)) for n in np.nonzero(self.index >= 0)[0]}

    def __bool__(self) -> bool:
        return bool(self.regs) and bool((self.index >= 0).any())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InitRegs) and self.regs == other.regs
                and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.index, other.index))


def _i64(v: int) -> int:
    """A 64-bit pattern as a signed int64."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


@dataclass
class DataInit:
    """Bytes placed in one node's SRAM at `addr` before the program starts."""

    node: int
    addr: int
    data: bytes


@dataclass
class Symbol:
    """A label or equate. Code labels give an instruction index within `block`."""

    name: str
    kind: str           # "code", "data", "equ"
    value: int
    block: int = -1


@dataclass
class TensorPiece:
    """One slice of a tensor held by one node: element `offset` is at byte `addr`.

    The slice covers `shape` elements from `offset` in each dimension; `strides` gives the byte
    distance between neighbours along each dimension in SRAM (row padding is allowed).
    """

    node: int
    addr: int
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    strides: tuple[int, ...]


@dataclass
class TensorLayout:
    """Where the pieces of one named tensor live. Inputs are scattered to every piece; outputs are
    gathered from the pieces, which must cover the whole tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str
    pieces: list[TensorPiece] = field(default_factory=list)


@dataclass
class ObjectFile:
    machine: Machine
    blocks: list[CodeBlock]
    node_block: np.ndarray                  # int32[n_live]: block index or -1
    data: list[DataInit] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    tensors: list[TensorLayout] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    init: InitRegs | None = None            # the registers nodes start with; None = none

    def __post_init__(self) -> None:
        self.node_block = np.ascontiguousarray(self.node_block, dtype=np.int32)
        if self.init is None:
            self.init = InitRegs.empty(self.machine.n_live)

    def block_of(self, node: int) -> CodeBlock | None:
        b = int(self.node_block[node])
        return self.blocks[b] if b >= 0 else None

    def tensor(self, name: str) -> TensorLayout:
        for t in self.tensors:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tensors) or "none"
        raise D1Error(f"no tensor named '{name}' in this object (tensors: {known})")

    def symbol(self, name: str) -> Symbol | None:
        for s in self.symbols:
            if s.name == name:
                return s
        return None

    # ---- serialisation ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        self.validate()
        blobs: list[bytes] = []
        blob_at: dict[bytes, int] = {}
        records = []
        pos = 0
        for d in self.data:
            b = bytes(d.data)
            if b not in blob_at:
                blob_at[b] = pos
                blobs.append(b)
                pos += len(b)
            records.append([d.node, d.addr, blob_at[b], len(b)])
        runs = [line_runs(b.lines) for b in self.blocks]
        meta = {
            "blocks": [len(b) for b in self.blocks],
            "line_runs": [len(r) for r in runs],
            "init_regs": list(self.init.regs),
            "data": records,
            "symbols": [[s.name, s.kind, s.value, s.block] for s in self.symbols],
            "tensors": [tensor_to_json(t) for t in self.tensors],
            "files": list(self.files),
            "sources": dict(self.sources),
            "meta": self.meta,
        }
        code = b"".join(b.words.astype("<u8").tobytes() for b in self.blocks)
        lines = b"".join(r.astype("<i4").tobytes() for r in runs)
        regs = b""
        if self.init.regs:
            regs = (self.init.index.astype("<i4").tobytes()
                    + self.init.rows.astype("<i8").tobytes())
        sections = [
            (b"MACH", self.machine.to_json().encode()),
            (b"META", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()),
            (b"CODE", code),
            (b"LINE", lines),
            (b"NMAP", self.node_block.astype("<i4").tobytes()),
            (b"DATA", b"".join(blobs)),
            (b"REGS", regs),
        ]
        return pack_sections(sections)

    def save(self, path: str | Path) -> None:
        """Write the object atomically (d1isa.files.write_atomic)."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, raw: bytes, name: str = "<object>", check_crc: bool = True
                   ) -> ObjectFile:
        """Parse and validate; ObjectFormatError for anything malformed."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise D1Error(f"ObjectFile.from_bytes takes the bytes of an object, not "
                          f"{type(raw).__name__}")
        try:
            return _parse(bytes(raw), name, check_crc)
        except ObjectFormatError as e:
            text = str(e)
            raise ObjectFormatError(text if text.startswith(f"{name}:") else f"{name}: {text}") \
                from None
        except D1Error as e:
            raise ObjectFormatError(f"{name}: {e}") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError,
                UnicodeDecodeError, struct.error, MemoryError) as e:
            raise ObjectFormatError(f"{name}: malformed object file: {_what_broke(e)}") \
                from None

    @classmethod
    def load(cls, path: str | Path) -> ObjectFile:
        """Read and validate a `.d1o` file (a regular file of at most MAX_OBJECT_BYTES)."""
        return cls.from_bytes(read_bytes(path, MAX_OBJECT_BYTES, "object file"), str(path))

    # ---- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Check internal consistency against the embedded machine (used on save and load)."""
        m = self.machine
        n = m.n_live
        if self.node_block.shape != (n,):
            raise ObjectFormatError(f"node map has {self.node_block.size} entries, "
                                    f"the machine has {n} live nodes")
        nb = len(self.blocks)
        if self.node_block.size and (self.node_block.min() < -1 or self.node_block.max() >= nb):
            raise ObjectFormatError("node map refers to a code block that does not exist")
        _validate_init(self.init, m)
        nfiles = len(self.files)
        for b in self.blocks:
            if len(b.lines):
                f = b.lines[:, [0, 3]]
                if f.min() < -1 or f.max() >= nfiles:
                    raise ObjectFormatError("line table refers to a missing source file")
        for d in self.data:
            if not (0 <= d.node < n):
                raise ObjectFormatError(f"data for node {d.node}: no such live node")
            if not (0 <= d.addr and d.addr + len(d.data) <= m.sram_bytes):
                raise ObjectFormatError(f"data at {d.addr:#x}+{len(d.data)} is outside node "
                                        f"{d.node}'s {m.sram_bytes} B of SRAM")
        for s in self.symbols:
            if not _text(s.name) or s.kind not in SYMBOL_KINDS:
                raise ObjectFormatError(f"bad symbol {s.name!r}")
            if not (-1 <= s.block < nb):
                raise ObjectFormatError(f"symbol {s.name} refers to a missing code block")
        names = set()
        for t in self.tensors:
            if t.name in names:
                raise ObjectFormatError(f"tensor '{t.name}' is described twice")
            names.add(t.name)
            _validate_tensor(t, m)
            _validate_cover(t)
        _validate_meta(self.meta, self.tensors)
        # The debugger's record of every named value (d1isa.debuginfo, which builds on the
        # tensor pieces of this module: imported here, not at the top).
        from d1isa import debuginfo
        debuginfo.read(self)


def line_runs(lines: np.ndarray) -> np.ndarray:
    """int32 [runs, 6] of a block's line rows: (count, row), one per run of equal rows."""
    n = len(lines)
    if n == 0:
        return np.zeros((0, LINE_COLS + 1), np.int32)
    starts = np.concatenate(([0], np.flatnonzero((lines[1:] != lines[:-1]).any(axis=1)) + 1))
    counts = np.diff(np.append(starts, n))
    return np.column_stack((counts, lines[starts])).astype(np.int32)


def _validate_init(init: InitRegs, m: Machine) -> None:
    regs = init.regs
    if len(set(regs)) != len(regs) or list(regs) != sorted(regs):
        raise ObjectFormatError("initial registers must be listed once each, ascending")
    for r in regs:
        if not 1 <= r < m.scalar_regs:
            raise ObjectFormatError(f"initial register r{r} does not exist or cannot be set "
                                    f"(r1..r{m.scalar_regs - 1} on this machine)")
    if init.index.shape != (m.n_live,):
        raise ObjectFormatError(f"initial-register table has {init.index.size} entries, the "
                                f"machine has {m.n_live} live nodes")
    if init.rows.ndim != 2 or init.rows.shape[1] != len(regs) or len(init.rows) > m.n_live:
        raise ObjectFormatError("initial-register rows do not match their registers")
    if init.index.size and (init.index.min() < -1 or init.index.max() >= len(init.rows)):
        raise ObjectFormatError("initial-register table refers to a row that does not exist")


def pack_sections(sections: list[tuple[bytes, bytes]]) -> bytes:
    """The container around (tag, payload) sections: header, section table, payloads; the CRC
    covers everything after the header."""
    offset = HEADER.size + ENTRY.size * len(sections)
    table, body = [], []
    for tag, payload in sections:
        table.append(ENTRY.pack(tag, 0, offset, len(payload)))
        body.append(payload)
        offset += len(payload)
    rest = b"".join(table) + b"".join(body)
    return HEADER.pack(MAGIC, VERSION, len(sections), HEADER.size + len(rest), zlib.crc32(rest),
                       0) + rest


def tensor_to_json(t: TensorLayout) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "role": t.role,
            "pieces": [[p.node, p.addr, list(p.offset), list(p.shape), list(p.strides)]
                       for p in t.pieces]}


def _validate_tensor(t: TensorLayout, m: Machine) -> None:
    _check_tensor_name(t.name, t.role)
    if t.dtype not in DTYPE_BYTES:
        raise ObjectFormatError(f"tensor '{t.name}': unknown dtype '{t.dtype}'")
    if t.role not in ROLES:
        raise ObjectFormatError(f"tensor '{t.name}': unknown role '{t.role}'")
    nd = len(t.shape)
    if not 1 <= nd <= MAX_DIMS or any(d < 1 for d in t.shape):
        raise ObjectFormatError(f"tensor '{t.name}': bad shape {list(t.shape)}")
    esize = DTYPE_BYTES[t.dtype]
    if math.prod(t.shape) > MAX_TENSOR_ELEMENTS:
        raise ObjectFormatError(f"tensor '{t.name}': {list(t.shape)} is too large")
    if math.prod(t.shape) * esize > m.total_sram_bytes:
        # Every element lives in some node's SRAM, so a larger tensor can only be a hostile
        # description (its host array would be allocated by set_input/output).
        raise ObjectFormatError(f"tensor '{t.name}': {t.dtype}{list(t.shape)} is "
                                f"{math.prod(t.shape) * esize:,} B, more than the machine's "
                                f"{m.total_sram_bytes:,} B of SRAM")
    if len(t.pieces) > 64 and _pieces_ok(t, m, esize):
        return
    for p in t.pieces:
        if not (0 <= p.node < m.n_live):
            raise ObjectFormatError(f"tensor '{t.name}': piece on missing node {p.node}")
        if not (len(p.offset) == len(p.shape) == len(p.strides) == nd):
            raise ObjectFormatError(f"tensor '{t.name}': piece rank differs from the tensor's")
        if any(o < 0 or s < 1 or o + s > d for o, s, d in zip(p.offset, p.shape, t.shape,
                                                               strict=True)):
            raise ObjectFormatError(f"tensor '{t.name}': piece lies outside the tensor")
        if any(st < 0 for st in p.strides) or p.addr < 0 or p.addr % esize:
            raise ObjectFormatError(f"tensor '{t.name}': bad piece address or strides")
        last = p.addr + sum((s - 1) * st for s, st in zip(p.shape, p.strides, strict=True))
        if last + esize > m.sram_bytes:
            raise ObjectFormatError(f"tensor '{t.name}': piece runs past the end of SRAM")
        if _aliases(p.shape, p.strides, esize):
            raise ObjectFormatError(
                f"tensor '{t.name}': a piece on node {p.node} puts several elements at one "
                f"SRAM address (shape {list(p.shape)}, byte strides {list(p.strides)}: a "
                "stride 0, or strides that overlap)")


def _pieces_ok(t: TensorLayout, m: Machine, esize: int) -> bool:
    """Every check of _validate_tensor's per-piece loop at once, for a tensor of many pieces
    (an object for a large machine has one per node); False if any might fail, so that the
    loop finds and names it."""
    nd = len(t.shape)
    if any(not (len(p.offset) == len(p.shape) == len(p.strides) == nd) for p in t.pieces):
        return False
    try:
        node = np.array([p.node for p in t.pieces], dtype=np.int64)
        addr = np.array([p.addr for p in t.pieces], dtype=np.int64)
        off = np.array([p.offset for p in t.pieces], dtype=np.int64).reshape(-1, nd)
        shp = np.array([p.shape for p in t.pieces], dtype=np.int64).reshape(-1, nd)
        st = np.array([p.strides for p in t.pieces], dtype=np.int64).reshape(-1, nd)
    except (OverflowError, ValueError, TypeError):
        return False
    dims = np.array(t.shape, dtype=np.int64)
    if ((node < 0) | (node >= m.n_live)).any() or (off < 0).any() or (shp < 1).any() \
            or (off + shp > dims).any() or (st < 0).any() or (addr < 0).any() \
            or (addr % esize).any() or (st > m.sram_bytes).any():
        return False
    if (addr + ((shp - 1) * st).sum(axis=1) + esize > m.sram_bytes).any():
        return False
    # no aliasing: by increasing stride, each dimension of more than one element steps past
    # everything the smaller ones span (_aliases)
    key = np.where(shp > 1, st, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    ss = np.take_along_axis(st, order, axis=1)
    ns = np.take_along_axis(shp, order, axis=1)
    reach = np.full(len(t.pieces), esize, dtype=np.int64)
    for k in range(nd):
        live = ns[:, k] > 1
        if (live & (ss[:, k] < reach)).any():
            return False
        reach = np.where(live, reach + ss[:, k] * (ns[:, k] - 1), reach)
    return True


def _validate_cover(t: TensorLayout) -> None:
    """An output is gathered from its pieces, so they hold at least as many elements as it has
    (the gather checks that they cover each one); a host array is then never larger than the
    SRAM its pieces describe."""
    if t.role != "output":
        return
    held = sum(math.prod(p.shape) for p in t.pieces)
    if held < math.prod(t.shape):
        raise ObjectFormatError(
            f"output tensor '{t.name}': its pieces hold {held:,} elements, fewer than its "
            f"{math.prod(t.shape):,}; an output's pieces must cover it")


def _aliases(shape: tuple[int, ...], strides: tuple[int, ...], esize: int) -> bool:
    """Whether a strided piece may put two of its elements on overlapping bytes.

    Taken by increasing stride, each dimension of more than one element must step past
    everything the smaller dimensions span: the condition every row-major layout, padded or
    not, meets. So a piece holds at most sram_bytes / esize elements, and a few bytes of file
    cannot describe gigabytes of tensor.
    """
    reach = esize
    for stride, n in sorted((st, n) for n, st in zip(shape, strides, strict=True) if n > 1):
        if stride < reach:
            return True
        reach += stride * (n - 1)
    return False


def _check_tensor_name(name: Any, role: str) -> None:
    """Input, param and output names become file names and `--input NAME=` keys, so they are
    DSL identifiers; any tensor name is short, printable text."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS \
            or not name.isprintable():
        raise ObjectFormatError(f"tensor name {str(name)[:80]!r} is not a short printable name "
                                f"(at most {MAX_NAME_CHARS} characters)")
    if role in ("input", "param", "output") and not IDENTIFIER.fullmatch(name):
        raise ObjectFormatError(f"{role} tensor name {name!r} is not an identifier "
                                "(letters, digits and _, not starting with a digit)")


# The keys the compiler writes into META's "meta", each with the check its value must pass.
def _names(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and IDENTIFIER.fullmatch(x)
                                       for x in v)


def _text(v: Any) -> bool:
    """A string that may be shown on the terminal as it is: no control character (an escape
    sequence would act on the terminal, a newline would split a message)."""
    return isinstance(v, str) and not CONTROL_CHARS.search(v)


def _region(v: Any) -> bool:
    return (isinstance(v, dict) and _text(v.get("op")) and _text(v.get("name"))
            and all(isinstance(v.get(k), int) and not isinstance(v.get(k), bool)
                    for k in ("line", "col")))


META_FIELDS: dict[str, tuple[str, Any]] = {
    "producer": ("text without control characters", _text),
    "source": ("text without control characters", _text),
    "inputs": ("a list of tensor names", _names),
    "params": ("a list of tensor names", _names),
    "updates": ("a list of tensor names", _names),
    # params whose starting values the DATA records hold (`d1 compile --params`)
    "embedded_params": ("a list of tensor names", _names),
    "outputs": ("a list of tensor names", _names),
    "scalar_outputs": ("a list of tensor names", _names),
    "grid": ("a table", lambda v: isinstance(v, dict)),
    "options": ("a table", lambda v: isinstance(v, dict)),
    "sram_peak_bytes": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "regions": ("a list of regions", lambda v: isinstance(v, list) and all(map(_region, v))),
    # Checked in full by d1isa.debuginfo.read.
    "values": ("a table", lambda v: isinstance(v, dict)),
    # an imported ONNX model's names: ONNX name -> the DSL name the program uses
    "onnx_names": ("a table of names", lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) and IDENTIFIER.fullmatch(x)
        for k, x in v.items())),
}


def _validate_meta(meta: dict[str, Any], tensors: list[TensorLayout]) -> None:
    for key, (what, ok) in META_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise ObjectFormatError(f"META field '{key}' must be {what}, got "
                                    f"{json.dumps(meta[key])[:80]}")
    known = {t.name for t in tensors}
    for key in ("inputs", "params", "outputs"):
        for n in meta.get(key, ()):
            if n not in known:
                raise ObjectFormatError(f"META field '{key}' names '{n}', which is not a "
                                        "tensor of the object")
    for key in ("updates", "embedded_params"):
        for n in meta.get(key, ()):
            if n not in meta.get("params", ()):
                raise ObjectFormatError(f"META field '{key}' names '{n}', which is not a param")
    sizes = {t.name: math.prod(t.shape) for t in tensors}
    for n in meta.get("scalar_outputs", ()):
        if n not in meta.get("outputs", ()):
            raise ObjectFormatError(f"META field 'scalar_outputs' names '{n}', which is not "
                                    "an output")
        if sizes.get(n) != 1:
            raise ObjectFormatError(f"META field 'scalar_outputs' names '{n}', which has "
                                    f"{sizes.get(n, 0):,} elements, not one")


def _what_broke(e: Exception) -> str:
    """A reader's words for what a malformed file's parser tripped over (no Python names)."""
    if isinstance(e, KeyError):
        return f"a required field {e} is missing"
    if isinstance(e, UnicodeDecodeError):
        return f"a section is not UTF-8 text (byte {e.start})"
    if isinstance(e, json.JSONDecodeError):
        return f"a section is not valid JSON ({e.msg} at character {e.pos})"
    if isinstance(e, RecursionError):
        return "a section is nested too deeply"
    if isinstance(e, MemoryError):
        return "it describes more data than can be held"
    if isinstance(e, TypeError):
        return "a field has the wrong type"
    if isinstance(e, (IndexError, struct.error)):
        return "a record is shorter than its format"
    return str(e)[:200] or "a field holds an impossible value"


def _want(cond: bool, msg: str) -> None:
    if not cond:
        raise ObjectFormatError(msg)


def _int(v: Any, what: str) -> int:
    _want(isinstance(v, int) and not isinstance(v, bool), f"{what} must be an integer")
    return v


def _ints(v: Any, what: str) -> tuple[int, ...]:
    _want(isinstance(v, list) and len(v) <= MAX_DIMS, f"{what} must be a short list")
    return tuple(_int(x, what) for x in v)


def _check_mesh_size(mach: dict[str, Any], name: str) -> None:
    """Reject an absurd mesh before `Machine.from_dict` allocates its grid."""
    area = 1.0
    for key in ("cols", "rows", "chips_x", "chips_y"):
        v = mach.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            area *= abs(float(v))
    _want(area <= MAX_MESH_NODES, f"{name}: the embedded machine's mesh has {area:.0f} nodes, "
                                  f"more than this toolchain supports ({MAX_MESH_NODES})")


def _parse(raw: bytes, name: str, check_crc: bool) -> ObjectFile:
    _want(len(raw) >= HEADER.size, f"{name}: not a d1 object file (too short: {len(raw)} B)")
    magic, version, nsect, total, crc, _ = HEADER.unpack_from(raw, 0)
    _want(magic == MAGIC, f"{name}: not a d1 object file (bad magic number)")
    _want(version in READABLE, f"{name}: object format version {version} is not supported "
                               f"(this d1isa reads versions {READABLE[0]} to {READABLE[-1]})")
    _want(total == len(raw), f"{name}: truncated or padded: header says {total} B, "
                             f"file has {len(raw)} B")
    if check_crc:
        _want(zlib.crc32(raw[HEADER.size:]) == crc, f"{name}: corrupted (checksum mismatch)")
    _want(nsect <= 64 and HEADER.size + nsect * ENTRY.size <= len(raw),
          f"{name}: bad section table")
    sections: dict[bytes, bytes] = {}
    for i in range(nsect):
        tag, _, off, length = ENTRY.unpack_from(raw, HEADER.size + i * ENTRY.size)
        _want(tag not in sections, f"{name}: section {tag!r} appears twice")
        _want(off <= len(raw) and length <= len(raw) - off,
              f"{name}: section {tag!r} lies outside the file")
        sections[tag] = raw[off:off + length]
    for tag in (REQUIRED if version >= 2 else REQUIRED_V1):
        _want(tag in sections, f"{name}: missing section {tag.decode()}")

    mach = json.loads(sections[b"MACH"].decode("utf-8"))
    _want(isinstance(mach, dict), f"{name}: embedded machine is not a table")
    _check_mesh_size(mach, name)
    machine = Machine.from_dict(mach)

    meta = json.loads(sections[b"META"].decode("utf-8"))
    _want(isinstance(meta, dict), f"{name}: META is not a table")
    _want(isinstance(meta["blocks"], list), f"{name}: bad block list")
    _want(len(meta["blocks"]) <= machine.n_live + EXTRA_BLOCKS,
          f"{name}: {len(meta['blocks'])} code blocks for {machine.n_live} nodes")
    sizes = [_int(s, "block size") for s in meta["blocks"]]
    _want(all(0 <= s <= len(raw) for s in sizes), f"{name}: a block size is negative or "
                                                     "larger than the file")
    nwords = sum(sizes)
    code, lines = sections[b"CODE"], sections[b"LINE"]
    _want(len(code) == 8 * nwords, f"{name}: CODE holds {len(code)} B, blocks need {8 * nwords}")
    words = np.frombuffer(code, dtype="<u8").astype(np.uint64)
    if version >= 2:
        rows = _line_rows(lines, meta["line_runs"], sizes, name)
    else:
        _want(len(lines) == 4 * LINE_COLS * nwords, f"{name}: LINE size does not match CODE")
        rows = np.frombuffer(lines, dtype="<i4").astype(np.int32).reshape(nwords, LINE_COLS)
    blocks, pos = [], 0
    for s in sizes:
        blocks.append(CodeBlock(words[pos:pos + s].copy(), rows[pos:pos + s].copy()))
        pos += s

    nmap = sections[b"NMAP"]
    _want(len(nmap) == 4 * machine.n_live,
          f"{name}: node map has {len(nmap) // 4} entries, the machine has {machine.n_live} "
          f"live nodes")
    node_block = np.frombuffer(nmap, dtype="<i4").astype(np.int32)

    payload = sections[b"DATA"]
    data = []
    _want(isinstance(meta["data"], list), f"{name}: bad data records")
    # Records sharing a payload share one bytes object. The serialiser stores each distinct
    # payload once, so distinct slices add up to the DATA size; a file whose records slice far
    # more than that would make loading allocate many times the file's size.
    slices: dict[tuple[int, int], bytes] = {}
    budget = 2 * len(payload) + (1 << 20)
    for rec in meta["data"]:
        node, addr, off, length = _ints(rec, "data record")
        _want(len(rec) == 4 and off >= 0 and length >= 0 and off + length <= len(payload),
              f"{name}: data record points outside DATA")
        blob = slices.get((off, length))
        if blob is None:
            budget -= length
            _want(budget >= 0, f"{name}: data records reference more bytes than DATA holds")
            blob = slices[(off, length)] = payload[off:off + length]
        data.append(DataInit(node, addr, blob))

    symbols = []
    for rec in meta["symbols"]:
        _want(isinstance(rec, list) and len(rec) == 4 and isinstance(rec[0], str)
              and isinstance(rec[1], str), f"{name}: bad symbol record")
        symbols.append(Symbol(rec[0], rec[1], _int(rec[2], "symbol value"),
                              _int(rec[3], "symbol block")))

    tensors = []
    for t in meta["tensors"]:
        _want(isinstance(t, dict) and isinstance(t["name"], str) and isinstance(t["dtype"], str)
              and isinstance(t["role"], str) and isinstance(t["pieces"], list),
              f"{name}: bad tensor record")
        pieces = _plain_pieces(t["pieces"])
        if pieces is None:
            pieces = []
            for p in t["pieces"]:
                _want(isinstance(p, list) and len(p) == 5, f"{name}: bad tensor piece")
                pieces.append(TensorPiece(_int(p[0], "piece node"), _int(p[1], "piece address"),
                                          _ints(p[2], "offset"), _ints(p[3], "shape"),
                                          _ints(p[4], "strides")))
        tensors.append(TensorLayout(t["name"], t["dtype"], _ints(t["shape"], "shape"), t["role"],
                                    pieces))

    files = meta["files"]
    # file and symbol names are shown on the terminal (the debugger, trap reports): printable
    _want(isinstance(files, list) and all(_text(f) for f in files),
          f"{name}: bad file list (each a file name without control characters)")
    sources = meta["sources"]
    _want(isinstance(sources, dict) and all(isinstance(v, str) for v in sources.values()),
          f"{name}: bad sources")
    extra = meta.get("meta", {})
    _want(isinstance(extra, dict), f"{name}: bad meta")
    init = None
    if version >= 2:
        init = _init_regs(sections[b"REGS"], meta["init_regs"], machine, name)
    obj = ObjectFile(machine, blocks, node_block, data, symbols, tensors, files, sources, extra,
                     init)
    obj.validate()
    return obj


def _plain_pieces(raw: Any) -> list[TensorPiece] | None:
    """Piece records that are plainly well formed (five fields, integers, short lists), read
    in one tight loop; None if any is not, so the careful reader names the problem."""
    if type(raw) is not list:
        return None
    out = []
    for p in raw:
        if type(p) is not list or len(p) != 5:
            return None
        node, addr, off, shp, st = p
        if (type(node) is not int or type(addr) is not int or type(off) is not list
                or type(shp) is not list or type(st) is not list
                or len(off) > MAX_DIMS or len(shp) > MAX_DIMS or len(st) > MAX_DIMS):
            return None
        for v in off + shp + st:
            if type(v) is not int:
                return None
        out.append(TensorPiece(node, addr, tuple(off), tuple(shp), tuple(st)))
    return out


def _line_rows(lines: bytes, runs: Any, sizes: list[int], name: str) -> np.ndarray:
    """The line rows of every word from version 2's runs (each block's runs add up to it)."""
    _want(isinstance(runs, list) and len(runs) == len(sizes),
          f"{name}: META line_runs must give one run count per code block")
    counts = [_int(r, "line run count") for r in runs]
    _want(all(0 <= c <= s and (c > 0) == (s > 0) for c, s in zip(counts, sizes, strict=True)),
          f"{name}: a block's line runs are more than its words, or none for a non-empty block")
    nruns = sum(counts)
    _want(len(lines) == 4 * (LINE_COLS + 1) * nruns, f"{name}: LINE size does not match its "
                                                      "runs")
    table = np.frombuffer(lines, dtype="<i4").astype(np.int32).reshape(nruns, LINE_COLS + 1)
    reps = table[:, 0].astype(np.int64)
    _want(bool((reps >= 1).all()), f"{name}: a line run covers no word")
    cnt = np.asarray(counts, dtype=np.int64)
    starts = (np.cumsum(cnt) - cnt)[cnt > 0]
    per_block = np.add.reduceat(reps, starts) if nruns else reps
    sized = [s for s in sizes if s > 0]
    _want(len(per_block) == len(sized) and bool((per_block == np.asarray(sized)).all()),
          f"{name}: a block's line runs do not add up to its size")
    return np.repeat(table[:, 1:], reps, axis=0)


def _init_regs(raw: bytes, regs: Any, machine: Machine, name: str) -> InitRegs:
    """Version 2's REGS section (row index per node, then the rows), checked for size."""
    _want(isinstance(regs, list) and len(regs) <= machine.scalar_regs,
          f"{name}: META init_regs must be a short list of registers")
    regs = [_int(r, "initial register") for r in regs]
    n = machine.n_live
    if not regs:
        _want(not raw, f"{name}: REGS holds values but no register is listed")
        return InitRegs.empty(n)
    _want(len(raw) >= 4 * n and (len(raw) - 4 * n) % (8 * len(regs)) == 0,
          f"{name}: REGS size does not match {n} nodes and {len(regs)} registers")
    rows = (len(raw) - 4 * n) // (8 * len(regs))
    _want(rows <= n, f"{name}: REGS has more rows than nodes")
    index = np.frombuffer(raw[:4 * n], dtype="<i4").astype(np.int32)
    table = np.frombuffer(raw[4 * n:], dtype="<i8").astype(np.int64).reshape(rows, len(regs))
    return InitRegs(tuple(regs), table, index)


def load_object(path: str | Path) -> ObjectFile:
    return ObjectFile.load(path)
