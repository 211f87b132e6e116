"""Generate docs/ISA.md from the ISA table.

The instruction tables, encodings, field map and formats are generated from `d1isa.isa`; the
prose below states the execution rules that the emulator and the reference interpreter both
implement. `tests/test_isa.py` fails if the committed docs/ISA.md differs from `render()`.
"""

from __future__ import annotations

from pathlib import Path

from d1isa import isa, traps
from d1isa.machine import TIMING_CLASSES

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "ISA.md"

INTRO = """\
# D1 ISA reference

*Generated from `d1isa/isa.py` by `d1 docs`; do not edit by hand. A test fails if this file is
stale.*

Every node of the mesh runs its own instruction stream. A node has:

- 64-bit scalar registers `r0`..`r31` (`machine.scalar_regs`); `r0` always reads 0 and writes to
  it are discarded. Aliases: `zero` = r0, `sp` = r30, `ra` = r31.
- 512-bit vector registers `v0`..`v31` (`machine.vector_regs`): 16 fp32 lanes, or 32 bf16 lanes
  for the raw load/store and the widen/narrow instructions.
- 8 x 8 fp32 accumulator tiles `a0`..`a7` (`machine.accumulators`) for the matrix unit.
- Its own SRAM (`machine.sram_bytes`, 1.25 MiB on d1), byte-addressed from 0, little-endian. Code
  lives in a separate instruction store and does not use SRAM.
- A cycle clock, a program counter counting instructions from 0, and a stochastic-rounding
  generator.
- Four links, to the next live node north, east, south and west. Messages to any other node must be
  relayed by the nodes in between.

Register counts, SRAM size, FIFO depth and message size come from the machine description; an
operand naming a register the machine does not have is an illegal instruction.
"""

COLUMNS = """\
### What the tables say

Besides its encoding, timing class and FLOPs, each instruction states the facts that tools derive
their opcode sets from (the emulator, the debugger's watchpoints and wait-for diagnosis, the
trace): **writes**, the register operand it writes; **memory**, the SRAM it reads or writes
(element size, and whether the access is strided per lane, a matrix tile of rows, or a whole
message); **network**, its role on the links (send, receive or relay) and the message size, where
the instruction fixes it; **lanes**, the vector lanes it computes on.
"""

ENCODING = """\
## Encoding

Every instruction is one 64-bit little-endian word. Bits 63..56 hold the opcode. The other bits
are divided into five slots; each operand field lies inside one slot, and every bit an
instruction does not use is reserved and must be 0 (a word with a reserved bit set is an illegal
instruction). No two instructions decode the same, every bit of every instruction is defined, and
no field is wider than its slot: the table checks all of this when it loads.

| slot | bits | holds |
|---|---|---|
| opcode | 63..56 | the opcode |
| rd | 55..50 | destination register, or `dir2` (bits 51..50) |
| rs1 | 49..44 | first source / base address register |
| rs2 | 43..38 | second source / stored value / length register |
| rs3 | 37..32 | third source register, or `dir` (bits 33..32) |
| imm | 31..0 | immediate, offset, lane, shift amount or the two mma strides |
"""

