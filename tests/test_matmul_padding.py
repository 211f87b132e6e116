"""A matmul whose K is not a whole number of tiles reads past K: the last tile of A's columns
and of B's rows is padded, and the padding must be zero wherever it lives (compiler.matmul's
`_sanitize`, zero_cols and zero_rows). The SRAM under the padding holds whatever an earlier
value left there, and 0 times NaN is NaN, so these runs fill every byte the object does not
place with 0xFF (NaN as f32 and as bf16) before writing the inputs.

The narrow case: a B block of at most 16 bf16 columns per node stores 32-byte rows, half a
vector register, and a B split into three bf16 pieces stores rows of one and a half vectors;
the padding rows of both must be cleared in full. (train_mlp784's backward matmul dh2 =
dz @ w3^T on a 16 x 16 mesh is such a product: K = 10 classes, w3^T in 16-column blocks.)
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
import compiler.summa as summa
from compiler.matmul import Matmul
from compiler.pipeline import CompileOptions, compile_text
from compiler.summa import SpmdStream
from d1isa.machine import load_machine
from emulator import Emulator

TEXT = "input a: {ta}[{m}, {k}]\ninput b: {tb}[{k}, {n}]\nc = a @ b\noutput c\n"


def run_poisoned(text: str, mesh: str, options: CompileOptions | None = None):
    """Compile, emulate on SRAM that reads as NaN wherever the object places nothing, and
    return (the compiled program, the output, the reference's)."""
    c = compile_text(text, load_machine(mesh=mesh), "t.d1k", options)
    inputs = compiler.make_inputs(c.graph, 0)
    emu = Emulator(c.obj)
    emu.state.sram[:] = 0xFF
    for d in c.obj.data:
        if d.data:
            emu.state.sram[d.node, d.addr:d.addr + len(d.data)] = np.frombuffer(d.data,
                                                                                np.uint8)
    for name, value in inputs.items():
        emu.set_input(name, value)
    res = emu.run()
    assert res.ok, res.report()
    return c, emu.output("c"), compiler.evaluate(c.graph, inputs)["c"]


def check(c, got, want) -> None:
    assert not np.isnan(got).any(), f"{int(np.isnan(got).sum())} NaN in c"
    rows = compiler.compare_outputs(c.graph, {"c": got}, {"c": want})
    assert all(r[4] for r in rows), rows


def matmul_steps(c) -> list:
    """The object's regions that are matmuls (by their kind)."""
    return [r["op"] for r in c.obj.meta["regions"] if r["op"].startswith("matmul")]


# K = 10 on two grid rows: B's rows 8..9 on grid row 1, padded to 16 (rows 2..7 of its block).
@pytest.mark.parametrize("ta,tb,n,opts", [
    ("bf16", "bf16", 32, ()),                  # 16 bf16 columns a node: 32-byte rows
    ("bf16", "bf16", 16, ()),                  # 8 columns a node, still 32-byte rows
    ("f32", "bf16", 32, ()),                   # A split into bf16 pieces, B narrow
    ("bf16", "f32", 32, ()),                   # B split: three 32-byte pieces a row
    ("bf16", "bf16", 32, ("matmul=naive",)),   # gathered operands, the same padding
    ("bf16", "f32", 32, ("matmul=naive",)),
    ("bf16", "bf16", 64, ()),                  # whole-vector rows (always worked)
    ("f32", "f32", 32, ()),                    # f32 rows are whole vectors
], ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_padding_rows_of_narrow_b_blocks_are_zeroed(ta, tb, n, opts):
    options = CompileOptions.parse(list(opts)) if opts else None
    c, got, want = run_poisoned(TEXT.format(ta=ta, tb=tb, m=16, k=10, n=n), "2x2", options)
    assert matmul_steps(c) == ["matmul[local]" if opts else "matmul[summa]"]
    check(c, got, want)


def test_padding_of_narrow_b_blocks_in_the_streamed_spmd_matmul(monkeypatch):
    """SpmdStream (the large grids' matmul) pads its operands with the same code."""
    monkeypatch.setattr(summa, "SPMD_GRID", 1)
    text = TEXT.format(ta="f32", tb="bf16", m=32, k=10, n=64)
    opts = CompileOptions(preskew=False)
    assert [type(st) for st in _steps(text, "4x4", opts)] == [SpmdStream]
    c, got, want = run_poisoned(text, "4x4", opts)
    check(c, got, want)


def _steps(text: str, mesh: str, options: CompileOptions) -> list:
    from compiler.check import check as check_ir
    from compiler.grad import differentiate
    from compiler.grid import choose_grid
    from compiler.lower import lower, map_to_mesh
    from compiler.parse import parse
    m = load_machine(mesh=mesh)
    g = differentiate(check_ir(parse(text, "t.d1k"), m, "t.d1k", text))
    mp = map_to_mesh(g, lower(g), choose_grid(m), m, options)
    return [st for st in mp.steps if isinstance(st, Matmul)]
