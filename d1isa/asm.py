"""The assembler: `.d1s` text to an `ObjectFile` (docs/ASSEMBLY.md describes the language).

Pass 1 reads every line once. Most instructions are complete after it: their words go straight
into their section's word list. An operand that names something not yet known (a label, a data
address, a node symbol) leaves a pending item holding its parsed expression. Pass 2 resolves
selectors, lays out data with one global location counter, resolves each section's labels, and
re-evaluates pending items per node only in sections whose expressions use @x/@y/@id. Identical
code blocks (words and line rows) are shared, and the result is an `ObjectFile` with its line
table, sources, symbols and tensor layouts.

The line format is regular enough that a hand-written scanner is an order of magnitude faster
than a grammar engine, and the compiler feeds the assembler hundreds of thousands of lines, so this
module does not use Lark (the DSL parser does). Every error is a located `Diagnostic`; they are all
collected and raised together as one `SourceError`.
"""

from __future__ import annotations

import bisect
import difflib
import gc
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from d1isa import isa
from d1isa.errors import D1Error, Diagnostic, MachineError, ObjectFormatError, SourceError
from d1isa.machine import Machine, default_machine, load_machine
from d1isa.objfile import (
    DTYPE_BYTES,
    LINE_COLS,
    ROLES,
    SYMBOL_KINDS,
    CodeBlock,
    DataInit,
    ObjectFile,
    Symbol,
    TensorLayout,
    TensorPiece,
    _validate_tensor,
)

PRODUCER = "d1 asm"
MAX_ERRORS = 100

# Operand kinds. The first three index the register tables (scalar, vector, accumulator).
K_X, K_V, K_A, K_INT, K_MEM, K_FLOAT, K_LABEL, K_DIR, K_WORD, K_MEMIMM = range(10)
_KIND_OF = {"x": K_X, "v": K_V, "a": K_A, "int": K_INT, "float": K_FLOAT, "label": K_LABEL,
            "dir": K_DIR}
_REG_FILE = ("scalar", "vector", "accumulator")
_REG_PREFIX = ("r", "v", "a")
_REG_COUNT_KEY = ("scalar_regs", "vector_regs", "accumulators")
_FIELD_NOUN = {"imm": "immediate", "uimm": "unsigned immediate", "off": "branch offset",
               "shamt": "shift amount", "lane": "lane", "sa": "stride sa", "sb": "stride sb",
               "dir": "direction", "dir2": "direction", "fimm": "fp32 immediate"}
_RS1 = isa.FIELDS["rs1"]
_RS1_LO = _RS1.lo
_IMM = isa.FIELDS["imm"]
_DIRS = {"N": 0, "E": 1, "S": 2, "W": 3, "n": 0, "e": 1, "s": 2, "w": 3}
_DIR_NAMES = {"N": 0, "E": 1, "S": 2, "W": 3}
_DIR_BITS = {f.lo: {k: v << f.lo for k, v in _DIRS.items()}
             for f in (isa.FIELDS["dir"], isa.FIELDS["dir2"])}
_U64 = (1 << 64) - 1
_INT32 = (-(1 << 31), (1 << 31) - 1)

SELECTORS = ("all", "rest", "node", "row", "col", "rect", "list")
_SELECTOR_ARGS = {"all": 0, "rest": 0, "node": 2, "row": 1, "col": 1, "rect": 4}
_NODE_SYMBOLS = ("x", "y", "id")          # per node
_MACHINE_SYMBOLS = ("w", "h", "n", "sram")  # whole machine

# ---- instruction plans --------------------------------------------------------------------------


class _Plan:
    """How to encode one mnemonic: fixed bits, and per operand (kind, lo, mask, min, max, name)."""

    __slots__ = ("mnemonic", "match", "ops", "syntax", "n", "fast")

    def __init__(self, ins: isa.Instruction) -> None:
        self.mnemonic = ins.mnemonic
        self.match = ins.match
        self.syntax = ins.syntax
        ops = []
        for op in ins.operands:
            if op.startswith("["):
                ops.append((K_MEM, _RS1.lo, 0, 0, 0, "mem"))
                continue
            fname, kind = isa.OPERANDS[op]
            f = isa.FIELDS[fname]
            lo, hi = f.value_range()
            ops.append((_KIND_OF[kind], f.lo, (1 << f.width) - 1, lo, hi, fname))
        self.ops = tuple(ops)
        self.n = len(ops)
        self.fast: Any = None


# Register operand positions used by the fast encoders: (register file, field lo).
_FAST_SLOTS: list[tuple[int, int]] = []


def _fast_slot(kind: int, lo: int) -> int:
    if (kind, lo) not in _FAST_SLOTS:
        _FAST_SLOTS.append((kind, lo))
    return _FAST_SLOTS.index((kind, lo))


def _shifted(table: dict[str, int], lo: int) -> dict[str, int]:
    """name -> value << lo, also keyed ' name' (the usual spelling after a comma)."""
    out = {k: v << lo for k, v in table.items()}
    out.update({" " + k: v << lo for k, v in table.items()})
    return out


def _fast_mem(t: str, x: dict[str, int]) -> int:
    """rs1/imm bits of a plain [rN], [rN+k] or [rN-k]; ValueError/KeyError for anything else.

    `x` maps register names to their number already shifted into the rs1 field."""
    t = t.strip()
    if t[0] != "[" or t[-1] != "]":
        raise ValueError
    inner = t[1:-1]
    r = x.get(inner)
    if r is not None:
        return r
    j = inner.find("+")
    if j < 0:
        j = inner.find("-")
        if j < 0:
            raise ValueError
    v = int(inner[j:], 0)
    if not -0x80000000 <= v <= 0x7FFFFFFF:
        raise ValueError
    return x[inner[:j].strip()] | (v & 0xFFFFFFFF)


def _fast_f32(t: str) -> int:
    """Bits of a plain float literal operand; ValueError for anything unusual."""
    t = t.strip()
    if t[:2] in ("0x", "0X"):
        v = int(t, 16)
        if v > 0xFFFFFFFF:
            raise ValueError
        return v
    return f32_bits_checked(float(t))


def _make_fast(plan: _Plan) -> Any:
    """Generate a straight-line encoder for the common operand spellings of one mnemonic.

    It raises KeyError/ValueError/OverflowError on anything else (labels, expressions, mistakes),
    and the caller falls back to the general encoder, which also produces the diagnostics.
    """
    body, terms = [], [str(plan.match)]
    for k, (kind, lo, mask, vmin, vmax, _) in enumerate(plan.ops):
        if kind <= K_A:
            terms.append(f"R[{_fast_slot(kind, lo)}][ops[{k}]]")
        elif kind == K_INT or kind == K_LABEL:
            if kind == K_LABEL:
                body.append(f"    if ops[{k}].strip()[:1] not in '+-': raise ValueError")
            body.append(f"    v{k} = int(ops[{k}], 0)")
            body.append(f"    if v{k} < {vmin} or v{k} > {vmax}: raise ValueError")
            terms.append(f"((v{k} & {mask}) << {lo})")
        elif kind == K_DIR:
            terms.append(f"_DIR_BITS[{lo}][ops[{k}].strip()]")
        elif kind == K_MEM:
            terms.append(f"_fast_mem(ops[{k}], R[{_fast_slot(K_X, _RS1_LO)}])")
        else:   # K_FLOAT
            terms.append(f"(_fast_f32(ops[{k}]) << {lo})")
    body.append("    return " + " | ".join(terms))
    src = "def fast(ops, R):\n" + "\n".join(body) + "\n"
    env = {"_DIR_BITS": _DIR_BITS, "_fast_mem": _fast_mem, "_fast_f32": _fast_f32}
    exec(compile(src, f"<d1 asm encoder for {plan.mnemonic}>", "exec"), env)
    return env["fast"]


class _Pseudo:
    """A pseudo-instruction: a real mnemonic and an operand template (ints index the operands)."""

    __slots__ = ("mnemonic", "target", "template", "syntax", "n")

    def __init__(self, mnemonic: str, target: str, template: tuple, syntax: str) -> None:
        self.mnemonic = mnemonic
        self.target = target
        self.template = template
        self.syntax = syntax
        self.n = sum(1 for t in template if isinstance(t, int))


PLANS: dict[str, _Plan | _Pseudo] = {i.mnemonic: _Plan(i) for i in isa.INSTRUCTIONS}
PSEUDOS = (
    _Pseudo("li", "li", (0, 1), "li rd, imm64"),
    _Pseudo("la", "li", (0, 1), "la rd, label"),
    _Pseudo("mv", "addi", (0, 1, "0"), "mv rd, rs"),
    _Pseudo("not", "xori", (0, 1, "-1"), "not rd, rs"),
    _Pseudo("neg", "sub", (0, "r0", 1), "neg rd, rs"),
    _Pseudo("j", "jal", ("r0", 0), "j target"),
    _Pseudo("call", "jal", ("ra", 0), "call target"),
    _Pseudo("ret", "jalr", ("r0", "ra", "0"), "ret"),
    _Pseudo("beqz", "beq", (0, "r0", 1), "beqz rs, target"),
    _Pseudo("bnez", "bne", (0, "r0", 1), "bnez rs, target"),
    _Pseudo("bgt", "blt", (1, 0, 2), "bgt rs1, rs2, target"),
    _Pseudo("ble", "bge", (1, 0, 2), "ble rs1, rs2, target"),
    _Pseudo("bgtu", "bltu", (1, 0, 2), "bgtu rs1, rs2, target"),
    _Pseudo("bleu", "bgeu", (1, 0, 2), "bleu rs1, rs2, target"),
)
PLANS.update({p.mnemonic: p for p in PSEUDOS})

DIRECTIVES = (".machine", ".text", ".data", ".equ", ".org", ".align", ".zero", ".i8", ".i16",
              ".i32", ".i64", ".f32", ".bf16", ".word", ".tensor", ".piece", ".file", ".loc",
              ".source", ".symbol", ".meta")
_INT_WIDTH = {".i8": 1, ".i16": 2, ".i32": 4, ".i64": 8}

# ---- lexical helpers ----------------------------------------------------------------------------

_COMMENT_RE = re.compile(r"[#;]")
_LABEL_RE = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*):")
_ASSIGN_RE = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*)\s*=(?!=)")
_NAME_RE = re.compile(r"[A-Za-z_.$][A-Za-z0-9_.$]*\Z")
_MEM_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*([+-].*)?\Z", re.S)
_REGLIKE_RE = re.compile(r"(?:[rRvVaA][0-9]+|zero|sp|ra|ZERO|SP|RA)\Z")
_EXPLICIT_LINES_RE = re.compile(r"^[ \t]*\.(?:file|loc|source)\b", re.M | re.I)
_EXPLICIT_SYMBOLS_RE = re.compile(r"^[ \t]*\.symbol\b", re.M | re.I)
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<name>[A-Za-z_.$][A-Za-z0-9_.$]*)"
    r"|(?P<at>@[A-Za-z0-9_]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<op><<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!()<>?:,\[\]=]))")
