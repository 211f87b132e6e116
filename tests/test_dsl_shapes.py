"""The shape forms of the language: `reshape(x, [..])`, `concat(.., axis=K)`, indexing and
slicing `x[i, a:b:c]`, `transpose(x, [perm])` and `@` with 3-D and 4-D operands.

Parsing (list literals, postfix indexing binds tightest), every positioned error, the IR they
lower to, the reference's numpy semantics, and the compiled mesh kernels (compiler.gather,
compiler.batched) against the reference on small meshes, including depth-1 FIFOs with tiny
messages and a harvested mesh, and through `d1 run --check`. Gradients are in test_grad.py,
random programs in test_shape_property.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from passkit import mapped
from progkit import run_and_compare

import compiler
from compiler import ast
from compiler.ir import Op, format_ir, round_to
from compiler.pipeline import CompileOptions, compile_text
from d1isa.errors import SourceError
from d1isa.machine import load_machine

M4 = load_machine("d1", mesh="4x4")
TINY = load_machine("d1", mesh="3x2", overrides={"fifo_depth": 1, "max_message_bytes": 64})
HARVESTED = load_machine("h6x5")


def source_error(text: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        compiler.check_source(text, filename="t.d1k")
    return info.value


# ---- parsing ----------------------------------------------------------------------------------

def expr_of(text: str) -> ast.Expr:
    return compiler.parse_source(f"y = {text}\n").statements[0].value


@pytest.mark.parametrize("text, printed", [
    ("-x[0]", "(-x[0])"),
    ("x[0] @ w", "(x[0] @ w)"),
    ("a[1][2:]", "a[1][2:]"),
    ("f(x)[::2, :, -1]", "f(x)[::2, :, -1]"),
    ("reshape(x, [2, -1])", "reshape(x, [2, -1])"),
    ("x[1:2:3, :4]", "x[1:2:3, :4]"),
    ("(x + 1)[0]", "(x + 1)[0]"),
])
def test_indexing_binds_tightest_and_prints_back(text, printed):
    assert ast.format_expr(expr_of(text)) == printed


def test_index_and_slice_spans():
    e = expr_of("x[1, 2:5:2, :]")
    assert isinstance(e, ast.Index) and (e.col, e.bracket_col, e.end_col) == (5, 6, 19)
    one, sl, whole = e.subscripts
    assert isinstance(one, ast.Number) and one.value == 1
    assert isinstance(sl, ast.Slice) and (sl.col, sl.end_col) == (10, 15)
    assert (sl.start.value, sl.stop.value, sl.step.value) == (2, 5, 2)
    assert isinstance(whole, ast.Slice) and (whole.start, whole.stop, whole.step) == (None,) * 3
    lst = expr_of("reshape(x, [4, -1])").items[1]
    assert isinstance(lst, ast.ListExpr) and [i.value for i in lst.items] == [4, -1]


@pytest.mark.parametrize("text, col, message", [
    ("y = x[1\n", 8, "missing ']'"),
    ("y = x[\n", 7, "expected an index"),
    ("y = x[1, ]\n", 10, "expected an index"),
    ("y = x[1 2]\n", 9, "expected ',' or ']'"),
    ("y = x[1:2:3:4]\n", 12, "expected ',' or ']'"),
    ("y = reshape(x, [2 3])\n", 19, "expected ',' or ']'"),
    ("y = [1, 2\n", 10, "missing ']'"),
])
def test_syntax_errors_of_lists_and_indexing(text, col, message):
    with pytest.raises(SourceError) as info:
        compiler.parse_source(text, filename="t.d1k")
    (d,) = info.value.diagnostics
    assert (d.line, d.col) == (1, col)
    assert message in d.message


# ---- positioned semantic errors ---------------------------------------------------------------

DECLS = ("input x: f32[2, 3, 4]\ninput w: f32[4, 5]\ninput h: bf16[2, 3, 4]\n"
         "input v: f32[6]\n")


@pytest.mark.parametrize("body, col, message", [
    ("y = reshape(x, [5, -1])", 16, "cannot reshape [2, 3, 4] (24 elements) into [5, -1]: 24 "
                                    "is not a multiple of 5"),
    ("y = reshape(x, [5, 5])", 16, "into [5, 5] (25 elements)"),
    ("y = reshape(x, [-1, -1])", 21, "only one dimension of reshape may be -1"),
    ("y = reshape(x, [0, 24])", 17, "must be a positive integer or -1, got 0"),
    ("y = reshape(x, [2, w])", 20, "each entry of the shape of reshape must be an integer"),
    ("y = reshape(x, 24)", 16, "the shape of reshape is a list of integer literals"),
    ("y = reshape(x, [1, 2, 3, 2, 2])", 16, "reshape gives 1 to 4 dimensions, got 5"),
    ("y = reshape(x, [])", 16, "reshape gives 1 to 4 dimensions, got 0"),
    ("y = reshape(x)", 5, "reshape takes 2 arguments, got 1"),
    ("y = reshape(2, [1])", 13, "reshape needs a tensor, got a number"),
    ("y = transpose(x, [0, 1])", 18, "transpose of a 3-D tensor [2, 3, 4] needs 3 axes, got 2"),
    ("y = transpose(x, [0, 1, 3])", 25, "axis 3 is out of range for a 3-D tensor"),
    ("y = transpose(x, [0, 2, -1])", 25, "axis 2 appears twice"),
    ("y = transpose(x, [0, 1.5, 2])", 22, "must be an integer literal"),
    ("y = transpose(x)", 15, "transpose needs a 2-D tensor, got [2, 3, 4]; for other ranks"),
    ("y = concat(x, h, axis=0)", 15, "concat needs tensors of one dtype, got f32 and bf16"),
    ("y = concat(x, w, axis=0)", 15, "concat needs tensors of one rank"),
    ("y = concat(x, x[:, :2], axis=0)", 15, "differ at axis 1"),
    ("y = concat(x, x, axis=3)", 23, "axis 3 is out of range for concat of 3-D tensors"),
    ("y = concat(x, x)", 5, "concat needs an axis, by keyword"),
    ("y = concat(x, x, 1)", 18, "the axis of concat is given by keyword"),
    ("y = concat(x, x, dim=1)", 18, "unknown keyword 'dim' for concat"),
    ("y = concat(x, 2, axis=0)", 15, "concat needs a tensor, got a number"),
    ("y = x[2]", 7, "index 2 is out of range for axis 0 of length 2; valid indices are -2 to 1"),
    ("y = x[0, -4]", 10, "index -4 is out of range for axis 1 of length 3"),
    ("y = x[0, 0, 0, 0]", 16, "too many indices for a 3-D tensor [2, 3, 4]: got 4"),
    ("y = x[0, w]", 10, "an index must be an integer literal"),
    ("y = x[0, 1.5]", 10, "an index must be an integer literal"),
    ("y = x[:, 0:w]", 12, "a slice bound must be an integer literal"),
    ("y = x[:, ::0]", 12, "the step of a slice must be positive, got 0"),
    ("y = x[:, ::-1]", 12, "the step of a slice must be positive, got -1"),
    ("y = x[:, 1:9]", 12, "slice bound 9 is out of range for axis 1 of length 3"),
    ("y = x[:, 2:1]", 10, "the slice selects nothing of axis 1 (length 3): 2 to 1"),
    ("y = x[:, 3:]", 10, "the slice selects nothing"),
    ("y = 2[0]", 5, "indexing needs a tensor, got a number"),
    ("y = [1, 2] + x", 5, "a list is not a value"),
    ("y = x @ x", 7, "matmul dimension mismatch: [2, 3, 4] @ [2, 3, 4]: 4 != 3"),
    ("y = x @ reshape(x, [2, 3, 4, 1])", 7, "cannot broadcast the batch dimensions [2] and "
                                          "[2, 3] of [2, 3, 4] @ [2, 3, 4, 1]: 2 != 3"),
    ("y = v @ w", 7, "matmul needs operands of 2 to 4 dimensions: [6] @ [4, 5]"),
])
def test_shape_errors_are_located(body, col, message):
    text = DECLS + body + "\noutput x\n"
    (d,) = source_error(text).diagnostics
    assert (d.line, d.col) == (5, col), d.message
    assert message in d.message
    rendered = source_error(text).render().splitlines()
    assert rendered[2].index("^") - 4 == col - 1


def test_errors_in_several_shape_forms_are_all_reported():
    text = DECLS + "a = x[5]\nb = reshape(x, [7])\nc = transpose(x, [0])\noutput x\n"
    lines = [d.line for d in source_error(text).diagnostics]
    assert lines == [5, 6, 7]


def test_a_too_large_concat_is_a_size_error():
    m = load_machine("d1", mesh="2x2", overrides={"sram_bytes": 4096})
    text = "input a: f32[40, 40]\nb = concat(a, a, a, axis=0)\noutput b\n"
    with pytest.raises(SourceError, match="needs 19.2 kB but the machine has"):
        compiler.check_source(text, m)


# ---- the IR -----------------------------------------------------------------------------------

def test_ir_of_the_shape_forms():
    g = compiler.check_source(
        DECLS + "a = reshape(x, [6, -1])\nb = transpose(x, [2, 0, 1])\nc = concat(x, x, axis=-1)"
                "\nd = x[1, 0:3:2]\ne = x @ w\nf = transpose(w, [1, 0])\nz = x[:, :]\n"
                "output a, b, c, d, e, f, z\n")
    assert (g["a"].op, g["a"].shape) == (Op.RESHAPE, (6, 4))
    assert (g["b"].op, g["b"].perm, g["b"].shape) == (Op.TRANSPOSE, (2, 0, 1), (4, 2, 3))
    assert (g["c"].op, g["c"].axis, g["c"].shape) == (Op.CONCAT, 2, (2, 3, 8))
    assert (g["d"].op, g["d"].index, g["d"].shape) == (Op.SLICE, (1, (0, 3, 2), (0, 4, 1)),
                                                       (2, 4))
    assert (g["e"].op, g["e"].shape, g["e"].dtype) == (Op.MATMUL, (2, 3, 5), "f32")
    assert (g["f"].op, g["f"].perm) == (Op.TRANSPOSE, None)      # the 2-D swap
    assert g["z"].op is Op.CAST                                  # the whole tensor: a copy
    listing = format_ir(g)
    assert "transpose[perm=[2, 0, 1]] x" in listing
    assert "concat[axis=2] x, x" in listing
    assert "slice[1, 0:3:2, 0:4] x" in listing


def test_the_identity_permutation_is_a_copy():
    g = compiler.check_source(DECLS + "y = transpose(x, [0, 1, -1])\noutput y\n")
    assert g["y"].op is Op.CAST and g["y"].inputs[0].name == "x"


# ---- reference semantics ----------------------------------------------------------------------

def test_reference_follows_numpy():
    text = (DECLS + "a = reshape(x, [4, -1])\nb = transpose(x, [1, 2, 0])\n"
            "c = concat(x, x * 2, axis=1)\nd = x[-1, ::2, 1:]\ne = x @ w\n"
            "f = h[0, 1] * 3\ng = x @ transpose(x, [0, 2, 1])\noutput a, b, c, d, e, f, g\n")
    g = compiler.check_source(text)
    inputs = compiler.make_inputs(g, seed=1)
    out = compiler.evaluate(g, inputs)
    x, w, h = inputs["x"], inputs["w"], inputs["h"]
    np.testing.assert_array_equal(out["a"], x.reshape(4, -1))
    np.testing.assert_array_equal(out["b"], x.transpose(1, 2, 0))
    np.testing.assert_array_equal(out["c"], np.concatenate([x, x * 2], axis=1))
    np.testing.assert_array_equal(out["d"], x[-1, ::2, 1:])
    np.testing.assert_allclose(out["e"], x @ w, rtol=1e-6)
    np.testing.assert_array_equal(out["f"], round_to(h[0, 1] * 3, "bf16"))
    assert out["f"].shape == (4,)
    np.testing.assert_allclose(out["g"], x @ x.transpose(0, 2, 1), rtol=1e-6)


# ---- compiled on the mesh ---------------------------------------------------------------------

PROGRAMS = {
    "moves": """
