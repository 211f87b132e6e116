"""The assembler's driver: reads `.d1s` text in one pass, then hands the sections to the linker.

Pass 1 reads every line once. Most instructions are complete after it: their words go straight
into their section's word list. An operand that names something not yet known (a label, a data
address, a node symbol) leaves a pending item holding its parsed expression. Equates and labels
are recorded here, with the checks that make a name mean one thing. Pass 2 is the layout
(d1isa.asm.layout): selectors, data, labels, per-node values, shared code blocks, tensors,
symbols, and the object.

The line format is regular enough that a hand-written scanner is an order of magnitude faster
than a grammar engine, and large programs have hundreds of thousands of lines, so this does not
use Lark (the DSL parser does). Two caches carry most of the work: instruction text seen before
is not encoded again (only its pending operands are re-attached), and a new instruction whose
operands are all plain spellings goes through its mnemonic's generated fast encoder.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

from d1isa.asm.directives import directive
from d1isa.asm.encode import (
    PLANS,
    OperandEncoder,
    _Plan,
    _Pseudo,
    fast_register_tables,
    split_operands,
)
from d1isa.asm.layout import (
    DataLabel,
    DataSection,
    Linker,
    NotYet,
    Pending,
    Scope,
    TextSection,
)
from d1isa.asm.syntax import (
    ASSIGN_RE,
    COMMENT_RE,
    EXPLICIT_LINES_RE,
    EXPLICIT_SYMBOLS_RE,
    LABEL_RE,
    REGLIKE_RE,
    Diagnostics,
    LineError,
    Reported,
    TooManyErrors,
    strip_comment,
    suggest,
)
from d1isa.errors import D1Error, MachineError, SourceError
from d1isa.expr import Expr, ExprError, NeedsNode, Num, evaluate, parse
from d1isa.files import read_text
from d1isa.machine import (
    MACHINE_JSON_HINT,
    Machine,
    default_machine,
    load_machine,
    machine_or_default,
)
from d1isa.objfile import LINE_COLS, ObjectFile, Symbol

PRODUCER = "d1 asm"

_UNSET: Any = object()


# How deep equates may refer forward to each other (each level costs a few Python frames).
MAX_EQU_DEPTH = 1000


def machine_directive(lines: list[str]) -> tuple[int, int, str] | None:
    """(line, column, argument) of a `.machine` directive that is the first statement of an
    assembly file's `lines`, or None."""
    for i, raw in enumerate(lines):
        s = strip_comment(raw).strip()
        if not s:
            continue
        if s[:8].lower() != ".machine" or (len(s) > 8 and not s[8].isspace()):
            return None
        arg = s[8:].strip()
        return i + 1, (raw.find(arg) + 1 if arg else len(raw) + 1), arg
    return None


def directive_machine(arg: str, col: int = 1) -> Machine:
    """The machine a `.machine` directive's argument names: a machine name, or its parameters
    as a JSON object (what `d1 disasm` writes). Raises MachineError or LineError."""
    if arg.startswith("{"):
        try:
            params = json.loads(arg)
        except (json.JSONDecodeError, RecursionError) as e:
            raise LineError(f"bad machine JSON: {getattr(e, 'msg', e)}", col, len(arg)) from None
        if not isinstance(params, dict):
            raise LineError("the .machine JSON must be an object", col, len(arg))
        return Machine.from_dict(params, MACHINE_JSON_HINT)
    if arg:
        return load_machine(arg)
    raise LineError(".machine needs a machine name or its JSON parameters", col)


class _Equ:
    __slots__ = ("name", "ast", "line", "col", "value", "busy", "failed", "nodedep")

    def __init__(self, name: str, ast: Expr, line: int, col: int) -> None:
        self.name, self.ast, self.line, self.col = name, ast, line, col
        self.value: int | None = ast.value if type(ast) is Num else None
        self.busy = self.failed = self.nodedep = False


