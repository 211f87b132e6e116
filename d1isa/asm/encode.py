"""Instruction words from operands: one encoding plan per mnemonic, derived from the ISA table.

A `_Plan` lists, per operand, its kind (register file, integer, memory, fp32, branch target,
direction), its field's bit position and range. Two encoders read it:

- the *fast* encoder of a mnemonic, generated from its plan on first use: a straight-line
  function for the common spellings (plain registers, decimal or hex literals, `[rN+k]`,
  direction letters). Anything else makes it raise, and the caller falls back to
- `OperandEncoder`, which handles every spelling (expressions, names defined later, labels),
  produces the located errors, and returns the operands it cannot finish yet (pass 2 does).

Pseudo-instructions (`li`, `mv`, `j`, `bnez`, ...) map onto a real mnemonic through an operand
template; `li` expands to `movi` or `movi` + `movhi` (`li_words`). The register names of a
machine (`register_tables`) are shared with the compiler's instruction builder.

An operand left for pass 2 is a tuple (kind, lo, mask, min, max, field name, AST, column, flag):
flag 1 means a branch offset written as +N/-N (already relative), or an absolute `[expr]`
address (checked against SRAM).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from d1isa import isa
from d1isa.asm.syntax import MEM_RE, REGLIKE_RE, LineError, split_top
from d1isa.expr import MAX_LITERAL_CHARS, Expr, Num
from d1isa.machine import DIRECTIONS, Machine

# Operand kinds. The first three index the register tables (scalar, vector, accumulator).
K_X, K_V, K_A, K_INT, K_MEM, K_FLOAT, K_LABEL, K_DIR, K_WORD, K_MEMIMM = range(10)
KIND_OF = {"x": K_X, "v": K_V, "a": K_A, "int": K_INT, "float": K_FLOAT, "label": K_LABEL,
           "dir": K_DIR}
REG_FILE = ("scalar", "vector", "accumulator")
REG_PREFIX = ("r", "v", "a")
REG_COUNT_KEY = ("scalar_regs", "vector_regs", "accumulators")
FIELD_NOUN = {"imm": "immediate", "uimm": "unsigned immediate", "off": "branch offset",
              "shamt": "shift amount", "lane": "lane", "sa": "stride sa", "sb": "stride sb",
              "dir": "direction", "dir2": "direction", "fimm": "fp32 immediate"}
RS1 = isa.FIELDS["rs1"]
RS1_LO = RS1.lo
DIR_NAMES = {d: k for k, d in enumerate(DIRECTIONS)}
DIRS = {**DIR_NAMES, **{d.lower(): k for d, k in DIR_NAMES.items()}}
DIR_BITS = {f.lo: {k: v << f.lo for k, v in DIRS.items()}
            for f in (isa.FIELDS["dir"], isa.FIELDS["dir2"])}
U64 = (1 << 64) - 1
INT32 = (-(1 << 31), (1 << 31) - 1)

# ---- plans ------------------------------------------------------------------------------------


class _Plan:
    """How to encode one mnemonic: fixed bits, and per operand (kind, lo, mask, min, max, name)."""

    __slots__ = ("mnemonic", "match", "ops", "syntax", "n", "fast")

    def __init__(self, ins: isa.Instruction) -> None:
        self.mnemonic = ins.mnemonic
        self.match = ins.match
        self.syntax = ins.syntax
        ops = []
        for op in ins.operands:
            if op.startswith("["):
                ops.append((K_MEM, RS1.lo, 0, 0, 0, "mem"))
                continue
            fname, kind = isa.OPERANDS[op]
            f = isa.FIELDS[fname]
            lo, hi = f.value_range()
            ops.append((KIND_OF[kind], f.lo, (1 << f.width) - 1, lo, hi, fname))
        self.ops = tuple(ops)
        self.n = len(ops)
        self.fast: Any = None


# Register operand positions used by the fast encoders: (register file, field lo).
FAST_SLOTS: list[tuple[int, int]] = []


def _fast_slot(kind: int, lo: int) -> int:
    if (kind, lo) not in FAST_SLOTS:
        FAST_SLOTS.append((kind, lo))
    return FAST_SLOTS.index((kind, lo))


def _shifted(table: dict[str, int], lo: int) -> dict[str, int]:
    """name -> value << lo, also keyed ' name' (the usual spelling after a comma)."""
    out = {k: v << lo for k, v in table.items()}
    out.update({" " + k: v << lo for k, v in table.items()})
    return out


def _fast_mem(t: str, x: dict[str, int]) -> int:
    """rs1/imm bits of a plain [rN], [rN+k] or [rN-k]; ValueError/KeyError for anything else.

    `x` maps register names to their number already shifted into the rs1 field."""
    t = t.strip()
    if t[0] != "[" or t[-1] != "]":
        raise ValueError
    inner = t[1:-1]
    r = x.get(inner)
    if r is not None:
        return r
    j = inner.find("+")
    if j < 0:
        j = inner.find("-")
        if j < 0:
            raise ValueError
    v = int_literal(inner[j:])
    if not -0x80000000 <= v <= 0x7FFFFFFF:
        raise ValueError
    return x[inner[:j].strip()] | (v & 0xFFFFFFFF)


def _fast_f32(t: str) -> int:
    """Bits of a plain float literal operand; ValueError for anything unusual."""
    t = t.strip()
    if t[:2] in ("0x", "0X"):
        if not t.isascii():
            raise ValueError(t)
        v = int(t, 16)
        if v > 0xFFFFFFFF:
            raise ValueError
        return v
    return f32_bits_checked(float_literal(t))


def _make_fast(plan: _Plan) -> Any:
    """Generate a straight-line encoder for the common operand spellings of one mnemonic.

    It raises KeyError/ValueError/OverflowError on anything else (labels, expressions, mistakes),
    and the caller falls back to the general encoder, which also produces the diagnostics.
    """
    body, terms = [], [str(plan.match)]
    for k, (kind, lo, mask, vmin, vmax, _) in enumerate(plan.ops):
        if kind <= K_A:
            terms.append(f"R[{_fast_slot(kind, lo)}][ops[{k}]]")
        elif kind == K_INT or kind == K_LABEL:
            if kind == K_LABEL:
                body.append(f"    if ops[{k}].strip()[:1] not in '+-': raise ValueError")
            # int() reads digits of any script (`١٢` is 12); the expression language does not.
            body.append(f"    if not ops[{k}].isascii(): raise ValueError")
            body.append(f"    v{k} = int(ops[{k}], 0)")
            body.append(f"    if v{k} < {vmin} or v{k} > {vmax}: raise ValueError")
            terms.append(f"((v{k} & {mask}) << {lo})")
        elif kind == K_DIR:
            terms.append(f"_DIR_BITS[{lo}][ops[{k}].strip()]")
        elif kind == K_MEM:
            terms.append(f"_fast_mem(ops[{k}], R[{_fast_slot(K_X, RS1_LO)}])")
        else:   # K_FLOAT
            terms.append(f"(_fast_f32(ops[{k}]) << {lo})")
    body.append("    return " + " | ".join(terms))
    src = "def fast(ops, R):\n" + "\n".join(body) + "\n"
    env = {"_DIR_BITS": DIR_BITS, "_fast_mem": _fast_mem, "_fast_f32": _fast_f32}
    exec(compile(src, f"<d1 asm encoder for {plan.mnemonic}>", "exec"), env)
    return env["fast"]


def _lazy_fast(plan: _Plan) -> Any:
    """A stand-in for the plan's fast encoder that generates it on first use and steps aside
    (generating every encoder at import costs 20-30 ms; a program uses a few mnemonics).

    The plan's register slots are taken now, in the order `_make_fast` takes them: every
    assembly builds its fast register tables from `FAST_SLOTS` before any encoder is generated."""
    for kind, lo, *_ in plan.ops:
        if kind <= K_A:
            _fast_slot(kind, lo)
        elif kind == K_MEM:
            _fast_slot(K_X, RS1_LO)

    def fast(ops: list[str], regs: list[dict[str, int]]) -> int:
        plan.fast = _make_fast(plan)
        return plan.fast(ops, regs)
    return fast


class _Pseudo:
    """A pseudo-instruction: a real mnemonic and an operand template (ints index the operands)."""

    __slots__ = ("mnemonic", "target", "template", "syntax", "n")

    def __init__(self, mnemonic: str, target: str, template: tuple, syntax: str) -> None:
        self.mnemonic = mnemonic
        self.target = target
        self.template = template
        self.syntax = syntax
        self.n = sum(1 for t in template if isinstance(t, int))


PLANS: dict[str, _Plan | _Pseudo] = {i.mnemonic: _Plan(i) for i in isa.INSTRUCTIONS}
PSEUDOS = (
    _Pseudo("li", "li", (0, 1), "li rd, imm64"),
    _Pseudo("la", "li", (0, 1), "la rd, label"),
    _Pseudo("mv", "addi", (0, 1, "0"), "mv rd, rs"),
    _Pseudo("not", "xori", (0, 1, "-1"), "not rd, rs"),
    _Pseudo("neg", "sub", (0, "r0", 1), "neg rd, rs"),
    _Pseudo("j", "jal", ("r0", 0), "j target"),
    _Pseudo("call", "jal", ("ra", 0), "call target"),
    _Pseudo("ret", "jalr", ("r0", "ra", "0"), "ret"),
    _Pseudo("beqz", "beq", (0, "r0", 1), "beqz rs, target"),
    _Pseudo("bnez", "bne", (0, "r0", 1), "bnez rs, target"),
    _Pseudo("bgt", "blt", (1, 0, 2), "bgt rs1, rs2, target"),
    _Pseudo("ble", "bge", (1, 0, 2), "ble rs1, rs2, target"),
    _Pseudo("bgtu", "bltu", (1, 0, 2), "bgtu rs1, rs2, target"),
    _Pseudo("bleu", "bgeu", (1, 0, 2), "bleu rs1, rs2, target"),
)
PLANS.update({p.mnemonic: p for p in PSEUDOS})

for _plan in PLANS.values():
    if type(_plan) is _Plan:
        _plan.fast = _lazy_fast(_plan)

# ---- values -----------------------------------------------------------------------------------


def int_literal(t: str) -> int:
    """`int(t, 0)` for the operand fast paths, which the expression language backs up: a
    literal longer than it accepts is a ValueError here too, so the caller falls back to it and
    reports "too long" (a 20,000-digit hex literal read here would otherwise reach a range
    message, and printing it in decimal passes Python's 4,300-digit limit). Only ASCII digits
    are digits: Python's int() also reads other scripts' (`١٢` is 12), which the expression
    language rejects."""
    if len(t) > MAX_LITERAL_CHARS or not t.isascii():
        raise ValueError(t)
    return int(t, 0)


def float_literal(t: str) -> float:
    """The value of a float literal; ValueError if it is not one (or longer than a literal may
    be), OverflowError if it is a finite number beyond even fp64's range (`1e400`, which
    float() reads as inf)."""
    if len(t) > MAX_LITERAL_CHARS or not t.isascii():
        raise ValueError(t)
    x = float(t)
    if math.isinf(x) and "inf" not in t.lower():
        raise OverflowError(t)
    return x


def f32_bits_checked(x: float) -> int:
    """IEEE-754 single bits of x; OverflowError if x is finite but beyond the fp32 range."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_from_f32_bits(u: int) -> int:
    """Round fp32 bits to bf16 bits, nearest even (docs/ISA.md); a NaN becomes 0x7fc0."""
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x007FFFFF):
        return 0x7FC0
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def hex_literal(t: str) -> int | None:
    """The value of an operand that is one hex literal (`0x3f80_0000`: an fp32 or bf16 operand's
    bit pattern), else None (an expression such as `0x10 * 2` is a value)."""
    if t.strip()[:2] not in ("0x", "0X") or len(t) > MAX_LITERAL_CHARS or not t.isascii():
        return None
    try:
        return int(t, 16)
    except ValueError:
        return None


