"""The lower pass on its own: the checked IR graph -> kernel ops, with elementwise fusion decided.

Each test checks a small program (parse + check, via passkit.front), calls
`compiler.lower.lower` as compiler.pipeline.compile_text does, and looks at the kernel ops:
which kind each is, in what order, and which elementwise nodes were fused into which tree.
A fused tree is shown as nested tuples, e.g. ("mul", ("relu", ("add", "x", "%t2")), "%t5"),
with leaves named by their IR node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from passkit import front, lowered, mesh

from compiler.ir import Op
from compiler.lower import MAX_FUSED_OPS, MAX_FUSED_STORED, broadcast_mode, lower
from compiler.plan import ELEMENTWISE_OPS

ROOT = Path(__file__).resolve().parents[1]


def kops(text: str):
    return lower(front(text))


def tree(e: tuple) -> tuple | str:
    """A fused expression as nested (op, children...) tuples with leaf node names."""
    if e[0] == "leaf":
        return e[1].name
    _, op, kids, _rounds, _node = e
    return (op.value, *(tree(k) for k in kids))


def fused_nodes(e: tuple) -> list:
    """IR nodes computed inside a fused tree (its op nodes), root first."""
    if e[0] == "leaf":
        return []
    out = [e[4]]
    for k in e[2]:
        out += fused_nodes(k)
    return out


def stored_leaves(e: tuple) -> set[str]:
    """Names of the leaves a fused kernel reads from memory (everything but splats)."""
    if e[0] == "leaf":
        return set() if e[1].op is Op.CONST else {e[1].name}
    out: set[str] = set()
    for k in e[2]:
        out |= stored_leaves(k)
    return out


def summary(text: str) -> list[tuple[str, str]]:
    return [(k.kind, k.node.name) for k in kops(text)]


# ---- kernel kinds -----------------------------------------------------------------------------

def test_kernel_ops_come_in_program_order_one_kind_per_op():
    text = ("input x: f32[16, 16]\n"
            "a = relu(x)\n"
            "s = sum(a, axis=1)\n"
            "p = softmax(x, axis=0)\n"
            "c = x @ p\n"
            "t = transpose(c)\n"
            "output s, t\n")
    assert summary(text) == [("input", "x"), ("fused", "a"), ("reduce", "s"),
                             ("softmax", "p"), ("matmul", "c"), ("transpose", "t")]


def test_splats_and_row_column_scalar_broadcasts_are_not_kernels():
    text = ("input x: f32[8, 16]\ninput row: f32[16]\ninput col: f32[8, 1]\ninput s: f32[1]\n"
            "y = x * row + col - s + 2\noutput y\n")
    assert summary(text) == [("input", "x"), ("input", "row"), ("input", "col"),
                             ("input", "s"), ("fused", "y")]


def test_a_general_broadcast_is_a_kernel_of_its_own():
    ks = kops("input x: f32[2, 3, 4]\ninput c: f32[3, 1]\nd = x * c\noutput d\n")
    assert [k.kind for k in ks] == ["input", "input", "broadcast", "fused"]
    bc = ks[2].node
    assert (bc.op, bc.shape, bc.inputs[0].name) == (Op.BROADCAST, (2, 3, 4), "c")


# ---- fusion -----------------------------------------------------------------------------------

def test_an_elementwise_chain_fuses_into_the_node_that_ends_it():
    ks = kops("input x: f32[32, 64]\ninput b: f32[64]\ny = relu(x + b) * 2\noutput y\n")
    (k,) = [k for k in ks if k.kind == "fused"]
    assert k.node.name == "y"
    assert tree(k.expr) == ("mul", ("relu", ("add", "x", "%t2")), "%t5")
    assert k.nops == ["add", "relu", "mul"]


def test_a_value_read_twice_by_one_reader_is_computed_once_and_stored():
    ks = kops("input x: f32[8]\na = relu(x)\ny = a * a\noutput y\n")
    assert [(k.node.name, tree(k.expr)) for k in ks if k.kind == "fused"] == [
        ("a", ("relu", "x")), ("y", ("mul", "a", "a"))]


def test_a_value_with_two_readers_is_not_fused_into_either():
    ks = kops("input x: f32[8]\na = relu(x)\ny = a + 1\nz = a * 2\noutput y, z\n")
    assert [(k.node.name, tree(k.expr)) for k in ks if k.kind == "fused"] == [
        ("a", ("relu", "x")), ("y", ("add", "a", "%t2")), ("z", ("mul", "a", "%t4"))]


def test_an_output_is_stored_even_when_its_only_reader_is_elementwise():
    ks = kops("input x: f32[8]\na = relu(x)\ny = a + 1\noutput a, y\n")
    assert [(k.node.name, tree(k.expr)) for k in ks if k.kind == "fused"] == [
        ("a", ("relu", "x")), ("y", ("add", "a", "%t2"))]


def test_fusion_stops_where_a_value_is_broadcast_to_a_larger_shape():
    ks = kops("input x: f32[32, 64]\ninput v: f32[64]\na = exp(v)\ny = x + a\noutput y\n")
    assert [(k.node.name, tree(k.expr)) for k in ks if k.kind == "fused"] == [
        ("a", ("exp", "v")), ("y", ("add", "x", "%t3"))]


def test_fusion_does_not_cross_a_reduction():
    ks = kops("input x: f32[8, 16]\ns = sum(relu(x), axis=1)\ny = exp(s)\noutput y\n")
    assert [(k.kind, k.node.name) for k in ks] == [
        ("input", "x"), ("fused", "%t1"), ("reduce", "s"), ("fused", "y")]


def test_rounding_points_are_kept_inside_the_fused_tree():
    (k,) = [k for k in kops("input x: bf16[8]\na = exp(x) + 1\ny = cast(a, f32) * 2\n"
                            "output y\n") if k.kind == "fused"]
    assert [(n.op.value, n.rounds) for n in fused_nodes(k.expr)] == [
        ("mul", False), ("cast", False), ("add", True), ("exp", True)]
    assert [e[3] for e in _op_entries(k.expr)] == [False, False, True, True]


def _op_entries(e: tuple) -> list[tuple]:
    if e[0] == "leaf":
        return []
    out = [e]
    for c in e[2]:
        out += _op_entries(c)
    return out


def test_a_long_chain_is_cut_into_kernels_of_at_most_max_fused_ops():
    n = MAX_FUSED_OPS + 2
    text = "input x: f32[8]\ny = " + "relu(" * n + "x" + ")" * n + "\noutput y\n"
    fused = [k for k in kops(text) if k.kind == "fused"]
    assert [len(k.nops) for k in fused] == [2, MAX_FUSED_OPS]
    assert fused[-1].node.name == "y"
    assert stored_leaves(fused[-1].expr) == {fused[0].node.name}   # the first kernel's result


def test_a_fused_kernel_reads_at_most_max_fused_stored_values():
    # A left-deep sum once fused every operand (the limit was checked only before descending),
    # and the column splat's temporary register then clobbered a pointer.
    n = MAX_FUSED_STORED + 3
    text = ("".join(f"input x{i}: f32[8, 16]\n" for i in range(n))
            + "input c: f32[8, 1]\ny = " + " + ".join(f"x{i}" for i in range(n))
            + " + c\noutput y\n")
    for k in kops(text):
        if k.kind == "fused":
            assert len(stored_leaves(k.expr)) <= MAX_FUSED_STORED, (k.node.name, k.nops)


def test_a_nine_term_sum_plus_a_column_runs_correctly():
    from progkit import run_and_compare

    import compiler

    n = 9
    text = ("".join(f"input x{i}: f32[8, 16]\n" for i in range(n))
            + "input c: f32[8, 1]\ny = " + " + ".join(f"x{i}" for i in range(n))
            + " + c\noutput y\n")
    m = mesh("2x2")
    rows, *_ = run_and_compare(compiler.compile_source(text, m), text, m, "sum9.d1k")
    assert [r[0] for r in rows] == ["y"]


# ---- how a broadcast is read ------------------------------------------------------------------

@pytest.mark.parametrize("src, dst, mode", [
    ((), (8, 16), "scalar"),
    ((1,), (8, 16), "scalar"),
    ((1, 1), (8, 16), "scalar"),
    ((16,), (8, 16), "row"),
    ((1, 16), (8, 16), "row"),
    ((4,), (2, 3, 4), "row"),
    ((8, 1), (8, 16), "col"),
    ((2, 3, 1), (2, 3, 4), "col"),
    ((3, 1), (2, 3, 4), "general"),
    ((2, 1, 4), (2, 3, 4), "general"),
])
def test_broadcast_mode(src, dst, mode):
    assert broadcast_mode(src, dst) == mode


# ---- the shipped programs ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "programs").glob("*.d1k")))
def test_every_computed_node_is_in_exactly_one_kernel(name: str):
    text = (ROOT / "programs" / f"{name}.d1k").read_text()
    graph = front(text, mesh("4x4"))
    seen: list[int] = []
    for k in lowered(graph):
        if k.kind == "fused":
            seen += [n.id for n in fused_nodes(k.expr)]
        else:
            seen.append(k.node.id)
        if k.kind == "gather" and k.expr is not None:
            seen += list(k.expr[2])             # a chain of moves gathered in one go
    users = graph.users()
    # A reshape feeding only a reduction over every axis is read by that reduction's kernel.
    absorbed = {n.id for n in graph.nodes if n.op is Op.RESHAPE and users[n.id]
                and all(u.ndim == 0 and u.op in (Op.SUM, Op.MAX, Op.MEAN) for u in users[n.id])}
    needs_kernel = [n.id for n in graph.nodes
                    if n.op in ELEMENTWISE_OPS or n.op in (Op.INPUT, Op.PARAM, Op.MATMUL,
                                                           Op.TRANSPOSE, Op.SUM, Op.MAX, Op.MEAN,
                                                           Op.SOFTMAX, Op.LOG_SOFTMAX,
                                                           Op.MAX_MASK, Op.SLICE, Op.UNSLICE,
                                                           Op.CONCAT, Op.CONV2D,
                                                           Op.CONV2D_TRANSPOSE, Op.MAXPOOL2D,
                                                           Op.AVGPOOL2D, Op.IM2COL, Op.COL2IM)
                    or (n.op is Op.RESHAPE and n.id not in absorbed)
                    or (n.op is Op.BROADCAST
                        and broadcast_mode(n.inputs[0].shape, n.shape) == "general")]
    assert sorted(seen) == needs_kernel
