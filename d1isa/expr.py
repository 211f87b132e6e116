"""The integer expression language of the assembler and the debugger: one tokenizer, one parser,
one tree, and the two ways of evaluating it.

The language: literals (decimal, also with leading zeros, 0x, 0b, 0o, `_` separators), names,
`@x @y @id` (the node), `@w @h @n @sram` (the machine), unary `- ~ ! +`, the binary operators of
C with C's precedence (`/` and `%` truncate toward zero), `c ? a : b`, `mem8/16/32/64[ADDR]`
(signed little-endian reads) and `and`/`or`/`not`. Values are Python ints (no overflow).

Each user reads it through a `Dialect`, which says what it accepts and how its syntax errors
read. `ASSEMBLY` (operands and directives, docs/ASSEMBLY.md): no memory reads and no word
operators (`mem32`, `and` are names there); `@` symbols are the node's and the machine's, and
constant subexpressions are folded while parsing. `DEBUGGER` (conditions, `print`, addresses,
docs/DEBUGGER.md): everything but the `@` symbols (`@name` is a name for its lookup); nothing
folded, so `1/0` fails when evaluated.

    tree = parse("base + 4 * @x", consts)             # consts: the values of @w @h @n @sram
    value = evaluate(tree, value_of, node)             # value_of(name, pos) -> int; node (x, y, id)
    tree = parse("mem32[r1 + 8] == 3 and x > 0", dialect=DEBUGGER)
    get = compile(tree, lookup, text)                  # node id -> int; names resolved once

The tree is a few frozen dataclasses, each with the offset of its token in the text (`pos`, not
part of equality). `evaluate` is the assembler's: it resolves names each time through the
caller's function, and raises `NeedsNode` for `@x @y @id` without a node. `compile` is the
debugger's: it resolves names once, through a `Lookup`, into a function of the node id.

Every error is an `ExprError` with the offset it refers to, the text when known (so `caret()`
can point at it), and, once the assembler knows it, the line and column in its file.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from d1isa.errors import D1Error

Token = tuple[str, str, int]                # (kind, text, position)
NameValue = Callable[[str, int], int]       # evaluate's lookup: (name, position) -> value
Getter = Callable[[int], int]               # compile's result: node id -> value


class ExprError(D1Error):
    """An error in an expression: `msg`, at `pos` (0-based offset into `text`; -1 while unknown)
    over `width` characters, or at an absolute `line` and `col` once the assembler knows them.
    `transient`: it may go away later (a data address not yet assigned), so the assembler must
    not mark an equate as broken."""

    def __init__(self, msg: str, pos: int = -1, width: int = 1, *, text: str | None = None,
                 line: int | None = None, col: int | None = None,
                 transient: bool = False) -> None:
        super().__init__(msg)
        self.msg, self.pos, self.width, self.text = msg, pos, max(width, 1), text
        self.line, self.col, self.transient = line, col, transient

    @property
    def column(self) -> int:
        """1-based column of the error in the expression, 0 if unknown."""
        return self.pos + 1 if self.pos >= 0 else 0

    def caret(self) -> str:
        """The expression and a caret under the offending character ("" if unknown)."""
        if self.text is None or self.pos < 0:
            return ""
        return f"{self.text}\n{' ' * self.pos}^"


class NeedsNode(Exception):
    """An expression needs @x, @y or @id and no node is being evaluated."""


# ---- the tree ------------------------------------------------------------------------------------
# Positions are offsets into the parsed text; they do not take part in equality, so two parses of
# the same expression compare equal however they are spaced.

@dataclass(frozen=True, slots=True)
class Num:
    value: int
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class At:
    index: int                  # into NODE_SYMBOLS: @x, @y, @id
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Mem:
    width: int                  # bytes: 1, 2, 4 or 8
    addr: Expr
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Unary:
    op: str                     # - + ~ !
    arg: Expr
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Binary:
    op: str                     # C operators; && and || also for and/or
    left: Expr
    right: Expr
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Cond:
    cond: Expr
    then: Expr
    other: Expr
    pos: int = field(default=-1, compare=False)     # of the '?'


Expr = Num | Name | At | Mem | Unary | Binary | Cond


# ---- the operators -------------------------------------------------------------------------------
# C's semantics on Python ints. Division by zero raises ZeroDivisionError and a shift count
# outside 0..MAX_SHIFT raises OverflowError; each back end words them for its users.

MAX_SHIFT = 4096
# Values are Python ints, so a chain of products (`.equ e1, e0 * e0` and so on) could grow
# without end: a result wider than MAX_BITS is an error, as is a literal longer than
# MAX_LITERAL_CHARS (Python itself refuses decimal conversions beyond 4,300 digits).
MAX_BITS = 4096 + 64
MAX_LITERAL_CHARS = 256


class TooLarge(OverflowError):
    """A value wider than MAX_BITS."""


def _bounded(v: int) -> int:
    if v.bit_length() > MAX_BITS:
        raise TooLarge(v.bit_length())
    return v


def _cmul(a: int, b: int) -> int:
    if a.bit_length() + b.bit_length() > MAX_BITS + 1:
        raise TooLarge(a.bit_length() + b.bit_length())
    return a * b


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def _crem(a: int, b: int) -> int:
    return a - b * _cdiv(a, b)


def _count(b: int) -> int:
    if not 0 <= b <= MAX_SHIFT:
        raise OverflowError(b)
    return b


BINARY_FN: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: _bounded(a + b), "-": lambda a, b: _bounded(a - b), "*": _cmul,
    "/": _cdiv, "%": _crem,
    "<<": lambda a, b: _bounded(a << _count(b)), ">>": lambda a, b: a >> _count(b),
    "&": operator.and_, "|": operator.or_, "^": operator.xor,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
    "&&": lambda a, b: int(bool(a) and bool(b)), "||": lambda a, b: int(bool(a) or bool(b)),
}
UNARY_FN: dict[str, Callable[[int], int]] = {
    "-": operator.neg, "+": operator.pos, "~": operator.invert, "!": lambda v: int(not v)}
# Binding of the binary operators, loosest first; `c ? a : b` binds looser than all of them.
PRECEDENCE = {"||": 2, "&&": 3, "|": 4, "^": 5, "&": 6, "==": 7, "!=": 7, "<": 8, "<=": 8, ">": 8,
              ">=": 8, "<<": 9, ">>": 9, "+": 10, "-": 10, "*": 11, "/": 11, "%": 11}
NODE_SYMBOLS = ("x", "y", "id")             # per node: At.index indexes (x, y, id)
MACHINE_SYMBOLS = ("w", "h", "n", "sram")   # the whole machine: folded to the parse's consts
MEM_WIDTH = {"mem8": 1, "mem16": 2, "mem32": 4, "mem64": 8}


# ---- dialects ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    """What one user of the language accepts, and the wording of its errors.

    `messages` are format strings, with `text` (the whole expression) and, by message: `c` (a
    character), `t` (a token), `shown` (a token as the debugger shows it), `op`, `what` and
    `found` (a missing closer), `b` (a shift count). A dialect without node symbols has no
    "symbol" message."""

    name: str
    fold: bool                  # fold constant subexpressions while parsing
    node_symbols: bool          # @x @y @id @w @h @n @sram; else `@name` is a name
    words: dict[str, str]       # word operators: and, or, not
    mem: bool                   # mem8/16/32/64[ADDR]
    stray_ops: frozenset[str]   # punctuation of directives read here as unexpected characters
    strings: bool               # "..." is a token (directives' strings)
    messages: dict[str, str]


ASSEMBLY = Dialect(
    name="assembly", fold=True, node_symbols=True, words={}, mem=False, stray_ops=frozenset(),
    strings=True, messages={
        "char": "unexpected character '{c}'",
        "empty": "expected an expression",
        "early": "expected an expression",
        "operand": "unexpected '{t}' in an expression",
        "close": "expected '{op}'{what}, found {found}",
        "trailing": "unexpected '{t}'",
        "float": "'{t}' is not an integer (a float is allowed only as an fp32 value)",
        "number": "bad number '{t}'",
        "symbol": "unknown node symbol '{t}' (known: @x @y @id @w @h @n @sram)",
        "deep": "expression is nested too deeply",
        "div": "division by zero",
        "shift": "shift count {b} is out of range 0..4096",
        "large": "the value has {bits} bits, more than the 4,160 an expression may have",
        "long": "number '{t}' is too long (at most 256 characters)",
    })
DEBUGGER = Dialect(
    name="debugger", fold=False, node_symbols=False, words={"and": "&&", "or": "||", "not": "!"},
    mem=True, stray_ops=frozenset((",", "=")), strings=False, messages={
        "char": "unexpected character {c!r} in expression {text!r}",
        "empty": "empty expression",
        "early": "expression {text!r} ends too early",
        "operand": "unexpected {shown} in expression {text!r}",
        "close": "missing '{op}' in expression {text!r}",
        "trailing": "unexpected {shown} in expression {text!r}",
        "float": "bad number {t!r} in expression {text!r}",
        "number": "bad number {t!r} in expression {text!r}",
        "deep": "expression is nested too deeply",
        "div": "division by zero in expression",
        "shift": "shift count {b} is outside 0..4096",
        "large": "the value has {bits} bits, more than the 4,160 an expression may have",
        "long": "number {t!r} is too long (at most 256 characters)",
    })


def _error(dialect: Dialect, kind: str, pos: int, width: int = 1, text: str | None = None,
           **fields: object) -> ExprError:
    msg = dialect.messages[kind].format(text=text, **fields)
    return ExprError(msg, pos, width, text=text)


def _arith_error(dialect: Dialect, e: ArithmeticError, pos: int,
                 text: str | None = None) -> ExprError:
    if isinstance(e, ZeroDivisionError):
        return _error(dialect, "div", pos, 1, text)
    if isinstance(e, TooLarge):
        return _error(dialect, "large", pos, 1, text, bits=e.args[0])
    return _error(dialect, "shift", pos, 2, text, b=e.args[0])


# ---- tokens --------------------------------------------------------------------------------------

TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<name>[A-Za-z_.$][A-Za-z0-9_.$]*)"
    r"|(?P<at>@[A-Za-z0-9_]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<op><<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!()<>?:,\[\]=]))")


def tokenize(text: str, dialect: Dialect = ASSEMBLY) -> list[Token]:
    """Tokens of `text`, ending with ('end', '', position after the last non-blank).

    Directives read their arguments from these tokens too, strings and `,` `=` included; the
    debugger reads those as unexpected characters, its words as operators, `@name` as a name."""
    out = []
    pos, n = 0, len(text)
    match = TOKEN_RE.match
    plain = dialect is ASSEMBLY
    while True:
        m = match(text, pos)
        if m is None:
            rest = text[pos:].lstrip()
            if rest:
                p = n - len(rest)
                raise _error(dialect, "char", p, 1, text.rstrip(), c=text[p])
            break
        k = m.lastgroup
        t = m.group(k)
        p = m.start(k)
        if not plain:
            if k == "name" and t in dialect.words:
                k, t = "op", dialect.words[t]
            elif k == "at" and not dialect.node_symbols:
                k = "name"
            elif (k == "str" and not dialect.strings) or (k == "op" and t in dialect.stray_ops):
                raise _error(dialect, "char", p, 1, text.rstrip(), c=t[0])
        out.append((k, t, p))
        pos = m.end()
    out.append(("end", "", len(text.rstrip())))
    return out


def _literal(text: str) -> int | None:
    """The value of an integer literal (leading zeros are decimal), None if it is not one."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text.isdigit():
        return int(text, 10)
    return None


