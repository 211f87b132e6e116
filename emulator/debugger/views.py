"""What the debugger shows: the records its operations return, how each is drawn, and how the
inspection commands build them from the emulator's state.

`Stop` (why an operation ended, and where), `MeshView` (every node's state on the grid, with the
wait-for cycle of a deadlock), `LinkView`, `MemView` and `Listing`. They are plain data with a
`render`/`describe`, so `d1 debug` only prints them and tests compare their fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from d1isa.disasm import format_word
from d1isa.errors import D1Error, printable
from d1isa.machine import DIRECTIONS, OPPOSITE
from d1isa.numbers import integer_arg
from emulator import constants as K
from emulator.report import Deadlock, Trap, Where

if TYPE_CHECKING:
    from emulator.debugger.breakpoints import BreakpointHit, WatchHit
    from emulator.debugger.core import Debugger

STATE_CODES = {K.RUNNING: "running", K.BLOCKED_SEND: "send", K.BLOCKED_RECV: "recv",
               K.HALTED: "halted", K.TRAPPED: "trapped"}


def fmt_value(v: Any) -> str:
    """A watched value as the debugger prints it."""
    if isinstance(v, bytes):
        return " ".join(f"{b:02x}" for b in v[:32]) + (" ..." if len(v) > 32 else "")
    if isinstance(v, int):
        if -(1 << 63) <= v < 1 << 64:      # a register's bits: two's complement in 64
            return f"{v} (0x{v & 0xFFFFFFFFFFFFFFFF:x})"
        return f"{v} ({hex(v)}, beyond 64 bits)"
    return str(v)


@dataclass
class Stop:
    """Why a debugger operation ended, and where.

    reason: breakpoint, watchpoint, step, finish, halted (every node), node-halted (the
    focused node), trap, deadlock, stuck, start (reverse execution reached T=0), interrupted.
    """

    reason: str
    position: int
    node: int | None = None
    where: Where | None = None
    breakpoint: BreakpointHit | None = None
    more_breakpoints: list[BreakpointHit] = field(default_factory=list)  # at the same place
    watch: WatchHit | None = None
    more_watches: list[WatchHit] = field(default_factory=list)  # by the same instruction
    traps: list[Trap] = field(default_factory=list)
    deadlock: Deadlock | None = None
    detail: str = ""
    source_line: str | None = None

    def describe(self) -> str:
        """The lines a debugger prints for this stop."""
        lines: list[str] = []
        if self.breakpoint is not None:
            b = self.breakpoint
            if self.detail:
                lines.append(self.detail)       # why it stopped although it has a condition
            for hit in [b, *self.more_breakpoints]:
                lines.append(f"Breakpoint {hit.number}, node "
                             f"{self.where.xy if self.where else '?'} [id {hit.node}], "
                             f"T={self.position:,}")
        elif self.watch is not None:
            w = self.watch
            for hit in [w, *self.more_watches]:
                lines.append(f"Watchpoint {hit.number}, node {hit.where.xy} [id {hit.node}], "
                             f"T={self.position:,}: {hit.describe()}")
            lines.append(f"  written by {w.where.describe()}")
        elif self.reason == "trap":
            lines.append(f"Trap at T={self.position:,}:")
            lines.extend(t.message() for t in self.traps)
        elif self.reason in ("deadlock", "stuck"):
            head = ("Deadlock" if self.reason == "deadlock" else "Stuck") + \
                f" at T={self.position:,}: no node can make progress"
            lines.append(head)
            if self.deadlock is not None:
                lines.append(self.deadlock.report())
            lines.extend(t.message() for t in self.traps)
        elif self.detail:
            lines.append(self.detail)
        if self.reason not in ("trap", "deadlock", "stuck", "halted") and self.where is not None:
            lines.append(f"{self.where.describe()}, T={self.position:,}"
                         if self.breakpoint is None and self.watch is None
                         else self.where.describe())
            if self.source_line is not None:
                lines.append(self.source_line)
        return "\n".join(lines)


@dataclass
class MeshCell:
    node: int                 # live-node id, -1 for a harvested position
    x: int
    y: int
    state: str                # running, send, recv, halted, trapped, idle (no code), harvested
    direction: int = -1       # for send/recv
    focused: bool = False
    in_cycle: bool = False

    @property
    def code(self) -> str:
        if self.state == "harvested":
            return "X"
        if self.state in ("send", "recv"):
            return ("s" if self.state == "send" else "r") + DIRECTIONS[self.direction]
        return {"running": ".", "halted": "H", "trapped": "T", "idle": "-"}[self.state]


MESH_LEGEND = ("legend: .  running      H  halted       T  trapped     -  no code     "
               "X  harvested\n"
               "        sD blocked sending toward D    rD blocked receiving from D    "
               f"(D = {' '.join(DIRECTIONS)})\n"
               "        *  in a wait-for cycle         [ ] focused node")


@dataclass
class MeshView:
    """Every grid position's state, row by row (y = 0 is the north edge)."""

    width: int
    height: int
    rows: list[list[MeshCell]]
    position: int
    focus: int
    counts: dict[str, int]

    def cell(self, x: int, y: int) -> MeshCell:
        return self.rows[y][x]

    def render(self, legend: bool = True) -> str:
        head = ("      " + "".join(f"{x:^5}" for x in range(self.width))).rstrip()
        out = [head]
        for y, row in enumerate(self.rows):
            cells = []
            for c in row:
                text = c.code + ("*" if c.in_cycle else "")
                cells.append(f"[{text:^3}]" if c.focused else f" {text:^3} ")
            out.append(f"{y:>4}  " + "".join(cells).rstrip())
        summary = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        out.append(f"T={self.position:,}: {summary}")
        if legend:
            out.append(MESH_LEGEND)
        return "\n".join(out)


