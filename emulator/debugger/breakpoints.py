"""Breakpoints and watchpoints: the records, where they go, and how a watchpoint decides it fired.

A breakpoint or watchpoint is a set of *slots* of the emulator's code table that get a stop
flag: the jitted loop leaves before a flagged instruction runs, and the debugger then checks the
node, the condition, or (for a watchpoint) runs that one instruction and compares the watched
value before and after. `Points` keeps them and the flags they need; `resolve` turns a location
(`*PC`, `pc PC`, `LABEL`, `LINE`, `FILE:LINE[:COL]`) into slots.

Which instructions can change a watched thing comes from the ISA table (d1isa.isa): the stores
and the bytes each may write (`StoreExtent`, from the memory column, the machine's vector lanes
and matrix tile rows), the instructions writing a scalar register, and the sends and relays of
each link.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from d1isa import isa, units
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS, OPPOSITE, Machine
from d1isa.numbers import integer_arg, is_integer
from emulator.debugger.blocks import BlockInfo
from emulator.debugger.expr import Expr, Getter
from emulator.debugger.views import fmt_value
from emulator.report import Where

if TYPE_CHECKING:
    from emulator.debugger.core import Debugger
    from emulator.debugger.views import Stop


# ---- records -------------------------------------------------------------------------------------

@dataclass
class Breakpoint:
    """A breakpoint: stop before a flagged instruction runs on a matching node."""

    number: int
    location: str
    slots: frozenset[int]                 # slots of the emulator's code table
    nodes: frozenset[int] | None          # None: any node
    condition: str | None = None
    cond_tree: Expr | None = None         # the parsed condition
    cond: Getter | None = None
    enabled: bool = True
    temporary: bool = False
    hits: int = 0
    where_text: str = ""

    kind = "breakpoint"

    def describe(self) -> str:
        nodes = "all nodes" if self.nodes is None else (self.where_text
                                                       or f"{len(self.nodes)} nodes")
        cond = f" if {self.condition}" if self.condition else ""
        return f"{self.location} on {nodes}{cond}"


@dataclass
class Watchpoint:
    """A watchpoint: stop after an instruction of `node` changes the watched thing."""

    number: int
    what: str                             # "mem", "reg", "link" or "fill"
    node: int
    text: str
    slots: frozenset[int]
    addr: int = 0
    length: int = 0
    reg: int = 0
    direction: int = 0
    above: int = 0
    enabled: bool = True
    hits: int = 0

    kind = "watchpoint"

    def describe(self) -> str:
        return self.text


@dataclass
class BreakpointHit:
    """Breakpoint `number` stopped node `node` before the instruction at `where`."""

    number: int
    node: int
    where: Where
    position: int
    hits: int


@dataclass
class WatchHit:
    """Watchpoint `number` saw `what` change from `old` to `new` at instruction `where`."""

    number: int
    node: int
    what: str
    old: Any
    new: Any
    where: Where
    position: int

    def describe(self) -> str:
        return f"{self.what}: {fmt_value(self.old)} -> {fmt_value(self.new)}"


# ---- ISA facts the watchpoints use ---------------------------------------------------------------

# Instructions that write a scalar register through rd.
SCALAR_WRITERS = isa.opcodes_where(lambda i: i.writes == "x")


def _column(operand: str) -> int:
    """Column of the decoded row (isa.decode_array) holding an assembly operand."""
    return isa.SLOT_COLUMN[isa.FIELDS[isa.OPERANDS[operand][0]].slot]


def _after(ins: isa.Instruction, operand: str) -> str:
    return ins.operands[ins.operands.index(operand) + 1]


@dataclass(frozen=True)
class StoreExtent:
    """The SRAM bytes one store instruction may write, read from the ISA table's memory column.

    contiguous: `width` bytes at the address; strided: `count` elements of `width` bytes, the
    stride in register column `stride`; tile: `count` rows of `width` bytes, the row stride in
    the `field` of the imm slot; message: as many bytes as the register in column `length`. The
    address is rs1, plus imm when `offset`.
    """

    shape: str
    width: int
    count: int = 1
    offset: bool = False
    stride: int = -1
    length: int = -1
    field: isa.Field | None = None

    def span(self, row: tuple[int, ...], x: np.ndarray) -> tuple[int, int] | None:
        """[lo, hi) the instruction in decoded `row` may write, with registers `x`; None if
        the shape is one this does not know (then any byte may change)."""
        rs1, imm = row[isa.SLOT_COLUMN["rs1"]], row[isa.SLOT_COLUMN["imm"]]
        a = int(x[rs1]) + (imm if self.offset else 0)
        if self.shape == "contiguous":
            return a, a + self.width
        if self.shape == "strided":
            last = a + (self.count - 1) * int(x[row[self.stride]])
            return min(a, last), max(a, last) + self.width
        if self.shape == "tile" and self.field is not None:
            s = (imm >> self.field.lo) & ((1 << self.field.width) - 1)
            return a, a + (self.count - 1) * s + self.width
        if self.shape == "message":
            return a, a + int(x[row[self.length]])
        return None


def store_extents(machine: Machine) -> dict[int, StoreExtent]:
    """Opcode -> StoreExtent for every store of the ISA table, on `machine`."""
    out: dict[int, StoreExtent] = {}
    for ins in isa.INSTRUCTIONS:
        mem = ins.memory
        if mem is None or mem.kind != "store":
            continue
        offset = "[rs1+imm]" in ins.operands
        base = "[rs1+imm]" if offset else "rs1"
        if mem.shape == "strided":
            ext = StoreExtent("strided", mem.width, machine.vector_lanes_f32, offset,
                              stride=_column(_after(ins, base)))
        elif mem.shape == "tile":
            # One tile of mma_dim rows; a store of several tiles is not one this knows.
            fld = isa.FIELDS[isa.OPERANDS[_after(ins, base)][0]] if mem.tiles == 1 else None
            ext = StoreExtent("tile", mem.width, machine.mma_dim, offset, field=fld)
        elif mem.shape == "message":
            ext = StoreExtent("message", 0, 1, offset, length=_column(_after(ins, base)))
        else:
            ext = StoreExtent("contiguous", mem.width, 1, offset)
        out[ins.opcode] = ext
    return out


# ---- the set of breakpoints and watchpoints ------------------------------------------------------

class Points:
    """Every breakpoint and watchpoint by number, and the stop flags the enabled ones need."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.items: dict[int, Breakpoint | Watchpoint] = {}
        self.next_number = 1
        self.flags = np.zeros(slots, dtype=np.int8)
        self.bp_at: dict[int, list[Breakpoint]] = {}
        self.watch_at: dict[int, list[Watchpoint]] = {}

    def rebuild(self) -> None:
        flags = np.zeros(self.slots, dtype=np.int8)
        bp_at: dict[int, list[Breakpoint]] = {}
        watch_at: dict[int, list[Watchpoint]] = {}
        for item in self.items.values():
            if not item.enabled:
                continue
            for g in item.slots:
                flags[g] = 1
                if isinstance(item, Breakpoint):
                    bp_at.setdefault(g, []).append(item)
                else:
                    watch_at.setdefault(g, []).append(item)
        self.flags = flags
        self.bp_at = bp_at
        self.watch_at = watch_at

    def add(self, item: Breakpoint | Watchpoint) -> None:
        self.items[item.number] = item
        self.next_number = item.number + 1
        self.rebuild()

    def delete(self, number: int | None = None) -> int:
        if number is None:
            k = len(self.items)
            self.items.clear()
        else:
            number = integer_arg(number, "a breakpoint number")
            if number not in self.items:
                raise D1Error(f"no breakpoint or watchpoint number {number}")
            del self.items[number]
            k = 1
        self.rebuild()
        return k

    def enable(self, number: int, on: bool = True) -> None:
        item = self.items.get(integer_arg(number, "a breakpoint number"))
        if item is None:
            raise D1Error(f"no breakpoint or watchpoint number {number}")
        item.enabled = on
        self.rebuild()

    def listed(self) -> list[Breakpoint | Watchpoint]:
        return [self.items[k] for k in sorted(self.items)]

    def breakpoints(self) -> list[Breakpoint]:
        """The enabled breakpoints."""
        return [i for i in self.items.values() if isinstance(i, Breakpoint) and i.enabled]


