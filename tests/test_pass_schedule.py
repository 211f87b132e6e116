"""The schedule pass on its own: the map pass's steps -> the steps that run, in order, and the
live range of every value.

passkit.scheduled runs parse, check, lower and map, then calls `compiler.alloc.schedule(steps,
inputs, outputs)` as compiler.pipeline.compile_text does. The tests look at the kept steps and
at `live[id(value)] = (first step, last step)`, where -1 is "before the first step" (the host
writes inputs then) and len(steps) is "after the last one" (the host reads outputs then).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from passkit import mesh, scheduled
from test_compiler_property import programs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "programs").glob("*.d1k"))

DEAD_CHAIN = """input a: f32[16, 16]
input b: f32[16, 16]
c = a @ b
d1 = relu(b)
d2 = d1 * 3
d3 = sum(d2, axis=0)
e = c + 1
output e
"""


def labels(steps) -> list[str]:
    return [f"{s.kind}:{s.label}" for s in steps]


def live_of(sched, value) -> tuple[int, int]:
    return sched.live[id(value)]


# ---- dead steps -------------------------------------------------------------------------------

def test_steps_nobody_reads_are_dropped_with_the_steps_only_they_read():
    m, sched = scheduled(DEAD_CHAIN)
    assert labels(m.mapper.steps) == ["matmul[summa]:c", "elementwise(relu mul):d2",
                                      "sum[cols]:d3", "elementwise(add):e"]
    assert labels(sched.steps) == ["matmul[summa]:c", "elementwise(add):e"]


def test_a_redistribution_only_a_dead_step_reads_is_dropped():
    m, sched = scheduled("input x: f32[32, 32]\ns = sum(x, axis=1)\ny = x + s\noutput s\n")
    assert labels(m.mapper.steps) == ["sum[rows]:s", "redistribute:y", "elementwise(add):y"]
    assert labels(sched.steps) == ["sum[rows]:s"]


def test_values_of_dropped_steps_get_no_live_range():
    m, sched = scheduled(DEAD_CHAIN)
    assert {v.name for v in sched.values} == {"a", "b", "c", "c.apanels", "c.bpanels", "e"}
    assert id(m.value("d3")) not in sched.live


def test_a_program_that_only_outputs_an_input_has_no_steps():
    m, sched = scheduled("input x: f32[8]\noutput x\n")
    assert sched.steps == []
    assert live_of(sched, m.value("x")) == (-1, 0)


# ---- order ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_kept_steps_keep_program_order(name: str):
    m, sched = scheduled((ROOT / "programs" / f"{name}.d1k").read_text(), mesh("4x4"))
    position = {id(s): k for k, s in enumerate(m.mapper.steps)}
    order = [position[id(s)] for s in sched.steps]
    assert order == sorted(order) and len(set(order)) == len(order)


def assert_dependencies_respected(m, sched) -> None:
    """Every step reads only what the host placed (inputs, params, their copies) or values that
    an earlier kept step wrote, and no value is written twice."""
    ready = {id(v) for v in m.mapper.placed}
    for st in sched.steps:
        for v in st.ins:
            assert id(v) in ready, f"{st.kind}:{st.label} reads {v.name} before it is written"
        for v in st.writes():
            assert id(v) not in ready, f"{v.name} written twice"
            ready.add(id(v))
    for v in m.outputs:
        assert id(v) in ready, f"output {v.name} is never written"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_step_runs_after_the_steps_it_reads_from(name: str):
    m, sched = scheduled((ROOT / "programs" / f"{name}.d1k").read_text(), mesh("4x4"))
    assert_dependencies_respected(m, sched)


# ---- liveness ---------------------------------------------------------------------------------

def test_inputs_are_live_from_before_the_first_step_to_their_last_reader():
    m, sched = scheduled(DEAD_CHAIN)
    assert live_of(sched, m.value("a")) == (-1, 0)
    assert live_of(sched, m.value("b")) == (-1, 0)     # its dead reader d1 does not count


def test_outputs_stay_live_until_after_the_last_step():
    m, sched = scheduled(DEAD_CHAIN)
    assert live_of(sched, m.value("e")) == (1, 2) and len(sched.steps) == 2


def test_an_intermediate_is_live_from_its_writer_to_its_last_reader():
    m, sched = scheduled("input x: f32[8, 16]\na = exp(x)\nb = a + 1\ns = sum(x, axis=1)\n"
                         "d = sum(a, axis=0)\noutput b, s, d\n")
    assert labels(sched.steps) == ["elementwise(exp):a", "elementwise(add):b", "sum[rows]:s",
                                   "sum[cols]:d"]
    assert live_of(sched, m.value("a")) == (0, 3)


def test_scratch_buffers_live_only_during_their_own_step():
    m, sched = scheduled(DEAD_CHAIN)
    (mm,) = [s for s in sched.steps if s.kind.startswith("matmul")]
    assert [t.name for t in mm.temps] == ["c.apanels", "c.bpanels"]
    assert [live_of(sched, t) for t in mm.temps] == [(0, 0), (0, 0)]


def test_an_input_that_is_also_an_output_lives_throughout():
    m, sched = scheduled("input x: f32[8]\ny = x + 1\noutput y, x\n")
    assert live_of(sched, m.value("x")) == (-1, 1)


def test_an_input_nobody_reads_is_live_only_before_the_program():
    m, sched = scheduled("input x: f32[8]\ninput unused: f32[8]\ny = x + 1\noutput y\n")
    assert live_of(sched, m.value("unused")) == (-1, -1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=programs())
def test_random_programs_schedule_in_dependency_order_with_exact_live_ranges(text: str):
    m, sched = scheduled(text, mesh("4x4"))
    assert_dependencies_respected(m, sched)
    end = len(sched.steps)
    # Host-placed values (inputs, params and their transposed copies) are live before step 0.
    expect: dict[int, list[int]] = {id(v): [-1] for v in m.mapper.placed}
    for k, st in enumerate(sched.steps):
        for v in st.values():
            expect.setdefault(id(v), []).append(k)
    for v in m.outputs:
        expect[id(v)].append(end)
    inputs = {id(v) for v in m.mapper.placed}
    want = {key: (-1 if key in inputs else min(ks), max(ks)) for key, ks in expect.items()}
    assert sched.live == want, text
