"""Reverse mode (compiler.grad): every rule against float64 finite differences, the kink and
rounding conventions, broadcasting sums, the shape of the backward IR, and random well-typed
programs with a 0-d loss.

The reference grad is the backward pass that `differentiate` writes into the IR, evaluated by the
f32 reference evaluator. The finite differences run the forward graph in float64 with the small
evaluator of tests/gradkit.py (no rounding anywhere), at the same point: the inputs are rounded
to f32 first, as the reference rounds them.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradkit import finite_difference, leaf_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler.grad import READS_IN_PLACE, RULES, differentiate
from compiler.ir import LEAF_OPS, Graph, Op, round_to, verify
from compiler.reference import evaluate


def split(graph: Graph, leaves: dict[str, np.ndarray]) -> tuple[dict, dict]:
    params = {p.name for p in graph.params}
    return ({k: v for k, v in leaves.items() if k not in params},
            {k: v for k, v in leaves.items() if k in params})


def assert_close_to_fd(ref: np.ndarray, fd: np.ndarray, what: str, tol: float = 2e-3) -> None:
    scale = max(1.0, float(np.max(np.abs(fd), initial=0.0)))
    err = float(np.max(np.abs(ref - fd), initial=0.0))
    assert ref.shape == fd.shape and ref.dtype == np.float32, what
    assert err <= tol * scale, (f"{what}: max |ref - fd| = {err:.3g} (scale {scale:.3g})\n"
                                f"{ref}\n{fd}")


def check_program(text: str, seed: int = 0, positive: tuple[str, ...] = (),
                  tol: float = 2e-3) -> dict[str, np.ndarray]:
    """Every `NAME = grad(l, P)` statement of `text` (named `g_P`) against finite differences
    of `l`; returns the reference outputs."""
    graph = compiler.check_source(text, filename="t.d1k")
    leaves = leaf_values(graph, seed, positive)
    inputs, params = split(graph, leaves)
    ref = evaluate(graph, inputs, params)
    grads = [n for n in graph.nodes if n.op is Op.GRAD]
    assert grads
    for g in grads:
        fd = finite_difference(graph, g.inputs[0].name, leaves, g.inputs[1].name)
        assert_close_to_fd(ref[g.name], fd, f"{g.name} in\n{text}", tol)
    return ref


def program(decls: dict[str, tuple[int, ...]], expr: str) -> str:
    """Inputs `decls`, v = expr, a loss that weights v by a random input c (so the gradient
    reaching v is not uniform), and the grad of the loss for every input but c."""
    lines = [f"input {k}: f32[{', '.join(map(str, s))}]" for k, s in decls.items()]
    probe = compiler.check_source("\n".join(lines) + f"\nv = {expr}\noutput v\n")
    shape = probe["v"].shape
    lines.append(f"v = {expr}")
    if shape:
        lines.append(f"input c: f32[{', '.join(map(str, shape))}]")
        lines.append("l = sum(v * c)")
    else:
        lines.append("l = v * 1.5")
    for k in decls:
        lines.append(f"g_{k} = grad(l, {k})")
    lines.append("output l, " + ", ".join(f"g_{k}" for k in decls))
    return "\n".join(lines) + "\n"


# ---- one rule at a time -----------------------------------------------------------------------

# (expression over a: [m, n] and b, the shape of b given m, n, k, operands that must be positive)
RULE_CASES = {
    "neg": ("-a", None, ()),
    "abs": ("abs(a)", None, ()),
    "relu": ("relu(a)", None, ()),
    "exp": ("exp(a)", None, ()),
    "tanh": ("tanh(a)", None, ()),
    "sigmoid": ("sigmoid(a)", None, ()),
    "sqrt": ("sqrt(a)", None, ("a",)),
    "log": ("log(a)", None, ("a",)),
    "copy": ("a", None, ()),
    "transpose": ("transpose(a)", None, ()),
    "literal": ("2.5 * a - 1 / (a * a + 1)", None, ()),
    "add_same": ("a + b", "mn", ()),
    "add_row": ("a + b", "n", ()),
    "sub_col": ("a - b", "m1", ()),
    "sub_row_first": ("b - a", "1n", ()),
    "mul_row": ("a * b", "n", ()),
    "mul_col": ("b * a", "m1", ()),
    "div_same": ("a / b", "mn", ("b",)),
    "div_row": ("a / b", "n", ("b",)),
    "div_col": ("b / a", "m1", ("a",)),
    "maximum_same": ("maximum(a, b)", "mn", ()),
    "maximum_row": ("maximum(a, b)", "n", ()),
    "minimum_col": ("minimum(a, b)", "m1", ()),
    "matmul": ("a @ b", "nk", ()),
    "matmul_left": ("b @ a", "km", ()),
    "sum_0": ("sum(a, axis=0)", None, ()),
    "sum_1": ("sum(a, axis=1)", None, ()),
    "sum_1_keepdims": ("sum(a, axis=1, keepdims=1)", None, ()),
    "sum_all": ("sum(a)", None, ()),
    "sum_all_keepdims": ("sum(a, keepdims=1)", None, ()),
    "mean_0": ("mean(a, axis=0)", None, ()),
    "mean_1_keepdims": ("mean(a, axis=-1, keepdims=1)", None, ()),
    "mean_all": ("mean(a)", None, ()),
    "max_0": ("max(a, axis=0)", None, ()),
    "max_1": ("max(a, axis=1)", None, ()),
    "max_0_keepdims": ("max(a, axis=0, keepdims=1)", None, ()),
    "max_all": ("max(a)", None, ()),
    "softmax_0": ("softmax(a, axis=0)", None, ()),
    "softmax_1": ("softmax(a, axis=1)", None, ()),
    "log_softmax_0": ("log_softmax(a, axis=0)", None, ()),
    "log_softmax_1": ("log_softmax(a, axis=1)", None, ()),
    "erf": ("erf(a)", None, ()),
    "gelu": ("gelu(a)", None, ()),
    "pow_same": ("a ** b", "mn", ("a",)),
    "pow_row": ("pow(b, a)", "n", ("b",)),
    "pow_literal_exponent": ("a ** 3 - a ** 2 + a ** -1", None, ("a",)),
    "pow_literal_base": ("2 ** a", None, ()),
    "where_same": ("where(b > 0, a * a, -a)", "mn", ()),
    "where_col": ("where(b, a, 2 * a)", "m1", ()),
    "where_row_values": ("where(a > 0, b, a)", "n", ()),
    "compare": ("a * (a > b) + (a <= b) * b + (a != b) + (a == b)", "mn", ()),
    "min_0": ("min(a, axis=0)", None, ()),
    "min_1_keepdims": ("min(a, axis=1, keepdims=1)", None, ()),
    "min_all": ("min(a)", None, ()),
    "argmax": ("a * argmax(a, axis=1, keepdims=1)", None, ()),
    "layernorm_1": ("layernorm(a)", None, ()),
    "layernorm_0": ("layernorm(a, axis=0, eps=0.5)", None, ()),
}

B_SHAPES = {"mn": lambda m, n, k: (m, n), "n": lambda m, n, k: (n,), "m1": lambda m, n, k: (m, 1),
            "1n": lambda m, n, k: (1, n), "nk": lambda m, n, k: (n, k),
            "km": lambda m, n, k: (k, m)}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 5), n=st.integers(1, 5), k=st.integers(1, 4), seed=st.integers(0, 99))
def test_each_rule_matches_finite_differences(case, m, n, k, seed):
    expr, b_shape, positive = RULE_CASES[case]
    decls = {"a": (m, n)}
    if b_shape is not None:
        decls["b"] = B_SHAPES[b_shape](m, n, k)
    check_program(program(decls, expr), seed, positive)


@pytest.mark.parametrize("expr", [
    "sum(a, axis=1)", "mean(a, axis=1, keepdims=1)", "max(a, axis=1)", "softmax(a, axis=1)",
    "log_softmax(a, axis=2)", "max(a)", "sum(a, axis=0, keepdims=1)", "a * b", "a + c3",
    "min(a, axis=1)", "layernorm(a, axis=1)", "layernorm(a)", "where(a > c3, gelu(a), b)",
    "argmax(a, axis=2) * sum(a, axis=2)", "abs(a) ** c3",
])
def test_rules_on_3d_values_match_finite_differences(expr):
    decls = {"a": (2, 3, 4), "b": (3, 1), "c3": (2, 1, 4)}
    used = {k: v for k, v in decls.items() if k == "a" or k in expr}
    check_program(program(used, expr), seed=3)


@pytest.mark.parametrize("decls, expr", [
    ({"a": (2, 3, 4)}, "reshape(a, [4, -1])"),
    ({"a": (6, 4)}, "reshape(a, [2, 3, 2, 2])"),
    ({"a": (2, 3, 4)}, "transpose(a, [2, 0, 1])"),
    ({"a": (2, 3, 4, 2)}, "transpose(a, [0, 2, 1, 3])"),
    ({"a": (3, 4)}, "transpose(a, [1, 0])"),
    ({"a": (2, 3, 4)}, "a[1]"),
    ({"a": (2, 3, 4)}, "a[:, 1:3, ::2]"),
    ({"a": (5, 4)}, "a[-4:-1:2, 3]"),
    ({"a": (3, 4)}, "a[2, 1] * a"),
    ({"a": (2, 3), "b": (2, 4)}, "concat(a, b, axis=1)"),
    ({"a": (2, 3, 2), "b": (1, 3, 2)}, "concat(b, a, b, axis=0)"),
    ({"a": (2, 3, 4), "b": (2, 4, 5)}, "a @ b"),
    ({"a": (2, 3, 4), "b": (4, 5)}, "a @ b"),
    ({"a": (3, 4), "b": (2, 4, 5)}, "a @ b"),
    ({"a": (2, 1, 3, 4), "b": (3, 4, 2)}, "a @ b"),
    ({"a": (2, 3, 4)}, "a[0] @ transpose(a[1], [1, 0])"),
    ({"a": (2, 3, 4)}, "sum(a[:, 1:]) * a[1, 0:1]"),
])
def test_shape_rules_match_finite_differences(decls, expr):
    check_program(program(decls, expr), seed=4)


def test_grad_of_a_slice_gradient_is_a_slice():
    # d/da of sum((grad of a slice) * c): the unslice rule (second derivatives) in a program.
    text = ("input a: f32[3, 4]\ninput c: f32[3, 4]\n"
            "l = sum(a[1:, ::2] * a[1:, ::2])\ng = grad(l, a)\nm = sum(g * c)\n"
            "h = grad(m, a)\noutput h\n")
    graph = compiler.check_source(text)
    leaves = leaf_values(graph, 2)
    out = evaluate(graph, leaves)
    want = np.zeros((3, 4), dtype=np.float32)
    want[1:, ::2] = 2 * leaves["c"][1:, ::2]
    np.testing.assert_allclose(out["h"], want, rtol=1e-6)


def test_every_forward_op_has_a_rule():
    forward_ops = set(Op) - LEAF_OPS - {Op.GRAD}
    assert forward_ops <= set(RULES)
    assert set(RULES) | LEAF_OPS | {Op.GRAD} == set(Op)


# ---- gradient numerics: kinks, rounding, broadcasting -----------------------------------------

def grads(text: str, **leaves) -> dict[str, np.ndarray]:
    graph = compiler.check_source(text)
    params = {p.name for p in graph.params}
    return evaluate(graph, {k: v for k, v in leaves.items() if k not in params},
                    {k: v for k, v in leaves.items() if k in params})


def test_relu_and_abs_have_derivative_zero_at_zero():
    text = ("input x: f32[5]\nl = sum(relu(x)) + sum(abs(x) * 3)\n"
            "g = grad(l, x)\noutput g\n")
    out = grads(text, x=np.array([-2.0, -0.0, 0.0, 1e-30, 3.0]))
    # relu': 0, 0, 0, 1, 1; abs': -1, 0, 0, 1, 1 (times 3)
    np.testing.assert_array_equal(out["g"], [-3.0, 0.0, 0.0, 4.0, 4.0])


def test_maximum_and_minimum_send_a_tie_to_their_first_operand():
    text = ("input a: f32[4]\ninput b: f32[4]\n"
            "l = sum(maximum(a, b) * 2) + sum(minimum(a, b) * 5)\n"
            "ga = grad(l, a)\ngb = grad(l, b)\noutput ga, gb\n")
    out = grads(text, a=np.array([1.0, 2.0, 3.0, -1.0]), b=np.array([1.0, 5.0, 0.0, -1.0]))
    # position 0 and 3 are ties: all of both gradients go to a
    np.testing.assert_array_equal(out["ga"], [7.0, 5.0, 2.0, 7.0])
    np.testing.assert_array_equal(out["gb"], [0.0, 2.0, 5.0, 0.0])


def test_a_tie_in_a_max_reduction_goes_to_the_first_maximal_element():
    x = np.array([[1.0, 3.0, 3.0], [4.0, 4.0, 0.0]])
    rows = grads("input x: f32[2, 3]\nl = sum(max(x, axis=1))\ng = grad(l, x)\noutput g\n",
                 x=x)
    np.testing.assert_array_equal(rows["g"], [[0, 1, 0], [1, 0, 0]])
    cols = grads("input x: f32[2, 3]\nl = sum(max(x, axis=0))\ng = grad(l, x)\noutput g\n",
                 x=np.array([[4.0, 1.0, 0.0], [4.0, 3.0, 0.0]]))
    np.testing.assert_array_equal(cols["g"], [[1, 0, 1], [0, 1, 0]])
    every = grads("input x: f32[2, 3]\nl = max(x)\ng = grad(l, x)\noutput g\n",
                  x=np.array([[1.0, 4.0, 3.0], [4.0, 4.0, 0.0]]))
    np.testing.assert_array_equal(every["g"], [[0, 1, 0], [0, 0, 0]])  # first in row-major order


def test_a_tie_in_a_min_reduction_goes_to_the_first_minimal_element():
    x = np.array([[1.0, -3.0, -3.0], [np.nan, 4.0, 0.0]])
    rows = grads("input x: f32[2, 3]\nl = sum(min(x, axis=1) * 2)\ng = grad(l, x)\noutput g\n",
                 x=x)
    np.testing.assert_array_equal(rows["g"], [[0, 2, 0], [2, 0, 0]])   # a NaN is the minimum
    every = grads("input x: f32[2, 3]\nl = min(x)\ng = grad(l, x)\noutput g\n",
                  x=np.array([[1.0, 0.0, 3.0], [0.0, 4.0, 0.0]]))
    np.testing.assert_array_equal(every["g"], [[0, 1, 0], [0, 0, 0]])


def test_where_sends_the_gradient_to_the_side_it_picked():
    text = ("input c: f32[4]\ninput a: f32[4]\ninput b: f32[4]\n"
            "l = sum(where(c, a, b) * 3)\nga = grad(l, a)\ngb = grad(l, b)\ngc = grad(l, c)\n"
            "output ga, gb, gc\n")
    out = grads(text, c=np.array([1.0, 0.0, -0.0, np.nan]), a=np.ones(4), b=np.ones(4))
    np.testing.assert_array_equal(out["ga"], [3, 0, 0, 3])
    np.testing.assert_array_equal(out["gb"], [0, 3, 3, 0])
    np.testing.assert_array_equal(out["gc"], [0, 0, 0, 0])


def test_comparisons_and_argmax_have_gradient_zero():
    text = ("param p: f32[2, 3]\nl = sum((p > 0.5) + (p == p) + argmax(p, axis=1, keepdims=1))\n"
            "g = grad(l, p)\noutput g\n")
    out = grads(text, p=np.array([[0.0, 1.0, 2.0], [3.0, 0.5, 0.5]]))
    np.testing.assert_array_equal(out["g"], np.zeros((2, 3)))


def test_pow_at_zero_follows_the_usual_conventions():
    # d/da a^b = b a^(b-1) is 0 where b == 0 (not 0 * inf); d/db a^b = a^b log a is 0 where
    # a == 0 and b >= 0 (not 0 * -inf); a negative base gives NaN for d/db, as log does
    text = ("input a: f32[5]\ninput b: f32[5]\nl = sum(a ** b)\nga = grad(l, a)\n"
            "gb = grad(l, b)\noutput ga, gb\n")
    out = grads(text, a=np.array([0.0, 0.0, 2.0, 0.0, -2.0]),
                b=np.array([0.0, 2.0, 3.0, 0.5, 2.0]))
    np.testing.assert_array_equal(out["ga"][:3], [0, 0, 12])
    assert out["ga"][3] == np.inf and out["ga"][4] == -4
    np.testing.assert_allclose(out["gb"][:4], [0, 0, 8 * np.log(2), 0], rtol=1e-6)
    assert np.isnan(out["gb"][4])


def test_a_bf16_rounding_has_derivative_one():
    # Straight-through: the gradient of cast(p, bf16) is the gradient of its result (c, through
    # the exact widening for the f32 product), although the rounding moved the value.
    text = ("param p: f32[3]\ninput c: f32[3]\nl = sum(cast(p, bf16) * c)\n"
            "g = grad(l, p)\noutput g\n")
    c = np.array([0.3, -7.25, 1e-3], dtype=np.float32)
    out = grads(text, p=np.array([0.1 + 2**-12, 1.0, -3.0]), c=c)
    assert out["g"].dtype == np.float32
    np.testing.assert_array_equal(out["g"], c)


def test_bf16_arithmetic_rounds_forward_but_the_backward_pass_is_f32():
    text = ("param w: bf16[4, 3]\ninput x: bf16[2, 4]\n"
            "l = sum(tanh(x @ w) * 3)\ng = grad(l, w)\noutput g, l\n")
    graph = compiler.check_source(text)
    d = differentiate(graph)
    first_backward = next(n.id for n in d.nodes if n.line == 3 and n.col == 5)
    backward = d.nodes[first_backward:]
    assert backward and all(n.dtype == "f32" for n in backward)
    leaves = leaf_values(graph, 1)
    inputs, params = split(graph, leaves)
    out = evaluate(graph, inputs, params)
    # The rule reads the forward values: x @ w in f32, tanh rounded to f32, all widened exactly.
    x64, w64 = leaves["x"].astype(np.float64), leaves["w"].astype(np.float64)
    t = np.tanh(x64 @ w64).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(out["g"], x64.T @ (3 * (1 - t * t)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape_b, expect", [
    ((4,), lambda c, a: c.sum(axis=0)),
    ((3, 1), lambda c, a: c.sum(axis=1, keepdims=True)),
    ((1, 4), lambda c, a: c.sum(axis=0, keepdims=True)),
    ((1, 1), lambda c, a: c.sum(keepdims=True)),
    ((3, 4), lambda c, a: c),
])
def test_broadcasting_is_summed_over_in_the_backward_pass(shape_b, expect):
    text = (f"input a: f32[3, 4]\ninput b: f32[{', '.join(map(str, shape_b))}]\n"
            "input c: f32[3, 4]\nl = sum((a + b) * c)\ngb = grad(l, b)\noutput gb\n")
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    out = grads(text, a=a, b=np.zeros(shape_b), c=c)
    np.testing.assert_allclose(out["gb"], expect(round_to(c, "f32"), a), rtol=1e-6)


def test_a_0d_value_broadcast_over_a_tensor_gets_the_sum():
    text = ("input v: f32[5]\ninput a: f32[3, 4]\ns = sum(v)\nl = sum(a * s)\n"
            "g = grad(l, v)\noutput g\n")
    a = np.arange(12.0).reshape(3, 4)
    out = grads(text, v=np.ones(5), a=a)
    np.testing.assert_array_equal(out["g"], np.full(5, a.sum()))


def test_a_loss_that_does_not_depend_on_p_has_gradient_zero():
    text = "input x: f32[3]\nparam p: f32[2, 2]\nl = sum(x)\ng = grad(l, p)\noutput g\n"
    out = grads(text, x=np.ones(3), p=np.ones((2, 2)))
    np.testing.assert_array_equal(out["g"], np.zeros((2, 2), np.float32))


def test_a_param_read_several_times_accumulates_its_gradients():
    text = "param p: f32[3]\nl = sum(p * p * p) + sum(p)\ng = grad(l, p)\noutput g\n"
    out = grads(text, p=np.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(out["g"], 3 * np.array([1.0, 4.0, 0.25]) + 1, rtol=1e-6)


def test_grad_of_a_grad_is_the_second_derivative():
    text = ("param p: f32[3]\nl = sum(p * p * p)\ng = grad(l, p)\nl2 = sum(g * relu(p))\n"
            "h = grad(l2, p)\noutput g, h\n")
    out = grads(text, p=np.array([1.0, -2.0, 0.5]))
    p = np.array([1.0, -2.0, 0.5])
    # l2 = sum(3 p^2 relu(p)): d/dp = 6 p relu(p) + 3 p^2 relu'(p)
    np.testing.assert_allclose(out["h"], 6 * p * np.maximum(p, 0) + 3 * p * p * (p > 0),
                               rtol=1e-6)


def test_grad_with_respect_to_an_input():
    text = "input x: f32[2, 3]\ninput w: f32[3, 4]\nl = sum(x @ w)\ng = grad(l, x)\noutput g\n"
    w = np.arange(12.0).reshape(3, 4)
    out = grads(text, x=np.ones((2, 3)), w=w)
    np.testing.assert_array_equal(out["g"], np.tile(w.sum(axis=1), (2, 1)))


# ---- the backward IR --------------------------------------------------------------------------

MLP = """\
input x: f32[6, 5]
input y: f32[6, 3]
param w1: f32[5, 4]
param w2: f32[4, 3]
h = tanh(x @ w1)
loss = -mean(sum(y * log_softmax(h @ w2, axis=1), axis=1))
g1 = grad(loss, w1)
g2 = grad(loss, w2)
output loss, g1, g2
"""


def test_grads_of_one_loss_share_one_backward_pass():
    d = differentiate(compiler.check_source(MLP))
    verify(d)
    ops = [n.op for n in d.nodes]
    # forward: 2 matmuls; backward: dW2 = h^T g, dh = g W2^T, dW1 = x^T dh; one softmax for
    # log_softmax's rule, however many grads of `loss` there are.
    assert ops.count(Op.MATMUL) == 5
    assert ops.count(Op.SOFTMAX) == 1
    assert ops.count(Op.TRANSPOSE) == 3
    assert Op.GRAD not in ops
    assert {"g1", "g2"} <= {n.name for n in d.nodes}
    assert d["g1"].shape == (5, 4) and d["g2"].shape == (4, 3)


def test_backward_nodes_nothing_needs_are_dropped():
    # Only dL/dw is asked for: no gradient flows to x, so no w^T is made for it.
    d = differentiate(compiler.check_source(
        "input x: f32[4, 3]\nparam w: f32[3, 2]\nl = sum(tanh(x @ w))\ng = grad(l, w)\n"
        "output g\n"))
    transposed = [n.inputs[0].name for n in d.nodes if n.op is Op.TRANSPOSE]
    assert transposed == ["x"]
    users = d.users()
    assert all(users[n.id] or n in d.outputs for n in d.nodes if n.id > d["l"].id)


def test_backward_nodes_are_placed_at_the_first_grad_call_and_named_by_the_user():
    d = differentiate(compiler.check_source(MLP))
    first = d["g1"]
    backward = [n for n in d.nodes if n.id > d["loss"].id]
    assert all((n.line, n.col) == (7, 6) for n in backward)
    assert first.op is Op.MATMUL and first.name == "g1"
    assert [n.name for n in d.nodes if not n.name.startswith("%")] == [
        "x", "y", "w1", "w2", "h", "loss", "g2", "g1"]


def test_two_names_for_one_gradient_are_two_values():
    d = differentiate(compiler.check_source(
        "param p: f32[3]\nl = sum(p * p)\na = grad(l, p)\nb = grad(l, p)\noutput a, b\n"))
    verify(d)
    assert d["b"].op is Op.CAST and d["b"].inputs[0] is d["a"]


def test_a_gradient_that_is_a_splat_is_stored_as_its_own_value():
    d = differentiate(compiler.check_source("param p: f32[3]\nl = sum(p)\ng = grad(l, p)\n"
                                            "output g\n"))
    verify(d)
    g = d["g"]
    assert g.op is Op.CAST and g.inputs[0].op is Op.CONST and g.inputs[0].value == 1.0


def test_graphs_without_grad_are_left_alone():
    g = compiler.check_source("input x: f32[3]\ny = relu(x)\noutput y\n")
    assert differentiate(g) is g


def test_differentiated_ir_prints_with_its_updates():
    text = ("param w: f32[3, 2]\ninput x: f32[4, 3]\nl = sum(x @ w)\n"
            "update w = w - 0.5 * grad(l, w)\n")
    ir = compiler.emit_stage(text, "ir")
    assert ir.splitlines()[0] == "# <string>: 1 input, 1 param, 12 nodes, 0 outputs, 1 update"
    assert "w    : f32[3, 2] = param[init=glorot]" in ir
    # sum(x @ w) reduces every axis: a reshape to 1-D, then one sum. Its gradient is a splat
    # of 1 (the reshape's and the broadcast's gradients of a splat fold away), stored (a copy)
    # for the matmul to read.
    assert "%t5  : f32[4, 2] = const 1.0" in ir
    assert "%t6  : f32[4, 2] = cast %t5" in ir
    assert "%t8  : f32[3, 2] = matmul %t7, %t6" in ir
    assert ir.splitlines()[-1] == "update w = %t11"
    assert not any(line.startswith("output") for line in ir.splitlines())


# ---- random programs with a 0-d loss ----------------------------------------------------------

@st.composite
def loss_programs(draw) -> str:
    """A random well-typed f32 program ending in a 0-d loss, with the grad of the loss for
    every input and param. Values stay tame (log and sqrt of positive values, division by
    1 + |x|)."""
    lines: list[str] = []
    pool: list[tuple[str, tuple[int, ...]]] = []
    leaves: list[str] = []
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def declare(shape: tuple[int, ...]) -> str:
        kind = draw(st.sampled_from(["input", "param"]))
        name = fresh("p" if kind == "param" else "x")
        lines.append(f"{kind} {name}: f32[{', '.join(map(str, shape))}]")
        leaves.append(name)
        pool.append((name, shape))
        return name

    dims = st.integers(1, 4)
    declare((draw(dims), draw(dims)))
    for _ in range(draw(st.integers(1, 5))):
        name, shape = draw(st.sampled_from(pool))
        out = fresh("v")
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "softmax", "transpose",
                                     "matmul"]))
        rshape = shape
        if kind == "unary":
            f = draw(st.sampled_from(["relu({})", "tanh({})", "sigmoid({})", "abs({})", "-{}",
                                      "exp(tanh({}))", "sqrt(1 + {0} * {0})",
                                      "log(1 + abs({}))", "{} * 0.5", "erf({})", "gelu({})",
                                      "{} ** 2", "(1 + abs({})) ** -0.5"]))
            lines.append(f"{out} = {f.format(name)}")
        elif kind == "binary":
            other_kind = draw(st.sampled_from(["same", "row", "col", "literal"]))
            if other_kind == "row" and len(shape) == 2:
                other = declare((shape[1],))
            elif other_kind == "col" and len(shape) == 2:
                other = declare((shape[0], 1))
            elif other_kind == "literal":
                other = draw(st.sampled_from(["0.5", "2", "-1.25"]))
            else:
                same = [p for p in pool if p[1] == shape and p[0] != name]
                other = draw(st.sampled_from(same))[0] if same else declare(shape)
            op = draw(st.sampled_from(["+", "-", "*", "/", "max", "min", "pow", "where"]))
            # A comparison only of leaves: one of computed values could flip between the f32
            # reference and the float64 finite differences (or the mesh) near a tie.
            test = (f"{name} > {other}" if name in leaves and other in leaves
                    else f"{other} > 0.5" if other in leaves
                    else f"{name} < -0.5" if name in leaves else None)
            if op == "where" and test is None:
                op = "+"
            expr = {"max": f"maximum({name}, {other})", "min": f"minimum({name}, {other})",
                    "/": f"{name} / (1 + abs({other}))",
                    "pow": f"(1 + abs({name})) ** tanh({other})",
                    "where": f"where({test}, {name}, {other} * 2)"}.get(
                op, f"{name} {op} {other}")
            lines.append(f"{out} = {expr}")
        elif kind == "reduce":
            f = draw(st.sampled_from(["sum", "mean", "max", "min"]))
            form = draw(st.sampled_from(["axis", "keepdims", "all"]))
            if form == "all":
                lines.append(f"{out} = {f}({name})")
                host = declare((draw(dims), draw(dims)))
                out2 = fresh("v")
                lines.append(f"{out2} = {host} * {out}")
                out, rshape = out2, pool[-1][1]
            else:
                axis = draw(st.integers(0, len(shape) - 1))
                keep = form == "keepdims"
                lines.append(f"{out} = {f}({name}, axis={axis}, keepdims={int(keep)})")
                rshape = shape[:axis] + ((1,) if keep else ()) + shape[axis + 1:]
                if not rshape:
                    host = declare((draw(dims), draw(dims)))
                    out2 = fresh("v")
                    lines.append(f"{out2} = {host} * {out}")
                    out, rshape = out2, pool[-1][1]
        elif kind == "softmax":
            f = draw(st.sampled_from(["softmax", "log_softmax", "layernorm"]))
            axis = draw(st.integers(0, len(shape) - 1))
            if f == "layernorm" and name not in leaves:
                # on a leaf only: on a computed value a nearly constant line (a variance at
                # the level of the rounding error) would magnify rounding differences
                f = "softmax"
            lines.append(f"{out} = {f}({name}, axis={axis})")
        elif kind == "transpose" and len(shape) == 2:
            lines.append(f"{out} = transpose({name})")
            rshape = shape[::-1]
        elif kind == "matmul" and len(shape) == 2:
            rhs = declare((shape[1], draw(dims)))
            lines.append(f"{out} = {name} @ {rhs}")
            rshape = (shape[0], pool[-1][1][1])
        else:
            lines.append(f"{out} = tanh({name})")
        pool.append((out, rshape))
    last, shape = pool[-1]
    loss = draw(st.sampled_from(["sum", "mean"]))
    lines.append(f"loss = {loss}({last})")
    for leaf in leaves:
        lines.append(f"g_{leaf} = grad(loss, {leaf})")
    lines.append("output loss, " + ", ".join(f"g_{leaf}" for leaf in leaves))
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=loss_programs(), seed=st.integers(0, 1000))
def test_random_programs_reference_grad_matches_finite_differences(text, seed):
    check_program(text, seed, tol=5e-3)
    # The backward IR keeps the checker's invariant: splats and broadcasts are read in place
    # by elementwise ops only.
    d = differentiate(compiler.check_source(text))
    verify(d)
    for n in d.nodes:
        if n.op not in READS_IN_PLACE | {Op.BROADCAST}:
            assert all(i.op not in (Op.CONST, Op.BROADCAST) for i in n.inputs), (n, text)
