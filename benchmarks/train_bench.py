"""Training figures, each printed with its target and PASS/FAIL, next to a same-run baseline.

    python -m benchmarks.train_bench          (or: d1 bench train)

- one training step of a 784-256-256-10 bf16 MLP at batch 256 (programs/train_mlp784.d1k:
  forward, softmax cross-entropy loss, backward, SGD update; the backward pass runs in f32 as
  the language says) on the d1 machine, modelled: cycles, the useful FLOPs of its eight matmuls
  (2 M N K each: three forward, three weight gradients, two activation gradients) over the
  modelled time against the machine's BF16 peak (`Machine.peak_flops["bf16"]`, all 354 live
  nodes); target >= 30 %. Beside it, where the step's time goes: the share of node-cycles
  (busy and waiting, summed over the nodes, from the emulator's per-region statistics) spent in
  the forward pass, in the backward pass (the steps `compiler.differentiate` adds: they carry
  the position of a `grad` call) and in the updates (the `update` statements' own kernels),
  and the cycle at which the last node leaves each part. The outputs and updated params are
  compared with the numpy reference (`compiler.evaluate`) at the --check tolerance.
- the emulator's wall time for that step (`Emulator.run`, JIT excluded, best of 5, measured on
  the host) against numpy's float32 forward and backward pass of the same MLP on one thread
  (the same matmuls, relu masks, softmax and bias sums; no update), interleaved in the same
  run; target <= 10x. A step as the training loop runs it (d1.train.Trainer): the emulator
  made and run once, then each timed step after `restart` and the step's inputs, as every
  step after the first of `d1 train`. Measured with the thread count `d1 train` uses
  (emulator.auto_threads), and for information on one thread; also for information, the
  first run of a new emulator, which pays once for committing the memory its nodes first
  write (FIFO slots, message buffers in SRAM: page faults, about 20 ms here).
- the digits classifier (programs/train_digits.d1k on scikit-learn's digits): the run of
  the acceptance and the README, `--init 0 --epochs 30 --shuffle 0` (660 steps), through
  `d1.train.Trainer.fit`, the loop behind `d1 train`: the share of the
  loop's wall time spent in the emulator's run loop (measured on the host, compiling the
  emulator's loop excluded); target >= 80 %. The rest is the host's work between steps
  (restart, scattering the batch, reading the loss, bookkeeping). The one-off costs of a
  `d1 train` run (compiling the program, loading the emulator's jitted loop) are printed
  beside it.

Exit status 0 whether or not a target is met; non-zero only if a figure cannot be measured.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from benchmarks import take_arguments  # noqa: E402
from compiler.ir import Op  # noqa: E402
from compiler.pipeline import compile_text  # noqa: E402
from d1isa.machine import load_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "programs" / "train_mlp784.d1k"
DIGITS = ROOT / "programs" / "train_digits.d1k"
LAYERS = (784, 256, 256, 10)
BATCH = 256
REPEATS = 5
DIGITS_EPOCHS = 30          # the README's digits run: --init 0 --epochs 30 --shuffle 0
TARGET_PEAK = 30.0          # % of the BF16 peak
TARGET_RATIO = 10.0         # emulation wall time / numpy's
TARGET_SHARE = 80.0         # % of the training loop's wall time in the emulator


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def mlp_flops(batch: int = BATCH, layers: tuple[int, ...] = LAYERS) -> dict[str, int]:
    """Useful FLOPs (2 M N K per matmul) of one step: the forward matmuls, the weight gradients
    (transpose(h) @ g, one per layer) and the activation gradients (g @ transpose(w), every
    layer but the first: x is an input, nobody asks for its gradient)."""
    mk = [2 * batch * a * b for a, b in zip(layers, layers[1:], strict=False)]
    return {"forward": sum(mk), "backward": sum(mk) + sum(mk[1:])}


def parts_of(text: str, filename: str) -> tuple[set, set]:
    """The source positions of the backward pass (every `grad` call: the steps
    `differentiate` adds carry the position of the first grad call of their pass) and the lines
    of the `update` statements."""
    graph = compiler.check_source(text, load_machine("d1"), filename)
    grads = {(n.line, n.col) for n in graph.nodes if n.op is Op.GRAD}
    return grads, {u.line for u in graph.updates}


def one_hot_inputs(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """x from a seeded normal (rounded to bf16, as `compiler.make_inputs`), y one-hot labels."""
    inputs = compiler.make_inputs(graph, seed)
    n, classes = inputs["y"].shape
    labels = np.random.default_rng(seed + 1).integers(0, classes, n)
    inputs["y"] = np.eye(classes, dtype=np.float32)[labels]
    return inputs


def load_step(emu, inputs: dict, params: dict) -> None:
    for name, value in {**inputs, **params}.items():
        emu.set_input(name, value)


def bench_step() -> dict:
    """Compile and run one step on d1 with per-region statistics; check it."""
    from compiler.reference import init_params, update_key
    from emulator import Emulator
    m = load_machine("d1")
    text = MLP.read_text(encoding="utf-8")
    name = str(MLP.relative_to(ROOT))
    t0 = time.perf_counter()
    c = compile_text(text, m, name)
    compile_s = time.perf_counter() - t0
    inputs = one_hot_inputs(c.graph)
    params = init_params(c.graph, 0)
    emu = Emulator(c.obj, trace="regions")
    load_step(emu, inputs, params)
    result = emu.run()
    if not result.ok:
        raise RuntimeError(result.report())
    st = emu.stats()
    got = {o.name: emu.output(o.name) for o in c.graph.outputs}
    got.update({update_key(u.param.name): emu.output(u.param.name) for u in c.graph.updates})
    ref = compiler.evaluate(c.graph, inputs, params)
    rows = compiler.compare_outputs(c.graph, got, ref)
    grads, update_lines = parts_of(text, name)
    parts = {"forward": [0, 0], "backward": [0, 0], "update": [0, 0]}   # node-cycles, end
    for r in st["regions"]:
        if (r["line"], r["col"]) in grads:
            key = "backward"
        elif r["line"] in update_lines:
            key = "update"
        else:
            key = "forward"
        parts[key][0] += r["node_cycles"]
        parts[key][1] = max(parts[key][1], r["end_cycle"])
    total = sum(v[0] for v in parts.values()) or 1
    flops = mlp_flops()
    seconds = result.cycles / m.clock_hz
    useful = flops["forward"] + flops["backward"]
    return {"cycles": result.cycles, "useful_flops": useful,
            "pct": 100 * useful / seconds / m.peak_flops["bf16"],
            "tflops": useful / seconds / 1e12,
            "shares": {k: 100 * v[0] / total for k, v in parts.items()},
            "ends": {k: v[1] for k, v in parts.items()},
            "ok": all(r[4] for r in rows), "max_err": max(r[1] for r in rows),
            "compile_s": compile_s, "link_bytes": st["modelled"]["link_bytes"],
            "obj": c.obj, "inputs": inputs, "params": params,
            "grid_bound": 100 * c.grid.size / m.n_live}


def numpy_step(x, y, w1, b1, w2, b2, w3, b3) -> float:
    """float32 forward and backward pass of the MLP: what one step computes, in numpy."""
    a1 = x @ w1 + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w2 + b2
    h2 = np.maximum(a2, 0)
    z = h2 @ w3 + b3
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(y * (z - m - np.log(s)), axis=1))
    g3 = (e / s - y) / np.float32(x.shape[0])
    dw3, db3 = h2.T @ g3, g3.sum(axis=0)
    g2 = (g3 @ w3.T) * (a2 > 0)
    dw2, db2 = h1.T @ g2, g2.sum(axis=0)
    g1 = (g2 @ w2.T) * (a1 > 0)
    dw1, db1 = x.T @ g1, g1.sum(axis=0)
    del dw1, db1, dw2, db2, dw3, db3
    return float(loss)


def bench_emulation(step: dict, repeats: int = REPEATS) -> dict:
    """Best wall time of Emulator.run for the step, per thread count, and numpy's."""
    from emulator import Emulator, auto_threads
    obj, inputs, params = step["obj"], step["inputs"], step["params"]
    args = [np.asarray(a, dtype=np.float32) for a in
            (inputs["x"], inputs["y"], params["w1"], params["b1"], params["w2"], params["b2"],
             params["w3"], params["b3"])]
    numpy_step(*args)
    auto = auto_threads(obj.machine.n_live)
    counts = sorted({1, auto})
    best = {t: float("inf") for t in counts}
    first = float("inf")
    best_np = float("inf")
    emus = {}
    for t in counts:
        emu = emus[t] = Emulator(obj, threads=t)
        load_step(emu, inputs, params)
        emu.run(max_instructions=0)       # load the jitted loop outside the timing
        t0 = time.perf_counter()
        result = emu.run()                # the first step: a new emulator's memory committed
        if t == auto:
            first = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(result.report())
    for _ in range(repeats):
        for t in counts:
            emu = emus[t]
            emu.restart()
            load_step(emu, inputs, params)
            t0 = time.perf_counter()
            result = emu.run()
            best[t] = min(best[t], time.perf_counter() - t0)
            if not result.ok:
                raise RuntimeError(result.report())
        t0 = time.perf_counter()
        numpy_step(*args)
        best_np = min(best_np, time.perf_counter() - t0)
    return {"threads": best, "auto": auto, "numpy": best_np, "first": first}


