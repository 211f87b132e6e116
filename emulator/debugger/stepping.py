"""Source-level stepping: step, next, finish and until, on one node or on every node.

A step runs with extra stop flags on the instructions where it could end (the entries of source
lines, calls and returns: emulator.debugger.blocks) and decides at each whether the step is over
(`StepControl.at`). `next`, `until` and `finish` follow the call depth through the calls and
returns the node executes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from d1isa.errors import D1Error
from emulator import constants as K
from emulator.debugger.blocks import BlockInfo

if TYPE_CHECKING:
    from emulator.debugger.core import Debugger
    from emulator.debugger.views import Stop


class StepControl:
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
            _b, info = dbg._node_block(n)
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

    def _returns(self, node: int, pc: int, info: BlockInfo) -> str:
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


def line_steps(dbg: Debugger, mode: str, n: int, all_nodes: bool) -> Stop:
    """`step` or `next` n times, on the focused node or on every node that can run."""
    stop: Stop | None = None
    for _ in range(n):
        if all_nodes:
            st = dbg.emu.state.state
            nodes = [int(i) for i in np.nonzero(st <= K.BLOCKED_RECV)[0]]
            if not nodes:
                raise D1Error("no node can run: every node has halted or trapped")
            ctl = StepControl(dbg, nodes, mode)
            stop = dbg._interruptible(lambda ctl=ctl: dbg._continue_all(ctl=ctl))
            if stop.reason == "step":
                rest = len(nodes) - len(ctl.done)
                stop.detail = (f"{len(ctl.done)} of {len(nodes)} nodes reached another source "
                               "line" + ("" if rest == 0 else "; the other node waits, halted or "
                                         "trapped" if rest == 1 else
                                         "; the others wait, halted or trapped"))
        else:
            ctl = StepControl(dbg, [dbg.focus], mode)
            stop = dbg._interruptible(lambda ctl=ctl: dbg._run_focus(dbg.focus, ctl=ctl))
        if stop.reason != "step":
            break
    assert stop is not None
    return stop


def finish(dbg: Debugger) -> Stop:
    """Run until the focused node returns from the current call (or halts)."""
    ctl = StepControl(dbg, [dbg.focus], "finish")
    return dbg._interruptible(lambda: dbg._run_focus(dbg.focus, ctl=ctl))


def until(dbg: Debugger, location: str | None, node: Any) -> Stop:
    """Without a location: next, but never stop at an earlier line (leave a loop). With one:
    continue to it (a temporary breakpoint)."""
    if location is None:
        ctl = StepControl(dbg, [dbg.focus], "until")
        return dbg._interruptible(lambda: dbg._run_focus(dbg.focus, ctl=ctl))
    bp = dbg.break_at(location, node=node, temporary=True)
    try:
        return dbg.cont()
    finally:
        if bp.number in dbg.points.items:
            dbg.delete(bp.number)
