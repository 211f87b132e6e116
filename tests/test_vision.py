"""The vision forms of the language: `conv2d(x, w, stride=, pad=, dilation=)`,
`maxpool2d(x, size=, stride=, pad=, dilation=, ceil=)` and `avgpool2d(..., count_pad=)`.

Every positioned error, the IR they lower to, the reference against ONNX's own reference
evaluator (onnx.reference.ReferenceEvaluator, the format's definition of Conv, MaxPool and
AveragePool), the gradients against float64 finite differences, and the compiled mesh kernels
(compiler.conv) against the reference on small meshes, including depth-1 FIFOs with tiny
messages and a harvested mesh, and through `d1 run --check`. Random programs are in
test_vision_property.py and test_fuzz_vision.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradkit import finite_difference, leaf_values
from progkit import run_and_compare

import compiler
from compiler.ir import Op, Window, format_ir
from compiler.pipeline import compile_text
from d1isa.errors import SourceError
from d1isa.machine import load_machine

M4 = load_machine("d1", mesh="4x4")
TINY = load_machine("d1", mesh="3x2", overrides={"fifo_depth": 1, "max_message_bytes": 64})
HARVESTED = load_machine("h6x5")
ROOT = Path(__file__).resolve().parent.parent

DECLS = "input x: f32[2, 3, 9, 11]\ninput w: f32[4, 3, 3, 2]\ninput v: f32[9, 11]\n"


def source_error(text: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, filename="t.d1k")
    return info.value


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, col, message", [
    ("y = conv2d(x, x[:, 0:2])", 15, "conv2d channel mismatch: the input [2, 3, 9, 11] has 3 "
                                     "channels but the weights [2, 2, 9, 11] take 2"),
    ("y = conv2d(v, w)", 12, "conv2d needs a 4-D input [N, C, H, W], got f32[9, 11]"),
    ("y = conv2d(x, v)", 15, "conv2d needs 4-D weights [K, C, R, S], got f32[9, 11]"),
    ("y = conv2d(2, w)", 12, "conv2d needs a tensor, got a number"),
    ("y = conv2d(x)", 5, "conv2d takes 2 tensors, got 1; usage: conv2d(x, w, stride=S, pad=P, "
                         "dilation=D)"),
    ("y = conv2d(x, w, 2)", 18, "conv2d takes 2 tensors; its window is given by keyword"),
    ("y = conv2d(x, w, strides=2)", 18, "unknown keyword 'strides' for conv2d"),
    ("y = conv2d(x, w, stride=0)", 25, "the stride of conv2d must be positive, got 0"),
    ("y = conv2d(x, w, stride=[1, -2])", 29, "the stride of conv2d must be positive, got -2"),
    ("y = conv2d(x, w, stride=[1, 2, 3])", 25, "the stride of conv2d is an integer or a list "
                                               "of 2 integers [h, w], got 3 entries"),
    ("y = conv2d(x, w, stride=x)", 25, "the stride of conv2d must be an integer literal or a "
                                       "list of 2 integers [h, w] of integer literals"),
    ("y = conv2d(x, w, stride=1.5)", 25, "must be an integer literal"),
    ("y = conv2d(x, w, stride=[])", 25, "got 0 entries"),
    ("y = conv2d(x, w, pad=-1)", 22, "the padding of conv2d must be non-negative, got -1"),
    ("y = conv2d(x, w, pad=[1, 2])", 22, "the padding of conv2d is an integer or a list of 4 "
                                         "integers [top, left, bottom, right], got 2 entries"),
    ("y = conv2d(x, w, dilation=[1, 0])", 31, "the dilation of conv2d must be positive, got 0"),
    ("y = conv2d(x, w, dilation=5)", 5, "conv2d of [2, 3, 9, 11] gives no output: the height 9 "
                                        "with padding is 9, smaller than the window's extent 11 "
                                        "(size 3, dilation 5)"),
    ("y = conv2d(x, x[:, :, 0:3, 0:3], stride=2, stride=1)", 44, "keyword 'stride' is given "
                                                                 "twice"),
    ("y = maxpool2d(x)", 5, "maxpool2d needs a window size; usage: maxpool2d(x, size=K, "
                            "stride=S, pad=P, dilation=D, ceil=0|1)"),
    ("y = maxpool2d(x, 2)", 18, "maxpool2d takes 1 tensor; its window is given by keyword"),
    ("y = maxpool2d(x, size=[2])", 23, "the window size of maxpool2d is an integer or a list of "
                                       "2 integers [h, w], got 1 entry"),
    ("y = maxpool2d(x, size=0)", 23, "the window size of maxpool2d must be positive, got 0"),
    ("y = maxpool2d(x, size=20)", 15, "maxpool2d of [2, 3, 9, 11] gives no output: the height "
                                      "9 with padding is 9, smaller than the window's extent 20"),
    ("y = maxpool2d(x, size=2, pad=[0, 2, 0, 0])", 30, "the left padding of maxpool2d (2) must "
                                                       "be smaller than the window's extent (2)"),
    ("y = avgpool2d(x, size=3, dilation=2, pad=[0, 0, 5, 0])", 42, "the bottom padding of "
                                                                   "avgpool2d (5) must be "
                                                                   "smaller than the window's "
                                                                   "extent (5)"),
    # padding below the extent, but the dilated taps step over an input of 1 row (column)
    ("y = maxpool2d(x[:, :, 0:1], size=[2, 1], dilation=[2, 1], pad=[1, 0, 1, 0])", 51,
     "window 0 of maxpool2d along the height holds no element of the input: with dilation 2 "
     "its taps are at rows -1, 1, and the input's rows are 0 to 0"),
    ("y = avgpool2d(x[:, :, :, 0:1], size=[1, 2], dilation=[1, 3], pad=[0, 2, 0, 2])", 54,
     "window 0 of avgpool2d along the width holds no element of the input: with dilation 3 "
     "its taps are at columns -2, 1, and the input's columns are 0 to 0"),
    ("y = maxpool2d(x, size=2, ceil=2)", 31, "ceil must be 0 or 1, got '2'"),
    ("y = avgpool2d(x, size=2, count_pad=x)", 36, "count_pad must be 0 or 1, got 'x'"),
    ("y = maxpool2d(x, size=2, count_pad=1)", 26, "unknown keyword 'count_pad' for maxpool2d"),
    ("y = avgpool2d(v, size=2)", 15, "avgpool2d needs a 4-D input [N, C, H, W], got f32[9, 11]"),
    ("y = avgpool2d(3, size=2)", 15, "avgpool2d needs a tensor, got a number"),
    ("y = conv2d(x, w, pad=[1, 0, 1, w])", 32, "must be an integer literal"),
    # a padding that matters, beyond int64 once multiplied: refused, not an internal error
    (f"y = conv2d(x, w, pad=[0, 0, {10**30}, 0])", 22, f"the padding of conv2d along the "
                                                       f"height is {10**30}, more than this "
                                                       f"compiler's limit of 2,147,483,647"),
])
def test_vision_errors_are_located(body, col, message):
    text = DECLS + body + "\noutput x\n"
    (d,) = source_error(text).diagnostics
    assert (d.line, d.col) == (4, col), d.message
    assert message in d.message
    rendered = source_error(text).render().splitlines()
    assert rendered[2].index("^") - 4 == col - 1


def test_errors_in_several_vision_forms_are_all_reported():
    text = DECLS + ("a = conv2d(v, w)\nb = maxpool2d(x, size=0)\nc = conv2d(x, w, pad=[1])\n"
                    "d = a + 1\noutput x\n")
    lines = [d.line for d in source_error(text).diagnostics]
    assert lines == [4, 5, 6]     # d reads a poisoned value: not reported again


def test_the_vision_builtins_are_reserved_names():
    (d,) = source_error("input conv2d: f32[2]\noutput conv2d\n").diagnostics
    assert "'conv2d' is a builtin function and cannot be used as a name" in d.message


def test_a_too_large_conv2d_is_a_size_error():
    m = load_machine("d1", mesh="2x2", overrides={"sram_bytes": 8192})
    text = ("input x: f32[4, 4, 12, 12]\ninput w: f32[64, 4, 3, 3]\ny = conv2d(x, w, pad=1)\n"
            "output y\n")
    with pytest.raises(SourceError, match=r"3:5: error: tensor 'y' needs 147.5 kB but the "
                                          r"machine has 32.8 kB"):
        compiler.check_source(text, m)


# ---- the IR -----------------------------------------------------------------------------------

def test_ir_of_the_vision_forms():
    g = compiler.check_source(
        "input x: bf16[2, 3, 9, 11]\ninput w: f32[4, 3, 3, 2]\n"
        "a = conv2d(x, w, stride=[2, 1], pad=[1, 0, 2, 1], dilation=[1, 2])\n"
        "b = maxpool2d(x, size=3, stride=2, pad=1, ceil=1)\n"
        "c = avgpool2d(x, size=2, count_pad=1)\noutput a, b, c\n")
    a, b, c = g.outputs
    assert (a.op, a.shape, a.dtype) == (Op.CONV2D, (2, 4, 5, 10), "f32")
    assert a.window == Window((3, 2), (2, 1), (1, 0, 2, 1), (1, 2))
    assert a.inputs[0].op is Op.CAST                        # bf16 widened, as for '@'
    assert (b.op, b.shape, b.dtype, b.rounds) == (Op.MAXPOOL2D, (2, 3, 5, 6), "bf16", False)
    assert b.window == Window((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), ceil=True)
    assert (c.op, c.shape, c.rounds) == (Op.AVGPOOL2D, (2, 3, 4, 5), True)
    assert c.window.stride == (2, 2) and c.window.count_pad
    text = format_ir(g)
    assert "conv2d[size=3x2 stride=2x1 pad=1,0,2,1 dilation=1x2]" in text
    assert "maxpool2d[size=3x3 stride=2x2 pad=1,1,1,1 dilation=1x1 ceil]" in text
    assert "avgpool2d[size=2x2 stride=2x2 pad=0,0,0,0 dilation=1x1 count_pad]" in text


def test_the_backward_pass_uses_the_window_ops():
    g = compiler.differentiate(compiler.check_source(
        "input x: f32[2, 3, 8, 8]\ninput w: f32[4, 3, 3, 3]\n"
        "y = maxpool2d(conv2d(x, w, pad=1), size=2)\nl = sum(y)\ngx = grad(l, x)\n"
        "gw = grad(l, w)\noutput gx, gw\n"))
    ops = [n.op for n in g.nodes]
    assert Op.CONV2D_TRANSPOSE in ops and Op.IM2COL in ops and Op.COL2IM in ops
    assert Op.MAX_MASK in ops and Op.MATMUL in ops
    pool_cols = [n for n in g.nodes if n.op is Op.IM2COL and n.value]
    assert len(pool_cols) == 1 and pool_cols[0].value == -np.inf
    assert "im2col[size=2x2 stride=2x2 pad=0,0,0,0 dilation=1x1 fill=-inf]" in format_ir(g)


# ---- the reference against ONNX's ----------------------------------------------------------

def _onnx(op: str, arrays: dict[str, np.ndarray], **attrs) -> np.ndarray:
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    node = helper.make_node(op, list(arrays), ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                      for k, v in arrays.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return ReferenceEvaluator(model).run(None, arrays)[0]


def _ours(decls: str, expr: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    return compiler.reference(decls + f"y = {expr}\noutput y\n", arrays)["y"]


def _list(v) -> str:
    return "[" + ", ".join(map(str, v)) + "]"


RNG = np.random.default_rng(7)
X = RNG.normal(size=(2, 3, 9, 11)).astype(np.float32)


@pytest.mark.parametrize("kernel, stride, pads, dilation", [
    ((3, 2), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((3, 3), (2, 1), (1, 0, 2, 1), (1, 2)),
    ((2, 3), (2, 3), (3, 2, 1, 0), (2, 1)),
    ((1, 1), (3, 2), (0, 1, 0, 1), (1, 1)),
    ((5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
])
def test_conv2d_matches_the_onnx_reference(kernel, stride, pads, dilation):
    w = RNG.normal(size=(4, 3) + kernel).astype(np.float32)
    decls = f"input x: f32[2, 3, 9, 11]\ninput w: f32{_list(w.shape)}\n"
    ours = _ours(decls, f"conv2d(x, w, stride={_list(stride)}, pad={_list(pads)}, "
                        f"dilation={_list(dilation)})", {"x": X, "w": w})
    onnx_pads = [pads[0], pads[1], pads[2], pads[3]]
    ref = _onnx("Conv", {"x": X, "w": w}, strides=list(stride), pads=onnx_pads,
                dilations=list(dilation))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


POOLS = [
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, 0),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, 0),
    ((3, 2), (2, 1), (1, 0, 1, 1), (1, 1), 1, 1),
    ((2, 3), (1, 2), (1, 1, 0, 1), (2, 1), 0, 1),
    ((3, 3), (3, 3), (0, 0, 0, 0), (1, 1), 1, 1),
    ((2, 2), (1, 1), (1, 1, 1, 1), (2, 2), 0, 0),
]


@pytest.mark.parametrize("kernel, stride, pads, dilation, ceil, count_pad", POOLS)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pools_match_the_onnx_reference(op, kernel, stride, pads, dilation, ceil, count_pad):
    name = "maxpool2d" if op == "MaxPool" else "avgpool2d"
    extra = "" if op == "MaxPool" else f", count_pad={count_pad}"
    ours = _ours("input x: f32[2, 3, 9, 11]\n",
                 f"{name}(x, size={_list(kernel)}, stride={_list(stride)}, pad={_list(pads)}, "
                 f"dilation={_list(dilation)}, ceil={ceil}{extra})", {"x": X})
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pads),
                 dilations=list(dilation), ceil_mode=ceil)
    if op == "AveragePool":
        attrs["count_include_pad"] = count_pad
    ref = _onnx(op, {"x": X}, **attrs)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def _onnx_node_cases() -> dict[str, tuple]:
    """ONNX's own test cases (onnx.backend.test.case.node) of one Conv, MaxPool or
    AveragePool node with group 1 and float32 data of 1 or 2 spatial axes, as (DSL program,
    inputs, expected output): a 1-D case runs on height 1, auto_pad becomes explicit padding."""
    from onnx import helper
    from onnx.backend.test.case.node import collect_testcases
    out = {}
    with np.errstate(all="ignore"):
        cases = collect_testcases(None)
    for case in cases:
        nodes = list(case.model.graph.node)
        if len(nodes) != 1 or nodes[0].op_type not in ("Conv", "MaxPool", "AveragePool"):
            continue
        node = nodes[0]
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        for k, (inputs, outputs) in enumerate(case.data_sets):
            x = inputs[0]
            if (x.ndim not in (3, 4) or x.dtype != np.float32 or len(outputs) != 1
                    or a.get("group", 1) != 1):
                continue
            d = x.ndim - 2
            kernel = list(a.get("kernel_shape") or inputs[1].shape[2:])
            stride, dil = a.get("strides", [1] * d), a.get("dilations", [1] * d)
            pads = a.get("pads", [0] * 2 * d)
            arrays = {"x": x}
            if d == 1:
                arrays["x"] = x[:, :, None, :]
                kernel, stride, dil = [1] + kernel, [1] + stride, [1] + dil
                pads = [0, pads[0], 0, pads[1]]
            H, W = arrays["x"].shape[2:]
            mode = a.get("auto_pad", b"NOTSET").decode()
            if mode.startswith("SAME"):
                lo, hi = [], []
                for axis, n in enumerate((H, W)):
                    total = max(0, (-(-n // stride[axis]) - 1) * stride[axis]
                                + (kernel[axis] - 1) * dil[axis] + 1 - n)
                    first = total // 2 if mode == "SAME_UPPER" else total - total // 2
                    lo.append(first)
                    hi.append(total - first)
                pads = lo + hi
            elif mode == "VALID":
                pads = [0, 0, 0, 0]
            window = f"stride={list(stride)}, pad={list(pads)}, dilation={list(dil)}"
            if node.op_type == "Conv":
                w = inputs[1] if d == 2 else inputs[1][:, :, None, :]
                arrays["w"] = w
                decl = f"input w: f32{list(w.shape)}\n"
                expr = f"conv2d(x, w, {window})"
                if len(inputs) > 2:
                    arrays["b"] = inputs[2]
                    decl += f"input b: f32[{len(inputs[2])}]\n"
                    expr += f" + reshape(b, [{len(inputs[2])}, 1, 1])"
            else:
                decl = ""
                name = "maxpool2d" if node.op_type == "MaxPool" else "avgpool2d"
                extra = (f", count_pad={a.get('count_include_pad', 0)}"
                         if name == "avgpool2d" else "")
                expr = (f"{name}(x, size={kernel}, {window}, ceil={a.get('ceil_mode', 0)}"
                        f"{extra})")
            text = (f"input x: f32{list(arrays['x'].shape)}\n{decl}y = {expr}\noutput y\n")
            expect = outputs[0] if d == 2 else outputs[0][:, :, None, :]
            out[f"{case.name}-{k}"] = (text, arrays, expect)
    return out


ONNX_CASES = _onnx_node_cases()


def test_the_onnx_node_cases_cover_every_form():
    names = " ".join(ONNX_CASES)
    assert len(ONNX_CASES) >= 30
    for word in ("conv", "maxpool_2d_ceil", "averagepool_2d_pads_count_include_pad",
                 "maxpool_1d", "same_lower", "dilations"):
        assert word in names


@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_onnx_node_cases_match_the_reference(name):
    text, arrays, expect = ONNX_CASES[name]
    got = compiler.reference(text, arrays)["y"]
    assert got.shape == expect.shape
    np.testing.assert_allclose(got, expect, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ONNX_CASES))
def test_onnx_node_cases_compiled_on_4x4(name):
    text, arrays, expect = ONNX_CASES[name]
    from emulator import Emulator
    emu = Emulator(compiler.compile_source(text, M4, "case.d1k"))
    for key, value in arrays.items():
        emu.set_input(key, value)
    assert emu.run().ok
    np.testing.assert_allclose(emu.output("y"), expect, rtol=1e-3, atol=1e-6)


def test_avgpool_sums_in_window_order_then_divides_by_the_count():
    x = np.array([1e8, 1.0, -1e8, 1.0], dtype=np.float32).reshape(1, 1, 1, 4)
    y = _ours("input x: f32[1, 1, 1, 4]\n", "avgpool2d(x, size=[1, 4])", {"x": x})
    # ((1e8 + 1) - 1e8) + 1 in f32 is 1: the sum is not pairwise
    assert y.ravel()[0] == np.float32(0.25)
    corners = _ours("input x: f32[1, 1, 3, 3]\n", "avgpool2d(x, size=2, stride=1, pad=1)",
                    {"x": np.ones((1, 1, 3, 3), np.float32)})
    np.testing.assert_array_equal(corners, np.ones((1, 1, 4, 4)))    # padding not counted


# ---- gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("decls, expr, wrt", [
    ("input x: f32[2, 3, 7, 6]\ninput w: f32[4, 3, 3, 2]\n",
     "conv2d(x, w, stride=[2, 1], pad=[1, 0, 2, 1], dilation=[1, 2])", ["x", "w"]),
    ("input x: f32[1, 2, 6, 6]\ninput w: f32[3, 2, 5, 5]\n", "conv2d(x, w, pad=2)", ["x", "w"]),
    ("input x: f32[2, 2, 7, 6]\n", "maxpool2d(x, size=3, stride=2, pad=1, ceil=1)", ["x"]),
    ("input x: f32[2, 2, 7, 6]\n", "maxpool2d(x, size=2, stride=1, dilation=2)", ["x"]),
    ("input x: f32[2, 2, 7, 6]\n",
     "avgpool2d(x, size=[3, 2], stride=2, pad=[1, 0, 1, 1], ceil=1, count_pad=1)", ["x"]),
    ("input x: f32[2, 2, 7, 6]\n", "avgpool2d(x, size=[3, 2], stride=2, pad=1, ceil=1)", ["x"]),
    ("input x: f32[2, 2, 8, 6]\n", "avgpool2d(x, size=2)", ["x"]),
])
def test_vision_gradients_match_finite_differences(decls, expr, wrt):
    text = (decls + f"y = {expr}\nloss = sum(y * y * y)\n"
            + "".join(f"g{v} = grad(loss, {v})\n" for v in wrt)
            + "output loss, " + ", ".join(f"g{v}" for v in wrt) + "\n")
    graph = compiler.check_source(text)
    leaves = leaf_values(graph, 1)
    out = compiler.evaluate(graph, leaves)
    for v in wrt:
        fd = finite_difference(graph, "loss", leaves, v)
        np.testing.assert_allclose(out["g" + v], fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_second_derivatives_through_conv2d_and_the_pools():
    text = ("input x: f32[1, 2, 6, 5]\ninput w: f32[3, 2, 3, 3]\n"
            "y = avgpool2d(maxpool2d(conv2d(x, w, stride=2, pad=1), size=2, stride=1), size=2, "
            "pad=1, stride=1)\nloss = sum(y * y)\ngx = grad(loss, x)\nl2 = sum(gx * gx * x)\n"
            "h = grad(l2, w)\nh2 = grad(l2, x)\noutput h, h2\n")
    graph = compiler.differentiate(compiler.check_source(text))
    leaves = leaf_values(graph, 2)
    out = compiler.evaluate(graph, leaves)
    for v, name in (("w", "h"), ("x", "h2")):
        fd = finite_difference(graph, "l2", leaves, v)
        np.testing.assert_allclose(out[name], fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_a_tie_in_a_maxpool_window_sends_the_gradient_to_the_first_element():
    text = ("input x: f32[1, 1, 2, 2]\ny = maxpool2d(x, size=2)\nl = sum(y)\ng = grad(l, x)\n"
            "output g\n")
    g = compiler.reference(text, {"x": np.ones((1, 1, 2, 2), np.float32)})["g"]
    np.testing.assert_array_equal(g.ravel(), [1, 0, 0, 0])


# ---- on the mesh ------------------------------------------------------------------------------

PROGRAMS = {
    "conv": """
