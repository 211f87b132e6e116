"""The numbers the jitted run loop and the Python side agree on: node states, why the loop
returned, the slots of its `cfg` and `out` arrays, and the layout of the trace records.

Why a module of their own: the loop freezes them into its compiled code, and emulator.state,
.emulator, .trace and the debugger write or read the same arrays from Python. Keeping them apart
from the loop lets that Python code import them without importing Numba's run loop, and gives the
loop's cache fingerprint (emulator.jit.fingerprint) one file to watch for them.
"""

from __future__ import annotations

from d1isa.machine import DIRECTIONS, TIMING_CLASSES

# ---- node states -------------------------------------------------------------------------------
RUNNING, BLOCKED_SEND, BLOCKED_RECV, HALTED, TRAPPED = 0, 1, 2, 3, 4
STATE_NAMES = ("running", "blocked on send", "blocked on receive", "halted", "trapped")

# What emulator.semantics.scalar.scalar_op tells the loop to do next.
S_NEXT, S_JUMP, S_HALT, S_TRAP, S_ILLEGAL = range(5)

# Why run_loop returned (out[O_REASON]).
R_IDLE, R_STOP, R_BUDGET = 0, 1, 2

# ---- cfg slots (machine values and run controls, int64) ----------------------------------------
# K_N is the number of node rows the loop runs (the whole machine, or one MPI rank's share);
# K_NODES the machine's live nodes (what `getn` reads). K_HORIZON: a node runs an instruction only
# while its clock is below it (the end of an MPI time window, emulator.distributed); NO_HORIZON
# otherwise. K_KEEP_WAKE = 1: start from the wake flags as the caller left them, instead of
# waking every unfinished node (the caller woke the nodes whose links it changed).
(K_N, K_WIDTH, K_HEIGHT, K_SRAM, K_DEPTH, K_MAXMSG, K_COST_SEND, K_COST_RECV, K_MAX_CYCLES,
 K_QUANTUM, K_BUDGET, K_ONLY_NODE, K_USE_NODE_BUDGET, K_SRAM_ROW, K_LO, K_HI, K_NODES,
 K_HORIZON, K_KEEP_WAKE) = range(19)
CFG_SIZE = 19
NO_HORIZON = 1 << 62

# ---- out slots (O_HELPED: instructions a thread ran on other threads' nodes) -------------------
O_EXECUTED, O_STOP_NODE, O_STOP_PC, O_REASON, O_HELPED = range(5)
OUT_SIZE = 5

# Links per node: FIFOs are indexed by receiving node * N_DIRS + direction (emulator.state).
N_DIRS = len(DIRECTIONS)

# ---- trace records (emulator.trace reads them) -------------------------------------------------
# Rows of EV_COLS int64: (kind, node, a, b, t0, t1).
EV_REGION, EV_WAIT_RECV, EV_WAIT_SEND, EV_SEND, EV_RECV = 1, 2, 3, 4, 5
EV_COLS = 6
# fill counters: stored slice rows, dropped slice rows, stored message rows, dropped message rows
F_EV, F_EV_DROP, F_MSG, F_MSG_DROP = range(4)
# columns of the per-region totals (and of each node's snapshot at its last region switch)
(RS_CYCLES, RS_STALL, RS_STALL_SEND, RS_FLOPS, RS_SRAM, RS_LINK_BYTES, RS_LINK_MSGS,
 RS_ENTRIES) = range(8)
RS_COUNT = 8                            # then one column per timing class
NCLASSES = len(TIMING_CLASSES)          # instruction-count columns in x and in region stats
RS_COLS = RS_COUNT + NCLASSES
