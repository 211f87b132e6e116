"""The map pass on its own: `choose_grid` picks the grid of live nodes for a machine, and
`map_to_mesh` gives every value a layout (which grid node holds which block) and makes the
steps, with a redistribution wherever a reader needs another layout.

Programs go through parse, check and lower first (passkit.mapped calls the passes as
compiler.pipeline.compile_text does); the tests look at the Grid, at mapper.values / inputs and
at the list of steps (their kinds, inputs, layouts and source positions). Nothing is emitted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from passkit import front, mapped, mesh

from compiler.grid import choose_grid
from compiler.pipeline import CompileOptions
from compiler.summa import chip_grid_pays
from d1isa.machine import load_machine

ROOT = Path(__file__).resolve().parents[1]

MATMUL = "input a: f32[16, 16]\ninput b: f32[16, 16]\nc = a @ b\noutput c\n"


def kinds(m) -> list[str]:
    return [s.kind for s in m.mapper.steps]


def axes(value) -> tuple[str | None, str | None]:
    return value.layout.row_axis, value.layout.col_axis


# ---- the grid ---------------------------------------------------------------------------------

def test_grid_on_a_full_mesh_is_the_whole_mesh_in_row_major_order():
    m = mesh("4x4")
    g = choose_grid(m)
    assert (g.xs, g.ys) == ((0, 1, 2, 3), (0, 1, 2, 3))
    assert g.nodes == tuple(tuple(4 * i + j for j in range(4)) for i in range(4))


def test_grid_on_a_wide_mesh_has_more_columns_than_rows():
    g = choose_grid(mesh("3x2"))
    assert (g.P, g.Q) == (2, 3)


def test_on_the_tile_the_grid_is_one_chips_grid_on_every_chip():
    """The whole-mesh search is greedy on 25 chips (70 x 90, 14 x 18 a chip); one d1 chip's
    best grid, 16 x 16, repeated is larger and square. chip_grid=false keeps the former."""
    tile = load_machine("tile")
    chip = choose_grid(load_machine("d1"))
    g = choose_grid(tile, per_chip=True)
    assert (g.P, g.Q) == (80, 80)
    assert g.xs[:16] == chip.xs and g.ys[:16] == chip.ys
    assert g.xs[16:32] == tuple(18 + x for x in chip.xs)
    assert all(tile.live_grid[y, x] for x in g.xs for y in g.ys)
    old = choose_grid(tile)
    assert (old.P, old.Q) == (70, 90)


@pytest.mark.parametrize("n, options, grid", [(4096, CompileOptions(), (80, 80)),
                                              (4096, CompileOptions(chip_grid=False), (70, 90)),
                                              (1024, CompileOptions(), (70, 90))])
def test_the_tile_takes_the_chip_grid_for_a_matmul_large_enough(n, options, grid):
    """4096^3 gives each of the 80 x 80 nodes 7 x 7 tiles over 512 K steps, enough to hide
    the preskewed SUMMA's rounds; 1024^3 (2 x 2 tiles a node) keeps the whole-mesh grid."""
    text = f"input a: bf16[{n}, {n}]\ninput b: bf16[{n}, {n}]\nc = a @ b\noutput c\n"
    tile = load_machine("tile")
    assert chip_grid_pays(front(text, tile), tile) == (n == 4096)
    grid_of = choose_grid(tile, per_chip=options.chip_grid and chip_grid_pays(
        front(text, tile), tile))
    assert (grid_of.P, grid_of.Q) == grid


def test_on_2x2_d1_chips_the_search_already_finds_the_chip_grid():
    m = load_machine("d1", chips="2x2")
    assert choose_grid(m, per_chip=True) == choose_grid(m)


def test_grid_on_a_single_node():
    g = choose_grid(mesh("1x1"))
    assert (g.P, g.Q, g.nodes) == (1, 1, ((0,),))


def test_grid_avoids_harvested_nodes_then_prefers_fewest_relays_then_north_west():
    # h6x5 has dead nodes at (2, 1) and (3, 3). Dropping row 1 or row 3 keeps 5 x 4 = 20 nodes
    # with 9 relay hops (dropping columns 2 and 3 keeps 20 with 10); of the two, row 1 and
    # column 3 lie further north-west.
    m = mesh("h6x5")
    g = choose_grid(m)
    assert (g.xs, g.ys) == ((0, 1, 2, 4, 5), (0, 2, 3, 4))
    assert all(m.live_grid[y, x] for x in g.xs for y in g.ys)


