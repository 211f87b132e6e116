"""Compiler figures, each printed next to a baseline measured in the same run.

    python -m benchmarks.compiler_bench          (or: d1 bench compiler)

- compile time of a 1024 x 1024 x 1024 bf16 matmul for the d1 machine (best of 3, measured on
  the host, interpreter start excluded); target <= 2 s. Baseline: the assembler alone on the same
  emitted text (the part of compiling that is not the compiler's own passes).
- modelled utilisation of that matmul: useful FLOPs (2 M N K) / modelled time / peak BF16 of all
  354 live nodes; target >= 60 %. Baselines from the same run: the same program compiled with
  matmul=naive (gather first, then multiply), with double_buffer=false (exchange every panel,
  then multiply) and with preskew=false; and the bound of the grid itself (grid nodes / live
  nodes: the relay and idle nodes do no arithmetic).
- modelled utilisation of programs/mlp.d1k at batch 256 (x: bf16[256, 784]); target >= 30 %;
  baselines from the same run: matmul=naive, double_buffer=false, and the bound of the grid.
- every program in programs/ on the d1 machine: modelled cycles, FLOP/s and percent of the peak
  of its data type (as `d1 run --stats` reports them), link traffic, and whether the outputs
  match the reference; baseline: the same program compiled with matmul=naive.
- multi-head attention, programs/multihead.d1k (64 tokens, width 128, 4 heads of 32, f32):
  modelled cycles and percent of the f32 peak with the batched matmuls on sub-grids (the
  default); baseline from the same run: batched=sequential (each head's products on the whole
  grid, one after the other).
- the LeNet-5-style CNN of programs/lenet.d1k (two 5 x 5 conv2d layers, each followed by a
  2 x 2 maxpool2d, then three dense layers; 1 x 28 x 28 images, batch 64, f32): useful FLOPs
  (2 per multiply-add of every conv2d and matmul) / modelled time / the f32 peak of all 354
  live nodes; target >= 15 % of the peak of the dtype it uses, with conv2d on the matrix unit.
  Baselines from the same run: -O conv=im2col (the patches matrix gathered and multiplied by
  the 2-D SUMMA matmul), and the same network in bf16 (bf16 images and weights, casts after
  each layer) against the bf16 peak.
- emulating the compiled 1024^3 matmul (wall time of Emulator.run, JIT excluded, best of 5)
  against numpy float32 matmul of the same shapes on one thread, interleaved in the same run;
  target <= 5x. Shown for the thread count `d1 run` uses by default (emulator.auto_threads) and
  for one thread.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from compiler.ir import Op  # noqa: E402
from compiler.pipeline import CompileOptions, compile_text  # noqa: E402
from d1isa.asm import assemble  # noqa: E402
from d1isa.machine import load_machine  # noqa: E402

REPEATS = 3
ROOT = Path(__file__).resolve().parents[1]
MATMUL = "input a: bf16[{n}, {n}]\ninput b: bf16[{n}, {n}]\nc = a @ b\noutput c\n"


def _best(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_program(text: str, machine, options: CompileOptions | None = None,
                flops: int | None = None, filename: str = "bench.d1k") -> dict:
    """Compile and emulate; modelled cycles, utilisation and the emulator's wall time.

    `util` is useful FLOPs (`flops`, if given) over the modelled time and the peak BF16 of all
    live nodes; `pct` is what `d1 run --stats` reports: the FLOPs the instructions did over the
    modelled time and the peak of the kernel's data type."""
    from emulator import Emulator
    c = compile_text(text, machine, filename, options)
    graph = c.graph
    inputs = compiler.make_inputs(graph, 0)
    params = compiler.init_params(graph, 0)
    emu = Emulator(c.obj)
    for name, value in (inputs | params).items():
        emu.set_input(name, value)
    emu.run(max_instructions=0)           # load the jitted loop outside the timing
    t = time.perf_counter()
    result = emu.run()
    wall = time.perf_counter() - t
    if not result.ok:
        raise RuntimeError(result.report())
    ref = compiler.evaluate(graph, inputs, params)
    outs = {o.name: emu.output(o.name) for o in graph.outputs}
    ok = all(r[4] for r in compiler.compare_outputs(graph, outs, ref))
    seconds = result.cycles / machine.clock_hz
    util = (flops / seconds / machine.peak_flops["bf16"]) if flops else 0.0
    st = emu.stats()["modelled"]
    own = (flops / seconds / machine.peak_flops[st["peak_dtype"]]) if flops else 0.0
    by_class = st["instructions_by_class"]
    return {"cycles": result.cycles, "util": 100 * util, "util_own": 100 * own, "wall": wall,
            "ok": ok, "mma": by_class["mma_bf16"] + by_class["mma_f32"],
            "inputs": inputs, "pct": st["percent_of_peak"], "dtype": st["peak_dtype"],
            "flops_per_second": st["flops_per_second"], "link_bytes": st["link_bytes"]}