class Assembler:
    """One assembly of one text. Use `assemble()`; this class holds the passes' state."""

    def __init__(self, text: str, filename: str, machine: Machine | None) -> None:
        self._equ_depth = 0
        self.text = text
        self.filename = filename
        self.lines = text.split("\n")
        if "\r" in text:
            self.lines = [ln[:-1] if ln.endswith("\r") else ln for ln in self.lines]
        if self.lines and self.lines[0].startswith("\ufeff"):
            self.lines[0] = " " + self.lines[0][1:]
        self.diags = Diagnostics(filename, self.lines)
        self.requested = machine
        self.machine = machine
        low = text.lower()
        self.explicit_lines = (any(k in low for k in (".loc", ".file", ".source"))
                               and bool(EXPLICIT_LINES_RE.search(text)))
        self.explicit_symbols = ".symbol" in low and bool(EXPLICIT_SYMBOLS_RE.search(text))
        self.equs: dict[str, _Equ] = {}
        self.data_labels: dict[str, DataLabel] = {}
        self.code_label_lines: dict[str, int] = {}
        self.defs: list[tuple] = []
        self.texts: list[TextSection] = []
        self.datas: list[DataSection] = []
        self.cur: TextSection | DataSection | None = None
        self.loc_rows: list[tuple[int, ...]] = [(-1,) * LINE_COLS]
        self.loc_index: dict[tuple[int, ...], int] = {self.loc_rows[0]: 0}
        self.cur_loc = 0
        self.files: list[str] = []
        self.sources: dict[str, str] = {}
        self.meta: dict[str, Any] | None = None
        self.meta_line = 0
        self.symbols: list[Symbol] = []
        self.tensors: list = []
        self.pieces: list = []
        self.expr_cache: dict[str, Expr] = {}
        self.line_cache: dict[str, tuple] = {}
        self.machine_line = 0

    def _diag(self, line: int, col: int, msg: str, width: int = 1) -> None:
        self.diags.diag(line, col, msg, width)

    # ---- entry ----------------------------------------------------------------------------

    def run(self) -> ObjectFile:
        # Pass 1 allocates a few small acyclic objects per line; the cyclic collector would
        # rescan the growing heap again and again (20-30% of the time on big inputs).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        obj = None
        try:
            self._read_machine()
            self._setup_machine()
            self._pass1()
            obj = self._pass2()
        except TooManyErrors:
            pass
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.diags:
            raise SourceError(self.diags.sorted())
        return obj

    # ---- the machine ----------------------------------------------------------------------

    def _read_machine(self) -> None:
        """A leading `.machine` directive picks the machine (it must be the first statement)."""
        found = machine_directive(self.lines)
        if found is None:
            return
        line, col, arg = found
        self.machine_line = line
        try:
            m = directive_machine(arg, col)
        except MachineError as e:
            self._diag(line, col, f"bad machine: {e}", len(arg))
            return
        except LineError as e:
            self.diags.report(e, line, col)
            return
        if self.requested is not None:
            diff = m.structural_differences(self.requested)
            # Another chip grid is copies of the file's chip (`--chips 2x1` on a file for one
            # chip, docs/MACHINE.md): the file is assembled for that grid.
            other = [k for k in diff if k not in ("chips_x", "chips_y")]
            if other:
                self._diag(line, col, "this file was assembled for another machine: "
                           f"{', '.join(other)} differ from the requested machine "
                           f"'{self.requested.name}'", len(arg))
            elif diff:
                m = self.requested
        self.machine = m

    def _setup_machine(self) -> None:
        if self.machine is None:
            self.machine = default_machine()
        m = self.machine
        self.operands = OperandEncoder(m, self._value_at, self._ast_at)
        self.regs = self.operands.regs
        self.fast_regs = fast_register_tables(self.regs)
        self.consts = {"w": m.width, "h": m.height, "n": m.n_live, "sram": m.sram_bytes}
        self.pass1_scope = Scope(self._global_value, tentative=True)

    # ---- names and values -----------------------------------------------------------------

    def _parse(self, text: str) -> Expr:
        """Parse one whole expression (cached by its text)."""
        ast = self.expr_cache.get(text)
        if ast is None:
            ast = self.expr_cache[text] = parse(text, self.consts)
        return ast

    def _value(self, text: str) -> int | Expr:
        """An int if `text` is known now (literal or earlier equate), else its parsed AST."""
        ast = self._parse(text)
        if type(ast) is Num:
            return ast.value
        try:
            return evaluate(ast, self.pass1_scope.lookup)
        except (NotYet, NeedsNode, ExprError, Reported):
            return ast

    def _ast_at(self, t: str, col: int) -> Expr:
        try:
            return self._parse(t)
        except ExprError as e:
            raise LineError(e.msg, col + e.pos, e.width) from None

    def _value_at(self, t: str, col: int) -> int | Expr:
        try:
            return self._value(t)
        except ExprError as e:
            raise LineError(e.msg, col + e.pos, e.width) from None

    def _global_value(self, name: str, pos: int, scope: Scope) -> int:
        e = self.equs.get(name)
        if e is not None:
            if scope.tentative:
                if e.value is None:
                    raise NotYet()
                return e.value
            return self._equ_value(e, scope.node)
        d = self.data_labels.get(name)
        if d is not None:
            if d.addr is None:
                if scope.tentative:
                    raise NotYet()
                raise ExprError(f"data label '{name}' has no address yet: it is placed later, "
                                f"at line {d.line}", pos, len(name), transient=True)
            return d.addr
        if scope.tentative:
            raise NotYet()
        raise ExprError(self._unknown(name, scope), pos, len(name))

    def _unknown(self, name: str, scope: Scope) -> str:
        if REGLIKE_RE.match(name):
            return f"'{name}' is a register, not a value here"
        line = self.code_label_lines.get(name)
        if line is not None and (scope.labels is None or name not in scope.labels):
            if scope.labels is None:
                return (f"'{name}' is a code label (line {line}); code labels are visible only "
                        "inside their own .text section")
            return (f"'{name}' is a code label of another .text section (line {line}); code "
                    "labels are visible only inside their own section")
        names = list(self.equs) + list(self.data_labels) + list(scope.labels or ())
        return f"unknown name '{name}'{suggest(name, names)}"

    def _equ_value(self, e: _Equ, node: tuple[int, int, int] | None) -> int:
        if e.value is not None:
            return e.value
        if e.failed:
            raise Reported()
        if e.busy:
            raise ExprError(f"'{e.name}' is defined in terms of itself", line=e.line, col=e.col,
                            width=len(e.name))
        if self._equ_depth >= MAX_EQU_DEPTH:
            raise ExprError(f"'{e.name}' is reached through a chain of more than "
                            f"{MAX_EQU_DEPTH:,} equates that refer to each other (a limit of "
                            "the assembler)", line=e.line, col=e.col, width=len(e.name))
        e.busy = True
        self._equ_depth += 1
        try:
            if not e.nodedep:
                try:
                    v = evaluate(e.ast, Scope(self._global_value).lookup)
                    e.value = v
                    return v
                except NeedsNode:
                    e.nodedep = True
            if node is None:
                raise NeedsNode()
            return evaluate(e.ast, Scope(self._global_value, None, node).lookup, node)
        except ExprError as x:
            if x.line is None:
                x.line, x.col = e.line, e.col + x.pos
            if not x.transient:
                e.failed = True
                self._diag(x.line, x.col or 1, x.msg, x.width)
                raise Reported() from None
            raise
        finally:
            e.busy = False
            self._equ_depth -= 1

    def _check_name(self, name: str, col: int, what: str) -> None:
        if REGLIKE_RE.match(name):
            raise LineError(f"'{name}' is a register name and cannot be {what}", col, len(name))

    def _define_global(self, name: str, line: int, col: int, what: str) -> None:
        self._check_name(name, col, what)
        prev = self.equs.get(name) or self.data_labels.get(name)
        if prev is not None:
            kind = "an equate" if name in self.equs else "a data label"
            raise LineError(f"'{name}' is already defined as {kind} at line {prev.line}", col,
                            len(name))

    # ---- pass 1 ---------------------------------------------------------------------------

    def _pass1(self) -> None:
        search = COMMENT_RE.search
        cache = self.line_cache
        explicit = self.explicit_lines
        plans = PLANS
        fregs = self.fast_regs
        report = self.diags.report
        loc_cache: dict[str, int] = {}
        for i, raw in enumerate(self.lines):
            if '"' in raw:
                code = strip_comment(raw)
            elif "#" in raw or ";" in raw:
                code = raw[:search(raw).start()]
            else:
                code = raw
            s = code.strip()
            if not s:
                continue
            # Fast path: an instruction text seen before. Its words are known; operands left
            # for pass 2 (branch targets) get new pending items at this line.
            hit = cache.get(s)
            if hit is not None and hit[2] is None:
                sec = self.cur
                if type(sec) is TextSection:
                    base = code.find(s[0])
                    loc = self.cur_loc if explicit else ((i + 1) << 24) | (base + 1)
                    words, todo = hit[0], hit[1]
                    if todo is not None:
                        if base != hit[3]:
                            shift = base - hit[3]
                            todo = [t[:7] + (t[7] + shift, t[8]) for t in todo]
                        sec.pend.append(Pending(len(sec.words), words[0], todo, i + 1))
                    for w in words:
                        sec.words.append(w)
                        sec.locs.append(loc)
                    continue
            elif explicit and s[:5] == ".loc ":
                idx = loc_cache.get(s)
                if idx is not None:
                    self.cur_loc = idx
                    continue
            ln = i + 1
            plain = s[0] != "." and ":" not in s and "=" not in s
            if plain and hit is None and type(self.cur) is TextSection:
                # Fast path: a new instruction whose operands are all plain spellings.
                parts = s.split(None, 1)
                plan = plans.get(parts[0])
                if type(plan) is _Plan:
                    ops = parts[1].split(",") if len(parts) > 1 else []
                    if len(ops) == plan.n:
                        try:
                            word = plan.fast(ops, fregs)
                        except (KeyError, ValueError, OverflowError, IndexError):
                            word = None
                        if word is not None:
                            cache[s] = ((word,), None, None, 0)
                            sec = self.cur
                            sec.words.append(word)
                            sec.locs.append(self.cur_loc if explicit
                                            else (ln << 24) | (code.find(s[0]) + 1))
                            continue
            try:
                if plain:
                    self._instruction(ln, s, code.find(s[0]), hit)
                else:
                    self._statement(ln, s, len(code) - len(code.lstrip()))
                    if explicit and s[:5] == ".loc ":
                        loc_cache[s] = self.cur_loc
            except (LineError, ExprError) as e:
                report(e, ln, 1)
            except (Reported, NotYet, NeedsNode):
                pass

    def _statement(self, ln: int, s: str, base: int) -> None:
        if ":" in s:
            while True:
                m = LABEL_RE.match(s)
                if m is None:
                    break
                self._label(m.group(1), ln, base + 1)
                rest = s[m.end():]
                s2 = rest.lstrip()
                base += m.end() + len(rest) - len(s2)
                s = s2
                if not s:
                    return
        if s[0] == ".":
            directive(self, ln, s, base)
            return
        if "=" in s:
            m = ASSIGN_RE.match(s)
            if m is not None:
                self._equate(m.group(1), s[m.end():], ln, base + 1, base + m.end())
                return
        self._instruction(ln, s, base)

    def _label(self, name: str, ln: int, col: int) -> None:
        sec = self.cur
        if sec is None:
            raise LineError(f"label '{name}' is outside any .text or .data section", col,
                            len(name))
        if isinstance(sec, TextSection):
            self._check_name(name, col, "a label")
            if name in sec.labels:
                raise LineError(f"label '{name}' is already defined in this section at line "
                                f"{sec.label_pos[name][0]}", col, len(name))
            sec.labels[name] = len(sec.words)
            sec.label_pos[name] = (ln, col)
            self.code_label_lines.setdefault(name, ln)
            self.defs.append(("code", name, sec))
            return
        self._define_global(name, ln, col, "a label")
        d = DataLabel(name, ln, col)
        self.data_labels[name] = d
        sec.entries.append(("label", d))
        self.defs.append(("data", name, d))

    def _equate(self, name: str, expr_text: str, ln: int, name_col: int, expr_off: int) -> None:
        self._define_global(name, ln, name_col, "an equate")
        stripped = expr_text.strip()
        if not stripped:
            raise LineError(f"'{name}' needs a value", expr_off + 1)
        col = expr_off + 1 + len(expr_text) - len(expr_text.lstrip())
        try:
            ast = self._parse(stripped)
        except ExprError as x:
            broken = _Equ(name, Num(0), ln, col)      # uses stay quiet: reported here
            broken.value, broken.failed = None, True
            self.equs[name] = broken
            raise LineError(x.msg, col + x.pos, x.width) from None
        e = _Equ(name, ast, ln, col)
        if e.value is None:
            try:
                e.value = evaluate(ast, self.pass1_scope.lookup)
            except (NotYet, NeedsNode, ExprError, Reported):
                pass
        self.equs[name] = e
        self.defs.append(("equ", name, e))

    # ---- instructions ---------------------------------------------------------------------

    def _text_section(self, col: int, what: str, width: int) -> TextSection:
        sec = self.cur
        if type(sec) is not TextSection:
            where = "in a .data section" if sec is not None else "outside any section"
            raise LineError(f"{what} {where}; code belongs after a '.text SELECTOR' line",
                            col, width)
        return sec

    def _instruction(self, ln: int, s: str, base: int, hit: Any = _UNSET) -> None:
        sec = self.cur
        if hit is _UNSET:
            hit = self.line_cache.get(s)
        if hit is not None and type(sec) is TextSection:
            self._replay(hit, sec, ln, base)
            return
        parts = s.split(None, 1)
        head = parts[0]
        plan = PLANS.get(head)
        if plan is None:
            plan = PLANS.get(head.lower())
            if plan is None:
                raise LineError(f"unknown instruction '{head}'{suggest(head.lower(), PLANS)}",
                                base + 1, len(head))
        if type(sec) is not TextSection:
            sec = self._text_section(base + 1, f"instruction '{head}'", len(head))
        if len(parts) == 1:
            ops: list[str] = []
            rest_off = base + len(s)
        else:
            rest = parts[1]
            rest_off = base + len(s) - len(rest)
            ops = split_operands(rest)
        if type(plan) is _Pseudo:
            hit = self.operands.pseudo(plan, ops, base, rest_off, head)
        else:
            if len(ops) != plan.n:
                raise LineError(f"'{plan.mnemonic}' takes {plan.n} operand"
                                f"{'s' if plan.n != 1 else ''} ({plan.syntax}), got {len(ops)}",
                                base + 1, len(head))
            try:
                word = plan.fast(ops, self.fast_regs)
                todo = None
            except (KeyError, ValueError, OverflowError, IndexError):
                word, todo = self.operands.encode(plan, ops, None, rest_off)
            hit = ((word,), todo, None, base)
        self.line_cache[s] = hit
        if type(plan) is _Plan and todo is None:
            sec.words.append(word)
            sec.locs.append((ln << 24) | (base + 1) if not self.explicit_lines else self.cur_loc)
            return
        self._replay(hit, sec, ln, base)

    def _replay(self, hit: tuple, sec: TextSection, ln: int, base: int) -> None:
        """Append an encoded statement; pending columns move with the statement's indentation."""
        words, todo, li, base0 = hit
        loc = (ln << 24) | (base + 1) if not self.explicit_lines else self.cur_loc
        shift = base - base0
        if li is not None:
            rd, ast, col, width = li
            sec.pend.append(Pending(len(sec.words), 0, [], ln, li=(rd, ast, col + shift, width)))
            sec.has_li = True
        elif todo is not None:
            if shift:
                todo = [t[:7] + (t[7] + shift, t[8]) for t in todo]
            sec.pend.append(Pending(len(sec.words), words[0], todo, ln))
        for w in words:
            sec.words.append(w)
            sec.locs.append(loc)

    # ---- pass 2 ---------------------------------------------------------------------------

    def _pass2(self) -> ObjectFile | None:
        linker = Linker(self.machine, self.diags, self._global_value,
                        self.loc_rows if self.explicit_lines else None)
        self._check_label_conflicts()
        linker.resolve_selectors(self.texts, self.datas)
        linker.layout_data(self.datas)
        for sec in self.texts:
            linker.link_section(sec)
        linker.emit_data(self.datas)
        linker.emit_init(self.datas)
        tensors = linker.build_tensors(self.tensors, self.pieces)
        if self.explicit_symbols:
            symbols = self.symbols
        else:
            symbols = linker.build_symbols(self.defs, lambda e: self._equ_value(e, None))
        if self.explicit_lines:
            files, sources = self.files, self.sources
        else:
            files, sources = [self.filename], {self.filename: self.text}
        meta = self.meta if self.meta is not None else {"producer": PRODUCER}
        return linker.finish(symbols, tensors, files, sources, meta)

    def _check_label_conflicts(self) -> None:
        for sec in self.texts:
            for name, (ln, col) in sec.label_pos.items():
                prev = self.equs.get(name) or self.data_labels.get(name)
                if prev is not None:
                    kind = "an equate" if name in self.equs else "a data label"
                    self._diag(ln, col, f"label '{name}' is already defined as {kind} at line "
                               f"{prev.line}", len(name))