def test_chains_pass_through_live_relay_nodes_and_skip_harvested_ones():
    m = mesh("h6x5")
    g = choose_grid(m)
    assert g.row_chains[0] == tuple(m.node_id(x, 0) for x in range(6))   # x=3 relays
    assert g.row_chain_index(0) == (0, 1, 2, 4, 5)
    assert g.col_chains[2] == tuple(m.node_id(2, y) for y in (0, 2, 3, 4))  # (2, 1) is dead


def test_grid_with_many_harvested_lines_is_found_greedily_and_is_all_live():
    # A dead diagonal on 16 x 16: no row may share an index with a column, so 8 x 8 is best.
    m = load_machine(mesh="16x16", overrides={"harvested": [[i, i] for i in range(16)]})
    g = choose_grid(m)
    assert g.P * g.Q == 64
    assert not set(g.xs) & set(g.ys)
    assert all(m.live_grid[y, x] for x in g.xs for y in g.ys)


# ---- layouts ----------------------------------------------------------------------------------

def test_block_layout_gives_each_grid_node_one_tile_aligned_block():
    m = mapped("input x: f32[32, 64]\ny = x + 1\noutput y\n")
    y = m.value("y")
    assert axes(y) == ("P", "Q")
    assert {(i, j): y.layout.block(i, j) for i in range(4) for j in range(4)} == {
        (i, j): (8 * i, 8 * i + 8, 16 * j, 16 * j + 16) for i in range(4) for j in range(4)}


def test_ragged_sizes_give_earlier_grid_nodes_the_extra_tiles():
    L = mapped("input x: f32[37, 20]\ny = x * 2\noutput y\n").value("y").layout
    assert L.row_bounds == (0, 16, 24, 32, 37)
    assert L.col_bounds == (0, 8, 16, 20, 20)
    assert sorted({j for _, j in L.holders()}) == [0, 1, 2]     # grid column 3 holds nothing


@pytest.mark.parametrize("decl, use, want", [
    ("v: f32[16]", "x + v", (None, "Q")),          # a row vector, replicated down grid rows
    ("v: f32[16, 1]", "x + v", ("P", None)),       # a column, replicated along grid rows
    ("v: f32[1]", "x * v", (None, None)),          # a scalar, on every grid node
    ("v: bf16[16]", "x + v", (None, "Q")),         # ... also through the widening cast
    ("v: f32[16, 16]", "x + v", ("P", "Q")),       # read in full: a block
])
def test_an_input_is_placed_the_way_its_readers_read_it(decl: str, use: str, want):
    m = mapped(f"input x: f32[16, 16]\ninput {decl}\ny = {use}\noutput y\n")
    assert axes(m.value("v")) == want
    assert not [k for k in kinds(m) if k.startswith("redistribute")]   # read where it is


def test_row_and_column_reductions_leave_vectors_split_along_the_other_grid_axis():
    m = mapped("input x: f32[32, 32]\nr = sum(x, axis=1)\nc = max(x, axis=0)\noutput r, c\n")
    assert axes(m.value("r")) == (None, "P")
    assert axes(m.value("c")) == (None, "Q")
    assert kinds(m) == ["sum[rows]", "max[cols]"]


# ---- steps ------------------------------------------------------------------------------------

def test_matmul_inputs_are_preskewed_on_a_square_grid_so_no_redistribution_is_needed():
    m = mapped(MATMUL)
    assert (m.value("a").layout.skew, m.value("b").layout.skew) == ("A", "B")
    assert kinds(m) == ["matmul[summa]"]


def test_preskew_off_leaves_plain_blocks():
    m = mapped(MATMUL, options=CompileOptions(preskew=False))
    assert (m.value("a").layout.skew, m.value("b").layout.skew) == (None, None)
    assert kinds(m) == ["matmul[summa]"]


def test_no_preskew_on_a_non_square_grid():
    m = mapped(MATMUL, mesh("4x2"))
    assert (m.grid.P, m.grid.Q) == (2, 4)
    assert m.value("a").layout.skew is None and kinds(m) == ["matmul[summa]"]


def test_no_preskew_for_an_input_used_as_both_matmul_operands():
    m = mapped("input a: f32[16, 16]\ninput b: f32[16, 16]\nc = a @ b\nd = b @ a\n"
               "output c, d\n")
    assert (m.value("a").layout.skew, m.value("b").layout.skew) == (None, None)


