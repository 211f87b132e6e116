"""The compiler pipeline, one pass after another: read `compile_text` top to bottom.

    parse     .d1k text -> syntax tree                       (compiler.parse)
    check     syntax tree -> typed IR graph                   (compiler.check)
    differentiate  grad nodes -> their backward pass as IR    (compiler.grad)
    lower     IR graph -> kernel ops, elementwise fused       (compiler.lower)
    map       kernel ops -> steps over distributed values     (compiler.lower.map_to_mesh)
    writeback each update into its param's own buffer       (compiler.writeback)
    schedule  step order, dead steps dropped, liveness        (compiler.alloc)
    allocate  one SRAM address per value, same on all nodes   (compiler.alloc)
    emit      per-node programs as checked instruction data   (compiler.emit), and the
              debugger's record of every named value            (compiler.debuginfo)

and then `link` lays the programs out into the object with the assembler's layout code
(d1isa.asm.layout; the `assemble` lap in `Compiled.seconds`): no assembly text is written or
parsed. `--emit ast|ir|asm` stops after parse, differentiate or emit and prints that stage
(`emit_stage`); the asm is written from the same instruction data and re-assembles with `d1 asm`
to the same object. `--emit map` prints the mapping report (compiler.mapreport): every tensor's
layout per step, and what its messages carry across chip edges. The IR is verified after
`check` and after `differentiate` (`CompileOptions.verify`).

Params are weight-resident: each has one SRAM address for the object's whole life (the host
writes it once, as the object's `param` tensor says), and each `update` writes its param's
buffer after every read of the old value (`write_back`), so running the same loaded object
again is the next training step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from compiler.alloc import allocate, schedule
from compiler.asmgen import CompilerLimit, check_machine
from compiler.ast import format_ast
from compiler.check import check
from compiler.dataparallel import ChipCtx, ChipMapper, DataParallel, NotDataParallel, hoist
from compiler.dataparallel import plan as plan_data_parallel
from compiler.debuginfo import describe_values
from compiler.emit import Emitted, assembly_text, collect, emit_program, link
from compiler.grad import differentiate
from compiler.grid import Grid, choose_grid
from compiler.ir import Graph, Op, format_ir, verify
from compiler.lower import lower, map_to_mesh
from compiler.mapreport import Traffic, format_report, mapping_report
from compiler.parse import parse
from compiler.plan import Ctx, Value
from compiler.splitk import accumulate_in_place, split_matmuls
from compiler.summa import chip_grid_pays
from compiler.writeback import write_back
from d1isa.errors import D1Error, SourceError
from d1isa.files import read_text
from d1isa.machine import Machine, digits_value, machine_or_default
from d1isa.numbers import is_integer
from d1isa.objfile import ObjectFile

PASSES = ("parse", "check", "differentiate", "lower", "map", "writeback", "schedule", "allocate",
          "emit")
STAGES = ("ast", "ir", "asm", "map")
MATMUL_ALGORITHMS = ("summa", "naive")
BATCHED_MATMUL = ("subgrid", "rows", "sequential")
CONV_MAPPINGS = ("implicit", "im2col")
PARALLEL_MODES = ("auto", "data", "whole")
# The options that name a choice: what an error calls them, and the choices.
CHOICES = {"matmul": ("matmul algorithm", MATMUL_ALGORITHMS),
           "batched": ("batched matmul mapping", BATCHED_MATMUL),
           "conv": ("conv2d mapping", CONV_MAPPINGS),
           "parallel": ("parallel mode", PARALLEL_MODES)}


@dataclass(frozen=True)
class CompileOptions:
    """Choices a student can flip to see what they cost (`-O key=value` on the command line).

    matmul: "summa" broadcasts panels hop by hop and overlaps them with the matrix unit;
            "naive" first gathers each node's whole row of A and column of B, then multiplies.
    double_buffer: with summa, compute on arrived panels while later ones are in flight
            (False: all panels are exchanged first, then multiplied).
    preskew: on a square grid, place matmul inputs in a skewed block layout, so every node
            starts with a matching pair of panels instead of waiting for one.
    reach: grid hops a summa panel travels per round (1: forwarded hop by hop; larger values
            relay it through several grid nodes at once).
    verify: re-check the IR's invariants after the front end.
    spmd: nodes that play the same role run one shared code block, their own numbers in
            registers they start with (False: one block per distinct node program; the same
            modelled cycles, a larger object).
    batched: a matmul of 3-D or 4-D operands: "subgrid" runs the batch's products at once,
            each on its own band of grid columns or grid rows (whichever spreads its tiles
            better; columns on a tie); "rows" always on bands of grid rows; "sequential"
            runs them one after the other, each on the whole grid.
    row_bands: a matmul whose rows fill at most half the grid rows runs as products on bands
            of grid rows, each computing a block of N (when N fills every band's columns);
            the matmul that reads such a result as A multiplies each band's block of K where
            it lies and adds the partial products.
    conv: conv2d (and its input gradient): "implicit" multiplies each node's rows of output
            on the matrix unit straight from its slab of input rows (an implicit GEMM);
            "im2col" gathers the patches matrix [N H' W', C R S] and multiplies it by the
            weights with the 2-D matmul.
    parallel: on a machine of several chips, "auto" runs a training program (one with
            `update`s) data-parallel (compiler.dataparallel: the batch split over the chips,
            one per-chip program, gradients all-reduced across chip edges) and maps anything
            else onto the whole machine; "data" asks for data parallelism for any program
            (an error if the program cannot have it); "whole" maps every program onto the
            whole machine.
    chip_grid: on a machine of several chips mapped as one mesh, the grid is one chip's best
            grid repeated on every chip when that is larger than the one found over the whole
            mesh and the program has a matmul large enough for it (compiler.summa.
            chip_grid_pays; on the tile 80 x 80 against 70 x 90 for 4096^3: square, so the
            matmul runs the preskewed SUMMA; False: the whole-mesh grid and its stream matmul).
    """

    matmul: str = "summa"
    double_buffer: bool = True
    preskew: bool = True
    reach: int = 1
    verify: bool = True
    spmd: bool = True
    batched: str = "subgrid"
    row_bands: bool = True
    conv: str = "implicit"
    parallel: str = "auto"
    chip_grid: bool = True

    def __post_init__(self) -> None:
        for key, (what, choices) in CHOICES.items():
            if getattr(self, key) not in choices:
                raise D1Error(f"unknown {what} '{getattr(self, key)}'; "
                              f"choose one of {', '.join(choices)}")
        if not is_integer(self.reach) or self.reach < 1:
            raise D1Error(f"compiler option 'reach' is a positive integer, got {self.reach!r}")
        # frozen: the checked values are stored through object.__setattr__
        object.__setattr__(self, "reach", int(self.reach))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                # "no" or 0 was read as its truth value ("no" turned the option on)
                if not isinstance(value, bool | np.bool_):
                    raise D1Error(f"compiler option '{f.name}' is True or False, got {value!r}")
                object.__setattr__(self, f.name, bool(value))

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> CompileOptions:
        """Options from `KEY=VALUE` strings, e.g. ["matmul=naive", "double_buffer=false"]."""
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise D1Error("CompileOptions.parse takes a list of 'KEY=VALUE' strings, e.g. "
                          f"['matmul=naive'], not {items!r}")
        known = {f.name: f.type for f in cls.__dataclass_fields__.values()}
        values: dict[str, object] = {}
        for item in items:
            if "=" not in item:
                raise D1Error(f"-O expects KEY=VALUE, got '{item}'")
            key, text = (s.strip() for s in item.split("=", 1))
            if key not in known:
                raise D1Error(f"unknown compiler option '{key}'; known: {', '.join(known)}")
            if key in CHOICES:
                values[key] = text
            elif key == "reach":
                if not (text.isascii() and text.isdigit()):     # not '²'
                    raise D1Error(f"compiler option 'reach' is a positive integer, got '{text}'")
                # more digits than int() takes (4,300) reach across any grid, as 10^18 does
                values[key] = digits_value(text)
            else:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise D1Error(f"compiler option '{key}' is true or false, got '{text}'")
                values[key] = low in ("true", "1", "yes", "on")
        return cls(**values)


@dataclass
class Compiled:
    """Everything the pipeline produced, for tools and tests."""

    graph: Graph
    grid: Grid
    emitted: Emitted
    obj: ObjectFile | None
    sram_peak: int
    seconds: dict[str, float] = field(default_factory=dict)
    parallel: DataParallel | None = None
    notes: list[str] = field(default_factory=list)
    # The mapping report (compiler.mapreport), when compile_text was asked for it.
    report: dict | None = None

    @property
    def asm(self) -> str:
        """The program as `.d1s` text (written on demand)."""
        return assembly_text(self.emitted)


def compile_text(text: str, machine: Machine | None = None, filename: str = "<string>",
                 options: CompileOptions | None = None, assemble_object: bool = True,
                 report: bool = False) -> Compiled:
    """Run the whole pipeline (with assemble_object False, stop before linking; with report,
    record every message's path for the mapping report, `Compiled.report`)."""
    machine = machine_or_default(machine)
    if options is not None and not isinstance(options, CompileOptions):
        raise D1Error(f"options must be a compiler.CompileOptions, not "
                      f"{type(options).__name__}: make one with CompileOptions(...) or "
                      "CompileOptions.parse(['matmul=naive', ...])")
    options = options or CompileOptions()
    check_machine(machine)
    try:
        return _compile(text, machine, filename, options, assemble_object, report)
    except CompilerLimit as e:
        line, col = e.loc or (1, 1)
        raise SourceError.at(filename, text, line or 1, col or 1,
                             f"{e.message} (a limit of this compiler: {e.limit})") from None


def _compile(text: str, machine: Machine, filename: str, options: CompileOptions,
             assemble_object: bool, report: bool = False) -> Compiled:
    t = _Timer()
    program = parse(text, filename)
    t.lap("parse")
    graph = check(program, machine, filename, text)
    if options.verify:
        verify(graph)
    t.lap("check")
    graph = differentiate(graph)
    if options.verify:
        verify(graph)
    t.lap("differentiate")
    dp, notes = _data_parallel(graph, machine, options)
    mapped = dp.graph if dp is not None else graph
    try:
        kops, grid, mapper, outputs, resident, sched, peak = _place(
            mapped, dp, machine, options, filename, text, t)
    except SourceError as first:
        # Too large for a node: once more with the matmuls whose panels cannot fit split
        # over K (compiler.splitk); the first error stands if that does not fit either.
        split = None if dp is not None else split_matmuls(mapped, _grid(mapped, machine,
                                                                          options), machine)
        if split is None:
            raise
        if options.verify:
            verify(split[0])
        try:
            kops, grid, mapper, outputs, resident, sched, peak = _place(
                split[0], dp, machine, options, filename, text, t, split[2], split[3])
        except (SourceError, CompilerLimit):
            raise first from None
        mapped = split[0]
        notes = [*notes, *split[1]]
    ctx = (ChipCtx(machine, grid, options, filename, dp=dp) if dp is not None
           else Ctx(machine, grid, options, filename))
    if report:
        ctx.traffic = Traffic(machine)
    emit_program(ctx, sched.steps)
    if dp is not None:
        ctx.merge()
    out_names = [o.name for o in graph.outputs]
    tensors = []

    def shape_of(v: Value) -> tuple[int, ...]:
        return v.shape if dp is None else dp.global_shape[v.name]

    for v in mapper.inputs:
        tensors.append((v.name, "param" if v.node.op is Op.PARAM else "input", v,
                        shape_of(v)))
    input_names = {v.name for v in mapper.inputs}
    for o, v in zip(mapped.outputs, outputs, strict=True):
        if o.name not in input_names:
            tensors.append((o.name, "output", v, shape_of(v) if o.ndim else v.shape))
    meta = {
        "producer": "d1 compile",
        "source": filename,
        "inputs": [v.name for v in mapper.inputs if v.node.op is Op.INPUT],
        "outputs": out_names,
        "scalar_outputs": [o.name for o in graph.outputs if o.ndim == 0],
        **({"params": [p.name for p in graph.params]} if graph.params else {}),
        **({"updates": [u.param.name for u in graph.updates]} if graph.updates else {}),
        "grid": {"rows": list(grid.ys), "cols": list(grid.xs)},
        "options": asdict(options),
        "sram_peak_bytes": peak,
        "regions": [{"op": st.kind, "name": st.label, "line": st.loc[0], "col": st.loc[1]}
                    for st in sched.steps],
        **({"parallel": dp.describe()} if dp is not None else {}),
    }
    emitted = collect(ctx, filename, text, tensors, meta, len(sched.steps))
    if dp is not None:
        emitted.expand = dp.pieces
    # The debugger's record of every named value: its layout and the steps it is live in.
    meta["values"] = describe_values(mapped, kops, mapper, sched, grid, emitted.step_pcs, text,
                                     dp)
    t.lap("emit")
    mapping = None
    if report:
        mapping = mapping_report(sched.steps, ctx.traffic, grid, machine, filename,
                                 meta.get("parallel"))
    obj = None
    if assemble_object:
        obj = link(emitted)
        t.lap("assemble")
    return Compiled(graph, grid, emitted, obj, peak, t.laps, dp, notes, mapping)


def _grid(mapped: Graph, machine: Machine, options: CompileOptions) -> Grid:
    """The grid a program mapped onto the whole machine runs on."""
    return choose_grid(machine, per_chip=options.chip_grid and chip_grid_pays(mapped, machine))


def _place(mapped: Graph, dp: DataParallel | None, machine: Machine, options: CompileOptions,
           filename: str, text: str, t: _Timer, keep: frozenset[int] | set[int] = frozenset(),
           in_place: list[int] | None = None) -> tuple:
    """Lower, map, write back, schedule and allocate: (kops, grid, mapper, outputs, resident
    values, schedule, peak bytes per node); a located SourceError if it does not fit. `keep`:
    nodes stored, not fused into their readers (as a data-parallel program's all-reduced ones);
    `in_place`: additions stored into their first operand's buffer (compiler.splitk)."""
    kops = lower(mapped, set(dp.reduce) if dp is not None else keep)
    if dp is not None:
        kops = hoist(mapped, kops, dp.reduce)
    t.lap("lower")
    if dp is not None:
        grid = dp.grid
        mapper = ChipMapper(dp, mapped, machine, options)
        mapper.run(kops)
    else:
        grid = _grid(mapped, machine, options)
        mapper = map_to_mesh(mapped, kops, grid, machine, options)
    outputs = [mapper.values[o.id] for o in mapped.outputs]
    t.lap("map")
    resident = write_back(mapped, mapper.steps, mapper.values, grid)
    if in_place:
        accumulate_in_place(mapped, in_place, mapper.steps, mapper.values)
    t.lap("writeback")
    sched = schedule(mapper.steps, mapper.placed, outputs + resident)
    t.lap("schedule")
    peak = allocate(sched, machine.sram_bytes, filename, text)
    t.lap("allocate")
    return kops, grid, mapper, outputs, resident, sched, peak


def _data_parallel(graph: Graph, machine: Machine, options: CompileOptions
                   ) -> tuple[DataParallel | None, list[str]]:
    """The data-parallel plan for this program and machine, if it gets one, and notes saying
    why a training program on several chips does not."""
    if machine.chips < 2 or options.parallel == "whole":
        if options.parallel == "data" and machine.chips < 2:
            raise D1Error("parallel=data splits the batch over the chips of a machine of "
                          f"several chips; machine '{machine.name}' has one (use --chips)")
        return None, []
    if options.parallel == "auto" and not graph.updates:
        return None, []
    try:
        return plan_data_parallel(graph, machine), []
    except NotDataParallel as e:
        if options.parallel == "data":
            raise D1Error(f"{graph.filename}: cannot run data-parallel: {e.reason}") from None
        return None, [f"not data-parallel over the {machine.chips_x} x {machine.chips_y} "
                      f"chips: {e.reason}; mapped onto the whole machine instead"]


def compile_source(text: str, machine: Machine | None = None, filename: str = "<string>",
                   options: CompileOptions | None = None) -> ObjectFile:
    """Compile `.d1k` text for `machine` (default d1) into an object file."""
    return compile_text(text, machine, filename, options).obj


def compile_file(path: str | Path, machine: Machine | None = None,
                 options: CompileOptions | None = None) -> ObjectFile:
    """Compile a `.d1k` file (its path names the source in diagnostics and the line table)."""
    return compile_source(read_source(path), machine, str(path), options)


def read_source(path: str | Path) -> str:
    """A source file's text, read as every d1 tool reads one (d1isa.files: a regular file of
    at most MAX_SOURCE_BYTES; /dev/zero or a pipe would be read without end)."""
    return read_text(path)


def emit_stage(text: str, stage: str, machine: Machine | None = None,
               filename: str = "<string>", options: CompileOptions | None = None) -> str:
    """The program after one stage: "ast" (parse), "ir" (check), "asm" (emit), or "map": the
    mapping report (compiler.mapreport) of the whole compile."""
    if stage == "ast":
        return format_ast(parse(text, filename))
    if stage == "ir":
        machine = machine_or_default(machine)
        return format_ir(differentiate(check(parse(text, filename), machine, filename, text)))
    if stage == "asm":
        return compile_text(text, machine, filename, options, assemble_object=False).asm
    if stage == "map":
        return format_report(compile_text(text, machine, filename, options,
                                          assemble_object=False, report=True).report)
    raise D1Error(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)}")


class _Timer:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.t
        self.t = now
