"""Debugger speed, each figure next to its baseline measured in the same run.

    python -m benchmarks.debugger_bench          (or: from benchmarks.debugger_bench import run)

Figures (measured on the host; JIT compile time excluded; best of a few repeats, since the host
is shared):

- continue: the same run of about 40 million node-instructions, by `Emulator.run` with no
  debugger and by `Debugger.cont` with four breakpoints set (a label in the outer loop of one
  node, hit every round; a conditional one tested every round and true once; a source line;
  a label never reached), every hit continued through, checkpoints on. The two alternate,
  best of REPEATS each. Target: the debugger at >= 50% of the emulator's speed.
- reverse: at the end of a run of about 10 million node-instructions, `reverse-step`,
  `reverse-stepi` and `reverse-continue`, each answered by restoring a checkpoint and
  replaying. Target: reverse-step under 2 s.
- the same two on the 354-node d1 machine (its state is 490 MB), when `d1=True`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks import take_arguments
from d1isa.asm import assemble
from d1isa.machine import Machine, load_machine

REPEATS = 5
CONTINUE_INSTRUCTIONS = 40_000_000
REVERSE_INSTRUCTIONS = 10_000_000

# Every node runs ROUNDS rounds of WORK-iteration integer work, then passes a value east along
# its row (the first column only sends, the last only receives): about 4 * WORK * ROUNDS
# instructions per node, with a message per round that orders neighbouring nodes.
PROGRAM = """
.equ HAS_E, @x < @w - 1
.equ HAS_W, @x > 0
.text all
        movi    r20, {rounds}
round:
        movi    r1, {work}
work:   addi    r2, r2, 3
        xor     r3, r3, r2
        addi    r1, r1, -1
        bnez    r1, work
        li      r5, HAS_W
        beqz    r5, nowest
        recv    r6, W
        add     r3, r3, r6
nowest:
        li      r5, HAS_E
        beqz    r5, noeast
        send    E, r3
noeast:
        addi    r20, r20, -1
        bnez    r20, round
        halt
never:  halt
"""


def bench_object(machine: Machine, total: int = 10_000_000):
    rounds = 50
    work = max(1, total // (machine.n_live * rounds * 4))
    text = PROGRAM.format(rounds=rounds, work=work)
    return assemble(text, filename="bench.d1s", machine=machine)


def _debugger(obj):
    """A Debugger with the benchmark's four breakpoints."""
    from emulator.debugger import Debugger

    dbg = Debugger(obj)
    dbg.set_focus((1, 1))
    dbg.break_at("noeast")                                      # once per round on (1,1)
    dbg.break_at("nowest", node=(2, 1), condition="r20 == 1")   # tested every round
    dbg.break_at("bench.d1s:23", node=(0, 0))                   # `halt` of node (0,0)
    dbg.break_at("never", node="all")                           # never reached
    return dbg


def _continue_to_end(dbg) -> int:
    hits = 0
    while True:
        stop = dbg.cont()
        if stop.reason != "breakpoint":
            break
        hits += 1
    assert stop.reason == "halted", stop.describe()
    return hits


def measure(machine: Machine, report: Callable[[str], None], label: str) -> dict[str, float]:
    from emulator import Emulator

    long_obj = bench_object(machine, CONTINUE_INSTRUCTIONS)
    Emulator(long_obj).run(max_instructions=10)      # warm the JIT outside the timed region
    figures: dict[str, float] = {}

    # Plain and debugged runs alternate, so both see the same load on a shared host.
    t_plain = t_dbg = float("inf")
    n_instr = 0
    hits = 0
    for _ in range(REPEATS):
        emu = Emulator(long_obj)
        t0 = time.perf_counter()
        res = emu.run()
        t_plain = min(t_plain, time.perf_counter() - t0)
        assert res.status == "halted", res.report()
        n_instr = res.instructions
        dbg = _debugger(long_obj)
        t0 = time.perf_counter()
        hits = _continue_to_end(dbg)
        t_dbg = min(t_dbg, time.perf_counter() - t0)
    rate_plain = n_instr / t_plain
    rate_dbg = n_instr / t_dbg
    figures.update(plain_rate=rate_plain, debugger_rate=rate_dbg, hits=float(hits),
                   ratio=rate_dbg / rate_plain)
    report(f"{label}: continue over {n_instr / 1e6:.1f} M node-instructions: emulator alone "
           f"{t_plain:.3f} s = {rate_plain / 1e6:.0f} M/s; debugger with 4 breakpoints "
           f"({hits} hits) {t_dbg:.3f} s = {rate_dbg / 1e6:.0f} M/s = "
           f"{100 * rate_dbg / rate_plain:.0f}% (target >= 50%)")
    ci = dbg.checkpoint_info()
    report(f"{label}:   checkpoints: {ci['checkpoints']} using {ci['bytes'] / 2**20:.1f} MiB, "
           f"one every {ci['interval_instructions']:,} instructions; taking them cost "
           f"{ci['seconds_taking']:.3f} s")

    # Reverse execution at the end of a 10-million-instruction run.
    dbg = _debugger(bench_object(machine, REVERSE_INSTRUCTIONS))
    _continue_to_end(dbg)
    t_end = dbg.position
    dbg.delete()
    dbg.break_at("nowest", node="all", condition="r20 == 2")
    dbg.set_focus((2, 1))
    t0 = time.perf_counter()
    dbg.reverse_stepi()
    t_rsi = time.perf_counter() - t0
    t0 = time.perf_counter()
    stop = dbg.reverse_step()
    t_rs = time.perf_counter() - t0
    assert stop.reason == "step", stop.describe()
    t0 = time.perf_counter()
    stop = dbg.reverse_continue()
    t_rc = time.perf_counter() - t0
    assert stop.reason == "breakpoint", stop.describe()
    figures.update(reverse_step_s=t_rs, reverse_stepi_s=t_rsi, reverse_continue_s=t_rc)
    report(f"{label}: at T={t_end / 1e6:.1f} M: reverse-step {t_rs:.3f} s (target < 2 s), "
           f"reverse-stepi {t_rsi:.3f} s, reverse-continue {t_rc:.3f} s (back to "
           f"T={stop.position:,})")
    return figures


def run(report: Callable[[str], None] = print, d1: bool = True) -> dict[str, float]:
    """Measure everything; report one line per figure; return the figures."""
    figures = {f"m4x4_{k}": v for k, v in
               measure(load_machine(mesh="4x4"), report, "4x4 mesh").items()}
    if d1:
        figures.update({f"d1_{k}": v for k, v in
                        measure(load_machine(), report, "d1 (354 nodes)").items()})
    return figures


def main(argv: list[str] | None = None) -> None:
    take_arguments(argv, "debugger_bench", "debugger")
    run()


if __name__ == "__main__":
    main()