EXECUTION = """\
## Execution rules

### Scalar
Scalar arithmetic is 64-bit two's complement and wraps. `sext(imm)` sign-extends the 32-bit
immediate. Shifts use the low 6 bits of the amount. Division never traps (see `div`, `rem`).
A 64-bit constant is built with `movi` (low 32 bits, sign-extended) then `movhi` (high 32 bits);
the assembler's `li` pseudo-instruction picks one or both.

### Control
The pc counts instructions. Branch and `jal` offsets are relative to the branching instruction.
Execution that leaves the node's code (by falling off the end or by a jump) traps with
`pc out of range`. `halt` stops the node; a node with no code is halted from the start.

### Memory
A scalar access of size s (1, 2, 4, 8 bytes) at address a = rs1 + sext(imm) must satisfy
0 <= a and a + s <= sram_bytes (else `SRAM access out of range`) and a mod s = 0 (else
`misaligned SRAM access`); the range is checked first. Vector accesses check every address they
touch (per lane for strided forms, per row for matrix tiles) against the alignment given in their
semantics, and an instruction that traps writes nothing.

### Floating point
- fp32 arithmetic is IEEE-754 single precision, round to nearest even, with subnormals (no
  flush-to-zero).
- Every arithmetic result that is a NaN is the canonical quiet NaN `0x7fc00000`. Bitwise
  instructions (`vand`, `vor`, `vxor`, `vneg`, `vabs`, `vmov`, `vsel`, `vbcast`, `vins`, `vext`,
  raw loads and stores) move bits unchanged.
- Comparisons with a NaN are false; `-0 == +0`.
- `vexp`, `vtanh`, `vsigmoid`, `verf`, `vgelu` and `vpow` compute the function in fp64 from the
  fp32 inputs and round once to fp32; an fp64 overflow gives inf (so `vsigmoid` of a large
  negative value is +0). `vgelu` is `0.5 * x * erfc(-x / sqrt(2))` in fp64 (the erf form of GELU,
  which is `0.5 * x * (1 + erf(x / sqrt(2)))` without its cancellation for negative x), so
  `vgelu` of -inf is NaN (-inf * 0). `vpow` is C's `pow` (C99 Annex F): `pow(x, +-0) = 1` and
  `pow(1, y) = 1` even for a NaN, a negative base to a non-integer power is NaN, and zero to a
  negative power is +inf (-inf for -0 and an odd integer exponent).
- bf16 is the top 16 bits of an fp32. Widening appends 16 zero bits. Narrowing to bf16 with round
  to nearest even: for fp32 bits u that are not a NaN, `bf16 = (u + 0x7fff + ((u >> 16) & 1)) >> 16`
  (so values beyond the bf16 range round to inf); a NaN becomes `0x7fc0`. `vcvt.bf16` does the
  same rounding and keeps the result in fp32 format (low 16 bits zero).
- Stochastic rounding: each lane draws one 64-bit value r from the node's generator, in lane order
  (for `vnarrow.sr`: vs1's 16 lanes, then vs2's), and the result is `(u + (r & 0xffff)) >> 16`
  for a non-NaN u; a NaN becomes `0x7fc0`. Only stochastic instructions draw values.
- The generator is SplitMix64: `state += 0x9e3779b97f4a7c15; z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31)` (all mod 2^64). A node's initial state is
  `(seed * 0x9e3779b97f4a7c15 + id + 1) mod 2^64`, with the run's seed (`--seed`, default 0) and
  the live-node id. `srseed` sets the state; a zero value restores that initial state.
- `vcvt.i32.f32` truncates toward zero; NaN gives 0 and out-of-range values saturate to
  -2^31 or 2^31 - 1.
- `vredsum` and `vredmax` combine the lanes strictly in order 0, 1, ..., 15.

### Matrix unit
`mma.bf16 ad, rs1, rs2, sa, sb` reads an 8 x 8 operand A with row i at rs1 + i * sa and an 8 x 8
operand B with row k at rs2 + k * sb (bf16 rows are 16 bytes and 2-aligned, fp32 rows 32 bytes
and 4-aligned), so a tile inside a larger row-major matrix needs no copy. It accumulates in k
order, rounding after every addition: `mma.bf16` adds the exact product (one rounding per
k, even where the product itself would not fit fp32), `mma.f32` rounds the product first.
NaN entries of the accumulator are canonical after each mma.

`mmak.bf16` and `mmak.f32` perform rs3 such steps along K in one instruction (A advancing 16
or 32 bytes, B advancing 8 rows, per step), exactly as rs3 single mma instructions in sequence
would. They cost `max(rs3, 1)` times the mma cost and count 1,024 FLOPs per step. All addresses
of all steps are checked before any step runs. `acc.ld` and `acc.st` move raw bits;
`acc.st.bf16` narrows with round to nearest even.

### CFP8
The configurable 8-bit formats are defined now and their conversion instructions will take
opcodes from the reserved range 0xe0..0xef. Layouts 1-4-3 and 1-5-2 (sign, exponent, mantissa
bits) with an exponent bias of 0..63: normal values are (-1)^s x 1.m x 2^(E - bias); E = 0 is
zero (m = 0) or the denormal 0.m x 2^(-bias). There is no Inf and no NaN: values beyond the
largest magnitude clamp to it, and NaN converts to +0. Rounding is to nearest (ties to the even
code) or stochastic. `d1isa/cfp8.py` is the reference definition.

### Network
Each directed link (a node and one of its four directions) has a FIFO of `fifo_depth` messages at
the receiving end. A message is 1 to `max_message_bytes` bytes: `send`/`recv` carry 8 bytes,
`vsend`/`vrecv` 64, `sendb`/`recvb`/`relayb` the length in rs2. Sends and receives block: a send
to a full FIFO waits, a receive from an empty one waits. Messages on one link arrive in the order
they were sent. A send toward a harvested node goes straight through its router to the next live
node in that direction. Sending or receiving toward a direction with no live node (the mesh edge)
traps with `no neighbour`. A receive whose expected length differs from the message's traps with
`message length mismatch` and leaves the message in the FIFO; a block send whose length is outside
1..max_message_bytes traps with `bad message length`. `relay` and `relayb` need both a message in
and room out before they do anything; they then consume the message and send it on.

### Traps and stops
A trap stops only the node that traps: its pc stays on the faulting instruction, and that
instruction changes nothing. Other nodes run on until they halt, trap, or wait forever. A run
ends when no node can make progress; it then reports every trapped node, and, if nodes are still
waiting, the wait-for chain that blocks them (a deadlock when it closes into a cycle). Causes:

| code | cause |
|---|---|
"""



