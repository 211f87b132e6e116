"""Network instructions: sends, receives and relays over the bounded link FIFOs, with the timing
equations of docs/TIMING.md.

Why together: they share the FIFO state (payload, length, arrival time, the pushed / popped /
consumed counters) and its publication order, which makes them safe between threads: a sender
writes payload, length and arrival time, then (release fence) `pushed`; a receiver reads
`pushed`, then (acquire fence) the payload (emulator.sync). A push wakes the receiving node and a
pop the sending one (the wake flags of emulator.kernel.run_loop).
"""

from __future__ import annotations

import numpy as np

from d1isa.isa import RELAY_OPCODES, SEND_OPCODES
from d1isa.traps import (
    BAD_MESSAGE_LENGTH,
    MESSAGE_LENGTH_MISMATCH,
    NO_NEIGHBOUR,
    SRAM_OUT_OF_RANGE,
)
from emulator.constants import (
    BLOCKED_RECV,
    BLOCKED_SEND,
    K_COST_RECV,
    K_COST_SEND,
    K_DEPTH,
    K_MAXMSG,
    K_SRAM,
    N_DIRS,
)
from emulator.jit.helper import helper
from emulator.memcopy import copy_bytes
from emulator.opcodes import (
    MSG_BYTES,
    RECV,
    RELAYB,
    SEND,
    VRECV,
    VSEND,
)
from emulator.sync import fence


@helper
def fifo_room(l, pushed, popped, depth):
    """Slot for the next message on link l, or -1 if its FIFO is full."""
    j = pushed[l]
    if j - popped[l] >= depth:
        return -1
    fence()             # acquire: the receiver's consumption of that slot is complete
    return j % depth


@helper
def send_commit(l, sl, nbytes, c, flen, farr, pushed, consumed, wire_free, link_lat, link_bw,
                depth, cost_send):
    """Timing of a send whose payload is already in its slot (docs/TIMING.md).

    Returns (issue time, new clock, serialisation cycles).
    """
    j = pushed[l]
    slot = j % depth
    free_at = consumed[l, slot] if j >= depth else 0
    issue = max(c, free_at)
    depart = max(issue, wire_free[l])
    bw = link_bw[sl]
    ser = (nbytes + bw - 1) // bw
    farr[l, slot] = depart + link_lat[sl] + ser
    flen[l, slot] = nbytes
    wire_free[l] = depart + ser
    fence()             # release: the payload, length and arrival time before the count
    pushed[l] = j + 1
    return issue, issue + cost_send, ser


@helper
def recv_commit(l, c, farr, popped, consumed, depth, cost_recv):
    """Timing of taking the head message of link l. Returns (start time, new clock)."""
    j = popped[l]
    slot = j % depth
    start = max(c, farr[l, slot])
    done = start + cost_recv
    consumed[l, slot] = done
    fence()             # release: the payload was read and consumed[] set before the count
    popped[l] = j + 1
    return start, done