def f32_operand(x: float | int, col: int, width: int) -> int:
    """fp32 bits of an operand value; a located error beyond the fp32 range."""
    try:
        return f32_bits_checked(float(x))
    except OverflowError:
        raise LineError(f"{x} is outside the fp32 range (write inf for infinity)", col,
                        width) from None


def check_mem(v: int, absolute: bool, col: int, width: int, sram: int) -> None:
    """A memory operand's offset fits 32 bits; an absolute address lies in SRAM."""
    if absolute and not 0 <= v < sram:
        raise LineError(f"address {v} is outside SRAM (0..{sram - 1})", col, width)
    if not INT32[0] <= v <= INT32[1]:
        raise LineError(f"memory offset {v} is out of range {INT32[0]}..{INT32[1]}", col, width)


def li_words(rd: int, v: int, size: int, col: int = 1, width: int = 1) -> list[int]:
    """movi (and movhi) words that leave exactly the 64-bit value v in rd; size 0 = shortest,
    1 or 2 = that many words."""
    if not -(1 << 63) <= v <= U64:
        raise LineError(f"li value {v} does not fit 64 bits", col, width)
    movi = PLANS["movi"].match | (rd << 50)
    if size != 2 and INT32[0] <= v <= INT32[1]:
        return [movi | (v & 0xFFFFFFFF)]
    v &= U64
    return [movi | (v & 0xFFFFFFFF), PLANS["movhi"].match | (rd << 50) | (v >> 32)]


