"""The check pass on its own: a parsed program -> the typed IR graph (and `verify`, which the
pipeline runs after it).

Programs are parsed with the parse pass, then `compiler.check.check` is called directly with an
explicit machine, file name and text, as compiler.pipeline.compile_text does. The tests look
at the graph it returns (ops, shapes, dtypes, attributes, names, the positions that map each
node back to the source, the implicit broadcasts, casts and splats it inserts) or at the
diagnostics it raises. The verify tests build a graph, break one invariant, and expect IRError.
(test_dsl_frontend.py keeps the catalogue of semantic error messages.)
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from passkit import mesh

from compiler.check import check
from compiler.ir import Graph, GraphBuilder, IRError, Node, Op, round_scalar, verify
from compiler.parse import parse
from d1isa.errors import SourceError


def graph_of(text: str, machine=None, filename: str = "t.d1k") -> Graph:
    return check(parse(text, filename), machine or mesh("4x4"), filename, text)


def diagnostics(text: str, machine=None, filename: str = "t.d1k"):
    with pytest.raises(SourceError) as info:
        graph_of(text, machine, filename)
    return info.value.diagnostics


def ops(g: Graph) -> list[str]:
    return [n.op.value for n in g.nodes]


# ---- types, shapes, dtypes --------------------------------------------------------------------

def test_inputs_become_input_nodes_with_their_declared_type_and_position():
    g = graph_of("input x: bf16[3, 5]\ninput y: f32[7]\noutput x, y\n")
    assert [(n.name, n.op, n.shape, n.dtype, n.line, n.col) for n in g.inputs] == [
        ("x", Op.INPUT, (3, 5), "bf16", 1, 7), ("y", Op.INPUT, (7,), "f32", 2, 7)]
    assert g.outputs == g.inputs


def test_broadcasting_aligns_from_the_right_and_inserts_explicit_broadcasts():
    g = graph_of("input col: f32[32, 1]\ninput row: f32[64]\ny = col + row\noutput y\n")
    assert ops(g) == ["input", "input", "broadcast", "broadcast", "add"]
    y = g["y"]
    assert (y.shape, y.dtype) == ((32, 64), "f32")
    a, b = y.inputs
    assert a.op is Op.BROADCAST and a.inputs[0] is g["col"] and a.shape == (32, 64)
    assert b.op is Op.BROADCAST and b.inputs[0] is g["row"] and b.shape == (32, 64)


def test_bf16_meeting_f32_is_widened_by_an_exact_cast_before_broadcasting():
    g = graph_of("input x: bf16[32, 1]\ninput r: f32[64]\ny = x + r\noutput y\n")
    widen = g["y"].inputs[0].inputs[0]
    assert (widen.op, widen.dtype, widen.shape) == (Op.CAST, "f32", (32, 1))
    assert widen.inputs[0] is g["x"] and not widen.rounds
    assert g["y"].dtype == "f32"


def test_a_literal_becomes_a_splat_rounded_to_the_tensor_dtype():
    g = graph_of("input x: bf16[4, 8]\ny = x * 0.1\noutput y\n")
    splat = g["y"].inputs[1]
    assert (splat.op, splat.shape, splat.dtype) == (Op.CONST, (4, 8), "bf16")
    assert splat.value == round_scalar(0.1, "bf16") == 0.10009765625


def test_arithmetic_on_literals_alone_is_folded_into_one_constant():
    g = graph_of("input x: f32[4, 8]\nc = 1 / 4\nk = sqrt(16) + c\ny = x * k\noutput y\n")
    assert ops(g) == ["input", "const", "mul"]
    assert g["y"].inputs[1].value == 4.25


def test_bf16_results_round_except_for_exact_ops():
    g = graph_of("input x: bf16[4, 8]\ny = x * 2\nz = relu(y)\nw = cast(y, f32)\n"
                 "v = cast(w, bf16)\noutput z, v\n")
    assert {n.name: n.rounds for n in g.nodes if not n.name.startswith("%")} == {
        "x": False, "y": True, "z": False, "w": False, "v": True}


def test_matmul_promotes_mixed_operands_and_returns_f32():
    g = graph_of("input a: bf16[4, 8]\ninput b: f32[8, 2]\nc = a @ b\noutput c\n")
    c = g["c"]
    assert (c.op, c.shape, c.dtype) == (Op.MATMUL, (4, 2), "f32")
    assert c.inputs[0].op is Op.CAST and c.inputs[0].dtype == "f32"
    assert c.inputs[1] is g["b"]


def test_reductions_drop_the_normalised_axis_and_softmax_keeps_the_shape():
    g = graph_of("input x: f32[4, 8]\ns = sum(x, axis=-1)\nt = mean(s, axis=0)\n"
                 "m = max(x, 0)\np = softmax(x, axis=-2)\noutput s, t, m, p\n")
    assert [(g[k].op, g[k].axis, g[k].shape) for k in "stmp"] == [
        (Op.SUM, 1, (4,)), (Op.MEAN, 0, ()), (Op.MAX, 0, (8,)), (Op.SOFTMAX, 0, (4, 8))]


def test_renaming_a_value_makes_a_same_dtype_copy_and_a_no_op_cast_makes_none():
    g = graph_of("input x: f32[4]\ny = x\nz = cast(x, f32) + 1\noutput y, z\n")
    y = g["y"]
    assert (y.op, y.dtype, y.inputs) == (Op.CAST, "f32", (g["x"],))
    assert g["z"].inputs[0] is g["x"]


def test_each_node_points_at_the_token_that_introduced_it():
    g = graph_of("input x: f32[4]\ny = x\nz = relu(x) + 1\noutput y, z\n")
    pos = {n.op.value: (n.line, n.col) for n in g.nodes}
    assert pos["cast"] == (2, 1)         # the copy: at the name it binds
    assert pos["relu"] == (3, 5)         # a call: at the function name
    assert pos["add"] == (3, 13)         # a binary operator: at the operator
    assert pos["const"] == (3, 13)       # its splat: where the literal met the tensor


def test_unnamed_intermediates_are_named_by_their_id_and_ids_are_positions():
    g = graph_of("input x: f32[4]\ny = relu(x) * 2\noutput y\n")
    assert [n.name for n in g.nodes] == ["x", "%t1", "%t2", "y"]
    assert [n.id for n in g.nodes] == [0, 1, 2, 3]


def test_outputs_keep_the_order_of_the_output_statements():
    g = graph_of("input x: f32[4]\na = x + 1\nb = x * 2\noutput b\noutput x, a\n")
    assert [o.name for o in g.outputs] == ["b", "x", "a"]


def test_graph_carries_the_file_name_it_was_checked_under():
    assert graph_of("input x: f32[4]\noutput x\n", filename="a/b.d1k").filename == "a/b.d1k"


# ---- diagnostics ------------------------------------------------------------------------------

def test_diagnostics_name_the_file_line_and_column_with_the_source_line():
    text = "input x: f32[4, 8]\ny = x @ x\noutput y\n"
    (d,) = diagnostics(text, filename="nets/m.d1k")
    assert (d.file, d.line, d.col) == ("nets/m.d1k", 2, 7)
    assert d.source_line == "y = x @ x"
    assert d.render().startswith("nets/m.d1k:2:7: error: matmul dimension mismatch")


def test_diagnostics_are_sorted_by_position_whatever_order_they_were_found_in():
    # The keyword (col 13) is rejected before the argument (col 10) is looked up.
    ds = diagnostics("input x: f32[4]\ny = relu(q, axis=1)\noutput y\n")
    assert [(d.line, d.col) for d in ds] == [(2, 10), (2, 13)]
    assert "unknown name 'q'" in ds[0].message and "no keyword 'axis'" in ds[1].message


def test_broadcast_mismatch_is_reported_at_the_operator():
    (d,) = diagnostics("input a: f32[3, 4]\ninput b: f32[5]\ny = a * b\noutput y\n")
    assert (d.line, d.col) == (3, 7)
    assert "cannot broadcast shapes [3, 4] and [5] for '*': 4 != 5 at axis -1" in d.message


def test_size_limit_comes_from_the_machine_passed_in():
    text = "input x: f32[2048]\noutput x\n"           # 8192 B
    (d,) = diagnostics(text, mesh("1x1", sram_bytes=4096))
    assert "(1 nodes x 4 KiB)" in d.message
    assert graph_of(text, mesh("2x2", sram_bytes=4096)).inputs[0].nbytes == 8192


# ---- verify -----------------------------------------------------------------------------------

def small_graph() -> tuple[Graph, list[Node]]:
    """x: f32[2, 3] input; s = sum(x, axis=1); y = relu(x); output y."""
    b = GraphBuilder()
    x = b.add(Op.INPUT, shape=(2, 3), dtype="f32", name="x")
    s = b.add(Op.SUM, (x,), axis=1, name="s")
    y = b.add(Op.RELU, (x,), name="y")
    return b.finish([y]), [x, s, y]


def test_verify_accepts_what_the_builder_makes():
    g, _ = small_graph()
    verify(g)
    assert len(g.nodes) == 3


def test_verify_accepts_every_graph_check_returns():
    g = graph_of("input x: bf16[4, 8]\ninput r: f32[8]\ny = softmax(x + r, axis=1) @ "
                 "transpose(x)\noutput y\n")
    verify(g)
    assert g["y"].shape == (4, 4)


def _broken(how: str) -> Graph:
    g, (x, s, y) = small_graph()
    if how == "id":
        y2 = replace(y, id=5)
        return Graph(g.inputs, (x, s, y2), (y2,))
    if how == "duplicate name":
        s2 = replace(s, name="x")
        return Graph(g.inputs, (x, s2, y), (y,))
    if how == "dtype":
        s2 = replace(s, dtype="f16")
        return Graph(g.inputs, (x, s2, y), (y,))
    if how == "zero dim":
        x2 = replace(x, shape=(2, 0))
        return Graph((x2,), (x2, s, y), (y,))
    if how == "operand not in graph":
        stranger = Node(1, Op.INPUT, (), (2, 3), "f32", "x")
        y2 = replace(y, inputs=(stranger,))
        return Graph(g.inputs, (x, s, y2), (y2,))
    if how == "wrong reduced shape":
        s2 = replace(s, shape=(3,))
        return Graph(g.inputs, (x, s2, y), (y,))
    if how == "axis on relu":
        y2 = replace(y, axis=0)
        return Graph(g.inputs, (x, s, y2), (y2,))
    if how == "broadcast to same shape":
        bc = Node(2, Op.BROADCAST, (x,), (2, 3), "f32", "bc")
        return Graph(g.inputs, (x, s, bc), (s,))
    if how == "inputs list":
        return Graph((), g.nodes, g.outputs)
    if how == "unnamed output":
        y2 = replace(y, name="%t2")
        return Graph(g.inputs, (x, s, y2), (y2,))
    if how == "repeated output":
        return Graph(g.inputs, g.nodes, (y, y))
    if how == "output not a node":
        return Graph(g.inputs, g.nodes, (replace(y),))
    raise AssertionError(how)


@pytest.mark.parametrize("how, message", [
    ("id", "is not its position"),
    ("duplicate name", "name 'x' is used twice"),
    ("dtype", "unknown dtype 'f16'"),
    ("zero dim", "bad shape (2, 0)"),
    ("operand not in graph", "operand x is not an earlier node"),
    ("wrong reduced shape", "cannot give f32[3]"),
    ("axis on relu", "axis attribute on relu"),
    ("broadcast to same shape", "broadcast with operands"),
    ("inputs list", "graph.inputs are not the input nodes"),
    ("unnamed output", "output %t2 is repeated or unnamed"),
    ("repeated output", "output y is repeated or unnamed"),
    ("output not a node", "output y is not a node of the graph"),
])
def test_verify_catches_a_broken_graph(how: str, message: str):
    with pytest.raises(IRError, match=re.escape(message)):
        verify(_broken(how))
