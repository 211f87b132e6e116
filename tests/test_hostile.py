"""Hostile inputs: no object, file or option makes d1 crash, hang, or write where it was not told.

* The crafted objects of tests/hostile/ (made by tests/hostile/make_cases.py) are run through
  `python -m d1 run`, `disasm` and `debug --batch -ex run` as real processes: each is refused
  with exit status 2 and a message naming the file, never a traceback or a MemoryError.
* A piece that puts several elements at one SRAM address, or an output its pieces cannot
  cover, is refused at load; gathering and scattering a large piece needs no index arrays;
  a state the process cannot allocate is an error, not a traceback.
* Data loss: no command replaces its own input (compile -o, disasm -o, an output named like
  an --input, --json or --trace onto the program or an input, two files of one run on one
  path); an atomic write that fails midway leaves the old file whole and no temporary file;
  a device or a named pipe given as a program, an input or a destination is refused at once;
  an unusable --out-dir, --json or --trace is refused before the run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hostile import make_cases
from progkit import make_obj

from d1.cli import main
from d1isa import files
from d1isa.errors import D1Error, ObjectFormatError
from d1isa.machine import load_machine
from d1isa.objfile import ObjectFile, TensorLayout, TensorPiece

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "hostile"
VADD = ROOT / "programs" / "asm" / "vadd.d1s"
COMMANDS = {"run": ["run", "--out-dir", "out"], "disasm": ["disasm"],
            "debug": ["debug", "--batch", "-ex", "run"]}
TIMEOUT = 60


def d1(*args: str, cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m d1 ARGS` as a separate process (the worktree first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("D1_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "d1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def d1_here(capsys, *args: str) -> tuple[int, str]:
    """`d1 ARGS` in this process, errors handled as the `d1` script does: (status, output)."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---- the crafted objects ------------------------------------------------------------------

@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[tuple[str, str], tuple[subprocess.CompletedProcess,
                                                            set[str]]]:
    """Every committed case through every command, two processes at a time; each runs in a
    directory of its own holding a copy of the case."""
    base = tmp_path_factory.mktemp("hostile")
    jobs = []
    for name in make_cases.CASES:
        for cmd in COMMANDS:
            cwd = base / f"{name}-{cmd}"
            cwd.mkdir()
            (cwd / name).write_bytes((HOSTILE / name).read_bytes())
            jobs.append((name, cmd, cwd))

    def one(job):
        name, cmd, cwd = job
        args = [COMMANDS[cmd][0], name, *COMMANDS[cmd][1:]]
        return (name, cmd), (d1(*args, cwd=cwd), tree(cwd))

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, jobs))


def test_every_case_has_its_committed_file():
    committed = {p.name for p in HOSTILE.glob("*.d1o")}
    assert committed == set(make_cases.CASES)


@pytest.mark.parametrize("name", sorted(make_cases.CASES))
@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_a_crafted_object_is_refused_naming_the_file(verdicts, name, cmd):
    res, after = verdicts[(name, cmd)]
    err = res.stderr
    assert "Traceback" not in err and "MemoryError" not in err and "internal error" not in err
    if name in make_cases.LOADS and cmd == "disasm":
        assert res.returncode == 0, err
        assert res.stdout.startswith(".machine ")
        return
    assert res.returncode == 2, (res.returncode, err)
    first = err.strip().splitlines()[0]
    assert first.startswith(f"error: {name}: "), first
    assert make_cases.CASES[name][4] in err
    assert after == {name}, "nothing may be written when the program is refused"


@pytest.mark.parametrize("name", sorted(make_cases.CASES))
def test_the_generator_still_makes_each_case(name):
    """The cases come from the generator; what it makes now is refused the same way (the
    bytes may differ if the assembler's output changes)."""
    raw = make_cases.build_case(name)
    if name in make_cases.LOADS:
        ObjectFile.from_bytes(raw, name)
        return
    with pytest.raises(ObjectFormatError) as e:
        ObjectFile.from_bytes(raw, name)
    assert str(e.value).startswith(f"{name}: ")
    assert make_cases.CASES[name][4] in str(e.value)


