"""The one loader: a path plus machine options in, a `Program` out.

Every command (`run`, `debug`, `compile`, `asm`, `disasm`, `sweep`, `roofline`) and the Python
API turn a file into something to run through `load_program`, so they agree on what a suffix
means, on how a requested machine meets an object, and they parse and check a DSL source once:

    .d1k   the DSL compiler (compiler.pipeline), for the requested machine (default d1)
    .onnx  an ONNX model, imported in memory (compiler.onnx_import: `.d1k` text whose params
           hold the model's initializers), then compiled like a `.d1k`; the object embeds
           the params' values, and `Program.names` maps ONNX names to DSL names
    .d1s   the assembler (d1isa.asm), for the file's own `.machine`, else the requested one
    .d1o   an object (d1isa.objfile); any other suffix is read as an object if it starts with
           the object magic, else it is an error

An object already embeds the machine it was built for. Machine options given against it are
sorted by what they change (d1isa.machine.Param): a timing-only difference (latencies, clock,
instruction costs) is applied to the object, with a note; one that changes code generation
(the mesh, SRAM, registers, message size, link width, FIFO depth) makes the loader recompile
the source the object embeds (DSL, or assembly), with a note; an object with no embedded source
is then an error that names the options which need recompiling.

This module sits on top of the compiler and the emulator's inputs; neither of them imports it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from d1isa.errors import D1Error, SourceError
from d1isa.files import MAX_OBJECT_BYTES, read_bytes, read_text
from d1isa.machine import PARAMS, Machine, default_machine, machine_or_default
from d1isa.objfile import MAGIC, ObjectFile

if TYPE_CHECKING:
    from compiler.ir import Graph
    from compiler.pipeline import Compiled, CompileOptions

KINDS = {".d1k": "dsl", ".onnx": "onnx", ".d1s": "asm", ".d1o": "object"}
DSL_PRODUCER = "d1 compile"
ONNX_NAMES = "onnx_names"
ASM_PRODUCER = "d1 asm"
# What each kind of file is, and the commands that take it, for the error of a file whose
# suffix names another kind than the one a command reads.
_KIND_TEXT = {"dsl": ("a DSL program", "d1 compile"),
              "onnx": ("an ONNX model", "d1 compile and d1 import"),
              "asm": ("assembly", "d1 asm"), "object": ("an object", "d1 run and d1 disasm")}
# Parameters that only name or describe a machine: never a reason to recompile or to note.
_LABELS = ("name", "description")


@dataclass
class Program:
    """A loaded program: the object to run and what the commands need to know about it.

    `dsl` is the (text, file name) of the DSL program behind the object, when there is one
    (a `.d1k`, or an object compiled from one); `graph` is its checked IR, made at most once
    (by the compile itself for a `.d1k`). `compiled` holds the whole compiler result (grid,
    pass timings) when this load compiled. `notes` say what the loader did that the user did
    not spell out (a timing change applied, a recompile).
    """

    path: Path
    kind: str                                  # "dsl", "onnx", "asm" or "object"
    obj: ObjectFile
    dsl: tuple[str, str] | None = None
    compiled: Compiled | None = None
    notes: list[str] = field(default_factory=list)
    # An ONNX model's names: ONNX name -> DSL name (every value the program has); an object
    # compiled from a model keeps them in its meta.
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.names:
            kept = self.obj.meta.get(ONNX_NAMES)
            if isinstance(kept, dict):
                self.names = {k: v for k, v in kept.items() if isinstance(v, str)}

    @cached_property
    def graph(self) -> Graph | None:
        if self.compiled is not None:
            return self.compiled.graph
        if self.dsl is None:
            return None
        from compiler import check_source
        return _embedded(self.path, lambda: check_source(self.dsl[0], self.obj.machine,
                                                         self.dsl[1]))

    @property
    def machine(self) -> Machine:
        return self.obj.machine

    @property
    def inputs(self) -> list[str]:
        return [t.name for t in self.obj.tensors if t.role == "input"]

    @property
    def params(self) -> list[str]:
        """The object's param tensors: read like inputs, kept in SRAM between runs."""
        return [t.name for t in self.obj.tensors if t.role == "param"]

    @property
    def outputs(self) -> list[str]:
        """Output names in the program's order (the DSL's `output` lines), else the object's
        output tensors."""
        named = self.obj.meta.get("outputs")
        if isinstance(named, list) and all(isinstance(n, str) for n in named):
            return list(named)
        return [t.name for t in self.obj.tensors if t.role == "output"]

    @property
    def scalar_outputs(self) -> set[str]:
        names = self.obj.meta.get("scalar_outputs", ())
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()

    @property
    def tolerance(self) -> float | None:
        """The relative `--check` tolerance (compiler.compare), None without a DSL program."""
        if self.graph is None:
            return None
        from compiler.compare import tolerance_of
        return tolerance_of(self.graph)

    def check_host_memory(self, ranks: int = 1) -> None:
        """Refuse, before anything is allocated, a program whose machine the emulator could not
        hold in this host's memory (emulator.state.check_host_memory), naming the file: an
        object brings its own machine. On `ranks` MPI ranks, the largest rank's share
        (emulator.distributed.check_share_memory)."""
        from emulator.state import check_host_memory
        try:
            if ranks > 1:
                from emulator.distributed import check_share_memory
                check_share_memory(self.machine, ranks)
            else:
                check_host_memory(self.machine)
        except D1Error as e:
            raise D1Error(f"{self.path}: {e}") from None

    def input_arrays(self, given: dict[str, np.ndarray], seed: int,
                     params: dict[str, np.ndarray] | None = None, *, checked: bool = True
                     ) -> tuple[dict[str, np.ndarray], list[str]]:
        """The arrays to scatter before a run, and the inputs (and params) left with the
        object's initial SRAM contents.

        Names must be input tensors of the object. A DSL program gets every input: those not
        given are drawn from a standard normal seeded by `seed`, as `compiler.make_inputs`
        does, so the numpy reference sees the same numbers. Params come from `params` (by
        name), else from the object if it embeds them (`d1 compile --params`), else (DSL
        programs) from their declaration's INIT (`compiler.reference.init_params` with seed
        0, what `check` uses): d1.params.starting_params.
        """
        from d1.params import check_params, embedded, embedded_values, starting_params

        for what, value in (("inputs", given), ("params", params)):
            if not isinstance(value, Mapping) and not (what == "params" and value is None):
                raise D1Error(f"input_arrays: {what} must be a mapping of tensor names to "
                              f"arrays, not {type(value).__name__}")
        known = self.inputs
        given = self.dsl_names(given)
        for name in given:
            if name not in known:
                hint = ("; it is a param: start it from --params FILE.npz"
                        if name in self.params else "")
                raise D1Error(f"--input {name}: the program has no input tensor '{name}' "
                              f"(inputs: {', '.join(known) or 'none'}){hint}")
        arrays = dict(given)
        drawn = None if checked else self._drawn_without_graph(seed)
        if drawn is None and self.graph is not None:
            from compiler import make_inputs
            drawn = make_inputs(self.graph, seed)
        if drawn is not None:
            arrays = {name: given.get(name, value) for name, value in drawn.items()}
        if self.graph is not None:
            arrays.update(starting_params(self, params))
        else:
            arrays.update(check_params(self, params or {}))
            arrays.update(embedded_values(self.obj, [n for n in embedded(self.obj)
                                                     if n not in arrays]))
        return arrays, [n for n in known + self.params if n not in arrays]

    def _drawn_without_graph(self, seed: int) -> dict[str, np.ndarray] | None:
        """The inputs `compiler.make_inputs` would draw, from the object's own record of them
        (declaration order in META's "inputs", shape and dtype from its tensors), for a run
        that is not checked: loading a `.d1o` then needs neither the compiler nor a second
        check of the embedded program (0.6-0.9 s of a `d1 run`). None where the graph is
        needed or the record is not that of a DSL program's plain inputs: an object without
        DSL source, params (their INIT is the graph's), or a 0-d input (its layout has one
        element, the graph's value none)."""
        if self.dsl is None or self.params or "graph" in self.__dict__:
            return None
        names = self.obj.meta.get("inputs")
        if not isinstance(names, list) or sorted(names) != sorted(self.inputs):
            return None
        order = [(n, tuple(t.shape), t.dtype) for n in names for t in (self.obj.tensor(n),)]
        if any(shape == (1,) for _, shape, _ in order):
            return None     # a 0-d input or a [1] one: the object cannot tell which
        from d1isa.numbers import draw_inputs
        return draw_inputs(order, seed)

    def dsl_names(self, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`given` keyed by DSL names: an ONNX model's inputs may be named either way (the
        ONNX name, or the sanitised one the program uses), but not both."""
        if not self.names:
            return given
        out: dict[str, np.ndarray] = {}
        said: dict[str, str] = {}
        for name, value in given.items():
            dsl = name if name in self.inputs else self.names.get(name, name)
            if dsl in out:
                raise D1Error(f"--input {name}: input '{dsl}' is given twice (as "
                              f"'{said[dsl]}' and as '{name}')")
            out[dsl] = value
            said[dsl] = name
        return out

    def check(self, inputs: dict[str, np.ndarray], got: dict[str, np.ndarray]
              ) -> list[tuple[str, float, float, float, bool]]:
        """Compare outputs with the numpy reference: (name, max abs err, max rel err,
        tolerance, ok) per output."""
        if self.graph is None:
            raise D1Error(f"--check needs a DSL program (.d1k, or a .d1o compiled from one); "
                          f"{self.path} has no DSL source")
        from compiler import compare_outputs, evaluate
        params = {p.name: inputs[p.name] for p in self.graph.params if p.name in inputs}
        return compare_outputs(self.graph, got, evaluate(self.graph, inputs, params))


def load_program(path: str | Path, machine: Machine | None = None,
                 options: CompileOptions | None = None, kind: str | None = None,
                 shapes: dict[str, tuple[int, ...]] | None = None, report: bool = False
                 ) -> Program:
    """Turn `path` into a `Program` for `machine` (None: no machine options were given).

    `options` (compiler.CompileOptions) apply to DSL programs: a `.d1k`, an ONNX model, or an
    object recompiled from its embedded DSL source. `kind` ("dsl", "onnx", "asm", "object")
    reads the file as that kind whatever its suffix (`d1 compile`, `d1 asm` and `d1 disasm`
    know what they take). `shapes` gives an ONNX model's inputs their shapes (`--shape`),
    which symbolic dimensions need. `report` asks the compiler for its mapping report
    (`Program.compiled.report`; DSL programs and ONNX models only).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise D1Error(f"load_program takes the path of a program file, not "
                      f"{type(path).__name__}" + (": an ObjectFile is already loaded, give it "
                                                  "to Emulator(obj)"
                                                  if isinstance(path, ObjectFile) else ""))
    if machine is not None:
        machine = machine_or_default(machine)
    p = Path(path)
    if not p.exists():
        raise D1Error(f"cannot read {p}: no such file")
    if kind is not None and kind not in KINDS.values():
        raise D1Error(f"unknown program kind {kind!r} (kinds: {', '.join(KINDS.values())})")
    if kind is not None:
        check_suffix(p, kind)
    kind = kind or KINDS.get(p.suffix.lower())
    if shapes and kind != "onnx":
        raise D1Error(f"--shape gives the shapes of an ONNX model's inputs; {p} is not an "
                      ".onnx model")
    if kind == "onnx":
        return _import(p, machine or default_machine(), options, shapes or {}, report)
    raw = None
    if kind is None:
        raw = read_bytes(p, MAX_OBJECT_BYTES, "program")
        if not raw.startswith(MAGIC):
            raise D1Error(f"{p}: unknown kind of program (expected .d1k DSL, .onnx model, "
                          f".d1s assembly or .d1o object)")
        kind = "object"
    refuse_options(p, kind, options)
    if kind == "dsl":
        return _compile(p, read_text(p), str(p), machine or default_machine(), options,
                        report=report)
    if kind == "asm":
        from d1isa.asm import assemble
        obj = assemble(read_text(p), str(p), machine)
        notes = _retime(obj, machine) if machine is not None else []
        return Program(p, "asm", obj, notes=notes)
    obj = ObjectFile.from_bytes(raw, str(p)) if raw is not None else ObjectFile.load(p)
    return _fit_object(p, obj, machine, options)


