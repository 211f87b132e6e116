"""Helpers shared by the fuzz tests (tests/test_fuzz_*.py): run d1 commands in-process the way
the `d1` script does, and run a whole fuzz campaign in one worker process whose peak memory
and time the test can bound.

Each fuzz test is two halves of one file: the test spawns the file itself as a worker
(`python tests/test_fuzz_x.py --worker`), which runs every hypothesis example in-process
(importing Numba once) and prints one JSON line per failure plus a summary; the test then
checks the worker's exit, its summary, and its peak resident memory as the kernel counted it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A worker may use at most this much address space: a runaway allocation then fails in the
# worker (and is reported) instead of pressing on the host. Numba runs well below it.
WORKER_ADDRESS_SPACE = 8 << 30
EXIT_CODES = (0, 1, 2)


@dataclass
class Outcome:
    status: int
    output: str

    @property
    def crashed(self) -> bool:
        """An exit status other than 0, 1, 2, or a traceback or internal error in the output
        (the debugger reports an internal error of one command and carries on)."""
        return (self.status not in EXIT_CODES or "Traceback (most recent call last)" in
                self.output or "internal error" in self.output)


def invoke(args: list[str], cwd: Path) -> Outcome:
    """`d1 ARGS` in this process, in directory `cwd`, errors handled as by the `d1` script
    (d1.cli.main): a D1Error is its exit status, anything else is an internal error (3)."""
    from d1.cli import main

    out = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main(args)
                status = 0
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(old)
    return Outcome(status, out.getvalue())


def files_outside(root: Path, out_dir: str) -> set[str]:
    """Every path under `root` except those inside `root/out_dir`."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.relative_to(root).parts[0] != out_dir}


@dataclass
class WorkerResult:
    returncode: int
    failures: list[dict]
    summary: dict
    peak_rss_bytes: int
    seconds: float
    log: str


def run_worker(script: Path, args: list[str], timeout: float) -> WorkerResult:
    """Run `python SCRIPT --worker ARGS` with D1_DEBUG set (internal errors print their
    traceback), its address space capped, its output in a file; its own peak RSS comes from
    wait4, so other children of the test process do not count."""
    log = io.BytesIO()
    current = tempfile.NamedTemporaryFile(suffix=".json", delete=False)
    current.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "D1_DEBUG": "1",
           "D1_FUZZ_CURRENT": current.name}

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE, WORKER_ADDRESS_SPACE))

    with tempfile.TemporaryFile() as sink:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(script), "--worker", *args], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, preexec_fn=cap)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t0
        sink.seek(0)
        log.write(sink.read())
    text = log.getvalue().decode("utf-8", "replace")
    last = Path(current.name).read_text()
    os.unlink(current.name)
    if proc.returncode != 0 and last:
        text += f"\nthe worker was running: {last[:4000]}\n"
    failures, summary = [], {}
    for line in text.splitlines():
        if line.startswith("FAIL "):
            failures.append(json.loads(line[5:]))
        elif line.startswith("SUMMARY "):
            summary = json.loads(line[8:])
    # ru_maxrss is in KiB on Linux
    return WorkerResult(proc.returncode, failures, summary, usage.ru_maxrss * 1024, seconds,
                        text)


