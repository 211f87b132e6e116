"""The operators beyond arithmetic: comparisons, where, `**` and pow, erf, gelu, the min and
argmax reductions and layernorm.

For each form: its syntax (precedence, associativity, comparisons that do not chain), its
positioned errors, the numpy reference's semantics (dtype rules, NaN, ties, bf16 rounding, the
IR it checks to), and compiled code on small meshes (odd shapes that are not multiples of the
tile, the vector or the grid; 1-D to 4-D; f32 and bf16; both reduction directions) against the
reference: the exact ops and the f64 functions bit for bit, the rest under the --check
tolerance. Gradients are in tests/test_grad.py (every rule against float64 finite
differences), random programs in tests/test_compiler_property.py and tests/test_grad.py.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from test_train_kernels import MESHES, kinds, run

import compiler
from compiler.ast import format_expr
from compiler.ir import Op, format_ir, round_to
from d1isa.errors import SourceError
from d1isa.machine import load_machine


def bf16(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def reference(text: str, **inputs) -> dict[str, np.ndarray]:
    return compiler.reference(text, inputs)


# ---- syntax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, tree", [
    ("-x ** 2", "(-(x ** 2))"),                 # ** binds tighter than a unary minus before it
    ("a ** b ** c", "(a ** (b ** c))"),         # right associative
    ("x ** -2", "(x ** -2)"),                   # the exponent may carry a minus
    ("x ** -y ** 2", "(x ** (-(y ** 2)))"),
    ("2 * x ** 3", "(2 * (x ** 3))"),
    ("-x @ w ** 2", "((-x) @ (w ** 2))"),
    ("relu(x) ** 2", "(relu(x) ** 2)"),
    ("(a + b) ** 2", "((a + b) ** 2)"),
    ("a + b < c * d", "((a + b) < (c * d))"),   # comparisons are the loosest level
    ("a - b >= -c", "((a - b) >= (-c))"),
    ("a ** 2 == b", "((a ** 2) == b)"),
    ("(a < b) == (c != d)", "((a < b) == (c != d))"),
    ("(a < b) < c", "((a < b) < c)"),           # parenthesised, a comparison is an operand
    ("a <= b", "(a <= b)"),
    ("a > b", "(a > b)"),
    ("f(a <= b, axis=1)", "f((a <= b), axis=1)"),
    ("f(x, axis==1)", "f(x, (axis == 1))"),
])
def test_precedence_and_associativity(text, tree):
    assert format_expr(compiler.parse_source(f"y = {text}").statements[0].value) == tree


def test_minus_literal_to_a_power_is_minus_the_power():
    # -2 ** 2 is -(2 ** 2), as in Python; folded at compile time
    g = compiler.check_source("input x: f32[2]\nc = -2 ** 2\ny = x * c\noutput y\n")
    assert [n.value for n in g.nodes if n.op is Op.CONST] == [-4.0]


@pytest.mark.parametrize("first", ["<", "<=", ">", ">=", "==", "!="])
@pytest.mark.parametrize("second", ["<", ">=", "!="])
def test_comparisons_do_not_chain(first, second):
    text = f"input a: f32[2]\ny = (a {first} a {second} a)\noutput y\n"
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, filename="t.d1k")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (2, 8 + len(first) + 3)
    assert "comparisons do not chain" in d.message and "(a < b) * (b < c)" in d.message


@pytest.mark.parametrize("text, col, message", [
    ("y = a < b < c", 11, "comparisons do not chain"),
    ("y = f(a == b != c, axis=0)", 14, "comparisons do not chain"),
    ("y = a < b)", 10, "without a matching '('"),
    ("y = a < b c", 11, "one statement per line"),
    ("y = a < < b", 9, "expected an expression"),
    ("y = x ^ 2", 7, "the power operator is '**'"),
    ("y = x * * 2", 9, "'**' is written without a space"),
    ("y = x ** * 2", 10, "expected an expression"),
    ("y = x **", 9, "expected an expression"),
])
def test_operator_syntax_errors(text, col, message):
    with pytest.raises(SourceError) as info:
        compiler.parse_source(text, filename="t.d1k")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (1, col)
    assert message in d.message
    if "'**'" not in message:
        assert "written without a space" not in d.message


# ---- positioned errors ------------------------------------------------------------------------

DECLS = "input x: f32[4, 6]\ninput v: bf16[6]\ninput z: f32[5]\nc = 1e-5\n"


@pytest.mark.parametrize("body, col, message", [
    ("y = where(x > 0, x)", 5, "where takes 3 arguments, got 2; usage: where(c, a, b)"),
    ("y = where(x, x, x, x)", 5, "where takes 3 arguments, got 4"),
    ("y = where(x > 0, x, b=v)", 21, "where has no keyword 'b'"),
    ("y = where(x > 0, x, z)", 5,
     "cannot broadcast shapes [4, 6] and [5] for where: 6 != 5 at axis -1"),
    ("y = where(z, x, 1)", 5, "cannot broadcast shapes [4, 6] and [5] for where"),
    ("y = where + x", 5, "'where' is a builtin function, not a value; call it: where(c, a, b)"),
    ("y = pow(x)", 5, "pow takes 2 arguments, got 1; usage: pow(a, b)"),
    ("y = pow(x, z)", 5, "cannot broadcast shapes [4, 6] and [5] for pow"),
    ("y = x ** z", 7, "cannot broadcast shapes [4, 6] and [5] for '**': 6 != 5 at axis -1"),
    ("y = z < x", 7, "cannot broadcast shapes [5] and [4, 6] for '<'"),
    ("y = x != z", 7, "cannot broadcast shapes [4, 6] and [5] for '!='"),
    ("y = x @ (x < 1)", 7, "matmul dimension mismatch: [4, 6] @ [4, 6]"),
    ("y = erf(x, 2)", 5, "erf takes 1 argument, got 2; usage: erf(x)"),
    ("y = gelu(x, approximate=1)", 13, "gelu has no keyword 'approximate'; usage: gelu(x)"),
    ("y = min(x, v)", 5, "for the elementwise minimum of two values use minimum(a, b)"),
    ("y = min(x, axis=2)", 17,
     "axis 2 is out of range for min of a 2-D tensor [4, 6]; valid axes are -2 to 1"),
    ("y = min(x, axis=c)", 17, "the axis must be an integer literal such as 0 or -1"),
    ("y = min(x, keepdims=c)", 21, "keepdims must be 0 or 1, got 'c'"),
    ("y = argmax(x, axis=-3)", 20, "axis -3 is out of range for argmax of a 2-D tensor"),
    ("y = argmax(x, axis=0.5)", 20, "the axis must be an integer literal"),
    ("y = argmax(3)", 12, "argmax needs a tensor, got a number"),
    ("y = argmax(sum(x))", 12, "argmax needs a tensor with at least one dimension"),
    ("y = argmax(x, dim=0)", 15, "unknown keyword 'dim' for argmax"),
    ("y = argmax(x, 0, keepdims=2)", 27, "keepdims must be 0 or 1, got '2'"),
    ("y = argmax(x, 0, axis=1)", 15, "the axis of argmax is given twice"),
    ("y = layernorm(x, eps=c)", 22, "eps must be a non-negative number literal such as 1e-5"),
    ("y = layernorm(x, eps=-1)", 22, "eps must be a non-negative number literal"),
    ("y = layernorm(x, eps=1 / 64)", 22, "eps must be a non-negative number literal"),
    ("y = layernorm(x, axis=2)", 23,
     "axis 2 is out of range for layernorm of a 2-D tensor [4, 6]; valid axes are -2 to 1"),
    ("y = layernorm(x, axis=1.0)", 23, "the axis must be an integer literal"),
    ("y = layernorm(x, 1, axis=0)", 18, "the axis of layernorm is given twice"),
    ("y = layernorm(x, 1, 2)", 5, "layernorm takes one tensor and an optional axis, got 3 "
                                  "positional arguments; usage: layernorm(x, axis=-1, eps=1e-5)"),
    ("y = layernorm()", 5, "got 0 positional arguments"),
    ("y = layernorm(x, axes=1)", 18, "unknown keyword 'axes' for layernorm"),
    ("y = layernorm(x, eps=1e-5, eps=1e-3)", 28, "keyword 'eps' is given twice"),
    ("y = layernorm(2)", 15, "layernorm needs a tensor with at least one dimension, got a number"),
    ("y = layernorm(sum(x))", 15, "got a 0-d value"),
    ("min = x", 1, "'min' is a builtin function and cannot be used as a name"),
    ("layernorm = x", 1, "'layernorm' is a builtin function and cannot be used as a name"),
])
def test_errors_are_positioned(body, col, message):
    with pytest.raises(SourceError) as info:
        compiler.check_source(DECLS + body + "\noutput x\n", filename="t.d1k")
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.col) == ("t.d1k", 5, col)
    assert message in d.message
    rendered = info.value.render().splitlines()
    assert rendered[0] == f"t.d1k:5:{col}: error: {d.message}"
    assert rendered[2].index("^") - 4 == col - 1


def test_an_error_in_an_operand_is_reported_once():
    text = DECLS + "y = where(q > 0, x, 1) ** 2 < layernorm(q)\noutput x\n"
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, filename="t.d1k")
    assert [d.message for d in info.value.diagnostics] == ["unknown name 'q'"] * 2


# ---- what they compute (the reference) --------------------------------------------------------

def test_comparisons_are_1_or_0_with_the_dtype_rule():
    text = """input a: f32[5]
