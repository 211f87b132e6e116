"""The ONNX importer (compiler/onnx_import) and the `.onnx` kind of every command.

* names: the sanitising rules, collisions, reserved words;
* the text: one statement per node with its name, constants as params or literals (in the
  form they are read), folding, version rules, multi-output nodes;
* errors: every unsupported node listed at once, the subset reasons, symbolic dimensions,
  --shape, a model that is wrong, and hostile files (never a traceback, exit status 2);
* the commands: `d1 import` writes a .d1k and an .npz that run like the model; `d1 run`,
  `d1 compile` and `d1 debug` take the model; --input by either name; --json names.

tests/test_onnx_suite.py runs ONNX's own node tests; tests/test_onnx_models.py the models.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.onnx_import import ImportFailure, import_model, parse_model
from compiler.onnx_import.names import Names, sanitise
from compiler.onnx_import.registry import CONVERTERS, since_version
from d1.cli import main
from d1isa.errors import D1Error

ROOT = Path(__file__).resolve().parent.parent
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=None, opset=17):
    """A checked ModelProto: `inputs`/`outputs` are (name, shape) pairs of float tensors."""
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def statements(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line and not line.startswith(("#", "input ", "param ", "output "))]


def d1(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


# ---- names ------------------------------------------------------------------------------------

def test_sanitise_spelling():
    assert sanitise("input.1") == "input_1"
    assert sanitise("/enc/layer.0/Add_output_0") == "_enc_layer_0_Add_output_0"
    assert sanitise("3") == "t_3"
    assert sanitise("9lives:x") == "t_9lives_x"
    assert sanitise("é") == "_"


def test_names_are_unique_and_not_reserved():
    n = Names(["a.b", "a_b", "relu", "where", "x", "1", "t_1", "input", "f32"])
    assert n["a_b"] == "a_b"                   # valid names keep their spelling
    assert n["a.b"] == "a_b_1"
    assert n["x"] == "x"
    assert n["relu"] == "relu_1" and n["where"] == "where_1"   # a builtin, and a future one
    assert n["input"] == "input_1" and n["f32"] == "f32_1"
    assert n["t_1"] == "t_1" and n["1"] == "t_1_1"
    assert len(set(n.dsl.values())) == len(n.dsl)
    long = Names(["v" * 300])["v" * 300]
    assert len(long) <= 100


def test_names_cannot_break_out_of_their_comments():
    """ONNX names, node names and the producer's name are any strings: one with a newline
    (or a carriage return, U+2028, ...) is escaped where a comment or a message shows it,
    so it can neither start a statement of its own nor split an error line."""
    m = model([helper.make_node("Relu", ["x\ny = x"], ["y\rz"], name="n\noutput q"),
               helper.make_node("Neg", ["y\rz"], ["w"], name="m\u2028w = y")],
              [("x\ny = x", [2])], [("w", [2])])
    m.producer_name, m.producer_version = "evil\nw = 1", "2\n3"
    imp = import_model(m, "m.onnx")
    lines = imp.text.splitlines()
    assert imp.text.count("\n") == len(lines) and "\r" not in imp.text
    assert statements(imp.text) == ["y_z = relu(x_y___x)  # n\\noutput q (Relu)",
                                    "w = -y_z  # m\\u2028w = y (Neg)"]
    assert lines[0].endswith("made by evil\\nw = 1 2\\n3).")
    assert "input x_y___x: f32[2]  # ONNX 'x\\ny = x'" in lines
    bad = model([helper.make_node("Add", ["a", "b"], ["y"], name="add\nerror: fake")],
                [("a", [3]), ("b", [4])], [("y", [4])])
    with pytest.raises(ImportFailure) as e:
        import_model(bad, "m.onnx")
    assert e.value.messages == ["m.onnx: node 'add\\nerror: fake' (Add, opset 17): cannot "
                                "broadcast shapes [3] and [4]"]


# ---- the text ---------------------------------------------------------------------------------

def test_one_statement_per_node_with_its_name():
    m = model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
               helper.make_node("Relu", ["h"], ["y"])],
              [("x", [2, 3])], [("y", [2, 4])], {"w": np.ones((3, 4), np.float32)})
    imp = import_model(m, "m.onnx")
    assert statements(imp.text) == ["h = x @ w  # mm (MatMul)", "y = relu(h)  # #1 (Relu)"]
    assert "param w: f32[3, 4]" in imp.text
    assert imp.inputs == ["x"] and imp.outputs == ["y"] and list(imp.params) == ["w"]
    np.testing.assert_array_equal(imp.params["w"], np.ones((3, 4)))


def test_constants_are_folded_with_the_definitions_of_the_models_opset():
    """Unsqueeze-11 takes its axes as an attribute: it was evaluated with its newest
    definition (a TypeError). Softmax-11 flattens from `axis`, which onnx.reference does not
    do (it computed a softmax over axis 1): on constants it is converted instead."""
    c = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    m = model([helper.make_node("Unsqueeze", ["c"], ["u"], axes=[0]),
               helper.make_node("Softmax", ["u"], ["s"], axis=1),
               helper.make_node("Add", ["x", "s"], ["y"])],
              [("x", [1, 2, 3])], [("y", [1, 2, 3])], {"c": c}, opset=11)
    imp = import_model(m, "m.onnx")
    np.testing.assert_array_equal(imp.params["u"], c[None])
    assert statements(imp.text)[0] == ("s = reshape(softmax(reshape(u, [1, 6]), axis=-1), "
                                       "[1, 2, 3])  # #1 (Softmax)")


def test_a_graph_output_listed_twice_is_output_once():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2]), ("y", [2])])
    imp = import_model(m, "m.onnx")
    assert imp.outputs == ["y"] and statements(imp.text) == ["y = relu(x)  # #0 (Relu)"]
    assert imp.text.endswith("\noutput y\n")


def test_constants_become_literals_params_or_nothing():
    """A 0-d constant is a literal; a Gemm weight read transposed is stored transposed; a
    Reshape target computed from Shape and constants is folded away."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    nodes = [
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(
            np.array(0.5, np.float32))),
        helper.make_node("Mul", ["x", "half"], ["xh"], name="scale"),
        helper.make_node("Gemm", ["xh", "fc.w"], ["g"], name="fc", transB=1),
        helper.make_node("Shape", ["g"], ["s"], name="shape"),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(
            np.array([-1], np.int64))),
        helper.make_node("Concat", ["minus1", "s"], ["target"], axis=0, name="cat"),
        helper.make_node("Reshape", ["g", "target"], ["y"], name="flat"),
    ]
    m = model(nodes, [("x", [2, 3])], [("y", [1, 2, 4])], {"fc.w": w})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = import_model(m, "m.onnx")
    assert statements(imp.text) == [
        "xh = x * 0.5  # scale (Mul)",
        "g = xh @ fc_w  # fc (Gemm)",
        "y = reshape(g, [1, 2, 4])  # flat (Reshape)",
    ]
    assert "param fc_w: f32[3, 4]  # ONNX 'fc.w', transposed" in imp.text
    np.testing.assert_array_equal(imp.params["fc_w"], w.T)
    assert imp.folded == 4 and imp.nodes == 7
    assert imp.features == {"reshape"}


