"""`Emulator`: load an object, scatter inputs, run the mesh, gather outputs, inspect everything.

This module is the Python side of the emulator: decoding (emulator.decode), state
(emulator.state) and the jitted loop (emulator.kernel) are put together here, and run results are
turned into readable trap and deadlock reports (emulator.report).

Debugging the emulator itself: NUMBA_DISABLE_JIT=1 runs the loop as plain Python (slow, but
steppable); NUMBA_BOUNDSCHECK=1 makes every array index checked, so a missing address check shows
up as an IndexError instead of a wrong answer.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numba import njit

from d1isa import isa, traps, units
from d1isa.disasm import format_word
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS, MAX_QUANTUM, MAX_RUN_CYCLES, TIMING_CLASSES
from d1isa.numbers import is_integer
from d1isa.objfile import DTYPE_BYTES, ObjectFile, TensorLayout, TensorPiece
from d1isa.traps import CAUSES, cause_name
from emulator import kernel as K
from emulator.decode import (
    C_IMM,
    C_OP,
    C_RD,
    C_RS1,
    C_RS2,
    C_RS3,
    FELL_OFF,
    decode_object,
    kernel_table,
    written_registers,
)
from emulator.jit import precompile
from emulator.opcodes import MEM_ALIGN
from emulator.report import Chain, Deadlock, RunResult, Trap, Wait, Where
from emulator.state import (
    Snapshot,
    State,
    aligned_zeros,
    link_geometry,
    make_cfg,
    restart_arrays,
    xy_table,
)
from emulator.trace import (
    DEFAULT_EVENTS,
    DEFAULT_MAX_TRACE_EVENTS,
    DEFAULT_MESSAGES,
    REGIONS_NOTE,
    Recorder,
    chrome_trace,
)
from emulator.trace import (
    MODES as TRACE_MODES,
)
from emulator.traffic import chip_traffic, split_bytes

DEFAULT_MAX_CYCLES = 50_000_000
DEFAULT_QUANTUM = 256
# A run without a budget is cut into kernel calls of this many instructions, so Ctrl-C is
# noticed between two of them: 2^25 is about 0.6 s at 57 M node-instructions/s (2^29 took
# 7 s to stop an endless run), and a call costs microseconds, nothing next to it.
_CHUNK = 1 << 25
# An instruction count the run loop's int64 controls hold; a larger budget means the same.
_NO_LIMIT = (1 << 63) - 1
# Rows of a trace buffer (trace_events, trace_messages; tens of bytes each, allocated at once).
MAX_TRACE_ROWS = 1 << 26



class Emulator:
    """A whole mesh running one object.

    `seed` seeds every node's stochastic-rounding generator; `max_cycles` bounds every node's
    clock (a node past it traps with cause 9); `quantum` is how many instructions a node runs
    per turn (results never depend on it).

    `trace` (off by default) records what the run did, in the traced variant of the loop
    (emulator.trace): "regions" collects per-region statistics (`stats()["regions"]`), "full"
    also the events of a timeline trace (`chrome_trace()`), in buffers of `trace_events`
    region/wait rows and `trace_messages` message rows. Timing and results are identical.

    `comm` (an mpi4py communicator of more than one rank) runs the machine on MPI ranks, each
    holding only its chips' nodes: the object is then an `emulator.distributed.RankEmulator`,
    whose methods every rank calls in the same order (docs/SCALE.md). Results are
    bit-identical to one process. `window` sets the ranks' time window in cycles (default:
    the lookahead); one process has none and only checks it, so a script that passes it runs
    on one rank too.
    """

    def __new__(cls, *args: Any, comm: Any = None, **kwargs: Any) -> Emulator:
        if cls is Emulator and comm is not None and comm.Get_size() > 1:
            from emulator.distributed import RankEmulator
            return super().__new__(RankEmulator)
        return super().__new__(cls)

    def __init__(self, obj: ObjectFile, seed: int = 0,
                 max_cycles: int = DEFAULT_MAX_CYCLES, quantum: int = DEFAULT_QUANTUM,
                 trace: str | None = None, trace_events: int | None = None,
                 trace_messages: int | None = None, threads: int = 1, comm: Any = None,
                 window: int | None = None) -> None:
        if not isinstance(obj, ObjectFile):
            raise D1Error(f"Emulator takes an ObjectFile, not {type(obj).__name__}: load a file "
                          "with d1.program.load_program(path).obj, or ObjectFile.load(path) "
                          "for a .d1o")
        # (window: MPI ranks' time windows, none in one process; checked all the same)
        settings = run_settings(seed, max_cycles, quantum, window)
        # More threads than nodes could never all have work (and the partition would count
        # up to the number asked for).
        self.threads = min(_count("threads", threads, 1), max(1, obj.machine.n_live))
        self.phases = 0
        self.helped_instructions = 0
        self.obj = obj
        self.machine = m = obj.machine
        self.seed = settings["seed"]
        self.max_cycles = settings["max_cycles"]
        self.quantum = settings["quantum"]
        self.n = m.n_live
        self.code = decode_object(obj)
        self.state = State(m, self.seed)
        self.out_link, self.link_lat, self.link_bw = link_geometry(m)
        # The sending node of each link (FIFO index), and one wake flag per node (run_loop),
        # padded to whole 8-byte words.
        self.link_src = np.full(4 * self.n, -1, dtype=np.int64)
        sends = np.nonzero(self.out_link >= 0)[0]
        self.link_src[self.out_link[sends]] = sends // 4
        self._wake = np.zeros((self.n + 7) // 8 * 8, dtype=np.uint8)
        self.xy = np.ascontiguousarray(m.xy, dtype=np.int64)
        self._xyid = xy_table(self.xy, self.state.gid)
        flops = np.zeros(FELL_OFF + 1, dtype=np.int64)
        flops[:256] = isa.flops_by_opcode()
        self.flops_tab = flops
        self.cfg = make_cfg(m, self.max_cycles)
        # Debugger stop flags, one per slot of the concatenated code table.
        self.stop_flags = np.zeros(self.code.total, dtype=np.int8)
        self._flat_code = kernel_table(self.code.table)
        self._uscratch = np.zeros(16, dtype=np.uint32)
        self._fscratch = aligned_zeros((64,), np.float32)
        self._out = np.zeros(K.OUT_SIZE, dtype=np.int64)
        self._node_budget = np.zeros(self.n, dtype=np.int64)
        # Per node, the vector registers and accumulators its code can write (restart).
        self._written: tuple[np.ndarray, np.ndarray] | None = None
        # Per input tensor, where its elements go (`_ScatterPlan`, built on its first write).
        self._plans: dict[str, _ScatterPlan] = {}
        self.host_seconds = 0.0
        self.host_instructions = 0
        self.jit_seconds = 0.0
        self._warm: set[bool] = set()      # loop variants compiled or loaded (traced or not)
        self.recorder: Recorder | None = None
        if trace is not None:
            if trace not in TRACE_MODES:
                raise D1Error(f"trace must be one of {', '.join(TRACE_MODES)} or None, "
                              f"got {trace!r}")
            events, messages = (
                default if not rows else _count(name, rows, 1, MAX_TRACE_ROWS)
                for name, rows, default in (("trace_events", trace_events, DEFAULT_EVENTS),
                                            ("trace_messages", trace_messages,
                                             DEFAULT_MESSAGES)))
            self.recorder = Recorder(obj, self.code, self.n, trace, events=events,
                                     messages=messages)
        self._init_regs: tuple[np.ndarray, np.ndarray] | None = None
        # Each host thread's run_loop arguments (Emulator._thread_calls), made on the first
        # threaded run.
        self._calls: list[tuple[np.ndarray, tuple]] | None = None
        self._calls_key: tuple = ()
        self._ranges: list[tuple[int, int]] = []
        self._place_initial()

    def _place_initial(self) -> None:
        """Nodes without code halted, the object's data in SRAM and its initial registers
        (state already zero)."""
        st = self.state
        st.state[self.code.node_len == 0] = K.HALTED
        self._place_registers()
        for d in self.obj.data:
            if d.data:
                st.sram[d.node, d.addr:d.addr + len(d.data)] = np.frombuffer(d.data,
                                                                             dtype=np.uint8)
                st.hwm[d.node] = max(int(st.hwm[d.node]), d.addr + len(d.data))

    def _place_registers(self) -> None:
        """The scalar registers the object says each node starts with (the rest are 0).
        Where they go in the register array is worked out once: a training loop places them
        again before every step (restart)."""
        if self._init_regs is None:
            init = self.obj.init
            if not init:
                self._init_regs = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            else:
                has = np.nonzero(init.index >= 0)[0]
                regs = np.asarray(init.regs, dtype=np.int64)
                cols = self.state.x.shape[1]
                flat = (has[:, None] * cols + regs[None, :]).reshape(-1)
                values = np.asarray(init.rows[init.index[has]], dtype=np.int64).reshape(-1)
                self._init_regs = (flat, values)
        flat, values = self._init_regs
        if flat.size:
            self.state.x.reshape(-1)[flat] = values

    # ---- running ------------------------------------------------------------------------------

    def _geo(self) -> tuple:
        c = self.code
        code = self._flat_code
        if self.stop_flags.any():
            # Flagged slots are marked in a copy: the loop pays nothing for stop flags.
            code = kernel_table(c.table, self.stop_flags)
        return (code, c.node_base, c.node_len, self.out_link, self.link_lat,
                self.link_bw, self._xyid, self.flops_tab, self.link_src, self._wake, self.cfg)

    def _warm_up(self, node_t: tuple, fifo_t: tuple, stats_t: tuple, geo: tuple,
                 trace: tuple | None) -> None:
        """Compile (or load from the cache) outside the timed region: budget 0 runs nothing."""
        if (trace is not None) in self._warm:
            return
        _set_controls(self.cfg, self.max_cycles, quantum=1, budget=0)
        t0 = time.perf_counter()
        args = (node_t, fifo_t, stats_t, geo, self._node_budget, self._out, self._uscratch,
                self._fscratch, trace)
        # Nothing cached yet: a second process compiles helpers meanwhile (emulator.jit.precompile).
        helper = precompile.start(K.run_loop) if trace is None else None
        try:
            K.run_loop(*args)
            if trace is None:
                _warm_helpers(self.state)
        finally:
            precompile.stop(helper)
        self.jit_seconds += time.perf_counter() - t0
        self._warm.add(trace is not None)

    def _call(self, budget: int, only: int = -1, node_budget: np.ndarray | None = None,
              quantum: int | None = None) -> tuple[int, int]:
        """One run_loop call; returns (reason, instructions executed)."""
        node_t, fifo_t, stats_t = self.state.kernel_tuples()
        geo = self._geo()
        trace = self.recorder.kernel_arg() if self.recorder is not None else None
        self._warm_up(node_t, fifo_t, stats_t, geo, trace)
        if node_budget is not None:
            self._node_budget[:] = node_budget
        _set_controls(self.cfg, self.max_cycles, self.quantum if quantum is None else quantum,
                      budget, only=only, node_budget=node_budget is not None)
        t0 = time.perf_counter()
        # errstate: under NUMBA_DISABLE_JIT the loop is numpy scalar code, whose wrapping
        # 64-bit arithmetic would otherwise warn; jitted code never looks at it.
        with np.errstate(all="ignore"):
            K.run_loop(node_t, fifo_t, stats_t, geo, self._node_budget, self._out,
                       self._uscratch, self._fscratch, trace)
        self.host_seconds += time.perf_counter() - t0
        executed = int(self._out[K.O_EXECUTED])
        self.host_instructions += executed
        return int(self._out[K.O_REASON]), executed

    def run_until(self, budget: int = -1, only: int | None = None,
                  node_budget: np.ndarray | None = None,
                  quantum: int | None = None) -> tuple[int, int, int]:
        """One serial call of the run loop, for tools that drive it (the debugger).

        Runs until no node can make progress, `budget` instructions in all (-1: no limit), a
        stop flag, or every node has spent its `node_budget` entry; `only` restricts the run to
        one node. Returns (reason, instructions executed, stopped node or -1), reason being
        emulator.kernel's R_IDLE, R_STOP or R_BUDGET. A node stopped by a flag gets `skip` = its
        pc, so resuming executes the flagged instruction once (as run() and step() do).
        """
        nid = -1 if only is None else self.node_id(only)
        budget = min(_count("budget", budget, -1), _NO_LIMIT)
        reason, executed = self._call(budget, only=nid, node_budget=node_budget,
                                      quantum=quantum)
        node = -1
        if reason == K.R_STOP:
            node = int(self._out[K.O_STOP_NODE])
            self.state.skip[node] = self.state.pc[node]
        return reason, executed, node

    def _partition(self, parts: int) -> list[tuple[int, int]]:
        """Contiguous node ranges, one per thread, with about equal numbers of nodes that have
        code. On larger machines cuts fall on multiples of 8 nodes, so that the threads share no
        word of wake flags and no cache line of the per-node int64 arrays (pc, clock, ...)."""
        has_code = np.cumsum(self.code.node_len > 0)
        total = int(has_code[-1]) if self.n else 0
        cuts = [0]
        for t in range(1, parts):
            cut = int(np.searchsorted(has_code, total * t / parts, side="left")) + 1
            if self.n >= 64 * parts:
                cut = (cut + 4) // 8 * 8
            cuts.append(min(self.n, max(cuts[-1], cut)))
        cuts.append(self.n)
        return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]

    def _call_threads(self) -> tuple[int, int]:
        """Run every node to the end on self.threads threads; returns (reason, executed).

        Each thread runs run_loop on its own node range (the loop releases the GIL); when its
        range has nothing to run it runs turns of other ranges' nodes, and it returns when
        neither makes progress; that is a phase. Links between the ranges are read and written
        concurrently (fenced, see emulator.kernel), and a node runs on one thread at a time
        (claimed, see emulator.sync). The run ends after a phase in which no thread executed an
        instruction: then nothing changed during the whole phase, every node was tried at least
        once against that unchanging state (by its own thread, or by the one holding its claim
        when its own thread came to it), and none could move, which is exactly when the serial
        loop stops too. It also ends after a phase that left every node halted or trapped
        (the usual end of a program), without that confirming phase: no such node can move.
        Results are identical to a serial run.
        """
        node_t, fifo_t, stats_t = self.state.kernel_tuples()
        geo = self._geo()
        self._warm_up(node_t, fifo_t, stats_t, geo, None)
        calls = self._thread_calls(node_t, fifo_t, stats_t, geo)
        pool = _thread_pool(len(calls) - 1)
        total = 0
        state = self.state.state
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            while True:
                # Every unfinished node awake before any thread starts (each call also wakes its
                # own range), so a thread that starts first can help with any range at once.
                np.less(self.state.state, K.HALTED, out=self._wake[:self.n], casting="unsafe")
                futures = [pool.submit(K.run_loop, *args) for _, args in calls[1:]]
                try:
                    K.run_loop(*calls[0][1])
                finally:
                    # Even on Ctrl-C: no thread may still be running when this returns.
                    for f in futures:
                        f.result()
                self.phases += 1
                k = sum(int(out[K.O_EXECUTED]) for out, _ in calls)
                self.helped_instructions += sum(int(out[K.O_HELPED]) for out, _ in calls)
                total += k
                # Every node halted or trapped: no node can run again, so the phase that
                # would confirm it (executing nothing) is not needed.
                if k == 0 or not (state < K.HALTED).any():
                    break
        self.host_seconds += time.perf_counter() - t0
        self.host_instructions += total
        return K.R_IDLE, total

    def _thread_calls(self, node_t: tuple, fifo_t: tuple, stats_t: tuple,
                      geo: tuple) -> list[tuple[np.ndarray, tuple]]:
        """(out, run_loop arguments) for each host thread, made once and kept (a training loop
        runs the same emulator many times); each thread's controls are written again from
        self.cfg and the current settings before every run."""
        key = (node_t, fifo_t, stats_t, *geo[:-1])
        if (self._calls is None or len(self._calls_key) != len(key) + 1
                or self._calls_key[0] != self.threads
                or any(a is not b for a, b in zip(self._calls_key[1:], key, strict=True))):
            ranges = self._partition(self.threads)
            calls = []
            for _ in ranges:
                cfg = self.cfg.copy()
                out = np.zeros(K.OUT_SIZE, dtype=np.int64)
                scratch = (np.zeros(16, dtype=np.uint32), aligned_zeros((64,), np.float32))
                calls.append((out, (node_t, fifo_t, stats_t, geo[:-1] + (cfg,),
                                    self._node_budget, out, *scratch, None)))
            self._calls, self._calls_key, self._ranges = calls, (self.threads, *key), ranges
        for (lo, hi), (_, args) in zip(self._ranges, self._calls, strict=True):
            cfg = args[3][-1]
            cfg[:] = self.cfg
            _set_controls(cfg, self.max_cycles, self.quantum, _CHUNK // len(self._ranges),
                          lo=lo, hi=hi)
        return self._calls

    def run(self, max_instructions: int | None = None) -> RunResult:
        """Run until no node can make progress (or a stop flag, or `max_instructions`).

        With threads > 1 (and no instruction limit, stop flag or trace, which need the one
        serial order) the nodes are shared out among threads; the results are the same.
        """
        if max_instructions is not None:
            max_instructions = _count("max_instructions", max_instructions, 0)
        t0 = time.perf_counter()
        if (self.threads > 1 and max_instructions is None and self.recorder is None
                and not self.stop_flags.any() and self.n > 1):
            reason, total = self._call_threads()
            return self._result(reason, total, time.perf_counter() - t0)
        total = 0
        while True:
            if max_instructions is None:
                budget = _CHUNK
            else:
                budget = min(_CHUNK, max_instructions - total)
            if budget <= 0:
                reason = K.R_BUDGET
                break
            reason, k = self._call(budget)
            total += k
            if reason != K.R_BUDGET or (max_instructions is not None
                                         and total >= max_instructions):
                break
        return self._result(reason, total, time.perf_counter() - t0)

    def step(self, n: int = 1, node: int | tuple[int, int] | None = None) -> RunResult:
        """Execute n instructions on one node, or (node=None) on every runnable node in id order.

        With node=None each node gets up to n instructions; a node blocked early that another
        node's sends unblock proceeds until it too has run n or cannot go on.
        """
        n = min(_count("step count", n, 0), _NO_LIMIT)
        t0 = time.perf_counter()
        if node is None:
            budget = np.full(self.n, n, dtype=np.int64)
            reason, k = self._call(-1, node_budget=budget, quantum=max(1, min(n, self.quantum)))
        else:
            nid = self.node_id(node)
            reason, k = self._call(n, only=nid, quantum=max(1, n))
        return self._result(reason, k, time.perf_counter() - t0)

    def restart(self) -> None:
        """Run the loaded program again from the start, on the SRAM the last run left: every
        node at instruction 0 with its registers as the object starts them (the initial
        registers; all others zero), clock, FIFOs and statistics at zero (and the nodes
        without code halted), SRAM untouched and the object's data not placed again.
        This is how a training step follows the last one: params stay where the last run's
        updates wrote them, and only the new batch's inputs need to be written."""
        if self._written is None:
            self._written = written_registers(self.code, self.machine.vector_regs,
                                              self.machine.accumulators)
        self.state.restart(self._written)
        if self.recorder is not None:
            self.recorder.clear()
        self.state.state[self.code.node_len == 0] = K.HALTED
        self._place_registers()

    def reset(self) -> None:
        """Back to the state right after loading (data placed, inputs not), in place."""
        self.state.clear(self.seed)
        if self.recorder is not None:
            self.recorder.clear()
        self._place_initial()

    def close(self) -> None:
        """Nothing to free in one process (the arrays go with the object); on MPI ranks,
        frees every rank's share (emulator.distributed), after which its methods raise a
        D1Error."""

    # ---- stop flags (for the debugger) --------------------------------------------------------

    def code_slot(self, node: int | tuple[int, int], pc: int) -> int:
        """Index into the concatenated code table (and stop_flags) of node's instruction pc."""
        nid = self.node_id(node)
        pc = _pc(pc)
        ln = int(self.code.node_len[nid])
        if not 0 <= pc < ln:
            raise D1Error(f"pc {pc} is outside node {nid}'s code (0..{ln - 1})")
        return int(self.code.node_base[nid]) + int(pc)

    def set_stop(self, node: int | tuple[int, int], pc: int, on: bool = True) -> None:
        """Flag (or unflag) node's instruction pc. Code blocks are shared: every node running the
        same block stops there too."""
        self.stop_flags[self.code_slot(node, pc)] = 1 if on else 0

    def clear_stops(self) -> None:
        self.stop_flags[:] = 0

    # ---- results ------------------------------------------------------------------------------

    def _result(self, reason: int, executed: int, host: float) -> RunResult:
        st = self.state
        cycles = int(st.clock.max()) if self.n else 0
        seconds = cycles / self.machine.clock_hz
        res = RunResult(status="halted", cycles=cycles, seconds=seconds, instructions=executed,
                        host_seconds=host)
        if reason != K.R_STOP and (st.state == K.HALTED).all():
            return res                  # the usual end: every node halted, nothing to report
        res.traps = [self._trap(i) for i in np.nonzero(st.state == K.TRAPPED)[0]]
        blocked = np.nonzero((st.state == K.BLOCKED_SEND) | (st.state == K.BLOCKED_RECV))[0]
        if reason == K.R_STOP:
            nid = int(self._out[K.O_STOP_NODE])
            pc = int(st.pc[nid])
            st.skip[nid] = pc           # resuming executes the flagged instruction once
            res.status = "stopped"
            res.stop = self.where(nid, pc)
            return res
        waiting = (st.state == K.RUNNING).any() or (
            reason == K.R_BUDGET and blocked.size > 0)
        if waiting:
            # step() left nodes that can go on, or a budget ran out (and a blocked node may have
            # become unblocked since its last try).
            res.status = "running"
            return res
        if blocked.size:
            res.deadlock = self.wait_chains(blocked)
        if res.traps:
            res.status = "trapped"
        elif res.deadlock is not None and res.deadlock.is_cycle:
            res.status = "deadlock"
        elif blocked.size:
            res.status = "stuck"
        return res

    def where(self, node: int, pc: int | None = None) -> Where:
        """Position, instruction text and source location of node at pc (default: its pc)."""
        node = self.node_id(node)
        pc = int(self.state.pc[node]) if pc is None else _pc(pc)
        x, y = (int(v) for v in self.xy[node])
        ln = int(self.code.node_len[node])
        if not 0 <= pc < ln:
            return Where(node, x, y, pc, None, None, None)
        g = int(self.code.node_base[node]) + pc
        text = format_word(int(self.code.words[g]))
        src, asm = self._location(g)
        return Where(node, x, y, pc, text, src, asm)

    def _location(self, g: int) -> tuple[str | None, str | None]:
        row = self.code.lines[g]
        files = self.obj.files
        fi, line, col, afi, aline = (int(v) for v in row)

        def name(i: int) -> str:
            return files[i] if 0 <= i < len(files) else f"<file {i}>"

        src = None
        if fi >= 0 and line > 0:
            src = f"{name(fi)}:{line}" + (f":{col}" if col > 0 else "")
        asm = None
        if afi >= 0 and aline > 0 and not (afi == fi and aline == line):
            asm = f"{name(afi)}:{aline}"
        return src, asm

    def _trap(self, node: int) -> Trap:
        st = self.state
        code = int(st.cause[node])
        w = self.where(node)
        return Trap(w, code, cause_name(code), int(st.trap_arg[node]),
                    self._trap_detail(node, code))

    def _trap_detail(self, node: int, code: int) -> str:
        """A sentence saying what exactly was wrong, recomputed from the unchanged registers."""
        st = self.state
        pc = int(st.pc[node])
        ln = int(self.code.node_len[node])
        if code == traps.CYCLE_LIMIT:
            return (f"clock {units.cycles(st.clock[node])} passed max_cycles "
                    f"{self.max_cycles:,}")
        if code == traps.PC_OUT_OF_RANGE:
            size = units.count(ln, "instruction")
            if pc == ln:
                # Only an instruction that can go on to the next one can fall off the end;
                # after a last halt, trap or jump, a jump went to pc = len.
                last = isa.BY_OPCODE.get(int(self.code.table[self.code.node_base[node] + ln - 1,
                                                             C_OP]))
                if last is not None and last.mnemonic in isa.NO_FALL_THROUGH:
                    return (f"a jump went to pc {pc}, just past the end of the code ({size}; "
                            f"the last, {last.mnemonic}, does not fall through)")
                return f"execution fell off the end of the code ({size})"
            return f"pc {pc} is outside the node's code (0..{ln - 1})"
        if not 0 <= pc < ln:
            return ""
        g = int(self.code.node_base[node]) + pc
        row = self.code.table[g]
        op = int(row[C_OP])
        word = int(self.code.words[g])
        if code == traps.ILLEGAL_INSTRUCTION:
            try:
                ins, values = isa.decode(word)
            except isa.EncodingError:
                return f"0x{word:016x} is not a valid instruction word"
            m = self.machine
            limits = {"x": ("r", m.scalar_regs), "v": ("v", m.vector_regs),
                      "a": ("a", m.accumulators)}
            for operand in ins.operands:
                if operand in isa.OPERANDS:
                    field, kind = isa.OPERANDS[operand]
                    if kind in limits and values[field] >= limits[kind][1]:
                        prefix, count = limits[kind]
                        return (f"register {prefix}{values[field]} does not exist "
                                f"(the machine has {prefix}0..{prefix}{count - 1})")
            return ""
        x = st.x[node]
        if code in (traps.SRAM_OUT_OF_RANGE, traps.MISALIGNED):
            ins = isa.BY_OPCODE.get(op)
            mnem = ins.mnemonic if ins is not None else "?"
            if ins is not None and ins.memory is not None and ins.memory.shape == "message":
                return (f"{mnem}: {int(x[row[C_RS2]])} bytes at address {int(x[row[C_RS1]])} "
                        f"(SRAM is 0..{self.machine.sram_bytes - 1})")
            imm = int(row[C_IMM])
            if ins is not None and "[rs1+imm]" in ins.operands:
                imm = imm - (1 << 32) if imm >= 1 << 31 else imm
                a = _wrap64(int(x[row[C_RS1]]) + imm)
                sram = f"SRAM is 0..{self.machine.sram_bytes - 1}"
                if ins.memory is not None and ins.memory.shape == "strided":
                    # The stride is the last operand (rs2 for loads, rs3 for stores).
                    stride = int(x[row[C_RS2 if ins.operands[-1] == "rs2" else C_RS3]])
                    lane = self._faulting_lane(a, stride, ins.memory.width, code)
                    if lane is not None:
                        la = _wrap64(a + lane * stride)
                        why = (f"not {ins.memory.width}-aligned" if code == traps.MISALIGNED
                               else f"outside SRAM (0..{self.machine.sram_bytes - 1})")
                        return (f"{mnem}: lane {lane} address {la} (0x{la & 0xFFFFFFFFFFFFFFFF:x})"
                                f" = {a} + {lane} x stride {stride} is {why}")
                if code == traps.MISALIGNED:
                    return (f"{mnem}: address {a} (0x{a & 0xFFFFFFFFFFFFFFFF:x}) is not "
                            f"{int(MEM_ALIGN[op])}-aligned")
                return f"{mnem}: address {a} (0x{a & 0xFFFFFFFFFFFFFFFF:x}); {sram}"
            if code == traps.MISALIGNED:
                return f"{mnem}: a tile row is not {int(MEM_ALIGN[op])}-aligned"
            return f"{mnem}: a tile row is outside SRAM (0..{self.machine.sram_bytes - 1})"
        if code == traps.USER_TRAP:
            return ""
        if code == traps.NO_NEIGHBOUR:
            # A relay has two directions (dir checked first, then dir2): name the one that
            # failed, so `relay W, E` on the west edge does not leave the reader guessing.
            nid = int(st.gid[node])
            dirs = [int(row[C_RS3])]
            if op in isa.RELAY_OPCODES:
                dirs.append(int(row[C_RD]))
            d = next((d for d in dirs if self.machine.neighbors[nid, d] < 0), dirs[0])
            return f"there is no live node {DIRECTIONS[d]} of this node (mesh edge)"
        if code == traps.BAD_MESSAGE_LENGTH:
            return (f"message length {int(x[row[C_RS2]])} B is outside "
                    f"1..{self.machine.max_message_bytes}")
        if code == traps.MESSAGE_LENGTH_MISMATCH:
            d = int(row[C_RS3])
            link = node * 4 + d
            msgs = st.fifo_messages(link)
            got = msgs[0][0] if msgs else 0
            net = isa.BY_OPCODE[op].network
            want = net.nbytes if net.nbytes is not None else int(x[row[C_RS2]])
            return (f"the message from {DIRECTIONS[d]} is {got} B, the instruction expects "
                    f"{want} B")
        return CAUSES.get(code, ("", ""))[1]

    def _faulting_lane(self, base: int, stride: int, width: int, code: int) -> int | None:
        """The first lane of a strided access that faults with `code` (range is checked
        before alignment, as the machine does)."""
        sram = self.machine.sram_bytes
        for i in range(self.machine.vector_lanes_f32):
            la = _wrap64(base + i * stride)
            bad = (la < 0 or la + width > sram) if code == traps.SRAM_OUT_OF_RANGE \
                else la % width != 0
            if bad:
                return i
        return None

    # ---- wait-for analysis --------------------------------------------------------------------

    def _wait(self, node: int) -> Wait:
        """What the blocked node of state row `node` waits for (other nodes by machine id)."""
        st = self.state
        w = self.where(node)
        g = int(self.code.node_base[node]) + int(st.pc[node])
        row = self.code.table[g]
        op = int(row[C_OP])
        nbr = self.machine.neighbors
        depth = self.machine.fifo_depth
        nid = int(st.gid[node])
        if st.state[node] == K.BLOCKED_SEND:
            d = int(row[C_RD]) if op in isa.RELAY_OPCODES else int(row[C_RS3])
            t = int(nbr[nid, d])
            # the FIFO it sends into (on MPI ranks, maybe this rank's ghost of another's)
            link = int(self.out_link[node * 4 + d])
            return Wait(w, "send", d, t, self._xy(t), st.fifo_fill(link), depth)
        d = int(row[C_RS3])
        s = int(nbr[nid, d])
        return Wait(w, "recv", d, s, self._xy(s))

    def _xy(self, node: int) -> tuple[int, int]:
        xy = self.machine.xy            # any node of the machine, by its id
        return int(xy[node, 0]), int(xy[node, 1])

    def wait_chains(self, blocked: np.ndarray | None = None) -> Deadlock:
        """Group blocked nodes into wait-for chains: cycles, and chains ending at other nodes."""
        st = self.state
        if blocked is None:
            blocked = np.nonzero((st.state == K.BLOCKED_SEND) | (st.state == K.BLOCKED_RECV))[0]
        waits = {int(st.gid[b]): self._wait(int(b)) for b in blocked}
        return wait_chains_of(waits, self._chain_end)

    def _chain_end(self, node: int) -> tuple[Where, str]:
        """Where the node of state row `node` is, and its state's words, for a chain ending
        at it."""
        st = self.state
        sname = K.STATE_NAMES[int(st.state[node])]
        if st.state[node] == K.TRAPPED:
            sname = f"trapped ({cause_name(int(st.cause[node]))})"
        elif st.state[node] == K.HALTED and self.code.node_len[node] == 0:
            sname = "no code (it halts at the start)"
        return self.where(node), sname

    # ---- host I/O -----------------------------------------------------------------------------

    def tensors(self, role: str | None = None) -> list[str]:
        return [t.name for t in self.obj.tensors if role is None or t.role == role]

    def set_input(self, name: str, array: Any) -> None:
        """Scatter `array` to every piece of tensor `name`, converted to the tensor's dtype.

        The first write of a tensor works out where each of its elements goes (`_ScatterPlan`);
        every later one (a training step's batch) is one indexed copy."""
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = _ScatterPlan(self.obj.tensor(name), self.state)
        t = plan.tensor
        a = _host_array(array, f"input '{name}'")
        if a.shape != tuple(t.shape):
            raise D1Error(f"input '{name}' must have shape {tuple(t.shape)}, got {a.shape}")
        plan.write(_to_raw(a, t))

    def output(self, name: str, chip: tuple[int, int] | None = None) -> np.ndarray:
        """Gather tensor `name` from its pieces: float32 for f32/bf16, int32 for i32, of the
        shape the program declares (a 0-d DSL output, held as one element, comes back 0-d,
        as `compiler.reference` gives it). With `chip` = (cx, cy), only from the pieces that
        chip's nodes hold: on a data-parallel program every chip holds its own copy of each
        param."""
        t = self.obj.tensor(name)
        if chip is not None:
            t = on_chip(self.machine, t, range(len(t.pieces)), chip)[0]
        return as_declared(self.obj, name, self.gather(t))

    def gather(self, t: TensorLayout) -> np.ndarray:
        """The elements `t`'s pieces hold now (any layout: an object tensor, or a named value of
        the debugger's record, d1isa.debuginfo), as `output` returns them."""
        return assemble_output(t, [_piece_view(self.state.sram, p, t.dtype) for p in t.pieces])

    # ---- inspection ---------------------------------------------------------------------------

    def node_id(self, node: int | tuple[int, int]) -> int:
        """A live-node id from an id or an (x, y) pair of integers (numpy's too). Anything
        else is a D1Error: int() read "a" as a ValueError and 1.5 as node 1."""
        try:
            if isinstance(node, bool) or (isinstance(node, (tuple, list))
                                          and any(isinstance(v, bool) for v in node)):
                raise TypeError
            if isinstance(node, (tuple, list)):
                if len(node) != 2:
                    raise TypeError
                return self.machine.node_id(operator.index(node[0]), operator.index(node[1]))
            nid = operator.index(node)
        except TypeError:
            raise D1Error(f"a node is an id or (x, y), got {node!r}") from None
        if not 0 <= nid < self.n:
            raise D1Error(f"node id {nid} is out of range 0..{self.n - 1}")
        return nid

    def regs(self, node: int | tuple[int, int]) -> np.ndarray:
        return self.state.x[self.node_id(node), :self.machine.scalar_regs].copy()

    def vregs(self, node: int | tuple[int, int]) -> np.ndarray:
        """Vector registers as raw bits, uint32 [vector_regs, 16] (`.view(np.float32)`)."""
        return self.state.v[self.node_id(node)].copy()

    def acc(self, node: int | tuple[int, int]) -> np.ndarray:
        return self.state.acc[self.node_id(node)].copy()

    def sram(self, node: int | tuple[int, int], addr: int, n: int) -> np.ndarray:
        nid = self.node_id(node)
        try:
            addr, n = operator.index(addr), operator.index(n)
        except TypeError:
            raise D1Error(f"an SRAM address and length are integers, got {addr!r}, {n!r}"
                          ) from None
        if addr < 0 or n < 0 or addr + n > self.machine.sram_bytes:
            raise D1Error(f"SRAM range {addr}+{n} is outside 0..{self.machine.sram_bytes - 1}")
        return self.state.sram[nid, addr:addr + n].copy()

    def fifo(self, node: int | tuple[int, int], direction: int | str
             ) -> list[tuple[int, int, bytes]]:
        """Messages waiting at `node` from `direction` (N/E/S/W or 0..3), oldest first, as
        (length, arrival time, payload)."""
        nid = self.node_id(node)
        if isinstance(direction, str):
            d = DIRECTIONS.index(direction.upper()) if direction.upper() in DIRECTIONS else -1
        else:
            d = int(direction) if is_integer(direction) else -1
        if not 0 <= d < 4:
            raise D1Error(f"direction must be N, E, S, W or 0..3, got {direction!r}")
        return self.state.fifo_messages(nid * 4 + d)

    def node_states(self) -> list[str]:
        """State name of every node, by id: running, blocked on send/receive, halted, trapped."""
        return [K.STATE_NAMES[int(s)] for s in self.state.state]

    def pc(self, node: int | tuple[int, int]) -> int:
        return int(self.state.pc[self.node_id(node)])

    def clock(self, node: int | tuple[int, int]) -> int:
        return int(self.state.clock[self.node_id(node)])

    def snapshot(self) -> Snapshot:
        """A copy of all state, statistics and FIFOs (State.snapshot), with the host timing."""
        snap = self.state.snapshot()
        snap.extra["host"] = (self.host_seconds, self.host_instructions)
        return snap

    def restore(self, snap: Snapshot) -> None:
        self.state.restore(snap)
        self.host_seconds, self.host_instructions = snap.extra.get("host", (0.0, 0))

    def state_dict(self) -> dict[str, Any]:
        return self.state.state_dict()

    # ---- statistics ---------------------------------------------------------------------------

    def _all_nodes(self) -> Any:
        """The per-node figures of the whole machine, in id order, as State attributes
        (clock, count, flops, hwm, stall, stall_send, link_*, pc, state, busy()): the state
        itself here; gathered from every rank on MPI (emulator.distributed)."""
        return self.state

    def totals(self) -> dict[str, int]:
        """The modelled figures of the run since the last start, summed over the mesh: what a
        caller that runs the object many times (a training loop) reads after each run, at the
        cost of a few numpy sums. `stats` gives the same figures and everything else."""
        st = self._all_nodes()
        cycles, instructions, mma, flops, stall, messages, link_bytes, hwm = _node_sums(st)
        if self.machine.chips > 1:
            on_chip, chip_edge = split_bytes(self.machine, st.link_bytes)
        else:
            on_chip, chip_edge = link_bytes, 0
        out = {
            "cycles": cycles,
            "instructions": instructions,
            "mma_bf16_instructions": mma,
            "flops": flops,
            "stall_cycles": stall,
            "link_bytes": on_chip + chip_edge,
            "on_chip_bytes": on_chip,
            "chip_edge_bytes": chip_edge,
            "link_messages": messages,
            "sram_high_water_bytes": hwm,
        }
        if self.machine.chips > 1:
            # per chip: out across its edges (by edge), in across them, on chip
            # (emulator.traffic), and the bytes out alone
            rows = chip_traffic(self.machine, st.link_bytes)
            out["chip_traffic"] = rows
            out["chip_edge_bytes_by_chip"] = [r["edge_bytes_out"] for r in rows]
        return out

    def stats(self) -> dict[str, Any]:
        """Everything measured, JSON-serialisable. Model figures are "modelled"; emulator speed
        is "measured on the host"."""
        m = self.machine
        st = self._all_nodes()
        n = m.n_live
        xy = m.xy
        cycles = int(st.clock.max()) if n else 0
        seconds = cycles / m.clock_hz
        count = st.count
        by_class = {c: int(count[:, i].sum()) for i, c in enumerate(TIMING_CLASSES)}
        total_flops = int(st.flops.sum())
        fps = total_flops / seconds if seconds > 0 else 0.0
        dtype = "bf16" if by_class["mma_bf16"] > 0 else "f32"
        peak = {k: float(v) for k, v in m.peak_flops.items()}
        pct = {k: (100.0 * fps / v if v else 0.0) for k, v in peak.items()}
        busy = st.busy()
        stall_recv = st.stall - st.stall_send
        links = []
        nbr = m.neighbors
        crosses = m.link_crosses_chip if m.chips > 1 else None
        for s in range(n):
            for d in range(4):
                if st.link_msgs[s, d]:
                    t = int(nbr[s, d])
                    links.append({
                        "from": [int(xy[s, 0]), int(xy[s, 1])], "dir": DIRECTIONS[d],
                        "to": [int(xy[t, 0]), int(xy[t, 1])],
                        "bytes": int(st.link_bytes[s, d]), "messages": int(st.link_msgs[s, d]),
                        "busy_cycles": int(st.link_busy[s, d]),
                        "utilisation": (float(st.link_busy[s, d]) / cycles) if cycles else 0.0,
                        "chip_edge": bool(crosses is not None and crosses[s, d]),
                    })
        links.sort(key=lambda r: (-r["busy_cycles"], -r["bytes"]))
        on_chip, chip_edge = split_bytes(m, st.link_bytes)
        instructions = int(count.sum())
        out: dict[str, Any] = {
            "machine": m.name,
            "live_nodes": n,
            "clock_hz": m.clock_hz,
            "machine_params": m.to_dict(),
            "mesh": {"width": m.width, "height": m.height,
                     "harvested": [[int(x), int(y)] for y, x in
                                   zip(*np.nonzero(~m.live_grid), strict=True)]},
            "modelled": {
                "kernel_cycles": cycles,
                "kernel_seconds": seconds,
                "instructions": instructions,
                "instructions_by_class": by_class,
                "flops": total_flops,
                "flops_per_second": fps,
                "peak_dtype": dtype,
                "peak_flops_per_second": peak,
                "percent_of_peak": pct[dtype],
                "percent_of_peak_by_dtype": pct,
                "busy_cycles": int(busy.sum()),
                "stall_cycles": int(st.stall.sum()),
                "stall_send_cycles": int(st.stall_send.sum()),
                "stall_recv_cycles": int(stall_recv.sum()),
                "sram_high_water_bytes": int(st.hwm.max()) if n else 0,
                "link_bytes": on_chip + chip_edge,
                "on_chip_bytes": on_chip,
                "chip_edge_bytes": chip_edge,
                "link_messages": int(st.link_msgs.sum()),
            },
            "host": {
                "note": "measured on the host",
                "wall_seconds": self.host_seconds,
                "node_instructions": self.host_instructions,
                "node_instructions_per_second": (self.host_instructions / self.host_seconds
                                                 if self.host_seconds > 0 else 0.0),
                "jit_seconds": self.jit_seconds,
                "threads": self.threads,
                "phases": self.phases,
                "helped_instructions": self.helped_instructions,
                "state_bytes": self.state.nbytes,
            },
            "units": {"kernel_cycles": "cycles", "kernel_seconds": "s", "flops": "FLOP",
                      "flops_per_second": "FLOP/s", "percent_of_peak": "%",
                      "bytes": "B", "busy_cycles": "cycles", "stall_cycles": "cycles",
                      "sram_high_water_bytes": "B", "wall_seconds": "s",
                      "node_instructions_per_second": "node-instructions/s"},
            "nodes": {
                "x": [int(v) for v in xy[:, 0]],
                "y": [int(v) for v in xy[:, 1]],
                "state": [K.STATE_NAMES[int(s)] for s in st.state],
                "pc": st.pc.tolist(),
                "clock": st.clock.tolist(),
                "timing_classes": list(TIMING_CLASSES),
                "count": count.tolist(),
                "flops": st.flops.tolist(),
                "busy": busy.tolist(),
                "stall": st.stall.tolist(),
                "stall_send": st.stall_send.tolist(),
                "stall_recv": stall_recv.tolist(),
                "sram_hwm": st.hwm.tolist(),
            },
            "links": {
                "directions": list(DIRECTIONS),
                "bytes": st.link_bytes.tolist(),
                "messages": st.link_msgs.tolist(),
                "busy_cycles": st.link_busy.tolist(),
                "busiest": links[:10],
            },
        }
        if m.chips > 1:
            edge = [r for r in links if r["chip_edge"]]
            out["chips"] = {
                "note": "per chip: edge_bytes_out left the chip across its edges (by the "
                        "direction they left in), edge_bytes_in came in across them, "
                        "on_chip_bytes went between two of its own nodes (docs/MACHINE.md)",
                "grid": [m.chips_x, m.chips_y],
                "per_chip": chip_traffic(m, st.link_bytes),
                "busiest_edge_links": edge[:10],
            }
        if self.recorder is not None:
            out["modelled"]["sram_bytes"] = self.recorder.sram_bytes()
            out["units"]["sram_bytes"] = "B"
            out["regions"] = self.recorder.region_stats(st)
            out["regions_note"] = REGIONS_NOTE
        return out

    def chrome_trace(self, max_events: int = DEFAULT_MAX_TRACE_EVENTS,
                     program: str = "") -> dict[str, Any]:
        """The run as a Chrome / Perfetto trace-event document (needs trace="full")."""
        if self.recorder is None or self.recorder.mode != "full":
            raise D1Error("this emulator records no trace; create it with trace=\"full\"")
        return chrome_trace(self, self.recorder, max_events=max_events, program=program)


