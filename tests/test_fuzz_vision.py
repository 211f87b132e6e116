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
campaign (default fuzzkit.FUZZ_SECONDS).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402
from fuzzkit import check_dsl_campaign, dsl_campaign  # noqa: E402

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
    check_dsl_campaign(Path(__file__))


# ---- the worker ---------------------------------------------------------------------------------

def worker(seed: int, seconds: float) -> None:
    from test_vision_property import vision_programs

    dsl_campaign("vision", vision_programs, BREAKAGES, seed, seconds)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]) if sys.argv[2] != "random" else int.from_bytes(os.urandom(4)),
           float(sys.argv[3]))
elif __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