input x: f32[2, 3, 9, 11]
input w: f32[4, 3, 3, 2]
input v: f32[10, 3, 5, 5]
a = conv2d(x, w)
b = conv2d(x, w, stride=[2, 1], pad=[1, 0, 2, 1], dilation=[1, 2])
c = conv2d(x, w, stride=[2, 3], pad=[3, 2, 1, 0], dilation=[2, 1])
d = conv2d(x, v, pad=2)
output a, b, c, d
""",
    "bf16": """
input x: bf16[2, 3, 12, 20]
input w: bf16[9, 3, 3, 3]
y = relu(conv2d(x, w, pad=1) + reshape(cast(w[:, 0, 0, 0], f32), [9, 1, 1]))
a = maxpool2d(y, size=2)
b = avgpool2d(cast(y, bf16), size=2)
c = maxpool2d(x, size=[1, 3], stride=[1, 2])
output a, b, c
""",
    "pools": """
input x: f32[2, 3, 9, 11]
a = maxpool2d(x, size=2)
b = maxpool2d(x, size=3, stride=2, pad=1, ceil=1)
c = avgpool2d(x, size=[3, 2], stride=[2, 1], pad=[1, 0, 1, 1], ceil=1, count_pad=1)
d = avgpool2d(x, size=[2, 3], stride=[1, 2], pad=[1, 1, 0, 1], dilation=[2, 1])
output a, b, c, d
""",
    "grads": """