def test_a_constant_graph_output_maps_to_the_param_it_is_output_as():
    """A Gemm weight read transposed takes the ONNX name's own spelling; the weight is also a
    graph output, which is the untransposed param: its ONNX name maps to that one (the file
    written is W_1.npy), as a Conv bias read as [K, 1, 1] and output as [K] does."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.arange(4, dtype=np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], name="fc", transB=1),
             helper.make_node("Conv", ["im", "k", "b"], ["c"], name="conv")]
    m = model(nodes, [("x", [2, 3]), ("im", [1, 1, 3, 3])],
              [("g", [2, 4]), ("w", [4, 3]), ("c", [1, 4, 3, 3]), ("b", [4])],
              {"w": w, "k": np.ones((4, 1, 1, 1), np.float32), "b": b})
    imp = import_model(m, "m.onnx")
    for onnx_name, values in (("w", w), ("b", b)):
        dsl = imp.names[onnx_name]
        assert dsl in imp.outputs
        np.testing.assert_array_equal(imp.params[dsl], values)


def test_bfloat16_constants_are_bf16_params_and_literals(tmp_path, capsys):
    """A bfloat16 initializer, and a Cast of a float one to bfloat16 (folded when importing),
    are bf16 data like a bfloat16 input (they were refused: "the constant 'w' is bfloat16;
    the DSL computes in float32 and bfloat16")."""
    bf = TensorProto.BFLOAT16
    w = np.array([[1.5, -2.0, 0.25], [3.0, 0.5, -1.0]], np.float32)
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xb"], to=bf),
         helper.make_node("MatMul", ["xb", "w"], ["m"]),
         helper.make_node("Mul", ["xb", "s"], ["sb"]),
         helper.make_node("Cast", ["v"], ["vb"], to=bf),
         helper.make_node("Add", ["xb", "vb"], ["a"])],
        "g", [helper.make_tensor_value_info("x", F, [4, 2])],
        [helper.make_tensor_value_info(n, bf, s) for n, s in (("m", [4, 3]), ("sb", [4, 2]),
                                                             ("a", [4, 2]))],
        [helper.make_tensor("w", bf, [2, 3], w.flatten().tolist()),
         helper.make_tensor("s", bf, [], [0.5]),
         numpy_helper.from_array(np.array([0.1, -3.0], np.float32), "v")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    imp = import_model(m, "m.onnx")
    assert "param w: bf16[2, 3]" in imp.text and "param vb: bf16[2]" in imp.text
    assert "sb = xb * 0.5  # #2 (Mul)" in imp.text
    np.testing.assert_array_equal(imp.params["w"], w)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = np.array([[1, 2], [-0.5, 4], [0.25, -8], [3, 0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out = d1(capsys, "run", path, "--mesh", "2x2", "--check", "--input",
                   f"x={tmp_path / 'x.npy'}", "--out-dir", tmp_path / "o")
    assert code == 0, out
    assert out.count(" ok") == 3
    from onnx.reference import ReferenceEvaluator
    for name, want in zip(("m", "sb", "a"), ReferenceEvaluator(m).run(None, {"x": x}),
                          strict=True):
        np.testing.assert_array_equal(np.load(tmp_path / "o" / f"{name}.npy"),
                                      want.astype(np.float32))


def test_version_rules_pick_the_converter_of_the_models_opset():
    def softmax_text(opset):
        m = model([helper.make_node("Softmax", ["x"], ["y"], axis=1)],
                  [("x", [2, 3, 4])], [("y", [2, 3, 4])], opset=opset)
        return statements(import_model(m).text)

    # before opset 13, x is a [2, 12] matrix from axis 1 on
    assert softmax_text(11) == [
        "y = reshape(softmax(reshape(x, [2, 12]), axis=-1), [2, 3, 4])  # #0 (Softmax)"]
    assert softmax_text(13) == ["y = softmax(x, axis=1)  # #0 (Softmax)"]


def test_reductions_axes_attribute_and_input():
    x = [("x", [2, 3, 4])]
    old = model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[0, 2], keepdims=0)],
                x, [("y", [3])], opset=13)
    assert statements(import_model(old).text) == [
        "y = mean(mean(x, axis=2), axis=0)  # #0 (ReduceMean)"]
    new = model([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], x, [("y", [1, 1, 1])],
                {"axes": np.array([], np.int64)}, opset=13)
    assert statements(import_model(new).text) == ["y = sum(x, keepdims=1)  # #0 (ReduceSum)"]


def test_comparisons_where_and_bool_casts():
    m = model([helper.make_node("Equal", ["a", "b"], ["eq"]),
               helper.make_node("Cast", ["eq"], ["f"], to=F),
               helper.make_node("Where", ["eq", "a", "b"], ["y"])],
              [("a", [4]), ("b", [4])], [("f", [4]), ("y", [4])])
    imp = import_model(m)
    assert statements(imp.text) == ["eq = a == b  # #0 (Equal)",
                                    "f = cast(eq, f32)  # #1 (Cast)",
                                    "y = where(eq, a, b)  # #2 (Where)"]
    assert {"compare", "where"} <= imp.features


def test_layer_norm_with_mean_and_inv_std_dev():
    m = model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "m", "isd"],
                                axis=1, name="ln")],
              [("x", [2, 3, 4])], [("y", [2, 3, 4]), ("m", [2, 1, 1]), ("isd", [2, 1, 1])],
              {"s": np.ones((3, 4), np.float32), "b": np.zeros((3, 4), np.float32)})
    lines = statements(import_model(m).text)
    assert lines[0] == ("y = reshape(layernorm(reshape(x, [2, 12]), axis=-1, eps=1e-05), "
                        "[2, 3, 4]) * s + b  # ln (LayerNormalization)")
    assert all(line.endswith("# ln (LayerNormalization)") for line in lines)
    assert len(lines) == 5        # Y, the flattened x, Mean, the centred x, InvStdDev


