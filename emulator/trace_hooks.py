"""The trace recorder's hooks in the run loop: region switches, per-region statistics, waits and
messages (emulator.trace describes the records and makes reports and timelines of them).

Why apart: they run only in the traced variant of run_loop (called with a `trace` tuple instead
of None; Numba prunes every `if trace is not None:` branch from the untraced one), so the
untraced loop carries none of this code, and the record layout (emulator.constants) is written
in one place.
"""

from __future__ import annotations

import numpy as np

from d1isa.isa import RELAY_OPCODES, SEND_OPCODES
from emulator.constants import (
    EV_RECV,
    EV_REGION,
    EV_SEND,
    EV_WAIT_RECV,
    EV_WAIT_SEND,
    F_EV,
    F_EV_DROP,
    F_MSG,
    F_MSG_DROP,
    K_COST_RECV,
    K_COST_SEND,
    K_DEPTH,
    N_DIRS,
    NCLASSES,
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
from emulator.decode import XCOL_COUNT, XCOL_FLOPS
from emulator.jit.helper import helper


@helper
def _put(buf, cap, fill, fi, fdrop, kind, node, a, b, t0, t1):
    """Append one event row to buf, or count it as dropped when buf is full."""
    i = fill[fi]
    if i < cap:
        buf[i, 0] = kind
        buf[i, 1] = node
        buf[i, 2] = a
        buf[i, 3] = b
        buf[i, 4] = t0
        buf[i, 5] = t1
        fill[fi] = i + 1
    else:
        fill[fdrop] += 1


@helper
def region_switch(trace, node, r, c, xr, fl, stats):
    """Node enters region r at clock c: add what it did since its last switch to the region it
    leaves, take a new snapshot, note the span and record the event."""
    rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill = trace
    stall, stall_send, link_bytes, link_msgs, link_busy = stats
    lb = np.int64(0)
    lm = np.int64(0)
    for k in range(N_DIRS):
        lb += link_bytes[node, k]
        lm += link_msgs[node, k]
    flops = xr[XCOL_FLOPS] + fl
    old = cur[node]
    if old >= 0:
        rstat[old, RS_CYCLES] += c - last[node, RS_CYCLES]
        rstat[old, RS_STALL] += stall[node] - last[node, RS_STALL]
        rstat[old, RS_STALL_SEND] += stall_send[node] - last[node, RS_STALL_SEND]
        rstat[old, RS_FLOPS] += flops - last[node, RS_FLOPS]
        rstat[old, RS_SRAM] += sram[node] - last[node, RS_SRAM]
        rstat[old, RS_LINK_BYTES] += lb - last[node, RS_LINK_BYTES]
        rstat[old, RS_LINK_MSGS] += lm - last[node, RS_LINK_MSGS]
        for k in range(NCLASSES):
            rstat[old, RS_COUNT + k] += xr[XCOL_COUNT + k] - last[node, RS_COUNT + k]
        if c > rspan[old, 1]:
            rspan[old, 1] = c
    last[node, RS_CYCLES] = c
    last[node, RS_STALL] = stall[node]
    last[node, RS_STALL_SEND] = stall_send[node]
    last[node, RS_FLOPS] = flops
    last[node, RS_SRAM] = sram[node]
    last[node, RS_LINK_BYTES] = lb
    last[node, RS_LINK_MSGS] = lm
    for k in range(NCLASSES):
        last[node, RS_COUNT + k] = xr[XCOL_COUNT + k]
    rstat[r, RS_ENTRIES] += 1
    if c < rspan[r, 0]:
        rspan[r, 0] = c
    cur[node] = r
    _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_REGION, node, r, 0, c, 0)


@helper
def trace_step(trace, node, slot, c, xr, fl, stats):
    """Before node runs the instruction in code slot `slot` at clock c: switch regions if it
    starts another one, and count the SRAM bytes its loads, stores and mma steps move."""
    rtab = trace[0]
    cur = trace[4]
    r = rtab[slot]
    if r != cur[node]:
        region_switch(trace, node, r, c, xr, fl, stats)
    smul = trace[2]
    b = trace[1][slot]
    if smul[slot] != 0:
        b += smul[slot] * xr[trace[3][slot]]
    trace[8][node] += b


@helper
def trace_net(trace, op, node, rd, dr, c, c2, fifo, out_link, cfg):
    """After a network instruction of node ran from clock c to c2: its waits and its messages
    (sent: link, number, issue, arrival, bytes; consumed: link, number, start, done), read back
    from the FIFO state. Message payloads count as link bytes, not SRAM bytes."""
    rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill = trace
    fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free = fifo
    depth = cfg[K_DEPTH]
    cost_send = cfg[K_COST_SEND]
    cost_recv = cfg[K_COST_RECV]
    if op in RELAY_OPCODES:
        il = node * N_DIRS + dr
        ji = popped[il] - 1
        done = consumed[il, ji % depth]
        start = done - cost_recv
        ol = out_link[node * N_DIRS + np.int64(rd)]
        jo = pushed[ol] - 1
        issue = c2 - cost_send
        nb = flen[ol, jo % depth]
        if start > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_RECV, node, dr, out_link[il] // N_DIRS,
                 c, start)
        if issue > done:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_SEND, node, np.int64(rd), ol // N_DIRS,
                 done, issue)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_RECV, node, il, ji, start, done)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_SEND + (nb << 8), node, ol, jo, issue,
             farr[ol, jo % depth])
    elif op in SEND_OPCODES:
        ol = out_link[node * N_DIRS + dr]
        jo = pushed[ol] - 1
        issue = c2 - cost_send
        nb = flen[ol, jo % depth]
        if issue > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_SEND, node, dr, ol // N_DIRS, c, issue)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_SEND + (nb << 8), node, ol, jo, issue,
             farr[ol, jo % depth])
    else:
        il = node * N_DIRS + dr
        ji = popped[il] - 1
        done = c2
        start = done - cost_recv
        if start > c:
            _put(ev, cap[0], fill, F_EV, F_EV_DROP, EV_WAIT_RECV, node, dr, out_link[il] // N_DIRS,
                 c, start)
        _put(msg, cap[1], fill, F_MSG, F_MSG_DROP, EV_RECV, node, il, ji, start, done)