# ---- locations -----------------------------------------------------------------------------------

def resolve(dbg: Debugger, location: str, node: Any
            ) -> tuple[set[int], frozenset[int] | None, str]:
    """Slots, node filter (None: any node) and a description of where for `location`.
    node: None (focused node for a pc or label, all nodes for a line), "all", or a node."""
    loc = location.strip()
    if not loc:
        raise D1Error("a location is needed: *PC, pc PC, LABEL, LINE or FILE:LINE")
    code = dbg.emu.code
    all_nodes = isinstance(node, str) and node.strip().lower() == "all"
    chosen = None if node is None or all_nodes else dbg.node(node)
    m_pc = re.fullmatch(r"(?:\*|pc\s+)(.+)", loc)
    if m_pc:
        pc = dbg._evaluate(m_pc.group(1), dbg.focus)
        one = dbg.focus if chosen is None else chosen
        nodes = list(range(dbg.n)) if all_nodes else [one]
        nodes = [n for n in nodes if 0 <= pc < int(code.node_len[n])]
        if not nodes:
            who = "every node" if all_nodes else f"node {dbg._xy_text(one)}"
            raise D1Error(f"pc {pc} is outside the code of {who}")
        slots = {int(code.node_base[n]) + pc for n in nodes}
        return slots, (None if all_nodes else frozenset(nodes)), \
            ("all nodes" if all_nodes else dbg._xy_text(nodes[0]))
    # LINE[:COL] before FILE:LINE[:COL], so that `10:7` is line 10, column 7 (ASCII digits,
    # few enough for int(): 5,000 of them were a ValueError)
    m_line = re.fullmatch(r"(?:(.+?):)??([0-9]{1,4300})(?::([0-9]{1,4300}))?", loc)
    if m_line:
        return _resolve_line(dbg, m_line.group(1), int(m_line.group(2)),
                             int(m_line.group(3)) if m_line.group(3) else None,
                             chosen, all_nodes)
    if not re.fullmatch(r"[A-Za-z_.$][\w.$]*", loc):
        raise D1Error(f"cannot read location {loc!r}: use *PC, pc PC, LABEL, LINE or "
                      "FILE:LINE")
    obj = dbg.obj
    syms = [s for s in obj.symbols if s.kind == "code" and s.name == loc]
    if not syms:
        raise D1Error(f"no code label {loc!r} (locations: *PC, pc PC, LABEL, LINE, "
                      "FILE:LINE)")
    by_block = {s.block: s.value for s in syms}
    if chosen is None and not all_nodes:
        fb = int(obj.node_block[dbg.focus])
        nodes = [dbg.focus] if fb in by_block else [
            n for n in range(dbg.n) if int(obj.node_block[n]) in by_block]
    elif all_nodes:
        nodes = [n for n in range(dbg.n) if int(obj.node_block[n]) in by_block]
    else:
        if int(obj.node_block[chosen]) not in by_block:
            raise D1Error(f"label {loc!r} is not in the code of node {dbg._xy_text(chosen)}")
        nodes = [chosen]
    slots = {int(code.node_base[n]) + by_block[int(obj.node_block[n])] for n in nodes}
    filt = None if all_nodes else frozenset(nodes)
    text = "all nodes" if all_nodes else (dbg._xy_text(nodes[0]) if len(nodes) == 1
                                           else f"{len(nodes)} nodes")
    return slots, filt, text


