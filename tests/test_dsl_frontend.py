"""The .d1k front end: parsing, checking and its diagnostics, the typed IR, and the numpy
reference evaluator that defines the language's numerics."""

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler import ast
from compiler.ir import (
    Graph,
    GraphBuilder,
    IRError,
    Node,
    Op,
    broadcast_dims,
    broadcast_shape,
    format_ir,
    round_to,
    verify,
)
from compiler.reference import evaluate
from d1isa.errors import D1Error, SourceError
from d1isa.machine import load_machine

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"

MLP = """\
# Two-layer perceptron, batch 64.  Comments run from '#' to the end of the line.
input x:  bf16[64, 784]
input w1: bf16[784, 256]
input b1: f32[256]
input w2: bf16[256, 10]
h = relu(x @ w1 + b1)
logits = cast(h, bf16) @ w2
output logits
"""


def bf16(a) -> np.ndarray:
    """Round to bf16 the way the spec states it."""
    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def source_error(text: str, machine=None) -> SourceError:
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, machine, filename="t.d1k")
    return info.value


def run(text: str, **inputs) -> dict[str, np.ndarray]:
    return compiler.reference(text, inputs)


# ---- parsing ----------------------------------------------------------------------------------

def test_parse_mlp_statements():
    prog = compiler.parse_source(MLP, "mlp.d1k")
    kinds = [type(s).__name__ for s in prog.statements]
    assert kinds == ["Input"] * 4 + ["Assign", "Assign", "Output"]
    x = prog.statements[0]
    assert (x.name.id, x.dtype.id, [d.text for d in x.dims]) == ("x", "bf16", ["64", "784"])
    assert (x.line, x.name.col) == (2, 7)
    h = prog.statements[4]
    assert h.target.id == "h" and ast.format_expr(h.value) == "relu(((x @ w1) + b1))"
    assert prog.statements[6].names[0].id == "logits"


@pytest.mark.parametrize("expr, tree", [
    ("a + b * c", "(a + (b * c))"),
    ("a * b + c", "((a * b) + c)"),
    ("a - b - c", "((a - b) - c)"),
    ("a / b / c", "((a / b) / c)"),
    ("a * b @ c", "((a * b) @ c)"),
    ("a @ b * c", "((a @ b) * c)"),
    ("a @ b @ c", "((a @ b) @ c)"),
    ("-a * b", "((-a) * b)"),
    ("-a @ b", "((-a) @ b)"),
    ("- -a", "(-(-a))"),
    ("-(a + b)", "(-(a + b))"),
    ("(a + b) * c", "((a + b) * c)"),
    ("a - -1", "(a - -1)"),
    ("-2 * a", "(-2 * a)"),
    ("a+b-c*d/e@f", "((a + b) - (((c * d) / e) @ f))"),
    ("f(a, b + 1, axis=-1)", "f(a, (b + 1), axis=-1)"),
    ("g()", "g()"),
])
def test_precedence_and_associativity(expr, tree):
    prog = compiler.parse_source(f"y = {expr}\n")
    assert ast.format_expr(prog.statements[0].value) == tree


@pytest.mark.parametrize("text, value", [
    ("2", 2.0), ("0.5", 0.5), (".5", 0.5), ("1e-3", 1e-3), ("2.5E+4", 25000.0), ("3.", 3.0),
    ("-1e-3", -1e-3), ("- 7", -7.0),
])
def test_number_literals(text, value):
    e = compiler.parse_source(f"y = {text}").statements[0].value
    assert isinstance(e, ast.Number) and e.value == value
    assert (e.col, e.end_col) == (5, 5 + len(text))


def test_comments_blank_lines_and_line_endings():
    text = ("# leading comment\n\n   \n\t# indented comment\ninput x: f32[4]  # trailing\r\n"
            "\n  \t\ny = x + 1 # more\n# between\noutput y # no newline at the end")
    prog = compiler.parse_source(text)
    assert [s.line for s in prog.statements] == [5, 8, 10]
    assert compiler.parse_source("").statements == ()
    assert compiler.parse_source("# only a comment").statements == ()


def test_positions_for_diagnostics():
    e = compiler.parse_source("y = relu(a) + sum(b, axis=1)").statements[0].value
    assert isinstance(e, ast.BinOp) and (e.op, e.op_col, e.col, e.end_col) == ("+", 13, 5, 29)
    call = e.right
    assert (call.func, call.col, call.end_col) == ("sum", 15, 29)
    (kw,) = call.keywords
    assert (kw.name, kw.col, kw.value.value) == ("axis", 22, 1.0)


