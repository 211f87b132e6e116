"""The emulator on MPI ranks: a training step on 2 x 2 d1 chips, 2 ranks of 1 thread against one
process of 1 thread, measured in the same run.

    python -m benchmarks.mpi_bench          (or `d1 bench mpi`; needs the [mpi] extra)

Workload: one SGD step of a 784-256-256-10 bf16 MLP at batch 256 (PROGRAM below), compiled for
the d1 chip with chips_x = chips_y = 2 (1,416 nodes; the compiler spreads the layers over all
four chips), its params resident in SRAM (d1.train.Trainer), the same batch every step.

Each configuration runs as its own `mpiexec -n R` job (R = 1 is one process, which does not even
import mpi4py), alternating 1, 2, 1, 2, ... ROUNDS times, because the host is shared and its load
changes from minute to minute; each job makes a Trainer, runs one warm-up step (it loads the
compiled loop), then STEPS timed steps. Figures ("measured on the host"):

- step wall time (median over the jobs of each R) and the ratio 2 ranks / 1 process (target
  <= 0.62), and the same ratio from the jobs' CPU time (the busiest rank's CPU seconds in the
  run loop, which a loaded host disturbs less than wall time);
- the window exchange (sync overhead): seconds per step on the slowest rank and its share of the
  step's emulation, with the number of windows and their length (the lookahead);
- memory: emulator state bytes per rank against one process (target <= 0.6), and each rank's
  peak resident set (which also holds Python, Numba and the compiled loop);
- that the two configurations agree bit for bit (loss and modelled cycles of every step).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS = 3
STEPS = 3
# Ranks of the compared configurations.
RANKS = (1, 2)

PROGRAM = """\
# The MPI benchmark's training step: a 784-256-256-10 bf16 MLP, batch 256, plain SGD.
input x: bf16[256, 784]
input y: f32[256, 10]
param w1: bf16[784, 256]
param b1: f32[256]
param w2: bf16[256, 256]
param b2: f32[256]
param w3: bf16[256, 10]
param b3: f32[10]
h1 = relu(x @ w1 + b1)
h2 = relu(cast(h1, bf16) @ w2 + b2)
z = cast(h2, bf16) @ w3 + b3
loss = -mean(sum(y * log_softmax(z, axis=1), axis=1))
update w1 = w1 - 0.05 * grad(loss, w1)
update b1 = b1 - 0.05 * grad(loss, b1)
update w2 = w2 - 0.05 * grad(loss, w2)
update b2 = b2 - 0.05 * grad(loss, b2)
update w3 = w3 - 0.05 * grad(loss, w3)
update b3 = b3 - 0.05 * grad(loss, b3)
output loss
"""
SETS = {"chips_x": 2, "chips_y": 2}


def mpiexec() -> str | None:
    """The launcher beside this Python (the MPICH wheel's), else one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def compile_object(dest: Path) -> float:
    """PROGRAM compiled for the benchmark machine into dest; returns the compile seconds."""
    from d1.program import load_program
    from d1isa.machine import load_machine

    src = dest.with_suffix(".d1k")
    src.write_text(PROGRAM)
    t0 = time.perf_counter()
    prog = load_program(src, load_machine("d1", overrides=SETS))
    prog.obj.save(dest)
    return time.perf_counter() - t0


def worker(obj_path: str, steps: int, out: str) -> int:
    """One job: rank 0 trains, the other ranks serve (as under `mpiexec -n R d1 train`)."""
    import numpy as np

    from d1.train import Trainer
    from d1isa.objfile import ObjectFile
    from emulator.distributed import peak_rss
    from emulator.mpi import world

    comm = world()
    if comm is not None and comm.Get_rank() > 0:
        from emulator.distributed import serve_or_abort
        return serve_or_abort(comm)
    t = Trainer(ObjectFile.load(obj_path), threads=1, comm=comm)
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((256, 784)).astype(np.float32),
             "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 256)]}
    t.step(batch)                       # warm-up: loads the compiled loop on every rank
    s0 = t.emu.stats()["host"]
    walls, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(t.step(batch)["loss"])
        walls.append(time.perf_counter() - t0)
    s1 = t.emu.stats()["host"]
    doc = {"ranks": 1 if comm is None else comm.Get_size(), "step_wall": walls,
           "losses": [float(v).hex() for v in losses],
           "cycles": [r["cycles"] for r in t.history[1:]]}
    if comm is None:
        doc.update(emulation=[s1["wall_seconds"] - s0["wall_seconds"]], sync=[0.0],
                   cpu=[s1["wall_seconds"] - s0["wall_seconds"]], windows=0, window=0,
                   state_bytes=[s1["state_bytes"]], rss=[peak_rss()])
        doc["cpu"] = [_cpu_of_run(t, steps, batch)]
    else:
        doc.update(emulation=_diff(s1, s0, "emulation_seconds_by_rank"),
                   sync=_diff(s1, s0, "sync_seconds_by_rank"),
                   cpu=_diff(s1, s0, "cpu_seconds_by_rank"),
                   windows=s1["windows"] - s0["windows"], window=s1["window_cycles"],
                   state_bytes=s1["state_bytes_by_rank"], rss=s1["peak_rss_bytes_by_rank"])
    Path(out).write_text(json.dumps(doc))
    if comm is not None:
        from emulator.distributed import finish
        finish(comm, 0)
    return 0


def _diff(a: dict, b: dict, key: str) -> list[float]:
    return [x - y for x, y in zip(a[key], b[key], strict=True)]


def _cpu_of_run(t, steps: int, batch: dict) -> float:
    """One process: the CPU seconds of its run loop over `steps` more steps (the same steps,
    measured the way each rank measures its own)."""
    emu = t.emu
    total = 0.0
    for _ in range(steps):
        emu.restart()
        for name in t.inputs:
            emu.set_input(name, batch[name])
        c0 = time.process_time()
        emu.run()
        total += time.process_time() - c0
    return total


def run(report: Callable[[str], None] = print) -> dict[str, float]:
    launcher = mpiexec()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        launcher = None
    if launcher is None:
        report("mpi: skipped (mpi4py or mpiexec not installed: pip install -e '.[mpi]')")
        return {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory(prefix="d1-mpi-bench-") as tmp:
        obj = Path(tmp) / "train_mlp.d1o"
        secs = compile_object(obj)
        report(f"compiled the 784-256-256-10 MLP step for d1 x 2 x 2 chips in {secs:.1f} s")
        jobs: dict[int, list[dict]] = {r: [] for r in RANKS}
        for k in range(ROUNDS):
            for r in RANKS:
                out = Path(tmp) / f"r{r}-{k}.json"
                cmd = [launcher, "-n", str(r), sys.executable, "-m", "benchmarks.mpi_bench",
                       "--worker", str(obj), str(STEPS), str(out)]
                subprocess.run(cmd, env=env, check=True, timeout=1800)
                jobs[r].append(json.loads(out.read_text()))
        return _figures(jobs, report)


def _figures(jobs: dict[int, list[dict]], report: Callable[[str], None]) -> dict[str, float]:
    one, two = jobs[1], jobs[2]
    same = all(j["losses"] == one[0]["losses"] and j["cycles"] == one[0]["cycles"]
               for js in jobs.values() for j in js)
    step = {r: statistics.median(statistics.median(j["step_wall"]) for j in js)
            for r, js in jobs.items()}
    # per step: the busiest rank's CPU seconds in the run loop, and the slowest rank's exchange
    cpu = {r: statistics.median(max(j["cpu"]) / STEPS for j in js) for r, js in jobs.items()}
    sync = statistics.median(max(j["sync"]) / STEPS for j in two)
    emul = statistics.median(max(j["emulation"]) / STEPS for j in two)
    mem_ratio = max(two[0]["state_bytes"]) / one[0]["state_bytes"][0]
    rss_ratio = max(two[0]["rss"]) / one[0]["rss"][0]
    ratio = step[2] / step[1]
    cpu_ratio = cpu[2] / cpu[1]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report(f"training step, 1 process of 1 thread:   {step[1]:.3f} s (median of {len(one)} jobs "
           f"x {STEPS} steps); run-loop CPU {cpu[1]:.3f} s")
    report(f"training step, 2 ranks of 1 thread:     {step[2]:.3f} s; busiest rank's run-loop "
           f"CPU {cpu[2]:.3f} s")
    report(f"  ratio (wall)                          {ratio:.3f}  (target <= 0.62)")
    report(f"  ratio (CPU of the busiest rank)       {cpu_ratio:.3f}")
    report(f"  window exchange (sync overhead)       {sync:.3f} s per step = "
           f"{100 * sync / emul if emul else 0:.1f}% of the slowest rank's emulation; "
           f"{two[0]['windows'] // STEPS} windows of {two[0]['window']} cycles per step")
    report(f"  state per rank / one process          {mem_ratio:.3f}  (target <= 0.6; "
           f"{max(two[0]['state_bytes']):,} B / {one[0]['state_bytes'][0]:,} B)")
    report(f"  peak RSS per rank / one process       {rss_ratio:.3f}  "
           f"({max(two[0]['rss']):,} B / {one[0]['rss'][0]:,} B; Python, Numba and the "
           "compiled loop included)")
    report(f"  bit-identical (loss, cycles)          {'yes' if same else 'NO'}")
    report(f"  host load average (1 min) at the end  {load:.2f} on {os.cpu_count()} CPUs "
           "(shared host: figures vary with it)")
    return {"step_1": step[1], "step_2": step[2], "ratio": ratio, "cpu_ratio": cpu_ratio,
            "sync_seconds": sync, "state_ratio": mem_ratio, "rss_ratio": rss_ratio,
            "identical": float(same)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    run()


if __name__ == "__main__":
    main()