def test_the_stride0_case_is_a_small_file_describing_8_gib():
    raw = (HOSTILE / "huge_output_stride0_big_sram.d1o").read_bytes()
    meta = dict(make_cases.split_sections(raw))[b"META"]
    c = next(t for t in json.loads(meta)["tensors"] if t["name"] == "c")
    assert len(raw) < 8192
    assert c["shape"] == [1 << 31] and c["pieces"][0][4] == [0]


# ---- pieces: aliasing, coverage, and the cost of a large one ----------------------------------

def vadd_with_c(shape, pieces, mesh="2x2", **sets) -> bytes:
    def edit(meta):
        c = make_cases.tensor(meta, "c")
        c["shape"], c["pieces"] = shape, pieces
    return make_cases.rewrite(make_cases.base_object(mesh, **sets), meta=edit)


@pytest.mark.parametrize("shape, strides", [
    ([1, 64], [0, 4]),          # a dimension of one element may have any stride
    ([4, 16], [64, 4]),         # rows back to back
    ([4, 16], [256, 4]),        # padded rows
    ([16, 4], [4, 64]),         # column-major
    ([2, 2, 16], [2048, 1024, 4]),
])
def test_pieces_that_never_share_an_address_load(shape, strides):
    n = int(np.prod(shape))
    flat = [[0, 2048, [0] * len(shape), shape, strides]]
    ObjectFile.from_bytes(vadd_with_c(shape, flat), "ok.d1o")
    assert n == int(np.prod(shape))


@pytest.mark.parametrize("shape, strides", [
    ([64], [0]),
    ([4, 16], [32, 4]),         # the second row starts inside the first
    ([16, 4], [4, 8]),          # columns interleave with a step too small
    ([4, 16], [64, 2]),         # elements of 4 bytes, 2 apart
])
def test_a_piece_that_puts_two_elements_at_one_address_is_refused(shape, strides):
    raw = vadd_with_c(shape, [[0, 2048, [0] * len(shape), shape, strides]])
    with pytest.raises(ObjectFormatError, match="several elements at one SRAM address"):
        ObjectFile.from_bytes(raw, "alias.d1o")


def test_an_output_its_pieces_cannot_cover_is_refused():
    raw = vadd_with_c([4, 64], [[0, 512, [0, 0], [1, 64], [256, 4]]])
    with pytest.raises(ObjectFormatError, match="pieces hold 64 elements, fewer than its 256"):
        ObjectFile.from_bytes(raw, "short.d1o")


def test_a_large_piece_moves_without_index_arrays():
    """Scattering and gathering a 16 Mi-element piece takes about the tensor's own size,
    not tens of bytes per element for address arrays."""
    from emulator import Emulator

    m = load_machine(mesh="1x1", overrides={"sram_bytes": 64 << 20})
    n = 16 << 20
    t = TensorLayout("big", "f32", (n,), "output", [TensorPiece(0, 0, (0,), (n,), (4,))])
    emu = Emulator(make_obj(m, {}, tensors=[t]))
    value = np.arange(n, dtype=np.float32)
    tracemalloc.start()
    try:
        emu.set_input("big", value)
        got = emu.output("big")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, value)
    assert int(emu.state.hwm[0]) == 64 << 20
    assert peak < 5 * value.nbytes, f"{peak / value.nbytes:.1f} x the tensor"


@pytest.mark.parametrize("size", [8, 16, 56])
def test_fifo_slots_must_hold_the_largest_message_an_instruction_sends(size):
    # vsend sends a whole vector register (64 B) whatever max_message_bytes says
    with pytest.raises(D1Error, match=f"max_message_bytes must be at least 64 .*got {size}"):
        load_machine(mesh="2x2", overrides={"max_message_bytes": size})
    assert load_machine(mesh="2x2", overrides={"max_message_bytes": 64}).max_message_bytes == 64


def test_a_state_the_process_cannot_allocate_is_an_error(monkeypatch):
    from emulator import state

    def refuse(shape, dtype):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")
    monkeypatch.setattr(state, "_lazy_zeros", refuse)
    with pytest.raises(D1Error, match="cannot allocate the emulator's state.*Cannot allocate"):
        state.State(load_machine(mesh="2x2"))


