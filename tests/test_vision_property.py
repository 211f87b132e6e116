"""Property test: random programs built from the vision forms — `conv2d` (strides, padding,
dilation), `maxpool2d` and `avgpool2d` (ceil mode, count_pad) — mixed with per-channel biases
and elementwise arithmetic, compiled and emulated on small meshes (one with depth-1 FIFOs and
128-byte messages), agree with the numpy reference within the --check tolerance; so do their
gradients.

The generator keeps a pool of 4-D values and appends statements that type-check by
construction. Shapes stay small (images of 3 to 12 pixels a side, 1 to 4 channels) so a
program runs in well under a second, yet windows cross block ends and padding.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_shape_property import finish_program, run_on_mesh

from compiler.ir import Window
from compiler.windows import tap_rows


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


def _pair(draw, lo: int, hi: int) -> tuple[int, int]:
    a = draw(st.integers(lo, hi))
    return (a, a) if draw(st.booleans()) else (a, draw(st.integers(lo, hi)))


def _param(values: tuple[int, ...]) -> str:
    """An integer when every entry is the same (half the time), else the list."""
    if len(set(values)) == 1 and values[0] % 2:
        return str(values[0])
    return "[" + _dims(values) + "]"


@st.composite
def vision_programs(draw, grads: bool = False) -> str:
    lines: list[str] = []
    pool: list[tuple[str, tuple[int, ...], str]] = []
    counter = [0]
    dtypes = st.just("f32") if grads else st.sampled_from(["f32", "bf16"])

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def declare(shape: tuple[int, ...], dtype: str) -> str:
        name = fresh("in")
        lines.append(f"input {name}: {dtype}[{_dims(shape)}]")
        return name

    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(3, 12)),
             draw(st.integers(3, 12)))
    dtype = draw(dtypes)
    pool.append((declare(shape, dtype), shape, dtype))
    for _ in range(draw(st.integers(1, 4))):
        name, shape, dtype = draw(st.sampled_from(pool))
        n, c, h, w = shape
        kind = draw(st.sampled_from(["conv2d", "maxpool2d", "avgpool2d", "bias"]))
        out = fresh("v")
        if kind == "bias":
            b = declare((c,), dtype)
            lines.append(f"{out} = relu({name} + reshape({b}, [{c}, 1, 1])) * 0.5")
            pool.append((out, shape, dtype))
            continue
        size = _pair(draw, 1, 4)
        stride = _pair(draw, 1, 3)
        dilation = _pair(draw, 1, 2) if draw(st.booleans()) else (1, 1)
        conv = kind == "conv2d"
        win = Window(size, stride, (0, 0, 0, 0), dilation)
        pads = tuple(draw(st.integers(0, 2 if conv else win.extent(k % 2) - 1))
                     for k in range(4))
        ceil = 0 if conv else draw(st.integers(0, 1))
        count_pad = draw(st.integers(0, 1)) if kind == "avgpool2d" else 0
        win = Window(size, stride, pads, dilation, bool(ceil), bool(count_pad))
        oh, ow = win.out_hw(h, w)
        if oh < 1 or ow < 1:
            continue
        if not conv and any(((t < 0) | (t >= m)).all(axis=1).any()
                            for t, m in ((tap_rows(win, h, 0), h), (tap_rows(win, w, 1), w))):
            continue        # dilated taps that step over the input: no element, an error
        args = [f"stride={_param(stride)}"] if conv or draw(st.booleans()) else []
        if any(pads):
            args.append(f"pad={_param(pads)}")
        if dilation != (1, 1):
            args.append(f"dilation={_param(dilation)}")
        if conv:
            k = draw(st.integers(1, 9))
            wt = declare((k, c) + size, dtype)
            lines.append(f"{out} = conv2d({name}, {wt}, {', '.join(args)})".replace(", )", ")"))
            pool.append((out, (n, k, oh, ow), "f32"))
        else:
            if ceil:
                args.append("ceil=1")
            if count_pad:
                args.append("count_pad=1")
            if not args or not args[0].startswith("stride"):
                if stride != size:
                    args.insert(0, f"stride={_param(stride)}")
            lines.append(f"{out} = {kind}({name}, size={_param(size)}"
                         + "".join(f", {a}" for a in args) + ")")
            pool.append((out, (n, c, oh, ow), dtype))
    computed = [p for p in pool if p[0].startswith("v")]
    if not computed:
        name, shape, dtype = pool[0]
        out = fresh("v")
        lines.append(f"{out} = maxpool2d({name}, size=1)")
        computed = [(out, shape, dtype)]
    inputs = [line.split()[1].rstrip(":") for line in lines if line.startswith("input")]
    return finish_program(draw, lines, inputs, [p[0] for p in computed], grads)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=vision_programs(), mesh=st.sampled_from(["2x2", "3x2", "4x4"]),
       seed=st.integers(0, 3))
def test_random_vision_programs_match_reference(text: str, mesh: str, seed: int) -> None:
    run_on_mesh(text, mesh, seed)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=vision_programs(grads=True), mesh=st.sampled_from(["2x2", "3x2", "4x4"]),
       seed=st.integers(0, 3))
def test_random_vision_gradients_match_reference(text: str, mesh: str, seed: int) -> None:
    run_on_mesh(text, mesh, seed)
