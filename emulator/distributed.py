"""The emulator on MPI ranks: one machine, its chips shared out among processes, bit-identical
to one process (docs/SCALE.md, "Beyond one host: MPI").

`Emulator(obj, comm=MPI.COMM_WORLD)` on more than one rank makes a `RankEmulator`: each rank
holds the state of a contiguous block of chips (chip index = chip row * chips_x + chip column,
`Partition`) and nothing else, plus a ghost FIFO for each link from one of its nodes into another
rank's node. Rank 0 holds the object and does the I/O; the other ranks receive their share of
the code and data (`make_share`), their pieces of each input, and send back their pieces of each
output and their statistics.

Running is a sequence of time windows. In a window every rank runs its nodes (the ordinary run
loop, emulator.kernel); the nodes that receive from another rank only while their clocks are
below the window's end (cfg[K_HORIZON]), the others freely, as they can only wait for their own
rank's messages. Then the ranks exchange what crossed: each message pushed into a ghost FIFO
(length, arrival time, payload) goes to the rank that owns its receiver, which appends it to the
real FIFO; and each message popped from a FIFO fed by another rank goes back as a credit (the
new pop count and the times the slots were freed), so the sender's ghost sees the FIFO's room
and the slots' free times exactly as in one process: backpressure crossing the boundary.

Why the results cannot depend on the number of ranks: timing depends only on each node's
program order and on each link's message order (emulator.kernel), a blocked instruction
changes nothing, and everything a node's timing reads about a link (arrival times, slot free
times) travels with the messages and credits. So whenever a rank sees a message or a credit,
the node that uses it computes exactly the times it would in one process; seeing it a window
later only means retrying a blocked instruction. The window length is thus a matter of speed,
not of correctness. It is the lookahead, the smallest latency + 1 serialisation cycle of any
link between two ranks (chip_hop_latency + 1 on the chip-edge links): a message sent at cycle t
arrives at t + lookahead or later, so every message a node can receive before a window's end
was sent before the window's start and has already crossed, and the ranks advance in step
through modelled time. Windows in which nothing can run are skipped: the next one starts at the
earliest clock of a node waiting for it.

The run ends after a window that changed nothing anywhere: no rank ran an instruction, nothing
crossed, and no node waits for a later window. Each window's flags (that, a Ctrl-C, the
earliest waiting clock) are all-reduced while the next window runs. Then traps, wait-for chains
(which may run through several ranks), cycle counts and statistics are gathered on rank 0 in
machine node id order, and are those of one process. A Ctrl-C (the launcher sends it to every
rank) stops all ranks at the same window. A rank that fails calls MPI_Abort, so all stop with
its message rather than wait for it.

Every method is collective: all ranks call the same methods in the same order (rank 0's
arguments count; `_start` checks the order). The `d1` command line runs its commands on rank 0
only, while the other ranks `serve`: they follow rank 0's calls, each announced by a small
header. A command that makes several emulators in turn (a scaling study) closes each
(`close()`) to free the other ranks' shares.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from d1isa import isa
from d1isa.errors import D1Error
from d1isa.machine import OPPOSITE, Machine
from d1isa.objfile import (
    CodeBlock,
    DataInit,
    InitRegs,
    ObjectFile,
    TensorLayout,
    TensorPiece,
)
from emulator import kernel as K
from emulator.constants import K_HORIZON, K_KEEP_WAKE, K_N, N_DIRS, NO_HORIZON
from emulator.decode import decode_blocks, kernel_table
from emulator.emulator import (
    DEFAULT_MAX_CYCLES,
    DEFAULT_QUANTUM,
    Emulator,
    _count,
    _host_array,
    _piece_view,
    _ScatterPlan,
    _set_controls,
    _to_raw,
    as_declared,
    assemble_output,
    on_chip,
    run_settings,
    wait_chains_of,
)
from emulator.opcodes import FELL_OFF
from emulator.report import RunResult, Trap, Wait, Where
from emulator.state import (
    State,
    aligned_zeros,
    check_host_memory,
    host_bytes,
    make_cfg,
    xy_table,
)

# A kernel call runs at most this many instructions, so that Ctrl-C is noticed when a window is
# long (a window's work is normally far less).
_CHUNK = 1 << 27
_NEVER = NO_HORIZON
# How long a rank waiting for the others spins, then yields the CPU, before it sleeps (_wait).
SPIN = 50e-6
YIELD = 1e-3


# ---- the machine shared out ------------------------------------------------------------------

class Partition:
    """Which rank holds which node: chips in contiguous blocks of the chip order (row-major over
    the chip grid), as even as the counts allow. With more ranks than chips the first ranks
    hold one chip each and the others none (they take part in every call with nothing to run,
    so that a study of several machines, `d1 scale`, can run them all on the same ranks)."""

    def __init__(self, machine: Machine, ranks: int) -> None:
        m = machine
        self.machine = m
        self.ranks = ranks
        self.chip_count = chips = m.chips_x * m.chips_y
        xy = np.asarray(m.xy, dtype=np.int64)
        chip = (xy[:, 1] // m.rows) * m.chips_x + xy[:, 0] // m.cols
        # chips [first[r], first[r + 1]) belong to rank r
        self.first_chip = [min(r, chips) if ranks > chips else r * chips // ranks
                           for r in range(ranks + 1)]
        self.owner = (np.searchsorted(np.asarray(self.first_chip), chip, side="right") - 1
                      ).astype(np.int64)

    def nodes(self, rank: int) -> np.ndarray:
        """Machine node ids held by `rank`, ascending."""
        return np.nonzero(self.owner == rank)[0].astype(np.int64)

    def chips(self, rank: int) -> tuple[int, int]:
        """The chips [first, last + 1) of `rank` (empty when it holds none)."""
        return self.first_chip[rank], self.first_chip[rank + 1]

    def _crossing(self) -> np.ndarray:
        """[node, direction]: whether the link out of the node that way enters another rank."""
        nbr = np.asarray(self.machine.neighbors, dtype=np.int64)
        ok = nbr >= 0
        return ok & (self.owner[:, None] != self.owner[np.where(ok, nbr, 0)])

    def lookahead(self) -> int:
        """The fewest cycles between a send on one rank and the message's arrival on another:
        the smallest latency of a link between two ranks, plus one cycle of serialisation
        (every message is at least one byte). 0 when no link joins two ranks."""
        cross = self._crossing()
        lat = np.asarray(self.machine.link_latency, dtype=np.int64)
        return int(lat[cross].min()) + 1 if cross.any() else 0

    def share_sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per rank: the nodes it holds and its ghost FIFOs (its links into other ranks'
        nodes), the two sizes of its State."""
        nodes = np.bincount(self.owner, minlength=self.ranks)
        ghosts = np.bincount(self.owner, weights=self._crossing().sum(axis=1),
                             minlength=self.ranks).astype(np.int64)
        return nodes, ghosts


