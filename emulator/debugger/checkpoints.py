"""Checkpoints: the snapshots reverse execution restores, and the rules for when to take them.

A checkpoint is a `State` snapshot (emulator.state: SRAM below the high-water marks, the FIFO
slots holding messages, every other array in full) labelled with the per-node instruction counts
it was taken at. Because the mesh state is a function of that count vector, any earlier position
is one restore plus a replay from the latest checkpoint whose counts are all below it.

They are taken every `interval` executed instructions during forward execution. The interval
adapts so that taking checkpoints costs about 1/CHECKPOINT_OVERHEAD of the run time, and while
the checkpoints exceed their memory budget every other one is dropped and the interval doubles,
so memory stays bounded for runs of any length (docs/DEBUGGER.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from d1isa.errors import D1Error
from d1isa.numbers import integer_arg
from emulator.emulator import Emulator
from emulator.state import Snapshot

# Instructions between checkpoints before the adaptive rule has measured anything.
DEFAULT_INTERVAL = 1 << 22
# Taking checkpoints may cost about 1/CHECKPOINT_OVERHEAD of the run time.
CHECKPOINT_OVERHEAD = 10
DEFAULT_CHECKPOINT_BYTES = 1 << 30


@dataclass
class Checkpoint:
    """The state at per-node counts `counts` (their sum is `position`)."""

    counts: np.ndarray
    position: int
    snap: Snapshot
    nbytes: int = 0

    def __post_init__(self) -> None:
        self.nbytes = self.snap.nbytes


class Checkpoints:
    """The checkpoints of one emulator, oldest first; the first (T=0) is never dropped."""

    def __init__(self, emu: Emulator, budget_bytes: int = DEFAULT_CHECKPOINT_BYTES,
                 interval: int | None = None) -> None:
        # a zero or negative interval never grows by doubling, so every chunk would be
        # checkpointed and the budget thinned at each one: refuse it instead
        if interval is not None:
            interval = integer_arg(interval, "checkpoint_interval")
        budget_bytes = integer_arg(budget_bytes, "checkpoint_bytes")
        if interval is not None and interval < 1:
            raise D1Error(f"checkpoint_interval must be >= 1 instruction, got {interval}")
        if budget_bytes < 0:
            raise D1Error(f"checkpoint_bytes must be >= 0, got {budget_bytes}")
        self.emu = emu
        self.budget_bytes = int(budget_bytes)
        self.interval = int(interval or DEFAULT_INTERVAL)
        self.adaptive = interval is None
        self.items: list[Checkpoint] = []
        self.seconds_taking = 0.0
        self.thinned = 0

    def take(self) -> Checkpoint:
        """Checkpoint the current state; adapt the interval, thin out if over budget."""
        t0 = time.perf_counter()
        st = self.emu.state
        snap = st.snapshot()
        counts = st.count.sum(axis=1)
        ck = Checkpoint(counts, int(counts.sum()), snap)
        self.items.append(ck)
        self.items.sort(key=lambda c: c.position)
        dt = time.perf_counter() - t0
        self.seconds_taking += dt
        emu = self.emu
        if self.adaptive and emu.host_seconds > 0 and emu.host_instructions > 0:
            rate = emu.host_instructions / emu.host_seconds
            self.interval = max(self.interval, int(CHECKPOINT_OVERHEAD * dt * rate))
        self._thin()
        return ck

    def _thin(self) -> None:
        """Drop every other checkpoint (never the first) while over the memory budget."""
        while (len(self.items) > 2
               and sum(c.nbytes for c in self.items) > self.budget_bytes):
            keep = [self.items[0]] + self.items[2::2]
            if self.items[-1] is not keep[-1]:
                keep.append(self.items[-1])
            self.items = keep
            self.interval *= 2
            self.thinned += 1

    @property
    def first(self) -> Checkpoint:
        return self.items[0]

    def best(self, target: np.ndarray) -> Checkpoint:
        """The latest checkpoint whose counts are all <= target."""
        best = self.items[0]
        for ck in self.items:
            if ck.position > best.position and np.all(ck.counts <= target):
                best = ck
        return best

    def before(self, ck: Checkpoint) -> Checkpoint:
        """The latest checkpoint earlier than ck whose counts are all <= ck's."""
        earlier = [c for c in self.items
                   if c.position < ck.position and np.all(c.counts <= ck.counts)]
        return max(earlier, key=lambda c: c.position) if earlier else self.items[0]

    def restore(self, ck: Checkpoint) -> None:
        """Put the emulator's state back to ck (stop-flag skips cleared)."""
        st = self.emu.state
        st.restore(ck.snap)
        st.skip[:] = -1

    def info(self) -> dict[str, Any]:
        return {"checkpoints": len(self.items),
                "bytes": sum(c.nbytes for c in self.items),
                "budget_bytes": self.budget_bytes,
                "interval_instructions": self.interval,
                "positions": [c.position for c in self.items]}