def test_format_ast_lists_statements():
    text = compiler.format_ast(compiler.parse_source(MLP))
    assert "6:1  h = relu(((x @ w1) + b1))" in text
    assert "2:1  input x: bf16[64, 784]" in text


# ---- syntax errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, col, message", [
    ("y = (x + 1\n", 1, 11, "missing ')'"),
    ("y = relu(x, axis=1", 1, 19, "missing ')'"),
    ("y = ((((x\n", 1, 10, "missing ')'"),
    ("y = x +\noutput y\n", 1, 8, "expected an expression"),
    ("input x: f32[2]\ny = \n", 2, 5, "expected an expression"),
    ("y = x @ -", 1, 10, "expected an expression"),
    ("y = x $ 2", 1, 7, "unexpected character '$'"),
    # a number is ASCII digits: an Arabic-Indic 4 or a fullwidth 4 is not one
    ("input x: f32[\u0664, 4]", 1, 14, "unexpected character '\u0664'"),
    ("y = x * \uff14", 1, 9, "unexpected character '\uff14'"),
    ("y = x)", 1, 6, "without a matching '('"),
    # a trailing comma after two or more arguments: the ')' has its '(', an argument is missing
    ("y = sum(x, axis=1,)", 1, 19, "expected an expression"),
    ("y = concat(a, b, axis=0, )", 1, 26, "expected an expression"),
    # A ')' where an operand is missing inside parentheses has its '(': the operand is missing.
    ("y = (x + )", 1, 10, "expected an expression"),
    ("y = grad(sum(x), x, )", 1, 21, "expected an expression"),
    ("y = x z", 1, 7, "one statement per line"),
    ("y = 2x", 1, 6, "expected an operator"),
    ("input x f32[3]", 1, 9, "expected ':'"),
    ("input x: f32[3 4]", 1, 16, "expected ',' or ']' in the shape"),
    ("input x: f32[a]", 1, 14, "expected a dimension"),
    ("input x: f32(3)", 1, 13, "expected '['"),
    ("output\n", 1, 7, "expected a name after 'output'"),
    ("output x y", 1, 10, "expected ','"),
    ("y\n", 1, 2, "expected '='"),
    ("input = 3", 1, 7, "'input' is a keyword and cannot be used as a name"),
    ("y = x ^ 2", 1, 7, "the power operator is '**'"),
    ("y = x * * 2", 1, 9, "'**' is written without a space"),
    ("y = a < b < c", 1, 11, "comparisons do not chain"),
    ("y = 'a'", 1, 5, "no strings"),
])
def test_syntax_errors_are_located(text, line, col, message):
    err = source_error(text)
    (d,) = err.diagnostics
    assert (d.file, d.line, d.col) == ("t.d1k", line, col)
    assert message in d.message
    rendered = err.render().splitlines()
    assert rendered[0].startswith(f"t.d1k:{line}:{col}: error: ")
    assert rendered[2].strip().startswith("^")
    assert rendered[2].index("^") - 4 == col - 1


# ---- semantic errors --------------------------------------------------------------------------

DECLS = "input x: f32[64, 784]\ninput w: f32[256, 10]\ninput v: bf16[10]\n"


