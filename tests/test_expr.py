"""The one expression language (d1isa.expr) in both its dialects: the assembler's (folded,
@ symbols, no memory reads or word operators) and the debugger's (mem8..mem64, and/or/not);
C precedence, positions in the tree, every syntax error with its position in each dialect's
wording, and the two back ends (`evaluate`, `compile`) agreeing on every expression."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1isa.errors import D1Error
from d1isa.expr import (
    ASSEMBLY,
    DEBUGGER,
    At,
    Binary,
    Cond,
    ExprError,
    Mem,
    Name,
    NeedsNode,
    Num,
    Unary,
    compile,
    evaluate,
    parse,
    tokenize,
)

CONSTS = {"w": 4, "h": 4, "n": 16, "sram": 1310720}
NAMES = {"a": 10, "b": 3, "c": -7}


def value_of(name: str, pos: int) -> int:
    if name in NAMES:
        return NAMES[name]
    raise ExprError(f"unknown name '{name}'", pos, len(name))


class Names:
    """compile's view: the same names (a node-independent value each), x y id (also spelt @x @y,
    as the debugger's dialect leaves them to the lookup) of a node of a 4-wide mesh, and a memory
    whose every address holds itself."""

    def name(self, ident: str):
        if ident in NAMES:
            v = NAMES[ident]
            return lambda node: v
        if ident.lstrip("@") in ("x", "y", "id"):
            key = ident.lstrip("@")
            return lambda node: {"x": node % 4, "y": node // 4, "id": node}[key]
        raise ExprError(f"unknown name {ident!r}")

    def memory(self, node: int, width: int, addr: int) -> int:
        if addr >= 1000:
            raise ExprError(f"mem{8 * width}[{addr}]: address outside SRAM")
        return addr


def asm_value(text: str, node=(2, 1, 6)) -> int:
    return evaluate(parse(text, CONSTS), value_of, node)


def dbg_value(text: str, node: int = 6) -> int:
    return compile(parse(text, dialect=DEBUGGER), Names(), text)(node)


# ---- one tree, C precedence ----------------------------------------------------------------------

def test_both_dialects_build_the_same_tree_with_positions():
    text = "a + b * c == d && !e"
    want = Binary("&&", Binary("==", Binary("+", Name("a"), Binary("*", Name("b"), Name("c"))),
                               Name("d")), Unary("!", Name("e")))
    for dialect in (ASSEMBLY, DEBUGGER):
        tree = parse(text, dialect=dialect)
        assert tree == want
        assert (tree.pos, tree.left.pos, tree.left.left.pos, tree.left.left.right.pos) == \
            (15, 10, 2, 6)
        assert (tree.right.pos, tree.right.arg.pos, tree.left.right.pos) == (18, 19, 13)


@pytest.mark.parametrize("text, value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("1 << 4 | 3", 19), ("6 & 3 ^ 1", 3),
    ("1 | 6 ^ 3 & 5", 7), ("2 + 3 << 1", 10), ("3 == 3 < 2", 0), ("1 < 2 == 1", 1),
    ("1 || 0 && 0", 1), ("-7 / 2", -3), ("-7 % 2", -1), ("7 / -2", -3), ("7 % -2", 1),
    ("-2 * -3", 6), ("~0", -1), ("!5", 0), ("!0", 1), ("+5", 5), ("--5", 5), ("!!7", 1),
    ("10 - 3 - 2", 5), ("64 / 4 / 2", 8), ("1 ? 2 : 0 ? 3 : 4", 2), ("0 ? 2 : 0 ? 3 : 4", 4),
    ("0 || 1 ? 5 : 6", 5), ("1 ? 2 : 3 + 4", 2), ("0 ? 2 : 3 + 4", 7), ("256 >> 4", 16),
    ("-1 >> 1", -1), ("2 > 1 > 0", 1),
])
def test_c_precedence_and_c_division_in_both_dialects(text, value):
    assert asm_value(text) == value
    assert dbg_value(text) == value


def test_literals():
    for text, value in (("42", 42), ("0x2a", 42), ("0X2A", 42), ("0b101010", 42), ("0o52", 42),
                        ("1_000", 1000), ("0x_ff", 255), ("007", 7), ("0", 0)):
        assert parse(text) == Num(value) == parse(text, dialect=DEBUGGER), text


# ---- what each dialect accepts -------------------------------------------------------------------

def test_the_assembler_folds_constants_and_machine_symbols():
    assert parse("@w * 2 + (@sram >> 16)", CONSTS) == Num(28)
    assert parse("1 ? a : b") == Name("a") and parse("0 ? a : b") == Name("b")
    assert parse("-(3 - 5)") == Num(2)
    assert parse("a + 2 * 3") == Binary("+", Name("a"), Num(6))
    assert parse("@x + @y * @w", CONSTS) == Binary("+", At(0), Binary("*", At(1), Num(4)))
    assert parse("@id ? 1 : 2") == Cond(At(2), Num(1), Num(2))


def test_the_debugger_folds_nothing_so_failures_wait_for_evaluation():
    assert parse("1 + 2", dialect=DEBUGGER) == Binary("+", Num(1), Num(2))
    tree = parse("1 / 0", dialect=DEBUGGER)
    assert tree == Binary("/", Num(1), Num(0))
    with pytest.raises(ExprError, match="division by zero"):
        parse("1 / 0")


def test_folding_fails_only_where_evaluation_would_reach():
    """`&&`, `||` and `?:` short-circuit: a constant that cannot fold in a branch they may skip
    (a guarded division by a machine symbol) is an error only if the branch is taken."""
    one_wide = {**CONSTS, "w": 1}
    assert parse("@w > 1 ? 64 / (@w - 1) : 64", one_wide) == Num(64)
    assert asm_value("0 && 1 / 0") == 0 and asm_value("1 || 1 << 5000") == 1
    assert asm_value("0 ? 1 % 0 : 5") == 5 and asm_value("1 ? 5 : 1 / 0") == 5
    with pytest.raises(ExprError) as e:
        asm_value("1 && 1 / 0")
    assert (e.value.msg, e.value.pos) == ("division by zero", 7)
    with pytest.raises(ExprError) as e:
        asm_value("0 ? 1 : 1 << 5000")
    assert (e.value.msg, e.value.pos) == ("shift count 5000 is out of range 0..4096", 10)


def test_the_debugger_reads_memory_and_word_operators():
    assert parse("mem32[a + 4]", dialect=DEBUGGER) == Mem(4, Binary("+", Name("a"), Num(4)))
    assert parse("MEM8 [1]", dialect=DEBUGGER) == Mem(1, Num(1))
    assert parse("mem16", dialect=DEBUGGER) == Name("mem16")      # a name without '['
    assert parse("a and not b or c", dialect=DEBUGGER) == \
        Binary("||", Binary("&&", Name("a"), Unary("!", Name("b"))), Name("c"))
    assert parse("@x", dialect=DEBUGGER) == Name("@x")             # for its lookup to judge
    assert dbg_value("mem64[a + 8] + mem8[2]") == 20
    assert dbg_value("a > 5 and not 0 or 0") == 1


@pytest.mark.parametrize("text, pos, width, message", [
    ("mem32[4]", 5, 1, "unexpected '['"),
    ("a and b", 2, 3, "unexpected 'and'"),
    ("not a", 4, 1, "unexpected 'a'"),
    ("@foo", 0, 4, "unknown node symbol '@foo' (known: @x @y @id @w @h @n @sram)"),
    ("", 0, 1, "expected an expression"),
    ("1 +", 3, 1, "expected an expression"),
    ("a + * b", 4, 1, "unexpected '*' in an expression"),
    ("(3", 2, 1, "expected ')', found the end of the line"),
    ("(3 4", 3, 1, "expected ')', found '4'"),
    ("1 ? 2", 5, 1, "expected ':' in 'c ? a : b', found the end of the line"),
    ("3 ` 4", 2, 1, "unexpected character '`'"),
    ("3 $ 4", 2, 1, "unexpected '$'"),
    ("1.5", 0, 3, "'1.5' is not an integer (a float is allowed only as an fp32 value)"),
    ("0x1g", 0, 4, "bad number '0x1g'"),
    ("1 / (2 - 2)", 2, 1, "division by zero"),
    ("1 << 5000", 2, 2, "shift count 5000 is out of range 0..4096"),
    ("(" * 600 + "1" + ")" * 600, 0, 1, "expression is nested too deeply"),
])
def test_assembler_syntax_errors(text, pos, width, message):
    with pytest.raises(ExprError) as e:
        parse(text, CONSTS)
    assert (e.value.msg, e.value.pos, e.value.width) == (message, pos, width)


@pytest.mark.parametrize("text, pos, message", [
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    ("1 +", 3, "expression '1 +' ends too early"),
    ("(1 + 2", 6, "missing ')' in expression '(1 + 2'"),
    ("mem8[1", 6, "missing ']' in expression 'mem8[1'"),
    ("1 ? 2", 5, "missing ':' in expression '1 ? 2'"),
    ("1 2", 2, "unexpected 2 in expression '1 2'"),
    ("a # b", 2, "unexpected character '#' in expression 'a # b'"),
    ("1, 2", 1, "unexpected character ',' in expression '1, 2'"),
    ("a = 1", 2, "unexpected character '=' in expression 'a = 1'"),
    ('"s"', 0, "unexpected character '\"' in expression '\"s\"'"),
    ("1 + )", 4, "unexpected ')' in expression '1 + )'"),
    ("1 and", 5, "expression '1 and' ends too early"),
    ("1 + or 2", 4, "unexpected '||' in expression '1 + or 2'"),
    ("1.5", 0, "bad number '1.5' in expression '1.5'"),
    ("(" * 600 + "1" + ")" * 600, 0, "expression is nested too deeply"),
])
def test_debugger_syntax_errors_carry_position_and_caret(text, pos, message):
    with pytest.raises(ExprError) as e:
        parse(text, dialect=DEBUGGER)
    assert (str(e.value), e.value.pos, e.value.column) == (message, pos, pos + 1)
    assert e.value.caret().endswith("\n" + " " * pos + "^")


class _Lookup:
    def name(self, ident):
        return lambda node: NAMES[ident]

    def memory(self, node, width, addr):
        raise ExprError("no memory", -1)


def test_a_long_chain_of_names_is_nested_too_deeply_not_a_recursion_error():
    """`a+a+...+a` parses without recursion (a loop), into a left-deep tree that evaluating
    and compiling walk recursively: 5,000 terms were a RecursionError (exit 3) in `d1 asm`
    and at the debugger's prompt; short chains still evaluate."""
    text = "+".join(["a"] * 5000)
    with pytest.raises(ExprError, match="expression is nested too deeply"):
        evaluate(parse(text, CONSTS), value_of)
    tree = parse(text, dialect=DEBUGGER)
    with pytest.raises(ExprError, match="expression is nested too deeply"):
        compile(tree, _Lookup(), text)
    short = "+".join(["a"] * 100)
    assert evaluate(parse(short, CONSTS), value_of) == 1000
    assert compile(parse(short, dialect=DEBUGGER), _Lookup(), short)(0) == 1000