# Inlined into the run loop by LLVM (forceinline): called, it was passed some 200 words of
# array descriptors per network instruction, a fifth of the loop's time on a message-heavy step.
@helper(error_model="numpy", forceinline=True)
def net_op(op, node, rd, rs1, rs2, dr, c, x, v, sram8, fifo, stats, out_link, link_lat, link_bw,
           link_src, wake, cfg):
    """One network instruction of `node` at clock c.

    Returns (status, new clock, highest SRAM byte written + 1 or 0); status is 0 when it ran,
    a trap cause, or -BLOCKED_SEND / -BLOCKED_RECV when it must wait (and changed nothing).
    A push wakes the receiving node and a pop wakes the sending node (wake flags, see run_loop).
    """
    fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free = fifo
    stall, stall_send, link_bytes, link_msgs, link_busy = stats
    sram_bytes = cfg[K_SRAM]
    depth = cfg[K_DEPTH]
    cost_send = cfg[K_COST_SEND]
    cost_recv = cfg[K_COST_RECV]
    hw = np.int64(0)
    if op in RELAY_OPCODES:
        dout = np.int64(rd)
        ol = out_link[node * N_DIRS + dout]
        if out_link[node * N_DIRS + dr] < 0 or ol < 0:
            return NO_NEIGHBOUR, c, 0
        il = node * N_DIRS + dr
        j = popped[il]
        if pushed[il] == j:
            return -BLOCKED_RECV, c, 0
        fence()         # acquire: the message is complete before it is read
        oslot = fifo_room(ol, pushed, popped, depth)
        if oslot < 0:
            return -BLOCKED_SEND, c, 0
        islot = j % depth
        nb = flen[il, islot]
        if op == RELAYB:
            if nb != x[node, rs2]:
                return MESSAGE_LENGTH_MISMATCH, c, 0
            a = x[node, rs1]
            if a < 0 or a > sram_bytes - nb:
                return SRAM_OUT_OF_RANGE, c, 0
            copy_bytes(sram8[node], a, fifo8[il, islot], 0, nb)
            hw = a + nb
        copy_bytes(fifo8[ol, oslot], 0, fifo8[il, islot], 0, nb)
        start, c1 = recv_commit(il, c, farr, popped, consumed, depth, cost_recv)
        issue, c2, ser = send_commit(ol, node * N_DIRS + dout, nb, c1, flen, farr, pushed, consumed,
                                     wire_free, link_lat, link_bw, depth, cost_send)
        stall[node] += (start - c) + (issue - c1)
        stall_send[node] += issue - c1
        link_bytes[node, dout] += nb
        link_msgs[node, dout] += 1
        link_busy[node, dout] += ser
        wake[link_src[il]] = 1
        wake[ol // N_DIRS] = 1
        return 0, c2, hw
    if op in SEND_OPCODES:
        sl = node * N_DIRS + dr
        ol = out_link[sl]
        if ol < 0:
            return NO_NEIGHBOUR, c, 0
        nb = MSG_BYTES[op]
        if nb == 0:                     # sendb: as long as its length register
            nb = x[node, rs2]
            if nb < 1 or nb > cfg[K_MAXMSG]:
                return BAD_MESSAGE_LENGTH, c, 0
            a = x[node, rs1]
            if a < 0 or a > sram_bytes - nb:
                return SRAM_OUT_OF_RANGE, c, 0
        oslot = fifo_room(ol, pushed, popped, depth)
        if oslot < 0:
            return -BLOCKED_SEND, c, 0
        if op == SEND:
            fifo64[ol, oslot, 0] = np.uint64(x[node, rs1])
        elif op == VSEND:
            for i in range(16):
                fifo32[ol, oslot, i] = v[node, rs1, i]
        else:
            copy_bytes(fifo8[ol, oslot], 0, sram8[node], x[node, rs1], nb)
        issue, c2, ser = send_commit(ol, sl, nb, c, flen, farr, pushed, consumed, wire_free,
                                     link_lat, link_bw, depth, cost_send)
        stall[node] += issue - c
        stall_send[node] += issue - c
        link_bytes[node, dr] += nb
        link_msgs[node, dr] += 1
        link_busy[node, dr] += ser
        wake[ol // N_DIRS] = 1
        return 0, c2, 0
    # RECV, VRECV, RECVB
    if out_link[node * N_DIRS + dr] < 0:
        return NO_NEIGHBOUR, c, 0
    il = node * N_DIRS + dr
    j = popped[il]
    if pushed[il] == j:
        return -BLOCKED_RECV, c, 0
    fence()             # acquire: the message is complete before it is read
    islot = j % depth
    nb = flen[il, islot]
    want = MSG_BYTES[op]
    if want == 0:                       # recvb: as long as its length register
        want = x[node, rs2]
    if nb != want:
        return MESSAGE_LENGTH_MISMATCH, c, 0
    if op == RECV:
        x[node, rd] = np.int64(fifo64[il, islot, 0])
    elif op == VRECV:
        for i in range(16):
            v[node, rd, i] = fifo32[il, islot, i]
    else:
        a = x[node, rs1]
        if a < 0 or a > sram_bytes - nb:
            return SRAM_OUT_OF_RANGE, c, 0
        copy_bytes(sram8[node], a, fifo8[il, islot], 0, nb)
        hw = a + nb
    start, c2 = recv_commit(il, c, farr, popped, consumed, depth, cost_recv)
    stall[node] += start - c
    wake[link_src[il]] = 1
    return 0, c2, hw
