"""The MPI tests' programs and their runner (tests/test_mpi.py).

`prepare(dir)` compiles, once, every program of programs/ and the cross-rank cases below for the
test machine (2 x 2 chips of 4 x 4 nodes) into DIR, with their inputs. Then

    mpiexec -n R python tests/mpikit.py DIR OUT.json

runs all of them on R ranks the way `d1 run` and `d1 train` do (rank 0 drives, the other ranks
serve), plus the Python API called on every rank, and rank 0 writes everything that must be
bit-identical for any R: statuses, cycles, reports (traps, wait-for chains), outputs, and every
per-node and per-link statistic. R = 1 is one process (mpi4py is not even imported).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The test machine: 4 chips of 4 x 4 nodes, an 8 x 8 mesh. With 2 ranks, rank 0 holds rows 0-3;
# with 4, one chip each (x 0-3 / 4-7, y 0-3 / 4-7).
SETS = {"chips_x": 2, "chips_y": 2}

# A stream across each rank boundary: (3,1) -> (4,1) with messages of 1..256 bytes into a slow
# consumer (its FIFO fills: backpressure crosses the boundary), (1,3) -> (1,4) -> (1,5) with a
# relay on the receiving side, and every other node storing getid / getn / getx / gety.
CROSS = """
.data all
.align 64
OUT:    .zero 16
BUF:    .zero 512
.tensor ids output i32[@n, 4]
.piece  ids all OUT offset @id, 0 shape 1, 4

.text node 3,1
        movi    r5, 0
        movi    r6, 60
        movi    r7, 1
        movi    r8, BUF
loop:   st64    r5, [r8]
        sendb   E, r8, r7
        addi    r7, r7, 37
        andi    r7, r7, 255
        addi    r7, r7, 1
        addi    r5, r5, 1
        blt     r5, r6, loop
        getid   r1
        st32    r1, [OUT]
        st32    r5, [OUT+8]
        halt

.text node 4,1
        movi    r5, 0
        movi    r6, 60
        movi    r7, 1
        movi    r8, BUF
        movi    r9, 0
rloop:  recvb   W, r8, r7
        ld64    r10, [r8]
        add     r9, r9, r10
        movi    r11, 40
spin:   addi    r11, r11, -1
        bne     r11, r0, spin
        addi    r7, r7, 37
        andi    r7, r7, 255
        addi    r7, r7, 1
        addi    r5, r5, 1
        blt     r5, r6, rloop
        getid   r1
        st32    r1, [OUT]
        st32    r9, [OUT+8]
        st32    r5, [OUT+12]
        halt

.text node 1,3
        movi    r5, 0
        movi    r6, 100
sloop:  muli    r7, r5, 7919
        send    S, r7
        addi    r5, r5, 1
        blt     r5, r6, sloop
        halt

.text node 1,4
        movi    r5, 0
        movi    r6, 100
floop:  relay   N, S
        addi    r5, r5, 1
        blt     r5, r6, floop
        halt

.text node 1,5
        movi    r5, 0
        movi    r6, 100
        movi    r9, 0
tloop:  recv    r7, N
        add     r9, r9, r7
        addi    r5, r5, 1
        blt     r5, r6, tloop
        getid   r1
        st32    r1, [OUT]
        st32    r9, [OUT+8]
        halt

.text rest
        getid   r1
        getn    r2
        getx    r3
        gety    r4
        st32    r1, [OUT]
        st32    r2, [OUT+4]
        st32    r3, [OUT+8]
        st32    r4, [OUT+12]
        halt
"""

# A wait-for cycle through all four chips, a node waiting behind it, and a chain across the
# rank boundary that ends at a halted node.
DEADLOCK = """
.text node 3,3
        recv    r1, E
        send    E, r1
        halt
.text node 4,3
        recv    r1, S
        send    S, r1
        halt
.text node 4,4
        recv    r1, W
        send    W, r1
        halt
.text node 3,4
        recv    r1, N
        send    N, r1
        halt
.text node 2,3
        recv    r1, E
        halt
.text node 0,3
        movi    r1, 5
        halt
.text node 0,4
        recv    r1, N
        halt
"""

# A trap on one rank with a node of another rank waiting on it, and a trap on a third chip.
TRAP = """
.text node 0,4
        movi    r1, 1
        send    N, r1
        trap    7
.text node 0,3
        recv    r1, S
        recv    r2, S
        halt
.text node 5,2
        movi    r2, 6
        ld64    r1, [r2]
        halt
