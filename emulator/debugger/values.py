"""`tensor NAME`: any value a compiled program names, shown only while its bytes hold it.

The compiler records every named value in the object (d1isa.debuginfo): where each copy of it
lives, the step that writes it, the first step that may write over it, and per node the pc at
which each step begins. Against the machine's progress (each holding node's pc) a value is

- *not computed yet*: some node holding a piece has not finished the step that writes it;
- *overwritten*: some node holding a piece has begun a step that reuses its buffer (a later
  value placed there, or a param's update written into it). When that happened is found by
  replaying from a checkpoint with stop flags on those nodes' first instruction of that step
  (reverse.first_arrivals): the position T of the replay's stop and the node's modelled clock.
  The answers are kept, so asking again costs nothing;
- *live* otherwise, and then gathered from its pieces, as the host gathers an output. A value
  with a redistributed copy in another layout is live while either is.

A named value the compiler never stores (fused into an elementwise kernel, a constant, a value
nothing reads) is reported as such with the compiler's reason. Objects without the record
(assembly programs, older objects) fall back to their tensors, gathered as they are now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from d1isa.debuginfo import DebugInfo, Store, spelling
from d1isa.errors import D1Error
from emulator.debugger import reverse

if TYPE_CHECKING:
    from emulator.debugger.core import Debugger

LIVE, PENDING, OVERWRITTEN, NOT_STORED = "live", "not computed yet", "overwritten", "not stored"


@dataclass
class TensorView:
    """What `tensor NAME` shows: the value's description, its state, and its elements when live.

    state: "live", "not computed yet", "overwritten" or "not stored". `overwritten_at` is
    (T, cycle, node) when known; `array` is set when live."""

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    pieces: int
    state: str
    detail: str = ""
    array: np.ndarray | None = None
    line: int = 0
    overwritten_at: tuple[int, int, int] | None = None
    copy: str = ""

    def header(self) -> str:
        where = f", line {self.line}" if self.line else ""
        held = (f" in {self.pieces} piece{'s' if self.pieces != 1 else ''}"
                if self.pieces else "")
        copy = f" ({self.copy})" if self.copy else ""
        return f"{self.name}: {self.kind} {self.dtype}{list(self.shape)}{held}{where}{copy}"


def names(dbg: Debugger) -> list[str]:
    """Every name `tensor` accepts (grad calls without their spaces, so each is one word)."""
    out = [t.name for t in dbg.obj.tensors]
    if dbg.debug_info is not None:
        out.extend("".join(n.split()) for n in dbg.debug_info.names())
    return list(dict.fromkeys(out))


def view(dbg: Debugger, name: str) -> TensorView:
    """The state of value `name` at the current position, with its elements if live."""
    info = dbg.debug_info
    meta = dbg.obj.meta if isinstance(dbg.obj.meta, dict) else {}
    onnx = meta.get("onnx_names")
    if isinstance(onnx, dict) and isinstance(onnx.get(name.strip()), str):
        name = onnx[name.strip()]         # a model's value by its ONNX name: `input.1`
    v = info.find(name) if info is not None else None
    if v is None:
        t = next((t for t in dbg.obj.tensors if spelling(t.name) == spelling(name)), None)
        if t is None:
            known = ", ".join(names(dbg)) or "none"
            raise D1Error(f"no value named '{name}' in this object (values: {known})")
        return TensorView(t.name, t.role, t.dtype, tuple(t.shape), len(t.pieces), LIVE,
                          array=dbg.emu.gather(t))
    assert info is not None
    if not v.stores:
        return TensorView(v.name, v.kind, v.dtype, v.shape, 0, NOT_STORED,
                          f"not stored: {v.note}", line=v.line)
    states = [_state(dbg, info, s) for s in v.stores]
    for s, (state, _nodes) in zip(v.stores, states, strict=True):
        if state == LIVE:
            a = dbg.emu.gather(s.layout).reshape(v.shape)
            return TensorView(v.name, v.kind, v.dtype, v.shape, len(s.layout.pieces), LIVE,
                              array=a, line=v.line, copy=_copy(dbg, s))
    first, (state, nodes) = v.stores[0], states[0]
    pieces = len(first.layout.pieces)
    if state == PENDING:
        holders = {p.node for p in first.layout.pieces}
        return TensorView(v.name, v.kind, v.dtype, v.shape, pieces, PENDING,
                          f"not computed yet: {_step(dbg, first.first)}, which computes it, "
                          f"has not finished on {len(nodes)} of the {len(holders)} nodes "
                          f"holding it (first: node {dbg._xy_text(nodes[0])})", line=v.line,
                          copy=_copy(dbg, first))
    # The first store is overwritten, and no copy is live: report when the last store to go
    # went (the cycle of its first overwriting node).
    gone = [(_overwritten_at(dbg, info, s, nodes), s)
            for s, (state, nodes) in zip(v.stores, states, strict=True) if state == OVERWRITTEN]
    at, s = max(gone, key=lambda g: -1 if g[0] is None else g[0][1])
    why = ("writes the param's update into its buffer" if v.kind == "param"
           else "reuses its buffer")
    if at is None:
        text = f"overwritten: {_step(dbg, s.until)} {why}"
    else:
        t, cycle, node = at
        text = (f"overwritten at T={t:,} (cycle {cycle:,}): node {dbg._xy_text(node)} began "
                f"{_step(dbg, s.until)}, which {why}")
    return TensorView(v.name, v.kind, v.dtype, v.shape, pieces, OVERWRITTEN, text,
                      line=v.line, overwritten_at=at, copy=_copy(dbg, s))


def _copy(dbg: Debugger, s: Store) -> str:
    """Of a data-parallel program, which chips a store covers: a value split over the chips
    has every chip's pieces (nothing to say), a whole one only chip (0,0)'s, which every chip
    holds a copy of and computes alike; its state is that of chip (0,0)'s nodes."""
    m = dbg.machine
    par = dbg.obj.meta.get("parallel") if isinstance(dbg.obj.meta, dict) else None
    if m.chips < 2 or not isinstance(par, dict) or par.get("mode") != "data":
        return ""
    chips = {int(m.chip_index[p.node]) for p in s.layout.pieces}
    if chips != {0}:
        return ""
    return f"chip (0,0)'s copy; each of the {m.chips} chips holds the same"


