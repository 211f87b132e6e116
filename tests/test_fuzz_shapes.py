"""Fuzzing the shape forms through the command line: `d1 run PROG --mesh 4x4 --check` on random
programs of reshape, concat, indexing and slicing, transpose with axes and batched matmul (the
generator of tests/test_shape_property.py), and on broken variants of them.

A well-typed program must compile, run and match the numpy reference (exit 0, every output
"ok"); a program whose shape form is broken (an index out of range, a slice that selects
nothing, a non-literal index, a bad permutation, a reshape of the wrong size, a concat of
mismatched tensors, a batched matmul whose batch dimensions do not broadcast, an unclosed
bracket) must be refused with exit 2 and a located `file:line:col: error:` message, never a
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

# Broken variants: a statement appended to a well-typed program (its first input is `in1`,
# of 2 to 4 dimensions).
BREAKAGES = [
    "bad = in1[99]", "bad = in1[0, 0, 0, 0, 0]", "bad = in1[1:1]", "bad = in1[::0]",
    "bad = in1[in1]", "bad = in1[0:99]", "bad = reshape(in1, [7, 11, 13])",
    "bad = reshape(in1, [-1, -1])", "bad = reshape(in1, [0])", "bad = transpose(in1, [0, 0])",
    "bad = transpose(in1, [5, 0])", "bad = concat(in1, reshape(in1, [-1]), axis=0)",
    "bad = concat(in1, in1, axis=9)", "bad = concat(in1, in1)", "bad = in1[0",
    "bad = reshape(in1, [1 2])", "bad = in1 @ reshape(in1, [2, 3, 5, 7])",
    "bad = [1, 2]", "bad = in1[1.5]", "bad = concat(in1, cast(in1, bf16), cast(in1, f32), axis=0)",
]


def test_random_shape_programs_run_and_check_from_the_command_line():
    check_dsl_campaign(Path(__file__))


# ---- the worker ---------------------------------------------------------------------------------

def worker(seed: int, seconds: float) -> None:
    from test_shape_property import shape_programs

    dsl_campaign("shapes", shape_programs, BREAKAGES, seed, seconds)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(int(sys.argv[2]) if sys.argv[2] != "random" else int.from_bytes(os.urandom(4)),
           float(sys.argv[3]))
elif __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
