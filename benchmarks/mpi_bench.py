"""The emulator on MPI ranks: training steps on 2 x 2 d1 chips, 2 ranks of 1 thread against one
process of 1 thread, measured in the same run.

    python -m benchmarks.mpi_bench          (or `d1 bench mpi`; needs the [mpi] extra)

Two workloads, both one SGD step of a 784-256-256-10 bf16 MLP (programs/train_mlp784.d1k, as
`d1 bench train` and `d1 bench scale` run it) on the d1 chip with chips_x = chips_y = 2 (1,416
nodes), params resident in SRAM, the same batch every step:

- data parallel: the step of a global batch of 1,024 compiled data-parallel for the 2 x 2
  chips (compiler.dataparallel): each chip runs the one-chip step on its 256 samples, then the
  gradients and the loss are all-reduced across the chip edges (and so across the ranks) at
  the end of the step: the ranks work alone until then (the target's case);
- model parallel: the step at batch 256 compiled for the whole 2 x 2-chip machine
  (`-O parallel=whole`), which the compiler spreads over all four chips, with heavy traffic
  across the chip edges (and so across the ranks) all through the step.

Each configuration runs as its own `mpiexec -n R` job (R = 1 is one process, which does not even
import mpi4py), alternating 1, 2, 1, 2, ... ROUNDS times, because the host is shared and its load
changes from minute to minute; each job runs one warm-up step (it loads the compiled loop), then
STEPS timed steps (restart, inputs, run, the loss, the totals: what `d1 train` does per step).
Figures ("measured on the host"):

- step wall time (median over the jobs of each R) and the ratio 2 ranks / 1 process (target
  <= 0.62 for the data-parallel step), and the same ratio from the run loop's CPU seconds (the
  busiest rank's), which a loaded host disturbs less than wall time;
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

import numpy as np

ROUNDS = 3
STEPS = 3
RANKS = (1, 2)
BATCH = 256

PROGRAM = Path(__file__).resolve().parent.parent / "programs" / "train_mlp784.d1k"
SETS = {"chips_x": 2, "chips_y": 2}


def mpiexec() -> str | None:
    """The launcher beside this Python (the MPICH wheel's), else one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def prepare(tmp: Path, report: Callable[[str], None]) -> dict[str, Path]:
    """Compile both workloads into tmp; their objects and the starting params."""
    from compiler.dataparallel import scale_batch
    from compiler.pipeline import CompileOptions
    from d1.params import starting_params
    from d1.program import load_program
    from d1isa.machine import load_machine

    four = load_machine("d1", overrides=SETS)
    chips = SETS["chips_x"] * SETS["chips_y"]
    text = PROGRAM.read_text()
    src = tmp / "train_mlp.d1k"
    src.write_text(text)
    dp_src = tmp / "train_mlp_global.d1k"
    dp_src.write_text(scale_batch(text, chips, str(PROGRAM)))
    t0 = time.perf_counter()
    dp = load_program(dp_src, four)
    if "parallel" not in dp.obj.meta:
        raise RuntimeError("the training step was not compiled data-parallel")
    dp.obj.save(tmp / "dp.d1o")
    np.savez(tmp / "params.npz", **starting_params(dp, None, 0))
    t1 = time.perf_counter()
    mp = load_program(src, four, CompileOptions(parallel="whole"))
    mp.obj.save(tmp / "mp.d1o")
    report(f"compiled the 784-256-256-10 MLP step for 2 x 2 d1 chips, data-parallel at "
           f"{BATCH} a chip ({t1 - t0:.0f} s) and spread over the whole machine at {BATCH} "
           f"({time.perf_counter() - t1:.0f} s)")
    return {"dp": tmp / "dp.d1o", "mp": tmp / "mp.d1o", "params": tmp / "params.npz"}


def worker(obj_path: str, params_path: str, steps: int, out: str) -> int:
    """One job: rank 0 steps the emulator as d1 train does, the other ranks serve."""
    from d1isa.objfile import ObjectFile
    from emulator import Emulator
    from emulator.distributed import peak_rss
    from emulator.mpi import world

    comm = world()
    if comm is not None and comm.Get_rank() > 0:
        from emulator.distributed import serve_or_abort
        return serve_or_abort(comm)
    obj = ObjectFile.load(obj_path)
    emu = Emulator(obj, threads=1, comm=comm)
    params = np.load(params_path)
    names = {t.name: t for t in obj.tensors}
    for name in params.files:
        if name in names:
            emu.set_input(name, params[name])
    rows = names["x"].shape[0]
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((rows, 784)).astype(np.float32),
             "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, rows)]}

    cpu_one = [0.0]                     # one process: CPU seconds of its runs

    def step() -> tuple[list[float], int]:
        emu.restart()
        for name, a in batch.items():
            emu.set_input(name, a)
        c0 = time.process_time()
        res = emu.run()
        cpu_one[0] += time.process_time() - c0
        assert res.ok, res.report()
        return [float(v).hex() for v in emu.output("loss").reshape(-1)], emu.totals()["cycles"]

    step()                              # warm-up: loads the compiled loop on every rank
    cpu_one[0] = 0.0
    s0 = emu.stats()["host"]
    walls, losses, cycles = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, cyc = step()
        walls.append(time.perf_counter() - t0)
        losses.append(loss)
        cycles.append(cyc)
    s1 = emu.stats()["host"]
    doc = {"ranks": 1 if comm is None else comm.Get_size(), "step_wall": walls,
           "losses": losses, "cycles": cycles}
    if comm is None:
        doc.update(emulation=[s1["wall_seconds"] - s0["wall_seconds"]], sync=[0.0],
                   cpu=[cpu_one[0]], windows=0, window=0, state_bytes=[s1["state_bytes"]],
                   rss=[peak_rss()])
    else:
        doc.update(emulation=_diff(s1, s0, "emulation_seconds_by_rank"),
                   sync=_diff(s1, s0, "sync_seconds_by_rank"),
                   cpu=_diff(s1, s0, "cpu_seconds_by_rank"),
                   windows=s1["windows"] - s0["windows"], window=s1["window_cycles"],
                   state_bytes=s1["state_bytes_by_rank"], rss=s1["peak_rss_bytes_by_rank"])
    Path(out).write_text(json.dumps(doc))
    if comm is not None:
        from emulator.distributed import finish
        emu.close()
        finish(comm, 0)
    return 0


def _diff(a: dict, b: dict, key: str) -> list[float]:
    return [x - y for x, y in zip(a[key], b[key], strict=True)]


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
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="d1-mpi-bench-") as tmp:
        files = prepare(Path(tmp), report)
        for kind, title in (("dp", "data-parallel step (4 chips x batch 256, all-reduced)"),
                            ("mp", "model-parallel step (batch 256 over 4 chips)")):
            jobs: dict[int, list[dict]] = {r: [] for r in RANKS}
            for k in range(ROUNDS):
                for r in RANKS:
                    dest = Path(tmp) / f"{kind}-r{r}-{k}.json"
                    cmd = [launcher, "-n", str(r), sys.executable, "-m", "benchmarks.mpi_bench",
                           "--worker", str(files[kind]), str(files["params"]), str(STEPS),
                           str(dest)]
                    subprocess.run(cmd, env=env, check=True, timeout=1800)
                    jobs[r].append(json.loads(dest.read_text()))
            figures = _figures(title, jobs, report)
            out.update({f"{kind}_{k}": v for k, v in figures.items()})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report(f"host load average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs (a "
           "shared host: the figures move with it)")
    return out


