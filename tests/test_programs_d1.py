"""Every shipped program (programs/*.d1k) on the default machine: one D1-like chip, 354 live nodes.

Each program is compiled for the default machine (`compiler.compile_file` with no machine, as
`d1 compile` does), run in the emulator with seeded inputs, and every output is compared with the
numpy reference (`compiler.evaluate`) under the --check tolerance (`compiler.compare_outputs`).
The same programs run on a 4 x 4 mesh, a harvested 6 x 5 mesh and others in tests/test_compiler.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from progkit import compile_program, run_and_compare

import compiler
from compiler.grid import choose_grid
from d1isa.machine import default_machine

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(p.stem for p in (ROOT / "programs").glob("*.d1k"))


@pytest.fixture(scope="module")
def d1():
    return default_machine()


def test_every_program_is_listed() -> None:
    assert len(PROGRAMS) >= 8
    assert {"mlp", "attention", "matmul", "softmax"} <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_on_default_d1(name: str, d1) -> None:
    path = ROOT / "programs" / f"{name}.d1k"
    obj = compile_program(path.read_text(), None, str(path))   # the default machine
    assert obj.machine.name == "d1" and obj.machine.n_live == 354
    grid = choose_grid(d1)
    assert obj.meta["grid"] == {"rows": list(grid.ys), "cols": list(grid.xs)}
    rows, emu, _, outs = run_and_compare(obj, path.read_text(), d1, str(path), seed=1,
                                         max_cycles=2_000_000)
    updated = {compiler.update_key(n) for n in obj.meta.get("updates", ())}
    assert set(outs) == set(obj.meta["outputs"]) | updated
    assert len(rows) == len(outs)
    # Only live nodes ran, and the work is spread over the chip, not run on a corner of it.
    st = emu.stats()
    assert st["live_nodes"] == 354
    ran = [(x, y) for x, y, c in zip(st["nodes"]["x"], st["nodes"]["y"], st["nodes"]["clock"],
                                      strict=True) if c > 0]
    assert all(d1.live_grid[y, x] for x, y in ran)
    if name in ("mlp", "attention", "matmul"):
        # 64 or more rows in 8-row blocks: at least 8 grid rows and every grid column work.
        assert len({x for x, _ in ran}) >= grid.Q and len({y for _, y in ran}) >= 8