def test_dropout_mask_is_a_constant_of_ones(tmp_path, capsys):
    m = model([helper.make_node("Dropout", ["x"], ["y", "mask"])], [("x", [2, 3])],
              [("y", [2, 3])], opset=13)
    m.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 3]))
    imp = import_model(m)
    assert statements(imp.text) == ["y = x  # #0 (Dropout)"]
    np.testing.assert_array_equal(imp.params["mask"], np.ones((2, 3)))
    assert imp.outputs == ["y", "mask"]


def test_an_infinite_constant_is_a_literal_beyond_every_range(tmp_path, capsys):
    """-inf (a causal mask's fill, as PyTorch exports masked_fill) is `-1e39`, which the DSL
    rounds to infinity; a NaN has no literal and is refused."""
    m = model([helper.make_node("Greater", ["x", "zero"], ["c"]),
               helper.make_node("Where", ["c", "x", "ninf"], ["y"])], [("x", [2, 3])],
              [("y", [2, 3])], {"zero": np.array(0, np.float32),
                                "ninf": np.array(-np.inf, np.float32)})
    assert statements(import_model(m).text)[-1] == "y = where(c, x, -1e39)  # #1 (Where)"
    path, x = tmp_path / "m.onnx", np.array([[1, -2, 3], [-4, 5, 0]], np.float32)
    path.write_bytes(m.SerializeToString())
    np.save(tmp_path / "x.npy", x)
    status, out = d1(capsys, "run", path, "--mesh", "2x2", "--input", f"x={tmp_path / 'x.npy'}",
                     "--out-dir", tmp_path)
    assert status == 0, out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.where(x > 0, x, -np.inf))
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array(np.nan, np.float32),
                                                            "ninf"))
    with pytest.raises(ImportFailure, match="the constant nan has no DSL literal"):
        import_model(m)


# ---- errors ----------------------------------------------------------------------------------

def test_every_unsupported_node_is_listed_at_once():
    m = model([helper.make_node("Sin", ["x"], ["a"], name="first"),
               helper.make_node("Relu", ["a"], ["b"]),
               helper.make_node("Cos", ["b"], ["y"])],
              [("x", [4])], [("y", [4])])
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == [
        "m.onnx: node 'first' (Sin, opset 17): not supported",
        "m.onnx: node #2 (output 'y') (Cos, opset 17): not supported",
    ]
    assert e.value.render().endswith("2 errors")


def test_attributes_outside_the_subset_say_why():
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], name="grouped", group=2),
               helper.make_node("Relu", ["c"], ["r"]),         # reads a failed node: quiet
               helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"], name="back")],
              [("x", [1, 2, 5, 5])], [("r", [1, 2, 3, 3]), ("y", [1, 2, 5, 5])],
              {"w": np.ones((2, 1, 3, 3), np.float32), "st": np.array([-1]),
               "en": np.array([-10]), "ax": np.array([3]), "sp": np.array([-1])})
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == [
        "m.onnx: node 'grouped' (Conv, opset 17): not supported: group=2 (only group 1)",
        "m.onnx: node 'back' (Slice, opset 17): not supported: a negative step (the DSL "
        "slices forwards)",
    ]
    assert e.value.kinds == ["subset", "subset"]


