"""The emulator on MPI ranks (emulator.distributed, docs/SCALE.md): bit-identical to one process.

One `mpiexec -n R` job per rank count runs every program of programs/ and the cross-rank cases of
tests/mpikit.py on a 2 x 2-chip machine of 4 x 4 chips, a few training steps and the Python API
on every rank, and writes a digest; the test compares the digests of R = 2 and 4 with one
process's (R = 1, run here). Then the command line on ranks: `d1 run` output and JSON, Ctrl-C, a
failing rank, more ranks than chips. Every job has a timeout: a hang fails the test instead of the
suite. The tests that need MPI skip when mpi4py or mpiexec is missing (the [mpi] extra); the one
that checks a single process never imports mpi4py runs everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mpikit
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _mpiexec() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None,
                               reason="mpi4py or mpiexec not installed (pip install -e '.[mpi]')")
# rank counts compared with one process (D1_MPI_RANKS=2 for a quicker run)
RANKS = [int(r) for r in os.environ.get("D1_MPI_RANKS", "2,4").split(",")]
TIMEOUT = 300
# the command line's machine options for the test machine
MACHINE = ["--mesh", "4x4", "--set", "chips_x=2", "--set", "chips_y=2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "MPI_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _mpi(ranks: int, *args: str, timeout: float = TIMEOUT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(ranks), PY, *args], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mpi")
    mpikit.prepare(d)
    return d


@pytest.fixture(scope="module")
def digests(work: Path) -> dict[int, dict]:
    out = {}
    for r in RANKS:
        dest = work / f"digest-{r}.json"
        p = _mpi(r, str(ROOT / "tests" / "mpikit.py"), str(work), str(dest))
        assert p.returncode == 0, f"mpiexec -n {r}: exit {p.returncode}\n{p.stderr[-3000:]}"
        out[r] = json.loads(dest.read_text())
    return out


@pytest.fixture(scope="module")
def one_process(work: Path) -> dict:
    """The reference: every case in this process, without MPI."""
    out = mpikit.run_all(work, None)
    out["api"] = mpikit.api_on_every_rank(work, None)
    return json.loads(json.dumps(out, sort_keys=True))


@needs_mpi
@pytest.mark.parametrize("ranks", RANKS)
def test_bit_identical_for_any_number_of_ranks(ranks, digests, one_process):
    got = digests[ranks]
    assert sorted(got["programs"]) == sorted(one_process["programs"])
    for name, want in one_process["programs"].items():
        for key in want:
            assert got["programs"][name][key] == want[key], \
                f"{name}: {key} differs on {ranks} ranks"
    assert got["train"] == one_process["train"]
    assert got["api"] == one_process["api"]


@needs_mpi
def test_the_cases_cross_ranks(one_process):
    """The digest is worth comparing: the cross-rank cases do what they are for."""
    p = one_process["programs"]
    cross = p["x_cross.d1o"]
    assert cross["status"] == "halted"
    ids = cross["values"]["ids"]
    nodes = cross["nodes"]
    special = {(3, 1), (4, 1), (1, 5)}
    for i, row in enumerate(ids):
        xy = (nodes["x"][i], nodes["y"][i])
        if xy in special:
            assert row[0] == i                          # getid on a rank's own rows
        elif xy != (1, 3) and xy != (1, 4):
            assert row == [i, 64, xy[0], xy[1]]         # getid, getn, getx, gety
    assert nodes["stall_send"][11] > 0                  # (3,1): its FIFO on (4,1) filled up
    assert ids[12][3] == 60 and ids[41][2] == sum(k * 7919 for k in range(100))
    dl = p["x_deadlock.d1o"]
    assert dl["status"] == "deadlock"
    assert "a cycle of 4 waiting nodes" in dl["report"] and "(3,4)" in dl["report"]
    assert "(0,3) pc 1 `halt`" in dl["report"]          # the chain across ranks to a halted node
    tr = p["x_trap.d1o"]
    assert tr["status"] == "trapped" and "user trap (code 7)" in tr["report"]
    assert "has trapped (user trap)" in tr["report"]
    lim = p["token_ring.d1o --max-cycles 700"]
    assert lim["status"] == "trapped" and "passed max_cycles 700" in lim["report"]
    assert p["token_ring.d1o"]["status"] == "halted"
    assert len(one_process["train"]["history"]) == mpikit.TRAIN_STEPS


@needs_mpi
def test_d1_run_on_two_ranks(work, tmp_path):
    """`mpiexec -n 2 d1 run`: the same report, exit status and JSON figures as one process."""
    prog = str(work / "x_deadlock.d1o")
    one = subprocess.run([PY, "-m", "d1", "run", prog, "--json", str(tmp_path / "one.json"),
                          "--out-dir", str(tmp_path / "o1")], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=TIMEOUT)
    two = _mpi(2, "-m", "d1", "run", prog, "--stats", "--json", str(tmp_path / "two.json"),
               "--out-dir", str(tmp_path / "o2"))
    assert one.returncode == two.returncode == 1, two.stderr
    assert "deadlock: a cycle of 4 waiting nodes" in two.stderr
    assert "note: running on 2 MPI ranks holding chips 0-1, 2-3" in two.stderr
    assert "window exchange (sync overhead)" in two.stdout      # --stats
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    assert a["result"] == b["result"]
    for key in ("modelled", "nodes", "links"):
        assert a["stats"][key] == b["stats"][key]
    host = b["stats"]["host"]
    assert host["ranks"] == 2 and host["window_cycles"] == host["lookahead_cycles"] == 101
    assert len(host["sync_seconds_by_rank"]) == 2 and host["sync_seconds"] >= 0
    assert host["state_bytes"] < a["stats"]["host"]["state_bytes"] * 0.6


@needs_mpi
def test_d1_scale_on_two_ranks(tmp_path):
    """`mpiexec -n 2 d1 scale`: every point of the study runs on the ranks, and the CSV is the
    one process's, byte for byte (the host's seconds are printed, not written)."""
    args = ["-m", "d1", "scale", "programs/train_digits.d1k", "--mesh", "4x4",
            "--chips", "1x1,2x1", "--weak"]
    one = subprocess.run([PY, *args, "--out-dir", str(tmp_path / "one")], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=TIMEOUT)
    two = _mpi(2, *args, "--out-dir", str(tmp_path / "two"))
    assert one.returncode == two.returncode == 0, two.stderr[-3000:]
    csv = (tmp_path / "two" / "scale.csv").read_text()
    assert csv == (tmp_path / "one" / "scale.csv").read_text()
    assert ",data," in csv                          # the 2-chip points ran data-parallel


@needs_mpi
def test_ctrl_c_stops_every_rank(work):
    """Ctrl-C (mpiexec passes it to every rank) stops a run on all ranks at a window's end."""
    proc = subprocess.Popen([MPIEXEC, "-n", "2", PY, "-m", "d1", "run",
                             str(work / "forever.d1s"), *MACHINE, "--max-cycles", "1000000000000",
                             "--out-dir", str(work / "o-forever")],
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + TIMEOUT
        while "note: running on 2 MPI ranks" not in seen:   # the run is about to start
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err       # as for one process: click reports "aborted"
    assert "aborted" in err and "Traceback" not in err


@needs_mpi
def test_a_failing_rank_stops_all(tmp_path):
    """A rank that calls something else than rank 0 stops every rank with a message."""
    p = _mpi(2, str(ROOT / "tests" / "mpikit.py"), "--mismatch", timeout=120)
    assert p.returncode != 0
    assert "every rank must make the same calls in the same order" in p.stderr


@needs_mpi
def test_arguments_rank_0_refuses_raise_on_every_rank():
    """Emulator(...), set_input and output with arguments rank 0 refuses (the other ranks'
    are not read) raise on every rank, which can then go on. Only rank 0 used to raise: the
    others waited in the call, and were stopped for calling out of order (or, when rank 0
    ended on the error, waited forever)."""
    from emulator.state import physical_memory

    p = _mpi(3, str(ROOT / "tests" / "mpikit.py"), "--refused", timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    for r in range(3):
        assert f"rank {r} refused 0: window must be in 1 .. 1,099,511,627,776 cycles, got 0" \
            in p.stdout
        assert f"rank {r} refused 1: input 'a' must have shape" in p.stdout
        assert f"rank {r} refused 2: no tensor named 'nosuch'" in p.stdout
        # int() read 1.5 as 1 thread, and 'abc' was a ValueError on rank 0 alone
        assert f"rank {r} refused 3: window must be an integer number of cycles, not str" \
            in p.stdout
        assert f"rank {r} refused 4: threads must be an integer, not float" in p.stdout
        # a share too large for the host: each rank used to find it as it allocated, and
        # stopped every rank with its own copy of the message
        if (physical_memory() or 0) < 1 << 40:
            assert f"rank {r} refused 5: machine 'd1-32x32-chips3x1' (3,072 live nodes; a " \
                   "rank holds 1,024 of them)" in p.stdout
        assert f"rank {r}: halted" in p.stdout
        # a closed emulator's run failed on every rank as an internal error (exit 3)
        assert f"rank {r} refused after close: run: this emulator was closed" in p.stdout


@needs_mpi
def test_more_ranks_than_chips(tmp_path):
    """Ranks beyond the chip count hold nothing and the result is the one of one process."""
    args = ["-m", "d1", "run", "programs/asm/vadd.d1s", "--mesh", "4x4"]
    p = _mpi(3, *args, "--out-dir", str(tmp_path / "three"), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "note: the machine has 1 chip: 2 of the ranks hold none" in p.stderr
    one = subprocess.run([PY, *args, "--out-dir", str(tmp_path / "one")], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "three" / "c.npy").read_bytes() == (tmp_path / "one" / "c.npy").read_bytes()


@needs_mpi
def test_d1_debug_on_ranks_says_it_runs_on_one_process():
    """docs/SCALE.md: `d1 debug` needs one process's serial order and says so. It used to run
    the whole machine on rank 0 while the other ranks idled, silently, with exit 0."""
    p = _mpi(2, "-m", "d1", "debug", "programs/asm/deadlock.d1s", *MACHINE, "--batch",
             "-ex", "run", timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "d1 debug runs on one process, not on MPI ranks" in p.stderr
    assert "Traceback" not in p.stderr and "(d1)" not in p.stdout


@needs_mpi
def test_one_rank_without_chips_is_named_in_the_singular(tmp_path):
    p = _mpi(2, "-m", "d1", "run", "programs/asm/vadd.d1s", "--mesh", "4x4", "--out-dir",
             str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "note: the machine has 1 chip: 1 of the ranks holds none" in p.stderr


@needs_mpi
def test_ranks_without_a_link_between_them_report_no_window_length(tmp_path):
    """One chip on 2 ranks: nothing paces the run. --stats and --json used to give the window
    length as the internal 'never' sentinel, 4,611,686,018,427,387,904 cycles."""
    p = _mpi(2, "-m", "d1", "run", "programs/asm/vadd.d1s", "--mesh", "4x4", "--stats",
             "--json", str(tmp_path / "run.json"), "--out-dir", str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "windows (no link joins two ranks)" in p.stdout
    host = json.loads((tmp_path / "run.json").read_text())["stats"]["host"]
    assert host["window_cycles"] is None and host["lookahead_cycles"] == 0


def test_window_is_checked_and_taken_in_one_process_too():
    """A script passing Emulator(..., comm=comm, window=W) ran on 2 ranks but was a TypeError
    under `mpiexec -n 1` (a communicator of one rank makes a plain Emulator)."""
    from d1.program import load_program
    from d1isa.errors import D1Error
    from emulator import Emulator

    obj = load_program(ROOT / "programs" / "asm" / "vadd.d1s", mpikit.test_machine()).obj
    assert Emulator(obj, window=7).run().status == "halted"
    with pytest.raises(D1Error, match="window must be in 1 .. "):
        Emulator(obj, window=0)


def test_one_process_never_imports_mpi4py(tmp_path):
    code = ("import sys\nfrom d1.cli import main\n"
            "try:\n    main(['run', 'programs/asm/vadd.d1s', '--mesh', '4x4', '--out-dir', "
            f"{str(tmp_path)!r}])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('mpi4py' in sys.modules)\n")
    p = subprocess.run([PY, "-c", code], env=_env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_ctrl_c_while_the_ranks_start_is_reported_once_and_releases_every_rank(monkeypatch,
                                                                               capsys):
    """Under `mpiexec -n R`, a Ctrl-C (sent to every rank) while the ranks were loading the
    command line made each rank print "interrupted" and exit on its own: the ranks still
    starting then waited for the others in MPI forever. The `d1` script now only notes it
    there; rank 0 reports it once, inside the command, and releases the ranks with 130."""
    import d1.cli
    import d1.entry
    from emulator import distributed, mpi

    released = []
    real_main = d1.cli.main

    class RankZero:
        def Get_rank(self) -> int:
            return 0

    def interrupted_then_run() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)     # arrives while the script loads d1.cli
        except KeyboardInterrupt:
            pytest.fail("a Ctrl-C while the ranks start interrupted rank 0 on its own")
        real_main(["info"])

    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setattr(mpi, "_WORLD", [RankZero()])
    monkeypatch.setattr(distributed, "finish", lambda comm, status: released.append(status))
    monkeypatch.setattr(d1.cli, "main", interrupted_then_run)
    try:
        with pytest.raises(SystemExit) as e:
            d1.entry.main()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert e.value.code == 130 and released == [130]
    assert capsys.readouterr().err == "interrupted\n"


def test_a_launch_without_mpi4py_says_what_to_install(tmp_path):
    code = ("import sys\nsys.modules['mpi4py'] = None\nfrom d1.cli import main\n"
            "main(['info'])\n")
    env = dict(_env(), PMI_SIZE="2", PMI_RANK="0")
    p = subprocess.run([PY, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert "mpi4py is not installed: pip install -e '.[mpi]'" in p.stderr


def _too_big_for_one_process() -> tuple[str, list[str]]:
    """--mesh and --set of a 2 x 1-chip machine whose state does not fit this host's memory in
    one process, while each chip (one rank's share on 2 ranks) does."""
    from emulator.state import physical_memory

    have = physical_memory()
    if have is None or have < 8 << 30:
        pytest.skip("needs a host that says how much memory it has, and 8 GiB or more")
    per_chip = -(-have * 7 // 10 // (1 << 30))        # nodes of 1 GiB of SRAM each
    return f"{per_chip}x1", [f"sram_bytes={1 << 30}"]


def test_the_host_memory_check_on_ranks_is_for_a_rank_s_share(monkeypatch):
    """Under `mpiexec -n R` each rank holds only its chips, so the command line refuses a
    machine only when a rank's share would not fit. It used to refuse the whole machine (with
    --machine, --mesh, --chips or --set), while the same machine from an object ran: the
    machines too large for one process, which ranks are for, could not be named."""
    from d1.options import emulated_machine
    from d1isa.errors import D1Error
    from d1isa.machine import load_machine
    from emulator import mpi
    from emulator.distributed import Partition, check_share_memory

    mesh, sets = _too_big_for_one_process()
    m = load_machine(mesh=mesh, chips="2x1", overrides=sets)
    with pytest.raises(D1Error, match="host memory"):
        check_share_memory(m, 1)
    check_share_memory(m, 2)
    per_rank = 2 * int(mesh.split("x")[0])
    with pytest.raises(D1Error, match=f"a rank holds {per_rank:,} of them"):
        check_share_memory(load_machine(mesh=mesh, chips="4x1", overrides=sets), 2)

    class TwoRanks:
        def Get_size(self) -> int:
            return 2

    monkeypatch.setattr(mpi, "_WORLD", [TwoRanks()])
    assert emulated_machine(None, mesh, tuple(sets), "2x1").chips == 2
    monkeypatch.setattr(mpi, "_WORLD", [None])
    with pytest.raises(D1Error, match="host memory"):
        emulated_machine(None, mesh, tuple(sets), "2x1")
    # a share's sizes are those the rank's State is made with: its nodes and ghost FIFOs
    part = Partition(load_machine("m4x4", overrides=mpikit.SETS), 3)
    nodes, ghosts = part.share_sizes()
    assert nodes.tolist() == [16, 16, 32] and ghosts.tolist() == [8, 8, 8]


@pytest.mark.parametrize("args", [["roofline", "programs/matmul.d1k", "--mesh", "4x4"],
                                  ["sweep", "programs/matmul.d1k", "--mesh", "2x2,4x4"]])
def test_roofline_and_sweep_on_ranks_say_they_run_on_one_process(args, monkeypatch):
    """Like d1 debug: their per-operation statistics need one process. Under mpiexec they
    used to run the whole machine on rank 0 while the other ranks idled, silently."""
    from click.testing import CliRunner

    from d1.cli import cli
    from d1isa.errors import D1Error
    from emulator import mpi

    monkeypatch.setattr(mpi, "_WORLD", [object()])          # started as one of several ranks
    r = CliRunner().invoke(cli, args)
    assert isinstance(r.exception, D1Error), (r.exit_code, r.output)
    assert f"d1 {args[0]} runs on one process, not on MPI ranks" in str(r.exception)


def test_d1_run_on_ranks_checks_a_rank_s_share_of_an_object_s_machine():
    """An object brings its own machine: `mpiexec -n R d1 run big.d1o` checked no memory
    before making the emulator, and every rank printed its own 'd1: rank K of R: new: error:'
    as it failed to allocate. Rank 0 now refuses it once, naming the file, as one process."""
    from d1.program import load_program
    from d1isa.errors import D1Error
    from d1isa.machine import load_machine
    from emulator.state import physical_memory

    if (physical_memory() or 1 << 40) >= 1 << 40:
        pytest.skip("needs a host that says how much memory it has, and less than 1 TiB")
    prog = load_program(ROOT / "programs" / "asm" / "vadd.d1s", load_machine(
        mesh="32x32", chips="2x1", overrides={"sram_bytes": 1 << 30}))
    with pytest.raises(D1Error, match=r"vadd.d1s: machine .*a rank holds 1,024 of them"):
        prog.check_host_memory(2)
    with pytest.raises(D1Error, match=r"vadd.d1s: machine .*\(2,048 live nodes\): "):
        prog.check_host_memory()


def test_a_failure_that_stops_every_rank_is_worded_as_one_process_words_it():
    """A rank that cannot allocate its share used to print 'new: error: error: machine ...'."""
    from d1isa.errors import D1Error, RuntimeFault
    from emulator.distributed import _describe

    assert _describe(D1Error("cannot allocate")) == ("error: cannot allocate", 2)
    assert _describe(RuntimeFault("trapped")) == ("error: trapped", 1)
    assert _describe(MemoryError()) == ("error: out of host memory", 2)