def test_the_assembler_tokenizer_also_reads_directive_arguments():
    assert tokenize('t input f32[4, 2] "name", x = 1') == [
        ("name", "t", 0), ("name", "input", 2), ("name", "f32", 8), ("op", "[", 11),
        ("num", "4", 12), ("op", ",", 13), ("num", "2", 15), ("op", "]", 16),
        ("str", '"name"', 18), ("op", ",", 24), ("name", "x", 26), ("op", "=", 28),
        ("num", "1", 30), ("end", "", 31)]
    assert tokenize("a and @x", DEBUGGER) == [
        ("name", "a", 0), ("op", "&&", 2), ("name", "@x", 6), ("end", "", 8)]


# ---- evaluating: the assembler's evaluate, the debugger's compile --------------------------------

def test_evaluate_resolves_names_and_node_symbols_each_time():
    tree = parse("a + 4 * (b & 0xff) - @x", CONSTS)
    seen = []

    def lookup(name: str, pos: int) -> int:
        seen.append((name, pos))
        return NAMES[name]
    assert evaluate(tree, lookup, (2, 0, 2)) == 10 + 12 - 2
    assert seen == [("a", 0), ("b", 9)]
    with pytest.raises(NeedsNode):
        evaluate(tree, lookup)


def test_evaluate_short_circuits_and_locates_its_errors():
    assert asm_value("0 && nosuch") == 0 and asm_value("1 || nosuch") == 1
    assert asm_value("a ? 5 : nosuch") == 5 and asm_value("a - 10 ? nosuch : 6") == 6
    with pytest.raises(ExprError) as e:
        asm_value("1 + nosuch")
    assert (e.value.msg, e.value.pos, e.value.width) == ("unknown name 'nosuch'", 4, 6)
    with pytest.raises(ExprError) as e:
        asm_value("a % (b - 3)")
    assert (e.value.msg, e.value.pos, e.value.width) == ("division by zero", 2, 1)
    with pytest.raises(ExprError) as e:
        asm_value("b >> -a")
    assert (e.value.msg, e.value.pos, e.value.width) == \
        ("shift count -10 is out of range 0..4096", 2, 2)
    with pytest.raises(ExprError, match=r"mem32\[\.\.\.\] needs a node's memory"):
        evaluate(parse("mem32[0]", dialect=DEBUGGER), value_of)