def test_unsupported_operators_and_attributes_are_listed_together_in_node_order():
    # docs/ONNX.md's example: an operator with no converter did not stop the others'
    # attributes from being checked (before, only the Einsum was listed)
    m = model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv3", group=2),
               helper.make_node("Einsum", ["x", "x"], ["e"], name="attn/Einsum",
                                equation="ncij,ncij->ncij"),
               helper.make_node("Relu", ["e"], ["r"])],          # reads a failed node: quiet
              [("x", [1, 2, 5, 5])], [("c", [1, 2, 3, 3]), ("r", [1, 2, 5, 5])],
              {"w": np.ones((2, 1, 3, 3), np.float32)})
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == [
        "m.onnx: node 'conv3' (Conv, opset 17): not supported: group=2 (only group 1)",
        "m.onnx: node 'attn/Einsum' (Einsum, opset 17): not supported",
    ]
    assert e.value.kinds == ["subset", "operator"]


def test_an_old_opset_names_the_first_one_converted():
    m = model([helper.make_node("Add", ["x", "x"], ["y"])], [("x", [4])], [("y", [4])],
              opset=6)
    with pytest.raises(ImportFailure, match=r"node #0 \(output 'y'\) \(Add, opset 6\): not "
                                            r"supported: d1 converts Add from opset 7 on"):
        import_model(m, "m.onnx")