def _names_file(f: str, fname: str) -> bool:
    """Whether `fname` names the object's file `f`: its path, its name, a tail of its path;
    of the text of an imported model (`MODEL.onnx[MODEL.d1k]`), the model or that name too."""
    if f == fname or Path(f).name == fname or f.endswith("/" + fname):
        return True
    model, bracket, inner = f[:-1].partition("[") if f.endswith("]") else ("", "", "")
    return bool(bracket) and (inner == fname or _names_file(model, fname))


def _resolve_line(dbg: Debugger, fname: str | None, line: int, col: int | None,
                  chosen: int | None, all_nodes: bool
                  ) -> tuple[set[int], frozenset[int] | None, str]:
    files = dbg.obj.files
    if fname is None:
        fi = dbg._key(dbg.focus)[0]
        if fi < 0:
            fi = 0 if files else -1
        fidx = {fi}
    else:
        fidx = {i for i, f in enumerate(files) if _names_file(f, fname)}
        if not fidx:
            raise D1Error(f"no file {fname!r} in this object (files: "
                          f"{', '.join(files) or 'none'})")
    code = dbg.emu.code
    nodes = list(range(dbg.n)) if chosen is None else [chosen]
    slots: set[int] = set()
    used: set[int] = set()
    for n in nodes:
        b = int(dbg.obj.node_block[n])
        if b < 0:
            continue
        lines = dbg.obj.blocks[b].lines
        match = (np.isin(lines[:, 0], list(fidx)) & (lines[:, 1] == line)) | (
            np.isin(lines[:, 3], list(fidx)) & (lines[:, 4] == line))
        if col is not None:
            match &= lines[:, 2] == col
        if not match.any():
            continue
        first = match & ~np.concatenate(([False], match[:-1]))
        base = int(code.node_base[n])
        slots.update(int(p) + base for p in np.nonzero(first)[0])
        used.add(n)
    if not slots:
        where = f"{fname}:" if fname else ""
        raise D1Error(f"no code for line {where}{line}{':' + str(col) if col else ''}"
                      + (f" on node {dbg._xy_text(chosen)}" if chosen is not None else ""))
    if chosen is not None:
        return slots, frozenset([chosen]), dbg._xy_text(chosen)
    return slots, None, "all nodes"


