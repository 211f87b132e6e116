"""`tensor NAME` sees every named value of a compiled program, and only while its bytes hold it.

The compiler records every named value (inputs, params, each `NAME = EXPR`, gradients bound to
a name, each `grad(L, p)` call by its spelling) with its layout and live span (compiler.debuginfo,
format in d1isa.debuginfo); the debugger tests each holding node's pc against it
(emulator.debugger.values). Here on a 4x4 mesh: a live value equals the numpy reference
(compiler.reference.evaluate_nodes) at every stop of a run, a value before its step is "not
computed yet", one whose buffer was reused is "overwritten at T=... (cycle ...)", a gradient
is found by its name and by `grad(...)`, and malformed records are refused like any other
damage to an object.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import compiler
from compiler.ir import Op
from compiler.reference import evaluate_nodes
from d1.cli import cli
from d1.program import load_program
from d1isa import debuginfo, isa
from d1isa.asm import assemble_file
from d1isa.errors import D1Error, ObjectFormatError
from d1isa.machine import load_machine
from emulator.debugger import Debugger

ROOT = Path(__file__).resolve().parent.parent
M4 = load_machine(mesh="4x4")
M4_CHIPS = load_machine(mesh="4x4", chips="2x2")      # a training program runs data-parallel

# A small training step: p is fused into d's kernel, `unused` is never computed, the gradient
# of w is bound to a name and that of b is not.
TINY = """\
input x: f32[32, 16]
input y: f32[32, 4]
param w: f32[16, 4]
param b: f32[4] = 0
p = x @ w + b
d = p - y
loss = mean(sum(d * d, axis=1))
gw = grad(loss, w)
unused = exp(d)
update w = w - 0.1 * gw
update b = b - 0.1 * grad(loss, b)
output loss
"""


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("values") / "tiny.d1k"
    path.write_text(TINY)
    return path


def session(path: Path | str, machine=M4) -> tuple[Debugger, dict[str, np.ndarray]]:
    """A debugger on the program as `d1 debug` loads it, and the reference value of every
    named value and grad call (by the names the debugger knows)."""
    prog = load_program(path, machine)
    arrays, _ = prog.input_arrays({}, 0)
    dbg = Debugger(prog.obj, inputs=arrays)
    params = {p.name: arrays[p.name] for p in prog.graph.params}
    graph, values = evaluate_nodes(prog.graph, arrays, params)
    ref = {n.name: values[n.id] for n in graph.nodes}
    at = {(line, col): values[n.id] for line, col, n in graph.grad_calls}
    for v in dbg.debug_info.values:
        if v.name not in ref:
            ref[v.name] = at[(v.line, v.col)]
    return dbg, ref


def matches(graph, got: np.ndarray, want: np.ndarray, name: str) -> bool:
    return compiler.compare_outputs(graph, {name: got}, {name: want})[0][-1]


def test_every_named_value_is_recorded(tiny):
    obj = compiler.compile_file(tiny, M4)
    info = debuginfo.read(obj)
    kinds = {v.name: (v.kind, v.aliases) for v in info.values}
    assert kinds == {"x": ("input", ()), "y": ("input", ()), "w": ("param", ()),
                     "b": ("param", ()), "p": ("value", ()), "d": ("value", ()),
                     "loss": ("output", ()), "gw": ("grad", ("grad(loss, w)",)),
                     "unused": ("value", ()), "grad(loss, b)": ("grad", ())}
    assert info.steps == len(obj.meta["regions"])
    by = {v.name: v for v in info.values}
    assert not by["p"].stores and "fused into the elementwise kernel of 'd' (line 6)" in \
        by["p"].note
    assert not by["unused"].stores and "never computed" in by["unused"].note
    assert (by["x"].stores[0].first, by["w"].stores[0].first) == (-1, -1)
    assert by["loss"].stores[0].until == info.steps            # an output lives to the end
    assert by["grad(loss, b)"].line == 11                        # where the call is
    assert info.find("grad( loss,w )") is by["gw"] and info.find("nope") is None
    # every node with code has a step table ending at its halt
    for n, pcs in enumerate(info.node_pcs):
        blk = obj.block_of(n)
        assert (pcs is None) == (blk is None)
        if pcs is not None:
            assert isa.decode(int(blk.words[pcs[-1]]))[0].mnemonic == "halt"


@pytest.mark.parametrize("path", sorted((ROOT / "programs").glob("*.d1k")), ids=lambda p: p.name)
def test_no_step_branches_into_another(path):
    """What makes a pc tell how far a node is: every branch stays inside its own step."""
    obj = compiler.compile_file(path, M4)
    info = debuginfo.read(obj)
    for n, pcs in enumerate(info.node_pcs):
        if pcs is None:
            continue
        words = obj.block_of(n).words
        for k in range(info.steps):
            for pc in range(pcs[k], pcs[k + 1]):
                ins, f = isa.decode(int(words[pc]))
                assert ins.mnemonic != "jalr", "compiled code has no indirect jumps"
                if "off" in f:
                    assert pcs[k] <= pc + f["off"] < pcs[k + 1], (n, k, pc)


@pytest.mark.parametrize("name", ["tiny", "programs/train_digits.d1k", "programs/softmax.d1k",
                                  "programs/train_digits.d1k --chips 2x2"])
def test_a_value_is_shown_exactly_while_it_is_live(name, tiny):
    """At every stop of a run cut into small pieces, every value that is shown equals the
    reference; each goes from "not computed yet" to live, and those whose buffers are reused
    end "overwritten". On 2 x 2 chips the training step runs data-parallel: the values shown
    are still the program's (global) ones, never a chip's share or partial sum."""
    name, _, chips = name.partition(" --chips ")
    machine = M4_CHIPS if chips else M4
    dbg, ref = session(tiny if name == "tiny" else name, machine)
    graph = load_program(tiny if name == "tiny" else name, machine).graph
    seen: dict[str, list[str]] = {}
    stop = None
    while True:
        for v in dbg.debug_info.values:
            tv = dbg.value(v.name)
            if not seen.get(v.name) or seen[v.name][-1] != tv.state:
                seen.setdefault(v.name, []).append(tv.state)
            if tv.array is not None:
                want = np.asarray(ref[v.name], dtype=np.float32).reshape(v.shape)
                assert matches(graph, tv.array, want, v.name), (v.name, dbg.position)
        if stop is not None and stop.reason != "step":
            break
        stop = dbg.stepi(37, all_nodes=True)
    assert stop.reason == "halted"
    for v in dbg.debug_info.values:
        states = seen[v.name]
        if not v.stores:
            assert states == ["not stored"]
        elif v.kind in ("input", "param"):     # written before the start; maybe reused soon
            assert states in (["live"], ["live", "overwritten"], ["overwritten"]), \
                (v.name, states)
        else:
            assert states[0] == "not computed yet" and "live" in states, (v.name, states)
        assert states.count("live") <= 1, (v.name, states)       # never shown again after
    if chips:
        assert dbg.obj.meta["parallel"]["mode"] == "data"
        assert seen["g1"][-1] == seen["loss"][-1] == "live"
    if name == "tiny":
        assert seen["d"] == ["not computed yet", "live", "overwritten"]
        assert seen["w"] == ["live", "overwritten"]               # its update is written in
        assert seen["gw"][-1] == seen["grad(loss, b)"][-1] == "live"


@pytest.mark.parametrize("machine", [M4, M4_CHIPS], ids=["4x4", "chips2x2"])
def test_a_name_bound_to_a_constant_says_what_it_is(tmp_path, machine):
    # `lr = 0.1 / 2` is folded into the code that reads it and is no IR node: the record
    # left it out, and `tensor lr` said there was no value named 'lr'
    path = tmp_path / "lr.d1k"
    path.write_text(TINY.replace("update w = w - 0.1 * gw", "lr = 0.1 / 2\nupdate w = w - lr * gw"))
    dbg = Debugger(load_program(path, machine).obj)
    v = dbg.value("lr")
    assert (v.kind, v.dtype, v.shape, v.line, v.state) == ("value", "f32", (), 10, "not stored")
    assert v.detail == "not stored: a constant (0.05), folded into the code that reads it"


def test_tensor_in_d1_debug(tiny):
    args = ["debug", str(tiny), "--mesh", "4x4", "--batch"]
    for c in ("tensor gw", "tensor p", "tensor unused", "continue", "tensor gw",
              "tensor grad(loss, w)", "tensor grad( loss,b )", "tensor d", "tensor w",
              "tensor d", "tensor loss", "tensor nope"):
        args += ["-ex", c]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    r: dict[str, list[list[str]]] = {}
    cur = None
    for line in res.output.splitlines():
        if line.startswith("(d1) "):
            cur = line[5:]
            r.setdefault(cur, []).append([])
        elif cur is not None:
            r[cur][-1].append(line)
    assert r["tensor gw"][0] == [
        "gw: grad f32[16, 4] in 2 pieces, line 8",
        "not computed yet: line 8 (matmul[summa]), which computes it, has not finished on 2 "
        "of the 2 nodes holding it (first: node (0,0))"]
    assert r["tensor p"][0][1] == ("not stored: fused into the elementwise kernel of 'd' "
                                   "(line 6), which computes it in registers")
    assert r["tensor unused"][0][1].startswith("not stored: nothing the program outputs")
    assert r["continue"][0][0].startswith("Program finished at T=")
    dbg, ref = session(tiny)
    dbg.cont()
    graph = load_program(tiny, M4).graph
    # a gradient by its name and by its spelling: the same header, the same elements
    assert r["tensor gw"][1][0] == r["tensor grad(loss, w)"][0][0] == \
        "gw: grad f32[16, 4] in 2 pieces, line 8"
    assert r["tensor gw"][1][1:] == r["tensor grad(loss, w)"][0][1:]
    assert matches(graph, dbg.tensor("grad(loss, w)"), ref["gw"], "gw")
    assert r["tensor grad( loss,b )"][0][0] == "grad(loss, b): grad f32[4] in 1 piece, line 11"
    got = np.array([float(x) for x in re.findall(r"-?\d+\.\d*", r["tensor grad( loss,b )"][0][1])])
    assert np.allclose(got, ref["grad(loss, b)"], atol=1e-4)
    overwritten = re.compile(r"overwritten at T=([\d,]+) \(cycle ([\d,]+)\): node \(\d,\d\) "
                             r"began line 8 \(.*\), which reuses its buffer")
    first = overwritten.fullmatch(r["tensor d"][0][1])
    assert first, r["tensor d"]
    assert r["tensor d"][1] == r["tensor d"][0]                  # asked again: the same answer
    assert re.fullmatch(r"overwritten at T=[\d,]+ \(cycle [\d,]+\): node \(\d,\d\) began line "
                        r"10 \(elementwise\(mul sub\)\), which writes the param's update into "
                        r"its buffer", r["tensor w"][0][1]), r["tensor w"]
    assert float(r["tensor loss"][0][1]) == pytest.approx(float(ref["loss"]), rel=1e-4)
    assert r["tensor nope"][0][0].startswith("error: no value named 'nope' in this object "
                                             "(values: x, y, w, b, ")
    # The overwrite's time is exact: just before it the value is live, at it overwritten.
    t = int(first.group(1).replace(",", ""))
    cycle = int(first.group(2).replace(",", ""))
    v = dbg.value("d")
    assert v.overwritten_at[:2] == (t, cycle)
    node = v.overwritten_at[2]
    dbg.restart()
    info = dbg.debug_info
    pc = info.node_pcs[node][next(s.until for s in info.find("d").stores)]
    dbg.break_at(f"*{pc}", node=node)
    stop = dbg.cont()
    assert stop.reason == "breakpoint" and int(dbg.emu.state.clock[node]) == cycle
    assert dbg.value("d").state == "live"
    dbg.delete()
    dbg.stepi(1)
    assert dbg.value("d").state == "overwritten"


def test_the_python_api(tiny):
    dbg, ref = session(tiny)
    with pytest.raises(D1Error, match="gw: not computed yet"):
        dbg.tensor("gw")
    assert np.array_equal(dbg.tensor("x"), ref["x"])
    dbg.cont()
    with pytest.raises(D1Error, match=r"x: overwritten at T="):
        dbg.tensor("x")
    assert dbg.value("p").state == "not stored"


def test_assembly_programs_and_older_objects_show_their_tensors(tmp_path):
    obj = assemble_file(ROOT / "programs" / "asm" / "vadd.d1s", M4)
    assert debuginfo.read(obj) is None
    dbg = Debugger(obj)
    dbg.cont()
    assert dbg.value("c").state == "live"
    # A compiled object from before the record: the same object without it still loads and
    # debugs, and `tensor` shows the object's tensors as they are now.
    old = compiler.compile_source(TINY, M4, "tiny.d1k")
    del old.meta["values"]
    again = type(old).from_bytes(old.to_bytes())
    dbg = Debugger(again)
    dbg.cont()
    assert dbg.value("loss").state == "live" and dbg.value("loss").kind == "output"
    with pytest.raises(D1Error, match="no value named 'gw'"):
        dbg.value("gw")


def test_emit_asm_carries_the_record():
    text = (ROOT / "programs" / "train_linear.d1k").read_text()
    obj = compiler.compile_source(text, M4, "train_linear.d1k")
    from d1isa.asm import assemble
    asm = compiler.emit_stage(text, "asm", M4, "train_linear.d1k")
    assert assemble(asm, "train_linear.d1s", M4).to_bytes() == obj.to_bytes()
    assert debuginfo.read(obj) == debuginfo.read(type(obj).from_bytes(obj.to_bytes()))


def _pack(obj) -> bytes:
    """The object's bytes without validating it first (to_bytes would refuse the damage)."""
    from d1isa.objfile import ObjectFile
    validate = ObjectFile.validate
    try:
        ObjectFile.validate = lambda self: None
        return obj.to_bytes()
    finally:
        ObjectFile.validate = validate


