"""The back end's program representation: stored values, and the steps that compute them.

`lower` (compiler.lower) turns the IR graph into a list of `Step`s over `Value`s; every value has
a `Layout` (where its blocks live, how a node stores its block) and, after `allocate`, one SRAM
address that is the same on every node. A step is one distributed operation: a fused
elementwise kernel, a reduction, a softmax, a matmul, a redistribution between layouts, or an
N-d fallback kernel. Each step records the DSL position of the IR node that caused it, so every
instruction it emits maps back to the source; scratch buffers a step needs are `Value`s too, so
the allocator treats them like any other short-lived value.

`Ctx` is what the emitters share: the machine, the grid, the options, the program's
instruction set (`InstrSet`: every instruction checked and encoded once), and one `Code` per live
node. Steps append to those programs in the global step order, which is what makes the whole
program deadlock-free: every step's messages are ordered the same way on every node (see
compiler.comm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.asmgen import Code
from compiler.grid import Grid
from compiler.ir import Node, Op
from compiler.layout import SLACK, Layout, view_of
from d1isa.asm.program import InstrSet
from d1isa.machine import Machine


@dataclass(eq=False)
class Value:
    """A tensor stored on the grid (or a scratch buffer, when `layout` is None).

    `alias`: the value is stored in that value's buffer and takes its address (an update's
    new value written straight into its param, compiler.writeback); it reserves nothing.

    `copies`: further placements of an input that the host writes with it (its transpose, for
    a matmul that reads it transposed: compiler.lower.Mapper.oriented, with `transposed` set;
    or the same values in another layout: Mapper.host_copy); each has `copy_of` set to the input
    and its own buffer, live from the start like the input's.

    `base`: the value is another shape of `base`'s stored bytes (a reshape that keeps the 2-D
    view, read by a kernel other than an elementwise one: compiler.lower.Mapper._reshape). It
    takes base's address and reserves nothing; reading it keeps base live (compiler.alloc).
    Unlike `alias`, it writes nothing into base's buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: Layout | None
    node: Node | None = None
    scratch_bytes: int = 0
    addr: int = -1
    alias: Value | None = None
    copy_of: Value | None = None
    copies: list[Value] = field(default_factory=list)
    transposed: bool = False
    base: Value | None = None

    @property
    def nbytes(self) -> int:
        """Bytes reserved on every node."""
        if self.layout is None:
            return self.scratch_bytes + SLACK
        return self.layout.nbytes

    @property
    def view(self) -> tuple[int, int]:
        return view_of(self.shape)

    def __repr__(self) -> str:
        where = self.layout.describe() if self.layout else f"scratch {self.scratch_bytes} B"
        return f"<{self.name}: {self.dtype}{list(self.shape)} {where} @{self.addr}>"


def scratch(name: str, nbytes: int) -> Value:
    return Value(name, (), "f32", None, scratch_bytes=max(int(nbytes), 0))


@dataclass(eq=False)
class Step:
    """One distributed operation. Subclasses implement `emit`."""

    kind: str
    out: Value | None
    ins: list[Value]
    loc: tuple[int, int]
    label: str                      # DSL name of the value it computes (for regions and errors)
    temps: list[Value] = field(default_factory=list)
    also: list[Value] = field(default_factory=list)     # further values it writes
    # Per-node tables the object places in SRAM before the program starts (Ctx.table): live
    # for the whole run, so no value ever overwrites them and every run finds them.
    tables: list[Value] = field(default_factory=list)

    def values(self) -> list[Value]:
        return (([self.out] if self.out is not None else []) + self.also + self.ins + self.temps
                + self.tables)

    def writes(self) -> list[Value]:
        """The values this step computes: `out`, and `also` (an elementwise kernel that stores
        its result split for a matmul too, compiler.matmul.SplitBf16)."""
        return ([self.out] if self.out is not None else []) + self.also

    def describe(self) -> str:
        ins = ", ".join(v.name for v in self.ins)
        out = self.out.name if self.out is not None else "-"
        return f"{out:<10} = {self.kind} {ins}"

    def emit(self, ctx: Ctx) -> None:  # pragma: no cover - every step overrides it
        raise NotImplementedError


@dataclass
class Ctx:
    """Shared state of the emit pass (`filename` names the DSL source in errors)."""

    machine: Machine
    grid: Grid
    options: Any
    filename: str = ""
    progs: dict[int, Code] = field(default_factory=dict)
    loc: tuple[int, int] = (0, 0)
    instrs: InstrSet = field(init=False)
    # The step being emitted, and per node the item index where each step it took part in
    # began: (step, index) pairs in step order (compiler.emit turns them into pcs, which tell
    # the debugger how far each node is through the program).
    step: int = -1
    starts: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    # Per-node SRAM tables: (node, address, entries); an entry is an int or the name of a label
    # of that node's program (its code address, known once the program is laid out), each
    # stored as a little-endian 32-bit word.
    tables: list[tuple[int, int, list[int | str]]] = field(default_factory=list)
    names: int = 0
    # The mapping report's record of link bytes (compiler.mapreport.Traffic), only when a
    # report is asked for: every message reports its path to it.
    traffic: Any = None

    def unique(self, prefix: str) -> str:
        """A label prefix no other step's code uses (code shared between nodes is built once,
        so its labels cannot come from one node's counter)."""
        self.names += 1
        return f".{prefix}{self.names}_"

    def __post_init__(self) -> None:
        self.instrs = InstrSet(self.machine, 0, self.filename or None)

    def code(self, nid: int) -> Code:
        """The program of live node `nid`, positioned at the current step's source location."""
        c = self.progs.get(nid)
        if c is None:
            c = self.progs[nid] = Code(self.instrs)
            self.starts[nid] = []
        marks = self.starts[nid]
        if not marks or marks[-1][0] != self.step:
            marks.append((self.step, len(c.items)))
        c.at(self.loc)
        return c

    def gcode(self, i: int, j: int) -> Code:
        return self.code(self.grid.nodes[i][j])

    def table(self, nid: int, at: Value, entries: list[int | str]) -> None:
        """Node `nid` starts with `entries` (32-bit words; label names become the code address
        of that label in its program) at `at`, a value of the step's `tables`."""
        self.tables.append((nid, at.addr, list(entries)))


ELEMENTWISE_OPS = frozenset({Op.NEG, Op.ABS, Op.RELU, Op.EXP, Op.TANH, Op.SIGMOID, Op.SQRT,
                             Op.LOG, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM,
                             Op.GT, Op.GE, Op.CAST, Op.LT, Op.LE, Op.EQ, Op.NE, Op.WHERE,
                             Op.POW, Op.ERF, Op.GELU})