def bench_compile(n: int = 1024) -> dict:
    m = load_machine("d1")
    text = MATMUL.format(n=n)
    compile_text(text, m, "mm.d1k")                 # warm imports and caches
    best = _best(lambda: compile_text(text, m, "mm.d1k"))
    asm = compile_text(text, m, "mm.d1k", assemble_object=False).asm
    asm_only = _best(lambda: assemble(asm, "mm.d1s", m))
    return {"compile": best, "assemble": asm_only, "lines": asm.count("\n")}


def bench_matmul(n: int = 1024) -> dict:
    m = load_machine("d1")
    text = MATMUL.format(n=n)
    flops = 2 * n ** 3
    out = {"summa": run_program(text, m, CompileOptions(), flops)}
    for key, opts in (("naive", CompileOptions(matmul="naive")),
                      ("no double buffer", CompileOptions(double_buffer=False)),
                      ("no preskew", CompileOptions(preskew=False))):
        out[key] = run_program(text, m, opts, flops)
    a, b = (out["summa"]["inputs"][k] for k in ("a", "b"))
    out["numpy"] = _best(lambda: np.matmul(a, b))
    from compiler.grid import choose_grid
    out["grid bound"] = 100 * choose_grid(m).size / m.n_live
    return out


def bench_emulation(n: int = 1024, repeats: int = 5) -> dict:
    """Best wall time of Emulator.run on the compiled matmul, per thread count, and numpy's."""
    from emulator import Emulator, auto_threads
    m = load_machine("d1")
    c = compile_text(MATMUL.format(n=n), m, "mm.d1k")
    inputs = compiler.make_inputs(c.graph, 0)
    a, b = inputs["a"], inputs["b"]
    counts = sorted({1, auto_threads(m.n_live)})
    best = {t: float("inf") for t in counts}
    best_np = float("inf")
    ok = True
    for _ in range(repeats):
        for t in counts:
            emu = Emulator(c.obj, threads=t)
            for name, value in inputs.items():
                emu.set_input(name, value)
            emu.run(max_instructions=0)   # load the jitted loop outside the timing
            t0 = time.perf_counter()
            result = emu.run()
            best[t] = min(best[t], time.perf_counter() - t0)
            ok = ok and result.ok
            del emu
        t0 = time.perf_counter()
        np.matmul(a, b)
        best_np = min(best_np, time.perf_counter() - t0)
    return {"threads": best, "numpy": best_np, "ok": ok}


def bench_mlp(batch: int = 256) -> dict:
    m = load_machine("d1")
    text = (ROOT / "programs" / "mlp.d1k").read_text().replace("[64, 784]", f"[{batch}, 784]")
    flops = 2 * batch * 784 * 256 + 2 * batch * 256 * 10
    out = {"summa": run_program(text, m, CompileOptions(), flops)}
    for key, opts in (("naive", CompileOptions(matmul="naive")),
                      ("no double buffer", CompileOptions(double_buffer=False))):
        out[key] = run_program(text, m, opts, flops)
    return out


def bench_programs() -> list[tuple[str, dict, dict]]:
    """Every program in programs/ on d1, and the same compiled with matmul=naive."""
    m = load_machine("d1")
    out = []
    for path in sorted((ROOT / "programs").glob("*.d1k")):
        text = path.read_text()
        out.append((path.name, run_program(text, m, CompileOptions(), filename=path.name),
                    run_program(text, m, CompileOptions(matmul="naive"), filename=path.name)))
    return out


def bench_heads() -> dict:
    """programs/multihead.d1k on d1, batched matmuls on sub-grids and sequentially."""
    m = load_machine("d1")
    text = (ROOT / "programs" / "multihead.d1k").read_text()
    return {key: run_program(text, m, CompileOptions(batched=key), filename="multihead.d1k")
            for key in ("subgrid", "sequential")}


def useful_flops(graph) -> int:
    """2 per multiply-add of every conv2d and matmul of a checked graph."""
    total = 0
    for n in graph.nodes:
        if n.op is Op.CONV2D:
            r, s = n.window.size
            total += 2 * math.prod(n.shape) * n.inputs[0].shape[1] * r * s
        elif n.op is Op.MATMUL:
            total += 2 * math.prod(n.shape) * n.inputs[0].shape[-1]
    return total


def lenet_bf16(text: str) -> str:
    """programs/lenet.d1k in bf16: images and weights bf16 (the products accumulate in f32),
    each layer's activations rounded to bf16 before the next multiplies them."""
    for name in ("x", "c1", "c2", "w3", "w4", "w5"):
        text = re.sub(rf"^(input|param) {name}: f32", rf"\1 {name}: bf16", text, flags=re.M)
    for name in ("h1", "h2", "h3", "h4"):
        text = re.sub(rf"^{name} = (.*?)(\s*#.*)?$", rf"{name} = cast(\1, bf16)\2", text,
                      flags=re.M)
    return text


