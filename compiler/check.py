"""Check a parsed program and lower it to the typed IR: names, dtypes, shapes, machine limits.

`check` walks the statements in order and builds a `Graph`. It never stops at the first mistake:
every diagnostic goes into a list, and the whole list is raised as one `SourceError` at the end.
A statement with an error binds its name to POISON, and any expression that reads a poisoned
value is silently poisoned too, so one mistake yields one message rather than a cascade.

A `param` is declared like an input and read like one; `update NAME = EXPR` records the value
the param holds after the run (`Graph.updates`). `grad(L, p)` becomes a `grad` node here; the
next pass, `compiler.grad.differentiate`, replaces it by the backward pass.

Number literals are not tensors. Arithmetic on literals alone is folded here in double
precision; a literal (or folded constant) that meets a tensor becomes a `const` splat of the
tensor's dtype. `c = 0.125` binds a named constant that behaves exactly like the literal.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace

import numpy as np

from compiler import ast
from compiler.ir import (
    DTYPES,
    MAX_INPUT_DIMS,
    Graph,
    GraphBuilder,
    Init,
    Node,
    Op,
    Update,
    Window,
    broadcast_shape,
    format_shape,
    format_type,
    matmul_shape,
    promote,
    round_scalar,
    verify,
)
from compiler.parse import source_line
from compiler.windows import tap_rows
from d1isa.errors import Diagnostic, SourceError
from d1isa.machine import Machine, default_machine
from d1isa.objfile import MAX_NAME_CHARS


class _Poison:
    """The value of anything that depends on an erroneous statement."""

    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()
Value = Node | float | _Poison


@dataclass(frozen=True)
class Builtin:
    """One builtin function: how it is called and which op it lowers to."""

    name: str
    kind: str      # "unary", "binary", "reduce", "softmax", "transpose", "cast", "grad",
                   # "where", "layernorm", "reshape", "concat", "conv" or "pool"
    op: Op
    usage: str


BUILTINS = {b.name: b for b in (
    Builtin("relu", "unary", Op.RELU, "relu(x)"),
    Builtin("exp", "unary", Op.EXP, "exp(x)"),
    Builtin("tanh", "unary", Op.TANH, "tanh(x)"),
    Builtin("sigmoid", "unary", Op.SIGMOID, "sigmoid(x)"),
    Builtin("sqrt", "unary", Op.SQRT, "sqrt(x)"),
    Builtin("abs", "unary", Op.ABS, "abs(x)"),
    Builtin("log", "unary", Op.LOG, "log(x)"),
    Builtin("erf", "unary", Op.ERF, "erf(x)"),
    Builtin("gelu", "unary", Op.GELU, "gelu(x)"),
    Builtin("pow", "binary", Op.POW, "pow(a, b)"),
    Builtin("where", "where", Op.WHERE, "where(c, a, b)"),
    Builtin("maximum", "binary", Op.MAXIMUM, "maximum(a, b)"),
    Builtin("minimum", "binary", Op.MINIMUM, "minimum(a, b)"),
    Builtin("sum", "reduce", Op.SUM, "sum(x) or sum(x, axis=K, keepdims=0|1)"),
    Builtin("max", "reduce", Op.MAX, "max(x) or max(x, axis=K, keepdims=0|1)"),
    Builtin("mean", "reduce", Op.MEAN, "mean(x) or mean(x, axis=K, keepdims=0|1)"),
    Builtin("min", "reduce", Op.MIN, "min(x) or min(x, axis=K, keepdims=0|1)"),
    Builtin("argmax", "reduce", Op.ARGMAX, "argmax(x) or argmax(x, axis=K, keepdims=0|1)"),
    Builtin("layernorm", "layernorm", Op.LAYERNORM, "layernorm(x, axis=-1, eps=1e-5)"),
    Builtin("softmax", "softmax", Op.SOFTMAX, "softmax(x, axis=K)"),
    Builtin("log_softmax", "softmax", Op.LOG_SOFTMAX, "log_softmax(x, axis=K)"),
    Builtin("transpose", "transpose", Op.TRANSPOSE, "transpose(x) or transpose(x, [P0, P1, ...])"),
    Builtin("reshape", "reshape", Op.RESHAPE, "reshape(x, [D0, D1, ...])"),
    Builtin("concat", "concat", Op.CONCAT, "concat(a, b, ..., axis=K)"),
    Builtin("cast", "cast", Op.CAST, "cast(x, bf16) or cast(x, f32)"),
    Builtin("grad", "grad", Op.GRAD, "grad(L, p) with L a 0-d value and p a param or input"),
    Builtin("conv2d", "conv", Op.CONV2D, "conv2d(x, w, stride=S, pad=P, dilation=D)"),
    Builtin("maxpool2d", "pool", Op.MAXPOOL2D,
            "maxpool2d(x, size=K, stride=S, pad=P, dilation=D, ceil=0|1)"),
    Builtin("avgpool2d", "pool", Op.AVGPOOL2D,
            "avgpool2d(x, size=K, stride=S, pad=P, dilation=D, ceil=0|1, count_pad=0|1)"),
)}
KEYWORDS = ("input", "output", "param", "update")
# The initial values a param declaration accepts besides a number literal.
INIT_FORMS = "a number literal, glorot or normal(STD)"
RESERVED = frozenset(BUILTINS) | frozenset(DTYPES) | frozenset(KEYWORDS)

BINOP_OPS = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "**": Op.POW,
             "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE, "==": Op.EQ, "!=": Op.NE}
# The elementwise builtin a reduction's name is mistaken for when given two tensors.
ELEMENTWISE_TWIN = {"max": "maximum", "min": "minimum"}
LAYERNORM_EPS = 1e-5
# The largest stride, dilation or padding of a window that matters (tame_window makes those
# that do not small): the window's positions are computed in int64 and its kernels' offsets
# in 32-bit immediates. A larger one along an axis with a tap and an output of two or more
# would also pad the input past any node's SRAM.
MAX_WINDOW_PARAM = 2**31 - 1


def _fold_unary(op: Op, v: float) -> float:
    x = np.float64(v)
    result = {
        Op.NEG: lambda: -x, Op.ABS: lambda: abs(x), Op.RELU: lambda: max(x, 0.0),
        Op.EXP: lambda: np.exp(x), Op.TANH: lambda: np.tanh(x), Op.SQRT: lambda: np.sqrt(x),
        Op.SIGMOID: lambda: 1.0 / (1.0 + np.exp(-x)), Op.LOG: lambda: np.log(x),
        Op.ERF: lambda: math.erf(x), Op.GELU: lambda: 0.5 * x * math.erfc(-x / math.sqrt(2.0)),
    }[op]
    with np.errstate(all="ignore"):
        return float(result())


def _fold_binary(op: Op, a: float, b: float) -> float:
    x, y = np.float64(a), np.float64(b)
    with np.errstate(all="ignore"):
        return float({
            Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.DIV: np.divide,
            Op.MAXIMUM: np.maximum, Op.MINIMUM: np.minimum, Op.POW: np.power,
            Op.LT: np.less, Op.LE: np.less_equal, Op.GT: np.greater, Op.GE: np.greater_equal,
            Op.EQ: np.equal, Op.NE: np.not_equal,
        }[op](x, y))


@dataclass
class Binding:
    value: Value
    line: int
    kind: str      # "input", "param", "value" or "const"


def check(program: ast.Program, machine: Machine | None, filename: str, text: str) -> Graph:
    """Check `program` against `machine` (None: the default machine) and return its IR graph;
    raise one SourceError listing every problem found."""
    return _Checker(machine or default_machine(), filename, text).run(program)


class _Checker:
    def __init__(self, machine: Machine, filename: str, text: str) -> None:
        self.machine = machine
        self.filename = filename
        self.text = text
        self.diagnostics: list[Diagnostic] = []
        self.env: dict[str, Binding] = {}
        self.builder = GraphBuilder()
        self.first_binding: dict[str, int] = {}
        self.updates: list[Update] = []
        self.constants: list[tuple[str, float, int, int]] = []
        self.updated: dict[str, int] = {}
        self.line = 0
        # Nodes a statement created that stand for something the user wrote (not the implicit
        # broadcasts, widening casts and splats), with the span to blame if one is too large.
        self.sized: list[tuple[Node, ast.Span]] = []

    # ---- driver -------------------------------------------------------------------------------

    def run(self, program: ast.Program) -> Graph:
        for s in program.statements:
            if isinstance(s, ast.Input | ast.Param | ast.Assign):
                self.first_binding.setdefault(_bound_name(s).id, s.line)
        outputs: list[ast.Name] = []
        has_updates = False
        for s in program.statements:
            self.line = s.line
            if isinstance(s, ast.Output):
                outputs.extend(s.names)
                continue
            try:
                if isinstance(s, ast.Input | ast.Param):
                    self.declare(s)
                elif isinstance(s, ast.Update):
                    has_updates = True
                    self.update(s)
                else:
                    self.bind(s)
            except RecursionError:
                self.error(s, "expression is nested too deeply to compile")
                if not isinstance(s, ast.Update):
                    self.env.setdefault(_bound_name(s).id, Binding(POISON, s.line, "value"))
        result = self.resolve_outputs(outputs)
        if self.diagnostics or not (outputs or has_updates):
            ordered = sorted(self.diagnostics, key=lambda d: (d.line, d.col))
            if not (outputs or has_updates):
                ordered.append(self._missing_outputs())
            raise SourceError(ordered)
        graph = replace(self.builder.finish(result, self.filename, self.updates),
                        constants=tuple(self.constants))
        verify(graph)
        return graph

    def _missing_outputs(self) -> Diagnostic:
        """A program that computes nothing anyone sees, reported just past its last line, where
        an `output` (or an `update`) would go."""
        lines = self.text.splitlines() or [""]
        line = max((i for i, t in enumerate(lines, 1) if t.strip()), default=1)
        col = len(lines[line - 1].rstrip()) + 1
        return Diagnostic(self.filename, line, col, "the program has no outputs; mark results "
                          "with 'output NAME' (a training program may instead update a param: "
                          "'update NAME = EXPR')", source_line(self.text, line))

    def error(self, where: ast.Span, message: str, col: int | None = None,
              width: int | None = None) -> None:
        """Record a diagnostic at `where` (or at `col` on its line)."""
        if col is None:
            col, width = where.col, width or where.width
        self.diagnostics.append(Diagnostic(
            self.filename, where.line, col, message, source_line(self.text, where.line),
            width=width or 1))

    # ---- statements ---------------------------------------------------------------------------

    def declare(self, s: ast.Input | ast.Param) -> None:
        """`input NAME: DTYPE[...]` or `param NAME: DTYPE[...] [= INIT]`."""
        name = s.name.id
        kind = "input" if isinstance(s, ast.Input) else "param"
        ok = self.check_new_name(s.name, kind)
        if s.dtype.id not in DTYPES:
            self.error(s.dtype, f"unknown dtype '{s.dtype.id}'; the dtypes are f32 and bf16")
            ok = False
        if not 1 <= len(s.dims) <= MAX_INPUT_DIMS:
            article = "an" if kind == "input" else "a"
            self.error(s.dtype, f"{article} {kind} has 1 to {MAX_INPUT_DIMS} dimensions, "
                                f"got {len(s.dims)}")
            ok = False
        for d in s.dims:
            if not d.text.isdigit() or int(d.text) < 1:
                self.error(d, f"a dimension must be a positive integer, got '{d.text}'")
                ok = False
        init = None
        if isinstance(s, ast.Param):
            init = self.param_init(s, ok)
            ok = ok and init is not None
        if name in self.env:
            return
        if not ok:
            self.env[name] = Binding(POISON, s.line, kind)
            return
        node = self.builder.add(Op.INPUT if kind == "input" else Op.PARAM,
                                shape=tuple(int(d.text) for d in s.dims), dtype=s.dtype.id,
                                init=init, name=name, line=s.name.line, col=s.name.col)
        self.env[name] = Binding(node, s.line, kind)
        self.check_size(node, s.name)

    def param_init(self, s: ast.Param, shape_ok: bool) -> Init | None:
        """The `Init` of a param declaration (its default if it has none), or None after an
        error. A dtype or shape error leaves the init unchecked where it depends on them."""
        e, ndim = s.init, len(s.dims)
        if e is None:
            return Init("glorot") if ndim >= 2 else Init("const", 0.0)
        if isinstance(e, ast.Number):
            if not math.isfinite(e.value):
                self.error(e, f"number '{e.text}' is too large")
                return None
            dtype = s.dtype.id if s.dtype.id in DTYPES else "f32"
            return Init("const", round_scalar(e.value, dtype))
        if isinstance(e, ast.Name) and e.id == "glorot":
            if ndim < 2 and shape_ok:
                self.error(e, f"glorot scales by the last two axes, so it needs a param with "
                              f"2 or more dimensions, got {ndim}; use a number or normal(STD)")
                return None
            return Init("glorot")
        if isinstance(e, ast.Call) and e.func == "normal":
            if e.keywords or len(e.args) != 1:
                self.error(e, "normal takes one argument, the standard deviation: normal(STD)")
                return None
            std = e.args[0]
            if isinstance(std, ast.Number) and math.isinf(std.value):
                self.error(std, f"number '{std.text}' is too large")
                return None
            if not (isinstance(std, ast.Number) and math.isfinite(std.value)
                    and std.value >= 0):
                self.error(std, "the standard deviation of normal(STD) must be a non-negative "
                                "number literal")
                return None
            return Init("normal", std.value)
        self.error(e, f"a param's initial value is {INIT_FORMS}")
        return None

    def update(self, s: ast.Update) -> None:
        """`update NAME = EXPR`: NAME must be a param declared above, updated once; EXPR must
        have its shape and dtype, or be f32 for a bf16 param (then it is rounded)."""
        name = s.target.id
        b = self.env.get(name)
        param: Node | None = None
        if b is not None and b.kind == "param":
            if name in self.updated:
                self.error(s.target, f"param '{name}' is already updated on line "
                                     f"{self.updated[name]}; each param is updated at most once")
            elif isinstance(b.value, Node):
                param = b.value
            self.updated.setdefault(name, s.line)
        elif b is not None and b.kind == "input":
            self.error(s.target, f"cannot update input '{name}': only a param keeps a value "
                                 f"from one run to the next; declare it with 'param'")
        elif b is not None:
            self.error(s.target, f"cannot update '{name}' (defined on line {b.line}): only a "
                                 f"param can be updated")
        elif name in RESERVED:
            self.error(s.target, f"'{name}' is {self.reserved_kind(name)}, not a param")
        elif self.first_binding.get(name, 0) > self.line:
            self.error(s.target, f"'{name}' is updated before its declaration on line "
                                 f"{self.first_binding[name]}")
        else:
            params = [k for k, v in self.env.items() if v.kind == "param"]
            self.error(s.target, f"cannot update unknown name '{name}'; only a param can be "
                                 f"updated{self.suggest(name, params)}")
        n_errors = len(self.diagnostics)
        self.sized = []
        value = self.lower(s.value)
        for node, span in self.sized:
            self.check_size(self.builder.nodes[node.id], span)
        if param is None or value is POISON or len(self.diagnostics) > n_errors:
            return
        if isinstance(value, float):
            # A literal takes the param's dtype and shape, as it would meeting it in `+`; the
            # copy makes it a computed value like any other update.
            value = self.builder.add(Op.CAST, (self.conform(value, param.shape, param.dtype,
                                                            s.line, s.value.col),),
                                     shape=param.shape, dtype=param.dtype, line=s.line,
                                     col=s.value.col)
        want = format_type(param.shape, param.dtype)
        if value.shape != param.shape:
            self.error(s.value, f"cannot update '{name}' ({want}) with a value of shape "
                                f"{format_shape(value.shape)}: the shapes must match")
            return
        if value.dtype != param.dtype:
            if param.dtype == "f32":
                self.error(s.value, f"cannot update '{name}' ({want}) with a bf16 value: the "
                                    f"dtypes must match; widen it with cast(..., f32)")
                return
            value = self.builder.add(Op.CAST, (value,), shape=value.shape, dtype="bf16",
                                     line=s.line, col=s.value.col)
        self.updates.append(Update(param, value, s.line, s.col))

    def bind(self, s: ast.Assign) -> None:
        name = s.target.id
        is_new = self.check_new_name(s.target, "value")
        first_id = len(self.builder.nodes)
        n_errors = len(self.diagnostics)
        self.sized = []
        value = self.lower(s.value)
        if len(self.diagnostics) > n_errors:
            value = POISON
        if not is_new:
            self.env.setdefault(name, Binding(POISON, s.line, "value"))
            return
        if isinstance(value, Node):
            if self.builder.nodes[-1] is value and value.id >= first_id:
                value = self.builder.rename(value, name)
            else:
                # `y = x`: every DSL name names its own node, so copy with a same-dtype cast.
                value = self.builder.add(Op.CAST, (value,), shape=value.shape, dtype=value.dtype,
                                         name=name, line=s.target.line, col=s.target.col)
                self.sized.append((value, s.value))
            self.env[name] = Binding(value, s.line, "value")
        elif isinstance(value, float):
            self.env[name] = Binding(value, s.line, "const")
            self.constants.append((name, value, s.target.line, s.target.col))
        else:
            self.env[name] = Binding(POISON, s.line, "value")
        for node, span in self.sized:
            self.check_size(self.builder.nodes[node.id], span)

    def check_new_name(self, target: ast.Name, kind: str) -> bool:
        """Report a name that may not be bound here as `kind` ("input", "param" or "value");
        True if binding it is fine."""
        name = target.id
        if name in BUILTINS:
            self.error(target, f"'{name}' is a builtin function and cannot be used as a name")
        elif name in DTYPES:
            self.error(target, f"'{name}' is a dtype and cannot be used as a name")
        elif name in KEYWORDS:
            self.error(target, f"'{name}' is a keyword and cannot be used as a name")
        elif len(name) > MAX_NAME_CHARS:
            # The object names its tensors, and the debugger every named value, by the name.
            self.error(target, f"a name has at most {MAX_NAME_CHARS} characters, this one has "
                               f"{len(name)}")
        elif name in self.env:
            old = self.env[name]
            declared = ("input", "param")
            if old.kind in declared and kind in declared:
                self.error(target, f"{old.kind} '{name}' is already declared on line {old.line}")
            elif old.kind == "input":
                self.error(target, f"cannot assign to input '{name}' "
                                   f"(declared on line {old.line}); choose a new name")
            elif old.kind == "param":
                self.error(target, f"cannot assign to param '{name}' (declared on line "
                                   f"{old.line}); to set its value for the next run write "
                                   f"'update {name} = ...'")
            else:
                self.error(target, f"'{name}' is already defined on line {old.line}; "
                                   f"each name is bound once")
        else:
            return True
        return False

    def resolve_outputs(self, names: list[ast.Name]) -> list[Node]:
        result: list[Node] = []
        first: dict[str, int] = {}
        for n in names:
            b = self.env.get(n.id)
            if n.id in first:
                self.error(n, f"'{n.id}' is already an output (line {first[n.id]})")
                continue
            first[n.id] = n.line
            if n.id in RESERVED and b is None:
                self.error(n, f"'{n.id}' is {self.reserved_kind(n.id)}, not a value")
            elif b is None:
                self.error(n, f"output '{n.id}' is never defined{self.suggest(n.id)}")
            elif b.value is POISON:
                continue
            elif isinstance(b.value, float):
                self.error(n, f"'{n.id}' is a constant ({b.value:g}), not a tensor; "
                              f"only tensors can be outputs")
            else:
                result.append(b.value)
        return result

    # ---- machine limits -----------------------------------------------------------------------

    def check_size(self, node: Node, span: ast.Span) -> None:
        m = self.machine
        if node.nbytes <= m.total_sram_bytes:
            return
        if node.name.startswith("%"):
            src = (source_line(self.text, span.line) or "")[span.col - 1:span.end_col - 1]
            if len(src) > 40:
                src = src[:37] + "..."
            what = f"the value of '{src}' ({format_type(node.shape, node.dtype)})"
        else:
            what = f"tensor '{node.name}'"
        self.error(span, f"{what} needs {decimal_size(node.nbytes)} but the machine has "
                         f"{decimal_size(m.total_sram_bytes)} of SRAM in total "
                         f"({m.n_live} nodes x {binary_size(m.sram_bytes)})")

    # ---- expressions --------------------------------------------------------------------------

    def lower(self, e: ast.Expr) -> Value:
        """The value of an expression: a Node, a float constant, or POISON after an error."""
        if isinstance(e, ast.Number):
            if not math.isfinite(e.value):
                self.error(e, f"number '{e.text}' is too large")
                return POISON
            return e.value
        if isinstance(e, ast.Name):
            return self.lookup(e)
        if isinstance(e, ast.Neg):
            x = self.lower(e.operand)
            if isinstance(x, Node):
                return self.emit(Op.NEG, (x,), e, e.col)
            return x if x is POISON else _fold_unary(Op.NEG, x)
        if isinstance(e, ast.BinOp):
            a, b = self.lower(e.left), self.lower(e.right)
            if a is POISON or b is POISON:
                return POISON
            if e.op == "@":
                return self.matmul(a, b, e)
            return self.elementwise(BINOP_OPS[e.op], f"'{e.op}'", a, b, e, e.op_col)
        if isinstance(e, ast.ListExpr):
            self.error(e, "a list is not a value; lists are arguments: reshape(x, [D0, ...]), "
                          "transpose(x, [P0, ...]), and the window of conv2d and the pools "
                          "(stride=[h, w], ...)")
            return POISON
        if isinstance(e, ast.Index):
            return self.index(e)
        return self.call(e)

    def lookup(self, e: ast.Name) -> Value:
        b = self.env.get(e.id)
        if b is not None:
            return b.value
        if e.id in BUILTINS:
            self.error(e, f"'{e.id}' is a builtin function, not a value; call it: "
                          f"{BUILTINS[e.id].usage}")
        elif e.id in DTYPES:
            self.error(e, f"'{e.id}' is a dtype, not a value; dtypes appear only in input "
                          f"declarations and in cast(x, {e.id})")
        elif e.id in KEYWORDS:
            self.error(e, f"'{e.id}' is a keyword, not a value")
        elif self.first_binding.get(e.id) == self.line:
            self.error(e, f"'{e.id}' is used in its own definition")
        elif self.first_binding.get(e.id, 0) > self.line:
            self.error(e, f"'{e.id}' is used before its definition on line "
                          f"{self.first_binding[e.id]}")
        else:
            self.error(e, f"unknown name '{e.id}'{self.suggest(e.id)}")
        return POISON

    def reserved_kind(self, name: str) -> str:
        if name in BUILTINS:
            return "a builtin function"
        return "a dtype" if name in DTYPES else "a keyword"

    def suggest(self, name: str, candidates: list[str] | None = None) -> str:
        if candidates is None:
            candidates = [k for k, b in self.env.items() if b.value is not POISON]
        close = difflib.get_close_matches(name, candidates, n=1)
        return f"; did you mean '{close[0]}'?" if close else ""

    def emit(self, op: Op, inputs: tuple[Node, ...], span: ast.Span, col: int,
             axis: int | None = None) -> Node:
        """A node for something the user wrote (so it is size-checked)."""
        node = self.builder.add(op, inputs, axis=axis, line=span.line, col=col)
        self.sized.append((node, span))
        return node

    def elementwise(self, op: Op, what: str, a: Value, b: Value, e: ast.Span, col: int) -> Value:
        """A binary elementwise op with numpy broadcasting, dtype promotion and literals."""
        if isinstance(a, float) and isinstance(b, float):
            return _fold_binary(op, a, b)
        if isinstance(a, float) or isinstance(b, float):
            t = b if isinstance(a, float) else a
            shape, dtype = t.shape, t.dtype
        else:
            shape = broadcast_shape(a.shape, b.shape)
            if shape is None:
                self.error(e, f"cannot broadcast shapes {format_shape(a.shape)} and "
                              f"{format_shape(b.shape)} for {what}"
                              f"{_broadcast_detail(a.shape, b.shape)}", col=col)
                return POISON
            dtype = promote(a.dtype, b.dtype)
        x = self.conform(a, shape, dtype, e.line, col)
        y = self.conform(b, shape, dtype, e.line, col)
        return self.emit(op, (x, y), e, col)

    def conform(self, v: Node | float, shape: tuple[int, ...], dtype: str, line: int,
                col: int) -> Node:
        """`v` as an operand of the given shape and dtype: splat, widen and broadcast it."""
        if isinstance(v, float):
            return self.builder.add(Op.CONST, shape=shape, dtype=dtype,
                                    value=round_scalar(v, dtype), line=line, col=col)
        if v.dtype != dtype:
            v = self.builder.add(Op.CAST, (v,), shape=v.shape, dtype=dtype, line=line, col=col)
        if v.shape != shape:
            v = self.builder.add(Op.BROADCAST, (v,), shape=shape, dtype=dtype, line=line,
                                 col=col)
        return v

    def matmul(self, a: Value, b: Value, e: ast.BinOp) -> Value:
        if not isinstance(a, Node) or not isinstance(b, Node):
            self.error(e, "'@' needs a tensor on both sides; to scale by a number use '*'",
                       col=e.op_col)
            return POISON
        if not (2 <= a.ndim <= MAX_INPUT_DIMS and 2 <= b.ndim <= MAX_INPUT_DIMS):
            self.error(e, f"matmul needs operands of 2 to {MAX_INPUT_DIMS} dimensions: "
                          f"{format_shape(a.shape)} @ {format_shape(b.shape)}", col=e.op_col)
            return POISON
        if a.shape[-1] != b.shape[-2]:
            self.error(e, f"matmul dimension mismatch: {format_shape(a.shape)} @ "
                          f"{format_shape(b.shape)}: {a.shape[-1]} != {b.shape[-2]}",
                       col=e.op_col)
            return POISON
        if matmul_shape(a.shape, b.shape) is None:
            self.error(e, f"cannot broadcast the batch dimensions {format_shape(a.shape[:-2])} "
                          f"and {format_shape(b.shape[:-2])} of {format_shape(a.shape)} @ "
                          f"{format_shape(b.shape)}"
                          f"{_broadcast_detail(a.shape[:-2], b.shape[:-2])}", col=e.op_col)
            return POISON
        dtype = promote(a.dtype, b.dtype)
        x = self.conform(a, a.shape, dtype, e.line, e.op_col)
        y = self.conform(b, b.shape, dtype, e.line, e.op_col)
        return self.emit(Op.MATMUL, (x, y), e, e.op_col)

    # ---- calls --------------------------------------------------------------------------------

    def call(self, e: ast.Call) -> Value:
        fn = BUILTINS.get(e.func)
        name_span = ast.Name(id=e.func, line=e.line, col=e.col, end_col=e.col + len(e.func))
        if fn is None:
            if e.func in self.env:
                self.error(name_span, f"'{e.func}' is a value, not a function")
            elif e.func in DTYPES:
                self.error(name_span, f"'{e.func}' is a dtype, not a function; "
                                      f"write cast(x, {e.func})")
            else:
                self.error(name_span, f"unknown function '{e.func}'"
                                      f"{self.suggest(e.func, list(BUILTINS))}")
            return POISON
        if not self.check_argument_order(e):
            return POISON
        if fn.kind in ("reduce", "softmax"):
            return self.call_with_axis(fn, e, name_span)
        if fn.kind == "where":
            return self.call_where(fn, e, name_span)
        if fn.kind == "layernorm":
            return self.call_layernorm(fn, e, name_span)
        if fn.kind == "reshape":
            return self.call_reshape(fn, e, name_span)
        if fn.kind == "concat":
            return self.call_concat(fn, e, name_span)
        if fn.kind in ("conv", "pool"):
            return self.call_window(fn, e, name_span)
        if fn.kind == "transpose" and len(e.args) == 2 and not e.keywords:
            return self.call_permute(fn, e)
        args, keywords = e.args, e.keywords
        n_params = {"unary": 1, "transpose": 1, "binary": 2, "cast": 2, "grad": 2}[fn.kind]
        ok = True
        for k in keywords:
            self.error(k, f"{fn.name} has no keyword '{k.name}'; usage: {fn.usage}")
            ok = False
        if ok and len(args) != n_params:
            s = "" if n_params == 1 else "s"
            self.error(name_span, f"{fn.name} takes {n_params} argument{s}, got {len(args)}; "
                                  f"usage: {fn.usage}")
            ok = False
        if fn.kind == "cast" and len(args) == 2 and not (
                isinstance(args[1], ast.Name) and args[1].id in DTYPES):
            self.error(args[1], "the second argument of cast must be a dtype, f32 or bf16")
            ok = False
        if fn.kind == "grad":
            return self.grad(e, args) if ok else POISON
        operands = [self.lower(a) for a in (args[:1] if fn.kind == "cast" else args)]
        if not ok or any(v is POISON for v in operands):
            return POISON
        if fn.kind == "unary":
            (x,) = operands
            if isinstance(x, float):
                return _fold_unary(fn.op, x)
            return self.emit(fn.op, (x,), e, e.col)
        if fn.kind == "binary":
            return self.elementwise(fn.op, fn.name, operands[0], operands[1], e, e.col)
        if fn.kind == "cast":
            (x,) = operands
            dtype = args[1].id
            if isinstance(x, float):
                return round_scalar(x, dtype)
            if x.dtype == dtype:
                return x
            node = self.builder.add(Op.CAST, (x,), shape=x.shape, dtype=dtype, line=e.line,
                                    col=e.col)
            self.sized.append((node, e))
            return node
        (x,) = operands
        if not isinstance(x, Node) or x.ndim != 2:
            got = "a number" if isinstance(x, float) else format_shape(x.shape)
            hint = "" if isinstance(x, float) else "; for other ranks give the axes: " \
                                                   "transpose(x, [P0, P1, ...])"
            self.error(args[0], f"transpose needs a 2-D tensor, got {got}{hint}")
            return POISON
        return self.emit(Op.TRANSPOSE, (x,), e, e.col)

    def grad(self, e: ast.Call, args: tuple[ast.Expr, ...]) -> Value:
        """`grad(L, p)`: a grad node, expanded into the backward pass by compiler.grad."""
        loss_expr, p_expr = args
        loss = self.lower(loss_expr)
        p: Value = POISON
        if not isinstance(p_expr, ast.Name):
            self.error(p_expr, "grad is taken with respect to a param or an input, by name: "
                               "grad(L, w)")
        else:
            b = self.env.get(p_expr.id)
            if b is None:
                self.lookup(p_expr)
            elif b.kind in ("param", "input"):
                p = b.value
            elif b.value is not POISON:
                self.error(p_expr, f"grad is taken with respect to a param or an input, and "
                                   f"'{p_expr.id}' (line {b.line}) is neither")
        if isinstance(loss, float):
            self.error(loss_expr, "grad needs a 0-d tensor to differentiate, got a number")
            return POISON
        if isinstance(loss, Node) and loss.ndim != 0:
            self.error(loss_expr, f"grad needs a 0-d value to differentiate, got "
                                  f"{format_type(loss.shape, loss.dtype)}; reduce it first, "
                                  f"e.g. with sum(...) or mean(...)")
            return POISON
        if loss is POISON or p is POISON:
            return POISON
        return self.emit(Op.GRAD, (loss, p), e, e.col)

    def check_argument_order(self, e: ast.Call) -> bool:
        ok = True
        seen_keyword = False
        names: set[str] = set()
        for item in e.items:
            if isinstance(item, ast.Keyword):
                seen_keyword = True
                if item.name in names:
                    self.error(item, f"keyword '{item.name}' is given twice")
                    ok = False
                names.add(item.name)
            elif seen_keyword:
                self.error(item, "a positional argument cannot follow a keyword argument")
                ok = False
        return ok

    def call_with_axis(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """sum, max, mean: one tensor, an optional axis (`f(x, axis=K)` or `f(x, K)`; none
        reduces every axis) and `keepdims=0|1`. softmax and log_softmax: a tensor and an axis."""
        args = list(e.args)
        reduce = fn.kind == "reduce"
        axis_expr: ast.Expr | None = None
        keepdims = False
        ok = True
        for k in e.keywords:
            if k.name == "axis":
                axis_expr = k.value
            elif k.name == "keepdims" and reduce:
                v = k.value
                if not (isinstance(v, ast.Number) and v.text in ("0", "1")):
                    text = (source_line(self.text, v.line) or "")[v.col - 1:v.end_col - 1]
                    self.error(v, f"keepdims must be 0 or 1, got '{text}'")
                    ok = False
                else:
                    keepdims = v.text == "1"
            else:
                self.error(k, f"unknown keyword '{k.name}' for {fn.name}; usage: {fn.usage}")
                return POISON
        if (fn.name in ELEMENTWISE_TWIN and len(args) == 2
                and not isinstance(args[1], ast.Number)):
            twin = ELEMENTWISE_TWIN[fn.name]
            self.error(name_span, f"{fn.name}(x, axis=K) reduces one tensor along an axis; for "
                                  f"the elementwise {twin} of two values use {twin}(a, b)")
            return POISON
        if len(args) == 2:
            if axis_expr is not None:
                self.error(args[1], f"the axis of {fn.name} is given twice")
                ok = False
            axis_expr = args.pop()
        if len(args) != 1:
            what = "one tensor and an optional axis" if reduce else "one tensor and an axis"
            self.error(name_span, f"{fn.name} takes {what}, got {len(e.args)} positional "
                                  f"arguments; usage: {fn.usage}")
            return POISON
        if axis_expr is None and not reduce:
            self.error(name_span, f"{fn.name} needs an axis; usage: {fn.usage}")
            ok = False
        elif axis_expr is not None and not (
                isinstance(axis_expr, ast.Number) and axis_expr.value.is_integer()
                and axis_expr.text.lstrip("-").isdigit()):
            self.error(axis_expr, "the axis must be an integer literal such as 0 or -1")
            ok = False
        x = self.lower(args[0])
        if not ok or x is POISON:
            return POISON
        if isinstance(x, float):
            self.error(args[0], f"{fn.name} needs a tensor, got a number")
            return POISON
        if x.ndim == 0:
            self.error(args[0], f"{fn.name} needs a tensor with at least one dimension, "
                                f"got a 0-d value")
            return POISON
        if axis_expr is None:
            # Every axis: a reduction of the row-major flattening, one f32 accumulation and
            # one rounding, as numpy's axis=None.
            flat = x if x.ndim == 1 else self.reshape(x, (x.size,), e)
            out = self.emit(fn.op, (flat,), e, e.col, axis=0)
            return self.reshape(out, (1,) * x.ndim, e) if keepdims else out
        assert isinstance(axis_expr, ast.Number)
        k = int(axis_expr.text)
        if not -x.ndim <= k < x.ndim:
            self.error(axis_expr, f"axis {k} is out of range for {fn.name} of a {x.ndim}-D "
                                  f"tensor {format_shape(x.shape)}; valid axes are "
                                  f"{-x.ndim} to {x.ndim - 1}")
            return POISON
        k %= x.ndim
        out = self.emit(fn.op, (x,), e, e.col, axis=k)
        if keepdims:
            return self.reshape(out, x.shape[:k] + (1,) + x.shape[k + 1:], e)
        return out

    def call_where(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """`where(c, a, b)`: a where c != 0, else b, broadcasting all three. The result has the
        dtype rule of a and b (two literals take c's dtype); c keeps its own dtype, so no
        rounding can turn a nonzero condition into 0."""
        ok = True
        for k in e.keywords:
            self.error(k, f"where has no keyword '{k.name}'; usage: {fn.usage}")
            ok = False
        if ok and len(e.args) != 3:
            self.error(name_span, f"where takes 3 arguments, got {len(e.args)}; "
                                  f"usage: {fn.usage}")
            ok = False
        if not ok:
            return POISON
        c, a, b = (self.lower(x) for x in e.args)
        if POISON in (c, a, b):
            return POISON
        tensors = [v for v in (a, b) if isinstance(v, Node)]
        if isinstance(c, float):
            if not tensors:
                return a if c != 0 else b
            shape, dtype = self.where_type(tensors, None, e)
            if shape is None:
                return POISON
            picked = self.conform(a if c != 0 else b, shape, dtype, e.line, e.col)
            # A value of its own, as `y = x` gets: the pick may be a splat or a broadcast.
            node = self.builder.add(Op.CAST, (picked,), shape=shape, dtype=dtype, line=e.line,
                                    col=e.col)
            self.sized.append((node, e))
            return node
        shape, dtype = self.where_type(tensors, c, e)
        if shape is None:
            return POISON
        cond = self.conform(c, shape, c.dtype, e.line, e.col)
        x = self.conform(a, shape, dtype, e.line, e.col)
        y = self.conform(b, shape, dtype, e.line, e.col)
        return self.emit(Op.WHERE, (cond, x, y), e, e.col)

    def where_type(self, tensors: list[Node], cond: Node | None, e: ast.Call
                   ) -> tuple[tuple[int, ...] | None, str]:
        """Shape and dtype of a where over these value operands (and condition): the broadcast
        of all of them, and the values' promoted dtype (the condition's if both are literals).
        Reports a broadcast error and returns (None, "")."""
        operands = tensors + ([cond] if cond is not None else [])
        shape: tuple[int, ...] | None = operands[0].shape
        for v in operands[1:]:
            wider = broadcast_shape(shape, v.shape)
            if wider is None:
                self.error(e, f"cannot broadcast shapes {format_shape(shape)} and "
                              f"{format_shape(v.shape)} for where"
                              f"{_broadcast_detail(shape, v.shape)}")
                return None, ""
            shape = wider
        if not tensors:
            return shape, cond.dtype
        dtype = tensors[0].dtype if len(tensors) == 1 else promote(tensors[0].dtype,
                                                                   tensors[1].dtype)
        return shape, dtype

    def call_layernorm(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """`layernorm(x, axis=-1, eps=1e-5)`: normalise along one axis (also given
        positionally, `layernorm(x, 1)`); eps is a non-negative number literal."""
        args = list(e.args)
        axis_expr: ast.Expr | None = None
        eps = LAYERNORM_EPS
        ok = True
        for k in e.keywords:
            if k.name == "axis":
                axis_expr = k.value
            elif k.name == "eps":
                v = k.value
                if not (isinstance(v, ast.Number) and math.isfinite(v.value) and v.value >= 0):
                    self.error(v, "eps must be a non-negative number literal such as 1e-5")
                    ok = False
                else:
                    eps = v.value
            else:
                self.error(k, f"unknown keyword '{k.name}' for layernorm; usage: {fn.usage}")
                return POISON
        if len(args) == 2:
            if axis_expr is not None:
                self.error(args[1], "the axis of layernorm is given twice")
                ok = False
            axis_expr = args.pop()
        if len(args) != 1:
            self.error(name_span, f"layernorm takes one tensor and an optional axis, got "
                                  f"{len(e.args)} positional arguments; usage: {fn.usage}")
            return POISON
        if axis_expr is not None and not _is_integer_literal(axis_expr):
            self.error(axis_expr, "the axis must be an integer literal such as 0 or -1")
            ok = False
        x = self.lower(args[0])
        if not ok or x is POISON:
            return POISON
        if isinstance(x, float) or x.ndim == 0:
            got = "a number" if isinstance(x, float) else "a 0-d value"
            self.error(args[0], f"layernorm needs a tensor with at least one dimension, "
                                f"got {got}")
            return POISON
        k = -1 if axis_expr is None else int(axis_expr.text)
        if not -x.ndim <= k < x.ndim:
            self.error(axis_expr, f"axis {k} is out of range for layernorm of a {x.ndim}-D "
                                  f"tensor {format_shape(x.shape)}; valid axes are "
                                  f"{-x.ndim} to {x.ndim - 1}")
            return POISON
        node = self.builder.add(Op.LAYERNORM, (x,), axis=k % x.ndim, value=eps, line=e.line,
                                col=e.col)
        self.sized.append((node, e))
        return node

    # ---- shapes: reshape, transpose with axes, concat, indexing -------------------------------

    def tensor_operand(self, what: str, arg: ast.Expr, x: Value) -> Node | None:
        """x if it is a tensor with at least one dimension; else report it (at `arg`)."""
        if x is POISON:
            return None
        if isinstance(x, float):
            self.error(arg, f"{what} needs a tensor, got a number")
            return None
        if x.ndim == 0:
            self.error(arg, f"{what} needs a tensor with at least one dimension, got a 0-d "
                            f"value")
            return None
        return x

    def int_list(self, fn: Builtin, arg: ast.Expr, what: str) -> list[int] | None:
        """The integer literals of a list argument, or None after reporting what is wrong."""
        if not isinstance(arg, ast.ListExpr):
            self.error(arg, f"the {what} of {fn.name} is a list of integer literals; usage: "
                            f"{fn.usage}")
            return None
        out = []
        for item in arg.items:
            k = _int_literal(item)
            if k is None:
                self.error(item, f"each entry of the {what} of {fn.name} must be an integer "
                                 f"literal")
                return None
            out.append(k)
        return out

    def call_reshape(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """`reshape(x, [D0, ...])`: the elements in row-major order in 1 to 4 dimensions; one
        entry may be -1 (the rest of the elements)."""
        for k in e.keywords:
            self.error(k, f"reshape has no keyword '{k.name}'; usage: {fn.usage}")
            return POISON
        if len(e.args) != 2:
            self.error(name_span, f"reshape takes 2 arguments, got {len(e.args)}; usage: "
                                  f"{fn.usage}")
            return POISON
        arg, shape_arg = e.args
        dims = self.int_list(fn, shape_arg, "shape")
        x = self.lower(arg)
        if dims is None or x is POISON:
            return POISON
        if isinstance(x, float):
            self.error(arg, "reshape needs a tensor, got a number")
            return POISON
        if not 1 <= len(dims) <= MAX_INPUT_DIMS:
            self.error(shape_arg, f"reshape gives 1 to {MAX_INPUT_DIMS} dimensions, got "
                                  f"{len(dims)}")
            return POISON
        free = None
        for item, d in zip(shape_arg.items, dims, strict=True):
            if d == -1 and free is None:
                free = item
            elif d == -1:
                self.error(item, "only one dimension of reshape may be -1")
                return POISON
            elif d < 1:
                self.error(item, f"a dimension of reshape must be a positive integer or -1, "
                                 f"got {d}")
                return POISON
        known = math.prod(d for d in dims if d != -1)
        size = x.size
        want = format_shape(dims)
        if free is not None:
            if size % known:
                self.error(shape_arg, f"cannot reshape {format_shape(x.shape)} ({size} "
                                      f"elements) into {want}: {size} is not a multiple of "
                                      f"{known}")
                return POISON
            dims = [size // known if d == -1 else d for d in dims]
        elif known != size:
            self.error(shape_arg, f"cannot reshape {format_shape(x.shape)} ({size} elements) "
                                  f"into {want} ({known} elements)")
            return POISON
        return self.reshape(x, tuple(dims), e)

    def call_permute(self, fn: Builtin, e: ast.Call) -> Value:
        """`transpose(x, [P0, ...])`: result axis k is axis Pk of x (negative axes count from
        the end). The 2-D swap is the plain transpose; the identity is a copy."""
        arg, perm_arg = e.args
        perm = self.int_list(fn, perm_arg, "axes")
        x = self.lower(arg)
        if perm is None or x is POISON:
            return POISON
        if isinstance(x, float):
            self.error(arg, "transpose needs a tensor, got a number")
            return POISON
        n = x.ndim
        if len(perm) != n:
            self.error(perm_arg, f"transpose of a {n}-D tensor {format_shape(x.shape)} needs "
                                 f"{n} axes, got {len(perm)}")
            return POISON
        seen: set[int] = set()
        for item, p in zip(perm_arg.items, perm, strict=True):
            if not -n <= p < n:
                self.error(item, f"axis {p} is out of range for a {n}-D tensor; valid axes "
                                 f"are {-n} to {n - 1}")
                return POISON
            if p % n in seen:
                self.error(item, f"axis {p % n} appears twice; the axes of transpose must be "
                                 f"a permutation of 0 to {n - 1}")
                return POISON
            seen.add(p % n)
        perm = tuple(p % n for p in perm)
        if perm == tuple(range(n)):
            return self.copy(x, e)
        if n == 2:
            return self.emit(Op.TRANSPOSE, (x,), e, e.col)
        node = self.builder.add(Op.TRANSPOSE, (x,), perm=perm, line=e.line, col=e.col)
        self.sized.append((node, e))
        return node

    def call_concat(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """`concat(a, b, ..., axis=K)`: tensors of one dtype, equal off axis K, joined."""
        axis_expr = None
        for k in e.keywords:
            if k.name != "axis":
                self.error(k, f"unknown keyword '{k.name}' for concat; usage: {fn.usage}")
                return POISON
            axis_expr = k.value
        args = e.args
        if not args:
            self.error(name_span, f"concat needs at least one tensor; usage: {fn.usage}")
            return POISON
        if axis_expr is None and _int_literal(args[-1]) is not None:
            self.error(args[-1], f"the axis of concat is given by keyword; usage: {fn.usage}")
            return POISON
        if axis_expr is None:
            self.error(name_span, f"concat needs an axis, by keyword; usage: {fn.usage}")
            return POISON
        if _int_literal(axis_expr) is None:
            self.error(axis_expr, "the axis must be an integer literal such as 0 or -1")
            return POISON
        values = [self.lower(a) for a in args]
        xs = [self.tensor_operand("concat", a, v) for a, v in zip(args, values, strict=True)]
        if any(x is None for x in xs):
            return POISON
        first = xs[0]
        n = first.ndim
        k = _int_literal(axis_expr)
        if not -n <= k < n:
            self.error(axis_expr, f"axis {k} is out of range for concat of {n}-D tensors; "
                                  f"valid axes are {-n} to {n - 1}")
            return POISON
        k %= n
        for a, x in zip(args[1:], xs[1:], strict=True):
            if x.ndim != n:
                self.error(a, f"concat needs tensors of one rank: {format_shape(first.shape)} "
                              f"and {format_shape(x.shape)}")
                return POISON
            off = [i for i in range(n) if i != k and x.shape[i] != first.shape[i]]
            if off:
                self.error(a, f"concat along axis {k} needs the other dimensions equal: "
                              f"{format_shape(first.shape)} and {format_shape(x.shape)} differ "
                              f"at axis {off[0]}")
                return POISON
            if x.dtype != first.dtype:
                self.error(a, f"concat needs tensors of one dtype, got {first.dtype} and "
                              f"{x.dtype}; convert one with cast(x, {first.dtype})")
                return POISON
        node = self.builder.add(Op.CONCAT, tuple(xs), axis=k, line=e.line, col=e.col)
        self.sized.append((node, e))
        return node

    # ---- vision: conv2d, maxpool2d, avgpool2d -------------------------------------------------

    def window_param(self, fn: Builtin, kw: ast.Keyword, sizes: tuple[int, ...], least: int,
                     what: str) -> tuple[int, ...] | None:
        """A window parameter: an integer literal (repeated for every entry) or a list of
        integer literals of one of the lengths `sizes`, each at least `least`; None after
        reporting what is wrong."""
        want = len(sizes) and max(sizes)
        shapes = {2: "[h, w]", 4: "[top, left, bottom, right]"}
        forms = " or ".join(f"a list of {n} integers {shapes[n]}" for n in sizes)
        items = kw.value.items if isinstance(kw.value, ast.ListExpr) else (kw.value,)
        values = []
        for item in items:
            v = _int_literal(item)
            if v is None:
                self.error(item, f"the {what} of {fn.name} must be an integer literal or "
                                 f"{forms} of integer literals")
                return None
            if v < least:
                bound = "positive" if least == 1 else "non-negative"
                self.error(item, f"the {what} of {fn.name} must be {bound}, got {v}")
                return None
            values.append(v)
        if not isinstance(kw.value, ast.ListExpr):
            return (values[0],) * want
        if len(values) not in sizes:
            self.error(kw.value, f"the {what} of {fn.name} is an integer or {forms}, got "
                                 f"{len(values)} entr{'y' if len(values) == 1 else 'ies'}")
            return None
        return tuple(values)

    def flag_param(self, kw: ast.Keyword) -> bool | None:
        v = kw.value
        if not (isinstance(v, ast.Number) and v.text in ("0", "1")):
            text = (source_line(self.text, v.line) or "")[v.col - 1:v.end_col - 1]
            self.error(v, f"{kw.name} must be 0 or 1, got '{text}'")
            return None
        return v.text == "1"

    def call_window(self, fn: Builtin, e: ast.Call, name_span: ast.Span) -> Value:
        """`conv2d(x, w, stride=S, pad=P, dilation=D)`, `maxpool2d(x, size=K, ...)` and
        `avgpool2d(x, size=K, ..., count_pad=0|1)`: ONNX Conv, MaxPool and AveragePool over
        the last two axes of a 4-D value. Window parameters are given by keyword."""
        conv = fn.kind == "conv"
        allowed = ("stride", "pad", "dilation") if conv else (
            ("size", "stride", "pad", "dilation", "ceil")
            + (("count_pad",) if fn.op is Op.AVGPOOL2D else ()))
        n_args = 2 if conv else 1
        params: dict[str, object] = {}
        ok = True
        for k in e.keywords:
            if k.name not in allowed:
                self.error(k, f"unknown keyword '{k.name}' for {fn.name}; usage: {fn.usage}")
                return POISON
            if k.name in ("ceil", "count_pad"):
                value = self.flag_param(k)
            elif k.name == "pad":
                value = self.window_param(fn, k, (4,), 0, "padding")
            else:
                value = self.window_param(fn, k, (2,), 1, {"size": "window size"}.get(
                    k.name, k.name))
            if value is None:
                ok = False
            params[k.name] = value
        args = e.args
        if len(args) != n_args:
            if len(args) > n_args:
                self.error(args[n_args], f"{fn.name} takes {n_args} tensor"
                                         f"{'s' if n_args > 1 else ''}; its window is given "
                                         f"by keyword; usage: {fn.usage}")
            else:
                self.error(name_span, f"{fn.name} takes {n_args} tensor"
                                      f"{'s' if n_args > 1 else ''}, got {len(args)}; usage: "
                                      f"{fn.usage}")
            return POISON
        if not conv and "size" not in params:
            self.error(name_span, f"{fn.name} needs a window size; usage: {fn.usage}")
            ok = False
        values = [self.lower(a) for a in args]
        if not ok or any(v is POISON for v in values):
            return POISON
        for a, v in zip(args, values, strict=True):
            if isinstance(v, float):
                self.error(a, f"{fn.name} needs a tensor, got a number")
                return POISON
        x = values[0]
        if x.ndim != 4:
            self.error(args[0], f"{fn.name} needs a 4-D input [N, C, H, W], got "
                                f"{format_type(x.shape, x.dtype)}")
            return POISON
        if conv:
            w = values[1]
            if w.ndim != 4:
                self.error(args[1], f"conv2d needs 4-D weights [K, C, R, S], got "
                                    f"{format_type(w.shape, w.dtype)}")
                return POISON
            if w.shape[1] != x.shape[1]:
                self.error(args[1], f"conv2d channel mismatch: the input "
                                    f"{format_shape(x.shape)} has {x.shape[1]} channels but "
                                    f"the weights {format_shape(w.shape)} take {w.shape[1]}")
                return POISON
            size = w.shape[2:]
        else:
            size = params["size"]
        stride = params.get("stride") or (size if not conv else (1, 1))
        window = Window(tuple(size), tuple(stride), tuple(params.get("pad") or (0, 0, 0, 0)),
                        tuple(params.get("dilation") or (1, 1)), bool(params.get("ceil")),
                        bool(params.get("count_pad")))
        if not conv:
            for axis, side in ((0, "top"), (1, "left"), (0, "bottom"), (1, "right")):
                p = window.pad[axis + (2 if side in ("bottom", "right") else 0)]
                if p >= window.extent(axis):
                    where = next(k for k in e.keywords if k.name == "pad")
                    self.error(where.value, f"the {side} padding of {fn.name} ({p}) must be "
                                            f"smaller than the window's extent "
                                            f"({window.extent(axis)}), so that every window "
                                            f"holds an element of the input")
                    return POISON
        window = tame_window(window, x.shape[2:])
        for axis, dim in ((0, "height"), (1, "width")):
            n = x.shape[2 + axis]
            if window.out_len(n, axis) < 1:
                padded = n + window.pad[axis] + window.pad[axis + 2]
                self.error(e if conv else args[0],
                           f"{fn.name} of {format_shape(x.shape)} gives no output: the "
                           f"{dim} {n} with padding is {padded}, smaller than the window's "
                           f"extent {window.extent(axis)} (size {window.size[axis]}, "
                           f"dilation {window.dilation[axis]})")
                return POISON
            for what, v in (("stride", window.stride[axis]), ("dilation",
                            window.dilation[axis]), ("padding", window.pad[axis]),
                            ("padding", window.pad[axis + 2])):
                if v > MAX_WINDOW_PARAM:
                    where = next((k.value for k in e.keywords
                                  if k.name == {"padding": "pad"}.get(what, what)), e)
                    self.error(where, f"the {what} of {fn.name} along the {dim} is {v}, more "
                                      f"than this compiler's limit of {MAX_WINDOW_PARAM:,}")
                    return POISON
            if not conv and self.window_misses_input(fn, e, window, x.shape[2 + axis], axis,
                                                     dim):
                return POISON
        if conv:
            dtype = promote(x.dtype, w.dtype)
            operands = (self.conform(x, x.shape, dtype, e.line, e.col),
                        self.conform(w, w.shape, dtype, e.line, e.col))
        else:
            operands = (x,)
        node = self.builder.add(fn.op, operands, window=window, line=e.line, col=e.col)
        self.sized.append((node, e))
        return node

    def window_misses_input(self, fn: Builtin, e: ast.Call, window: Window, n: int, axis: int,
                            dim: str) -> bool:
        """Report a pool window none of whose taps lands in the input (True if one does).

        Padding smaller than the extent keeps every window of contiguous taps on the input,
        but dilated taps can step over an input shorter than the dilation: size 2, dilation
        2 and padding 1 on a height of 1 read rows -1 and 1. Such a window has no maximum
        and no average (ONNX leaves it undefined; the max would be -inf, the mean 0 / 0).
        """
        taps = tap_rows(window, n, axis)
        empty = np.flatnonzero(((taps < 0) | (taps >= n)).all(axis=1))
        if not empty.size:
            return False
        o = int(empty[0])
        where = next((k.value for k in e.keywords if k.name == "dilation"), e)
        unit = ("rows", "columns")[axis]
        self.error(where, f"window {o} of {fn.name} along the {dim} holds no element of the "
                          f"input: with dilation {window.dilation[axis]} its taps are at {unit} "
                          f"{', '.join(map(str, taps[o]))}, and the input's {unit} are 0 to "
                          f"{n - 1}")
        return True

    def index(self, e: ast.Index) -> Value:
        """`x[s0, s1, ...]`: integer literals remove their axis, slices `a:b:c` of integer
        literals keep it (negative counts from the end, step > 0, nonempty); axes left out stay
        whole."""
        x = self.lower(e.value)
        if x is POISON:
            return POISON
        if isinstance(x, float):
            self.error(e.value, "indexing needs a tensor, got a number")
            return POISON
        n = x.ndim
        if len(e.subscripts) > n:
            extra = e.subscripts[n]
            self.error(extra, f"too many indices for a {n}-D tensor {format_shape(x.shape)}: "
                              f"got {len(e.subscripts)}")
            return POISON
        index: list = []
        for axis, (sub, d) in enumerate(zip(e.subscripts, x.shape, strict=False)):
            entry = self.subscript(sub, axis, d)
            if entry is None:
                return POISON
            index.append(entry)
        index += [(0, d, 1) for d in x.shape[len(index):]]
        index_t = tuple(index)
        if all(s == (0, d, 1) for s, d in zip(index_t, x.shape, strict=True)):
            return self.copy(x, e)
        node = self.builder.add(Op.SLICE, (x,), index=index_t, line=e.line, col=e.bracket_col)
        self.sized.append((node, e))
        return node

    def subscript(self, sub: ast.Expr | ast.Slice, axis: int, d: int):
        """One normalised index entry for an axis of length d, or None after an error."""
        if not isinstance(sub, ast.Slice):
            i = _int_literal(sub)
            if i is None:
                self.error(sub, "an index must be an integer literal or a slice a:b:c of "
                                "integer literals")
                return None
            if not -d <= i < d:
                self.error(sub, f"index {i} is out of range for axis {axis} of length {d}; "
                                f"valid indices are {-d} to {d - 1}")
                return None
            return i % d
        parts = []
        for part in (sub.start, sub.stop, sub.step):
            if part is None:
                parts.append(None)
                continue
            v = _int_literal(part)
            if v is None:
                self.error(part, "a slice bound must be an integer literal")
                return None
            parts.append(v)
        start, stop, step = parts
        if step is not None and step <= 0:
            self.error(sub.step, f"the step of a slice must be positive, got {step}")
            return None
        for part, v in ((sub.start, start), (sub.stop, stop)):
            if v is not None and not -d <= v <= d:
                self.error(part, f"slice bound {v} is out of range for axis {axis} of length "
                                 f"{d}; valid bounds are {-d} to {d}")
                return None
        lo = 0 if start is None else start % d if start < 0 else start
        hi = d if stop is None else stop + d if stop < 0 else stop
        if lo >= hi:
            self.error(sub, f"the slice selects nothing of axis {axis} (length {d}): "
                            f"{lo} to {hi}")
            return None
        return (lo, hi, step or 1)

    def copy(self, x: Node, e: ast.Span) -> Node:
        """A copy of x (an exact same-dtype cast), for a rearrangement that changes nothing."""
        node = self.builder.add(Op.CAST, (x,), shape=x.shape, dtype=x.dtype, line=e.line,
                                col=e.col)
        self.sized.append((node, e))
        return node

    def reshape(self, x: Node, shape: tuple[int, ...], e: ast.Call) -> Node:
        node = self.builder.add(Op.RESHAPE, (x,), shape=shape, dtype=x.dtype, line=e.line,
                                col=e.col)
        self.sized.append((node, e))
        return node


def tame_window(window: Window, hw: tuple[int, ...]) -> Window:
    """The same windows, with the parameters that cannot change what they read made small: the
    dilation along an axis of one tap is 1, and the stride along an axis of one output position
    is clamped to the smallest that still gives one output (with `ceil` too), so that a
    stride such as 10**30 (one window: a global pool) never reaches int64 or an immediate."""
    stride, dilation = list(window.stride), list(window.dilation)
    for axis in range(2):
        if window.size[axis] == 1:
            dilation[axis] = 1
    tamed = replace(window, dilation=tuple(dilation))
    for axis, n in enumerate(hw):
        if tamed.out_len(n, axis) == 1:
            lo, hi = tamed.pad[axis], tamed.pad[axis + 2]
            span = n + lo + hi - tamed.extent(axis)
            stride[axis] = min(stride[axis], max(span + 1, n + lo))
    return replace(tamed, stride=tuple(stride))


def _is_integer_literal(e: ast.Expr) -> bool:
    return (isinstance(e, ast.Number) and e.value.is_integer()
            and e.text.lstrip("-").isdigit())
def _int_literal(e: ast.Expr) -> int | None:
    """The value of an integer literal (a minus in front is part of it), else None."""
    if isinstance(e, ast.Number) and e.text.lstrip("-").isdigit():
        return int(e.text)
    return None


def _bound_name(s: ast.Input | ast.Param | ast.Assign) -> ast.Name:
    return s.target if isinstance(s, ast.Assign) else s.name


def _broadcast_detail(a: tuple[int, ...], b: tuple[int, ...]) -> str:
    """Which aligned dimensions clash, counting from the end as broadcasting does."""
    for i in range(1, min(len(a), len(b)) + 1):
        if a[-i] != b[-i] and 1 not in (a[-i], b[-i]):
            return f": {a[-i]} != {b[-i]} at axis -{i}"
    return ""


def decimal_size(n: int) -> str:
    """Bytes in decimal units with one decimal: '1.2 GB', '464.0 MB'."""
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB", "TB", "PB", "EB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def binary_size(n: int) -> str:
    """Bytes in binary units, as SRAM sizes are given: '1.25 MiB', '64 KiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} B"