def run_campaign(example, seed: int, deadline: float, batch: int = 20) -> None:
    """Run `example(data)` on hypothesis-generated data (hypothesis.strategies.data()) until
    `deadline` (time.monotonic()), in batches of `batch` examples with seeds seed, seed + 1,
    ... Failures are reported by `example` itself, so nothing is shrunk and a batch ends on
    time; the seed makes a campaign repeatable."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    k = 0
    while time.monotonic() < deadline:
        @hseed(seed + k)
        @settings(max_examples=batch, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def one_batch(data) -> None:
            example(data)

        one_batch()
        k += 1


def warm_up() -> None:
    """(worker side) Run one tiny `d1 run` before a campaign starts timing its commands: the
    first run in a process compiles the emulator's loop, or loads it from Numba's cache, and
    on a tree whose cache is still empty (a fresh checkout) on a loaded host that alone took
    over a minute, so the first example of a campaign failed its time bound whatever it was.
    A crash here is reported like any failure."""
    args = ["run", "warm.d1k", "--mesh", "4x4", "--out-dir", "out"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "warm.d1k").write_text("input x: f32[8, 8]\ny = x + 1\noutput y\n")
        attempt(args=args, warm_up=True)
        res = invoke(args, root)
    if res.crashed or res.status != 0:
        report("warm-up", args=args, status=res.status, output=res.output[-3000:])


def attempt(**fields) -> None:
    """Record (worker side) the example about to run, so that a crash of the whole worker (a
    signal, a native abort) still says which one it was."""
    path = os.environ.get("D1_FUZZ_CURRENT")
    if path:
        Path(path).write_text(json.dumps(fields, default=repr))


def report(kind: str, **fields) -> None:
    """Print one failure (worker side) as a line the test collects."""
    print("FAIL " + json.dumps(fields, default=repr), flush=True)


def summarize(**fields) -> None:
    print("SUMMARY " + json.dumps(fields, default=repr), flush=True)


# ---- campaigns of random DSL programs and broken variants of them (test_fuzz_shapes/vision) ---

# `d1 run` refusing a broken program says where: `prog.d1k:LINE:COL: error: ...`
LOCATED = re.compile(r"^prog\.d1k:\d+:\d+: error: ", re.M)
# A DSL campaign's worker stays under this peak resident memory, and each command under this
# many seconds.
DSL_PEAK_RSS = 2 << 30
DSL_COMMAND_SECONDS = 60


# Seconds of each campaign in the suite (D1_FUZZ_SECONDS overrides it; longer campaigns with
# other seeds find more, e.g. D1_FUZZ_SECONDS=300 D1_FUZZ_SEED=7): four campaigns of 20 s keep
# the whole suite under ten minutes (15 s ran 360 to 940 programs or objects each, here).
FUZZ_SECONDS = 20


def campaign_args() -> tuple[float, list[str]]:
    """(seconds, the worker's arguments: seed and seconds) of a campaign, from D1_FUZZ_SECONDS
    (default FUZZ_SECONDS) and D1_FUZZ_SEED (default 0, or `random`)."""
    seconds = float(os.environ.get("D1_FUZZ_SECONDS", FUZZ_SECONDS))
    return seconds, [os.environ.get("D1_FUZZ_SEED", "0"), str(seconds)]


def check_dsl_campaign(script: Path) -> None:
    """The test half of a DSL campaign: run `script`'s worker for D1_FUZZ_SECONDS (default
    FUZZ_SECONDS) from seed D1_FUZZ_SEED (default 0), and require no failure, at least five
    valid and five broken programs, and the worker's peak memory under DSL_PEAK_RSS."""
    seconds, args = campaign_args()
    res = run_worker(script, args,
                     timeout=seconds + 2 * DSL_COMMAND_SECONDS + 60)
    assert res.returncode == 0, res.log[-4000:]
    assert not res.failures, json.dumps(res.failures[:5], indent=1)
    s = res.summary
    assert s["valid"] >= 5 and s["broken"] >= 5, s
    assert res.peak_rss_bytes < DSL_PEAK_RSS, \
        f"worker peak RSS {res.peak_rss_bytes / 2**30:.2f} GiB"


def dsl_campaign(kind: str, programs, breakages: list[str], seed: int, seconds: float) -> None:
    """The worker half: `d1 run prog.d1k --mesh 4x4 --check` on programs drawn from the
    hypothesis strategy `programs()`, half of them with one statement of `breakages` inserted
    after the first input. A valid program must exit 0 with every output "ok"; a broken one
    must exit 2 with a located error; neither may crash or take longer than
    DSL_COMMAND_SECONDS. Failures are reported as `kind`."""
    from hypothesis import strategies as st

    warm_up()
    deadline = time.monotonic() + seconds
    counts = {"valid": 0, "broken": 0}

    def example(data) -> None:
        text = data.draw(programs())
        broken = data.draw(st.booleans())
        if broken:
            lines = text.splitlines()
            at = data.draw(st.integers(1, len(lines) - 1))     # after the first input
            lines.insert(at, data.draw(st.sampled_from(breakages)))
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
        if res.crashed or not ok or spent > DSL_COMMAND_SECONDS:
            report(kind, text=text, status=res.status, seconds=round(spent, 1),
                   output=res.output[-3000:])

    run_campaign(example, seed, deadline, batch=10)
    summarize(**counts)