@pytest.mark.parametrize("body, line, col, message", [
    ("y = q + x", 4, 5, "unknown name 'q'"),
    ("y = xx + 1", 4, 5, "unknown name 'xx'; did you mean 'x'?"),
    ("y = z\nz = x", 4, 5, "'z' is used before its definition on line 5"),
    ("y = y + x", 4, 5, "'y' is used in its own definition"),
    ("y = x\ny = w", 5, 1, "'y' is already defined on line 4"),
    ("x = w", 4, 1, "cannot assign to input 'x' (declared on line 1)"),
    ("input w: f32[3]", 4, 7, "input 'w' is already declared on line 2"),
    ("relu = x", 4, 1, "'relu' is a builtin function and cannot be used as a name"),
    ("bf16 = x", 4, 1, "'bf16' is a dtype and cannot be used as a name"),
    ("y = f32 + x", 4, 5, "'f32' is a dtype, not a value"),
    ("y = exp + x", 4, 5, "'exp' is a builtin function, not a value"),
    ("y = foo(x)", 4, 5, "unknown function 'foo'"),
    ("y = expp(x)", 4, 5, "did you mean 'exp'?"),
    ("y = x(1)", 4, 5, "'x' is a value, not a function"),
    ("y = relu(x, w)", 4, 5, "relu takes 1 argument, got 2"),
    ("y = maximum(x)", 4, 5, "maximum takes 2 arguments, got 1"),
    ("y = relu(x, axis=1)", 4, 13, "relu has no keyword 'axis'"),
    ("y = cast(x, dtype=bf16)", 4, 13, "cast has no keyword 'dtype'"),
    ("y = softmax(x)", 4, 5, "softmax needs an axis; usage: softmax(x, axis=K)"),
    ("y = softmax(x, dim=1)", 4, 16, "unknown keyword 'dim' for softmax"),
    ("y = sum(x, axis=0, axis=1)", 4, 20, "keyword 'axis' is given twice"),
    ("y = mean(x, 1, axis=0)", 4, 13, "the axis of mean is given twice"),
    ("y = sum(axis=0, x)", 4, 17, "positional argument cannot follow a keyword"),
    ("y = sum(x, axis=1.5)", 4, 17, "the axis must be an integer literal"),
    ("y = sum(x, axis=2)", 4, 17,
     "axis 2 is out of range for sum of a 2-D tensor [64, 784]; valid axes are -2 to 1"),
    ("y = softmax(x, axis=-3)", 4, 21, "axis -3 is out of range"),
    ("y = max(x, w)", 4, 5, "use maximum(a, b)"),
    ("y = cast(x, f64)", 4, 13, "the second argument of cast must be a dtype"),
    ("y = cast(x)", 4, 5, "cast takes 2 arguments, got 1"),
    ("y = transpose(v)", 4, 15, "transpose needs a 2-D tensor, got [10]"),
    ("y = sum(2, axis=0)", 4, 9, "sum needs a tensor, got a number"),
    ("y = x + w", 4, 7,
     "cannot broadcast shapes [64, 784] and [256, 10] for '+': 784 != 10 at axis -1"),
    ("y = maximum(w, x)", 4, 5, "cannot broadcast shapes [256, 10] and [64, 784] for maximum"),
    ("y = x @ w", 4, 7, "matmul dimension mismatch: [64, 784] @ [256, 10]: 784 != 256"),
    ("y = v @ w", 4, 7, "matmul needs operands of 2 to 4 dimensions: [10] @ [256, 10]"),
    ("y = x @ 2", 4, 7, "'@' needs a tensor on both sides"),
    ("y = 1e999 * x", 4, 5, "number '1e999' is too large"),
])
def test_semantic_errors_are_located(body, line, col, message):
    err = source_error(DECLS + body + "\noutput x\n")
    (d,) = err.diagnostics
    assert (d.file, d.line, d.col) == ("t.d1k", line, col)
    assert message in d.message
    rendered = err.render().splitlines()
    assert rendered[0] == f"t.d1k:{line}:{col}: error: {d.message}"
    assert rendered[1] == "    " + (DECLS + body).splitlines()[line - 1]
    assert rendered[2].index("^") - 4 == col - 1


@pytest.mark.parametrize("text, line, col, message", [
    ("input x: f32[3]\noutput x, zz\n", 2, 11, "output 'zz' is never defined"),
    ("input x: f32[3]\noutput x\noutput x\n", 3, 8, "'x' is already an output (line 2)"),
    ("input x: f32[3]\nc = 2 * 3\ny = x\noutput y, c\n", 4, 11,
     "'c' is a constant (6), not a tensor"),
    ("input x: f64[3]\noutput x\n", 1, 10, "unknown dtype 'f64'; the dtypes are f32 and bf16"),
    ("input x: f32[1, 2, 3, 4, 5]\noutput x\n", 1, 10, "1 to 4 dimensions, got 5"),
    ("input x: f32[]\noutput x\n", 1, 10, "1 to 4 dimensions, got 0"),
    ("input x: f32[0]\noutput x\n", 1, 14, "a dimension must be a positive integer, got '0'"),
    ("input x: f32[2.0]\noutput x\n", 1, 14, "got '2.0'"),
    # the object names tensors by their names, of at most 128 characters: a longer one was an
    # internal compiler error ("the generated program does not link")
    (f"input x: f32[3]\ninput {'v' * 129}: f32[3]\noutput x\n", 2, 7,
     "a name has at most 128 characters, this one has 129"),
    (f"input x: f32[3]\n{'v' * 200} = x + 1\noutput x\n", 2, 1,
     "a name has at most 128 characters, this one has 200"),
])
def test_declaration_and_output_errors(text, line, col, message):
    (d,) = source_error(text).diagnostics
    assert (d.line, d.col) == (line, col)
    assert message in d.message


