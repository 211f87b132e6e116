"""Make the ONNX models of programs/onnx/ with onnx.helper (seeded weights, so the same bytes
every time), and check each with onnx's checker and reference evaluator.

    python programs/onnx/make_models.py           # rewrite mlp.onnx, lenet.onnx, encoder.onnx

* mlp.onnx: a 3-layer perceptron, 64 -> 128 -> 64 -> 10, batch 32, named the way PyTorch
  exports name things (`input.1`, `fc1.weight`, `/fc1/MatMul_output_0`), layer 1 as MatMul +
  Add and layers 2 and 3 as Gemm with transB=1.
* lenet.onnx: a LeNet-5-style CNN on 1x28x28 images, batch 32: Conv 5x5 (6, padded) -> Relu
  -> MaxPool 2 -> Conv 5x5 (16) -> Relu -> AveragePool 2 -> Flatten -> Gemm 400 -> 120 ->
  84 -> 10 with Relu between.
* encoder.onnx: one transformer encoder block, sequence 64, d = 128, 4 heads of 32, FFN 256:
  MatMul projections, Reshape and Transpose into heads, batched MatMul, Softmax, the
  heads merged back, residual Add, LayerNormalization, Gelu (opset 20).

tests/test_onnx_models.py checks that the committed files are what this script makes, and
runs each through `d1 run MODEL.onnx` on the d1 machine against
onnx.reference.ReferenceEvaluator. `example_input(name)` is the input those runs use.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = ("mlp", "lenet", "encoder")
BATCH = 32


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    return onnx, TensorProto, helper, numpy_helper


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _model(nodes, inputs, outputs, inits, name: str, opset: int):
    onnx, _, helper, numpy_helper = _onnx()
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="d1 programs/onnx/make_models.py")
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp():
    _, TensorProto, helper, _ = _onnx()
    rng = np.random.default_rng(1)
    inits = {
        "fc1.weight_t": _weights(rng, (64, 128), 64), "fc1.bias": np.zeros(128, np.float32),
        "fc2.weight": _weights(rng, (64, 128), 128), "fc2.bias": _weights(rng, (64,), 128),
        "fc3.weight": _weights(rng, (10, 64), 64), "fc3.bias": _weights(rng, (10,), 64),
    }
    nodes = [
        helper.make_node("MatMul", ["input.1", "fc1.weight_t"], ["/fc1/MatMul_output_0"],
                         name="/fc1/MatMul"),
        helper.make_node("Add", ["/fc1/MatMul_output_0", "fc1.bias"], ["/fc1/Add_output_0"],
                         name="/fc1/Add"),
        helper.make_node("Relu", ["/fc1/Add_output_0"], ["/relu1/Relu_output_0"],
                         name="/relu1/Relu"),
        helper.make_node("Gemm", ["/relu1/Relu_output_0", "fc2.weight", "fc2.bias"],
                         ["/fc2/Gemm_output_0"], name="/fc2/Gemm", transB=1),
        helper.make_node("Relu", ["/fc2/Gemm_output_0"], ["/relu2/Relu_output_0"],
                         name="/relu2/Relu"),
        helper.make_node("Gemm", ["/relu2/Relu_output_0", "fc3.weight", "fc3.bias"], ["logits"],
                         name="/fc3/Gemm", transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                        [BATCH, 64])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, 10])],
                  inits, "mlp", 13)


def lenet():
    _, TensorProto, helper, _ = _onnx()
    rng = np.random.default_rng(2)
    inits = {
        "conv1.weight": _weights(rng, (6, 1, 5, 5), 25), "conv1.bias": _weights(rng, (6,), 25),
        "conv2.weight": _weights(rng, (16, 6, 5, 5), 150),
        "conv2.bias": _weights(rng, (16,), 150),
        "fc1.weight": _weights(rng, (120, 400), 400), "fc1.bias": _weights(rng, (120,), 400),
        "fc2.weight": _weights(rng, (84, 120), 120), "fc2.bias": _weights(rng, (84,), 120),
        "fc3.weight": _weights(rng, (10, 84), 84), "fc3.bias": _weights(rng, (10,), 84),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                         kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("AveragePool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["f1"], name="fc1",
                         transB=1),
        helper.make_node("Relu", ["f1"], ["r3"], name="relu3"),
        helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["f2"], name="fc2",
                         transB=1),
        helper.make_node("Relu", ["f2"], ["r4"], name="relu4"),
        helper.make_node("Gemm", ["r4", "fc3.weight", "fc3.bias"], ["logits"], name="fc3",
                         transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                        [BATCH, 1, 28, 28])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, 10])],
                  inits, "lenet", 13)


def encoder():
    _, TensorProto, helper, numpy_helper = _onnx()
    seq, d, heads, ffn = 64, 128, 4, 256
    dh = d // heads
    rng = np.random.default_rng(3)
    inits = {
        "wq": _weights(rng, (d, d), d), "wk": _weights(rng, (d, d), d),
        "wv": _weights(rng, (d, d), d), "wo": _weights(rng, (d, d), d),
        "bo": _weights(rng, (d,), d),
        "ln1.weight": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
        "ln1.bias": (0.1 * rng.standard_normal(d)).astype(np.float32),
        "ffn1.weight": _weights(rng, (d, ffn), d), "ffn1.bias": _weights(rng, (ffn,), d),
        "ffn2.weight": _weights(rng, (ffn, d), ffn), "ffn2.bias": _weights(rng, (d,), ffn),
        "ln2.weight": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
        "ln2.bias": (0.1 * rng.standard_normal(d)).astype(np.float32),
        "heads_shape": np.array([1, seq, heads, dh], np.int64),
        "model_shape": np.array([1, seq, d], np.int64),
        "scale": np.array(1 / math.sqrt(dh), np.float32),
    }
    mk = helper.make_node
    nodes = [
        mk("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        mk("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        mk("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        mk("Reshape", ["q", "heads_shape"], ["q4"], name="q_heads"),
        mk("Reshape", ["k", "heads_shape"], ["k4"], name="k_heads"),
        mk("Reshape", ["v", "heads_shape"], ["v4"], name="v_heads"),
        mk("Transpose", ["q4"], ["qh"], name="q_transpose", perm=[0, 2, 1, 3]),
        mk("Transpose", ["k4"], ["kt"], name="k_transpose", perm=[0, 2, 3, 1]),
        mk("Transpose", ["v4"], ["vh"], name="v_transpose", perm=[0, 2, 1, 3]),
        mk("MatMul", ["qh", "kt"], ["scores"], name="scores"),
        mk("Mul", ["scores", "scale"], ["scaled"], name="scale"),
        mk("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        mk("MatMul", ["attn", "vh"], ["ctx"], name="context"),
        mk("Transpose", ["ctx"], ["ctx_t"], name="merge_transpose", perm=[0, 2, 1, 3]),
        mk("Reshape", ["ctx_t", "model_shape"], ["merged"], name="merge_heads"),
        mk("MatMul", ["merged", "wo"], ["o"], name="out_proj"),
        mk("Add", ["o", "bo"], ["o_b"], name="out_bias"),
        mk("Add", ["x", "o_b"], ["res1"], name="residual1"),
        mk("LayerNormalization", ["res1", "ln1.weight", "ln1.bias"], ["h1"], name="ln1",
           axis=-1, epsilon=1e-5),
        mk("MatMul", ["h1", "ffn1.weight"], ["f1"], name="ffn1"),
        mk("Add", ["f1", "ffn1.bias"], ["f1_b"], name="ffn1_bias"),
        mk("Gelu", ["f1_b"], ["g"], name="gelu"),
        mk("MatMul", ["g", "ffn2.weight"], ["f2"], name="ffn2"),
        mk("Add", ["f2", "ffn2.bias"], ["f2_b"], name="ffn2_bias"),
        mk("Add", ["h1", "f2_b"], ["res2"], name="residual2"),
        mk("LayerNormalization", ["res2", "ln2.weight", "ln2.bias"], ["y"], name="ln2",
           axis=-1, epsilon=1e-5),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, d])],
                  inits, "encoder", 20)


BUILDERS = {"mlp": mlp, "lenet": lenet, "encoder": encoder}


def build(name: str) -> bytes:
    return BUILDERS[name]().SerializeToString(deterministic=True)


def example_input(name: str) -> dict[str, np.ndarray]:
    """The input the tests and the README run the model on (seeded normal values)."""
    rng = np.random.default_rng(100)
    shape = {"mlp": ("input.1", (BATCH, 64)), "lenet": ("image", (BATCH, 1, 28, 28)),
             "encoder": ("x", (1, 64, 128))}[name]
    return {shape[0]: rng.standard_normal(shape[1]).astype(np.float32)}


def reference(name: str, model_bytes: bytes | None = None) -> dict[str, np.ndarray]:
    """The model's outputs on `example_input(name)` by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(model_bytes if model_bytes is not None else build(name))
    feeds = example_input(name)
    names = [o.name for o in ref.proto_.graph.output]
    return dict(zip(names, ref.run(None, feeds), strict=True))


def main() -> None:
    for name in MODELS:
        raw = build(name)
        (HERE / f"{name}.onnx").write_bytes(raw)
        outs = reference(name, raw)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outs.items())
        print(f"wrote {HERE / (name + '.onnx')} ({len(raw):,} bytes); reference: {shapes}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
