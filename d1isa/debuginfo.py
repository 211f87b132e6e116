"""The debug record of a compiled object: every named DSL value, where it lives and when.

`d1 debug`'s `tensor NAME` shows any value a `.d1k` program names (inputs, params, every
`NAME = EXPR`, the values bound to gradients, each `grad(L, p)` call by its spelling) while its
bytes hold it, and says "not computed yet" or "overwritten" otherwise. The compiler
(compiler.debuginfo) writes what that needs into META's `meta` table under the key "values",
so it survives `--emit asm` and `d1 disasm`, which carry that table as `.meta`. An object
without it (assembled, or compiled before the record existed) loads as before; the debugger
then knows only the object's tensors.

    {"steps": K,                         how many compiler steps (meta["regions"] names them)
     "step_pcs": [[P0, ..., PK], ...],   distinct tables: the pc at which step k begins on a
                                         node, PK the pc of its final `halt`
     "node_steps": [t, ...],             per live node: its table in step_pcs, -1 without code
     "named": [{"name", "kind", "dtype", "shape", "line", "col", "aliases", "stores", "note"}]}

A named value has a `kind` (KINDS), its DSL dtype and shape (`[]` for a 0-d value), the source
position that defines it, other `aliases` it is known by (`grad(loss, w1)` for `g1 =
grad(loss, w1)`), and its `stores`. A value the compiler never stores (fused into an
elementwise kernel, a constant, a value nothing reads) has no store and a `note` saying why.

A store is one copy of the value in one layout, as `{"from", "until", "pieces"}`: the first is
where the value is computed, later ones are redistributed copies, which may outlive it. The
pieces are `TensorPiece`s as in META's tensors (one holder per block, covering the value; a
0-d value has the layout shape [1]). `from` is the step that writes the store (-1: the host
writes it before the program starts, as for inputs and params), `until` the first step that
may write over any of its bytes (K: none does during the run). On node n at pc p, with
P = step_pcs[node_steps[n]]:

    written       from < 0  or  p >= P[from + 1]      (n has finished step `from`)
    overwritten   until < K and p >  P[until]         (n has begun step `until`)

A node runs the steps in order and its code never branches from one step into another, so its
pc alone tells how far it is. Both tests are conservative: a step that reuses a buffer counts
as overwriting it from its first instruction on every node holding a piece. A node without
code (node_steps -1) never writes its SRAM: what the host put there (from -1) stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from d1isa.errors import ObjectFormatError

if TYPE_CHECKING:
    from d1isa.objfile import ObjectFile, TensorLayout

KEY = "values"
KINDS = ("input", "param", "output", "value", "grad")
MAX_STEPS = 1 << 20
MAX_NAMED = 1 << 16
MAX_STORES = 64
MAX_NOTE_CHARS = 300


@dataclass(frozen=True)
class Store:
    """One copy of a named value: its pieces (a TensorLayout of role "internal"), the step that
    writes it (`first`, -1 before the program) and the first step that may overwrite it
    (`until`, DebugInfo.steps if none)."""

    layout: TensorLayout
    first: int
    until: int


@dataclass(frozen=True)
class NamedValue:
    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    line: int
    col: int
    aliases: tuple[str, ...] = ()
    stores: tuple[Store, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class DebugInfo:
    """The parsed record: `node_pcs[n]` is node n's step table (None without code)."""

    steps: int
    node_pcs: tuple[tuple[int, ...] | None, ...]
    values: tuple[NamedValue, ...]

    def find(self, name: str) -> NamedValue | None:
        """The value named `name`, or spelled so (`grad(loss,w1)` = `grad(loss, w1)`)."""
        want = spelling(name)
        for v in self.values:
            if spelling(v.name) == want or any(spelling(a) == want for a in v.aliases):
                return v
        return None

    def names(self) -> list[str]:
        out = []
        for v in self.values:
            out.append(v.name)
            out.extend(v.aliases)
        return out


def spelling(name: str) -> str:
    """A name with its white space removed: how names and grad calls are compared."""
    return "".join(name.split())


# ---- writing ------------------------------------------------------------------------------

def to_json(steps: int, node_pcs: dict[int, list[int]], n_live: int,
            values: list[NamedValue]) -> dict[str, Any]:
    """The record for META's `meta` table: `node_pcs` maps each live node with code to its step
    table (steps + 1 pcs); nodes with equal tables share one entry of step_pcs."""
    tables: dict[tuple[int, ...], int] = {}
    node_steps = [-1] * n_live
    for nid in sorted(node_pcs):
        t = tuple(int(p) for p in node_pcs[nid])
        node_steps[nid] = tables.setdefault(t, len(tables))
    named = []
    for v in values:
        named.append({
            "name": v.name, "kind": v.kind, "dtype": v.dtype, "shape": list(v.shape),
            "line": v.line, "col": v.col, "aliases": list(v.aliases), "note": v.note,
            "stores": [{"from": s.first, "until": s.until,
                        "pieces": [[p.node, p.addr, list(p.offset), list(p.shape),
                                    list(p.strides)] for p in s.layout.pieces]}
                       for s in v.stores]})
    return {"steps": steps, "step_pcs": [list(t) for t in tables], "node_steps": node_steps,
            "named": named}


# ---- reading ------------------------------------------------------------------------------

def read(obj: ObjectFile) -> DebugInfo | None:
    """The object's record (None if it has none), checked against its machine and code:
    ObjectFormatError naming what is wrong, for any malformed record."""
    meta = obj.meta if isinstance(obj.meta, dict) else {}
    if KEY not in meta:
        return None
    try:
        return _read(meta[KEY], obj, meta)
    except ObjectFormatError as e:
        raise ObjectFormatError(f"META field '{KEY}': {e}") from None
    except (TypeError, KeyError, ValueError, IndexError, OverflowError) as e:
        what = f"a required field {e} is missing" if isinstance(e, KeyError) else \
            "a field has the wrong type or an impossible value"
        raise ObjectFormatError(f"META field '{KEY}': {what}") from None