def test_program_without_outputs():
    err = source_error("input x: f32[3]\ny = x + 1\n")
    (d,) = err.diagnostics
    # reported past the last line, where an output would go, with that line and a caret
    assert d.render() == ("t.d1k:2:10: error: the program has no outputs; mark results with "
                          "'output NAME' (a training program may instead update a param: "
                          "'update NAME = EXPR')\n    y = x + 1\n             ^")
    assert len(source_error("").diagnostics) == 1


def test_all_semantic_errors_reported_at_once_in_order():
    text = """input x: f32[64, 784]
input w: f32[256, 10]
a = x @ w
b = q + x
c = sum(x, axis=5)
d = x + w
e = nope(x)
output a, b, c, missing
"""
    err = source_error(text)
    got = [(d.line, d.col) for d in err.diagnostics]
    assert got == [(3, 7), (4, 5), (5, 17), (6, 7), (7, 5), (8, 17)]
    assert err.render().endswith("\n6 errors")
    assert "Traceback" not in err.render()


def test_poisoned_names_do_not_cascade():
    text = """input x: f32[4, 4]
a = q + x
b = a * 2
c = relu(b) @ b
d = sum(c, axis=7)
output d
"""
    (d,) = source_error(text).diagnostics
    assert "unknown name 'q'" in d.message


def test_bad_input_declaration_poisons_its_name():
    (d,) = source_error("input x: f64[3]\ny = x + 1\noutput y\n").diagnostics
    assert d.line == 1


def test_tensor_too_large_for_machine_sram():
    err = source_error("input x: f32[100000, 3000]\noutput x\n")
    (d,) = err.diagnostics
    assert (d.line, d.col) == (1, 7)
    assert d.message == ("tensor 'x' needs 1.2 GB but the machine has 464.0 MB of SRAM in "
                         "total (354 nodes x 1.25 MiB)")


def test_every_too_large_value_is_reported_including_intermediates():
    small = load_machine(mesh="2x2")       # 4 nodes x 1.25 MiB = 5.2 MB in total
    text = """input a: bf16[1536, 1024]
input b: bf16[1024, 1536]
c = relu(a @ b)
output c
"""
    err = source_error(text, small)
    tail = "but the machine has 5.2 MB of SRAM in total (4 nodes x 1.25 MiB)"
    assert [(d.line, d.col, d.message) for d in err.diagnostics] == [
        (3, 5, f"tensor 'c' needs 9.4 MB {tail}"),
        (3, 10, f"the value of 'a @ b' (f32[1536, 1536]) needs 9.4 MB {tail}"),
    ]


def test_size_limit_is_strictly_greater_than_total_sram():
    m = load_machine(mesh="1x1")           # exactly 1.25 MiB = 327680 f32 values
    assert compiler.check_source("input x: f32[327680]\noutput x", m).inputs[0].nbytes == \
        m.total_sram_bytes
    (d,) = source_error("input x: f32[327681]\noutput x", m).diagnostics
    assert "(1 nodes x 1.25 MiB)" in d.message


def test_deeply_nested_expression_is_an_error_not_a_crash():
    text = "input x: f32[2]\ny = " + " + ".join(["x"] * 3000) + "\noutput y\n"
    (d,) = source_error(text).diagnostics
    assert "nested too deeply" in d.message and d.line == 2


# ---- the IR -----------------------------------------------------------------------------------

def test_mlp_ir_makes_broadcasts_and_rounding_points_explicit():
    g = compiler.check_source(MLP, filename="mlp.d1k")
    assert [n.name for n in g.inputs] == ["x", "w1", "b1", "w2"]
    body = [(n.op, n.shape, n.dtype, n.rounds) for n in g.nodes[4:]]
    assert body == [
        (Op.MATMUL, (64, 256), "f32", False),
        (Op.BROADCAST, (64, 256), "f32", False),
        (Op.ADD, (64, 256), "f32", False),
        (Op.RELU, (64, 256), "f32", False),
        (Op.CAST, (64, 256), "bf16", True),
        (Op.MATMUL, (64, 10), "f32", False),
    ]
    assert [n.name for n in g.outputs] == ["logits"]
    assert g["h"].op is Op.RELU and (g["h"].line, g["h"].col) == (6, 5)
    assert g.nodes[4].name == "%t4" and (g.nodes[4].line, g.nodes[4].col) == (6, 12)
    assert g.nodes[5].inputs == (g["b1"],)


