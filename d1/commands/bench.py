"""`d1 bench`: run the benchmarks in benchmarks/, each in a fresh single-threaded-BLAS process."""

from __future__ import annotations

import os
import subprocess
import sys

import click

SUITES = {
    "emulator": "benchmarks.emulator_bench",
    "compiler": "benchmarks.compiler_bench",
    "debugger": "benchmarks.debugger_bench",
    "train": "benchmarks.train_bench",
    "mpi": "benchmarks.mpi_bench",
    "scale": "benchmarks.scale_bench",
}


@click.command()
@click.argument("suite", type=click.Choice([*SUITES, "all"]), default="all")
def bench(suite: str) -> None:
    """Measure speed targets; every figure is printed beside its same-run baseline.

    Each suite runs in its own process with one BLAS thread, so the numpy baselines are
    single-threaded as the targets require. Figures are "measured on the host".

    \b
    Examples:
      d1 bench emulator
      d1 bench train
      d1 bench mpi                   (the emulator on 2 MPI ranks; needs the [mpi] extra)
      d1 bench scale
      d1 bench all
    """
    names = list(SUITES) if suite == "all" else [suite]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    failed = []
    for name in names:
        click.echo(f"== {name} ==")
        rc = subprocess.call([sys.executable, "-m", SUITES[name]], env=env)
        if rc != 0:
            failed.append(name)
    if failed:
        click.echo(f"benchmark(s) failed to run: {', '.join(failed)}", err=True)
        raise SystemExit(1)