def refuse_options(p: Path, kind: str | None, options: CompileOptions | None) -> None:
    """-O compiler options are refused for an assembly program, whatever the machine: a
    caller that loads it for many machines (`d1 sweep`) asks once, before any of them."""
    if options is not None and kind == "asm" and not _default_options(options):
        raise D1Error(f"-O compiler options apply to .d1k programs; {p} is not one")


def _compile(p: Path, text: str, filename: str, machine: Machine,
             options: CompileOptions | None, notes: list[str] | None = None,
             report: bool = False) -> Program:
    from compiler.pipeline import compile_text
    result = compile_text(text, machine, filename, options, report=report)
    return Program(p, "dsl", result.obj, dsl=(text, filename), compiled=result,
                   notes=[*(notes or []), *result.notes])


def check_suffix(p: Path, kind: str) -> None:
    """A command that reads its file as one kind whatever the suffix (`d1 compile`, `d1 asm`,
    `d1 disasm`, `d1 import`) refuses a file whose suffix names another kind, rather than
    reporting, say, DSL syntax errors in assembly."""
    named = KINDS.get(p.suffix.lower())
    if named is not None and named != kind:
        what, commands = _KIND_TEXT[named]
        raise D1Error(f"{p} is {what} ({p.suffix}), not {_KIND_TEXT[kind][0]}; {commands} "
                      f"take{'s' if ' and ' not in commands else ''} it")