def wait_chains_of(waits: dict[int, Wait], end_of: Callable[[int], tuple[Where, str]]
                   ) -> Deadlock:
    """Group blocked nodes (`waits`, by machine node id, in id order) into wait-for chains:
    cycles, and chains ending at a node that is not blocked, which `end_of(id)` describes
    (its Where and state words). On MPI ranks the waits and ends are gathered first
    (emulator.distributed), so the chains are the same for any number of ranks."""
    term: dict[int, tuple[str, int]] = {}
    cycles: list[list[int]] = []
    for b in waits:
        path: list[int] = []
        on_path: set[int] = set()
        cur = b
        while cur in waits and cur not in term and cur not in on_path:
            on_path.add(cur)
            path.append(cur)
            cur = waits[cur].other
        if cur in on_path:
            cyc = path[path.index(cur):]
            cid = len(cycles)
            cycles.append(cyc)
            for c in cyc:
                term[c] = ("cycle", cid)
            key = ("cycle", cid)
            rest = path[:path.index(cur)]
        elif cur in term:
            key = term[cur]
            rest = path
        else:
            key = ("end", cur)
            rest = path
        for c in rest:
            term[c] = key
    chains: list[Chain] = []
    for cid, cyc in enumerate(cycles):
        # Start the cycle at its lowest node id, for a stable report.
        i = cyc.index(min(cyc))
        cyc = cyc[i:] + cyc[:i]
        behind = sum(1 for b, k in term.items() if k == ("cycle", cid)) - len(cyc)
        chains.append(Chain([waits[c] for c in cyc], True, behind=behind))
    ends = sorted({k[1] for k in term.values() if k[0] == "end"})
    for e in ends:
        members = [b for b, k in term.items() if k == ("end", e)]

        def depth_of(b: int, e: int = e) -> int:
            d, cur = 0, b
            while cur != e:
                cur = waits[cur].other
                d += 1
            return d

        start = max(members, key=lambda b: (depth_of(b), -b))
        path = []
        cur = start
        while cur != e:
            path.append(waits[cur])
            cur = waits[cur].other
        where, sname = end_of(e)
        chains.append(Chain(path, False, end=where, end_state=sname,
                            behind=len(members) - len(path)))
    return Deadlock(chains, len(waits))


