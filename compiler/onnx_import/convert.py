"""The import itself: an ONNX ModelProto -> `.d1k` text, its params' values and the names.

Two walks over the nodes, in the graph's (topological) order:

1. support: every node must be foldable (all its inputs constant, or a Shape/Size of a value
   whose shape is known, which every shape is here) or have a converter for its operator at
   the model's opset (compiler.onnx_import.registry). Every node that has neither is listed in
   one error, not only the first.
2. convert: a foldable node is evaluated on the host (onnx.reference, the format's own
   evaluator) and its outputs stay constants; any other node's converter writes one DSL
   statement per output (an occasional helper value gets a statement of its own, commented
   the same way). A converter that meets an attribute outside the documented subset raises
   `Unsupported`; those are collected for every node too, and the nodes that read a failed
   node's outputs are skipped quietly.

Constants become data only where a converter reads them as data: a 0-d one as a number
literal, any other as a `param` whose value goes to `Imported.params` (the model's
initializers keep their names). Shapes, axes, starts and ends are read as constants by the
converters that need them and never reach the program.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.onnx_import import expr as X
from compiler.onnx_import.expr import E
from compiler.onnx_import.names import Names
from compiler.onnx_import.registry import lookup, why_not
from d1isa.errors import D1Error, printable
from d1isa.numbers import is_integer

# ONNX element types (onnx.TensorProto.DataType), the ones this module names.
FLOAT, UINT8, INT8, UINT16, INT16, INT32, INT64, STRING, BOOL, FLOAT16, DOUBLE = range(1, 12)
UINT32, UINT64 = 12, 13
BFLOAT16 = 16
DSL_DTYPE = {FLOAT: "f32", BFLOAT16: "bf16"}
ELEM_OF = {"f32": FLOAT, "bf16": BFLOAT16}
INTEGER = {UINT8, INT8, UINT16, INT16, INT32, INT64, UINT32, UINT64, BOOL}
MAX_DIMS = 4
# Operators never evaluated on the host even when their inputs are constant (they draw).
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Bernoulli", "Multinomial", "Dropout"}
# Before opset 13 these flatten their input from `axis` on; onnx.reference has only the
# opset-13 definition, so on constants they are converted (run on the mesh), not evaluated.
FLATTENING_BEFORE_13 = {"Softmax", "LogSoftmax", "Hardmax"}
# Operators whose outputs are constants whatever their inputs (every shape is known here).
SHAPE_OPS = {"Shape", "Size"}
# A constant the import computes (folding) holds at most this many elements: more than any
# machine's SRAM, so nothing lawful is refused, and a model that asks ConstantOfShape or
# Range for 2^40 elements is refused before anything is allocated.
MAX_FOLDED_ELEMENTS = 1 << 28


# Inputs of at most this many elements go to shape inference with their values: a shape,
# repeats, pads, scales or a depth decides an output's size; larger ones go as shapes alone.
INFERENCE_VALUES = 1024


def inferred_elements(node: Any, feeds: dict[str, Any], opsets: dict[str, int]) -> float | None:
    """The elements of the node's largest output as onnx's shape inference gives them, before
    the node is evaluated; None when it cannot tell. Any operator can ask for more than its
    inputs hold, not only those whose inputs are a size: a broadcast, an outer product or a
    gather made 160 KB of constants into 1.6 GB (n x 1 times 1 x n)."""
    from onnx import helper, numpy_helper, shape_inference

    try:
        inputs, values = [], []
        for name, a in feeds.items():
            a = np.asarray(a)
            inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            if a.size <= INFERENCE_VALUES:
                values.append(numpy_helper.from_array(a, name))
        graph = helper.make_graph([node], "fold", inputs, [
            helper.make_empty_tensor_value_info(o) for o in node.output if o], values)
        model = helper.make_model(graph, opset_imports=[
            helper.make_opsetid(domain, version) for domain, version in opsets.items()])
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # onnx's inference on the model's own node: no answer, no verdict
        return None
    counts = []
    for vi in inferred.graph.output:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            counts.append(float(np.prod([float(d.dim_value) for d in dims])))
    return max(counts, default=None)


EXTERNAL = 1        # onnx.TensorProto.EXTERNAL: the tensor's bytes are in another file


def external_tensors(model: Any) -> list[str]:
    """Every tensor of the model that keeps its data in an external file, as a message each:
    the initializers (dense and sparse) and the tensors held by node attributes (a Constant's
    value, ConstantOfShape's), in subgraphs and model-local functions too. onnx would read
    such a file relative to the current directory when the tensor is decoded, so a model
    could pull any file there into its constants; d1 reads self-contained models only."""
    found: list[str] = []

    def tensor(t: Any, what: str) -> None:
        if t.data_location == EXTERNAL or len(t.external_data):
            where = next((e.value for e in t.external_data if e.key == "location"), "")
            found.append(f"{what} keeps its data in an external file"
                         + (f" ('{where}')" if where else "")
                         + "; d1 reads self-contained models only")

    def nodes(ns: Any, owner: str) -> None:
        for index, n in enumerate(ns):
            label = f"node {node_label(n, index)}{owner}"
            for a in n.attribute:
                what = f"the tensor of attribute '{a.name}' of {label}"
                for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                    tensor(t, what)
                for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) \
                        + list(a.sparse_tensors):
                    tensor(sp.values, what)
                    tensor(sp.indices, what)
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    graph(g, f" in a subgraph of {label}")

    def graph(g: Any, owner: str = "") -> None:
        for t in g.initializer:
            tensor(t, f"initializer '{t.name}'{owner}")
        for sp in g.sparse_initializer:
            for t in (sp.values, sp.indices):
                tensor(t, f"sparse initializer '{sp.values.name}'{owner}")
        nodes(g.node, owner)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node, f" in function '{f.name}'")
    return found


class Unsupported(Exception):
    """A node outside the documented subset (its attributes, its types): the reason."""


class BadModel(Exception):
    """A node the model gets wrong (shapes that do not fit, a missing input): the reason."""


class ImportFailure(D1Error):
    """Every problem the import found, one line each (exit code 2).

    `kinds` says what each is: "operator" (no converter for the operator at the model's
    opset), "subset" (a converter met an attribute or type outside the documented subset) or
    "model" (anything else: the model, its inputs or the options are wrong)."""

    def __init__(self, messages: list[str], kinds: list[str] | None = None) -> None:
        self.messages = [printable(m) for m in messages]
        self.kinds = kinds or ["model"] * len(messages)
        super().__init__("\n".join(messages))

    def render(self) -> str:
        body = "\n".join(f"error: {m}" for m in self.messages)
        return body + (f"\n{len(self.messages)} errors" if len(self.messages) > 1 else "")


@dataclass
class Value:
    """An ONNX value as the importer knows it.

    `shape` is always concrete. `elem` is its ONNX element type. A tensor computed on the
    machine has `dtype` (the DSL dtype holding it: a bool is held as 1/0 in the dtype of the
    values it was computed from) and `expr` (its DSL name). A constant has `const` instead,
    and gets a DSL form only if a converter reads it as data.
    """

    shape: tuple[int, ...]
    elem: int
    dtype: str | None = None
    expr: E | None = None
    const: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_const(self) -> bool:
        return self.const is not None


POISON = Value((), 0)


@dataclass
class Imported:
    """What `import_model` returns.

    `text` is the `.d1k` program; `params` the value of each of its params (float32 arrays,
    by DSL name); `names` maps every ONNX value the program has (inputs, params, computed
    values; not the constants folded away) to its DSL name (only those that differ in
    `renamed`), a graph output to the name it is output under (a constant read transposed
    by a Gemm is two params; the output is the untransposed one, whose file is NAME.npy);
    `features` are the newer language forms the text uses
    (compiler.onnx_import.expr.FEATURES).
    """

    text: str
    params: dict[str, np.ndarray]
    names: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    features: frozenset[str]
    opset: int
    renamed: dict[str, str] = field(default_factory=dict)
    nodes: int = 0              # ONNX nodes in the graph
    folded: int = 0             # of which evaluated when importing (constants, shapes)
    notes: list[str] = field(default_factory=list)     # what the user should know


def elem_name(elem: int) -> str:
    import onnx
    try:
        return onnx.helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower()
    except (ValueError, KeyError):
        return f"type {elem}"


def node_label(node: Any, index: int) -> str:
    if node.name:
        return f"'{printable(node.name)}'"
    out = next((o for o in node.output if o), None)
    return f"#{index}" + (f" (output '{printable(out)}')" if out else "")


class Importer:
    def __init__(self, model: Any, filename: str, shapes: dict[str, tuple[int, ...]]) -> None:
        self.model = model
        self.filename = filename
        self.graph = model.graph
        self.opsets = {}
        for imp in model.opset_import:
            domain = "" if imp.domain in ("", "ai.onnx") else imp.domain
            self.opsets[domain] = int(imp.version)
        self.opset = self.opsets.get("", 0)
        self.shapes = dict(shapes)
        g = self.graph
        order = [i.name for i in g.input] + [t.name for t in g.initializer]
        for n in g.node:
            order += [o for o in n.output if o]
        order += [o.name for o in g.output]
        self.names = Names(order)
        self.values: dict[str, Value] = {}
        self.decls: list[str] = []
        self.body: list[str] = []
        self.params: dict[str, np.ndarray] = {}
        self.materialised: dict[tuple[str, str, tuple[int, ...], bool], E] = {}
        self.features: set[str] = set()
        self.problems: list[str] = []
        self.kinds: list[str] = []
        self.inputs: list[str] = []
        self.bound: set[str] = set()          # the DSL names the program defines
        self.folded = 0
        # node index -> why no converter takes it (check_support), reported in node order
        self.unsupported: dict[int, str] = {}
        self.used: set[str] = {o.name for o in g.output}
        # graph outputs that are constants output under a param of another name than the
        # ONNX name's own (which went to a transposed or reshaped form read earlier)
        self.output_params: dict[str, str] = {}
        for n in g.node:
            self.used.update(i for i in n.input if i)

    # ---- driver -------------------------------------------------------------------------------

    def run(self) -> Imported:
        external = external_tensors(self.model)
        if external:
            raise ImportFailure([f"{self.filename}: {m}" for m in external])
        self.read_initializers()
        if not self.problems:
            self.check_support()
        self.read_inputs()
        if self.unsupported and self.problems:
            # the operators are checked first: the inputs matter only to a model d1 can take
            raise ImportFailure(list(self.unsupported.values()),
                                ["operator"] * len(self.unsupported))
        if self.problems:
            raise ImportFailure(self.problems, self.kinds)
        for index, node in enumerate(self.graph.node):
            self.convert(index, node)
        outputs = self.read_outputs()
        if self.problems:
            raise ImportFailure(self.problems, self.kinds)
        names = {k: v for k, v in self.names.dsl.items() if v in self.bound}
        names.update(self.output_params)
        return Imported(self.text(outputs), self.params, names, self.inputs, outputs,
                        frozenset(self.features), self.opset,
                        {k: v for k, v in names.items() if k != v}, len(self.graph.node),
                        self.folded, self.notes())

    def notes(self) -> list[str]:
        """A model of an opset newer than the installed onnx knows is read with the newest
        definitions it does know: nobody can tell here whether its operators changed since."""
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if self.opset <= newest:
            return []
        return [f"{self.filename} declares ONNX opset {self.opset}, newer than the newest the "
                f"installed onnx {onnx.__version__} knows ({newest}); its operators are read "
                f"with their definitions at opset {newest}"]

    def fail(self, message: str, kind: str = "model") -> None:
        self.problems.append(f"{self.filename}: {message}")
        self.kinds.append(kind)

    # ---- graph inputs, initializers, outputs --------------------------------------------------

    def read_initializers(self) -> None:
        from onnx import numpy_helper

        for t in self.graph.initializer:
            try:
                a = numpy_helper.to_array(t)
            except Exception as e:  # a malformed tensor: any error of onnx's decoder
                self.fail(f"initializer '{t.name}' cannot be read: {e}")
                continue
            self.values[t.name] = Value(tuple(int(d) for d in a.shape), int(t.data_type),
                                        const=np.asarray(a))
        for t in self.graph.sparse_initializer:
            self.fail(f"sparse initializer '{t.values.name}' is not supported")

    def read_inputs(self) -> None:
        given = {}
        known = {i.name for i in self.graph.input}
        by_dsl = {self.names[n]: n for n in known}
        for key, dims in self.shapes.items():
            name = key if key in known else by_dsl.get(key)
            if name is None:
                self.fail(f"--shape {key}: the model has no input '{key}' (inputs: "
                          f"{', '.join(i.name for i in self.graph.input) or 'none'})")
                continue
            given[name] = tuple(dims)
        for inp in self.graph.input:
            if inp.name in self.values:        # an initializer listed as an input: a constant
                continue
            t = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
            if t is None:
                self.fail(f"input '{inp.name}' is not a tensor; d1 takes tensor inputs",
                          "subset")
                continue
            if t.elem_type not in DSL_DTYPE:
                self.fail(f"input '{inp.name}' is {elem_name(t.elem_type)}; the DSL's inputs "
                          "are float32 or bfloat16 tensors (an integer tensor such as a shape "
                          "must be an initializer)", "subset")
                continue
            shape = self.input_shape(inp, t, given.get(inp.name))
            if shape is None:
                continue
            dtype = DSL_DTYPE[t.elem_type]
            dsl = self.names[inp.name]
            self.values[inp.name] = Value(shape, t.elem_type, dtype, X.name(dsl))
            self.inputs.append(dsl)
            self.bound.add(dsl)
            self.decls.append(f"input {dsl}: {dtype}[{', '.join(map(str, shape))}]"
                              + self.comment_name(inp.name))

    def input_shape(self, inp: Any, t: Any, given: tuple[int, ...] | None
                    ) -> tuple[int, ...] | None:
        """The input's concrete shape: the model's static dims, or --shape for symbolic ones."""
        has_shape = t.HasField("shape")
        dims = list(t.shape.dim) if has_shape else None
        if given is not None:
            if dims is not None and len(dims) != len(given):
                self.fail(f"--shape {inp.name}: the model declares {len(dims)} dimensions, "
                          f"--shape gives {len(given)}")
                return None
            for axis, d in enumerate(dims or []):
                if d.HasField("dim_value") and d.dim_value != given[axis]:
                    self.fail(f"--shape {inp.name}: dimension {axis} is {d.dim_value} in the "
                              f"model, --shape gives {given[axis]}")
                    return None
            shape = given
        elif dims is None:
            self.fail(f"input '{inp.name}' has no declared shape; give it with --shape "
                      f"{inp.name}=D0,D1,...")
            return None
        else:
            shape = []
            for axis, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(int(d.dim_value))
                    continue
                if d.HasField("dim_value") and d.dim_value == 0:
                    self.fail(f"input '{inp.name}' is empty (axis {axis} has length 0); d1 "
                              "has no empty tensors", "subset")
                    return None
                what = (f"the symbolic dimension '{d.dim_param}'" if d.HasField("dim_param")
                        else "a dimension of unknown size" if not d.HasField("dim_value")
                        else f"the dimension {d.dim_value}")
                self.fail(f"input '{inp.name}' has {what} at axis {axis}; give its shape with "
                          f"--shape {inp.name}=D0,D1,...")
                return None
            shape = tuple(shape)
        if not 1 <= len(shape) <= MAX_DIMS:
            self.fail(f"input '{inp.name}' has {len(shape)} dimensions; a DSL input has 1 to "
                      f"{MAX_DIMS}", "subset")
            return None
        if any(d < 1 for d in shape):
            self.fail(f"input '{inp.name}' has shape {list(shape)}; every dimension must be "
                      "positive")
            return None
        return tuple(shape)

    def read_outputs(self) -> list[str]:
        outputs = []
        seen = set()
        for o in self.graph.output:
            if o.name in seen:        # listed twice (onnx.checker allows it): output once
                continue
            seen.add(o.name)
            v = self.values.get(o.name)
            if v is None:
                if not any(o.name in n.output for n in self.graph.node):
                    self.fail(f"graph output '{o.name}' is never computed")
                continue
            if v is POISON:
                continue
            dsl = self.names[o.name]
            if v.is_const:
                if v.rank == 0 or v.rank > MAX_DIMS:
                    self.fail(f"graph output '{o.name}' is a constant of {v.rank} "
                              "dimensions; d1 outputs tensors of 1 to 4", "subset")
                    continue
                try:
                    dsl = self.data(o.name, None).text     # the param holding it
                except Unsupported as e:
                    self.fail(f"graph output '{o.name}': not supported: {e}", "subset")
                    continue
                if dsl != self.names[o.name]:
                    self.output_params[o.name] = dsl
            elif v.expr is None or v.expr.text != dsl:
                self.body.append(f"{dsl} = {v.expr}  # graph output '{printable(o.name)}'")
                self.bound.add(dsl)
            outputs.append(dsl)
        if not outputs and not self.problems:
            self.fail("the model has no outputs that d1 can compute")
        return outputs

    def text(self, outputs: list[str]) -> str:
        made = f"{self.model.producer_name} {self.model.producer_version}".rstrip()
        lines = [printable(f"# Imported from {self.filename} by d1 import (ONNX opset {self.opset}"
                       + (f", made by {made}" if self.model.producer_name else "") + ")."),
                 "# One statement per ONNX node; its comment names the node and its operator."]
        if self.params:
            lines.append("# The params hold the model's constants: d1 import writes their "
                         "values to OUT.npz,")
            lines.append("# for d1 run OUT.d1k --params OUT.npz.")
        lines += self.decls + self.body
        lines.append("output " + ", ".join(outputs))
        return "\n".join(lines) + "\n"

    def comment_name(self, onnx_name: str) -> str:
        dsl = self.names[onnx_name]
        return f"  # ONNX '{printable(onnx_name)}'" if dsl != onnx_name else ""

    # ---- the two walks ------------------------------------------------------------------------

    def foldable(self, node: Any, const: Any) -> bool:
        """Whether `node` is evaluated on the host: `const` tells which names are constant."""
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if domain or node.op_type in NONDETERMINISTIC:
            return False
        if node.op_type in FLATTENING_BEFORE_13 and self.opset < 13:
            return False
        if node.op_type in SHAPE_OPS or node.op_type == "Constant":
            return True
        if any(a.type in (5, 10) for a in node.attribute):     # GRAPH, GRAPHS: subgraphs
            return False
        inputs = [i for i in node.input if i]
        return bool(inputs) and all(i in const for i in inputs)

    def check_support(self) -> None:
        """Find the nodes no converter takes (`unsupported`). The others are still converted,
        so that their attributes outside the subset are listed with them, in node order."""
        const = {n for n, v in self.values.items() if v.is_const}
        for index, node in enumerate(self.graph.node):
            if self.foldable(node, const):
                const.update(o for o in node.output if o)
                continue
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            opset = self.opsets.get(domain)
            where = f"{node.op_type}" + (f" in domain '{domain}'" if domain else "")
            if domain or opset is None or lookup(node.op_type, opset) is None:
                reason = why_not(node.op_type, opset) if not domain and opset else ""
                self.unsupported[index] = (f"{self.filename}: node {node_label(node, index)} "
                                           f"({where}, opset "
                                           f"{opset if opset is not None else '?'}): "
                                           "not supported" + reason)

    def convert(self, index: int, node: Any) -> None:
        if index in self.unsupported:
            self.problems.append(self.unsupported[index])
            self.kinds.append("operator")
            self.poison(node)
            return
        ins = [i for i in node.input if i]
        if any(self.values.get(i) is POISON for i in ins):
            self.poison(node)
            return
        missing = [i for i in ins if i not in self.values]
        label = f"node {node_label(node, index)} ({node.op_type}, opset {self.opset})"
        if missing:
            self.fail(f"{label}: input '{missing[0]}' is not defined before it")
            self.poison(node)
            return
        ctx = NodeCtx(self, node, index)
        try:
            if self.foldable(node, _ConstNames(self.values)):
                self.folded += 1
            if self.foldable(node, _ConstNames(self.values)) \
                    and node.op_type not in ("Constant", *SHAPE_OPS):
                self.fold(ctx)
            else:
                found = lookup(node.op_type, self.opset)
                assert found is not None          # check_support saw to it
                ctx.version = found[0]
                found[1](ctx)
        except (Unsupported, X.ConstantError) as e:
            self.fail(f"{label}: not supported: {e}", "subset")
            self.poison(node)
        except BadModel as e:
            self.fail(f"{label}: {e}")
            self.poison(node)
        else:
            for o in node.output:
                if o and o not in self.values and o in self.used:
                    self.fail(f"{label}: not supported: its output '{o}'", "subset")
                    self.values[o] = POISON

    def poison(self, node: Any) -> None:
        for o in node.output:
            if o:
                self.values[o] = POISON

    def fold(self, ctx: NodeCtx) -> None:
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
        import onnx
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        node = ctx.node
        feeds = {i: self.values[i].const for i in node.input if i}
        self.check_fold_size(node, feeds)

        # A one-node model, not the bare node: given a NodeProto, ReferenceEvaluator ignores
        # `opsets` and runs the newest definition (Unsqueeze-1's axes attribute failed,
        # Softmax-11's flattening was lost). An opset newer than onnx knows is read at the
        # newest it does know, as the converters read it.
        opsets = dict(self.opsets)
        opsets[""] = min(opsets.get("", 0), onnx.defs.onnx_opset_version())
        outputs = [(i, o) for i, o in enumerate(node.output) if o]
        try:
            graph = helper.make_graph(
                [node], "fold", [helper.make_empty_tensor_value_info(n) for n in feeds],
                [helper.make_empty_tensor_value_info(o) for _, o in outputs])
            model = helper.make_model(graph, opset_imports=[
                helper.make_opsetid(domain, version) for domain, version in opsets.items()])
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:  # onnx's evaluator on the model's own constants
            raise BadModel(f"cannot evaluate it on its constant inputs: "
                           f"{type(e).__name__}: {e}") from None
        for (i, _), r in zip(outputs, results, strict=False):
            a = np.asarray(r)
            if a.size > MAX_FOLDED_ELEMENTS:
                raise BadModel(f"its constant result has {a.size:,} elements (at most "
                               f"{MAX_FOLDED_ELEMENTS:,})")
            ctx.set_const(i, a)

    def check_fold_size(self, node: Any, feeds: dict[str, Any]) -> None:
        """Refuse, before evaluating, the operators whose result size is asked for by their
        inputs: a shape (ConstantOfShape, Expand, Tile's repeats) or a range."""
        ins = [feeds.get(i) for i in node.input]
        count = None
        with np.errstate(all="ignore"):
            if node.op_type in ("ConstantOfShape", "Expand") and ins and ins[-1] is not None:
                count = float(np.prod(np.abs(ins[-1].astype(np.float64))))
                if node.op_type == "Expand" and ins[0] is not None:
                    count *= max(1.0, float(ins[0].size))
            elif node.op_type == "Tile" and len(ins) == 2 and ins[0] is not None:
                count = float(ins[0].size) * float(np.prod(np.abs(ins[1].astype(np.float64))))
            elif node.op_type == "Range" and len(ins) == 3 and all(a is not None for a in ins):
                start, limit, delta = (float(np.asarray(a).reshape(-1)[0]) for a in ins)
                count = abs((limit - start) / delta) if delta else float("inf")
        if count is None:
            count = inferred_elements(node, feeds, dict(self.opsets))
        if count is not None and not count <= MAX_FOLDED_ELEMENTS:
            raise BadModel(f"its constant result would have {count:,.0f} elements (at most "
                           f"{MAX_FOLDED_ELEMENTS:,})")

    # ---- constants as data --------------------------------------------------------------------

    def const_dtype(self, v: Value, like: str | None) -> str:
        if like is not None:
            return like
        return "bf16" if v.elem == BFLOAT16 else "f32"

    def data(self, onnx_name: str, like: str | None, shape: tuple[int, ...] | None = None,
             transposed: bool = False) -> E:
        """The DSL form of the constant `onnx_name` read as data in dtype `like` (None: its
        own), reshaped to `shape` or transposed (2-D) if asked: a number literal if it is
        0-d, else a param (declared once per form; the first keeps the ONNX name, and the
        param holds the values in the form the program reads them)."""
        v = self.values[onnx_name]
        a = v.const
        assert a is not None
        if shape is not None:
            a = a.reshape(shape)
        if transposed:
            a = a.T
        if a.dtype.kind not in "fbiu" and v.elem != BFLOAT16:
            raise Unsupported(f"the constant '{onnx_name}' is {elem_name(v.elem)}; the DSL "
                              "computes in float32 and bfloat16")
        f = a.astype(np.float32)
        if a.dtype.kind in "iub" and not np.array_equal(f.astype(a.dtype), a):
            raise Unsupported(f"the integer constant '{onnx_name}' is not exact in float32")
        if a.ndim == 0:
            return X.number(float(f))
        if a.ndim > MAX_DIMS:
            raise Unsupported(f"the constant '{onnx_name}' has {a.ndim} dimensions; a DSL "
                              f"param has 1 to {MAX_DIMS}")
        if a.size == 0:
            raise Unsupported(f"the constant '{onnx_name}' is empty")
        dtype = self.const_dtype(v, like)
        key = (onnx_name, dtype, a.shape, transposed)
        if key not in self.materialised:
            base = self.names[onnx_name]
            dsl = base if not any(k[0] == onnx_name for k in self.materialised) \
                else self.names.fresh(f"{base}_t" if transposed else base)
            self.declare_param(dsl, np.ascontiguousarray(f), dtype, onnx_name, transposed)
            self.materialised[key] = X.name(dsl)
        return self.materialised[key]

    def declare_param(self, dsl: str, values: np.ndarray, dtype: str, onnx_name: str,
                      transposed: bool = False) -> None:
        shape = ", ".join(str(d) for d in values.shape)
        note = f"  # ONNX '{printable(onnx_name)}'" if dsl != onnx_name else ""
        if transposed:
            note = (note or f"  # ONNX '{printable(onnx_name)}'") + ", transposed"
        self.decls.append(f"param {dsl}: {dtype}[{shape}]{note}")
        self.bound.add(dsl)
        self.params[dsl] = np.ascontiguousarray(values, dtype=np.float32)


class NodeCtx:
    """What a converter sees: the node, its attributes and inputs, and how to bind outputs."""

    def __init__(self, imp: Importer, node: Any, index: int) -> None:
        self.imp = imp
        self.node = node
        self.index = index
        self.version = 0
        self.op = node.op_type
        self.opset = imp.opset
        self._attrs = {a.name: a for a in node.attribute}

    # ---- attributes ---------------------------------------------------------------------------

    def attr(self, name: str, default: Any = None) -> Any:
        a = self._attrs.get(name)
        if a is None:
            return default
        from onnx import helper
        try:
            value = helper.get_attribute_value(a)
        except Exception as e:  # a malformed attribute
            raise BadModel(f"attribute '{name}' cannot be read: {e}") from None
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, list):
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        return value

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def ints(self, name: str, default: list[int] | None = None) -> list[int] | None:
        v = self.attr(name)
        if v is None:
            return default
        if isinstance(v, int):
            return [v]
        return [int(x) for x in v]

    # ---- inputs -------------------------------------------------------------------------------

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and bool(self.node.input[i])

    def n_inputs(self) -> int:
        return len(self.node.input)

    def input(self, i: int) -> Value:
        if not self.has_input(i):
            raise BadModel(f"input {i} is missing")
        return self.imp.values[self.node.input[i]]

    def const(self, i: int, what: str) -> np.ndarray | None:
        """Input `i` as a constant array (None if absent): an initializer, a Constant, or
        anything computed from them on the host."""
        if not self.has_input(i):
            return None
        v = self.input(i)
        if not v.is_const:
            raise Unsupported(f"its {what} (input {i}, '{self.node.input[i]}') must be a "
                              "constant: an initializer or computed from them")
        return v.const

    def x(self, i: int, like: str | None = None, shape: tuple[int, ...] | None = None,
          transposed: bool = False) -> E:
        """Input `i` as DSL data; a constant is written in dtype `like` (None: its own).

        With `shape` (same element count), the value is read reshaped: a constant becomes a
        param of that shape directly (a per-channel [C] vector as [C, 1, 1]), a computed
        value is reshaped by the program. `transposed` reads a 2-D value transposed: a
        constant as a param holding the transpose, a computed value through `transpose`."""
        v = self.input(i)
        if transposed:
            if v.is_const:
                return self.imp.data(self.node.input[i], like, transposed=True)
            assert v.expr is not None
            return X.call("transpose", v.expr)
        if shape is not None and tuple(shape) != v.shape:
            if int(np.prod(shape)) != int(np.prod(v.shape)):
                raise BadModel(f"input {i} has shape {list(v.shape)}, which cannot be read as "
                               f"{list(shape)}")
            if v.is_const:
                return self.imp.data(self.node.input[i], like, tuple(shape))
            assert v.expr is not None
            return reshape(v.expr, v.shape, tuple(shape))
        if v.is_const:
            return self.imp.data(self.node.input[i], like)
        assert v.expr is not None
        return v.expr

    def tensor_dtype(self, *idx: int) -> str:
        """The DSL dtype of the result of an elementwise op on inputs `idx`: f32 if any
        computed operand is f32, else bf16 (constants follow the computed operands)."""
        dts = [self.input(i).dtype for i in idx if self.has_input(i)
               and not self.input(i).is_const]
        if not dts:
            consts = [self.imp.const_dtype(self.input(i), None) for i in idx
                      if self.has_input(i)]
            return "f32" if "f32" in consts or not consts else "bf16"
        return "f32" if "f32" in dts else "bf16"

    # ---- outputs ------------------------------------------------------------------------------

    def wants(self, i: int) -> bool:
        """Whether output `i` exists and something reads it (a node or the graph's outputs)."""
        return i < len(self.node.output) and self.node.output[i] in self.imp.used

    def comment(self) -> str:
        name = self.node.name or f"#{self.index}"
        return f"  # {printable(name)} ({printable(self.op)})"

    def out(self, i: int, e: E, shape: tuple[int, ...], dtype: str,
            elem: int | None = None) -> None:
        """Bind output `i` to `e` with one statement."""
        if i >= len(self.node.output) or not self.node.output[i]:
            return
        if len(shape) > MAX_DIMS:
            raise Unsupported(f"its result has {len(shape)} dimensions; the DSL has 1 to "
                              f"{MAX_DIMS}")
        onnx_name = self.node.output[i]
        dsl = self.imp.names[onnx_name]
        self.emit(dsl, e)
        self.imp.values[onnx_name] = Value(tuple(shape), elem or ELEM_OF[dtype], dtype,
                                           X.name(dsl))

    def tmp(self, base: str, e: E) -> E:
        """A helper value of this node, bound to a fresh name."""
        dsl = self.imp.names.fresh(base)
        self.emit(dsl, e)
        return X.name(dsl)

    def emit(self, dsl: str, e: E) -> None:
        self.imp.features |= e.features
        self.imp.body.append(f"{dsl} = {e.text}{self.comment()}")
        self.imp.bound.add(dsl)

    def set_const(self, i: int, a: np.ndarray) -> None:
        if i < len(self.node.output) and self.node.output[i]:
            elem = _elem_of_array(a)
            self.imp.values[self.node.output[i]] = Value(tuple(int(d) for d in a.shape), elem,
                                                         const=a)

    def axis(self, k: int, rank: int, what: str = "axis") -> int:
        if not -rank <= k < rank:
            raise BadModel(f"{what} {k} is out of range for a {rank}-D input")
        return k % rank if rank else 0


class _ConstNames:
    """`name in _ConstNames(values)`: whether the value is a known constant."""

    def __init__(self, values: dict[str, Value]) -> None:
        self.values = values

    def __contains__(self, name: str) -> bool:
        v = self.values.get(name)
        return v is not None and v.is_const


def reshape(e: E, have: tuple[int, ...], want: tuple[int, ...]) -> E:
    """`e` (of shape `have`) as shape `want`: itself, `reshape(e, [...])`, or for a 0-d
    result `sum(e)` of its single element (exact: the DSL's reshape makes 1 to 4 dims)."""
    if tuple(have) == tuple(want):
        return e
    if len(want) == 0:
        return X.call("sum", e)
    return X.call("reshape", e, list(want))


def _elem_of_array(a: np.ndarray) -> int:
    if a.dtype == np.bool_:
        return BOOL
    if a.dtype.kind in "OSU":        # onnx's evaluator holds strings as objects or str
        return STRING
    kinds = {np.dtype(np.float32): FLOAT, np.dtype(np.float64): DOUBLE,
             np.dtype(np.float16): FLOAT16, np.dtype(np.int64): INT64,
             np.dtype(np.int32): INT32, np.dtype(np.int8): INT8, np.dtype(np.uint8): UINT8,
             np.dtype(np.int16): INT16, np.dtype(np.uint16): UINT16,
             np.dtype(np.uint32): UINT32, np.dtype(np.uint64): UINT64}
    if a.dtype in kinds:
        return kinds[a.dtype]
    if a.dtype.name == "bfloat16":
        return BFLOAT16
    return 0


def import_model(model: Any, filename: str = "<model>",
                 shapes: dict[str, tuple[int, ...]] | None = None) -> Imported:
    """Convert an onnx ModelProto (already read and checked) into an `Imported` program."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        raise D1Error(f"import_model takes an onnx.ModelProto (read_model(path) reads one), "
                      f"not {type(model).__name__}")
    if shapes is not None and (
            not isinstance(shapes, Mapping)
            or not all(isinstance(k, str) and isinstance(v, tuple | list)
                       and all(is_integer(d) for d in v) for k, v in shapes.items())):
        raise D1Error(f"shapes maps input names to tuples of integers, e.g. "
                      f"{{'input.1': (32, 784)}}; got {shapes!r}"[:300])
    return Importer(model, filename, shapes or {}).run()
