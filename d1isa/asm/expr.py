"""The integer expression language of `.d1s` operands and directives (docs/ASSEMBLY.md).

C-like: literals (decimal, 0x, 0b, 0o), names, `@x @y @id` (the node being assembled) and
`@w @h @n @sram` (the machine), unary `- ~ ! +`, the binary operators of C with C's precedence
(`/` and `%` truncate toward zero), and `c ? a : b`. Values are Python ints (no overflow).

    ast = parse("base + 4 * @x", consts)        # ExprError(msg, pos, width) on a syntax error
    value = evaluate(ast, lookup, node)          # lookup(name, pos) -> int

An AST is a tuple, with the position (0-based, in the expression's text) of every name and
operator, so an error found while evaluating points at its token:

    ('n', value) | ('id', name, pos) | ('@', index, pos) | ('u', op, a) | ('b', op, a, b, pos)
    | ('?', cond, a, b)

Constant subexpressions are folded while parsing, and machine symbols fold to the `consts`
given to `parse`. `evaluate` knows nothing about what a name means: the caller's `lookup` does
(the assembler's labels and equates; a debugger's registers), and it raises `NeedsNode` for
`@x @y @id` when `node` is None. The tokenizer also reads the arguments of directives.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<name>[A-Za-z_.$][A-Za-z0-9_.$]*)"
    r"|(?P<at>@[A-Za-z0-9_]*)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")'
    r"|(?P<op><<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!()<>?:,\[\]=]))")
BINARY = {"||": 2, "&&": 3, "|": 4, "^": 5, "&": 6, "==": 7, "!=": 7, "<": 8, "<=": 8, ">": 8,
          ">=": 8, "<<": 9, ">>": 9, "+": 10, "-": 10, "*": 11, "/": 11, "%": 11}
NODE_SYMBOLS = ("x", "y", "id")            # per node: ('@', index) indexes (x, y, id)
MACHINE_SYMBOLS = ("w", "h", "n", "sram")   # whole machine: folded to constants

Token = tuple[str, str, int]                # (kind, text, position)
Lookup = Callable[[str, int], int]


class ExprError(Exception):
    """An error inside an expression: at `pos` (0-based) of its text, or at an absolute place
    (`line`, `col`) once known. `transient`: it may go away later (a data address not yet
    assigned), so it must not mark an equate as broken."""

    def __init__(self, msg: str, pos: int = 0, width: int = 1, line: int | None = None,
                 col: int | None = None, transient: bool = False) -> None:
        super().__init__(msg)
        self.msg, self.pos, self.width = msg, pos, max(width, 1)
        self.line, self.col, self.transient = line, col, transient


class NeedsNode(Exception):
    """An expression needs @x, @y or @id and no node is being assembled."""


def tokenize(s: str) -> list[Token]:
    """Tokens of `s`, ending with ('end', '', position after the last non-blank)."""
    out = []
    pos, n = 0, len(s)
    match = TOKEN_RE.match
    while True:
        m = match(s, pos)
        if m is None:
            rest = s[pos:].lstrip()
            if rest:
                p = n - len(rest)
                raise ExprError(f"unexpected character '{s[p]}'", p)
            break
        k = m.lastgroup
        out.append((k, m.group(k), m.start(k)))
        pos = m.end()
    out.append(("end", "", len(s.rstrip())))
    return out


def parse_int(text: str, pos: int) -> int:
    """An integer literal (leading zeros are decimal); ExprError for anything else."""
    try:
        return int(text, 0)
    except ValueError:
        pass
    if text.isdigit():
        return int(text, 10)   # leading zeros: still decimal
    if any(c in text for c in ".eE") and text[:2].lower() not in ("0x", "0b", "0o"):
        raise ExprError(f"'{text}' is not an integer (a float is allowed only as an fp32 value)",
                        pos, len(text))
    raise ExprError(f"bad number '{text}'", pos, len(text))


def binop(op: str, a: int, b: int, pos: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/" or op == "%":
        if b == 0:
            raise ExprError("division by zero", pos, 1)
        q = abs(a) // abs(b)
        if (a < 0) != (b < 0):
            q = -q
        return q if op == "/" else a - b * q
    if op == "<<" or op == ">>":
        if not 0 <= b <= 4096:
            raise ExprError(f"shift count {b} is out of range 0..4096", pos, 2)
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


def unop(op: str, v: int) -> int:
    if op == "-":
        return -v
    if op == "~":
        return ~v
    if op == "!":
        return int(not v)
    return v


class Parser:
    """Precedence climbing over a token list; constants are folded as they are built.

    Directives use it piecewise (`peek`, `take`, `expr`, `expect`) to read expressions between
    their own keywords; `parse` reads one whole expression."""

    __slots__ = ("toks", "i", "consts")

    def __init__(self, toks: list[Token], consts: dict[str, int]) -> None:
        self.toks, self.i, self.consts = toks, 0, consts

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
            raise ExprError(f"expected '{op}'{' ' + what if what else ''}, found {found}", pos,
                            max(len(t), 1))

    def expect_end(self) -> None:
        k, t, pos = self.toks[self.i]
        if k != "end":
            raise ExprError(f"unexpected '{t}'", pos, len(t))

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
            p = BINARY.get(t)
            if p is None or p < min_prec:
                return left
            self.i += 1
            right = self.expr(p + 1)
            if left[0] == "n" and right[0] == "n":
                left = ("n", binop(t, left[1], right[1], pos))
            else:
                left = ("b", t, left, right, pos)

    def unary(self) -> tuple:
        k, t, pos = self.toks[self.i]
        if k == "op":
            if t in ("-", "~", "!", "+"):
                self.i += 1
                a = self.unary()
                return ("n", unop(t, a[1])) if a[0] == "n" else ("u", t, a)
            if t == "(":
                self.i += 1
                e = self.expr(1)
                self.expect(")")
                return e
        elif k == "num":
            self.i += 1
            return ("n", parse_int(t, pos))
        elif k == "name":
            self.i += 1
            return ("id", t, pos)
        elif k == "at":
            self.i += 1
            sym = t[1:]
            if sym in NODE_SYMBOLS:
                return ("@", NODE_SYMBOLS.index(sym), pos)
            if sym in self.consts:
                return ("n", self.consts[sym])
            raise ExprError(f"unknown node symbol '{t}' (known: @x @y @id @w @h @n @sram)", pos,
                            len(t))
        elif k == "end":
            raise ExprError("expected an expression", pos)
        raise ExprError(f"unexpected '{t}' in an expression", pos, len(t))


def parse(text: str, consts: dict[str, int] | None = None) -> tuple:
    """The AST of one whole expression; `consts` gives the machine symbols (@w @h @n @sram)."""
    p = Parser(tokenize(text), consts or {})
    try:
        ast = p.expr()
    except RecursionError:
        raise ExprError("expression is nested too deeply", 0) from None
    p.expect_end()
    return ast


def evaluate(ast: tuple, lookup: Lookup, node: tuple[int, int, int] | None = None) -> int:
    """The value of `ast`: names through `lookup(name, pos)`, @x/@y/@id from `node` (x, y, id),
    NeedsNode if it is None. `&&`, `||` and `?:` evaluate only what they need."""
    t = ast[0]
    if t == "n":
        return ast[1]
    if t == "id":
        return lookup(ast[1], ast[2])
    if t == "@":
        if node is None:
            raise NeedsNode()
        return node[ast[1]]
    if t == "u":
        return unop(ast[1], evaluate(ast[2], lookup, node))
    if t == "b":
        op = ast[1]
        a = evaluate(ast[2], lookup, node)
        if op == "&&":
            return int(bool(a) and bool(evaluate(ast[3], lookup, node)))
        if op == "||":
            return int(bool(a) or bool(evaluate(ast[3], lookup, node)))
        return binop(op, a, evaluate(ast[3], lookup, node), ast[4])
    return evaluate(ast[2] if evaluate(ast[1], lookup, node) else ast[3], lookup, node)