def check_share_memory(machine: Machine, ranks: int) -> None:
    """Refuse, before anything is compiled for it, a machine whose largest share on `ranks`
    ranks would not fit in this host's memory (emulator.state.check_host_memory). Ranks hold
    only their own chips, so a machine too large for one process may fit on several, which
    is what they are for; each rank's State checks its own share again as it allocates."""
    nodes, ghosts = Partition(machine, ranks).share_sizes()
    need = [host_bytes(machine, int(n), int(g)) for n, g in zip(nodes, ghosts, strict=True)]
    r = int(np.argmax(need))
    check_host_memory(machine, nodes=int(nodes[r]), ghost_links=int(ghosts[r]))


def _links_between(part: Partition, rank: int, local: np.ndarray) -> tuple[dict, dict]:
    """The links that cross between `rank` and each other rank, both ways, in one order both
    ends agree on (the receiving FIFO's machine link id).

    Returns (out, into): out[q] = [(sending row, direction)] of this rank's links into rank q's
    nodes; into[q] = [receiving FIFO index] of the links from rank q into this rank's nodes.
    """
    m = part.machine
    nbr = np.asarray(m.neighbors, dtype=np.int64)
    owner = part.owner
    out: dict[int, list[tuple[int, int, int]]] = {}
    into: dict[int, list[tuple[int, int]]] = {}
    for g in np.nonzero(owner == rank)[0].tolist():
        for d in range(N_DIRS):
            t = int(nbr[g, d])
            if t < 0 or owner[t] == rank:
                continue
            q = int(owner[t])
            # this node sends into t's FIFO from OPPOSITE[d]; t sends into ours from d
            out.setdefault(q, []).append((t * N_DIRS + OPPOSITE[d], int(local[g]), d))
            into.setdefault(q, []).append((g * N_DIRS + d, int(local[g]) * N_DIRS + d))
    return ({q: [(row, d) for _, row, d in sorted(v)] for q, v in sorted(out.items())},
            {q: [f for _, f in sorted(v)] for q, v in sorted(into.items())})


@dataclass
class Share:
    """What one rank needs of the object: the code blocks its nodes run (renumbered), each
    row's block, its nodes' initial data, and each tensor's pieces on its nodes, numbered as in
    the whole object (the first of overlapping pieces wins when gathering)."""

    blocks: list[CodeBlock]
    node_block: np.ndarray
    data: list[DataInit]
    tensors: list[TensorLayout]
    piece_ids: dict[str, list[int]]
    files: list[str]
    sources: dict[str, str]
    meta: dict[str, Any]
    init: InitRegs | None = None        # the registers its rows start with (SPMD code)


def make_share(obj: ObjectFile, nodes: np.ndarray) -> Share:
    """Rank's share of `obj` for the machine node ids `nodes` (ascending); rows are numbered
    in that order."""
    n = obj.machine.n_live
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    renumber: dict[int, int] = {}
    blocks: list[CodeBlock] = []
    node_block = np.full(len(nodes), -1, dtype=np.int32)
    for row, g in enumerate(nodes.tolist()):
        b = int(obj.node_block[g])
        if b < 0:
            continue
        if b not in renumber:
            renumber[b] = len(blocks)
            blocks.append(obj.blocks[b])
        node_block[row] = renumber[b]
    data = [DataInit(int(local[d.node]), d.addr, d.data) for d in obj.data if local[d.node] >= 0]
    tensors, piece_ids = [], {}
    for t in obj.tensors:
        ids = [i for i, p in enumerate(t.pieces) if local[p.node] >= 0]
        pieces = [TensorPiece(int(local[t.pieces[i].node]), t.pieces[i].addr, t.pieces[i].offset,
                              t.pieces[i].shape, t.pieces[i].strides) for i in ids]
        tensors.append(TensorLayout(t.name, t.dtype, tuple(t.shape), t.role, pieces))
        piece_ids[t.name] = ids
    init = InitRegs(obj.init.regs, obj.init.rows, obj.init.index[nodes])
    return Share(blocks, node_block, data, tensors, piece_ids, list(obj.files),
                 dict(obj.sources), dict(obj.meta), init)


def _slices(p: TensorPiece) -> tuple[slice, ...]:
    """The part of the whole tensor that piece p holds."""
    return tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))


# ---- what crosses between ranks, packed for MPI ----------------------------------------------
#
# One int64 buffer per pair of ranks and window: [messages, credits, records...]. A message
# record is (link k, length, arrival time, payload padded to 8 bytes); a credit record is (link k,
# count, the consumption time of each newly popped message). k indexes the pair's link list.

@njit(cache=True, nogil=True)
def _pack(buf, ghosts, sent, credit_fifos, credited, flen, farr, fifo8, pushed, popped,
          consumed, depth):
    b8 = buf.view(np.uint8)
    w = 2
    nm = 0
    for k in range(ghosts.size):
        f = ghosts[k]
        j1 = pushed[f]
        for j in range(sent[k], j1):
            s = j % depth
            nb = flen[f, s]
            buf[w] = k
            buf[w + 1] = nb
            buf[w + 2] = farr[f, s]
            o = (w + 3) * 8
            for i in range(nb):
                b8[o + i] = fifo8[f, s, i]
            w += 3 + (nb + 7) // 8
            nm += 1
        sent[k] = j1
    nc = 0
    for k in range(credit_fifos.size):
        f = credit_fifos[k]
        j0 = credited[k]
        j1 = popped[f]
        if j1 > j0:
            buf[w] = k
            buf[w + 1] = j1 - j0
            w += 2
            for j in range(j0, j1):
                buf[w] = consumed[f, j % depth]
                w += 1
            credited[k] = j1
            nc += 1
    buf[0] = nm
    buf[1] = nc
    return w


