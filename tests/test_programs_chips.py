"""Every DSL program of programs/ and of the test suite passes --check on a machine of 2 x 2 chips.

The machine is `--mesh 4x4 --chips 2x2`: four 4 x 4 chips joined by chip-edge links, 64 nodes,
small enough for CI. The test suite's DSL programs are the sources tests/golden/objects.json
records (every program the suite compiled when the record was taken). Each is compiled for the
four chips (a training program data-parallel, anything else onto the whole machine, as
`d1 run --chips 2x2` does), run with seeded inputs, and every output and every updated param
is compared with the numpy reference under the --check tolerance (tests/progkit.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from progkit import run_and_compare

import compiler
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]
RECORD = json.loads((ROOT / "tests" / "golden" / "objects.json").read_text())


def _programs() -> list[tuple[str, str]]:
    """(name, source) of every distinct DSL program: programs/*.d1k, then the record's."""
    seen: dict[str, str] = {}
    for p in sorted((ROOT / "programs").glob("*.d1k")):
        seen.setdefault(p.read_text(), f"programs/{p.name}")
    k = 0
    for row in RECORD:
        if row["kind"] != "d1k" or row["source"] in seen:
            continue
        k += 1
        seen[row["source"]] = f"suite-{k:02d}-{Path(row['filename']).name}"
    return [(name, text) for text, name in seen.items()]


PROGRAMS = _programs()


@pytest.fixture(scope="module")
def chips():
    return load_machine(mesh="4x4", chips="2x2")


def test_every_shipped_program_and_the_suites_are_here():
    names = [n for n, _ in PROGRAMS]
    shipped = {f"programs/{p.name}" for p in (ROOT / "programs").glob("*.d1k")}
    assert shipped <= set(names)
    assert len(names) > len(shipped) + 20


@pytest.mark.parametrize("name, text", PROGRAMS, ids=[n for n, _ in PROGRAMS])
def test_program_checks_on_two_by_two_chips(name, text, chips):
    obj = compiler.compile_source(text, chips, name)
    assert obj.machine.chips == 4 and obj.machine.n_live == 64
    graph = compiler.check_source(text, chips, name)
    parallel = obj.meta.get("parallel")
    if graph.updates and parallel is None:
        # a training program not data-parallel says why (d1 run shows it as a note)
        from compiler.pipeline import compile_text
        assert any("not data-parallel" in n for n in compile_text(text, chips, name).notes)
    run_and_compare(obj, text, chips, name, seed=1, max_cycles=5_000_000)
