"""The `schedule` and `allocate` passes: step order and liveness, then SRAM addresses.

Steps run in program order (dead ones, whose results nobody reads and that are not outputs,
are dropped). A value is live from the step that writes it (inputs: from the start) to the last
step that reads it (outputs: to the end); a step's scratch buffers live during that step only.
Every value gets one address, the same on every node, so a node's code can be shared with nodes
that do the same thing; the size reserved is the largest block any node holds. First fit in
increasing address order, deterministic.

A step's per-node tables (the object places them in SRAM before the program starts) live for
the whole run, like inputs that are also outputs: nothing overwrites them, in this run or, for a
training program, the next.

Params are weight-resident: the pipeline passes every param's buffer among the values that
live to the end (compiler.writeback), so a param keeps one address from before the first step
to after the last and no temporary ever shares it; an update value stored in place (`alias`)
takes its param's address and reserves nothing of its own, and so does a view of another
value's bytes (`Value.base`: a reshape that keeps the 2-D view); the value whose buffer is used
stays live as long as either is read (a running sum stored in place, compiler.splitk).
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.plan import Step, Value
from d1isa.errors import Diagnostic, SourceError

ALIGN = 64


@dataclass
class Schedule:
    steps: list[Step]
    live: dict[int, tuple[int, int]]        # id(value) -> (first step, last step)
    values: list[Value]


def schedule(steps: list[Step], inputs: list[Value], outputs: list[Value]) -> Schedule:
    """Drop steps whose results are never read, and compute every value's live range."""
    needed = {id(v) for v in outputs}
    kept: list[Step] = []
    for st in reversed(steps):
        if st.writes() and not any(id(v) in needed for v in st.writes()):
            continue
        kept.append(st)
        for v in st.ins:
            needed.add(id(v))
            if v.base is not None:
                needed.add(id(v.base))
    kept.reverse()
    end = len(kept)
    live: dict[int, tuple[int, int]] = {}
    values: list[Value] = []

    def touch(v: Value, k: int) -> None:
        if v.base is not None:
            touch(v.base, k)             # a view keeps its base's bytes live
        if v.alias is not None:
            touch(v.alias, k)            # so does a value stored in another's buffer
        if id(v) not in live:
            live[id(v)] = (k, k)
            values.append(v)
        else:
            a, b = live[id(v)]
            live[id(v)] = (min(a, k), max(b, k))

    for v in inputs:
        touch(v, -1)
    for k, st in enumerate(kept):
        for v in st.values():
            touch(v, k)
    tables = [v for st in kept for v in st.tables]
    for v in outputs + tables:
        touch(v, end)
    for v in tables:
        touch(v, -1)
    for v in inputs:
        # The host writes inputs before the program starts: they must not overlap anything
        # that is live then, which is only other inputs.
        a, b = live[id(v)]
        live[id(v)] = (-1, b)
    return Schedule(kept, live, values)


def allocate(sched: Schedule, sram_bytes: int, filename: str, text: str) -> int:
    """Give every value an address; return the peak bytes used per node. Raise a located
    SourceError naming the sizes when a step's live values do not fit."""
    order = sorted((v for v in sched.values if v.alias is None and v.base is None),
                   key=lambda v: (sched.live[id(v)][0], -v.nbytes))
    placed: list[tuple[int, int, int, Value]] = []   # (addr, size, last step, value)
    peak = 0
    for v in order:
        start, last = sched.live[id(v)]
        placed = [p for p in placed if p[2] >= start]
        size = -(-v.nbytes // ALIGN) * ALIGN
        addr = 0
        for a, sz, _, _ in sorted(placed, key=lambda p: p[0]):
            if addr + size <= a:
                break
            addr = max(addr, a + sz)
        if addr + size > sram_bytes:
            raise _too_big(sched, v, start, placed, size, sram_bytes, filename, text, addr)
        v.addr = addr
        placed.append((addr, size, last, v))
        peak = max(peak, addr + size)
    for v in sched.values:
        if v.alias is not None:
            root = v.alias
            while root.alias is not None:        # a running sum stored in place, in place
                root = root.alias
            v.addr = root.addr
        elif v.base is not None:
            v.addr = v.base.addr
    return peak


def _too_big(sched: Schedule, v: Value, start: int, placed: list, size: int, sram: int,
             filename: str, text: str, addr: int) -> SourceError:
    """The error for a value that does not fit, at the statement that makes it live: an
    input's own declaration, else the step that first uses it."""
    if start < 0 and v.node is not None and v.node.line:
        line, col = v.node.line, v.node.col
    else:
        st = sched.steps[max(start, 0)] if sched.steps else None
        line, col = st.loc if st is not None else (1, 1)
    live = sorted(placed, key=lambda p: -p[1])[:4]
    others = ", ".join(f"{p[3].name} ({p[1]:,} B)" for p in live) or "none"
    total = size + sum(p[1] for p in placed)
    if total > sram:
        msg = (f"does not fit in a node's SRAM: '{v.name}' needs {size:,} B per node, and with "
               f"the values live at this point ({others}{', ...' if len(placed) > 4 else ''}) "
               f"a node would need {total:,} B, but it has {sram:,} B")
    else:
        # The live values add up to less than SRAM, but where they lie leaves no gap that large.
        msg = (f"does not fit in a node's SRAM: '{v.name}' needs {size:,} B per node; the "
               f"values live at this point ({others}{', ...' if len(placed) > 4 else ''}) take "
               f"{total - size:,} B but leave no free gap of {size:,} B, so a node would need "
               f"{addr + size:,} B, but it has {sram:,} B")
    from d1isa.errors import line_of
    return SourceError([Diagnostic(filename, line or 1, col or 1, msg, line_of(text, line))])
