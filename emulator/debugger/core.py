"""`Debugger`: source-level debugging of the whole mesh, with reverse execution.

    from emulator.debugger import Debugger
    dbg = Debugger(obj)               # an ObjectFile (d1isa.objfile), for obj.machine
    dbg.break_at("bump", node="all")
    stop = dbg.cont()                 # Stop(reason="breakpoint", ...)
    dbg.reverse_stepi()               # one instruction back on the focused node

The debugger owns an `Emulator` and drives it through stop flags (a flagged instruction leaves
the jitted loop before it executes), per-node instruction budgets, and single-node runs
(`Emulator.run_until`). This module holds that driving: the position, the two run loops (every
node, or one node while the others run only as it waits), and what happens at a flagged
instruction. Every operation returns data (`Stop`, `Breakpoint`, `MeshView`, numpy arrays,
dicts); `d1 debug` (d1/commands/debug.py) only parses commands and prints these.

Position. Each node is a deterministic program that talks to others only through FIFOs, and the
timing model depends only on each node's program order and each link's message order, so the
whole mesh state is a function of the vector of per-node executed-instruction counts (the mesh
is a Kahn process network). That vector is the debugger's position; its sum, the number of
instructions executed so far, is the timeline number T shown to the user. Going back is a
checkpoint restore plus a replay (emulator.debugger.reverse), so stopping, stepping and chunking
never change results.

The debugger takes an `ObjectFile` and nothing else: loading, assembling or compiling a program
is the caller's business, so this package needs neither the assembler nor the compiler.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from d1isa import debuginfo, isa, units
from d1isa.errors import D1Error, printable
from d1isa.machine import DIRECTIONS
from d1isa.numbers import integer_arg
from d1isa.objfile import ObjectFile
from emulator import constants as K
from emulator.debugger import breakpoints as bps
from emulator.debugger import expr, reverse, stepping, values, views
from emulator.debugger.blocks import BlockInfo
from emulator.debugger.breakpoints import (
    Breakpoint,
    BreakpointHit,
    Points,
    Watchpoint,
    store_extents,
)
from emulator.debugger.checkpoints import DEFAULT_CHECKPOINT_BYTES, Checkpoint, Checkpoints
from emulator.debugger.expr import ExprError, Getter
from emulator.debugger.stepping import StepControl
from emulator.debugger.values import TensorView
from emulator.debugger.views import LinkView, Listing, MemView, MeshView, Stop
from emulator.decode import C_OP, C_RD, C_RS1, C_RS2, C_RS3
from emulator.emulator import Emulator
from emulator.report import Where

# Forward execution runs in kernel calls of at most this many instructions, so traps are noticed
# and Ctrl-C is honoured within milliseconds, and checkpoints land near their interval.
MAX_CHUNK = 1 << 22
MIN_CHUNK = 1 << 12
# Nodes get private copies of shared code blocks up to this many code slots in all.
PRIVATE_CODE_SLOTS = 1 << 20
# Breakpoint stops remembered for reverse-continue.
MAX_HISTORY = 1000
_BIG = 1 << 60

# What each opcode does on the links, for deciding whether a node's next instruction waits:
# opcode -> 1 receive, 2 send, 3 relay, 0 anything else (the last entry covers opcodes > 255).
_RECV, _SEND, _RELAY = 1, 2, 3
_NET_KIND = np.zeros(257, dtype=np.int8)
_NET_KIND[list(isa.RECV_OPCODES)] = _RECV
_NET_KIND[list(isa.SEND_OPCODES)] = _SEND
_NET_KIND[list(isa.RELAY_OPCODES)] = _RELAY
# Sends of a message from SRAM whose length is in a register: a bad length or address traps
# before the send could wait.
_SEND_FROM_SRAM = np.zeros(257, dtype=bool)
_SEND_FROM_SRAM[list(isa.opcodes_where(
    lambda i: i.network is not None and i.network.role == "send" and i.memory is not None
    and i.memory.shape == "message"))] = True


class Debugger:
    """Drive an `Emulator` for debugging: breakpoints, watchpoints, steps, reverse steps.

    `obj` is the ObjectFile to debug, for its machine `obj.machine`; `inputs` maps tensor names
    to arrays.
    """

    def __init__(self, obj: ObjectFile, inputs: dict[str, Any] | None = None,
                 seed: int = 0, *, checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
                 checkpoint_interval: int | None = None) -> None:
        if not isinstance(obj, ObjectFile):
            raise D1Error(f"Debugger takes an ObjectFile, not {type(obj).__name__} {obj!r}: "
                          "load, assemble or compile the program first")
        if inputs is not None and not isinstance(inputs, Mapping):
            raise D1Error(f"Debugger(inputs=...) takes a mapping of tensor names to arrays, "
                          f"not {type(inputs).__name__}")
        self.obj = obj
        self.machine = obj.machine
        # The compiler's record of every named value (None for assembly and older objects),
        # and the (T, clock) at which a node first reached a pc, found by replay (values.py).
        self.debug_info = debuginfo.read(obj)
        self._arrivals: dict[tuple[int, int], tuple[int, int]] = {}
        # Each node gets its own copy of its code block when that stays small, so a stop flag
        # set for one node never stops the others that share the block.
        self.private_code = _code_slots(obj) <= PRIVATE_CODE_SLOTS
        self.emu = Emulator(_private_object(obj) if self.private_code else obj, seed=seed)
        for name, value in (inputs or {}).items():
            self.emu.set_input(name, value)
        self.n = self.emu.n
        self._blocks: dict[int, BlockInfo] = {}
        self._stores = store_extents(self.machine)
        self.points = Points(self.emu.code.total)
        self._held: set[int] = set()
        self._history: list[tuple[np.ndarray, int]] = []
        # While one node steps, only its own breakpoints stop it (None: every node's).
        self._bp_nodes: set[int] | None = None
        self._trapped_seen: set[int] = set()
        live = np.nonzero(self.emu.code.node_len > 0)[0]
        self.focus = int(live[0]) if live.size else 0
        self.checkpoints = Checkpoints(self.emu, checkpoint_bytes, checkpoint_interval)
        self._t = self.position       # kept up to date by _call and _restore
        self.replay_seconds = 0.0
        self._base = self.checkpoints.take()
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
            if len(vals) == 1 and "," not in text:     # "1," is an X,Y cut short, not id 1
                return self.emu.node_id(vals[0])
            raise D1Error(f"a node is X,Y or a live-node id, got {spec!r}")
        # Emulator.node_id: integers only (int() read 1.5 as node 1, and True as node 1)
        return self.emu.node_id(tuple(spec) if isinstance(spec, list) else spec)

    def _xy_text(self, node: int) -> str:
        x, y = self.machine.xy[node]
        return f"({int(x)},{int(y)})"

    def set_focus(self, node: Any) -> Where:
        self.focus = self.node(node)
        self.emu.state.skip[self.focus] = self.emu.state.pc[self.focus]
        return self.emu.where(self.focus)

    def where(self, node: Any = None) -> Where:
        return self.emu.where(self.node(node))

    def _block(self, b: int) -> BlockInfo:
        info = self._blocks.get(b)
        if info is None:
            blk = self.obj.blocks[b]
            info = self._blocks[b] = BlockInfo(blk.words, blk.lines)
        return info

    def _node_block(self, node: int) -> tuple[int, BlockInfo | None]:
        b = int(self.obj.node_block[node])
        return b, (self._block(b) if b >= 0 else None)

    def _key(self, node: int, pc: int | None = None) -> tuple[int, int]:
        _b, info = self._node_block(node)
        pc = int(self.emu.state.pc[node]) if pc is None else pc
        if info is None or not 0 <= pc < len(info):
            return (-1, -(1 << 40) - pc)
        return info.keys[pc]

    def source_line(self, where: Where | None) -> str | None:
        """The source text of `where`'s line, as "  LINE | text", if the object has it."""
        if where is None or where.node < 0:
            return None
        _b, info = self._node_block(where.node)
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
        shown = printable(src[line - 1], keep="\t")     # the object's text: no escapes acting
        return f"{line:>6} | {shown}"

    # ---- running primitives ---------------------------------------------------------------------

    def _apply_flags(self, extra: np.ndarray | None = None) -> None:
        flags = self.points.flags if extra is None else (self.points.flags | extra)
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
        left = self.checkpoints.interval - (self._t - self._base.position)
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
        opc = np.minimum(op, _NET_KIND.size - 1)
        kind = _NET_KIND[opc]
        recv = kind == _RECV
        send = kind == _SEND
        relay = kind == _RELAY
        # sends: a bad message send traps before it could wait
        ol = out_link[nodes * 4 + (dr & 3)]
        nb = x[nodes, rs2]
        a = x[nodes, rs1]
        send_ok = ~_SEND_FROM_SRAM[opc] | ((nb >= 1) & (nb <= self.machine.max_message_bytes)
                                            & (a >= 0) & (a <= self.machine.sram_bytes - nb))
        send_wait = send & full(ol, (ol >= 0) & send_ok)
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

    def _maybe_checkpoint(self) -> None:
        if self._t - self._base.position >= self.checkpoints.interval:
            self._base = self.checkpoints.take()

    def _restore(self, ck: Checkpoint) -> None:
        self.checkpoints.restore(ck)
        self._base = ck
        self._t = ck.position

    def checkpoint_info(self) -> dict[str, Any]:
        return {**self.checkpoints.info(),
                "seconds_taking": self.checkpoints.seconds_taking,
                "seconds_replaying": self.replay_seconds,
                "thinned": self.checkpoints.thinned}

    def goto(self, target: Any) -> Stop:
        """Go to the latest state whose per-node counts are all <= `target` (a count vector)."""
        try:
            w = np.asarray(target)
        except (TypeError, ValueError):
            w = np.zeros(0)
        # floats were truncated, text was a ValueError and a count past int64 an OverflowError
        if w.shape != (self.n,) or w.dtype.kind not in "iu" or (w.size and w.min() < 0):
            raise D1Error(f"a position is a vector of {self.n} per-node counts (integers "
                          f">= 0), got {target!r}"[:300])
        w = np.minimum(w, MAX_COUNT).astype(np.int64)
        reverse.goto(self, w)
        return self._make_stop("step", self.focus)

    # ---- stop handling --------------------------------------------------------------------------

    def _eval_condition(self, bp: Breakpoint, node: int) -> tuple[bool, str]:
        """(whether bp stops node, why it stops anyway). A condition that cannot be evaluated
        (a division by zero, an address outside SRAM, a label not in this node's code) stops
        at this node with the error, as gdb does, so that it never passes unnoticed."""
        try:
            return bool(bp.cond(node)), ""
        except D1Error as e:
            why = f"Error in testing condition for breakpoint {bp.number}: {e}"
            caret = e.caret() if isinstance(e, ExprError) else ""
            if caret:
                why += "\n" + "\n".join("    " + line for line in caret.splitlines())
            return True, why

    def _matching_breakpoints(self, node: int) -> list[tuple[Breakpoint, str]]:
        """Every breakpoint at node's pc that stops it, with why it stops despite a condition
        that cannot be evaluated (a tbreak at a breakpoint's place is one of them too)."""
        pc = int(self.emu.state.pc[node])
        g = int(self.emu.code.node_base[node]) + pc
        out = []
        for bp in self.points.bp_at.get(g, ()):
            if bp.nodes is not None and node not in bp.nodes:
                continue
            detail = ""
            if bp.cond is not None:
                ok, detail = self._eval_condition(bp, node)
                if not ok:
                    continue
            out.append((bp, detail))
        return out

    def _hit_stop(self, node: int, matching: list[tuple[Breakpoint, str]]) -> Stop:
        """The stop at `matching` (non-empty): each breakpoint counts the hit, temporary ones
        are deleted, and the stop names them all."""
        where = self.emu.where(node)
        hits = []
        for bp, _ in matching:
            bp.hits += 1
            hits.append(BreakpointHit(bp.number, node, where, self.position, bp.hits))
            if bp.temporary:
                self.delete(bp.number)
        detail = "\n".join(d for _, d in matching if d)
        return self._make_stop("breakpoint", node, where, breakpoint=hits[0],
                               more_breakpoints=hits[1:], detail=detail)

    def _breakpoint_hit(self, node: int) -> Stop | None:
        if self._bp_nodes is not None and node not in self._bp_nodes:
            return None
        matching = self._matching_breakpoints(node)
        if not matching:
            return None
        self._remember_hit(node)
        return self._hit_stop(node, matching)

    def _remember_hit(self, node: int) -> None:
        """Keep the exact position of a breakpoint stop, so reverse-continue returns to it."""
        self._history.append((self.counts().copy(), node))
        if len(self._history) > MAX_HISTORY:
            del self._history[:len(self._history) - MAX_HISTORY]

    def _on_flag(self, node: int, ctl: StepControl | None = None) -> Stop | None:
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
        ws = [w for w in self.points.watch_at.get(g, ()) if w.node == node]
        if ws:
            return bps.watch_exec(self, node, ws)
        return None

    def _pre_resume(self, ctl: StepControl | None = None) -> Stop | None:
        """Nodes about to pass their flagged instruction (skip == pc) still owe its watch
        check and step accounting."""
        st = self.emu.state
        passing = [int(i) for i in np.nonzero(st.skip == st.pc)[0] if int(i) not in self._held]
        for node in passing:
            g = int(self.emu.code.node_base[node]) + int(st.pc[node])
            if ctl is not None and node in ctl.nodes and g in ctl.slots and node not in ctl.done:
                ctl.effect(node, int(st.pc[node]))
            ws = [w for w in self.points.watch_at.get(g, ()) if w.node == node]
            if ws:
                stop = bps.watch_exec(self, node, ws)
                if stop is not None:
                    return stop
        return None

    def _exec_one(self, node: int, before: Callable[[], None] | None = None) -> Stop | None:
        """Execute node's current instruction, letting the others run while it waits.

        `before` is called just before each attempt, so that what it records is the state
        the instruction found when it ran (the others may have changed it while it waited:
        a receiver drains the FIFO a blocked send watches).
        """
        st = self.emu.state
        c0 = self._count(node)
        self._held.add(node)
        try:
            while True:
                self._apply_flags()
                if before is not None:
                    before()
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

    # ---- the two run loops ----------------------------------------------------------------------

    def _continue_all(self, target: np.ndarray | None = None, ctl: StepControl | None = None,
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

    def _run_focus(self, node: int, ctl: StepControl | None = None,
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

    def _run_focus_loop(self, node: int, ctl: StepControl | None, target: int | None) -> Stop:
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
        reverse.goto(self, np.zeros(self.n, dtype=np.int64))
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
        return stepping.line_steps(self, "step", _positive(n), all_nodes)

    def next(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """As step, but calls (jal with rd=ra) run to their return."""
        return stepping.line_steps(self, "next", _positive(n), all_nodes)

    def finish(self) -> Stop:
        """Run until the focused node returns from the current call (or halts)."""
        return stepping.finish(self)

    def until(self, location: str | int | None = None, node: Any = None) -> Stop:
        """Without a location: next, but never stop at an earlier line (leave a loop). With
        one: continue to it (a temporary breakpoint; `location` and `node` as for break_at)."""
        return stepping.until(self, None if location is None else str(location), node)

    # ---- reverse execution ----------------------------------------------------------------------

    def reverse_stepi(self, n: int = 1, all_nodes: bool = False) -> Stop:
        """Undo the focused node's (or every node's) last n instructions; nodes that depended
        on them go back as far as needed."""
        n = _positive(n)
        target = self.counts().copy()
        if all_nodes:
            if not target.any():
                return self._make_stop("start", self.focus,
                                       detail="Already at the beginning (T=0)")
            target = np.maximum(target - n, 0)
        else:
            if target[self.focus] == 0:
                return self._make_stop("start", self.focus,
                                       detail="Already at the node's first instruction")
            target[self.focus] = max(0, target[self.focus] - n)
        return self._interruptible(lambda: reverse.goto_stop(self, target))

    def reverse_step(self, n: int = 1) -> Stop:
        """Back to the start of the previous source line the focused node executed."""
        n = _positive(n)
        stop: Stop | None = None
        for _ in range(n):
            stop = self._interruptible(lambda: reverse.reverse_line(self, self.focus))
            if stop.reason != "step":
                break
        assert stop is not None
        return stop

    def reverse_continue(self) -> Stop:
        """Back to the most recent earlier breakpoint hit (emulator.debugger.reverse)."""
        if not self.points.breakpoints():
            raise D1Error("no enabled breakpoints: nothing to go back to")
        return self._interruptible(lambda: reverse.reverse_continue(self))

    # ---- breakpoints and watchpoints ------------------------------------------------------------

    def break_at(self, location: str | int, node: Any = None, condition: str | None = None,
                 temporary: bool = False) -> Breakpoint:
        """A breakpoint at a pc (`*12`, `pc 12`), a code label, or a source line
        (`LINE`, `LINE:COL`, `FILE:LINE[:COL]`; an int is a LINE, as a bare number is at the
        prompt). node: None (focused node for a pc or label, all nodes for a line), "all", or
        a node."""
        location = str(location)
        if condition is not None and not isinstance(condition, str):
            raise D1Error(f"a breakpoint's condition is an expression in a str, or None; got "
                          f"{type(condition).__name__}")
        tree = expr.parse(condition) if condition else None
        cond = self._compile(tree, condition) if tree is not None else None
        slots, nodes, text = bps.resolve(self, location, node)
        bp = Breakpoint(self.points.next_number, location.strip(), frozenset(slots), nodes,
                        condition, tree, cond, temporary=temporary, where_text=text)
        self.points.add(bp)
        return bp

    def watch_mem(self, addr: Any, length: int = 4, node: Any = None) -> Watchpoint:
        nid = self.node(node)
        a = addr if isinstance(addr, int) else self._evaluate(str(addr), nid)
        length = integer_arg(length, "a watched SRAM range's length")
        if length < 1:
            raise D1Error(f"a watched SRAM range is at least 1 byte long, got {length}")
        if a < 0 or a + length > self.machine.sram_bytes:
            raise D1Error(f"SRAM range {a}+{length} is outside 0..{self.machine.sram_bytes - 1}")
        ops = np.array(sorted(self._stores))
        slots = bps.watch_slots(self, nid, lambda info: np.isin(info.rows[:, 0], ops))
        text = f"mem 0x{a:x}..0x{a + length - 1:x} ({length} B) on {self._xy_text(nid)}"
        w = Watchpoint(self.points.next_number, "mem", nid, text, frozenset(slots), addr=a,
                       length=length)
        self.points.add(w)
        return w

    def watch_reg(self, reg: Any, node: Any = None) -> Watchpoint:
        nid = self.node(node)
        r = _register_number(str(reg), self.machine.scalar_regs)
        if r == 0:
            raise D1Error("r0 is always 0: nothing to watch")
        dest = np.array(bps.SCALAR_WRITERS)
        slots = bps.watch_slots(
            self, nid, lambda info: np.isin(info.rows[:, 0], dest) & (info.rows[:, 1] == r))
        w = Watchpoint(self.points.next_number, "reg", nid, f"r{r} on {self._xy_text(nid)}",
                       frozenset(slots), reg=r)
        self.points.add(w)
        return w

    def watch_link(self, node: Any, direction: Any, above: int | None = None) -> Watchpoint:
        nid = self.node(node)
        d = bps.parse_direction(direction)
        if int(self.machine.neighbors[nid, d]) < 0:
            raise D1Error(f"node {self._xy_text(nid)} has no link toward {DIRECTIONS[d]} "
                          "(mesh edge)")
        slots = bps.watch_slots(self, nid, lambda info: bps.link_writers(info, d))
        t = int(self.machine.neighbors[nid, d])
        depth = self.machine.fifo_depth
        if above is not None:
            above = integer_arg(above, "a watched FIFO's fill")
        if above is not None and not 0 <= int(above) < depth:
            # any other N would stop at every send (N < 0) or never (a FIFO holds `depth`)
            raise D1Error(f"a FIFO holds 0..{depth} messages: watch '> N' for N in "
                          f"0..{depth - 1}, got {int(above)}")
        if above is None:
            text = f"link {self._xy_text(nid)} -> {self._xy_text(t)} ({DIRECTIONS[d]})"
            w = Watchpoint(self.points.next_number, "link", nid, text, frozenset(slots),
                           direction=d)
        else:
            text = (f"link {self._xy_text(nid)} -> {self._xy_text(t)} ({DIRECTIONS[d]}) "
                    f"FIFO > {int(above)}")
            w = Watchpoint(self.points.next_number, "fill", nid, text, frozenset(slots),
                           direction=d, above=int(above))
        self.points.add(w)
        return w

    def delete(self, number: int | None = None) -> int:
        """Delete one breakpoint/watchpoint, or all of them; returns how many."""
        return self.points.delete(number)

    def enable(self, number: int, on: bool = True) -> None:
        self.points.enable(number, on)

    def breakpoints(self) -> list[Breakpoint | Watchpoint]:
        return self.points.listed()

    # ---- expressions ----------------------------------------------------------------------------

    def evaluate(self, text: str, node: Any = None) -> int:
        """Evaluate a debugger expression in the context of a node (default: the focused one)."""
        if not isinstance(text, str):
            raise D1Error(f"an expression is a str, not {type(text).__name__}")
        return self._evaluate(text, self.node(node))

    def _evaluate(self, text: str, node: int) -> int:
        return self._compile(expr.parse(text), text)(node)

    def _compile(self, tree: expr.Expr, text: str | None = None) -> Getter:
        return expr.compile(tree, _Names(self), text)

    # ---- inspection -----------------------------------------------------------------------------

    def mesh(self) -> MeshView:
        """Every grid position's state; nodes in a wait-for cycle are marked."""
        return views.mesh_view(self)

    def regs(self, node: Any = None) -> dict[str, int]:
        nid = self.node(node)
        st = self.emu.state
        out = {f"r{i}": int(v) for i, v in enumerate(self.emu.regs(nid))}
        out["pc"] = int(st.pc[nid])
        out["clock"] = int(st.clock[nid])
        return out

    def init_regs(self, node: Any = None) -> dict[str, int]:
        """The scalar registers the object starts this node with ({"r20": 64, ...}; the
        others start at 0): its per-node values, where nodes share one code block."""
        return {f"r{r}": v for r, v in self.emu.obj.init.of(self.node(node)).items()}

    def vregs(self, node: Any = None) -> np.ndarray:
        """uint32 [vector_regs, 16] raw bits (`.view(np.float32)` for the values)."""
        return self.emu.vregs(self.node(node))

    def acc(self, node: Any = None) -> np.ndarray:
        return self.emu.acc(self.node(node))

    def mem(self, addr: Any, count: int | None = None, fmt: str = "hex",
            node: Any = None) -> MemView:
        """SRAM of a node: `count` bytes (hex) or elements (f32, bf16, i32, i64) at addr."""
        nid = self.node(node)
        a = addr if isinstance(addr, int) else self._evaluate(str(addr), nid)
        return views.mem_view(self, nid, a, count, fmt)

    def value(self, name: str) -> TensorView:
        """Any value the program names (or a tensor of the object), as it stands now: its
        elements if live, else "not computed yet", "overwritten" (when) or "not stored" (why):
        emulator.debugger.values."""
        if not isinstance(name, str):
            raise D1Error(f"a value's name is a str, not {type(name).__name__}")
        return values.view(self, name)

    def tensor(self, name: str) -> np.ndarray:
        """The elements of value `name` gathered from its pieces; a D1Error saying why when
        they are not there (not computed yet, overwritten, never stored)."""
        v = self.value(name)
        if v.array is None:
            raise D1Error(f"{v.name}: {v.detail}")
        return v.array

    def links(self, node: Any = None) -> list[LinkView]:
        return views.link_views(self, self.node(node))

    def listing(self, node: Any = None, context: int = 5, line: int | None = None) -> Listing:
        context = integer_arg(context, "the listing's context")
        if context < 0:
            raise D1Error(f"the listing's context is a number of lines >= 0, got {context}")
        if line is not None:
            line = integer_arg(line, "a line")
        return views.listing(self, self.node(node), min(context, MAX_COUNT), line)

    def disasm(self, count: int = 10, node: Any = None) -> list[tuple[int, str, str, bool]]:
        """(pc, instruction, source location, is current) around the node's pc."""
        nid = self.node(node)
        _b, info = self._node_block(nid)
        if info is None:
            raise D1Error(f"node {self._xy_text(nid)} has no code")
        return views.disasm(self, nid, _positive(count))

    def stats(self) -> dict[str, Any]:
        """emu.stats() plus the debugger's position and checkpoint figures."""
        s = self.emu.stats()
        s["debugger"] = {"position": self.position, **self.checkpoint_info()}
        return s


class _Names:
    """What a debugger expression sees (expr.Lookup): registers rN (zero, sp, ra), pc, clock,
    x, y, id, T, symbols and code labels, and the SRAM of the node it is evaluated on."""

    def __init__(self, dbg: Debugger) -> None:
        self.dbg = dbg
        st = dbg.emu.state
        m = dbg.machine
        self.fixed: dict[str, Getter] = {
            "pc": lambda node: int(st.pc[node]),
            "clock": lambda node: int(st.clock[node]),
            "x": lambda node: int(m.xy[node][0]),
            "y": lambda node: int(m.xy[node][1]),
            "id": lambda node: node,
            "t": lambda node: dbg.position,
        }

    def name(self, n: str) -> Getter:
        dbg = self.dbg
        st = dbg.emu.state
        low = n.lower()
        if low in self.fixed:
            return self.fixed[low]
        if re.fullmatch(r"r\d+|zero|sp|ra", low):
            r = _register_number(low, dbg.machine.scalar_regs)
            return lambda node: int(st.x[node, r])
        found = [s for s in dbg.obj.symbols if s.name == n]
        if not found:
            raise ExprError(f"unknown name {n!r} in expression (registers rN, pc, clock, "
                            "x, y, id, T, labels)")
        plain = [s for s in found if s.kind != "code"]
        if plain:
            value = int(plain[0].value)
            return lambda node: value
        by_block = {s.block: int(s.value) for s in found}

        def label(node: int) -> int:
            b = int(dbg.obj.node_block[node])
            if b not in by_block:
                raise ExprError(f"label {n!r} is not in the code of node "
                                f"{dbg._xy_text(node)}")
            return by_block[b]
        return label

    def memory(self, node: int, width: int, addr: int) -> int:
        if addr < 0 or addr + width > self.dbg.machine.sram_bytes or addr % width:
            raise ExprError(f"mem{width * 8}[{addr}]: address outside SRAM or misaligned")
        raw = self.dbg.emu.state.sram[node, addr:addr + width].tobytes()
        return int.from_bytes(raw, "little", signed=True)


# ---- helpers -------------------------------------------------------------------------------------

# A count of instructions or lines above this means "as many as there are": no run gets near
# it (a run stops at MAX_RUN_CYCLES, 2^40), and it stays an int64 when added to or taken from
# the nodes' instruction counts, which a larger Python int does not (OverflowError).
MAX_COUNT = 1 << 62


def _positive(n: Any) -> int:
    v = integer_arg(n, "a count")
    if v < 1:
        raise D1Error(f"count must be >= 1, got {v}")
    return min(v, MAX_COUNT)


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