def test_an_opset_newer_than_onnx_knows_is_read_with_a_note(tmp_path, capsys):
    newest = onnx.defs.onnx_opset_version()
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F, [4])],
                          [helper.make_tensor_value_info("y", F, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", newest + 1)])
    imp = import_model(m, "m.onnx")
    assert statements(imp.text) == ["y = relu(x)  # #0 (Relu)"]
    assert imp.notes == [f"m.onnx declares ONNX opset {newest + 1}, newer than the newest the "
                         f"installed onnx {onnx.__version__} knows ({newest}); its operators "
                         f"are read with their definitions at opset {newest}"]
    assert import_model(model([helper.make_node("Relu", ["x"], ["y"])], [("x", [4])],
                              [("y", [4])], opset=newest)).notes == []
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    code, out = d1(capsys, "run", path, "--mesh", "2x2", "--out-dir", tmp_path / "out")
    assert code == 0 and f"note: {path} declares ONNX opset {newest + 1}" in out
    code, out = d1(capsys, "import", path, "-o", tmp_path / "m.d1k")
    assert code == 0 and f"note: {path} declares ONNX opset {newest + 1}" in out


def test_symbolic_dimensions_need_shape():
    m = model([helper.make_node("Relu", ["input.1"], ["y"])], [("input.1", ["N", 3])],
              [("y", ["N", 3])])
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == [
        "m.onnx: input 'input.1' has the symbolic dimension 'N' at axis 0; give its shape "
        "with --shape input.1=D0,D1,..."]
    for key in ("input.1", "input_1"):           # the ONNX or the DSL name
        assert "input input_1: f32[5, 3]" in import_model(m, shapes={key: (5, 3)}).text
    with pytest.raises(ImportFailure, match="dimension 1 is 3 in the model, --shape gives 4"):
        import_model(m, "m.onnx", {"input.1": (5, 4)})
    with pytest.raises(ImportFailure, match="--shape z: the model has no input 'z'"):
        import_model(m, "m.onnx", {"z": (5, 3)})


def test_inputs_and_outputs_without_a_declared_shape():
    """onnx.checker wants every graph input and output to declare a shape; d1 works shapes
    out itself and takes an input's from --shape, so a model without them is read (and its
    own ModelProto is left as it was)."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F, None)],
                          [helper.make_tensor_value_info("y", F, None)])
    raw = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    m = parse_model(raw, "m.onnx")
    assert not any(vi.type.tensor_type.HasField("shape") for vi in (*m.graph.input,
                                                                     *m.graph.output))
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == ["m.onnx: input 'x' has no declared shape; give it with "
                                "--shape x=D0,D1,..."]
    imp = import_model(m, "m.onnx", {"x": (2, 3)})
    assert "input x: f32[2, 3]" in imp.text and imp.outputs == ["y"]


def test_a_string_constant_is_named_as_one():
    g = helper.make_graph([helper.make_node("Identity", ["s"], ["t"]),
                           helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F, [2])],
                          [helper.make_tensor_value_info("t", TensorProto.STRING, [1]),
                           helper.make_tensor_value_info("y", F, [2])],
                          [helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == ["m.onnx: graph output 't': not supported: the constant 't' is "
                                "string; the DSL computes in float32 and bfloat16"]


def test_a_wrong_model_is_an_error_not_a_traceback():
    m = model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
              [("a", [3]), ("b", [4])], [("y", [4])])
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == ["m.onnx: node 'add' (Add, opset 17): cannot broadcast shapes "
                                "[3] and [4]"]
    assert e.value.kinds == ["model"]


def test_import_model_says_what_it_takes():
    """A path or None as the model, or shapes that are not {name: tuple of ints}, were an
    AttributeError or a TypeError ('int' object is not iterable)."""
    m = model([helper.make_node("Relu", ["a"], ["y"], name="r")], [("a", [3])], [("y", [3])])
    for bad in (None, "m.onnx"):
        with pytest.raises(D1Error, match="import_model takes an onnx.ModelProto"):
            import_model(bad, "m.onnx")
    for shapes in (3, {"a": "x"}, {"a": (1.5,)}, {1: (3,)}):
        with pytest.raises(D1Error, match="shapes maps input names to tuples of integers"):
            import_model(m, "m.onnx", shapes)
    assert "relu(a)" in import_model(m, "m.onnx", {"a": (3,)}).text


@pytest.mark.parametrize("op, attrs, message", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [1]}, "strides [1] do not fit 2 spatial "
                                                           "axes"),
    ("Conv", {"strides": [0, 1]}, "strides [0, 1] must be positive"),
    ("Conv", {"strides": [1, 1, 1]}, "strides [1, 1, 1] do not fit 2 spatial axes"),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, -1]}, "dilations [2, -1] must "
                                                                 "be positive"),
    ("MaxPool", {"kernel_shape": [0, 2]}, "kernel_shape [0, 2] must be positive"),
    ("Conv", {"pads": [-1, 0, 0, 0]}, "pads [-1, 0, 0, 0] must be non-negative"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [1, 1]}, "pads [1, 1] do not fit 2 spatial "
                                                          "axes"),
])
def test_a_wrong_window_is_an_error_not_a_traceback(op, attrs, message):
    """A stride list too short for the window (an IndexError before), a zero stride (a
    ZeroDivisionError), or one too long (its extra entry ignored) are wrong models; negative
    pads are named as such, not as pads that do not fit."""
    inputs, inits = ["x"] + (["w"] if op == "Conv" else []), {}
    if op == "Conv":
        inits["w"] = np.ones((2, 3, 2, 2), np.float32)
    m = model([helper.make_node(op, inputs, ["y"], name="win", **attrs)],
              [("x", [1, 3, 5, 5])], [("y", [1, 3, 4, 4])], inits)
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == [f"m.onnx: node 'win' ({op}, opset 17): {message}"]


def test_repeated_axes_are_named_as_plain_integers():
    # the axes come from an int64 tensor; numpy 2 would print them as np.int64(0)
    m = model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="r")],
              [("x", [4, 3])], [("y", [3])], {"axes": np.array([0, -2], np.int64)})
    with pytest.raises(ImportFailure) as e:
        import_model(m, "m.onnx")
    assert e.value.messages == ["m.onnx: node 'r' (ReduceSum, opset 17): axis repeated in "
                                "[0, -2]"]


def test_integer_inputs_are_refused_with_a_hint():
    g = helper.make_graph([helper.make_node("Cast", ["i"], ["y"], to=F)], "g",
                          [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                          [helper.make_tensor_value_info("y", F, [3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ImportFailure, match="input 'i' is int64; the DSL's inputs are float32 "
                                            "or bfloat16 tensors"):
        import_model(m, "m.onnx")


HOSTILE = {
    "empty.onnx": b"",
    "text.onnx": b"this is not a model at all\n",
    "random.onnx": np.random.default_rng(7).bytes(4096),
    "truncated.onnx": None,          # a real model cut in half
    "no_graph.onnx": helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()[:6],
    "external.onnx": None,           # an initializer in an external file outside
    "external_inside.onnx": None,    # ... and one beside the model
    "bad_check.onnx": None,          # parses, but the checker refuses it
}


def _hostile(name: str) -> bytes:
    good = model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [4])], [("y", [4])],
                 {"w": np.ones(4, np.float32)})
    if name == "truncated.onnx":
        raw = good.SerializeToString()
        return raw[:len(raw) // 2]
    if name.startswith("external"):
        t = good.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value="../../etc/passwd" if name == "external.onnx"
                            else "w.bin")
        return good.SerializeToString()
    if name == "bad_check.onnx":
        good.graph.node[0].input[1] = "nowhere"
        return good.SerializeToString()
    return HOSTILE[name]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_cleanly(name, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(_hostile(name))
    for command in (["run", path, "--mesh", "2x2", "--out-dir", tmp_path],
                    ["import", path, "-o", tmp_path / "x.d1k"], ["compile", path]):
        status, out = d1(capsys, *command)
        assert status == 2, out
        assert str(path) in out and "Traceback" not in out and "internal error" not in out
    assert not (tmp_path / "x.d1k").exists()


def test_external_data_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "external_inside.onnx"
    path.write_bytes(_hostile("external_inside.onnx"))
    (tmp_path / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    want = "initializer 'w' keeps its data in an external file ('w.bin')"
    status, out = d1(capsys, "run", path, "--mesh", "2x2")
    assert status == 2 and want in out, out
    monkeypatch.chdir(tmp_path)
    status, out = d1(capsys, "run", path.name, "--mesh", "2x2")
    assert status == 2 and want in out, out


def test_external_data_of_a_constant_is_never_read(tmp_path, capsys, monkeypatch):
    """A Constant's value tensor may name an external file too; onnx would read it relative
    to the current directory (the checker allows any relative path there), and its bytes
    would become the model's constants and outputs."""
    (tmp_path / "secret.txt").write_bytes(b"secret\n")
    t = TensorProto(name="v", data_type=TensorProto.UINT8, dims=[7],
                    data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="secret.txt")
    g = helper.make_graph([helper.make_node("Constant", [], ["c"], value=t),
                           helper.make_node("Cast", ["c"], ["cf"], to=F),
                           helper.make_node("Add", ["x", "cf"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F, [7])],
                          [helper.make_tensor_value_info("y", F, [7])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    monkeypatch.chdir(tmp_path)
    status, out = d1(capsys, "run", "m.onnx", "--mesh", "2x2", "--out-dir", "out")
    assert status == 2, out
    assert ("error: m.onnx: the tensor of attribute 'value' of node #0 (output 'c') keeps its "
            "data in an external file ('secret.txt')") in out, out
    assert not (tmp_path / "out").exists()
    with pytest.raises(ImportFailure, match="keeps its data in an external file"):
        import_model(m, "m.onnx")          # the Python API, without parse_model, too


def test_hostile_file_through_a_real_process(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(_hostile("random.onnx"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env.pop("D1_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "d1", "run", str(path)], capture_output=True,
                       text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.startswith(f"error: {path}: not ") and "Traceback" not in p.stderr


def test_a_huge_constant_is_refused_before_it_is_made():
    m = model([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="huge"),
               helper.make_node("Add", ["x", "big"], ["y"])],
              [("x", [4])], [("y", [4])], {"shape": np.array([1 << 20, 1 << 20], np.int64)})
    with pytest.raises(ImportFailure, match=r"node 'huge' \(ConstantOfShape, opset 17\): its "
                                            r"constant result would have 1,099,511,627,776"):
        import_model(m, "m.onnx")


@pytest.mark.parametrize("op, inits", [
    ("Mul", {"a": np.ones((17000, 1), np.float32), "b": np.ones((1, 17000), np.float32)}),
    ("MatMul", {"a": np.ones((17000, 1), np.float32), "b": np.ones((1, 17000), np.float32)}),
    ("Gather", {"a": np.ones((1, 17000), np.float32), "b": np.zeros(17000, np.int64)})])
def test_a_constant_that_broadcasts_to_a_huge_one_is_refused_before_it_is_made(op, inits):
    # 136 KB of constants whose product is 289,000,000 elements: onnx's evaluator made the
    # 1.16 GB result before its size was checked (n = 100,000 would be 40 GB).
    import tracemalloc
    m = model([helper.make_node(op, ["a", "b"], ["big"], name="outer"),
               helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
               helper.make_node("Add", ["x", "s"], ["y"])],
              [("x", [4])], [("y", [4])], inits)
    tracemalloc.start()
    try:
        with pytest.raises(ImportFailure, match=rf"node 'outer' \({op}, opset 17\): its "
                                                r"constant result would have 289,000,000"):
            import_model(m, "m.onnx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"{peak:,} B traced"


def test_parse_model_refuses_non_models():
    with pytest.raises(D1Error, match="x.onnx: not an ONNX model"):
        parse_model(b"\x08\x01\x12\x00", "x.onnx")


# ---- the converters' versions -----------------------------------------------------------------

def test_every_registered_version_is_a_real_definition():
    """Each converter starts at an opset where onnx's own schema of the operator changed, and
    none of those changes after the first converter is missed."""
    top = onnx.defs.onnx_opset_version()
    for op, table in CONVERTERS.items():
        real = {since_version(op, v) for v in range(1, top + 1)} - {None}
        assert set(table) <= real, (op, sorted(table), sorted(real))
        assert {v for v in real if v >= min(table)} == set(table), (op, sorted(table))


# ---- the commands ---------------------------------------------------------------------------

@pytest.fixture
def mlp(tmp_path):
    """A small model with ONNX names that need sanitising and a symbolic batch."""
    rng = np.random.default_rng(0)
    m = model([helper.make_node("Gemm", ["input.1", "fc.weight", "fc.bias"], ["0"],
                                name="fc", transB=1),
               helper.make_node("Relu", ["0"], ["out:0"], name="act")],
              [("input.1", ["N", 8])], [("out:0", ["N", 4])],
              {"fc.weight": rng.standard_normal((4, 8)).astype(np.float32),
               "fc.bias": rng.standard_normal(4).astype(np.float32)}, opset=13)
    path = tmp_path / "mlp.onnx"
    onnx.save(m, path)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    w, b = (numpy_helper.to_array(t) for t in m.graph.initializer)
    return path, x, np.maximum(x @ w.T + b, 0)


def test_import_writes_a_program_and_its_params(mlp, tmp_path, capsys):
    path, x, want = mlp
    status, out = d1(capsys, "import", path, "-o", tmp_path / "m.d1k", "--shape",
                     "input.1=6,8")
    assert status == 0, out
    assert "renamed: 'input.1' -> input_1" in out
    text = (tmp_path / "m.d1k").read_text()
    assert "input input_1: f32[6, 8]  # ONNX 'input.1'" in text
    with np.load(tmp_path / "m.npz") as z:
        assert sorted(z.files) == ["fc_bias", "fc_weight"]
    status, out = d1(capsys, "run", tmp_path / "m.d1k", "--params", tmp_path / "m.npz",
                     "--mesh", "2x2", "--input", f"input_1={tmp_path / 'x.npy'}",
                     "--out-dir", tmp_path / "o1", "--check")
    assert status == 0, out
    np.testing.assert_allclose(np.load(tmp_path / "o1" / "out_0.npy"), want, rtol=1e-5,
                               atol=1e-6)


def test_import_of_a_model_without_params_notes_an_old_npz_beside_it(tmp_path, capsys):
    path = tmp_path / "r.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, 3])],
                    [("y", [2, 3])]), path)
    (tmp_path / "r.npz").write_bytes(b"an older import's params")
    status, out = d1(capsys, "import", path)
    assert status == 0 and "no params" in out
    assert f"note: {tmp_path / 'r.npz'} is not this model's: it has no params" in out
    assert (tmp_path / "r.npz").read_bytes() == b"an older import's params"


def test_run_takes_the_model_with_either_input_name(mlp, tmp_path, capsys):
    path, x, want = mlp
    for key in ("input.1", "input_1"):
        status, out = d1(capsys, "run", path, "--shape", "input.1=6,8", "--mesh", "2x2",
                         "--input", f"{key}={tmp_path / 'x.npy'}", "--out-dir", tmp_path / key,
                         "--json", tmp_path / f"{key}.json")
        assert status == 0, out
        np.testing.assert_allclose(np.load(tmp_path / key / "out_0.npy"), want, rtol=1e-5,
                                   atol=1e-6)
    names = json.loads((tmp_path / "input.1.json").read_text())["onnx_names"]
    assert names["input.1"] == "input_1" and names["out:0"] == "out_0" and names["0"] == "t_0"
    status, out = d1(capsys, "run", path, "--shape", "input_1=6,8", "--mesh", "2x2",
                     "--input", f"input.1={tmp_path / 'x.npy'}",
                     "--input", f"input_1={tmp_path / 'x.npy'}")
    assert status == 2 and "input 'input_1' is given twice" in out


def test_run_without_shape_names_the_input_and_dimension(mlp, tmp_path, capsys):
    path, _, _ = mlp
    status, out = d1(capsys, "run", path, "--mesh", "2x2")
    assert status == 2
    assert "input 'input.1' has the symbolic dimension 'N' at axis 0" in out
    status, out = d1(capsys, "run", ROOT / "programs" / "mlp.d1k", "--shape", "x=1,2")
    assert status == 2 and "--shape gives the shapes of an ONNX model's inputs" in out
    status, out = d1(capsys, "run", path, "--shape", "input.1=6,x")
    assert status == 2 and "--shape" in out


def test_compile_embeds_the_weights_and_names(mlp, tmp_path, capsys):
    path, x, want = mlp
    obj = tmp_path / "m.d1o"
    status, out = d1(capsys, "compile", path, "--shape", "input.1=6,8", "--mesh", "2x2",
                     "-o", obj)
    assert status == 0, out
    status, out = d1(capsys, "run", obj, "--input", f"input.1={tmp_path / 'x.npy'}",
                     "--out-dir", tmp_path / "o")
    assert status == 0, out
    np.testing.assert_allclose(np.load(tmp_path / "o" / "out_0.npy"), want, rtol=1e-5,
                               atol=1e-6)
    # recompiled for another mesh from its embedded source: the weights come along
    status, out = d1(capsys, "run", obj, "--mesh", "3x3", "--input",
                     f"input.1={tmp_path / 'x.npy'}", "--out-dir", tmp_path / "o3")
    assert status == 0 and "recompiled" in out, out
    np.testing.assert_allclose(np.load(tmp_path / "o3" / "out_0.npy"), want, rtol=1e-5,
                               atol=1e-6)
    status, out = d1(capsys, "compile", path, "--shape", "input.1=6,8", "--emit", "ir")
    assert status == 0 and "matmul input_1, fc_weight" in out and "note:" not in out
    # the assembly has the code but not the weights: said, since `d1 asm` of it would run
    # with the params' INITs
    status, out = d1(capsys, "compile", path, "--shape", "input.1=6,8", "--mesh", "2x2",
                     "--emit", "asm")
    assert status == 0 and "does not hold the model's initializers (2 params)" in out


def test_debug_takes_the_model(mlp, tmp_path, capsys, monkeypatch):
    path, x, want = mlp
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    from compiler.onnx_import import import_file
    text = import_file(path, {"input.1": (6, 8)}).text.splitlines()
    line = 1 + next(i for i, t in enumerate(text) if t.startswith("out_0 ="))
    # a line of the model's text by the model's file name (it is MODEL.onnx[MODEL.d1k])
    status, out = d1(capsys, "debug", path, "--shape", "input.1=6,8", "--mesh", "2x2",
                     "--input", f"input.1={tmp_path / 'x.npy'}", "--batch",
                     "-ex", f"break mlp.onnx:{line}", "-ex", "break mlp.d1k:1", "-ex", "delete",
                     "-ex", "run",
                     "-ex", "tensor out_0", "-ex", "tensor out:0", "-ex", "tensor input.1")
    assert f"Breakpoint 1 at mlp.onnx:{line} on all nodes" in out
    assert "error: no code for line mlp.d1k:1" in out
    assert status == 0, out
    assert "all 4 nodes halted" in out and str(np.float32(want.max()))[:5] in out
    # a value by its ONNX name too, shown under the program's name
    shown = out.split("(d1) ")[3:]
    assert shown[3].splitlines()[1:] == shown[2].splitlines()[1:] and \
        shown[3].startswith("tensor out:0\nout_0: output f32[6, 4]")
    assert shown[4].startswith("tensor input.1\ninput_1: input f32[6, 8]"), shown[4]


def test_compile_errors_point_into_the_imported_text(tmp_path, capsys):
    """A size the machine cannot hold is reported against MODEL.onnx[MODEL.d1k] with the
    statement (and so the node's name) shown."""
    m = model([helper.make_node("Relu", ["x"], ["y"], name="big_relu")],
              [("x", [4096, 4096])], [("y", [4096, 4096])])
    path = tmp_path / "big.onnx"
    onnx.save(m, path)
    status, out = d1(capsys, "compile", path, "--mesh", "2x2")
    assert status == 2
    assert f"{path}[big.d1k]:" in out and "# big_relu (Relu)" in out


# ---- converters the ONNX suite does not reach, against onnx's reference evaluator -------------

def _c(a):
    return np.asarray(a, np.float32)


RNG = np.random.default_rng(5)
X4 = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
OLD_AND_CONSTANT_FORMS = {
    # opset-6 Clip takes its bounds as attributes; opset-1 Slice its starts and ends
    "clip_v6": (model([helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25)],
                      [("x", [5])], [("y", [5])], opset=6), {"x": RNG.standard_normal(5)}),
    "slice_v1": (model([helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[9, 100],
                                         axes=[0, 1])],
                       [("x", [4, 5])], [("y", [3, 3])], opset=9),
                 {"x": RNG.standard_normal((4, 5))}),
    "squeeze_unsqueeze_v1": (model(
        [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
         helper.make_node("Squeeze", ["u"], ["y"], axes=[0])],
        [("x", [2, 3])], [("y", [2, 3, 1])], opset=11), {"x": RNG.standard_normal((2, 3))}),
    "reduce_sum_v11": (model([helper.make_node("ReduceSum", ["x"], ["y"], axes=[-1, 0],
                                               keepdims=1)],
                             [("x", [2, 3, 4])], [("y", [1, 3, 1])], opset=11),
                       {"x": RNG.standard_normal((2, 3, 4))}),
    # (at opsets 9 to 13 onnx's reference evaluator blends in the batch's own statistics)
    "batchnorm_v14_constants": (model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                          epsilon=1e-3)],
        [("x", [2, 3, 6, 6])], [("y", [2, 3, 6, 6])],
        {"s": _c([1, 2, 0.5]), "b": _c([0, 1, -1]), "m": _c([0.1, -0.2, 0.3]),
         "v": _c([1, 0.5, 2])}, opset=14), {"x": X4}),
    "conv_same_lower_bias": (model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2],
                          dilations=[1, 2])],
        [("x", [2, 3, 6, 6])], [("y", [2, 4, 3, 3])],
        {"w": RNG.standard_normal((4, 3, 3, 2)).astype(np.float32),
         "b": RNG.standard_normal(4).astype(np.float32)}, opset=11), {"x": X4}),
    "conv_1d": (model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 1], strides=[2])],
                      [("x", [2, 3, 9])], [("y", [2, 4, 5])],
                      {"w": RNG.standard_normal((4, 3, 4)).astype(np.float32)}, opset=13),
                {"x": RNG.standard_normal((2, 3, 9))}),
    "avgpool_ceil_count_pad": (model(
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2],
                          pads=[1, 0, 1, 1], ceil_mode=1, count_include_pad=1)],
        [("x", [2, 3, 6, 6])], [("y", [2, 3, 4, 4])], opset=19), {"x": X4}),
    "matmul_1d_and_broadcast": (model(
        [helper.make_node("MatMul", ["v", "x"], ["a"]),
         helper.make_node("MatMul", ["x3", "w"], ["b"])],
        [("v", [6]), ("x", [2, 6, 5]), ("x3", [2, 4, 6])], [("a", [2, 5]), ("b", [2, 4, 5])],
        {"w": RNG.standard_normal((6, 5)).astype(np.float32)}, opset=13),
        {"v": RNG.standard_normal(6), "x": RNG.standard_normal((2, 6, 5)),
         "x3": RNG.standard_normal((2, 4, 6))}),
    "gemm_all_constant_forms": (model(
        [helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1, alpha=0.5,
                          beta=-2.0)],
        [("b", [4, 3])], [("y", [5, 4])],
        {"a": RNG.standard_normal((3, 5)).astype(np.float32), "c": _c([1, 2, 3, 4])},
        opset=13), {"b": RNG.standard_normal((4, 3))}),
    "leaky_relu_where_and_pow": (model(
        [helper.make_node("LeakyRelu", ["x"], ["l"], alpha=1.5),
         helper.make_node("Pow", ["l", "e"], ["y"])],
        [("x", [6])], [("y", [6])], {"e": np.array(3, np.int64)}, opset=16),
        {"x": RNG.standard_normal(6)}),
}


