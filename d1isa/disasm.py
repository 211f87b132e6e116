"""Disassembler: instruction words back to assembly text, driven by the ISA table.

`format_word` renders one word; `disassemble` renders a whole object as a `.d1s` file that the
assembler turns back into the identical object (tested on every program and on random words).
"""

from __future__ import annotations

from d1isa import isa

REG_PREFIX = {"x": "r", "v": "v", "a": "a"}


def format_operand(op: str, values: dict[str, int], pc: int | None = None,
                   labels: dict[int, str] | None = None) -> str:
    """Render one operand of an instruction's format."""
    if op.startswith("["):
        base, imm = values["rs1"], values["imm"]
        if imm == 0:
            return f"[r{base}]"
        return f"[r{base}{imm:+d}]"
    field, kind = isa.OPERANDS[op]
    v = values[field]
    if kind in REG_PREFIX:
        return f"{REG_PREFIX[kind]}{v}"
    if kind == "dir":
        return isa.DIR_NAMES[v]
    if kind == "float":
        return _float_text(v)
    if kind == "label":
        if labels is not None and pc is not None and (pc + v) in labels:
            return labels[pc + v]
        return f"{v:+d}"
    return str(v)


def _float_text(bits: int) -> str:
    """An fp32 immediate as text that parses back to the same bits."""
    x = isa.bits_f32(bits)
    if x != x or x in (float("inf"), float("-inf")):
        return f"0x{bits:08x}"
    text = repr(x)
    if isa.f32_bits(float(text)) != bits:
        return f"0x{bits:08x}"
    return text


def format_word(word: int, pc: int | None = None, labels: dict[int, str] | None = None) -> str:
    """One instruction as assembly text, or `.word 0x...` if the word is not a valid instruction.

    With `pc` and `labels` (pc -> label), branch targets print as label names; otherwise as
    signed offsets such as `+3`.
    """
    try:
        ins, values = isa.decode(word)
    except isa.EncodingError:
        return f".word 0x{word & 0xFFFFFFFFFFFFFFFF:016x}"
    ops = ", ".join(format_operand(op, values, pc, labels) for op in ins.operands)
    return f"{ins.mnemonic} {ops}".rstrip()
