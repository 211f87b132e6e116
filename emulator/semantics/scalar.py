"""Scalar, control and system instructions, except the loads and stores (semantics.memory).

Why a helper although the run loop's inner loop runs the frequent ones itself: this is the
general path, for the rare instructions (div, slt, getx, srseed, ...) and for any instruction
the inner loop leaves to the outer one (a debugger stop flag); branches and jumps report their
target and the loop checks it.
"""

from __future__ import annotations

import numpy as np

from emulator.constants import K_HEIGHT, K_NODES, K_WIDTH, S_HALT, S_ILLEGAL, S_JUMP, S_NEXT, S_TRAP
from emulator.jit.helper import helper
from emulator.numerics import div_signed, div_unsigned, rem_signed, rem_unsigned
from emulator.opcodes import (
    ADD,
    ADDI,
    AND,
    ANDI,
    BEQ,
    BGE,
    BGEU,
    BLT,
    BLTU,
    BNE,
    DIV,
    DIVU,
    GETH,
    GETID,
    GETN,
    GETW,
    GETX,
    GETY,
    HALT,
    JAL,
    JALR,
    MOVHI,
    MOVI,
    MUL,
    MULI,
    NOP,
    OR,
    ORI,
    RDCYCLE,
    REM,
    REMU,
    SEQ,
    SLL,
    SLLI,
    SLT,
    SLTI,
    SLTIU,
    SLTU,
    SRA,
    SRAI,
    SRL,
    SRLI,
    SRSEED,
    SUB,
    TRAP,
    XOR,
    XORI,
)


@helper
def scalar_op(op, node, rd, rs1, rs2, imm, p, c, x, xy, sr, sr_init, cfg):
    """Every scalar, control and system instruction except memory, at pc p and clock c.

    Returns (status, target): S_NEXT, S_JUMP to pc `target` (a taken branch or jump, maybe out
    of the code), S_HALT, S_TRAP (user trap) or S_ILLEGAL. The run loop executes the frequent
    ones itself; this is the general path (rare ones, and any instruction after a stop flag).
    """
    a = x[node, rs1]
    b = x[node, rs2]
    si = np.int64(np.int32(imm))
    if op == ADD:
        x[node, rd] = a + b
    elif op == SUB:
        x[node, rd] = a - b
    elif op == AND:
        x[node, rd] = a & b
    elif op == OR:
        x[node, rd] = a | b
    elif op == XOR:
        x[node, rd] = a ^ b
    elif op == SLL:
        x[node, rd] = a << (b & 63)
    elif op == SRL:
        x[node, rd] = np.int64(np.uint64(a) >> np.uint64(b & 63))
    elif op == SRA:
        x[node, rd] = a >> (b & 63)
    elif op == SLT:
        x[node, rd] = 1 if a < b else 0
    elif op == SLTU:
        x[node, rd] = 1 if np.uint64(a) < np.uint64(b) else 0
    elif op == SEQ:
        x[node, rd] = 1 if a == b else 0
    elif op == MUL:
        x[node, rd] = a * b
    elif op == DIV:
        x[node, rd] = div_signed(a, b)
    elif op == DIVU:
        x[node, rd] = div_unsigned(a, b)
    elif op == REM:
        x[node, rd] = rem_signed(a, b)
    elif op == REMU:
        x[node, rd] = rem_unsigned(a, b)
    elif op == ADDI:
        x[node, rd] = a + si
    elif op == ANDI:
        x[node, rd] = a & si
    elif op == ORI:
        x[node, rd] = a | si
    elif op == XORI:
        x[node, rd] = a ^ si
    elif op == SLLI:
        x[node, rd] = a << np.int64(imm & 63)
    elif op == SRLI:
        x[node, rd] = np.int64(np.uint64(a) >> np.uint64(imm & 63))
    elif op == SRAI:
        x[node, rd] = a >> np.int64(imm & 63)
    elif op == SLTI:
        x[node, rd] = 1 if a < si else 0
    elif op == SLTIU:
        x[node, rd] = 1 if np.uint64(a) < np.uint64(si) else 0
    elif op == MULI:
        x[node, rd] = a * si
    elif op == MOVI:
        x[node, rd] = si
    elif op == MOVHI:
        x[node, rd] = (np.int64(imm) << 32) | (x[node, rd] & 0xFFFFFFFF)
    elif op == BEQ:
        if a == b:
            return S_JUMP, p + si
    elif op == BNE:
        if a != b:
            return S_JUMP, p + si
    elif op == BLT:
        if a < b:
            return S_JUMP, p + si
    elif op == BGE:
        if a >= b:
            return S_JUMP, p + si
    elif op == BLTU:
        if np.uint64(a) < np.uint64(b):
            return S_JUMP, p + si
    elif op == BGEU:
        if np.uint64(a) >= np.uint64(b):
            return S_JUMP, p + si
    elif op == JAL:
        x[node, rd] = p + 1
        return S_JUMP, p + si
    elif op == JALR:
        x[node, rd] = p + 1
        return S_JUMP, a + si          # rs1 was read before rd was written
    elif op == NOP:
        pass
    elif op == HALT:
        return S_HALT, 0
    elif op == TRAP:
        return S_TRAP, 0
    elif op == GETX:
        x[node, rd] = xy[node, 0]
    elif op == GETY:
        x[node, rd] = xy[node, 1]
    elif op == GETID:
        x[node, rd] = xy[node, 2]       # the machine's node id (the row may be a rank's share)
    elif op == GETW:
        x[node, rd] = cfg[K_WIDTH]
    elif op == GETH:
        x[node, rd] = cfg[K_HEIGHT]
    elif op == GETN:
        x[node, rd] = cfg[K_NODES]
    elif op == RDCYCLE:
        x[node, rd] = c
    elif op == SRSEED:
        s = np.uint64(a)
        sr[node] = sr_init[node] if s == 0 else s
    else:
        return S_ILLEGAL, 0
    return S_NEXT, 0