def test_naive_matmul_first_gathers_rows_of_a_and_columns_of_b():
    m = mapped(MATMUL, options=CompileOptions(matmul="naive"))
    assert kinds(m) == ["redistribute", "redistribute", "matmul[local]"]
    ga, gb, mm = m.mapper.steps
    assert (ga.ins[0].name, axes(ga.out)) == ("a", ("P", None))
    assert (gb.ins[0].name, axes(gb.out)) == ("b", (None, "Q"))
    assert mm.ins == [ga.out, gb.out] and mm.out is m.value("c")


def test_a_value_is_redistributed_once_per_layout_however_many_readers_need_it():
    m = mapped("input x: f32[32, 32]\ns = sum(x, axis=1)\ny = x + s\nz = x * s\n"
               "output y, z\n")
    assert kinds(m) == ["sum[rows]", "redistribute", "elementwise(add)", "elementwise(mul)"]
    moved = m.mapper.steps[1].out
    assert axes(moved) == (None, "Q") and m.mapper.steps[1].ins == [m.value("s")]
    assert m.step("y", "elementwise").ins == [m.value("x"), moved]
    assert m.step("z", "elementwise").ins == [m.value("x"), moved]


def test_transpose_is_a_transposing_redistribution_into_a_block_layout():
    m = mapped("input x: f32[32, 64]\nt = transpose(x)\noutput t\n")
    (st,) = m.mapper.steps
    assert (st.kind, st.ins, st.out) == ("redistribute^T", [m.value("x")], m.value("t"))
    assert st.out.shape == (64, 32) and axes(st.out) == ("P", "Q")


def test_a_3d_reduction_along_a_middle_axis_reduces_the_columns_of_a_gathered_matrix():
    m = mapped("input x: f32[2, 3, 4]\ns = sum(x, axis=1)\noutput s\n")
    assert kinds(m) == ["gather(axis)", "sum[cols]", "reshape"]
    mat, flat, s = (st.out for st in m.mapper.steps)
    assert mat.shape == (3, 8) and axes(mat) == ("P", "Q")
    assert flat.shape == (8,) and axes(flat) == (None, "Q")
    assert s is m.value("s") and s.shape == (2, 4)


def test_a_softmax_along_a_leading_axis_shares_the_axis_matrix_of_a_reduction_along_it():
    m = mapped("input x: f32[2, 3, 4]\ns = sum(x, axis=0)\np = softmax(x, axis=0)\n"
               "output s, p\n")
    assert kinds(m) == ["gather(axis)", "sum[cols]", "reshape", "softmax[cols]",
                        "gather(axis)"]
    mat = m.mapper.steps[0].out
    assert mat.shape == (2, 12) and not mat.layout.dense
    assert m.mapper.steps[1].ins == [mat] and m.mapper.steps[3].ins == [mat]
    assert m.mapper.steps[4].out is m.value("p") and m.value("p").shape == (2, 3, 4)


def test_each_step_records_the_source_position_and_name_of_its_node():
    m = mapped("input x: f32[32, 32]\n\ns = sum(x, axis=1)\ny = relu(x) + s\noutput y\n")
    assert [(s.kind, s.label, s.loc) for s in m.mapper.steps] == [
        ("sum[rows]", "s", (3, 5)), ("redistribute", "y", (4, 13)),
        ("elementwise(relu add)", "y", (4, 13))]


def test_inputs_are_listed_in_declaration_order():
    m = mapped("input b: f32[8]\ninput a: f32[8, 8]\ny = a + b\noutput y\n")
    assert [v.name for v in m.mapper.inputs] == ["b", "a"]


@pytest.mark.parametrize("spec", ["4x4", "h6x5"])     # square (skewed inputs) and harvested
@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "programs").glob("*.d1k")))
def test_owned_blocks_tile_every_value_exactly_once(name: str, spec: str):
    m = mapped((ROOT / "programs" / f"{name}.d1k").read_text(), mesh(spec))
    values = {id(v): v for v in m.mapper.values.values()}
    values.update({id(s.out): s.out for s in m.mapper.steps if s.out is not None})
    for v in values.values():
        L = v.layout
        covered = [[0] * L.cols for _ in range(L.rows)]
        for i, j in L.owners():
            r0, r1, c0, c1 = L.block(i, j)
            for r in range(r0, r1):
                for c in range(c0, c1):
                    covered[r][c] += 1
        assert all(n == 1 for row in covered for n in row), (v.name, L.describe())
