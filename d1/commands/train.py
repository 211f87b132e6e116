"""`d1 train`: run a training program over whole data sets, params resident in SRAM."""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import click

from d1.options import (
    MAX_SEED,
    emulated_machine,
    machine_options,
    max_cycles_option,
    threads_option,
)
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import (
    check_destination,
    check_output_dir,
    refuse_overwrite,
    refuse_twice,
    write_atomic,
)
from d1isa.machine import machine_files

MAX_EPOCHS = 1_000_000
OUT_FILES = ("params.npz", "history.csv", "loss.png")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="The whole data set of input NAME: N samples along axis 0 (repeatable; "
                   "every input of the program, all with the same N).")
@click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Start the params from this .npz (one array per param name, e.g. an "
                   "earlier run's params.npz); params it does not hold start from the values "
                   "the object embeds (d1 compile --params), else from their INIT.")
@click.option("--init", "init_seed", type=click.IntRange(0, MAX_SEED), default=0,
              show_default=True,
              help="Seed of the random INITs (glorot, normal) of params that neither --params "
                   "nor the object gives values (a note says when it seeds none).")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=1, show_default=True,
              help="Passes over the data set.")
@click.option("--shuffle", "shuffle_seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Shuffle the samples before each epoch, from this seed (default: no "
                   "shuffling, batches in file order).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default="out",
              show_default=True,
              help="Where params.npz, history.csv and loss.png are written.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, allow_dash=True,
                                                     path_type=Path),
              help="Also write the history and the totals as JSON ('-': to standard output).")
@click.option("--quiet", is_flag=True, help="No progress bar (or lines per epoch).")
@click.option("--stats", is_flag=True,
              help="Also print the whole run's modelled statistics: cycles, instructions, "
                   "FLOPs, link bytes on chip and across chip edges (per chip on a machine "
                   "of several chips), SRAM high water.")