def test_mixed_dtypes_and_literals_become_casts_and_consts():
    g = compiler.check_source("input a: bf16[4, 3]\ninput b: f32[3]\ny = a * 0.1 + b\noutput y")
    ops = [n.op for n in g.nodes[2:]]
    assert ops == [Op.CONST, Op.MUL, Op.CAST, Op.BROADCAST, Op.ADD]
    const, mul, widen, bcast, add = g.nodes[2:]
    assert (const.shape, const.dtype, const.value) == ((4, 3), "bf16", 0.10009765625)
    assert mul.rounds and not widen.rounds and widen.dtype == "f32"
    assert add.inputs == (widen, bcast) and add.dtype == "f32" and add.name == "y"


def test_axis_is_normalised_and_scalars_fold():
    g = compiler.check_source(
        "input x: f32[2, 3, 4]\ns = 1 / sqrt(4)\ny = sum(x, -1) * s\noutput y")
    red = g.nodes[1]
    assert (red.op, red.axis, red.shape) == (Op.SUM, 2, (2, 3))
    assert g.nodes[2].op is Op.CONST and g.nodes[2].value == 0.5


def test_reducing_a_vector_gives_a_0d_tensor_that_broadcasts():
    g = compiler.check_source("input v: f32[8]\ny = v - mean(v, axis=0)\noutput y")
    assert g.nodes[1].shape == () and g.nodes[2].op is Op.BROADCAST
    assert g["y"].shape == (8,)


def test_binding_an_existing_value_makes_a_named_copy():
    g = compiler.check_source("input x: f32[3]\ny = x\nz = cast(y, f32)\noutput y, z")
    assert [(n.op, n.name, n.inputs) for n in g.nodes[1:]] == [
        (Op.CAST, "y", (g["x"],)), (Op.CAST, "z", (g["y"],))]


def test_format_ir_is_readable():
    text = format_ir(compiler.check_source(MLP, filename="mlp.d1k"))
    lines = text.splitlines()
    assert lines[0] == "# mlp.d1k: 4 inputs, 10 nodes, 1 output"
    assert any(line.startswith("%t8") and "cast h  ; rounds to bf16" in line for line in lines)
    assert any(line.startswith("logits : f32[64, 10]") and "matmul %t8, w2" in line
               for line in lines)
    assert lines[-1] == "output logits"


def test_broadcast_helpers():
    assert broadcast_shape((64, 256), (256,)) == (64, 256)
    assert broadcast_shape((32, 1), (64,)) == (32, 64)
    assert broadcast_shape((3,), (4,)) is None
    assert broadcast_dims((256,), (64, 256)) == (0,)
    assert broadcast_dims((32, 1), (32, 64)) == (1,)
    assert broadcast_dims((), (2, 3)) == (0, 1)


def test_verify_rejects_broken_graphs():
    b = GraphBuilder()
    x = b.add(Op.INPUT, shape=(2, 3), dtype="f32", name="x")
    y = b.add(Op.RELU, (x,), name="y")
    verify(b.finish([y]))
    wrong_shape = Node(1, Op.RELU, (x,), (3, 2), "f32", "y")
    with pytest.raises(IRError, match="cannot give"):
        verify(Graph((x,), (x, wrong_shape), (wrong_shape,)))
    later = Node(0, Op.RELU, (x,), (2, 3), "f32", "y")
    with pytest.raises(IRError):
        verify(Graph((x,), (later, x), ()))
    with pytest.raises(IRError, match="two operands"):
        b.add(Op.ADD, (x,))
    with pytest.raises(IRError, match="inner dimensions"):
        b.add(Op.MATMUL, (x, x))
    bad_const = Node(1, Op.CONST, (), (2,), "bf16", "c", value=0.1)
    with pytest.raises(IRError):
        verify(Graph((x,), (x, bad_const), ()))


def test_every_example_program_checks_and_runs():
    files = sorted(PROGRAMS.glob("*.d1k"))
    names = {f.stem for f in files}
    assert {"mlp", "matmul", "matmul_odd", "softmax", "layernorm", "residual", "attention",
            "elementwise"} <= names
    for f in files:
        text = f.read_text()
        g = compiler.check_source(text, filename=f.name)
        out = evaluate(g, compiler.make_inputs(g, seed=1))
        for node in g.outputs:
            assert out[node.name].shape == node.shape
            assert np.all(np.isfinite(out[node.name])), f.name
    assert (PROGRAMS / "mlp.d1k").read_text() == MLP