def bench_lenet() -> dict:
    """programs/lenet.d1k on d1: implicit GEMM conv2d, -O conv=im2col, and in bf16."""
    m = load_machine("d1")
    text = (ROOT / "programs" / "lenet.d1k").read_text()
    flops = useful_flops(compiler.check_source(text, m))
    return {"implicit": run_program(text, m, CompileOptions(), flops, "lenet.d1k"),
            "im2col": run_program(text, m, CompileOptions(conv="im2col"), flops, "lenet.d1k"),
            "bf16": run_program(lenet_bf16(text), m, CompileOptions(), flops, "lenet.d1k")}


def main() -> None:
    print("compiler benchmarks (d1 machine: 354 live nodes; 'modelled' figures come from the "
          "emulator's timing model, times are measured on the host)")
    c = bench_compile()
    print(f"compile 1024^3 bf16 matmul      {c['compile']:6.2f} s   (target <= 2 s; baseline: "
          f"assembling its {c['lines']:,} lines alone {c['assemble']:.2f} s)")
    r = bench_matmul()
    s = r["summa"]
    print(f"1024^3 matmul utilisation       {s['util']:6.1f} %   (modelled, {s['cycles']:,} "
          f"cycles; target >= 60 %; correct: {s['ok']})")
    for key in ("naive", "no double buffer", "no preskew"):
        print(f"    baseline {key:<20} {r[key]['util']:6.1f} %   ({r[key]['cycles']:,} cycles; "
              f"correct: {r[key]['ok']})")
    print(f"    bound: grid nodes / live nodes {r['grid bound']:5.1f} %")
    mlp = bench_mlp()
    print(f"MLP (batch 256) utilisation     {mlp['summa']['util']:6.1f} %   (modelled, "
          f"{mlp['summa']['cycles']:,} cycles; target >= 30 %; correct: {mlp['summa']['ok']})")
    for key in ("naive", "no double buffer"):
        print(f"    baseline {key:<20} {mlp[key]['util']:6.1f} %   ({mlp[key]['cycles']:,} "
              f"cycles; correct: {mlp[key]['ok']})")
    print(f"    bound: grid nodes / live nodes {r['grid bound']:5.1f} %")
    print("programs/ on d1 (modelled; % of the peak of the kernel's data type, as d1 run --stats; "
          "baseline: matmul=naive)")
    for name, got, base in bench_programs():
        print(f"    {name:<18} {got['cycles']:7,} cycles {got['pct']:6.2f} % {got['dtype']:<4} "
              f"{got['flops_per_second'] / 1e12:7.3f} TFLOP/s {got['link_bytes']:>10,} link B  "
              f"correct: {got['ok']}   (naive {base['cycles']:,} cycles, {base['pct']:.2f} %)")
    h = bench_heads()
    print(f"multi-head attention (4 heads)   {h['subgrid']['pct']:6.2f} %   (modelled, "
          f"{h['subgrid']['cycles']:,} cycles, f32; batched matmuls on sub-grids; correct: "
          f"{h['subgrid']['ok']})")
    print(f"    baseline batched=sequential {h['sequential']['pct']:6.2f} %   "
          f"({h['sequential']['cycles']:,} cycles; correct: {h['sequential']['ok']})")
    cnn = bench_lenet()
    c = cnn["implicit"]
    verdict = "PASS" if c["util_own"] >= 15 and c["mma"] > 0 else "FAIL"
    print(f"LeNet-5 CNN (batch 64)          {c['util_own']:6.1f} %   (modelled, {c['cycles']:,} "
          f"cycles, {c['dtype']}; target >= 15 % of the {c['dtype']} peak, conv2d on the matrix "
          f"unit: {verdict}; correct: {c['ok']})")
    b = cnn["im2col"]
    print(f"    baseline conv=im2col        {b['util_own']:6.1f} %   ({b['cycles']:,} cycles; "
          f"correct: {b['ok']})")
    b = cnn["bf16"]
    print(f"    the same network in bf16    {b['util_own']:6.1f} %   ({b['cycles']:,} cycles, of "
          f"the bf16 peak; correct: {b['ok']})")
    e = bench_emulation()
    for t, wall in sorted(e["threads"].items(), reverse=True):
        print(f"emulating the 1024^3 matmul     {wall:6.3f} s   on {t} thread{'s' * (t > 1)} "
              f"(numpy f32 matmul, 1 thread, same run: {e['numpy']:.3f} s; ratio "
              f"{wall / e['numpy']:.1f}x, target <= 5x)")


if __name__ == "__main__":
    main()