def parse_int(text: str, pos: int, dialect: Dialect = ASSEMBLY, source: str | None = None) -> int:
    """An integer literal; ExprError at `pos` for anything else."""
    if len(text) > MAX_LITERAL_CHARS:
        raise _error(dialect, "long", pos, len(text), source, t=text[:20] + "...")
    v = _literal(text)
    if v is not None:
        return v
    kind = "float" if any(c in text for c in ".eE") and text[:2].lower() not in ("0x", "0b", "0o") \
        else "number"
    raise _error(dialect, kind, pos, len(text), source, t=text)


# ---- parsing -------------------------------------------------------------------------------------

class Parser:
    """Precedence climbing over a token list; in a folding dialect, constants are folded as the
    tree is built.

    Directives use it piecewise (`peek`, `take`, `expr`, `expect`) to read expressions between
    their own keywords; `parse` reads one whole expression."""

    __slots__ = ("toks", "i", "consts", "dialect", "text", "lazy")

    def __init__(self, toks: list[Token], consts: dict[str, int] | None = None,
                 dialect: Dialect = ASSEMBLY, text: str | None = None) -> None:
        self.toks, self.i, self.consts = toks, 0, consts or {}
        self.dialect, self.text = dialect, text
        # > 0 while reading what `&&`, `||` or `?:` may not evaluate: a constant there that
        # fails to fold (`@w > 1 ? 64 / (@w - 1) : 64` on a 1-wide mesh) stays unfolded, and
        # fails only if evaluation reaches it.
        self.lazy = 0

    def error(self, kind: str, pos: int, width: int = 1, **fields: object) -> ExprError:
        return _error(self.dialect, kind, pos, width, self.text, **fields)

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
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
            raise self.error("close", pos, len(t), op=op, what=f" {what}" if what else "",
                             found=found)

    def expect_end(self) -> None:
        k, t, pos = self.toks[self.i]
        if k != "end":
            raise self.error("trailing", pos, len(t), t=t, shown=t if k == "num" else repr(t))

    def expr(self, min_prec: int = 1) -> Expr:
        left = self.unary()
        toks = self.toks
        fold = self.dialect.fold
        while True:
            k, t, pos = toks[self.i]
            if k != "op":
                return left
            if t == "?":
                if min_prec > 1:
                    return left
                self.i += 1
                self.lazy += 1
                a = self.expr(1)
                self.expect(":", "in 'c ? a : b'")
                b = self.expr(1)
                self.lazy -= 1
                if fold and type(left) is Num:
                    left = a if left.value else b
                else:
                    left = Cond(left, a, b, pos)
                continue
            p = PRECEDENCE.get(t)
            if p is None or p < min_prec:
                return left
            self.i += 1
            lazy = t in ("&&", "||")
            self.lazy += lazy
            right = self.expr(p + 1)
            self.lazy -= lazy
            if fold and type(left) is Num and type(right) is Num:
                try:
                    left = Num(BINARY_FN[t](left.value, right.value), pos)
                except ArithmeticError as e:
                    if not self.lazy:
                        raise _arith_error(self.dialect, e, pos, self.text) from None
                    left = Binary(t, left, right, pos)
            else:
                left = Binary(t, left, right, pos)

    def unary(self) -> Expr:
        k, t, pos = self.toks[self.i]
        if k == "op":
            if t in UNARY_FN:
                self.i += 1
                a = self.unary()
                if self.dialect.fold and type(a) is Num:
                    return Num(UNARY_FN[t](a.value), pos)
                return Unary(t, a, pos)
            if t == "(":
                self.i += 1
                e = self.expr(1)
                self.expect(")")
                return e
        elif k == "num":
            self.i += 1
            return Num(parse_int(t, pos, self.dialect, self.text), pos)
        elif k == "name":
            self.i += 1
            if self.dialect.mem:
                width = MEM_WIDTH.get(t.lower())
                if width is not None and self.accept("["):
                    addr = self.expr(1)
                    self.expect("]")
                    return Mem(width, addr, pos)
            return Name(t, pos)
        elif k == "at":
            self.i += 1
            sym = t[1:]
            if sym in NODE_SYMBOLS:
                return At(NODE_SYMBOLS.index(sym), pos)
            if sym in self.consts:
                return Num(self.consts[sym], pos)
            raise self.error("symbol", pos, len(t), t=t)
        elif k == "end":
            raise self.error("empty" if self.i == 0 else "early", pos)
        raise self.error("operand", pos, len(t), t=t, shown=repr(t))


