"""`d1 asm` and `d1 disasm`: between `.d1s` assembly text and `.d1o` objects."""

from __future__ import annotations

from pathlib import Path

import click

from d1.options import machine_from_options, machine_given, machine_options
from d1isa.files import check_destination, refuse_overwrite, write_atomic
from d1isa.machine import machine_files


@click.command("asm")
@click.argument("source", metavar="FILE.d1s")
@click.option("-o", "--output", metavar="FILE.d1o",
              help="Object file to write. Default: FILE.d1o next to the source.")
@machine_options
def asm(source: str, output: str | None, machine_name: str | None, mesh: str | None,
        chips: str | None, sets: tuple[str, ...]) -> None:
    """Assemble a .d1s file into a .d1o object.

    The machine is the file's own `.machine` directive if it has one (disassembled objects do),
    else --machine/--mesh/--set, else d1. Errors are listed as FILE:LINE:COL with the line and a
    caret, all of them in one run (exit status 2).

    \b
    Examples:
      d1 asm programs/asm/vadd.d1s -o vadd.d1o
      d1 asm programs/asm/token_ring.d1s --mesh 4x4
    """
    from d1.program import check_suffix, load_program

    # Before the output is chosen: `d1 asm prog.d1o` would otherwise be refused for
    # overwriting its input (the default output), which hides that it is not assembly.
    check_suffix(Path(source), "asm")
    machine = machine_from_options(machine_name, mesh, sets, chips, source) \
        if machine_given(machine_name, mesh, sets, chips) else None
    out = Path(output) if output else Path(source).with_suffix(".d1o")
    refuse_overwrite(out, [source, *machine_files(machine_name)], f"-o {out}")
    check_destination(out, "-o")
    obj = load_program(source, machine, kind="asm").obj
    obj.save(out)
    words = sum(len(b) for b in obj.blocks)
    nodes = int((obj.node_block >= 0).sum())
    click.echo(f"wrote {out}: {words:,} instruction{'s' if words != 1 else ''} in "
               f"{len(obj.blocks):,} code block{'s' if len(obj.blocks) != 1 else ''}, "
               f"{nodes:,} of {obj.machine.n_live:,} nodes with code, machine {obj.machine.name}")


@click.command("disasm")
@click.argument("objfile", metavar="FILE.d1o")
@click.option("-o", "--output", metavar="OUT.d1s", help="Write here instead of to stdout.")
@click.option("--plain", is_flag=True,
              help="A readable listing without the debug directives (.machine, .loc, .source, "
                   ".symbol); still valid assembly.")
def disasm(objfile: str, output: str | None, plain: bool) -> None:
    """Disassemble a .d1o object into .d1s text.

    By default the text carries the object's machine, line table, sources and symbols as
    directives, and `d1 asm` turns it back into the identical object.

    \b
    Examples:
      d1 disasm vadd.d1o
      d1 disasm vadd.d1o -o vadd_again.d1s && d1 asm vadd_again.d1s
      d1 disasm vadd.d1o --plain | less
    """
    from d1.program import load_program
    from d1isa.disasm import disassemble

    if output is not None:
        refuse_overwrite(output, [objfile], f"-o {output}")
        check_destination(output, "-o")
    text = disassemble(load_program(objfile, kind="object").obj, debug=not plain)
    if output is None:
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    click.echo(f"wrote {output}", err=True)
