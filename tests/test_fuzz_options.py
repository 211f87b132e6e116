"""Fuzzing the command line: random values for every integer option and every machine
parameter of `d1 run`, `d1 compile` and `d1 sweep`.

Huge, negative and zero numbers, floats such as 1e20, nan and inf, and garbage text go to
--mesh, --seed, --threads, --quantum, --max-cycles, --trace-events, -O and `--set KEY=VALUE`
for every parameter of the machine table (d1isa.machine.PARAMS), on a tiny DSL program and a
tiny assembly program. Each command runs in-process in one worker (tests/fuzzkit.py); every
outcome must be exit status 0, 1 or 2, with no traceback and no internal error, within a time
bound, writing nothing outside the output directory, and the worker's peak memory stays
under 2 GB.

D1_FUZZ_SEED=N (or `random`) picks other examples (default 0); D1_FUZZ_SECONDS bounds the
campaign (default fuzzkit.FUZZ_SECONDS).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402
from fuzzkit import (  # noqa: E402
    attempt,
    campaign_args,
    files_outside,
    invoke,
    report,
    run_campaign,
    run_worker,
    summarize,
    warm_up,
)

PEAK_RSS = 2 << 30
COMMAND_SECONDS = 60
TINY_DSL = "input x: f32[8, 16]\ninput w: f32[16, 8]\nh = relu(x @ w) * 2\noutput h\n"
VADD = ROOT / "programs" / "asm" / "vadd.d1s"


def test_random_option_values_never_crash_or_hang():
    seconds, args = campaign_args()
    res = run_worker(Path(__file__), args,
                     timeout=seconds + 2 * COMMAND_SECONDS + 60)
    assert res.returncode == 0, res.log[-4000:]
    assert not res.failures, json.dumps(res.failures[:5], indent=1)
    s = res.summary
    assert s["examples"] >= 60, s
    for command in ("run", "compile", "sweep"):
        by_status = s["status"][command]
        assert by_status.get("2", 0) >= 5 and by_status.get("0", 0) >= 3, s
    assert res.peak_rss_bytes < PEAK_RSS, f"worker peak RSS {res.peak_rss_bytes / 2**30:.2f} GiB"


# ---- the worker ---------------------------------------------------------------------------------

def strategies():
    from hypothesis import strategies as st

    from d1isa.machine import PARAMS

    numbers = st.sampled_from(
        ["0", "1", "-1", "2", "3", "7", "8", "64", "100", "4096", "65536", "1e20", "1e3", "0.5",
         "-0.0", "nan", "inf", "-inf", "1e308", "1e-300", str(2 ** 31), str(2 ** 63 - 1),
         str(2 ** 63), str(2 ** 64), str(10 ** 30), str(-2 ** 63), "9" * 5000, "0x10", "0b11",
         "1_000", "", " ", "abc", "\u0661\u0662", "4x4", "1.5", "+3", "--help", "2,4"]) \
        | st.integers(-10 ** 6, 10 ** 6).map(str) | st.integers(-2 ** 70, 2 ** 70).map(str)
    meshes = st.sampled_from(
        ["2x2", "1x1", "4x4", "1x8", "3x2", "0x0", "0x4", "-1x4", "4x", "x4", "4x4x4",
         "1025x1", "1024x1024", "99999999999999999999x1", "2X2", " 2x2 ", "2x2,", "abc", "",
         "\u0662x\u0662", "1e3x1", "2x2,4x4", "2x2,0x1"])
    coords = st.sampled_from(["[]", "[[0,0]]", "[[1,1],[0,0]]", "[[99,99]]", "[[0,0],[1,0],[0,1],"
                              "[1,1]]", "[1]", "[[0.5,0]]", "[[true,false]]", "{}", "[[0,0,0]]",
                              "[", "null"])
    keys = [p.key for p in PARAMS]

    def setting(key: str):
        kind = next(p.kind for p in PARAMS if p.key == key)
        value = coords if kind == "coords" else (numbers | st.text(max_size=8)
                                                 if kind == "str" else numbers)
        return value.map(lambda v: f"{key}={v}")

    sets = st.sampled_from([*keys, "warp_drive", "", "cols "]).flatmap(
        lambda k: setting(k) if k in keys else numbers.map(lambda v: f"{k}={v}")) \
        | st.sampled_from(["noequals", "=4", "cols=", "cols==4"])
    compiler_opts = st.sampled_from(["matmul", "double_buffer", "preskew", "reach", "verify",
                                     "bogus"]).flatmap(
        lambda k: (st.sampled_from(["summa", "naive", "true", "false", "yes"]) | numbers)
        .map(lambda v: f"{k}={v}"))
    return st, dict(numbers=numbers, meshes=meshes, sets=sets, opts=compiler_opts, keys=keys)


def draw_args(data, st, v) -> list[str]:
    """One command line: run, compile or sweep with a few fuzzed options."""
    cmd = data.draw(st.sampled_from(["run", "run", "compile", "sweep"]))
    args: list[str] = []
    if data.draw(st.booleans()):
        args += ["--mesh", data.draw(v["meshes"])]
    for _ in range(data.draw(st.integers(0, 2))):
        args += ["--set", data.draw(v["sets"])]
    if cmd == "run":
        program = data.draw(st.sampled_from(["tiny.d1k", "vadd.d1s"]))
        for option in ("--seed", "--threads", "--quantum", "--max-cycles"):
            if data.draw(st.booleans()):
                args += [option, data.draw(v["numbers"])]
        if data.draw(st.booleans()):
            args += ["--trace", "out/trace.json", "--trace-events", data.draw(v["numbers"])]
        if program == "tiny.d1k" and data.draw(st.booleans()):
            args += ["-O", data.draw(v["opts"]), "--check"]
        return ["run", program, "--out-dir", "out", "--json", "out/run.json", *args]
    if cmd == "compile":
        if data.draw(st.booleans()):
            args += ["-O", data.draw(v["opts"])]
        if data.draw(st.booleans()):
            args += ["--emit", data.draw(st.sampled_from(["ast", "ir", "asm"]))]
        # a mesh of a million nodes is a legitimate, slow compile: not a fuzz case here
        args = [a if a != "1024x1024" else "64x64" for a in args]
        return ["compile", "tiny.d1k", "-o", "out/tiny.d1o", *args]
    # sweep's --set KEY=VALUE is an axis of one value; KEY=V1,V2,... adds a longer one
    if data.draw(st.booleans()) or "--mesh" not in args:
        key = data.draw(st.sampled_from(v["keys"]))
        values = data.draw(st.lists(v["numbers"], min_size=1, max_size=3))
        args += ["--set", f"{key}={','.join(values)}"]
    if data.draw(st.booleans()):
        args += ["--max-cycles", data.draw(v["numbers"])]
    program = data.draw(st.sampled_from(["tiny.d1k", "vadd.d1s"]))
    return ["sweep", program, *args, "--csv", "out/sweep.csv"]


def worker(seed: int, seconds: float) -> None:
    st, v = strategies()
    warm_up()
    deadline = time.monotonic() + seconds
    statuses: dict[str, dict[int, int]] = {"run": {}, "compile": {}, "sweep": {}}
    count = [0]

    def example(data) -> None:
        args = draw_args(data, st, v)
        count[0] += 1
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "tiny.d1k").write_text(TINY_DSL)
            (root / "vadd.d1s").write_text(VADD.read_text())
            attempt(args=args)
            t0 = time.monotonic()
            res = invoke(args, root)
            spent = time.monotonic() - t0
            by = statuses[args[0]]
            by[res.status] = by.get(res.status, 0) + 1
            stray = files_outside(root, "out") - {"tiny.d1k", "vadd.d1s"}
            if res.crashed or stray or spent > COMMAND_SECONDS:
                report("options", args=args, status=res.status, seconds=round(spent, 1),
                       stray=sorted(stray), output=res.output[-3000:])

    run_campaign(example, seed, deadline, batch=10)
    summarize(examples=count[0], status={c: {str(k): n for k, n in sorted(by.items())}
                                         for c, by in statuses.items()})


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]) if sys.argv[2] != "random" else int.from_bytes(os.urandom(4)),
           float(sys.argv[3]))
elif __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
