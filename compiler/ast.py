"""The syntax tree of a `.d1k` program: small frozen dataclasses that remember where they came from.

Every node carries `line`, `col` (1-based) and `end_col` (exclusive) so the checker can point a
caret at the exact token a diagnostic is about. The tree is purely syntactic: names are not yet
resolved, and nothing here knows about shapes or dtypes (that is `compiler.check`).

`format_ast` prints the tree for `d1 compile --emit ast`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Span:
    """A place in the source: 1-based line and column, `end_col` one past the last character."""

    line: int
    col: int
    end_col: int

    @property
    def width(self) -> int:
        """How many columns a caret underline should cover (at least one)."""
        return max(self.end_col - self.col, 1)


# ---- expressions ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Number(Span):
    """A numeric literal. A unary minus directly in front of a literal is folded into it."""

    value: float
    text: str


@dataclass(frozen=True, kw_only=True)
class Name(Span):
    """A use of a name: an input, a bound value, or (as a call argument) a dtype such as `bf16`."""

    id: str


@dataclass(frozen=True, kw_only=True)
class Neg(Span):
    """Unary minus applied to something other than a literal."""

    operand: Expr


@dataclass(frozen=True, kw_only=True)
class BinOp(Span):
    """`left OP right` for OP in + - * / @. `op_col` is the operator's column."""

    op: str
    left: Expr
    right: Expr
    op_col: int


@dataclass(frozen=True, kw_only=True)
class Keyword(Span):
    """`name=value` inside a call's argument list."""

    name: str
    value: Expr


@dataclass(frozen=True, kw_only=True)
class Call(Span):
    """`func(args..., key=value...)`. Arguments keep their source order, so a positional argument
    after a keyword one can be reported; `items` interleaves `Keyword`s with plain expressions."""

    func: str
    items: tuple[Expr | Keyword, ...]

    @property
    def args(self) -> tuple[Expr, ...]:
        return tuple(a for a in self.items if not isinstance(a, Keyword))

    @property
    def keywords(self) -> tuple[Keyword, ...]:
        return tuple(a for a in self.items if isinstance(a, Keyword))


@dataclass(frozen=True, kw_only=True)
class ListExpr(Span):
    """A list literal `[a, b, ...]`: an argument of `reshape(x, [...])` and
    `transpose(x, [...])`, never a value of its own. The items stay expressions, so a
    non-literal one can be pointed at."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, kw_only=True)
class Slice(Span):
    """`start:stop` or `start:stop:step` inside an index; a part left out is None (`:` is all
    three None)."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None


@dataclass(frozen=True, kw_only=True)
class Index(Span):
    """Postfix indexing `value[s0, s1, ...]`: each subscript an expression (an integer that
    removes its axis) or a `Slice`. `bracket_col` is the column of the '['."""

    value: Expr
    subscripts: tuple[Expr | Slice, ...]
    bracket_col: int


Expr = Number | Name | Neg | BinOp | Call | ListExpr | Index


# ---- statements -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Input(Span):
    """`input NAME: DTYPE[D0, D1, ...]`; dims stay literals so bad ones can be pointed at."""

    name: Name
    dtype: Name
    dims: tuple[Number, ...]


@dataclass(frozen=True, kw_only=True)
class Param(Span):
    """`param NAME: DTYPE[D0, ...]` with an optional `= INIT`. The init stays an expression here
    (a number, `glorot` or `normal(STD)` is what the checker accepts), so a bad one can be
    pointed at."""

    name: Name
    dtype: Name
    dims: tuple[Number, ...]
    init: Expr | None = None


@dataclass(frozen=True, kw_only=True)
class Assign(Span):
    """`NAME = EXPR`."""

    target: Name
    value: Expr


@dataclass(frozen=True, kw_only=True)
class Update(Span):
    """`update NAME = EXPR`: the value param NAME holds after the run."""

    target: Name
    value: Expr


@dataclass(frozen=True, kw_only=True)
class Output(Span):
    """`output NAME, NAME...`."""

    names: tuple[Name, ...]


Stmt = Input | Param | Assign | Update | Output


@dataclass(frozen=True)
class Program:
    """A parsed file: its statements in source order."""

    statements: tuple[Stmt, ...]
    filename: str = "<string>"


# ---- printing ---------------------------------------------------------------------------------

def format_expr(e: Expr | Keyword | Slice) -> str:
    """An expression as fully parenthesised source text, which makes precedence visible."""
    if isinstance(e, Number):
        return e.text
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Neg):
        return f"(-{format_expr(e.operand)})"
    if isinstance(e, BinOp):
        return f"({format_expr(e.left)} {e.op} {format_expr(e.right)})"
    if isinstance(e, Keyword):
        return f"{e.name}={format_expr(e.value)}"
    if isinstance(e, ListExpr):
        return f"[{', '.join(format_expr(a) for a in e.items)}]"
    if isinstance(e, Slice):
        parts = [("" if p is None else format_expr(p)) for p in (e.start, e.stop, e.step)]
        return ":".join(parts if e.step is not None else parts[:2])
    if isinstance(e, Index):
        return f"{format_expr(e.value)}[{', '.join(format_expr(a) for a in e.subscripts)}]"
    return f"{e.func}({', '.join(format_expr(a) for a in e.items)})"


def format_ast(program: Program) -> str:
    """One line per statement, with its position: what `--emit ast` prints."""
    lines = []
    for s in program.statements:
        where = f"{s.line}:{s.col}"
        if isinstance(s, Input):
            dims = ", ".join(d.text for d in s.dims)
            lines.append(f"{where:>7}  input {s.name.id}: {s.dtype.id}[{dims}]")
        elif isinstance(s, Param):
            dims = ", ".join(d.text for d in s.dims)
            init = "" if s.init is None else f" = {format_expr(s.init)}"
            lines.append(f"{where:>7}  param {s.name.id}: {s.dtype.id}[{dims}]{init}")
        elif isinstance(s, Assign):
            lines.append(f"{where:>7}  {s.target.id} = {format_expr(s.value)}")
        elif isinstance(s, Update):
            lines.append(f"{where:>7}  update {s.target.id} = {format_expr(s.value)}")
        else:
            lines.append(f"{where:>7}  output {', '.join(n.id for n in s.names)}")
    return "\n".join(lines)
