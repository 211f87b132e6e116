"""The training additions to the .d1k language: `param`, `update`, `grad`, `log`, `log_softmax`,
reductions over every axis and `keepdims`; their checker diagnostics, their IR, the reference
evaluation of params and updates (`evaluate`, `init_params`, `train_step`), and params in the
compiled object (a program whose params have no update compiles and runs like one with inputs).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from gradkit import finite_difference
from progkit import run_and_compare

import compiler
from compiler.ir import Graph, Init, IRError, Op, Update, round_to, verify
from compiler.pipeline import emit_stage
from compiler.reference import evaluate, init_params, log_f32, train_step, update_key
from d1isa.asm import assemble
from d1isa.errors import D1Error, ObjectFormatError, SourceError
from d1isa.machine import load_machine
from d1isa.objfile import ObjectFile, TensorLayout, TensorPiece, _validate_tensor

ROOT = Path(__file__).resolve().parents[1]
M4 = load_machine("d1", mesh="4x4")

# The example program of the training issue, verbatim.
EXAMPLE = """\
# Digits classifier, one SGD step with momentum per call.  Batch 64, 64 features, 10 classes.
input x: f32[64, 64]
input y: f32[64, 10]            # one-hot labels
param w1: f32[64, 32]
param b1: f32[32]
param w2: f32[32, 10]
param b2: f32[10]
param m1: f32[64, 32] = 0       # momentum buffer, starts at zero
h = relu(x @ w1 + b1)
z = h @ w2 + b2
loss = -mean(sum(y * log_softmax(z, axis=1), axis=1))
g1 = grad(loss, w1)
m1n = 0.9 * m1 + g1
update m1 = m1n
update w1 = w1 - 0.05 * m1n
update b1 = b1 - 0.05 * grad(loss, b1)
update w2 = w2 - 0.05 * grad(loss, w2)
update b2 = b2 - 0.05 * grad(loss, b2)
output loss
"""


def small(text: str, batch: int = 8, features: int = 6, hidden: int = 5, classes: int = 3
          ) -> str:
    """The example with small shapes."""
    for old, new in (("64, 64", f"{batch}, {features}"), ("64, 10", f"{batch}, {classes}"),
                     ("64, 32", f"{features}, {hidden}"), ("f32[32]", f"f32[{hidden}]"),
                     ("32, 10", f"{hidden}, {classes}"), ("f32[10]", f"f32[{classes}]")):
        text = text.replace(old, new)
    return text


def batch_for(graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = graph["x"]
    n, k = graph["y"].shape
    return {"x": rng.standard_normal(x.shape), "y": np.eye(k)[rng.integers(0, k, n)]}


def errors(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, filename="t.d1k")
    return [(d.line, d.col, d.message) for d in info.value.diagnostics]


# ---- the example program ----------------------------------------------------------------------

def test_the_example_parses_into_param_and_update_statements():
    prog = compiler.parse_source(EXAMPLE, "train.d1k")
    kinds = [type(s).__name__ for s in prog.statements]
    assert kinds == (["Input"] * 2 + ["Param"] * 5 + ["Assign"] * 5 + ["Update"] * 5
                     + ["Output"])
    m1 = prog.statements[6]
    assert (m1.name.id, m1.dtype.id, m1.init.value, m1.line, m1.name.col) == ("m1", "f32", 0.0,
                                                                              8, 7)
    assert prog.statements[2].init is None
    text = compiler.format_ast(prog)
    assert "    8:1  param m1: f32[64, 32] = 0" in text
    assert "   16:1  update b1 = (b1 - (0.05 * grad(loss, b1)))" in text


def test_the_example_checks_into_params_updates_and_grad_nodes():
    g = compiler.check_source(EXAMPLE, filename="train.d1k")
    assert [n.name for n in g.inputs] == ["x", "y"]
    assert [(p.name, p.op, p.init) for p in g.params] == [
        ("w1", Op.PARAM, Init("glorot")), ("b1", Op.PARAM, Init("const", 0.0)),
        ("w2", Op.PARAM, Init("glorot")), ("b2", Op.PARAM, Init("const", 0.0)),
        ("m1", Op.PARAM, Init("const", 0.0))]
    assert [(u.param.name, u.line, u.col) for u in g.updates] == [
        ("m1", 14, 1), ("w1", 15, 1), ("b1", 16, 1), ("w2", 17, 1), ("b2", 18, 1)]
    assert g.updates[0].value is g["m1n"]
    assert [o.name for o in g.outputs] == ["loss"] and g["loss"].shape == ()
    grads = [n for n in g.nodes if n.op is Op.GRAD]
    assert [(n.name, n.inputs[1].name, n.dtype, n.shape) for n in grads] == [
        ("g1", "w1", "f32", (64, 32)), ("%t26", "b1", "f32", (32,)),
        ("%t30", "w2", "f32", (32, 10)), ("%t34", "b2", "f32", (10,))]
    assert g.is_training


def test_one_reference_step_of_the_example_reads_the_values_from_before_the_step():
    graph = compiler.check_source(EXAMPLE.replace("output loss", "output loss, g1, m1, w1"))
    params = init_params(graph, seed=0)
    out = evaluate(graph, batch_for(graph), params)
    assert list(out) == ["loss", "g1", "m1", "w1"] + [update_key(n) for n in
                                                      ("m1", "w1", "b1", "w2", "b2")]
    # m1 starts at 0, so m1n = 0.9 * 0 + g1 = g1 exactly; w1 is updated with m1n, and the
    # outputs m1 and w1 are the values from before the step.
    np.testing.assert_array_equal(out["update:m1"], out["g1"])
    np.testing.assert_array_equal(out["m1"], np.zeros((64, 32), np.float32))
    np.testing.assert_array_equal(out["w1"], params["w1"])
    np.testing.assert_array_equal(out["update:w1"],
                                  params["w1"] - np.float32(0.05) * out["g1"])
    assert 0 < out["loss"] < 10 and out["loss"].shape == ()


def test_train_step_on_the_example_returns_every_param_and_the_0d_outputs():
    graph = compiler.check_source(EXAMPLE)
    new, scalars = train_step(graph, None, batch_for(graph), seed=3)
    assert list(new) == ["w1", "b1", "w2", "b2", "m1"]
    assert all(new[p.name].shape == p.shape and new[p.name].dtype == np.float32
               for p in graph.params)
    assert list(scalars) == ["loss"] and isinstance(scalars["loss"], float)
    # The same seed draws the same starting params: the step is reproducible.
    again, scalars2 = train_step(graph, init_params(graph, 3), batch_for(graph))
    assert scalars2 == scalars
    assert all(np.array_equal(again[k], new[k]) for k in new)


def test_the_small_example_steps_by_its_gradients():
    text = small(EXAMPLE)
    graph = compiler.check_source(text)
    params = init_params(graph, seed=1)
    batch = {k: round_to(v, "f32") for k, v in batch_for(graph, seed=2).items()}
    new, _ = train_step(graph, params, batch)
    leaves = {**batch, **params}
    for name in ("w1", "b1", "w2", "b2"):
        fd = finite_difference(graph, "loss", leaves, name)
        lr = 0.05
        step = params[name] - new[name]
        if name == "w1":   # momentum: m1n = 0.9 * 0 + g1
            np.testing.assert_allclose(new["m1"], fd, atol=2e-4)
        np.testing.assert_allclose(step, lr * fd, atol=2e-5, err_msg=name)


def test_the_small_example_learns_its_batch():
    graph = compiler.check_source(small(EXAMPLE, batch=12, features=4, hidden=8, classes=3))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 12)
    centers = 2.5 * rng.standard_normal((3, 4))
    batch = {"x": centers[labels] + 0.3 * rng.standard_normal((12, 4)), "y": np.eye(3)[labels]}
    params, losses = init_params(graph, seed=0), []
    for _ in range(60):
        params, scalars = train_step(graph, params, batch)
        losses.append(scalars["loss"])
    assert losses[-1] < 0.2 * losses[0]
    assert all(np.isfinite(losses))


# ---- params and their initial values ----------------------------------------------------------

INITS = """\
param a: f32[4, 3] = glorot
param k: f32[2] = -0.25
param n: f32[5] = normal(0.5)
param h: bf16[3, 2, 6]
param z: f32[3]
param c: bf16[2] = 0.1
input x: f32[1]
y = x * 1
output y
"""


def test_init_params_is_the_documented_numpy_generator():
    graph = compiler.check_source(INITS)
    got = init_params(graph, seed=7)
    rng = np.random.default_rng(7)
    a = rng.uniform(-np.sqrt(6 / 7), np.sqrt(6 / 7), (4, 3))
    n = rng.normal(0.0, 0.5, (5,))
    h = rng.uniform(-np.sqrt(6 / 8), np.sqrt(6 / 8), (3, 2, 6))   # fans: the last two axes
    np.testing.assert_array_equal(got["a"], a.astype(np.float32))
    np.testing.assert_array_equal(got["k"], [-0.25, -0.25])
    np.testing.assert_array_equal(got["n"], n.astype(np.float32))
    bf = ml_dtypes.bfloat16
    np.testing.assert_array_equal(got["h"], h.astype(np.float32).astype(bf).astype(np.float32))
    np.testing.assert_array_equal(got["z"], np.zeros(3))
    np.testing.assert_array_equal(got["c"], [0.10009765625] * 2)
    assert all(v.dtype == np.float32 for v in got.values())


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_init_params_takes_a_seed_of_an_integer_at_least_0(seed):
    # numpy raised its own ValueError or TypeError, e.g. through Trainer(init_seed=-1)
    with pytest.raises(D1Error, match=r"the seed of the params' INITs must be an integer >= 0"):
        init_params(compiler.check_source(INITS), seed)
    assert init_params(compiler.check_source(INITS), np.int64(7))["n"].shape == (5,)


def test_the_same_seed_gives_the_same_params_and_another_seed_others():
    graph = compiler.check_source(INITS)
    one, same, other = init_params(graph, 1), init_params(graph, 1), init_params(graph, 2)
    assert all(np.array_equal(one[k], same[k]) for k in one)
    assert not np.array_equal(one["a"], other["a"])
    assert np.array_equal(one["k"], other["k"])


def test_given_params_replace_only_themselves():
    graph = compiler.check_source(INITS.replace("output y", "output y, a, n"))
    out = evaluate(graph, {"x": [1.0]}, {"a": np.ones((4, 3))}, seed=4)
    np.testing.assert_array_equal(out["a"], np.ones((4, 3)))
    np.testing.assert_array_equal(out["n"], init_params(graph, 4)["n"])


@pytest.mark.parametrize("params, message", [
    ({"q": np.ones(2)}, "'q': not a param of this program (its params: a, k, n, h, z, c)"),
    ({"k": np.ones(3)}, "param 'k' has shape (3,), expected (2,)"),
    ({"k": ["a", "b"]}, "param 'k' must be an array of real numbers"),
    ([1, 2], "params must be a mapping"),
])
def test_bad_params_are_d1_errors(params, message):
    graph = compiler.check_source(INITS)
    with pytest.raises(D1Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate(graph, {"x": [1.0]}, params)


def test_a_param_can_be_an_output_and_keeps_its_value_before_the_step():
    text = ("param a: f32[3] = 1\nparam b: f32[3] = 2\nupdate a = b\nupdate b = a\n"
            "output a\n")
    out = compiler.reference(text, {})
    assert list(out) == ["a", "update:a", "update:b"]
    np.testing.assert_array_equal(out["a"], [1, 1, 1])
    np.testing.assert_array_equal(out["update:a"], [2, 2, 2])
    np.testing.assert_array_equal(out["update:b"], [1, 1, 1])


def test_a_program_may_have_only_updates():
    text = "input x: f32[2]\nparam s: f32[2]\nupdate s = s + x\n"
    graph = compiler.check_source(text)
    assert graph.outputs == () and len(graph.updates) == 1
    new, scalars = train_step(graph, {"s": [1.0, 2.0]}, {"x": [0.5, 0.25]})
    np.testing.assert_array_equal(new["s"], [1.5, 2.25])
    assert scalars == {}


def test_a_bf16_param_takes_a_rounded_f32_value():
    text = "param w: bf16[2] = 1\ninput g: f32[2]\nupdate w = w - 0.001 * g\n"
    graph = compiler.check_source(text)
    (u,) = graph.updates
    assert u.value.op is Op.CAST and u.value.dtype == "bf16" and u.value.rounds
    out = compiler.reference(text, {"g": [1.0, -3.0]})
    np.testing.assert_array_equal(out["update:w"], round_to([0.999, 1.003], "bf16"))


def test_an_update_to_a_number_fills_the_param():
    graph = compiler.check_source("param m: f32[2, 2] = 5\nupdate m = 0\n")
    (u,) = graph.updates
    assert u.value.op is Op.CAST and u.value.inputs[0].op is Op.CONST
    new, _ = train_step(graph, None, {})
    np.testing.assert_array_equal(new["m"], np.zeros((2, 2)))


def test_a_param_without_update_is_a_constant_weight():
    graph = compiler.check_source("input x: f32[2, 3]\nparam w: f32[3, 2]\ny = x @ w\noutput y\n")
    assert not graph.is_training
    new, _ = train_step(graph, {"w": np.eye(3, 2)}, {"x": np.ones((2, 3))})
    np.testing.assert_array_equal(new["w"], np.eye(3, 2))


# ---- the new builtins -------------------------------------------------------------------------

def test_log_is_the_defined_f32_algorithm_rounded_to_the_dtype():
    x = np.array([0.5, 1.0, 3.0, 1e-30, 0.0, -1.0])
    for dtype in ("f32", "bf16"):
        out = compiler.reference(f"input x: {dtype}[6]\ny = log(x)\noutput y\n", {"x": x})["y"]
        np.testing.assert_array_equal(out, round_to(log_f32(round_to(x, dtype)), dtype))
        with np.errstate(all="ignore"):
            f64 = round_to(np.log(round_to(x, dtype).astype(np.float64)), dtype)
        np.testing.assert_allclose(out, f64, rtol=2 ** -23 if dtype == "f32" else 2 ** -7)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_log_softmax_is_computed_in_f32_and_rounded_once(dtype, axis):
    rng = np.random.default_rng(5)
    x = round_to(rng.standard_normal((4, 7)) * 4 + 100, dtype)
    out = compiler.reference(f"input x: {dtype}[4, 7]\ny = log_softmax(x, axis={axis})\n"
                             "output y\n", {"x": x})["y"]
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted.astype(np.float64)).astype(np.float32)
    lse = log_f32(e.sum(axis=axis, keepdims=True, dtype=np.float32))
    np.testing.assert_array_equal(out, round_to(shifted - lse, dtype))
    np.testing.assert_allclose(out, x - np.log(np.exp(x.astype(np.float64) - 100).sum(
        axis=axis, keepdims=True)) - 100, atol=0.1 if dtype == "bf16" else 1e-5)


@pytest.mark.parametrize("fn", ["sum", "mean", "max"])
def test_reductions_without_an_axis_reduce_everything_to_0d(fn):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5))
    graph = compiler.check_source(f"input x: f32[3, 4, 5]\ny = {fn}(x)\noutput y\n")
    y = graph["y"]
    assert y.shape == () and y.op.value == fn and y.inputs[0].op is Op.RESHAPE
    assert y.inputs[0].shape == (60,)
    out = evaluate(graph, {"x": x})["y"]
    assert out.shape == ()
    np.testing.assert_allclose(out, getattr(np, fn)(round_to(x, "f32")), rtol=1e-6)


def test_a_full_reduction_of_a_vector_is_the_existing_axis_0_reduction():
    g = compiler.check_source("input v: f32[9]\ns = sum(v)\nm = max(v, keepdims=1)\n"
                              "output s, m\n")
    assert [n.op for n in g.nodes] == [Op.INPUT, Op.SUM, Op.MAX, Op.RESHAPE]
    assert g["s"].axis == 0 and g["m"].shape == (1,)


def test_a_bf16_full_sum_is_accumulated_in_f32_and_rounded_once():
    # 256 + 1 + 1 = 258 is a bf16 value; summing row by row would round 257 to 256 first.
    x = np.array([[256.0, 1.0], [1.0, 0.0]])
    out = compiler.reference("input x: bf16[2, 2]\ny = sum(x)\noutput y\n", {"x": x})["y"]
    assert out == 258.0
    rows = compiler.reference("input x: bf16[2, 2]\ny = sum(sum(x, axis=1), axis=0)\n"
                              "output y\n", {"x": x})["y"]
    assert rows == 256.0


@pytest.mark.parametrize("call, shape", [
    ("sum(x, axis=1, keepdims=1)", (3, 1, 5)), ("max(x, axis=0, keepdims=1)", (1, 4, 5)),
    ("mean(x, axis=-1, keepdims=1)", (3, 4, 1)), ("sum(x, keepdims=1)", (1, 1, 1)),
    ("mean(x, 2, keepdims=0)", (3, 4)), ("max(x, keepdims=0)", ()),
])
def test_keepdims_keeps_the_reduced_axes_with_length_1_as_numpy(call, shape):
    rng = np.random.default_rng(2)
    x = round_to(rng.standard_normal((3, 4, 5)), "f32")
    graph = compiler.check_source(f"input x: f32[3, 4, 5]\ny = {call}\noutput y\n")
    out = evaluate(graph, {"x": x})["y"]
    fn = call.split("(")[0]
    kw = {"axis": None, "keepdims": "keepdims=1" in call}
    for text, axis in (("axis=1", 1), ("axis=0", 0), ("axis=-1", -1), ("x, 2", 2)):
        if text in call:
            kw["axis"] = axis
    want = getattr(np, fn)(x, **kw)
    assert graph["y"].shape == shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-6)


# ---- errors -----------------------------------------------------------------------------------

DECLS = """\
input x: f32[4, 3]
param w: f32[3, 2]
param b: f32[2]
param h: bf16[2]
l = sum(x @ w)
"""


@pytest.mark.parametrize("body, line, col, message", [
    # the errors docs/DSL.md lists for param and update
    ("g = grad(x @ w, w)", 6, 10, "grad needs a 0-d value to differentiate, got f32[4, 2]; "
                                  "reduce it first, e.g. with sum(...) or mean(...)"),
    ("g = grad(3, w)", 6, 10, "grad needs a 0-d tensor to differentiate, got a number"),
    ("v = x * 2\ng = grad(l, v)", 7, 13,
     "grad is taken with respect to a param or an input, and 'v' (line 6) is neither"),
    ("g = grad(l, x @ w)", 6, 13, "grad is taken with respect to a param or an input, by "
                                  "name: grad(L, w)"),
    ("g = grad(l, l)", 6, 13,
     "grad is taken with respect to a param or an input, and 'l' (line 5) is neither"),
    ("update x = x", 6, 8, "cannot update input 'x': only a param keeps a value from one run "
                           "to the next; declare it with 'param'"),
    ("update l = 1", 6, 8, "cannot update 'l' (defined on line 5): only a param can be updated"),
    ("update q = 1", 6, 8, "cannot update unknown name 'q'; only a param can be updated"),
    ("update relu = 1", 6, 8, "'relu' is a builtin function, not a param"),
    ("update b = b\nupdate b = b * 2", 7, 8,
     "param 'b' is already updated on line 6; each param is updated at most once"),
    ("update w = b", 6, 12, "cannot update 'w' (f32[3, 2]) with a value of shape [2]: the "
                            "shapes must match"),
    ("update b = b + w", 6, 12, "cannot update 'b' (f32[2]) with a value of shape [3, 2]: "
                                "the shapes must match"),
    ("update b = b + x", 6, 14, "cannot broadcast shapes [2] and [4, 3] for '+'"),
    ("update w = transpose(w)", 6, 12, "cannot update 'w' (f32[3, 2]) with a value of shape "
                                       "[2, 3]: the shapes must match"),
    ("update b = h", 6, 12, "cannot update 'b' (f32[2]) with a bf16 value: the dtypes must "
                            "match; widen it with cast(..., f32)"),
    ("y = sum(x, axis=1, keepdims=2)", 6, 29, "keepdims must be 0 or 1, got '2'"),
    ("y = max(x, keepdims=-1)", 6, 21, "keepdims must be 0 or 1, got '-1'"),
    ("y = mean(x, 0, keepdims=x)", 6, 25, "keepdims must be 0 or 1, got 'x'"),
    ("y = sum(x, keepdims=1.0)", 6, 21, "keepdims must be 0 or 1, got '1.0'"),
    # and the rest of the new language
    ("y = softmax(x, axis=1, keepdims=1)", 6, 24, "unknown keyword 'keepdims' for softmax"),
    ("y = log_softmax(x)", 6, 5, "log_softmax needs an axis; usage: log_softmax(x, axis=K)"),
    ("y = sum(x, 1, 1)", 6, 5, "sum takes one tensor and an optional axis, got 3 positional "
                               "arguments"),
    ("y = grad(l)", 6, 5, "grad takes 2 arguments, got 1"),
    ("y = grad(l, w, axis=0)", 6, 16, "grad has no keyword 'axis'"),
    ("w = x", 6, 1, "cannot assign to param 'w' (declared on line 2); to set its value for "
                    "the next run write 'update w = ...'"),
    ("param x: f32[2]", 6, 7, "input 'x' is already declared on line 1"),
    ("param w: f32[2]", 6, 7, "param 'w' is already declared on line 2"),
    ("input w: f32[2]", 6, 7, "param 'w' is already declared on line 2"),
    ("param p: f32[3] = glorot", 6, 19, "glorot scales by the last two axes, so it needs a "
                                        "param with 2 or more dimensions, got 1"),
    ("param p: f32[3] = normal(-1)", 6, 26, "the standard deviation of normal(STD) must be a "
                                            "non-negative number literal"),
    ("param p: f32[3] = normal(1, 2)", 6, 19, "normal takes one argument, the standard "
                                              "deviation: normal(STD)"),
    ("param p: f32[3] = x", 6, 19, "a param's initial value is a number literal, glorot or "
                                   "normal(STD)"),
    ("param p: f32[3] = 1 / 2", 6, 19, "a param's initial value is a number literal"),
    ("param p: f32[3] = 1e999", 6, 19, "number '1e999' is too large"),
    ("param p: f32[3] = normal(1e400)", 6, 26, "number '1e400' is too large"),
    ("param p: f32[]", 6, 10, "a param has 1 to 4 dimensions, got 0"),
    ("param p: f64[2]", 6, 10, "unknown dtype 'f64'; the dtypes are f32 and bf16"),
    ("param p: f32[0]", 6, 14, "a dimension must be a positive integer, got '0'"),
    ("param update: f32[2]", 6, 7, "'update' is a keyword and cannot be used as a name"),
    ("y = param + 1", 6, 5, "'param' is a keyword, not a value"),
    ("update w = w\nparam w2: f32[2]\nupdate w3 = 1\nparam w3: f32[2]", 8, 8,
     "'w3' is updated before its declaration on line 9"),
])
def test_errors_are_located(body, line, col, message):
    found = errors(DECLS + body + "\noutput l\n")
    assert any((ln, c) == (line, col) and message in m for ln, c, m in found), found


def test_an_error_renders_as_file_line_col_with_the_source_line_and_a_caret():
    with pytest.raises(SourceError) as info:
        compiler.check_source(DECLS + "update w = b\noutput l\n", filename="t.d1k")
    assert info.value.render().splitlines()[:3] == [
        "t.d1k:6:12: error: cannot update 'w' (f32[3, 2]) with a value of shape [2]: the "
        "shapes must match",
        "    update w = b",
        "               ^"]


def test_errors_in_updates_do_not_cascade_and_all_are_reported():
    found = errors(DECLS + "update w = zz\nupdate b = b + 1\nupdate b = b\ng = grad(zz, w)\n"
                   "output g\n")
    assert [(ln, c) for ln, c, _ in found] == [(6, 12), (8, 8), (9, 10)]


def test_a_program_with_neither_outputs_nor_updates_is_still_an_error():
    assert errors("param w: f32[2]\n")[-1][2] == (
        "the program has no outputs; mark results with 'output NAME' (a training program may "
        "instead update a param: 'update NAME = EXPR')")


@pytest.mark.parametrize("text, col, message", [
    ("param", 6, "expected a name after 'param': param NAME: DTYPE[D0, D1, ...] = INIT"),
    ("param x f32[2]", 9, "expected ':' after the param's name"),
    ("param x:", 9, "expected a dtype (f32 or bf16) after ':': param NAME"),
    ("param x: f32", 13, "expected '[' and the shape after the dtype: param NAME"),
    ("param x: f32[", 14, "expected a dimension (a positive integer) in the shape"),
    ("param x: f32[2", 15, "expected ',' or ']' in the shape"),
    ("param x: f32[2] y", 17, "expected '= INIT' or the end of the line after the shape"),
    ("param x: f32[2] =", 18, "expected the initial value after '=': a number literal, glorot "
                              "or normal(STD)"),
    ("param x: f32[2] = glorot y", 26, "expected an operator or the end of the line"),
    ("update", 7, "expected the name of a param after 'update': update NAME = EXPR"),
    ("update w 2", 10, "expected '=' after the param's name: update NAME = EXPR"),
    ("update w =", 11, "expected an expression after '=': update NAME = EXPR"),
    ("update w = (x", 14, "missing ')'"),
    ("param = 2", 7, "'param' is a keyword and cannot be used as a name"),
    ("update = 2", 8, "'update' is a keyword and cannot be used as a name"),
    ("2", 1, "a statement starts with a name, 'input', 'param', 'update' or 'output'"),
])
def test_syntax_errors_in_the_new_statements(text, col, message):
    with pytest.raises(SourceError) as info:
        compiler.parse_source(text, "t.d1k")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (1, col)
    assert message in d.message


def test_a_checker_error_exits_2_from_the_command_line(tmp_path):
    path = tmp_path / "bad.d1k"
    path.write_text(DECLS + "update b = b\nupdate b = b\noutput l\n")
    run = subprocess.run([sys.executable, "-m", "d1", "compile", str(path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert (f"{path}:7:8: error: param 'b' is already updated on line 6; each param is "
            "updated at most once") in run.stderr


# ---- params in the compiled object ------------------------------------------------------------

WEIGHTS = """\
# A perceptron whose weights are params with no update: constant weights, placed like inputs.
input x: f32[16, 24]
param w1: bf16[24, 32]
param b1: f32[32] = 0.1
param w2: f32[32, 10] = normal(0.2)
h = relu(x @ w1 + b1)
logits = h @ w2
output logits
"""


def test_params_without_updates_compile_and_run_like_inputs():
    obj = compiler.compile_source(WEIGHTS, M4, "weights.d1k")
    roles = {t.name: (t.role, t.dtype, t.shape) for t in obj.tensors}
    assert roles == {"x": ("input", "f32", (16, 24)), "w1": ("param", "bf16", (24, 32)),
                     "b1": ("param", "f32", (32,)), "w2": ("param", "f32", (32, 10)),
                     "logits": ("output", "f32", (16, 10))}
    assert obj.meta["inputs"] == ["x"] and obj.meta["params"] == ["w1", "b1", "w2"]
    # The same program with inputs for weights places them identically.
    as_inputs = compiler.compile_source(
        WEIGHTS.replace("param", "input").replace(" = 0.1", "").replace(" = normal(0.2)", ""),
        M4, "weights.d1k")
    for name in ("w1", "b1", "w2"):
        assert obj.tensor(name).pieces == as_inputs.tensor(name).pieces
    run_and_compare(obj, WEIGHTS, M4, "weights.d1k", seed=2)


def test_the_object_of_a_param_program_reloads_and_reassembles_identically():
    obj = compiler.compile_source(WEIGHTS, M4, "weights.d1k")
    assert ObjectFile.from_bytes(obj.to_bytes()).to_bytes() == obj.to_bytes()
    asm = emit_stage(WEIGHTS, "asm", M4, "weights.d1k")
    assert ".tensor w1 param bf16[24,32]" in asm
    assert assemble(asm, "weights.d1s").to_bytes() == obj.to_bytes()


def test_d1_run_gives_params_their_init_and_checks_against_the_reference(tmp_path):
    path = tmp_path / "weights.d1k"
    path.write_text(WEIGHTS)
    run = subprocess.run([sys.executable, "-m", "d1", "run", str(path), "--machine", "m4x4",
                          "--check", "--out-dir", str(tmp_path / "out")], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "logits" in run.stdout and "ok" in run.stdout and "not given" not in run.stderr


@pytest.mark.parametrize("loss", [
    "sum(sum(tanh(x @ w), axis=0), axis=0)",
    "sum(sum(x @ w, axis=0), axis=0)",            # the gradient reaching the matmul is a splat
    "sum(tanh(sum(x @ w + b, axis=0)), axis=0)",  # b's gradient sums a broadcast
])
def test_a_grad_made_of_compiled_ops_runs_on_the_mesh(loss):
    # Reductions over the leading axis, tanh, a row bias: the backward passes are splats,
    # products, broadcasts, sums, transposes and matmuls, all ops the back end compiles.
    text = (f"input x: f32[8, 6]\nparam w: f32[6, 5]\nparam b: f32[5]\nl = {loss}\n"
            "gw = grad(l, w)\ngb = grad(l, b)\noutput gw, gb, l\n")
    obj = compiler.compile_source(text, M4, "g.d1k")
    run_and_compare(obj, text, M4, "g.d1k", seed=1)


def test_a_param_tensor_name_must_be_an_identifier():
    piece = TensorPiece(0, 0, (0,), (4,), (4,))
    _validate_tensor(TensorLayout("w", "f32", (4,), "param", [piece]), M4)
    with pytest.raises(ObjectFormatError, match="param tensor name 'w 1' is not an identifier"):
        _validate_tensor(TensorLayout("w 1", "f32", (4,), "param", [piece]), M4)
    with pytest.raises(ObjectFormatError, match="unknown role 'weight'"):
        _validate_tensor(TensorLayout("w", "f32", (4,), "weight", [piece]), M4)


# ---- the IR's invariants ----------------------------------------------------------------------

def test_verify_rejects_broken_params_and_updates():
    g = compiler.check_source("input x: f32[2]\nparam p: f32[2]\nparam q: bf16[2]\n"
                              "update p = p + x\n")
    verify(g)
    x, p, q = g["x"], g["p"], g["q"]
    (u,) = g.updates
    broken = {
        "not the param nodes": replace(g, params=(p,)),
        "not a param, or updated twice": replace(g, updates=(u, u)),
        "value p is f32[2], not bf16[2]": replace(g, updates=(Update(q, p),)),
        "an init belongs to a param": Graph((x,), (replace(x, init=Init("glorot")),), ()),
        "not a param, or updated": replace(g, updates=(Update(x, x),)),
    }
    for message, graph in broken.items():
        with pytest.raises(IRError) as info:
            verify(graph)
        assert message in str(info.value)


def test_the_docs_show_the_example_and_every_training_program_in_them_checks():
    doc = (ROOT / "docs" / "DSL.md").read_text()
    assert f"```\n{EXAMPLE}```" in doc
    blocks = doc.split("```")[1::2]
    training = [b for b in blocks if "\nparam " in b or b.startswith("param ")]
    assert training
    for block in training:
        compiler.check_source(block)