"""

# A ping-pong across the boundary of ranks 0 and 1 that never ends (for Ctrl-C).
FOREVER = """
.text node 3,3
        movi    r1, 0
ping:   send    S, r1
        recv    r1, S
        addi    r1, r1, 1
        jal     r0, ping
.text node 3,4
pong:   recv    r1, N
        send    N, r1
        jal     r0, pong
"""


EXTRA = {"x_cross.d1s": CROSS, "x_deadlock.d1s": DEADLOCK, "x_trap.d1s": TRAP}
# (object, max_cycles): the token ring stopped by --max-cycles half way round the mesh
LIMITED = [("token_ring.d1o", 700)]
TRAIN = "train_digits.d1o"
TRAIN_STEPS = 3


def test_machine():
    from d1isa.machine import load_machine
    return load_machine("m4x4", overrides=SETS)


def prepare(out: Path) -> list[str]:
    """Compile every program for the test machine into `out` (.d1o, inputs .npz); returns
    the object names."""
    from d1.program import load_program

    m = test_machine()
    names = []
    sources = sorted((ROOT / "programs").glob("*.d1k")) + sorted(
        (ROOT / "programs" / "asm").glob("*.d1s"))
    for name, text in EXTRA.items():
        path = out / name
        path.write_text(text)
        sources.append(path)
    for src in sources:
        prog = load_program(src, m)
        name = src.stem + ".d1o"
        prog.obj.save(out / name)
        arrays, _ = prog.input_arrays({}, seed=0)
        np.savez(out / (src.stem + ".npz"), **arrays)
        names.append(name)
    (out / "forever.d1s").write_text(FOREVER)     # not run here: tests/test_mpi.py stops it
    rng = np.random.default_rng(0)
    batches = {"x": rng.standard_normal((TRAIN_STEPS, 64, 64)).astype(np.float32),
               "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, (TRAIN_STEPS, 64))]}
    np.savez(out / "train_batches.npz", **batches)
    return names


def _digest(value: np.ndarray) -> str:
    a = np.ascontiguousarray(value)
    return f"{a.dtype}{list(a.shape)}:" + hashlib.sha256(a.tobytes()).hexdigest()


def _record(emu, res, outputs: list[str]) -> dict:
    """What must not depend on the number of ranks: no host figures."""
    stats = emu.stats()
    rec = {"status": res.status, "cycles": res.cycles, "instructions": res.instructions,
           "report": res.report(), "result": res.to_json()}
    if res.ok:
        values = {n: emu.output(n) for n in outputs}
        rec["outputs"] = {n: _digest(v) for n, v in values.items()}
        rec["values"] = {n: v.tolist() for n, v in values.items() if v.dtype == np.int32}
    if stats is not None:           # rank 0
        rec["modelled"] = stats["modelled"]
        rec["nodes"] = stats["nodes"]
        rec["links"] = stats["links"]
    return rec


def run_all(work: Path, comm) -> dict:
    """Rank 0: every object on the machine, as the command line does."""
    from d1.train import Trainer
    from d1isa.objfile import ObjectFile
    from emulator import Emulator

    out: dict = {"programs": {}}
    limits = dict(LIMITED)
    for path in sorted(work.glob("*.d1o")):
        obj = ObjectFile.load(path)
        arrays = dict(np.load(work / (path.stem + ".npz")))
        runs = [(path.name, 50_000_000)]
        if path.name in limits:
            runs.append((f"{path.name} --max-cycles {limits[path.name]}", limits[path.name]))
        for key, max_cycles in runs:
            t0 = time.perf_counter()
            emu = Emulator(obj, max_cycles=max_cycles, comm=comm)
            for name, a in arrays.items():
                emu.set_input(name, a)
            res = emu.run()
            outputs = [t.name for t in obj.tensors if t.role == "output"]
            out["programs"][key] = _record(emu, res, outputs)
            out["programs"][key]["totals"] = emu.totals()
            emu.close()
            if os.environ.get("D1_MPIKIT_TIMES"):
                print(f"{key}: {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    # a few training steps, params kept in SRAM between them (d1 train)
    obj = ObjectFile.load(work / TRAIN)
    batches = np.load(work / "train_batches.npz")
    t = Trainer(obj, comm=comm)
    losses = [t.step({"x": batches["x"][i], "y": batches["y"][i]}) for i in range(TRAIN_STEPS)]
    out["train"] = {"losses": [{k: float(v).hex() for k, v in s.items()} for s in losses],
                    "history": [{k: (v.hex() if isinstance(v, float) else v)
                                 for k, v in row.items()} for row in t.history],
                    "params": {n: _digest(v) for n, v in t.params().items()},
                    "modelled": t.totals()["modelled"]}
    t.emu.close()
    return out


def api_on_every_rank(work: Path, comm) -> dict:
    """The Python API called on every rank (SPMD): the object and inputs from rank 0 only,
    a second run with another window length, which must not change anything."""
    from d1isa.objfile import ObjectFile
    from emulator import Emulator

    rank = 0 if comm is None else comm.Get_rank()
    obj = ObjectFile.load(work / "matmul.d1o") if rank == 0 else None
    arrays = dict(np.load(work / "matmul.npz")) if rank == 0 else {"a": None, "b": None}
    got = {}
    windows = [None] if comm is None else [None, 7]
    for w in windows:
        kw = {} if w is None else {"window": w}
        emu = Emulator(obj, comm=comm, **kw)
        for name in ("a", "b"):
            emu.set_input(name, arrays[name])
        res = emu.run()
        got[str(w)] = {"status": res.status, "cycles": res.cycles,
                       "c": _digest(emu.output("c")), "totals": emu.totals()}
        emu.close()
    # every rank holds the same result and output
    return got["None"] if all(v == got["None"] for v in got.values()) else got


def mismatch(comm) -> int:
    """Rank 0 runs while the others ask for an output: every rank must stop, with a message."""
    from d1.program import load_program
    from emulator import Emulator

    obj = load_program(ROOT / "programs" / "asm" / "vadd.d1s", test_machine()).obj \
        if comm.Get_rank() == 0 else None
    emu = Emulator(obj, comm=comm)
    if comm.Get_rank() == 0:
        emu.run()
    else:
        emu.output("c")
    return 0


def refused(comm) -> int:
    """Every rank makes the same calls, several of them with arguments rank 0 refuses: every
    rank gets the error (and can go on), as one process would."""
    from d1.program import load_program
    from d1isa.errors import D1Error
    from d1isa.machine import load_machine
    from emulator import Emulator
    from emulator.state import physical_memory

    rank = comm.Get_rank()
    obj = load_program(ROOT / "programs" / "asm" / "vadd.d1s", test_machine()).obj \
        if rank == 0 else None
    # a rank's share: 1,024 nodes of 1 GiB of SRAM (hosts of 1 TiB or more skip it)
    huge = load_program(ROOT / "programs" / "asm" / "vadd.d1s", load_machine(
        mesh="32x32", chips="3x1", overrides={"sram_bytes": 1 << 30})).obj if rank == 0 else None
    calls = [lambda: Emulator(obj, comm=comm, window=0),
             lambda: emu.set_input("a", np.zeros(3, np.float32) if rank == 0 else None),
             lambda: emu.output("nosuch"),
             lambda: Emulator(obj, comm=comm, window="abc"),
             lambda: Emulator(obj, comm=comm, threads=1.5)]
    if (physical_memory() or 0) < 1 << 40:
        calls.append(lambda: Emulator(huge, comm=comm))
    emu = None
    for k, call in enumerate(calls):
        try:
            call()
        except D1Error as e:
            print(f"rank {rank} refused {k}: {e}", flush=True)
        if emu is None:
            emu = Emulator(obj, comm=comm)
    res = emu.run()
    print(f"rank {rank}: {res.status} {emu.output('c').shape}", flush=True)
    emu.close()
    emu.close()
    try:
        emu.run()
    except D1Error as e:
        print(f"rank {rank} refused after close: {e}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    from emulator.mpi import world

    comm = world()
    if argv[0] == "--mismatch":
        return mismatch(comm)
    if argv[0] == "--refused":
        return refused(comm)
    work, dest = Path(argv[0]), Path(argv[1])
    rank = 0 if comm is None else comm.Get_rank()
    try:
        api = api_on_every_rank(work, comm)
        if rank > 0:
            from emulator.distributed import serve
            return serve(comm)
        out = run_all(work, comm)
        out["api"] = api
        dest.write_text(json.dumps(out, indent=1, sort_keys=True))
        if comm is not None:
            from emulator.distributed import finish
            finish(comm, 0)
        return 0
    except BaseException as e:      # a failed rank must stop the others, never hang
        if comm is None:
            raise
        import traceback

        from emulator.distributed import fatal
        traceback.print_exc()
        fatal(comm, f"{type(e).__name__}: {e}")
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