@njit(cache=True, nogil=True)
def _unpack(buf, fifos, ghosts, flen, farr, fifo8, pushed, popped, consumed, depth, wake,
            link_src):
    """Append the messages to the FIFOs they were sent into (`fifos`, by the sender's link
    order) and apply the credits to this rank's ghosts, waking the receiving and the sending
    nodes as a push and a pop do in the run loop. Returns messages + credits applied."""
    b8 = buf.view(np.uint8)
    nm = buf[0]
    nc = buf[1]
    w = 2
    for _ in range(nm):
        f = fifos[buf[w]]
        nb = buf[w + 1]
        j = pushed[f]
        s = j % depth
        flen[f, s] = nb
        farr[f, s] = buf[w + 2]
        o = (w + 3) * 8
        for i in range(nb):
            fifo8[f, s, i] = b8[o + i]
        pushed[f] = j + 1
        wake[f // 4] = 1
        w += 3 + (nb + 7) // 8
    for _ in range(nc):
        f = ghosts[buf[w]]
        cnt = buf[w + 1]
        w += 2
        j0 = popped[f]
        for j in range(j0, j0 + cnt):
            consumed[f, j % depth] = buf[w]
            w += 1
        popped[f] = j0 + cnt
        wake[link_src[f]] = 1
    return nm + nc


class _Neighbour:
    """The links between this rank and rank `rank`, with their counters and buffers."""

    def __init__(self, rank: int, ghosts: np.ndarray, fifos: np.ndarray, depth: int,
                 max_message: int) -> None:
        self.rank = rank
        self.ghosts = ghosts                    # this rank's ghost FIFOs into rank's nodes
        self.fifos = fifos                      # this rank's FIFOs fed by rank's nodes
        self.sent = np.zeros(len(ghosts), dtype=np.int64)
        self.credited = np.zeros(len(fifos), dtype=np.int64)
        # At most `depth` new messages and `depth` credits per link and window.
        msg_words = 3 + (max_message + 7) // 8
        self.send_buf = np.zeros(2 + len(ghosts) * depth * msg_words
                                 + len(fifos) * (2 + depth), dtype=np.int64)
        self.recv_buf = np.zeros(2 + len(fifos) * depth * msg_words
                                 + len(ghosts) * (2 + depth), dtype=np.int64)

    def clear(self) -> None:
        self.sent[:] = 0
        self.credited[:] = 0


# ---- the protocol: every rank calls the same methods in the same order -----------------------

_PENDING: dict[int, tuple[int, str, Any]] = {}     # a header serve() received for a method
_SERIAL: dict[int, int] = {}                       # emulators made so far, per communicator


class Refused(D1Error):
    """Rank 0 refused the arguments of a collective call (an unknown tensor, an input of the
    wrong shape): raised on the other ranks with rank 0's message, as rank 0 raises its own
    error, so that every rank leaves the call the same way. Ranks that only checked their own
    copy of the arguments would wait for a call rank 0 never makes."""


@dataclass
class _Refusal:
    """What rank 0 sends in place of a call's arguments when it refused them."""

    message: str


def _doorbell(comm: Any) -> None:
    """Wait until every rank has reached the next collective call. Rank 0 finds the others
    waiting; the others wait cheaply (polling with short sleeps), so a rank that waits while
    rank 0 compiles or checks does not take a CPU from it."""
    req = comm.Ibarrier()
    if comm.Get_rank() == 0:
        req.Wait()
        return
    spins = 0
    pause = 0.0002
    while not req.Test():
        spins += 1
        if spins > 200:
            time.sleep(pause)
            pause = min(0.005, pause * 1.5)


def _wait(MPI: Any, requests: list[Any]) -> None:
    """Wait for MPI requests: spin for up to SPIN seconds (on a quiet host the other ranks
    answer within microseconds), then yield the CPU between tests, then sleep between them
    after YIELD seconds: on a host with more runnable processes than cores (several ranks per
    core, or other work) the rank being waited for then gets a core sooner than if this one
    kept spinning in MPI's own wait."""
    if MPI.Request.Testall(requests):
        return
    t0 = time.perf_counter()
    while not MPI.Request.Testall(requests):
        waited = time.perf_counter() - t0
        if waited < SPIN:
            continue
        if waited < YIELD:
            os.sched_yield()
        else:
            time.sleep(0.0001)


def _start(comm: Any, serial: int, op: str, args: Any = None) -> Any:
    """Begin collective method `op` of emulator `serial`: rank 0 sends (serial, op, args);
    every other rank checks that it is calling the same. Returns rank 0's args."""
    if comm.Get_rank() == 0:
        _doorbell(comm)
        comm.bcast((serial, op, args), root=0)
        return args
    got = _PENDING.pop(id(comm), None)
    if got is None:
        _doorbell(comm)
        got = comm.bcast(None, root=0)
    if tuple(got[:2]) != (serial, op):
        fatal(comm, f"this rank called {op!r} of emulator {serial} while rank 0 called "
                    f"{got[1]!r} of emulator {got[0]}: every rank must make the same calls in "
                    "the same order (docs/SCALE.md)")
    return got[2]


def fatal(comm: Any, message: str, code: int = 3) -> None:
    """Print `message` for this rank and stop every rank (MPI_Abort): never a hang."""
    sys.stderr.write(f"d1: rank {comm.Get_rank()} of {comm.Get_size()}: {message}\n")
    sys.stderr.flush()
    try:
        comm.Abort(code)
    finally:
        os._exit(code)          # MPI_Abort may return before the launcher stops this process


def _describe(e: BaseException) -> tuple[str, int]:
    """The message and exit status of a failure that stops every rank: a D1Error as one
    process prints it (its render() already starts with "error: ", or a file:line:col)."""
    if isinstance(e, D1Error):
        return e.render(), e.exit_code
    if isinstance(e, MemoryError):
        return "error: out of host memory", 2
    return f"internal error: {type(e).__name__}: {e}", 3


class _Interrupts:
    """Ctrl-C during a collective method: noted, not raised, so that no rank leaves the
    protocol half way. A handler someone else installed (the Trainer's "stop after this step")
    is called instead; the default one becomes a flag, raised as KeyboardInterrupt once the
    method is complete (for run: at a window's end, on every rank together)."""

    def __init__(self) -> None:
        self.flag = False
        self.prev: Any = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            prev = signal.getsignal(signal.SIGINT)
            if callable(prev):
                self.prev = prev
                signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        prev = self.prev
        if prev is signal.default_int_handler:
            self.flag = True
            return
        prev(signum, frame)
        now = signal.getsignal(signal.SIGINT)
        if now is not self._handler:        # it changed the handler (e.g. back to the default)
            self.prev = now
            signal.signal(signal.SIGINT, self._handler)

    def __exit__(self, *exc: Any) -> None:
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)