@max_cycles_option("Per step: a node whose clock passes this many cycles traps (cause 9).")
@threads_option()
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option for a .d1k program (repeatable), as for `d1 compile`.")
@machine_options
def train(file: Path, inputs: tuple[str, ...], params_file: Path | None, init_seed: int,
          epochs: int, shuffle_seed: int | None, out_dir: Path, json_file: Path | None,
          quiet: bool, stats: bool, max_cycles: int, threads: int, opts: tuple[str, ...],
          machine_name: str | None, mesh: str | None, chips: str | None,
          sets: tuple[str, ...]) -> None:
    """Train FILE (.d1k, or an object compiled from one) on whole data sets.

    Every --input array holds N samples along axis 0; they are cut into consecutive batches
    of the batch size the program declares (axis 0 of its inputs), and a last partial batch
    is dropped, with a note. One step is one run of the compiled program: the batch's inputs
    are written, the program runs, and its 0-d outputs (the loss) are recorded.

    The params stay in the nodes' SRAM from one step to the next: the weight-resident mode
    (docs/DSL.md compares it with streaming weights in). They are written once before the
    first step, each step's `update`s leave the new values in the params' own buffers, and
    nothing about them is moved between steps. They start
    from --params, else from the object (`d1 compile --params`), else from their
    declaration's INIT: `compiler.reference.init_params(graph, --init)`, i.e.
    numpy.random.default_rng(SEED) drawing each glorot or normal param in declaration order,
    so the same seed gives the same params in numpy.

    At the end OUT_DIR holds params.npz (every param's final value), history.csv (step,
    epoch, each 0-d output, and the modelled cycles of the step) and loss.png (the 0-d
    outputs against the step); --json adds the totals: modelled time per step, TFLOP/s, link
    bytes (on a machine of several chips, also those across chip edges, and per chip) and SRAM
    high-water mark (a loss that is NaN or infinite is null there, as JSON has neither;
    history.csv writes nan, inf). Ctrl-C stops after the current step (before the first one
    while compiling) and still writes them (exit status 130). A trap stops the run with status
    1, after writing the history up to it, and no params.npz (one left by an earlier run is
    removed); inputs with different numbers of samples are an error (status 2).

    \b
    Examples:
      python -m d1.digits data      # scikit-learn's digits as data/x_train.npy, ...
      d1 train programs/train_digits.d1k --input x=data/x_train.npy \\
               --input y=data/y_train.npy --epochs 30 --shuffle 0 --out-dir digits
      d1 run programs/digits_predict.d1k --params digits/params.npz \\
             --input x=data/x_test.npy --out-dir digits
      d1 train programs/train_linear.d1k --input x=x.npy --input y=y.npy --mesh 4x4 --json -
      d1 train programs/train_linear.d1k --input x=x.npy --input y=y.npy --mesh 4x4 --chips 2x2
    """
    from d1.commands.run import (
        cap_threads,
        load_npy,
        mpi_note,
        mpi_ranks,
        params_for,
        rank_threads,
        write_json,
    )
    from d1.program import load_program
    from d1.train import Trainer, stop_after_step

    machine = emulated_machine(machine_name, mesh, sets, chips, file)
    options = None
    if opts:
        from compiler.pipeline import CompileOptions
        options = CompileOptions.parse(opts)
    files = _input_files(inputs)
    to_stdout = json_file is not None and str(json_file) == "-"
    taken = [file, *files.values(), *([params_file] if params_file is not None else []),
             *machine_files(machine_name)]
    if json_file is not None and not to_stdout:
        refuse_overwrite(json_file, taken, f"--json {json_file}")
        check_destination(json_file, "--json")
    check_output_dir(out_dir)
    paths = {name: out_dir / name for name in OUT_FILES}
    written = [(json_file, "--json")] if json_file is not None and not to_stdout else []
    for name, path in paths.items():
        refuse_overwrite(path, taken, f"{name} ({path})")
        refuse_twice(path, written, f"{name} ({path})")
        check_destination(path, "--out-dir")
    arrays = {name: load_npy(f, f"--input {name}") for name, f in files.items()}
    params = None
    if params_file is not None:
        from d1.params import load_params
        params = load_params(params_file)
    comm = mpi_ranks()
    # A Ctrl-C while compiling and setting up stops before the first step, which still writes
    # the starting params and the (empty) history; a second one interrupts at once.
    with stop_after_step() as early:
        prog = load_program(file, machine, options)
        for note in prog.notes:
            click.echo(f"note: {note}", err=True)
        _check_inputs_given(prog, files)
        if params is not None:
            params = params_for(prog, params, params_file)
        _note_unused_init(prog, params, init_seed)
        trainer = Trainer(prog, params, init_seed=init_seed, max_cycles=max_cycles,
                          threads=rank_threads(threads) if comm is not None
                          else cap_threads(threads) or None, comm=comm)
        mpi_note(trainer.emu)
        plan = trainer.plan(arrays)
    if plan.dropped:
        click.echo(dropped_note(plan), err=True)
    t0 = time.perf_counter()
    fault = None
    if early.requested:
        trainer.interrupted = True
    else:
        with _progress(trainer, epochs, plan.batches, quiet) as on_step:
            try:
                trainer.fit(arrays, epochs=epochs, shuffle=shuffle_seed, on_step=on_step)
            except RuntimeFault as e:
                fault = e
    wall = time.perf_counter() - t0
    # OUT_DIR never mixes runs: every file is this run's, or gone. After a trap the params
    # are those of no finished step, so none are written, and an earlier run's params.npz
    # must not pass for this run's; a run of no steps still plots its (empty) history.
    written = []
    if fault is None:
        from d1.params import params_npz
        write_atomic(paths["params.npz"], params_npz(trainer.params()))
        written.append(str(paths["params.npz"]))
    elif paths["params.npz"].exists():
        paths["params.npz"].unlink()
        click.echo(f"note: removed {paths['params.npz']}, an earlier run's: a run that traps "
                   "writes no params", err=True)
    write_atomic(paths["history.csv"], history_csv(trainer))
    written.append(str(paths["history.csv"]))
    from d1.plots import history_png
    history_png(trainer.history, list(trainer.columns.values()), paths["loss.png"],
                f"{file}: {trainer.steps:,} steps on {trainer.machine.name} "
                f"(batch {plan.batch_size})")
    written.append(str(paths["loss.png"]))
    totals = trainer.totals()
    if json_file is not None:
        doc: dict[str, Any] = {
            "file": str(file), "machine": trainer.machine.name,
            "samples": plan.samples, "batch_size": plan.batch_size,
            "batches_per_epoch": plan.batches, "dropped_per_epoch": plan.dropped,
            "epochs": epochs, "shuffle": shuffle_seed, "init": init_seed,
            "params_file": str(params_file) if params_file is not None else None,
            "interrupted": trainer.interrupted,
            "status": "trapped" if fault is not None else "ok",
            "outputs": trainer.outputs, "columns": ["step", "epoch", *trainer.columns.values(),
                                                     "cycles"],
            "history": trainer.history, "totals": totals,
            "files": written, "wall_seconds": wall,
        }
        write_json(json_file, doc)
        if not to_stdout:
            written.append(str(json_file))
    if trainer.interrupted:
        click.echo(f"interrupted: stopped after step {trainer.steps:,}" if trainer.steps else
                   "interrupted: stopped before the first step", err=True)
    click.echo(summary(trainer, totals, plan, wall, written), err=to_stdout)
    if stats and trainer.steps:
        click.echo(stats_text(trainer, totals), err=to_stdout)
    if fault is not None:
        raise fault
    if trainer.interrupted:
        sys.exit(130)


