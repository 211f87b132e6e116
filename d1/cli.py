"""The `d1` command group and its error handling.

Sub-commands live in `d1/commands/*.py` and are imported only when used, so `d1 --help` and
`d1 info` never pay for Numba. Every user mistake is a `D1Error`, printed without a traceback:
exit code 2 for usage and compile errors, 1 for runtime traps and failed checks.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
import traceback

import click

# name -> (module, attribute, one-line help). Order is the order `d1 --help` lists them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("d1.commands.info", "info", "Show the machine description and its derived figures."),
    "docs": ("d1.commands.info", "docs", "Regenerate docs/ISA.md from the ISA table."),
    "asm": ("d1.commands.asm", "asm", "Assemble a .d1s file into a .d1o object."),
    "disasm": ("d1.commands.asm", "disasm", "Disassemble a .d1o object into .d1s text."),
    "compile": ("d1.commands.compile", "compile", "Compile a .d1k tensor program to an object."),
    "import": ("d1.commands.importer", "import_",
               "Import an ONNX model as a .d1k program and an .npz of its params."),
    "run": ("d1.commands.run", "run", "Run a program on the emulated mesh (traps, timing, stats)."),
    "train": ("d1.commands.train", "train",
              "Train a program on whole data sets, params resident in SRAM."),
    "bench": ("d1.commands.bench", "bench", "Measure speed targets against same-run baselines."),
    "debug": ("d1.commands.debug", "debug", "Debug a program on the whole mesh, forward and back."),
    "viz": ("d1.commands.viz", "viz", "Draw a run on the mesh: busy, stalls, link bytes, SRAM."),
    "roofline": ("d1.commands.roofline", "roofline",
                 "Place a kernel and its operations on the machine's roofline."),
    "sweep": ("d1.commands.sweep", "sweep",
              "Run a kernel for every combination of machine parameters."),
    "diff": ("d1.commands.diff", "diff", "Compare two runs' statistics side by side."),
    "scale": ("d1.commands.scale", "scale",
              "Scaling study: one program on more and more chips, efficiency and chip edges."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module, attr, _ = entry
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="d1isa", prog_name="d1")
def cli() -> None:
    """d1: assembler, compiler, emulator and debugger for a D1-like spatial processor.

    \b
    Examples:
      d1 info                        the default 354-node machine
      d1 asm programs/asm/vadd.d1s -o vadd.d1o
      d1 run programs/mlp.d1k --check --stats
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `d1` script: run the group and turn errors into exit codes.

    Called without `argv` it is the program's entry point, and the process exits right after:
    it then freezes the garbage collector's objects first. Loading Numba's machinery leaves some
    100,000 objects, and the collections the interpreter runs while shutting down would
    otherwise take 0.3-0.5 s (nothing left to finalize matters: every file d1 writes is closed
    by then, and the standard streams are flushed either way).
    """
    try:
        comm = _start()
    except KeyboardInterrupt:
        # Ctrl-C while the start loads numpy (a fifth of a second), before `_main` handles it.
        click.echo("interrupted", err=True)
        sys.exit(130)
    if comm is not None and comm.Get_rank() > 0:
        from emulator.distributed import serve_or_abort
        sys.exit(serve_or_abort(comm))
    status: int | str | None = 3
    try:
        _main(argv)
    except SystemExit as e:
        status = e.code
        raise
    finally:
        if comm is not None:
            from emulator.distributed import finish
            finish(comm, status if isinstance(status, int) else (0 if status is None else 1))
        if argv is None:
            gc.freeze()


def _start() -> object | None:
    """What happens before the command: the MPI world, if launched as several ranks."""
    from emulator.mpi import launched_rank

    if launched_rank() > 0:
        # Under `mpiexec -n R d1 ...` rank 0 runs the command and the others hold their share
        # of the machine, following rank 0's emulator calls (emulator.distributed). Ctrl-C
        # (the launcher sends it to every rank) is rank 0's to handle, from the start.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _mpi_world()


def _mpi_world() -> object | None:
    """MPI.COMM_WORLD when launched as one of several MPI ranks (emulator.mpi), else None
    without importing mpi4py. A launch that needs mpi4py and lacks it ends here (exit 2)."""
    from d1isa.errors import D1Error
    from emulator.mpi import launched_rank, world

    try:
        return world()
    except D1Error as e:
        if launched_rank() == 0:
            click.echo(e.render(), err=True)
        sys.exit(2)


def _resume_interrupts() -> None:
    """On rank 0 (or one process): Ctrl-C interrupts again, and one that d1.entry noted while
    the ranks started is raised now, inside `_main`, which reports it once; `main` then releases
    the other ranks with status 130. (A rank that left on its own at the start left the others
    waiting for it forever.)"""
    from d1.entry import INTERRUPTED, _note

    if signal.getsignal(signal.SIGINT) is _note:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if INTERRUPTED:
        INTERRUPTED.clear()
        raise KeyboardInterrupt


def _main(argv: list[str] | None) -> None:
    from d1isa.errors import D1Error

    try:
        _resume_interrupts()
        rv = cli.main(args=argv, prog_name="d1", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except D1Error as e:
        click.echo(e.render(), err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug in d1 itself, not a user mistake
        if os.environ.get("D1_DEBUG"):
            traceback.print_exc()
        click.echo(f"internal error: {type(e).__name__}: {e}\n"
                   "This is a bug in d1; set D1_DEBUG=1 to see the traceback.", err=True)
        sys.exit(3)
    sys.exit(rv if isinstance(rv, int) else 0)