input b: bf16[5]
input h: bf16[2, 5]
lt = a < b
le = b <= h
gt = h > 0.1
ge = a >= a
eq = b == h
ne = a != a
output lt, le, gt, ge, eq, ne
"""
    g = compiler.check_source(text)
    assert [(g[n].op, g[n].dtype) for n in ("lt", "le", "gt", "ge", "eq", "ne")] == [
        (Op.LT, "f32"), (Op.LE, "bf16"), (Op.GT, "bf16"), (Op.GE, "f32"), (Op.EQ, "bf16"),
        (Op.NE, "f32")]
    nan = np.float32("nan")
    a = np.array([1, 2, nan, -0.0, 0.1], np.float32)
    b = bf16([1, 3, 1, 0.0, 0.1])
    h = bf16([[0.1, 3, nan, 5, 0.1], [-1, 2, 1, 0, 0.1]])
    out = reference(text, a=a, b=b, h=h)
    assert out["lt"].tolist() == [0, 1, 0, 0, 1]           # 0.1 (f32) < 0.10009765625 (bf16)
    assert out["le"].tolist() == [[0, 1, 0, 1, 1], [0, 0, 1, 1, 1]]
    # the literal takes h's dtype: 0.1 rounds to bf16 first, so bf16(0.1) > 0.1 is false
    assert out["gt"].tolist() == [[0, 1, 0, 1, 0], [0, 1, 1, 0, 0]]
    assert out["ge"].tolist() == [1, 1, 0, 1, 1]           # NaN compares false
    assert out["eq"].tolist() == [[0, 1, 0, 0, 1], [0, 0, 1, 1, 1]]   # -0 == +0
    assert out["ne"].tolist() == [0, 0, 1, 0, 0]           # NaN != NaN


def test_where_selects_and_keeps_the_condition_dtype():
    text = """input c: f32[4]