def dropped_note(plan: Any) -> str:
    """The note on the partial batch `Trainer.plan` drops (plan.dropped > 0)."""
    last = ("the last sample (a partial batch) is" if plan.dropped == 1 else
            f"the last {plan.dropped:,} (a partial batch) are")
    return (f"note: {plan.samples:,} samples make {plan.batches:,} batch"
            f"{'es' if plan.batches != 1 else ''} of {plan.batch_size}; {last} dropped each "
            "epoch")


def _note_unused_init(prog: Any, params: dict | None, init_seed: int) -> None:
    """A --init the user gave that seeds no param (every param comes from --params, from the
    object or from a number INIT) is said, rather than ignored in silence and recorded in the
    --json as if it had mattered."""
    from d1.params import seeded_params

    ctx = click.get_current_context()
    if ctx.get_parameter_source("init_seed") != click.core.ParameterSource.COMMANDLINE:
        return
    if not seeded_params(prog, params):
        click.echo(f"note: --init {init_seed} seeds nothing: no param starts from a random INIT "
                   "(each comes from --params, the object's embedded values or a number)",
                   err=True)


def _check_inputs_given(prog: Any, files: dict[str, str]) -> None:
    """Without any --input: a usage error naming the program's inputs, or, for a program with
    none, what to do instead (training cuts input data sets into batches)."""
    names = prog.inputs
    if files and names:
        return
    if names:
        raise click.UsageError(f"give the data set of every input ({', '.join(names)}) with "
                               "--input NAME=FILE.npy")
    # (with --input too: the Python API's advice of Trainer.plan is not for the command line)
    raise D1Error(f"{prog.path} has no inputs, so there is no data set to cut into batches: "
                  "`d1 run` runs one step of it (its params stay in SRAM only for that run), "
                  "and d1.train.Trainer.step({}) runs as many as you like")


def _input_files(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"expected NAME=FILE.npy, got '{item}'", param_hint="--input")
        name, f = (s.strip() for s in item.split("=", 1))
        if name in out:
            raise click.BadParameter(f"input '{name}' is given twice", param_hint="--input")
        out[name] = f
    return out


def history_csv(trainer: Any) -> str:
    """step, epoch, each 0-d output (`Trainer.columns`), cycles (modelled), a row per step."""
    buf = io.StringIO()
    cols = ["step", "epoch", *trainer.columns.values(), "cycles"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in trainer.history:
        w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])
    return buf.getvalue()


def stats_text(trainer: Any, totals: dict[str, Any]) -> str:
    """--stats: the modelled figures of all the run's steps, as `d1 run --stats` gives them
    for one run (link bytes on chip and across chip edges, per chip)."""
    from d1.commands.run import chip_lines

    md, n, m = totals["modelled"], totals["steps"], trainer.machine
    lines = [f"statistics of the {n:,} step{'s' * (n != 1)} on {m.name} ({m.n_live:,} live "
             f"nodes at {units.si(m.clock_hz, 'Hz')}), modelled (docs/TIMING.md):",
             f"  kernel time         {md['cycles']:,} cycles = {units.seconds(md['seconds'])} "
             f"({md['cycles_per_step']:,.0f} a step)",
             f"  instructions        {md['instructions']:,}",
             f"  FLOPs               {md['flops']:,} FLOP",
             f"  throughput          {md['tflops_per_second']:.3g} TFLOP/s = "
             f"{md['percent_of_peak']:.3g}% of the {md['peak_dtype']} peak",
             f"  SRAM high water     {units.nbytes(md['sram_high_water_bytes'])} (largest node)",
             f"  link traffic        {units.nbytes(md['link_bytes'])} in "
             f"{md['link_messages']:,} messages ({units.nbytes(md['link_bytes_per_step'])} a "
             "step)"]
    if "chips" in totals:
        lines.extend(chip_lines({"modelled": md,
                                 "chips": {**totals["chips"], "busiest_edge_links": []}}))
    return "\n".join(lines)


