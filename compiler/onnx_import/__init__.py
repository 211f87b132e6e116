"""ONNX models in: a ModelProto -> `.d1k` text, the values of its params, and the names.

    from compiler.onnx_import import read_model, import_model
    imported = import_model(read_model("model.onnx"), "model.onnx", shapes={"x": (32, 784)})
    imported.text       # the .d1k program, one statement per ONNX node
    imported.params     # {param: float32 array}: the initializers (and other constants)
    imported.names      # {ONNX name: DSL name}

`read_model` reads and checks a file (any failure is a D1Error naming the file, never a
traceback); `import_model` converts (compiler.onnx_import.convert; one converter per
operator and opset in compiler.onnx_import.ops, registered in .registry). docs/ONNX.md is the
user's guide. The `onnx` package is imported only here and only when a model is read, so
`import compiler` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.onnx_import import ops  # noqa: F401  (registers every converter)
from compiler.onnx_import.convert import (
    Imported,
    ImportFailure,
    external_tensors,
    import_model,
)
from d1isa.errors import D1Error
from d1isa.files import read_bytes

# A protobuf message is at most 2 GiB; so is a self-contained model.
MAX_MODEL_BYTES = 2 << 30


def onnx_module() -> Any:
    try:
        import onnx
    except ImportError:
        raise D1Error("reading ONNX models needs the 'onnx' package, which is not installed "
                      "(it is a dependency of d1: pip install -e .)") from None
    return onnx


def parse_model(raw: bytes, filename: str) -> Any:
    """A checked ModelProto from the bytes of a `.onnx` file; D1Error if it is not one."""
    onnx = onnx_module()
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(raw)
    except (DecodeError, ValueError, RuntimeError, TypeError) as e:
        raise D1Error(f"{filename}: not an ONNX model (the file does not parse as one: "
                      f"{e or type(e).__name__})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise D1Error(f"{filename}: not an ONNX model (it has no graph or no opset)")
    external = external_tensors(model)    # before the checker, which looks for the files
    if external:
        raise ImportFailure([f"{filename}: {m}" for m in external])
    # onnx.checker wants a shape on every graph input and output. d1 works every shape out
    # itself and takes an input's from --shape where the model leaves it open, so a missing
    # one is given an empty shape while the checker looks, and taken away again after.
    unshaped = [vi.type.tensor_type for vi in (*model.graph.input, *model.graph.output)
                if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for t in unshaped:
        t.shape.SetInParent()
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        said = " ".join(str(e).split()) or type(e).__name__
        said = said if len(said) <= 300 else said[:297] + "..."
        raise D1Error(f"{filename}: not a valid ONNX model: {said}") from None
    finally:
        for t in unshaped:
            t.ClearField("shape")
    return model


def read_model(path: str | Path) -> Any:
    """Read and check the ONNX model at `path`."""
    return parse_model(read_bytes(path, MAX_MODEL_BYTES, "ONNX model"), str(path))


def import_file(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None
                ) -> Imported:
    """`import_model(read_model(path), str(path), shapes)`."""
    return import_model(read_model(path), str(path), shapes)


__all__ = ["ImportFailure", "Imported", "import_file", "import_model", "parse_model",
           "read_model"]
