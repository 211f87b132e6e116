"""The parse pass on its own: `.d1k` text -> compiler.ast nodes with positions, or one located
syntax error.

Every test calls `compiler.parse.parse` (what compiler.pipeline.compile_text calls) on a few
lines and looks only at the syntax tree or the SourceError it gives: node kinds, the 1-based
line/col/end_col spans the checker's carets rely on, and where a syntax error is placed.
(test_dsl_frontend.py keeps the catalogue of syntax error messages.)
"""

from __future__ import annotations

import pytest

from compiler import ast
from compiler.parse import parse
from d1isa.errors import D1Error, SourceError


def statement(text: str):
    (s,) = parse(text).statements
    return s


def syntax_error(text: str, filename: str = "k.d1k"):
    with pytest.raises(SourceError) as info:
        parse(text, filename)
    return info.value


def span(node) -> tuple[int, int, int]:
    return node.line, node.col, node.end_col


# ---- statements -------------------------------------------------------------------------------

def test_statements_come_back_in_source_order_with_their_kinds():
    text = ("# a comment line\n"
            "input x: f32[4]\n"
            "\n"
            "y = x + 1   # trailing comment\n"
            "output y\n")
    prog = parse(text)
    assert [type(s) for s in prog.statements] == [ast.Input, ast.Assign, ast.Output]
    assert [s.line for s in prog.statements] == [2, 4, 5]


def test_program_remembers_its_filename():
    assert parse("output y\n", "dir/model.d1k").filename == "dir/model.d1k"


def test_input_spans_cover_the_name_the_dtype_and_every_dimension():
    s = statement("input w1: bf16[784, 256]\n")
    assert isinstance(s, ast.Input)
    assert span(s) == (1, 1, 25)
    assert (s.name.id, span(s.name)) == ("w1", (1, 7, 9))
    assert (s.dtype.id, span(s.dtype)) == ("bf16", (1, 11, 15))
    assert [(d.text, d.value, d.col, d.end_col) for d in s.dims] == [
        ("784", 784.0, 16, 19), ("256", 256.0, 21, 24)]


def test_input_dimensions_stay_literal_text():
    # The checker rejects "2.0" and "0" with a caret on the literal, so the parser keeps them.
    s = statement("input x: f32[2.0, 0]\n")
    assert [d.text for d in s.dims] == ["2.0", "0"]


def test_output_lists_each_name_with_its_own_position():
    s = statement("output a, bb\n")
    assert isinstance(s, ast.Output)
    assert [(n.id, n.col, n.end_col) for n in s.names] == [("a", 8, 9), ("bb", 11, 13)]


def test_indented_statement_after_blank_lines_keeps_its_line_and_column():
    s = statement("\n\n  y = x\n")
    assert isinstance(s, ast.Assign)
    assert span(s) == (3, 3, 8)
    assert span(s.target) == (3, 3, 4)
    assert span(s.value) == (3, 7, 8)


# ---- expressions ------------------------------------------------------------------------------

def test_binop_spans_from_its_left_operand_to_its_right_and_records_the_operator_column():
    e = statement("y = a + bc").value
    assert isinstance(e, ast.BinOp)
    assert (e.op, e.op_col, span(e)) == ("+", 7, (1, 5, 11))
    assert span(e.left) == (1, 5, 6) and span(e.right) == (1, 9, 11)


def test_parentheses_shape_the_tree_but_leave_no_node():
    e = statement("y = (a + b) * c").value
    assert isinstance(e, ast.BinOp) and e.op == "*"
    assert isinstance(e.left, ast.BinOp) and e.left.op == "+"
    assert e.op_col == 13


def test_minus_before_a_literal_is_folded_into_one_number_starting_at_the_minus():
    e = statement("y = b * -2.5e1").value
    lit = e.right
    assert isinstance(lit, ast.Number)
    assert (lit.value, lit.text, lit.col, lit.end_col) == (-25.0, "-2.5e1", 9, 15)


def test_minus_before_a_name_is_a_neg_node_at_the_minus():
    e = statement("y = -abc").value
    assert isinstance(e, ast.Neg)
    assert span(e) == (1, 5, 9)
    assert isinstance(e.operand, ast.Name) and e.operand.id == "abc"


def test_double_minus_on_a_literal_folds_back_to_positive():
    lit = statement("y = --3").value
    assert isinstance(lit, ast.Number) and (lit.value, lit.text) == (3.0, "3")


def test_call_keeps_positional_and_keyword_items_in_source_order():
    # The checker reports "positional after keyword", so the order must survive parsing.
    call = statement("y = f(a=1, b)").value
    assert isinstance(call, ast.Call)
    assert [type(i) for i in call.items] == [ast.Keyword, ast.Name]
    assert [a.id for a in call.args] == ["b"]
    assert [k.name for k in call.keywords] == ["a"]


def test_call_span_includes_the_closing_parenthesis():
    call = statement("y = sum(x, axis=-1)").value
    assert (call.func, span(call)) == ("sum", (1, 5, 20))
    (kw,) = call.keywords
    assert (kw.name, kw.col, kw.end_col) == ("axis", 12, 19)
    assert (kw.value.value, kw.value.col) == (-1.0, 17)


def test_call_without_arguments_has_no_items():
    call = statement("y = f()").value
    assert isinstance(call, ast.Call) and call.items == ()


def test_a_long_chain_is_left_nested_and_parses_without_recursion():
    n = 3000
    e = statement("y = " + " + ".join(["x"] * n)).value
    depth = 0
    while isinstance(e, ast.BinOp):
        assert isinstance(e.right, ast.Name)
        e = e.left
        depth += 1
    assert depth == n - 1 and isinstance(e, ast.Name)


# ---- syntax errors ----------------------------------------------------------------------------

def test_syntax_error_names_the_file_and_carries_the_offending_line():
    (d,) = syntax_error("input x: f32[2]\ny = (x + 1\n", "models/net.d1k").diagnostics
    assert (d.file, d.line, d.col) == ("models/net.d1k", 2, 11)
    assert d.source_line == "y = (x + 1"


def test_only_the_first_syntax_error_is_reported():
    err = syntax_error("y = 1\n\n\ny = 2 3\nz = (\n")
    assert [(d.line, d.col) for d in err.diagnostics] == [(4, 7)]


def test_unexpected_end_of_file_is_placed_just_past_the_last_character():
    (d,) = syntax_error("input x: f32[2]\ny = (x").diagnostics
    assert (d.line, d.col, d.message) == (2, 7, "missing ')'")


def test_carriage_return_is_not_part_of_the_reported_line():
    (d,) = syntax_error("y = x +\r\nz = 3\r\n").diagnostics
    assert (d.line, d.col) == (1, 8)
    assert d.source_line == "y = x +"


def test_unexpected_token_is_underlined_over_its_whole_width():
    err = syntax_error("y = x output z")
    (d,) = err.diagnostics
    assert (d.col, d.width) == (7, 6)
    assert err.render().splitlines()[2] == "          ^~~~~~"


def test_syntax_error_is_a_d1_error_with_exit_code_2():
    err = syntax_error("y = (")
    assert isinstance(err, D1Error) and err.exit_code == 2