_BINARY = {"||": 2, "&&": 3, "|": 4, "^": 5, "&": 6, "==": 7, "!=": 7, "<": 8, "<=": 8, ">": 8,
           ">=": 8, "<<": 9, ">>": 9, "+": 10, "-": 10, "*": 11, "/": 11, "%": 11}
_JSON = json.JSONDecoder()


def quote(text: str) -> str:
    """`text` as a .d1s string literal (JSON syntax), for `.file`, `.source`, names."""
    return json.dumps(text)


def is_plain_name(name: str) -> bool:
    """True if `name` can be written bare (not quoted) where the syntax allows a name."""
    return bool(_NAME_RE.match(name)) and not _REGLIKE_RE.match(name)


def _unquoted(text: str):
    """(index, char) for every character outside double-quoted strings (backslash escapes)."""
    in_str = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        else:
            yield i, c
        i += 1


def _strip_comment(line: str) -> str:
    """The line without its comment, honouring double-quoted strings with backslash escapes."""
    if '"' not in line:
        m = _COMMENT_RE.search(line)
        return line[:m.start()] if m else line
    for i, c in _unquoted(line):
        if c == "#" or c == ";":
            return line[:i]
    return line


def _split_top(text: str) -> list[str]:
    """Split at commas outside parentheses, brackets and strings."""
    parts, depth, start = [], 0, 0
    for i, c in _unquoted(text):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def f32_bits_checked(x: float) -> int:
    """IEEE-754 single bits of x; OverflowError if x is finite but beyond the fp32 range."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_from_f32_bits(u: int) -> int:
    """Round fp32 bits to bf16 bits, nearest even (docs/ISA.md); a NaN becomes 0x7fc0."""
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x007FFFFF):
        return 0x7FC0
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


# ---- errors used inside the assembler ---------------------------------------------------------


class _Err(Exception):
    """A located error on the line being read (1-based column), or on another `line`."""

    def __init__(self, msg: str, col: int, width: int = 1, line: int | None = None) -> None:
        super().__init__(msg)
        self.msg, self.col, self.width, self.line = msg, col, max(width, 1), line


class _XErr(Exception):
    """An error inside an expression: at `pos` (0-based) of its text, or at an absolute place."""

    def __init__(self, msg: str, pos: int = 0, width: int = 1, line: int | None = None,
                 col: int | None = None, transient: bool = False) -> None:
        super().__init__(msg)
        self.msg, self.pos, self.width = msg, pos, max(width, 1)
        self.line, self.col, self.transient = line, col, transient


class _NodeDep(Exception):
    """An expression needs @x, @y or @id and no node is being assembled."""


class _Later(Exception):
    """Pass 1 cannot evaluate this yet (a name defined later, or a data address)."""


class _Silent(Exception):
    """An error already reported elsewhere (a broken equate used again)."""


class _Stop(Exception):
    """Too many errors: stop reading."""


# ---- expressions ----------------------------------------------------------------------------


def _tokenize(s: str) -> list[tuple[str, str, int]]:
    out = []
    pos, n = 0, len(s)
    match = _TOKEN_RE.match
    while True:
        m = match(s, pos)
        if m is None:
            rest = s[pos:].lstrip()
            if rest:
                p = n - len(rest)
                raise _XErr(f"unexpected character '{s[p]}'", p)
            break
        k = m.lastgroup
        out.append((k, m.group(k), m.start(k)))
        pos = m.end()
    out.append(("end", "", len(s.rstrip())))
    return out


def _parse_int(text: str, pos: int) -> int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text.isdigit():
        return int(text, 10)   # leading zeros: still decimal
    if any(c in text for c in ".eE") and text[:2].lower() not in ("0x", "0b", "0o"):
        raise _XErr(f"'{text}' is not an integer (a float is allowed only as an fp32 value)",
                    pos, len(text))
    raise _XErr(f"bad number '{text}'", pos, len(text))


def _binop(op: str, a: int, b: int, pos: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/" or op == "%":
        if b == 0:
            raise _XErr("division by zero", pos, 1)
        q = abs(a) // abs(b)
        if (a < 0) != (b < 0):
            q = -q
        return q if op == "/" else a - b * q
    if op == "<<" or op == ">>":
        if not 0 <= b <= 4096:
            raise _XErr(f"shift count {b} is out of range 0..4096", pos, 2)
        return a << b if op == "<<" else a >> b
    if op == "&":
        return a & b
    if op == "|":
        return a | b
    if op == "^":
        return a ^ b
    if op == "==":
        return int(a == b)
    if op == "!=":
        return int(a != b)
    if op == "<":
        return int(a < b)
    if op == "<=":
        return int(a <= b)
    if op == ">":
        return int(a > b)
    if op == ">=":
        return int(a >= b)
    if op == "&&":
        return int(bool(a) and bool(b))
    return int(bool(a) or bool(b))    # "||"


def _unop(op: str, v: int) -> int:
    if op == "-":
        return -v
    if op == "~":
        return ~v
    if op == "!":
        return int(not v)
    return v


class _ExprParser:
    """Precedence climbing over a token list; ASTs are tuples, constants are folded.

    ('n', value) | ('id', name, pos) | ('@', index, pos) | ('u', op, a) | ('b', op, a, b, pos) |
    ('?', cond, a, b). Machine symbols (@w, @h, @n, @sram) fold to constants.
    """

    __slots__ = ("toks", "i", "consts")

    def __init__(self, toks: list[tuple[str, str, int]], consts: dict[str, int]) -> None:
        self.toks, self.i, self.consts = toks, 0, consts

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        if t[0] != "end":
            self.i += 1
        return t

    def at_end(self) -> bool:
        return self.toks[self.i][0] == "end"

    def accept(self, op: str) -> bool:
        k, t, _ = self.toks[self.i]
        if k == "op" and t == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str, what: str | None = None) -> None:
        if not self.accept(op):
            k, t, pos = self.toks[self.i]
            found = "the end of the line" if k == "end" else f"'{t}'"
            raise _XErr(f"expected '{op}'{' ' + what if what else ''}, found {found}", pos,
                        max(len(t), 1))

    def expect_end(self) -> None:
        k, t, pos = self.toks[self.i]
        if k != "end":
            raise _XErr(f"unexpected '{t}'", pos, len(t))

    def expr(self, min_prec: int = 1) -> tuple:
        left = self.unary()
        toks = self.toks
        while True:
            k, t, pos = toks[self.i]
            if k != "op":
                return left
            if t == "?":
                if min_prec > 1:
                    return left
                self.i += 1
                a = self.expr(1)
                self.expect(":", "in 'c ? a : b'")
                b = self.expr(1)
                left = a if left[0] == "n" and left[1] else b if left[0] == "n" else \
                    ("?", left, a, b)
                continue
            p = _BINARY.get(t)
            if p is None or p < min_prec:
                return left
            self.i += 1
            right = self.expr(p + 1)
            if left[0] == "n" and right[0] == "n":
                left = ("n", _binop(t, left[1], right[1], pos))
            else:
                left = ("b", t, left, right, pos)

    def unary(self) -> tuple:
        k, t, pos = self.toks[self.i]
        if k == "op":
            if t in ("-", "~", "!", "+"):
                self.i += 1
                a = self.unary()
                return ("n", _unop(t, a[1])) if a[0] == "n" else ("u", t, a)
            if t == "(":
                self.i += 1
                e = self.expr(1)
                self.expect(")")
                return e
        elif k == "num":
            self.i += 1
            return ("n", _parse_int(t, pos))
        elif k == "name":
            self.i += 1
            return ("id", t, pos)
        elif k == "at":
            self.i += 1
            sym = t[1:]
            if sym in _NODE_SYMBOLS:
                return ("@", _NODE_SYMBOLS.index(sym), pos)
            if sym in self.consts:
                return ("n", self.consts[sym])
            raise _XErr(f"unknown node symbol '{t}' (known: @x @y @id @w @h @n @sram)", pos,
                        len(t))
        elif k == "end":
            raise _XErr("expected an expression", pos)
        raise _XErr(f"unexpected '{t}' in an expression", pos, len(t))


def _eval(node: tuple, ctx: _Ctx) -> int:
    t = node[0]
    if t == "n":
        return node[1]
    if t == "id":
        return ctx.lookup(node[1], node[2])
    if t == "@":
        nd = ctx.node
        if nd is None:
            raise _NodeDep()
        return nd[node[1]]
    if t == "u":
        return _unop(node[1], _eval(node[2], ctx))
    if t == "b":
        op = node[1]
        a = _eval(node[2], ctx)
        if op == "&&":
            return int(bool(a) and bool(_eval(node[3], ctx)))
        if op == "||":
            return int(bool(a) or bool(_eval(node[3], ctx)))
        return _binop(op, a, _eval(node[3], ctx), node[4])
    return _eval(node[2] if _eval(node[1], ctx) else node[3], ctx)


def _located(ast: tuple, ctx: _Ctx, line: int, col: int) -> int:
    """Evaluate; an error inside the expression is re-raised at its absolute place."""
    try:
        return _eval(ast, ctx)
    except _XErr as e:
        if e.line is None:
            e.line, e.col = line, col + e.pos
        raise


class _Ctx:
    """What names mean while evaluating: a section's code labels, the node, direction names."""

    __slots__ = ("asm", "labels", "node", "names", "hit", "tentative")

    def __init__(self, asm: Assembler, labels: dict[str, int] | None = None,
                 node: tuple[int, int, int] | None = None, tentative: bool = False) -> None:
        self.asm, self.labels, self.node = asm, labels, node
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
        return self.asm._global_value(name, pos, self)


# ---- pass-1 records -------------------------------------------------------------------------

_UNSET: Any = object()


class _Equ:
    __slots__ = ("name", "ast", "line", "col", "value", "busy", "failed", "nodedep")

    def __init__(self, name: str, ast: tuple, line: int, col: int) -> None:
        self.name, self.ast, self.line, self.col = name, ast, line, col
        self.value: int | None = ast[1] if ast[0] == "n" else None
        self.busy = self.failed = self.nodedep = False


class _DataLabel:
    __slots__ = ("name", "line", "col", "addr")

    def __init__(self, name: str, line: int, col: int) -> None:
        self.name, self.line, self.col, self.addr = name, line, col, None


class _Selector:
    __slots__ = ("kind", "args", "line", "col")

    def __init__(self, kind: str, args: list[tuple[tuple, int]], line: int, col: int) -> None:
        self.kind, self.args, self.line, self.col = kind, args, line, col


