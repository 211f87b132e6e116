"""Programs as data: instructions built from operand values, checked when they are built.

A program that is generated (the compiler's per-node code) need not go through assembly text.
It is a list of items:

    Instr   a mnemonic (an instruction of the ISA table or a pseudo-instruction such as `li`,
            `mv`, `bnez`), its operand values, and the source location it belongs to
    Label   a code label: branch operands name it
    Mark    the source location changes here (`.loc` when the program is written as text)

`InstrSet(machine).instr(mnemonic, ops, loc)` checks the operands against the ISA table (the
mnemonic's operand kinds, register files and the machine's register counts, field ranges) and
encodes the instruction right away, so a bad operand is an `InstrError` where it is built.
Operand values: registers by name ("r3", "v0", "a1", "zero"), integers as ints, memory operands
as (base register, offset), directions as ints (index into d1isa.machine.DIRECTIONS), fp32
immediates as their bit pattern, branch targets as label names (or an int offset). Identical
instructions at the same location are one object, so programs compare and hash cheaply.

`section(items)` turns a program into a layout `TextSection` (words, line-table rows, labels,
and each branch as a pending operand), which `d1isa.asm.layout.Linker` resolves and places
exactly as it does for assembled text. `render(item)` writes an item in `.d1s` syntax; the text
assembles to the same words.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from d1isa.asm.encode import (
    FIELD_NOUN,
    INT32,
    K_A,
    K_DIR,
    K_FLOAT,
    K_INT,
    K_LABEL,
    K_MEM,
    K_X,
    PLANS,
    REG_FILE,
    RS1_LO,
    U64,
    _Plan,
    _Pseudo,
    li_words,
    register_error,
    register_tables,
)
from d1isa.asm.layout import NO_LOCATION, Pending, TextSection
from d1isa.asm.syntax import suggest
from d1isa.errors import D1Error
from d1isa.expr import Name
from d1isa.machine import DIRECTIONS, Machine


class InstrError(D1Error):
    """An instruction built with operands the ISA or the machine does not allow."""


class Instr:
    """One instruction as data. `words` is its encoding (one word, or two for a long `li`),
    with a branch's offset field left zero; `branch` is then the pending operand that the
    layout completes from the label. `row` indexes the line-table rows of its `InstrSet`."""

    __slots__ = ("mnemonic", "ops", "loc", "words", "branch", "row", "simple")

    def __init__(self, mnemonic: str, ops: tuple, loc: Hashable, words: tuple[int, ...],
                 branch: tuple | None, row: int) -> None:
        self.mnemonic, self.ops, self.loc = mnemonic, ops, loc
        self.words, self.branch, self.row = words, branch, row
        self.simple = len(words) == 1 and branch is None     # one finished word

    def __repr__(self) -> str:
        return f"<Instr {render(self).strip()} @{self.loc}>"


class Label:
    """A code label, placed where it appears in the program."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Label {self.name}>"


class Mark:
    """The source location changes to `loc` (line, column) here."""

    __slots__ = ("loc",)

    def __init__(self, loc: Hashable) -> None:
        self.loc = loc

    def __repr__(self) -> str:
        return f"<Mark {self.loc}>"


Item = Instr | Label | Mark


