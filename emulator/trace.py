"""Timeline traces and per-region statistics of a run (`d1 run --trace`, `--regions`).

Off by default. `Emulator(obj, trace="regions")` collects per-region statistics; `trace="full"`
also records the events of a timeline trace. Either way the emulator runs a second compiled
variant of its loop (emulator.kernel.run_loop with a `trace` tuple instead of None): the
variant without tracing has no tracing code at all, since Numba prunes the `trace is not None`
branches when the argument is None.

## Regions

A *region* is one DSL operation: each entry of a compiled object's `meta["regions"]` (one per
compiler step: a matmul, an elementwise tree, a redistribution, ...). Every instruction carries
the DSL line and column of its step in the line table, so `region_table` gives every code slot a
region id. Steps that share a DSL position (a redistribution feeding the elementwise operation at
the same place) become one region named after both. In an assembly program the regions are its
code labels (labels starting with '.' excepted): an instruction belongs to the nearest label at
or above it in its block, or to `entry` before the first. A region is a label at one place in the
source: the blocks a section assembles per node share its regions, but two sections that each
have a `loop:` (or code before their first label) have one region each, named by its line.
Instructions in no region (the final `halt` of compiled code, the sentinel slot past a block)
belong to the last region, `(other)`.

When recording, the loop checks each instruction's region before running it. On a change it adds
what the node did since its last change (clock, stalls, FLOPs, SRAM bytes, link bytes and
messages sent, instructions per timing class) to the old region's totals, notes the first entry
and last exit time of each region, and records a region event. Totals are therefore exact
whatever the event buffer's capacity.

SRAM bytes: what the core's instructions load from or store to SRAM: 1/2/4/8 B for scalar loads
and stores, 64 B for vld/vst/vlds/vsts, 32 B for the bf16 forms, both operands of every mma step
(256 B bf16, 512 B f32; an mmak counts its steps), 256 B per acc.ld/acc.st (128 B acc.st.bf16).
Message payloads (sendb/recvb/relayb copy them between SRAM and the network) are counted as link
bytes instead, so the two byte counts of the roofline do not overlap.

## Events

Two preallocated int64 buffers of rows (kind, node, a, b, t0, t1), filled in order:

- slices: EV_REGION (a = region, t0 = the node's clock when it entered it), EV_WAIT_RECV and
  EV_WAIT_SEND (a = direction, b = the node waited on, [t0, t1) = the stall);
- messages: EV_SEND (a = link = receiving node * 4 + direction it receives from, b = message
  number on that link, t0 = issue, t1 = arrival; the kind's bits 8.. hold the byte count) and
  EV_RECV (same link and number, t0 = consumption start, t1 = done, when its FIFO slot frees).

When a buffer is full, further events are counted, not stored; `chrome_trace` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from d1isa import isa
from d1isa.machine import DIRECTIONS, OPPOSITE, TIMING_CLASSES

# The record layouts are the run loop's (it freezes them into its compiled code).
from emulator.constants import (
    EV_COLS,
    EV_RECV,
    EV_REGION,
    EV_SEND,
    EV_WAIT_RECV,
    EV_WAIT_SEND,
    F_EV,
    F_EV_DROP,
    F_MSG,
    F_MSG_DROP,
    RS_COLS,
    RS_COUNT,
    RS_CYCLES,
    RS_ENTRIES,
    RS_FLOPS,
    RS_LINK_BYTES,
    RS_LINK_MSGS,
    RS_SRAM,
    RS_STALL,
    RS_STALL_SEND,
)

MODES = ("regions", "full")
DEFAULT_EVENTS = 1 << 19          # slice rows (48 B each)
DEFAULT_MESSAGES = 1 << 20        # message rows
DEFAULT_MAX_TRACE_EVENTS = 200_000
COUNTER_LINKS = 8
COUNTER_POINTS = 4000             # per counter track

_INT64_MAX = np.iinfo(np.int64).max

# SRAM bytes per instruction, by mnemonic (network instructions: none, their bytes are link bytes).


@dataclass
class Region:
    """One region: what the trace and the statistics call it."""

    id: int
    op: str
    name: str
    line: int
    col: int
    label: str


def region_table(obj: Any, code: Any) -> tuple[list[Region], np.ndarray]:
    """The regions of an object and the region id of every slot of its decoded code table
    (emulator.decode.CodeTable). The last region is always `(other)`."""
    total = code.total
    rtab = np.full(total, -1, dtype=np.int64)
    regions: list[Region] = []
    meta_regions = obj.meta.get("regions") if isinstance(obj.meta, dict) else None
    lines = code.lines
    if meta_regions:
        by_loc: dict[tuple[int, int], list[dict]] = {}
        for r in meta_regions:
            by_loc.setdefault((int(r["line"]), int(r["col"])), []).append(r)
        index: dict[tuple[int, int], int] = {}
        for loc, rs in by_loc.items():
            op = " + ".join(dict.fromkeys(str(r["op"]) for r in rs))
            name = " + ".join(dict.fromkeys(str(r["name"]) for r in rs))
            index[loc] = len(regions)
            regions.append(Region(len(regions), op, name, loc[0], loc[1],
                                  f"{name} = {op} @{loc[0]}:{loc[1]}"))
        if total:
            keys = lines[:, 1].astype(np.int64) * (1 << 20) + lines[:, 2].astype(np.int64)
            for (ln, col), rid in index.items():
                rtab[(keys == ln * (1 << 20) + col) & (lines[:, 0] >= 0)] = rid
    else:
        files = list(obj.files)
        labels: dict[int, list[tuple[int, str]]] = {}
        for s in obj.symbols:
            if s.kind == "code" and s.block >= 0 and not s.name.startswith("."):
                labels.setdefault(int(s.block), []).append((int(s.value), s.name))
        index = {}

        def rid_of(name: str, slot: int) -> int:
            # one region per label *and* source position: the blocks of one section assembled
            # per node share it, two sections' own `loop:` (or code before any label) do not
            row = lines[slot] if 0 <= slot < total else None
            where = ""
            if row is not None:
                fi, ln = (int(row[3]), int(row[4])) if row[3] >= 0 else \
                    (int(row[0]), int(row[1]))
                if 0 <= fi < len(files) and ln > 0:
                    where = f" ({files[fi].rsplit('/', 1)[-1]}:{ln})"
            key = name + where
            if key not in index:
                index[key] = len(regions)
                ln = int(row[1]) if row is not None else 0
                regions.append(Region(len(regions), "label", name, ln, 0, key))
            return index[key]

        for b, base in enumerate(code.block_base):
            size = len(obj.blocks[b])
            marks = sorted(labels.get(b, []))
            start = 0
            first = marks[0][0] if marks else size
            if first > 0:
                rtab[base:base + min(first, size)] = rid_of("entry", int(base))
                start = first
            for k, (pos, name) in enumerate(marks):
                end = marks[k + 1][0] if k + 1 < len(marks) else size
                pos = max(pos, start)
                if pos < min(end, size):
                    rtab[base + pos:base + min(end, size)] = rid_of(name, int(base + pos))
    other = len(regions)
    regions.append(Region(other, "other", "(other)", 0, 0, "(other)"))
    rtab[rtab < 0] = other
    return regions, rtab


def sram_tables(code: Any, machine: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot: fixed SRAM bytes, bytes per mmak step and the column of its step register.

    The sizes come from the ISA table's memory column; a message's bytes are counted with the
    link traffic instead, and an instruction with a K-step register (mmak) touches its tiles
    once per step."""
    from emulator.decode import C_OP, C_RS3

    op = code.table[:, C_OP].astype(np.int64)
    fixed_of = np.zeros(512, dtype=np.int64)
    step_of = np.zeros(512, dtype=np.int64)
    for ins in isa.INSTRUCTIONS:
        if ins.memory is None:
            continue
        nb = ins.memory.nbytes(machine.vector_lanes_f32, machine.mma_dim)
        if "rs3" in ins.operands and ins.memory.shape == "tile":
            step_of[ins.opcode] = nb
        else:
            fixed_of[ins.opcode] = nb
    fixed = fixed_of[op]
    step = step_of[op]
    reg = np.where(step > 0, code.table[:, C_RS3].astype(np.int64), 0)
    return (np.ascontiguousarray(fixed), np.ascontiguousarray(step),
            np.ascontiguousarray(reg))