def _state(dbg: Debugger, info: DebugInfo, s: Store) -> tuple[str, list[int]]:
    """(state, the nodes in that state) of one store at the current position."""
    pc = dbg.emu.state.pc
    pending, gone = [], []
    for node in sorted({p.node for p in s.layout.pieces}):
        P = info.node_pcs[node]
        if P is None:                       # no code: only the host ever writes its SRAM
            if s.first >= 0:
                pending.append(node)
            continue
        p = int(pc[node])
        if s.until < info.steps and p > P[s.until]:
            gone.append(node)
        elif s.first >= 0 and p < P[s.first + 1]:
            pending.append(node)
    if gone:
        return OVERWRITTEN, gone
    if pending:
        return PENDING, pending
    return LIVE, []


def _overwritten_at(dbg: Debugger, info: DebugInfo, s: Store, nodes: list[int]
                    ) -> tuple[int, int, int] | None:
    """(T, cycle, node) of the first node to begin step `s.until` among `nodes`."""
    cache = dbg._arrivals
    targets = {n: info.node_pcs[n][s.until] for n in nodes}
    missing = {n: pc for n, pc in targets.items() if (n, pc) not in cache}
    if missing:
        for n, hit in reverse.first_arrivals(dbg, missing).items():
            cache[(n, missing[n])] = hit
    known = [(cache[(n, pc)], n) for n, pc in targets.items() if (n, pc) in cache]
    if not known:
        return None
    (t, cycle), node = min(known, key=lambda k: (k[0][1], k[0][0]))
    return t, cycle, node


def _step(dbg: Debugger, k: int) -> str:
    """A compiler step as the user knows it: `line 9 (matmul)`."""
    regions = dbg.obj.meta.get("regions") if isinstance(dbg.obj.meta, dict) else None
    if not isinstance(regions, list) or not 0 <= k < len(regions):
        return f"step {k}"
    r = regions[k]
    return f"line {r['line']} ({r['op']})"