def li_size(v: int) -> int:
    """Words of `li rd, v`: 1 if v fits a signed 32-bit immediate, else 2."""
    return 1 if INT32[0] <= v <= INT32[1] else 2


# ---- registers --------------------------------------------------------------------------------


def register_tables(m: Machine) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Register name -> number for the machine's scalar, vector and accumulator files."""
    x = {f"r{i}": i for i in range(m.scalar_regs)}
    x["zero"] = 0
    if m.scalar_regs > 30:
        x["sp"] = 30
    if m.scalar_regs > 31:
        x["ra"] = 31
    v = {f"v{i}": i for i in range(m.vector_regs)}
    a = {f"a{i}": i for i in range(m.accumulators)}
    return x, v, a


def fast_register_tables(regs: tuple[dict[str, int], ...]) -> list[dict[str, int]]:
    """The tables the fast encoders index: per FAST_SLOTS entry, names -> shifted numbers."""
    return [_shifted(regs[kind], lo) for kind, lo in FAST_SLOTS]


def register_error(kind: int, t: str, col: int, regs: tuple[dict[str, int], ...],
                   m: Machine) -> LineError:
    """Why `t` is not a register of file `kind` on this machine (case, range or class)."""
    if not t:
        return LineError(f"missing {REG_FILE[kind]} register", col)
    tl = t.lower()
    count = getattr(m, REG_COUNT_KEY[kind])
    prefix = REG_PREFIX[kind]
    span = f"{prefix}0..{prefix}{count - 1}"
    if tl in ("sp", "ra") and kind == K_X:
        return LineError(f"'{t}' is r{30 if tl == 'sp' else 31}, but this machine has only "
                         f"{count} scalar registers ({span})", col, len(t))
    for k in range(3):
        if tl in regs[k] or (k == K_X and tl in ("sp", "ra")) or (
                len(tl) > 1 and tl[0] == REG_PREFIX[k] and tl[1:].isdigit()):
            if k == kind:
                return LineError(f"register '{t}' does not exist: this machine has {count} "
                                 f"{REG_FILE[kind]} registers ({span})", col, len(t))
            return LineError(f"expected a {REG_FILE[kind]} register ({span}), got the "
                             f"{REG_FILE[k]} register '{t}'", col, len(t))
    return LineError(f"expected a {REG_FILE[kind]} register ({span}), got '{t}'", col, len(t))


