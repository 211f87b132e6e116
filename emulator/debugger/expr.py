"""The debugger's expression language: conditions of breakpoints, `print`, addresses.

    tree = parse("mem32[r1 + 8] == 3 && x > 0")     # an Expr tree, every node with its offset
    get = compile(tree, lookup)                     # node id -> int
    get(5)

Integers (decimal, 0x, 0b, `_` separators), names (registers, pc, clock, x, y, id, T, symbols:
whatever `lookup` resolves), `mem8/16/32/64[ADDR]` (signed little-endian SRAM reads), C operators
with C precedence and C division, and `and`/`or`/`not`. Never Python `eval`.

The language is its own module, with nothing of the emulator in it, because the assembler's
constant expressions will share it: `parse` knows only text, and `compile` reaches the machine
only through the `Lookup` it is given. Every error is an `ExprError` carrying the expression
text and the offset it refers to, so a caller can point at it (`ExprError.caret()`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from d1isa.errors import D1Error

Getter = Callable[[int], int]


class ExprError(D1Error):
    """A malformed or failing debugger expression; `text` and `pos` (0-based offset into it,
    -1 if unknown) say where."""

    def __init__(self, message: str, text: str | None = None, pos: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.pos = pos

    @property
    def column(self) -> int:
        """1-based column of the error in the expression, 0 if unknown."""
        return self.pos + 1 if self.pos >= 0 else 0

    def caret(self) -> str:
        """The expression and a caret under the offending character ("" if unknown)."""
        if self.text is None or self.pos < 0:
            return ""
        return f"{self.text}\n{' ' * self.pos}^"


# ---- the tree ------------------------------------------------------------------------------------
# Positions are offsets into the parsed text; they do not take part in equality, so two parses of
# the same expression compare equal however they are spaced.

@dataclass(frozen=True)
class Num:
    value: int
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Name:
    name: str
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Mem:
    width: int                  # bytes: 1, 2, 4 or 8
    addr: Expr
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Unary:
    op: str                     # - + ~ !
    arg: Expr
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Binary:
    op: str                     # C operators; && and || for and/or
    left: Expr
    right: Expr
    pos: int = field(default=-1, compare=False)


Expr = Num | Name | Mem | Unary | Binary


# ---- parsing -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F_]+|0[bB][01_]+|\d[\d_]*)|([A-Za-z_.$@][\w.$]*)"
                    r"|(<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!<>()\[\]]))")
# Binary operators by precedence level, loosest first.
_BINARY = [
    ("||", "or"), ("&&", "and"),
    ("|",), ("^",), ("&",),
    ("==", "!=", "<", "<=", ">", ">="),
    ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
]
_WORDS = {"and": "&&", "or": "||", "not": "!"}
MEM_WIDTH = {"mem8": 1, "mem16": 2, "mem32": 4, "mem64": 8}


@dataclass(frozen=True)
class _Token:
    kind: str                   # num, name, op
    value: int | str
    pos: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            raise ExprError(f"unexpected character {text[at:at + 1]!r} in expression {text!r}",
                            text, at)
        num, name, op = m.groups()
        start = m.start(m.lastindex or 0)
        if num is not None:
            out.append(_Token("num", int(num.replace("_", ""), 0), start))
        elif name is not None:
            if name in _WORDS:
                out.append(_Token("op", _WORDS[name], start))
            else:
                out.append(_Token("name", name, start))
        else:
            out.append(_Token("op", op, start))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over C-like precedence."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def error(self, message: str, pos: int) -> ExprError:
        return ExprError(message, self.text, pos)

    def parse(self) -> Expr:
        if not self.toks:
            raise self.error("empty expression", 0)
        tree = self.binary(0)
        if self.i != len(self.toks):
            t = self.toks[self.i]
            raise self.error(f"unexpected {t.value!r} in expression {self.text!r}", t.pos)
        return tree

    def peek(self) -> _Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def is_op(self, t: _Token | None, *ops: str) -> bool:
        return t is not None and t.kind == "op" and t.value in ops

    def binary(self, level: int) -> Expr:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            t = self.peek()
            if not self.is_op(t, *_BINARY[level]):
                return left
            self.i += 1
            left = Binary(str(t.value), left, self.binary(level + 1), t.pos)

    def unary(self) -> Expr:
        t = self.peek()
        if self.is_op(t, "-", "~", "!", "+"):
            self.i += 1
            return Unary(str(t.value), self.unary(), t.pos)
        return self.primary()

    def close(self, bracket: str) -> None:
        t = self.peek()
        if not self.is_op(t, bracket):
            raise self.error(f"missing '{bracket}' in expression {self.text!r}",
                             t.pos if t is not None else len(self.text.rstrip()))
        self.i += 1

    def primary(self) -> Expr:
        t = self.peek()
        if t is None:
            raise self.error(f"expression {self.text!r} ends too early", len(self.text.rstrip()))
        self.i += 1
        if t.kind == "num":
            return Num(int(t.value), t.pos)
        if t.kind == "name":
            name = str(t.value)
            if name.lower() in MEM_WIDTH and self.is_op(self.peek(), "["):
                self.i += 1
                addr = self.binary(0)
                self.close("]")
                return Mem(MEM_WIDTH[name.lower()], addr, t.pos)
            return Name(name, t.pos)
        if self.is_op(t, "("):
            inner = self.binary(0)
            self.close(")")
            return inner
        raise self.error(f"unexpected {t.value!r} in expression {self.text!r}", t.pos)


def parse(text: str) -> Expr:
    """Parse an expression into its tree; ExprError (with the offset) if it is malformed."""
    return _Parser(text).parse()


# ---- compiling to getters ------------------------------------------------------------------------

class Lookup(Protocol):
    """What an expression can see beyond its own numbers."""

    def name(self, ident: str) -> Getter:
        """A getter (node -> value) for `ident`, resolved once; ExprError if there is none."""

    def memory(self, node: int, width: int, addr: int) -> int:
        """The signed little-endian integer of `width` bytes at `addr`; ExprError if outside."""


def _cdiv(a: int, b: int, rem: bool) -> int:
    if b == 0:
        raise ExprError("division by zero in expression")
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return a - b * q if rem else q


def _shift(b: int) -> int:
    if not 0 <= b <= 4096:
        raise ExprError(f"shift count {b} is outside 0..4096")
    return b


_BIN_FN: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: _cdiv(a, b, False), "%": lambda a, b: _cdiv(a, b, True),
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "<<": lambda a, b: a << _shift(b), ">>": lambda a, b: a >> _shift(b),
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
}
# Operators that can fail at evaluation time: their errors get the operator's position.
_MAY_FAIL = frozenset(("/", "%", "<<", ">>"))
_UN_FN: dict[str, Callable[[int], int]] = {
    "-": lambda v: -v, "+": lambda v: v, "~": lambda v: ~v, "!": lambda v: int(not v)}


def _located(fn: Getter, pos: int, text: str | None) -> Getter:
    """fn, with the position of its tree node put on any ExprError that has none."""

    def get(node: int) -> int:
        try:
            return fn(node)
        except ExprError as e:
            if e.pos < 0:
                e.pos, e.text = pos, text
            raise
    return get


def compile(tree: Expr, lookup: Lookup, text: str | None = None) -> Getter:
    """Turn a parsed expression into a function of the node it is evaluated on.

    Names resolve once, here, through `lookup.name`; `text` (the parsed source) goes into the
    errors' positions.
    """
    if isinstance(tree, Num):
        value = tree.value
        return lambda node: value
    if isinstance(tree, Name):
        try:
            return lookup.name(tree.name)
        except ExprError as e:
            if e.pos < 0:
                e.pos, e.text = tree.pos, text
            raise
    if isinstance(tree, Mem):
        width = tree.width
        addr = compile(tree.addr, lookup, text)
        memory = lookup.memory
        return _located(lambda node: memory(node, width, addr(node)), tree.pos, text)
    if isinstance(tree, Unary):
        fn1 = _UN_FN[tree.op]
        arg = compile(tree.arg, lookup, text)
        return lambda node: fn1(arg(node))
    a = compile(tree.left, lookup, text)
    b = compile(tree.right, lookup, text)
    if tree.op == "&&":
        return lambda node: int(bool(a(node)) and bool(b(node)))
    if tree.op == "||":
        return lambda node: int(bool(a(node)) or bool(b(node)))
    fn2 = _BIN_FN[tree.op]
    get: Getter = lambda node: fn2(a(node), b(node))  # noqa: E731
    return _located(get, tree.pos, text) if tree.op in _MAY_FAIL else get