input x: f32[2, 3, 7, 6]
param w: f32[4, 3, 3, 2] = normal(0.3)
c = conv2d(x, w, stride=[2, 1], pad=[1, 0, 2, 1], dilation=[1, 2])
y = maxpool2d(relu(c), size=2, stride=1)
z = avgpool2d(y, size=3, stride=2, pad=1, ceil=1)
loss = sum(z * z)
gx = grad(loss, x)
gw = grad(loss, w)
output loss, gx, gw
""",
    "train": """
input x: f32[4, 1, 8, 8]
input y: f32[4, 3]
param w: f32[4, 1, 3, 3] = normal(0.3)
param b: f32[4, 1, 1] = 0.1
param v: f32[64, 3]
h = maxpool2d(relu(conv2d(x, w, pad=1) + b), size=2)
z = reshape(avgpool2d(h, size=3, stride=1, pad=1), [4, 64]) @ v
loss = mean(sum((z - y) * (z - y), axis=1))
update w = w - 0.1 * grad(loss, w)
update b = b - 0.1 * grad(loss, b)
update v = v - 0.1 * grad(loss, v)
output loss
""",
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("machine", [M4, TINY, HARVESTED], ids=["4x4", "tiny", "h6x5"])
def test_vision_programs_compile_and_match_reference(name, machine):
    text = PROGRAMS[name]
    obj = compiler.compile_source(text, machine, f"{name}.d1k")
    run_and_compare(obj, text, machine, f"{name}.d1k", seed=3)


def test_a_stride_or_dilation_that_cannot_matter_may_be_huge():
    """A stride along an axis of one output position and a dilation along an axis of one tap
    change nothing: they are made small (compiler.check.tame_window), so 10**30 neither
    overflows int64 in the window maps nor makes an immediate out of range."""
    text = """input x: f32[1, 2, 4, 5]
