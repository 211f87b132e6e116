"""The SPMD matmuls (compiler.summa): one program per C-block shape, per-node numbers in data.

SpmdSumma (preskewed operands on a square grid, large blocks) keeps compiler.matmul's message
schedule and writes each round once as a shared variant, dispatched by a per-node table;
SpmdStream (plain layouts on large grids) streams the blocks with relayb. Both must give the
reference's results within the --check tolerance on plain and harvested meshes, with deep and
shallow FIFOs and small messages, and re-assemble from their --emit asm text; the per-node
tables and registers are what differs between nodes that share a block.
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
import compiler.summa as summa
from compiler.matmul import Matmul
from compiler.pipeline import CompileOptions, compile_text, emit_stage
from compiler.summa import SpmdStream, SpmdSumma, chip_grid_pays
from d1isa.asm import assemble
from d1isa.machine import default_machine, load_machine
from emulator import Emulator

BIG = ("input a: bf16[{m}, {k}]\ninput b: bf16[{k}, {n}]\nc = a @ b\noutput c\n")


def harvested_4x4():
    """A 5 x 4 mesh with a dead node at (2, 1): the grid drops column 2, whose other nodes
    relay (the legs across them are received a round late)."""
    return load_machine(mesh="5x4", overrides={"harvested": [[2, 1]]})


def run(text: str, machine, options=None):
    c = compile_text(text, machine, "t.d1k", options)
    inputs = compiler.make_inputs(c.graph, 0)
    emu = Emulator(c.obj)
    for name, value in inputs.items():
        emu.set_input(name, value)
    res = emu.run()
    assert res.ok, res.report()
    outs = {o.name: emu.output(o.name) for o in c.graph.outputs}
    rows = compiler.compare_outputs(c.graph, outs, compiler.evaluate(c.graph, inputs))
    assert all(r[4] for r in rows), rows
    return c, res


def steps(text: str, machine, options=None) -> list:
    """The matmul steps of the program, as planned for the machine."""
    from compiler.check import check
    from compiler.grad import differentiate
    from compiler.grid import choose_grid
    from compiler.lower import lower, map_to_mesh
    from compiler.parse import parse
    options = options or CompileOptions()
    g = differentiate(check(parse(text, "t.d1k"), machine, "t.d1k", text))
    grid = choose_grid(machine, per_chip=options.chip_grid and chip_grid_pays(g, machine))
    mp = map_to_mesh(g, lower(g), grid, machine, options)
    return [st for st in mp.steps if isinstance(st, Matmul)]


def kinds(text: str, machine, options=None) -> list[str]:
    """Which class each matmul of the program compiles with."""
    return [type(st).__name__ for st in steps(text, machine, options)]


SQUARE = BIG.format(m=256, k=512, n=256)


@pytest.fixture(autouse=True)
def _small_grids_too(monkeypatch):
    """The tests' grids are small: let SpmdSumma take them (compiler.summa.SUMMA_SIDE)."""
    monkeypatch.setattr(summa, "SUMMA_SIDE", 2)


@pytest.mark.parametrize("machine", [load_machine(mesh="4x4"), harvested_4x4()],
                         ids=["4x4", "harvested"])
def test_spmd_summa_is_one_block_per_c_shape_and_exact_enough(machine):
    assert kinds(SQUARE, machine) == ["SpmdSumma"]
    c, res = run(SQUARE, machine)
    obj = c.obj
    grid = c.grid
    grid_blocks = {int(obj.node_block[grid.nodes[i][j]]) for i in range(grid.P)
                   for j in range(grid.Q)}
    assert len(grid_blocks) == 1                     # every grid node runs the same code
    tables = {d.node for d in obj.data}
    assert tables == {grid.nodes[i][j] for i in range(grid.P) for j in range(grid.Q)}
    # the per-node tables differ (each node's rounds and pairs are its own)
    assert len({bytes(d.data) for d in obj.data}) > 1
    again = assemble(emit_stage(SQUARE, "asm", machine, "t.d1k"), "t.d1s", machine)
    assert again.to_bytes() == obj.to_bytes()
    # and it is as fast as the per-node rounds, give or take a few percent
    _, old = run(SQUARE, machine, CompileOptions(spmd=False))
    assert res.cycles <= old.cycles * 1.05


@pytest.mark.parametrize("depth, msg, rounds", [(1, 256, False), (2, 1024, False),
                                                (3, 512, False), (2, 8192, True),
                                                (4, 4096, True)])
