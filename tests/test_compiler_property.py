"""Property test: random well-typed .d1k programs, compiled and emulated on small meshes (one with
depth-1 FIFOs and tiny messages), agree with the reference evaluator within the --check
tolerance.

The generator keeps a pool of values (name, shape, dtype) and appends random statements that
type-check by construction: elementwise builtins and arithmetic with broadcasting (row vectors,
columns, literals), comparisons, where, powers, erf and gelu, casts, reductions along either
axis (min and argmax too), softmax and layernorm, transposes and matmuls (a matmul declares a
fresh input with a matching inner dimension). Values stay in a tame range (exp only of tanh,
division only by 1 + |x|, sqrt only of |x|, powers of 1 + |x| to exponents in [-1, 1]) so that
the only differences from the reference are summation order and bf16 rounding, which the
tolerance covers. The forms that are not continuous (comparisons, where's condition, argmax)
and layernorm, which magnifies the rounding of a nearly constant line, read only declared
inputs, which the mesh and the reference see alike.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from d1isa.machine import load_machine
from emulator import Emulator

# The 3x2 machine also has depth-1 FIFOs and 128-byte messages, so payloads are cut into
# many messages and every send waits for the receiver.
MESHES = ("2x2", "3x2", "4x4")
_MACHINES = {
    "2x2": load_machine("d1", mesh="2x2"),
    "3x2": load_machine("d1", mesh="3x2", overrides={"fifo_depth": 1, "max_message_bytes": 128}),
    "4x4": load_machine("d1", mesh="4x4"),
}


@st.composite
def programs(draw) -> str:
    lines: list[str] = []
    pool: list[tuple[str, tuple[int, ...], str]] = []
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def declare(shape: tuple[int, ...], dtype: str | None = None) -> str:
        dtype = dtype or draw(st.sampled_from(["f32", "bf16"]))
        name = fresh("in")
        lines.append(f"input {name}: {dtype}[{', '.join(map(str, shape))}]")
        pool.append((name, shape, dtype))
        return name

    dims = st.integers(min_value=1, max_value=20)
    declare((draw(dims), draw(dims)))
    if draw(st.booleans()):
        declare((draw(dims),))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        name, shape, dtype = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "softmax", "transpose",
                                     "matmul", "cast", "compare"]))
        out = fresh("v")
        inputs = [p for p in pool if p[0].startswith("in")]
        if kind == "compare" or (kind in ("reduce", "softmax") and draw(st.booleans())):
            # the discontinuous forms and layernorm below read a declared input
            name, shape, dtype = draw(st.sampled_from(inputs))
        if kind == "unary":
            f = draw(st.sampled_from(["relu({})", "tanh({})", "sigmoid({})", "abs({})", "-{}",
                                      "exp(tanh({}))", "sqrt(abs({}))", "erf({})", "gelu({})",
                                      "{} ** 2", "(1 + abs({})) ** 0.5"]))
            lines.append(f"{out} = {f.format(name)}")
            rshape, rdtype = shape, dtype
        elif kind == "binary":
            op = draw(st.sampled_from(["+", "-", "*", "max", "min", "/", "pow"]))
            other_kind = draw(st.sampled_from(["same", "row", "col", "literal"]))
            if other_kind == "row" and len(shape) == 2:
                other = declare((shape[1],))
                rdtype = _promote(dtype, pool[-1][2])
            elif other_kind == "col" and len(shape) == 2:
                other = declare((shape[0], 1))
                rdtype = _promote(dtype, pool[-1][2])
            elif other_kind == "literal":
                other = draw(st.sampled_from(["0.5", "2", "-1.25", "3"]))
                rdtype = dtype
            else:
                same = [p for p in pool if p[1] == shape and p[0] != name]
                if same:
                    o = draw(st.sampled_from(same))
                    other, rdtype = o[0], _promote(dtype, o[2])
                else:
                    other = declare(shape)
                    rdtype = _promote(dtype, pool[-1][2])
            if op == "max":
                expr = f"maximum({name}, {other})"
            elif op == "min":
                expr = f"minimum({name}, {other})"
            elif op == "/":
                expr = f"{name} / (1 + abs({other}))"
            elif op == "pow":
                expr = f"pow(1 + abs({name}), tanh({other}))"
            else:
                expr = f"{name} {op} {other}"
            lines.append(f"{out} = {expr}")
            rshape = shape
        elif kind == "reduce":
            f = draw(st.sampled_from(["sum", "max", "mean", "min", "argmax"]))
            if f == "argmax" and not name.startswith("in"):
                f = "min"
            axis = draw(st.sampled_from(list(range(-len(shape), len(shape)))))
            lines.append(f"{out} = {f}({name}, axis={axis})")
            ax = axis % len(shape)
            rshape, rdtype = shape[:ax] + shape[ax + 1:], dtype
            if not rshape:
                # A 0-d result: use it as a scalar on a fresh 2-D value instead.
                host = declare((draw(dims), draw(dims)))
                out2 = fresh("v")
                lines.append(f"{out2} = {host} * {out}")
                out, rshape, rdtype = out2, pool[-1][1], _promote(pool[-1][2], dtype)
        elif kind == "softmax":
            axis = draw(st.sampled_from(list(range(len(shape)))))
            f = "layernorm" if name.startswith("in") and draw(st.booleans()) else "softmax"
            lines.append(f"{out} = {f}({name}, axis={axis})")
            rshape, rdtype = shape, dtype
        elif kind == "compare":
            # comparisons of two inputs (or one and a literal), and a where they choose in
            same = [p for p in inputs if p[1] == shape and p[0] != name]
            if same and draw(st.booleans()):
                o = draw(st.sampled_from(same))
                other, rdtype = o[0], _promote(dtype, o[2])
            else:
                other, rdtype = draw(st.sampled_from(["0.5", "-0.25", "0"])), dtype
            cmp = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
            values = [p for p in pool if p[1] == shape]
            a, b = draw(st.sampled_from(values)), draw(st.sampled_from(values))
            if draw(st.booleans()):
                lines.append(f"{out} = {name} {cmp} {other}")
            else:
                lines.append(f"{out} = where({name} {cmp} {other}, {a[0]}, {b[0]})")
                rdtype = _promote(a[2], b[2])
            rshape = shape
        elif kind == "transpose" and len(shape) == 2:
            lines.append(f"{out} = transpose({name})")
            rshape, rdtype = shape[::-1], dtype
        elif kind == "matmul" and len(shape) == 2:
            rhs = declare((shape[1], draw(dims)), dtype)
            lines.append(f"{out} = {name} @ {rhs}")
            rshape, rdtype = (shape[0], pool[-1][1][1]), "f32"
        else:
            target = "bf16" if dtype == "f32" else "f32"
            lines.append(f"{out} = cast({name}, {target})")
            rshape, rdtype = shape, target
        pool.append((out, rshape, rdtype))
    computed = [p[0] for p in pool if p[0].startswith("v")]
    outs = computed[-draw(st.integers(min_value=1, max_value=min(3, len(computed)))):]
    lines.append("output " + ", ".join(outs))
    return "\n".join(lines) + "\n"


def _promote(a: str, b: str) -> str:
    return "f32" if "f32" in (a, b) else "bf16"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=programs(), mesh=st.sampled_from(MESHES), seed=st.integers(0, 3))
def test_random_programs_match_reference(text: str, mesh: str, seed: int) -> None:
    machine = _MACHINES[mesh]
    obj = compiler.compile_source(text, machine, "random.d1k")
    graph = compiler.check_source(text, machine, "random.d1k")
    inputs = compiler.make_inputs(graph, seed)
    ref = compiler.evaluate(graph, inputs)
    emu = Emulator(obj, max_cycles=5_000_000)
    for name, value in inputs.items():
        emu.set_input(name, value)
    result = emu.run()
    assert result.ok, f"{result.report()}\n{text}"
    outs = {o.name: emu.output(o.name) for o in graph.outputs}
    rows = compiler.compare_outputs(graph, outs, ref)
    bad = [r for r in rows if not r[4]]
    assert not bad, f"{bad} on {mesh}\n{text}"
    assert all(np.isfinite(r[1]) for r in rows)
