"""Laying out an object: sections to nodes, code blocks, labels, data, tensors, symbols, lines.

This is the second half of assembling, and the whole of linking the compiler's programs: both
hand their code to a `Linker` as `TextSection`s (instruction words, one line-table location per
word, labels, and the operands still to resolve) and get an `ObjectFile` back. Nothing here reads
text; names are resolved through a `Scope` whose last resort is the caller's `global_value`
(the assembler's equates and data labels; nothing, for the compiler).

- Selectors (`.text row 2`, `.data rest`, ...) become sorted live node ids; a node belongs to at
  most one code section.
- A code section is resolved once if none of its pending operands uses @x/@y/@id, else once per
  node. `li` with a value not known in pass 1 is sized first (1 or 2 words) and the labels after
  it move. Branch targets are labels of the section (pc-relative offsets).
- Identical programs share one code block: blocks are keyed by their words and line rows, so
  nodes whose code and locations are equal point at one block, in order of first use.
- Data: one location counter over all `.data` sections (a data label has the same address on
  every node), cut into contiguous runs; a run is evaluated once, or per node if it must be.
- Tensors: each piece is validated against its tensor and the machine; an output tensor must be
  covered by its pieces.
- Symbols: code labels (one per block of their section), data labels, node-independent equates;
  names that start with '.' are local and not recorded.
- Line rows: either packed (line << 24 | column, the assembler's own locations) or indices into
  a table of explicit rows (`.loc`, or the compiler's DSL locations).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from d1isa.asm.encode import (
    DIR_NAMES,
    FIELD_NOUN,
    INT32,
    K_DIR,
    K_FLOAT,
    K_LABEL,
    K_MEMIMM,
    K_WORD,
    bf16_from_f32_bits,
    check_mem,
    f32_operand,
    li_words,
)
from d1isa.asm.syntax import Diagnostics, LineError, Reported, suggest
from d1isa.errors import MachineError, ObjectFormatError, printable
from d1isa.expr import Expr, ExprError, Name, NeedsNode, evaluate
from d1isa.machine import Machine
from d1isa.objfile import (
    DTYPE_BYTES,
    LINE_COLS,
    CodeBlock,
    DataInit,
    InitRegs,
    ObjectFile,
    Symbol,
    TensorLayout,
    TensorPiece,
    _validate_tensor,
)

SELECTORS = ("all", "rest", "node", "row", "col", "rect", "list")
SELECTOR_ARGS = {"all": 0, "rest": 0, "node": 2, "row": 1, "col": 1, "rect": 4}
NO_LOCATION = (-1,) * LINE_COLS


class NotYet(Exception):
    """Pass 1 cannot evaluate this yet (a name defined later, or a data address)."""


# ---- what pass 1 records --------------------------------------------------------------------


class Selector:
    """Which nodes a section or piece is for: a kind and its (AST, column) arguments."""

    __slots__ = ("kind", "args", "line", "col")

    def __init__(self, kind: str, args: list[tuple[Expr, int]], line: int, col: int) -> None:
        self.kind, self.args, self.line, self.col = kind, args, line, col


class Pending:
    """An item of a code section completed in pass 2: `todo` operands (see d1isa.asm.encode),
    or an `li` = (rd, AST, column, width) whose value was not known."""

    __slots__ = ("idx", "base", "todo", "line", "li_value", "size")

    def __init__(self, idx: int, base: int, todo: list, line: int, li: tuple | None = None
                 ) -> None:
        self.idx, self.base, self.todo, self.line, self.li_value = idx, base, todo, line, li
        self.size = 1


class TextSection:
    """One code section: its words, one location per word, labels (name -> word index), the
    items pass 2 completes, and after linking its nodes and blocks."""

    __slots__ = ("sel", "words", "locs", "pend", "labels", "label_pos", "nodes", "block_ids",
                 "has_li")

    def __init__(self, sel: Selector | None) -> None:
        self.sel = sel
        self.words: list[int] = []
        self.locs: list[int] = []
        self.pend: list[Pending] = []
        self.labels: dict[str, int] = {}
        self.label_pos: dict[str, tuple[int, int]] = {}
        self.nodes: list[int] = []
        self.block_ids: list[int] = []
        self.has_li = False


class DataLabel:
    __slots__ = ("name", "line", "col", "addr")

    def __init__(self, name: str, line: int, col: int) -> None:
        self.name, self.line, self.col, self.addr = name, line, col, None


class DataSection:
    """One data section: its entries in order (labels, values, .org/.align/.zero), and after
    layout its nodes and contiguous runs."""

    __slots__ = ("sel", "entries", "nodes", "runs")

    def __init__(self, sel: Selector) -> None:
        self.sel = sel
        self.entries: list[tuple] = []
        self.nodes: list[int] = []
        self.runs: list[DataRun] = []


class DataRun:
    """Contiguous bytes of one data section: constant bytes plus node-dependent patches."""

    __slots__ = ("addr", "chunks", "size", "line")

    def __init__(self, addr: int, line: int) -> None:
        self.addr, self.size, self.line = addr, 0, line
        self.chunks: list[tuple] = []


class TensorDecl:
    __slots__ = ("name", "role", "dtype", "dims", "line", "col", "pieces")

    def __init__(self, name: str, role: str, dtype: str, dims: list, line: int, col: int) -> None:
        self.name, self.role, self.dtype, self.dims = name, role, dtype, dims
        self.line, self.col = line, col
        self.pieces: list[PieceDecl] = []


class PieceDecl:
    __slots__ = ("name", "where", "addr", "opts", "line", "col", "name_col")

    def __init__(self, name: str, where: Any, addr: tuple, opts: dict, line: int, col: int,
                 name_col: int) -> None:
        self.name, self.where, self.addr, self.opts = name, where, addr, opts
        self.line, self.col, self.name_col = line, col, name_col


# ---- names ------------------------------------------------------------------------------------

GlobalValue = Callable[[str, int, "Scope"], int]


class Scope:
    """What names mean while evaluating: direction names (for direction operands), a section's
    code labels, the node, and then the caller's globals. `hit` records a code label use;
    `tentative` (pass 1) raises NotYet for anything not known yet."""

    __slots__ = ("global_value", "labels", "node", "names", "hit", "tentative")

    def __init__(self, global_value: GlobalValue, labels: dict[str, int] | None = None,
                 node: tuple[int, int, int] | None = None, tentative: bool = False) -> None:
        self.global_value, self.labels, self.node = global_value, labels, node
        self.names: dict[str, int] | None = None
        self.hit = False
        self.tentative = tentative

    def lookup(self, name: str, pos: int) -> int:
        if self.names is not None:
            v = self.names.get(name.upper())
            if v is not None:
                return v
        if self.labels is not None:
            v = self.labels.get(name)
            if v is not None:
                self.hit = True
                return v
        return self.global_value(name, pos, self)

    def eval(self, ast: Expr) -> int:
        return evaluate(ast, self.lookup, self.node)


def located(ast: Expr, scope: Scope, line: int, col: int) -> int:
    """Evaluate; an error inside the expression is re-raised at its absolute place."""
    try:
        return evaluate(ast, scope.lookup, scope.node)
    except ExprError as e:
        if e.line is None:
            e.line, e.col = line, col + e.pos
        raise


def no_globals(name: str, pos: int, scope: Scope) -> int:
    """The global lookup of a program with no equates or data labels."""
    raise ExprError(f"unknown name '{name}'", pos, len(name))


# ---- the linker -------------------------------------------------------------------------------


class Linker:
    """Builds one object from sections; every problem goes to `diags`.

    `loc_rows`: the table of explicit line rows that the sections' locations index, or None
    when locations are packed (line << 24 | column of the assembly text)."""

    def __init__(self, machine: Machine, diags: Diagnostics, global_value: GlobalValue,
                 loc_rows: list[tuple[int, ...]] | None = None) -> None:
        self.machine = machine
        self.diags = diags
        self.global_value = global_value
        self.loc_rows = loc_rows
        self._loc_table: np.ndarray | None = None
        self.sram = machine.sram_bytes
        self.node_block = np.full(machine.n_live, -1, dtype=np.int32)
        self.blocks: list[CodeBlock] = []
        self.block_index: dict[bytes, int] = {}
        self.data: list[DataInit] = []
        # node -> {register: value}: the scalar registers nodes start with (`.init`, or the
        # compiler's per-node values)
        self.init: dict[int, dict[int, int]] = {}
        self.init_line: dict[tuple[int, int], int] = {}

    def _diag(self, line: int, col: int, msg: str, width: int = 1) -> None:
        self.diags.diag(line, col, msg, width)

    def _report(self, e: Exception, line: int, col: int) -> None:
        self.diags.report(e, line, col)

    def scope(self, labels: dict[str, int] | None = None,
              node: tuple[int, int, int] | None = None) -> Scope:
        return Scope(self.global_value, labels, node)

    def eval_global(self, ast: Expr, col: int, line: int, what: str) -> int | None:
        """Evaluate with globals only (no node, no code labels); report and return None on error."""
        try:
            return evaluate(ast, Scope(self.global_value).lookup)
        except NeedsNode:
            self._diag(line, col, f"{what} cannot depend on the node (@x, @y, @id)")
        except (ExprError, LineError) as e:
            self._report(e, line, col)
        except Reported:
            pass
        return None

    # ---- selectors ------------------------------------------------------------------------

    def node_at(self, x: int | None, y: int | None, line: int, col: int) -> int | None:
        if x is None or y is None:
            return None
        try:
            return self.machine.node_id(x, y)
        except MachineError as e:
            self._diag(line, col, str(e))
            return None

    def select(self, sel: Selector, what: str) -> list[int]:
        """The sorted live node ids a selector names (`rest` is resolved by the caller)."""
        m = self.machine
        vals = [self.eval_global(a, c, sel.line, f"a {what} selector") for a, c in sel.args]
        kind = sel.kind
        if kind == "all":
            return list(range(m.n_live))
        ids = m.id_grid
        if kind in ("node", "list"):
            out, seen = [], {}
            for i in range(0, len(vals), 2):
                nid = self.node_at(vals[i], vals[i + 1], sel.line, sel.args[i][1])
                if nid is None:
                    continue
                if nid in seen:
                    self._diag(sel.line, sel.args[i][1], f"node ({vals[i]},{vals[i + 1]}) is "
                               "listed twice")
                    continue
                seen[nid] = True
                out.append(nid)
            return sorted(out)
        if any(v is None for v in vals):
            return []
        if kind == "row":
            (y,) = vals
            if not 0 <= y < m.height:
                self._diag(sel.line, sel.args[0][1], f"row {y} is outside the {m.width}x"
                           f"{m.height} mesh (rows 0..{m.height - 1})")
                return []
            return [int(i) for i in ids[y] if i >= 0]
        if kind == "col":
            (x,) = vals
            if not 0 <= x < m.width:
                self._diag(sel.line, sel.args[0][1], f"column {x} is outside the {m.width}x"
                           f"{m.height} mesh (columns 0..{m.width - 1})")
                return []
            return sorted(int(i) for i in ids[:, x] if i >= 0)
        x0, y0, x1, y1 = vals
        for k, (v, lim, axis) in enumerate(((x0, m.width, "x"), (y0, m.height, "y"),
                                            (x1, m.width, "x"), (y1, m.height, "y"))):
            if not 0 <= v < lim:
                self._diag(sel.line, sel.args[k][1], f"rect corner {axis} = {v} is outside the "
                           f"{m.width}x{m.height} mesh")
                return []
        if x0 > x1 or y0 > y1:
            self._diag(sel.line, sel.args[0][1], "rect needs X0 <= X1 and Y0 <= Y1 (inclusive "
                       "corners)")
            return []
        block = ids[y0:y1 + 1, x0:x1 + 1]
        return sorted(int(i) for i in block.ravel() if i >= 0)

    def resolve_selectors(self, texts: list[TextSection], datas: list[DataSection]) -> None:
        """Every section's nodes; a node in two code sections is an error."""
        m = self.machine
        owner = np.full(m.n_live, -1, dtype=np.int64)
        rest: list[TextSection] = []
        for sec in texts:
            if sec.sel.kind == "rest":
                rest.append(sec)
                continue
            sec.nodes = self.select(sec.sel, ".text")
            self._claim(sec, owner)
        for i, sec in enumerate(rest):
            if i:
                self._diag(sec.sel.line, sec.sel.col, "only one '.text rest' section is "
                           f"allowed (the first is at line {rest[0].sel.line})", 4)
                continue
            sec.nodes = [int(n) for n in np.nonzero(owner < 0)[0]]
            owner[sec.nodes] = sec.sel.line
        data_owned = np.zeros(m.n_live, dtype=bool)
        for dsec in datas:
            if dsec.sel.kind != "rest":
                dsec.nodes = self.select(dsec.sel, ".data")
                data_owned[dsec.nodes] = True
        for dsec in datas:
            if dsec.sel.kind == "rest":
                dsec.nodes = [int(n) for n in np.nonzero(~data_owned)[0]]

    def _claim(self, sec: TextSection, owner: np.ndarray) -> None:
        if not sec.nodes:
            return
        idx = np.asarray(sec.nodes)
        taken = owner[idx]
        if (taken >= 0).any():
            k = int(np.nonzero(taken >= 0)[0][0])
            x, y = self.machine.node_xy(int(idx[k]))
            self._diag(sec.sel.line, sec.sel.col, f"node ({x},{y}) is selected by two .text "
                       f"sections: this one and the one at line {int(taken[k])}")
        owner[idx[taken < 0]] = sec.sel.line

    # ---- data -----------------------------------------------------------------------------

    def layout_data(self, datas: list[DataSection]) -> None:
        """Give every data label its address and cut each data section into contiguous runs."""
        counter = 0
        sram = self.sram
        for sec in datas:
            run: DataRun | None = None
            for e in sec.entries:
                kind = e[0]
                if kind == "label":
                    e[1].addr = counter
                    continue
                if kind == "init":
                    continue
                if kind in ("ints", "floats"):
                    _, width, vals, pend, ln = e
                    size = width * len(vals)
                    if counter + size > sram:
                        self._diag(ln, self.diags.first_col(ln),
                                   f"data runs past the end of SRAM: {counter} + {size} "
                                   f"bytes > {sram}")
                        counter = sram
                        run = None
                        continue
                    if run is None:
                        run = DataRun(counter, ln)
                        sec.runs.append(run)
                    run.chunks.append((counter - run.addr, e))
                    run.size += size
                    counter += size
                    continue
                _, ast, ln, col = e
                v = self.eval_global(ast, col, ln, f"the .{kind} value")
                if v is None:
                    continue
                if kind == "org":
                    if not 0 <= v <= sram:
                        self._diag(ln, col, f".org {v} is outside SRAM (0..{sram})")
                        continue
                    if v != counter:
                        run = None
                    counter = v
                elif kind == "align":
                    if v < 1 or v & (v - 1):
                        self._diag(ln, col, f".align needs a power of two, got {v}")
                        continue
                    pad = -counter % v
                    if counter + pad > sram:
                        self._diag(ln, col, "the .align padding runs past the end of SRAM")
                        continue
                    if run is not None and pad:
                        run.chunks.append((counter - run.addr, ("zero", pad)))
                        run.size += pad
                    counter += pad
                else:   # zero
                    if v < 0:
                        self._diag(ln, col, f".zero needs a count >= 0, got {v}")
                        continue
                    if counter + v > sram:
                        self._diag(ln, col, f"data runs past the end of SRAM: {counter} + {v} "
                                   f"bytes > {sram}")
                        continue
                    if v:
                        if run is None:
                            run = DataRun(counter, ln)
                            sec.runs.append(run)
                        run.chunks.append((counter - run.addr, ("zero", v)))
                        run.size += v
                        counter += v

    def _chunk_bytes(self, e: tuple, scope: Scope | None) -> bytes:
        """The bytes of one data entry; node-dependent values are evaluated with `scope`."""
        if e[0] == "zero":
            return bytes(e[1])
        kind, width, vals, pend, ln = e
        if pend:
            vals = list(vals)
            for i, ast, col in pend:
                if scope is None:
                    raise NeedsNode()
                try:
                    v = located(ast, scope, ln, col)
                    if kind == "ints":
                        lo, hi = -(1 << (8 * width - 1)), (1 << (8 * width)) - 1
                        if v < lo or v > hi:
                            raise ExprError(f"{v} does not fit .i{8 * width} ({lo}..{hi})", 0,
                                            line=ln, col=col)
                    else:
                        v = f32_operand(v, col, 1)
                        if width == 2:
                            v = bf16_from_f32_bits(v)
                    vals[i] = v
                except LineError as x:
                    x.line = x.line or ln
                    raise
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
        mask = (1 << (8 * width)) - 1
        return struct.pack(f"<{len(vals)}{fmt}", *[v & mask for v in vals])

    def _run_bytes(self, run: DataRun, scope: Scope | None) -> bytes:
        buf = bytearray(run.size)
        for off, e in run.chunks:
            b = self._chunk_bytes(e, scope)
            buf[off:off + len(b)] = b
        return bytes(buf)

    def emit_init(self, datas: list[DataSection]) -> None:
        """The `.init` registers of every data section, on every node of the section; a
        register given twice to one node is an error."""
        m = self.machine
        for sec in datas:
            for e in sec.entries:
                if e[0] != "init":
                    continue
                _, reg, ast, ln, col = e
                for nid in sec.nodes:
                    x, y = m.node_xy(nid)
                    try:
                        v = located(ast, self.scope(None, (x, y, nid)), ln, col)
                    except (LineError, ExprError) as err:
                        self._report(err, ln, col)
                        break
                    except Reported:
                        break
                    if not -(1 << 63) <= v <= (1 << 64) - 1:
                        self._diag(ln, col, f"initial value {v} of r{reg} does not fit 64 bits "
                                   f"(on node ({x},{y}))")
                        break
                    if not self.set_init(nid, reg, v, ln, col):
                        break

    def set_init(self, nid: int, reg: int, value: int, line: int = 1, col: int = 1) -> bool:
        """Node `nid` starts with r`reg` = value; False (reported) if it already has one."""
        regs = self.init.setdefault(nid, {})
        if reg in regs:
            x, y = self.machine.node_xy(nid)
            first = self.init_line.get((nid, reg), line)
            self._diag(line, col, f"node ({x},{y}) is given an initial r{reg} twice (first at "
                       f"line {first})")
            return False
        regs[reg] = value
        self.init_line[(nid, reg)] = line
        return True

    def emit_data(self, datas: list[DataSection]) -> None:
        """Every run's bytes on every node of its section; overlapping data is an error."""
        m = self.machine
        spans: dict[int, list[tuple[int, int, int]]] = {}
        for sec in datas:
            for run in sec.runs:
                try:
                    shared: bytes | None = self._run_bytes(run, None)
                except NeedsNode:
                    shared = None
                except (LineError, ExprError) as e:
                    self._report(e, run.line, 1)
                    continue
                except Reported:
                    continue
                for nid in sec.nodes:
                    if shared is None:
                        x, y = m.node_xy(nid)
                        try:
                            b = self._run_bytes(run, self.scope(None, (x, y, nid)))
                        except (LineError, ExprError) as e:
                            self._report(e, run.line, 1)
                            break
                        except Reported:
                            break
                    else:
                        b = shared
                    self.data.append(DataInit(nid, run.addr, b))
                    spans.setdefault(nid, []).append((run.addr, run.addr + run.size, run.line))
        # One error per pair of lines, not per node: `.data all` overlapping itself would
        # otherwise fill the error limit with one mistake repeated for every node. Each run is
        # compared with the earlier run (by address) that reaches furthest, so every run that
        # overlaps another is found, not only a node's first.
        overlaps: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for nid, sp in spans.items():
            sp.sort()
            _, end, line = sp[0]
            for a1, e1, l1 in sp[1:]:
                if a1 < end:
                    first, second = sorted((line, l1))
                    overlaps.setdefault((first, second), []).append((nid, a1, min(end, e1) - 1))
                if e1 > end:
                    end, line = e1, l1
        for (first, second), where in overlaps.items():
            nid, lo, hi = where[0]
            x, y = m.node_xy(nid)
            more = f" and on {len(where) - 1} more nodes" if len(where) > 1 else ""
            self._diag(second, self.diags.first_col(second),
                       f"data overlaps the data of line {first} on node ({x},{y}) "
                       f"(bytes {lo}..{hi}){more}")

    # ---- code -----------------------------------------------------------------------------

    def _size_li(self, sec: TextSection) -> None:
        """Decide each pending li's size (1 or 2 words), then shift labels and items to match."""
        m = self.machine
        dummy = dict.fromkeys(sec.labels, 0)
        inserts = []
        for p in sec.pend:
            if p.li_value is None:
                continue
            ast = p.li_value[1]
            scope = self.scope(dummy, None)
            try:
                v = scope.eval(ast)
                p.size = 1 if scope.hit or INT32[0] <= v <= INT32[1] else 2
            except NeedsNode:
                size = 1
                for nid in sec.nodes:
                    x, y = m.node_xy(nid)
                    try:
                        v = self.scope(dummy, (x, y, nid)).eval(ast)
                    except (ExprError, LineError, Reported):
                        break
                    if not INT32[0] <= v <= INT32[1]:
                        size = 2
                        break
                p.size = size
            except (ExprError, LineError, Reported):
                p.size = 1      # the error is reported when the item is encoded
            if p.size == 2:
                inserts.append(p.idx)
        if not inserts:
            return
        words, locs = [], []
        ins = set(inserts)
        for i, (w, lc) in enumerate(zip(sec.words, sec.locs, strict=True)):
            words.append(w)
            locs.append(lc)
            if i in ins:
                words.append(0)
                locs.append(lc)
        sec.words, sec.locs = words, locs
        inserts.sort()
        for name, i in sec.labels.items():
            sec.labels[name] = i + bisect.bisect_left(inserts, i)
        for p in sec.pend:
            p.idx += bisect.bisect_left(inserts, p.idx)

    def _resolve(self, p: Pending, scope: Scope, words: list[int]) -> None:
        """Complete one pending item into `words`; raises NeedsNode when it needs a node."""
        pc = p.idx
        if p.li_value is not None:
            rd, ast, col, width = p.li_value
            scope.hit = False
            v = located(ast, scope, p.line, col)
            if scope.hit and not INT32[0] <= v <= INT32[1]:
                raise LineError(f"li with a code label must fit 32 bits, got {v}", col, width)
            ws = li_words(rd, v, p.size, col, width)
            words[pc] = ws[0]
            if p.size == 2:
                words[pc + 1] = ws[1]
            return
        word = p.base
        for kind, lo, mask, vmin, vmax, fname, ast, col, flag in p.todo:
            if kind == K_DIR:
                scope.names = DIR_NAMES
                try:
                    v = located(ast, scope, p.line, col)
                except ExprError as e:
                    if type(ast) is Name and e.msg.startswith("unknown name"):
                        e.msg = f"expected a direction (N, E, S or W), got '{ast.name}'"
                    raise
                finally:
                    scope.names = None
                if not 0 <= v <= 3:
                    raise LineError(f"direction {v} is out of range: write N, E, S or W (0..3)",
                                    col)
            else:
                try:
                    v = located(ast, scope, p.line, col)
                except ExprError as e:
                    if kind == K_LABEL and e.msg.startswith("unknown name"):
                        e.msg = "unknown label" + e.msg[len("unknown name"):]
                    raise
            if kind == K_LABEL:
                if not flag:
                    v -= pc
                if not vmin <= v <= vmax:
                    raise LineError(f"branch offset {v} is out of range {vmin}..{vmax}", col)
            elif kind == K_FLOAT:
                v = f32_operand(v, col, 1)
            elif kind == K_MEMIMM:
                check_mem(v, bool(flag), col, 1, self.sram)
            elif kind == K_WORD:
                if not vmin <= v <= vmax:
                    raise LineError(f"{v} does not fit a 64-bit word", col)
            elif not vmin <= v <= vmax:
                raise LineError(f"{FIELD_NOUN[fname]} {v} is out of range {vmin}..{vmax}", col)
            word |= (v & mask) << lo
        words[pc] = word

    def line_rows(self, locs: list[int]) -> np.ndarray:
        """int32[len(locs), LINE_COLS]: the line table rows of a section's words."""
        n = len(locs)
        if self.loc_rows is not None:
            if self._loc_table is None or len(self._loc_table) != len(self.loc_rows):
                self._loc_table = np.array(self.loc_rows, dtype=np.int32).reshape(-1, LINE_COLS)
            return self._loc_table[np.array(locs, dtype=np.int64)] if n else \
                np.empty((0, LINE_COLS), np.int32)
        keys = np.array(locs, dtype=np.int64)
        rows = np.zeros((n, LINE_COLS), dtype=np.int32)
        line = (keys >> 24).astype(np.int32)
        rows[:, 1] = line
        rows[:, 2] = (keys & 0xFFFFFF).astype(np.int32)
        rows[:, 4] = line
        return rows

    def add_block(self, words: list[int], rows: np.ndarray, rows_bytes: bytes) -> int:
        """The block holding exactly these words and rows (made if it is new)."""
        arr = np.array(words, dtype=np.uint64)
        key = arr.tobytes() + rows_bytes
        b = self.block_index.get(key)
        if b is None:
            b = self.block_index[key] = len(self.blocks)
            self.blocks.append(CodeBlock(arr, rows.copy()))
        return b

    def link_section(self, sec: TextSection) -> None:
        """Resolve a section's pending items (per node if they use @x/@y/@id) and point its
        nodes at their blocks."""
        if sec.has_li:
            self._size_li(sec)
        labels = sec.labels
        scope = self.scope(labels, None)
        words = sec.words
        per_node: list[Pending] = []
        for p in sec.pend:
            try:
                self._resolve(p, scope, words)
            except NeedsNode:
                per_node.append(p)
            except (LineError, ExprError) as e:
                self._report(e, p.line, p.todo[0][7] if p.todo else 1)
            except Reported:
                pass
        rows = self.line_rows(sec.locs)
        rows_bytes = rows.tobytes()
        if not per_node:
            b = self.add_block(words, rows, rows_bytes)
            sec.block_ids.append(b)
            self.node_block[sec.nodes] = b
            return
        m = self.machine
        failed: set[int] = set()        # report a per-node error once, for its first node
        for nid in sec.nodes:
            x, y = m.node_xy(nid)
            scope = self.scope(labels, (x, y, nid))
            w = list(words)
            ok = True
            for p in per_node:
                try:
                    self._resolve(p, scope, w)
                except (LineError, ExprError) as e:
                    ok = False
                    if p.idx not in failed:
                        failed.add(p.idx)
                        e.msg += f" (on node ({x},{y}))"
                        self._report(e, p.line, 1)
                except Reported:
                    ok = False
            if not ok:
                continue
            b = self.add_block(w, rows, rows_bytes)
            if b not in sec.block_ids:
                sec.block_ids.append(b)
            self.node_block[nid] = b

    # ---- tensors ----------------------------------------------------------------------------

    def tensor(self, name: str, role: str, dtype: str, shape: tuple[int, ...], line: int,
               col: int) -> TensorLayout | None:
        """A tensor's layout, checked against the machine (None after reporting a problem)."""
        layout = TensorLayout(name, dtype, shape, role)
        try:
            _validate_tensor(layout, self.machine)
        except ObjectFormatError as e:
            self._diag(line, col, str(e), len(name))
            return None
        return layout

    def piece(self, layout: TensorLayout, nid: int, addr: int, offset: tuple[int, ...] | None,
              shape: tuple[int, ...] | None, strides: tuple[int, ...] | None, line: int,
              col: int) -> TensorPiece | None:
        """One piece of `layout` on node `nid` (offset 0, the whole shape and row-major strides
        by default), checked; added to the layout, or None after reporting a problem."""
        nd = len(layout.shape)
        shape = layout.shape if shape is None else shape
        if strides is None:
            st, acc = [], DTYPE_BYTES[layout.dtype]
            for d in reversed(shape):
                st.append(acc)
                acc *= d
            strides = tuple(reversed(st))
        piece = TensorPiece(nid, addr, (0,) * nd if offset is None else offset, shape, strides)
        try:
            _validate_tensor(TensorLayout(layout.name, layout.dtype, layout.shape, layout.role,
                                          [piece]), self.machine)
        except ObjectFormatError as e:
            x, y = self.machine.node_xy(nid)
            self._diag(line, col, f"{e} (piece on node ({x},{y}))")
            return None
        layout.pieces.append(piece)
        return piece

    def check_cover(self, layout: TensorLayout, line: int, col: int) -> None:
        """An output tensor's pieces must cover every element (checked up to 2^24 elements)."""
        total = int(np.prod(layout.shape, dtype=object))
        if total > 1 << 24:
            return
        covered = np.zeros(layout.shape, dtype=bool)
        for p in layout.pieces:
            covered[tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))] = True
        if not covered.all():
            first = [int(i) for i in np.argwhere(~covered)[0]]
            self._diag(line, col, f"output tensor '{layout.name}' is not covered by "
                       f"its pieces: element {first} is in none", len(layout.name))

    def build_tensors(self, tensors: list[TensorDecl], pieces: list[PieceDecl]
                      ) -> list[TensorLayout]:
        """The layouts of `.tensor` declarations and their `.piece`s (expressions evaluated)."""
        m = self.machine
        out: list[TensorLayout] = []
        by_name: dict[str, tuple[TensorLayout, TensorDecl]] = {}
        for t in tensors:
            dims = [self.eval_global(a, c, t.line, "a tensor dimension") for a, c in t.dims]
            if any(d is None for d in dims):
                continue
            layout = self.tensor(t.name, t.role, t.dtype, tuple(int(d) for d in dims), t.line,
                                 t.col)
            if layout is None:
                continue
            out.append(layout)
            by_name[t.name] = (layout, t)
        for pd in pieces:
            entry = by_name.get(pd.name)
            if entry is None:
                if not any(t.name == pd.name for t in tensors):
                    self._diag(pd.line, pd.name_col, f"no tensor named '{pd.name}' is declared "
                               f"with .tensor{suggest(pd.name, [t.name for t in tensors])}",
                               len(pd.name))
                continue
            layout, decl = entry
            if isinstance(pd.where, Selector):
                nodes = [(nid, (*m.node_xy(nid), nid)) for nid in self.select(pd.where,
                                                                            ".piece")]
            else:
                (ax, cx), (ay, cy) = pd.where
                x = self.eval_global(ax, cx, pd.line, "a piece's node")
                y = self.eval_global(ay, cy, pd.line, "a piece's node")
                nid = self.node_at(x, y, pd.line, cx)
                nodes = [] if nid is None else [(nid, (x, y, nid))]
            for nid, node in nodes:
                if self._piece_decl(pd, layout, nid, node) is None:
                    break
        for layout, decl in by_name.values():
            if layout.role == "output":
                self.check_cover(layout, decl.line, decl.col)
        return out

    def _piece_decl(self, pd: PieceDecl, layout: TensorLayout, nid: int, node: tuple
                    ) -> TensorPiece | None:
        scope = self.scope(None, node)
        vals: dict[str, list[int]] = {}
        try:
            addr = located(pd.addr[0], scope, pd.line, pd.addr[1])
            for key, items in pd.opts.items():
                vals[key] = [located(a, scope, pd.line, c) for a, c in items]
        except (ExprError, LineError) as e:
            self._report(e, pd.line, 1)
            return None
        except (Reported, NeedsNode):
            return None
        nd = len(layout.shape)
        for key, items in vals.items():
            if len(items) != nd:
                self._diag(pd.line, pd.opts[key][0][1], f"'{key}' has {len(items)} values; "
                           f"tensor '{layout.name}' has {nd} dimensions")
                return None
        get = vals.get
        return self.piece(layout, nid, addr, tuple(get("offset", (0,) * nd)),
                          tuple(get("shape", layout.shape)),
                          tuple(vals["strides"]) if "strides" in vals else None, pd.line,
                          pd.col)

    # ---- symbols and the object -------------------------------------------------------------

    def build_symbols(self, defs: list[tuple], equ_value: Callable[[Any], int] | None = None
                      ) -> list[Symbol]:
        """Symbols of definitions in order: ("code", name, TextSection) gives one symbol per
        block of the section, ("data", name, DataLabel) its address, ("equ", name, ref) the
        value `equ_value(ref)` unless it depends on the node. Names starting with '.' are
        local."""
        out: list[Symbol] = []
        for kind, name, ref in defs:
            if name.startswith("."):
                continue
            if kind == "equ":
                try:
                    v = equ_value(ref)
                except (NeedsNode, Reported):
                    continue
                except (ExprError, LineError) as e:
                    self._report(e, ref.line, ref.col)
                    continue
                out.append(Symbol(name, "equ", v))
            elif kind == "data":
                if ref.addr is not None:
                    out.append(Symbol(name, "data", ref.addr))
            else:
                pc = ref.labels[name]
                for b in ref.block_ids:
                    out.append(Symbol(name, "code", pc, b))
        return out

    def finish(self, symbols: list[Symbol], tensors: list[TensorLayout], files: list[str],
               sources: dict[str, str], meta: dict[str, Any]) -> ObjectFile | None:
        """The object, validated as a whole (None if anything was reported)."""
        if self.diags:
            return None
        # Loading refuses unprintable file names (they are shown on the terminal): a source
        # whose path holds a tab or a newline is recorded under its escaped name.
        files = [printable(f) for f in files]
        sources = {printable(k): v for k, v in sources.items()}
        if isinstance(meta.get("source"), str):
            meta = {**meta, "source": printable(meta["source"])}
        obj = ObjectFile(self.machine, self.blocks, self.node_block, self.data, symbols,
                         tensors, files, sources, meta,
                         InitRegs.from_nodes(self.machine.n_live, self.init))
        try:
            obj.validate()
        except ObjectFormatError as e:
            self._diag(1, 1, f"the assembled object is inconsistent: {e}")
            return None
        return obj