def imported_source(p: Path, shapes: dict[str, tuple[int, ...]] | None = None
                    ) -> tuple[Any, str]:
    """(compiler.onnx_import.Imported, the file name its DSL text goes by) of the model `p`:
    `MODEL.onnx[MODEL.d1k]`, as an object's embedded source is named, since no such file
    exists."""
    from compiler.onnx_import import import_file
    check_suffix(p, "onnx")
    return import_file(p, shapes), f"{p}[{p.stem}.d1k]"


def _import(p: Path, machine: Machine, options: CompileOptions | None,
            shapes: dict[str, tuple[int, ...]], report: bool = False) -> Program:
    """An ONNX model: imported, compiled, its params' values embedded in the object."""
    from d1.params import embed_params

    imported, filename = imported_source(p, shapes)
    prog = _compile(p, imported.text, filename, machine, options, imported.notes,
                    report=report)
    if imported.params:
        embed_params(prog.obj, imported.params)
    prog.kind = "onnx"
    prog.names = dict(imported.names)
    prog.obj.meta[ONNX_NAMES] = prog.names
    return prog


def _fit_object(p: Path, obj: ObjectFile, machine: Machine | None,
                options: CompileOptions | None) -> Program:
    """The object for the requested machine: as it is, with new timing, or rebuilt from its
    embedded source."""
    dsl = embedded_dsl(obj)
    if options is not None and not _default_options(options) and dsl is None:
        raise D1Error(f"-O compiler options apply to DSL programs; {p} holds no DSL source")
    if machine is None and (options is None or _default_options(options)):
        return Program(p, "object", obj, dsl=dsl)
    machine = machine or obj.machine
    differ = _differing(obj.machine, machine)
    # Compiled-in timing (link width, FIFO depth) shapes what the DSL compiler emits; hand-
    # written assembly does not depend on it, so only structure forces a rebuild there.
    by_compiler = obj.meta.get("producer") == DSL_PRODUCER
    code = [q.key for q in differ if (q.changes_code if by_compiler else q.structural)]
    recompile = bool(code) or (options is not None and not _default_options(options)
                               and _options_of(obj) != options)
    if not recompile:
        return Program(p, "object", obj, dsl=dsl, notes=_retime(obj, machine))
    why = (f"{', '.join(code)} change{'s' if len(code) == 1 else ''} code generation"
           if code else "other compiler options were requested")
    if dsl is not None:
        note = (f"recompiled {p} from its embedded DSL source ({dsl[1]}) for machine "
                f"'{machine.name}': {why}")
        prog = _embedded(p, lambda: _compile(p, dsl[0], dsl[1], machine,
                                             options or _options_of(obj), [note]))
        from d1.params import embed_params, embedded, embedded_values
        kept = embedded(obj)
        if kept:      # the params' values the object held go into the rebuilt one
            embed_params(prog.obj, embedded_values(obj, kept))
        if isinstance(obj.meta.get(ONNX_NAMES), dict):
            prog.obj.meta[ONNX_NAMES] = obj.meta[ONNX_NAMES]
            prog.names = dict(obj.meta[ONNX_NAMES])
        return prog
    asm = embedded_assembly(obj)
    if asm is not None:
        from d1isa.asm import assemble
        rebuilt = _embedded(p, lambda: assemble(asm[0], asm[1], machine))
        return Program(p, "asm", rebuilt, notes=[
            f"re-assembled {p} from its embedded assembly source ({asm[1]}) for machine "
            f"'{machine.name}': {why}", *_retime(rebuilt, machine)])
    raise D1Error(
        f"{p} was built for machine '{obj.machine.name}'; the requested machine differs in "
        f"{', '.join(code)}, which change{'s' if len(code) == 1 else ''} code generation, so "
        "the program must be recompiled, and this object holds no source to recompile from: "
        "rebuild it from its source for that machine (timing parameters such as latencies, "
        "the clock and instruction costs may differ freely)")