def bench_digits(epochs: int = DIGITS_EPOCHS) -> dict:
    """The digits classifier through Trainer.fit: how much of the loop is the emulator."""
    from d1.digits import load, split
    from d1.program import load_program
    from d1.train import Trainer
    data = split(*load())
    t0 = time.perf_counter()
    prog = load_program(DIGITS)
    compile_s = time.perf_counter() - t0
    trainer = Trainer(prog, init_seed=0)
    arrays = {"x": data["x_train"], "y": data["y_train"]}
    emu = trainer.emu
    host0, jit0 = emu.host_seconds, emu.jit_seconds
    t0 = time.perf_counter()
    trainer.fit(arrays, epochs=epochs, shuffle=0)
    wall = time.perf_counter() - t0
    jit = emu.jit_seconds - jit0
    loop = wall - jit
    in_emu = emu.host_seconds - host0
    return {"steps": trainer.steps, "loop": loop, "emulator": in_emu, "jit": jit,
            "share": 100 * in_emu / loop if loop > 0 else 0.0, "compile_s": compile_s,
            "per_step_ms": 1e3 * loop / max(trainer.steps, 1),
            "host_per_step_ms": 1e3 * (loop - in_emu) / max(trainer.steps, 1),
            "threads": emu.threads}


def main(argv: list[str] | None = None) -> None:
    take_arguments(argv, "train_bench", "train")
    print("training benchmarks (d1 machine: 354 live nodes; 'modelled' figures come from the "
          "emulator's timing model, times are measured on the host)")
    d = bench_digits()          # first: the process loads the emulator's jitted loop here
    s = bench_step()
    f = mlp_flops()
    print(f"MLP 784-256-256-10 bf16, batch 256, one SGD step: {s['cycles']:,} cycles modelled "
          f"= {s['cycles'] / 2e3:.2f} us, {s['tflops']:.1f} TFLOP/s of useful work "
          f"({(f['forward'] + f['backward']) / 1e6:.1f} MFLOP: forward {f['forward'] / 1e6:.1f}, "
          f"backward {f['backward'] / 1e6:.1f}); matches the reference: "
          f"{'yes' if s['ok'] else 'NO'} (max abs err {s['max_err']:.2g})")
    print(f"  % of the BF16 peak             {s['pct']:6.1f} %   (target >= {TARGET_PEAK:.0f} %: "
          f"{verdict(s['pct'] >= TARGET_PEAK)}; bound of the grid itself "
          f"{s['grid_bound']:.1f} %)")
    sh, ends = s["shares"], s["ends"]
    print(f"  where the node-cycles go       forward {sh['forward']:.1f} %, backward "
          f"{sh['backward']:.1f} %, updates {sh['update']:.1f} %  (last node leaves the "
          f"forward pass at cycle {ends['forward']:,}, the backward pass at "
          f"{ends['backward']:,}, the updates at {ends['update']:,})")
    e = bench_emulation(s)
    for t, wall in sorted(e["threads"].items(), reverse=True):
        ratio = wall / e["numpy"]
        if t == e["auto"]:
            tail = f"target <= {TARGET_RATIO:.0f}x: {verdict(ratio <= TARGET_RATIO)}"
        else:
            tail = "for information"
        print(f"emulating that step             {wall * 1e3:6.1f} ms  on {t} thread"
              f"{'s' * (t > 1)} = {ratio:.1f}x numpy's f32 forward + backward on 1 thread "
              f"({e['numpy'] * 1e3:.2f} ms, same run; {tail})")
    print(f"  a new emulator's first step    {e['first'] * 1e3:6.1f} ms  on {e['auto']} thread"
          f"{'s' * (e['auto'] > 1)} = {e['first'] / e['numpy']:.1f}x (once per emulator: its "
          "nodes' first writes commit memory; for information)")
    print(f"digits training loop ({d['steps']} steps, {DIGITS_EPOCHS} epochs, "
          f"{d['threads']} emulator thread{'s' * (d['threads'] > 1)})  {d['share']:5.1f} % of "
          f"its wall time in the emulator   (target >= {TARGET_SHARE:.0f} %: "
          f"{verdict(d['share'] >= TARGET_SHARE)}; {d['per_step_ms']:.2f} ms a step, "
          f"{d['host_per_step_ms']:.2f} ms of it on the host between runs)")
    print(f"  one-off costs of the run       compiling the program {d['compile_s']:.2f} s, "
          f"loading the emulator's jitted loop {d['jit']:.2f} s (Numba's cache)")


if __name__ == "__main__":
    main()
