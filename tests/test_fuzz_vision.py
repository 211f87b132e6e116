"""Fuzzing the vision forms through the command line: `d1 run PROG --mesh 4x4 --check` on random
programs of conv2d, maxpool2d, avgpool2d and per-channel biases (the generator of
tests/test_vision_property.py), and on broken variants of them.

A well-typed program must compile, run and match the numpy reference (exit 0, every output
"ok"); a program whose vision form is broken (weights or input of the wrong rank, a channel
mismatch, a stride, padding or dilation that is not a positive (non-negative) integer literal
or a list of the right length, a pool without a size, a window larger than the padded input,
padding as large as the window, a flag that is not 0 or 1, an unknown keyword, an unclosed
call) must be refused with exit 2 and a located `file:line:col: error:` message, never a
traceback. Each command runs in-process in one worker (tests/fuzzkit.py) whose peak memory
stays under 2 GB.

D1_FUZZ_SEED=N (or `random`) picks other examples (default 0); D1_FUZZ_SECONDS bounds the
campaign (default 40).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402
from fuzzkit import attempt, invoke, report, run_campaign, run_worker, summarize  # noqa: E402

PEAK_RSS = 2 << 30
COMMAND_SECONDS = 60
LOCATED = re.compile(r"^prog\.d1k:\d+:\d+: error: ", re.M)

# Broken variants: a statement inserted into a well-typed program (its first input is `in1`,
# [N, C, H, W] with H and W of 3 to 12).
BREAKAGES = [
    "bad = conv2d(in1, reshape(in1, [-1]))", "bad = conv2d(reshape(in1, [-1, 1]), in1)",
    "bad = conv2d(in1, concat(in1, in1, axis=1))", "bad = conv2d(in1, in1, stride=0)",
    "bad = conv2d(in1, in1, stride=[1, 1, 1])", "bad = conv2d(in1, in1, pad=[1, 2])",
    "bad = conv2d(in1, in1, pad=-1)", "bad = conv2d(in1, in1, dilation=in1)",
    "bad = conv2d(in1, in1, dilation=[1, 1.5])", "bad = conv2d(in1, in1, 2)",
    "bad = conv2d(in1, in1, strides=1)", "bad = conv2d(in1, 3)", "bad = conv2d(in1, in1",
    "bad = maxpool2d(in1)", "bad = maxpool2d(in1, size=99)", "bad = avgpool2d(in1, size=2, pad=5)",
    "bad = maxpool2d(in1, size=2, count_pad=1)", "bad = avgpool2d(in1, size=2, ceil=3)",
    "bad = maxpool2d(reshape(in1, [-1]), size=2)", "bad = avgpool2d(in1, size=[0, 1])",
    "bad = maxpool2d(in1, size=2, dilation=99)", "bad = maxpool2d(in1, size=[1, 2, 3])",
]


def test_random_vision_programs_run_and_check_from_the_command_line():
    seconds = float(os.environ.get("D1_FUZZ_SECONDS", "40"))
    res = run_worker(Path(__file__), [os.environ.get("D1_FUZZ_SEED", "0"), str(seconds)],
                     timeout=seconds + 2 * COMMAND_SECONDS + 60)
    assert res.returncode == 0, res.log[-4000:]
    assert not res.failures, json.dumps(res.failures[:5], indent=1)
    s = res.summary
    assert s["valid"] >= 5 and s["broken"] >= 5, s
    assert res.peak_rss_bytes < PEAK_RSS, f"worker peak RSS {res.peak_rss_bytes / 2**30:.2f} GiB"


# ---- the worker ---------------------------------------------------------------------------------

def worker(seed: int, seconds: float) -> None:
    from hypothesis import strategies as st
    from test_vision_property import vision_programs

    deadline = time.monotonic() + seconds
    counts = {"valid": 0, "broken": 0}

    def example(data) -> None:
        text = data.draw(vision_programs())
        broken = data.draw(st.booleans())
        if broken:
            lines = text.splitlines()
            at = data.draw(st.integers(1, len(lines) - 1))     # after the first input
            lines.insert(at, data.draw(st.sampled_from(BREAKAGES)))
            text = "\n".join(lines) + "\n"
        seed_ = data.draw(st.integers(0, 3))
        args = ["run", "prog.d1k", "--mesh", "4x4", "--check", "--seed", str(seed_),
                "--out-dir", "out"]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "prog.d1k").write_text(text)
            attempt(args=args, text=text)
            t0 = time.monotonic()
            res = invoke(args, root)
            spent = time.monotonic() - t0
        counts["broken" if broken else "valid"] += 1
        if broken:
            ok = res.status == 2 and LOCATED.search(res.output) is not None
        else:
            ok = res.status == 0 and "FAIL" not in res.output and " ok" in res.output
        if res.crashed or not ok or spent > COMMAND_SECONDS:
            report("vision", text=text, status=res.status, seconds=round(spent, 1),
                   output=res.output[-3000:])

    run_campaign(example, seed, deadline, batch=10)
    summarize(**counts)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]) if sys.argv[2] != "random" else int.from_bytes(os.urandom(4)),
           float(sys.argv[3]))
elif __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