@pytest.mark.parametrize("name", sorted(OLD_AND_CONSTANT_FORMS))
def test_converter_text_matches_the_reference(name):
    from dsl_numpy import run_text
    from onnx.reference import ReferenceEvaluator

    m, feeds = OLD_AND_CONSTANT_FORMS[name]
    feeds = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
    imp = import_model(m, f"{name}.onnx")
    want = ReferenceEvaluator(m).run(None, feeds)
    got = run_text(imp.text, {imp.names[k]: v for k, v in feeds.items()}, imp.params)
    for o, w in zip(m.graph.output, want, strict=True):
        np.testing.assert_allclose(got[imp.names[o.name]], w, rtol=1e-5, atol=1e-6)


def test_documented_onnx_runs_name_inputs_the_model_has():
    """Every `d1 ... programs/onnx/MODEL.onnx --input NAME=...` in the help texts, README
    and docs names an input of that model (its ONNX or its DSL name)."""
    files = [*sorted((ROOT / "d1" / "commands").glob("*.py")), ROOT / "README.md",
             *sorted((ROOT / "docs").glob("*.md"))]
    seen = 0
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            m = re.search(r"(programs/onnx/\w+\.onnx)\s(.*)", line)
            if m is None or "--input" not in m.group(2):
                continue
            imp = import_model(onnx.load(ROOT / m.group(1)), m.group(1))
            known = set(imp.inputs) | {k for k, v in imp.names.items() if v in imp.inputs}
            for name in re.findall(r"--input\s+([^=\s]+)=", m.group(2)):
                assert name in known, f"{f.name}: {line.strip()}"
                seen += 1
    assert seen >= 3
