"""`d1 compile`: a `.d1k` tensor program to a `.d1o` object, or one stage of the compiler."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from d1.options import MAX_SEED, machine_from_options, machine_options, parse_shapes, shape_option
from d1isa.errors import D1Error
from d1isa.files import (
    check_destination,
    read_text,
    refuse_overwrite,
    refuse_twice,
    write_atomic,
)
from d1isa.machine import machine_files


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Object file to write. Default: SOURCE with the suffix .d1o.")
@machine_options
@click.option("--emit", "stage", type=click.Choice(["ast", "ir", "asm", "map"]),
              help="Print the program after this stage instead of writing an object: the "
                   "syntax tree, the typed IR, the per-node assembly (which `d1 asm` "
                   "turns into the same object, but for an ONNX model's initializers: "
                   "give them with --params), or the mapping report (as --report).")
@click.option("--report", is_flag=True,
              help="Print the mapping report after compiling: per step, each tensor's layout "
                   "and the bytes its messages carry across each chip edge, with totals "
                   "(docs/SCALE.md, \"Tensor parallelism across chips\").")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the compile summary and the mapping report as JSON to this file "
                   "('-': to standard output; --report then prints to standard error).")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option (repeatable): matmul=summa|naive, double_buffer=true|false, "
                   "preskew=true|false, reach=N (grid hops per summa phase), "
                   "batched=subgrid|rows|sequential, row_bands=true|false, conv=implicit|im2col.")
@click.option("--params", "params_file", type=click.Path(dir_okay=False),
              help="Embed starting values for the params in the object (one array per param "
                   "name in this .npz; the others from their INIT, seeded by --init), so the "
                   "object is self-contained: `d1 run` and `d1 train` start from them.")
@click.option("--init", "init_seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="With --params, or alone to embed every param's INIT: the seed of the "
                   "random INITs (compiler.reference.init_params; default 0).")
@shape_option
@click.option("--timings", is_flag=True, help="Print the time each pass took.")
def compile(source: str, output: str | None, machine_name: str | None, mesh: str | None,
            chips: str | None, sets: tuple[str, ...], stage: str | None, opts: tuple[str, ...],
            params_file: str | None, init_seed: int | None, shapes: tuple[str, ...],
            timings: bool, report: bool, json_path: str | None) -> None:
    """Compile a .d1k tensor program (or an .onnx model) for a machine.

    The program is parsed, checked, mapped onto the mesh (every tensor split over the live
    nodes) and turned into one instruction stream per node, with explicit neighbour sends.
    An ONNX model is imported in memory first (as `d1 import` writes it); the object embeds
    its initializers as the params' values.

    \b
    Examples:
      d1 compile programs/mlp.d1k -o mlp.d1o
      d1 compile programs/matmul.d1k --mesh 4x4 --emit asm > matmul.d1s
      d1 compile programs/attention.d1k --emit ir
      d1 compile programs/matmul.d1k -O matmul=naive -o naive.d1o
      d1 compile programs/train_digits.d1k --params out/params.npz -o digits.d1o
      d1 compile programs/onnx/mlp.onnx --emit ir
      d1 compile programs/matmul.d1k --mesh 4x4 --chips 2x2 --report --json map.json
    """
    from compiler.pipeline import CompileOptions, emit_stage
    from d1.program import check_suffix, imported_source, load_program

    machine = machine_from_options(machine_name, mesh, sets, chips)
    options = CompileOptions.parse(opts)
    onnx = Path(source).suffix.lower() == ".onnx"
    check_suffix(Path(source), "onnx" if onnx else "dsl")
    path = output or (None if stage is not None else str(Path(source).with_suffix(".d1o")))
    embed = params_file is not None or init_seed is not None
    if embed and stage is not None:
        raise D1Error("--params and --init embed values in an object; they do not go with "
                      "--emit")
    if stage is not None and (report or json_path):
        raise D1Error(f"--emit {stage} prints one stage instead of compiling to an object; "
                      "--report and --json go with compiling (--emit map is the report alone)")
    to_stdout = json_path == "-"
    if json_path is not None and not to_stdout:
        refuse_overwrite(json_path, [source, *machine_files(machine_name),
                                     *([params_file] if params_file else [])],
                         f"--json {json_path}")
        refuse_twice(json_path, [(path, "-o")] if path else [], f"--json {json_path}")
        check_destination(json_path, "--json")
    given = {}
    if params_file is not None:
        from d1.params import load_params
        given = load_params(params_file)
    if path is not None:
        refuse_overwrite(path, [source, *machine_files(machine_name),
                                *([params_file] if params_file else [])], f"-o {path}")
        check_destination(path, "-o")
    given_shapes = parse_shapes(shapes)
    if given_shapes and not onnx:
        raise D1Error(f"--shape gives the shapes of an ONNX model's inputs; {source} is not an "
                      ".onnx model")
    if stage is not None:
        if onnx:
            imported, name = imported_source(Path(source), given_shapes)
            out = emit_stage(imported.text, stage, machine, name, options)
            if stage == "asm" and imported.params:
                # The assembly has no directive for the params' values: an object assembled
                # from it would silently start from the declarations' INITs instead.
                click.echo(f"note: {source}: the assembly does not hold the model's "
                           f"initializers ({len(imported.params)} params); an object `d1 asm` "
                           "makes of it starts them from their INIT, so run it with --params "
                           "OUT.npz (d1 import -o OUT.d1k writes it)", err=True)
        else:
            out = emit_stage(read_text(source), stage, machine, source, options)
        if output:
            write_atomic(output, out + ("" if out.endswith("\n") else "\n"))
        else:
            click.echo(out)
        return
    want_map = report or json_path is not None
    prog = load_program(source, machine, options, kind="onnx" if onnx else "dsl",
                        shapes=given_shapes, report=want_map)
    result = prog.compiled
    for note in prog.notes:
        click.echo(f"note: {note}", err=True)
    if embed:
        from d1.params import embed_params, starting_params
        if not prog.params:
            raise D1Error(f"{source} declares no params to embed")
        from d1.commands.run import params_for
        if params_file is not None:
            given = params_for(prog, given, Path(params_file))
        embed_params(result.obj, starting_params(prog, given, init_seed or 0))
    result.obj.save(path)
    g = result.grid
    dp = result.obj.meta.get("parallel")
    click.echo(f"{source}: {len(result.graph.nodes)} IR nodes -> {path} "
               f"({g.P} x {g.Q} grid{' on each chip' if dp else ''} on {machine.name}, "
               f"{len(result.obj.blocks)} code block{'s' if len(result.obj.blocks) != 1 else ''}, "
               f"{result.sram_peak:,} B of SRAM per node"
               + (f"; params embedded: {', '.join(prog.params)}" if embed else "") + ")",
               err=True)
    if dp:
        click.echo(f"  data-parallel over {dp['chips'][0]} x {dp['chips'][1]} chips: batch "
                   f"{dp['batch']:,} = {dp['chips'][0] * dp['chips'][1]} x "
                   f"{dp['batch_per_chip']:,} per chip; each chip holds "
                   f"{dp['allreduce_bytes']:,} B of partials ({', '.join(dp['allreduced'])}), "
                   "all-reduced across chip edges (the bytes that cross them: --report)",
                   err=True)
    if timings:
        for name, secs in result.seconds.items():
            click.echo(f"  {name:<9} {secs * 1000:8.1f} ms", err=True)
    if report:
        from compiler.mapreport import format_report
        click.echo(format_report(result.report), err=to_stdout)
    if json_path is not None:
        import json
        summary = {"source": source, "object": path, "machine": machine.name,
                   "grid": [g.P, g.Q], "code_blocks": len(result.obj.blocks),
                   "object_bytes": Path(path).stat().st_size,
                   "sram_peak_bytes": result.sram_peak,
                   "seconds": {k: round(v, 6) for k, v in result.seconds.items()},
                   "notes": list(prog.notes), "mapping": result.report}
        text = json.dumps(summary, indent=1)
        if to_stdout:
            click.echo(text)
        else:
            write_atomic(json_path, text + "\n")
    sys.stdout.flush()
