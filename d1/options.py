"""Options shared by several commands: choosing and overriding the machine."""

from __future__ import annotations

import os
from collections.abc import Callable

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
                         sets: tuple[str, ...], chips: str | None = None) -> Machine:
    return load_machine(machine_name, mesh=mesh, chips=chips, overrides=list(sets))


def emulated_machine(machine_name: str | None, mesh: str | None,
                     sets: tuple[str, ...], chips: str | None = None) -> Machine | None:
    """The machine options of a command that emulates (run, debug), None when none are given.
    A machine the emulator could not hold in this host's memory is refused here, before the
    program is compiled or assembled for it (which takes minutes on a million nodes)."""
    if not machine_given(machine_name, mesh, sets, chips):
        return None
    from emulator.state import check_host_memory

    machine = machine_from_options(machine_name, mesh, sets, chips)
    check_host_memory(machine)
    return machine


def input_options(f: Callable) -> Callable:
    """Add --input and --seed (shared by `d1 run` and `d1 debug`, which load inputs alike)."""
    f = click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                     help="Seed of the stochastic-rounding generators and of the standard-"
                          "normal values given to DSL inputs not set with --input.")(f)
    f = click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
                     help="Scatter a numpy array into the input tensor NAME (repeatable).")(f)
    return f