input a: bf16[3, 4]
input b: bf16[4]
w = where(c, a, b)
k = where(c > 0, 1, 0)
s = where(1, b, 2)
t = where(0, b, 2)
output w, k, s, t
"""
    g = compiler.check_source(text)
    w = g["w"]
    assert (w.op, w.dtype, w.shape) == (Op.WHERE, "bf16", (3, 4))
    assert w.inputs[0].dtype == "f32"       # not rounded to bf16, where 1e-45 would be 0
    assert (g["k"].dtype, g["k"].shape) == ("f32", (4,))  # two literals: the condition's
    assert g["s"].op is Op.CAST and g["t"].shape == (4,)
    c = np.array([1e-45, 0.0, -0.0, np.nan], np.float32)
    a = bf16(np.arange(12).reshape(3, 4))
    b = bf16([-1, -2, -3, -4])
    out = reference(text, c=c, a=a, b=b)
    assert out["w"].tolist() == [[0, -2, -3, 3], [4, -2, -3, 7], [8, -2, -3, 11]]
    assert out["k"].tolist() == [1, 0, 0, 0]
    assert out["s"].tolist() == [-1, -2, -3, -4] and out["t"].tolist() == [2, 2, 2, 2]


def test_pow_is_computed_in_double_and_rounded_once():
    text = """input a: f32[7]
