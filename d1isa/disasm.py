"""Disassembler: instruction words back to assembly text, driven by the ISA table.

`format_word` renders one word; `disassemble` renders a whole object as a `.d1s` file that the
assembler turns back into the identical object (tested on every program and on random words).

With `debug=True` the text carries everything the object holds as directives: `.machine` (the
full parameters), `.meta`, `.file`, `.source`, `.symbol`, and a `.loc` before each instruction
whose line-table row differs from the previous one. Their presence puts the assembler in
"explicit" mode, where these directives *are* the line table, sources and symbol table. Branch
targets get local labels `.L<pc>` (local labels never become symbols). With `debug=False` the
text is a readable listing, still valid assembly, with source locations as comments.
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np

from d1isa import isa
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS, Machine
from d1isa.objfile import ObjectFile

# d1isa.asm (is_plain_name, quote) is imported where it is used: the emulator imports
# format_word, and running a .d1o should not load the assembler.

REG_PREFIX = {"x": "r", "v": "v", "a": "a"}
_REG_LIMIT = {"x": "scalar_regs", "v": "vector_regs", "a": "accumulators"}
_BARE_SYMBOL = re.compile(r'[^\s"#;]+\Z')
_I64_PER_LINE = 4
_I8_PER_LINE = 16


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
        return DIRECTIONS[v]
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


def fits_machine(word: int, machine: Machine) -> bool:
    """False if a valid word names a register or accumulator the machine lacks."""
    try:
        ins, values = isa.decode(word)
    except isa.EncodingError:
        return True
    for op in ins.operands:
        if op.startswith("["):
            field, kind = "rs1", "x"
        else:
            field, kind = isa.OPERANDS[op]
        limit = _REG_LIMIT.get(kind)
        if limit is not None and values[field] >= getattr(machine, limit):
            return False
    return True


def format_instruction(word: int, machine: Machine, pc: int | None = None,
                       labels: dict[int, str] | None = None) -> str:
    """`format_word`, but `.word` (with the decoding as a comment) for an operand the machine
    lacks, since the assembler rejects such registers."""
    if fits_machine(word, machine):
        return format_word(word, pc, labels)
    return f".word 0x{word:016x}  # {format_word(word, pc, labels)}: not on this machine"


def selector_text(machine: Machine, nodes: list[int] | np.ndarray) -> str:
    """The shortest `.text`/`.data` selector naming exactly these live-node ids."""
    ids = np.asarray(sorted(int(n) for n in nodes), dtype=np.int64)
    n = len(ids)
    if n == 0:
        return "list"
    if n == machine.n_live:
        return "all"
    xy = machine.xy[ids]
    if n == 1:
        return f"node {xy[0, 0]},{xy[0, 1]}"
    x0, y0 = (int(v) for v in xy.min(axis=0))
    x1, y1 = (int(v) for v in xy.max(axis=0))
    inside = machine.id_grid[y0:y1 + 1, x0:x1 + 1]
    if int((inside >= 0).sum()) == n:
        if y0 == y1 and x0 == 0 and x1 == machine.width - 1:
            return f"row {y0}"
        if x0 == x1 and y0 == 0 and y1 == machine.height - 1:
            return f"col {x0}"
        return f"rect {x0},{y0},{x1},{y1}"
    return "list " + " ".join(f"{x},{y}" for x, y in xy.tolist())


def _name(name: str) -> str:
    from d1isa.asm import is_plain_name, quote

    return name if is_plain_name(name) else quote(name)


def _loc_text(row: tuple[int, ...]) -> str:
    if all(v == -1 for v in row):
        return ".loc none"
    if row[3] == -1 and row[4] == -1:
        return f".loc {row[0]} {row[1]} {row[2]}"
    return ".loc " + " ".join(str(v) for v in row)


def _code_labels(obj: ObjectFile, b: int) -> dict[int, str]:
    """pc -> label for block b: code symbols with plain names, then `.L<pc>` branch targets."""
    from d1isa.asm import is_plain_name

    block = obj.blocks[b]
    labels: dict[int, str] = {}
    used: set[str] = set()
    for s in obj.symbols:
        if (s.kind == "code" and s.block == b and 0 <= s.value <= len(block)
                and s.value not in labels and s.name not in used
                and is_plain_name(s.name) and not s.name.startswith(".")):
            labels[s.value] = s.name
            used.add(s.name)
    for pc, w in enumerate(block.words.tolist()):
        try:
            ins, values = isa.decode(w)
        except isa.EncodingError:
            continue
        if "off" in values:
            t = pc + values["off"]
            if 0 <= t <= len(block) and t not in labels:
                labels[t] = f".L{t}"
    return labels


def _location_comment(obj: ObjectFile, row: np.ndarray) -> str:
    f, line = int(row[0]), int(row[1])
    if 0 <= f < len(obj.files) and line >= 0:
        return f"{obj.files[f]}:{line}"
    return ""


def _code(obj: ObjectFile, debug: bool) -> list[str]:
    m = obj.machine
    out: list[str] = []
    nb = obj.node_block
    for b, block in enumerate(obj.blocks):
        nodes = np.nonzero(nb == b)[0]
        out.append("")
        out.append(f"# block {b}: {len(block)} instruction{'s' if len(block) != 1 else ''}, "
                   f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}")
        out.append(f".text {selector_text(m, nodes)}")
        labels = _code_labels(obj, b)
        cur: tuple[int, ...] = (-1,) * 5
        words = block.words.tolist()
        rows = block.lines
        for pc, w in enumerate(words):
            if pc in labels:
                out.append(f"{labels[pc]}:")
            if debug:
                row = tuple(int(v) for v in rows[pc])
                if row != cur:
                    out.append(_loc_text(row))
                    cur = row
                out.append(f"    {format_instruction(w, m, pc, labels)}")
            else:
                text = format_instruction(w, m, pc, labels)
                where = _location_comment(obj, rows[pc])
                out.append(f"    {text:<40} # {pc:>5}{'  ' + where if where else ''}")
        if len(words) in labels:
            out.append(f"{labels[len(words)]}:")
    return out


def _data_lines(data: bytes) -> list[str]:
    out = []
    n8 = len(data) // 8
    words = struct.unpack(f"<{n8}Q", data[:8 * n8])
    for i in range(0, n8, _I64_PER_LINE):
        out.append(".i64 " + ", ".join(f"0x{w:016x}" for w in words[i:i + _I64_PER_LINE]))
    tail = data[8 * n8:]
    for i in range(0, len(tail), _I8_PER_LINE):
        out.append(".i8 " + ", ".join(f"0x{c:02x}" for c in tail[i:i + _I8_PER_LINE]))
    return out


def _data(obj: ObjectFile) -> list[str]:
    """Data records grouped by identical payload: consecutive records with the same address and
    bytes on ascending nodes become one section, so the assembler recreates them in order."""
    m = obj.machine
    out: list[str] = []
    groups: list[tuple[int, bytes, list[int]]] = []
    for d in obj.data:
        b = bytes(d.data)
        if not b:
            continue    # an empty record places nothing
        if groups and groups[-1][0] == d.addr and groups[-1][1] == b and groups[-1][2][-1] < d.node:
            groups[-1][2].append(d.node)
        else:
            groups.append((d.addr, b, [d.node]))
    for addr, b, nodes in groups:
        out.append("")
        out.append(f".data {selector_text(m, nodes)}")
        out.append(f".org 0x{addr:x}")
        out.extend(_data_lines(b))
    return out


def _init(obj: ObjectFile) -> list[str]:
    """The registers nodes start with: one `.data` section per distinct set of values, naming
    the nodes that start with it, with one `.init` per register."""
    init = obj.init
    out: list[str] = []
    for k in range(len(init.rows)):
        nodes = np.nonzero(init.index == k)[0]
        vals = [(r, int(v)) for r, v in zip(init.regs, init.rows[k].tolist(), strict=True) if v]
        if not len(nodes) or not vals:
            continue
        out.append("")
        out.append(f".data {selector_text(obj.machine, nodes)}")
        out.extend(f".init r{r}, {v}" for r, v in vals)
    return out


def _tensors(obj: ObjectFile) -> list[str]:
    m = obj.machine
    out: list[str] = []
    for t in obj.tensors:
        out.append("")
        dims = ",".join(str(d) for d in t.shape)
        out.append(f".tensor {_name(t.name)} {t.role} {t.dtype}[{dims}]")
        for p in t.pieces:
            x, y = m.node_xy(p.node)
            out.append(f".piece {_name(t.name)} {x},{y} 0x{p.addr:x} "
                       f"offset {','.join(map(str, p.offset))} "
                       f"shape {','.join(map(str, p.shape))} "
                       f"strides {','.join(map(str, p.strides))}")
    return out


def disassemble(obj: ObjectFile, debug: bool = True) -> str:
    """The whole object as `.d1s` text.

    With `debug=True` (the default) assembling the text gives back the identical object bytes.
    With `debug=False` it is a readable listing without the debug directives (the machine,
    symbols, line table and sources are left out; locations appear as comments).
    """
    from d1isa.asm import quote

    if not isinstance(obj, ObjectFile):
        raise D1Error(f"disassemble takes an ObjectFile, not {type(obj).__name__}: load a "
                      "file with ObjectFile.load(path)")
    m = obj.machine
    with_code = int((obj.node_block >= 0).sum())
    summary = (f"# {'d1 disassembly' if debug else 'd1 listing'}: machine {m.name} "
               f"({m.width}x{m.height}, {m.n_live:,} live nodes), {len(obj.blocks):,} code "
               f"block{'s' if len(obj.blocks) != 1 else ''}, {with_code:,} node"
               f"{'s' if with_code != 1 else ''} with code")
    out = []
    if debug:
        out.append(f".machine {m.to_json()}")
        out.append(summary)
        out.append(f".meta {json.dumps(obj.meta, sort_keys=True)}")
        for i, f in enumerate(obj.files):
            out.append(f".file {i} {quote(f)}")
        for key, text in obj.sources.items():
            out.append(f".source {quote(key)} {quote(text)}")
        if not obj.files and not obj.sources:
            out.append(".loc none    # no line table: the object has no source locations")
        for s in obj.symbols:
            name = s.name if _BARE_SYMBOL.match(s.name) else quote(s.name)
            out.append(f".symbol {name} {s.kind} {s.value} {s.block}")
    else:
        out.append(summary)
        # a listing of several chips assembles only for as many chips: say how many
        chips = f" and --chips {m.chips_x}x{m.chips_y}" if m.chips > 1 else ""
        out.append("# a listing: no machine, symbols, line table or sources; assemble it with the "
                   f"machine's --machine/--mesh options{chips}")
    out.extend(_code(obj, debug))
    out.extend(_data(obj))
    out.extend(_init(obj))
    out.extend(_tensors(obj))
    return "\n".join(out) + "\n"


__all__ = ["disassemble", "fits_machine", "format_instruction", "format_operand", "format_word",
           "selector_text"]