class _Pend:
    """An item of a code section that pass 2 completes: `todo` operands, or an `li`/`la`."""

    __slots__ = ("idx", "base", "todo", "line", "li", "size")

    def __init__(self, idx: int, base: int, todo: list, line: int, li: tuple | None = None
                 ) -> None:
        self.idx, self.base, self.todo, self.line, self.li = idx, base, todo, line, li
        self.size = 1


class _TextSec:
    __slots__ = ("sel", "words", "locs", "pend", "labels", "label_pos", "nodes", "block_ids",
                 "has_li")

    def __init__(self, sel: _Selector) -> None:
        self.sel = sel
        self.words: list[int] = []
        self.locs: list[int] = []
        self.pend: list[_Pend] = []
        self.labels: dict[str, int] = {}
        self.label_pos: dict[str, tuple[int, int]] = {}
        self.nodes: list[int] = []
        self.block_ids: list[int] = []
        self.has_li = False


class _DataSec:
    __slots__ = ("sel", "entries", "nodes", "runs")

    def __init__(self, sel: _Selector) -> None:
        self.sel = sel
        self.entries: list[tuple] = []
        self.nodes: list[int] = []
        self.runs: list[_Run] = []


class _Run:
    """Contiguous bytes of one data section: constant bytes plus node-dependent patches."""

    __slots__ = ("addr", "chunks", "size", "line")

    def __init__(self, addr: int, line: int) -> None:
        self.addr, self.size, self.line = addr, 0, line
        self.chunks: list[tuple] = []


class _TensorDecl:
    __slots__ = ("name", "role", "dtype", "dims", "line", "col", "pieces")

    def __init__(self, name: str, role: str, dtype: str, dims: list, line: int, col: int) -> None:
        self.name, self.role, self.dtype, self.dims = name, role, dtype, dims
        self.line, self.col = line, col
        self.pieces: list[_PieceDecl] = []


class _PieceDecl:
    __slots__ = ("name", "where", "addr", "opts", "line", "col", "name_col")

    def __init__(self, name: str, where: Any, addr: tuple, opts: dict, line: int, col: int,
                 name_col: int) -> None:
        self.name, self.where, self.addr, self.opts = name, where, addr, opts
        self.line, self.col, self.name_col = line, col, name_col


# ---- the assembler ----------------------------------------------------------------------------


