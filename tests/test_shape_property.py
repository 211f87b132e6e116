"""Property test: random programs built from the shape forms — `reshape`, `concat`, indexing and
slicing, `transpose` with axes, batched `@` — mixed with elementwise arithmetic, compiled and
emulated on small meshes (one with depth-1 FIFOs and 128-byte messages, one with more batch
entries than grid rows), agree with the numpy reference within the --check tolerance; so do
their gradients.

The generator keeps a pool of values (name, shape, dtype) and appends statements that
type-check by construction. Shapes stay small (1 to 4 dimensions of 1 to 9) so a program runs in
well under a second, yet they cross tile (8) and vector (16) boundaries and leave blocks empty.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler
from compiler.pipeline import CompileOptions
from d1isa.machine import load_machine
from emulator import Emulator

MACHINES = {
    "2x2": load_machine("d1", mesh="2x2"),
    "3x2": load_machine("d1", mesh="3x2", overrides={"fifo_depth": 1, "max_message_bytes": 128}),
    "4x4": load_machine("d1", mesh="4x4"),
}


def _shape_text(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


@st.composite
def shape_programs(draw, grads: bool = False) -> str:
    lines: list[str] = []
    pool: list[tuple[str, tuple[int, ...], str]] = []
    counter = [0]
    dtypes = st.just("f32") if grads else st.sampled_from(["f32", "bf16"])

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def declare(shape: tuple[int, ...], dtype: str | None = None) -> str:
        name = fresh("in")
        lines.append(f"input {name}: {dtype or draw(dtypes)}[{_shape_text(shape)}]")
        pool.append((name, shape, lines[-1].split(": ")[1].split("[")[0]))
        return name

    dim = st.integers(min_value=1, max_value=9)
    declare(tuple(draw(st.lists(dim, min_size=2, max_size=4))))
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        name, shape, dtype = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["reshape", "transpose", "index", "concat", "matmul",
                                     "elementwise"]))
        out = fresh("v")
        n = len(shape)
        if kind == "reshape":
            size = math.prod(shape)
            dims = []
            rest = size
            for _ in range(draw(st.integers(0, 3))):
                divisors = [d for d in range(1, rest + 1) if rest % d == 0]
                d = draw(st.sampled_from(divisors))
                dims.append(d)
                rest //= d
            dims.append(rest)
            text = [str(d) for d in dims]
            if draw(st.booleans()):
                text[draw(st.integers(0, len(text) - 1))] = "-1"
            lines.append(f"{out} = reshape({name}, [{', '.join(text)}])")
            rshape, rdtype = tuple(dims), dtype
        elif kind == "transpose" and n >= 2:
            perm = draw(st.permutations(list(range(n))))
            lines.append(f"{out} = transpose({name}, [{', '.join(map(str, perm))}])")
            rshape, rdtype = tuple(shape[p] for p in perm), dtype
        elif kind == "index":
            subs, rshape = [], []
            for d in shape[:draw(st.integers(1, n))]:
                form = draw(st.sampled_from(["int", "slice", "all"]))
                if form == "int" and len(rshape) + (n - len(subs)) > 1:
                    i = draw(st.integers(-d, d - 1))
                    subs.append(str(i))
                    continue
                if form == "all":
                    subs.append(":")
                    rshape.append(d)
                    continue
                a = draw(st.integers(0, d - 1))
                b = draw(st.integers(a + 1, d))
                step = draw(st.integers(1, 3))
                lo = str(a - d) if draw(st.booleans()) else str(a)
                subs.append(f"{lo}:{b}" + (f":{step}" if step > 1 else ""))
                rshape.append(len(range(a, b, step)))
            rshape += list(shape[len(subs):])
            lines.append(f"{out} = {name}[{', '.join(subs)}]")
            rshape, rdtype = tuple(rshape), dtype
        elif kind == "concat":
            axis = draw(st.integers(0, n - 1))
            other_shape = shape[:axis] + (draw(dim),) + shape[axis + 1:]
            other = declare(other_shape, dtype)
            first, second = (name, other) if draw(st.booleans()) else (other, name)
            k = axis - n if draw(st.booleans()) else axis
            lines.append(f"{out} = concat({first}, {second}, axis={k})")
            rshape, rdtype = shape[:axis] + (shape[axis] + other_shape[axis],) + \
                shape[axis + 1:], dtype
        elif kind == "matmul" and n >= 2:
            nn = draw(dim)
            form = draw(st.sampled_from(["same", "shared", "broadcast"]))
            if form == "shared" or n == 2:
                rhs_shape = (shape[-1], nn)
            elif form == "broadcast":
                rhs_shape = (1,) * draw(st.integers(0, 1)) + shape[-3:-2] + (shape[-1], nn)
                rhs_shape = rhs_shape[-min(len(rhs_shape), 4):]
            else:
                rhs_shape = shape[:-2] + (shape[-1], nn)
            rhs = declare(rhs_shape, dtype)
            lines.append(f"{out} = {name} @ {rhs}")
            batch = np.broadcast_shapes(shape[:-2], rhs_shape[:-2])
            rshape, rdtype = tuple(batch) + (shape[-2], nn), "f32"
        else:
            f = draw(st.sampled_from(["tanh({}) * 2", "{} + 1", "relu({}) - {}"]))
            lines.append(f"{out} = {f.format(name, name)}")
            rshape, rdtype = shape, dtype
        pool.append((out, rshape, rdtype))
    computed = [p[0] for p in pool if p[0].startswith("v")]
    return finish_program(draw, lines, [p[0] for p in pool if p[0].startswith("in")], computed,
                          grads)


def finish_program(draw, lines: list[str], inputs: list[str], computed: list[str],
                   grads: bool) -> str:
    """A generated program's outputs: with `grads`, the gradient of sum(last value ** 2)
    with respect to every input (and the loss); else one to three of the last values."""
    if grads:
        last = computed[-1]
        lines.append(f"loss = sum({last} * {last})")
        for x in inputs:
            lines.append(f"g_{x} = grad(loss, {x})")
        lines.append("output loss, " + ", ".join(f"g_{x}" for x in inputs))
    else:
        outs = computed[-draw(st.integers(1, min(3, len(computed)))):]
        lines.append("output " + ", ".join(outs))
    return "\n".join(lines) + "\n"


def run_on_mesh(text: str, mesh: str, seed: int, options: CompileOptions | None = None) -> None:
    machine = MACHINES[mesh]
    obj = compiler.compile_source(text, machine, "shapes.d1k", options)
    graph = compiler.check_source(text, machine, "shapes.d1k")
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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shape_programs(), mesh=st.sampled_from(sorted(MACHINES)), seed=st.integers(0, 3))
def test_random_shape_programs_match_reference(text: str, mesh: str, seed: int) -> None:
    run_on_mesh(text, mesh, seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shape_programs(grads=True), mesh=st.sampled_from(sorted(MACHINES)),
       seed=st.integers(0, 3))
def test_random_shape_gradients_match_reference(text: str, mesh: str, seed: int) -> None:
    run_on_mesh(text, mesh, seed)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shape_programs(), seed=st.integers(0, 3))
def test_sequential_batched_matmul_matches_reference(text: str, seed: int) -> None:
    run_on_mesh(text, "4x4", seed, CompileOptions(batched="sequential"))