def test_example_softmax_by_hand_matches_builtin():
    text = (PROGRAMS / "softmax.d1k").read_text()
    g = compiler.check_source(text)
    out = evaluate(g, compiler.make_inputs(g, seed=3))
    np.testing.assert_allclose(out["p"], out["by_hand"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["p"].sum(axis=1), 1.0, rtol=1e-5)


# ---- the reference evaluator ------------------------------------------------------------------

def test_mlp_reference_matches_hand_numpy():
    g = compiler.check_source(MLP)
    ins = compiler.make_inputs(g, seed=7)
    x, w1, b1, w2 = (ins[k] for k in ("x", "w1", "b1", "w2"))
    h = np.maximum(np.matmul(x, w1) + b1, 0)
    want = np.matmul(bf16(h), w2)
    np.testing.assert_allclose(compiler.reference(MLP, ins)["logits"], want, rtol=1e-5,
                               atol=1e-4)


UNARY = {
    "relu": lambda a: np.maximum(a, 0.0), "exp": np.exp, "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "sqrt": np.sqrt, "abs": np.abs,
}


@pytest.mark.parametrize("fn", sorted(UNARY))
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_unary_builtins_compute_in_f64_and_round(fn, dtype):
    x = np.linspace(0.01, 3.0, 24).reshape(4, 6).astype(np.float32)
    if fn in ("relu", "abs"):
        x = x - 1.5
    x = round_to(x, dtype)
    got = run(f"input x: {dtype}[4, 6]\ny = {fn}(x)\noutput y", x=x)["y"]
    want = UNARY[fn](x.astype(np.float64)).astype(np.float32)
    if dtype == "bf16":
        want = bf16(want)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32


def test_binary_ops_broadcast_like_numpy():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32)
    c = np.array([[2.0], [3.0], [5.0]], dtype=np.float32)
    text = """input a: f32[3, 4]
input b: f32[4]
input c: f32[3, 1]
p = a + b
s = a - c
m = b * c
d = a / b
hi = maximum(a, c * 2)
lo = minimum(b, 3)
n = -a
output p, s, m, d, hi, lo, n
"""
    out = run(text, a=a, b=b, c=c)
    np.testing.assert_array_equal(out["p"], a + b)
    np.testing.assert_array_equal(out["s"], a - c)
    np.testing.assert_array_equal(out["m"], b * c)
    np.testing.assert_array_equal(out["d"], a / b)
    np.testing.assert_array_equal(out["hi"], np.maximum(a, c * 2))
    np.testing.assert_array_equal(out["lo"], np.minimum(b, 3))
    np.testing.assert_array_equal(out["n"], -a)
    assert out["m"].shape == (3, 4)


def test_bf16_arithmetic_rounds_after_every_op():
    # 1 + 2^-8 lies exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
    one, tiny = np.ones(1, np.float32), np.full(1, 2.0 ** -8, np.float32)
    text = """input a: bf16[1]
input t: bf16[1]
step = a + t + t
once = cast(cast(a, f32) + t + t, bf16)
wide = cast(a, f32) + t
output step, once, wide
"""
    out = run(text, a=one, t=tiny)
    assert out["step"][0] == 1.0                      # rounded twice, each time down to 1
    assert out["once"][0] == 1.0 + 2.0 ** -7          # f32 sum is exact, rounded once
    assert out["wide"][0] == 1.0 + 2.0 ** -8          # f32 result, never rounded


def test_cast_to_bf16_rounds_to_nearest_even():
    x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -(1 + 3 * 2 ** -8)], np.float32)
    out = run("input x: f32[4]\ny = cast(x, bf16)\noutput y", x=x)["y"]
    np.testing.assert_array_equal(out, [1.0, 1 + 2 ** -6, 1.0, -(1 + 2 ** -6)])


def test_literal_takes_the_tensor_dtype():
    x = bf16(np.linspace(-2, 2, 8))
    out = run("input x: bf16[8]\ny = x * 0.1\nz = 0.1 * cast(x, f32)\noutput y, z", x=x)
    np.testing.assert_array_equal(out["y"], bf16(x * np.float32(bf16(0.1))))
    np.testing.assert_array_equal(out["z"], x * np.float32(0.1))


