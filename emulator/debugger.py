"""`Debugger`: source-level debugging of the whole mesh, with reverse execution.

    from emulator.debugger import Debugger
    dbg = Debugger("programs/asm/token_ring.d1s", machine=load_machine(mesh="4x4"))
    dbg.break_at("bump", node="all")
    stop = dbg.cont()                 # Stop(reason="breakpoint", ...)
    dbg.reverse_stepi()               # one instruction back on the focused node

The debugger owns an `Emulator` and drives it through stop flags (a flagged instruction leaves
the jitted loop before it executes), per-node instruction budgets, and single-node runs. Every
operation returns data (`Stop`, `Breakpoint`, `MeshView`, numpy arrays, dicts); `d1 debug`
(d1/commands/debug.py) only parses commands and prints these.

Position. Each node is a deterministic program that talks to others only through FIFOs, and the
timing model depends only on each node's program order and each link's message order, so the
whole mesh state is a function of the vector of per-node executed-instruction counts (the mesh
is a Kahn process network). That vector is the debugger's position; its sum, the number of
instructions executed so far, is the timeline number T shown to the user. Going to any earlier
vector W is: restore a checkpoint whose counts are all <= W, then run with per-node budgets
W - checkpoint. Stopping, stepping and chunking therefore never change results.

Checkpoints are taken every `interval` executed instructions during forward execution. A
checkpoint stores SRAM only below each node's high-water mark (bytes above it were never
written, so they are zero) and only the FIFO slots holding messages; the interval adapts so
that taking checkpoints costs about a tenth of the run time, and when the checkpoints exceed
their memory budget every other one is dropped and the interval doubles (docs/DEBUGGER.md).

The debugger drives the emulator through `Emulator.run_until` (one serial run_loop call with a
global budget, a single node, or per-node budgets).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from d1isa import isa, units
from d1isa.disasm import format_word
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS, OPPOSITE, Machine
from d1isa.objfile import ObjectFile
from emulator import kernel as K
from emulator import state as state_module
from emulator.decode import C_OP, C_RD, C_RS1, C_RS2, C_RS3, SCALAR_DEST_OPCODES
from emulator.emulator import Emulator
from emulator.report import Deadlock, Trap, Where

# ---- tuning -------------------------------------------------------------------------------------

# Forward execution runs in kernel calls of at most this many instructions, so traps are noticed
# and Ctrl-C is honoured within milliseconds, and checkpoints land near their interval.
MAX_CHUNK = 1 << 22
MIN_CHUNK = 1 << 12
# Instructions between checkpoints before the adaptive rule has measured anything.
DEFAULT_INTERVAL = 1 << 22
# Taking checkpoints may cost about 1/CHECKPOINT_OVERHEAD of the run time.
CHECKPOINT_OVERHEAD = 10
DEFAULT_CHECKPOINT_BYTES = 1 << 30
# Nodes get private copies of shared code blocks up to this many code slots in all.
PRIVATE_CODE_SLOTS = 1 << 20
# Breakpoint stops remembered for reverse-continue.
MAX_HISTORY = 1000
_BIG = 1 << 60

# ---- opcode sets, by mnemonic (never by number) --------------------------------------------------

_OP = isa.OP
_SCALAR_STORES = {_OP["st8"]: 1, _OP["st16"]: 2, _OP["st32"]: 4, _OP["st64"]: 8}
_VECTOR_STORES = {_OP["vst"]: 64, _OP["vstn.bf16"]: 32, _OP["vstn.bf16.sr"]: 32}
_STRIDED_STORES = {_OP["vsts"]: 4, _OP["vstsn.bf16"]: 2}
_ACC_STORES = {_OP["acc.st"]: 32, _OP["acc.st.bf16"]: 16}
_MSG_STORES = (_OP["recvb"], _OP["relayb"])
MEMORY_WRITERS = frozenset(_SCALAR_STORES) | frozenset(_VECTOR_STORES) | frozenset(
    _STRIDED_STORES) | frozenset(_ACC_STORES) | frozenset(_MSG_STORES)
_SENDS = (_OP["send"], _OP["vsend"], _OP["sendb"])
_RELAYS = (_OP["relay"], _OP["relayb"])
_RECVS = (_OP["recv"], _OP["vrecv"], _OP["recvb"])
_BRANCHES = tuple(_OP[m] for m in ("beq", "bne", "blt", "bge", "bltu", "bgeu", "jal"))
# opcode -> 1 receive, 2 send, 3 relay, 0 anything else (the last entry covers opcodes > 255)
_NET_KIND = np.zeros(257, dtype=np.int8)
_NET_KIND[list(_RECVS)] = 1
_NET_KIND[list(_SENDS)] = 2
_NET_KIND[list(_RELAYS)] = 3
_JAL, _JALR = _OP["jal"], _OP["jalr"]

STATE_CODES = {K.RUNNING: "running", K.BLOCKED_SEND: "send", K.BLOCKED_RECV: "recv",
               K.HALTED: "halted", K.TRAPPED: "trapped"}


# ---- the condition / address expression language ------------------------------------------------

class ExprError(D1Error):
    """A malformed or failing debugger expression."""


_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*)|([A-Za-z_.$@][\w.$]*)"
                    r"|(<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!<>()\[\]]))")
_BINARY = [
    ("||", "or"), ("&&", "and"),
    ("|",), ("^",), ("&",),
    ("==", "!=", "<", "<=", ">", ">="),
    ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
]
_MEM_WIDTH = {"mem8": 1, "mem16": 2, "mem32": 4, "mem64": 8}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprError(f"unexpected character {text[pos:].lstrip()[:1]!r} in "
                            f"expression {text!r}")
        num, name, op = m.groups()
        if num is not None:
            out.append(("num", int(num.replace("_", ""), 0)))
        elif name is not None:
            if name in ("and", "or", "not"):
                out.append(("op", {"and": "&&", "or": "||", "not": "!"}[name]))
            else:
                out.append(("name", name))
        else:
            out.append(("op", op))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over C-like precedence; the tree is nested tuples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def parse(self) -> tuple:
        if not self.toks:
            raise ExprError("empty expression")
        tree = self.binary(0)
        if self.i != len(self.toks):
            raise ExprError(f"unexpected {self.toks[self.i][1]!r} in expression {self.text!r}")
        return tree

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def binary(self, level: int) -> tuple:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            t = self.peek()
            if t is None or t[0] != "op" or t[1] not in _BINARY[level]:
                return left
            self.i += 1
            left = ("bin", t[1], left, self.binary(level + 1))

    def unary(self) -> tuple:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ("-", "~", "!", "+"):
            self.i += 1
            return ("un", t[1], self.unary())
        return self.primary()

    def primary(self) -> tuple:
        t = self.peek()
        if t is None:
            raise ExprError(f"expression {self.text!r} ends too early")
        self.i += 1
        if t[0] == "num":
            return ("num", t[1])
        if t[0] == "name":
            nxt = self.peek()
            if t[1].lower() in _MEM_WIDTH and nxt == ("op", "["):
                self.i += 1
                addr = self.binary(0)
                if self.peek() != ("op", "]"):
                    raise ExprError(f"missing ']' in expression {self.text!r}")
                self.i += 1
                return ("mem", _MEM_WIDTH[t[1].lower()], addr)
            return ("name", t[1])
        if t == ("op", "("):
            inner = self.binary(0)
            if self.peek() != ("op", ")"):
                raise ExprError(f"missing ')' in expression {self.text!r}")
            self.i += 1
            return inner
        raise ExprError(f"unexpected {t[1]!r} in expression {self.text!r}")


def parse_expr(text: str) -> tuple:
    """Parse a debugger expression (never Python `eval`): integers, registers `rN`, `pc`,
    `clock`, `x`, `y`, `id`, symbols, `mem8/16/32/64[ADDR]`, C operators, `and`/`or`/`not`."""
    return _Parser(text).parse()


def _cdiv(a: int, b: int, rem: bool) -> int:
    if b == 0:
        raise ExprError("division by zero in expression")
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return a - b * q if rem else q


_BIN_FN: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: _cdiv(a, b, False), "%": lambda a, b: _cdiv(a, b, True),
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "<<": lambda a, b: a << _shift(b), ">>": lambda a, b: a >> _shift(b),
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
}
_UN_FN: dict[str, Callable[[int], int]] = {
    "-": lambda v: -v, "+": lambda v: v, "~": lambda v: ~v, "!": lambda v: int(not v)}


def _shift(b: int) -> int:
    if not 0 <= b <= 4096:
        raise ExprError(f"shift count {b} is outside 0..4096")
    return b


Getter = Callable[[int], int]


def compile_expr(tree: tuple, name: Callable[[str], Getter],
                 mem: Callable[[int, int, int], int]) -> Getter:
    """Turn a parsed expression into a function of the node it is evaluated on.

    `name(identifier)` returns a getter (node -> value) or raises ExprError; `mem(node, width,
    addr)` reads a signed little-endian integer. Names resolve once, here, not per evaluation.
    """
    kind = tree[0]
    if kind == "num":
        value = tree[1]
        return lambda node: value
    if kind == "name":
        return name(tree[1])
    if kind == "mem":
        width = tree[1]
        addr = compile_expr(tree[2], name, mem)
        return lambda node: mem(node, width, addr(node))
    if kind == "un":
        fn1 = _UN_FN[tree[1]]
        arg = compile_expr(tree[2], name, mem)
        return lambda node: fn1(arg(node))
    op = tree[1]
    a = compile_expr(tree[2], name, mem)
    b = compile_expr(tree[3], name, mem)
    if op == "&&":
        return lambda node: int(bool(a(node)) and bool(b(node)))
    if op == "||":
        return lambda node: int(bool(a(node)) or bool(b(node)))
    fn2 = _BIN_FN[op]
    return lambda node: fn2(a(node), b(node))


# ---- per-block code facts -----------------------------------------------------------------------

class _BlockInfo:
    """What the debugger needs to know about one code block, computed once."""

    def __init__(self, words: np.ndarray, lines: np.ndarray) -> None:
        n = len(words)
        self.rows = isa.decode_array(words) if n else np.zeros((0, 6), dtype=np.int64)
        self.lines = lines
        # A "line key" per pc: (file, line) of the source, else of the assembly, else the pc.
        keys: list[tuple[int, int]] = []
        for p in range(n):
            fi, ln, _col, afi, aln = (int(v) for v in lines[p])
            if fi >= 0 and ln > 0:
                keys.append((fi, ln))
            elif afi >= 0 and aln > 0:
                keys.append((afi, aln))
            else:
                keys.append((-1, -1 - p))
        self.keys = keys
        ids: dict[tuple[int, int], int] = {}
        kid = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
        op = self.rows[:, 0]
        rd = self.rows[:, 1]
        # Calls are jumps that link (rd != r0); any jalr that does not link may be a return.
        self.calls = ((op == _JAL) | (op == _JALR)) & (rd != 0)
        self.rets = (op == _JALR) & (rd == 0)
        # Entries: every pc control can reach from an instruction of another line.
        entries = np.zeros(n, dtype=bool)
        if n:
            entries[0] = True
            entries[1:] = kid[1:] != kid[:-1]
            for p in np.nonzero(np.isin(op, _BRANCHES))[0]:
                t = int(p) + int(self.rows[p, 5])
                if 0 <= t < n and kid[t] != kid[p]:
                    entries[t] = True
            after_call = np.nonzero(self.calls)[0] + 1
            entries[after_call[after_call < n]] = True
        self.entries = entries

    def __len__(self) -> int:
        return len(self.keys)


# ---- records returned to callers ----------------------------------------------------------------

@dataclass
class Breakpoint:
    """A breakpoint: stop before a flagged instruction runs on a matching node."""

    number: int
    location: str
    slots: frozenset[int]                 # slots of the emulator's code table
    nodes: frozenset[int] | None          # None: any node
    condition: str | None = None
    cond_tree: tuple | None = None
    cond: Callable[[int], int] | None = None
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
        return f"{self.what}: {_fmt_value(self.old)} -> {_fmt_value(self.new)}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, bytes):
        return " ".join(f"{b:02x}" for b in v[:32]) + (" ..." if len(v) > 32 else "")
    if isinstance(v, int):
        return f"{v} (0x{v & 0xFFFFFFFFFFFFFFFF:x})"
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
    watch: WatchHit | None = None
    traps: list[Trap] = field(default_factory=list)
    deadlock: Deadlock | None = None
    detail: str = ""
    source_line: str | None = None

    def describe(self) -> str:
        """The lines a debugger prints for this stop."""
        lines: list[str] = []
        if self.breakpoint is not None:
            b = self.breakpoint
            lines.append(f"Breakpoint {b.number}, node {self.where.xy if self.where else '?'}"
                         f" [id {b.node}], T={self.position:,}")
        elif self.watch is not None:
            w = self.watch
            lines.append(f"Watchpoint {w.number}, node {w.where.xy} [id {w.node}], "
                         f"T={self.position:,}: {w.describe()}")
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
               "(D = N E S W)\n"
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


@dataclass
class _Checkpoint:
    counts: np.ndarray
    position: int
    arrays: dict[str, np.ndarray]
    sram_len: np.ndarray
    sram_off: np.ndarray
    sram_data: np.ndarray
    fifo_idx: tuple[np.ndarray, np.ndarray]
    fifo_data: np.ndarray
    nbytes: int


class _StepControl:
    """Extra stop flags and the rule that ends a source-level step, per stepping node.

    Call depth is tracked with a stack of return sites: a linking jump (jal/jalr with rd != r0)
    pushes pc + 1, and a non-linking jalr whose target is the top of the stack pops it. A
    non-linking jalr to just after a call instruction, with the stack empty, returns from the
    function the step started in.
    """

    def __init__(self, dbg: Debugger, nodes: Iterable[int], mode: str) -> None:
        self.dbg = dbg
        self.mode = mode            # step, next, until, finish
        self.nodes = set(nodes)
        self.start_key = {n: dbg._key(n) for n in self.nodes}
        self.stack: dict[int, list[int]] = {n: [] for n in self.nodes}
        self.up = dict.fromkeys(self.nodes, 0)
        self.done: set[int] = set()
        flags = np.zeros(dbg.emu.code.total, dtype=np.int8)
        slots: set[int] = set()
        for n in self.nodes:
            b, info = dbg._node_block(n)
            if info is None:
                continue
            mask = info.calls | info.rets
            if mode != "finish":
                mask = mask | info.entries
            pcs = np.nonzero(mask)[0] + int(dbg.emu.code.node_base[n])
            flags[pcs] = 1
            slots.update(int(p) for p in pcs)
        self.flags = flags
        self.slots = slots

    def depth(self, node: int) -> int:
        return len(self.stack[node]) - self.up[node]

    def _returns(self, node: int, pc: int, info: _BlockInfo) -> str:
        """'pop', 'out' (leaves the starting function) or '' for the jalr at pc."""
        if not info.rets[pc]:
            return ""
        _op, _rd, rs1, _rs2, _rs3, imm = (int(v) for v in info.rows[pc])
        target = int(self.dbg.emu.state.x[node, rs1]) + imm
        stack = self.stack[node]
        if stack and target == stack[-1]:
            return "pop"
        if not stack and 1 <= target <= len(info) and info.calls[target - 1]:
            return "out"
        return ""

    def effect(self, node: int, pc: int) -> None:
        """Account for the instruction at pc about to run (call depth)."""
        info = self.dbg._block(int(self.dbg.obj.node_block[node]))
        if info.calls[pc]:
            self.stack[node].append(pc + 1)
            return
        kind = self._returns(node, pc, info)
        if kind == "pop":
            self.stack[node].pop()
        elif kind == "out":
            self.up[node] += 1

    def at(self, node: int, pc: int, first: bool = False) -> Stop | None:
        """Node stopped before pc: end the step here, or account and go on. `first`: the
        instruction the step starts on (it never ends a line step)."""
        dbg = self.dbg
        info = dbg._block(int(dbg.obj.node_block[node]))
        key = info.keys[pc]
        depth = self.depth(node)
        start = self.start_key[node]
        end = False
        if first:
            pass
        elif self.mode == "step":
            end = key != start
        elif self.mode == "next":
            end = (key != start and depth <= 0) or depth < 0
        elif self.mode == "until":
            end = (key[0] == start[0] and key[1] > start[1] and depth <= 0) or depth < 0
        if end:
            self.done.add(node)
            if len(self.done) >= len(self.nodes):
                return dbg._make_stop("step", node if len(self.nodes) == 1 else dbg.focus)
            return None
        if self.mode == "finish" and depth == 0 and self._returns(node, pc, info) == "out":
            stop = dbg._exec_one(node)
            if stop is not None:
                return stop
            self.done.add(node)
            return dbg._make_stop("finish", node, detail=f"Run till exit: node "
                                  f"{dbg._xy_text(node)} returned")
        self.effect(node, pc)
        return None


# ---- the debugger -------------------------------------------------------------------------------

class Debugger:
    """Drive an `Emulator` for debugging: breakpoints, watchpoints, steps, reverse steps.

    `obj` is an ObjectFile or a path (.d1k compiled, .d1s assembled, .d1o loaded) for `machine`
    (default: the file's own, else d1). `inputs` maps tensor names to arrays.
    """

    def __init__(self, obj: ObjectFile | str | Path, inputs: dict[str, Any] | None = None,
                 seed: int = 0, machine: Machine | None = None, *,
                 checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
                 checkpoint_interval: int | None = None) -> None:
        if not isinstance(obj, ObjectFile):
            obj = load_program(obj, machine)
        self.obj = obj
        self.machine = obj.machine
        # Each node gets its own copy of its code block when that stays small, so a stop flag
        # set for one node never stops the others that share the block.
        self.private_code = _code_slots(obj) <= PRIVATE_CODE_SLOTS
        self.emu = Emulator(_private_object(obj) if self.private_code else obj, seed=seed)
        for name, value in (inputs or {}).items():
            self.emu.set_input(name, value)
        self.n = self.emu.n
        self._blocks: dict[int, _BlockInfo] = {}
        self._items: dict[int, Breakpoint | Watchpoint] = {}
        self._next_number = 1
        self._user_flags = np.zeros(self.emu.code.total, dtype=np.int8)
        self._bp_at: dict[int, list[Breakpoint]] = {}
        self._watch_at: dict[int, list[Watchpoint]] = {}
        self._held: set[int] = set()
        self._history: list[tuple[np.ndarray, int]] = []
        # While one node steps, only its own breakpoints stop it (None: every node's).
        self._bp_nodes: set[int] | None = None
        self._trapped_seen: set[int] = set()
        live = np.nonzero(self.emu.code.node_len > 0)[0]
        self.focus = int(live[0]) if live.size else 0
        self.checkpoint_bytes = int(checkpoint_bytes)
        self.interval = int(checkpoint_interval or DEFAULT_INTERVAL)
        self._adaptive = checkpoint_interval is None
        self._checkpoints: list[_Checkpoint] = []
        self._t = self.position       # kept up to date by _call and _restore
        self.checkpoint_seconds = 0.0
        self.replay_seconds = 0.0
        self.thinned = 0
        self._base = self._take_checkpoint()
        self.last_stop: Stop | None = None

    # ---- basic facts ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The timeline number T: instructions executed by all nodes so far."""
        return int(self.emu.state.count.sum())

    def counts(self) -> np.ndarray:
        """Instructions executed by each node (the debugger's position vector)."""
        return self.emu.state.count.sum(axis=1)

    def _count(self, node: int) -> int:
        return int(self.emu.state.count[node].sum())

    def node(self, spec: Any) -> int:
        """A live-node id from an id, an (x, y) pair, or text "X,Y" / "ID"."""
        if spec is None:
            return self.focus
        if isinstance(spec, str):
            text = spec.strip().strip("()")
            parts = [p for p in re.split(r"[,\s]+", text) if p]
            try:
                vals = [int(p, 0) for p in parts]
            except ValueError:
                raise D1Error(f"a node is X,Y or a live-node id, got {spec!r}") from None
            if len(vals) == 2:
                return self.emu.node_id((vals[0], vals[1]))
            if len(vals) == 1:
                return self.emu.node_id(vals[0])
            raise D1Error(f"a node is X,Y or a live-node id, got {spec!r}")
        if isinstance(spec, (tuple, list)):
            return self.emu.node_id((int(spec[0]), int(spec[1])))
        return self.emu.node_id(int(spec))

    def _xy_text(self, node: int) -> str:
        x, y = self.machine.xy[node]
        return f"({int(x)},{int(y)})"

    def set_focus(self, node: Any) -> Where:
        self.focus = self.node(node)
        self.emu.state.skip[self.focus] = self.emu.state.pc[self.focus]
        return self.emu.where(self.focus)

    def where(self, node: Any = None) -> Where:
        return self.emu.where(self.node(node))

    def _block(self, b: int) -> _BlockInfo:
        info = self._blocks.get(b)
        if info is None:
            blk = self.obj.blocks[b]
            info = self._blocks[b] = _BlockInfo(blk.words, blk.lines)
        return info

    def _node_block(self, node: int) -> tuple[int, _BlockInfo | None]:
        b = int(self.obj.node_block[node])
        return b, (self._block(b) if b >= 0 else None)

    def _key(self, node: int, pc: int | None = None) -> tuple[int, int]:
        b, info = self._node_block(node)
        pc = int(self.emu.state.pc[node]) if pc is None else pc
        if info is None or not 0 <= pc < len(info):
            return (-1, -(1 << 40) - pc)
        return info.keys[pc]

    def source_line(self, where: Where | None) -> str | None:
        """The source text of `where`'s line, as "  LINE | text", if the object has it."""
        if where is None or where.node < 0:
            return None
        b, info = self._node_block(where.node)
        if info is None or not 0 <= where.pc < len(info):
            return None
        fi, line = info.keys[where.pc]
        if fi < 0 or fi >= len(self.obj.files):
            return None
        text = self.obj.sources.get(self.obj.files[fi])
        if text is None:
            return None
        src = text.splitlines()
        if not 1 <= line <= len(src):
            return None
        return f"{line:>6} | {src[line - 1]}"

    # ---- running primitives ---------------------------------------------------------------------

    def _apply_flags(self, extra: np.ndarray | None = None) -> None:
        flags = self._user_flags if extra is None else (self._user_flags | extra)
        np.copyto(self.emu.stop_flags, flags)

    def _clean_skip(self) -> None:
        st = self.emu.state
        st.skip[st.skip != st.pc] = -1

    def _call(self, budget: int, only: int = -1, node_budget: np.ndarray | None = None,
              quantum: int | None = None, record: bool = True) -> tuple[int, int, int]:
        self._clean_skip()
        result = self.emu.run_until(budget, only=None if only < 0 else only,
                                    node_budget=node_budget, quantum=quantum)
        self._t += result[1]
        if record:
            self._maybe_checkpoint()
        return result

    def _chunk(self) -> int:
        left = self.interval - (self._t - self._base.position)
        return int(min(MAX_CHUNK, max(MIN_CHUNK, left)))

    def _trapped(self) -> set[int]:
        return {int(i) for i in np.nonzero(self.emu.state.state == K.TRAPPED)[0]}

    def _make_stop(self, reason: str, node: int | None = None, where: Where | None = None,
                   **kw: Any) -> Stop:
        self._normalize()
        if where is None and node is not None:
            where = self.emu.where(node)
        if node is not None and reason not in ("halted",):
            self.focus = node
            # Resuming steps over the focused node's current instruction, as gdb does.
            self.emu.state.skip[node] = self.emu.state.pc[node]
        stop = Stop(reason, self.position, node, where, source_line=self.source_line(where), **kw)
        self.last_stop = stop
        return stop

    def _trap_stop(self, new: Iterable[int]) -> Stop:
        new = sorted(new)
        self._trapped_seen |= set(new)
        traps = [t for t in self.emu.run(max_instructions=0).traps if t.node in new]
        return self._make_stop("trap", new[0], traps=traps)

    def _idle_stop(self) -> Stop | None:
        """Nothing ran: every node halted, or traps and waits. None if some node can still run
        (a budget ended the run)."""
        self._normalize()
        st = self.emu.state.state
        if (st == K.RUNNING).any():
            return None
        blocked = np.nonzero((st == K.BLOCKED_SEND) | (st == K.BLOCKED_RECV))[0]
        traps = self.emu.run(max_instructions=0).traps
        if blocked.size:
            dl = self.emu.wait_chains(blocked)
            reason = "deadlock" if dl.is_cycle else "stuck"
            node = int(dl.chains[0].waits[0].where.node) if dl.chains else None
            return self._make_stop(reason, node, deadlock=dl, traps=traps)
        if traps:
            halted = int((st == K.HALTED).sum())
            return self._make_stop("halted", None, traps=traps, detail=(
                f"Program finished at T={self.position:,}: {len(traps)} node"
                f"{'s' if len(traps) != 1 else ''} trapped, {halted} halted"))
        cycles = int(self.emu.state.clock.max()) if self.n else 0
        return self._make_stop("halted", None, detail=(
            f"Program finished at T={self.position:,}: all {self.n} nodes halted, "
            f"{cycles:,} cycles ({units.seconds(cycles / self.machine.clock_hz)} modelled)"))

    def _normalize(self) -> None:
        """Mark each running node whose next instruction must wait as blocked (and a blocked
        node that could go on as running), so the state does not depend on whether the loop
        had already tried that instruction."""
        emu = self.emu
        st = emu.state
        code = emu.code
        nodes = np.nonzero((st.state <= K.BLOCKED_RECV)
                           & (st.pc >= 0) & (st.pc < code.node_len))[0]
        outside = np.nonzero((st.state <= K.BLOCKED_RECV)
                             & ((st.pc < 0) | (st.pc >= code.node_len)))[0]
        st.state[outside] = K.RUNNING
        if not nodes.size:
            return
        rows = code.table[code.node_base[nodes] + st.pc[nodes]].astype(np.int64)
        op, rd, rs1, rs2, dr = (rows[:, c] for c in (C_OP, C_RD, C_RS1, C_RS2, C_RS3))
        depth = self.machine.fifo_depth
        out_link = emu.out_link
        x = st.x

        def full(link: np.ndarray, ok: np.ndarray) -> np.ndarray:
            safe = np.where(ok, link, 0)
            return ok & (st.pushed[safe] - st.popped[safe] >= depth)

        def empty(link: np.ndarray, ok: np.ndarray) -> np.ndarray:
            safe = np.where(ok, link, 0)
            return ok & (st.pushed[safe] == st.popped[safe])

        il = nodes * 4 + (dr & 3)
        has_in = out_link[il] >= 0
        kind = _NET_KIND[np.minimum(op, _NET_KIND.size - 1)]
        recv = kind == 1
        send = kind == 2
        relay = kind == 3
        # sends: a bad sendb traps before it could wait
        ol = out_link[nodes * 4 + (dr & 3)]
        nb = x[nodes, rs2]
        a = x[nodes, rs1]
        sendb_ok = (op != _OP["sendb"]) | ((nb >= 1) & (nb <= self.machine.max_message_bytes)
                                          & (a >= 0) & (a <= self.machine.sram_bytes - nb))
        send_wait = send & full(ol, (ol >= 0) & sendb_ok)
        recv_wait = recv & empty(il, has_in)
        rol = out_link[nodes * 4 + (rd & 3)]
        relay_ok = relay & has_in & (rol >= 0)
        relay_in = empty(il, relay_ok)
        relay_out = ~relay_in & full(rol, relay_ok)
        new = np.full(nodes.size, K.RUNNING, dtype=st.state.dtype)
        new[send_wait | relay_out] = K.BLOCKED_SEND
        new[recv_wait | relay_in] = K.BLOCKED_RECV
        st.state[nodes] = new

    # ---- checkpoints ----------------------------------------------------------------------------

    def _take_checkpoint(self) -> _Checkpoint:
        t0 = time.perf_counter()
        st = self.emu.state
        arrays = {name: getattr(st, name).copy() for name in state_module._STATE_ARRAYS
                  if name not in ("sram", "fifo8", "skip")}
        lens = np.minimum(st.hwm, self.machine.sram_bytes).astype(np.int64)
        offs = np.zeros(self.n, dtype=np.int64)
        if self.n > 1:
            offs[1:] = np.cumsum(lens)[:-1]
        data = np.empty(int(lens.sum()), dtype=np.uint8)
        for i in range(self.n):
            ln = int(lens[i])
            if ln:
                data[offs[i]:offs[i] + ln] = st.sram[i, :ln]
        fill = st.pushed - st.popped
        links = np.nonzero(fill > 0)[0]
        depth = self.machine.fifo_depth
        li: list[int] = []
        si_: list[int] = []
        for lk in links:
            for j in range(int(st.popped[lk]), int(st.pushed[lk])):
                li.append(int(lk))
                si_.append(j % depth)
        idx = (np.array(li, dtype=np.int64), np.array(si_, dtype=np.int64))
        fdata = st.fifo8[idx].copy()
        nbytes = sum(a.nbytes for a in arrays.values()) + data.nbytes + fdata.nbytes
        counts = st.count.sum(axis=1)
        ck = _Checkpoint(counts, int(counts.sum()), arrays, lens, offs, data, idx, fdata, nbytes)
        self._checkpoints.append(ck)
        self._checkpoints.sort(key=lambda c: c.position)
        dt = time.perf_counter() - t0
        self.checkpoint_seconds += dt
        if self._adaptive and self.emu.host_seconds > 0 and self.emu.host_instructions > 0:
            rate = self.emu.host_instructions / self.emu.host_seconds
            self.interval = max(self.interval, int(CHECKPOINT_OVERHEAD * dt * rate))
        self._thin()
        return ck

    def _thin(self) -> None:
        """Drop every other checkpoint (never the first) while over the memory budget."""
        while (len(self._checkpoints) > 2
               and sum(c.nbytes for c in self._checkpoints) > self.checkpoint_bytes):
            keep = [self._checkpoints[0]] + self._checkpoints[2::2]
            if self._checkpoints[-1] is not keep[-1]:
                keep.append(self._checkpoints[-1])
            self._checkpoints = keep
            self.interval *= 2
            self.thinned += 1

    def _maybe_checkpoint(self) -> None:
        if self._t - self._base.position >= self.interval:
            self._base = self._take_checkpoint()

    def _best_checkpoint(self, target: np.ndarray) -> _Checkpoint:
        best = self._checkpoints[0]
        for ck in self._checkpoints:
            if ck.position > best.position and np.all(ck.counts <= target):
                best = ck
        return best

    def _restore(self, ck: _Checkpoint) -> None:
        st = self.emu.state
        cur = st.hwm.copy()
        for name, arr in ck.arrays.items():
            np.copyto(getattr(st, name), arr)
        for i in range(self.n):
            ln = int(ck.sram_len[i])
            if ln:
                off = int(ck.sram_off[i])
                st.sram[i, :ln] = ck.sram_data[off:off + ln]
            hi = min(int(cur[i]), self.machine.sram_bytes)
            if hi > ln:
                st.sram[i, ln:hi] = 0
        if ck.fifo_data.size:
            st.fifo8[ck.fifo_idx] = ck.fifo_data
        st.skip[:] = -1
        self._t = ck.position

    def checkpoint_info(self) -> dict[str, Any]:
        return {"checkpoints": len(self._checkpoints),
                "bytes": sum(c.nbytes for c in self._checkpoints),
                "budget_bytes": self.checkpoint_bytes,
                "interval_instructions": self.interval,
                "positions": [c.position for c in self._checkpoints],
                "seconds_taking": self.checkpoint_seconds,
                "seconds_replaying": self.replay_seconds,
                "thinned": self.thinned}

    def goto(self, target: Any) -> Stop:
        """Go to the latest state whose per-node counts are all <= `target` (a count vector, or
        a timeline number T along the current run: see `_goto`)."""
        w = np.asarray(target, dtype=np.int64)
        if w.shape != (self.n,):
            raise D1Error(f"a position is a vector of {self.n} per-node counts")
        self._goto(w)
        return self._make_stop("step", self.focus)

    def _goto(self, target: np.ndarray) -> None:
        """Restore the best checkpoint and run every node up to its count in `target`."""
        t0 = time.perf_counter()
        st = self.emu.state
        trapped = {i: self._count(i) for i in self._trapped()}
        ck = self._best_checkpoint(target)
        self._restore(ck)
        self._base = ck
        remaining = np.maximum(target - ck.counts, 0)
        np.copyto(self.emu.stop_flags, 0)
        if remaining.any():
            self._call(-1, node_budget=remaining, record=False)
        for node, c in trapped.items():
            # A node that trapped at this count traps again at once: show it trapped.
            if int(target[node]) == c and st.state[node] != K.TRAPPED:
                self._call(1, only=node, quantum=1, record=False)
        self._trapped_seen = self._trapped()
        self._normalize()
        st.skip[:] = -1
        st.skip[self.focus] = st.pc[self.focus]
        counts = self.counts()
        for h, node in self._history:
            # A node still at a breakpoint it was stopped at before steps over it, as it
            # would have in the original run.
            if h[node] == counts[node] and np.all(h <= counts):
                st.skip[node] = st.pc[node]
        self.replay_seconds += time.perf_counter() - t0

    # ---- stop handling --------------------------------------------------------------------------

    def _eval_condition(self, bp: Breakpoint, node: int) -> tuple[bool, str]:
        try:
            return bool(bp.cond(node)), ""
        except D1Error as e:
            return True, f"error in condition of breakpoint {bp.number}: {e}"

    def _breakpoint_hit(self, node: int) -> Stop | None:
        if self._bp_nodes is not None and node not in self._bp_nodes:
            return None
        pc = int(self.emu.state.pc[node])
        g = int(self.emu.code.node_base[node]) + pc
        for bp in self._bp_at.get(g, ()):
            if bp.nodes is not None and node not in bp.nodes:
                continue
            detail = ""
            if bp.cond is not None:
                ok, detail = self._eval_condition(bp, node)
                if not ok:
                    continue
            bp.hits += 1
            where = self.emu.where(node)
            hit = BreakpointHit(bp.number, node, where, self.position, bp.hits)
            if bp.temporary:
                self.delete(bp.number)
            self._remember_hit(node)
            return self._make_stop("breakpoint", node, where, breakpoint=hit, detail=detail)
        return None

    def _remember_hit(self, node: int) -> None:
        """Keep the exact position of a breakpoint stop, so reverse-continue returns to it."""
        self._history.append((self.counts().copy(), node))
        if len(self._history) > MAX_HISTORY:
            del self._history[:len(self._history) - MAX_HISTORY]

    def _on_flag(self, node: int, ctl: _StepControl | None = None) -> Stop | None:
        """Node stopped before a flagged instruction: a hit, the end of a step, or go on."""
        stop = self._breakpoint_hit(node)
        if stop is not None:
            return stop
        pc = int(self.emu.state.pc[node])
        g = int(self.emu.code.node_base[node]) + pc
        if ctl is not None and node in ctl.nodes and node not in ctl.done and g in ctl.slots:
            stop = ctl.at(node, pc)
            if stop is not None:
                return stop
            if node in ctl.done:
                return None
        ws = [w for w in self._watch_at.get(g, ()) if w.node == node]
        if ws:
            return self._watch_exec(node, ws)
        return None

    def _pre_resume(self, ctl: _StepControl | None = None) -> Stop | None:
        """Nodes about to pass their flagged instruction (skip == pc) still owe its watch
        check and step accounting."""
        st = self.emu.state
        passing = [int(i) for i in np.nonzero(st.skip == st.pc)[0] if int(i) not in self._held]
        for node in passing:
            g = int(self.emu.code.node_base[node]) + int(st.pc[node])
            if ctl is not None and node in ctl.nodes and g in ctl.slots and node not in ctl.done:
                ctl.effect(node, int(st.pc[node]))
            ws = [w for w in self._watch_at.get(g, ()) if w.node == node]
            if ws:
                stop = self._watch_exec(node, ws)
                if stop is not None:
                    return stop
        return None

    def _exec_one(self, node: int) -> Stop | None:
        """Execute node's current instruction, letting the others run while it waits."""
        st = self.emu.state
        c0 = self._count(node)
        self._held.add(node)
        try:
            while True:
                self._apply_flags()
                st.skip[node] = st.pc[node]
                self._call(1, only=node, quantum=1)
                if self._count(node) > c0:
                    return None
                if st.state[node] == K.TRAPPED:
                    return self._trap_stop([node])
                if st.state[node] == K.HALTED:
                    return None
                stop = self._continue_all(one_chunk=True, waiting=node)
                if stop is not None:
                    return stop
        finally:
            self._held.discard(node)

    def _watch_value(self, w: Watchpoint) -> Any:
        st = self.emu.state
        if w.what == "mem":
            return st.sram[w.node, w.addr:w.addr + w.length].tobytes()
        if w.what == "reg":
            return int(st.x[w.node, w.reg])
        if w.what == "link":
            return int(st.link_msgs[w.node, w.direction])
        t = int(self.machine.neighbors[w.node, w.direction])
        return st.fifo_fill(t * 4 + OPPOSITE[w.direction])

    def _may_write(self, node: int, w: Watchpoint) -> bool:
        """Could node's current instruction write inside w's range? (False only when sure.)"""
        b, info = self._node_block(node)
        pc = int(self.emu.state.pc[node])
        op, _rd, rs1, rs2, rs3, imm = (int(v) for v in info.rows[pc])
        x = self.emu.state.x[node]
        lo = hi = 0
        if op in _SCALAR_STORES:
            lo = int(x[rs1]) + imm
            hi = lo + _SCALAR_STORES[op]
        elif op in _VECTOR_STORES:
            lo = int(x[rs1]) + imm
            hi = lo + _VECTOR_STORES[op]
        elif op in _STRIDED_STORES:
            a, s, e = int(x[rs1]) + imm, int(x[rs3]), _STRIDED_STORES[op]
            lo, hi = min(a, a + 15 * s), max(a, a + 15 * s) + e
        elif op in _ACC_STORES:
            a, s = int(x[rs1]), imm & 0xFFFF
            lo, hi = a, a + 7 * s + _ACC_STORES[op]
        elif op in _MSG_STORES:
            lo = int(x[rs1])
            hi = lo + int(x[rs2])
        else:
            return False
        return lo < w.addr + w.length and w.addr < hi

    def _watch_exec(self, node: int, ws: list[Watchpoint]) -> Stop | None:
        cand = [w for w in ws if w.enabled and (w.what != "mem" or self._may_write(node, w))]
        if not cand:
            return None
        before = {w.number: self._watch_value(w) for w in cand}
        where = self.emu.where(node)
        stop = self._exec_one(node)
        if stop is not None:
            return stop
        for w in cand:
            old, new = before[w.number], self._watch_value(w)
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
                t = int(self.machine.neighbors[node, w.direction])
                msgs = self.emu.fifo(t, OPPOSITE[w.direction])
                payload = msgs[-1][2] if msgs else b""
                old, new = f"{old} messages", f"{new} messages, last {len(payload)} B: " + \
                    _fmt_value(payload)
            elif w.what == "fill":
                old, new = f"{old} waiting", f"{new} waiting (> {w.above})"
            hit = WatchHit(w.number, node, w.text, old, new, where, self.position)
            return self._make_stop("watchpoint", node, watch=hit)
        return None

    # ---- the two run loops ----------------------------------------------------------------------

    def _continue_all(self, target: np.ndarray | None = None, ctl: _StepControl | None = None,
                      one_chunk: bool = False, waiting: int | None = None) -> Stop | None:
        """Run every node (up to `target` counts, if given) until a stop.

        one_chunk/waiting: run the others for one chunk while node `waiting` is held; None
        then means "try the held node again".
        """
        st = self.emu.state
        stop = self._pre_resume(ctl)
        if stop is not None:
            return stop
        while True:
            self._apply_flags(ctl.flags if ctl is not None else None)
            hold = set(self._held) | (ctl.done if ctl is not None else set())
            nb = None
            if target is not None or hold:
                base = (np.maximum(target - self.counts(), 0) if target is not None
                        else np.full(self.n, _BIG, dtype=np.int64))
                for h in hold:
                    base[h] = 0
                nb = base
            chunk = self._chunk()
            reason, _k, node = self._call(chunk, node_budget=nb)
            if reason == K.R_STOP:
                stop = self._on_flag(node, ctl)
                if stop is not None:
                    return stop
                if ctl is not None and ctl.nodes and ctl.done >= ctl.nodes:
                    return self._make_stop("step", self.focus)
                continue
            new = self._trapped() - self._trapped_seen
            if new and waiting not in new:
                return self._trap_stop(new)
            if reason == K.R_BUDGET:
                if one_chunk:
                    return None
                continue
            # Idle: no node can run within its budget.
            if waiting is not None:
                self._normalize()
                if st.state[waiting] == K.RUNNING:
                    return None
            idle = self._idle_stop()
            if idle is not None:
                return idle
            return self._make_stop("step", self.focus)

    def _run_focus(self, node: int, ctl: _StepControl | None = None,
                   limit: int | None = None) -> Stop:
        """Run `node` alone (others run only while it waits) until ctl ends the step, `limit`
        instructions ran, or it halts or traps."""
        st = self.emu.state
        if st.state[node] == K.HALTED:
            raise D1Error(f"node {self._xy_text(node)} has halted")
        if st.state[node] == K.TRAPPED:
            raise D1Error(f"node {self._xy_text(node)} has trapped")
        target = self._count(node) + limit if limit is not None else None
        self._bp_nodes = {node}
        try:
            return self._run_focus_loop(node, ctl, target)
        finally:
            self._bp_nodes = None

    def _run_focus_loop(self, node: int, ctl: _StepControl | None, target: int | None) -> Stop:
        st = self.emu.state
        code = self.emu.code
        st.skip[node] = st.pc[node]
        g = int(code.node_base[node]) + int(st.pc[node])
        if ctl is not None and g in ctl.slots:
            stop = ctl.at(node, int(st.pc[node]), first=True)
            if stop is not None:
                return stop
        stop = self._pre_resume()
        if stop is not None:
            return stop
        while True:
            if target is not None and self._count(node) >= target:
                return self._make_stop("step", node)
            self._apply_flags(ctl.flags if ctl is not None else None)
            budget = MAX_CHUNK if target is None else min(MAX_CHUNK, target - self._count(node))
            reason, _k, stopped = self._call(budget, only=node, quantum=budget)
            if reason == K.R_STOP:
                stop = self._on_flag(stopped, ctl)
                if stop is not None:
                    return stop
                if ctl is not None and node in ctl.done:
                    return self._make_stop("step", node)
                continue
            s = st.state[node]
            if s == K.TRAPPED:
                return self._trap_stop([node])
            if s == K.HALTED:
                return self._make_stop("node-halted", node,
                                       detail=f"node {self._xy_text(node)} halted")
            if s in (K.BLOCKED_SEND, K.BLOCKED_RECV):
                self._held.add(node)
                try:
                    stop = self._continue_all(one_chunk=True, waiting=node)
                finally:
                    self._held.discard(node)
                if stop is not None:
                    return stop

    # ---- execution commands ---------------------------------------------------------------------

    def restart(self) -> None:
        """Back to T=0 (inputs in place); breakpoints stay."""
        self._goto(np.zeros(self.n, dtype=np.int64))
        self.emu.state.skip[:] = -1
        self._trapped_seen = set()

    def run(self) -> Stop:
        """Start from the beginning and continue."""
        self.restart()
        return self.cont()

    def cont(self) -> Stop:
        """Run every node until a breakpoint, watchpoint, trap, deadlock or the end."""
        return self._interruptible(lambda: self._continue_all())

    def _interruptible(self, fn: Callable[[], Stop | None]) -> Stop:
        try:
            stop = fn()
        except KeyboardInterrupt:
            return self._make_stop("interrupted", self.focus,
                                   detail=f"Interrupted at T={self.position:,}")
        if stop is None:
            stop = self._make_stop("step", self.focus)
        return stop

    def stepi(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """Execute n instructions on the focused node (or on every node)."""
        n = _positive(n)
        if all_nodes:
            before = self.counts().copy()
            target = before + n
            stop = self._interruptible(lambda: self._continue_all(target=target))
            if stop.reason == "step":
                ran = self.counts() - before
                stop.detail = (f"{int((ran == n).sum())} nodes ran {n} instruction"
                               f"{'s' if n != 1 else ''}, {int(((ran > 0) & (ran < n)).sum())} "
                               f"fewer, {int((ran == 0).sum())} none")
            return stop
        return self._interruptible(lambda: self._run_focus(self.focus, limit=n))

    def step(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """Run until the focused node (or every node) reaches another source line, n times."""
        return self._line_steps("step", n, all_nodes)

    def next(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """As step, but calls (jal with rd=ra) run to their return."""
        return self._line_steps("next", n, all_nodes)

    def _line_steps(self, mode: str, n: int, all_nodes: bool) -> Stop:
        n = _positive(n)
        stop: Stop | None = None
        for _ in range(n):
            if all_nodes:
                st = self.emu.state.state
                nodes = [int(i) for i in np.nonzero(st <= K.BLOCKED_RECV)[0]]
                if not nodes:
                    raise D1Error("no node can run: every node has halted or trapped")
                ctl = _StepControl(self, nodes, mode)
                stop = self._interruptible(lambda ctl=ctl: self._continue_all(ctl=ctl))
                if stop.reason == "step":
                    stop.detail = (f"{len(ctl.done)} of {len(nodes)} nodes reached another "
                                   "source line; the others wait, halted or trapped")
            else:
                ctl = _StepControl(self, [self.focus], mode)
                stop = self._interruptible(
                    lambda ctl=ctl: self._run_focus(self.focus, ctl=ctl))
            if stop.reason != "step":
                break
        assert stop is not None
        return stop

    def finish(self) -> Stop:
        """Run until the focused node returns from the current call (or halts)."""
        ctl = _StepControl(self, [self.focus], "finish")
        return self._interruptible(lambda: self._run_focus(self.focus, ctl=ctl))

    def until(self, location: str | None = None, node: Any = None) -> Stop:
        """Without a location: next, but never stop at an earlier line (leave a loop). With
        one: continue to it (a temporary breakpoint; `node` as for break_at)."""
        if location is None:
            ctl = _StepControl(self, [self.focus], "until")
            return self._interruptible(lambda: self._run_focus(self.focus, ctl=ctl))
        bp = self.break_at(location, node=node, temporary=True)
        try:
            return self.cont()
        finally:
            if bp.number in self._items:
                self.delete(bp.number)

    # ---- reverse execution ----------------------------------------------------------------------

    def reverse_stepi(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """Undo the focused node's (or every node's) last n instructions; nodes that depended
        on them go back as far as needed."""
        n = _positive(n)
        target = self.counts().copy()
        if all_nodes:
            target = np.maximum(target - n, 0)
        else:
            if target[self.focus] == 0:
                return self._make_stop("start", self.focus,
                                       detail="Already at the node's first instruction")
            target[self.focus] = max(0, target[self.focus] - n)
        return self._interruptible(lambda: self._goto_stop(target))

    def _goto_stop(self, target: np.ndarray) -> Stop:
        self._goto(target)
        return self._make_stop("step", self.focus)

    def reverse_step(self, n: int = 1) -> Stop:
        """Back to the start of the previous source line the focused node executed."""
        n = _positive(n)
        stop: Stop | None = None
        for _ in range(n):
            stop = self._interruptible(lambda: self._reverse_line(self.focus))
            if stop.reason != "step":
                break
        assert stop is not None
        return stop

    def _reverse_line(self, f: int) -> Stop:
        now = self.counts().copy()
        k = int(now[f])
        if k == 0:
            return self._make_stop("start", f, detail="Already at the node's first instruction")
        cur = self._key(f)
        window = 64
        while True:
            lo = max(0, k - window)
            entries = self._trace_entries(f, lo, now)
            idx = next((i for i in range(len(entries) - 1, -1, -1)
                        if entries[i][1] != cur), None)
            if idx is not None:
                key = entries[idx][1]
                while idx > 0 and entries[idx - 1][1] == key:
                    idx -= 1
                if idx > 0 or lo == 0:
                    target = now.copy()
                    target[f] = entries[idx][0]
                    self._goto(target)
                    return self._make_stop("step", f)
            elif lo == 0:
                target = now.copy()
                target[f] = 0
                self._goto(target)
                return self._make_stop("start", f, detail="Reached the node's first instruction")
            window *= 8

    def _trace_entries(self, f: int, lo: int, now: np.ndarray) -> list[tuple[int, tuple]]:
        """(count, line key) each time node f entered a line between count lo and now[f]."""
        start = now.copy()
        start[f] = lo
        self._goto(start)
        entries = [(self._count(f), self._key(f))]
        b, info = self._node_block(f)
        flags = np.zeros(self.emu.code.total, dtype=np.int8)
        if info is not None:
            flags[np.nonzero(info.entries)[0] + int(self.emu.code.node_base[f])] = 1
        np.copyto(self.emu.stop_flags, flags)
        st = self.emu.state
        while True:
            remaining = np.maximum(now - self.counts(), 0)
            if not remaining.any():
                break
            reason, _k, node = self._call(-1, node_budget=remaining, record=False)
            if reason != K.R_STOP:
                break
            if node == f and self._count(f) < now[f]:
                entries.append((self._count(f), self._key(f)))
        st.skip[:] = -1
        return entries

    def reverse_continue(self) -> Stop:
        """Back to the most recent earlier breakpoint hit (see `_reverse_continue`)."""
        if not any(isinstance(i, Breakpoint) and i.enabled for i in self._items.values()):
            raise D1Error("no enabled breakpoints: nothing to go back to")
        return self._interruptible(self._reverse_continue)

    def _reverse_continue(self) -> Stop:
        """Back to the most recent earlier breakpoint hit.

        Hits are found by replaying from checkpoints with the breakpoints' flags set. A hit at
        which the debugger stopped before comes back exactly as it was then; any other hit
        comes back as the replay reached it.
        """
        now = self.counts().copy()
        t_now = int(now.sum())
        def seen(node: int, k: int) -> np.ndarray | None:
            for h, hn in reversed(self._history):
                if hn == node and h[node] == k and int(h.sum()) < t_now and np.all(h <= now):
                    return h
            return None

        enabled = set()
        for item in self._items.values():
            if isinstance(item, Breakpoint) and item.enabled:
                enabled |= item.slots
        # Hits the debugger stopped at whose node has not moved since are no replay event.
        cands = [(h, hn) for h, hn in self._history
                 if int(h.sum()) < t_now and np.all(h <= now)]
        upper = now
        ck = self._best_checkpoint(now)
        while True:
            for counts, _bp, node in self._replay_hits(ck, upper, now):
                h = seen(node, int(counts[node]))
                cands.append((h if h is not None else counts, node))
            if (cands and max(int(c.sum()) for c, _ in cands) >= ck.position) \
                    or ck.position == 0:
                break
            upper = ck.counts
            earlier = [c for c in self._checkpoints
                       if c.position < ck.position and np.all(c.counts <= upper)]
            ck = max(earlier, key=lambda c: c.position) if earlier else self._checkpoints[0]
        while cands:
            counts, node = max(cands, key=lambda c: int(c[0].sum()))
            cands = [c for c in cands if c[0] is not counts]
            self._goto(counts)
            g = int(self.emu.code.node_base[node]) + int(self.emu.state.pc[node])
            bps = [b for b in self._bp_at.get(g, ())
                   if b.nodes is None or node in b.nodes]
            if g not in enabled or not bps:
                continue            # a remembered hit of a breakpoint deleted since
            bp = bps[0]
            bp.hits += 1
            hit = BreakpointHit(bp.number, node, self.emu.where(node), self.position, bp.hits)
            return self._make_stop("breakpoint", node, breakpoint=hit)
        self._goto(np.zeros(self.n, dtype=np.int64))
        return self._make_stop("start", self.focus,
                               detail="No earlier breakpoint hit: at the beginning, T=0")

    def _replay_hits(self, ck: _Checkpoint, upper: np.ndarray, now: np.ndarray
                     ) -> list[tuple[np.ndarray, Breakpoint, int]]:
        """Replay from ck to `upper`, recording every breakpoint hit before `now`."""
        t0 = time.perf_counter()
        self._restore(ck)
        self._base = ck
        flags = np.zeros(self.emu.code.total, dtype=np.int8)
        for item in self._items.values():
            if isinstance(item, Breakpoint) and item.enabled:
                flags[list(item.slots)] = 1
        hits = []
        st = self.emu.state
        while True:
            np.copyto(self.emu.stop_flags, flags)
            remaining = np.maximum(upper - self.counts(), 0)
            if not remaining.any():
                break
            reason, _k, node = self._call(-1, node_budget=remaining, record=False)
            if reason != K.R_STOP:
                break
            counts = self.counts()
            if np.array_equal(counts, now):
                continue
            g = int(self.emu.code.node_base[node]) + int(st.pc[node])
            for bp in self._bp_at.get(g, ()):
                if bp.nodes is not None and node not in bp.nodes:
                    continue
                if bp.cond is not None and not self._eval_condition(bp, node)[0]:
                    continue
                hits.append((counts.copy(), bp, node))
                break
        self.replay_seconds += time.perf_counter() - t0
        return hits

    # ---- breakpoints and watchpoints ------------------------------------------------------------

    def _rebuild_flags(self) -> None:
        flags = np.zeros(self.emu.code.total, dtype=np.int8)
        bp_at: dict[int, list[Breakpoint]] = {}
        watch_at: dict[int, list[Watchpoint]] = {}
        for item in self._items.values():
            if not item.enabled:
                continue
            for g in item.slots:
                flags[g] = 1
                if isinstance(item, Breakpoint):
                    bp_at.setdefault(g, []).append(item)
                else:
                    watch_at.setdefault(g, []).append(item)
        self._user_flags = flags
        self._bp_at = bp_at
        self._watch_at = watch_at

    def _add(self, item: Breakpoint | Watchpoint) -> None:
        self._items[item.number] = item
        self._next_number = item.number + 1
        self._rebuild_flags()

    def break_at(self, location: str, node: Any = None, condition: str | None = None,
                 temporary: bool = False) -> Breakpoint:
        """A breakpoint at a pc (`*12`, `pc 12`), a code label, or a source line
        (`LINE`, `LINE:COL`, `FILE:LINE[:COL]`). node: None (focused node for a pc or label,
        all nodes for a line), "all", or a node."""
        tree = parse_expr(condition) if condition else None
        cond = self._compile(tree) if tree is not None else None
        slots, nodes, text = self._resolve(location, node)
        bp = Breakpoint(self._next_number, location.strip(), frozenset(slots), nodes,
                        condition, tree, cond, temporary=temporary, where_text=text)
        self._add(bp)
        return bp

    def _resolve(self, location: str, node: Any) -> tuple[set[int], frozenset[int] | None, str]:
        loc = location.strip()
        if not loc:
            raise D1Error("a location is needed: *PC, pc PC, LABEL, LINE or FILE:LINE")
        code = self.emu.code
        all_nodes = isinstance(node, str) and node.strip().lower() == "all"
        chosen = None if node is None or all_nodes else self.node(node)
        m_pc = re.fullmatch(r"(?:\*|pc\s+)(.+)", loc)
        if m_pc:
            pc = self._evaluate(parse_expr(m_pc.group(1)), self.focus)
            one = self.focus if chosen is None else chosen
            nodes = list(range(self.n)) if all_nodes else [one]
            nodes = [n for n in nodes if 0 <= pc < int(code.node_len[n])]
            if not nodes:
                who = "every node" if all_nodes else f"node {self._xy_text(one)}"
                raise D1Error(f"pc {pc} is outside the code of {who}")
            slots = {int(code.node_base[n]) + pc for n in nodes}
            return slots, (None if all_nodes else frozenset(nodes)), \
                ("all nodes" if all_nodes else self._xy_text(nodes[0]))
        m_line = re.fullmatch(r"(?:(.+):)?(\d+)(?::(\d+))?", loc)
        if m_line:
            return self._resolve_line(m_line.group(1), int(m_line.group(2)),
                                      int(m_line.group(3)) if m_line.group(3) else None,
                                      chosen, all_nodes)
        if not re.fullmatch(r"[A-Za-z_.$][\w.$]*", loc):
            raise D1Error(f"cannot read location {loc!r}: use *PC, pc PC, LABEL, LINE or "
                          "FILE:LINE")
        syms = [s for s in self.obj.symbols if s.kind == "code" and s.name == loc]
        if not syms:
            raise D1Error(f"no code label {loc!r} (locations: *PC, pc PC, LABEL, LINE, "
                          "FILE:LINE)")
        by_block = {s.block: s.value for s in syms}
        if chosen is None and not all_nodes:
            fb = int(self.obj.node_block[self.focus])
            nodes = [self.focus] if fb in by_block else [
                n for n in range(self.n) if int(self.obj.node_block[n]) in by_block]
        elif all_nodes:
            nodes = [n for n in range(self.n) if int(self.obj.node_block[n]) in by_block]
        else:
            if int(self.obj.node_block[chosen]) not in by_block:
                raise D1Error(f"label {loc!r} is not in the code of node {self._xy_text(chosen)}")
            nodes = [chosen]
        slots = {int(code.node_base[n]) + by_block[int(self.obj.node_block[n])] for n in nodes}
        filt = None if all_nodes else frozenset(nodes)
        text = "all nodes" if all_nodes else (self._xy_text(nodes[0]) if len(nodes) == 1
                                               else f"{len(nodes)} nodes")
        return slots, filt, text

    def _resolve_line(self, fname: str | None, line: int, col: int | None, chosen: int | None,
                      all_nodes: bool) -> tuple[set[int], frozenset[int] | None, str]:
        files = self.obj.files
        if fname is None:
            fi = self._key(self.focus)[0]
            if fi < 0:
                fi = 0 if files else -1
            fidx = {fi}
        else:
            fidx = {i for i, f in enumerate(files)
                    if f == fname or Path(f).name == fname or f.endswith("/" + fname)}
            if not fidx:
                raise D1Error(f"no file {fname!r} in this object (files: "
                              f"{', '.join(files) or 'none'})")
        code = self.emu.code
        nodes = list(range(self.n)) if chosen is None else [chosen]
        slots: set[int] = set()
        used: set[int] = set()
        for n in nodes:
            b = int(self.obj.node_block[n])
            if b < 0:
                continue
            lines = self.obj.blocks[b].lines
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
                          + (f" on node {self._xy_text(chosen)}" if chosen is not None else ""))
        if chosen is not None:
            return slots, frozenset([chosen]), self._xy_text(chosen)
        return slots, None, "all nodes"

    def _watch_slots(self, node: int, mask_fn: Callable[[_BlockInfo], np.ndarray]) -> set[int]:
        b, info = self._node_block(node)
        if info is None:
            raise D1Error(f"node {self._xy_text(node)} has no code")
        base = int(self.emu.code.node_base[node])
        return {int(p) + base for p in np.nonzero(mask_fn(info))[0]}

    def watch_mem(self, addr: Any, length: int = 4, node: Any = None) -> Watchpoint:
        nid = self.node(node)
        a = addr if isinstance(addr, int) else self._evaluate(parse_expr(str(addr)), nid)
        length = int(length)
        if length < 1 or a < 0 or a + length > self.machine.sram_bytes:
            raise D1Error(f"SRAM range {a}+{length} is outside 0..{self.machine.sram_bytes - 1}")
        ops = np.array(sorted(MEMORY_WRITERS))
        slots = self._watch_slots(nid, lambda info: np.isin(info.rows[:, 0], ops))
        text = f"mem 0x{a:x}..0x{a + length - 1:x} ({length} B) on {self._xy_text(nid)}"
        w = Watchpoint(self._next_number, "mem", nid, text, frozenset(slots), addr=a,
                       length=length)
        self._add(w)
        return w

    def watch_reg(self, reg: Any, node: Any = None) -> Watchpoint:
        nid = self.node(node)
        r = _register_number(str(reg), self.machine.scalar_regs)
        if r == 0:
            raise D1Error("r0 is always 0: nothing to watch")
        dest = np.array(sorted(SCALAR_DEST_OPCODES))
        slots = self._watch_slots(
            nid, lambda info: np.isin(info.rows[:, 0], dest) & (info.rows[:, 1] == r))
        w = Watchpoint(self._next_number, "reg", nid, f"r{r} on {self._xy_text(nid)}",
                       frozenset(slots), reg=r)
        self._add(w)
        return w

    def watch_link(self, node: Any, direction: Any, above: int | None = None) -> Watchpoint:
        nid = self.node(node)
        d = _direction(direction)
        if int(self.machine.neighbors[nid, d]) < 0:
            raise D1Error(f"node {self._xy_text(nid)} has no link toward {DIRECTIONS[d]} "
                          "(mesh edge)")
        sends = np.array(_SENDS)
        relays = np.array(_RELAYS)
        slots = self._watch_slots(nid, lambda info: (
            (np.isin(info.rows[:, 0], sends) & (info.rows[:, 4] == d))
            | (np.isin(info.rows[:, 0], relays) & (info.rows[:, 1] == d))))
        t = int(self.machine.neighbors[nid, d])
        if above is None:
            text = f"link {self._xy_text(nid)} -> {self._xy_text(t)} ({DIRECTIONS[d]})"
            w = Watchpoint(self._next_number, "link", nid, text, frozenset(slots), direction=d)
        else:
            text = (f"link {self._xy_text(nid)} -> {self._xy_text(t)} ({DIRECTIONS[d]}) "
                    f"FIFO > {int(above)}")
            w = Watchpoint(self._next_number, "fill", nid, text, frozenset(slots), direction=d,
                           above=int(above))
        self._add(w)
        return w

    def delete(self, number: int | None = None) -> int:
        """Delete one breakpoint/watchpoint, or all of them; returns how many."""
        if number is None:
            k = len(self._items)
            self._items.clear()
        else:
            if int(number) not in self._items:
                raise D1Error(f"no breakpoint or watchpoint number {number}")
            del self._items[int(number)]
            k = 1
        self._rebuild_flags()
        return k

    def enable(self, number: int, on: bool = True) -> None:
        item = self._items.get(int(number))
        if item is None:
            raise D1Error(f"no breakpoint or watchpoint number {number}")
        item.enabled = on
        self._rebuild_flags()

    def breakpoints(self) -> list[Breakpoint | Watchpoint]:
        return [self._items[k] for k in sorted(self._items)]

    # ---- expressions ----------------------------------------------------------------------------

    def evaluate(self, expr: str, node: Any = None) -> int:
        """Evaluate a debugger expression in the context of a node (default: the focused one)."""
        return self._evaluate(parse_expr(expr), self.node(node))

    def _evaluate(self, tree: tuple, node: int) -> int:
        return self._compile(tree)(node)

    def _compile(self, tree: tuple) -> Getter:
        st = self.emu.state
        m = self.machine
        regs = m.scalar_regs
        fixed: dict[str, Getter] = {
            "pc": lambda node: int(st.pc[node]),
            "clock": lambda node: int(st.clock[node]),
            "x": lambda node: int(m.xy[node][0]),
            "y": lambda node: int(m.xy[node][1]),
            "id": lambda node: node,
            "t": lambda node: self.position,
        }

        def name(n: str) -> Getter:
            low = n.lower()
            if low in fixed:
                return fixed[low]
            if re.fullmatch(r"r\d+|zero|sp|ra", low):
                r = _register_number(low, regs)
                return lambda node: int(st.x[node, r])
            found = [s for s in self.obj.symbols if s.name == n]
            if not found:
                raise ExprError(f"unknown name {n!r} in expression (registers rN, pc, clock, "
                                "x, y, id, T, labels)")
            plain = [s for s in found if s.kind != "code"]
            if plain:
                value = int(plain[0].value)
                return lambda node: value
            by_block = {s.block: int(s.value) for s in found}

            def label(node: int) -> int:
                b = int(self.obj.node_block[node])
                if b not in by_block:
                    raise ExprError(f"label {n!r} is not in the code of node "
                                    f"{self._xy_text(node)}")
                return by_block[b]
            return label

        def mem(node: int, width: int, addr: int) -> int:
            if addr < 0 or addr + width > m.sram_bytes or addr % width:
                raise ExprError(f"mem{width * 8}[{addr}]: address outside SRAM or misaligned")
            raw = st.sram[node, addr:addr + width].tobytes()
            return int.from_bytes(raw, "little", signed=True)

        return compile_expr(tree, name, mem)

    # ---- inspection -----------------------------------------------------------------------------

    def mesh(self) -> MeshView:
        """Every grid position's state; nodes in a wait-for cycle are marked."""
        self._normalize()
        m = self.machine
        st = self.emu.state
        ids = m.id_grid
        cycle: set[int] = set()
        blocked = np.nonzero((st.state == K.BLOCKED_SEND) | (st.state == K.BLOCKED_RECV))[0]
        dirs: dict[int, int] = {}
        if blocked.size:
            dl = self.emu.wait_chains(blocked)
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
                if s == K.HALTED and int(self.emu.code.node_len[nid]) == 0:
                    name = "idle"
                counts["blocked" if name in ("send", "recv") else
                       ("halted" if name == "idle" else name)] += 1
                row.append(MeshCell(nid, x, y, name, dirs.get(nid, -1), nid == self.focus,
                                    nid in cycle))
            rows.append(row)
        return MeshView(m.width, m.height, rows, self.position, self.focus, counts)

    def regs(self, node: Any = None) -> dict[str, int]:
        nid = self.node(node)
        st = self.emu.state
        out = {f"r{i}": int(v) for i, v in enumerate(self.emu.regs(nid))}
        out["pc"] = int(st.pc[nid])
        out["clock"] = int(st.clock[nid])
        return out

    def vregs(self, node: Any = None) -> np.ndarray:
        """uint32 [vector_regs, 16] raw bits (`.view(np.float32)` for the values)."""
        return self.emu.vregs(self.node(node))

    def acc(self, node: Any = None) -> np.ndarray:
        return self.emu.acc(self.node(node))

    def mem(self, addr: Any, count: int | None = None, fmt: str = "hex",
            node: Any = None) -> MemView:
        """SRAM of a node: `count` bytes (hex) or elements (f32, bf16, i32, i64) at addr."""
        nid = self.node(node)
        a = addr if isinstance(addr, int) else self._evaluate(parse_expr(str(addr)), nid)
        esize = {"hex": 1, "f32": 4, "bf16": 2, "i32": 4, "i64": 8}.get(fmt)
        if esize is None:
            raise D1Error(f"unknown format {fmt!r}: use hex, f32, bf16, i32 or i64")
        n = int(count) if count is not None else (64 if fmt == "hex" else 16)
        if n < 1:
            raise D1Error(f"count must be >= 1, got {n}")
        raw = self.emu.sram(nid, a, n * esize).tobytes()
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

    def tensor(self, name: str) -> np.ndarray:
        """Gather a named tensor (input, output or internal) from its pieces."""
        return self.emu.output(name)

    def links(self, node: Any = None) -> list[LinkView]:
        nid = self.node(node)
        st = self.emu.state
        depth = self.machine.fifo_depth
        out = []
        for d, dname in enumerate(DIRECTIONS):
            t = int(self.machine.neighbors[nid, d])
            if t < 0:
                out.append(LinkView(dname, None, depth=depth))
                continue
            ol = t * 4 + OPPOSITE[d]
            il = nid * 4 + d
            omsgs = st.fifo_messages(ol)
            imsgs = st.fifo_messages(il)
            out.append(LinkView(dname, (int(self.machine.xy[t][0]), int(self.machine.xy[t][1])),
                                int(st.link_msgs[nid, d]), int(st.link_bytes[nid, d]),
                                len(omsgs), sum(m[0] for m in omsgs),
                                len(imsgs), sum(m[0] for m in imsgs),
                                int(st.link_msgs[t, OPPOSITE[d]]), depth))
        return out

    def listing(self, node: Any = None, context: int = 5, line: int | None = None) -> Listing:
        nid = self.node(node)
        st = self.emu.state
        pc = int(st.pc[nid])
        b, info = self._node_block(nid)
        if info is None:
            raise D1Error(f"node {self._xy_text(nid)} has no code")
        fi, cur_line = self._key(nid)
        fname = self.obj.files[fi] if 0 <= fi < len(self.obj.files) else None
        source: list[tuple[int, str, bool]] = []
        text = self.obj.sources.get(fname) if fname else None
        centre = line if line is not None else cur_line
        if text is not None and centre > 0:
            src = text.splitlines()
            lo = max(1, centre - context)
            hi = min(len(src), centre + context)
            source = [(i, src[i - 1], i == cur_line) for i in range(lo, hi + 1)]
        lo = max(0, pc - context)
        hi = min(len(info) - 1, pc + context)
        labels = self._labels(b)
        asm = []
        for p in range(lo, hi + 1):
            word = int(self.obj.blocks[b].words[p])
            kf, kl = info.keys[p]
            loc = f"{kl}" if kf == fi and kf >= 0 else ""
            asm.append((p, format_word(word, p, labels), loc, p == pc))
        return Listing(nid, pc, fname, cur_line if cur_line > 0 else None, source, asm)

    def _labels(self, b: int) -> dict[int, str]:
        return {s.value: s.name for s in self.obj.symbols if s.kind == "code" and s.block == b}

    def disasm(self, count: int = 10, node: Any = None) -> list[tuple[int, str, str, bool]]:
        """(pc, instruction, source location, is current) around the node's pc."""
        nid = self.node(node)
        b, info = self._node_block(nid)
        if info is None:
            raise D1Error(f"node {self._xy_text(nid)} has no code")
        pc = int(self.emu.state.pc[nid])
        count = _positive(count)
        lo = max(0, pc - count // 2)
        hi = min(len(info), lo + count)
        labels = self._labels(b)
        out = []
        for p in range(lo, hi):
            w = self.emu.where(nid, p)
            out.append((p, format_word(int(self.obj.blocks[b].words[p]), p, labels),
                        w.source or w.asm or "", p == pc))
        return out

    def stats(self) -> dict[str, Any]:
        """emu.stats() plus the debugger's position and checkpoint figures."""
        s = self.emu.stats()
        s["debugger"] = {"position": self.position, **self.checkpoint_info()}
        return s


# ---- helpers -------------------------------------------------------------------------------------

def _positive(n: Any) -> int:
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise D1Error(f"expected a count, got {n!r}") from None
    if v < 1:
        raise D1Error(f"count must be >= 1, got {v}")
    return v


def _register_number(text: str, regs: int) -> int:
    t = text.strip().lower()
    alias = {"zero": 0, "sp": 30, "ra": 31}
    if t in alias:
        r = alias[t]
    else:
        m = re.fullmatch(r"r(\d+)", t)
        if m is None:
            raise ExprError(f"not a scalar register: {text!r} (r0..r{regs - 1}, zero, sp, ra)")
        r = int(m.group(1))
    if not 0 <= r < regs:
        raise ExprError(f"register r{r} does not exist: this machine has {regs} "
                        f"(r0..r{regs - 1})")
    return r


def _direction(d: Any) -> int:
    if isinstance(d, str):
        t = d.strip().upper()
        if t in DIRECTIONS:
            return DIRECTIONS.index(t)
        raise D1Error(f"direction must be N, E, S or W, got {d!r}")
    v = int(d)
    if not 0 <= v < 4:
        raise D1Error(f"direction must be N, E, S, W or 0..3, got {d!r}")
    return v


def _code_slots(obj: ObjectFile) -> int:
    """Code slots if every node had its own copy of its block."""
    return sum(len(obj.blocks[b]) + 1 for b in obj.node_block if b >= 0)


def _private_object(obj: ObjectFile) -> ObjectFile:
    """The same program with one code block per node (blocks shared by reference)."""
    node_block = np.full(len(obj.node_block), -1, dtype=np.int32)
    blocks = []
    new_of: dict[int, list[int]] = {}
    for node, b in enumerate(obj.node_block):
        if b >= 0:
            node_block[node] = len(blocks)
            new_of.setdefault(int(b), []).append(len(blocks))
            blocks.append(obj.blocks[int(b)])
    symbols = [s for s in obj.symbols if s.kind != "code"]
    for s in obj.symbols:
        if s.kind == "code":
            symbols.extend(dataclasses.replace(s, block=nb) for nb in new_of.get(s.block, ()))
    return dataclasses.replace(obj, blocks=blocks, node_block=node_block, symbols=symbols)


def load_program(path: str | Path, machine: Machine | None = None) -> ObjectFile:
    """An object from a .d1k (compiled), .d1s (assembled) or .d1o file."""
    p = Path(path)
    if not p.exists():
        raise D1Error(f"no such file: {p}")
    suffix = p.suffix.lower()
    if suffix == ".d1k":
        import compiler
        if not hasattr(compiler, "compile_file"):
            raise D1Error(f"cannot compile {p}: compiler.compile_file is not available")
        from d1isa.machine import default_machine
        return compiler.compile_file(str(p), machine=machine or default_machine())
    if suffix == ".d1s":
        from d1isa.asm import assemble_file
        return assemble_file(str(p), machine)
    if suffix == ".d1o":
        return ObjectFile.load(p)
    raise D1Error(f"{p}: expected a .d1k, .d1s or .d1o file")


__all__ = ["Breakpoint", "BreakpointHit", "Debugger", "ExprError", "Listing", "LinkView",
           "MemView", "MeshCell", "MeshView", "Stop", "WatchHit", "Watchpoint",
           "compile_expr", "load_program", "parse_expr"]