# ---- data loss ----------------------------------------------------------------------------

def test_compile_refuses_to_replace_its_source(tmp_path):
    src = tmp_path / "k.d1k"
    src.write_text("input x: f32[4]\ny = x * 2\noutput y\n")
    before = digest(src)
    res = d1("compile", "k.d1k", "-o", "k.d1k", "--mesh", "2x2", cwd=tmp_path)
    assert res.returncode == 2 and "would replace k.d1k" in res.stderr
    res = d1("compile", "k.d1k", "--emit", "asm", "-o", "./k.d1k", cwd=tmp_path)
    assert res.returncode == 2 and "would replace k.d1k" in res.stderr
    assert digest(src) == before and tree(tmp_path) == {"k.d1k"}


def test_compile_refuses_one_file_for_the_object_and_json(tmp_path):
    (tmp_path / "k.d1k").write_text("input x: f32[4]\ny = x * 2\noutput y\n")
    res = d1("compile", "k.d1k", "--mesh", "2x2", "-o", "k.out", "--json", "./k.out",
             cwd=tmp_path)
    assert res.returncode == 2 and "an input" not in res.stderr
    assert "--json ./k.out is also the -o file of this run" in res.stderr
    assert tree(tmp_path) == {"k.d1k"}


@pytest.mark.parametrize("args, says", [
    (["asm", "q.d1s", "-o", "m.toml"], "-o m.toml would replace m.toml"),
    (["compile", "k.d1k", "-o", "m.toml"], "-o m.toml would replace m.toml"),
    (["compile", "k.d1k", "--json", "m.toml"], "--json m.toml would replace m.toml"),
    (["run", "k.d1k", "--json", "m.toml"], "--json m.toml would replace m.toml"),
    (["sweep", "k.d1k", "--set", "hop_latency=1,2", "--csv", "m.toml"], "--csv would replace"),
    (["roofline", "k.d1k", "-o", "m.toml"], "-o would replace m.toml"),
    (["viz", "run.json", "-o", "m.toml"], "-o would replace m.toml"),
    (["train", "k.d1k", "--input", "x=x.npy", "--json", "m.toml"], "--json m.toml would"),
])
def test_no_output_replaces_the_machine_file(tmp_path, capsys, monkeypatch, args, says):
    """--machine FILE is an input of the command too: every command wrote its output over it
    when an output named it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.toml").write_text('base = "d1"\ncols = 2\nrows = 2\nharvested = []\n')
    (tmp_path / "q.d1s").write_text(VADD.read_text())
    (tmp_path / "k.d1k").write_text("input x: f32[4]\ny = x * 2\noutput y\n")
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    before = digest(tmp_path / "m.toml")
    status, out = d1_here(capsys, *args, "--machine", "m.toml")
    assert status == 2 and says in out, out
    assert digest(tmp_path / "m.toml") == before


def test_no_output_replaces_a_machine_file_its_base_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.toml").write_text('base = "d1"\ncols = 2\nrows = 2\nharvested = []\n')
    (tmp_path / "m.toml").write_text('base = "b.toml"\n')
    (tmp_path / "q.d1s").write_text(VADD.read_text())
    before = digest(tmp_path / "b.toml")
    status, out = d1_here(capsys, "asm", "q.d1s", "--machine", "m.toml", "-o", "b.toml")
    assert status == 2 and "-o b.toml would replace b.toml" in out, out
    assert digest(tmp_path / "b.toml") == before


def test_disasm_and_asm_refuse_to_replace_their_input(tmp_path):
    (tmp_path / "q.d1s").write_text(VADD.read_text())
    assert d1("asm", "q.d1s", "--mesh", "2x2", cwd=tmp_path).returncode == 0
    obj, src = digest(tmp_path / "q.d1o"), digest(tmp_path / "q.d1s")
    res = d1("disasm", "q.d1o", "-o", "q.d1o", cwd=tmp_path)
    assert res.returncode == 2 and "would replace q.d1o" in res.stderr
    res = d1("asm", "q.d1s", "-o", "q.d1s", cwd=tmp_path)
    assert res.returncode == 2 and "would replace q.d1s" in res.stderr
    assert digest(tmp_path / "q.d1o") == obj and digest(tmp_path / "q.d1s") == src
    assert tree(tmp_path) == {"q.d1s", "q.d1o"}


@pytest.fixture()
def io_program(tmp_path):
    """A DSL program whose input x is also an output, and x's data in data/x.npy."""
    (tmp_path / "io.d1k").write_text("input x: f32[4]\ny = x * 2\noutput x, y\n")
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", np.arange(4, dtype=np.float32))
    return tmp_path