def test_compile_resolves_names_once_and_evaluates_per_node():
    asked = []

    class Counting(Names):
        def name(self, ident: str):
            asked.append(ident)
            return super().name(ident)
    get = compile(parse("x + 10 * y + a", dialect=DEBUGGER), Counting())
    assert [get(n) for n in (0, 5, 6)] == [10, 21, 22]
    assert asked == ["x", "y", "a"]
    get = compile(parse("@x + 10 * @y", CONSTS), Names())       # node symbols as x and y
    assert get(6) == 12


@pytest.mark.parametrize("text, pos, message", [
    ("b + nosuch", 4, "unknown name 'nosuch'"),
    ("1 + a / (b - 3)", 6, "division by zero in expression"),
    ("b << 9999", 2, "shift count 9999 is outside 0..4096"),
    ("1 + mem32[2000]", 4, "mem32[2000]: address outside SRAM"),
    ("0 ? 1 : 1 % 0", 10, "division by zero in expression"),
])
def test_compile_errors_carry_the_position_of_their_node(text, pos, message):
    with pytest.raises(ExprError) as e:
        dbg_value(text)
    assert (str(e.value), e.value.pos) == (message, pos)
    assert e.value.caret() == f"{text}\n{' ' * pos}^"


def test_an_expression_error_is_a_d1_error_with_a_location():
    e = ExprError("boom")
    assert isinstance(e, D1Error) and str(e) == "boom"
    assert (e.pos, e.column, e.caret(), e.line, e.transient) == (-1, 0, "", None, False)
    e = ExprError("boom", 3, 2, text="abcdef", line=4, col=9, transient=True)
    assert (e.column, e.caret(), e.width, e.line, e.col) == (4, "abcdef\n   ^", 2, 4, 9)


