"""Going to any position, and the reverse commands built on it.

The whole mesh state is a function of the vector of per-node executed-instruction counts (each
node is deterministic and talks to others only through FIFOs), so going to an earlier vector W is:
restore the latest checkpoint whose counts are all <= W, then run with per-node budgets
W - checkpoint (`goto`). reverse-stepi lowers one node's count; reverse-step finds where the
node entered its previous line by a traced replay of a window of its history; reverse-continue
replays checkpoint segments backward until it finds a breakpoint hit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from emulator import constants as K
from emulator.debugger.breakpoints import Breakpoint
from emulator.debugger.checkpoints import Checkpoint

if TYPE_CHECKING:
    from emulator.debugger.core import Debugger
    from emulator.debugger.views import Stop


def goto(dbg: Debugger, target: np.ndarray) -> None:
    """Restore the best checkpoint and run every node up to its count in `target`."""
    t0 = time.perf_counter()
    st = dbg.emu.state
    trapped = {i: dbg._count(i) for i in dbg._trapped()}
    ck = dbg.checkpoints.best(target)
    dbg._restore(ck)
    remaining = np.maximum(target - ck.counts, 0)
    np.copyto(dbg.emu.stop_flags, 0)
    if remaining.any():
        dbg._call(-1, node_budget=remaining, record=False)
    for node, c in trapped.items():
        # A node that trapped at this count traps again at once: show it trapped.
        if int(target[node]) == c and st.state[node] != K.TRAPPED:
            dbg._call(1, only=node, quantum=1, record=False)
    dbg._trapped_seen = dbg._trapped()
    dbg._normalize()
    st.skip[:] = -1
    st.skip[dbg.focus] = st.pc[dbg.focus]
    counts = dbg.counts()
    for h, node in dbg._history:
        # A node still at a breakpoint it was stopped at before steps over it, as it
        # would have in the original run.
        if h[node] == counts[node] and np.all(h <= counts):
            st.skip[node] = st.pc[node]
    dbg.replay_seconds += time.perf_counter() - t0


def goto_stop(dbg: Debugger, target: np.ndarray) -> Stop:
    goto(dbg, target)
    return dbg._make_stop("step", dbg.focus)


def reverse_line(dbg: Debugger, f: int) -> Stop:
    """Back to the start of the previous source line node f executed."""
    now = dbg.counts().copy()
    k = int(now[f])
    if k == 0:
        return dbg._make_stop("start", f, detail="Already at the node's first instruction")
    cur = dbg._key(f)
    window = 64
    while True:
        lo = max(0, k - window)
        entries = _trace_entries(dbg, f, lo, now)
        idx = next((i for i in range(len(entries) - 1, -1, -1)
                    if entries[i][1] != cur), None)
        if idx is not None:
            key = entries[idx][1]
            while idx > 0 and entries[idx - 1][1] == key:
                idx -= 1
            if idx > 0 or lo == 0:
                target = now.copy()
                target[f] = entries[idx][0]
                goto(dbg, target)
                return dbg._make_stop("step", f)
        elif lo == 0:
            target = now.copy()
            target[f] = 0
            goto(dbg, target)
            return dbg._make_stop("start", f, detail="Reached the node's first instruction")
        window *= 8


def _trace_entries(dbg: Debugger, f: int, lo: int, now: np.ndarray
                   ) -> list[tuple[int, tuple]]:
    """(count, line key) each time node f entered a line between count lo and now[f]."""
    start = now.copy()
    start[f] = lo
    goto(dbg, start)
    entries = [(dbg._count(f), dbg._key(f))]
    _b, info = dbg._node_block(f)
    flags = np.zeros(dbg.emu.code.total, dtype=np.int8)
    if info is not None:
        flags[np.nonzero(info.entries)[0] + int(dbg.emu.code.node_base[f])] = 1
    np.copyto(dbg.emu.stop_flags, flags)
    st = dbg.emu.state
    while True:
        remaining = np.maximum(now - dbg.counts(), 0)
        if not remaining.any():
            break
        reason, _k, node = dbg._call(-1, node_budget=remaining, record=False)
        if reason != K.R_STOP:
            break
        if node == f and dbg._count(f) < now[f]:
            entries.append((dbg._count(f), dbg._key(f)))
    st.skip[:] = -1
    return entries


def reverse_continue(dbg: Debugger) -> Stop:
    """Back to the most recent earlier breakpoint hit.

    Hits are found by replaying from checkpoints with the breakpoints' flags set. A hit at
    which the debugger stopped before comes back exactly as it was then; any other hit
    comes back as the replay reached it.
    """
    now = dbg.counts().copy()
    t_now = int(now.sum())

    def seen(node: int, k: int) -> np.ndarray | None:
        for h, hn in reversed(dbg._history):
            if hn == node and h[node] == k and int(h.sum()) < t_now and np.all(h <= now):
                return h
        return None

    enabled = set()
    for bp in dbg.points.breakpoints():
        enabled |= bp.slots
    # Hits the debugger stopped at whose node has not moved since are no replay event.
    cands = [(h, hn) for h, hn in dbg._history
             if int(h.sum()) < t_now and np.all(h <= now)]
    upper = now
    ck = dbg.checkpoints.best(now)
    while True:
        for counts, _bp, node in _replay_hits(dbg, ck, upper, now):
            h = seen(node, int(counts[node]))
            cands.append((h if h is not None else counts, node))
        if (cands and max(int(c.sum()) for c, _ in cands) >= ck.position) \
                or ck.position == 0:
            break
        upper = ck.counts
        ck = dbg.checkpoints.before(ck)
    while cands:
        counts, node = max(cands, key=lambda c: int(c[0].sum()))
        cands = [c for c in cands if c[0] is not counts]
        goto(dbg, counts)
        g = int(dbg.emu.code.node_base[node]) + int(dbg.emu.state.pc[node])
        matching = dbg._matching_breakpoints(node)
        if g not in enabled or not matching:
            continue            # a remembered hit of a breakpoint deleted since
        return dbg._hit_stop(node, matching)
    goto(dbg, np.zeros(dbg.n, dtype=np.int64))
    return dbg._make_stop("start", dbg.focus,
                          detail="No earlier breakpoint hit: at the beginning, T=0")


def _replay_hits(dbg: Debugger, ck: Checkpoint, upper: np.ndarray, now: np.ndarray
                 ) -> list[tuple[np.ndarray, Breakpoint, int]]:
    """Replay from ck to `upper`, recording every breakpoint hit before `now`."""
    t0 = time.perf_counter()
    dbg._restore(ck)
    flags = np.zeros(dbg.emu.code.total, dtype=np.int8)
    for bp in dbg.points.breakpoints():
        flags[list(bp.slots)] = 1
    hits = []
    st = dbg.emu.state
    bp_at = dbg.points.bp_at
    while True:
        np.copyto(dbg.emu.stop_flags, flags)
        remaining = np.maximum(upper - dbg.counts(), 0)
        if not remaining.any():
            break
        reason, _k, node = dbg._call(-1, node_budget=remaining, record=False)
        if reason != K.R_STOP:
            break
        counts = dbg.counts()
        if np.array_equal(counts, now):
            continue
        g = int(dbg.emu.code.node_base[node]) + int(st.pc[node])
        for bp in bp_at.get(g, ()):
            if bp.nodes is not None and node not in bp.nodes:
                continue
            if bp.cond is not None and not dbg._eval_condition(bp, node)[0]:
                continue
            hits.append((counts.copy(), bp, node))
            break
    dbg.replay_seconds += time.perf_counter() - t0
    return hits


def first_arrivals(dbg: Debugger, targets: dict[int, int]) -> dict[int, tuple[int, int]]:
    """For each node -> pc of `targets` that the node has passed, (T, clock) when it first
    arrived there: the position of a replay stopped just before it executed that pc, and the
    node's modelled clock then. The state at the current position is restored afterwards.

    The replay starts at the latest checkpoint before every target node reached its pc, with
    stop flags on those pcs only, and ends at the current position. Nodes do not wait for each
    other beyond their messages, so which position the replay stops at depends on the
    checkpoint; the node's clock does not.
    """
    now = dbg.counts().copy()
    st = dbg.emu.state
    base = dbg.emu.code.node_base
    start = dbg.checkpoints.first
    for ck in sorted(dbg.checkpoints.items, key=lambda c: -c.position):
        pcs = ck.snap["pc"]
        if np.all(ck.counts <= now) and all(
                int(pcs[n]) < pc or (int(pcs[n]) == pc and int(ck.counts[n]) == 0)
                for n, pc in targets.items()):
            start = ck
            break
    found: dict[int, tuple[int, int]] = {}
    t0 = time.perf_counter()
    try:
        dbg._restore(start)
        while True:
            for n, pc in targets.items():
                if n not in found and int(st.pc[n]) == pc:
                    found[n] = (dbg.position, int(st.clock[n]))
            left = [n for n in targets if n not in found]
            remaining = np.maximum(now - dbg.counts(), 0)
            if not left or not remaining.any():
                break
            flags = np.zeros(dbg.emu.code.total, dtype=np.int8)
            for n in left:
                flags[int(base[n]) + targets[n]] = 1
            np.copyto(dbg.emu.stop_flags, flags)
            reason, _k, _node = dbg._call(-1, node_budget=remaining, record=False)
            if reason != K.R_STOP:
                break
    finally:
        st.skip[:] = -1
        dbg.replay_seconds += time.perf_counter() - t0
        goto(dbg, now)
    return found