def test_an_output_named_like_an_input_never_replaces_the_input_file(io_program):
    x = io_program / "data" / "x.npy"
    before = digest(x)
    res = d1("run", "io.d1k", "--mesh", "2x2", "--input", "x=data/x.npy", "--out-dir", "data",
             cwd=io_program)
    assert res.returncode == 2
    assert "output 'x' (data/x.npy) would replace data/x.npy" in res.stderr
    assert digest(x) == before and tree(io_program / "data") == {"x.npy"}   # no y.npy either
    res = d1("run", "io.d1k", "--mesh", "2x2", "--input", "x=data/x.npy", "--out-dir", "out",
             cwd=io_program)
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.load(io_program / "out" / "y.npy"), np.arange(4) * 2.0)


@pytest.mark.parametrize("args, message", [
    (["--json", "io.d1k"], "--json io.d1k would replace io.d1k"),
    (["--input", "x=data/x.npy", "--trace", "./data/x.npy"],
     "--trace data/x.npy would replace data/x.npy"),
    (["--json", "r.json", "--trace", "r.json"], "--trace r.json is also the --json file"),
    (["--json", "out/y.npy"], "output 'y' (out/y.npy) is also the --json file"),
])
def test_json_and_trace_never_replace_an_input_or_each_other(io_program, args, message):
    (io_program / "r.json").write_text("{}")
    before = {p: digest(io_program / p) for p in ("io.d1k", "data/x.npy", "r.json")}
    res = d1("run", "io.d1k", "--mesh", "2x2", "--out-dir", "out", *args, cwd=io_program)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert {p: digest(io_program / p) for p in before} == before
    assert not (io_program / "out").exists() or not any((io_program / "out").iterdir())


def test_a_program_named_like_its_output_is_not_replaced(tmp_path):
    # any suffix holding the object magic is an object: c.npy is the program, c its output
    prog = tmp_path / "c.npy"
    prog.write_bytes(make_cases.base_object())
    before = digest(prog)
    res = d1("run", "c.npy", "--out-dir", ".", cwd=tmp_path)
    assert res.returncode == 2 and "would replace c.npy" in res.stderr
    assert digest(prog) == before


def test_sweep_refuses_one_file_for_csv_and_plot(tmp_path):
    res = d1("sweep", str(VADD), "--mesh", "2x2", "--csv", "p.out", "--plot", "./p.out",
             cwd=tmp_path)
    assert res.returncode == 2 and "is also the --csv file" in res.stderr
    assert tree(tmp_path) == set()


def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, monkeypatch, capsys):
    target = tmp_path / "v.d1o"
    target.write_bytes(b"the old object" * 1000)
    before = digest(target)
    calls = []

    def write_then_fill_the_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")
    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os)
                                       if not k.startswith("__")})
    fake_os.write = write_then_fill_the_disk
    monkeypatch.setattr(files, "os", fake_os)
    with pytest.raises(D1Error, match="cannot write .*v.d1o: No space left on device"):
        files.write_atomic(target, b"x" * 100_000)
    assert len(calls) == 2                       # it did write part of the new file
    # and through a command: assembling onto an existing object
    status, out = d1_here(capsys, "asm", str(VADD), "--mesh", "2x2", "-o", str(target))
    assert status == 2 and "No space left on device" in out
    assert digest(target) == before
    assert tree(tmp_path) == {"v.d1o"}           # no temporary file left behind