@dataclass
class LinkView:
    """One direction of a node: what it sent, and both FIFOs on that side."""

    direction: str
    neighbour: tuple[int, int] | None
    sent_messages: int = 0
    sent_bytes: int = 0
    out_fill: int = 0          # messages waiting at the neighbour, from this node
    out_bytes: int = 0
    in_fill: int = 0           # messages waiting here, from the neighbour
    in_bytes: int = 0
    received_messages: int = 0
    depth: int = 0


@dataclass
class MemView:
    node: int
    addr: int
    fmt: str
    raw: bytes
    values: np.ndarray

    def render(self) -> str:
        lines = []
        if self.fmt == "hex":
            for off in range(0, len(self.raw), 16):
                chunk = self.raw[off:off + 16]
                lines.append(f"0x{self.addr + off:06x}:  " + " ".join(f"{b:02x}" for b in chunk))
            return "\n".join(lines)
        esize = {"f32": 4, "bf16": 2, "i32": 4, "i64": 8}[self.fmt]
        per = 8 if esize <= 4 else 4
        for i in range(0, len(self.values), per):
            vals = self.values[i:i + per]
            if self.fmt in ("f32", "bf16"):
                text = "  ".join(f"{float(v):.7g}" for v in vals)
            else:
                text = "  ".join(str(int(v)) for v in vals)
            lines.append(f"0x{self.addr + i * esize:06x}:  {text}")
        return "\n".join(lines)


@dataclass
class Listing:
    """Source lines around the focused node's line, next to its instructions around pc."""

    node: int
    pc: int
    file: str | None
    line: int | None
    source: list[tuple[int, str, bool]]           # (line number, text, is current)
    asm: list[tuple[int, str, str, bool]]         # (pc, instruction, location, is current)

    def render(self, width: int = 56) -> str:
        left = [f"{'=>' if cur else '  '}{n:>5}  {text}" for n, text, cur in self.source]
        right = [f"{'=>' if cur else '  '}{pc:>5}  {text:<28} {loc}".rstrip()
                 for pc, text, loc, cur in self.asm]
        head_l = self.file or "(no source)"
        out = [f"{head_l[:width]:<{width}} | node pc"]
        for i in range(max(len(left), len(right))):
            lt = left[i] if i < len(left) else ""
            rt = right[i] if i < len(right) else ""
            if len(lt) > width:
                lt = lt[:width - 3] + "..."
            out.append(f"{lt:<{width}} | {rt}".rstrip())
        return "\n".join(out)


# ---- building the views from the state -----------------------------------------------------------

def mesh_view(dbg: Debugger) -> MeshView:
    """Every grid position's state; nodes in a wait-for cycle are marked."""
    dbg._normalize()
    m = dbg.machine
    st = dbg.emu.state
    ids = m.id_grid
    cycle: set[int] = set()
    blocked = np.nonzero((st.state == K.BLOCKED_SEND) | (st.state == K.BLOCKED_RECV))[0]
    dirs: dict[int, int] = {}
    if blocked.size:
        dl = dbg.emu.wait_chains(blocked)
        for ch in dl.chains:
            for w in ch.waits:
                dirs[w.where.node] = w.direction
                if ch.cycle:
                    cycle.add(w.where.node)
    rows = []
    counts = {"running": 0, "blocked": 0, "halted": 0, "trapped": 0}
    for y in range(m.height):
        row = []
        for x in range(m.width):
            nid = int(ids[y, x])
            if nid < 0:
                row.append(MeshCell(-1, x, y, "harvested"))
                continue
            s = int(st.state[nid])
            name = STATE_CODES[s]
            if s == K.HALTED and int(dbg.emu.code.node_len[nid]) == 0:
                name = "idle"
            counts["blocked" if name in ("send", "recv") else
                   ("halted" if name == "idle" else name)] += 1
            row.append(MeshCell(nid, x, y, name, dirs.get(nid, -1), nid == dbg.focus,
                                nid in cycle))
        rows.append(row)
    return MeshView(m.width, m.height, rows, dbg.position, dbg.focus, counts)


