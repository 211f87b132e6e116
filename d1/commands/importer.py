"""`d1 import`: an ONNX model -> a readable `.d1k` program and an `.npz` of its params."""

from __future__ import annotations

from pathlib import Path

import click

from d1.options import parse_shapes, shape_option
from d1isa.errors import D1Error, printable
from d1isa.files import check_destination, refuse_overwrite, same_file, write_atomic

# How many renamed names the summary spells out (the .d1k lists every one).
SHOWN_RENAMES = 8


@click.command("import")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The .d1k file to write. Default: MODEL with the suffix .d1k. The params' "
                   "values go beside it, with the suffix .npz.")
@shape_option
def import_(model: Path, output: Path | None, shapes: tuple[str, ...]) -> None:
    """Import the ONNX model MODEL as a .d1k program.

    Each ONNX node becomes one statement (its name in a comment); the model's initializers
    become params, whose values are written to OUT.npz. Names that are not DSL names are
    sanitised (every other character becomes _, a leading digit gets t_); the .d1k notes
    each ONNX name beside its declaration. A model whose input has a symbolic dimension
    needs --shape. docs/ONNX.md lists the operators and their rules.

    \b
    Examples:
      d1 import programs/onnx/mlp.onnx -o mlp.d1k
      d1 run mlp.d1k --params mlp.npz
      d1 import model.onnx --shape input=1,3,224,224
    """
    from d1.params import params_npz
    from d1.program import check_suffix, imported_source

    check_suffix(model, "onnx")     # before the outputs: `d1 import prog.d1k` would be its own
    out = output or model.with_suffix(".d1k")
    npz = out.with_suffix(".npz")
    if same_file(out, npz) or out.suffix.lower() == ".npz":
        raise D1Error(f"-o {out}: the params are written to {npz}; give the program another "
                      "name (such as OUT.d1k)")
    for dest in (out, npz):
        refuse_overwrite(dest, [model], f"-o {dest}")
        check_destination(dest, "-o")
    if not model.exists():
        raise D1Error(f"cannot read {model}: no such file")
    imported, _ = imported_source(model, parse_shapes(shapes))
    for note in imported.notes:
        click.echo(f"note: {note}", err=True)
    # The params first: if writing them fails, the old program is left with its old params.
    if imported.params:
        write_atomic(npz, params_npz(imported.params))
    elif npz.exists():
        click.echo(f"note: {npz} is not this model's: it has no params (the file is left as "
                   "it is)", err=True)
    write_atomic(out, imported.text)
    folded = (f", {imported.folded} of them evaluated into constants" if imported.folded
              else "")
    click.echo(f"{model}: {imported.nodes} nodes{folded} -> {out} ({len(imported.inputs)} input"
               f"{'s' if len(imported.inputs) != 1 else ''}, {len(imported.outputs)} output"
               f"{'s' if len(imported.outputs) != 1 else ''}"
               + (f", {len(imported.params)} params in {npz})" if imported.params
                  else ", no params)"), err=True)
    renamed = imported.renamed
    if renamed:
        shown = [f"'{printable(k)}' -> {v}" for k, v in list(renamed.items())[:SHOWN_RENAMES]]
        more = len(renamed) - len(shown)
        click.echo("renamed: " + ", ".join(shown) + (f" and {more} more" if more else ""),
                   err=True)
