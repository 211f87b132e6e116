"""The converters, one module per family; importing this package registers them all."""

from compiler.onnx_import.ops import elementwise, nn, tensor

__all__ = ["elementwise", "nn", "tensor"]