def _named(rec: dict, name: str) -> dict:
    return next(v for v in rec["named"] if v["name"] == name)


def _do(fn):
    """An edit of the record in place (the record itself is the result)."""
    def edit(rec: dict) -> dict:
        fn(rec)
        return rec
    return edit


def _store(name: str):
    return lambda r: _named(r, name)["stores"][0]


DAMAGE = {
    "a list": (lambda r: [], "'values' must be a table"),
    "a missing field": (_do(lambda r: r.pop("node_steps")), "required field"),
    "steps of another program": (_do(lambda r: r.update(steps=3)), "META regions has"),
    "a short step table": (_do(lambda r: r["step_pcs"][0].pop()), "not steps + 1"),
    "a decreasing step table": (_do(lambda r: r["step_pcs"][0].__setitem__(0, 10 ** 6)),
                                "decrease"),
    "a step table past the code": (_do(lambda r: r["step_pcs"][0].__setitem__(-1, 10 ** 6)),
                                   "past its code"),
    "node_steps too short": (_do(lambda r: r["node_steps"].pop()), "live nodes"),
    "a name twice": (_do(lambda r: _named(r, "d").update(name="x")), "described twice"),
    "an alias taken": (_do(lambda r: _named(r, "gw")["aliases"].append("x")),
                       "described twice"),
    "a bad kind": (_do(lambda r: _named(r, "d").update(kind="weights")), "unknown kind"),
    "a bad dtype": (_do(lambda r: _named(r, "d").update(dtype="f64")), "unknown dtype"),
    "until before from": (_do(lambda r: _store("d")(r).update(until=0)), "until"),
    "a piece past SRAM": (_do(lambda r: _store("d")(r)["pieces"][0]
                              .__setitem__(1, M4.sram_bytes - 8)), "past the end of SRAM"),
    "an uncovered value": (_do(lambda r: _store("d")(r)["pieces"].pop()), "fewer than"),
    "a note with a NUL": (_do(lambda r: _named(r, "p").update(note="a\x00b")), "printable"),
    "a string for pieces": (_do(lambda r: _store("d")(r).update(pieces="all")),
                            "pieces must be a list"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_malformed_record_is_refused_with_a_clear_error(case):
    edit, words = DAMAGE[case]
    obj = compiler.compile_source(TINY, M4, "tiny.d1k")
    rec = json.loads(json.dumps(obj.meta["values"]))
    obj.meta["values"] = edit(rec)
    with pytest.raises(ObjectFormatError) as e:
        type(obj).from_bytes(_pack(obj), "damaged.d1o")
    assert str(e.value).startswith("damaged.d1o: META field 'values'"), str(e.value)
    assert words in str(e.value), str(e.value)


def test_params_and_grads_have_the_ir_positions():
    graph = compiler.differentiate(compiler.check_source(TINY, M4))
    calls = {(line, col): n for line, col, n in graph.grad_calls}
    assert set(calls) == {(8, 6), (11, 22)}
    assert calls[(8, 6)].name == "gw" and calls[(11, 22)].name.startswith("%")
    assert all(n.op is not Op.GRAD for n in graph.nodes)


@pytest.mark.parametrize("text", [
    # two named grads of one call: two values, each given the spelling
    "input v: f32[4]\nL = sum(v * v)\na = grad(L, v)\nb = grad(L,v)\noutput a, b\n",
    # an unnamed call and a named one of the same gradient: one node, spelt twice
    "param w: f32[4] = 1\ninput v: f32[4]\nL = sum(v * w * w)\n"
    "update w = w - 0.1 * grad(L, w)\ng = grad(L,w)\noutput g\n",
])
def test_a_grad_call_written_twice_names_one_value(text):
    """The same grad call written twice compiles (it once made a record that named
    `grad(L, v)` twice, an internal error), and its spelling finds the first value."""
    info = debuginfo.read(compiler.compile_source(text, M4))
    by = {v.name: v for v in info.values}
    first = by["a"] if "a" in by else by["g"]
    assert info.find("grad( L, v )" if "a" in by else "grad( L, w )") is first
    assert [a for v in info.values for a in v.aliases] == list(first.aliases)


def test_names_and_grad_calls_as_long_as_an_object_allows():
    """A name of 128 characters compiles, and a grad call spelt longer than that (two long
    names) is left out of the record rather than failing the link, as it once did."""
    loss, p = "l" * 128, "p" * 70
    text = (f"param {p}: f32[3] = 1\ninput x: f32[3]\n{loss} = sum(x * {p} * {p})\n"
            f"update {p} = {p} - 0.1 * grad({loss}, {p})\ng = grad({loss}, {p})\n"
            f"output {loss}, g\n")
    info = debuginfo.read(compiler.compile_source(text, M4))
    by = {v.name: v for v in info.values}
    assert by[loss].kind == "output" and by["g"].aliases == ()
    assert all(not v.name.startswith("grad(") for v in info.values)


def test_tab_completes_every_name_as_one_word(tiny):
    from d1.commands.debug import Session
    s = Session(Debugger(load_program(tiny, M4).obj), out=lambda text: None)
    assert s.complete("tensor gr") == ("gr", ["grad(loss,b)", "grad(loss,w)"])
    assert s.complete("t u") == ("u", ["unused"])


def test_a_disassembled_object_keeps_the_record():
    from d1isa.asm import assemble
    from d1isa.disasm import disassemble
    obj = compiler.compile_file(ROOT / "programs" / "train_digits.d1k", M4)
    assert assemble(disassemble(obj), "again.d1s").to_bytes() == obj.to_bytes()


def test_data_parallel_values_are_the_global_ones():
    """On several chips: a value split over the chips has its global shape and every chip's
    pieces, a gradient is found by its grad call, and a per-chip partial that is never
    all-reduced itself is not shown as the value."""
    obj = compiler.compile_file(ROOT / "programs/train_digits.d1k", M4_CHIPS)
    by = {v.name: v for v in debuginfo.read(obj).values}
    assert by["x"].shape == (64, 64) and by["h"].shape == (64, 32)
    chips = {(x // 4, y // 4) for x, y in (M4_CHIPS.node_xy(p.node)
                                           for p in by["x"].stores[0].layout.pieces)}
    assert chips == {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert by["g1"].kind == "grad" and by["g1"].aliases == ("grad(loss, w1)",)
    regions = obj.meta["regions"]
    assert regions[by["g1"].stores[0].first]["op"] in ("allreduce(chips)", "share(chips)")
    # every gradient is all-reduced where it is computed (it was `0.05 * grad(loss, b1)`,
    # and the gradient itself was a per-chip partial, never shown)
    assert regions[by["grad(loss, b1)"].stores[0].first]["op"] in ("allreduce(chips)",
                                                                     "share(chips)")
    partial = ("input x: f32[8, 4]\nparam w: f32[4]\nt = sum(x, axis=0)\n"
               "loss = sum(t * w * w)\nupdate w = w - 0.1 * grad(loss, w)\noutput loss\n")
    t = {v.name: v for v in debuginfo.read(compiler.compile_source(partial, M4_CHIPS)).values}
    assert not t["t"].stores and "partial result over its share of the batch" in t["t"].note
    assert t["grad(loss, w)"].stores
    # A whole value is chip (0,0)'s copy, and `tensor` says so; a split one covers every chip.
    dbg = Debugger(obj)
    assert dbg.value("w1").header() == ("w1: param f32[64, 32] in 16 pieces, line 4 (chip "
                                        "(0,0)'s copy; each of the 4 chips holds the same)")
    assert dbg.value("x").header() == "x: input f32[64, 64] in 32 pieces, line 2"
    assert Debugger(compiler.compile_file(ROOT / "programs/train_digits.d1k", M4)).value(
        "w1").header() == "w1: param f32[64, 32] in 16 pieces, line 4"
