"""ONNX's own backend node tests (onnx.backend.test.case.node) run through d1.

Each case is one small model with its inputs and expected outputs. `suite()` sorts every case
before anything runs:

* out of scope: a node whose operator d1 has no converter for at the case's opset (even if
  the import could evaluate it on constants), or no model at all;
* skipped, with a reason: a float input or output that is not float32 (or bfloat16, which a
  Cast case feeds) with 1 to 4 dimensions, an attribute outside the documented subset (the
  import's "subset" failures), or a newer language form this build's DSL does not have yet
  (`available_features`, which compiles a probe program per form);
* run: everything else, which must pass at rtol 1e-3, atol 1e-6.

Integer and bool graph inputs (shapes, axes, starts and ends, conditions) and 0-d float
inputs (Clip's bounds) become initializers holding the case's own values: ONNX's runner allows
it, it is what an exported model looks like, and the DSL has neither integer nor 0-d inputs.

`run_case` writes the model to a file and runs it the way `d1 run MODEL.onnx` does, in this
process: `d1.program.load_program` (import, compile, params embedded), `Program.input_arrays`
with the ONNX input names, then the emulator on the 4x4 mesh.

    python tests/onnxkit.py           # run every case, rewrite the suite section of docs/ONNX.md

tests/test_onnx_suite.py runs the same cases one test each, and checks that docs/ONNX.md lists
the skips this build has.
"""

from __future__ import annotations

import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "ONNX.md"
BEGIN = "<!-- onnx-suite:begin (written by tests/onnxkit.py) -->"
END = "<!-- onnx-suite:end -->"
OPS_BEGIN = "<!-- onnx-ops:begin (written by tests/onnxkit.py) -->"
OPS_END = "<!-- onnx-ops:end -->"
MACHINE = "m4x4"
RTOL, ATOL = 1e-3, 1e-6

# One small program per newer language form (compiler.onnx_import.expr.FEATURES): the form is
# there when its program compiles for the suite's mesh.
PROBES = {
    "compare": "input x: f32[4]\ny = x > x\noutput y",
    "where": "input x: f32[4]\ny = where(x, x, x)\noutput y",
    "pow": "input x: f32[4]\ny = x ** x\noutput y",
    "erf": "input x: f32[4]\ny = erf(x)\noutput y",
    "gelu": "input x: f32[4]\ny = gelu(x)\noutput y",
    "min_reduce": "input x: f32[4, 4]\ny = min(x, axis=0)\noutput y",
    "argmax": "input x: f32[4, 4]\ny = argmax(x, axis=0)\noutput y",
    "layernorm": "input x: f32[4, 4]\ny = layernorm(x, axis=-1, eps=1e-5)\noutput y",
    "reshape": "input x: f32[4, 4]\ny = reshape(x, [2, 8])\noutput y",
    "concat": "input x: f32[4, 4]\ny = concat(x, x, axis=0)\noutput y",
    "slice": "input x: f32[4, 4]\ny = x[0:2, 1:4:2]\noutput y",
    "transpose_perm": "input x: f32[2, 3, 4]\ny = transpose(x, [2, 0, 1])\noutput y",
    "batched_matmul": "input x: f32[2, 4, 4]\ny = x @ x\noutput y",
    "conv2d": "input x: f32[1, 2, 5, 5]\ninput w: f32[3, 2, 3, 3]\n"
              "y = conv2d(x, w, stride=1, pad=1, dilation=1)\noutput y",
    "maxpool2d": "input x: f32[1, 2, 4, 4]\ny = maxpool2d(x, size=2, stride=2)\noutput y",
    "avgpool2d": "input x: f32[1, 2, 4, 4]\ny = avgpool2d(x, size=2, stride=2)\noutput y",
}


@cache
def machine():
    from d1isa.machine import load_machine
    return load_machine(MACHINE)


@cache
def available_features() -> frozenset[str]:
    """The newer language forms this build compiles (each probe program compiles)."""
    from compiler.pipeline import compile_text
    from d1isa.errors import D1Error

    have = set()
    for feature, text in PROBES.items():
        try:
            compile_text(text, machine(), f"<probe {feature}>", assemble_object=False)
        except D1Error:
            continue
        have.add(feature)
    return frozenset(have)


@dataclass
class Case:
    name: str
    status: str                          # "run", "skip" or "out"
    reason: str = ""
    model: object = None                 # the prepared ModelProto
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)      # by ONNX name
    expected: list[dict[str, np.ndarray]] = field(default_factory=list)   # by ONNX name
    ops: tuple[str, ...] = ()
    imported: object = None              # compiler.onnx_import.Imported, if it imported


def _array(x: object) -> np.ndarray | None:
    """A case's tensor as numpy; None for a sequence, a map or an optional."""
    from onnx import TensorProto, numpy_helper
    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    return np.asarray(x) if isinstance(x, np.ndarray | np.generic) else None