input b: f32[7]
input h: bf16[7]
p = a ** b
q = pow(h, 3)
r = 2 ** a
output p, q, r
"""
    a = np.array([-8, -2, 0, 0, 3, 1.0000001, 10], np.float32)
    b = np.array([1 / 3, 3, -1, 0, 0.5, 2 ** 24, 39], np.float32)
    h = bf16([1.1, -1.3, 2.7, 0, 5, -0.5, 100])
    out = reference(text, a=a, b=b, h=h)
    with np.errstate(all="ignore"):
        want = np.power(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(out["p"], want)
    assert np.isnan(out["p"][0]) and out["p"][1] == -8 and out["p"][2] == np.inf
    assert out["p"][3] == 1 and out["p"][6] == np.inf        # 1e39 overflows f32
    # 1.0000001 ** 2^24 in f32 steps would drift; in double it is e^1.6 rounded once
    assert out["p"][5] == np.float32(np.float64(np.float32(1.0000001)) ** 2 ** 24)
    np.testing.assert_array_equal(out["q"], bf16(np.power(h.astype(np.float64), 3)))
    np.testing.assert_array_equal(out["r"], np.float32(2.0 ** a.astype(np.float64)))


def test_erf_and_gelu_are_the_double_functions_rounded_once():
    text = """input x: f32[8]
input h: bf16[8]
e = erf(x)
g = gelu(x)
gh = gelu(h)
output e, g, gh
"""
    x = np.array([0, -0.0, 0.5, -1.25, 3, -30, 3e38, np.nan], np.float32)
    h = bf16([0, 1, -1, 2.5, -3, 0.125, 7, -7])
    out = reference(text, x=x, h=h)

    def gelu(v: float) -> float:
        return 0.5 * v * math.erfc(-v / math.sqrt(2.0))

    np.testing.assert_array_equal(out["e"], np.float32([math.erf(v) for v in x.tolist()]))
    np.testing.assert_array_equal(out["g"], np.float32([gelu(v) for v in x.tolist()]))
    assert out["g"][5] == 0 and np.signbit(out["g"][5])    # -30 Phi(-30): -1e-197 -> -0
    assert out["g"][6] == np.float32(3e38)
    np.testing.assert_array_equal(out["gh"], bf16(np.float32([gelu(v) for v in h.tolist()])))
    # the erf form, not tanh's approximation
    ref = 0.5 * x[:5] * (1 + np.float64([math.erf(v / math.sqrt(2)) for v in x[:5].tolist()]))
    np.testing.assert_allclose(out["g"][:5], ref, rtol=1e-6, atol=1e-30)


def test_min_reduces_like_max():
    text = """input x: f32[3, 4]
a = min(x, axis=1)
b = min(x, axis=0, keepdims=1)
c = min(x)
d = min(x, keepdims=1)
output a, b, c, d
"""
    x = np.array([[3, -1, 2, -1], [np.nan, 0, 1, 2], [5, 5, -7, 6]], np.float32)
    out = reference(text, x=x)
    assert out["a"][0] == -1 and np.isnan(out["a"][1]) and out["a"][2] == -7
    assert out["b"].shape == (1, 4) and np.isnan(out["b"][0, 0])
    assert out["b"][0, 1:].tolist() == [-1, -7, -1]
    assert np.isnan(out["c"]) and out["c"].shape == () and out["d"].shape == (1, 1)
    g = compiler.check_source(text)
    assert [n.op for n in g.nodes if n.op in (Op.MIN, Op.RESHAPE)].count(Op.MIN) == 4


def test_argmax_is_the_first_maximum_as_a_value_of_the_dtype():
    text = """input x: f32[3, 4]