_ELEMENT_BYTES = {"hex": 1, "f32": 4, "bf16": 2, "i32": 4, "i64": 8}


def mem_view(dbg: Debugger, nid: int, a: int, count: int | None, fmt: str) -> MemView:
    """`count` bytes (hex) or elements (f32, bf16, i32, i64) of node nid's SRAM at a."""
    esize = _ELEMENT_BYTES.get(fmt)
    if esize is None:
        raise D1Error(f"unknown format {fmt!r}: use hex, f32, bf16, i32 or i64")
    n = integer_arg(count, "a count") if count is not None else (64 if fmt == "hex" else 16)
    if n < 1:
        raise D1Error(f"count must be >= 1, got {n}")
    raw = dbg.emu.sram(nid, a, n * esize).tobytes()
    if fmt == "hex":
        values = np.frombuffer(raw, dtype=np.uint8)
    elif fmt == "f32":
        values = np.frombuffer(raw, dtype="<f4")
    elif fmt == "bf16":
        values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif fmt == "i32":
        values = np.frombuffer(raw, dtype="<i4")
    else:
        values = np.frombuffer(raw, dtype="<i8")
    return MemView(nid, a, fmt, raw, values)


def link_views(dbg: Debugger, nid: int) -> list[LinkView]:
    """Each direction of node nid: what it sent, and both FIFOs on that side."""
    st = dbg.emu.state
    m = dbg.machine
    depth = m.fifo_depth
    out = []
    for d, dname in enumerate(DIRECTIONS):
        t = int(m.neighbors[nid, d])
        if t < 0:
            out.append(LinkView(dname, None, depth=depth))
            continue
        ol = t * 4 + OPPOSITE[d]
        il = nid * 4 + d
        omsgs = st.fifo_messages(ol)
        imsgs = st.fifo_messages(il)
        out.append(LinkView(dname, (int(m.xy[t][0]), int(m.xy[t][1])),
                            int(st.link_msgs[nid, d]), int(st.link_bytes[nid, d]),
                            len(omsgs), sum(msg[0] for msg in omsgs),
                            len(imsgs), sum(msg[0] for msg in imsgs),
                            int(st.link_msgs[t, OPPOSITE[d]]), depth))
    return out


def _labels(dbg: Debugger, b: int) -> dict[int, str]:
    return {s.value: s.name for s in dbg.obj.symbols if s.kind == "code" and s.block == b}


def listing(dbg: Debugger, nid: int, context: int, line: int | None) -> Listing:
    """Source lines around node nid's line (or `line`), next to its instructions around pc."""
    pc = int(dbg.emu.state.pc[nid])
    b, info = dbg._node_block(nid)
    if info is None:
        raise D1Error(f"node {dbg._xy_text(nid)} has no code")
    obj = dbg.obj
    fi, cur_line = dbg._key(nid)
    fname = obj.files[fi] if 0 <= fi < len(obj.files) else None
    source: list[tuple[int, str, bool]] = []
    text = obj.sources.get(fname) if fname else None
    centre = line if line is not None else cur_line
    if text is not None and line is not None and not 1 <= line <= len(text.splitlines()):
        # an empty source side next to the instructions would look like a file without lines
        raise D1Error(f"line {line} is outside {fname} (lines 1..{len(text.splitlines())})")
    if text is not None and centre > 0:
        src = text.splitlines()
        lo = max(1, centre - context)
        hi = min(len(src), centre + context)
        # the object's source text: an escape sequence in it must not act on the terminal
        source = [(i, printable(src[i - 1], keep="\t"), i == cur_line)
                  for i in range(lo, hi + 1)]
    lo = max(0, pc - context)
    hi = min(len(info) - 1, pc + context)
    labels = _labels(dbg, b)
    asm = []
    for p in range(lo, hi + 1):
        word = int(obj.blocks[b].words[p])
        kf, kl = info.keys[p]
        loc = f"{kl}" if kf == fi and kf >= 0 else ""
        asm.append((p, format_word(word, p, labels), loc, p == pc))
    return Listing(nid, pc, fname, cur_line if cur_line > 0 else None, source, asm)


def disasm(dbg: Debugger, nid: int, count: int) -> list[tuple[int, str, str, bool]]:
    """(pc, instruction, source location, is current) for `count` pcs around node nid's pc."""
    b, info = dbg._node_block(nid)
    if info is None:
        raise D1Error(f"node {dbg._xy_text(nid)} has no code")
    pc = int(dbg.emu.state.pc[nid])
    lo = max(0, pc - count // 2)
    hi = min(len(info), lo + count)
    labels = _labels(dbg, b)
    out = []
    for p in range(lo, hi):
        w = dbg.emu.where(nid, p)
        out.append((p, format_word(int(dbg.obj.blocks[b].words[p]), p, labels),
                    w.source or w.asm or "", p == pc))
    return out
