"""Scale-out figures: data-parallel training over chips, each with its target and MET/NOT MET.

    python -m benchmarks.scale_bench          (or: d1 bench scale)

- one training step of a 784-256-256-10 bf16 MLP at batch 256 *per chip* (programs/
  train_mlp784.d1k if present, else the same program, kept here) on d1 chips: 1 chip (batch
  256), 2 x 2 chips (batch 1,024) and 5 x 5 chips, a training tile (batch 6,400), each run
  data-parallel (compiler.dataparallel: the batch split over the chips, one per-chip program,
  the gradients all-reduced over the chip-edge links). Modelled: the step's cycles, the
  weak-scaling efficiency T(1 chip) / T(N chips) (target >= 85 % at 5 x 5) and the ratio
  T(25 chips) / T(1 chip) (target <= 1.18), the bytes that crossed chip edges (the
  all-reduce's: nothing else crosses them) and the busiest chip-edge link's share of the step.
  The loss and every updated param are compared with the numpy reference of the whole batch
  (`compiler.evaluate`, at the --check tolerance) on every machine.
- the same 5 x 5 step with the chip-edge bandwidth doubled (`chip_link_bytes_per_cycle`
  100): how much of the gap the links themselves are.
- code size: the tile's object against one chip's (code blocks and words: every chip runs the
  same code), and the compile time (measured on the host).

Tensor parallelism: a 4096^3 bf16 matmul (f32 results) spread over the 25 chips of a training
tile (`--machine tile`), and 1024^3 for reference: compile time (with the mapping report,
compiler.mapreport), object size, modelled cycles and % of the tile's BF16 peak (target
>= 50 % for 4096^3), the bytes the report predicts across chip edges against those the
emulator counts, the busiest chip-edge link's share of the run, and the result checked against
the numpy reference. Compiling and emulating 4096^3 on the tile peaks at about 10 GB of host
memory.
`python -m benchmarks.scale_bench matmul` runs this section alone, `... data` the other.

Exit status 0 whether or not a target is met; non-zero only if a figure cannot be measured.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import compiler  # noqa: E402
from benchmarks import take_arguments  # noqa: E402
from compiler.dataparallel import scale_batch  # noqa: E402
from compiler.pipeline import compile_text  # noqa: E402
from d1isa.machine import load_machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "programs" / "train_mlp784.d1k"
GRIDS = ("1x1", "2x2", "5x5")
TARGET_EFFICIENCY = 85.0      # % weak-scaling efficiency, 1 chip -> 5 x 5
TARGET_RATIO = 1.18           # T(25 chips) / T(1 chip)
TARGET_MATMUL = 50.0          # % of the tile's BF16 peak for the 4096^3 bf16 matmul
MATMUL_SIZES = (1024, 4096)


def program() -> tuple[str, str]:
    return MLP.read_text(), "programs/train_mlp784.d1k"


def step(text: str, chips: str, **overrides) -> dict:
    """Compile the program with its batch times the chips, run one step from seeded inputs and
    the params' INIT, and check the loss and the updates against the reference."""
    from emulator import Emulator, auto_threads

    m = load_machine("d1", chips=chips, overrides=overrides or None)
    scaled = scale_batch(text, m.chips, "train_mlp784.d1k")
    t = time.perf_counter()
    c = compile_text(scaled, m, "train_mlp784.d1k")
    compile_s = time.perf_counter() - t
    graph = c.graph
    inputs = compiler.make_inputs(graph, 0)
    params = compiler.init_params(graph, 0)
    emu = Emulator(c.obj, threads=auto_threads(m.n_live))
    for name, value in (inputs | params).items():
        emu.set_input(name, value)
    result = emu.run()
    if not result.ok:
        raise RuntimeError(result.report())
    got = {o.name: emu.output(o.name) for o in graph.outputs}
    got.update({compiler.update_key(u.param.name): emu.output(u.param.name)
                for u in graph.updates})
    rows = compiler.compare_outputs(graph, got, compiler.evaluate(graph, inputs, params))
    st = emu.stats()
    md = st["modelled"]
    edges = (st.get("chips") or {}).get("busiest_edge_links") or []
    return {"machine": m, "cycles": result.cycles, "compile": compile_s,
            "ok": all(r[4] for r in rows), "edge_bytes": md["chip_edge_bytes"],
            "on_chip": md["on_chip_bytes"], "edge_util": edges[0]["utilisation"] if edges else 0,
            "blocks": len(c.obj.blocks), "words": sum(len(b) for b in c.obj.blocks),
            "parallel": c.obj.meta.get("parallel"), "percent": md["percent_of_peak"]}


def matmul_text(n: int) -> str:
    return (f"# C = A @ B, {n}^3: bf16 operands, f32 accumulation and result\n"
            f"input a: bf16[{n}, {n}]\ninput b: bf16[{n}, {n}]\nc = a @ b\noutput c\n")