# ---- one rank's emulator ---------------------------------------------------------------------

class RankEmulator(Emulator):
    """One rank's share of the machine (see the module docstring). Made by
    `Emulator(obj, comm=comm)` when comm has more than one rank; rank 0 passes the object, the
    others may pass None. Every method is collective.

    Rows of the state are this rank's nodes in machine id order (`state.gid` gives their ids);
    reports, statistics and outputs name nodes by machine id, as in one process.
    `window`: cycles per time window, default (None) the lookahead; results never depend on it.
    """

    def __init__(self, obj: ObjectFile | None, seed: int = 0,
                 max_cycles: int = DEFAULT_MAX_CYCLES, quantum: int = DEFAULT_QUANTUM,
                 trace: str | None = None, trace_events: int | None = None,
                 trace_messages: int | None = None, threads: int = 1, comm: Any = None,
                 window: int | None = None) -> None:
        self.comm = comm
        self.rank = comm.Get_rank()
        self.ranks = comm.Get_size()
        params = refused = None
        if self.rank == 0:
            try:
                params = self._check_new(obj, seed, max_cycles, quantum, trace, threads, window)
                # the largest share, before any rank allocates: a rank that could not would
                # stop every rank, each printing the message (check_share_memory)
                check_share_memory(obj.machine, self.ranks)
            except D1Error as e:
                refused = e
        # numbered on every rank alike, a refused call too
        _SERIAL[id(comm)] = self.serial = _SERIAL.get(id(comm), 0) + 1
        with self._op("new", params, refused) as (params, _):
            m = obj.machine if self.rank == 0 else Machine.from_dict(params["machine"])
            self.partition = part = Partition(m, self.ranks)
            nodes = part.nodes(self.rank)
            if self.rank == 0:
                self.source = obj
                shares = [make_share(obj, part.nodes(r)) for r in range(self.ranks)]
                for r in range(1, self.ranks):
                    comm.send(shares[r], dest=r, tag=11)
                share = shares[0]
                del shares
            else:
                self.source = None
                share = comm.recv(source=0, tag=11)
            self._setup(m, share, nodes, params)
        # (a rank that could not allocate its share has stopped every rank by now)

    # ---- set-up ----------------------------------------------------------------------------------

    @staticmethod
    def _check_new(obj: Any, seed: int, max_cycles: int, quantum: int, trace: str | None,
                   threads: int, window: int | None) -> dict[str, Any]:
        """Rank 0's checks of the constructor's arguments; the parameters every rank gets."""
        if not isinstance(obj, ObjectFile):
            raise D1Error(f"Emulator takes an ObjectFile on rank 0, not {type(obj).__name__}")
        if trace is not None:
            raise D1Error("tracing (trace=, --trace, --regions) runs on one process, not on "
                          "MPI ranks")
        # int() read threads=1.5 as 1 and window=True as 1, and 'x' was a ValueError on
        # rank 0 alone (the other ranks went on to the next call: out of step)
        if _count("threads", threads, 1) != 1:
            raise D1Error("on MPI ranks each rank runs one thread: use more ranks instead "
                          f"of threads={threads}")
        return {"machine": obj.machine.to_dict(),
                **run_settings(seed, max_cycles, quantum, window)}

    def _setup(self, m: Machine, share: Share, nodes: np.ndarray, params: dict) -> None:
        self.machine = m
        self.seed = params["seed"]
        self.max_cycles = params["max_cycles"]
        self.quantum = params["quantum"]
        self.threads = 1
        self.phases = 0
        self.helped_instructions = 0
        self.lookahead = self.partition.lookahead()
        # no link between two ranks (one rank holds every chip): nothing to pace
        self.window = params["window"] or (self.lookahead if self.lookahead else _NEVER)
        self.obj = ObjectFile(m, share.blocks, share.node_block, share.data, [],
                              share.tensors, share.files, share.sources, share.meta,
                              init=share.init)
        self._piece_ids = share.piece_ids
        n = len(nodes)
        self.n = n
        local = np.full(m.n_live, -1, dtype=np.int64)
        local[nodes] = np.arange(n)
        out, into = _links_between(self.partition, self.rank, local)
        ghosts = sum(len(v) for v in out.values())
        self.code = decode_blocks(m, share.blocks, share.node_block)
        self.state = st = State(m, self.seed, nodes=nodes, ghost_links=ghosts)
        # Links: this rank's rows' own, then ghosts in neighbour order.
        nbr = np.asarray(m.neighbors, dtype=np.int64)[nodes]
        out_link = np.full(N_DIRS * n, -1, dtype=np.int64)
        for d in range(N_DIRS):
            t = nbr[:, d]
            mine = (t >= 0) & (local[np.where(t >= 0, t, 0)] >= 0)
            rows = np.nonzero(mine)[0]
            out_link[rows * N_DIRS + d] = local[t[rows]] * N_DIRS + OPPOSITE[d]
        self.neighbours: list[_Neighbour] = []
        g = N_DIRS * n
        peers = sorted(set(out) | set(into))
        for q in peers:
            sends = out.get(q, [])
            ghost_ids = np.arange(g, g + len(sends), dtype=np.int64)
            for (row, d), f in zip(sends, ghost_ids.tolist(), strict=True):
                out_link[row * N_DIRS + d] = f
            g += len(sends)
            self.neighbours.append(_Neighbour(q, ghost_ids,
                                              np.asarray(into.get(q, []), dtype=np.int64),
                                              m.fifo_depth, m.max_message_bytes))
        self.out_link = out_link
        self.link_lat = np.ascontiguousarray(m.link_latency, dtype=np.int64)[nodes].reshape(-1)
        bw = np.ascontiguousarray(m.link_bandwidth, dtype=np.int64)[nodes].reshape(-1).copy()
        bw[bw <= 0] = 1
        self.link_bw = bw
        # Each FIFO's sending row (-1 at the mesh edge, as in one process); a FIFO fed from
        # another rank points at a spare wake flag past the rows, which is how the run loop
        # knows its receives wait for the window (kernel), and a send into a ghost sets one there
        # too.
        links = st.links
        self.link_src = np.full(links, -1, dtype=np.int64)
        for fifos in into.values():
            self.link_src[np.asarray(fifos, dtype=np.int64)] = n
        sends = np.nonzero(out_link >= 0)[0]
        self.link_src[out_link[sends]] = sends // N_DIRS
        self._wake = np.zeros((links // N_DIRS + 2 + 7) // 8 * 8, dtype=np.uint8)
        self.xy = np.ascontiguousarray(np.asarray(m.xy)[nodes], dtype=np.int64)
        self._xyid = xy_table(self.xy, st.gid)
        flops = np.zeros(FELL_OFF + 1, dtype=np.int64)
        flops[:256] = isa.flops_by_opcode()
        self.flops_tab = flops
        self.cfg = make_cfg(m, self.max_cycles)
        self.cfg[K_N] = n
        self.stop_flags = np.zeros(self.code.total, dtype=np.int8)
        self._flat_code = kernel_table(self.code.table)
        self._uscratch = np.zeros(16, dtype=np.uint32)
        self._fscratch = aligned_zeros((64,), np.float32)
        self._out = np.zeros(K.OUT_SIZE, dtype=np.int64)
        self._node_budget = np.zeros(n, dtype=np.int64)
        self.host_seconds = 0.0
        self.host_instructions = 0
        self.jit_seconds = 0.0
        self.sync_seconds = 0.0
        self.cpu_seconds = 0.0
        self.windows = 0
        self._warm: set[Any] = set()
        self.recorder = None
        self._gathered: Any = None
        self._init_regs = None
        self._written = None
        self._plans: dict[str, _ScatterPlan] = {}
        self._held: dict[str, list[np.ndarray]] = {}      # rank 0: set_input's, by rank
        self._place_initial()

    # ---- the protocol ------------------------------------------------------------------------

    @contextmanager
    def _op(self, name: str, args: Any = None, refused: D1Error | None = None):
        """One collective method: its header, Ctrl-C held back, and any failure stopping every
        rank (the others would otherwise wait for this one forever). `refused`: rank 0's
        error about the call's arguments, raised there and as `Refused` on every other rank
        before the method's work (a user's mistake, which one process raises too)."""
        if name != "new" and self.state is None:
            # on every rank alike (close() is collective); the run used to fail on each rank
            # as an internal error deep in the method
            raise D1Error(f"{name}: this emulator was closed (close() freed every rank's "
                          "share of the machine): make a new one")
        with _Interrupts() as intr:
            try:
                got = _start(self.comm, self.serial, name,
                             args if refused is None else _Refusal(str(refused)))
            except BaseException as e:                       # noqa: BLE001
                text, code = _describe(e)
                fatal(self.comm, f"{name}: {text}", code)
            if isinstance(got, _Refusal):
                raise refused if refused is not None else Refused(got.message)
            try:
                yield got, intr
            except BaseException as e:                       # noqa: BLE001
                text, code = _describe(e)
                fatal(self.comm, f"{name}: {text}", code)
        if intr.flag:
            raise KeyboardInterrupt

    def close(self) -> None:
        """Free this emulator on every rank (collective); closing it again does nothing."""
        if self.state is None:
            return
        with self._op("close"):
            pass
        self.state = None

    # ---- running -----------------------------------------------------------------------------

    def run(self, max_instructions: int | None = None) -> RunResult:
        """Run every rank's nodes, window by window, until nothing can move anywhere; the
        result (the same on every rank) is that of one process."""
        if max_instructions is not None:
            raise D1Error("max_instructions is not available on MPI ranks: a run goes to its "
                          "end")
        t0 = time.perf_counter()
        interrupted = False
        with self._op("run") as (_, intr):
            executed = self._windows(intr)
            interrupted = executed < 0
            result = None if interrupted else self._final(max(0, executed),
                                                          time.perf_counter() - t0)
        if interrupted:
            raise KeyboardInterrupt
        return result

    def _windows(self, intr: _Interrupts) -> int:
        """The window loop; returns the instructions this rank executed, or -1 when a Ctrl-C
        stopped every rank."""
        from mpi4py import MPI

        comm = self.comm
        node_t, fifo_t, stats_t = self.state.kernel_tuples()
        geo = self._geo()
        self._warm_up(node_t, fifo_t, stats_t, geo, None)
        self._warm_exchange(fifo_t)
        _set_controls(self.cfg, self.max_cycles, self.quantum, _CHUNK)
        # Every unfinished node awake for the first window; after that the loop wakes what its
        # pushes and pops unblock, and _unpack what the exchange does (K_KEEP_WAKE).
        np.less(self.state.state, K.HALTED, out=self._wake[:self.n], casting="unsafe")
        self.cfg[K_KEEP_WAKE] = 1
        args = (node_t, fifo_t, stats_t, geo, self._node_budget, self._out, self._uscratch,
                self._fscratch, None)
        st = self.state
        depth = self.machine.fifo_depth
        fifo8, _, _, flen, farr, pushed, popped, consumed, _ = fifo_t
        w = self.window
        # Each window's flags (ran or crossed anything, Ctrl-C, minus the earliest clock of a
        # node waiting for the next window) are all-reduced while the next window runs, and
        # read after its exchange: one wait per window instead of two. A run therefore ends
        # one (empty) window after the one that changed nothing.
        mine = np.zeros(3, dtype=np.int64)
        agreed = np.zeros(3, dtype=np.int64)
        pending: Any = None
        total = 0
        sync = 0.0
        t_run = time.perf_counter()
        cpu0 = time.process_time()
        # The first window starts at the earliest clock of a node that can run.
        horizon = min(self._earliest(MPI) + w, _NEVER)
        requests: list[Any] = []
        try:
            while True:
                self.cfg[K_HORIZON] = horizon
                with np.errstate(all="ignore"):
                    K.run_loop(*args)
                k = int(self._out[K.O_EXECUTED])
                total += k
                self.windows += 1
                t1 = time.perf_counter()
                moved = 0
                for nb in self.neighbours:
                    requests.append(comm.Irecv([nb.recv_buf, MPI.INT64_T], source=nb.rank,
                                               tag=7))
                for nb in self.neighbours:
                    size = _pack(nb.send_buf, nb.ghosts, nb.sent, nb.fifos, nb.credited,
                                 flen, farr, fifo8, pushed, popped, consumed, depth)
                    moved += int(nb.send_buf[0] + nb.send_buf[1])
                    requests.append(comm.Isend([nb.send_buf[:size], MPI.INT64_T],
                                               dest=nb.rank, tag=7))
                if pending is not None:
                    requests.append(pending)
                _wait(MPI, requests)
                requests.clear()
                for nb in self.neighbours:
                    moved += _unpack(nb.recv_buf, nb.fifos, nb.ghosts, flen, farr, fifo8,
                                     pushed, popped, consumed, depth, self._wake, self.link_src)
                paused = st.clock[st.state == K.RUNNING]
                nxt = _NEVER
                if pending is not None:
                    # the previous window, agreed by every rank
                    if agreed[1]:
                        intr.flag = False
                        return -1
                    nxt = -int(agreed[2])
                    if not agreed[0] and nxt >= _NEVER:
                        break           # nothing ran, crossed or waited anywhere: the end
                mine[0] = 1 if (k > 0 or moved > 0) else 0
                mine[1] = 1 if intr.flag else 0
                mine[2] = -int(paused.min()) if paused.size else -_NEVER
                agreed[:] = mine
                pending = comm.Iallreduce(MPI.IN_PLACE, agreed, op=MPI.MAX)
                sync += time.perf_counter() - t1
                horizon = min(max(horizon, nxt) + w if nxt < _NEVER else horizon + w, _NEVER)
        finally:
            self.cfg[K_HORIZON] = NO_HORIZON
            self.cfg[K_KEEP_WAKE] = 0
            elapsed = time.perf_counter() - t_run
            self.host_seconds += elapsed
            self.cpu_seconds += time.process_time() - cpu0
            self.sync_seconds += sync
            self.host_instructions += total
        return total

    def _warm_exchange(self, fifo_t: tuple) -> None:
        """Compile (or load from the cache) the packing functions outside the timed region:
        packing and unpacking nothing changes nothing."""
        if "exchange" in self._warm:
            return
        t0 = time.perf_counter()
        fifo8, _, _, flen, farr, pushed, popped, consumed, _ = fifo_t
        none = np.zeros(0, dtype=np.int64)
        buf = np.zeros(2, dtype=np.int64)
        _pack(buf, none, none, none, none, flen, farr, fifo8, pushed, popped, consumed, 1)
        _unpack(buf, none, none, flen, farr, fifo8, pushed, popped, consumed, 1, self._wake,
                self.link_src)
        self.jit_seconds += time.perf_counter() - t0
        self._warm.add("exchange")

    def _earliest(self, MPI: Any) -> int:
        """The earliest clock of a node that is not halted or trapped, over every rank."""
        st = self.state
        live = st.clock[st.state < K.HALTED]
        v = np.array([-int(live.min()) if live.size else -_NEVER], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, v, op=MPI.MAX)
        return 0 if -int(v[0]) >= _NEVER else -int(v[0])

    # ---- results -----------------------------------------------------------------------------

    def where(self, node: int, pc: int | None = None) -> Where:
        """Where the node of state row `node` is, named by its machine id."""
        w = super().where(node, pc)
        w.node = int(self.state.gid[node])
        return w

    def _final(self, executed: int, host: float) -> RunResult:
        """Gather the run's end on rank 0 as one process would report it; every rank gets it."""
        comm = self.comm
        st = self.state
        gid = st.gid
        traps = [self._trap(int(i)) for i in np.nonzero(st.state == K.TRAPPED)[0]]
        blocked = np.nonzero((st.state == K.BLOCKED_SEND) | (st.state == K.BLOCKED_RECV))[0]
        waits = {int(gid[b]): self._wait(int(b)) for b in blocked}
        mine = (traps, waits, bool((st.state == K.RUNNING).any()),
                int(st.clock.max()) if self.n else 0, executed)
        parts = comm.gather(mine, root=0)
        ends: list[int] = []
        if self.rank == 0:
            all_traps: list[Trap] = sorted((t for p in parts for t in p[0]),
                                           key=lambda t: t.node)
            all_waits: dict[int, Wait] = dict(sorted(
                (kv for p in parts for kv in p[1].items()), key=lambda kv: kv[0]))
            running = any(p[2] for p in parts)
            if all_waits and not running:
                ends = sorted({w.other for w in all_waits.values()} - set(all_waits))
        ends = comm.bcast(ends, root=0)
        local = {e: self._chain_end(int(np.searchsorted(gid, e)))
                 for e in ends if self.partition.owner[e] == self.rank}
        described = comm.gather(local, root=0)
        result = None
        if self.rank == 0:
            end_of = {k: v for d in described for k, v in d.items()}
            cycles = max(p[3] for p in parts)
            res = RunResult(status="halted", cycles=cycles,
                            seconds=cycles / self.machine.clock_hz,
                            instructions=sum(p[4] for p in parts), host_seconds=host)
            res.traps = all_traps
            if running:
                res.status = "running"
            else:
                if all_waits:
                    res.deadlock = wait_chains_of(all_waits, end_of.__getitem__)
                if res.traps:
                    res.status = "trapped"
                elif res.deadlock is not None and res.deadlock.is_cycle:
                    res.status = "deadlock"
                elif all_waits:
                    res.status = "stuck"
            result = res
        return comm.bcast(result, root=0)

    def wait_chains(self, blocked: np.ndarray | None = None) -> Any:
        raise D1Error("wait_chains: on MPI ranks the chains are part of run()'s result")

    # ---- restart, inputs and outputs ---------------------------------------------------------

    def restart(self) -> None:
        with self._op("restart"):
            super().restart()
            for nb in self.neighbours:
                nb.clear()

    def reset(self) -> None:
        with self._op("reset"):
            super().reset()
            for nb in self.neighbours:
                nb.clear()

    def set_input(self, name: str, array: Any) -> None:
        """Scatter rank 0's `array` to every piece of tensor `name` (the other ranks' `array`
        is not read).

        The first write sends each rank its pieces (pickled, as the pieces' shapes vary);
        from the second on (a training step's next batch) each rank holds the index arrays
        of its pieces (`_ScatterPlan`), rank 0 holds every rank's list of the elements it
        needs, and each write is one plain buffer per rank, in that order."""
        raw = refused = None
        if self.rank == 0:
            try:
                t = self.source.tensor(name)
                a = _host_array(array, f"input '{name}'")
                if a.shape != tuple(t.shape):
                    raise D1Error(f"input '{name}' must have shape {tuple(t.shape)}, got "
                                  f"{a.shape}")
                raw = _to_raw(a, t)
            except D1Error as e:
                refused = e
        with self._op("set_input", name, refused) as (name, _):
            plan = self._plans.get(name)
            if plan is None:
                plan = self._plans[name] = _ScatterPlan(self.obj.tensor(name), self.state)
            plan.writes += 1
            if plan.writes == 2:
                self._index_plan(name, plan)
            if plan.words is None:
                self._scatter_pieces(name, plan, raw)
            else:
                self._scatter_held(name, plan, raw)

    def _index_plan(self, name: str, plan: _ScatterPlan) -> None:
        """Index arrays on every rank, if every rank's pieces allow them; rank 0 keeps the
        elements each rank holds (`held[name][r]`)."""
        from mpi4py import MPI

        if not self.comm.allreduce(plan.indexable, op=MPI.LAND):
            return
        plan._index()
        srcs = self.comm.gather(plan.src, root=0)
        if self.rank == 0:
            self._held[name] = srcs

    def _scatter_pieces(self, name: str, plan: _ScatterPlan, raw: np.ndarray | None) -> None:
        parts = None
        if self.rank == 0:
            t = self.source.tensor(name)
            owner = self.partition.owner
            parts = [{} for _ in range(self.ranks)]
            for i, p in enumerate(t.pieces):
                parts[int(owner[p.node])][i] = np.ascontiguousarray(raw[_slices(p)])
        mine = self.comm.scatter(parts, root=0)
        for i, (_, view) in zip(self._piece_ids[name], plan.views, strict=True):
            view[...] = mine[i]
        plan.raise_marks()

    def _scatter_held(self, name: str, plan: _ScatterPlan, raw: np.ndarray | None) -> None:
        if self.rank == 0:
            flat = raw.reshape(-1)
            srcs = self._held[name]
            sends = [self.comm.Isend(np.ascontiguousarray(flat[srcs[r]]), dest=r, tag=13)
                     for r in range(1, self.ranks)]
            plan.write_held(flat[srcs[0]])
            for req in sends:
                req.Wait()
            return
        held = np.empty(plan.src.size, dtype=plan.words.dtype)
        self.comm.Recv(held, source=0, tag=13)
        plan.write_held(held)

    def output(self, name: str, chip: tuple[int, int] | None = None) -> np.ndarray:
        """Tensor `name` gathered from every rank's pieces (with `chip`, only from that
        chip's, as `Emulator.output`); every rank gets it."""
        refused = None
        if self.rank == 0:
            try:
                self.source.tensor(name)
            except D1Error as e:
                refused = e
        with self._op("output", name, refused) as (name, _):
            t = self.obj.tensor(name)
            mine = {i: _piece_view(self.state.sram, p, t.dtype).copy()
                    for i, p in zip(self._piece_ids[name], t.pieces, strict=True)}
            parts = self.comm.gather(mine, root=0)
            value: Any = None
            if self.rank == 0:
                got = {k: v for d in parts for k, v in d.items()}
                whole = self.source.tensor(name)
                try:
                    ids: list[int] = list(range(len(whole.pieces)))
                    if chip is not None:
                        whole, ids = on_chip(self.machine, whole, ids, chip)
                    value = assemble_output(whole, [got[i] for i in ids])
                except D1Error as e:
                    value = e
            value = self.comm.bcast(value, root=0)
        if isinstance(value, D1Error):
            raise value
        return as_declared(self.obj, name, value)

    # ---- statistics --------------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        """Emulator.totals of the whole machine, on every rank: the per-node figures it sums
        are gathered on rank 0 (about 230 B per node), which computes them exactly as one
        process does and sends the result to all."""
        with self._op("totals"):
            parts = self.comm.gather(self._figures(TOTALS_FIGURES), root=0)
            out = None
            if self.rank == 0:
                self._gathered = Gathered(self.machine, parts)
                try:
                    out = super().totals()
                finally:
                    self._gathered = None
            out = self.comm.bcast(out, root=0)
        return out

    def _figures(self, names: tuple[str, ...]) -> dict[str, Any]:
        """This rank's per-node figures `names` (State attributes), with its rows' ids."""
        st = self.state
        return {"gid": st.gid, **{k: np.ascontiguousarray(getattr(st, k)) for k in names}}

    def stats(self) -> dict[str, Any] | None:
        """Emulator.stats of the whole machine, on rank 0 (None on the others), with each
        rank's host figures: its emulation and window-exchange seconds and its state bytes."""
        with self._op("stats"):
            mine = self._figures(STATS_FIGURES)
            mine["host"] = (self.host_seconds, self.sync_seconds, self.state.nbytes,
                            self.host_instructions, self.jit_seconds, self.windows,
                            self.cpu_seconds, peak_rss())
            parts = self.comm.gather(mine, root=0)
        if self.rank != 0:
            return None
        self._gathered = Gathered(self.machine, parts)
        try:
            out = super().stats()
        finally:
            self._gathered = None
        hosts = [p["host"] for p in parts]
        emu = [h[0] for h in hosts]
        sync = [h[1] for h in hosts]
        host = out["host"]
        host.update({
            "ranks": self.ranks,
            "chips_by_rank": [list(self.partition.chips(r)) for r in range(self.ranks)],
            # None: no link joins two ranks, so nothing paces the run (one window)
            "window_cycles": self.window if self.window < _NEVER else None,
            "lookahead_cycles": self.lookahead,
            "windows": self.windows,
            "wall_seconds": max(emu),
            "node_instructions": sum(h[3] for h in hosts),
            "node_instructions_per_second": (sum(h[3] for h in hosts) / max(emu)
                                             if max(emu) > 0 else 0.0),
            "sync_seconds": max(sync),
            "sync_share": max(sync) / max(emu) if max(emu) > 0 else 0.0,
            "emulation_seconds_by_rank": emu,
            "sync_seconds_by_rank": sync,
            "cpu_seconds_by_rank": [h[6] for h in hosts],
            "state_bytes": max(h[2] for h in hosts),
            "state_bytes_by_rank": [h[2] for h in hosts],
            "peak_rss_bytes_by_rank": [h[7] for h in hosts],
            "jit_seconds": max(h[4] for h in hosts),
        })
        out["units"]["sync_seconds"] = "s"
        return out

    def _all_nodes(self) -> Any:
        if self._gathered is None:
            raise D1Error("statistics of the whole machine are gathered by stats() on MPI ranks")
        return self._gathered

    # ---- what one process can do and ranks cannot --------------------------------------------

    def _local_only(self, what: str) -> Any:
        raise D1Error(f"{what} is not available on MPI ranks: run the program on one process "
                      "to step, stop, snapshot or inspect single nodes (d1 debug)")

    def step(self, n: int = 1, node: Any = None) -> RunResult:
        return self._local_only("step")

    def run_until(self, *args: Any, **kwargs: Any) -> Any:
        return self._local_only("run_until")

    def set_stop(self, *args: Any, **kwargs: Any) -> None:
        self._local_only("set_stop")

    def snapshot(self) -> Any:
        return self._local_only("snapshot")

    def restore(self, snap: Any) -> None:
        self._local_only("restore")

    def state_dict(self) -> dict[str, Any]:
        return self._local_only("state_dict")

    def chrome_trace(self, *args: Any, **kwargs: Any) -> Any:
        return self._local_only("chrome_trace")

    def node_states(self) -> list[str]:
        return self._local_only("node_states")

    def regs(self, node: Any) -> Any:
        return self._local_only("regs")

    def vregs(self, node: Any) -> Any:
        return self._local_only("vregs")

    def acc(self, node: Any) -> Any:
        return self._local_only("acc")

    def sram(self, node: Any, addr: int, n: int) -> Any:
        return self._local_only("sram")

    def fifo(self, node: Any, direction: Any) -> Any:
        return self._local_only("fifo")

    def pc(self, node: Any) -> int:
        return self._local_only("pc")

    def clock(self, node: Any) -> int:
        return self._local_only("clock")


def peak_rss() -> int:
    """This process's peak resident set, in bytes (0 where the platform does not say)."""
    try:
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return 0
    return int(kib) * (1 if sys.platform == "darwin" else 1024)


# The per-node figures (State attributes) Emulator.totals and Emulator.stats read.
TOTALS_FIGURES = ("clock", "count", "flops", "hwm", "stall", "link_bytes", "link_msgs")
STATS_FIGURES = TOTALS_FIGURES + ("pc", "state", "cause", "stall_send", "link_busy")


class Gathered:
    """Every rank's per-node figures put together in machine node id order, as the State
    attributes of the same names (and busy()), which Emulator.totals and .stats read."""

    def __init__(self, machine: Machine, parts: list[dict[str, Any]]) -> None:
        n = machine.n_live
        gid = np.concatenate([p["gid"] for p in parts])
        for name, first in parts[0].items():
            if name in ("gid", "host"):
                continue
            arr = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
            arr[gid] = np.concatenate([p[name] for p in parts])
            setattr(self, name, arr)

    def busy(self) -> np.ndarray:
        return self.clock - self.stall


# ---- the command line on ranks ---------------------------------------------------------------

# What a serving rank calls for each method rank 0 calls (its own arguments are not read).
_CALLS = {
    "run": lambda emu, args: emu.run(),
    "restart": lambda emu, args: emu.restart(),
    "reset": lambda emu, args: emu.reset(),
    "set_input": lambda emu, args: emu.set_input(args, None),
    "output": lambda emu, args: emu.output(args),
    "stats": lambda emu, args: emu.stats(),
    "totals": lambda emu, args: emu.totals(),
}


def serve(comm: Any) -> int:
    """What ranks other than 0 do under `mpiexec -n R d1 ...` (or beside a Trainer on rank 0):
    follow rank 0's emulator calls until rank 0 calls `finish`; returns the exit status rank 0
    finished with. Ctrl-C is left to rank 0
    (the launcher sends it to every rank; a run stops on all of them at a window's end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    emus: dict[int, RankEmulator] = {}
    while True:
        _doorbell(comm)
        serial, op, args = comm.bcast(None, root=0)
        if op == "exit":
            return int(args)
        try:
            _PENDING[id(comm)] = (serial, op, args)
            if op == "new":
                emus[serial] = RankEmulator(None, comm=comm)
            elif op == "close":
                emus.pop(serial).close()
            else:
                _CALLS[op](emus[serial], args)
        except (KeyboardInterrupt, Refused):
            continue                    # a run stopped, or a call refused, on every rank
        except BaseException as e:      # noqa: BLE001
            text, code = _describe(e)
            fatal(comm, f"{op}: {text}", code)
        finally:
            _PENDING.pop(id(comm), None)


def serve_or_abort(comm: Any) -> int:
    """serve(), with any failure outside a method (there is none by design) stopping every
    rank: a rank that exits on its own would leave the others waiting for it forever."""
    try:
        return serve(comm)
    except BaseException as e:      # noqa: BLE001
        text, code = _describe(e)
        fatal(comm, text, code)
        return code


def finish(comm: Any, status: int) -> None:
    """Rank 0 is done: release the serving ranks with its exit status."""
    _start(comm, 0, "exit", int(status))
