"""All mutable state of an emulated mesh, as structure-of-arrays numpy, in one object.

`State` allocates every array once (the jitted loop never allocates), hands the kernel its
tuples of arrays (`kernel_tuples`), and owns snapshots (`snapshot`/`restore`, the one mechanism
behind `Emulator.snapshot` and the debugger's checkpoints) and the `state_dict` exchange format
that the reference interpreter shares. Link FIFOs are indexed by *receiving* node * N_DIRS + the
direction it receives from; link statistics by *sending* node and direction.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from d1isa import units
from d1isa.errors import D1Error
from d1isa.machine import OPPOSITE, TIMING_CLASSES, Machine
from emulator.constants import (
    CFG_SIZE,
    K_BUDGET,
    K_COST_RECV,
    K_COST_SEND,
    K_DEPTH,
    K_HEIGHT,
    K_HORIZON,
    K_MAX_CYCLES,
    K_MAXMSG,
    K_N,
    K_NODES,
    K_ONLY_NODE,
    K_SRAM,
    K_SRAM_ROW,
    K_WIDTH,
    N_DIRS,
    NO_HORIZON,
)
from emulator.decode import XCOL_COUNT, XCOL_FLOPS, XCOL_HWM, XCOLS
from emulator.numerics import initial_sr_state

# Bytes of padding after each node's SRAM row: 4 KiB + 1 cache line, so consecutive nodes' rows
# start 65 lines apart modulo any power-of-two cache way size.
SRAM_ROW_PAD = 4096 + 64

# Every state array, in a fixed order. A snapshot copies them all, SRAM and the FIFO buffers
# compactly (see Snapshot).
_STATE_ARRAYS = (
    "x", "v", "acc", "sram", "pc", "clock", "state", "cause", "trap_arg", "sr", "sr_init", "skip",
    "fifo8", "flen", "farr", "pushed", "popped", "consumed", "wire_free",
    "stall", "stall_send", "link_bytes", "link_msgs", "link_busy",
)


@njit(cache=True, nogil=True)
def restart_arrays(node_t: tuple, fifo_t: tuple, stats_t: tuple, vector_rows: np.ndarray,
                   acc_rows: np.ndarray) -> None:
    """State.restart on the kernel's tuples, in one call: a training loop restarts the mesh
    before every step, and one jitted pass costs about half of twenty numpy fills (each
    array's own call and pass). Of node i's vector registers and accumulator tiles only the
    first vector_rows[i] and acc_rows[i] are zeroed."""
    x, v, acc = node_t[0], node_t[1], node_t[2]
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if j != XCOL_HWM:
                x[i, j] = 0
        v[i, :vector_rows[i]] = 0
        acc[i, :acc_rows[i]] = 0
    for a in (node_t[7], node_t[8], node_t[11]):       # pc, clock, trap_arg
        a[:] = 0
    node_t[9][:] = 0                                    # state
    node_t[10][:] = 0                                   # cause
    node_t[14][:] = -1                                  # skip
    for a in (fifo_t[3], fifo_t[4], fifo_t[7]):         # flen, farr, consumed
        a[...] = 0
    for a in (fifo_t[5], fifo_t[6], fifo_t[8]):         # pushed, popped, wire_free
        a[:] = 0
    for a in (stats_t[0], stats_t[1]):                  # stall, stall_send
        a[:] = 0
    for a in (stats_t[2], stats_t[3], stats_t[4]):      # link bytes, messages, busy
        a[...] = 0


class State:
    """Registers, SRAM, clocks, FIFOs and statistics of every live node."""

    def __init__(self, machine: Machine, seed: int = 0, nodes: np.ndarray | None = None,
                 ghost_links: int = 0) -> None:
        """`nodes`: the machine node ids of the rows to hold (an MPI rank's share, see
        emulator.distributed), default every live node; `ghost_links`: FIFOs beyond the rows'
        own 4 per node (the sending ends of links into other ranks' nodes)."""
        self.gid = (np.arange(machine.n_live, dtype=np.int64) if nodes is None
                    else np.ascontiguousarray(nodes, dtype=np.int64))
        self.ghost_links = int(ghost_links)
        check_host_memory(machine, nodes=len(self.gid), ghost_links=self.ghost_links)
        try:
            self._allocate(machine, seed)
        except (MemoryError, OSError) as e:
            # The estimate fits physical memory, but the process may be held to less (a
            # ulimit, a container, overcommit turned off).
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "out of memory"
            need = host_bytes(machine, len(self.gid), self.ghost_links)
            raise D1Error(f"machine '{machine.name}' ({machine.n_live:,} live nodes): cannot "
                          f"allocate the emulator's state, up to "
                          f"{units.nbytes(need)} of host memory ({reason}); "
                          "use fewer chips or nodes, less SRAM or smaller FIFOs") from None

    def _allocate(self, machine: Machine, seed: int) -> None:
        m = machine
        n = len(self.gid)
        self.machine = m
        self.n = n
        self.scalar_regs = m.scalar_regs
        self.depth = m.fifo_depth
        self.max_message = m.max_message_bytes
        # x rows: registers, the r0 sink and the node's counters (see emulator.decode).
        self.x = aligned_zeros((n, XCOLS), np.int64)
        self.v = np.zeros((n, m.vector_regs, 16), dtype=np.uint32)
        self.acc = np.zeros((n, m.accumulators, 8, 8), dtype=np.float32)
        # Node rows of SRAM are padded so that the same address on different nodes falls in
        # different cache sets (sram_bytes is a multiple of 64 KiB on d1, so without padding
        # every node's tiles would fight over the same few sets of L1 and L2). `sram` is the
        # [n, sram_bytes] view the rest of the code uses.
        self._sram_buf = _lazy_zeros((n, m.sram_bytes + SRAM_ROW_PAD), np.uint8)
        self.sram = self._sram_buf[:, :m.sram_bytes]
        self.pc = np.zeros(n, dtype=np.int64)
        self.clock = np.zeros(n, dtype=np.int64)
        self.state = np.zeros(n, dtype=np.int8)
        self.cause = np.zeros(n, dtype=np.int32)
        self.trap_arg = np.zeros(n, dtype=np.int64)
        self.sr_init = np.array([initial_sr_state(seed, int(i)) for i in self.gid],
                                dtype=np.uint64)
        self.sr = self.sr_init.copy()
        self.skip = np.full(n, -1, dtype=np.int64)
        links = self.links
        self.fifo8 = _lazy_zeros((links, self.depth, self.max_message), np.uint8)
        self.flen = np.zeros((links, self.depth), dtype=np.int64)
        self.farr = np.zeros((links, self.depth), dtype=np.int64)
        self.pushed = np.zeros(links, dtype=np.int64)
        self.popped = np.zeros(links, dtype=np.int64)
        self.consumed = np.zeros((links, self.depth), dtype=np.int64)
        self.wire_free = np.zeros(links, dtype=np.int64)
        self.stall = np.zeros(n, dtype=np.int64)
        self.stall_send = np.zeros(n, dtype=np.int64)
        self.link_bytes = np.zeros((n, N_DIRS), dtype=np.int64)
        self.link_msgs = np.zeros((n, N_DIRS), dtype=np.int64)
        self.link_busy = np.zeros((n, N_DIRS), dtype=np.int64)
        self._tuples: tuple[tuple, tuple, tuple] | None = None
        # Every register the kernel has not written is zero (so a restart with `written`
        # leaves the rest alone); false after registers were set otherwise (restore).
        self._registers_zeroed = True
        # How many times the SRAM high-water marks were set lower (clear, restore); runs and
        # restarts only raise or keep them (an input's write raises them once per count).
        self.marks_lowered = 0
        self._all_registers = (np.full(n, self.v.shape[1], dtype=np.int64),
                               np.full(n, self.acc.shape[1], dtype=np.int64))

    def clear(self, seed: int) -> None:
        """Everything back to zero (and each generator to its seed's initial state), in place."""
        for name in _STATE_ARRAYS:
            if name in ("sram", "fifo8"):
                continue
            getattr(self, name)[...] = 0
        _zero(self._sram_buf)
        _zero(self.fifo8)
        self.sr_init[:] = [initial_sr_state(seed, int(i)) for i in self.gid]
        self.sr[:] = self.sr_init
        self.skip[:] = -1
        self._registers_zeroed = True
        self.marks_lowered += 1

    def restart(self, written: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Every node back to its first instruction with SRAM kept, in place: registers,
        clocks, node states, FIFOs and statistics to zero; SRAM, its high-water marks and the
        stochastic-rounding generators go on from where the last run left them. The bytes
        of the FIFO buffers are not cleared: with the FIFOs' counters at zero they hold no
        message.

        `written`: per node, how many vector registers and accumulator tiles its code can
        write (decode.written_registers); the others are then left alone, being still zero,
        unless the registers were last set some other way (`restore`)."""
        if written is None or not self._registers_zeroed:
            written = self._all_registers
        restart_arrays(*self.kernel_tuples(), *written)
        self._registers_zeroed = True

    @property
    def sram_rows(self) -> np.ndarray:
        """The SRAM buffer as allocated: one row per node, each `sram_bytes` plus a pad the
        kernel may overrun into (C-contiguous, so `.reshape(-1)` is a view of all of it)."""
        return self._sram_buf

    @property
    def links(self) -> int:
        """FIFOs held: 4 per node row (indexed receiving row * N_DIRS + direction), then the
        ghost ones."""
        return N_DIRS * self.n + self.ghost_links

    # Counters kept in the register rows: views, writable.
    @property
    def count(self) -> np.ndarray:
        return self.x[:, XCOL_COUNT:XCOL_COUNT + len(TIMING_CLASSES)]

    @property
    def flops(self) -> np.ndarray:
        return self.x[:, XCOL_FLOPS]

    @property
    def hwm(self) -> np.ndarray:
        return self.x[:, XCOL_HWM]

    # ---- kernel interface ---------------------------------------------------------------------

    def kernel_tuples(self) -> tuple[tuple, tuple, tuple]:
        """(node, fifo, stats) tuples in the order emulator.kernel expects. Made once: every
        array is changed in place, never replaced, so the views stay valid (and a training
        loop's many short runs do not rebuild them)."""
        if self._tuples is None:
            self._tuples = self._make_tuples()
        return self._tuples

    def _make_tuples(self) -> tuple[tuple, tuple, tuple]:
        buf, size = self._sram_buf, self.sram.shape[1]
        node = (self.x, self.v, self.acc, self.sram, buf.view(np.uint16)[:, :size // 2],
                buf.view(np.uint32)[:, :size // 4], buf.view(np.uint64)[:, :size // 8],
                self.pc, self.clock, self.state, self.cause, self.trap_arg,
                self.sr, self.sr_init, self.skip, buf.reshape(-1))
        links = self.links
        words = self.max_message
        fifo = (self.fifo8, self.fifo8.view(np.uint32).reshape(links, self.depth, words // 4),
                self.fifo8.view(np.uint64).reshape(links, self.depth, words // 8),
                self.flen, self.farr, self.pushed, self.popped, self.consumed, self.wire_free)
        stats = (self.stall, self.stall_send, self.link_bytes, self.link_msgs, self.link_busy)
        return node, fifo, stats

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A copy of the whole state, from which `restore` brings it back exactly.

        SRAM is copied only below each node's high-water mark (the bytes above it were never
        written, so they are zero) and the FIFO buffers only in the slots holding messages:
        on d1 a snapshot is megabytes where the state is hundreds of them.
        """
        arrays = {name: getattr(self, name).copy() for name in _STATE_ARRAYS
                  if name not in _COMPACT}
        lens = np.minimum(self.hwm, self.machine.sram_bytes).astype(np.int64)
        offs = np.zeros(self.n, dtype=np.int64)
        if self.n > 1:
            offs[1:] = np.cumsum(lens)[:-1]
        data = np.empty(int(lens.sum()), dtype=np.uint8)
        sram = self.sram
        for i, (off, ln) in enumerate(zip(offs.tolist(), lens.tolist(), strict=True)):
            if ln:
                data[off:off + ln] = sram[i, :ln]
        # The slots of every message waiting in a FIFO, oldest first per link.
        fill = self.pushed - self.popped
        links = np.nonzero(fill > 0)[0]
        reps = fill[links]
        first = np.repeat(np.cumsum(reps) - reps, reps)
        seq = np.repeat(self.popped[links], reps) + np.arange(int(reps.sum())) - first
        idx = (np.repeat(links, reps), seq % self.depth)
        return Snapshot(arrays, lens, offs, data, idx, self.fifo8[idx])

    def restore(self, snap: Snapshot) -> None:
        """Bring the state back to `snap`, in place (the kernel's views stay valid)."""
        if not isinstance(snap, Snapshot):
            raise D1Error(f"restore takes a Snapshot from snapshot(), not {type(snap).__name__}")
        if len(snap.sram_len) != self.n or any(
                getattr(self, name).shape != arr.shape for name, arr in snap.arrays.items()):
            raise D1Error(f"this snapshot is of another machine (its {len(snap.sram_len):,} "
                          f"nodes), not of this one ({self.n:,} nodes)")
        self._registers_zeroed = False
        self.marks_lowered += 1
        # SRAM the current state wrote above the snapshot's high-water mark goes back to zero.
        cur = np.minimum(self.hwm, self.machine.sram_bytes).astype(np.int64)
        for name, arr in snap.arrays.items():
            np.copyto(getattr(self, name), arr)
        for i in range(self.n):
            ln = int(snap.sram_len[i])
            if ln:
                off = int(snap.sram_off[i])
                self.sram[i, :ln] = snap.sram_data[off:off + ln]
            hi = int(cur[i])
            if hi > ln:
                self.sram[i, ln:hi] = 0
        if snap.fifo_data.size:
            self.fifo8[snap.fifo_idx] = snap.fifo_data

    @property
    def nbytes(self) -> int:
        """Bytes of all state arrays (SRAM with its row padding)."""
        return (sum(getattr(self, name).nbytes for name in _STATE_ARRAYS if name != "sram")
                + self._sram_buf.nbytes)

    # ---- inspection ---------------------------------------------------------------------------

    def fifo_messages(self, link: int) -> list[tuple[int, int, bytes]]:
        """Messages waiting in FIFO `link`, oldest first, as (length, arrival, payload)."""
        out = []
        for j in range(int(self.popped[link]), int(self.pushed[link])):
            slot = j % self.depth
            ln = int(self.flen[link, slot])
            out.append((ln, int(self.farr[link, slot]), self.fifo8[link, slot, :ln].tobytes()))
        return out

    def fifo_fill(self, link: int) -> int:
        return int(self.pushed[link] - self.popped[link])

    def busy(self) -> np.ndarray:
        """Busy cycles per node: the clock is busy + stalled, always (docs/TIMING.md)."""
        return self.clock - self.stall

    def state_dict(self) -> dict[str, Any]:
        """The exchange format shared with the reference interpreter (copies, plain types)."""
        r = self.scalar_regs
        return {
            "x": self.x[:, :r].copy(),
            "v": self.v.copy(),
            "acc": self.acc.view(np.uint32).copy(),
            "sram": self.sram.copy(),
            "pc": self.pc.copy(),
            "clock": self.clock.copy(),
            "state": self.state.copy(),
            "cause": self.cause.copy(),
            "trap_arg": self.trap_arg.copy(),
            "sr_state": self.sr.copy(),
            "fifos": [self.fifo_messages(link) for link in range(N_DIRS * self.n)],
            "link_pushed": self.pushed.copy(),
            "link_wire_free": self.wire_free.copy(),
            "stats": {
                "count": np.ascontiguousarray(self.count),
                "flops": np.ascontiguousarray(self.flops),
                "busy": self.busy(),
                "stall": self.stall.copy(),
                "sram_hwm": np.ascontiguousarray(self.hwm),
                "link_bytes": self.link_bytes.copy(),
                "link_msgs": self.link_msgs.copy(),
                "link_busy": self.link_busy.copy(),
            },
        }


# Arrays a snapshot copies only in part (the rest of them is zero, or not a message).
_COMPACT = ("sram", "fifo8")


@dataclass
class Snapshot:
    """A copy of a `State` (State.snapshot / State.restore).

    `arrays` holds every state array but SRAM and the FIFO buffers in full; SRAM is kept as each
    node's bytes below its high-water mark (`sram_len` bytes at `sram_off` in `sram_data`) and
    the FIFO buffers as the slots holding messages (`fifo_data` = fifo8[fifo_idx]). `extra` is
    for the state's owner, e.g. the Emulator's host timing.
    """

    arrays: dict[str, np.ndarray]
    sram_len: np.ndarray
    sram_off: np.ndarray
    sram_data: np.ndarray
    fifo_idx: tuple[np.ndarray, np.ndarray]
    fifo_data: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)
    nbytes: int = field(init=False)         # host memory the copy takes

    def __post_init__(self) -> None:
        self.nbytes = (sum(a.nbytes for a in self.arrays.values()) + self.sram_data.nbytes
                       + self.fifo_data.nbytes)

    def __getitem__(self, name: str) -> np.ndarray:
        """The copied array `name` (not the compact SRAM or FIFO buffers)."""
        return self.arrays[name]


def aligned_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed C-contiguous array starting on a 64-byte cache-line boundary (register rows;
    the mma scratch, whose row stores and broadcast loads then never straddle a line)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def host_bytes(machine: Machine, nodes: int | None = None, ghost_links: int = 0) -> int:
    """Host memory the state of `machine` can take once every page is written: SRAM rows with
    their padding, FIFO buffers, registers, accumulators and per-node and per-link arrays.
    `nodes`, `ghost_links`: for a share of the machine (State's arguments)."""
    m = machine
    n = m.n_live if nodes is None else nodes
    links = 4 * n + ghost_links
    per_node = (m.sram_bytes + SRAM_ROW_PAD + XCOLS * 8 + m.vector_regs * 64
                + m.accumulators * 256 + 14 * 8 + 3 * 4 * 8)
    per_link = m.fifo_depth * (m.max_message_bytes + 3 * 8) + 4 * 8
    return n * per_node + links * per_link


def physical_memory() -> int | None:
    """Bytes of physical memory on this host (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_host_memory(machine: Machine, available: int | None = None, nodes: int | None = None,
                      ghost_links: int = 0) -> None:
    """Refuse, before allocating, a machine (or share) whose state would not fit in this host's
    memory."""
    need = host_bytes(machine, nodes, ghost_links)
    have = physical_memory() if available is None else available
    if have is not None and need > have:
        share = "" if nodes is None or nodes == machine.n_live else \
            f"; a rank holds {nodes:,} of them"
        raise D1Error(
            f"machine '{machine.name}' ({machine.n_live:,} live nodes{share}): the emulator "
            f"needs {units.nbytes(need)} of host memory; this host has {units.nbytes(have)}; "
            "use fewer chips or nodes, less SRAM or smaller FIFOs, or run on more MPI ranks "
            "(docs/SCALE.md)")


def _lazy_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed array whose memory is committed page by page as it is first written.

    SRAM (443 MiB on d1, 11 GiB on a 5 x 5 tile) and the FIFO buffers are mostly untouched by
    a typical program. np.zeros gets them lazily too, but where the kernel backs large regions
    with transparent huge pages, the first byte written in each node's row commits and clears
    a whole 2 MiB page (measured here: about 1.5 s to place one word on each of d1's 354 nodes,
    80 s on the tile). Plain anonymous pages with huge pages declined commit 4 KiB at a time.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < (1 << 21) or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    try:
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    except OSError:
        pass
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def _zero(a: np.ndarray) -> None:
    """Zero a in place; an mmap-backed array by returning its pages to the kernel (a reset of
    the d1 machine then costs nothing instead of writing 443 MiB)."""
    base = a.base
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
            return
        except OSError:
            pass
    a[...] = 0


def link_geometry(machine: Machine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (sender node * N_DIRS + direction): the receiving FIFO's link index (-1 at the mesh
    edge), the path latency and the narrowest bandwidth."""
    n = machine.n_live
    nbr = machine.neighbors.astype(np.int64)
    out_link = np.full(4 * n, -1, dtype=np.int64)
    for d in range(N_DIRS):
        t = nbr[:, d]
        ok = t >= 0
        out_link[np.nonzero(ok)[0] * N_DIRS + d] = t[ok] * N_DIRS + OPPOSITE[d]
    lat = np.ascontiguousarray(machine.link_latency, dtype=np.int64).reshape(-1).copy()
    bw = np.ascontiguousarray(machine.link_bandwidth, dtype=np.int64).reshape(-1).copy()
    bw[bw <= 0] = 1          # edge directions: never used, but keep the division safe
    return out_link, lat, bw


def xy_table(xy: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """The run loop's per-row (x, y, machine node id) table (getx, gety, getid read it)."""
    return np.ascontiguousarray(np.column_stack([xy, gid]), dtype=np.int64)


def make_cfg(machine: Machine, max_cycles: int) -> np.ndarray:
    cfg = np.zeros(CFG_SIZE, dtype=np.int64)
    cfg[K_N] = machine.n_live
    cfg[K_NODES] = machine.n_live
    cfg[K_HORIZON] = NO_HORIZON
    cfg[K_WIDTH] = machine.width
    cfg[K_HEIGHT] = machine.height
    cfg[K_SRAM] = machine.sram_bytes
    cfg[K_SRAM_ROW] = machine.sram_bytes + SRAM_ROW_PAD
    cfg[K_DEPTH] = machine.fifo_depth
    cfg[K_MAXMSG] = machine.max_message_bytes
    cfg[K_COST_SEND] = machine.cost_send
    cfg[K_COST_RECV] = machine.cost_recv
    cfg[K_MAX_CYCLES] = max_cycles
    cfg[K_BUDGET] = -1
    cfg[K_ONLY_NODE] = -1
    return cfg