input x: f32[5, 7, 9]
input b: bf16[9, 20]
r = reshape(x, [35, 9])
t = transpose(x, [2, 0, 1])
u = transpose(x, [1, 0, 2])
s = x[1:5:2, -3:, ::4]
i = x[2, 3]
c = concat(x, x[:, 1:3], axis=1)
k = concat(b, b[3:4], b, axis=0)
q = reshape(b, [4, 5, 9])
output r, t, u, s, i, c, k, q
""",
    "batched": """
input a: f32[3, 20, 12]
input b: f32[3, 12, 9]
input w: f32[12, 9]
input c: bf16[2, 1, 8, 8]
input d: bf16[3, 8, 16]
p = a @ b
q = a @ w
r = c @ d
s = transpose(a, [0, 2, 1]) @ a
output p, q, r, s
""",
    "heads": """
input x: f32[16, 32]
input wq: f32[32, 32]
input wk: f32[32, 32]
q = transpose(reshape(x @ wq, [16, 4, 8]), [1, 0, 2])
k = transpose(reshape(x @ wk, [16, 4, 8]), [1, 2, 0])
att = softmax(q @ k * 0.35, axis=-1)
o = reshape(transpose(att @ q, [1, 0, 2]), [16, 32])
output o, att
""",
    "grads": """