@pytest.fixture()
def specials(tmp_path):
    """A named pipe with a program's suffix, and one for data; both nobody writes to."""
    for name in ("pipe.d1k", "pipe.d1s", "pipe.d1o", "pipe.npy"):
        os.mkfifo(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("args", [
    ["run", "{special}"], ["disasm", "{special}"], ["asm", "{special}", "-o", "z.d1o"],
    ["compile", "{special}", "-o", "z.d1o"], ["debug", "{special}", "--batch", "-ex", "run"],
])
@pytest.mark.parametrize("special", ["/dev/zero", "pipe"])
def test_a_device_or_a_pipe_as_program_is_refused_at_once(specials, args, special):
    if special == "pipe":
        suffix = {"run": ".d1k", "disasm": ".d1o", "asm": ".d1s", "compile": ".d1k",
                  "debug": ".d1s"}[args[0]]
        special = f"pipe{suffix}"
    t0 = time.monotonic()
    res = d1(*(a.format(special=special) for a in args), cwd=specials, timeout=20)
    assert res.returncode == 2, res.stderr
    assert "not a regular file" in res.stderr and "Traceback" not in res.stderr
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("read", ["compile_file", "assemble_file"])
def test_the_python_api_refuses_a_pipe_at_once(specials, read):
    # compiler.compile_file and d1isa.asm.assemble_file read with Path.read_text: a pipe that
    # nobody writes to blocked them, and /dev/zero was read without end.
    import threading

    import compiler
    from d1isa.asm import assemble_file
    fn, name = {"compile_file": (compiler.compile_file, "pipe.d1k"),
                "assemble_file": (assemble_file, "pipe.d1s")}[read]
    outcome: list[str] = []

    def call():
        try:
            fn(specials / name)
            outcome.append("read it")
        except D1Error as e:
            outcome.append(str(e))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():                  # blocked opening the pipe: release it, then fail
        os.close(os.open(specials / name, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail(f"{read} blocked on a pipe")
    assert outcome and "not a regular file (a pipe)" in outcome[0], outcome


@pytest.mark.parametrize("args, message", [
    (["--input", "a=/dev/zero"], "not a regular file"),
    (["--input", "a=pipe.npy"], "not a regular file (a pipe)"),
    (["--json", "/dev/null"], "--json /dev/null: not a regular file"),
    (["--trace", "pipe.npy"], "--trace pipe.npy: not a regular file (a pipe)"),
])
def test_a_device_or_a_pipe_as_input_or_destination_is_refused(specials, args, message):
    res = d1("run", str(VADD), "--mesh", "2x2", "--out-dir", "out", *args, cwd=specials,
             timeout=20)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not (specials / "out").exists() or not any((specials / "out").iterdir())


@pytest.mark.parametrize("option, where, message", [
    ("--out-dir", "plain.txt/out", "--out-dir plain.txt/out: cannot create the directory "
                                     "plain.txt/out: plain.txt is not a directory"),
    ("--out-dir", "plain.txt", "Directory 'plain.txt' is a file"),
    ("--out-dir", "/dev/null", "--out-dir /dev/null: exists and is not a directory"),
    ("--out-dir", "/proc/d1-out", "--out-dir /proc/d1-out: cannot make it in /proc"),
    ("--json", "plain.txt/run.json", "--json plain.txt/run.json: Not a directory"),
    ("--json", "/dev/null", "--json /dev/null: not a regular file"),
    ("--trace", "/proc/d1-trace.json", "--trace /proc/d1-trace.json: cannot write files in "
                                       "/proc"),
    ("--trace", "/proc/self/x/t.json", "--trace /proc/self/x/t.json: the directory "
                                       "/proc/self is not writable"),
])
def test_an_unusable_destination_fails_before_the_run(tmp_path, monkeypatch, capsys, option,
                                                      where, message):
    """Refused before any emulator is made (and so before the run), with nothing written."""
    import emulator

    def no_run(*args, **kwargs):
        raise AssertionError("the run started")
    monkeypatch.setattr(emulator, "Emulator", no_run)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain.txt").write_text("keep me")
    t0 = time.monotonic()
    status, out = d1_here(capsys, "run", str(VADD), "--mesh", "2x2", option, where)
    assert status == 2 and message in out, out
    assert time.monotonic() - t0 < 10
    assert tree(tmp_path) == {"plain.txt"} and (tmp_path / "plain.txt").read_text() == "keep me"


def test_a_command_that_fails_leaves_no_directory_it_would_have_made(tmp_path, monkeypatch,
                                                                     capsys):
    # the destinations' directories were made while checking them, before the compile error
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.d1k").write_text("input x: f32[4]\ny = x +\noutput y\n")
    for args in (["run", "bad.d1k", "--out-dir", "o/deep", "--json", "j/run.json"],
                 ["compile", "bad.d1k", "-o", "nodir/sub/x.d1o"]):
        status, out = d1_here(capsys, *args)
        assert status == 2 and "error:" in out, out
        assert tree(tmp_path) == {"bad.d1k"}, args
    status, out = d1_here(capsys, "run", str(VADD), "--mesh", "2x2", "--out-dir", "o/deep")
    assert status == 0 and (tmp_path / "o" / "deep").is_dir(), out   # made by the write


# ---- statistics files (d1 diff, viz, roofline) ------------------------------------------------

@pytest.fixture(scope="module")
def run_json(tmp_path_factory) -> Path:
    """The --json statistics of a small run."""
    from fuzzkit import invoke

    root = tmp_path_factory.mktemp("stats")
    res = invoke(["run", str(VADD), "--mesh", "2x2", "--regions", "--json", "run.json",
                  "--out-dir", "out"], root)
    assert res.status == 0, res.output
    return root / "run.json"


@pytest.mark.parametrize("args", [["diff", "{x}", "{x}"], ["viz", "{x}", "--term"],
                                  ["roofline", "{x}"]])
@pytest.mark.parametrize("special", ["/dev/zero", "pipe.json"])
def test_a_device_or_a_pipe_as_statistics_is_refused_at_once(tmp_path, args, special):
    os.mkfifo(tmp_path / "pipe.json")
    res = d1(*(a.format(x=special) for a in args), cwd=tmp_path, timeout=20)
    assert res.returncode == 2 and "not a regular file" in res.stderr, res.stderr


def damaged(doc: dict, path: list, value) -> dict:
    doc = json.loads(json.dumps(doc))
    here = doc
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    return doc


@pytest.mark.parametrize("path, value", [
    (["stats", "nodes", "x"], "abc"),
    (["stats", "nodes"], []),
    (["stats", "modelled", "kernel_cycles"], "many"),
    (["stats", "links"], {"busiest": 7}),
    (["stats", "live_nodes"], -3),
    (["stats", "machine_params"], {"cols": 10 ** 9}),
])
def test_damaged_statistics_are_an_error_naming_the_file(tmp_path, capsys, monkeypatch,
                                                         run_json, path, value):
    good = json.loads(run_json.read_text())
    (tmp_path / "bad.json").write_text(json.dumps(damaged(good, path, value)))
    monkeypatch.chdir(tmp_path)
    for args in (["diff", str(run_json), "bad.json"], ["viz", "bad.json", "--term"],
                 ["roofline", "bad.json"]):
        status, out = d1_here(capsys, *args)
        assert status in (0, 2), out
        assert "internal error" not in out and "Traceback" not in out, out
        if status == 2:
            assert "bad.json" in out


@pytest.mark.parametrize("path, value, says", [
    (["stats", "mesh", "width"], 10 ** 9, "a 1,000,000,000 x 2 mesh, more than the 4,194,304"),
    (["stats", "mesh", "width"], -1, "a -1 x 2 mesh: a mesh has no negative side"),
    (["stats", "mesh"], None, "a 1,000,000,001 x 2 mesh"),      # inferred from the nodes
    (["stats", "nodes", "y"], [0, 0, 1, 10 ** 9], "node (1, 1000000000) is outside the 2 x 2"),
])
def test_statistics_of_an_impossible_mesh_are_refused(tmp_path, capsys, monkeypatch, run_json,
                                                      path, value, says):
    """A few bytes claiming a 10^9-wide mesh: d1 viz -o was a MemoryError (exit 3) and
    d1 viz --term never ended."""
    good = json.loads(run_json.read_text())
    bad = damaged(good, path, value)
    if value is None:
        bad["stats"]["nodes"]["x"][1] = 10 ** 9
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    monkeypatch.chdir(tmp_path)
    for args in (["viz", "bad.json", "-o", "v.png"], ["viz", "bad.json", "--term"]):
        status, out = d1_here(capsys, *args)
        assert status == 2 and "bad.json: " in out and says in out, out
    assert not (tmp_path / "v.png").exists()


def test_statistics_nested_too_deeply_are_not_json(tmp_path, capsys, monkeypatch, run_json):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    status, out = d1_here(capsys, "diff", "deep.json", str(run_json))
    assert status == 2 and "deep.json: not a JSON file (nested too deeply)" in out


def test_random_damage_to_statistics_never_crashes(tmp_path, run_json):
    """Any leaf of a statistics document replaced by any JSON value: diff, viz --term and
    roofline exit 0, 1 or 2, never with an internal error."""
    from fuzzkit import invoke
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = json.loads(run_json.read_text())
    leaves: list[list] = []

    def walk(node, path):
        items = node.items() if isinstance(node, dict) else (
            enumerate(node) if isinstance(node, list) else ())
        for k, child in list(items)[:12]:
            leaves.append([*path, k])
            walk(child, [*path, k])
    walk(good, [])
    values = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                          | st.floats() | st.text(max_size=5),
                          lambda kids: st.lists(kids, max_size=3)
                          | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                          max_leaves=6)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(leaves), values), min_size=1, max_size=3))
    def check(changes):
        doc = good
        for path, value in changes:
            try:
                doc = damaged(doc, path, value)
            except (KeyError, IndexError, TypeError):
                pass                    # an earlier change removed the path
        (tmp_path / "bad.json").write_text(json.dumps(doc))
        for args in (["diff", str(run_json), "bad.json"], ["viz", "bad.json", "--term"],
                     ["roofline", "bad.json"]):
            res = invoke(args, tmp_path)
            assert not res.crashed, (changes, args, res.output[-2000:])
    check()