def test_spmd_summa_with_shallow_fifos_and_small_messages(depth, msg, rounds):
    """With more chunks a round than the FIFO holds, compiler.matmul cuts rounds into
    sub-rounds, which its per-node code runs; otherwise the shared variants do."""
    machine = load_machine(mesh="4x4", overrides={"fifo_depth": depth, "max_message_bytes": msg})
    (st,) = steps(SQUARE, machine)
    assert isinstance(st, SpmdSumma) and (st.plans is not None) == rounds
    run(SQUARE, machine)


def test_nodes_compute_other_groups_own_pairs_while_they_wait():
    """A node whose first complete pair comes late multiplies the own pair of other groups
    first (stored, loaded again when that group comes), then opens group 0; the table says
    how many, and the program is still one."""
    (st,) = steps(SQUARE, load_machine(mesh="4x4"))
    filled = [p.filled for p in st.plans.values()]
    assert max(filled) > 0 and min(filled) < max(filled)
    c, _ = run(SQUARE, load_machine(mesh="4x4"))
    assert "acc.ld" in c.asm


@pytest.mark.parametrize("machine", [load_machine("h6x5"), load_machine(mesh="4x4"),
                                     load_machine(mesh="3x5")], ids=["h6x5", "4x4", "3x5"])
@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 72, 24), (128, 256, 96), (8, 64, 8),
                                   (16, 8, 200)])
def test_spmd_stream_on_any_grid(monkeypatch, machine, shape):
    """Including blocks that leave whole grid rows or columns without work (they only pass
    blocks on, or do nothing)."""
    monkeypatch.setattr(summa, "SPMD_GRID", 1)
    m, k, n = shape
    text = BIG.format(m=m, k=k, n=n)
    opts = CompileOptions(preskew=False)
    assert kinds(text, machine, opts) == ["SpmdStream"]
    c, _ = run(text, machine, opts)
    again = assemble(emit_stage(text, "asm", machine, "t.d1k", opts), "t.d1s", machine)
    assert again.to_bytes() == c.obj.to_bytes()


@pytest.mark.parametrize("depth, msg", [(1, 4096), (2, 256), (1, 64)])
def test_spmd_stream_with_shallow_fifos(monkeypatch, depth, msg):
    monkeypatch.setattr(summa, "SPMD_GRID", 1)
    machine = load_machine("h6x5", overrides={"fifo_depth": depth, "max_message_bytes": msg})
    text = BIG.format(m=48, k=96, n=40)
    opts = CompileOptions(preskew=False)
    # blocks of more chunks than the FIFO holds go by compiler.matmul's rounds instead
    expect = "SpmdStream" if SpmdStream.applicable(*_operands(text, machine, opts), machine,
                                                    opts) else "Matmul"
    assert kinds(text, machine, opts) == [expect]
    run(text, machine, opts)


def _operands(text, machine, opts):
    from compiler.check import check
    from compiler.grad import differentiate
    from compiler.grid import choose_grid
    from compiler.lower import lower, map_to_mesh
    from compiler.parse import parse
    g = differentiate(check(parse(text, "t.d1k"), machine, "t.d1k", text))
    grid = choose_grid(machine)
    mp = map_to_mesh(g, lower(g), grid, machine, opts)
    st = [s for s in mp.steps if isinstance(s, Matmul)][0]
    return st.ins[0], st.ins[1], grid


def test_small_matmuls_keep_the_per_node_rounds(monkeypatch):
    """Where the shared program would cost more than a few percent (little work a round, a
    small grid), compiler.matmul's per-node code is used."""
    assert kinds(open("programs/matmul.d1k").read(), default_machine()) == ["Matmul"]
    assert kinds(open("programs/mlp.d1k").read(), default_machine()) == ["Matmul", "Matmul"]
    monkeypatch.setattr(summa, "SUMMA_SIDE", 8)
    assert kinds(SQUARE, load_machine(mesh="4x4")) == ["Matmul"]


def test_the_1024_cubed_matmul_on_d1_is_a_small_object():
    c = compile_text(BIG.format(m=1024, k=1024, n=1024), default_machine(), "mm.d1k")
    raw = c.obj.to_bytes()
    assert len(raw) < 1_000_000
    assert len(c.obj.blocks) <= 16
    assert sum(len(b) for b in c.obj.blocks) < 20_000
    assert np.count_nonzero(c.obj.node_block >= 0) == 256 + 90


# K blocks of different widths: 328 = 41 tiles over 8 grid columns (6 or 5 tiles a block)
RAGGED = BIG.format(m=512, k=328, n=512)