def test_matmul_accumulates_in_f32_and_returns_f32():
    a = np.array([[1.0, 2.0 ** -8, 2.0 ** -8]], np.float32)
    b = np.ones((3, 2), np.float32)
    out = run("input a: bf16[1, 3]\ninput b: bf16[3, 2]\nc = a @ b\noutput c", a=a, b=b)["c"]
    np.testing.assert_array_equal(out, [[1 + 2 ** -7, 1 + 2 ** -7]])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((37, 53)), rng.standard_normal((53, 29))
    out = run("input a: f32[37, 53]\ninput b: f32[53, 29]\nc = a @ b\noutput c", a=a, b=b)
    np.testing.assert_allclose(out["c"], a.astype(np.float32) @ b.astype(np.float32),
                               rtol=1e-5, atol=1e-5)


def test_reductions_accumulate_in_f32_and_round_once():
    x = np.array([[1.0, 2.0 ** -8, 2.0 ** -8, 0.0]], np.float32)
    text = """input x: bf16[1, 4]
s = sum(x, axis=1)
m = mean(x, axis=-1)
hi = max(x, 1)
col = sum(x, axis=0)
output s, m, hi, col
"""
    out = run(text, x=x)
    assert out["s"].tolist() == [1 + 2 ** -7]               # not 1.0, as bf16 steps would give
    assert out["m"].tolist() == [bf16((1 + 2 ** -7) / 4)[()]]
    assert out["hi"].tolist() == [1.0]
    np.testing.assert_array_equal(out["col"], x[0])
    y = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = run("input y: f32[2, 3, 4]\nm = mean(y, axis=1)\nk = max(y, axis=-3)\noutput m, k", y=y)
    np.testing.assert_allclose(out["m"], y.mean(axis=1))
    np.testing.assert_array_equal(out["k"], y.max(axis=0))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_softmax_is_stable_and_rounded_to_input_dtype(dtype):
    x = round_to(np.array([[1.0, 2.0, 3.0, 4.0], [1000.0, 1000.0, 990.0, -5.0]]), dtype)
    out = run(f"input x: {dtype}[2, 4]\ny = softmax(x, axis=-1)\nz = softmax(x, axis=0)\n"
              f"output y, z", x=x)
    def softmax(a, axis):
        e = np.exp(a.astype(np.float64) - a.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    for name, axis in (("y", 1), ("z", 0)):
        want = round_to(softmax(x, axis), dtype)
        np.testing.assert_allclose(out[name], want, rtol=1e-6 if dtype == "f32" else 1e-2)
        np.testing.assert_array_equal(out[name], round_to(out[name], dtype))
    assert np.all(np.isfinite(out["y"]))


def test_transpose_and_0d_broadcast():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = run("input x: f32[2, 3]\nt = transpose(x)\nv = t - mean(sum(x, axis=0), axis=0)\n"
              "output t, v", x=x)
    np.testing.assert_array_equal(out["t"], x.T)
    np.testing.assert_array_equal(out["v"], x.T - x.sum(axis=0).mean())


def test_inputs_are_rounded_to_their_dtype_on_entry():
    x = np.array([1 + 2 ** -8, 0.1, 3.0], dtype=np.float64)
    out = run("input x: bf16[3]\ninput y: f32[3]\noutput x, y", x=x, y=x)
    np.testing.assert_array_equal(out["x"], bf16(x.astype(np.float32)))
    np.testing.assert_array_equal(out["y"], x.astype(np.float32))
    assert out["x"].dtype == np.float32


def test_named_constant_and_outputting_an_input():
    x = np.array([1.0, 4.0], np.float32)
    out = run("input x: f32[2]\nk = 2 * 3\ny = x * k - k / 2\noutput y, x", x=x, unused=x)
    np.testing.assert_array_equal(out["y"], [3.0, 21.0])
    np.testing.assert_array_equal(out["x"], x)


@pytest.mark.parametrize("inputs, message", [
    ({}, "missing input 'x' (f32[3, 4])"),
    ({"x": np.zeros((4, 3))}, "input 'x' has shape (4, 3), expected (3, 4)"),
    ({"xx": np.zeros((3, 4))}, "missing input 'x' (f32[3, 4]); given instead: xx"),
    ({"x": np.array([["a"] * 4] * 3, dtype=object)}, "must be an array of real numbers"),
    ({"x": np.zeros((3, 4), complex)}, "must be an array of real numbers"),
])
def test_bad_inputs_are_d1_errors(inputs, message):
    with pytest.raises(D1Error) as info:
        compiler.reference("input x: f32[3, 4]\noutput x", inputs)
    assert message in str(info.value)


def test_make_inputs_is_seeded_and_rounded():
    g = compiler.check_source(MLP)
    a, b = compiler.make_inputs(g, 5), compiler.make_inputs(g, 5)
    assert list(a) == ["x", "w1", "b1", "w2"]
    for name, arr in a.items():
        assert arr.dtype == np.float32 and arr.shape == g[name].shape
        np.testing.assert_array_equal(arr, b[name])
    np.testing.assert_array_equal(a["x"], bf16(a["x"]))
    want_x = np.random.default_rng(5).standard_normal((64, 784))
    np.testing.assert_array_equal(a["x"], bf16(want_x.astype(np.float32)))
    assert not np.array_equal(a["b1"], bf16(a["b1"]))          # f32 input: not rounded further
    assert not np.array_equal(compiler.make_inputs(g, 6)["x"], a["x"])


# ---- robustness: anything in, a Graph or a located error out ---------------------------------

TOKENS = ["input", "output", "x", "y", "w", "b", "q", ":", "f32", "bf16", "f64", "[", "]", "2",
          "3", "0", "0.5", "1e-3", "1e999", ",", "=", "+", "-", "*", "/", "@", "(", ")", "relu",
          "exp", "sum", "max", "maximum", "softmax", "mean", "cast", "transpose", "axis", "#",
          "\n", " ", "\t", "\r\n", "-1", "<", "<=", ">", ">=", "==", "!=", "**", "where", "pow",
          "erf", "gelu", "min", "argmax", "layernorm", "eps", "^"]

fuzz_text = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.characters(), st.text(max_size=3)), max_size=40,
).map(" ".join)