# ---- docs/SECURITY.md ---------------------------------------------------------------------

def test_the_limits_in_security_md_are_the_codes():
    from d1.commands.run import MAX_INPUT_BYTES
    from d1.commands.sweep import MAX_POINTS
    from d1.options import MAX_SEED
    from d1.params import MAX_PARAMS_BYTES
    from d1isa import files, machine, objfile
    from emulator.debugger.checkpoints import DEFAULT_CHECKPOINT_BYTES

    doc = (ROOT / "docs" / "SECURITY.md").read_text()
    rows = {
        "MAX_SOURCE_BYTES": files.MAX_SOURCE_BYTES, "MAX_OBJECT_BYTES": files.MAX_OBJECT_BYTES,
        "MAX_JSON_BYTES": files.MAX_JSON_BYTES, "MAX_INPUT_BYTES": MAX_INPUT_BYTES,
        "MAX_PARAMS_BYTES": MAX_PARAMS_BYTES, "MAX_POINTS": MAX_POINTS,
        "MAX_TENSOR_ELEMENTS": objfile.MAX_TENSOR_ELEMENTS, "MAX_DIMS": objfile.MAX_DIMS,
        "MAX_NAME_CHARS": objfile.MAX_NAME_CHARS, "MAX_MESH_NODES": objfile.MAX_MESH_NODES,
        "EXTRA_BLOCKS": objfile.EXTRA_BLOCKS, "MAX_SRAM": machine.MAX_SRAM,
        "MAX_REGS": machine.MAX_REGS, "MAX_LINK_BYTES": machine.MAX_LINK_BYTES,
        "MAX_FIFO_DEPTH": machine.MAX_FIFO_DEPTH, "MAX_MESSAGE": machine.MAX_MESSAGE,
        "MAX_CYCLES_PER_STEP": machine.MAX_CYCLES_PER_STEP,
        "MAX_RUN_CYCLES": machine.MAX_RUN_CYCLES, "MAX_QUANTUM": machine.MAX_QUANTUM,
        "MAX_SEED": MAX_SEED,
        "DEFAULT_CHECKPOINT_BYTES": DEFAULT_CHECKPOINT_BYTES,
    }
    for name, value in rows.items():
        line = next((ln for ln in doc.splitlines() if f"(`{name}`)" in ln), None)
        assert line is not None, name
        assert f"{value:,}" in line, (name, value, line)
    edges = next(ln for ln in doc.splitlines() if "(`MAX_EDGE`)" in ln)
    assert f"{machine.MAX_EDGE:,}; {machine.MAX_CHIPS_EDGE}" in edges
    assert f"{machine.largest_fixed_message()[0]} .. {machine.MAX_MESSAGE:,}" in doc
    assert f"{machine.MAX_LIVE_NODES:,} live nodes" in doc