class InstrSet:
    """Builds the instructions, labels and marks of one program for one machine.

    Locations are (line, column) in source file `file` (an index of the object's file list);
    `rows` is the line table they index: row 0 is "no location", each other row is
    (file, line, column, -1, -1), as `.loc file line column` says in text. `where` names a
    location in errors (e.g. "prog.d1k:3:5")."""

    def __init__(self, machine: Machine, file: int = 0, where: Any = None) -> None:
        self.machine = machine
        self.file = file
        self.where = where
        self.regs = register_tables(machine)
        self.cache: dict[tuple, Instr] = {}
        self.encoded: dict[tuple, tuple[tuple[int, ...], tuple | None]] = {}
        self.rows: list[tuple[int, ...]] = [NO_LOCATION]
        self.row_index: dict[Hashable, int] = {None: 0}
        self.labels: dict[str, Label] = {}
        self.marks: dict[Hashable, Mark] = {}

    # ---- items --------------------------------------------------------------------------------

    def instr(self, mnemonic: str, ops: tuple = (), loc: Hashable = None) -> Instr:
        """The checked instruction `mnemonic ops` at `loc`; InstrError if it is not valid."""
        key = (mnemonic, ops, loc)
        try:
            ins = self.cache.get(key)
        except TypeError:
            raise InstrError(f"{self._where(loc)}invalid instruction {_show(mnemonic, ops)}: "
                             "operands must be registers, ints or (register, offset) tuples"
                             ) from None
        if ins is None:
            enc = self.encoded.get(key[:2])
            if enc is None:
                try:
                    enc = self.encoded[key[:2]] = self._encode(mnemonic, ops)
                except InstrError as e:
                    raise InstrError(f"{self._where(loc)}invalid instruction "
                                     f"{_show(mnemonic, ops)}: {e}") from None
            ins = self.cache[key] = Instr(mnemonic, ops, loc, enc[0], enc[1], self.row(loc))
        return ins

    def label(self, name: str) -> Label:
        lab = self.labels.get(name)
        if lab is None:
            lab = self.labels[name] = Label(name)
        return lab

    def mark(self, loc: Hashable) -> Mark:
        m = self.marks.get(loc)
        if m is None:
            m = self.marks[loc] = Mark(loc)
        return m

    def row(self, loc: Hashable) -> int:
        """The line-table row of location `loc` = (line, column), made on first use."""
        r = self.row_index.get(loc)
        if r is None:
            line, col = loc
            r = self.row_index[loc] = len(self.rows)
            self.rows.append((self.file, line, col, -1, -1))
        return r

    def _where(self, loc: Hashable) -> str:
        if loc is None:
            return ""
        return f"{self.where}:{loc[0]}:{loc[1]}: " if self.where else f"{loc[0]}:{loc[1]}: "

    # ---- checking and encoding ----------------------------------------------------------------

    def _encode(self, mnemonic: str, ops: tuple) -> tuple[tuple[int, ...], tuple | None]:
        plan = PLANS.get(mnemonic)
        if plan is None:
            raise InstrError(f"unknown instruction '{mnemonic}'{suggest(mnemonic, PLANS)}")
        if type(ops) is not tuple:
            raise InstrError("the operands must be a tuple")
        n = plan.n
        if len(ops) != n:
            raise InstrError(f"'{mnemonic}' takes {n} operand{'s' if n != 1 else ''} "
                             f"({plan.syntax}), got {len(ops)}")
        if type(plan) is _Pseudo:
            if plan.target == "li":
                rd = self._reg(K_X, ops[0], 1)
                v = ops[1]
                if type(v) is not int:
                    raise InstrError(f"operand 2: expected an integer, got {v!r}")
                if not -(1 << 63) <= v <= U64:
                    raise InstrError(f"operand 2: li value {v} does not fit 64 bits")
                return tuple(li_words(rd, v, 0)), None
            target = PLANS[plan.target]
            real = []
            for k, t in enumerate(plan.template):
                if isinstance(t, int):
                    real.append(ops[t])
                elif target.ops[k][0] == K_INT:
                    real.append(int(t, 0))
                else:
                    real.append(t)
            word, branch = self._word(target, real, list(plan.template))
            return (word,), branch
        word, branch = self._word(plan, ops, None)
        return (word,), branch

    def _word(self, plan: _Plan, ops: Any, numbers: list | None) -> tuple[int, tuple | None]:
        """Encode `ops` by `plan`; `numbers` maps each to the operand number the caller wrote
        (an int), or to a constant of a pseudo-instruction's template."""
        word = plan.match
        branch = None
        for k, (kind, lo, mask, vmin, vmax, fname) in enumerate(plan.ops):
            v = ops[k]
            at = k + 1 if numbers is None else numbers[k] + 1 if isinstance(numbers[k], int) \
                else 0
            if kind <= K_A:
                word |= self._reg(kind, v, at) << lo
            elif kind == K_MEM:
                if (type(v) is not tuple or len(v) != 2 or type(v[1]) is not int):
                    raise InstrError(f"{_operand(at)}expected a memory operand (base register, "
                                     f"offset), got {v!r}")
                r = self._reg(K_X, v[0], at)
                if not INT32[0] <= v[1] <= INT32[1]:
                    raise InstrError(f"{_operand(at)}memory offset {v[1]} is out of range "
                                     f"{INT32[0]}..{INT32[1]}")
                word |= (r << RS1_LO) | (v[1] & 0xFFFFFFFF)
            elif kind == K_LABEL and type(v) is str:
                if not v:
                    raise InstrError(f"{_operand(at)}empty label name")
                branch = (kind, lo, mask, vmin, vmax, fname, Name(v, 0), 0, 0)
            else:
                if type(v) is not int:
                    what = {K_DIR: "a direction (0..3, an index of DIRECTIONS)",
                            K_FLOAT: "an fp32 bit pattern",
                            K_LABEL: "a label name or an offset"}.get(kind, "an integer")
                    raise InstrError(f"{_operand(at)}expected {what}, got {v!r}")
                if kind == K_DIR:
                    vmin, vmax = 0, len(DIRECTIONS) - 1
                elif kind == K_FLOAT:
                    vmin, vmax = 0, 0xFFFFFFFF
                if not vmin <= v <= vmax:
                    raise InstrError(f"{_operand(at)}{FIELD_NOUN[fname]} {v} is out of range "
                                     f"{vmin}..{vmax}")
                word |= (v & mask) << lo
        return word, branch

    def _reg(self, kind: int, name: Any, at: int) -> int:
        r = self.regs[kind].get(name) if type(name) is str else None
        if r is None:
            if type(name) is not str:
                raise InstrError(f"{_operand(at)}expected a {REG_FILE[kind]} register name, "
                                 f"got {name!r}")
            raise InstrError(_operand(at)
                             + register_error(kind, name, 0, self.regs, self.machine).msg)
        return r