def parse(text: str, consts: dict[str, int] | None = None,
          dialect: Dialect = ASSEMBLY) -> Expr:
    """The tree of one whole expression; `consts` gives the machine symbols (@w @h @n @sram)."""
    p = Parser(tokenize(text, dialect), consts, dialect, text)
    try:
        tree = p.expr()
    except RecursionError:
        raise p.error("deep", 0) from None
    p.expect_end()
    return tree


# ---- the assembler's evaluation ------------------------------------------------------------------

def evaluate(tree: Expr, value_of: NameValue, node: tuple[int, int, int] | None = None) -> int:
    """The value of `tree`: names through `value_of(name, pos)`, @x @y @id from `node`
    (x, y, id), NeedsNode if it is None. `&&`, `||` and `?:` evaluate only what they need.

    Evaluation recurses once per level of the tree, and through `value_of` into the trees of
    the names it reads (equates): a long operator chain of names (`Y+Y+...+Y`, left-deep), or
    a chain of equates each a little deep, is "nested too deeply" here, not a RecursionError."""
    try:
        return _evaluate(tree, value_of, node)
    except RecursionError:
        raise _error(ASSEMBLY, "deep", tree.pos) from None


def _evaluate(tree: Expr, value_of: NameValue, node: tuple[int, int, int] | None) -> int:
    evaluate = _evaluate
    t = type(tree)
    if t is Num:
        return tree.value
    if t is Name:
        return value_of(tree.name, tree.pos)
    if t is Binary:
        op = tree.op
        a = evaluate(tree.left, value_of, node)
        if op == "&&":
            return int(bool(a) and bool(evaluate(tree.right, value_of, node)))
        if op == "||":
            return int(bool(a) or bool(evaluate(tree.right, value_of, node)))
        b = evaluate(tree.right, value_of, node)
        try:
            return BINARY_FN[op](a, b)
        except ArithmeticError as e:
            raise _arith_error(ASSEMBLY, e, tree.pos) from None
    if t is At:
        if node is None:
            raise NeedsNode()
        return node[tree.index]
    if t is Unary:
        return UNARY_FN[tree.op](evaluate(tree.arg, value_of, node))
    if t is Cond:
        return evaluate(tree.then if evaluate(tree.cond, value_of, node) else tree.other,
                        value_of, node)
    raise ExprError(f"mem{8 * tree.width}[...] needs a node's memory, which is not there to read",
                    tree.pos, 3 + len(str(8 * tree.width)))


