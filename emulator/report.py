"""What a run ends with: trap records, the wait-for chains of blocked nodes, and `RunResult`.

These are plain records plus their text; `emulator.emulator.Emulator` fills them from the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from d1isa import traps, units
from d1isa.machine import DIRECTIONS

# Run statuses. Final ones: "halted" (every node halted), "trapped" (some node trapped; nodes may
# also be waiting), "deadlock" (no trap, and waiting nodes form a wait-for cycle), "stuck" (no
# trap, nodes wait on a halted node: no cycle). "running" (a budget ran out, or step() left
# runnable nodes) and "stopped" (a stop flag) come from step() and the debugger.
STATUSES = ("halted", "trapped", "deadlock", "stuck", "running", "stopped")


@dataclass
class Where:
    """A node at an instruction: enough to print `(3,4) pc 12 `send E, r5` (prog.d1s:14)`."""

    node: int
    x: int
    y: int
    pc: int
    text: str | None          # disassembled instruction, None if pc is outside the code
    source: str | None        # "file:line:col" of the instruction's source, if known
    asm: str | None           # "file.d1s:line" of the generated assembly, if different

    @property
    def xy(self) -> str:
        return f"({self.x},{self.y})"

    def describe(self) -> str:
        parts = [f"{self.xy} pc {self.pc}"]
        if self.text is not None:
            parts.append(f"`{self.text}`")
        loc = [s for s in (self.source, self.asm) if s]
        if loc:
            parts.append("(" + ", ".join(loc) + ")")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "x": self.x, "y": self.y, "pc": self.pc,
                "instruction": self.text, "source": self.source, "asm": self.asm}


@dataclass
class Trap:
    """One trapped node."""

    where: Where
    cause: int
    cause_name: str
    code: int                 # the user trap code (cause 8), else 0
    detail: str = ""

    @property
    def node(self) -> int:
        return self.where.node

    @property
    def pc(self) -> int:
        return self.where.pc

    def message(self) -> str:
        w = self.where
        head = f"node {w.xy} [id {w.node}] trapped at pc {w.pc}: {self.cause_name}"
        if self.cause == traps.USER_TRAP:
            head += f" (code {self.code})"
        lines = [head]
        if self.detail:
            lines.append(f"    {self.detail}")
        if w.text is not None:
            lines.append(f"    {w.text}")
        if w.source:
            lines.append(f"    at {w.source}" + (f" (asm {w.asm})" if w.asm else ""))
        elif w.asm:
            lines.append(f"    at {w.asm}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message()

    def to_json(self) -> dict[str, Any]:
        d = self.where.to_json()
        d.update(cause=self.cause, cause_name=self.cause_name, code=self.code,
                 detail=self.detail)
        return d


@dataclass
class Wait:
    """One blocked node and what it waits for."""

    where: Where
    kind: str                 # "send" or "recv"
    direction: int
    other: int                # the node it waits on
    other_xy: tuple[int, int]
    fill: int = 0             # send: messages in the full FIFO
    depth: int = 0

    def describe(self) -> str:
        d = DIRECTIONS[self.direction]
        ox, oy = self.other_xy
        if self.kind == "send":
            back = DIRECTIONS[(self.direction + 2) % 4]
            what = (f"waits to send {d} to ({ox},{oy}), whose {back} FIFO is full "
                    f"({self.fill}/{self.depth})")
        else:
            what = f"waits to receive from {d} ({ox},{oy})"
        return f"{self.where.describe()} {what}"

    def to_json(self) -> dict[str, Any]:
        d = self.where.to_json()
        d.update(kind=self.kind, direction=DIRECTIONS[self.direction], waits_on=self.other,
                 waits_on_xy=list(self.other_xy), fifo_fill=self.fill, fifo_depth=self.depth)
        return d


@dataclass
class Chain:
    """Blocked nodes each waiting on the next: closes into a cycle, or ends at `end`."""

    waits: list[Wait]
    cycle: bool
    end: Where | None = None          # the stopped (or running) node the chain ends at
    end_state: str = ""
    behind: int = 0                   # further blocked nodes whose chains join this one

    def describe(self, limit: int = 12) -> str:
        ws = self.waits
        shown = ws if len(ws) <= limit else ws[:limit // 2] + ws[-(limit - limit // 2):]
        parts = []
        for i, w in enumerate(shown):
            if len(ws) > limit and i == limit // 2:
                parts.append(f"... {len(ws) - limit} more waiting nodes ...")
            parts.append(w.describe())
        text = ";\n  ".join(parts)
        if self.cycle:
            head = f"deadlock: a cycle of {len(ws)} waiting node{'s' if len(ws) != 1 else ''}"
            tail = f"\n  ... and {ws[0].where.xy} again (a cycle)"
        else:
            head = ("blocked: a chain of waiting nodes that ends at a stopped node "
                    "(not a cycle: a node waiting on a stopped node)")
            end = self.end.describe() if self.end else "?"
            tail = f";\n  {end} has {self.end_state}"
        verb = "node waits" if self.behind == 1 else "nodes wait"
        behind = (f"\n  ({self.behind} more blocked {verb} behind this chain)"
                  if self.behind else "")
        return f"{head}:\n  {text}{tail}{behind}"

    def to_json(self) -> dict[str, Any]:
        return {"cycle": self.cycle, "waits": [w.to_json() for w in self.waits],
                "end": self.end.to_json() if self.end else None, "end_state": self.end_state,
                "behind": self.behind}


@dataclass
class Deadlock:
    """Every blocked node, grouped into chains (one per cycle or per stopped end node)."""

    chains: list[Chain]
    blocked: int

    @property
    def is_cycle(self) -> bool:
        return any(c.cycle for c in self.chains)

    def report(self) -> str:
        return "\n".join(c.describe() for c in self.chains)

    def __str__(self) -> str:
        return self.report()

    def to_json(self) -> dict[str, Any]:
        return {"blocked": self.blocked, "cycle": self.is_cycle,
                "chains": [c.to_json() for c in self.chains]}


@dataclass
class RunResult:
    """How a run (or a step) ended. `ok` means every node halted."""

    status: str
    cycles: int
    seconds: float
    instructions: int = 0
    traps: list[Trap] = field(default_factory=list)
    deadlock: Deadlock | None = None
    stop: Where | None = None         # the node and pc a stop flag halted the loop at
    host_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "halted"

    def report(self) -> str:
        lines = [f"status: {self.status}; {units.cycles(self.cycles)} "
                 f"({units.seconds(self.seconds)} modelled)"]
        if self.stop is not None:
            lines.append(f"stopped before {self.stop.describe()}")
        for t in self.traps:
            lines.append(t.message())
        if self.deadlock is not None and self.deadlock.chains:
            lines.append(self.deadlock.report())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "cycles": self.cycles, "seconds": self.seconds,
                "instructions": self.instructions, "traps": [t.to_json() for t in self.traps],
                "deadlock": self.deadlock.to_json() if self.deadlock else None,
                "stop": self.stop.to_json() if self.stop else None}