def _operand(at: int) -> str:
    """'operand N: ' for the caller's operand N, nothing for a pseudo-instruction's constant."""
    return f"operand {at}: " if at else ""


def _show(mnemonic: str, ops: Any) -> str:
    """An instruction for an error message (its operands may be anything)."""
    try:
        return f"'{_text(mnemonic, ops)}'"
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return f"'{mnemonic} {', '.join(map(repr, ops)) if type(ops) is tuple else repr(ops)}'"


# ---- text -----------------------------------------------------------------------------------

_KINDS: dict[str, tuple[int, ...]] = {}


def _operand_kinds(mnemonic: str) -> tuple[int, ...]:
    """The kind of each operand as written (for a pseudo-instruction, its target's)."""
    kinds = _KINDS.get(mnemonic)
    if kinds is None:
        plan = PLANS[mnemonic]
        if type(plan) is _Plan:
            kinds = tuple(op[0] for op in plan.ops)
        elif plan.target == "li":
            kinds = (K_X, K_INT)
        else:
            target = PLANS[plan.target].ops
            kinds = tuple(next(target[p][0] for p, t in enumerate(plan.template) if t == k)
                          for k in range(plan.n))
        _KINDS[mnemonic] = kinds
    return kinds


def _operand_text(kind: int, v: Any) -> str:
    if kind == K_MEM:
        return f"[{v[0]}{v[1]:+d}]"
    if kind == K_DIR:
        return DIRECTIONS[v]
    if kind == K_FLOAT:
        return f"0x{v:08x}"
    if kind == K_LABEL and type(v) is int:
        return f"{v:+d}"
    return str(v)


def _text(mnemonic: str, ops: tuple) -> str:
    if not ops:
        return mnemonic
    kinds = _operand_kinds(mnemonic)
    return f"{mnemonic} " + ", ".join(_operand_text(k, v) for k, v in zip(kinds, ops,
                                                                           strict=True))


def render(item: Item) -> str:
    """One item as a `.d1s` line: an indented instruction, `label:`, or `.loc`."""
    if type(item) is Instr:
        return "  " + _text(item.mnemonic, item.ops)
    if type(item) is Label:
        return f"{item.name}:"
    return f".loc 0 {item.loc[0]} {item.loc[1]}"


# ---- linking --------------------------------------------------------------------------------


def section(items: Iterable[Item]) -> TextSection:
    """A layout section of a program: its words, one line-table row index per word (into the
    `InstrSet`'s rows), its labels, and each branch as a pending operand."""
    sec = TextSection(None)
    words, rows, labels, pend = sec.words, sec.locs, sec.labels, sec.pend
    add_word, add_row = words.append, rows.append
    for it in items:
        t = type(it)
        if t is Instr:
            if it.simple:
                add_word(it.words[0])
                add_row(it.row)
                continue
            ws = it.words
            if it.branch is not None:
                pend.append(Pending(len(words), ws[0], [it.branch],
                                    it.loc[0] if it.loc is not None else 0))
            words.extend(ws)
            rows.extend([it.row] * len(ws))
        elif t is Label:
            if it.name in labels:
                raise InstrError(f"label '{it.name}' is placed twice in one program")
            labels[it.name] = len(words)
    return sec
