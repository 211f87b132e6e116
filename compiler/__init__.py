"""The tensor DSL compiler: `.d1k` source -> syntax tree -> typed IR -> per-node code.

The front end, in pipeline order: `parse` (compiler.parse) builds the syntax tree, `check`
(compiler.check) resolves names, dtypes and shapes against a `Machine` and lowers to the IR
(compiler.ir), `differentiate` (compiler.grad) rewrites every `grad(L, p)` into its backward
pass, and `evaluate` (compiler.reference) runs the IR in numpy as the definition of its
meaning; `init_params` draws params from their INIT and `train_step` runs one training step.
The language itself is described in docs/DSL.md. The back end (compiler.pipeline,
docs/COMPILER.md) maps the IR onto the mesh, builds every node's instructions as checked data and
links them into the object: `compile_source` and `compile_file` return the object, and
`compare_outputs` applies the `--check` tolerance.

This module stays light to import: numpy, ml_dtypes and lark, nothing compiled. Note that the
function `compiler.reference` hides the submodule of the same name as a package attribute; import
from the submodule with `from compiler.reference import evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from compiler.ast import Program, format_ast
from compiler.check import check as _check
from compiler.compare import compare_outputs
from compiler.grad import differentiate
from compiler.ir import Graph, Node, Op, format_ir, need_graph, verify
from compiler.parse import parse as _parse
from compiler.pipeline import CompileOptions, compile_file, compile_source, emit_stage
from compiler.reference import evaluate, init_params, train_step, update_key
from d1isa.machine import Machine, default_machine, machine_or_default
from d1isa.numbers import draw_inputs


@cache
def _default_machine() -> Machine:
    # Machines are immutable, so loading the default once is safe.
    return default_machine()


def parse_source(text: str, filename: str = "<string>") -> Program:
    """The syntax tree of `text`; SourceError on a syntax error."""
    return _parse(text, filename)


def check_source(text: str, machine: Machine | None = None,
                 filename: str = "<string>") -> Graph:
    """Parse and check `text` for `machine` (default: the D1 machine); the typed IR graph, or a
    SourceError listing every problem. A `grad(L, p)` is still one `grad` node here;
    `differentiate(graph)` expands it (`evaluate` and the compiler do that themselves)."""
    program = _parse(text, filename)
    return _check(program, _default_machine() if machine is None else machine_or_default(machine),
                  filename, text)


def reference(text: str, inputs: Mapping[str, Any], machine: Machine | None = None,
              filename: str = "<string>", params: Mapping[str, Any] | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Parse, check and evaluate `text` in numpy: every output as a float32 array, by name, and
    every update under `update_key(NAME)` (params not given are drawn from their INIT with
    `seed`; see `evaluate`)."""
    return evaluate(check_source(text, machine, filename), inputs, params, seed)


def make_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs drawn from a seeded standard normal, in declaration order, each rounded to its
    dtype: the same seed gives the same numbers for the emulator and the reference."""
    need_graph(graph, "make_inputs")
    return draw_inputs([(n.name, n.shape, n.dtype) for n in graph.inputs], seed)


__all__ = [
    "CompileOptions", "Graph", "Node", "Op", "Program", "check_source", "compare_outputs",
    "compile_file", "compile_source", "differentiate", "emit_stage", "evaluate", "format_ast",
    "format_ir", "init_params", "make_inputs", "parse_source", "reference", "train_step",
    "update_key", "verify",
]