def tensor_parallel_matmul(n: int, machine: str = "tile") -> dict:
    """Compile the n^3 matmul for `machine` with its mapping report, run it from seeded
    inputs, and check c against the reference."""
    from emulator import Emulator, auto_threads

    m = load_machine(machine)
    text = matmul_text(n)
    t = time.perf_counter()
    c = compile_text(text, m, f"matmul{n}.d1k", report=True)
    compile_s = time.perf_counter() - t
    obj, graph, rep = c.obj, c.graph, c.report
    steps = [(s["kind"], s["name"]) for s in rep["steps"]]
    del c                                   # the per-node programs: gigabytes on the tile
    size = len(obj.to_bytes())
    inputs = compiler.make_inputs(graph, 0)
    emu = Emulator(obj, threads=auto_threads(m.n_live))
    for name, value in inputs.items():
        emu.set_input(name, value)
    t = time.perf_counter()
    result = emu.run()
    run_s = time.perf_counter() - t
    if not result.ok:
        raise RuntimeError(result.report())
    got = {"c": emu.output("c")}
    st = emu.stats()
    emu.close()
    rows = compiler.compare_outputs(graph, got, compiler.evaluate(graph, inputs, {}))
    md = st["modelled"]
    edges = (st.get("chips") or {}).get("busiest_edge_links") or []
    return {"machine": m, "n": n, "cycles": result.cycles, "compile": compile_s, "run": run_s,
            "object_bytes": size, "blocks": len(obj.blocks), "ok": all(r[4] for r in rows),
            "percent": md["percent_of_peak"], "edge_bytes": md["chip_edge_bytes"],
            "on_chip": md["on_chip_bytes"], "report_edge_bytes":
            rep["totals"]["chip_edge_bytes"], "by_tensor":
            rep["totals"]["chip_edge_bytes_by_tensor"], "steps": steps,
            "edge_util": edges[0]["utilisation"] if edges else 0.0,
            "busy": md["busy_cycles"], "stall": md["stall_cycles"]}


def matmul_section() -> None:
    print("tensor-parallel matmul on a training tile (5 x 5 d1 chips, mapped onto the whole "
          "machine):")
    for n in MATMUL_SIZES:
        r = tensor_parallel_matmul(n)
        m = r["machine"]
        kinds = ", ".join(f"{k} -> {name}" for k, name in r["steps"])
        print(f"    {n}^3: {r['cycles']:>7,} cycles = {r['percent']:5.2f} % of the BF16 peak  "
              f"correct: {r['ok']}  ({kinds}; compiled in {r['compile']:.1f} s, object "
              f"{r['object_bytes']:,} B in {r['blocks']} blocks; emulated in "
              f"{r['run']:.1f} s)")
        tensors = ", ".join(f"{t} {b:,} B" for t, b in r["by_tensor"].items())
        print(f"        across chip edges {r['edge_bytes']:,} B (the report predicted "
              f"{r['report_edge_bytes']:,} B: {tensors}); on chip {r['on_chip']:,} B; busiest "
              f"chip-edge link busy {100 * r['edge_util']:.1f} % of the run; node-cycles busy "
              f"{r['busy']:,}, stalled {r['stall']:,} on {m.n_live:,} nodes")
        if n == 4096:
            ok = r["percent"] >= TARGET_MATMUL
            print(f"4096^3 bf16 matmul on 5 x 5 chips  {r['percent']:6.2f} % of the tile's BF16 "
                  f"peak   (target >= {TARGET_MATMUL:g} %: {'MET' if ok else 'NOT MET'}; "
                  f"compile {r['compile']:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    which = take_arguments(argv, "scale_bench", "scale", ("all", "data", "matmul")) or "all"
    if which in ("all", "data"):
        data_section()
    if which in ("all", "matmul"):
        matmul_section()


def data_section() -> None:
    text, name = program()
    print("scale-out benchmarks (d1 chips; 'modelled' figures come from the emulator's timing "
          "model, times are measured on the host)")
    print(f"data-parallel training step of {name}, batch 256 per chip:")
    runs = {}
    for g in GRIDS:
        r = runs[g] = step(text, g)
        m = r["machine"]
        dp = r["parallel"]
        how = (f"data-parallel, batch {dp['batch']:,} = {m.chips} x {dp['batch_per_chip']}"
               if dp else "one chip, batch 256")
        print(f"    {g}: {r['cycles']:>7,} cycles  {r['percent']:5.2f} % of the BF16 peak  "
              f"chip-edge bytes {r['edge_bytes']:>11,}  busiest edge link "
              f"{100 * r['edge_util']:4.1f} %  correct: {r['ok']}  ({how}; compiled in "
              f"{r['compile']:.1f} s)")
    t1, t25 = runs["1x1"]["cycles"], runs["5x5"]["cycles"]
    eff = 100.0 * t1 / t25
    ratio = t25 / t1
    print(f"weak-scaling efficiency 1 -> 5x5  {eff:6.1f} %   (target >= {TARGET_EFFICIENCY:g} %: "
          f"{'MET' if eff >= TARGET_EFFICIENCY else 'NOT MET'}; 2x2: "
          f"{100.0 * t1 / runs['2x2']['cycles']:.1f} %)")
    print(f"25-chip step / 1-chip step         {ratio:6.3f}     (target <= {TARGET_RATIO}: "
          f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}; the all-reduce adds "
          f"{t25 - t1:,} cycles)")
    e = runs["5x5"]
    per_chip = e["edge_bytes"] / e["machine"].chips
    print(f"all-reduce across chip edges       {e['edge_bytes']:,} B on 25 chips "
          f"({per_chip:,.0f} B per chip; 2x2: {runs['2x2']['edge_bytes']:,} B)")
    d = step(text, "5x5", chip_link_bytes_per_cycle=100)
    print(f"    5x5 with chip edges doubled    {d['cycles']:,} cycles: efficiency "
          f"{100.0 * t1 / d['cycles']:.1f} %  (correct: {d['ok']})")
    o = runs["1x1"]
    print(f"code: tile object {e['blocks']:,} blocks, {e['words']:,} words; one chip's "
          f"{o['blocks']:,} blocks, {o['words']:,} words (every chip runs the same code)")


if __name__ == "__main__":
    main()