def _want(cond: bool, msg: str) -> None:
    if not cond:
        raise ObjectFormatError(msg)


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    _want(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
          f"{what} must be an integer in {lo}..{hi}, got {str(v)[:40]}")
    return v


def _list(v: Any, what: str, most: int) -> list:
    _want(isinstance(v, list) and len(v) <= most, f"{what} must be a list of at most "
                                                  f"{most:,} entries")
    return v


def _text(v: Any, what: str, most: int) -> str:
    _want(isinstance(v, str) and len(v) <= most and v.isprintable(),
          f"{what} must be printable text of at most {most} characters")
    return v


def _read(rec: Any, obj: ObjectFile, meta: dict) -> DebugInfo:
    from d1isa.objfile import (
        DTYPE_BYTES,
        MAX_DIMS,
        MAX_NAME_CHARS,
        TensorLayout,
        TensorPiece,
        _validate_tensor,
    )

    m = obj.machine
    _want(isinstance(rec, dict), "must be a table")
    steps = _int(rec["steps"], "steps", 0, MAX_STEPS)
    regions = meta.get("regions")
    if isinstance(regions, list):
        _want(len(regions) == steps, f"{steps} steps, but META regions has {len(regions)}")
    tables = []
    for t in _list(rec["step_pcs"], "step_pcs", m.n_live):
        t = _list(t, "a step table", steps + 1)
        _want(len(t) == steps + 1, f"a step table has {len(t)} pcs, not steps + 1 = "
                                   f"{steps + 1}")
        pcs = tuple(_int(p, "a step pc", 0, 1 << 40) for p in t)
        _want(all(a <= b for a, b in zip(pcs, pcs[1:], strict=False)),
              "a step table's pcs decrease")
        tables.append(pcs)
    node_steps = _list(rec["node_steps"], "node_steps", m.n_live)
    _want(len(node_steps) == m.n_live, f"node_steps has {len(node_steps)} entries, the machine "
                                       f"has {m.n_live} live nodes")
    node_pcs: list[tuple[int, ...] | None] = []
    for n, t in enumerate(node_steps):
        t = _int(t, "a node's step table", -1, len(tables) - 1)
        if t < 0:
            node_pcs.append(None)
            continue
        block = obj.block_of(n)
        _want(block is not None and tables[t][-1] < len(block),
              f"node {n}'s step table points past its code")
        node_pcs.append(tables[t])
    values = []
    seen: set[str] = set()
    for v in _list(rec["named"], "named", MAX_NAMED):
        _want(isinstance(v, dict), "a named value must be a table")
        name = _text(v["name"], "a value's name", MAX_NAME_CHARS)
        _want(bool(name.strip()), "a value's name is empty")
        aliases = tuple(_text(a, f"an alias of '{name}'", MAX_NAME_CHARS)
                        for a in _list(v["aliases"], f"the aliases of '{name}'", 16))
        for key in (name, *aliases):
            _want(spelling(key) not in seen and bool(spelling(key)),
                  f"the name '{key}' is described twice (or is empty)")
            seen.add(spelling(key))
        kind = v["kind"]
        _want(kind in KINDS, f"value '{name}': unknown kind {str(kind)[:40]!r}")
        dtype = v["dtype"]
        _want(dtype in DTYPE_BYTES, f"value '{name}': unknown dtype {str(dtype)[:40]!r}")
        shape = tuple(_int(d, f"value '{name}': a dimension", 1, 1 << 40)
                      for d in _list(v["shape"], f"value '{name}': shape", MAX_DIMS))
        layout_shape = shape or (1,)
        line = _int(v["line"], f"value '{name}': line", 0, 1 << 31)
        col = _int(v["col"], f"value '{name}': col", 0, 1 << 31)
        note = _text(v["note"], f"value '{name}': note", MAX_NOTE_CHARS)
        stores = []
        for s in _list(v["stores"], f"value '{name}': stores", MAX_STORES):
            _want(isinstance(s, dict), f"value '{name}': a store must be a table")
            first = _int(s["from"], f"value '{name}': from", -1, max(steps - 1, -1))
            until = _int(s["until"], f"value '{name}': until", first + 1, steps)
            pieces = []
            for p in _list(s["pieces"], f"value '{name}': pieces", m.n_live * 64):
                _want(isinstance(p, list) and len(p) == 5, f"value '{name}': bad piece")
                node = _int(p[0], f"value '{name}': piece node", 0, m.n_live - 1)
                addr = _int(p[1], f"value '{name}': piece address", 0, m.sram_bytes)
                off, shp, strides = (
                    tuple(_int(x, f"value '{name}': piece {what}", 0, 1 << 40)
                          for x in _list(p[i], f"value '{name}': piece {what}", MAX_DIMS))
                    for i, what in ((2, "offset"), (3, "shape"), (4, "strides")))
                pieces.append(TensorPiece(node, addr, off, shp, strides))
            layout = TensorLayout(name, dtype, layout_shape, "internal", pieces)
            _validate_tensor(layout, m)
            held = sum(math.prod(p.shape) for p in pieces)
            _want(held >= math.prod(layout_shape),
                  f"value '{name}': its pieces hold {held:,} elements, fewer than its "
                  f"{math.prod(layout_shape):,}")
            stores.append(Store(layout, first, until))
        values.append(NamedValue(name, kind, dtype, shape, line, col, aliases, tuple(stores),
                                 note))
    return DebugInfo(steps, tuple(node_pcs), tuple(values))