def summary(trainer: Any, totals: dict[str, Any], plan: Any, wall: float,
            written: list[str]) -> str:
    md, host = totals["modelled"], totals["host"]
    h = trainer.history
    jit = host["jit_seconds"]
    lines = [f"trained {trainer.steps:,} step{'s' if trainer.steps != 1 else ''} of "
             f"{plan.batch_size} samples on {trainer.machine.name} in {wall:.1f} s"
             + (f" ({jit:.1f} s of it compiling the emulator's loop, once; Numba caches it)"
                if jit >= 1 else "")]
    for name in trainer.outputs:
        if h:
            col = trainer.columns[name]
            lines.append(f"  {name:<20} {h[0][col]:.6g} (step 1) -> {h[-1][col]:.6g} "
                         f"(step {h[-1]['step']:,})")
    if h:
        lines.append(f"  modelled per step    {md['cycles_per_step']:,.0f} cycles = "
                     f"{units.seconds(md['seconds_per_step'])}, "
                     f"{md['tflops_per_second']:.3g} TFLOP/s = {md['percent_of_peak']:.3g}% of "
                     f"the {md['peak_dtype']} peak, {units.nbytes(md['link_bytes_per_step'])} "
                     "over links")
        if "chips" in totals:
            per = totals["chips"]["per_chip"]
            top = max(per, key=lambda r: r["edge_bytes_out"])
            lines.append(f"  chip edges           {units.nbytes(md['chip_edge_bytes_per_step'])} "
                         f"per step across chip edges, of the link bytes above (modelled); "
                         f"most from chip ({top['chip'][0]},{top['chip'][1]}): "
                         f"{units.nbytes(top['edge_bytes_out'] / len(h))} per step")
        lines.append(f"  SRAM high water      {units.nbytes(md['sram_high_water_bytes'])} "
                     "(largest node, modelled)")
        lines.append(f"  host                 {100 * host['emulator_share']:.0f}% of the steps' "
                     f"wall time in the emulator (measured)")
        if host.get("ranks", 1) > 1:
            lines.append(f"  MPI                  {host['ranks']} ranks; window exchange (sync "
                         f"overhead) {units.seconds(host['sync_seconds'])} on rank 0")
    if written:
        lines.append("wrote " + ", ".join(written))
    return "\n".join(lines)


class _progress:
    """The progress bar on a terminal (epoch, step, current 0-d outputs), or one line per
    epoch on anything else; nothing with --quiet. Used as `with _progress(...) as on_step`."""

    def __init__(self, trainer: Any, epochs: int, batches: int, quiet: bool) -> None:
        self.trainer = trainer
        self.epochs = epochs
        self.batches = batches
        self.quiet = quiet
        self.bar = None
        self.task = None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.console import Console
        console = Console(stderr=True)
        if not console.is_terminal:
            return self._line
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                            TimeElapsedColumn(), console=console, transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task(f"epoch 1/{self.epochs}",
                                      total=self.epochs * self.batches, loss="")
        return self._bar

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _outputs(self, row: dict[str, Any]) -> str:
        return "  ".join(f"{n} {row[c]:.5g}" for n, c in self.trainer.columns.items())

    def _bar(self, row: dict[str, Any]) -> None:
        self.bar.update(self.task, advance=1, loss=self._outputs(row),
                        description=f"epoch {row['epoch']}/{self.epochs}")

    def _line(self, row: dict[str, Any]) -> None:
        if row["step"] % self.batches == 0 or self.trainer.interrupted:
            click.echo(f"epoch {row['epoch']}/{self.epochs}: step {row['step']:,}  "
                       f"{self._outputs(row)}", err=True)