input h: bf16[2, 300]
a = argmax(x, axis=1)
b = argmax(x, axis=0, keepdims=1)
c = argmax(x)
d = argmax(h, axis=1)
output a, b, c, d
"""
    x = np.array([[1, 7, 7, 0], [np.nan, 2, np.nan, 9], [-np.inf] * 4], np.float32)
    h = np.zeros((2, 300), np.float32)
    h[0, 259] = 1                       # index 259 is not a bf16: it rounds (to even) to 260
    h[1, 200] = 1
    out = reference(text, x=x, h=bf16(h))
    assert out["a"].tolist() == [1, 0, 0]           # ties: the first; a NaN is the maximum
    assert out["b"].tolist() == [[1, 0, 1, 1]] and out["c"] == 4
    assert out["d"].tolist() == [260, 200]
    g = compiler.check_source(text)
    assert (g["d"].dtype, g["d"].rounds, g["a"].rounds) == ("bf16", True, False)


def test_layernorm_in_f32_rounded_once():
    text = """input x: f32[3, 5]
input h: bf16[3, 5]
a = layernorm(x)
b = layernorm(x, axis=0, eps=0.5)
c = layernorm(h, eps=0)
d = transpose(layernorm(transpose(x), 1, eps=0.5))
output a, b, c, d
"""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    h = bf16(rng.standard_normal((3, 5)))
    out = reference(text, x=x, h=h)

    def f32_steps(v: np.ndarray, axis: int, eps: float) -> np.ndarray:
        n = np.float32(v.shape[axis])
        mean = np.sum(v, axis=axis, keepdims=True, dtype=np.float32) / n
        d = v - mean
        var = np.sum(d * d, axis=axis, keepdims=True, dtype=np.float32) / n
        return d / np.sqrt(var + np.float32(eps))

    np.testing.assert_array_equal(out["a"], f32_steps(x, 1, 1e-5))
    np.testing.assert_array_equal(out["b"], f32_steps(x, 0, 0.5))
    np.testing.assert_array_equal(out["d"], out["b"])
    np.testing.assert_array_equal(out["c"], bf16(f32_steps(h, 1, 0.0)))   # one rounding
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out["a"], want, rtol=1e-5, atol=1e-6)


def test_literal_only_forms_fold():
    text = """input x: f32[2]
p = 2 ** 0.5
k = 3 > 2
n = 3 != 3
e = erf(1)
g = gelu(1)
w = where(0, 1, 2)
y = x * p + k + n + e + g + w
output y
"""
    g = compiler.check_source(text)
    consts = [n.value for n in g.nodes if n.op is Op.CONST]
    assert consts == [np.float32(math.sqrt(2)), 1.0, 0.0, np.float32(math.erf(1)),
                      np.float32(0.5 * math.erfc(-1 / math.sqrt(2))), 2.0]


def test_the_ir_lists_the_new_ops():
    text = """input x: f32[2, 3]
input h: bf16[3]
y = where(x > h, x ** 2, erf(x)) + gelu(h)
m = min(x, axis=0) + argmax(x, axis=0)
l = layernorm(x, eps=0.001)
output y, m, l
"""
    ir = format_ir(compiler.check_source(text))
    for line in ("= gt x, %t", "= pow x, %t", "= erf x", "= gelu h  ; rounds to bf16",
                 "= where %t", "= min[axis=0] x", "= argmax[axis=0] x",
                 ": f32[2, 3] = layernorm[axis=1, eps=0.001] x"):
        assert line in ir, line


# ---- compiled on the mesh, against the reference ----------------------------------------------

def special_inputs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Normal values with ties (repeated values) and a few NaNs and infinities."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    k = flat.size
    flat[rng.integers(0, k, max(1, k // 5))] = 0.5
    flat[rng.integers(0, k, max(1, k // 7))] = -1.25
    if k > 20:
        flat[rng.integers(0, k, 2)] = np.nan
        flat[rng.integers(0, k, 1)] = np.inf
        flat[rng.integers(0, k, 1)] = -np.inf
    return x


@pytest.mark.parametrize("mesh", ["2x2", "4x4"])
@pytest.mark.parametrize("dtypes", [("f32", "f32"), ("bf16", "f32"), ("bf16", "bf16")])
def test_elementwise_forms_compile_exactly(mesh, dtypes):
    da, db = dtypes
    text = f"""input a: {da}[19, 37]
