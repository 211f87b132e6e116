"""`d1 run`: run a program on the emulated mesh, write its outputs, report traps and timing."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from d1.options import (
    emulated_machine,
    input_options,
    machine_options,
    max_cycles_option,
    params_option,
    parse_shapes,
    shape_option,
    threads_option,
    usable_cpus,
)
from d1.params import check_npy
from d1.program import Program, load_program
from d1isa import units
from d1isa.errors import D1Error, RuntimeFault
from d1isa.files import (
    check_destination,
    check_output_dir,
    read_bytes,
    refuse_overwrite,
    refuse_twice,
    write_atomic,
)
from d1isa.machine import MAX_QUANTUM, machine_files

# An --input array is at most this large (a tensor must also fit the machine's SRAM).
MAX_INPUT_BYTES = 4 << 30


def parse_inputs(items: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"expected NAME=FILE.npy, got '{item}'", param_hint="--input")
        name, file = (s.strip() for s in item.split("=", 1))
        if name in out:                     # as d1 train: the second would silently win
            raise click.BadParameter(f"input '{name}' is given twice", param_hint="--input")
        out[name] = load_npy(file, f"--input {name}")
    return out


def load_npy(file: str | Path, what: str) -> np.ndarray:
    """A numeric array from a regular .npy file whose header agrees with its size: a header
    that claims more data than the file holds is refused before anything is allocated."""
    raw = read_bytes(file, MAX_INPUT_BYTES, ".npy file")
    check_npy(io.BytesIO(raw), len(raw), f"{what}: {file}", "file", "give integers or floats")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise D1Error(f"{what}: cannot read {file}: {e}") from None


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@input_options
@shape_option
@params_option
@click.option("--check", is_flag=True,
              help="Compare every output (and, for a training program, every param after "
                   "its update) with the DSL's numpy reference; exit 1 if any is out of "
                   "tolerance (DSL programs only).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default="out",
              show_default=True, help="Where each output tensor is written as NAME.npy.")
@max_cycles_option("A node whose clock passes this many cycles traps (cause 9).")
@click.option("--quantum", type=click.IntRange(1, MAX_QUANTUM), default=256, show_default=True,
              help="Instructions per node per turn (results never depend on it).")
@threads_option("; --trace and --regions run on one thread")
@click.option("--stats", "show_stats", is_flag=True,
              help="Print modelled timing, FLOP/s, link use and stalls, and host speed.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, allow_dash=True,
                                                     path_type=Path),
              help="Write everything (stats per node and link, traps, deadlock) as JSON "
                   "('-': to standard output, instead of the usual lines).")
@click.option("--regions", is_flag=True,
              help="Collect statistics per DSL operation (or assembly label): time span, "
                   "FLOPs, SRAM and link bytes, stalls; shown by --stats, kept by --json.")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a timeline trace (Chrome / Perfetto trace-event JSON; open it in "
                   "ui.perfetto.dev or chrome://tracing). Implies --regions.")
@click.option("--trace-events", type=click.IntRange(100, 100_000_000), default=200_000,
              show_default=True, help="Most events the trace file may hold (it says what it "
                                      "left out); the names of its processes and threads (2 "
                                      "per chip and 2 per node with code) are written even "
                                      "beyond it.")
@click.option("-O", "opts", multiple=True, metavar="KEY=VALUE",
              help="Compiler option for a .d1k program (repeatable): matmul=summa|naive, "
                   "double_buffer=true|false, preskew=true|false, reach=N, "
                   "batched=subgrid|rows|sequential, row_bands=true|false, "
                   "conv=implicit|im2col.")
@machine_options
def run(file: Path, inputs: tuple[str, ...], seed: int, shapes: tuple[str, ...],
        params_file: Path | None, check: bool,
        out_dir: Path,
        max_cycles: int, quantum: int, threads: int, show_stats: bool, json_file: Path | None,
        regions: bool, trace_file: Path | None, trace_events: int, opts: tuple[str, ...],
        machine_name: str | None, mesh: str | None, chips: str | None,
        sets: tuple[str, ...]) -> None:
    """Run FILE (.d1o, .d1s, .d1k or an .onnx model) on the emulated mesh.

    Inputs are scattered to their tensors (float32 or float64 .npy files, rounded to the
    tensor's dtype); DSL inputs not given are drawn from a standard normal seeded by --seed.
    Params are written like inputs, from --params, else from the object (`d1 compile
    --params`), else from their declaration's INIT. A training program runs one step.
    When every node halts, each output tensor is written to OUT_DIR/NAME.npy (float32 for
    f32/bf16, int32 for i32). An ONNX model is imported in memory (docs/ONNX.md): its
    initializers are the params' values, --input takes its ONNX input names as well as the
    DSL ones, outputs are written under their DSL names, and --shape sets symbolic dims.
    A trap or a deadlock is reported with the node, the instruction and its source line,
    and exits with status 1; so does a failed --check.

    \b
    Examples:
      d1 run programs/mlp.d1k --check --stats
      d1 run programs/matmul.d1k --mesh 4x4 --check
      d1 run programs/asm/token_ring.d1s --stats
      d1 run vadd.d1o --input a=a.npy --input b=b.npy --out-dir results
      d1 run programs/train_digits.d1k --params out/params.npz --input x=x.npy --input y=y.npy
      d1 run prog.d1o --set link_bytes_per_cycle=32 --json run.json
      d1 run programs/matmul.d1k --mesh 4x4 -O matmul=naive --regions --stats
      d1 run programs/matmul.d1k --mesh 4x4 --chips 2x2 --stats
      d1 run programs/mlp.d1k --trace mlp-trace.json
      d1 run programs/onnx/mlp.onnx --input input.1=x.npy --json run.json
    """
    machine = emulated_machine(machine_name, mesh, sets, chips, file)
    options = None
    if opts:
        from compiler.pipeline import CompileOptions
        options = CompileOptions.parse(opts)
    given = parse_inputs(inputs)
    params = None
    if params_file is not None:
        from d1.params import load_params
        params = load_params(params_file)
    comm = mpi_ranks(trace_file is not None or regions)
    prog = load_program(file, machine, options, shapes=parse_shapes(shapes))
    obj = prog.obj
    for note in prog.notes:
        click.echo(f"note: {note}", err=True)
    prog.check_host_memory(1 if comm is None else comm.Get_size())     # on ranks: a share
    if params is not None:
        params = params_for(prog, params, params_file)
    to_stdout = json_file is not None and str(json_file) == "-"
    out_paths = check_destinations(prog, out_dir, json_file, trace_file, file, inputs,
                                   (*machine_files(machine_name),
                                    *([params_file] if params_file is not None else [])))
    arrays = program_inputs(prog, given, seed, params, checked=check)
    # Imported once the program has loaded: a file that cannot be run fails without Numba.
    from emulator import Emulator, auto_threads

    mode = "full" if trace_file is not None else ("regions" if regions else None)
    emu = Emulator(obj, seed=seed, max_cycles=max_cycles, quantum=quantum, trace=mode,
                   threads=rank_threads(threads) if comm is not None else
                   cap_threads(threads) or auto_threads(obj.machine.n_live), comm=comm)
    for name, arr in arrays.items():
        emu.set_input(name, arr)
    if check and prog.dsl is None:
        raise D1Error(f"--check needs a DSL program (.d1k, or a .d1o compiled from one); "
                      f"{file} has no DSL source")
    mpi_note(emu)
    t0 = time.perf_counter()
    result = emu.run()
    wall = time.perf_counter() - t0
    written = []
    got: dict[str, np.ndarray] = {}
    if result.ok:
        for name, path in out_paths.items():
            value = emu.output(name)        # a 0-d output comes back 0-d
            got[name] = value
            write_atomic(path, npy_bytes(value))
            written.append(str(path))
        if check and prog.graph is not None:
            from compiler.reference import update_key
            got.update({update_key(u.param.name): emu.output(u.param.name)
                        for u in prog.graph.updates})
    # the statistics walk every node and link: made only for what prints or writes them
    stats = emu.stats() if show_stats or json_file is not None else None
    if show_stats:
        click.echo(format_stats(stats, result.status, wall), err=to_stdout)
    if trace_file is not None:
        doc_trace = emu.chrome_trace(max_events=trace_events, program=str(file))
        write_atomic(trace_file, json.dumps(doc_trace, separators=(",", ":")))
        info = doc_trace["otherData"]
        click.echo(f"wrote {trace_file}: {info['event_count']:,} events ({info['flows']:,} "
                   f"message flows, {info['flow_sampling']}"
                   + ("; truncated, see its otherData" if info["truncated"] else "")
                   + "); open it in ui.perfetto.dev or chrome://tracing", err=True)
    if json_file is not None:
        doc: dict[str, Any] = {"file": str(file), "status": result.status,
                               "result": result.to_json(), "outputs": written, "stats": stats}
        if prog.names:
            doc["onnx_names"] = prog.names
    if not result.ok:
        if json_file is not None:
            write_json(json_file, doc)
        raise RuntimeFault(f"run {result.status}\n{result.report()}")
    if check:
        rows = prog.check(arrays, got)
        if json_file is not None:
            doc["check"] = [dict(zip(("name", "max_abs_err", "max_rel_err", "tolerance", "ok"),
                                     r, strict=True)) for r in rows]
        click.echo(format_check(rows), err=to_stdout)
        if not all(r[4] for r in rows):
            if json_file is not None:
                write_json(json_file, doc)
            raise RuntimeFault("check failed: outputs differ from the numpy reference beyond "
                               "the tolerance")
    if json_file is not None:
        write_json(json_file, doc)
    click.echo(f"halted: {units.cycles(result.cycles)} = {units.seconds(result.seconds)} modelled"
               + (f"; wrote {', '.join(written)}" if written else ""), err=to_stdout)


def mpi_ranks(traced: bool = False) -> object | None:
    """The MPI communicator when `mpiexec -n R` (R > 1) started this command, else None
    (emulator.mpi; mpi4py is imported only then). Each rank runs one thread."""
    from emulator.mpi import world

    comm = world()
    if comm is not None and traced:
        raise D1Error("--trace and --regions run on one process, not on MPI ranks")
    return comm


def one_process(command: str, why: str) -> None:
    """Refuse a command that emulates on one process when `mpiexec -n R` (R > 1) started it:
    it would run the whole machine on rank 0 while the other ranks idle, silently."""
    from emulator.mpi import world

    if world() is not None:
        raise D1Error(f"{command} runs on one process, not on MPI ranks: {why}; start it "
                      "without mpiexec")


def rank_threads(threads: int) -> int:
    """On MPI ranks: one thread per rank (a note if --threads asked for more)."""
    if threads > 1:
        click.echo(f"note: --threads {threads}: on MPI ranks each rank runs one thread; start "
                   "more ranks instead", err=True)
    return 1


def mpi_note(emu: Any) -> None:
    """On MPI ranks, a note saying how the machine is shared out (before the run starts)."""
    part = getattr(emu, "partition", None)
    if part is None:
        return
    blocks = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" if b > a else "none"
              for a, b in (part.chips(r) for r in range(min(part.ranks, 5)))]
    more = ", ..." if part.ranks > 5 else ""
    windows = (f"time windows of {units.cycles(emu.window)} (the lookahead across chip edges)"
               if emu.lookahead else "no link joins two ranks")
    click.echo(f"note: running on {part.ranks} MPI ranks holding chips {', '.join(blocks)}{more}"
               f"; {windows}", err=True)
    if part.ranks > part.chip_count:
        idle = part.ranks - part.chip_count
        click.echo(f"note: the machine has {part.chip_count} chip"
                   f"{'s' if part.chip_count != 1 else ''}: {idle} of the ranks "
                   f"hold{'s' if idle == 1 else ''} none (a rank holds whole chips)", err=True)


# How many names of a --params file that are not params of the program a note spells out.
SHOWN_IGNORED = 8


def params_for(prog: Program, params: dict[str, np.ndarray], path: Path
               ) -> dict[str, np.ndarray]:
    """The arrays of a --params file that name params of the program, with a note naming
    the others (ignored)."""
    from d1.params import check_params, split_params
    used, ignored = split_params(prog, params)
    if ignored:
        # the names come from the file: a .npz of 20,000 arrays made a 150 KB line
        more = len(ignored) - SHOWN_IGNORED
        names = ", ".join(ignored[:SHOWN_IGNORED]) + (f" and {more:,} more" if more > 0 else "")
        click.echo(f"note: --params {path}: {names} "
                   f"{'is not a param' if len(ignored) == 1 else 'are not params'} of "
                   f"{prog.path}; ignored", err=True)
    check_params(prog, used, f"--params {path}")      # shapes, named after the file
    return used


def cap_threads(threads: int) -> int:
    """--threads, at most the CPUs this process may use (a note says when it is capped)."""
    cpus = usable_cpus()
    if threads > cpus:
        click.echo(f"note: --threads {threads} is more than the {cpus} CPU"
                   f"{'s' if cpus != 1 else ''} this process can use; using {cpus}", err=True)
        return cpus
    return threads


def check_destinations(prog: Program, out_dir: Path, json_file: Path | None,
                       trace_file: Path | None, source: Path, inputs: tuple[str, ...],
                       others: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Check every file the run will write before it starts; the output path of each output.

    An output is written as OUT_DIR/NAME.npy (NAME is an identifier, checked when the object
    loads, so it stays inside OUT_DIR). No file the run writes (an output, --json, --trace) may
    replace the program or an --input file, or another file of the same run: that is refused
    here, before anything runs.
    """
    read = [source, *(item.split("=", 1)[1] for item in inputs), *others]
    written: list[tuple[Path, str]] = []
    for dest, option in ((json_file, "--json"), (trace_file, "--trace")):
        if dest is None or (option == "--json" and str(dest) == "-"):     # standard output
            continue
        refuse_overwrite(dest, read, f"{option} {dest}")
        refuse_twice(dest, written, f"{option} {dest}")
        check_destination(dest, option)
        written.append((dest, option))
    outputs = prog.outputs
    if not outputs:
        return {}
    check_output_dir(out_dir)
    paths = {}
    for name in outputs:
        path = out_dir / f"{name}.npy"
        if path.parent != out_dir:
            raise D1Error(f"output name {name!r} would be written outside --out-dir")
        refuse_overwrite(path, read, f"output '{name}' ({path})")
        refuse_twice(path, written, f"output '{name}' ({path})")
        paths[name] = path
    return paths


def npy_bytes(value: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


def json_text(doc: dict[str, Any]) -> str:
    """`doc` as standard JSON. JSON has no NaN or infinity, and json.dumps would write them as
    NaN and Infinity, which jq, JavaScript's JSON.parse and most other readers reject; a
    non-finite number (a loss that diverged, an error that is infinite) is written as null."""
    return json.dumps(_finite(doc), indent=1, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """`doc` as JSON (`json_text`) into `path`, or to standard output for '-'."""
    text = json_text(doc)
    if str(path) == "-":
        click.echo(text)
    else:
        write_atomic(path, text)


def program_inputs(prog: Program, given: dict[str, np.ndarray], seed: int,
                   params: dict[str, np.ndarray] | None = None, checked: bool = True
                   ) -> dict[str, np.ndarray]:
    """The arrays to scatter before a run (Program.input_arrays), with a note for inputs that
    keep the object's initial SRAM contents. `checked`: the run is compared with the
    reference afterwards (else an object's inputs may be drawn without its DSL graph)."""
    arrays, missing = prog.input_arrays(given, seed, params, checked=checked)
    if missing:
        # A param left out is not an input (--input refuses it): name each by its kind.
        inputs = [n for n in missing if n not in prog.params]
        params = [n for n in missing if n in prog.params]
        what = ([f"input tensor(s) {', '.join(inputs)}"] if inputs else []) \
            + ([f"param(s) {', '.join(params)}"] if params else [])
        click.echo(f"note: {' and '.join(what)} not given; they keep the object's initial "
                   "SRAM contents", err=True)
    return arrays


def format_check(rows: list[tuple[str, float, float, float, bool]]) -> str:
    lines = ["check against the numpy reference (compiler.reference):",
             f"  {'output':<16} {'max abs err':>12} {'max rel err':>12} {'tolerance':>12}  result"]
    for name, abs_err, rel_err, tol, ok in rows:
        lines.append(f"  {name:<16} {abs_err:>12.4g} {rel_err:>12.4g} {tol:>12.4g}  "
                     f"{'ok' if ok else 'FAILED'}")
    return "\n".join(lines)


SHOWN_CHIPS = 8


def chip_lines(s: dict[str, Any]) -> list[str]:
    """The --stats lines of a multi-chip run: link bytes on chip and across chip edges, then
    per chip (those that sent most across their edges first, at most SHOWN_CHIPS)."""
    md, ch = s["modelled"], s["chips"]
    gx, gy = ch["grid"]
    lines = [f"    on chip                  {units.nbytes(md['on_chip_bytes'])}",
             f"    across chip edges        {units.nbytes(md['chip_edge_bytes'])} "
             f"({gx} x {gy} chips)"]
    rows = sorted(ch["per_chip"], key=lambda r: (-r["edge_bytes_out"], r["chip"][1],
                                                 r["chip"][0]))
    lines.append("  per chip (bytes out across its edges / in across them / on chip):")
    for r in rows[:SHOWN_CHIPS]:
        by_dir = ", ".join(f"{d} {v:,}" for d, v in r["edge_bytes_out_by_dir"].items() if v)
        lines.append(f"    chip ({r['chip'][0]},{r['chip'][1]})  {r['edge_bytes_out']:>13,} / "
                     f"{r['edge_bytes_in']:>13,} / {r['on_chip_bytes']:>13,} B"
                     + (f"  (out: {by_dir})" if by_dir else ""))
    if len(rows) > SHOWN_CHIPS:
        lines.append(f"    ... and {len(rows) - SHOWN_CHIPS} more chips (all of them in --json)")
    if ch["busiest_edge_links"]:
        r = ch["busiest_edge_links"][0]
        (fx, fy), (tx, ty) = r["from"], r["to"]
        lines.append(f"  busiest chip-edge link  ({fx},{fy}) -{r['dir']}-> ({tx},{ty})  "
                     f"{units.cycles(r['busy_cycles'])}, {units.nbytes(r['bytes'])}, "
                     f"{100 * r['utilisation']:.3g}% of kernel time")
    return lines


def format_stats(s: dict[str, Any], status: str, wall: float) -> str:
    """The --stats summary: modelled figures first, then what the host measured."""
    md = s["modelled"]
    host = s["host"]
    lines = [f"run {status} on {s['machine']} ({units.number(s['live_nodes'])} live nodes at "
             f"{units.si(s['clock_hz'], 'Hz')})", "", "modelled (the timing model, "
             "docs/TIMING.md):"]
    lines.append(f"  kernel time         {units.cycles(md['kernel_cycles'])} = "
                 f"{units.seconds(md['kernel_seconds'])}")
    lines.append(f"  instructions        {md['instructions']:,}")
    lines.append(f"  FLOPs               {md['flops']:,} FLOP")
    lines.append(f"  throughput          {units.si(md['flops_per_second'], 'FLOP/s')} = "
                 f"{md['percent_of_peak']:.3g}% of the {md['peak_dtype']} peak "
                 f"({units.si(md['peak_flops_per_second'][md['peak_dtype']], 'FLOP/s')})")
    lines.append(f"  busy / stalled      {md['busy_cycles']:,} / {md['stall_cycles']:,} "
                 "node-cycles")
    lines.append(f"    waiting for a message    {units.cycles(md['stall_recv_cycles'])}")
    lines.append(f"    waiting for FIFO room    {units.cycles(md['stall_send_cycles'])}")
    nodes = s["nodes"]
    stall = nodes["stall"]
    if md["stall_cycles"]:
        worst = sorted(range(len(stall)), key=lambda i: -stall[i])[:3]
        lines.append("    most stalled nodes       " + ", ".join(
            f"({nodes['x'][i]},{nodes['y'][i]}) {stall[i]:,}" for i in worst if stall[i]))
    lines.append(f"  SRAM high water     {units.nbytes(md['sram_high_water_bytes'])} "
                 "(largest node)")
    lines.append(f"  link traffic        {units.nbytes(md['link_bytes'])} in "
                 f"{units.count(md['link_messages'], 'message')}")
    if s.get("chips"):
        lines.extend(chip_lines(s))
    busiest = s["links"]["busiest"][:5]
    if busiest:
        lines.append("  busiest links (busy cycles, bytes, share of kernel time):")
        for r in busiest:
            fx, fy = r["from"]
            tx, ty = r["to"]
            lines.append(f"    ({fx},{fy}) -{r['dir']}-> ({tx},{ty})  "
                         f"{units.cycles(r['busy_cycles'])}, "
                         f"{units.nbytes(r['bytes'])}, {100 * r['utilisation']:.3g}%"
                         + ("  [chip edge]" if r.get("chip_edge") else ""))
    by_class = {k: v for k, v in md["instructions_by_class"].items() if v}
    if by_class:
        lines.append("  by timing class      " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])))
    if md.get("sram_bytes") is not None:
        lines.append(f"  SRAM traffic        {units.nbytes(md['sram_bytes'])} loaded or stored "
                     "by instructions (message payloads not counted)")
    if s.get("regions"):
        lines.append("  regions (span: first entry to last exit, modelled):")
        w = max(len(r["label"]) for r in s["regions"])
        for r in s["regions"]:
            span = r["end_cycle"] - r["start_cycle"]
            lines.append(f"    {r['label']:<{w}}  {span:>9,} cycles span, {r['flops']:>13,} FLOP, "
                         f"{r['link_bytes']:>11,} B over links, {r['stall_cycles']:>9,} "
                         "node-cycles stalled")
    lines.append("")
    lines.append("measured on the host (the emulator itself):")
    lines.append(f"  wall time           {units.seconds(wall)}: JIT compile or cache load "
                 f"{units.seconds(host['jit_seconds'])}, emulation "
                 f"{units.seconds(host['wall_seconds'])}")
    threads = host.get("threads", 1)
    rate = units.si(host["node_instructions_per_second"], "")
    lines.append(f"  emulation speed     {rate} node-instructions/s"
                 + (f" on {host['ranks']} MPI ranks of 1 thread" if host.get("ranks", 1) > 1
                    else f" on {threads} threads ({units.count(host.get('phases', 0), 'phase')})"
                    if threads > 1
                    else " on 1 thread"))
    if host.get("ranks", 1) > 1:
        windows = (f"{host['windows']:,} window{'' if host['windows'] == 1 else 's'} of "
                   f"{units.cycles(host['window_cycles'])} (lookahead "
                   f"{host['lookahead_cycles']:,})" if host["window_cycles"] is not None else
                   f"{host['windows']:,} window{'' if host['windows'] == 1 else 's'} "
                   "(no link joins two ranks)")
        lines.append(f"  MPI ranks           {host['ranks']}, {windows}"
                     f"; window exchange (sync overhead) {units.seconds(host['sync_seconds'])}"
                     f" = {100 * host['sync_share']:.3g}% of emulation (slowest rank)")
        lines.append(f"  emulator state      {units.nbytes(host['state_bytes'])} on the largest "
                     "rank (" + ", ".join(units.nbytes(b) for b in host["state_bytes_by_rank"])
                     + ")")
    else:
        lines.append(f"  emulator state      {units.nbytes(host['state_bytes'])}")
    return "\n".join(lines)