class Assembler:
    """One assembly of one text. Use `assemble()`; this class holds the passes' state."""

    def __init__(self, text: str, filename: str, machine: Machine | None) -> None:
        self.text = text
        self.filename = filename
        self.lines = text.split("\n")
        if "\r" in text:
            self.lines = [ln[:-1] if ln.endswith("\r") else ln for ln in self.lines]
        if self.lines and self.lines[0].startswith("\ufeff"):
            self.lines[0] = " " + self.lines[0][1:]
        self.diags: list[Diagnostic] = []
        self.seen: set[tuple[int, int, str]] = set()
        self.requested = machine
        self.machine = machine
        low = text.lower()
        self.explicit_lines = (any(k in low for k in (".loc", ".file", ".source"))
                               and bool(_EXPLICIT_LINES_RE.search(text)))
        self.explicit_symbols = ".symbol" in low and bool(_EXPLICIT_SYMBOLS_RE.search(text))
        self.equs: dict[str, _Equ] = {}
        self.data_labels: dict[str, _DataLabel] = {}
        self.code_label_lines: dict[str, int] = {}
        self.defs: list[tuple] = []
        self.texts: list[_TextSec] = []
        self.datas: list[_DataSec] = []
        self.cur: _TextSec | _DataSec | None = None
        self.loc_rows: list[tuple[int, ...]] = [(-1,) * LINE_COLS]
        self.loc_index: dict[tuple[int, ...], int] = {self.loc_rows[0]: 0}
        self.cur_loc = 0
        self.files: list[str] = []
        self.sources: dict[str, str] = {}
        self.meta: dict[str, Any] | None = None
        self.meta_line = 0
        self.symbols: list[Symbol] = []
        self.tensors: list[_TensorDecl] = []
        self.pieces: list[_PieceDecl] = []
        self.expr_cache: dict[str, tuple] = {}
        self.line_cache: dict[str, tuple] = {}
        self.machine_line = 0

    # ---- diagnostics ----------------------------------------------------------------------

    def _diag(self, line: int, col: int, msg: str, width: int = 1) -> None:
        key = (line, col, msg)
        if key in self.seen:
            return
        self.seen.add(key)
        src = self.lines[line - 1] if 1 <= line <= len(self.lines) else None
        self.diags.append(Diagnostic(self.filename, line, max(col, 1), msg, src, width=width))
        if len(self.diags) >= MAX_ERRORS:
            raise _Stop()

    def _report(self, e: Exception, line: int, col: int) -> None:
        """Report an _Err/_XErr raised while handling `line`; `col` locates a relative _XErr."""
        if isinstance(e, _Err):
            self._diag(e.line or line, e.col, e.msg, e.width)
        elif isinstance(e, _XErr):
            if e.line is not None:
                self._diag(e.line, e.col or 1, e.msg, e.width)
            else:
                self._diag(line, col + e.pos, e.msg, e.width)

    # ---- entry ----------------------------------------------------------------------------

    def run(self) -> ObjectFile:
        # Pass 1 allocates a few small acyclic objects per line; the cyclic collector would
        # rescan the growing heap again and again (20-30% of the time on big inputs).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._read_machine()
            self._setup_machine()
            self._pass1()
            self._pass2()
        except _Stop:
            pass
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.diags:
            self.diags.sort(key=lambda d: (d.line, d.col))
            if len(self.diags) >= MAX_ERRORS:
                self.diags.append(Diagnostic(self.filename, self.diags[-1].line, 1,
                                             f"too many errors ({MAX_ERRORS}); stopping",
                                             severity="note"))
            raise SourceError(self.diags)
        return self.obj

    # ---- the machine ----------------------------------------------------------------------

    def _read_machine(self) -> None:
        """A leading `.machine` directive picks the machine (it must be the first statement)."""
        for i, raw in enumerate(self.lines):
            s = _strip_comment(raw).strip()
            if not s:
                continue
            if s[:8].lower() != ".machine" or (len(s) > 8 and not s[8].isspace()):
                break
            self.machine_line = i + 1
            arg = s[8:].strip()
            col = raw.find(arg) + 1 if arg else len(raw) + 1
            try:
                if arg.startswith("{"):
                    try:
                        params = json.loads(arg)
                    except (json.JSONDecodeError, RecursionError) as e:
                        raise _Err(f"bad machine JSON: {getattr(e, 'msg', e)}", col,
                                   len(arg)) from None
                    if not isinstance(params, dict):
                        raise _Err("the .machine JSON must be an object", col, len(arg))
                    m = Machine.from_dict(params)
                elif arg:
                    m = load_machine(arg)
                else:
                    raise _Err(".machine needs a machine name or its JSON parameters", col)
            except MachineError as e:
                self._diag(i + 1, col, f"bad machine: {e}", len(arg))
                break
            except _Err as e:
                self._report(e, i + 1, col)
                break
            if self.requested is not None:
                diff = m.structural_differences(self.requested)
                if diff:
                    self._diag(i + 1, col, "this file was assembled for another machine: "
                               f"{', '.join(diff)} differ from the requested machine "
                               f"'{self.requested.name}'", len(arg))
            self.machine = m
            break

    def _setup_machine(self) -> None:
        if self.machine is None:
            self.machine = default_machine()
        m = self.machine
        x = {f"r{i}": i for i in range(m.scalar_regs)}
        x["zero"] = 0
        if m.scalar_regs > 30:
            x["sp"] = 30
        if m.scalar_regs > 31:
            x["ra"] = 31
        v = {f"v{i}": i for i in range(m.vector_regs)}
        a = {f"a{i}": i for i in range(m.accumulators)}
        self.regs = (x, v, a)
        self.fast_regs = [_shifted(self.regs[kind], lo) for kind, lo in _FAST_SLOTS]
        self.consts = {"w": m.width, "h": m.height, "n": m.n_live, "sram": m.sram_bytes}
        self.sram = m.sram_bytes
        self.pass1_ctx = _Ctx(self, tentative=True)

    def _reg_slow(self, kind: int, t: str, col: int) -> int:
        """A register operand that is not a plain lowercase name: case, range or class errors."""
        r = self.regs[kind].get(t.lower())
        if r is not None:
            return r
        m = self.machine
        if not t:
            raise _Err(f"missing {_REG_FILE[kind]} register", col)
        tl = t.lower()
        count = getattr(m, _REG_COUNT_KEY[kind])
        prefix = _REG_PREFIX[kind]
        span = f"{prefix}0..{prefix}{count - 1}"
        if tl in ("sp", "ra") and kind == K_X:
            raise _Err(f"'{t}' is r{30 if tl == 'sp' else 31}, but this machine has only "
                       f"{count} scalar registers ({span})", col, len(t))
        for k in range(3):
            if tl in self.regs[k] or (k == K_X and tl in ("sp", "ra")) or (
                    len(tl) > 1 and tl[0] == _REG_PREFIX[k] and tl[1:].isdigit()):
                if k == kind:
                    raise _Err(f"register '{t}' does not exist: this machine has {count} "
                               f"{_REG_FILE[kind]} registers ({span})", col, len(t))
                raise _Err(f"expected a {_REG_FILE[kind]} register ({span}), got the "
                           f"{_REG_FILE[k]} register '{t}'", col, len(t))
        raise _Err(f"expected a {_REG_FILE[kind]} register ({span}), got '{t}'", col, len(t))

    # ---- names and values -----------------------------------------------------------------

    def _parse(self, text: str) -> tuple:
        """Parse one whole expression (cached by its text)."""
        ast = self.expr_cache.get(text)
        if ast is None:
            p = _ExprParser(_tokenize(text), self.consts)
            try:
                ast = p.expr()
            except RecursionError:
                raise _XErr("expression is nested too deeply", 0) from None
            p.expect_end()
            self.expr_cache[text] = ast
        return ast

    def _value(self, text: str) -> int | tuple:
        """An int if `text` is known now (literal or earlier equate), else its parsed AST."""
        ast = self._parse(text)
        if ast[0] == "n":
            return ast[1]
        try:
            return _eval(ast, self.pass1_ctx)
        except (_Later, _NodeDep, _XErr, _Silent):
            return ast

    def _global_value(self, name: str, pos: int, ctx: _Ctx) -> int:
        e = self.equs.get(name)
        if e is not None:
            if ctx.tentative:
                if e.value is None:
                    raise _Later()
                return e.value
            return self._equ_value(e, ctx.node)
        d = self.data_labels.get(name)
        if d is not None:
            if d.addr is None:
                if ctx.tentative:
                    raise _Later()
                raise _XErr(f"data label '{name}' has no address yet: it is placed later, at "
                            f"line {d.line}", pos, len(name), transient=True)
            return d.addr
        if ctx.tentative:
            raise _Later()
        raise _XErr(self._unknown(name, ctx), pos, len(name))

    def _unknown(self, name: str, ctx: _Ctx) -> str:
        if _REGLIKE_RE.match(name):
            return f"'{name}' is a register, not a value here"
        line = self.code_label_lines.get(name)
        if line is not None and (ctx.labels is None or name not in ctx.labels):
            if ctx.labels is None:
                return (f"'{name}' is a code label (line {line}); code labels are visible only "
                        "inside their own .text section")
            return (f"'{name}' is a code label of another .text section (line {line}); code "
                    "labels are visible only inside their own section")
        names = list(self.equs) + list(self.data_labels) + list(ctx.labels or ())
        return f"unknown name '{name}'{_suggest(name, names)}"

    def _equ_value(self, e: _Equ, node: tuple[int, int, int] | None) -> int:
        if e.value is not None:
            return e.value
        if e.failed:
            raise _Silent()
        if e.busy:
            raise _XErr(f"'{e.name}' is defined in terms of itself", line=e.line, col=e.col,
                        width=len(e.name))
        e.busy = True
        try:
            if not e.nodedep:
                try:
                    v = _eval(e.ast, _Ctx(self))
                    e.value = v
                    return v
                except _NodeDep:
                    e.nodedep = True
            if node is None:
                raise _NodeDep()
            return _eval(e.ast, _Ctx(self, None, node))
        except _XErr as x:
            if x.line is None:
                x.line, x.col = e.line, e.col + x.pos
            if not x.transient:
                e.failed = True
                self._diag(x.line, x.col or 1, x.msg, x.width)
                raise _Silent() from None
            raise
        finally:
            e.busy = False

    def _check_name(self, name: str, col: int, what: str) -> None:
        if _REGLIKE_RE.match(name):
            raise _Err(f"'{name}' is a register name and cannot be {what}", col, len(name))

    def _define_global(self, name: str, line: int, col: int, what: str) -> None:
        self._check_name(name, col, what)
        prev = self.equs.get(name) or self.data_labels.get(name)
        if prev is not None:
            kind = "an equate" if name in self.equs else "a data label"
            raise _Err(f"'{name}' is already defined as {kind} at line {prev.line}", col,
                       len(name))

    # ---- pass 1 ---------------------------------------------------------------------------

    def _pass1(self) -> None:
        search = _COMMENT_RE.search
        cache = self.line_cache
        explicit = self.explicit_lines
        plans = PLANS
        fregs = self.fast_regs
        loc_cache: dict[str, int] = {}
        for i, raw in enumerate(self.lines):
            if '"' in raw:
                code = _strip_comment(raw)
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
                if type(sec) is _TextSec:
                    base = code.find(s[0])
                    loc = self.cur_loc if explicit else ((i + 1) << 24) | (base + 1)
                    words, todo = hit[0], hit[1]
                    if todo is not None:
                        if base != hit[3]:
                            shift = base - hit[3]
                            todo = [t[:7] + (t[7] + shift, t[8]) for t in todo]
                        sec.pend.append(_Pend(len(sec.words), words[0], todo, i + 1))
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
            if plain and hit is None and type(self.cur) is _TextSec:
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
            except (_Err, _XErr) as e:
                self._report(e, ln, 1)
            except (_Silent, _Later, _NodeDep):
                pass

    def _statement(self, ln: int, s: str, base: int) -> None:
        if ":" in s:
            while True:
                m = _LABEL_RE.match(s)
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
            self._directive(ln, s, base)
            return
        if "=" in s:
            m = _ASSIGN_RE.match(s)
            if m is not None:
                self._equate(m.group(1), s[m.end():], ln, base + 1, base + m.end())
                return
        self._instruction(ln, s, base)

    def _label(self, name: str, ln: int, col: int) -> None:
        sec = self.cur
        if sec is None:
            raise _Err(f"label '{name}' is outside any .text or .data section", col, len(name))
        if isinstance(sec, _TextSec):
            self._check_name(name, col, "a label")
            if name in sec.labels:
                raise _Err(f"label '{name}' is already defined in this section at line "
                           f"{sec.label_pos[name][0]}", col, len(name))
            sec.labels[name] = len(sec.words)
            sec.label_pos[name] = (ln, col)
            self.code_label_lines.setdefault(name, ln)
            self.defs.append(("code", name, sec))
            return
        self._define_global(name, ln, col, "a label")
        d = _DataLabel(name, ln, col)
        self.data_labels[name] = d
        sec.entries.append(("label", d))
        self.defs.append(("data", name, d))

    def _equate(self, name: str, expr_text: str, ln: int, name_col: int, expr_off: int) -> None:
        self._define_global(name, ln, name_col, "an equate")
        stripped = expr_text.strip()
        if not stripped:
            raise _Err(f"'{name}' needs a value", expr_off + 1)
        col = expr_off + 1 + len(expr_text) - len(expr_text.lstrip())
        try:
            ast = self._parse(stripped)
        except _XErr as x:
            broken = _Equ(name, ("n", 0), ln, col)      # uses stay quiet: reported here
            broken.value, broken.failed = None, True
            self.equs[name] = broken
            raise _Err(x.msg, col + x.pos, x.width) from None
        e = _Equ(name, ast, ln, col)
        if e.value is None:
            try:
                e.value = _eval(ast, self.pass1_ctx)
            except (_Later, _NodeDep, _XErr, _Silent):
                pass
        self.equs[name] = e
        self.defs.append(("equ", name, e))

    # ---- instructions ---------------------------------------------------------------------

    def _text_section(self, col: int, what: str, width: int) -> _TextSec:
        sec = self.cur
        if type(sec) is not _TextSec:
            where = "a .data section" if sec is not None else "any section"
            raise _Err(f"{what} in {where}; code belongs after a '.text SELECTOR' line", col,
                       width)
        return sec

    def _instruction(self, ln: int, s: str, base: int, hit: Any = _UNSET) -> None:
        sec = self.cur
        if hit is _UNSET:
            hit = self.line_cache.get(s)
        if hit is not None and type(sec) is _TextSec:
            self._replay(hit, sec, ln, base)
            return
        parts = s.split(None, 1)
        head = parts[0]
        plan = PLANS.get(head)
        if plan is None:
            plan = PLANS.get(head.lower())
            if plan is None:
                raise _Err(f"unknown instruction '{head}'{_suggest(head.lower(), PLANS)}",
                           base + 1, len(head))
        if type(sec) is not _TextSec:
            sec = self._text_section(base + 1, f"instruction '{head}'", len(head))
        if len(parts) == 1:
            ops: list[str] = []
            rest_off = base + len(s)
        else:
            rest = parts[1]
            rest_off = base + len(s) - len(rest)
            ops = rest.split(",") if ('(' not in rest and '"' not in rest) else _split_top(rest)
        if type(plan) is _Pseudo:
            hit = self._pseudo(plan, ops, base, rest_off, head)
        else:
            if len(ops) != plan.n:
                raise _Err(f"'{plan.mnemonic}' takes {plan.n} operand"
                           f"{'s' if plan.n != 1 else ''} ({plan.syntax}), got {len(ops)}",
                           base + 1, len(head))
            try:
                word = plan.fast(ops, self.fast_regs)
                todo = None
            except (KeyError, ValueError, OverflowError, IndexError):
                word, todo = self._encode(plan, ops, None, rest_off)
            hit = ((word,), todo, None, base)
        self.line_cache[s] = hit
        if type(plan) is _Plan and todo is None:
            sec.words.append(word)
            sec.locs.append((ln << 24) | (base + 1) if not self.explicit_lines else self.cur_loc)
            return
        self._replay(hit, sec, ln, base)

    def _replay(self, hit: tuple, sec: _TextSec, ln: int, base: int) -> None:
        """Append an encoded statement; pending columns move with the statement's indentation."""
        words, todo, li, base0 = hit
        loc = (ln << 24) | (base + 1) if not self.explicit_lines else self.cur_loc
        shift = base - base0
        if li is not None:
            rd, ast, col, width = li
            sec.pend.append(_Pend(len(sec.words), 0, [], ln, li=(rd, ast, col + shift, width)))
            sec.has_li = True
        elif todo is not None:
            if shift:
                todo = [t[:7] + (t[7] + shift, t[8]) for t in todo]
            sec.pend.append(_Pend(len(sec.words), words[0], todo, ln))
        for w in words:
            sec.words.append(w)
            sec.locs.append(loc)

    def _opcol(self, rest_off: int, ops: list[str], k: int, cols: list[int] | None) -> int:
        if cols is not None:
            return cols[k]
        off = rest_off + sum(len(o) + 1 for o in ops[:k])
        t = ops[k]
        return off + len(t) - len(t.lstrip()) + 1

    def _encode(self, plan: _Plan, ops: list[str], cols: list[int] | None, rest_off: int
                ) -> tuple[int, list | None]:
        """Encode what is known now; return the word and the operands left for pass 2."""
        word = plan.match
        todo = None
        regs = self.regs
        for k, (kind, lo, mask, vmin, vmax, fname) in enumerate(plan.ops):
            t = ops[k].strip()
            if kind <= K_A:
                r = regs[kind].get(t)
                if r is None:
                    r = self._reg_slow(kind, t, self._opcol(rest_off, ops, k, cols))
                word |= r << lo
                continue
            if kind == K_INT:
                try:
                    v = int(t, 0)
                except ValueError:
                    col = self._opcol(rest_off, ops, k, cols)
                    if not t:
                        raise _Err(f"missing {_FIELD_NOUN[fname]}", col) from None
                    v = self._value_at(t, col)
                    if type(v) is not int:
                        todo = todo or []
                        todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 0))
                        continue
                if v < vmin or v > vmax:
                    col = self._opcol(rest_off, ops, k, cols)
                    raise _Err(f"{_FIELD_NOUN[fname]} {v} is out of range {vmin}..{vmax}", col,
                               len(t))
                word |= (v & mask) << lo
                continue
            if kind == K_MEM:
                if t[:1] == "[" and t[-1:] == "]":
                    # Fast path: [rN], [rN+const], [rN-const].
                    inner = t[1:-1]
                    r = regs[0].get(inner.strip())
                    if r is not None:
                        word |= r << _RS1_LO
                        continue
                    j = inner.find("+")
                    if j < 0:
                        j = inner.find("-")
                    if j > 0:
                        r = regs[0].get(inner[:j].strip())
                        if r is not None:
                            try:
                                v = int(inner[j:], 0)
                            except ValueError:
                                v = None
                            if v is not None and _INT32[0] <= v <= _INT32[1]:
                                word |= (r << _RS1_LO) | (v & 0xFFFFFFFF)
                                continue
                word, todo = self._mem(t, self._opcol(rest_off, ops, k, cols), word, todo)
                continue
            col = self._opcol(rest_off, ops, k, cols)
            if kind == K_LABEL:
                if not t:
                    raise _Err("missing branch target (a label, or +N / -N instructions)", col)
                if t[0] in "+-":
                    try:
                        v = int(t, 0)
                    except ValueError:
                        v = self._value_at(t, col)
                    if type(v) is int:
                        if v < vmin or v > vmax:
                            raise _Err(f"branch offset {v} is out of range {vmin}..{vmax}",
                                       col, len(t))
                        word |= (v & mask) << lo
                        continue
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 1))
                else:
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, self._ast_at(t, col), col, 0))
            elif kind == K_DIR:
                d = _DIRS.get(t)
                if d is None:
                    if not t:
                        raise _Err("missing direction (N, E, S or W)", col)
                    ast = self._ast_at(t, col)
                    if ast[0] == "n":
                        d = ast[1]
                    else:
                        todo = todo or []
                        todo.append((kind, lo, mask, vmin, vmax, fname, ast, col, 0))
                        continue
                    if not 0 <= d <= 3:
                        raise _Err(f"direction {d} is out of range: write N, E, S or W (0..3)",
                                   col, len(t))
                word |= d << lo
            else:   # K_FLOAT
                v = self._float_at(t, col)
                if type(v) is int:
                    word |= v << lo
                else:
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 0))
        return word, todo

    def _ast_at(self, t: str, col: int) -> tuple:
        try:
            return self._parse(t)
        except _XErr as e:
            raise _Err(e.msg, col + e.pos, e.width) from None

    def _value_at(self, t: str, col: int) -> int | tuple:
        try:
            return self._value(t)
        except _XErr as e:
            raise _Err(e.msg, col + e.pos, e.width) from None

    def _mem(self, t: str, col: int, word: int, todo: list | None) -> tuple[int, list | None]:
        if len(t) < 2 or t[0] != "[" or t[-1] != "]":
            raise _Err(f"expected a memory operand such as [r2+16] or [label], got '{t}'", col,
                       max(len(t), 1))
        inner_raw = t[1:-1]
        inner = inner_raw.strip()
        x = self.regs[K_X]
        r = x.get(inner)
        if r is not None:
            return word | (r << _RS1.lo), todo
        lead = 1 + len(inner_raw) - len(inner_raw.lstrip())
        m = _MEM_RE.match(inner)
        absolute = False    # [expr] with no base register is an address, checked against SRAM
        if m is not None and _REGLIKE_RE.match(m.group(1)):
            r = x.get(m.group(1))
            if r is None:
                r = self._reg_slow(K_X, m.group(1), col + lead)
            imm_text = m.group(2)
            if imm_text is None:
                return word | (r << _RS1.lo), todo
            icol = col + lead + m.start(2)
        else:
            if not inner:
                raise _Err("empty memory operand: write [r2], [r2+16] or [label]", col, len(t))
            r = 0
            absolute = True
            imm_text = inner
            icol = col + lead
        word |= r << _RS1.lo
        try:
            v = int(imm_text, 0)
        except ValueError:
            v = self._value_at(imm_text, icol)
            if type(v) is not int:
                todo = todo or []
                todo.append((K_MEMIMM, 0, 0xFFFFFFFF, _INT32[0], _INT32[1], "imm", v, icol,
                             int(absolute)))
                return word, todo
        self._check_mem(v, absolute, icol, len(imm_text.strip()))
        return word | (v & 0xFFFFFFFF), todo

    def _check_mem(self, v: int, absolute: bool, col: int, width: int) -> None:
        if absolute and not 0 <= v < self.sram:
            raise _Err(f"address {v} is outside SRAM (0..{self.sram - 1})", col, width)
        if not _INT32[0] <= v <= _INT32[1]:
            raise _Err(f"memory offset {v} is out of range {_INT32[0]}..{_INT32[1]}", col, width)

    def _float_at(self, t: str, col: int) -> int | tuple:
        """An fp32 operand: a hex literal is the bit pattern, anything else is a value."""
        if not t:
            raise _Err("missing fp32 value", col)
        tl = t.lower()
        if tl.startswith("0x"):
            try:
                v = int(t, 16)
            except ValueError:
                raise _Err(f"bad hex bit pattern '{t}'", col, len(t)) from None
            if v > 0xFFFFFFFF:
                raise _Err(f"fp32 bit pattern {t} does not fit 32 bits", col, len(t))
            return v
        try:
            x = float(t)
        except ValueError:
            v = self._value_at(t, col)
            if type(v) is not int:
                return v
            x = v
        return self._f32(x, col, len(t))

    def _f32(self, x: float | int, col: int, width: int) -> int:
        try:
            return f32_bits_checked(float(x))
        except OverflowError:
            raise _Err(f"{x} is outside the fp32 range (write inf for infinity)", col,
                       width) from None

    def _pseudo(self, p: _Pseudo, ops: list[str], base: int, rest_off: int, head: str
                ) -> tuple:
        if len(ops) != p.n:
            raise _Err(f"'{p.mnemonic}' takes {p.n} operand{'s' if p.n != 1 else ''} "
                       f"({p.syntax}), got {len(ops)}", base + 1, len(head))
        cols = [self._opcol(rest_off, ops, k, None) for k in range(len(ops))]
        if p.target == "li":
            rd = self.regs[K_X].get(ops[0].strip())
            if rd is None:
                rd = self._reg_slow(K_X, ops[0].strip(), cols[0])
            t = ops[1].strip()
            if not t:
                raise _Err("missing value", cols[1])
            try:
                v = int(t, 0)
            except ValueError:
                v = self._value_at(t, cols[1])
            if type(v) is int:
                return tuple(_li_words(rd, v, 0, cols[1], len(t))), None, None, base
            return (0,), None, (rd, v, cols[1], len(t)), base
        plan = PLANS[p.target]
        new_ops, new_cols = [], []
        for t in p.template:
            if isinstance(t, int):
                new_ops.append(ops[t])
                new_cols.append(cols[t])
            else:
                new_ops.append(t)
                new_cols.append(base + 1)
        if "ra" in new_ops and "ra" not in self.regs[K_X]:
            raise _Err(f"'{p.mnemonic}' uses ra (r31), but this machine has only "
                       f"{self.machine.scalar_regs} scalar registers", base + 1, len(head))
        word, todo = self._encode(plan, new_ops, new_cols, 0)
        return (word,), todo, None, base

    # ---- directives -----------------------------------------------------------------------

    def _directive(self, ln: int, s: str, base: int) -> None:
        parts = s.split(None, 1)
        name = parts[0].lower()
        if len(parts) == 1:
            args, aoff = "", base + len(s)
        else:
            args = parts[1]
            aoff = base + len(s) - len(args)
        handler = _DIRECTIVE_HANDLERS.get(name)
        if handler is None:
            raise _Err(f"unknown directive '{parts[0]}'{_suggest(name, DIRECTIVES)}", base + 1,
                       len(parts[0]))
        try:
            handler(self, ln, args, aoff, base + 1)
        except _XErr as e:
            if e.line is not None:
                raise
            raise _Err(e.msg, aoff + 1 + e.pos, e.width) from None

    def _parser(self, args: str) -> _ExprParser:
        return _ExprParser(_tokenize(args), self.consts)

    def _d_machine(self, ln: int, args: str, aoff: int, col: int) -> None:
        if ln != self.machine_line:
            raise _Err(".machine must be the first statement of the file", col, 8)

    def _d_section(self, ln: int, args: str, aoff: int, col: int, kind: str) -> None:
        p = self._parser(args)
        sel = self._selector(p, ln, aoff, col, allow_list=True)
        p.expect_end()
        if kind == "text":
            sec: _TextSec | _DataSec = _TextSec(sel)
            self.texts.append(sec)
        else:
            sec = _DataSec(sel)
            self.datas.append(sec)
        self.cur = sec
        self.cur_loc = 0

    def _selector(self, p: _ExprParser, ln: int, aoff: int, col: int, allow_list: bool
                  ) -> _Selector:
        k, t, pos = p.peek()
        if k == "end":
            return _Selector("all", [], ln, col)
        kw = t.lower()
        if k != "name" or kw not in SELECTORS or (kw in ("list", "rest") and not allow_list):
            raise _XErr(f"expected a node selector (all, {'rest, ' if allow_list else ''}"
                        f"node X,Y, row Y, col X, rect X0,Y0,X1,Y1"
                        f"{', list X,Y ...' if allow_list else ''}), got '{t}'", pos,
                        max(len(t), 1))
        p.take()
        args: list[tuple[tuple, int]] = []
        if kw == "list":
            while not p.at_end():
                for j in range(2):
                    if j:
                        p.expect(",", "between X and Y")
                    pos2 = p.peek()[2]
                    args.append((p.expr(), aoff + 1 + pos2))
        else:
            for j in range(_SELECTOR_ARGS[kw]):
                if j:
                    p.expect(",")
                pos2 = p.peek()[2]
                args.append((p.expr(), aoff + 1 + pos2))
        return _Selector(kw, args, ln, aoff + 1 + pos)

    def _d_equ(self, ln: int, args: str, aoff: int, col: int) -> None:
        name, comma, rest = args.partition(",")
        name_s = name.strip()
        if not comma or not _NAME_RE.match(name_s):
            raise _Err(".equ expects NAME, EXPRESSION", aoff + 1, max(len(name_s), 1))
        self._equate(name_s, rest, ln, aoff + 1, aoff + len(name) + 1)

    def _data_section(self, col: int, what: str) -> _DataSec:
        sec = self.cur
        if type(sec) is not _DataSec:
            where = "a .text section" if sec is not None else "any section"
            raise _Err(f"{what} in {where}; data belongs after a '.data SELECTOR' line", col,
                       len(what))
        return sec

    def _d_layout(self, ln: int, args: str, aoff: int, col: int, kind: str) -> None:
        sec = self._data_section(col, "." + kind)
        text = args.strip()
        if not text:
            raise _Err(f".{kind} needs a value", aoff + 1)
        ast = self._parse(text)
        sec.entries.append((kind, ast, ln, aoff + 1))

    def _values(self, args: str, aoff: int, col: int, what: str) -> list[tuple[str, int]]:
        if not args.strip():
            raise _Err(f"{what} needs at least one value", col, len(what))
        parts = args.split(",") if ('(' not in args and '"' not in args) else _split_top(args)
        out, off = [], aoff
        for p in parts:
            t = p.strip()
            c = off + len(p) - len(p.lstrip()) + 1
            if not t:
                raise _Err(f"missing value in {what} list", c)
            out.append((t, c))
            off += len(p) + 1
        return out

    def _d_ints(self, ln: int, args: str, aoff: int, col: int, width: int, what: str) -> None:
        sec = self._data_section(col, what)
        lo, hi = -(1 << (8 * width - 1)), (1 << (8 * width)) - 1
        vals: list[int] = []
        pend: list[tuple[int, tuple, int]] = []
        for t, c in self._values(args, aoff, col, what):
            try:
                v = int(t, 0)
            except ValueError:
                v = self._value_at(t, c)
                if type(v) is not int:
                    pend.append((len(vals), v, c))
                    vals.append(0)
                    continue
            if v < lo or v > hi:
                raise _Err(f"{v} does not fit {what} ({lo}..{hi})", c, len(t))
            vals.append(v)
        sec.entries.append(("ints", width, vals, pend, ln))

    def _d_floats(self, ln: int, args: str, aoff: int, col: int, width: int, what: str) -> None:
        sec = self._data_section(col, what)
        vals: list[int] = []
        pend: list[tuple[int, tuple, int]] = []
        for t, c in self._values(args, aoff, col, what):
            if width == 2 and t.lower().startswith("0x"):
                try:
                    v = int(t, 16)
                except ValueError:
                    raise _Err(f"bad hex bit pattern '{t}'", c, len(t)) from None
                if v > 0xFFFF:
                    raise _Err(f"bf16 bit pattern {t} does not fit 16 bits", c, len(t))
                vals.append(v)
                continue
            v = self._float_at(t, c)
            if type(v) is not int:
                pend.append((len(vals), v, c))
                vals.append(0)
                continue
            vals.append(bf16_from_f32_bits(v) if width == 2 else v)
        sec.entries.append(("floats", width, vals, pend, ln))

    def _d_word(self, ln: int, args: str, aoff: int, col: int) -> None:
        sec = self._text_section(col, "'.word'", 5)
        loc = (ln << 24) | col if not self.explicit_lines else self.cur_loc
        for t, c in self._values(args, aoff, col, ".word"):
            try:
                v = int(t, 0)
            except ValueError:
                v = self._value_at(t, c)
                if type(v) is not int:
                    sec.pend.append(_Pend(len(sec.words), 0,
                                          [(K_WORD, 0, _U64, -(1 << 63), _U64, "word", v, c, 0)],
                                          ln))
                    sec.words.append(0)
                    sec.locs.append(loc)
                    continue
            if not -(1 << 63) <= v <= _U64:
                raise _Err(f"{v} does not fit a 64-bit word", c, len(t))
            sec.words.append(v & _U64)
            sec.locs.append(loc)

    def _name_token(self, p: _ExprParser, what: str) -> tuple[str, int]:
        k, t, pos = p.take()
        if k == "name":
            return t, pos
        if k == "str":
            return self._string(t, pos), pos
        raise _XErr(f"expected {what}", pos, max(len(t), 1))

    def _string(self, t: str, pos: int) -> str:
        try:
            v = json.loads(t)
        except json.JSONDecodeError as e:
            raise _XErr(f"bad string literal: {e.msg}", pos + e.pos, 1) from None
        return v

    def _d_tensor(self, ln: int, args: str, aoff: int, col: int) -> None:
        p = self._parser(args)
        name, npos = self._name_token(p, "a tensor name")
        k, role, rpos = p.take()
        if k != "name" or role not in ROLES:
            raise _XErr(f"expected a tensor role ({', '.join(ROLES)}), got '{role}'", rpos,
                        max(len(role), 1))
        k, dtype, dpos = p.take()
        if k != "name" or dtype not in DTYPE_BYTES:
            raise _XErr(f"expected a dtype ({', '.join(DTYPE_BYTES)}), got '{dtype}'", dpos,
                        max(len(dtype), 1))
        p.expect("[", "and the dimensions, e.g. f32[8,8]")
        dims = []
        while True:
            pos = p.peek()[2]
            dims.append((p.expr(), aoff + 1 + pos))
            if not p.accept(","):
                break
        p.expect("]")
        p.expect_end()
        if any(t.name == name for t in self.tensors):
            raise _XErr(f"tensor '{name}' is already declared", npos, len(name))
        self.tensors.append(_TensorDecl(name, role, dtype, dims, ln, aoff + 1 + npos))

    def _d_piece(self, ln: int, args: str, aoff: int, col: int) -> None:
        p = self._parser(args)
        name, npos = self._name_token(p, "a tensor name")
        k, t, pos = p.peek()
        if k == "name" and t.lower() in SELECTORS and t.lower() not in ("list", "rest"):
            where: Any = self._selector(p, ln, aoff, aoff + 1 + pos, allow_list=False)
        else:
            x = (p.expr(), aoff + 1 + pos)
            p.expect(",", "between the node's X and Y")
            pos2 = p.peek()[2]
            where = (x, (p.expr(), aoff + 1 + pos2))
        pos = p.peek()[2]
        addr = (p.expr(), aoff + 1 + pos)
        opts: dict[str, list[tuple[tuple, int]]] = {}
        while not p.at_end():
            k, t, pos = p.take()
            if k != "name" or t not in ("offset", "shape", "strides"):
                raise _XErr(f"expected 'offset', 'shape' or 'strides', got '{t}'", pos,
                            max(len(t), 1))
            if t in opts:
                raise _XErr(f"'{t}' is given twice", pos, len(t))
            vals = []
            while True:
                pos2 = p.peek()[2]
                vals.append((p.expr(), aoff + 1 + pos2))
                if not p.accept(","):
                    break
            opts[t] = vals
        self.pieces.append(_PieceDecl(name, where, addr, opts, ln, col, aoff + 1 + npos))

    def _d_file(self, ln: int, args: str, aoff: int, col: int) -> None:
        p = self._parser(args)
        k, t, pos = p.take()
        if k != "num":
            raise _XErr(".file expects INDEX \"NAME\"", pos, max(len(t), 1))
        idx = _parse_int(t, pos)
        k, s, spos = p.take()
        if k != "str":
            raise _XErr(".file expects INDEX \"NAME\" (a quoted name)", spos, max(len(s), 1))
        fname = self._string(s, spos)
        p.expect_end()
        if idx == len(self.files):
            self.files.append(fname)
        elif 0 <= idx < len(self.files):
            if self.files[idx] != fname:
                raise _XErr(f"file {idx} is already \"{self.files[idx]}\"", pos, len(t))
        else:
            raise _XErr(f"file index {idx} skips ahead: the next file index is "
                        f"{len(self.files)}", pos, len(t))

    def _d_loc(self, ln: int, args: str, aoff: int, col: int) -> None:
        words = args.split()
        if len(words) == 1 and words[0].lower() == "none":
            self.cur_loc = 0
            return
        if len(words) not in (3, 5):
            raise _Err(".loc expects FILE LINE COL [ASMFILE ASMLINE] or 'none'", col, 4)
        vals = []
        off = 0
        for w in words:
            off = args.index(w, off)
            c = aoff + 1 + off
            off += len(w)
            try:
                v = int(w, 0)
            except ValueError:
                raise _Err(f".loc takes integers, got '{w}'", c, len(w)) from None
            if not _INT32[0] <= v <= _INT32[1]:
                raise _Err(f"{v} does not fit 32 bits", c, len(w))
            if len(vals) in (0, 3) and not -1 <= v < len(self.files):
                raise _Err(f"file index {v} has not been declared with .file", c, len(w))
            vals.append(v)
        if len(vals) == 3:
            vals += [-1, -1]
        row = tuple(vals)
        idx = self.loc_index.get(row)
        if idx is None:
            idx = self.loc_index[row] = len(self.loc_rows)
            self.loc_rows.append(row)
        self.cur_loc = idx

    def _d_source(self, ln: int, args: str, aoff: int, col: int) -> None:
        text = args.lstrip()
        off = aoff + len(args) - len(text)
        if text[:1] == '"':
            key, end = self._json_string(text, off)
        else:
            m = re.match(r"[0-9]+", text)
            if m is None:
                raise _Err('.source expects "NAME" "TEXT" or FILE-INDEX "TEXT"', off + 1)
            idx = int(m.group(0))
            if idx >= len(self.files):
                raise _Err(f"file index {idx} has not been declared with .file", off + 1,
                           len(m.group(0)))
            key, end = self.files[idx], m.end()
        rest = text[end:]
        r2 = rest.lstrip()
        off2 = off + end + len(rest) - len(r2)
        if r2[:1] != '"':
            raise _Err(".source needs the text as a quoted string", off2 + 1)
        body, end2 = self._json_string(r2, off2)
        if r2[end2:].strip():
            raise _Err("unexpected text after the .source string", off2 + end2 + 1)
        if key in self.sources:
            raise _Err(f"source \"{key}\" is given twice", off + 1, end)
        self.sources[key] = body

    def _json_string(self, text: str, off: int) -> tuple[str, int]:
        try:
            v, end = _JSON.raw_decode(text)
        except json.JSONDecodeError as e:
            raise _Err(f"bad string literal: {e.msg}", off + 1 + e.pos) from None
        if not isinstance(v, str):
            raise _Err("expected a quoted string", off + 1)
        return v, end

    def _d_symbol(self, ln: int, args: str, aoff: int, col: int) -> None:
        text = args.lstrip()
        off = aoff + len(args) - len(text)
        if text[:1] == '"':
            name, end = self._json_string(text, off)
        else:
            m = re.match(r"\S+", text)
            if m is None:
                raise _Err(".symbol expects NAME KIND VALUE BLOCK", col, 7)
            name, end = m.group(0), m.end()
        words = text[end:].split()
        if len(words) != 3:
            raise _Err(".symbol expects NAME KIND VALUE BLOCK", col, 7)
        kind = words[0]
        if kind not in SYMBOL_KINDS:
            raise _Err(f"symbol kind must be one of {', '.join(SYMBOL_KINDS)}, got '{kind}'",
                       off + 1 + text.index(kind, end), len(kind))
        try:
            value, block = int(words[1], 0), int(words[2], 0)
        except ValueError:
            raise _Err(".symbol VALUE and BLOCK must be integers", col, 7) from None
        self.symbols.append(Symbol(name, kind, value, block))

    def _d_meta(self, ln: int, args: str, aoff: int, col: int) -> None:
        if self.meta is not None:
            raise _Err(f".meta is given twice (first at line {self.meta_line})", col, 5)
        try:
            v = json.loads(args)
        except (json.JSONDecodeError, RecursionError) as e:
            raise _Err(f"bad .meta JSON: {getattr(e, 'msg', e)}", aoff + 1 + getattr(e, "pos", 0)
                       ) from None
        if not isinstance(v, dict):
            raise _Err(".meta must be a JSON object", aoff + 1)
        self.meta, self.meta_line = v, ln

    # ---- pass 2 ---------------------------------------------------------------------------

    def _pass2(self) -> None:
        m = self.machine
        self.node_block = np.full(m.n_live, -1, dtype=np.int32)
        self.blocks: list[CodeBlock] = []
        self.block_index: dict[bytes, int] = {}
        self.data: list[DataInit] = []
        self._check_label_conflicts()
        self._resolve_selectors()
        self._layout_data()
        for sec in self.texts:
            self._assemble_section(sec)
        self._emit_data()
        tensors = self._build_tensors()
        symbols = self._build_symbols() if not self.explicit_symbols else self.symbols
        if self.explicit_lines:
            files, sources = self.files, self.sources
        else:
            files, sources = [self.filename], {self.filename: self.text}
        meta = self.meta if self.meta is not None else {"producer": PRODUCER}
        if self.diags:
            return
        obj = ObjectFile(m, self.blocks, self.node_block, self.data, symbols, tensors,
                         files, sources, meta)
        try:
            obj.validate()
        except ObjectFormatError as e:
            self._diag(1, 1, f"the assembled object is inconsistent: {e}")
        self.obj = obj

    def _check_label_conflicts(self) -> None:
        for sec in self.texts:
            for name, (ln, col) in sec.label_pos.items():
                prev = self.equs.get(name) or self.data_labels.get(name)
                if prev is not None:
                    kind = "an equate" if name in self.equs else "a data label"
                    self._diag(ln, col, f"label '{name}' is already defined as {kind} at line "
                               f"{prev.line}", len(name))

    def _eval_global(self, ast: tuple, col: int, line: int, what: str) -> int | None:
        """Evaluate with globals only (no node, no code labels); report and return None on error."""
        try:
            return _eval(ast, _Ctx(self))
        except _NodeDep:
            self._diag(line, col, f"{what} cannot depend on the node (@x, @y, @id)")
        except (_XErr, _Err) as e:
            self._report(e, line, col)
        except _Silent:
            pass
        return None

    def _node_at(self, x: int | None, y: int | None, line: int, col: int) -> int | None:
        if x is None or y is None:
            return None
        try:
            return self.machine.node_id(x, y)
        except MachineError as e:
            self._diag(line, col, str(e))
            return None

    def _select(self, sel: _Selector, what: str) -> list[int]:
        m = self.machine
        vals = [self._eval_global(a, c, sel.line, f"a {what} selector") for a, c in sel.args]
        kind = sel.kind
        if kind == "all":
            return list(range(m.n_live))
        ids = m.id_grid
        if kind in ("node", "list"):
            out, seen = [], {}
            for i in range(0, len(vals), 2):
                nid = self._node_at(vals[i], vals[i + 1], sel.line, sel.args[i][1])
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

    def _resolve_selectors(self) -> None:
        m = self.machine
        owner = np.full(m.n_live, -1, dtype=np.int64)
        rest: list[_TextSec] = []
        for sec in self.texts:
            if sec.sel.kind == "rest":
                rest.append(sec)
                continue
            sec.nodes = self._select(sec.sel, ".text")
            self._claim(sec, owner)
        for i, sec in enumerate(rest):
            if i:
                self._diag(sec.sel.line, sec.sel.col, "only one '.text rest' section is "
                           f"allowed (the first is at line {rest[0].sel.line})", 4)
                continue
            sec.nodes = [int(n) for n in np.nonzero(owner < 0)[0]]
            owner[sec.nodes] = sec.sel.line
        data_owned = np.zeros(m.n_live, dtype=bool)
        for dsec in self.datas:
            if dsec.sel.kind != "rest":
                dsec.nodes = self._select(dsec.sel, ".data")
                data_owned[dsec.nodes] = True
        for dsec in self.datas:
            if dsec.sel.kind == "rest":
                dsec.nodes = [int(n) for n in np.nonzero(~data_owned)[0]]

    def _claim(self, sec: _TextSec, owner: np.ndarray) -> None:
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

    def _layout_data(self) -> None:
        """Give every data label its address and cut each data section into contiguous runs."""
        counter = 0
        sram = self.sram
        for sec in self.datas:
            run: _Run | None = None
            for e in sec.entries:
                kind = e[0]
                if kind == "label":
                    e[1].addr = counter
                    continue
                if kind in ("ints", "floats"):
                    _, width, vals, pend, ln = e
                    size = width * len(vals)
                    if counter + size > sram:
                        self._diag(ln, 1, f"data runs past the end of SRAM: {counter} + {size} "
                                   f"bytes > {sram}")
                        counter = sram
                        run = None
                        continue
                    if run is None:
                        run = _Run(counter, ln)
                        sec.runs.append(run)
                    run.chunks.append((counter - run.addr, e))
                    run.size += size
                    counter += size
                    continue
                _, ast, ln, col = e
                v = self._eval_global(ast, col, ln, f"the .{kind} value")
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
                            run = _Run(counter, ln)
                            sec.runs.append(run)
                        run.chunks.append((counter - run.addr, ("zero", v)))
                        run.size += v
                        counter += v

    def _chunk_bytes(self, e: tuple, ctx: _Ctx | None) -> bytes:
        """The bytes of one data entry; node-dependent values are evaluated with `ctx`."""
        if e[0] == "zero":
            return bytes(e[1])
        kind, width, vals, pend, ln = e
        if pend:
            vals = list(vals)
            for i, ast, col in pend:
                if ctx is None:
                    raise _NodeDep()
                try:
                    v = _located(ast, ctx, ln, col)
                    if kind == "ints":
                        lo, hi = -(1 << (8 * width - 1)), (1 << (8 * width)) - 1
                        if v < lo or v > hi:
                            raise _XErr(f"{v} does not fit .i{8 * width} ({lo}..{hi})", 0,
                                        line=ln, col=col)
                    else:
                        v = self._f32(v, col, 1)
                        if width == 2:
                            v = bf16_from_f32_bits(v)
                    vals[i] = v
                except _Err as x:
                    x.line = x.line or ln
                    raise
        fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
        mask = (1 << (8 * width)) - 1
        return struct.pack(f"<{len(vals)}{fmt}", *[v & mask for v in vals])

    def _run_bytes(self, run: _Run, ctx: _Ctx | None) -> bytes:
        buf = bytearray(run.size)
        for off, e in run.chunks:
            b = self._chunk_bytes(e, ctx)
            buf[off:off + len(b)] = b
        return bytes(buf)

    def _emit_data(self) -> None:
        m = self.machine
        spans: dict[int, list[tuple[int, int, int]]] = {}
        for sec in self.datas:
            for run in sec.runs:
                try:
                    shared: bytes | None = self._run_bytes(run, None)
                except _NodeDep:
                    shared = None
                except (_Err, _XErr) as e:
                    self._report(e, run.line, 1)
                    continue
                except _Silent:
                    continue
                for nid in sec.nodes:
                    if shared is None:
                        x, y = m.node_xy(nid)
                        try:
                            b = self._run_bytes(run, _Ctx(self, None, (x, y, nid)))
                        except (_Err, _XErr) as e:
                            self._report(e, run.line, 1)
                            break
                        except _Silent:
                            break
                    else:
                        b = shared
                    self.data.append(DataInit(nid, run.addr, b))
                    spans.setdefault(nid, []).append((run.addr, run.addr + run.size, run.line))
        for nid, sp in spans.items():
            if len(sp) < 2:
                continue
            sp.sort()
            for (_, e0, l0), (a1, e1, l1) in zip(sp, sp[1:], strict=False):
                if a1 < e0:
                    x, y = m.node_xy(nid)
                    first, second = sorted((l0, l1))
                    self._diag(second, 1, f"data overlaps the data of line {first} on node "
                               f"({x},{y}) (bytes {a1}..{min(e0, e1) - 1})")
                    break

    # ---- code -----------------------------------------------------------------------------

    def _size_li(self, sec: _TextSec) -> None:
        """Decide each pending li's size (1 or 2 words), then shift labels and items to match."""
        m = self.machine
        dummy = dict.fromkeys(sec.labels, 0)
        inserts = []
        for p in sec.pend:
            if p.li is None:
                continue
            ast = p.li[1]
            ctx = _Ctx(self, dummy, None)
            try:
                v = _eval(ast, ctx)
                p.size = 1 if ctx.hit or _INT32[0] <= v <= _INT32[1] else 2
            except _NodeDep:
                size = 1
                for nid in sec.nodes:
                    x, y = m.node_xy(nid)
                    try:
                        v = _eval(ast, _Ctx(self, dummy, (x, y, nid)))
                    except (_XErr, _Err, _Silent):
                        break
                    if not _INT32[0] <= v <= _INT32[1]:
                        size = 2
                        break
                p.size = size
            except (_XErr, _Err, _Silent):
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

    def _resolve(self, p: _Pend, ctx: _Ctx, words: list[int]) -> None:
        """Complete one pending item into `words`; raises _NodeDep when it needs a node."""
        pc = p.idx
        if p.li is not None:
            rd, ast, col, width = p.li
            ctx.hit = False
            v = _located(ast, ctx, p.line, col)
            if ctx.hit and not _INT32[0] <= v <= _INT32[1]:
                raise _Err(f"li with a code label must fit 32 bits, got {v}", col, width)
            ws = _li_words(rd, v, p.size, col, width)
            words[pc] = ws[0]
            if p.size == 2:
                words[pc + 1] = ws[1]
            return
        word = p.base
        for kind, lo, mask, vmin, vmax, fname, ast, col, flag in p.todo:
            if kind == K_DIR:
                ctx.names = _DIR_NAMES
                try:
                    v = _located(ast, ctx, p.line, col)
                except _XErr as e:
                    if ast[0] == "id" and e.msg.startswith("unknown name"):
                        e.msg = f"expected a direction (N, E, S or W), got '{ast[1]}'"
                    raise
                finally:
                    ctx.names = None
                if not 0 <= v <= 3:
                    raise _Err(f"direction {v} is out of range: write N, E, S or W (0..3)", col)
            else:
                try:
                    v = _located(ast, ctx, p.line, col)
                except _XErr as e:
                    if kind == K_LABEL and e.msg.startswith("unknown name"):
                        e.msg = "unknown label" + e.msg[len("unknown name"):]
                    raise
            if kind == K_LABEL:
                if not flag:
                    v -= pc
                if not vmin <= v <= vmax:
                    raise _Err(f"branch offset {v} is out of range {vmin}..{vmax}", col)
            elif kind == K_FLOAT:
                v = self._f32(v, col, 1)
            elif kind == K_MEMIMM:
                self._check_mem(v, bool(flag), col, 1)
            elif kind == K_WORD:
                if not vmin <= v <= vmax:
                    raise _Err(f"{v} does not fit a 64-bit word", col)
            elif not vmin <= v <= vmax:
                raise _Err(f"{_FIELD_NOUN[fname]} {v} is out of range {vmin}..{vmax}", col)
            word |= (v & mask) << lo
        words[pc] = word

    def _line_rows(self, locs: list[int]) -> np.ndarray:
        n = len(locs)
        if self.explicit_lines:
            table = np.array(self.loc_rows, dtype=np.int32)
            return table[np.array(locs, dtype=np.int64)] if n else np.empty((0, LINE_COLS),
                                                                              np.int32)
        keys = np.array(locs, dtype=np.int64)
        rows = np.zeros((n, LINE_COLS), dtype=np.int32)
        line = (keys >> 24).astype(np.int32)
        rows[:, 1] = line
        rows[:, 2] = (keys & 0xFFFFFF).astype(np.int32)
        rows[:, 4] = line
        return rows

    def _add_block(self, words: list[int], rows: np.ndarray, rows_bytes: bytes) -> int:
        arr = np.array(words, dtype=np.uint64)
        key = arr.tobytes() + rows_bytes
        b = self.block_index.get(key)
        if b is None:
            b = self.block_index[key] = len(self.blocks)
            self.blocks.append(CodeBlock(arr, rows.copy()))
        return b

    def _assemble_section(self, sec: _TextSec) -> None:
        if sec.has_li:
            self._size_li(sec)
        labels = sec.labels
        ctx = _Ctx(self, labels, None)
        words = sec.words
        per_node: list[_Pend] = []
        for p in sec.pend:
            try:
                self._resolve(p, ctx, words)
            except _NodeDep:
                per_node.append(p)
            except (_Err, _XErr) as e:
                self._report(e, p.line, p.todo[0][7] if p.todo else 1)
            except _Silent:
                pass
        rows = self._line_rows(sec.locs)
        rows_bytes = rows.tobytes()
        if not per_node:
            b = self._add_block(words, rows, rows_bytes)
            sec.block_ids.append(b)
            self.node_block[sec.nodes] = b
            return
        m = self.machine
        failed: set[int] = set()        # report a per-node error once, for its first node
        for nid in sec.nodes:
            x, y = m.node_xy(nid)
            ctx = _Ctx(self, labels, (x, y, nid))
            w = list(words)
            ok = True
            for p in per_node:
                try:
                    self._resolve(p, ctx, w)
                except (_Err, _XErr) as e:
                    ok = False
                    if p.idx not in failed:
                        failed.add(p.idx)
                        e.msg += f" (on node ({x},{y}))"
                        self._report(e, p.line, 1)
                except _Silent:
                    ok = False
            if not ok:
                continue
            b = self._add_block(w, rows, rows_bytes)
            if b not in sec.block_ids:
                sec.block_ids.append(b)
            self.node_block[nid] = b

    # ---- tensors and symbols ----------------------------------------------------------------

    def _build_tensors(self) -> list[TensorLayout]:
        m = self.machine
        out: list[TensorLayout] = []
        by_name: dict[str, tuple[TensorLayout, _TensorDecl]] = {}
        for t in self.tensors:
            dims = [self._eval_global(a, c, t.line, "a tensor dimension") for a, c in t.dims]
            if any(d is None for d in dims):
                continue
            shape = tuple(int(d) for d in dims)   # type: ignore[arg-type]
            layout = TensorLayout(t.name, t.dtype, shape, t.role)
            try:
                _validate_tensor(layout, m)
            except ObjectFormatError as e:
                self._diag(t.line, t.col, str(e), len(t.name))
                continue
            out.append(layout)
            by_name[t.name] = (layout, t)
        for pd in self.pieces:
            entry = by_name.get(pd.name)
            if entry is None:
                if not any(t.name == pd.name for t in self.tensors):
                    self._diag(pd.line, pd.name_col, f"no tensor named '{pd.name}' is declared "
                               f"with .tensor{_suggest(pd.name, [t.name for t in self.tensors])}",
                               len(pd.name))
                continue
            layout, decl = entry
            if isinstance(pd.where, _Selector):
                nodes = [(nid, (*m.node_xy(nid), nid)) for nid in self._select(pd.where,
                                                                             ".piece")]
            else:
                (ax, cx), (ay, cy) = pd.where
                x = self._eval_global(ax, cx, pd.line, "a piece's node")
                y = self._eval_global(ay, cy, pd.line, "a piece's node")
                nid = self._node_at(x, y, pd.line, cx)
                nodes = [] if nid is None else [(nid, (x, y, nid))]
            for nid, node in nodes:
                piece = self._piece(pd, layout, nid, node)
                if piece is None:
                    break
                layout.pieces.append(piece)
        for layout, decl in by_name.values():
            if layout.role == "output":
                self._check_cover(layout, decl)
        return out

    def _piece(self, pd: _PieceDecl, layout: TensorLayout, nid: int, node: tuple
               ) -> TensorPiece | None:
        ctx = _Ctx(self, None, node)
        vals: dict[str, list[int]] = {}
        try:
            addr = _located(pd.addr[0], ctx, pd.line, pd.addr[1])
            for key, items in pd.opts.items():
                vals[key] = [_located(a, ctx, pd.line, c) for a, c in items]
        except (_XErr, _Err) as e:
            self._report(e, pd.line, 1)
            return None
        except (_Silent, _NodeDep):
            return None
        nd = len(layout.shape)
        for key, items in vals.items():
            if len(items) != nd:
                self._diag(pd.line, pd.opts[key][0][1], f"'{key}' has {len(items)} values; "
                           f"tensor '{layout.name}' has {nd} dimensions")
                return None
        shape = tuple(vals.get("shape", layout.shape))
        esize = DTYPE_BYTES[layout.dtype]
        if "strides" in vals:
            strides = tuple(vals["strides"])
        else:
            st, acc = [], esize
            for d in reversed(shape):
                st.append(acc)
                acc *= d
            strides = tuple(reversed(st))
        piece = TensorPiece(nid, addr, tuple(vals.get("offset", (0,) * nd)), shape, strides)
        try:
            _validate_tensor(TensorLayout(layout.name, layout.dtype, layout.shape, layout.role,
                                          [piece]), self.machine)
        except ObjectFormatError as e:
            self._diag(pd.line, pd.col, f"{e} (piece on node {self.machine.node_xy(nid)})")
            return None
        return piece

    def _check_cover(self, layout: TensorLayout, decl: _TensorDecl) -> None:
        total = int(np.prod(layout.shape, dtype=object))
        if total > 1 << 24:
            return
        covered = np.zeros(layout.shape, dtype=bool)
        for p in layout.pieces:
            covered[tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))] = True
        if not covered.all():
            first = [int(i) for i in np.argwhere(~covered)[0]]
            self._diag(decl.line, decl.col, f"output tensor '{layout.name}' is not covered by "
                       f"its pieces: element {first} is in none", len(layout.name))

    def _build_symbols(self) -> list[Symbol]:
        out: list[Symbol] = []
        for kind, name, ref in self.defs:
            if name.startswith("."):
                continue
            if kind == "equ":
                try:
                    v = self._equ_value(ref, None)
                except (_NodeDep, _Silent):
                    continue
                except (_XErr, _Err) as e:
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