# Mostly well-formed programs over inputs whose shapes all broadcast together, with a few
# mistakes mixed in, so the checker's and the evaluator's paths both get exercised.
names = st.sampled_from(["x", "x", "w", "v", "t0", "t0", "t1", "zz", "bf16"])
leaf = st.one_of(names, st.sampled_from(["2", "0.5", "-1", "1e-3"]))
UNARY_FNS = ["relu", "exp", "tanh", "sigmoid", "sqrt", "abs", "transpose", "erf", "gelu"]


def _call(fn_args):
    fn, args = fn_args
    return f"{fn}({', '.join(args)})"


expressions = st.recursive(
    leaf,
    lambda sub: st.one_of(
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "@", "**", "<", ">=", "==", "!="]),
                  sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(sub, sub, sub).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(UNARY_FNS), sub).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["maximum", "minimum", "pow"]), sub, sub).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(["sum", "max", "mean", "softmax", "min", "argmax",
                                   "layernorm"]), sub,
                  st.sampled_from(["axis=0", "axis=-1", "1", "axis=0", "axis=3", "", "eps=0.1",
                                   "keepdims=1"])).map(
            lambda t: f"{t[0]}({t[1]}{', ' + t[2] if t[2] else ''})"),
        st.tuples(sub, st.sampled_from(["bf16", "f32"])).map(lambda t: f"cast({t[0]}, {t[1]})"),
        st.tuples(st.sampled_from(UNARY_FNS + ["foo", "cast", "maximum", "where", "layernorm"]),
                  st.lists(sub, max_size=3)).map(_call),
        sub.map(lambda e: f"-{e}"),
    ),
    max_leaves=6,
)

programs = st.tuples(
    st.lists(expressions, max_size=3),
    st.lists(st.sampled_from(["t0", "t1", "t2", "x", "zz"]), min_size=1, max_size=2),
).map(lambda p: "input x: bf16[4, 4]\ninput w: f32[4]\ninput v: f32[4, 1]\n"
      + "".join(f"t{i} = {e}\n" for i, e in enumerate(p[0]))
      + f"output {', '.join(dict.fromkeys(p[1]))}\n")


def _front_end_outcome(text: str):
    try:
        return compiler.check_source(text, filename="fuzz.d1k")
    except SourceError as e:
        assert e.diagnostics and all(d.line >= 1 and d.col >= 1 for d in e.diagnostics)
        assert "Traceback" not in e.render()
        return e
    except D1Error as e:
        return e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fuzz_text)
def test_random_text_gives_a_graph_or_a_source_error(text):
    _front_end_outcome(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_random_programs_check_and_evaluate_consistently(text):
    result = _front_end_outcome(text)
    if isinstance(result, Graph):
        verify(result)
        out = evaluate(result, compiler.make_inputs(result, seed=0))
        for node in result.outputs:
            assert out[node.name].shape == node.shape
            assert np.array_equal(out[node.name], round_to(out[node.name], node.dtype),
                                  equal_nan=True)