def chips_2x2(**overrides):
    return load_machine(mesh="4x4", chips="2x2", overrides=overrides or None)


@pytest.mark.parametrize("depth, msg", [(4, 4096), (2, 4096), (3, 2560)])
def test_spmd_summa_with_k_blocks_of_different_widths_on_several_chips(depth, msg):
    """Each pair's step count comes from the node's table; panels of different sizes (their
    chunks too) pass through the same variants. Several chips only: one chip keeps the
    per-node rounds for such a matmul, so its code does not change."""
    machine = chips_2x2(fifo_depth=depth, max_message_bytes=msg)
    (st,) = steps(RAGGED, machine)
    assert isinstance(st, SpmdSumma) and st.ragged and st.plans is not None
    assert len(set(st.ksteps)) == 2
    c, res = run(RAGGED, machine)
    # as fast as compiler.matmul's per-node code, give or take a few percent
    _, old = run(RAGGED, machine, CompileOptions(spmd=False))
    assert res.cycles <= old.cycles * 1.05
    assert kinds(RAGGED, load_machine(mesh="8x8")) == ["Matmul"]


def _variant_ops(asm: str) -> list[list[str]]:
    """The instructions of each shared round variant (.M<n>_V<k>) of an --emit asm text."""
    out: list[list[str]] = []
    cur = None
    for line in asm.splitlines():
        s = line.strip()
        if s.endswith(":"):
            cur = [] if "_V" in s and s.startswith(".M") else None
            if cur is not None:
                out.append(cur)
        elif cur is not None and s and not s.startswith("."):
            cur.append(s.split()[0])
    return out


def test_spmd_summa_exchange_on_several_chips_keeps_pointers_and_lengths_in_registers():
    """On several chips every chunk of a stream has its pointer and every chunk length its
    register, set once: a forward is its sendb's alone, a receive moves the pointers and takes
    the chunks (no li between messages), and after the exchange each group reads a slot's
    step count from a vector lane. Without the registers to spare (16 scalar registers) the
    exchange sets them per message, as before; both give the reference's results."""
    machine = chips_2x2(max_message_bytes=2560)
    (st,) = steps(RAGGED, machine)
    assert st.ragged and len(st.lens) >= 2 and all(len(p) >= 2 for p in st.ptrs.values())
    asm = emit_stage(RAGGED, "asm", machine, "t.d1k")
    variants = _variant_ops(asm)
    recvs = [v for v in variants if "recvb" in v]
    assert recvs and all(set(v) == {"addi", "recvb", "ld32u", "jalr"} and v.count("ld32u") == 1
                         for v in recvs)
    forwards = [v for v in variants if "sendb" in v and "li" not in v]   # li: own panels
    assert forwards and all("addi" not in v[:v.index("sendb") + 1] for v in forwards)
    assert "vext" in asm
    c, res = run(RAGGED, machine)
    small = chips_2x2(max_message_bytes=2560, scalar_regs=16)
    (st16,) = steps(RAGGED, small)
    assert isinstance(st16, SpmdSumma) and not st16.ptrs
    assert "vext" not in emit_stage(RAGGED, "asm", small, "t.d1k")
    _, res16 = run(RAGGED, small)
    assert res.cycles < res16.cycles


def test_spmd_summa_merges_a_last_single_tile_row_on_several_chips():
    """7 x 7 tiles a node (896 over 16 grid rows): the last tile row's two groups (4 + 3
    tiles) are one group of 7 after the exchange, with the right results; one chip keeps
    eight groups."""
    text = BIG.format(m=896, k=816, n=896)
    machine = load_machine(mesh="8x8", chips="2x2")
    (st,) = steps(text, machine)
    assert isinstance(st, SpmdSumma) and st.ragged
    groups, merged = st._node_groups(56, 56)
    assert merged and [len(g) for g in groups] == [8, 6, 8, 6, 8, 6, 7]
    assert all(p.filled < len(groups) - 1 for p in st.plans.values())
    run(text, machine)
    (one,) = steps(BIG.format(m=896, k=512, n=896), load_machine(mesh="8x8"))
    assert one._node_groups(56, 56)[1] is False


def test_uniform_k_blocks_keep_their_code():
    """Where every K block has the same width, no step count is read from the table."""
    (st,) = steps(BIG.format(m=512, k=512, n=512), chips_2x2())
    assert isinstance(st, SpmdSumma) and not st.ragged and st.ksteps == [8] * 8