def _li_words(rd: int, v: int, size: int, col: int, width: int) -> list[int]:
    """movi (and movhi) words that leave exactly the 64-bit value v in rd; size 0 = shortest."""
    if not -(1 << 63) <= v <= _U64:
        raise _Err(f"li value {v} does not fit 64 bits", col, width)
    movi = PLANS["movi"].match | (rd << 50)
    if size != 2 and _INT32[0] <= v <= _INT32[1]:
        return [movi | (v & 0xFFFFFFFF)]
    v &= _U64
    return [movi | (v & 0xFFFFFFFF), PLANS["movhi"].match | (rd << 50) | (v >> 32)]


_DIRECTIVE_HANDLERS: dict[str, Any] = {
    ".machine": Assembler._d_machine,
    ".text": lambda a, ln, args, aoff, col: a._d_section(ln, args, aoff, col, "text"),
    ".data": lambda a, ln, args, aoff, col: a._d_section(ln, args, aoff, col, "data"),
    ".equ": Assembler._d_equ,
    ".org": lambda a, ln, args, aoff, col: a._d_layout(ln, args, aoff, col, "org"),
    ".align": lambda a, ln, args, aoff, col: a._d_layout(ln, args, aoff, col, "align"),
    ".zero": lambda a, ln, args, aoff, col: a._d_layout(ln, args, aoff, col, "zero"),
    ".f32": lambda a, ln, args, aoff, col: a._d_floats(ln, args, aoff, col, 4, ".f32"),
    ".bf16": lambda a, ln, args, aoff, col: a._d_floats(ln, args, aoff, col, 2, ".bf16"),
    ".word": Assembler._d_word,
    ".tensor": Assembler._d_tensor,
    ".piece": Assembler._d_piece,
    ".file": Assembler._d_file,
    ".loc": Assembler._d_loc,
    ".source": Assembler._d_source,
    ".symbol": Assembler._d_symbol,
    ".meta": Assembler._d_meta,
}
for _name, _w in _INT_WIDTH.items():
    _DIRECTIVE_HANDLERS[_name] = (lambda w, nm: lambda a, ln, args, aoff, col: a._d_ints(
        ln, args, aoff, col, w, nm))(_w, _name)