input w: f32[3, 2, 1, 2]
a = maxpool2d(x, size=2, stride=BIG)
b = avgpool2d(x, size=3, stride=[1, BIG], pad=1, ceil=1)
c = conv2d(x, w, stride=[BIG, 1], dilation=[BIG, 2])
output a, b, c
""".replace("BIG", str(10**30))
    graph = compiler.check_source(text)
    windows = [n.window for n in graph.nodes if n.window is not None]
    assert max(max(win.stride + win.dilation) for win in windows) < 10
    rows, *_ = run_and_compare(compiler.compile_source(text, TINY, "p.d1k"), text, TINY, "p.d1k")
    assert all(ok for *_, ok in rows)


def test_the_pools_are_exact():
    text = PROGRAMS["pools"]
    rows, *_ = run_and_compare(compiler.compile_source(text, M4, "p.d1k"), text, M4, "p.d1k")
    assert all(abs_err == 0 for _, abs_err, *_ in rows)


@pytest.mark.parametrize("dtype, expr", [
    ("f32", "maxpool2d(x, size=2, stride=3, dilation=2)"),        # taps in phases 0 and 2
    ("bf16", "avgpool2d(x, size=[1, 2], stride=[1, 3], dilation=[1, 2])"),
    ("f32", "avgpool2d(x, size=2, stride=1)"),
])
def test_a_pool_reads_its_input_in_place_when_every_node_holds_its_rows(dtype, expr):
    text = f"input x: {dtype}[4, 4, 12, 18]\na = {expr}\noutput a\n"
    obj = compiler.compile_source(text, M4, "p.d1k")
    assert "gather(slab)" not in [r["op"] for r in obj.meta["regions"]]
    rows, *_ = run_and_compare(obj, text, M4, "p.d1k")
    assert all(abs_err == 0 for _, abs_err, *_ in rows)


def test_conv2d_runs_on_the_matrix_unit_without_a_fallback():
    text = (ROOT / "programs" / "lenet.d1k").read_text()
    c = compile_text(text, M4, "lenet.d1k")
    kinds = [r["op"] for r in c.obj.meta["regions"]]
    assert kinds.count("conv2d") == 2 and kinds.count("maxpool2d") == 2
    # no N-d fallback kernel (a dense copy on every node) anywhere
    assert not any(k.startswith("nd-") for k in kinds), kinds
    _, emu, _, _ = run_and_compare(c.obj, text, M4, "lenet.d1k")
    counts = emu.stats()["modelled"]["instructions_by_class"]
    assert counts["mma_f32"] > 0


def test_every_node_computes_conv_rows():
    text = "input x: f32[8, 2, 12, 12]\ninput w: f32[8, 2, 3, 3]\ny = conv2d(x, w)\noutput y\n"
    asm = compile_text(text, M4, "c.d1k").asm
    section, multiplying = "", set()
    for line in asm.splitlines():
        if line.startswith(".text"):
            section = line
        elif "mmak.f32" in line:
            multiplying.update(section.split()[2:])
    assert multiplying == {f"{x},{y}" for x in range(4) for y in range(4)}


def test_d1_run_check_on_lenet(tmp_path):
    from fuzzkit import invoke
    out = invoke(["run", str(ROOT / "programs" / "lenet.d1k"), "--mesh", "4x4", "--check",
                  "--out-dir", str(tmp_path / "o")], tmp_path)
    assert out.status == 0, out.output
    assert "logits" in out.output and " ok" in out.output
    assert np.load(tmp_path / "o" / "logits.npy").shape == (64, 10)


def test_d1_compile_reports_a_vision_error(tmp_path):
    from fuzzkit import invoke
    (tmp_path / "bad.d1k").write_text("input x: f32[1, 2, 8, 8]\ninput w: f32[3, 4, 3, 3]\n"
                                      "y = conv2d(x, w)\nz = conv2d(x, w, stride=[1, 0])\n"
                                      "output y\n")
    out = invoke(["compile", "bad.d1k", "--mesh", "4x4"], tmp_path)
    assert out.status == 2
    assert "bad.d1k:3:15: error: conv2d channel mismatch" in out.output
    assert "bad.d1k:4:29: error: the stride of conv2d must be positive, got 0" in out.output
    assert "Traceback" not in out.output



def test_the_debugger_shows_every_vision_value_while_it_is_live(tmp_path):
    from test_debug_values import matches, session

    from d1.program import load_program
    path = tmp_path / "cnn.d1k"
    path.write_text(PROGRAMS["train"].replace("output loss", "g = grad(loss, w)\noutput loss, g"))
    dbg, ref = session(path)
    graph = load_program(path, M4).graph
    shown = set()
    stop = None
    while stop is None or stop.reason == "step":
        for v in dbg.debug_info.values:
            tv = dbg.value(v.name)
            if tv.array is not None:
                want = np.asarray(ref[v.name], dtype=np.float32).reshape(v.shape)
                assert matches(graph, tv.array, want, v.name), (v.name, dbg.position)
                shown.add(v.name)
        stop = dbg.stepi(37, all_nodes=True)
    assert stop.reason == "halted"
    assert {"x", "h", "z", "loss", "g"} <= shown
