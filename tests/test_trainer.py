"""The Python side of training: `Emulator.restart`, `d1.train.Trainer`, `d1.params`.

`Trainer` steps must be the numpy reference's `train_step`s on the same batches (its batching,
shuffling and INIT generator are documented so numpy can repeat them); params come from the
caller, the object, or INIT; Ctrl-C stops after the step; and embedded params survive the
object file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.ir import round_to
from compiler.reference import init_params, train_step
from d1.params import (
    embed_params,
    embedded,
    embedded_values,
    load_params,
    params_npz,
    starting_params,
)
from d1.program import from_object, load_program
from d1.train import Trainer
from d1isa.errors import D1Error, RuntimeFault
from d1isa.machine import load_machine
from d1isa.objfile import ObjectFile
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
M4 = load_machine("m4x4")
LINEAR = ROOT / "programs" / "train_linear.d1k"
GRAPH = compiler.check_source(LINEAR.read_text())
TOL = 1e-4


def data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n samples of a noisy linear map (what train_linear.d1k learns)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    return {"x": x, "y": (x @ w + 0.5).astype(np.float32)}


def reference_fit(arrays, epochs: int, shuffle: int | None, params=None):
    """The documented batching in numpy: consecutive batches of 64 of each epoch's order
    (default_rng(shuffle).permutation(N), drawn once per epoch), a partial batch dropped."""
    params = init_params(GRAPH, 0) if params is None else params
    n = len(arrays["x"])
    rng = np.random.default_rng(shuffle) if shuffle is not None else None
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n) if rng is not None else np.arange(n)
        for k in range(n // 64):
            pick = order[k * 64:(k + 1) * 64]
            params, out = train_step(GRAPH, params, {k2: a[pick] for k2, a in arrays.items()})
            losses.append(out["loss"])
    return params, losses


def close(a, b) -> bool:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= TOL * max(
        1.0, float(np.max(np.abs(b))))


# ---- the emulator runs the same object again ---------------------------------------------------

def test_restart_keeps_sram_and_starts_every_node_and_statistic_afresh():
    prog = load_program(LINEAR, M4)
    emu = Emulator(prog.obj)
    for name, value in (init_params(GRAPH, 0) | data(64)).items():
        emu.set_input(name, value)
    first = emu.run()
    totals = emu.totals()
    w = emu.output("w")
    emu.restart()
    assert emu.totals()["cycles"] == 0 and emu.totals()["flops"] == 0
    assert emu.totals()["sram_high_water_bytes"] == totals["sram_high_water_bytes"]
    assert np.array_equal(emu.output("w"), w)                 # SRAM untouched
    again = emu.run()
    assert again.ok and again.cycles == first.cycles
    assert emu.totals() | {"sram_high_water_bytes": 0} == totals | {"sram_high_water_bytes": 0}
    assert not np.array_equal(emu.output("w"), w)             # the second step moved w on


def test_restart_zeroes_every_state_array_but_sram_and_the_generators():
    """State.restart (one jitted pass over the kernel's arrays) leaves every array of the state
    as a fresh one but SRAM, its high-water marks, the FIFO bytes and the stochastic-rounding
    generators: an array added to the state and missed by the restart fails here."""
    from emulator.decode import XCOL_HWM
    from emulator.state import _STATE_ARRAYS

    emu = Emulator(load_program(LINEAR, M4).obj)
    st = emu.state
    rng = np.random.default_rng(0)
    kept = {"sram", "fifo8", "sr", "sr_init"}
    for name in _STATE_ARRAYS:
        if name not in ("sram", "fifo8"):
            a = getattr(st, name)
            a[...] = rng.integers(1, 100, a.shape).astype(a.dtype)
    before = {name: getattr(st, name).copy() for name in kept | {"x"}}
    st.restart()
    for name in _STATE_ARRAYS:
        a = getattr(st, name)
        if name in kept:
            assert np.array_equal(a, before[name]), name
        elif name == "skip":
            assert (a == -1).all()
        elif name == "x":
            assert np.array_equal(a[:, XCOL_HWM], before["x"][:, XCOL_HWM])
            assert not np.delete(a, XCOL_HWM, axis=1).any()
        else:
            assert not a.any(), name


@pytest.mark.parametrize("program, machine", [("train_digits.d1k", "d1"),
                                              ("train_mlp784.d1k", "m4x4"),
                                              ("lenet.d1k", "m4x4")])
def test_registers_past_what_the_code_writes_stay_zero(program, machine):
    """restart zeroes only the vector registers and accumulators a node's code names as a
    destination (decode.written_registers): a run never leaves anything in the others, and
    after a restore, which may set any register, the next restart zeroes them all."""
    from emulator.decode import written_registers

    m = load_machine(machine)
    prog = load_program(f"programs/{program}", m)
    emu = Emulator(prog.obj)
    for name, value in compiler.make_inputs(prog.graph, 0).items():
        emu.set_input(name, value)
    snap = emu.snapshot()
    assert emu.run().ok
    vrows, arows = written_registers(emu.code, m.vector_regs, m.accumulators)
    st = emu.state
    assert vrows.max() > 0
    if machine == "d1":                         # its nodes use few registers each
        assert vrows.sum() < 0.6 * vrows.size * m.vector_regs
    for i in range(emu.n):
        assert not st.v[i, vrows[i]:].any() and not st.acc[i, arows[i]:].any()
    assert st.v.any()
    emu.restart()
    assert not st.v.any() and not st.acc.any()
    emu.run()
    emu.restore(snap)
    st.v[:] = 7                                 # as a restored state may hold them
    st.acc[:] = 1.0
    emu.restart()
    assert not st.v.any() and not st.acc.any()


def test_writing_an_input_twice_leaves_what_one_write_leaves():
    prog = load_program(LINEAR, M4)
    a, b = Emulator(prog.obj), Emulator(prog.obj)
    x = data(64)["x"]
    a.set_input("x", x)
    b.set_input("x", -x)
    b.set_input("x", x)
    assert np.array_equal(a.state.sram, b.state.sram)
    assert np.array_equal(a.state.hwm, b.state.hwm) and a.state.hwm.max() > 0
    assert np.array_equal(a.output("x"), x)


# ---- Trainer ------------------------------------------------------------------------------------

def test_steps_are_the_reference_steps_and_params_stay_on_the_mesh():
    t = Trainer(LINEAR, machine=M4)
    assert (t.batch_size, t.inputs, t.outputs) == (64, ["x", "y"], ["loss"])
    params = init_params(GRAPH, 0)
    for k in range(3):
        batch = data(64, seed=k)
        out = t.step(batch)
        params, ref = train_step(GRAPH, params, batch)
        assert out["loss"] == pytest.approx(ref["loss"], rel=TOL)
        got = t.params()
        assert all(close(got[n], params[n]) for n in params)
    assert [r["step"] for r in t.history] == [1, 2, 3]
    assert set(t.history[0]) == {"step", "epoch", "loss", "cycles"}
    assert t.history[0]["cycles"] == t.history[2]["cycles"] > 0


def test_fit_cuts_batches_drops_the_partial_one_and_shuffles_as_documented():
    arrays = data(150)
    t = Trainer(LINEAR, machine=M4)
    plan = t.plan(arrays)
    assert (plan.samples, plan.batch_size, plan.batches, plan.dropped) == (150, 64, 2, 22)
    rows = t.fit(arrays, epochs=3, shuffle=7)
    assert [(r["step"], r["epoch"]) for r in rows] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3),
                                                      (6, 3)]
    params, losses = reference_fit(arrays, 3, 7)
    assert [r["loss"] for r in rows] == pytest.approx(losses, rel=1e-4)
    got = t.params()
    assert all(close(got[n], params[n]) for n in params)
    # Without shuffling the batches are the first samples, in order.
    t2 = Trainer(LINEAR, machine=M4)
    t2.fit(arrays, epochs=1)
    _, plain = reference_fit(arrays, 1, None)
    assert [r["loss"] for r in t2.history] == pytest.approx(plain, rel=1e-4)


def test_given_params_replace_their_init_and_the_rest_are_drawn_with_the_seed():
    text = ("input x: f32[8, 16]\nparam a: f32[16, 8]\nparam b: f32[16, 8] = normal(1)\n"
            "s = sum(sum(x @ a + x @ b, axis=1), axis=0)\nupdate b = b * 0.5\noutput s\n")
    obj = compiler.compile_source(text, M4, "p.d1k")
    g = compiler.check_source(text)
    a = np.full((16, 8), 0.25, dtype=np.float32)
    t = Trainer(obj, params={"a": a}, init_seed=5)
    got = t.params()
    assert np.array_equal(got["a"], a)
    assert np.array_equal(got["b"], init_params(g, 5)["b"])   # drawn with seed 5
    assert not np.array_equal(got["b"], init_params(g, 0)["b"])
    t.step({"x": np.ones((8, 16))})
    assert np.array_equal(t.params()["b"], init_params(g, 5)["b"] * np.float32(0.5))


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((100, 16)), "y": np.zeros((90, 4))},
     "every input must hold the same number of samples; got x 100, y 90"),
    ({"x": np.zeros((100, 15)), "y": np.zeros((100, 4))},
     "input 'x' is [64, 16] per batch, so its samples are an array [N, 16]; got shape "
     "[100, 15]"),
    ({"x": np.zeros((100, 16))}, "give one array for every input of the program; missing: y"),
    ({"x": np.zeros((100, 16)), "y": np.zeros((100, 4)), "z": np.zeros(3)},
     "not inputs: z"),
    ({"x": np.zeros((100, 16)), "y": np.zeros((100, 4)), "w": np.zeros((100, 16, 4))},
     "not inputs: w (inputs: x, y); w is a param: params start from --params FILE.npz "
     "(Trainer(params=...))"),
    ({"x": np.zeros((60, 16)), "y": np.zeros((60, 4))}, "60 samples are fewer than one batch "
                                                        "of 64"),
])
def test_arrays_that_do_not_make_batches_are_errors(arrays, message):
    t = Trainer(LINEAR, machine=M4)
    with pytest.raises(D1Error) as info:
        t.fit(arrays)
    assert message in str(info.value)
    assert t.steps == 0


@pytest.mark.parametrize("params, message", [
    ({"v": np.zeros(4)}, "params: 'v' is not a param of"),
    ({"b": np.zeros(5)}, "params: param 'b' has shape (5,), the program declares (4,)"),
    ([np.zeros(4)], "Trainer(params=...) takes a mapping of param names to arrays, or the path"),
])
def test_bad_params_are_errors(params, message):
    with pytest.raises(D1Error, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        Trainer(LINEAR, params=params, machine=M4)


def test_the_machine_may_be_named_and_anything_else_is_a_clear_error():
    # Trainer(obj, machine=...) as the issue spells it: a name (or .toml path) is loaded as
    # the CLI's --machine loads it; it was used as a Machine and failed with AttributeError.
    t = Trainer(LINEAR, machine="m4x4")
    assert t.machine.name == "m4x4" and (t.machine.cols, t.machine.rows) == (4, 4)
    batch = data(64)
    assert t.step(batch) == Trainer(LINEAR, machine=M4).step(batch)
    with pytest.raises(D1Error, match="unknown machine 'nosuch'"):
        Trainer(LINEAR, machine="nosuch")
    with pytest.raises(D1Error, match=r"Trainer\(machine=\.\.\.\) takes a Machine .*got int"):
        Trainer(LINEAR, machine=4)


def test_params_may_come_from_a_npz_path(tmp_path):
    start = init_params(GRAPH, 5)
    path = tmp_path / "start.npz"
    path.write_bytes(params_npz(start))
    t = Trainer(LINEAR, params=str(path), machine=M4)
    got = t.params()
    assert all(close(got[n], start[n]) for n in start)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(params_npz({"v": np.zeros(3, np.float32)}))
    with pytest.raises(D1Error, match="bad.npz: 'v' is not a param"):
        Trainer(LINEAR, params=bad, machine=M4)


def test_outputs_named_like_the_history_s_own_columns_keep_their_values():
    text = ("input x: f32[64, 16]\ninput y: f32[64, 4]\nparam w: f32[16, 4] = 0\n"
            "d = x @ w - y\nstep = mean(d * d)\ncycles = 0.5 * step\n"
            "update w = w - 0.1 * grad(step, w)\noutput step, cycles\n")
    obj = compiler.compile_source(text, M4, "clash.d1k")
    t = Trainer(obj)
    assert t.columns == {"step": "output.step", "cycles": "output.cycles"}
    batch = data(64)
    out = t.step(batch)
    row = t.history[0]
    assert row["step"] == 1 and row["epoch"] == 0 and row["cycles"] > 100
    assert row["output.step"] == out["step"] and row["output.cycles"] == out["cycles"]
    assert out["cycles"] == pytest.approx(0.5 * out["step"], rel=1e-6)


def test_a_trap_in_a_step_is_a_runtime_fault():
    t = Trainer(LINEAR, machine=M4, max_cycles=100)
    with pytest.raises(RuntimeFault, match="step 1: run trapped"):
        t.step(data(64))
    # Its updates may be half written: no step follows it (one did, without a restart, and
    # reported the stale trap again as if it were its own).
    with pytest.raises(D1Error, match="step 1: run trapped; the params .* no step can follow "
                       "it: make a new Trainer") as e:
        t.step(data(64))
    assert not isinstance(e.value, RuntimeFault) and t.steps == 0 and not t.history


def test_ctrl_c_stops_after_the_current_step():
    t = Trainer(LINEAR, machine=M4)
    seen = []

    def on_step(row):
        seen.append(row["step"])
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)     # as if the user pressed Ctrl-C

    before = signal.getsignal(signal.SIGINT)
    rows = t.fit(data(640), epochs=5, on_step=on_step)
    assert t.interrupted and seen == [1, 2, 3] and len(rows) == 3 and t.steps == 3
    # Three steps of the first epoch: the params are those of the reference's third step.
    p = init_params(GRAPH, 0)
    arrays = data(640)
    for k in range(3):
        p, _ = train_step(GRAPH, p, {n: a[k * 64:(k + 1) * 64] for n, a in arrays.items()})
    got = t.params()
    assert all(close(got[n], p[n]) for n in p)
    # the handler from before is back (the default one; SIG_IGN under `nohup ... &`)
    assert signal.getsignal(signal.SIGINT) is before


def test_totals_add_up_the_steps():
    t = Trainer(LINEAR, machine=M4)
    t.fit(data(256), epochs=2)
    tot = t.totals()
    md = tot["modelled"]
    assert tot["steps"] == 8
    assert md["cycles"] == sum(r["cycles"] for r in t.history)
    assert md["cycles_per_step"] == md["cycles"] / 8
    assert md["seconds"] == pytest.approx(md["cycles"] / M4.clock_hz)
    assert md["flops"] > 0 and md["link_bytes"] > 0 and md["sram_high_water_bytes"] > 0
    assert md["tflops_per_second"] == pytest.approx(md["flops"] / md["seconds"] / 1e12)
    assert md["peak_dtype"] == "f32"
    assert 0 < tot["host"]["emulator_seconds"] <= tot["host"]["step_seconds"]


# ---- params in files and objects ---------------------------------------------------------------

def test_params_npz_round_trips(tmp_path):
    values = {"w": np.arange(64, dtype=np.float32).reshape(16, 4), "b": np.ones(4)}
    path = tmp_path / "p.npz"
    path.write_bytes(params_npz(values))
    back = load_params(path)
    assert set(back) == {"w", "b"} and back["b"].dtype == np.float32
    assert np.array_equal(back["w"], values["w"])


def test_a_params_file_that_is_not_one_is_an_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(D1Error, match="is not a readable .npz file"):
        load_params(bad)
    obj = tmp_path / "o.npz"
    np.savez(obj, s=np.array(["text"]))
    with pytest.raises(D1Error, match="'s' holds <U4 values; params are numbers"):
        load_params(obj)


def npz_of(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    """A .npz file holding `members` as they are (crafted .npy bytes, or not .npy at all)."""
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def npy_claiming(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_a_params_member_whose_header_claims_gigabytes_is_refused_unallocated(tmp_path):
    # 300 bytes declaring 40 GB: numpy allocated it first (a MemoryError, exit 3).
    path = npz_of(tmp_path / "huge.npz", {"w.npy": npy_claiming((100000, 100000), b"\0" * 64)})
    with pytest.raises(D1Error, match="'w' is damaged: its header says shape "
                                      r"\[100000, 100000\]"):
        load_params(path)


def test_a_params_member_that_is_not_an_array_is_refused(tmp_path):
    # np.load hands such a member back as bytes, which had no dtype (AttributeError, exit 3).
    for member in ("w", "w.npy"):
        path = npz_of(tmp_path / "raw.npz", {member: b"hello world"})
        with pytest.raises(D1Error, match="'w' is not a .npy array"):
            load_params(path)


def test_a_params_file_that_expands_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    import d1.params
    monkeypatch.setattr(d1.params, "MAX_PARAMS_BYTES", 1 << 20)
    zeros = npy_claiming((1 << 19,), bytes(4 << 19))          # 2 MiB, a few KiB compressed
    path = npz_of(tmp_path / "bomb.npz", {"w.npy": zeros}, compress=True)
    assert path.stat().st_size < 1 << 16
    with pytest.raises(D1Error, match="more than the 1,048,576-byte limit for a .npz file"):
        load_params(path)


@pytest.mark.parametrize("machine", ["m4x4", "h6x5"])
def test_embedded_params_are_read_back_and_survive_the_object_file(tmp_path, machine):
    text = ("input x: f32[24, 40]\nparam w: bf16[40, 24]\nparam b: f32[24] = 0\n"
            "param c: f32[3, 5, 8] = normal(1)\nz = x @ cast(w, f32) + b\n"
            "update b = b + 1\noutput z\n")
    m = load_machine(machine)
    obj = compiler.compile_source(text, m, "e.d1k")
    prog = from_object(obj)
    rng = np.random.default_rng(3)
    values = {"w": rng.standard_normal((40, 24)), "b": rng.standard_normal(24),
              "c": rng.standard_normal((3, 5, 8))}
    embed_params(obj, values)
    assert embedded(obj) == ["w", "b", "c"]
    path = tmp_path / "e.d1o"
    obj.save(path)
    again = ObjectFile.load(path)
    back = embedded_values(again, ["w", "b", "c"])
    assert np.array_equal(back["w"], round_to(values["w"], "bf16"))
    assert np.array_equal(back["b"], values["b"].astype(np.float32))
    assert np.array_equal(back["c"], values["c"].astype(np.float32))
    # Loading the object places them; a Trainer (and `d1 run`) start from them.
    emu = Emulator(again)
    assert np.array_equal(emu.output("w"), back["w"])
    assert np.array_equal(emu.output("c"), back["c"])
    t = Trainer(again)
    assert np.array_equal(t.params()["b"], back["b"])
    t.step({"x": np.zeros((24, 40))})
    assert np.array_equal(t.params()["b"], back["b"] + 1)
    start = starting_params(prog, {"b": np.zeros(24)})
    assert np.array_equal(start["b"], np.zeros(24)) and np.array_equal(start["w"], back["w"])


def test_a_batch_that_is_not_a_mapping_and_bad_fit_arguments_are_d1_errors():
    """step(None) was a TypeError ("argument of type 'NoneType' is not iterable"), a list a
    confusing "not inputs: 1, 2", fit(epochs="2") "can only concatenate str" and
    fit(shuffle="a") numpy's SeedSequence error."""
    t = Trainer(LINEAR, machine=M4, init_seed=0)
    data = {"x": np.zeros((64, 16)), "y": np.zeros((64, 4))}
    for bad in (None, [1, 2]):
        with pytest.raises(D1Error, match="a mapping of input names to arrays"):
            t.step(bad)
        with pytest.raises(D1Error, match="a mapping of input names to arrays"):
            t.fit(bad)
    for kw in ({"epochs": "2"}, {"epochs": -1}, {"epochs": True}, {"shuffle": "a"}):
        with pytest.raises(D1Error, match=f"fit\\({next(iter(kw))}=...\\) takes an integer"):
            t.fit(data, **kw)
    # a ragged list was numpy's ValueError (from step and from fit), fit(on_step=3) a
    # TypeError after its first step had run, step(epoch="a") recorded as the row's epoch
    ragged = {"x": [[0.0] * 16, [0.0]], "y": data["y"]}
    for call in (t.step, t.fit):
        with pytest.raises(D1Error, match="input 'x' cannot be read as an array"):
            call(ragged)
    with pytest.raises(D1Error, match=r"fit\(on_step=...\) takes a function"):
        t.fit(data, on_step=3)
    with pytest.raises(D1Error, match=r"step\(epoch=...\) takes an integer >= 0"):
        t.step(data, epoch="a")
    assert t.steps == 0
    assert len(t.fit(data, epochs=np.int64(1), shuffle=0)) == 1
    with pytest.raises(D1Error, match="threads must be >= 1, got 0"):
        Trainer(LINEAR, machine=M4, threads=0)


def test_a_params_file_with_two_arrays_of_one_name_is_refused(tmp_path):
    # one of them was kept, silently ('w' and 'w.npy' name the same param too)
    import warnings
    import zipfile

    one = npy_claiming((2,), np.zeros(2, np.float32).tobytes())
    for names in (("w.npy", "w.npy"), ("w", "w.npy")):
        path = tmp_path / "twice.npz"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")            # zipfile warns of the duplicate name
            with zipfile.ZipFile(path, "w") as z:
                for name in names:
                    z.writestr(name, one)
        with pytest.raises(D1Error, match="holds two arrays named 'w'"):
            load_params(path)
