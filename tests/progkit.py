"""Helpers shared by the tests that build small programs word by word (no assembler)."""

from __future__ import annotations

import struct

import numpy as np

from d1isa.isa import encode as E
from d1isa.isa import f32_bits
from d1isa.machine import load_machine
from d1isa.objfile import CodeBlock, DataInit, ObjectFile

MASK64 = (1 << 64) - 1
N, EAST, S, W = 0, 1, 2, 3
SRAM = 4096


def machine(mesh: str = "2x2", **overrides):
    """A small machine (4 KiB of SRAM per node unless overridden); 'h6x5' has harvested nodes."""
    overrides.setdefault("sram_bytes", SRAM)
    if mesh == "h6x5":
        return load_machine("h6x5", overrides=overrides)
    return load_machine(mesh=mesh, overrides=overrides)


def make_obj(m, programs: dict[int, list[int]], data=(), tensors=()) -> ObjectFile:
    """An object where node id -> its instruction words; other nodes have no code."""
    blocks, node_block = [], np.full(m.n_live, -1, dtype=np.int32)
    for node, words in programs.items():
        node_block[node] = len(blocks)
        blocks.append(CodeBlock(np.array([w & MASK64 for w in words], dtype=np.uint64)))
    return ObjectFile(m, blocks, node_block, [DataInit(*d) for d in data],
                      tensors=list(tensors))


def li(rd: int, value: int) -> list[int]:
    """movi + movhi: any 64-bit constant."""
    value &= MASK64
    low = value & 0xFFFF_FFFF
    low = low - (1 << 32) if low >> 31 else low
    return [E("movi", rd=rd, imm=low), E("movhi", rd=rd, uimm=value >> 32)]


def F(x: float) -> int:
    return f32_bits(x)


def vec(lanes: list[int]) -> bytes:
    """16 fp32 lanes (bit patterns) as 64 bytes; missing lanes are zero."""
    lanes = list(lanes) + [0] * (16 - len(lanes))
    return struct.pack("<16I", *lanes)


def compile_program(text: str, m, filename: str, options=None) -> ObjectFile:
    """Compile a program for `m` (every op of the language has a mesh kernel)."""
    import compiler
    return compiler.compile_source(text, m, filename, options)


def run_and_compare(obj: ObjectFile, text: str, m, filename: str, seed: int = 0,
                    max_cycles: int = 20_000_000):
    """Run a compiled .d1k program with seeded inputs (and params from their INIT, with the same
    seed) and compare every output, and every param a training program updates (under
    `compiler.update_key(NAME)`: the param after the step), with the numpy
    reference under the --check tolerance (each must pass). Returns (rows of
    compiler.compare_outputs, emulator, run result, outputs and updated params by name)."""
    import compiler
    from emulator import Emulator

    graph = compiler.check_source(text, m, filename)
    inputs = compiler.make_inputs(graph, seed)
    params = compiler.init_params(graph, seed)
    emu = Emulator(obj, max_cycles=max_cycles)
    for name, value in (inputs | params).items():
        emu.set_input(name, value)
    result = emu.run()
    assert result.ok, result.report()
    outs = {o.name: emu.output(o.name) for o in graph.outputs}
    outs.update({compiler.update_key(u.param.name): emu.output(u.param.name)
                 for u in graph.updates})
    rows = compiler.compare_outputs(graph, outs, compiler.evaluate(graph, inputs, params))
    for name, abs_err, rel_err, tol, ok in rows:
        assert ok, (f"{filename}: {name}: max |err| {abs_err:.3g} > {tol:.3g} "
                    f"(relative {rel_err:.3g})")
    return rows, emu, result, outs
