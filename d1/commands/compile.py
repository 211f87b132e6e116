"""`d1 compile`: a `.d1k` tensor program to a `.d1o` object, or one stage of the compiler."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from d1.options import machine_from_options, machine_options
from d1isa.files import check_destination, read_text, refuse_overwrite, write_atomic


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Object file to write. Default: SOURCE with the suffix .d1o.")
@machine_options
@click.option("--emit", "stage", type=click.Choice(["ast", "ir", "asm"]),
              help="Print the program after this stage instead of writing an object: the "
                   "syntax tree, the typed IR, or the per-node assembly (which `d1 asm` "
                   "turns into the same object).")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option (repeatable): matmul=summa|naive, double_buffer=true|false, "
                   "preskew=true|false, reach=N (grid hops per summa phase).")
@click.option("--timings", is_flag=True, help="Print the time each pass took.")
def compile(source: str, output: str | None, machine_name: str | None, mesh: str | None,
            sets: tuple[str, ...], stage: str | None, opts: tuple[str, ...],
            timings: bool) -> None:
    """Compile a .d1k tensor program for a machine.

    The program is parsed, checked, mapped onto the mesh (every tensor split over the live
    nodes) and turned into one instruction stream per node, with explicit neighbour sends.

    \b
    Examples:
      d1 compile programs/mlp.d1k -o mlp.d1o
      d1 compile programs/matmul.d1k --mesh 4x4 --emit asm > matmul.d1s
      d1 compile programs/attention.d1k --emit ir
      d1 compile programs/matmul.d1k -O matmul=naive -o naive.d1o
    """
    from compiler.pipeline import CompileOptions, emit_stage
    from d1.program import load_program

    machine = machine_from_options(machine_name, mesh, sets)
    options = CompileOptions.parse(opts)
    path = output or (None if stage is not None else str(Path(source).with_suffix(".d1o")))
    if path is not None:
        refuse_overwrite(path, [source], f"-o {path}")
        check_destination(path, "-o")
    if stage is not None:
        out = emit_stage(read_text(source), stage, machine, source, options)
        if output:
            write_atomic(output, out + ("" if out.endswith("\n") else "\n"))
        else:
            click.echo(out)
        return
    result = load_program(source, machine, options, kind="dsl").compiled
    result.obj.save(path)
    g = result.grid
    click.echo(f"{source}: {len(result.graph.nodes)} IR nodes -> {path} "
               f"({g.P} x {g.Q} grid on {machine.name}, "
               f"{len(result.obj.blocks)} code blocks, "
               f"{result.sram_peak:,} B of SRAM per node)", err=True)
    if timings:
        for name, secs in result.seconds.items():
            click.echo(f"  {name:<9} {secs * 1000:8.1f} ms", err=True)
    sys.stdout.flush()
