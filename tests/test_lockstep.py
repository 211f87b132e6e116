"""The fast emulator and the reference interpreter in lock step, compared after every instruction.

test_differential.py compares the two at the end of a run; here both are driven one instruction
at a time, node by node in an explicit order (`ReferenceEmulator.step(node)` and
`Emulator.step(1, node=id)`), and their whole state dicts are compared after every turn with
`emulator.reference.compare_states`: registers, pc, node state and trap cause, SRAM, FIFOs,
link timing, clocks and every statistic. A turn on a blocked node that cannot move is compared
too (both must leave everything as it was). So a disagreement is caught at the instruction that
causes it, not only through what it leaves behind.

Programs: the examples in programs/asm assembled for a 4 x 4 mesh; small DSL programs compiled
for 2 x 2 and 4 x 4 (their inputs placed in SRAM by an Emulator's set_input, then baked into
the object as data so both interpreters start from the same bytes); and hypothesis-generated
straight-line compute programs and send/receive programs (built with test_differential's
generators) on 2 x 2 and 3 x 2 meshes, each run in a drawn node order. SRAM is shrunk (8 KiB
for the examples, 16 KiB for the DSL programs, 2 KiB for the random ones) so that a full state
comparison per instruction stays cheap.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_differential import (
    compute_words,
    message_kind,
    prologue,
    recv_words,
    relay_words,
    send_words,
    small_machine,
    sram_image,
)

import compiler
from d1isa.asm import assemble_file
from d1isa.disasm import format_word
from d1isa.isa import encode as E
from d1isa.machine import OPPOSITE, load_machine
from d1isa.objfile import CodeBlock, DataInit, ObjectFile
from emulator import Emulator
from emulator.reference import HALTED, TRAPPED, ReferenceEmulator, compare_states

ROOT = Path(__file__).resolve().parents[1]
ASM = ROOT / "programs" / "asm"
MAX_CYCLES = 200_000
MAX_TURNS = 20_000


class Lockstep:
    """Both interpreters on one object, stepped together and compared after every turn."""

    def __init__(self, obj: ObjectFile, seed: int = 0, max_cycles: int = MAX_CYCLES) -> None:
        self.obj = obj
        self.ref = ReferenceEmulator(obj, seed=seed, max_cycles=max_cycles)
        self.fast = Emulator(obj, seed=seed, max_cycles=max_cycles)
        self.instructions = 0
        self.turns = 0
        self.state = self.compare("after loading")

    def compare(self, where: str) -> dict:
        ref_state, fast_state = self.ref.state_dict(), self.fast.state_dict()
        if not identical(ref_state, fast_state):
            diffs = compare_states(ref_state, fast_state)
            assert not diffs, (f"reference (left) and fast emulator (right) disagree {where}:"
                               "\n  " + "\n  ".join(diffs))
        return ref_state

    def instruction_at(self, nid: int) -> str:
        pc = int(self.state["pc"][nid])
        block = self.obj.block_of(nid)
        if block is None or not 0 <= pc < len(block.words):
            return f"node {nid} pc {pc} (outside its code)"
        try:
            text = format_word(int(block.words[pc]))
        except Exception:          # an undecodable word: show its bits
            text = f"{int(block.words[pc]):#018x}"
        return f"node {nid} pc {pc}: {text}"

    def turn(self, nid: int) -> bool:
        """One instruction on node nid in both (or one attempt, if it is blocked)."""
        where = f"after turn {self.turns} ({self.instruction_at(nid)})"
        with np.errstate(all="ignore"):
            done = self.ref.step(self.ref.nodes[nid])
        executed = self.fast.step(1, node=nid).instructions
        assert executed == int(done), f"{where}: reference completed {done}, fast {executed}"
        self.state = self.compare(where)
        self.turns += 1
        self.instructions += int(done)
        return done

    def run(self, order=None) -> str:
        """Round-robin turns over `order` (default: node ids) until a round makes no progress;
        the reference's final status, after checking the fast emulator agrees it is done.

        A blocked node is tried again only after some instruction has completed since its
        last try: before that nothing it waits for can have changed."""
        order = list(range(self.ref.n)) if order is None else list(order)
        tried_at = {}
        while True:
            progress = False
            for nid in order:
                if self.state["state"][nid] >= HALTED or tried_at.get(nid) == self.instructions:
                    continue
                if self.turn(nid):
                    progress = True
                    tried_at.pop(nid, None)
                else:
                    tried_at[nid] = self.instructions
                assert self.turns < MAX_TURNS, "lock-step run did not finish"
            if not progress:
                break
        status = self.ref.status()
        after = self.fast.run()
        assert after.instructions == 0
        # The reference calls every run left blocked a deadlock; the fast emulator says "stuck"
        # when the waits form no cycle.
        assert after.status == status or (after.status, status) == ("stuck", "deadlock")
        return status


def identical(a: dict, b: dict) -> bool:
    """A quick exact comparison of two state dicts; compare_states explains any difference."""
    if a.keys() != b.keys() or a["stats"].keys() != b["stats"].keys():
        return False
    for key in a:
        if key == "fifos":
            if [[(int(n), int(t), bytes(p)) for n, t, p in q] for q in a[key]] != \
                    [[(int(n), int(t), bytes(p)) for n, t, p in q] for q in b[key]]:
                return False
        elif key == "stats":
            if not all(_same_array(a[key][k], b[key][k]) for k in a[key]):
                return False
        elif not _same_array(a[key], b[key]):
            return False
    return True


def _same_array(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and np.array_equal(a, b)


def bake_inputs(obj: ObjectFile, inputs: dict[str, np.ndarray]) -> ObjectFile:
    """`obj` with `inputs` scattered into SRAM as initial data (by Emulator.set_input), so that
    both interpreters start from the same bytes and the same high-water marks."""
    loader = Emulator(obj)
    for name, value in inputs.items():
        loader.set_input(name, value)
    sd = loader.state_dict()
    data = [DataInit(node, 0, sd["sram"][node, :hwm].tobytes())
            for node, hwm in enumerate(sd["stats"]["sram_hwm"]) if hwm > 0]
    return replace(obj, data=data)


@pytest.fixture(scope="module")
def m4x4():
    return load_machine(mesh="4x4", overrides={"sram_bytes": 8192})


# ---- the harness ------------------------------------------------------------------------------

def test_the_harness_catches_one_flipped_register_bit_at_the_next_turn(m4x4):
    run = Lockstep(assemble_file(ASM / "matmul8.d1s", m4x4))
    run.turn(0)
    snap = run.fast.snapshot()
    snap["x"][0, 7] ^= 1                    # matmul8 never touches r7
    run.fast.restore(snap)
    with pytest.raises(AssertionError, match=r"x \[node 0 r7\]: 0 != 1"):
        run.turn(0)


# ---- the example programs ---------------------------------------------------------------------

@pytest.mark.parametrize("name, status", [
    ("matmul8", "halted"),
    ("row_broadcast", "halted"),
    ("token_ring", "halted"),
    ("deadlock", "deadlock"),
    ("trap", "trapped"),
])
def test_example_program_agrees_after_every_instruction(m4x4, name: str, status: str):
    run = Lockstep(assemble_file(ASM / f"{name}.d1s", m4x4))
    assert run.run() == status
    assert run.instructions > 0


def test_the_node_order_changes_the_interleaving_but_not_the_result(m4x4):
    obj = assemble_file(ASM / "token_ring.d1s", m4x4)
    by_id = Lockstep(obj)
    by_id.run()
    reverse = Lockstep(obj)
    reverse.run(reversed(range(m4x4.n_live)))
    assert reverse.turns != by_id.turns        # a different interleaving really ran ...
    assert not compare_states(by_id.state, reverse.state)     # ... to the same end state


# ---- compiled DSL programs --------------------------------------------------------------------

DSL = {
    "bf16-chain": "input x: bf16[16, 32]\ninput r: bf16[32]\n"
                  "y = tanh(x) * sigmoid(x + r) - 0.5\noutput y\n",
    "matmul": "input a: bf16[16, 16]\ninput b: bf16[16, 16]\nc = a @ b\noutput c\n",
    "reduce-softmax": "input x: f32[16, 16]\ns = sum(x, axis=1)\np = softmax(x, axis=0)\n"
                      "output s, p\n",
    "transpose": "input x: f32[16, 8]\ny = transpose(x) * 2\noutput y\n",
}


@pytest.mark.parametrize("mesh, name", [
    ("2x2", "bf16-chain"),
    ("2x2", "matmul"),
    ("4x4", "matmul"),
    ("2x2", "reduce-softmax"),
    ("4x4", "transpose"),
])
def test_compiled_program_agrees_after_every_instruction(mesh: str, name: str):
    m = load_machine(mesh=mesh, overrides={"sram_bytes": 16384})
    text = DSL[name]
    obj = compiler.compile_source(text, m, f"{name}.d1k")
    graph = compiler.check_source(text, m)
    run = Lockstep(bake_inputs(obj, compiler.make_inputs(graph, seed=1)))
    assert run.run() == "halted"
    assert run.instructions > 50


# ---- random programs --------------------------------------------------------------------------

LOCKSTEP_SETTINGS = settings(max_examples=12, deadline=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])


def make_object(m, programs: dict[int, list[int]], data_seed: int) -> ObjectFile:
    blocks, node_block = [], np.full(m.n_live, -1, dtype=np.int32)
    for node, words in sorted(programs.items()):
        node_block[node] = len(blocks)
        blocks.append(CodeBlock(np.array([w & ((1 << 64) - 1) for w in words],
                                         dtype=np.uint64)))
    data = [DataInit(node, 0, sram_image(data_seed * 1000 + node)) for node in programs]
    return ObjectFile(m, blocks, node_block, data)


@st.composite
def straight_line(draw):
    """Compute-only programs without branches (test_differential's safe kinds) on one to four
    nodes, and an order to step the nodes in."""
    m = small_machine(draw(st.sampled_from(("2x2", "3x2"))), 2, 1, 64)
    nodes = draw(st.lists(st.integers(0, m.n_live - 1), min_size=1, max_size=4, unique=True))
    programs = {}
    for node in nodes:
        words = prologue(draw)
        for _ in range(draw(st.integers(1, 25))):
            words += compute_words(draw, len(words), safe=True)
        programs[node] = words + [E("halt")]
    obj = make_object(m, programs, draw(st.integers(0, 1 << 16)))
    return obj, draw(st.integers(0, 3)), draw(st.permutations(range(m.n_live)))


@st.composite
def messages(draw):
    """Matched sends, receives and relays between neighbours, issued in one global order (so
    they cannot deadlock), after a short prologue; and an order to step the nodes in."""
    m = small_machine(draw(st.sampled_from(("2x2", "3x2"))), draw(st.sampled_from((1, 2))),
                      draw(st.sampled_from((0, 3))), draw(st.sampled_from((8, 64))))
    nbr = m.neighbors
    items: dict[int, list[list[int]]] = {node: [] for node in range(m.n_live)}
    for _ in range(draw(st.integers(1, 10))):
        s = draw(st.integers(0, m.n_live - 1))
        d = draw(st.sampled_from([d for d in range(4) if nbr[s, d] >= 0]))
        t = int(nbr[s, d])
        kind, length = message_kind(draw)
        items[s].append(send_words(draw, kind, length, d))
        if draw(st.integers(0, 3)) == 0:
            d2 = draw(st.sampled_from([e for e in range(4) if nbr[t, e] >= 0]))
            items[t].append(relay_words(draw, length, OPPOSITE[d], d2))
            t, d = int(nbr[t, d2]), d2
        items[t].append(recv_words(draw, kind, length, OPPOSITE[d]))
    programs = {}
    for node, ops in items.items():
        start = [E("movi", rd=r, imm=draw(st.integers(-(1 << 31), (1 << 31) - 1)))
                 for r in range(5, 13)] + [E("vld", rd=v, rs1=0, imm=64 * v) for v in range(8)]
        programs[node] = start + [w for op in ops for w in op] + [E("halt")]
    obj = make_object(m, programs, draw(st.integers(0, 1 << 16)))
    return obj, draw(st.integers(0, 3)), draw(st.permutations(range(m.n_live)))


@LOCKSTEP_SETTINGS
@given(case=straight_line())
def test_random_straight_line_programs_agree_after_every_instruction(case):
    obj, seed, order = case
    run = Lockstep(obj, seed=seed, max_cycles=3000)
    assert run.run(order) in ("halted", "trapped")
    # Without branches every node with code ran to its halt or trapped on the way.
    coded = [n for n in range(obj.machine.n_live) if obj.block_of(n) is not None]
    assert all(run.state["state"][n] in (HALTED, TRAPPED) for n in coded)


@LOCKSTEP_SETTINGS
@given(case=messages())
def test_random_message_programs_agree_after_every_instruction(case):
    obj, seed, order = case
    run = Lockstep(obj, seed=seed)
    assert run.run(order) in ("halted", "trapped")