class Recorder:
    """The buffers the traced loop variant fills, and what is made of them afterwards."""

    def __init__(self, obj: Any, code: Any, n: int, mode: str = "full",
                 events: int = DEFAULT_EVENTS, messages: int = DEFAULT_MESSAGES) -> None:
        if mode not in MODES:
            raise ValueError(f"trace mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.n = n
        self.regions, self.rtab = region_table(obj, code)
        self.sbase, self.smul, self.sreg = sram_tables(code, obj.machine)
        r = len(self.regions)
        cap_ev = int(events) if mode == "full" else 0
        cap_msg = int(messages) if mode == "full" else 0
        self.cur = np.full(n, -1, dtype=np.int64)
        self.last = np.zeros((n, RS_COLS), dtype=np.int64)
        self.rstat = np.zeros((r, RS_COLS), dtype=np.int64)
        self.rspan = np.zeros((r, 2), dtype=np.int64)
        self.sram = np.zeros(n, dtype=np.int64)
        self.ev = np.zeros((max(cap_ev, 1), EV_COLS), dtype=np.int64)
        self.msg = np.zeros((max(cap_msg, 1), EV_COLS), dtype=np.int64)
        self.cap = np.array([cap_ev, cap_msg], dtype=np.int64)
        self.fill = np.zeros(4, dtype=np.int64)
        self.clear()

    def clear(self) -> None:
        self.cur[:] = -1
        self.last[:] = 0
        self.rstat[:] = 0
        self.rspan[:, 0] = _INT64_MAX
        self.rspan[:, 1] = -1
        self.sram[:] = 0
        self.fill[:] = 0

    def kernel_arg(self) -> tuple:
        """The tuple emulator.kernel.run_loop takes as `trace` (order fixed there)."""
        return (self.rtab, self.sbase, self.smul, self.sreg, self.cur, self.last, self.rstat,
                self.rspan, self.sram, self.ev, self.msg, self.cap, self.fill)

    @property
    def slice_events(self) -> np.ndarray:
        return self.ev[:min(int(self.fill[F_EV]), int(self.cap[0]))]

    @property
    def message_events(self) -> np.ndarray:
        return self.msg[:min(int(self.fill[F_MSG]), int(self.cap[1]))]

    # ---- region statistics ----------------------------------------------------------------------

    def totals(self, state: Any) -> tuple[np.ndarray, np.ndarray]:
        """(region totals, spans) with every node's open region closed at its current clock;
        the recorder itself is not changed, so a run may continue."""
        rstat = self.rstat.copy()
        rspan = self.rspan.copy()
        now = self._now(state)
        open_ = np.nonzero(self.cur >= 0)[0]
        for node in open_:
            r = int(self.cur[node])
            delta = now[node] - self.last[node]
            delta[RS_ENTRIES] = 0
            rstat[r] += delta
            rspan[r, 1] = max(int(rspan[r, 1]), int(state.clock[node]))
        return rstat, rspan

    def _now(self, state: Any) -> np.ndarray:
        """Every node's counters in region-statistics column order."""
        n = self.n
        now = np.zeros((n, RS_COLS), dtype=np.int64)
        now[:, RS_CYCLES] = state.clock
        now[:, RS_STALL] = state.stall
        now[:, RS_STALL_SEND] = state.stall_send
        now[:, RS_FLOPS] = state.flops
        now[:, RS_SRAM] = self.sram
        now[:, RS_LINK_BYTES] = state.link_bytes.sum(axis=1)
        now[:, RS_LINK_MSGS] = state.link_msgs.sum(axis=1)
        now[:, RS_COUNT:] = state.count
        return now

    def region_stats(self, state: Any) -> list[dict[str, Any]]:
        """One JSON-serialisable record per region that some node entered."""
        rstat, rspan = self.totals(state)
        out = []
        for reg in self.regions:
            row = rstat[reg.id]
            if row[RS_ENTRIES] == 0:
                continue
            out.append({
                "id": reg.id, "label": reg.label, "op": reg.op, "name": reg.name,
                "line": reg.line, "col": reg.col,
                "entries": int(row[RS_ENTRIES]),
                "node_cycles": int(row[RS_CYCLES]),
                "busy_cycles": int(row[RS_CYCLES] - row[RS_STALL]),
                "stall_cycles": int(row[RS_STALL]),
                "stall_send_cycles": int(row[RS_STALL_SEND]),
                "stall_recv_cycles": int(row[RS_STALL] - row[RS_STALL_SEND]),
                "flops": int(row[RS_FLOPS]),
                "sram_bytes": int(row[RS_SRAM]),
                "link_bytes": int(row[RS_LINK_BYTES]),
                "link_messages": int(row[RS_LINK_MSGS]),
                "start_cycle": int(rspan[reg.id, 0]),
                "end_cycle": int(rspan[reg.id, 1]),
                "instructions_by_class": {c: int(row[RS_COUNT + i])
                                          for i, c in enumerate(TIMING_CLASSES)},
            })
        return out

    def sram_bytes(self) -> int:
        return int(self.sram.sum())


REGIONS_NOTE = ("regions: one per DSL operation (compiler step) or assembly label; "
                "node_cycles/busy/stall are summed over nodes, start_cycle..end_cycle is the span "
                "from the first node entering to the last leaving (modelled); sram_bytes counts "
                "bytes loaded or stored by instructions, message payloads excluded "
                "(see emulator/trace.py)")


# ---- the Chrome / Perfetto trace -----------------------------------------------------------------

def chrome_trace(emu: Any, rec: Recorder, max_events: int = DEFAULT_MAX_TRACE_EVENTS,
                 counter_links: int = COUNTER_LINKS, program: str = "") -> dict[str, Any]:
    """The run as a trace-event JSON document (Chrome's format, which Perfetto reads).

    One process per chip and one thread per node with code; one slice per region visit and per
    wait; flow arrows from a message's send to its consumption (1 in S messages, S a power of
    two chosen to keep the event count bounded); counter tracks of the FIFO occupancy of the
    busiest links. Timestamps are microseconds of modelled time (cycles / clock_hz * 1e6).
    """
    m = emu.machine
    st = emu.state
    per_us = m.clock_hz / 1e6           # cycles per microsecond

    def us(c: int | float) -> float:
        return c / per_us

    xy = m.xy
    n = emu.n
    has_code = np.asarray(emu.code.node_len) > 0
    chips = m.chips_x * m.chips_y

    def pid_of(node: int) -> int:
        x, y = int(xy[node, 0]), int(xy[node, 1])
        cx, cy = m.chip_of(x, y)
        return 1 + cy * m.chips_x + cx

    events: list[dict[str, Any]] = []
    meta_events: list[dict[str, Any]] = []
    for cy in range(m.chips_y):
        for cx in range(m.chips_x):
            pid = 1 + cy * m.chips_x + cx
            pname = f"{m.name} chip ({cx},{cy})" if chips > 1 else f"{m.name} chip"
            meta_events.append({"name": "process_name", "ph": "M", "ts": 0, "pid": pid,
                                "tid": 0, "args": {"name": pname}})
            meta_events.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": pid,
                                "tid": 0, "args": {"sort_index": pid}})
    traced = [i for i in range(n) if has_code[i]]
    for i in traced:
        meta_events.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid_of(i),
                            "tid": i, "args": {"name": f"({int(xy[i, 0])},{int(xy[i, 1])}) "
                                                       f"id {i}"}})
        meta_events.append({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": pid_of(i),
                            "tid": i, "args": {"sort_index": i}})

    notes: dict[str, Any] = {}
    ev = rec.slice_events
    msg = rec.message_events
    clock = st.clock

    # -- region slices: from each change to the next (the last one to the node's final clock)
    regions = rec.regions
    region_slices: list[tuple[int, int, int, int]] = []      # node, region, start, end
    waits: list[tuple[int, int, int, int, int, int]] = []    # node, kind, dir, other, t0, t1
    if len(ev):
        kinds = ev[:, 0]
        reg_rows = ev[kinds == EV_REGION]
        order = np.lexsort((reg_rows[:, 4], reg_rows[:, 1]))
        reg_rows = reg_rows[order]
        for k in range(len(reg_rows)):
            node, r, t0 = int(reg_rows[k, 1]), int(reg_rows[k, 2]), int(reg_rows[k, 4])
            if k + 1 < len(reg_rows) and int(reg_rows[k + 1, 1]) == node:
                t1 = int(reg_rows[k + 1, 4])
            else:
                t1 = int(clock[node])
            region_slices.append((node, r, t0, max(t0, t1)))
        wrows = ev[(kinds == EV_WAIT_RECV) | (kinds == EV_WAIT_SEND)]
        waits = [tuple(int(v) for v in row) for row in wrows]          # type: ignore[misc]
    dropped_ev = int(rec.fill[F_EV_DROP])
    cut = math.inf
    if dropped_ev:
        # events after the buffer filled are missing: everything after the last stored one
        cut = int(ev[:, 4].max()) if len(ev) else 0
        notes["event_buffer"] = (f"full: {dropped_ev:,} region/wait events after cycle "
                                 f"{cut:,} were not recorded; the trace ends there")
        region_slices = [(a, b, c, min(d, cut)) for a, b, c, d in region_slices if c <= cut]

    # the budget covers every event, the metadata (names of processes and threads) included;
    # the names are written even beyond it (a track needs its name), and the trace says so
    budget = max(int(max_events) - len(meta_events), 0)
    if len(meta_events) > max_events:
        notes["names"] = (f"over budget: the {len(meta_events):,} process and thread names "
                          f"exceed the event budget of {int(max_events):,}; they are written, "
                          f"and no slice, flow or counter")
    truncated = False
    if len(region_slices) > budget:
        region_slices.sort(key=lambda s: (s[2], s[0]))
        cut = min(cut, region_slices[budget][2])
        region_slices = region_slices[:budget]
        truncated = True
        notes["region_slices"] = (f"truncated: region slices after cycle {int(cut):,} are "
                                  f"left out (event budget {budget:,})")
    left = budget - len(region_slices)
    all_waits = len(waits)
    waits = [w for w in waits if w[4] < cut]
    if len(waits) > left // 2:
        keep = max(left // 2, 0)
        waits.sort(key=lambda w: (-(w[5] - w[4]), w[4], w[1]))
        if keep:
            shortest = waits[keep - 1][5] - waits[keep - 1][4]
            notes["waits"] = (f"truncated: the {keep:,} longest of {all_waits:,} waits are "
                              f"shown (each >= {shortest:,} cycles)")
        else:
            notes["waits"] = f"truncated: all {all_waits:,} waits are left out (event budget)"
        waits = waits[:keep]
        truncated = True
    left -= len(waits)

    for node, r, t0, t1 in region_slices:
        reg = regions[r]
        events.append({"name": reg.label, "cat": "region", "ph": "X", "ts": us(t0),
                       "dur": (t1 - t0) / per_us, "pid": pid_of(node), "tid": node,
                       "args": {"op": reg.op, "value": reg.name, "dsl_line": reg.line,
                                "dsl_col": reg.col, "start_cycle": t0, "end_cycle": t1}})
    for kind, node, d, other, t0, t1 in ((w[0], w[1], w[2], w[3], w[4], w[5]) for w in waits):
        ox, oy = int(xy[other, 0]), int(xy[other, 1])
        if kind == EV_WAIT_RECV:
            name = f"receive wait from {DIRECTIONS[d]}"
            what = f"waiting for a message from ({ox},{oy})"
        else:
            name = f"FIFO-room wait toward {DIRECTIONS[d]}"
            what = f"waiting for room in ({ox},{oy})'s {DIRECTIONS[OPPOSITE[d]]} FIFO"
        events.append({"name": name, "cat": "wait", "ph": "X", "ts": us(t0),
                       "dur": (t1 - t0) / per_us, "pid": pid_of(node), "tid": node,
                       "args": {"what": what, "cycles": t1 - t0, "start_cycle": t0,
                                "end_cycle": t1}})

    # -- messages: pair sends and consumptions by (link, number on the link)
    sends: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    recvs: dict[tuple[int, int], tuple[int, int, int]] = {}
    if len(msg):
        kinds = msg[:, 0] & 0xFF
        for row in msg[kinds == EV_SEND]:
            sends[(int(row[2]), int(row[3]))] = (int(row[1]), int(row[4]), int(row[5]),
                                                 int(row[0]) >> 8)
        for row in msg[kinds == EV_RECV]:
            recvs[(int(row[2]), int(row[3]))] = (int(row[1]), int(row[4]), int(row[5]))
    pairs = sorted(k for k in sends if k in recvs and sends[k][1] < cut and recvs[k][1] < cut)
    dropped_msg = int(rec.fill[F_MSG_DROP])
    if dropped_msg:
        notes["message_buffer"] = (f"full: {dropped_msg:,} message events were not recorded; "
                                   "flows and FIFO counters cover the messages before that")
    flow_budget = max(left // 3, 0)
    # in order of sending, every sample-th message (sample: the smallest power of two that fits)
    pairs.sort(key=lambda k: (sends[k][1], k))
    sample = 1
    if flow_budget < 2 or not pairs:
        flows = []
        sampling = "no messages" if not sends else \
            f"none of {len(sends):,} messages (no room in the event budget)"
    else:
        while len(pairs) / sample > flow_budget // 2:
            sample *= 2
        flows = pairs[::sample]
        sampling = "every message" if sample == 1 else \
            f"1 in {sample} messages (every {sample}th in order of sending)"
    for fid, key in enumerate(flows, start=1):
        s_node, issue, arrive, nbytes = sends[key]
        r_node, start, done = recvs[key]
        link, j = key
        rx, ry = int(xy[r_node, 0]), int(xy[r_node, 1])
        sx, sy = int(xy[s_node, 0]), int(xy[s_node, 1])
        args = {"bytes": nbytes, "from": f"({sx},{sy})", "to": f"({rx},{ry})",
                "message_on_link": j, "issue_cycle": issue, "arrive_cycle": arrive,
                "consume_cycle": start}
        events.append({"name": "message", "cat": "message", "ph": "s", "id": fid,
                       "ts": us(issue), "pid": pid_of(s_node), "tid": s_node, "args": args})
        events.append({"name": "message", "cat": "message", "ph": "f", "bp": "e", "id": fid,
                       "ts": us(start), "pid": pid_of(r_node), "tid": r_node})
    left -= 2 * len(flows)

    # -- FIFO occupancy counters of the busiest links (by busy cycles)
    counters = 0
    busy = st.link_busy
    cand = [(int(busy[s, d]), s, d) for s in range(n) for d in range(4) if busy[s, d] > 0]
    cand.sort(key=lambda t: (-t[0], t[1], t[2]))
    per_link: dict[int, list[tuple[int, int]]] = {}
    chosen = []
    for _, s, d in cand[:max(counter_links, 0)]:
        link = int(emu.out_link[s * 4 + d])
        if link >= 0:
            chosen.append((link, s, d))
            per_link[link] = []
    for (link, _j), (_node, issue, _arr, _nb) in sends.items():
        if link in per_link:
            per_link[link].append((issue, +1))
    for (link, _j), (_node, _start, done) in recvs.items():
        if link in per_link:
            per_link[link].append((done, -1))
    # the counters get what the budget leaves, and a track at least 2 points: with less room,
    # fewer links (every track given 2 points whatever the room overran the budget)
    room = max(left, 0)
    wanted = len(chosen)
    chosen = chosen[:room // 2]
    if len(chosen) < wanted:
        truncated = True
        notes["counters"] = (f"truncated: FIFO counters for {len(chosen)} of the {wanted} "
                             f"busiest links (event budget)")
    downsampled = False
    point_cap = min(COUNTER_POINTS, room // max(len(chosen), 1))
    for link, s, d in chosen:
        changes = sorted(per_link[link], key=lambda t: (t[0], t[1]))
        series: list[tuple[int, int]] = []
        occ = 0
        for t, delta in changes:
            if t >= cut:
                break
            occ += delta
            if series and series[-1][0] == t:
                series[-1] = (t, occ)
            else:
                series.append((t, occ))
        if len(series) > point_cap:
            # keep each bucket's first time with its largest occupancy, and the last point as
            # it is (the FIFO's final fill, 0 once every message was taken), so the track
            # does not end at a bucket's maximum as if messages stayed in the FIFO
            downsampled = True
            head = series[:-1]
            step = math.ceil(len(head) / (point_cap - 1))
            series = [(head[i][0], max(v for _, v in head[i:i + step]))
                      for i in range(0, len(head), step)] + [series[-1]]
        r_node = link // 4
        rx, ry = int(xy[r_node, 0]), int(xy[r_node, 1])
        sx, sy = int(xy[s, 0]), int(xy[s, 1])
        name = (f"FIFO ({rx},{ry}) from {DIRECTIONS[OPPOSITE[d]]} ({sx},{sy}), "
                "messages in it")
        for t, v in series:
            events.append({"name": name, "cat": "fifo", "ph": "C", "ts": us(t),
                           "pid": pid_of(r_node), "tid": r_node, "args": {"messages": v}})
            counters += 1

    events.sort(key=lambda e: (e["pid"], e["tid"], e["ts"], -e.get("dur", 0.0)))
    total_msgs = len(sends)
    info = {
        "program": program,
        "machine": m.name,
        "clock_hz": m.clock_hz,
        "time_unit": "ts and dur are microseconds of modelled time: cycles / clock_hz * 1e6",
        "kernel_cycles": int(clock.max()) if n else 0,
        "threads": f"one per node with code ({len(traced):,} of {n:,} live nodes)",
        "slices": "one per region visit (a DSL operation or an assembly label) and one per "
                  "wait (receive wait, FIFO-room wait); not one per instruction",
        "regions": [r.label for r in regions],
        "flow_sampling": sampling,
        "flows": len(flows),
        "messages_recorded": total_msgs,
        "counters": (f"FIFO occupancy (messages from send issue to consumption) of the "
                     f"{len(chosen)} busiest links by busy cycles" +
                     (", downsampled to the largest value per bucket" if downsampled else "")),
        "truncated": bool(truncated or dropped_ev or dropped_msg),
        "notes": notes,
        "event_count": len(events) + len(meta_events),
    }
    return {"traceEvents": meta_events + events, "displayTimeUnit": "ns", "otherData": info,
            "metadata": info}