def _figures(title: str, jobs: dict[int, list[dict]], report: Callable[[str], None]
             ) -> dict[str, float]:
    one, two = jobs[1], jobs[2]
    same = all(j["losses"] == one[0]["losses"] and j["cycles"] == one[0]["cycles"]
               for js in jobs.values() for j in js)
    step = {r: statistics.median(statistics.median(j["step_wall"]) for j in js)
            for r, js in jobs.items()}
    # per step: the busiest rank's CPU seconds (the process's, for one process), the slowest
    # rank's time in window exchange and in emulation
    cpu = {r: statistics.median(max(j["cpu"]) / STEPS for j in js) for r, js in jobs.items()}
    sync = statistics.median(max(j["sync"]) / STEPS for j in two)
    emul = statistics.median(max(j["emulation"]) / STEPS for j in two)
    mem_ratio = max(two[0]["state_bytes"]) / one[0]["state_bytes"][0]
    rss_ratio = max(two[0]["rss"]) / one[0]["rss"][0]
    ratio = step[2] / step[1]
    cpu_ratio = cpu[2] / cpu[1]
    report(f"{title}:")
    report(f"  step, 1 process of 1 thread            {step[1]:.3f} s (median of {len(one)} "
           f"jobs x {STEPS} steps); CPU {cpu[1]:.3f} s")
    report(f"  step, 2 ranks of 1 thread              {step[2]:.3f} s; busiest rank's run-loop "
           f"CPU {cpu[2]:.3f} s")
    report(f"  ratio (wall)                           {ratio:.3f}  (target <= 0.62 for the "
           "data-parallel step)")
    report(f"  ratio (CPU)                            {cpu_ratio:.3f}")
    report(f"  window exchange (sync overhead)        {sync:.3f} s per step = "
           f"{100 * sync / emul if emul else 0:.1f}% of the slowest rank's emulation; "
           f"{two[0]['windows'] // STEPS} windows of {two[0]['window']} cycles per step")
    report(f"  state per rank / one process           {mem_ratio:.3f}  (target <= 0.6; "
           f"{max(two[0]['state_bytes']):,} B / {one[0]['state_bytes'][0]:,} B)")
    report(f"  peak RSS per rank / one process        {rss_ratio:.3f}  "
           f"({' + '.join(f'{b:,}' for b in two[0]['rss'])} B / {one[0]['rss'][0]:,} B; "
           "Python, Numba, the code and on rank 0 the object included)")
    report(f"  bit-identical (loss, cycles)           {'yes' if same else 'NO'}")
    return {"step_1": step[1], "step_2": step[2], "ratio": ratio, "cpu_ratio": cpu_ratio,
            "sync_seconds": sync, "state_ratio": mem_ratio, "rss_ratio": rss_ratio,
            "identical": float(same)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(*sys.argv[2:4], int(sys.argv[4]), sys.argv[5]))
    run()


if __name__ == "__main__":
    main()
