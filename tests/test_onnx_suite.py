"""ONNX's own backend node tests through d1 (acceptance 1 of the ONNX issue).

tests/onnxkit.py sorts every case of `onnx.backend.test.case.node.collect_testcases()`:
out of scope (an operator d1 does not convert), skipped with a reason, or run. Each case in
scope is one test here:

* `test_node_case` runs it as `d1 run MODEL.onnx --mesh 4x4` does (import, compile, params
  embedded, inputs by their ONNX names, the emulator) and compares every output with the
  case's expected one at rtol 1e-3, atol 1e-6; a skipped case is reported with its reason.
* `test_node_case_text` reads the imported `.d1k` text with numpy (tests/dsl_numpy.py) and
  compares the same way: it checks each converter's choices even where this build's DSL
  lacks a form the text uses.

docs/ONNX.md lists the skips and the counts (`python tests/onnxkit.py` rewrites them); the
last test checks that it lists exactly what this build skips. A few cases also go through the
real command line.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxkit
import pytest

from d1.cli import main

SUITE = onnxkit.suite()
IN_SCOPE = [n for n, c in SUITE.items() if c.status != "out"]
TEXT = [n for n, c in SUITE.items() if c.imported is not None]
# Through `python -m d1 run` itself: an elementwise op, a matmul with attributes, a reduction
# with a constant axes input made an initializer.
CLI_CASES = ["test_leakyrelu", "test_gemm_all_attributes", "test_reduce_sum_keepdims_random"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_suite")


@pytest.mark.parametrize("name", IN_SCOPE)
def test_node_case(name, workdir):
    case = SUITE[name]
    if case.status == "skip":
        pytest.skip(case.reason)
    assert onnxkit.run_case(case, workdir) == []


@pytest.mark.parametrize("name", TEXT)
def test_node_case_text(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert onnxkit.run_text_case(SUITE[name]) == []


def test_every_converter_has_cases():
    """The sorting itself: every operator with a converter has cases in scope, and each of
    them imported (so its text is checked); many run on the mesh in this build."""
    from compiler.onnx_import.registry import CONVERTERS

    in_scope = {op for n in IN_SCOPE for op in SUITE[n].ops}
    imported = {op for n in TEXT for op in SUITE[n].ops}
    assert set(CONVERTERS) <= in_scope, set(CONVERTERS) - in_scope
    # onnx's cases of these compute on integers or strings only (tests/test_onnx_import.py
    # covers their float conversions)
    assert set(CONVERTERS) - imported <= {"Equal", "Shape", "Size"}, \
        set(CONVERTERS) - imported
    assert sum(1 for c in SUITE.values() if c.status == "run") >= 150


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_runs_a_node_case(name, tmp_path, capsys):
    """`d1 run MODEL.onnx --mesh 4x4 --input ONNX_NAME=FILE.npy` writes SANITISED.npy files
    that match the case's outputs, and --json records the names."""
    case = SUITE[name]
    assert case.status == "run", case.reason
    model = tmp_path / f"{name}.onnx"
    model.write_bytes(case.model.SerializeToString())
    args = ["run", str(model), "--mesh", "4x4", "--out-dir", str(tmp_path / "out"),
            "--json", str(tmp_path / "run.json")]
    for onnx_name, a in case.feeds[0].items():
        path = tmp_path / f"in_{len(args)}.npy"
        np.save(path, a.astype(np.float32))
        args += ["--input", f"{onnx_name}={path}"]
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    names = json.loads((tmp_path / "run.json").read_text())["onnx_names"]
    for onnx_name, want in case.expected[0].items():
        got = np.load(tmp_path / "out" / f"{names[onnx_name]}.npy")
        assert onnxkit.compare(onnx_name, got, want) == []


def test_doc_lists_every_skip():
    """docs/ONNX.md's suite section is what `python tests/onnxkit.py` writes for this build
    when every run case passes (which the tests above check)."""
    text = onnxkit.DOC.read_text(encoding="utf-8")
    section = onnxkit.doc_section(text)
    assert section is not None, "docs/ONNX.md has no suite section"
    want = onnxkit.report({n: [] for n, c in SUITE.items() if c.status == "run"})
    assert section == want, "docs/ONNX.md is stale: run `python tests/onnxkit.py`"


def test_doc_lists_every_operator():
    """docs/ONNX.md's operator table is the converters' own (registry and docstrings)."""
    text = onnxkit.DOC.read_text(encoding="utf-8")
    section = onnxkit.doc_section(text, onnxkit.OPS_BEGIN, onnxkit.OPS_END)
    assert section == onnxkit.operator_table(), \
        "docs/ONNX.md is stale: run `python tests/onnxkit.py`"