input b: {db}[37]
input c: {db}[19, 1]
lt = a < b
le = a <= c
gt = b > a
ge = a >= 0.5
eq = a == b
ne = c != a
w = where(a, c, b)
w2 = where(a > b, a * 2, c - 1)
k = where(c > 0, 1, -1)
p = abs(a) ** 1.5 + pow(b, 2)
e = erf(a)
g = gelu(a) + gelu(c)
mixed = (a < b) * where(b != 0.5, erf(a), gelu(b)) ** 2
output lt, le, gt, ge, eq, ne, w, w2, k, p, e, g, mixed
"""
    a = special_inputs((19, 37), 1)
    b = round_to(a[3], da)                   # ties with row 3, NaNs in the same places
    c = special_inputs((19, 1), 2)
    names = ("lt", "le", "gt", "ge", "eq", "ne", "w", "w2", "k", "e", "g", "mixed")
    _, ref, obj = run(text, MESHES[mesh], {"a": a, "b": b, "c": c}, exact=names)
    assert any(r.startswith("elementwise(") for r in kinds(obj))
    assert ref["eq"][3].sum() == np.sum(~np.isnan(round_to(a[3], da)))


@pytest.mark.parametrize("mesh", ["2x2", "4x4"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_min_and_argmax_compile_exactly(mesh, dtype):
    text = f"""input x: {dtype}[21, 37]
input v: {dtype}[45]
input t: {dtype}[3, 5, 37]
input q: {dtype}[2, 3, 4, 20]
input r: {dtype}[3, 5, 37]
m1 = min(x, axis=1)
m0 = min(x, axis=0)
mk = min(x, axis=0, keepdims=1)
ma = min(x)
mv = min(v)
mt = min(t, axis=1)
mq = min(q, axis=3)
a1 = argmax(x, axis=1)
a0 = argmax(x, axis=0)
ak = argmax(x, axis=-1, keepdims=1)
aa = argmax(x)
av = argmax(v)
at = argmax(t, axis=1)
at2 = argmax(t, axis=2)
aq = argmax(q, axis=0)
pr = softmax(r, axis=0)
mr = min(r, axis=1)
ar = argmax(r, axis=1)
ar0 = argmax(r, axis=0)
output m1, m0, mk, ma, mv, mt, mq, a1, a0, ak, aa, av, at, at2, aq, pr, mr, ar, ar0
"""
    inputs = {"x": special_inputs((21, 37), 3), "v": special_inputs((45,), 4),
              "t": special_inputs((3, 5, 37), 5), "q": special_inputs((2, 3, 4, 20), 6)}
    inputs["r"] = inputs["t"]
    inputs["x"][4] = -np.inf                 # a row of -inf: its first element is the maximum
    inputs["x"][7] = 0.5                     # a row of ties
    names = ("m1", "m0", "mk", "ma", "mv", "mt", "mq", "a1", "a0", "ak", "aa", "av", "at",
             "at2", "aq", "mr", "ar", "ar0")
    _, ref, obj = run(text, MESHES[mesh], inputs, exact=names)
    regions = kinds(obj)
    # t, q and r are reduced along other axes than the last as matrices [K, rest] (r's
    # softmax along axis 0 too, sharing argmax's matrix): no value is replicated
    assert {"min[rows]", "min[cols]", "min[all]", "argmax[rows]", "argmax[cols]",
            "softmax[cols]", "gather(axis)"} <= set(regions)
    assert not any(r.startswith("nd-") for r in regions), regions
    assert ref["a1"][4] == 0 and ref["a1"][7] == 0


def test_argmax_past_256_in_bf16_is_rounded_as_the_reference_rounds_it():
    text = "input h: bf16[3, 300]\na = argmax(h, axis=1)\nb = argmax(h, axis=0)\noutput a, b\n"
    h = np.zeros((3, 300), np.float32)
    h[0, 259], h[1, 257], h[2, 299] = 1, 1, 1
    outs, ref, _ = run(text, MESHES["4x4"], {"h": h}, exact=("a", "b"))
    assert outs["a"].tolist() == [260, 256, 300]


@pytest.mark.parametrize("mesh", ["2x2", "4x4"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_layernorm_compiles(mesh, dtype):
    text = f"""input x: {dtype}[21, 37]