def from_object(obj: ObjectFile, machine: Machine | None = None,
                options: CompileOptions | None = None, name: str = "<object>") -> Program:
    """A `Program` of an object already in memory, fitted to `machine` as `load_program`
    fits a `.d1o` (`name` stands for its path in messages)."""
    return _fit_object(Path(name), obj, machine, options)


def _embedded(p: Path, build: Any) -> Any:
    """Run `build` on a source embedded in the object `p`: its errors are reported against
    the object (as OBJECT[SOURCE NAME]:LINE:COL), since the file the name points to may not
    exist or may differ from what the object holds."""
    try:
        return build()
    except SourceError as e:
        raise SourceError([dataclasses.replace(d, file=f"{p}[{d.file}]")
                           for d in e.diagnostics]) from None


def _differing(have: Machine, want: Machine) -> list[Any]:
    """The parameters (d1isa.machine.Param) whose values differ, names and descriptions
    aside."""
    a, b = have.to_dict(), want.to_dict()
    return [q for q in PARAMS if q.key not in _LABELS and a[q.key] != b[q.key]]


def _retime(obj: ObjectFile, machine: Machine) -> list[str]:
    """Give `obj` the requested machine's timing (its code-generating parameters are already
    equal: the assembler rejects a structural mismatch, the object path recompiles); a note
    when anything changed."""
    differ = [q.key for q in _differing(obj.machine, machine)]
    obj.machine = machine
    if not differ:
        return []
    them = "it" if len(differ) == 1 else "them"
    return [f"applying the requested timing to the object: {', '.join(differ)} (timing only; "
            f"the code does not depend on {them})"]


def embedded_dsl(obj: ObjectFile) -> tuple[str, str] | None:
    """(text, file name) of the DSL program an object was compiled from, if it embeds it."""
    if obj.meta.get("producer") != DSL_PRODUCER:
        return None
    name = obj.meta.get("source")
    text = obj.sources.get(name) if isinstance(name, str) else None
    return (text, name) if isinstance(text, str) else None


def embedded_assembly(obj: ObjectFile) -> tuple[str, str] | None:
    """(text, file name) of the single assembly file an assembled object embeds, if any."""
    if obj.meta.get("producer") != ASM_PRODUCER or len(obj.files) != 1:
        return None
    name = obj.files[0]
    text = obj.sources.get(name)
    return (text, name) if isinstance(text, str) else None


def _options_of(obj: ObjectFile) -> CompileOptions | None:
    from compiler.pipeline import CompileOptions
    recorded = obj.meta.get("options")
    if not isinstance(recorded, dict):
        return None
    known = set(CompileOptions.__dataclass_fields__)
    try:
        return CompileOptions(**{k: v for k, v in recorded.items() if k in known})
    except (D1Error, TypeError):
        return None


def _default_options(options: Any) -> bool:
    from compiler.pipeline import CompileOptions
    return options == CompileOptions()