# ---- both back ends on random expressions --------------------------------------------------------

ATOMS = st.sampled_from(["a", "b", "c", "0", "1", "3", "7", "0x10", "-2", "@x", "@y"])
BINARY_OPS = st.sampled_from(["+", "-", "*", "/", "%", "<<", ">>", "&", "|", "^", "==", "!=",
                              "<", "<=", ">", ">=", "&&", "||"])


@st.composite
def expressions(draw, depth: int = 0) -> str:
    kind = draw(st.integers(0, 9 if depth < 4 else 0))
    if kind <= 3:
        return draw(ATOMS)
    if kind == 4:
        return draw(st.sampled_from(["-", "~", "!", "+"])) + draw(expressions(depth + 1))
    if kind == 5:
        return f"({draw(expressions(depth + 1))})"
    if kind == 6:
        return (f"{draw(expressions(depth + 1))} ? {draw(expressions(depth + 1))} : "
                f"{draw(expressions(depth + 1))}")
    return f"{draw(expressions(depth + 1))} {draw(BINARY_OPS)} {draw(expressions(depth + 1))}"


def _outcome(fn):
    try:
        return "value", fn()
    except ExprError as e:
        return "error", e.pos


@settings(max_examples=400, deadline=None)
@given(expressions())
def test_both_back_ends_and_both_dialects_agree(text):
    """An expression's assembler tree, unfolded, under evaluate and compiled, and the debugger's
    tree compiled: the same value, or an error at the same place. Folded, the assembler's tree
    has the same value, unless folding already failed (in a branch that might not be taken)."""
    node = 6                                   # x = 2, y = 1 on a 4-wide mesh
    unfolded = parse(text, CONSTS, replace(ASSEMBLY, fold=False))
    want = _outcome(lambda: evaluate(unfolded, value_of, (2, 1, node)))
    assert _outcome(lambda: compile(unfolded, Names(), text)(node)) == want
    assert _outcome(lambda: compile(parse(text, dialect=DEBUGGER), Names(), text)(node)) == want
    try:
        folded = parse(text, CONSTS)
    except ExprError as e:
        assert e.msg == "division by zero" or e.msg.startswith("shift count")
    else:
        assert _outcome(lambda: evaluate(folded, value_of, (2, 1, node))) == want
