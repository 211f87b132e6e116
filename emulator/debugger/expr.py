"""The debugger's expression language: conditions of breakpoints, `print`, addresses.

    tree = parse("mem32[r1 + 8] == 3 && x > 0")     # a tree, every node with its offset
    get = compile(tree, lookup, text)               # node id -> int
    get(5)

It is the language of d1isa.expr (one tokenizer, parser and tree with the assembler's) in its
DEBUGGER dialect: integers, names (registers, pc, clock, x, y, id, T, symbols: whatever the
`Lookup` resolves), `mem8/16/32/64[ADDR]`, C operators with C precedence and C division,
`c ? a : b`, and `and`/`or`/`not`. Never Python `eval`. What the names and the memory are is
the debugger's `Lookup` (core._Names). Every error is an `ExprError` carrying the expression
text and the offset it refers to (`ExprError.caret()`).
"""

from __future__ import annotations

from d1isa import expr as language
from d1isa.expr import (
    At,
    Binary,
    Cond,
    Expr,
    ExprError,
    Getter,
    Lookup,
    Mem,
    Name,
    Num,
    Unary,
    compile,
)

__all__ = ["At", "Binary", "Cond", "Expr", "ExprError", "Getter", "Lookup", "Mem", "Name", "Num",
           "Unary", "compile", "parse"]


def parse(text: str) -> Expr:
    """Parse a debugger expression into its tree; ExprError (with the offset) if it is
    malformed."""
    return language.parse(text, dialect=language.DEBUGGER)
