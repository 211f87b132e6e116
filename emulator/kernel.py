"""The jitted run loop: every live node's instruction stream, round-robin, a quantum at a time.

`run_loop` owns scheduling only: it visits the nodes in id order and lets each running or blocked
node execute up to `quantum` instructions per turn, until no node can make progress, an
instruction budget (global or per node) is spent, or a node reaches a slot flagged for the
debugger. What each instruction does lives in emulator.semantics, one module per group; the
numbers the loop shares with Python in emulator.constants; the opcodes it dispatches on in
emulator.opcodes; the trace recorder's hooks in emulator.trace_hooks; and how it is compiled and
cached in emulator.jit.

State arrives as four tuples of numpy arrays, allocated by `emulator.state.State` (nothing is
allocated here):

    node  = (x, v, acc, sram8, sram16, sram32, sram64, pc, clock, state, cause, trap_arg,
             sr, sr_init, skip, sram_flat)
    fifo  = (fifo8, fifo32, fifo64, flen, farr, pushed, popped, consumed, wire_free)
    stats = (stall, stall_send, link_bytes, link_msgs, link_busy)
    geo   = (code, node_base, node_len, out_link, link_lat, link_bw, xy, flops_tab,
             link_src, wake, cfg)        (xy: each row's x, y and machine node id)
    trace = None, or the recorder's tuple (emulator.trace.Recorder.kernel_arg):
            (rtab, sbase, smul, sreg, cur, last, rstat, rspan, sram, ev, msg, cap, fill)

Tracing is a separate compiled variant: `run_loop` is called with trace=None normally, and
Numba prunes every `if trace is not None:` branch from that specialisation, so the loop without
tracing carries no tracing code. With a tuple, the loop checks each instruction's region before
running it (`trace_step`) and records waits and messages after each network instruction
(`trace_net`).

x is each node's register row, widened (emulator.decode): the scalar registers, a sink column
for writes to r0, then the node's SRAM high-water mark, FLOP count and instruction counts per
timing class, so the run loop updates them through the one row it already holds.

Opcode numbers are module constants (emulator.opcodes), which Numba freezes into the code;
machine values arrive in `cfg`, never as globals. Numba's cache is keyed on this file only, so
emulator.jit.fingerprint drops cached code compiled from other versions of the modules it reads.
Timing follows docs/TIMING.md exactly and depends only on each node's program order and each
link's message order, so results do not depend on the quantum.

Threads: Emulator.run(threads=T) calls this loop from T Python threads at once (it releases the
GIL), each starting on its own contiguous range of nodes (cfg[K_LO], cfg[K_HI]) with its own cfg,
out and scratch arrays, and helping with other ranges when its own has nothing to run (see
run_loop); a turn holds the node's claim word (emulator.sync), so a node runs on one thread at
a time. A node writes only its own state, the FIFOs it sends into (payload, arrival time,
length, `pushed`) and the consumption side of those it receives from (`consumed`, `popped`);
each link therefore has one writer per field at a time, and the payload-then-counter order is
fenced (emulator.sync). Results are identical to a serial run, whichever thread runs which
turn, for the reason they do not depend on the quantum: a node's behaviour depends only on its
own program and on each incoming link's message order, and a blocked instruction changes
nothing, so seeing a message a little later only means retrying it (see Emulator.run for the
termination rule).

Ranks: under MPI (emulator.distributed) each process runs this loop on its own share of the
nodes: cfg[K_N] rows, whose machine node ids are the third column of xy (getid reads it; getn
reads cfg[K_NODES]), with a send to another rank's node landing in a ghost FIFO past the rows'
own links, which the distributed driver moves between windows. cfg[K_HORIZON] is the current
window's end: a node about to receive from a FIFO another rank feeds (link_src points past the
rows) once its clock has reached the horizon ends its turn with nothing changed, like a blocked
node, and goes on in the next window (NO_HORIZON in one process: the test is never true).
Between windows the driver wakes only the nodes whose links the exchange changed
(cfg[K_KEEP_WAKE]), so a window costs the loop a visit to each node that can move, not to every
node of the rank.

Debugging: set NUMBA_DISABLE_JIT=1 to run the loop as plain Python (slow, but every line is
steppable in pdb), or NUMBA_BOUNDSCHECK=1 to make Numba check every array index (an IndexError
then means an address check is missing in emulator.semantics); use the latter with a fresh
NUMBA_CACHE_DIR, as Numba's cache does not key on it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from d1isa.isa import SEND_OPCODES
from d1isa.traps import CYCLE_LIMIT, ILLEGAL_INSTRUCTION, PC_OUT_OF_RANGE, USER_TRAP

# (F401: names emulator.emulator and emulator.debugger read as `K.<name>` from this module.)
from emulator.constants import (
    BLOCKED_RECV,  # noqa: F401
    BLOCKED_SEND,  # noqa: F401
    HALTED,
    K_BUDGET,
    K_HI,
    K_HORIZON,
    K_KEEP_WAKE,
    K_LO,
    K_MAX_CYCLES,
    K_N,
    K_ONLY_NODE,
    K_QUANTUM,
    K_SRAM,
    K_SRAM_ROW,
    K_USE_NODE_BUDGET,
    N_DIRS,
    O_EXECUTED,
    O_HELPED,
    O_REASON,
    O_STOP_NODE,
    O_STOP_PC,
    OUT_SIZE,  # noqa: F401
    R_BUDGET,
    R_IDLE,
    R_STOP,
    RUNNING,
    S_HALT,
    S_ILLEGAL,
    S_JUMP,
    S_TRAP,
    STATE_NAMES,  # noqa: F401
    TRAPPED,
)
from emulator.decode import CODE_COLS, XCOL_CLAIM, XCOL_FLOPS, XCOL_HWM
from emulator.jit import fingerprint
from emulator.jit.pipeline import LeanCompiler
from emulator.opcodes import (
    FELL_OFF,
    FLOPS_MMA,
    I_ADD,
    I_ADDI,
    I_AND,
    I_ANDI,
    I_BEQ,
    I_BGE,
    I_BGEU,
    I_BLT,
    I_BLTU,
    I_BNE,
    I_JAL,
    I_JALR,
    I_MEM_FIRST,
    I_MEM_LAST,
    I_MEM_TO_OP,
    I_MMA_FIRST,
    I_MMA_LAST,
    I_MMA_TO_OP,
    I_MMAK,
    I_MOVI,
    I_MUL,
    I_MULI,
    I_OR,
    I_ORI,
    I_SLLI,
    I_SRAI,
    I_SRLI,
    I_SUB,
    I_VBIN_FIRST,
    I_VBIN_LAST,
    I_VBIN_TO_OP,
    I_VFMA,
    I_VMEM_FIRST,
    I_VMEM_LAST,
    I_VMEM_TO_OP,
    I_XOR,
    I_XORI,
    ILLEGAL,
    INNER_MASK,
    MATRIX_MAX,
    MMA_BF16,
    MMA_OPCODES,
    MMAK_OPCODES,
    REAL_SHIFT,
    SCALAR_MAX,
    SCALAR_MEM_FIRST,
    SCALAR_MEM_LAST,
    STOP_MARK,
    STRIDED_LOADS,
    STRIDED_STORES,
    VBCAST,
    VBCASTI,
    VCVT_BF16_SR,
    VECTOR_MAX,
    VECTOR_MEM_MAX,
    VEXT,
    VFMA,
    VINS,
    VNARROW_SR,
    VREDMAX,
    VREDSUM,
    VSPLAT,
)
from emulator.prefetch import prefetch
from emulator.semantics.matrix import acc_op, mma_k_steps, mma_op, mma_steps
from emulator.semantics.memory import scalar_mem
from emulator.semantics.network import net_op
from emulator.semantics.scalar import scalar_op
from emulator.semantics.vector import (
    vector_arith,
    vector_fast,
    vector_mem,
    vector_mem_fast,
    vector_move,
    vector_sr,
)
from emulator.sync import claim, release
from emulator.trace_hooks import trace_net, trace_step

_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(i) for i in range(1, 8))


@njit(cache=True, error_model="numpy", _nrt=False, nogil=True, pipeline_class=LeanCompiler)
def run_loop(node_st, fifo, stats, geo, node_budget, out, uscratch, fscratch, trace):
    """Round-robin over the nodes until nothing can progress, a stop flag, or the budget.

    Each running or blocked node, in id order, executes up to cfg[K_QUANTUM] instructions per
    turn. A sweep visits only nodes whose wake flag is set: a node that blocks clears its flag
    and is woken (flag set) when a message is pushed into the link it receives from or popped
    from the link it sends into, so a blocked node costs nothing until it can move; sweeps skip
    eight unwoken nodes at a time. Visiting a blocked node that cannot move changes nothing, so
    this gives exactly the results of visiting every node, while a program whose work hops from
    node to node (a token ring on 8,850 nodes) pays a word test per eight idle nodes per sweep
    instead of a visit per node. Fills out[O_EXECUTED], out[O_HELPED], out[O_REASON] and, for
    a stop, out[O_STOP_NODE] and out[O_STOP_PC].

    With threads (cfg[K_HI] > 0) each call sweeps its own range [K_LO, K_HI) forward; when a
    sweep of it makes no progress, it sweeps every other node backward, running turns of those
    it can claim (emulator.sync), and returns to its own range after any progress. So a thread
    whose nodes are done or blocked helps the others instead of waiting at the end of the
    phase: on a shared host one core is often slower than the other, and a static split would
    make the faster thread wait for the slower. The call returns when both kinds of sweep make
    no progress. Each turn holds the node's claim, so no node ever runs on two threads at once.

    A turn is two nested loops. The inner one runs the frequent instructions (scalar ALU,
    branches, scalar loads and stores, vfma/vadd/vsub/vmul, single mma steps, mmak.bf16, and
    the contiguous vector loads and stores vld/vst/vldw.bf16/vstn.bf16) and contains no calls,
    so LLVM keeps its state in registers: it works on per-turn views of the node's code,
    register row (which also holds the node's counters, see emulator.decode), SRAM, vector
    registers and accumulators. Its loads, stores, vector and mma instructions are the group
    helpers' (scalar_mem, vector_fast, vector_mem_fast, mma_steps, mma_k_steps), which Numba
    inlines (`inline="always"`);
    a block of inner indexes laid out as the opcodes are turns the index back into the opcode
    with one addition (emulator.opcodes). Any other instruction, and any that must trap, leaves
    it for the outer loop, which runs that one instruction through the group helpers.

    No pc range check per instruction: every block is followed by a FELL_OFF sentinel slot and
    every taken jump checks its target (a jump out of the code ends the turn; the next turn's
    fetch check traps). Stop flags cost nothing here: the opcode column of the table the loop
    runs holds inner-loop indexes (emulator.decode.kernel_table) and flagged slots hold
    STOP_MARK, which the inner loop leaves to the outer one; the real opcode sits above the
    index in the same word (REAL_SHIFT), so the outer path needs no second table.

    `trace` is None (the normal, untraced variant: Numba removes the tracing branches) or the
    trace recorder's tuple (see the module docstring and emulator.trace).
    """
    (x, v, acc, sram8, sram16, sram32, sram64, pc, clock, state, cause, trap_arg,
     sr, sr_init, skip, sram_flat) = node_st
    (code, node_base, node_len, out_link, link_lat, link_bw, xy, flops_tab, link_src,
     wake, cfg) = geo

    n = cfg[K_N]
    quantum = cfg[K_QUANTUM]
    budget = cfg[K_BUDGET]
    only = cfg[K_ONLY_NODE]
    use_nb = cfg[K_USE_NODE_BUDGET] != 0
    sram_bytes = cfg[K_SRAM]
    sram_row = cfg[K_SRAM_ROW]
    maxc = cfg[K_MAX_CYCLES]
    # On MPI ranks: a receive from a FIFO that another rank feeds (its sender row is past this
    # call's rows) waits for the next window once the node's clock reaches the horizon.
    horizon = cfg[K_HORIZON]
    vwords = v.shape[1] * 16
    awords = acc.shape[1] * 64
    vflat = v.reshape(v.size)
    xflat = x.reshape(x.size)
    xcols = x.shape[1]
    accflat = acc.reshape(acc.size)
    lo = 0
    hi = n
    threaded = cfg[K_HI] > 0
    if threaded:
        # one thread's share of the nodes (Emulator.run with threads > 1)
        lo = cfg[K_LO]
        hi = cfg[K_HI]
    if only >= 0:
        lo = only
        hi = only + 1
    # Loop-carried variables start with their final types (np.int64(0), not 0): a literal
    # start would be widened at the back edge, costing Numba extra type-inference rounds.
    total = np.int64(0)
    helped = np.int64(0)
    out[O_REASON] = R_IDLE
    out[O_STOP_NODE] = -1
    out[O_STOP_PC] = -1
    if cfg[K_KEEP_WAKE] == 0:
        for node in range(lo, hi):
            wake[node] = 1 if state[node] < HALTED else 0
    wake64 = wake.view(np.uint64)
    glo = lo >> 3
    home_groups = ((hi + 7) >> 3) - glo
    all_groups = (n + 7) >> 3
    stealing = np.bool_(False)
    while True:
        progress = np.bool_(False)
        # A sweep: forward over the thread's own nodes; or, once those made no progress
        # (threads only), a stealing sweep backward over every other node, so that a thread
        # whose nodes are all blocked or done runs turns of the others' instead of idling.
        for gj in range(all_groups if stealing else home_groups):
            group = all_groups - 1 - gj if stealing else glo + gj
            if wake64[group] == 0:
                continue            # eight nodes that are blocked (and not woken) or done
            for gk in range(8):
                node = (group << 3) + (7 - gk if stealing else gk)
                if stealing:
                    if node >= n or (node >= lo and node < hi):
                        continue
                elif node < lo or node >= hi:
                    continue
                if wake[node] == 0:
                    continue
                claim_at = np.int64(node * xcols + XCOL_CLAIM)
                if threaded and not claim(xflat, claim_at):
                    continue                # another thread is running a turn of it
                if state[node] >= HALTED:
                    wake[node] = 0
                    if threaded:
                        release(xflat, claim_at)
                    continue
                q = quantum
                if budget >= 0 and budget - total < q:
                    q = budget - total
                if use_nb and node_budget[node] < q:
                    q = node_budget[node]
                base = node_base[node]
                length = node_len[node]
                c = clock[node]
                p = pc[node]
                # The fetch checks, in order: the cycle limit, then the pc.
                if q > 0 and c > maxc:
                    state[node] = TRAPPED
                    cause[node] = CYCLE_LIMIT
                    q = 0
                elif q > 0 and (p < 0 or p >= length):
                    state[node] = TRAPPED
                    cause[node] = PC_OUT_OF_RANGE
                    q = 0
                if q <= 0:
                    # still runnable (and awake) once the budget allows; or trapped
                    if threaded:
                        release(xflat, claim_at)
                    continue
                cn = code[base * CODE_COLS:]
                xr = x[node]
                if node + 1 < hi:
                    # the next node's registers and counters, while this one runs
                    prefetch(xflat, np.int64((node + 1) * xcols))
                    prefetch(xflat, np.int64((node + 1) * xcols + XCOL_HWM))
                # a contiguous view of the node's SRAM (rows of sram8 are padded, see State)
                m8 = sram_flat[node * sram_row:node * sram_row + sram_bytes]
                vn = vflat[node * vwords:(node + 1) * vwords]
                an = accflat[node * awords:(node + 1) * awords]
                st = RUNNING
                tcause = 0
                stopped = False
                left = q
                fl = np.int64(0)    # FLOPs of the inner loop's vector and matrix instructions
                # a jump to t outside the code: it completes, then the turn ends (the next
                # turn's fetch check traps)
                leave = np.bool_(False)
                t = np.int64(0)
                gi = np.uint64(0)
                while left > 0:
                    # ---- inner loop: frequent instructions, no calls --------------------------
                    slow = False
                    while left > 0:
                        if trace is not None:
                            trace_step(trace, node, base + p, c, xr, fl, stats)
                        if c > maxc:
                            slow = True
                            break
                        gi = np.uint64(p * CODE_COLS)
                        op = cn[gi] & INNER_MASK
                        rd = cn[gi + _U1]
                        rs1 = cn[gi + _U2]
                        if op == I_ADDI:
                            xr[rd] = xr[rs1] + np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_BNE:
                            if xr[rs1] != xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_ADD:
                            xr[rd] = xr[rs1] + xr[cn[gi + _U3]]
                        elif op == I_BLT:
                            if xr[rs1] < xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_VFMA:
                            fl += vector_fast(VFMA, vn, rd, rs1, cn[gi + _U3], cn[gi + _U4])
                        elif op >= I_MMA_FIRST and op <= I_MMA_LAST:
                            if mma_steps(op + I_MMA_TO_OP, an, np.int64(rd) * 64, xr[rs1],
                                         xr[cn[gi + _U3]], cn[gi + _U5], np.int64(1), m8,
                                         sram_bytes, fscratch):
                                slow = True         # the outer loop reports the trap
                                break
                            fl += FLOPS_MMA
                        elif op == I_MMAK:
                            # mmak.bf16: the steps of mma.bf16 (mma_op's path for it, inlined)
                            mc, ks = mma_k_steps(MMA_BF16, an, np.int64(rd) * 64, xr[rs1],
                                                 xr[cn[gi + _U3]], np.uint64(xr[cn[gi + _U4]]),
                                                 cn[gi + _U5], m8, sram_bytes, fscratch)
                            if mc:
                                slow = True         # the outer loop reports the trap
                                break
                            # it costs max(steps, 1) mma and counts the FLOPs of each step
                            fl += FLOPS_MMA * ks
                            if ks > 1:
                                c += np.int64(cn[gi + _U7]) * (ks - 1)
                        elif op == I_BEQ:
                            if xr[rs1] == xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_BGE:
                            if xr[rs1] >= xr[cn[gi + _U3]]:
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_SUB:
                            xr[rd] = xr[rs1] - xr[cn[gi + _U3]]
                        elif op == I_MOVI:
                            xr[rd] = np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_SLLI:
                            xr[rd] = xr[rs1] << np.int64(cn[gi + _U5] & 63)
                        elif op == I_SRLI:
                            xr[rd] = np.int64(np.uint64(xr[rs1]) >> np.uint64(cn[gi + _U5] & 63))
                        elif op == I_SRAI:
                            xr[rd] = xr[rs1] >> np.int64(cn[gi + _U5] & 63)
                        elif op == I_AND:
                            xr[rd] = xr[rs1] & xr[cn[gi + _U3]]
                        elif op == I_OR:
                            xr[rd] = xr[rs1] | xr[cn[gi + _U3]]
                        elif op == I_XOR:
                            xr[rd] = xr[rs1] ^ xr[cn[gi + _U3]]
                        elif op == I_ANDI:
                            xr[rd] = xr[rs1] & np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_ORI:
                            xr[rd] = xr[rs1] | np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_XORI:
                            xr[rd] = xr[rs1] ^ np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_MUL:
                            xr[rd] = xr[rs1] * xr[cn[gi + _U3]]
                        elif op == I_MULI:
                            xr[rd] = xr[rs1] * np.int64(np.int32(cn[gi + _U5]))
                        elif op == I_JAL:
                            t = p + np.int64(np.int32(cn[gi + _U5]))
                            xr[rd] = p + 1
                            if t < 0 or t >= length:
                                leave = True        # completed after the turn loop
                                break
                            p = t - 1
                        elif op == I_JALR:
                            t = xr[rs1] + np.int64(np.int32(cn[gi + _U5]))
                            xr[rd] = p + 1
                            if t < 0 or t >= length:
                                leave = True        # completed after the turn loop
                                break
                            p = t - 1
                        elif op == I_BLTU:
                            if np.uint64(xr[rs1]) < np.uint64(xr[cn[gi + _U3]]):
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op == I_BGEU:
                            if np.uint64(xr[rs1]) >= np.uint64(xr[cn[gi + _U3]]):
                                t = p + np.int64(np.int32(cn[gi + _U5]))
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                        elif op >= I_VBIN_FIRST and op <= I_VBIN_LAST:
                            fl += vector_fast(op + I_VBIN_TO_OP, vn, rd, rs1, cn[gi + _U3],
                                              cn[gi + _U4])
                        elif op >= I_VMEM_FIRST and op <= I_VMEM_LAST:
                            mc, mh = vector_mem_fast(op + I_VMEM_TO_OP, vn, rd, cn[gi + _U3],
                                                     xr[rs1] + np.int64(np.int32(cn[gi + _U5])),
                                                     m8, sram_bytes)
                            if mc:
                                slow = True         # the outer loop reports the trap
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                        elif op >= I_MEM_FIRST and op <= I_MEM_LAST:
                            mc, mh = scalar_mem(op + I_MEM_TO_OP, rd, rs1, cn[gi + _U3],
                                                cn[gi + _U5], xr, m8, sram_bytes)
                            if mc:
                                slow = True         # the outer loop reports the trap
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                        else:
                            slow = True
                            break
                        xr[cn[gi + _U6]] += 1
                        c += np.int64(cn[gi + _U7])
                        p += 1
                        left -= 1
                    if leave or not slow:
                        break
                    # ---- outer loop: one instruction the inner loop does not run --------------
                    if c > maxc:
                        tcause = CYCLE_LIMIT
                        break
                    gi = np.uint64(p * CODE_COLS)
                    op = np.uint32(cn[gi] >> REAL_SHIFT)
                    if cn[gi] & INNER_MASK == STOP_MARK:
                        if p != skip[node]:
                            stopped = True
                            break
                        skip[node] = -1
                    rd = cn[gi + _U1]
                    rs1 = cn[gi + _U2]
                    rs2 = cn[gi + _U3]
                    rs3 = cn[gi + _U4]
                    imm = cn[gi + _U5]
                    cost = np.int64(cn[gi + _U7])
                    if op <= SCALAR_MAX:
                        if op >= SCALAR_MEM_FIRST and op <= SCALAR_MEM_LAST:
                            mc, mh = scalar_mem(op, rd, rs1, rs2, imm, xr, m8, sram_bytes)
                            if mc:
                                tcause = mc
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                        else:
                            r, t = scalar_op(op, node, rd, rs1, rs2, imm, p, c, x, xy, sr, sr_init,
                                             cfg)
                            if r == S_JUMP:
                                if t < 0 or t >= length:
                                    leave = True        # completed after the turn loop
                                    break
                                p = t - 1
                            elif r == S_HALT:
                                # halt completes (cost, count) and leaves the pc on itself
                                st = HALTED
                                xr[cn[gi + _U6]] += 1
                                c += cost
                                left -= 1
                                break
                            elif r == S_TRAP:
                                tcause = USER_TRAP
                                trap_arg[node] = np.int64(imm)
                                break
                            elif r == S_ILLEGAL:
                                tcause = ILLEGAL_INSTRUCTION
                                break
                    elif op <= VECTOR_MAX:
                        if op <= VECTOR_MEM_MAX:
                            a = xr[rs1] + np.int64(np.int32(imm))
                            stride = np.int64(0)
                            if op in STRIDED_LOADS:
                                stride = xr[rs2]
                            elif op in STRIDED_STORES:
                                stride = xr[rs3]
                            vc, vh = vector_mem(op, node, v, rd, rs2, a, stride, sram16, sram32, sr,
                                                sram_bytes)
                            if vc:
                                tcause = vc
                                break
                            if vh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = vh
                        elif (op == VBCAST or op == VBCASTI or op == VEXT or op == VINS
                              or op == VREDSUM or op == VREDMAX):
                            vector_move(op, node, rd, rs1, imm, x, v)
                        elif op == VCVT_BF16_SR or op == VNARROW_SR:
                            vector_sr(op, node, v, rd, rs1, rs2, sr, uscratch)
                        elif op == VSPLAT:
                            vector_arith(op, v, node, rd, rs1, rs2, np.uint32(imm & 15))
                        else:
                            vector_arith(op, v, node, rd, rs1, rs2, rs3)
                        xr[XCOL_FLOPS] += flops_tab[op]
                    elif op <= MATRIX_MAX:
                        if op in MMA_OPCODES:
                            ks = np.uint64(1)
                            if op in MMAK_OPCODES:
                                ks = np.uint64(xr[rs3])
                            mc, steps = mma_op(op, an, np.int64(rd) * 64, xr[rs1], xr[rs2], ks, imm,
                                               m8, sram_bytes, fscratch)
                            if mc:
                                tcause = mc
                                break
                            # an mmak costs max(steps, 1) mma and counts the FLOPs of each step
                            if steps > 1:
                                cost *= steps
                            xr[XCOL_FLOPS] += flops_tab[op] * steps
                        else:
                            mc, mh = acc_op(op, acc, node, rd, xr[rs1], imm, sram16, sram32,
                                            sram_bytes)
                            if mc:
                                tcause = mc
                                break
                            if mh > xr[XCOL_HWM]:
                                xr[XCOL_HWM] = mh
                    elif op < ILLEGAL:
                        if (c >= horizon and op not in SEND_OPCODES
                                and link_src[node * N_DIRS + np.int64(rs3)] >= n):
                            break           # paused at the window's end, still running
                        # network: the clock moves by the timing equations, not by the cost
                        ns, c2, nh = net_op(op, node, rd, rs1, rs2, np.int64(rs3), c, x, v, sram8,
                                            fifo, stats, out_link, link_lat, link_bw, link_src,
                                            wake, cfg)
                        if ns != 0:
                            if ns < 0:
                                st = -ns
                                if cn[gi] & INNER_MASK == STOP_MARK:
                                    skip[node] = p      # retry it without stopping again
                            else:
                                tcause = ns
                            break
                        if nh > xr[XCOL_HWM]:
                            xr[XCOL_HWM] = nh
                        if trace is not None:
                            trace_net(trace, op, node, rd, np.int64(rs3), c, c2, fifo, out_link,
                                      cfg)
                        cost = c2 - c
                    elif op == FELL_OFF:
                        tcause = PC_OUT_OF_RANGE
                        break
                    else:
                        tcause = ILLEGAL_INSTRUCTION
                        break
                    xr[cn[gi + _U6]] += 1
                    c += cost
                    p += 1
                    left -= 1
                if leave:
                    xr[cn[gi + _U6]] += 1
                    c += np.int64(cn[gi + _U7])
                    p = t
                    left -= 1
                pc[node] = p
                clock[node] = c
                xr[XCOL_FLOPS] += fl
                # A running node's flag and state stay as they are: no write, so two threads
                # never fight over the cache line of flags at the edge of their ranges.
                if tcause:
                    state[node] = TRAPPED
                    cause[node] = tcause
                    wake[node] = 0
                elif st != RUNNING:
                    state[node] = st
                    wake[node] = 0
                elif state[node] != RUNNING:
                    state[node] = RUNNING
                if threaded:
                    release(xflat, claim_at)
                k = q - left
                total += k
                if stealing:
                    helped += k
                if use_nb:
                    node_budget[node] -= k
                if k > 0:
                    progress = True
                if stopped:
                    out[O_EXECUTED] = total
                    out[O_REASON] = R_STOP
                    out[O_STOP_NODE] = node
                    out[O_STOP_PC] = p
                    return
                if budget >= 0 and total >= budget:
                    out[O_EXECUTED] = total
                    out[O_HELPED] = helped
                    out[O_REASON] = R_BUDGET
                    return
        if progress:
            stealing = False        # back to the thread's own nodes: messages may have woken them
        elif threaded and not stealing:
            stealing = True
        else:
            break
    out[O_EXECUTED] = total
    out[O_HELPED] = helped


fingerprint.check(run_loop)