input x: f32[4, 6, 5]
param w: f32[5, 3]
param v: f32[4, 3, 2]
h = tanh(x @ w)
y = concat(h[:, 1:], h[:, :1], axis=1) @ v
l = mean(reshape(y, [-1]) * reshape(y, [-1])) + sum(transpose(h, [2, 1, 0])[0])
gw = grad(l, w)
gv = grad(l, v)
gx = grad(l, x)
output l, gw, gv, gx
""",
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("machine", [M4, TINY, HARVESTED], ids=["4x4", "tiny", "h6x5"])
def test_shape_programs_compile_and_match_reference(name, machine):
    text = PROGRAMS[name]
    obj = compiler.compile_source(text, machine, f"{name}.d1k")
    run_and_compare(obj, text, machine, f"{name}.d1k", seed=3)


@pytest.mark.parametrize("mapping", ["subgrid", "sequential"])
def test_both_batched_mappings_match_reference(mapping):
    text = PROGRAMS["batched"]
    obj = compiler.compile_source(text, M4, "b.d1k", CompileOptions(batched=mapping))
    regions = {r["op"] for r in obj.meta["regions"]}
    assert any(op.startswith("matmul[batched") for op in regions) == (mapping == "subgrid")
    run_and_compare(obj, text, M4, "b.d1k", seed=1)


def test_more_batch_entries_than_grid_rows_pads_to_whole_tiles():
    # 6 entries on a 2 x 2 grid: N is one tile, so every grid node takes whole products of
    # [5, 7] @ [7, 3], padded to [8, 8] @ [8, 3] (two nodes take two each).
    m = load_machine("d1", mesh="2x2")
    text = "input a: f32[6, 5, 7]\ninput b: f32[6, 7, 3]\nc = a @ b\noutput c\n"
    obj = compiler.compile_source(text, m, "p.d1k")
    assert "matmul[batched 6]" in {r["op"] for r in obj.meta["regions"]}
    run_and_compare(obj, text, m, "p.d1k")


def batched_regions(obj) -> list[dict]:
    return [r for r in obj.meta["regions"] if r["op"].startswith("matmul[batched")]


def test_a_large_batch_of_narrow_products_takes_every_node():
    # 8,192 products of [8, 8] @ [8, 8] on a 4 x 4 mesh. On the row sub-grids (1 x 4 nodes
    # each) a product one tile wide leaves three grid columns idle and puts all of a row's
    # entries on one node: 'a' alone took 524 KB of each node of one grid column, and the
    # program did not fit. Now every node takes 512 whole products, with no messages at all.
    text = "input a: bf16[8192, 8, 8]\ninput b: bf16[8192, 8, 8]\nc = a @ b\noutput c\n"
    obj = compiler.compile_source(text, M4, "narrow.d1k")
    assert len(batched_regions(obj)) == 1
    assert obj.meta["sram_peak_bytes"] <= M4.sram_bytes // 2
    _, emu, _, _ = run_and_compare(obj, text, M4, "narrow.d1k", seed=3)
    assert emu.totals()["link_messages"] == 0


def test_a_large_batch_of_tiny_padded_products_fits_at_once_on_every_node():
    # 5,832 products of [1, 1] @ [1, 7], each padded to whole 8 x 8 tiles (found by the shape
    # fuzz campaign): on the row sub-grids they needed 1.5 MB of a 1.25 MiB node; spread over
    # all 16 nodes they fit at once.
    text = ("input a: bf16[5832, 1, 1]\ninput b: bf16[5832, 1, 7]\nc = a @ b\n"
            "output c\n")
    obj = compiler.compile_source(text, M4, "tiny.d1k")
    assert len(batched_regions(obj)) == 1
    assert obj.meta["sram_peak_bytes"] <= M4.sram_bytes
    run_and_compare(obj, text, M4, "tiny.d1k", seed=2)


@pytest.mark.parametrize("entries, n", [(4000, 7), (2000, 16)])
def test_a_batch_of_padded_products_too_large_at_once_runs_in_parts(entries, n):
    # On a 2 x 2 mesh, padded to whole tiles: 4,000 products of [1, 1] @ [1, 7] take 512 KB
    # of each of the 4 nodes; 2,000 of [1, 1] @ [1, 16] (N as wide as the grid: on the row
    # sub-grids) 896 KB of each grid row's nodes. In parts, only one part's padded values are
    # live at a time.
    m = load_machine("d1", mesh="2x2")
    text = (f"input a: bf16[{entries}, 1, 1]\ninput b: bf16[{entries}, 1, {n}]\nc = a @ b\n"
            "output c\n")
    obj = compiler.compile_source(text, m, "parts.d1k")
    assert len(batched_regions(obj)) > 1
    assert obj.meta["sram_peak_bytes"] <= m.sram_bytes
    run_and_compare(obj, text, m, "parts.d1k", seed=4)


def test_the_batched_matmul_runs_on_the_matrix_unit():
    text = "input a: bf16[4, 32, 32]\ninput b: bf16[4, 32, 32]\nc = a @ b\noutput c\n"
    asm = compile_text(text, M4, "m.d1k").asm
    # 4 entries on 4 grid rows: one band each, and every grid node multiplies its own tiles.
    section, multiplying = "", set()
    for line in asm.splitlines():
        if line.startswith(".text"):
            section = line
        elif "mmak.bf16" in line:
            multiplying.update(section.split()[2:])
    assert multiplying == {f"{x},{y}" for x in range(4) for y in range(4)}


BANDS = """
input x: f32[16, 32]
input wq: f32[32, 32]
input wk: f32[32, 32]
input bias: f32[16]
input col: f32[H, 16, 1]
q = transpose(reshape(x @ wq, [16, H, D]), [1, 0, 2])
k = transpose(reshape(x @ wk, [16, H, D]), [1, 2, 0])
t = q @ k * 0.35 + bias - col
a = softmax(t, axis=-1)
l = layernorm(t, axis=-1)
m = log_softmax(t, axis=-1)
o = reshape(transpose(a @ q, [1, 0, 2]), [16, 32])
y = o @ wk
output y, l, m
"""


@pytest.mark.parametrize("heads", [2, 4])
def test_heads_run_on_bands_of_grid_columns(heads):
    # The products of attention heads run on bands of grid columns (banded layouts): the head
    # split of q and the merge of the heads read the projections' own bytes, the row
    # statistics are all-reduced within each band, and a bias row and a column broadcast are
    # read in the bands' layout.
    text = BANDS.replace("H", str(heads)).replace("D", str(32 // heads))
    m = mapped(text, M4)
    assert m.value("t").layout.bands == tuple(range(0, 5, 4 // heads))
    assert m.value("q").layout.bands is not None and m.value("q").base is not None
    assert m.value("o").base is not None
    assert "transpose" not in {s.kind for s in m.mapper.steps if s.label in ("q", "o")}
    obj = compiler.compile_source(text, M4, "bands.d1k")
    run_and_compare(obj, text, M4, "bands.d1k", seed=2)
    # -O batched=rows: the same products on bands of grid rows, the old mapping
    obj = compiler.compile_source(text, M4, "bands.d1k", CompileOptions(batched="rows"))
    run_and_compare(obj, text, M4, "bands.d1k", seed=2)


def test_a_reshape_chain_moves_each_element_once():
    text = ("input h: f32[4, 16, 8]\n"
            "m = reshape(transpose(h, [1, 0, 2]), [16, 32])\noutput m\n")
    obj = compiler.compile_source(text, M4, "m.d1k")
    kinds = [r["op"] for r in obj.meta["regions"]]
    assert kinds.count("reshape") == 1 and "transpose" not in kinds
    run_and_compare(obj, text, M4, "m.d1k")


def test_a_reshape_that_keeps_the_view_is_read_in_place():
    # An imported `reshape(x, [16, 12]) @ w` of x [1, 16, 12]: the matmuls read x's own bytes
    # (no copy, no region), and x stays live until the last of them; a reshape that is an
    # output is still stored for its own sake.
    text = ("input x: f32[1, 16, 12]\ninput w: f32[12, 8]\ninput v: f32[12, 8]\n"
            "a = tanh(reshape(x, [16, 12]) @ w)\nb = exp(a) * 0.5\n"
            "c = reshape(x, [16, 12]) @ v + b\nr = reshape(b, [1, 16, 8])\noutput c, r\n")
    # (row_bands=false: otherwise the second product runs on the other grid rows, and its
    # result is moved back for the add.)
    opts = CompileOptions(row_bands=False)
    obj = compiler.compile_source(text, M4, "v.d1k", opts)
    kinds = [r["op"] for r in obj.meta["regions"]]
    assert kinds.count("redistribute") == 1          # r only
    run_and_compare(obj, text, M4, "v.d1k")


def test_a_batched_product_read_in_place_as_the_b_of_a_matmul():
    # t's batched layout splits its rows over the grid rows at entry bounds (row_split); read
    # in place through the same-view reshape as B, SUMMA took those rows for its own even K
    # blocks: wrong values on d1 (max rel err 0.96), as in every weight gradient of an
    # `x @ w` with a 3-D x whose result feeds a batched matmul. B is redistributed first now.
    text = ("input a: f32[16, 4, 8]\ninput q: f32[1, 8, 8]\ninput x: f32[8, 64]\n"
            "t = a @ q\ng = x @ reshape(t, [64, 8])\noutput g\n")
    d1 = load_machine("d1")
    run_and_compare(compiler.compile_source(text, d1, "b.d1k"), text, d1, "b.d1k")


def test_d1_run_check_on_a_shape_program(tmp_path):
    from fuzzkit import invoke
    prog = tmp_path / "moves.d1k"
    prog.write_text(PROGRAMS["moves"])
    out = invoke(["run", str(prog), "--mesh", "4x4", "--check", "--out-dir", str(tmp_path / "o")],
                 tmp_path)
    assert out.status == 0, out.output
    assert out.output.count(" ok") == 8
    np.save(tmp_path / "x.npy", np.arange(315, dtype=np.float32).reshape(5, 7, 9))
    out = invoke(["run", str(prog), "--mesh", "4x4", "--input", f"x={tmp_path / 'x.npy'}",
                  "--out-dir", str(tmp_path / "o2")], tmp_path)
    assert out.status == 0, out.output
    t = np.load(tmp_path / "o2" / "t.npy")
    np.testing.assert_array_equal(t, np.arange(315, dtype=np.float32).reshape(5, 7, 9)
                                  .transpose(2, 0, 1))