def _wrap64(a: int) -> int:
    """An address as the machine forms it: rs1 + offset in 64-bit two's complement, wrapping,
    read as signed (docs/ISA.md, "Memory"), so a trap report names the address that faulted,
    not a sum no 64-bit register can hold."""
    return (a + (1 << 63)) % (1 << 64) - (1 << 63)


def _set_controls(cfg: np.ndarray, max_cycles: int, quantum: int, budget: int, only: int = -1,
                  node_budget: bool = False, lo: int = 0, hi: int = 0) -> None:
    """Write one run_loop call's controls into cfg (emulator.kernel's K_* slots): hi = 0 means
    every node, else the thread's range [lo, hi)."""
    cfg[K.K_MAX_CYCLES] = max_cycles
    cfg[K.K_QUANTUM] = quantum
    cfg[K.K_BUDGET] = budget
    cfg[K.K_ONLY_NODE] = only
    cfg[K.K_USE_NODE_BUDGET] = 1 if node_budget else 0
    cfg[K.K_LO], cfg[K.K_HI] = lo, hi


def _window(value: Any) -> int:
    """The `window=` argument: cycles per time window on MPI ranks (docs/SCALE.md), an integer
    in 1 .. MAX_RUN_CYCLES. One process has no windows and only checks it, so that a script
    passing it runs on one rank as on several."""
    if not is_integer(value):
        raise D1Error(f"window must be an integer number of cycles, not {type(value).__name__}")
    if not 1 <= value <= MAX_RUN_CYCLES:
        raise D1Error(f"window must be in 1 .. {MAX_RUN_CYCLES:,} cycles, got {value:,}")
    return int(value)


