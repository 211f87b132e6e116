"""Weight-resident params and update write-back in the compiler (compiler.writeback).

Every training program here is compiled, its params written once, and the same loaded object
run for several steps with `Emulator.restart` in between (only the batch's inputs written):
each step's params and 0-d outputs must equal the numpy reference's `train_step`, on a 4 x 4
mesh and on the d1 chip. Then the ways an update reaches its param (in place, copied at the
end, redistributed, through a copy of an old value), bf16 rounding, and params never lending
their buffers to temporaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.compare import tolerance_of
from compiler.ir import round_to
from compiler.pipeline import compile_text
from compiler.reference import train_step
from d1isa.errors import SourceError
from d1isa.machine import load_machine
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
M4 = load_machine("m4x4")
D1 = load_machine("d1")

# A param updated from an input, read again after its new value is computed: the write-back
# is a copy at the end of the run.
SHIFT = """\
param w: f32[16, 16] = 0
input x: f32[16, 16]
update w = w - 0.5 * x
s = sum(sum(w, axis=1), axis=0)
output s
"""

LINEAR = (ROOT / "programs" / "train_linear.d1k").read_text()

# Momentum, a bias read as a row broadcast, a bf16 weight, and a param with no update.
MOMENTUM = """\
input x: f32[32, 24]
input y: f32[32, 8]
param w: bf16[24, 8] = normal(0.1)
param b: f32[8] = 0
param m: f32[24, 8] = 0
param scale: f32[8] = 1
d = x @ cast(w, f32) * scale + b - y
loss = mean(mean(d * d, axis=1), axis=0)
g = grad(loss, w)
mn = 0.9 * m + g
update m = mn
update w = w - 0.05 * mn
update b = b - 0.05 * grad(loss, b)
output loss
"""

# Two params that trade values, and one that takes another's old value.
SWAP = """\
input x: f32[8, 16]
param a: f32[8, 16] = normal(1)
param b: f32[8, 16] = normal(1)
param c: f32[8, 16] = 0
s = sum(sum(a * x, axis=1), axis=0)
update a = b
update b = a
update c = a
output s
"""

# The new value comes out of a row reduction in another layout than the param's.
REDUCED = """\
input x: f32[16, 32]
param r: f32[16] = 0
t = sum(r * 2, axis=0)
update r = sum(x, axis=1)
output t
"""

PROGRAMS = {"shift": SHIFT, "linear": LINEAR, "momentum": MOMENTUM, "swap": SWAP,
            "reduced": REDUCED}


def steps(text: str, machine, n: int = 3, seed: int = 0):
    """Run `n` steps of `text` on one loaded object and on the reference; yield per step the
    (emulated, reference) params and 0-d outputs."""
    c = compile_text(text, machine, "t.d1k")
    g = c.graph
    params = compiler.init_params(g, seed)
    emu = Emulator(c.obj)
    for name, value in params.items():
        emu.set_input(name, value)
    ref = dict(params)
    for k in range(n):
        batch = compiler.make_inputs(g, seed + 1 + k)
        if k:
            emu.restart()
        for name, value in batch.items():
            emu.set_input(name, value)
        result = emu.run()
        assert result.ok, result.report()
        ref, scalars = train_step(g, ref, batch)
        got = {p.name: emu.output(p.name) for p in g.params}
        out = {o.name: float(emu.output(o.name)) for o in g.outputs
               if o.ndim == 0}
        yield c, (got, out), (ref, scalars)


@pytest.mark.parametrize("machine", [M4, D1], ids=["m4x4", "d1"])
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_each_run_of_the_loaded_object_is_the_next_reference_step(name, machine):
    text = PROGRAMS[name]
    tol = tolerance_of(compiler.check_source(text))
    for _, (got, out), (ref, scalars) in steps(text, machine):
        for p, value in ref.items():
            scale = max(float(np.max(np.abs(value))), 1.0)
            assert np.max(np.abs(got[p] - value)) <= tol * scale, p
        for o, value in scalars.items():
            assert abs(out[o] - value) <= tol * max(abs(value), 1.0), o


def test_two_runs_in_a_row_give_the_reference_two_steps_exactly():
    (_, (w1, s1), (r1, t1)), (_, (w2, s2), (r2, t2)) = list(steps(SHIFT, M4, 2))
    assert np.array_equal(w1["w"], r1["w"]) and np.array_equal(w2["w"], r2["w"])
    assert s1 == t1 == {"s": s1["s"]} and s2["s"] == pytest.approx(t2["s"], rel=1e-6)
    assert not np.array_equal(w1["w"], w2["w"])          # the second step moved on


def regions(text: str, machine=M4) -> list[tuple[str, str]]:
    c = compile_text(text, machine, "t.d1k")
    return [(r["op"], r["name"]) for r in c.obj.meta["regions"]]


def test_an_sgd_update_computed_last_is_stored_in_place():
    # Every update of the linear regression is the last reader of its param: its kernel writes
    # the param's buffer, and no write-back step follows.
    ops = regions(LINEAR)
    assert ops[-2:] == [("elementwise(mul sub)", "%t20"), ("elementwise(mul sub)", "%t23")]
    assert [op for op, name in ops if name in ("w", "b")] == []


def test_a_param_read_after_its_new_value_is_written_back_at_the_end():
    ops = regions(SHIFT)
    assert ops[-1] == ("elementwise(update)", "w")
    assert [op for op, _ in ops].count("elementwise(update)") == 1


def test_a_new_value_in_another_layout_is_redistributed_into_the_param():
    assert regions(REDUCED)[-1] == ("redistribute", "r")


def test_old_values_that_other_updates_read_are_copied_aside_first():
    ops = regions(SWAP)
    copies = [name for op, name in ops if op == "elementwise(copy)"]
    writes = [name for op, name in ops if op == "elementwise(update)"]
    assert sorted(copies) == ["a", "b"] and sorted(writes) == ["a", "b", "c"]
    assert max(i for i, (op, _) in enumerate(ops) if op == "elementwise(copy)") < min(
        i for i, (op, _) in enumerate(ops) if op == "elementwise(update)")
    # Two swaps bring a and b back, c holds a's old value each time.
    (_, (p1, _), _), (_, (p2, _), _) = list(steps(SWAP, M4, 2))
    start = compiler.init_params(compiler.check_source(SWAP), 0)
    assert np.array_equal(p1["a"], start["b"]) and np.array_equal(p1["b"], start["a"])
    assert np.array_equal(p2["a"], start["a"]) and np.array_equal(p2["c"], start["b"])


def test_a_bf16_param_takes_its_f32_update_rounded_to_nearest_even():
    text = ("param w: bf16[16, 16] = 0\ninput x: f32[16, 16]\n"
            "update w = w + 0.001 * x\noutput x\n")
    for _, (got, _), (ref, _) in steps(text, M4, 2):
        w = got["w"]
        assert np.array_equal(w, ref["w"])
        assert np.array_equal(w, round_to(w, "bf16"))              # bf16 values
    # After the first step w is 0.001 * x rounded once to bf16, which f32 would not be.
    x1 = compiler.make_inputs(compiler.check_source(text), 1)["x"]
    first = next(steps(text, M4, 1))[1][0]["w"]
    assert np.array_equal(first, round_to(np.float32(0.001) * x1, "bf16"))
    assert np.any(first != np.float32(0.001) * x1)


# Constant weights (params with no update) read early, then temporaries that would fit into
# their space once they are dead; the next run must still read them.
CONSTANT = """\
input x: f32[16, 16]
param w: f32[16, 16] = normal(1)
h = tanh(x @ w)
k = h * h + 1
l = k * h - 2
z = sum(l, axis=1)
output z
"""


def test_a_param_keeps_its_buffer_for_the_whole_run():
    c = compile_text(CONSTANT, M4, "t.d1k")
    g = c.graph
    params = compiler.init_params(g, 0)
    emu = Emulator(c.obj)
    emu.set_input("w", params["w"])
    for k in range(2):
        batch = compiler.make_inputs(g, k)
        if k:
            emu.restart()
        emu.set_input("x", batch["x"])
        assert emu.run().ok
        assert np.array_equal(emu.output("w"), params["w"])
        want = compiler.evaluate(g, batch, params)["z"]
        assert np.allclose(emu.output("z"), want, rtol=1e-5, atol=1e-5)


def test_the_object_lists_params_and_the_updated_ones():
    obj = compile_text(MOMENTUM, M4, "t.d1k").obj
    roles = {t.name: t.role for t in obj.tensors}
    assert {n: roles[n] for n in ("w", "b", "m", "scale")} == dict.fromkeys(
        ("w", "b", "m", "scale"), "param")
    assert obj.meta["params"] == ["w", "b", "m", "scale"]
    assert obj.meta["updates"] == ["m", "w", "b"]
    assert obj.tensor("w").dtype == "bf16"


def test_an_updated_param_cannot_also_be_an_output():
    with pytest.raises(SourceError) as info:
        compile_text("param w: f32[4] = 0\nupdate w = w + 1\noutput w\n", M4, "t.d1k")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (2, 1)
    assert "'w' is both updated and an output" in d.message
    assert "output a copy instead (`w_old = w`)" in d.message


def test_a_copy_of_an_updated_param_is_output_with_its_value_from_before_the_step():
    text = "param w: f32[4] = 2\nw_out = w\nupdate w = w + 1\noutput w_out\n"
    (_, (got, _), (ref, _)), = list(steps(text, M4, 1))
    c = compile_text(text, M4, "t.d1k")
    emu = Emulator(c.obj)
    emu.set_input("w", np.full(4, 2.0))
    assert emu.run().ok
    assert emu.output("w_out").tolist() == [2.0] * 4 and emu.output("w").tolist() == [3.0] * 4
    assert np.array_equal(got["w"], ref["w"])


def test_an_update_of_a_param_to_itself_compiles_to_nothing():
    ops = regions("param w: f32[4] = 2\ninput x: f32[4]\nupdate w = w\noutput x\n")
    assert ops == []


def test_params_live_for_the_whole_schedule_and_an_in_place_update_shares_their_address():
    from passkit import scheduled

    from compiler.alloc import allocate

    m, sched = scheduled(CONSTANT)
    end = len(sched.steps)
    assert sched.live[id(m.value("w"))] == (-1, end)       # read by the first step only
    assert sched.live[id(m.value("x"))][1] < end           # an input's buffer is freed
    m, sched = scheduled(LINEAR)
    allocate(sched, M4.sram_bytes, "t.d1k", LINEAR)
    w = m.value("w")
    (new,) = [v for v in sched.values if v.alias is w]
    assert new.addr == w.addr and sched.live[id(w)] == (-1, len(sched.steps))
    others = [v for v in sched.values if v is not w and v is not new and v.alias is None]
    assert all(v.addr + v.nbytes <= w.addr or w.addr + w.nbytes <= v.addr for v in others)
