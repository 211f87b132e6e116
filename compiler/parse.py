"""Parse `.d1k` text into the syntax tree of `compiler.ast`, or raise a located `SourceError`.

The grammar lives in `grammar.lark` and is run by Lark's LALR parser, built once on first use.
Syntax errors get their message from a catalogue of small broken programs (Lark's
`UnexpectedInput.match_examples`, written out as `_match_examples`): the parser state the real
error stopped in is compared with the states those examples stop in, so "y = (x + 1" reads as
"missing ')'" rather than as a list of terminal names. Lark stops at the first syntax error, so
a file reports at most one.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from compiler import ast
from d1isa.errors import D1Error, Diagnostic, SourceError
from d1isa.expr import MAX_LITERAL_CHARS

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")


# Lark's own cache of the analysed grammar (LALR tables), beside Python's bytecode: loading it
# takes a few milliseconds where building the tables takes 30-100. Lark keys it on the grammar
# text, the options and the Lark and Python versions, rebuilds it when any of them differs, and
# carries on without it if it cannot be read or written.
_CACHE_PATH = GRAMMAR_PATH.parent / "__pycache__" / "grammar.lark-cache"


@cache
def parser() -> Lark:
    """The LALR parser, constructed (or loaded from its cache) on first use, shared afterwards."""
    try:
        _CACHE_PATH.parent.mkdir(exist_ok=True)
    except OSError:
        pass
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr",
                propagate_positions=True, maybe_placeholders=True, cache=str(_CACHE_PATH))


def parse(text: str, filename: str = "<string>") -> ast.Program:
    """Parse a whole program; raise `SourceError` for the first syntax error. A leading UTF-8
    byte-order mark is skipped, as the assembler does (columns stay those an editor shows)."""
    if not isinstance(text, str):
        raise D1Error(f"the program text must be a str, not {type(text).__name__}"
                      + (" (decode the bytes first)" if isinstance(text, bytes | bytearray) else
                         ""))
    if not isinstance(filename, str):
        raise D1Error(f"the file name of the program text must be a str, not "
                      f"{type(filename).__name__}")
    text = text.removeprefix("\ufeff")
    try:
        tree = parser().parse(text)
    except UnexpectedInput as e:
        raise SourceError([describe_syntax_error(e, text, filename)]) from None
    try:
        statements = _ToAst().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, _LongNumber):
            tok = e.orig_exc.token
            raise SourceError.at(filename, text, tok.line, tok.column,
                                 f"number '{tok[:20]}...' is too long (at most "
                                 f"{MAX_LITERAL_CHARS} characters)", len(tok)) from None
        raise
    except RecursionError:
        raise SourceError([Diagnostic(filename, 1, 1, "program is nested too deeply to parse")]
                          ) from None
    return ast.Program(tuple(statements), filename)


# ---- building the AST -------------------------------------------------------------------------

def _name(tok: Token) -> ast.Name:
    return ast.Name(id=str(tok), line=tok.line, col=tok.column, end_col=tok.end_column)


class _LongNumber(Exception):
    """A number literal longer than MAX_LITERAL_CHARS (raised inside the transformer, which
    wraps it; `parse` reports it at the token)."""

    def __init__(self, token: Token) -> None:
        super().__init__(str(token)[:20])
        self.token = token


def _number(tok: Token) -> ast.Number:
    # Python reads at most 4,300 digits into an int, and no dimension, axis or value needs
    # more than a few dozen: a longer literal is refused here, as the assembler does.
    if len(tok) > MAX_LITERAL_CHARS:
        raise _LongNumber(tok)
    return ast.Number(value=float(tok), text=str(tok), line=tok.line, col=tok.column,
                      end_col=tok.end_column)


def _span(meta) -> dict[str, int]:
    return {"line": meta.line, "col": meta.column, "end_col": meta.end_column}


class _ToAst(Transformer_NonRecursive):
    """Lark tree -> `compiler.ast` dataclasses. Non-recursive, so long chains like
    `a + a + ... + a` cannot overflow the Python stack here."""

    def start(self, children):
        return children

    @v_args(meta=True)
    def input_stmt(self, meta, children):
        name, dtype, dims = children
        return ast.Input(name=_name(name), dtype=_name(dtype), dims=tuple(dims or ()),
                         **_span(meta))

    @v_args(meta=True)
    def param_stmt(self, meta, children):
        name, dtype, dims, init = children
        return ast.Param(name=_name(name), dtype=_name(dtype), dims=tuple(dims or ()),
                         init=init, **_span(meta))

    @v_args(meta=True)
    def update_stmt(self, meta, children):
        target, value = children
        return ast.Update(target=_name(target), value=value, **_span(meta))

    def dims(self, children):
        return [_number(t) for t in children]

    @v_args(meta=True)
    def assign_stmt(self, meta, children):
        target, value = children
        return ast.Assign(target=_name(target), value=value, **_span(meta))

    @v_args(meta=True)
    def output_stmt(self, meta, children):
        return ast.Output(names=tuple(_name(t) for t in children), **_span(meta))

    def name(self, children):
        return _name(children[0])

    def number(self, children):
        return _number(children[0])

    def neg(self, children):
        minus, operand = children
        if isinstance(operand, ast.Number):
            # `-1e-3` is one literal, so `axis=-1` is an integer literal like `axis=1`.
            text = operand.text[1:] if operand.text.startswith("-") else "-" + operand.text
            return ast.Number(value=-operand.value, text=text, line=minus.line,
                              col=minus.column, end_col=operand.end_col)
        return ast.Neg(operand=operand, line=minus.line, col=minus.column,
                       end_col=operand.end_col)

    def binop(self, children):
        left, op, right = children
        return ast.BinOp(op=str(op), left=left, right=right, op_col=op.column,
                         line=left.line, col=left.col, end_col=right.end_col)

    @v_args(meta=True)
    def call(self, meta, children):
        func, items = children
        return ast.Call(func=str(func), items=tuple(items or ()), **_span(meta))

    def args(self, children):
        return children

    @v_args(meta=True)
    def list(self, meta, children):
        _, items = children
        return ast.ListExpr(items=tuple(items or ()), **_span(meta))

    def items(self, children):
        return children

    @v_args(meta=True)
    def index(self, meta, children):
        value, bracket, subscripts = children
        return ast.Index(value=value, subscripts=tuple(subscripts), bracket_col=bracket.column,
                         **_span(meta))

    def subscripts(self, children):
        return children

    @v_args(meta=True)
    def slice(self, meta, children):
        start, _, stop, _, step = children
        return ast.Slice(start=start, stop=stop, step=step, **_span(meta))

    def keyword(self, children):
        name, value = children
        return ast.Keyword(name=str(name), value=value, line=name.line, col=name.column,
                           end_col=value.end_col)


# ---- syntax error messages --------------------------------------------------------------------

KEYWORD_AS_NAME = "'KEYWORD' is a keyword and cannot be used as a name"
CHAINED_COMPARISON = ("comparisons do not chain: 'a < b < c' is not 'a < b and b < c'; compare "
                      "once and combine the 0/1 results, e.g. (a < b) * (b < c)")

# Each message is chosen when the parser stops in the same state as one of its examples.
# Order matters: the first matching message wins.
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "missing ')'": [
        "y = (x", "y = (x\n", "y = (x + 1", "y = (x * 2\n", "y = (-x", "y = ((x)",
        "y = relu(x", "y = relu(x\n", "y = relu(x + 1", "y = f(x, y", "y = f(x * 2",
        "y = sum(x, axis=1", "y = sum(x, axis=1\n", "y = f(x, -y", "y = f(x, a=y + 1",
        "y = f(x, a=-y",
    ],
    "missing ']'": [
        "y = x[1", "y = x[1\n", "y = x[1:2", "y = x[1, 2", "y = x[::2", "y = x[1:", "y = x[:",
        "y = x[-1", "y = x[1:-1", "y = [1, 2", "y = [1", "y = [-1", "y = f(x, [1, 2",
        "y = f(x, [1", "y = x[(1)", "y = x[1 + 2", "y = [1 + 2",
    ],
    "expected an index: an integer literal, a slice a:b:c or ':'": [
        "y = x[", "y = x[\n", "y = x[1, ", "y = x[1,", "y = x[)", "y = x[=", "y = x[,",
        "y = x[1, )", "y = x[1, =", "y = x[1, ,", "y = x[*", "y = x[1, *", "y = x []",
        "y = x[]", "y = x[1, ]",
    ],
    "expected ',' or ']'": [
        "y = x[1 2]", "y = [1 2]", "y = x[1:2 3]", "y = x[1 y]", "y = x[1:2:3:4]",
        "y = x[1 )", "y = [1 )", "y = x[1 =", "y = [1 =", "y = [x y]", "y = f(x, [2 3])",
        "y = f(x, [2 x])", "y = x[a b]", "y = x[1:a b]", "y = x[:, 1:2 3]",
    ],
    "unexpected ')' without a matching '('": [
        "y = x)", "y = x + 1)", "y = relu(x))", "y = 2)", "y = -x)", "y = x * y)",
    ],
    "expected an expression": [
        "y = ", "y =\n", "y = x +", "y = x + \n", "y = x *", "y = x * \n", "y = x @", "y = x /",
        "y = x -", "y = (", "y = (\n", "y = -", "y = --", "y = relu(", "y = relu(\n",
        "y = f(x,", "y = f(x, ", "y = f(x,)", "y = f(x, axis=)", "y = f(x, axis=", "y = x + )",
        "y = x * )", "y = ()", "y = x + *", "y = x * *", "y = - )", "y = ,", "y = f(,",
        "y = f(x, a=,", "y = (,", "y = -,", "y = x + ,", "y = x * ,", "y = =", "y = x + =",
        "y = x * =", "y = f(=", "y = (=", "y = f(x, a=)", "y = f(x, a==", "y = x + :",
        "y = :", "y = x * :", "y = - =", "y = - :", "y = (:", "y = f(:", "y = f(x, a=:",
        "y = x + [", "y = [", "y = x * [", "y = -[", "y = ([", "y = f([", "y = f(x, a=[",
        "y = x + ]", "y = ]", "y = x * ]", "y = -]", "y = (]", "y = f(]",
    ],
    "a keyword argument needs a name: write axis=K": [
        "y = f(x, 1=2)", "y = f(x, (a)=2)", "y = f(x, a + b=2)",
    ],
    "expected ',' or ')' in the argument list": [
        "y = f(x y)", "y = f(x 2)", "y = f(x, a=1 2)", "y = f(x, a=1 b)",
    ],
    "expected an operator or the end of the line (one statement per line)": [
        "param w: f32[2] = 1 y", "param w: f32[2] = glorot y", "param w: f32[2] = 1 2",
        "param w: f32[2] = 1 =", "param w: f32[2] = 1 ,", "param w: f32[2] = 1 )",
        "update w = x y", "update w = x 2", "update w = x =", "update w = x ,",
        "y = x z", "y = x 2", "y = x\ty", "y = 2 x", "y = relu(x) y", "y = (x) y", "y = -x y",
        "y = x z = 2", "y = x output y", "y = x input x", "y = 2 (y)",
        "y = x ,", "y = x, z", "y = x =", "y = x = 2", "y = x :", "y = x ]",
        "y = x input", "y = x output",
    ],
    "expected '=' after the name (statements are 'NAME = EXPR', 'input ...', 'param ...', "
    "'update ...' or 'output ...')": [
        "y", "y\n", "y x", "y 2", "y + 1", "y (x)", "y(x)", "y, z", "y: f32[2]", "y - 1",
        "y * 2", "y @ 2", "y / 2", "y)", "y]", "y[", "y input", "y output", "y -", "y *",
    ],
    "a statement starts with a name, 'input', 'param', 'update' or 'output'": [
        "2", "(x)", "-x", "= 2", "+ 1", "* 2", ")", ", x", ": x", "[", "]", "@", "/", "- 1",
    ],
    "expected a name after 'input': input NAME: DTYPE[D0, D1, ...]": [
        "input", "input\n", "input 2", "input (x)", "input :", "input x y", "input [",
        "input ]", "input ,", "input -", "input )", "input *",
    ],
    "expected ':' after the input's name: input NAME: DTYPE[D0, D1, ...]": [
        "input x", "input x\n", "input x f32[2]", "input x = 2", "input x[2]", "input x, y",
        "input x 2", "input x (", "input x )", "input x -", "input x ]", "input x *",
    ],
    "expected a dtype (f32 or bf16) after ':': input NAME: DTYPE[D0, D1, ...]": [
        "input x:", "input x:\n", "input x: [2]", "input x: 2", "input x: (", "input x: :",
        "input x: ,", "input x: -", "input x: ]", "input x: =", "input x: )", "input x: *",
    ],
    "expected '[' and the shape after the dtype: input NAME: DTYPE[D0, D1, ...]": [
        "input x: f32", "input x: f32\n", "input x: f32 2", "input x: f32 y", "input x: f32(2)",
        "input x: f32 ]", "input x: f32 :", "input x: f32 ,", "input x: f32 -", "input x: f32 =",
        "input x: f32 )", "input x: f32 *",
    ],
    "expected a dimension (a positive integer) in the shape": [
        "input x: f32[y]", "input x: f32[-1]", "input x: f32[2, ]", "input x: f32[2,",
        "input x: f32[2, y]", "input x: f32[(2)]", "input x: f32[2, -1]", "input x: f32[:",
        "input x: f32[2, ,", "input x: f32[2,\n", "input x: f32[[", "input x: f32[=",
        "input x: f32[2, [", "input x: f32[2, =", "input x: f32[2, :", "input x: f32[2, )",
        "input x: f32[)", "input x: f32[2, *", "input x: f32[*",
        "param x: f32[y]", "param x: f32[-1]", "param x: f32[(2)]", "param x: f32[:",
        "param x: f32[[", "param x: f32[=", "param x: f32[)", "param x: f32[*",
        "param x: f32[", "param x: f32[\n",
    ],
    "expected ',' or ']' in the shape": [
        "input x: f32[2", "input x: f32[2\n", "input x: f32[2 3]", "input x: f32[2, 3",
        "input x: f32[2)", "input x: f32[2 y]", "input x: f32[2, 3 4]", "input x: f32[2:",
        "input x: f32[2 [", "input x: f32[2 -", "input x: f32[2 =", "input x: f32[2 *",
    ],
    "expected the end of the line after the shape (one statement per line)": [
        "input x: f32[2] y", "input x: f32[2] 2", "input x: f32[2] = 1", "input x: f32[2],",
        "input x: f32[2] input y", "input x: f32[2] output x", "input x: f32[2][3]",
        "input x: f32[2] (", "input x: f32[2] )", "input x: f32[2] :", "input x: f32[2] ]",
        "input x: f32[2] -", "input x: f32[2] *",
    ],
    "expected a name after 'param': param NAME: DTYPE[D0, D1, ...] = INIT": [
        "param", "param\n", "param 2", "param (x)", "param :", "param [", "param ]",
        "param ,", "param -", "param )", "param *",
    ],
    "expected ':' after the param's name: param NAME: DTYPE[D0, D1, ...] = INIT": [
        "param x", "param x\n", "param x f32[2]", "param x = 2", "param x[2]", "param x, y",
        "param x 2", "param x (", "param x )", "param x -", "param x ]", "param x *",
    ],
    "expected a dtype (f32 or bf16) after ':': param NAME: DTYPE[D0, D1, ...] = INIT": [
        "param x:", "param x:\n", "param x: [2]", "param x: 2", "param x: (", "param x: :",
        "param x: ,", "param x: -", "param x: ]", "param x: =", "param x: )", "param x: *",
    ],
    "expected '[' and the shape after the dtype: param NAME: DTYPE[D0, D1, ...] = INIT": [
        "param x: f32", "param x: f32\n", "param x: f32 2", "param x: f32 y",
        "param x: f32(2)", "param x: f32 ]", "param x: f32 :", "param x: f32 ,",
        "param x: f32 -", "param x: f32 =", "param x: f32 )", "param x: f32 *",
    ],
    "expected '= INIT' or the end of the line after the shape (INIT: a number literal, "
    "glorot or normal(STD))": [
        "param x: f32[2] y", "param x: f32[2] 2", "param x: f32[2],", "param x: f32[2] (",
        "param x: f32[2] )", "param x: f32[2] :", "param x: f32[2] ]", "param x: f32[2] -",
        "param x: f32[2] *", "param x: f32[2][3]", "param x: f32[2] input y",
    ],
    "expected the initial value after '=': a number literal, glorot or normal(STD)": [
        "param x: f32[2] =", "param x: f32[2] =\n", "param x: f32[2] = =",
        "param x: f32[2] = ,", "param x: f32[2] = )", "param x: f32[2] = :",
        "param x: f32[2] = ]", "param x: f32[2] = *",
    ],
    "expected the name of a param after 'update': update NAME = EXPR": [
        "update", "update\n", "update 2", "update (x)", "update :", "update [", "update ]",
        "update ,", "update -", "update )", "update *",
    ],
    "expected '=' after the param's name: update NAME = EXPR": [
        "update w", "update w\n", "update w 2", "update w x", "update w :", "update w (",
        "update w ,", "update w )", "update w [", "update w ]", "update w -", "update w *",
        "update w + 1",
    ],
    "expected an expression after '=': update NAME = EXPR": [
        "update w =", "update w =\n", "update w = =", "update w = ,", "update w = )",
        "update w = :", "update w = ]", "update w = *",
    ],
    "expected a name after 'output'": [
        "output", "output\n", "output 2", "output (x)", "output x,", "output x,\n",
        "output x, 2", "output -x", "output ,", "output x, (", "output :",
        "output [", "output ]", "output )", "output *", "output x, ,", "output x, -",
        "output x, :", "output x, =", "output x, [", "output x, ]", "output x, )",
        "output x, *",
    ],
    "expected ',' or the end of the line after an output name": [
        "output x y", "output x 2", "output x = 2", "output x (y)", "output x[0]", "output x:",
        "output x + 1", "output x input", "output x output", "output x )", "output x ]",
        "output x -", "output x *", "output x @",
    ],
    # Last, so it wins only on an exact match of the '=' token. The message names the keyword.
    KEYWORD_AS_NAME: [
        "input = 2", "output = 2", "input =", "output =", "param = 2", "param =",
        "update = 2", "update =",
    ],
}

# How terminals read in a message.
TERMINAL_TEXT = {
    "NAME": "a name", "NUMBER": "a number", "_NL": "end of line", "$END": "end of file",
    "CMP": "a comparison", "POW": "'**'",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "LPAR": "'('",
    "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "INPUT": "'input'", "OUTPUT": "'output'", "PARAM": "'param'", "UPDATE": "'update'",
}
EXPRESSION_START = frozenset({"LPAR", "LSQB", "MINUS", "NAME", "NUMBER"})


def describe_syntax_error(e: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    """The located diagnostic for a Lark parse error."""
    line, col, width = e.line, e.column, 1
    if isinstance(e, UnexpectedCharacters):
        char = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        message = f"unexpected character {char!r}"
        if char in "\"'":
            message += "; the language has no strings"
        elif char == "^":
            message += "; the power operator is '**'"
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            line, col = end_position(text)
        message = _token_message(e, source_line(text, line) or "")
        if tok.type not in ("$END", "_NL"):
            width = max(len(str(tok)), 1)
            message = f"unexpected {_token_text(tok)}: {message}"
            if tok.type == "STAR" and _follows_star(text, tok.start_pos):
                message += "; the power operator '**' is written without a space"
    else:
        message = "unexpected end of file"
    if line is None or line < 1:
        line, col = end_position(text)
    return Diagnostic(filename, line, col, message, source_line(text, line), width=width)


def _token_message(e: UnexpectedToken, line_text: str) -> str:
    """What the parser wanted, in words.

    Lark compares parser states including the stack depth, so the offending line is re-parsed
    on its own (every statement is one line, and each line starts in the same parser state) and
    that error is matched against the examples. Errors no example covers, such as deeply nested
    parentheses, fall back to reading the set of acceptable terminals.
    """
    if _chained_comparison(e):
        return CHAINED_COMPARISON
    isolated = _isolated_error(line_text)
    if isolated is not None:
        label = _match_examples(isolated)
        if label == KEYWORD_AS_NAME:
            return label.replace("KEYWORD", line_text.split()[0])
        if label is not None:
            return label
    return _message_from_accepts(e)


def _chained_comparison(e: UnexpectedToken) -> bool:
    """A comparison operator where the parser has a whole operand and would take '+' but no
    comparison: only right after `a < b`, since a comparison is allowed anywhere else an operand
    ends."""
    accepts = set(e.accepts or e.expected)
    return e.token.type == "CMP" and "PLUS" in accepts and "CMP" not in accepts


def _follows_star(text: str, pos: int) -> bool:
    """True if the '*' at `pos` comes after another '*' with only blanks between: `x * * 2`."""
    before = text[:pos].rstrip(" \t\f")
    return before.endswith("*") and not before.endswith("**")


def _isolated_error(line_text: str) -> UnexpectedToken | None:
    try:
        parser().parse(line_text + "\n")
    except UnexpectedToken as e:
        return e
    except UnexpectedInput:
        return None
    return None


def _message_from_accepts(e: UnexpectedToken) -> str:
    accepts = set(e.accepts or e.expected)
    tok = e.token.type
    # Where only an expression may come, a ')' is a missing operand (`(x + )`, `f(a, b, )`),
    # whether or not a '(' is open.
    if accepts and accepts <= EXPRESSION_START:
        return "expected an expression"
    if tok == "RPAR" and "RPAR" not in accepts:
        return "unexpected ')' without a matching '('"
    if "RPAR" in accepts and tok in ("_NL", "$END"):
        return "missing ')'"
    if "RSQB" in accepts and tok in ("_NL", "$END"):
        return "missing ']'"
    if "RSQB" in accepts and "COMMA" in accepts:
        return "expected an operator, ',' or ']'"
    if "RPAR" in accepts and "COMMA" in accepts:
        return "expected an operator, ',' or ')'"
    if "RPAR" in accepts:
        return "expected an operator or ')'"
    if "_NL" in accepts and "PLUS" in accepts:
        return "expected an operator or the end of the line (one statement per line)"
    wanted = sorted(TERMINAL_TEXT.get(t, t) for t in accepts)
    if not wanted:
        return "syntax error"
    if len(wanted) == 1:
        return f"expected {wanted[0]}"
    return f"expected {', '.join(wanted[:-1])} or {wanted[-1]}"


@cache
def _examples() -> dict[str, tuple[str, ...]]:
    """The examples as whole lines: each ends in a newline, as an isolated line does."""
    return {label: tuple(dict.fromkeys(ex if ex.endswith("\n") else ex + "\n" for ex in exs))
            for label, exs in SYNTAX_EXAMPLES.items()}


@cache
def _example_error(example: str) -> UnexpectedInput | None:
    try:
        parser().parse(example)
    except UnexpectedInput as e:
        return e
    return None


def _match_examples(e: UnexpectedToken) -> str | None:
    """The label of the first example that stops in the same parser state as `e`, expecting the
    same terminals; one that also stops at the same token wins outright.

    This is `UnexpectedInput.match_examples(..., use_accepts=True)`, written out because Lark's
    own formats a debug message with '%d' and the parser state when an example's state matches
    but its accepted terminals do not, and so raises TypeError (seen with Lark 1.2)."""
    candidate = None
    for label, examples in _examples().items():
        for example in examples:
            ut = _example_error(example)
            if ut is None or ut.state != e.state:
                continue
            if isinstance(ut, UnexpectedToken) and ut.accepts != e.accepts:
                continue
            if getattr(ut, "token", None) == e.token:
                return label
            if candidate is None:
                candidate = label
    return candidate


def _token_text(tok: Token) -> str:
    if tok.type in ("$END", "_NL"):
        return TERMINAL_TEXT[tok.type]
    kind = "number" if tok.type == "NUMBER" else "token"
    return f"{kind} {str(tok)!r}"


def end_position(text: str) -> tuple[int, int]:
    """(line, col) just past the last character, where an unexpected end of file is reported."""
    lines = text.split("\n")
    return len(lines), len(lines[-1].rstrip("\r")) + 1


def source_line(text: str, line: int) -> str | None:
    """Line `line` (1-based) as Lark counts lines, i.e. split on '\\n' only."""
    lines = text.split("\n")
    if 1 <= line <= len(lines):
        return lines[line - 1].rstrip("\r")
    return None