# ---- public API ---------------------------------------------------------------------------------


def assemble(text: str, filename: str = "<string>", machine: Machine | None = None) -> ObjectFile:
    """Assemble `.d1s` text into an object; raise `SourceError` listing every error found.

    The machine is, in order: the text's own `.machine` directive (a `machine` argument that
    differs from it structurally is an error, unless only in its chip grid: then the text is
    assembled for `machine`, copies of the directive's chip), the `machine` argument, or the
    default machine.
    """
    if not isinstance(text, str):
        raise D1Error(f"the assembly text must be a str, not {type(text).__name__}"
                      + (" (decode the bytes first)" if isinstance(text, bytes | bytearray)
                         else ""))
    if not isinstance(filename, str):
        hint = " (pass the machine as machine=...)" if isinstance(filename, Machine) else ""
        raise D1Error(f"the file name of the assembly text must be a str, not "
                      f"{type(filename).__name__}{hint}")
    if machine is not None:
        machine = machine_or_default(machine)   # a clear error for a name or anything else
    # Equates may refer forward to each other (MAX_EQU_DEPTH deep); each level is a few Python
    # frames, more than the default recursion limit allows.
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 12 * MAX_EQU_DEPTH + 2000))
    try:
        return Assembler(text, filename, machine).run()
    finally:
        sys.setrecursionlimit(old)


def assemble_file(path: str | Path, machine: Machine | None = None) -> ObjectFile:
    """Assemble a `.d1s` file (its path is the file name in diagnostics and the line table),
    read as every d1 tool reads a source (d1isa.files.read_text: a regular file, capped)."""
    return assemble(read_text(path), str(path), machine)