def _lazy_fast(plan: _Plan) -> Any:
    """A stand-in for the plan's fast encoder that generates it on first use and steps aside
    (generating every encoder at import costs 20-30 ms; a program uses a few mnemonics).

    The plan's register slots are taken now, in the order `_make_fast` takes them: every
    Assembler builds its `fast_regs` from `_FAST_SLOTS` before any encoder is generated."""
    for kind, lo, *_ in plan.ops:
        if kind <= K_A:
            _fast_slot(kind, lo)
        elif kind == K_MEM:
            _fast_slot(K_X, _RS1_LO)

    def fast(ops: list[str], regs: list[dict[str, int]]) -> int:
        plan.fast = _make_fast(plan)
        return plan.fast(ops, regs)
    return fast


for _plan in PLANS.values():
    if type(_plan) is _Plan:
        _plan.fast = _lazy_fast(_plan)


# ---- public API ---------------------------------------------------------------------------------


def assemble(text: str, filename: str = "<string>", machine: Machine | None = None) -> ObjectFile:
    """Assemble `.d1s` text into an object; raise `SourceError` listing every error found.

    The machine is, in order: the text's own `.machine` directive (a `machine` argument that
    differs from it structurally is an error), the `machine` argument, or the default machine.
    This is also the compiler's back end: it emits `.text node X,Y` sections with `.file`,
    `.loc` and `.source` directives for its own source locations and calls this function.
    """
    return Assembler(text, filename, machine).run()


def assemble_file(path: str | Path, machine: Machine | None = None) -> ObjectFile:
    """Assemble a `.d1s` file (its path is the file name in diagnostics and the line table)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise D1Error(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise D1Error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return assemble(text, str(path), machine)


__all__ = ["DIRECTIVES", "PLANS", "PRODUCER", "SELECTORS", "Assembler", "assemble",
           "assemble_file", "bf16_from_f32_bits", "is_plain_name", "quote"]
