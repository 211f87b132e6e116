"""Real models in (acceptance 2 of the ONNX issue): programs/onnx/*.onnx through `d1 run
MODEL.onnx` on the d1 machine, against onnx.reference.ReferenceEvaluator.

programs/onnx/make_models.py builds the models with onnx.helper: a 3-layer MLP, a
LeNet-5-style CNN (1x28x28, batch 32) and a transformer encoder block (4 heads, d=128,
sequence 64). A model whose imported text uses a language form this build does not compile
yet is skipped with that reason by the run test, and still checked by the numpy reading of
its text (tests/dsl_numpy.py).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnxkit
import pytest

from compiler.onnx_import import import_file
from d1.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "programs" / "onnx"
sys.path.insert(0, str(MODELS_DIR))
import make_models  # noqa: E402

RTOL, ATOL = 1e-3, 1e-5


@pytest.mark.parametrize("name", make_models.MODELS)
def test_committed_model_is_what_the_script_makes(name):
    assert (MODELS_DIR / f"{name}.onnx").read_bytes() == make_models.build(name), \
        f"programs/onnx/{name}.onnx is stale: run python programs/onnx/make_models.py"


@pytest.mark.parametrize("name", make_models.MODELS)
def test_imported_text_matches_the_reference(name):
    """The numpy reading of the imported program gives onnx's reference outputs."""
    from dsl_numpy import run_text

    imported = import_file(MODELS_DIR / f"{name}.onnx")
    feeds = {imported.names[k]: v for k, v in make_models.example_input(name).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run_text(imported.text, feeds, imported.params)
    for onnx_name, want in make_models.reference(name).items():
        np.testing.assert_allclose(got[imported.names[onnx_name]], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", make_models.MODELS)
def test_model_runs_on_d1(name, tmp_path, capsys):
    """`d1 run programs/onnx/NAME.onnx --input ONNX_NAME=...` on the full d1 machine."""
    model = MODELS_DIR / f"{name}.onnx"
    imported = import_file(model)
    missing = sorted(imported.features - onnxkit.available_features())
    if missing:
        pytest.skip(f"needs DSL forms this build does not have yet: {', '.join(missing)}")
    args = ["run", str(model), "--out-dir", str(tmp_path / "out")]
    for onnx_name, a in make_models.example_input(name).items():
        np.save(tmp_path / "x.npy", a)
        args += ["--input", f"{onnx_name}={tmp_path / 'x.npy'}"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0, capsys.readouterr().err
    for onnx_name, want in make_models.reference(name).items():
        got = np.load(tmp_path / "out" / f"{imported.names[onnx_name]}.npy")
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