def test_ctrl_c_while_the_command_line_starts_is_a_clean_interrupt(monkeypatch, capsys):
    """A Ctrl-C while `d1` loads numpy, before the command's own handler, printed a traceback."""
    import d1.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(d1.cli, "_start", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["info"])
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_while_the_script_loads_the_command_line_is_a_clean_interrupt(monkeypatch, capsys):
    """The `d1` script (d1.entry) catches a Ctrl-C while it imports the command line."""
    import importlib.abc

    from d1.entry import main as script

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "d1.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "d1.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as e:
        script()
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted\n"


# ---- text from a file never reaches the terminal as an escape sequence -------------------------

ESC = "\x1b]0;title\x07\x1b[2J"


@pytest.mark.parametrize("edit, says", [
    (lambda m: m.update(files=[ESC + "vadd.d1s"]), "bad file list"),
    (lambda m: m.update(symbols=[[ESC, "code", 0, 0]]), "bad symbol"),
    (lambda m: m["meta"].update(producer=ESC), "'producer' must be text without control"),
    (lambda m: m["meta"].update(regions=[{"op": ESC, "name": "c", "line": 1, "col": 1}]),
     "META field 'regions'"),
])
def test_names_with_control_characters_in_an_object_are_refused(edit, says):
    """An object's file and symbol names are printed by the debugger and trap reports; an
    escape sequence in them acted on the terminal (retitled it, cleared it)."""
    raw = make_cases.rewrite(make_cases.base_object("2x2"), meta=edit)
    with pytest.raises(ObjectFormatError, match=says) as e:
        ObjectFile.from_bytes(raw, "esc.d1o")
    assert "\x1b" not in str(e.value)