# ---- operands written as text -----------------------------------------------------------------


class OperandEncoder:
    """Encodes instructions from operand text, with every spelling and every error.

    `value_at(text, col)` gives an expression's value if it is known now, else its AST (pass 2
    finishes it); `ast_at(text, col)` parses one. Both raise LineError at the right column."""

    def __init__(self, machine: Machine, value_at: Callable[[str, int], int | Expr],
                 ast_at: Callable[[str, int], Expr]) -> None:
        self.machine = machine
        self.regs = register_tables(machine)
        self.sram = machine.sram_bytes
        self.value_at = value_at
        self.ast_at = ast_at

    def register(self, kind: int, t: str, col: int) -> int:
        """A register operand that is not a plain lowercase name: case, range or class errors."""
        r = self.regs[kind].get(t.lower())
        if r is not None:
            return r
        raise register_error(kind, t, col, self.regs, self.machine)

    def opcol(self, rest_off: int, ops: list[str], k: int, cols: list[int] | None) -> int:
        if cols is not None:
            return cols[k]
        off = rest_off + sum(len(o) + 1 for o in ops[:k])
        t = ops[k]
        return off + len(t) - len(t.lstrip()) + 1

    def encode(self, plan: _Plan, ops: list[str], cols: list[int] | None, rest_off: int
               ) -> tuple[int, list | None]:
        """Encode what is known now; return the word and the operands left for pass 2."""
        word = plan.match
        todo = None
        regs = self.regs
        for k, (kind, lo, mask, vmin, vmax, fname) in enumerate(plan.ops):
            t = ops[k].strip()
            if kind <= K_A:
                r = regs[kind].get(t)
                if r is None:
                    r = self.register(kind, t, self.opcol(rest_off, ops, k, cols))
                word |= r << lo
                continue
            if kind == K_INT:
                try:
                    v = int_literal(t)
                except ValueError:
                    col = self.opcol(rest_off, ops, k, cols)
                    if not t:
                        raise LineError(f"missing {FIELD_NOUN[fname]}", col) from None
                    v = self.value_at(t, col)
                    if type(v) is not int:
                        todo = todo or []
                        todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 0))
                        continue
                if v < vmin or v > vmax:
                    col = self.opcol(rest_off, ops, k, cols)
                    raise LineError(f"{FIELD_NOUN[fname]} {v} is out of range {vmin}..{vmax}",
                                    col, len(t))
                word |= (v & mask) << lo
                continue
            if kind == K_MEM:
                if t[:1] == "[" and t[-1:] == "]":
                    # Fast path: [rN], [rN+const], [rN-const].
                    inner = t[1:-1]
                    r = regs[0].get(inner.strip())
                    if r is not None:
                        word |= r << RS1_LO
                        continue
                    j = inner.find("+")
                    if j < 0:
                        j = inner.find("-")
                    if j > 0:
                        r = regs[0].get(inner[:j].strip())
                        if r is not None:
                            try:
                                v = int_literal(inner[j:])
                            except ValueError:
                                v = None
                            if v is not None and INT32[0] <= v <= INT32[1]:
                                word |= (r << RS1_LO) | (v & 0xFFFFFFFF)
                                continue
                word, todo = self.mem(t, self.opcol(rest_off, ops, k, cols), word, todo)
                continue
            col = self.opcol(rest_off, ops, k, cols)
            if kind == K_LABEL:
                if not t:
                    raise LineError("missing branch target (a label, or +N / -N instructions)",
                                    col)
                if t[0] in "+-":
                    try:
                        v = int_literal(t)
                    except ValueError:
                        v = self.value_at(t, col)
                    if type(v) is int:
                        if v < vmin or v > vmax:
                            raise LineError(f"branch offset {v} is out of range {vmin}..{vmax}",
                                            col, len(t))
                        word |= (v & mask) << lo
                        continue
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 1))
                else:
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, self.ast_at(t, col), col, 0))
            elif kind == K_DIR:
                d = DIRS.get(t)
                if d is None:
                    if not t:
                        raise LineError("missing direction (N, E, S or W)", col)
                    ast = self.ast_at(t, col)
                    if type(ast) is Num:
                        d = ast.value
                    else:
                        todo = todo or []
                        todo.append((kind, lo, mask, vmin, vmax, fname, ast, col, 0))
                        continue
                    if not 0 <= d <= 3:
                        raise LineError(f"direction {d} is out of range: write N, E, S or W "
                                        "(0..3)", col, len(t))
                word |= d << lo
            else:   # K_FLOAT
                v = self.float_at(t, col)
                if type(v) is int:
                    word |= v << lo
                else:
                    todo = todo or []
                    todo.append((kind, lo, mask, vmin, vmax, fname, v, col, 0))
        return word, todo

    def mem(self, t: str, col: int, word: int, todo: list | None) -> tuple[int, list | None]:
        if len(t) < 2 or t[0] != "[" or t[-1] != "]":
            raise LineError(f"expected a memory operand such as [r2+16] or [label], got '{t}'",
                            col, max(len(t), 1))
        inner_raw = t[1:-1]
        inner = inner_raw.strip()
        x = self.regs[K_X]
        r = x.get(inner)
        if r is not None:
            return word | (r << RS1.lo), todo
        lead = 1 + len(inner_raw) - len(inner_raw.lstrip())
        m = MEM_RE.match(inner)
        absolute = False    # [expr] with no base register is an address, checked against SRAM
        if m is not None and REGLIKE_RE.match(m.group(1)):
            r = x.get(m.group(1))
            if r is None:
                r = self.register(K_X, m.group(1), col + lead)
            imm_text = m.group(2)
            if imm_text is None:
                return word | (r << RS1.lo), todo
            icol = col + lead + m.start(2)
        else:
            if not inner:
                raise LineError("empty memory operand: write [r2], [r2+16] or [label]", col,
                                len(t))
            r = 0
            absolute = True
            imm_text = inner
            icol = col + lead
        word |= r << RS1.lo
        try:
            v = int_literal(imm_text)
        except ValueError:
            v = self.value_at(imm_text, icol)
            if type(v) is not int:
                todo = todo or []
                todo.append((K_MEMIMM, 0, 0xFFFFFFFF, INT32[0], INT32[1], "imm", v, icol,
                             int(absolute)))
                return word, todo
        check_mem(v, absolute, icol, len(imm_text.strip()), self.sram)
        return word | (v & 0xFFFFFFFF), todo

    def float_at(self, t: str, col: int) -> int | Expr:
        """An fp32 operand: a hex literal is the bit pattern, anything else (an expression
        such as `0x10 * 2` too) is a value."""
        if not t:
            raise LineError("missing fp32 value", col)
        v = hex_literal(t)
        if v is not None:
            if v > 0xFFFFFFFF:
                raise LineError(f"fp32 bit pattern {t} does not fit 32 bits", col, len(t))
            return v
        try:
            x = float_literal(t)
        except ValueError:
            v = self.value_at(t, col)
            if type(v) is not int:
                return v
            x = v
        except OverflowError:
            raise LineError(f"{t.strip()} is outside the fp32 range (write inf for infinity)",
                            col, len(t)) from None
        return f32_operand(x, col, len(t))

    def pseudo(self, p: _Pseudo, ops: list[str], base: int, rest_off: int, head: str) -> tuple:
        """A pseudo-instruction as (words, pending operands, pending li, base column)."""
        if len(ops) != p.n:
            raise LineError(f"'{p.mnemonic}' takes {p.n} operand{'s' if p.n != 1 else ''} "
                            f"({p.syntax}), got {len(ops)}", base + 1, len(head))
        cols = [self.opcol(rest_off, ops, k, None) for k in range(len(ops))]
        if p.target == "li":
            rd = self.regs[K_X].get(ops[0].strip())
            if rd is None:
                rd = self.register(K_X, ops[0].strip(), cols[0])
            t = ops[1].strip()
            if not t:
                raise LineError("missing value", cols[1])
            try:
                v = int_literal(t)
            except ValueError:
                v = self.value_at(t, cols[1])
            if type(v) is int:
                return tuple(li_words(rd, v, 0, cols[1], len(t))), None, None, base
            return (0,), None, (rd, v, cols[1], len(t)), base
        plan = PLANS[p.target]
        new_ops, new_cols = [], []
        for t in p.template:
            if isinstance(t, int):
                new_ops.append(ops[t])
                new_cols.append(cols[t])
            else:
                new_ops.append(t)
                new_cols.append(base + 1)
        if "ra" in new_ops and "ra" not in self.regs[K_X]:
            raise LineError(f"'{p.mnemonic}' uses ra (r31), but this machine has only "
                            f"{self.machine.scalar_regs} scalar registers", base + 1, len(head))
        word, todo = self.encode(plan, new_ops, new_cols, 0)
        return (word,), todo, None, base


def split_operands(rest: str) -> list[str]:
    """The operand texts of an instruction (commas inside parentheses or strings kept)."""
    return rest.split(",") if ('(' not in rest and '"' not in rest) else split_top(rest)