def _floatish(a: np.ndarray) -> bool:
    return a.dtype == np.float32 or a.dtype.name == "bfloat16"


def prepare(tc: object) -> Case:
    """Sort one onnx TestCase (see the module docstring) and prepare what running it needs."""
    import onnx
    from onnx import numpy_helper

    from compiler.onnx_import import ImportFailure, import_model
    from compiler.onnx_import.registry import lookup

    name = tc.name
    if tc.model is None or not tc.data_sets:
        return Case(name, "out", "no model")
    model = onnx.ModelProto()
    model.CopyFrom(tc.model)
    ops = tuple(sorted({n.op_type for n in model.graph.node}))
    opset = next((int(i.version) for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    others = sorted({n.op_type for n in model.graph.node
                     if n.domain not in ("", "ai.onnx") or lookup(n.op_type, opset) is None})
    if others:
        return Case(name, "out", f"{', '.join(others)} at opset {opset}", ops=ops)
    g = model.graph
    feeds_all, expected_all = [], []
    for inputs, outputs in tc.data_sets:
        inputs = [_array(a) for a in inputs]
        outputs = [_array(a) for a in outputs]
        if any(a is None for a in inputs + outputs):
            return Case(name, "out", "sequence, map or optional values", ops=ops)
        feeds, expected = {}, {}
        for vi, a in zip(g.input, inputs, strict=False):
            feeds[vi.name] = a
        for vi, a in zip(g.output, outputs, strict=False):
            expected[vi.name] = a
        feeds_all.append(feeds)
        expected_all.append(expected)
    first = feeds_all[0]
    # integer and bool inputs, and 0-d float ones, become initializers (the case's values)
    constant = [vi.name for vi in g.input if vi.name in first
                and (first[vi.name].dtype.kind in "iub" or first[vi.name].ndim == 0)]
    if constant and len(feeds_all) > 1:
        return Case(name, "skip", "several data sets with constant inputs", ops=ops)
    kept = [vi for vi in g.input if vi.name not in constant]
    del g.input[:]
    g.input.extend(kept)
    for n in constant:
        g.initializer.append(numpy_helper.from_array(first[n], n))
    for feeds in feeds_all:
        for n in constant:
            feeds.pop(n, None)
    case = Case(name, "run", model=model, feeds=feeds_all, expected=expected_all, ops=ops)
    if not kept:
        return _skip(case, "every input is a constant (nothing would run on the mesh)")
    failure = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imported = import_model(model, f"{name}.onnx")
    except ImportFailure as e:
        if "operator" in e.kinds:        # checked first: the case is not one of ours
            case.status, case.reason = "out", "; ".join(
                m.split(": ", 1)[1] for m, k in zip(e.messages, e.kinds, strict=True)
                if k == "operator")
            return case
        failure = e
    for n, a in first.items():
        if n in constant:
            continue
        if not _floatish(a) or not 1 <= a.ndim <= 4:
            what = f"{a.ndim}-D" if _floatish(a) else str(a.dtype)
            return _skip(case, f"input '{n}' is {what}")
        if a.size == 0:
            return _skip(case, f"input '{n}' is empty")
    for n, a in expected_all[0].items():
        if not (_floatish(a) or a.dtype == np.bool_) or a.ndim > 4:
            what = f"{a.ndim}-D" if a.ndim > 4 else str(a.dtype)
            return _skip(case, f"output '{n}' is {what}")
        if a.size == 0:
            return _skip(case, f"output '{n}' is empty")
    if failure is not None:
        if all(k == "subset" for k in failure.kinds):
            return _skip(case, "; ".join(m.split(": ", 1)[1] for m in failure.messages))
        case.reason = "import failed: " + "; ".join(failure.messages)
        return case                       # runs, and fails with this reason
    case.imported = imported
    missing = sorted(imported.features - available_features())
    if missing:
        return _skip(case, "needs DSL forms this build does not have yet: "
                     + ", ".join(missing))
    return case


def _skip(case: Case, reason: str) -> Case:
    case.status, case.reason = "skip", reason
    return case


@cache
def suite() -> dict[str, Case]:
    """Every node test case of the installed onnx, sorted, by name."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return {tc.name: prepare(tc) for tc in sorted(cases, key=lambda c: c.name)}


def run_case(case: Case, workdir: Path) -> list[str]:
    """Run a case as `d1 run MODEL.onnx --mesh 4x4` does; the problems found (none: passed)."""
    from d1.program import load_program
    from emulator import Emulator

    if case.reason:
        return [case.reason]
    path = workdir / f"{case.name}.onnx"
    path.write_bytes(case.model.SerializeToString())
    prog = load_program(path, machine())
    problems = []
    for feeds, expected in zip(case.feeds, case.expected, strict=True):
        given = {n: np.asarray(a, dtype=np.float32) for n, a in feeds.items()}
        arrays, _ = prog.input_arrays(given, seed=0)
        emu = Emulator(prog.obj, threads=1)
        for n, a in arrays.items():
            emu.set_input(n, a)
        result = emu.run()
        if not result.ok:
            return [f"run {result.status}: {result.report()}"]
        for onnx_name, want in expected.items():
            got = emu.output(prog.names[onnx_name])     # a 0-d output comes back 0-d
            problems += compare(onnx_name, got, want)
    return problems


def run_text_case(case: Case) -> list[str]:
    """Check the imported text of a case with the numpy reading of the DSL (tests/dsl_numpy),
    whichever forms this build compiles; the problems found (none: it matches)."""
    from dsl_numpy import run_text

    imp = case.imported
    assert imp is not None
    problems = []
    for feeds, expected in zip(case.feeds, case.expected, strict=True):
        got = run_text(imp.text, {imp.names[n]: a.astype(np.float32) for n, a in feeds.items()},
                       imp.params)
        for onnx_name, want in expected.items():
            problems += compare(onnx_name, got[imp.names[onnx_name]], want)
    return problems


def compare(name: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    """[] if `got` matches `want` at the suite's tolerance, else what differs."""
    want = np.asarray(want, dtype=np.float32)
    if got.shape != want.shape:
        return [f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"]
    if np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True):
        return []
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - want)
        err[np.isnan(got) & np.isnan(want)] = 0
        worst = int(np.argmax(np.where(np.isnan(err), np.inf, err)))
    return [f"{name}: differs beyond rtol {RTOL} atol {ATOL}: at "
            f"{tuple(int(i) for i in np.unravel_index(worst, want.shape))} got "
            f"{got.reshape(-1)[worst]!r}, expected {want.reshape(-1)[worst]!r}"]


def report(results: dict[str, list[str]] | None = None) -> str:
    """The suite section of docs/ONNX.md: counts, then every skip with its reason (and, from
    a full run, every failure)."""
    cases = suite()
    run = [c for c in cases.values() if c.status == "run"]
    skipped = [c for c in cases.values() if c.status == "skip"]
    out = [c for c in cases.values() if c.status == "out"]
    failed = {n: p for n, p in (results or {}).items() if p}
    passed = len(run) - len(failed) if results is not None else None
    import onnx
    version = ".".join(onnx.__version__.split(".")[:2])
    lines = [BEGIN, "",
             f"With onnx {version} ({len(cases)} node test cases): "
             f"**{len(run)} run"
             + (f", {passed} pass" if passed is not None else "") + f"**, {len(skipped)} are "
             f"skipped (listed below with the reason), and {len(out)} are cases of operators "
             "d1 does not convert.", ""]
    if failed:
        lines += ["Failing:", ""] + [f"- `{n}`: {'; '.join(p)}" for n, p in failed.items()]
        lines.append("")
    lines += ["| skipped case | reason |", "|---|---|"]
    lines += [f"| `{c.name}` | {c.reason.replace('|', '/')} |" for c in skipped]
    lines += ["", END]
    return "\n".join(lines)


def operator_table() -> str:
    """The operator section of docs/ONNX.md, from the converters' registrations and
    docstrings (compiler.onnx_import.registry.operator_table)."""
    from compiler.onnx_import.registry import operator_table as rows

    lines = [OPS_BEGIN, "", "| operator | opsets (a converter from each) | becomes |",
             "|---|---|---|"]
    for op, versions, text in rows():
        lines.append(f"| {op} | {', '.join(map(str, versions))} | {text.replace('|', '/')} |")
    lines += ["", OPS_END]
    return "\n".join(lines)


def doc_section(text: str, begin: str = BEGIN, end: str = END) -> str | None:
    m = re.search(re.escape(begin) + r".*?" + re.escape(end), text, re.S)
    return m.group(0) if m else None


def write_doc(results: dict[str, list[str]]) -> None:
    text = DOC.read_text(encoding="utf-8")
    for begin, end, new in ((BEGIN, END, report(results)),
                            (OPS_BEGIN, OPS_END, operator_table())):
        section = doc_section(text, begin, end)
        if section is None:
            raise SystemExit(f"{DOC} has no section {begin} ... {end}")
        text = text.replace(section, new)
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    import tempfile

    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in suite().items():
            if case.status != "run":
                continue
            try:
                results[name] = run_case(case, Path(tmp))
            except Exception as e:  # report it as the case's failure, keep going
                results[name] = [f"{type(e).__name__}: {e}"]
            if results[name]:
                print(f"FAILED {name}: {'; '.join(results[name])}", file=sys.stderr)
    write_doc(results)
    n = sum(1 for p in results.values() if not p)
    print(f"{n} of {len(results)} run cases pass ({time.perf_counter() - t0:.0f} s); "
          f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
