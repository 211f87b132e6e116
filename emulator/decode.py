"""Decoding an object's code, once, in plain Python, into the table the jitted loop runs.

Every code block is decoded with `d1isa.isa.decode_array` and concatenated into one uint32 table
of `CODE_COLS` columns per instruction slot. Unsigned columns let Numba index register files
without negative-index wraparound. The table already answers every question that does not depend
on run-time values:

- an invalid word, or an operand naming a register, vector register or accumulator the machine
  does not have, gets opcode `ILLEGAL` (the loop traps with cause 1 when it reaches it);
- a scalar destination `r0` is redirected to a sink column (XCOL_SINK) of the register row,
  so writes to r0 vanish without a test in the loop and r0 keeps reading 0;
- the instruction's cycle cost, and the register-row column of its timing class's counter
  (XCOL_COUNT + class index), sit next to its fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d1isa import isa
from d1isa.machine import MAX_REGS, TIMING_CLASSES, Machine
from d1isa.objfile import LINE_COLS, CodeBlock, ObjectFile
from emulator.opcodes import FELL_OFF, ILLEGAL, INNER, INNER_MASK, REAL_SHIFT, STOP_MARK

# Columns of the decoded table.
C_OP, C_RD, C_RS1, C_RS2, C_RS3, C_IMM, C_CLS, C_COST = range(8)
CODE_COLS = 8

# Layout of a node's row of the register array x: the scalar registers (up to the encoding's
# 64), a sink column that writes to r0 go to, then the node's counters, so the run loop reaches
# all of them through the one row it already holds.
XCOL_SINK = MAX_REGS                    # writes to r0 land here
XCOL_HWM = MAX_REGS + 1                 # SRAM high-water mark (highest written byte + 1)
XCOL_FLOPS = MAX_REGS + 2               # FLOPs
XCOL_COUNT = MAX_REGS + 3               # instructions per timing class (TIMING_CLASSES order)
# The node's claim word: 1 while a thread runs a turn of it (emulator.sync), 0 otherwise.
XCOL_CLAIM = XCOL_COUNT + len(TIMING_CLASSES)
# Rows are padded to whole 64-byte cache lines (State aligns the array), so no two nodes share
# a line: with threads, neighbouring nodes of two ranges never write the same line.
XCOLS = (XCOL_CLAIM + 1 + 7) // 8 * 8

# Opcode values beyond the ISA's 0..255 (ILLEGAL, FELL_OFF), the inner-loop indexes of the
# instructions the run loop's inner loop executes itself (INNER: opcode -> index), and the
# flag of a debugger stop (STOP_MARK) are emulator.opcodes', the numbers the loop dispatches on:
# the table the kernel runs holds each slot's inner index (0: any other instruction), so the
# inner loop dispatches through one dense jump table; the real opcodes travel beside it.

# Register-file kinds of the operands that name registers.
_REG_KIND_LIMIT = {"x": "scalar_regs", "v": "vector_regs", "a": "accumulators"}


def _register_slots() -> dict[int, list[tuple[int, str]]]:
    """opcode -> [(table column, register kind)] for every register operand."""
    column = {"rd": C_RD, "rs1": C_RS1, "rs2": C_RS2, "rs3": C_RS3}
    out: dict[int, list[tuple[int, str]]] = {}
    for ins in isa.INSTRUCTIONS:
        slots = []
        for operand in ins.operands:
            if operand.startswith("["):
                slots.append((C_RS1, "x"))
                continue
            field, kind = isa.OPERANDS[operand]
            if kind in _REG_KIND_LIMIT:
                slots.append((column[field], kind))
        out[ins.opcode] = slots
    return out


REGISTER_SLOTS = _register_slots()
# Opcodes that write a scalar register through rd (redirected when it is r0).
SCALAR_DEST_OPCODES = frozenset(isa.opcodes_where(lambda i: i.writes == "x"))


@dataclass
class CodeTable:
    """The decoded code of a whole object."""

    table: np.ndarray        # uint32[total, CODE_COLS]
    words: np.ndarray        # uint64[total]: the original words (for disassembly)
    lines: np.ndarray        # int32[total, 5]: line table rows
    node_base: np.ndarray    # int64[n]: first slot of each node's code
    node_len: np.ndarray     # int64[n]: instructions in each node's code (0 = no code)
    block_base: np.ndarray   # int64[blocks]

    @property
    def total(self) -> int:
        return int(self.table.shape[0])


def decode_words(words: np.ndarray, machine: Machine) -> np.ndarray:
    """Decode uint64 words into the emulator's uint32 table (see the module docstring)."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    rows = isa.decode_array(words) if len(words) else np.zeros((0, 6), dtype=np.int64)
    n = rows.shape[0]
    out = np.zeros((n, CODE_COLS), dtype=np.uint32)
    op = rows[:, 0]
    legal = op >= 0
    limits = {k: getattr(machine, attr) for k, attr in _REG_KIND_LIMIT.items()}
    safe_op = np.where(legal, op, 0)
    for opcode, slots in REGISTER_SLOTS.items():
        sel = legal & (safe_op == opcode)
        if not sel.any():
            continue
        for col, kind in slots:
            bad = sel & (rows[:, col] >= limits[kind])
            legal &= ~bad
    cls_of = isa.timing_class_index()
    cost_of = isa.costs_by_opcode(machine)
    out[:, C_OP] = np.where(legal, op, ILLEGAL).astype(np.uint32)
    for col in (C_RD, C_RS1, C_RS2, C_RS3):
        out[:, col] = rows[:, col].astype(np.uint32)
    # The raw low 32 bits; the loop sign-extends where the field is signed.
    out[:, C_IMM] = (words & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    out[:, C_CLS] = (XCOL_COUNT + np.where(legal, cls_of[safe_op], 0)).astype(np.uint32)
    out[:, C_COST] = np.where(legal, cost_of[safe_op], 0).astype(np.uint32)
    dest = legal & np.isin(safe_op, np.fromiter(SCALAR_DEST_OPCODES, dtype=np.int64))
    out[dest & (rows[:, C_RD] == 0), C_RD] = XCOL_SINK
    return out


def written_registers(code: CodeTable, vector_regs: int, accumulators: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per node: how many of its vector registers and accumulator tiles its code can ever
    write, as one past the highest that any of its instructions names as destination (an
    instruction writes at most its destination, isa `writes`). The others stay as they were
    set before the code ran; `State.restart` need not zero them again."""
    op = code.table[:, C_OP].astype(np.int64)
    dest = code.table[:, C_RD].astype(np.int64) + 1
    known = op < 256
    safe = np.where(known, op, 0)
    out = []
    for kind, limit in (("v", vector_regs), ("a", accumulators)):
        writes = np.zeros(256, dtype=bool)
        writes[list(isa.opcodes_where(lambda i, kind=kind: i.writes == kind))] = True
        used = np.where(known & writes[safe], np.minimum(dest, limit), 0)
        per_block = (np.maximum.reduceat(used, code.block_base) if code.block_base.size
                     else np.zeros(0, dtype=np.int64))
        block = np.searchsorted(code.block_base, code.node_base, side="right") - 1
        rows = np.where(code.node_len > 0, per_block[np.maximum(block, 0)]
                        if per_block.size else 0, 0)
        out.append(np.ascontiguousarray(rows, dtype=np.int64))
    return out[0], out[1]


def decode_object(obj: ObjectFile) -> CodeTable:
    """Concatenate and decode every block of `obj`, with per-node code base and length.

    Each block is followed by one FELL_OFF sentinel slot, so running off the end of a node's
    code traps without a range check per instruction.
    """
    return decode_blocks(obj.machine, obj.blocks, obj.node_block)


def decode_blocks(m: Machine, blocks: list[CodeBlock], node_block: np.ndarray) -> CodeTable:
    """decode_object for a list of blocks and the block index of each node row (-1: no code):
    the whole object's, or an MPI rank's share of them (emulator.distributed)."""
    sizes = np.array([len(b) for b in blocks], dtype=np.int64)
    block_base = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes):
        block_base[1:] = np.cumsum(sizes + 1)[:-1]
    tables, words, lines = [], [], []
    for b in blocks:
        tables.append(decode_words(b.words, m))
        tables.append(_SENTINEL)
        words.append(np.asarray(b.words, dtype=np.uint64))
        words.append(np.zeros(1, dtype=np.uint64))
        lines.append(np.asarray(b.lines, dtype=np.int32))
        lines.append(np.full((1, LINE_COLS), -1, dtype=np.int32))
    if tables:
        table = np.ascontiguousarray(np.concatenate(tables))
        all_words = np.concatenate(words)
        all_lines = np.concatenate(lines)
    else:
        table = np.zeros((0, CODE_COLS), dtype=np.uint32)
        all_words = np.zeros(0, dtype=np.uint64)
        all_lines = np.zeros((0, LINE_COLS), dtype=np.int32)
    nb = np.asarray(node_block, dtype=np.int64)
    has = nb >= 0
    safe = np.where(has, nb, 0)
    node_base = np.where(has, block_base[safe], 0) if len(sizes) else np.zeros(len(nb), np.int64)
    node_len = np.where(has, sizes[safe], 0) if len(sizes) else np.zeros(len(nb), np.int64)
    return CodeTable(table, all_words, all_lines, node_base.astype(np.int64),
                     node_len.astype(np.int64), block_base)


def _inner_lookup() -> np.ndarray:
    out = np.zeros(FELL_OFF + 1, dtype=np.uint32)
    for opcode, idx in INNER.items():
        out[opcode] = idx
    assert out.max() < STOP_MARK
    return out


_INNER_OF = _inner_lookup()


def kernel_table(table: np.ndarray, stop_flags: np.ndarray | None = None) -> np.ndarray:
    """The flat table the kernel runs: column C_OP holds the inner-loop index (0 for others),
    or STOP_MARK where a stop flag is set, in its low bits (INNER_MASK) and the real opcode
    above them (REAL_SHIFT). `table` keeps the real opcodes alone."""
    run = table.copy()
    real = table[:, C_OP]
    inner = _INNER_OF[real]
    if stop_flags is not None:
        inner[stop_flags != 0] = STOP_MARK
    assert inner.max(initial=0) <= INNER_MASK
    run[:, C_OP] = inner | (real << np.uint32(REAL_SHIFT))
    return np.ascontiguousarray(run).reshape(-1)


_SENTINEL = np.zeros((1, CODE_COLS), dtype=np.uint32)
_SENTINEL[0, C_OP] = FELL_OFF
