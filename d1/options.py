"""Options shared by several commands: choosing and overriding the machine."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from d1isa.machine import MAX_RUN_CYCLES, Machine, load_machine

MAX_SEED = (1 << 63) - 1


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_cycles_option(help_text: str) -> Callable:
    """--max-cycles, bounded so that no node clock can overflow (d1isa.machine)."""
    return click.option("--max-cycles", type=click.IntRange(0, MAX_RUN_CYCLES),
                        default=50_000_000, show_default=True, help=help_text)


def threads_option(more: str = "") -> Callable:
    """--threads, as `d1 run` and `d1 train` take it (`more`: what else the command says)."""
    return click.option("--threads", type=click.IntRange(0, 4096), default=0, show_default=True,
                        help="Host threads that run nodes in parallel; 0 = one per usable CPU "
                             "(at most 8, and 1 below 64 nodes); more than the usable CPUs is "
                             f"capped to them. Results never depend on it{more}.")


def machine_options(f: Callable) -> Callable:
    """Add --machine, --mesh, --chips and --set to a command."""
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override a machine parameter, e.g. --set link_bytes_per_cycle=32 "
                          "(repeatable).")(f)
    f = click.option("--chips", metavar="CxR",
                     help="Make the machine C x R copies of its chip joined by chip-edge "
                          "links, e.g. --chips 2x2 (--machine d1 --chips 5x5 is the tile).")(f)
    f = click.option("--mesh", metavar="CxR",
                     help="Use a COLSxROWS mesh with no harvested nodes, e.g. --mesh 4x4.")(f)
    f = click.option("--machine", "machine_name", metavar="NAME|FILE",
                     help="Machine name (d1, m4x4, h6x5, tile, tray, cabinet, exapod) or a "
                          ".toml file. Default: d1.")(f)
    return f


def machine_given(machine_name: str | None, mesh: str | None, sets: tuple[str, ...],
                  chips: str | None = None) -> bool:
    return bool(machine_name or mesh or sets or chips)


def machine_from_options(machine_name: str | None, mesh: str | None,
                         sets: tuple[str, ...], chips: str | None = None,
                         program: str | Path | None = None) -> Machine:
    """The machine the options ask for. Without --machine or --mesh, a `program` that names
    its own machine (an object, or assembly with a leading `.machine`) is the base that
    --chips and --set change: `d1 run prog.d1o --set chip_hop_latency=300` retimes the
    object's own machine, and --chips makes copies of its chip."""
    base = (program_machine(program)
            if program is not None and machine_name is None and mesh is None else None)
    return load_machine(machine_name, mesh=mesh, chips=chips, overrides=list(sets), base=base)


def program_machine(path: str | Path) -> Machine | None:
    """The machine a program file was built for: an object's embedded machine, or that of an
    assembly file's leading `.machine` directive. None for DSL and ONNX programs, and for a
    file that cannot be read as one (loading the program then says what is wrong)."""
    from d1isa.asm.assembler import directive_machine, machine_directive
    from d1isa.asm.syntax import LineError
    from d1isa.errors import D1Error
    from d1isa.files import MAX_OBJECT_BYTES, read_bytes, read_text
    from d1isa.objfile import MAGIC, ObjectFile

    p = Path(path)
    try:
        if p.suffix.lower() == ".d1s":
            found = machine_directive(read_text(p).splitlines())
            return directive_machine(found[2]) if found is not None else None
        if p.suffix.lower() in (".d1k", ".onnx"):
            return None
        raw = read_bytes(p, MAX_OBJECT_BYTES, "program")
        return ObjectFile.from_bytes(raw, str(p)).machine if raw.startswith(MAGIC) else None
    except (D1Error, LineError, ValueError, OSError):
        return None


def emulated_machine(machine_name: str | None, mesh: str | None,
                     sets: tuple[str, ...], chips: str | None = None,
                     program: str | Path | None = None) -> Machine | None:
    """The machine options of a command that emulates (run, debug, train), None when none
    are given (`program`: see machine_from_options). A machine the emulator could not hold
    in this host's memory is refused here, before the program is compiled or assembled for
    it (which takes minutes on a million nodes)."""
    if not machine_given(machine_name, mesh, sets, chips):
        return None
    machine = machine_from_options(machine_name, mesh, sets, chips, program)
    check_emulated_memory(machine)
    return machine


def check_emulated_memory(machine: Machine) -> None:
    """Refuse a machine the emulator could not hold: in one process the whole machine, under
    `mpiexec -n R` the largest rank's share of it (ranks hold only their own chips, so a
    machine too large for one process is what they are for)."""
    from emulator.mpi import world

    comm = world()
    if comm is None:
        from emulator.state import check_host_memory
        check_host_memory(machine)
    else:
        from emulator.distributed import check_share_memory
        check_share_memory(machine, comm.Get_size())


def input_options(f: Callable) -> Callable:
    """Add --input and --seed (shared by `d1 run` and `d1 debug`, which load inputs alike)."""
    f = click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                     help="Seed of the stochastic-rounding generators and of the standard-"
                          "normal values given to DSL inputs not set with --input.")(f)
    f = click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
                     help="Scatter a numpy array into the input tensor NAME (repeatable).")(f)
    return f


def params_option(f: Callable) -> Callable:
    """Add --params (a program's starting params, shared by `d1 run` and `d1 debug`, which
    start a program alike; `d1 train`'s also names its --init)."""
    return click.option(
        "--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
        help="Start the params from this .npz (one array per param name, e.g. the params.npz "
             "`d1 train` writes); params it does not hold take the values the object embeds, "
             "else their declaration's INIT (seed 0).")(f)


def shape_option(f: Callable) -> Callable:
    """Add --shape (an ONNX model's input shapes; `parse_shapes` reads them)."""
    return click.option(
        "--shape", "shapes", multiple=True, metavar="NAME=D0,D1,...",
        help="The shape of an ONNX model's input (repeatable; its ONNX or its DSL name). "
             "Needed where the model leaves a dimension symbolic, such as a batch N.")(f)


def parse_shapes(items: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """{input name: shape} from `NAME=D0,D1,...` strings; each dim a positive integer."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=D0,D1,..., got '{item}'",
                                     param_hint="--shape")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise click.BadParameter(f"{name}: the dimensions must be integers separated by "
                                     f"commas, got '{dims}'", param_hint="--shape") from None
        if any(d < 1 for d in shape) or any(d > 1 << 31 for d in shape):
            raise click.BadParameter(f"{name}: every dimension must be a positive integer "
                                     f"(at most 2^31), got '{dims}'", param_hint="--shape")
        if name in out:
            raise click.BadParameter(f"{name} is given twice", param_hint="--shape")
        out[name] = shape
    return out