def test_the_debugger_lists_an_objects_source_with_its_control_characters_escaped(tmp_path):
    (tmp_path / "esc.d1s").write_text(f".text node 0,0\n\tmovi r1, 1   # {ESC}\n\thalt\n")
    res = d1("debug", "esc.d1s", "--mesh", "1x1", "--batch", "-ex", "list", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;title\\x07\\x1b[2J" in out


def test_strings_of_statistics_and_params_names_are_shown_escaped(tmp_path, capsys, monkeypatch,
                                                                  run_json):
    doc = json.loads(run_json.read_text())
    doc["file"] = ESC
    doc["stats"]["machine"] = ESC
    (tmp_path / "esc.json").write_text(json.dumps(doc))
    np.savez(tmp_path / "p.npz", **{ESC: np.ones(2)})
    monkeypatch.chdir(tmp_path)
    for args in (["diff", "esc.json", str(run_json)], ["viz", "esc.json", "--term"],
                 ["roofline", "esc.json"]):
        status, out = d1_here(capsys, *args)
        assert status == 0 and "\x1b" not in out and "\\x1b]0;title" in out, out
    from d1.params import load_params
    assert list(load_params(tmp_path / "p.npz")) == ["\\x1b]0;title\\x07\\x1b[2J"]


@pytest.mark.parametrize("kind", ["asm", "dsl"])
def test_a_source_whose_path_holds_a_tab_makes_an_object_that_loads(kind):
    """Loading refuses unprintable file names; the object of such a source records it
    escaped, so that what was just written can be read back."""
    import compiler
    from d1isa.asm import assemble
    m = load_machine(mesh="1x1")
    if kind == "asm":
        obj = assemble(".text node 0,0\n  halt\n", "v\tadd.d1s", m)
    else:
        obj = compiler.compile_source("input x: f32[4]\ny = x + 1\noutput y\n", m, "v\tk.d1k")
    back = ObjectFile.from_bytes(obj.to_bytes(), "tab.d1o")
    assert back.files == ["v\\tadd.d1s" if kind == "asm" else "v\\tk.d1k"]
