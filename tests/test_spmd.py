"""SPMD code: nodes that play the same role share one code block (compiler.spmd).

Node programs that differ only in the values some `li`s load share one block whose differing
`li`s read registers each node starts with its own value in; modelled cycles and results are
those of the unshared code, exactly; a group needing more registers than are free falls back
to exact sharing; registers a program uses are never taken.
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.pipeline import CompileOptions, compile_text, emit_stage
from compiler.spmd import free_registers, share, used_registers
from d1isa.asm import assemble
from d1isa.asm.program import Instr, InstrSet
from d1isa.machine import default_machine, load_machine
from emulator import Emulator

D1 = default_machine()
M4 = load_machine(mesh="4x4")


def body(instrs: InstrSet, *ops: tuple) -> list:
    return [instrs.instr(m, tuple(args), (1, 1)) for m, *args in ops] + \
        [instrs.instr("halt", (), (1, 1))]


def test_programs_differing_in_li_values_share_one_block():
    instrs = InstrSet(M4)
    bodies = {n: body(instrs, ("li", "r1", 10 * n), ("li", "r2", 7), ("li", "r3", 10 * n),
                      ("li", "r4", n % 2), ("add", "r5", "r1", "r4"))
              for n in range(4)}
    bodies[9] = body(instrs, ("li", "r1", 3), ("halt",))
    groups = share(bodies, instrs, M4)
    assert [g[1] for g in groups] == [[0, 1, 2, 3], [9]]
    shared, nodes, init, _ = groups[0]
    text = [f"{it.mnemonic} {it.ops}" for it in shared if type(it) is Instr]
    # r1 and r3 load the same per-node vector: one register; r2's 7 is common and stays an li
    assert text[:4] == ["mv ('r1', 'r16')", "li ('r2', 7)", "mv ('r3', 'r16')",
                        "mv ('r4', 'r17')"]
    assert init == {n: {16: 10 * n, 17: n % 2} for n in range(4)}
    assert groups[1][2] == {}
    # where each node's items begin in the shared program (for the debugger's step pcs)
    assert groups[0][3][0] == list(range(len(shared) + 1))


def test_too_many_per_node_values_fall_back_to_exact_sharing():
    instrs = InstrSet(M4)
    many = [("li", "r1", 100 * k) for k in range(40)]      # 20 per-node vectors, 16 registers
    bodies = {n: body(instrs, *[(m, r, v + (n if k % 2 else 0)) for k, (m, r, v) in
                                enumerate(many)]) for n in range(3)}
    bodies[3] = list(bodies[0])
    groups = share(bodies, instrs, M4)
    assert [g[1] for g in groups] == [[0, 3], [1], [2]] and all(not g[2] for g in groups)


def test_registers_the_programs_use_are_not_taken():
    instrs = InstrSet(M4)
    bodies = {n: body(instrs, ("li", "r1", n), ("addi", "r16", "r16", 1),
                      ("ld64", "r2", ("r17", 8))) for n in range(2)}
    assert {1, 2, 16, 17} <= used_registers(list(bodies.values()))
    assert free_registers(M4, {16, 17})[:2] == [18, 19]
    groups = share(bodies, instrs, M4)
    assert groups[0][2] == {0: {18: 0}, 1: {18: 1}}
    assert free_registers(load_machine(mesh="4x4", overrides={"scalar_regs": 16}), set()) == []


@pytest.mark.parametrize("path,machine,extra", [("programs/mlp.d1k", D1, 0),
                                                ("programs/layernorm.d1k", M4, 0),
                                                ("programs/softmax.d1k", D1, 11)])
def test_shared_code_runs_exactly_like_unshared_code(path, machine, extra):
    """Same outputs, bit for bit, and the same cycles, but for the one-cycle jumps into relay
    runs of different lengths (softmax's transposes on d1: 11 cycles of 3,051)."""
    text = open(path).read()
    on = compile_text(text, machine, path)
    off = compile_text(text, machine, path, CompileOptions(spmd=False))
    assert len(on.obj.blocks) <= len(off.obj.blocks)
    inputs = compiler.make_inputs(on.graph, 0)
    results = []
    for c in (on, off):
        emu = Emulator(c.obj)
        for name, value in inputs.items():
            emu.set_input(name, value)
        res = emu.run()
        assert res.ok
        results.append((res.cycles, {o.name: emu.output(o.name).tobytes()
                                     for o in c.graph.outputs}, emu.stats()["modelled"]))
    assert results[0][1] == results[1][1]
    assert results[0][0] == results[1][0] + extra
    assert results[0][2]["link_bytes"] == results[1][2]["link_bytes"]
    # the --emit asm text carries the initial registers and re-assembles to the same object
    again = assemble(emit_stage(text, "asm", machine, path), "again.d1s", machine)
    assert again.to_bytes() == on.obj.to_bytes()


def test_nodes_with_their_own_slot_addresses_share_a_block():
    """In the MLP's second matmul (N = 10: two grid columns compute) the nodes of a column
    receive B's panels into slots of their own; they run one block, the addresses in r16.."""
    obj = compile_text(open("programs/mlp.d1k").read(), D1, "mlp.d1k").obj
    shared = 0
    for b in range(len(obj.blocks)):
        nodes = np.nonzero(obj.node_block == b)[0]
        inits = {tuple(sorted(obj.init.of(int(n)).items())) for n in nodes}
        if len(nodes) > 1 and len(inits) > 1:
            shared += 1
            assert all(r >= 16 for row in inits for r, _ in row)
    assert shared >= 5


def walk(body: list, regs: dict[int, int]) -> list[str]:
    """The instructions one node executes in a shared program (mv, li, addi, bnez and jalr
    followed; everything else recorded), given the registers it starts with."""
    from d1isa.asm.program import section
    sec = section(body)
    prog = [it for it in body if type(it) is Instr]
    pcs, pc = [], 0
    for it in prog:
        pcs.append(pc)
        pc += len(it.words)
    at = {p: k for k, p in enumerate(pcs)}
    x = {f"r{r}": v for r, v in regs.items()}
    out, k = [], 0
    while k < len(prog):
        it = prog[k]
        m, ops = it.mnemonic, it.ops
        k += 1
        if m == "li":
            x[ops[0]] = ops[1]
        elif m == "mv":
            x[ops[0]] = x[ops[1]]
        elif m == "addi":
            x[ops[0]] = x.get(ops[1], 0) + ops[2]
        elif m == "bnez":
            if x[ops[0]]:
                k = at[sec.labels[ops[1]]]
        elif m == "jalr":
            k = at[x[ops[1]] + ops[2]]
        else:
            out.append(m)
    return out


def runs(trace: list[str]) -> list[int]:
    counts, n = [], 0
    for m in trace:
        if m == "relay":
            n += 1
        else:
            counts.append(n)
            n = 0
    return counts


def test_relay_runs_of_different_lengths_share_a_block():
    """Relay-only nodes passing on different numbers of messages, and grid nodes relaying
    others' pieces in a transpose, enter one unrolled (or looped) run at their own place."""
    instrs = InstrSet(M4)
    relay = instrs.instr("relay", (3, 1), (1, 1))
    halt = instrs.instr("halt", (), (1, 1))
    send = instrs.instr("sendb", (1, "r14", "r15"), (1, 1))
    lengths = {0: (2, 30), 1: (5, 13), 2: (1, 30), 3: (3, 70)}
    bodies = {n: [send, *[relay] * a, send, *[relay] * b, halt] for n, (a, b) in lengths.items()}
    (shared, nodes, init, index), = share(bodies, instrs, M4)
    assert nodes == [0, 1, 2, 3]
    names = [it.mnemonic for it in shared if type(it) is Instr]
    assert names.count("jalr") == 2 and names.count("relay") == 5 + 4     # unrolled 5; loop
    for n, (a, b) in lengths.items():
        assert runs(walk(shared, init[n])) == [0, a, b], n
    # equal runs stay as they were: plain below RELAY_LOOP_MIN, a counted loop from it
    same = share({0: [send, *[relay] * 3, *[relay] * 0, halt],
                  1: [send, *[relay] * 3, halt]}, instrs, M4)
    assert [len(g[0]) for g in same] == [5] and same[0][2] == {}
    for n in (12, 13, 40):
        (body, _, init, _), = share({0: [send, *[relay] * n, halt]}, instrs, M4)
        assert runs(walk(body, init.get(0, {}))) == [0, n]
        assert sum(1 for it in body if it is relay) == 4 + n % 4