def watch_slots(dbg: Debugger, node: int, mask_fn: Callable[[BlockInfo], np.ndarray]
                ) -> set[int]:
    """Slots of node's code where mask_fn(block facts) holds."""
    _b, info = dbg._node_block(node)
    if info is None:
        raise D1Error(f"node {dbg._xy_text(node)} has no code")
    base = int(dbg.emu.code.node_base[node])
    return {int(p) + base for p in np.nonzero(mask_fn(info))[0]}


def link_writers(info: BlockInfo, d: int) -> np.ndarray:
    """Where a block sends toward direction d, or relays on toward it."""
    op = info.rows[:, 0]
    sends = np.isin(op, isa.SEND_OPCODES) & (info.rows[:, _column("dir")] == d)
    relays = np.isin(op, isa.RELAY_OPCODES) & (info.rows[:, _column("dir2")] == d)
    return sends | relays


def parse_direction(d: Any) -> int:
    """A direction index from its letter or number."""
    names = ", ".join(DIRECTIONS[:-1]) + " or " + DIRECTIONS[-1]
    if isinstance(d, str):
        t = d.strip().upper()
        if t in DIRECTIONS:
            return DIRECTIONS.index(t)
        raise D1Error(f"direction must be {names}, got {d!r}")
    v = int(d) if is_integer(d) else -1
    if not 0 <= v < len(DIRECTIONS):
        raise D1Error(f"direction must be {', '.join(DIRECTIONS)} or 0..{len(DIRECTIONS) - 1}, "
                      f"got {d!r}")
    return v


# ---- watchpoints firing --------------------------------------------------------------------------

def watch_value(dbg: Debugger, w: Watchpoint) -> Any:
    st = dbg.emu.state
    if w.what == "mem":
        return st.sram[w.node, w.addr:w.addr + w.length].tobytes()
    if w.what == "reg":
        return int(st.x[w.node, w.reg])
    if w.what == "link":
        return int(st.link_msgs[w.node, w.direction])
    t = int(dbg.machine.neighbors[w.node, w.direction])
    return st.fifo_fill(t * 4 + OPPOSITE[w.direction])


def may_write(dbg: Debugger, node: int, w: Watchpoint) -> bool:
    """Could node's current instruction write inside w's range? (False only when sure.)"""
    _b, info = dbg._node_block(node)
    pc = int(dbg.emu.state.pc[node])
    row = tuple(int(v) for v in info.rows[pc])
    ext = dbg._stores.get(row[0])
    if ext is None:
        return False
    span = ext.span(row, dbg.emu.state.x[node])
    if span is None:
        return True
    lo, hi = span
    return lo < w.addr + w.length and w.addr < hi


def watch_exec(dbg: Debugger, node: int, ws: list[Watchpoint]) -> Stop | None:
    """Run node's current instruction; a stop if it changed what one of `ws` watches."""
    cand = [w for w in ws if w.enabled and (w.what != "mem" or may_write(dbg, node, w))]
    if not cand:
        return None
    before: dict[int, Any] = {}

    def record() -> None:
        before.update((w.number, watch_value(dbg, w)) for w in cand)

    where = dbg.emu.where(node)
    stop = dbg._exec_one(node, before=record)
    if stop is not None:
        return stop
    # every watchpoint the instruction triggers is reported (as gdb does): the stop is past
    # the instruction, so one left out here would never be seen
    hits: list[WatchHit] = []
    for w in cand:
        old, new = before[w.number], watch_value(dbg, w)
        if w.what == "fill":
            fired = new > w.above
        elif w.what == "link":
            fired = new > old
        else:
            fired = new != old
        if not fired:
            continue
        w.hits += 1
        if w.what == "link":
            t = int(dbg.machine.neighbors[node, w.direction])
            msgs = dbg.emu.fifo(t, OPPOSITE[w.direction])
            payload = msgs[-1][2] if msgs else b""
            old, new = units.count(old, "message"), units.count(new, "message") + \
                f", last {len(payload)} B: " + fmt_value(payload)
        elif w.what == "fill":
            old, new = f"{old} waiting", f"{new} waiting (> {w.above})"
        hits.append(WatchHit(w.number, node, w.text, old, new, where, dbg.position))
    if not hits:
        return None
    return dbg._make_stop("watchpoint", node, watch=hits[0], more_watches=hits[1:])
