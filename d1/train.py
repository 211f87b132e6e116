"""Training on the emulated mesh: `Trainer`, behind `d1 train` and the Python API.

Weight-resident mode: the params of a program live in the nodes' SRAM for the whole run. They
are written once, when the `Trainer` is made; every step is one more run of the same loaded
object, and the program's `update`s leave the new values in the params' own buffers
(compiler.writeback), so nothing about them is scattered or gathered between steps. One step:

1. `Emulator.restart()` (from the second step on): every node back to its first instruction,
   with SRAM as the last step left it;
2. the batch's inputs are written, and nothing else;
3. the program runs; a trap or a deadlock is a `RuntimeFault` with the emulator's report;
4. its 0-d outputs are read (`step` returns them), and the step's modelled figures are
   recorded (`Emulator.totals`: cycles, FLOPs, link bytes, SRAM high-water mark).

`params()` gathers the params' current values. `fit` cuts whole arrays into batches of the
program's batch size (axis 0 of its inputs) and steps through them, epoch after epoch.

    from d1.train import Trainer
    t = Trainer("programs/train_digits.d1k", init_seed=0)
    history = t.fit({"x": x, "y": y}, epochs=30, shuffle=0)
    trained = t.params()
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from d1.params import starting_params
from d1.program import Program, from_object, load_program
from d1isa.errors import D1Error, RuntimeFault
from d1isa.machine import Machine
from d1isa.numbers import is_integer
from d1isa.objfile import ObjectFile

HISTORY_KEYS = ("step", "epoch", "cycles")     # the history's own columns, beside the outputs

if TYPE_CHECKING:
    from compiler.pipeline import CompileOptions


@dataclass
class Plan:
    """How `fit` cuts arrays of `samples` samples: `batches` per epoch of `batch_size`, the
    last `dropped` samples left out (a partial batch)."""

    samples: int
    batch_size: int
    batches: int
    dropped: int


class Trainer:
    """Run training steps of one program on one emulated mesh, params kept in SRAM.

    `obj`: an `ObjectFile`, a loaded `d1.program.Program`, or a path (`.d1k`, `.d1s`, `.d1o`,
    loaded for `machine` with compiler `options`). `machine`: a `Machine`, or a machine's
    name or `.toml` path (`load_machine`); None: the object's own, else d1. `params`:
    starting values by name (or the path of a `.npz` holding them); the others come from the
    object if it embeds them, else from their declaration's INIT drawn with `init_seed`
    (`compiler.reference.init_params`, the documented numpy generator). `history` holds a
    row per step: "step", "epoch", each 0-d output under its name (`columns`: `output.NAME`
    for an output named like one of those), "cycles".
    `threads`: host threads of the emulator (None: `emulator.auto_threads`). `comm`: an mpi4py
    communicator of several ranks runs the machine on them, one thread each (rank 0 makes the
    Trainer, the others `serve(comm)` until rank 0 calls `finish(comm, status)`:
    emulator.distributed, docs/SCALE.md); results are identical.
    """

    def __init__(self, obj: ObjectFile | Program | str | Path,
                 params: Mapping[str, Any] | str | Path | None = None,
                 machine: Machine | None = None,
                 *, init_seed: int = 0, options: CompileOptions | None = None,
                 threads: int | None = None, max_cycles: int | None = None,
                 comm: Any = None) -> None:
        from emulator import Emulator, auto_threads
        from emulator.emulator import DEFAULT_MAX_CYCLES

        _check_count("Trainer", "init_seed", init_seed, " (a seed)")
        if isinstance(machine, (str, Path)):
            from d1isa.machine import load_machine
            machine = load_machine(machine)
        elif machine is not None and not isinstance(machine, Machine):
            raise D1Error("Trainer(machine=...) takes a Machine (d1isa.machine.load_machine), "
                          f"or a machine's name or .toml path; got {type(machine).__name__}")
        if isinstance(obj, Program):
            if machine is not None or options is not None:
                raise D1Error("a loaded Program already has its machine and compiler options; "
                              "give Trainer a path or an ObjectFile to choose them")
            prog = obj
        elif isinstance(obj, ObjectFile):
            prog = from_object(obj, machine, options)
        else:
            prog = load_program(obj, machine, options)
        self.program = prog
        self.obj = prog.obj
        self.machine = prog.machine
        self.inputs = prog.inputs
        scalars = prog.scalar_outputs
        self.outputs = [n for n in prog.outputs if n in scalars]
        # The history's column of each 0-d output: its name, unless that is one of the
        # history's own columns (an output named `step`, `epoch` or `cycles`).
        self.columns = {n: f"output.{n}" if n in HISTORY_KEYS else n for n in self.outputs}
        sizes = {self.obj.tensor(n).shape[0] for n in self.inputs}
        if len(sizes) > 1:
            raise D1Error(f"{prog.path}: the inputs declare different batch sizes (axis 0: "
                          + ", ".join(f"{n} {self.obj.tensor(n).shape[0]}"
                                      for n in self.inputs) + "); a training program's "
                          "inputs all hold one batch")
        self.batch_size = sizes.pop() if sizes else 0
        what = "params"
        if isinstance(params, (str, Path)):
            from d1.params import load_params
            what = str(params)
            params = load_params(params, what)
        elif params is not None and not isinstance(params, Mapping):
            raise D1Error("Trainer(params=...) takes a mapping of param names to arrays, or "
                          f"the path of a .npz file; got {type(params).__name__}")
        start = starting_params(prog, params, init_seed, what)     # checked before the emulator
        ranks = comm is not None and comm.Get_size() > 1
        if threads is None:     # 0 too was taken for "choose" (Emulator refuses it)
            threads = 1 if ranks else auto_threads(self.machine.n_live)
        self.emu = Emulator(self.obj, max_cycles=DEFAULT_MAX_CYCLES if max_cycles is None
                            else max_cycles,
                            threads=threads,
                            comm=comm)
        for name, value in start.items():
            self.emu.set_input(name, value)
        self.steps = 0
        self.history: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.interrupted = False
        self.fault: str | None = None     # a failed step's first line (its RuntimeFault)

    def _check_names(self, given: Mapping[str, Any], rule: str) -> None:
        """`given` names exactly the program's inputs; else an error stating `rule`."""
        if not isinstance(given, Mapping):
            raise D1Error(f"{rule}: a mapping of input names to arrays, not "
                          f"{type(given).__name__}")
        missing = [n for n in self.inputs if n not in given]
        extra = sorted(str(n) for n in given if n not in self.inputs)
        if missing or extra:
            params = [n for n in extra if n in self.program.params]
            verb = "is a param" if len(params) == 1 else "are params"
            raise D1Error(rule
                          + (f"; missing: {', '.join(missing)}" if missing else "")
                          + (f"; not inputs: {', '.join(extra)}" if extra else "")
                          + f" (inputs: {', '.join(self.inputs) or 'none'})"
                          + (f"; {', '.join(params)} {verb}: params start from --params "
                             "FILE.npz (Trainer(params=...))" if params else ""))

    # ---- one step -----------------------------------------------------------------------------

    def step(self, batch: Mapping[str, Any], epoch: int = 0) -> dict[str, float]:
        """One run of the program on `batch` (one array per input, of the input's shape);
        returns its 0-d outputs by name, and records the step in `history`.

        A step that traps or deadlocks raises `RuntimeFault`, and every later call raises a
        D1Error: the params in SRAM are then those of no finished step (some updates may have
        been written, others not), so training cannot go on from them."""
        _check_count("step", "epoch", epoch)
        if self.fault is not None:
            raise D1Error(f"{self.fault}; the params it left in SRAM are those of no finished "
                          "step, so no step can follow it: make a new Trainer")
        self._check_names(batch, "a batch gives every input of the program")
        t0 = time.perf_counter()
        if self.steps:
            self.emu.restart()
        for name in self.inputs:
            self.emu.set_input(name, batch[name])
        host0, jit0 = self.emu.host_seconds, self.emu.jit_seconds
        result = self.emu.run()
        if not result.ok:
            self.fault = f"step {self.steps + 1}: run {result.status}"
            raise RuntimeFault(f"step {self.steps + 1}: run {result.status}\n{result.report()}")
        out = {n: float(self.emu.output(n)) for n in self.outputs}
        self.steps += 1
        totals = self.emu.totals()
        row = {"step": self.steps, "epoch": epoch}
        row.update((self.columns[n], v) for n, v in out.items())
        row["cycles"] = totals["cycles"]
        self.history.append(row)
        # The first run compiles the emulator's loop (or loads it from the cache): set-up,
        # not a step's work.
        jit = self.emu.jit_seconds - jit0
        self.figures.append({**totals, "emulator_seconds": self.emu.host_seconds - host0,
                             "step_seconds": time.perf_counter() - t0 - jit})
        return out

    def params(self) -> dict[str, np.ndarray]:
        """Every param's current value (float32), gathered from the nodes."""
        return {n: self.emu.output(n) for n in self.program.params}

    # ---- whole arrays -------------------------------------------------------------------------

    def plan(self, arrays: Mapping[str, Any]) -> Plan:
        """Check `arrays` (one per input: N samples along axis 0, each of the shape the input
        declares past axis 0) and say how `fit` cuts them."""
        if not self.inputs:
            raise D1Error(f"{self.program.path} has no inputs to cut into batches; run its "
                          "steps with step({})")
        self._check_names(arrays, "give one array for every input of the program")
        counts = {}
        for name in self.inputs:
            a = _samples(arrays[name], name)
            want = tuple(self.obj.tensor(name).shape)
            if a.ndim != len(want) or a.shape[1:] != want[1:]:
                per = "[N" + "".join(f", {d}" for d in want[1:]) + "]"
                raise D1Error(f"input '{name}' is {list(want)} per batch, so its samples are "
                              f"an array {per}; got shape {list(a.shape)}")
            counts[name] = a.shape[0]
        if len(set(counts.values())) > 1:
            raise D1Error("every input must hold the same number of samples; got "
                          + ", ".join(f"{n} {c:,}" for n, c in counts.items()))
        n = next(iter(counts.values()), 0)
        b = self.batch_size
        if n < b:
            raise D1Error(f"{n:,} samples are fewer than one batch of {b}")
        return Plan(n, b, n // b, n % b)

    def fit(self, arrays: Mapping[str, Any], epochs: int = 1, shuffle: int | None = None,
            on_step: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Train on whole arrays for `epochs` epochs; returns the history rows of this call.

        Each epoch cuts the samples into consecutive batches of the batch size (a last
        partial batch is dropped: `plan` says how many samples). With `shuffle` = SEED the
        samples are first permuted, each epoch anew, by `numpy.random.default_rng(SEED)`'s
        `permutation(N)`, drawn once per epoch from one generator. `on_step(row)` is called
        after every step with its history row. Ctrl-C (in the main thread) stops after the
        current step: `interrupted` is then True and the params are those of the last step.
        """
        _check_count("fit", "epochs", epochs)
        if shuffle is not None:
            _check_count("fit", "shuffle", shuffle, " (a seed) or None")
        if on_step is not None and not callable(on_step):
            raise D1Error(f"fit(on_step=...) takes a function of the step's history row, or "
                          f"None; got {type(on_step).__name__}")
        plan = self.plan(arrays)
        data = {n: _samples(arrays[n], n) for n in self.inputs}
        rng = np.random.default_rng(shuffle) if shuffle is not None else None
        first = len(self.history)
        self.interrupted = False
        with stop_after_step() as stop:
            for epoch in range(1, epochs + 1):
                order = rng.permutation(plan.samples) if rng is not None else None
                for k in range(plan.batches):
                    rows = slice(k * plan.batch_size, (k + 1) * plan.batch_size)
                    pick = rows if order is None else order[rows]
                    self.step({n: a[pick] for n, a in data.items()}, epoch)
                    if on_step is not None:
                        on_step(self.history[-1])
                    if stop.requested:
                        self.interrupted = True
                        return self.history[first:]
        return self.history[first:]

    # ---- figures ------------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """The whole run so far, modelled (cycles, time per step, instructions, FLOP/s against
        the peak, link bytes and messages, on chip and across chip edges, and on a machine of
        several chips the bytes each chip sent across its edges, received across them and
        kept on it; SRAM high-water mark) and measured on the host: the steps' wall time
        (without compiling the emulator's loop, `jit_seconds`) and how much of it the
        emulator's run loop took."""
        m = self.machine
        f = self.figures
        steps = len(f)
        cycles = sum(r["cycles"] for r in f)
        seconds = cycles / m.clock_hz
        flops = sum(r["flops"] for r in f)
        dtype = "bf16" if any(r["mma_bf16_instructions"] for r in f) else "f32"
        peak = float(m.peak_flops[dtype])
        fps = flops / seconds if seconds > 0 else 0.0
        emu_s = sum(r["emulator_seconds"] for r in f)
        step_s = sum(r["step_seconds"] for r in f)
        out = {
            "steps": steps,
            "modelled": {
                "cycles": cycles,
                "seconds": seconds,
                "cycles_per_step": cycles / steps if steps else 0.0,
                "seconds_per_step": seconds / steps if steps else 0.0,
                "instructions": sum(r["instructions"] for r in f),
                "flops": flops,
                "tflops_per_second": fps / 1e12,
                "peak_dtype": dtype,
                "percent_of_peak": 100.0 * fps / peak if peak else 0.0,
                "link_bytes": sum(r["link_bytes"] for r in f),
                "link_messages": sum(r["link_messages"] for r in f),
                "link_bytes_per_step": (sum(r["link_bytes"] for r in f) / steps
                                        if steps else 0.0),
                "on_chip_bytes": sum(r["on_chip_bytes"] for r in f),
                "chip_edge_bytes": sum(r["chip_edge_bytes"] for r in f),
                "chip_edge_bytes_per_step": (sum(r["chip_edge_bytes"] for r in f) / steps
                                             if steps else 0.0),
                "sram_high_water_bytes": max((r["sram_high_water_bytes"] for r in f),
                                             default=0),
            },
            "host": {
                "note": "measured on the host",
                "step_seconds": step_s,
                "emulator_seconds": emu_s,
                "emulator_share": emu_s / step_s if step_s > 0 else 0.0,
                "jit_seconds": self.emu.jit_seconds,
                # on MPI ranks (emulator.distributed): rank 0's time in window exchange
                "ranks": getattr(self.emu, "ranks", 1),
                "sync_seconds": getattr(self.emu, "sync_seconds", 0.0),
            },
        }
        if m.chips > 1:
            # per chip, over all steps: the bytes that left it across its edges (by edge),
            # came in across them, and stayed on it (emulator.traffic)
            per_chip = []
            for c in range(m.chips):
                rows = [r["chip_traffic"][c] for r in f]
                dirs = rows[0]["edge_bytes_out_by_dir"] if rows else {}
                per_chip.append({
                    "chip": [c % m.chips_x, c // m.chips_x],
                    **{k: sum(r[k] for r in rows)
                       for k in ("edge_bytes_out", "edge_bytes_in", "on_chip_bytes")},
                    "edge_bytes_out_by_dir": {d: sum(r["edge_bytes_out_by_dir"][d] for r in rows)
                                              for d in dirs},
                })
            out["chips"] = {"grid": [m.chips_x, m.chips_y], "per_chip": per_chip}
        return out


class _Stop:
    requested = False


@contextmanager
def stop_after_step() -> Iterator[_Stop]:
    """While training: the first Ctrl-C only asks to stop after the current step (a second
    one interrupts at once). Outside the main thread signals cannot be caught; nothing is
    changed there."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        stop.requested = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _samples(value: Any, name: str) -> np.ndarray:
    """An input's samples as an array (a ragged nested list was numpy's ValueError)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise D1Error(f"input '{name}' cannot be read as an array "
                      f"({str(e).split('. ')[0]})") from None


def _check_count(call: str, what: str, value: Any, kind: str = "") -> None:
    """An argument that must be an integer >= 0 (a seed, a count): a D1Error naming it, not
    numpy's ValueError or TypeError from deep inside default_rng."""
    if not is_integer(value) or value < 0:
        raise D1Error(f"{call}({what}=...) takes an integer >= 0{kind}; got {value!r}")