# ---- the debugger's compilation to getters -------------------------------------------------------

class Lookup(Protocol):
    """What a compiled expression can see beyond its own numbers."""

    def name(self, ident: str) -> Getter:
        """A getter (node -> value) for `ident`, resolved once; ExprError if there is none."""

    def memory(self, node: int, width: int, addr: int) -> int:
        """The signed little-endian integer of `width` bytes at `addr`; ExprError if outside."""


def _locate(e: ExprError, pos: int, text: str | None) -> None:
    """Put the position of a tree node on an error that has none."""
    if e.pos < 0:
        e.pos, e.text = pos, text


def _located(fn: Getter, pos: int, text: str | None) -> Getter:
    """fn, with the position of its tree node put on any ExprError that has none."""

    def get(node: int) -> int:
        try:
            return fn(node)
        except ExprError as e:
            _locate(e, pos, text)
            raise
    return get


def _name(ident: str, pos: int, lookup: Lookup, text: str | None) -> Getter:
    try:
        return lookup.name(ident)
    except ExprError as e:
        _locate(e, pos, text)
        raise


def compile(tree: Expr, lookup: Lookup, text: str | None = None) -> Getter:
    """Turn a tree into a function of the node it is evaluated on.

    Names resolve once, here, through `lookup.name` (@x @y @id as its x, y and id); `text` (the
    parsed source) goes into the errors' positions. Errors are worded for the debugger.

    Compiling and calling the function recurse once per level of the tree: a long operator
    chain (`r1+r1+...`, left-deep) is "nested too deeply" when compiled or when evaluated
    (a breakpoint condition), not a RecursionError."""
    def deep() -> ExprError:
        return _error(DEBUGGER, "deep", tree.pos, 1, text)
    try:
        fn = _compile(tree, lookup, text)
    except RecursionError:
        raise deep() from None

    def get(node: int) -> int:
        try:
            return fn(node)
        except RecursionError:
            raise deep() from None
    return get


