"""The allocate pass on its own: a schedule -> one SRAM address per value (the same on every
node) and the peak bytes per node, or a located error when the program does not fit.

passkit.scheduled runs every pass up to schedule; the tests then call
`compiler.alloc.allocate(sched, sram_bytes, filename, text)` as compiler.pipeline.compile_text
does, with the SRAM size chosen by the test, and look at `value.addr`, the returned peak and
the SourceError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from passkit import FILENAME, mesh, scheduled
from test_compiler_property import programs

from compiler.alloc import ALIGN, allocate
from d1isa.errors import SourceError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (ROOT / "programs").glob("*.d1k"))
BIG = 1 << 30


def reserved(v) -> int:
    """Bytes the allocator reserves for v: its size rounded up to ALIGN."""
    return -(-v.nbytes // ALIGN) * ALIGN


def storage(v):
    """The value whose buffer v is stored in: an update stored in its param's buffer (`alias`)
    and a view of another value's bytes (`base`: a reshape, a gather that moves nothing) are
    that buffer, not buffers of their own."""
    return v.alias or v.base or v


def overlapping_pairs(sched):
    """Pairs of values with buffers of their own that are live during a common step (or both
    before the first)."""
    vs = sched.values
    for i, u in enumerate(vs):
        a0, a1 = sched.live[id(u)]
        for v in vs[i + 1:]:
            b0, b1 = sched.live[id(v)]
            if a0 <= b1 and b0 <= a1 and storage(u) is not storage(v):
                yield u, v


def assert_sound(sched, peak: int, sram: int) -> None:
    for v in sched.values:
        assert v.addr >= 0 and v.addr % ALIGN == 0, (v.name, v.addr)
    for u, v in overlapping_pairs(sched):
        assert (u.addr + reserved(u) <= v.addr or v.addr + reserved(v) <= u.addr), (
            f"{u.name} @{u.addr}+{reserved(u)} and {v.name} @{v.addr}+{reserved(v)} overlap")
    assert peak == max((v.addr + reserved(v) for v in sched.values), default=0)
    assert peak <= sram


def too_big(text: str, machine, sram: int) -> SourceError:
    _, sched = scheduled(text, machine)
    with pytest.raises(SourceError) as info:
        allocate(sched, sram, FILENAME, text)
    return info.value


# ---- soundness --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["2x2", "4x4", "h6x5"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_programs_get_aligned_addresses_that_never_overlap_while_live(name, spec):
    text = (ROOT / "programs" / f"{name}.d1k").read_text()
    m = mesh(spec)
    _, sched = scheduled(text, m)
    peak = allocate(sched, m.sram_bytes, FILENAME, text)
    assert_sound(sched, peak, m.sram_bytes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=programs())
def test_random_programs_get_aligned_addresses_that_never_overlap_while_live(text: str):
    m = mesh("4x4")
    _, sched = scheduled(text, m)
    peak = allocate(sched, m.sram_bytes, FILENAME, text)
    assert_sound(sched, peak, m.sram_bytes)


def test_a_dead_value_s_space_is_reused():
    text = "input x: f32[32, 64]\ninput b: f32[64]\ny = relu(x + b) * 2\nz = exp(y)\noutput y, z\n"
    m, sched = scheduled(text)
    peak = allocate(sched, BIG, FILENAME, text)
    x, b, y, z = (m.value(n) for n in "xbyz")
    assert [x.addr, b.addr, y.addr] == [0, 576, 1152]     # 576 = 8 rows x 64 B + 64 B slack
    assert z.addr == x.addr                               # x is dead once y is computed
    assert peak == 1728


def test_the_peak_is_the_exact_sram_size_needed():
    text = (ROOT / "programs" / "attention.d1k").read_text()
    _, sched = scheduled(text)
    peak = allocate(sched, BIG, FILENAME, text)
    assert allocate(sched, peak, FILENAME, text) == peak
    with pytest.raises(SourceError):
        allocate(sched, peak - 1, FILENAME, text)


def test_allocation_is_deterministic():
    text = (ROOT / "programs" / "layernorm.d1k").read_text()
    runs = []
    for _ in range(2):
        _, sched = scheduled(text)
        allocate(sched, BIG, FILENAME, text)
        runs.append([(v.name, v.addr) for v in sched.values])
    assert runs[0] == runs[1]


# ---- too big ----------------------------------------------------------------------------------

def test_a_value_that_does_not_fit_is_reported_at_its_step_with_the_sizes():
    # On 2x2 each node holds an 8 x 8 f32 block of x and of y: 8 rows x 64 B + 64 B = 576 B.
    text = "input x: f32[16, 16]\ny = x + 1\nz = exp(y)\noutput y, z\n"
    err = too_big(text, mesh("2x2"), 1000)
    (d,) = err.diagnostics
    assert (d.file, d.line, d.col, d.source_line) == (FILENAME, 2, 7, "y = x + 1")
    assert d.message == ("does not fit in a node's SRAM: 'y' needs 576 B per node, and with the "
                         "values live at this point (x (576 B)) a node would need 1,152 B, but "
                         "it has 1,000 B")
    assert err.exit_code == 2


def test_an_input_that_does_not_fit_is_reported_at_its_declaration():
    text = ("input a: f32[8, 8]\n"
            "y = a * 2\n"
            "input big: f32[2000]\n"
            "z = a * 3\n"
            "output y, z, big\n")
    (d,) = too_big(text, mesh("2x2"), 4096).diagnostics
    assert "'big' needs" in d.message
    assert (d.line, d.col) == (3, 7)


def _max_live_bytes(sched) -> int:
    """The most bytes live at any one time: no allocator can do with less."""
    points = sorted({k for span in sched.live.values() for k in span})
    return max(sum(reserved(v) for v in sched.values
                   if sched.live[id(v)][0] <= k <= sched.live[id(v)][1]) for k in points)


def test_a_does_not_fit_error_never_claims_the_need_is_within_the_sram():
    text = (ROOT / "programs" / "softmax.d1k").read_text()
    _, sched = scheduled(text, mesh("4x4"))
    sram = _max_live_bytes(sched)        # enough for the live values, not for first fit
    try:
        allocate(sched, sram, FILENAME, text)
    except SourceError as e:
        (d,) = e.diagnostics
        need, has = (int(n.replace(",", "")) for n in
                     re.search(r"would need ([\d,]+) B, but it has ([\d,]+) B", d.message)
                     .groups())
        assert need > has, d.message