def run_settings(seed: Any, max_cycles: Any, quantum: Any, window: Any) -> dict[str, Any]:
    """The constructor's settings checked, one process's and MPI ranks' alike (the bounds of
    `d1 run`'s options): seed, max_cycles, quantum, and window (None, or cycles)."""
    return {"seed": _count("seed", seed),
            "max_cycles": _count("max_cycles", max_cycles, 0, MAX_RUN_CYCLES),
            "quantum": _count("quantum", quantum, 1, MAX_QUANTUM),
            "window": None if window is None else _window(window)}


def _count(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An integer argument of `Emulator` in low .. high (the command line's bounds): a wrong
    type or range is a D1Error when the emulator is made, not an OverflowError from the run
    loop's int64 controls, or a thread partition that counts to 10^20, when it runs."""
    if not is_integer(value):
        raise D1Error(f"{name} must be an integer, not {type(value).__name__}")
    if low is None:
        return int(value)
    if value < low or (high is not None and value > high):
        bound = f"{low:,} .. {high:,}" if high is not None else f">= {low:,}"
        raise D1Error(f"{name} must be {'in ' if high is not None else ''}{bound}, "
                      f"got {value:,}")
    return int(value)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """A shared pool of helper threads (the calling thread runs the first node range)."""
    with _POOL_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max(1, workers),
                                                        thread_name_prefix="d1-emu")
        return pool


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_threads(nodes: int) -> int:
    """The default thread count of `d1 run`: one per usable CPU, at most 8, and at least 64
    nodes per thread (below that a phase is too short to pay for handing work to a thread)."""
    return max(1, min(usable_cpus(), 8, nodes // 64))


class _ScatterPlan:
    """Where the elements of one tensor go in SRAM, worked out once.

    For a tensor whose pieces hold at most `MAX_INDEXED` elements in all, with addresses and
    strides that are whole elements (as the compiler writes them), two index arrays: each held
    element's word in the SRAM buffer (viewed as words of the element size) and its place in
    the host array, so a write is one indexed copy. They are made on the second write (a
    training step's next batch): the first, often the only one (`d1 run`), copies through a
    strided view per piece, which costs less than making them. Either way a write also raises
    each holding node's SRAM high-water mark to the end of its pieces.
    """

    MAX_INDEXED = 1 << 22

    def __init__(self, t: TensorLayout, state: State) -> None:
        self.tensor = t
        self.state = state
        esize = DTYPE_BYTES[t.dtype]
        ends: dict[int, int] = {}
        for p in t.pieces:
            end = p.addr + sum((s - 1) * st for s, st in zip(p.shape, p.strides, strict=True)) \
                + esize
            ends[p.node] = max(ends.get(p.node, 0), end)
        self.nodes = np.array(sorted(ends), dtype=np.int64)
        self.ends = np.array([ends[n] for n in sorted(ends)], dtype=np.int64)
        buf = state.sram_rows
        held = sum(math.prod(p.shape) for p in t.pieces)
        self.words = None
        self.writes = 0
        self.marked = -1            # State.marks_lowered when the marks were last raised
        self.indexable = (held <= self.MAX_INDEXED and buf.shape[1] % esize == 0
                          and all(p.addr % esize == 0 and all(st % esize == 0
                                                              for st in p.strides)
                                  for p in t.pieces))
        self.views = [(tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True)),
                       _piece_view(state.sram, p, t.dtype)) for p in t.pieces]

    def _index(self) -> None:
        """The two index arrays (see the class docstring). Pieces of one shape and strides
        (the compiler's tiles) share one pattern of element offsets, so the arrays are made
        a group at a time rather than a piece at a time."""
        t, state = self.tensor, self.state
        esize = DTYPE_BYTES[t.dtype]
        buf = state.sram_rows
        row = buf.shape[1] // esize
        whole = [math.prod(t.shape[k + 1:]) for k in range(len(t.shape))]  # C-order strides
        groups: dict[tuple, list[TensorPiece]] = {}
        for p in t.pieces:
            groups.setdefault((tuple(p.shape), tuple(p.strides)), []).append(p)
        dst, src = [], []
        for (shape, strides), ps in groups.items():
            at_dst = np.zeros(shape, dtype=np.int64)
            at_src = np.zeros(shape, dtype=np.int64)
            for k, s in enumerate(shape):
                axis = np.arange(s, dtype=np.int64).reshape([s if j == k else 1
                                                             for j in range(len(shape))])
                at_dst += axis * (strides[k] // esize)
                at_src += axis * whole[k]
            first_dst = np.array([p.node * row + p.addr // esize for p in ps], dtype=np.int64)
            first_src = np.array([sum(o * w for o, w in zip(p.offset, whole, strict=True))
                                  for p in ps], dtype=np.int64)
            dst.append((first_dst[:, None] + at_dst.reshape(1, -1)).reshape(-1))
            src.append((first_src[:, None] + at_src.reshape(1, -1)).reshape(-1))
        self.dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
        self.src = np.concatenate(src) if src else np.zeros(0, np.int64)
        self.words = buf.reshape(-1).view({4: np.uint32, 2: np.uint16}[esize])

    def write(self, raw: np.ndarray) -> None:
        """Scatter `raw` (the tensor's element bits, C order) to every piece."""
        self.writes += 1
        if self.words is None and self.indexable and self.writes > 1:
            self._index()
        if self.words is not None:
            _scatter(self.words, self.dst, raw.reshape(-1), self.src)
            self.raise_marks()
            return
        for sl, view in self.views:
            view[...] = raw[sl]
        self.raise_marks()

    def write_held(self, held: np.ndarray) -> None:
        """Write the held elements' bits in the index arrays' order (`raw.reshape(-1)[src]`:
        what another process sends an MPI rank, emulator.distributed)."""
        _put(self.words, self.dst, held)
        self.raise_marks()

    def raise_marks(self) -> None:
        """Each holding node's SRAM high-water mark up to the end of its pieces: once, until
        the marks are next set lower (State.clear or restore; runs only raise them)."""
        if self.marked == self.state.marks_lowered:
            return
        hwm = self.state.hwm
        hwm[self.nodes] = np.maximum(hwm[self.nodes], self.ends)
        self.marked = self.state.marks_lowered


@njit(cache=True, nogil=True)
def _sums(clock: np.ndarray, count: np.ndarray, flops: np.ndarray, stall: np.ndarray,
          link_msgs: np.ndarray, link_bytes: np.ndarray, hwm: np.ndarray, mma: int) -> tuple:
    """Emulator.totals' figures in one pass over the per-node rows (a training loop reads
    them after every step): the largest clock, the instructions (and those of timing class
    `mma`), FLOPs, stall cycles, link messages and bytes, the largest high-water mark."""
    most = 0
    top = 0
    total = 0
    of_mma = 0
    fl = 0
    st = 0
    msgs = 0
    nbytes = 0
    for i in range(clock.size):
        most = max(most, clock[i])
        top = max(top, hwm[i])
        for c in range(count.shape[1]):
            total += count[i, c]
        of_mma += count[i, mma]
        fl += flops[i]
        st += stall[i]
        for d in range(link_msgs.shape[1]):
            msgs += link_msgs[i, d]
            nbytes += link_bytes[i, d]
    return most, total, of_mma, fl, st, msgs, nbytes, top


def _node_sums(st: Any) -> tuple[int, ...]:
    """`_sums` of a State (or the per-node figures gathered from MPI ranks), as ints."""
    return tuple(map(int, _sums(st.clock, st.count, st.flops, st.stall, st.link_msgs,
                                st.link_bytes, st.hwm, TIMING_CLASSES.index("mma_bf16"))))


def _warm_helpers(state: State) -> None:
    """Compile (or load from Numba's cache) what a training loop calls between runs, with the
    run loop and outside the timed region: the restart (compiled for the state's arrays, not
    run), the input scatters of both element sizes (run on nothing) and the totals' sums."""
    from numba import typeof

    if not hasattr(restart_arrays, "compile"):
        return                          # NUMBA_DISABLE_JIT=1: plain Python, nothing to load
    rows = np.zeros(0, dtype=np.int64)
    restart_arrays.compile(tuple(typeof(t) for t in (*state.kernel_tuples(), rows, rows)))
    index = np.zeros(0, dtype=np.int64)
    for words in (np.zeros(0, dtype=np.uint16), np.zeros(0, dtype=np.uint32)):
        _scatter(words, index, words, index)
        _put(words, index, words)
    _node_sums(state)                   # reads only


@njit(cache=True, nogil=True)
def _scatter(words: np.ndarray, dst: np.ndarray, values: np.ndarray, src: np.ndarray) -> None:
    """words[dst] = values[src], in one pass (numpy's two fancy-index passes and their
    temporary cost a training step's small batch three times as much)."""
    for i in range(dst.size):
        words[dst[i]] = values[src[i]]


@njit(cache=True, nogil=True)
def _put(words: np.ndarray, dst: np.ndarray, values: np.ndarray) -> None:
    """words[dst] = values."""
    for i in range(dst.size):
        words[dst[i]] = values[i]


def on_chip(machine: Any, t: TensorLayout, ids: Any, chip: tuple[int, int]
            ) -> tuple[TensorLayout, list[int]]:
    """`t` with only the pieces that chip (cx, cy)'s nodes hold, and their indices among
    `ids` (the pieces' numbers, in order)."""
    if (not isinstance(chip, (tuple, list)) or len(chip) != 2
            or not all(is_integer(c) for c in chip)):
        raise D1Error(f"a chip is (cx, cy), a pair of integers; got {chip!r}")
    chip = (int(chip[0]), int(chip[1]))
    if not (0 <= chip[0] < machine.chips_x and 0 <= chip[1] < machine.chips_y):
        raise D1Error(f"chip {chip} is outside the {machine.chips_x}x{machine.chips_y} grid of "
                      "chips")
    keep = [(i, p) for i, p in zip(ids, t.pieces, strict=True)
            if machine.chip_of(*machine.node_xy(p.node)) == tuple(chip)]
    if not keep:
        raise D1Error(f"tensor '{t.name}' has no piece on chip {tuple(chip)}")
    return (dataclasses.replace(t, pieces=[p for _, p in keep]), [i for i, _ in keep])


def as_declared(obj: ObjectFile, name: str, value: np.ndarray) -> np.ndarray:
    """An output as the program declares it: a 0-d DSL output (META "scalar_outputs"; its
    layout holds one element, shape [1]) as a 0-d array, anything else as gathered."""
    scalars = obj.meta.get("scalar_outputs", ())
    if isinstance(scalars, list) and name in scalars and value.size == 1:
        return value.reshape(())
    return value


def _host_array(value: Any, what: str) -> np.ndarray:
    """`value` as a numpy array, or a D1Error naming `what` (a ragged nested list is numpy's
    ValueError, a huge Python int its OverflowError)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as e:
        reason = str(e).split(". ")[0]
        raise D1Error(f"{what} cannot be read as an array ({reason})") from None


def _pc(pc: Any) -> int:
    """A pc argument: an integer (numpy's too), else a D1Error."""
    if not is_integer(pc):
        raise D1Error(f"a pc is an integer, got {pc!r}")
    return int(pc)


def assemble_output(t: TensorLayout, values: list[np.ndarray]) -> np.ndarray:
    """Tensor `t` from the element bits of each of its pieces (`values`, in piece order; where
    pieces overlap the first one wins): float32 for f32/bf16, int32 for i32."""
    rawtype = {"f32": np.uint32, "bf16": np.uint16, "i32": np.uint32}[t.dtype]
    if len(t.pieces) == 1 and tuple(t.pieces[0].shape) == tuple(t.shape):
        return _from_raw(np.array(values[0], dtype=rawtype), t.dtype)   # one piece: all of it
    out = np.zeros(t.shape, dtype=rawtype)
    filled = np.zeros(t.shape, dtype=bool)
    for p, vals in zip(t.pieces, values, strict=True):
        sl = tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))
        want = ~filled[sl]
        region = out[sl]
        region[want] = vals[want]
        filled[sl] = True
    held = int(np.count_nonzero(filled))
    if held < filled.size:
        raise D1Error(f"tensor '{t.name}': its pieces leave {filled.size - held} of "
                      f"{filled.size} elements uncovered")
    return _from_raw(out, t.dtype)


def _from_raw(out: np.ndarray, dtype: str) -> np.ndarray:
    """Element bits (owned by the caller) -> float32 for f32/bf16, int32 for i32."""
    if dtype == "bf16":
        return (out.astype(np.uint32) << 16).view(np.float32)
    if dtype == "f32":
        return out.view(np.float32)
    return out.view(np.int32)


def _piece_view(sram: np.ndarray, p: TensorPiece, dtype: str) -> np.ndarray:
    """The elements of a piece where they lie in its node's SRAM row: a strided view (writes go
    to SRAM), so a piece costs no index arrays however large it is. The object's validation
    keeps every element inside the row; numpy checks it again."""
    raw = {"f32": "<u4", "bf16": "<u2", "i32": "<u4"}[dtype]
    return np.ndarray(p.shape, dtype=raw, buffer=sram[p.node], offset=p.addr,
                      strides=p.strides)


def _to_raw(a: np.ndarray, t: TensorLayout) -> np.ndarray:
    """Host values -> the tensor's element bits (uint32 for f32/i32, uint16 for bf16)."""
    name = t.name
    if a.dtype.kind not in "biuf":
        raise D1Error(f"input '{name}': cannot convert {a.dtype} values to {t.dtype}")
    if t.dtype == "i32":
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise D1Error(f"input '{name}' is i32: its values must be integers")
        ai = a.astype(np.float64) if a.dtype.kind == "f" else a
        if ai.size and (ai.min() < -(1 << 31) or ai.max() > (1 << 31) - 1):
            raise D1Error(f"input '{name}' is i32: values must lie in -2^31..2^31-1")
        return np.ascontiguousarray(ai.astype(np.int64).astype("<i4").view(np.uint32))
    # A float64 beyond the fp32 range rounds to an infinity, as IEEE says; numpy would also
    # print a RuntimeWarning (with this line's source) on the user's terminal.
    with np.errstate(over="ignore"):
        f = np.ascontiguousarray(a.astype(np.float32))
    bits = f.view(np.uint32)
    if t.dtype == "f32":
        return bits
    # Round to nearest even in uint32: only NaNs (replaced below) can wrap past 2^32.
    rounded = ((bits >> 16) & 1) + bits
    rounded += 0x7FFF
    rounded >>= 16
    out = rounded.astype(np.uint16)
    out[(bits & 0x7FFFFFFF) > 0x7F800000] = 0x7FC0
    return out