def _compile(tree: Expr, lookup: Lookup, text: str | None = None) -> Getter:
    compile = _compile
    t = type(tree)
    if t is Num:
        value = tree.value
        return lambda node: value
    if t is Name:
        return _name(tree.name, tree.pos, lookup, text)
    if t is At:
        return _name(NODE_SYMBOLS[tree.index], tree.pos, lookup, text)
    if t is Mem:
        width = tree.width
        addr = compile(tree.addr, lookup, text)
        memory = lookup.memory
        return _located(lambda node: memory(node, width, addr(node)), tree.pos, text)
    if t is Unary:
        fn1 = UNARY_FN[tree.op]
        arg = compile(tree.arg, lookup, text)
        return lambda node: fn1(arg(node))
    if t is Cond:
        c = compile(tree.cond, lookup, text)
        a = compile(tree.then, lookup, text)
        b = compile(tree.other, lookup, text)
        return lambda node: a(node) if c(node) else b(node)
    op, pos = tree.op, tree.pos
    a = compile(tree.left, lookup, text)
    b = compile(tree.right, lookup, text)
    if op == "&&":
        return lambda node: int(bool(a(node)) and bool(b(node)))
    if op == "||":
        return lambda node: int(bool(a(node)) or bool(b(node)))
    fn2 = BINARY_FN[op]
    if op not in ("/", "%", "<<", ">>", "+", "-", "*"):
        return lambda node: fn2(a(node), b(node))

    def may_fail(node: int) -> int:
        try:
            return fn2(a(node), b(node))
        except ArithmeticError as e:
            raise _arith_error(DEBUGGER, e, pos, text) from None
        except ExprError as e:
            _locate(e, pos, text)
            raise
    return may_fail