def _encoding_pattern(ins: isa.Instruction) -> str:
    """A bit picture of the word: opcode bits, field names, and 0 for reserved bits."""
    parts = []
    bit = 63
    opbits = format(ins.opcode, "08b")
    parts.append(f"`{opbits}`")
    bit = isa.OPCODE_LO - 1
    fields = sorted(ins.fields, key=lambda f: -f.hi)
    for f in fields:
        if bit > f.hi:
            parts.append(f"0[{bit}:{f.hi + 1}]")
        parts.append(f"{f.name}[{f.hi}:{f.lo}]")
        bit = f.lo - 1
    if bit >= 0:
        parts.append(f"0[{bit}:0]")
    return " ".join(parts)


def render() -> str:
    out = [INTRO, ENCODING]
    out.append("### Fields\n\n| field | slot | bits | kind | meaning |\n|---|---|---|---|---|")
    for f in isa.FIELDS.values():
        out.append(f"| `{f.name}` | {f.slot} | {f.hi}..{f.lo} | {f.kind} | {f.doc} |")
    out.append("\n### Formats\n\n| format | operands |\n|---|---|")
    for name, ops in isa.FORMATS.items():
        out.append(f"| {name} | `{ops}` |" if ops else f"| {name} | (none) |")
    out.append("\nOperands `[rs1+imm]` are memory operands, written `[r2]`, `[r2+16]`, "
               "`[r2-8]` or `[label]`. Directions are written `N`, `E`, `S`, `W`.\n")
    out.append("### Reserved opcodes\n\n| opcodes | use |\n|---|---|")
    for lo, hi, what in isa.RESERVED:
        out.append(f"| {lo:#04x}..{hi:#04x} | {what} |")
    out.append("")
    out.append(COLUMNS)
    for group in isa.GROUPS:
        rows = [i for i in isa.INSTRUCTIONS if i.group == group]
        out.append(f"## {group.capitalize()} instructions\n")
        out.append("| instruction | opcode | timing | FLOPs | writes | memory | network | lanes "
                   "| semantics |\n|---|---|---|---|---|---|---|---|---|")
        for i in rows:
            out.append(f"| `{i.syntax}` | {i.opcode:#04x} | {i.timing} | "
                       f"{isa.FLOPS.get(i.mnemonic, 0)} | {_writes(i)} | {_memory(i)} | "
                       f"{_network(i)} | {i.lanes or ''} | {i.semantics} |")
        out.append("\nEncodings:\n")
        out.append("| instruction | bits 63..0 |\n|---|---|")
        for i in rows:
            out.append(f"| `{i.mnemonic}` | {_encoding_pattern(i)} |")
        out.append("")
    out.append(EXECUTION.rstrip("\n"))
    for code, (name, what) in traps.CAUSES.items():
        out.append(f"| {code} | {name}: {what} |")
    out.append("\n## Timing classes\n\nEach instruction's cost in cycles is the machine "
               "description's `cost_<class>`; docs/TIMING.md gives the whole timing model.\n")
    out.append("| class | instructions |\n|---|---|")
    for c in TIMING_CLASSES:
        names = ", ".join(f"`{i.mnemonic}`" for i in isa.INSTRUCTIONS if i.timing == c)
        out.append(f"| {c} | {names} |")
    return "\n".join(out) + "\n"


def _writes(i: isa.Instruction) -> str:
    return f"`{isa.REGISTER_FILES[i.writes]}`" if i.writes else ""


def _memory(i: isa.Instruction) -> str:
    m = i.memory
    if m is None:
        return ""
    verb = "reads" if m.kind == "load" else "writes"
    if m.shape == "message":
        return f"{verb} the message"
    if m.shape == "contiguous":
        return f"{verb} {m.width} B"
    if m.shape == "strided":
        return f"{verb} 16 x {m.width} B, strided"
    return f"{verb} tile rows of {m.width} B"


def _network(i: isa.Instruction) -> str:
    n = i.network
    if n is None:
        return ""
    return f"{n.role} {n.nbytes} B" if n.nbytes else n.role


def write(path: Path = DOC_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
