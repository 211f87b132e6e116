"""Trap causes: the one list shared by the emulator, the reference interpreter and the docs."""

from __future__ import annotations

ILLEGAL_INSTRUCTION = 1
PC_OUT_OF_RANGE = 2
SRAM_OUT_OF_RANGE = 3
MISALIGNED = 4
NO_NEIGHBOUR = 5
BAD_MESSAGE_LENGTH = 6
MESSAGE_LENGTH_MISMATCH = 7
USER_TRAP = 8
CYCLE_LIMIT = 9

# code -> (short name, explanation)
CAUSES: dict[int, tuple[str, str]] = {
    ILLEGAL_INSTRUCTION: ("illegal instruction",
                          "an invalid word, or a register or accumulator the machine lacks"),
    PC_OUT_OF_RANGE: ("pc out of range", "execution left the node's code"),
    SRAM_OUT_OF_RANGE: ("SRAM access out of range", "an address outside 0..sram_bytes - 1"),
    MISALIGNED: ("misaligned SRAM access", "an address not aligned as the instruction requires"),
    NO_NEIGHBOUR: ("no neighbour", "a send or receive toward the mesh edge"),
    BAD_MESSAGE_LENGTH: ("bad message length",
                         "a block send of 0 or more than max_message_bytes bytes"),
    MESSAGE_LENGTH_MISMATCH: ("message length mismatch",
                              "a receive expecting a different length than the message"),
    USER_TRAP: ("user trap", "the `trap` instruction; its code is reported"),
    CYCLE_LIMIT: ("cycle limit exceeded", "the node's clock passed the run's `--max-cycles`"),
}


def cause_name(code: int) -> str:
    return CAUSES.get(code, (f"unknown cause {code}", ""))[0]