input v: {dtype}[45]
input t: {dtype}[3, 5, 37]
input q: {dtype}[2, 3, 4, 20]
l1 = layernorm(x)
l0 = layernorm(x, axis=0, eps=0.01)
lv = layernorm(v, eps=0)
lt = layernorm(t, axis=1)
lt2 = layernorm(t)
lq = layernorm(q, axis=0)
lh = layernorm(v, eps=1e300)
output l1, l0, lv, lt, lt2, lq, lh
"""
    outs, _, obj = run(text, MESHES[mesh])
    regions = kinds(obj)
    # Along the last axis a 3-D value is its 2-D view's rows (lt2); along the other axes of
    # N-d values, the columns of its matrix [K, rest], gathered and gathered back (lt, lq).
    assert {"layernorm[rows]", "layernorm[cols]", "gather(axis)"} <= set(regions)
    assert not any(r.startswith("nd-") for r in regions), regions
    # an eps beyond f32 rounds to infinity, as the reference rounds it: every value is 0
    assert not np.any(outs["lh"])


def test_forms_on_a_harvested_mesh_with_depth_1_fifos_and_small_messages():
    m = load_machine("h6x5", overrides={"fifo_depth": 1, "max_message_bytes": 64})
    text = """input x: f32[29, 45]
input b: bf16[45]
y = where(x > b, gelu(x), erf(b) ** 2)
m = min(y, axis=0) + argmax(x, axis=0)
n = argmax(layernorm(y), axis=1)
l = layernorm(y, axis=0)
output y, m, n, l
"""
    run(text, m, exact=("y", "n"))


def test_gradients_of_every_new_form_compile():
    text = """input x: f32[16, 24]
param w: f32[24, 32]
param b: f32[32]
param g: f32[32] = 1
h = layernorm(x @ w + b) * g
a = gelu(h)
m = where(a > 0.1, a, 0.5 * erf(a))
p = (1 + m * m) ** 0.75 + pow(abs(h) + 1, b * 0.1)
r = min(p, axis=1)
s = sum(r * (argmax(p, axis=1) < 10))
loss = mean(r) + mean(min(x @ w, axis=0)) + s
gw = grad(loss, w)
gb = grad(loss, b)
gg = grad(loss, g)
gx = grad(loss, x)
output loss, gw, gb, gg, gx
"""
    outs, ref, _ = run(text, MESHES["4x4"])
    assert all(np.abs(ref[k]).max() > 0 for k in ("gw", "gb", "gg", "gx"))


def test_d1_run_check_on_the_d1_machine(tmp_path):
    from fuzzkit import invoke
    prog = tmp_path / "ops.d1k"
    prog.write_text("""# every new form once, on the full machine
input x: bf16[64, 300]
input w: bf16[300, 128]
h = x @ w
y = layernorm(where(h > 0, gelu(h), erf(h)) ** 2)
m = min(y, axis=0)
k = argmax(y, axis=1)
c = (k >= 64) + sum(m != 0)
output y, m, k, c
""")
    out = invoke(["run", str(prog), "--check", "--out-dir", str(tmp_path / "out")], tmp_path)
    assert out.status == 0, out.output
    assert out.output.count(" ok") == 4 and "mismatch" not in out.output
