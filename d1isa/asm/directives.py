"""The directives of `.d1s` text: sections, data, equates, tensors, and debug information.

Each directive is one function `(asm, line, args, args_offset, col)` in `HANDLERS`, called by
`directive` during pass 1. It reads its arguments (with the expression tokenizer where they
are expressions) and records what it declares in the assembler's pass-1 state: a new section,
data entries, an equate, a tensor or piece declaration, a file, a location, a source text, a
symbol or the metadata. Nothing is laid out here; that is pass 2 (d1isa.asm.layout).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from d1isa.asm.encode import (
    INT32,
    K_WORD,
    K_X,
    U64,
    bf16_from_f32_bits,
    hex_literal,
    int_literal,
    register_error,
    split_operands,
)
from d1isa.asm.layout import (
    SELECTOR_ARGS,
    SELECTORS,
    DataSection,
    Pending,
    PieceDecl,
    Selector,
    TensorDecl,
    TextSection,
)
from d1isa.asm.syntax import JSON_DECODER, NAME_RE, LineError, suggest
from d1isa.expr import Expr, ExprError, Parser, parse_int, tokenize
from d1isa.objfile import DTYPE_BYTES, ROLES, SYMBOL_KINDS, Symbol

if TYPE_CHECKING:
    from d1isa.asm.assembler import Assembler

DIRECTIVES = (".machine", ".text", ".data", ".equ", ".org", ".align", ".zero", ".i8", ".i16",
              ".i32", ".i64", ".f32", ".bf16", ".word", ".tensor", ".piece", ".file", ".loc",
              ".source", ".symbol", ".meta", ".init")
INT_WIDTH = {".i8": 1, ".i16": 2, ".i32": 4, ".i64": 8}


def directive(a: Assembler, ln: int, s: str, base: int) -> None:
    """Run the directive statement `s` (at column base + 1 of line `ln`)."""
    parts = s.split(None, 1)
    name = parts[0].lower()
    if len(parts) == 1:
        args, aoff = "", base + len(s)
    else:
        args = parts[1]
        aoff = base + len(s) - len(args)
    handler = HANDLERS.get(name)
    if handler is None:
        raise LineError(f"unknown directive '{parts[0]}'{suggest(name, DIRECTIVES)}", base + 1,
                        len(parts[0]))
    try:
        handler(a, ln, args, aoff, base + 1)
    except ExprError as e:
        if e.line is not None:
            raise
        raise LineError(e.msg, aoff + 1 + e.pos, e.width) from None


def _parser(a: Assembler, args: str) -> Parser:
    return Parser(tokenize(args), a.consts, text=args)


def _machine(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    if ln != a.machine_line:
        raise LineError(".machine must be the first statement of the file", col, 8)


def _section(a: Assembler, ln: int, args: str, aoff: int, col: int, kind: str) -> None:
    p = _parser(a, args)
    sel = parse_selector(p, ln, aoff, col, allow_list=True)
    p.expect_end()
    if kind == "text":
        sec: TextSection | DataSection = TextSection(sel)
        a.texts.append(sec)
    else:
        sec = DataSection(sel)
        a.datas.append(sec)
    a.cur = sec
    a.cur_loc = 0


def parse_selector(p: Parser, ln: int, aoff: int, col: int, allow_list: bool) -> Selector:
    """A node selector (`all`, `node X,Y`, `row Y`, ...; with allow_list also `rest` and
    `list X,Y ...`); nothing at all means `all`."""
    k, t, pos = p.peek()
    if k == "end":
        return Selector("all", [], ln, col)
    kw = t.lower()
    if k != "name" or kw not in SELECTORS or (kw in ("list", "rest") and not allow_list):
        raise ExprError(f"expected a node selector (all, {'rest, ' if allow_list else ''}"
                        f"node X,Y, row Y, col X, rect X0,Y0,X1,Y1"
                        f"{', list X,Y ...' if allow_list else ''}), got '{t}'", pos,
                        max(len(t), 1))
    p.take()
    args: list[tuple[Expr, int]] = []
    if kw == "list":
        while not p.at_end():
            for j in range(2):
                if j:
                    p.expect(",", "between X and Y")
                pos2 = p.peek()[2]
                args.append((p.expr(), aoff + 1 + pos2))
    else:
        for j in range(SELECTOR_ARGS[kw]):
            if j:
                p.expect(",")
            pos2 = p.peek()[2]
            args.append((p.expr(), aoff + 1 + pos2))
    return Selector(kw, args, ln, aoff + 1 + pos)


def _equ(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    name, comma, rest = args.partition(",")
    name_s = name.strip()
    if not comma or not NAME_RE.match(name_s):
        raise LineError(".equ expects NAME, EXPRESSION", aoff + 1, max(len(name_s), 1))
    a._equate(name_s, rest, ln, aoff + 1, aoff + len(name) + 1)


def _data_section(a: Assembler, col: int, what: str) -> DataSection:
    sec = a.cur
    if type(sec) is not DataSection:
        where = "in a .text section" if sec is not None else "outside any section"
        raise LineError(f"{what} {where}; data belongs after a '.data SELECTOR' line", col,
                        len(what))
    return sec


def _layout(a: Assembler, ln: int, args: str, aoff: int, col: int, kind: str) -> None:
    sec = _data_section(a, col, "." + kind)
    text = args.strip()
    if not text:
        raise LineError(f".{kind} needs a value", aoff + 1)
    ast = a._parse(text)
    sec.entries.append((kind, ast, ln, aoff + 1))


def _init(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    """`.init REG, EXPR` in a data section: the nodes of the section start with REG = EXPR
    (evaluated per node, so node symbols give each its own value)."""
    sec = _data_section(a, col, ".init")
    reg, comma, rest = args.partition(",")
    name = reg.strip()
    rcol = aoff + 1 + len(reg) - len(reg.lstrip())
    if not comma or not rest.strip():
        raise LineError(".init expects REGISTER, VALUE", col, 5)
    num = a.regs[0].get(name.lower())
    if num is None:
        raise register_error(K_X, name, rcol, a.regs, a.machine)
    if num == 0:
        raise LineError("r0 always reads 0 and cannot be given an initial value", rcol,
                        len(name))
    vcol = aoff + len(reg) + 2 + len(rest) - len(rest.lstrip())
    sec.entries.append(("init", num, a._parse(rest.strip()), ln, vcol))


def _values(args: str, aoff: int, col: int, what: str) -> list[tuple[str, int]]:
    if not args.strip():
        raise LineError(f"{what} needs at least one value", col, len(what))
    out, off = [], aoff
    for p in split_operands(args):
        t = p.strip()
        c = off + len(p) - len(p.lstrip()) + 1
        if not t:
            raise LineError(f"missing value in {what} list", c)
        out.append((t, c))
        off += len(p) + 1
    return out


def _ints(a: Assembler, ln: int, args: str, aoff: int, col: int, width: int, what: str) -> None:
    sec = _data_section(a, col, what)
    lo, hi = -(1 << (8 * width - 1)), (1 << (8 * width)) - 1
    vals: list[int] = []
    pend: list[tuple[int, Expr, int]] = []
    for t, c in _values(args, aoff, col, what):
        try:
            v = int_literal(t)
        except ValueError:
            v = a._value_at(t, c)
            if type(v) is not int:
                pend.append((len(vals), v, c))
                vals.append(0)
                continue
        if v < lo or v > hi:
            raise LineError(f"{v} does not fit {what} ({lo}..{hi})", c, len(t))
        vals.append(v)
    sec.entries.append(("ints", width, vals, pend, ln))


def _floats(a: Assembler, ln: int, args: str, aoff: int, col: int, width: int, what: str
            ) -> None:
    sec = _data_section(a, col, what)
    vals: list[int] = []
    pend: list[tuple[int, Expr, int]] = []
    for t, c in _values(args, aoff, col, what):
        v = hex_literal(t) if width == 2 else None
        if v is not None:
            if v > 0xFFFF:
                raise LineError(f"bf16 bit pattern {t} does not fit 16 bits", c, len(t))
            vals.append(v)
            continue
        v = a.operands.float_at(t, c)
        if type(v) is not int:
            pend.append((len(vals), v, c))
            vals.append(0)
            continue
        vals.append(bf16_from_f32_bits(v) if width == 2 else v)
    sec.entries.append(("floats", width, vals, pend, ln))


def _word(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    sec = a._text_section(col, "'.word'", 5)
    loc = (ln << 24) | col if not a.explicit_lines else a.cur_loc
    for t, c in _values(args, aoff, col, ".word"):
        try:
            v = int_literal(t)
        except ValueError:
            v = a._value_at(t, c)
            if type(v) is not int:
                sec.pend.append(Pending(len(sec.words), 0,
                                        [(K_WORD, 0, U64, -(1 << 63), U64, "word", v, c, 0)],
                                        ln))
                sec.words.append(0)
                sec.locs.append(loc)
                continue
        if not -(1 << 63) <= v <= U64:
            raise LineError(f"{v} does not fit a 64-bit word", c, len(t))
        sec.words.append(v & U64)
        sec.locs.append(loc)


def _name_token(p: Parser, what: str) -> tuple[str, int]:
    k, t, pos = p.take()
    if k == "name":
        return t, pos
    if k == "str":
        return _string(t, pos), pos
    raise ExprError(f"expected {what}", pos, max(len(t), 1))


def _string(t: str, pos: int) -> str:
    try:
        v = json.loads(t)
    except json.JSONDecodeError as e:
        raise ExprError(f"bad string literal: {e.msg}", pos + e.pos, 1) from None
    return v


def _tensor(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    p = _parser(a, args)
    name, npos = _name_token(p, "a tensor name")
    k, role, rpos = p.take()
    if k != "name" or role not in ROLES:
        raise ExprError(f"expected a tensor role ({', '.join(ROLES)}), got '{role}'", rpos,
                        max(len(role), 1))
    k, dtype, dpos = p.take()
    if k != "name" or dtype not in DTYPE_BYTES:
        raise ExprError(f"expected a dtype ({', '.join(DTYPE_BYTES)}), got '{dtype}'", dpos,
                        max(len(dtype), 1))
    p.expect("[", "and the dimensions, e.g. f32[8,8]")
    dims = []
    while True:
        pos = p.peek()[2]
        dims.append((p.expr(), aoff + 1 + pos))
        if not p.accept(","):
            break
    p.expect("]")
    p.expect_end()
    if any(t.name == name for t in a.tensors):
        raise ExprError(f"tensor '{name}' is already declared", npos, len(name))
    a.tensors.append(TensorDecl(name, role, dtype, dims, ln, aoff + 1 + npos))


def _piece(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    p = _parser(a, args)
    name, npos = _name_token(p, "a tensor name")
    k, t, pos = p.peek()
    if k == "name" and t.lower() in ("list", "rest") and p.toks[p.i + 1][1] != ",":
        # Without this the selector word is read as the X of a node and the error points at
        # the next token ("expected ','"), which does not say what is wrong.
        raise ExprError(f"a piece's selector is all, node X,Y, row Y, col X or rect "
                        f"X0,Y0,X1,Y1 (or X,Y), not '{t}'", pos, len(t))
    if k == "name" and t.lower() in SELECTORS and t.lower() not in ("list", "rest"):
        where: Any = parse_selector(p, ln, aoff, aoff + 1 + pos, allow_list=False)
    else:
        x = (p.expr(), aoff + 1 + pos)
        p.expect(",", "between the node's X and Y")
        pos2 = p.peek()[2]
        where = (x, (p.expr(), aoff + 1 + pos2))
    pos = p.peek()[2]
    addr = (p.expr(), aoff + 1 + pos)
    opts: dict[str, list[tuple[Expr, int]]] = {}
    while not p.at_end():
        k, t, pos = p.take()
        if k != "name" or t not in ("offset", "shape", "strides"):
            raise ExprError(f"expected 'offset', 'shape' or 'strides', got '{t}'", pos,
                            max(len(t), 1))
        if t in opts:
            raise ExprError(f"'{t}' is given twice", pos, len(t))
        vals = []
        while True:
            pos2 = p.peek()[2]
            vals.append((p.expr(), aoff + 1 + pos2))
            if not p.accept(","):
                break
        opts[t] = vals
    a.pieces.append(PieceDecl(name, where, addr, opts, ln, col, aoff + 1 + npos))


def _file(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    p = _parser(a, args)
    k, t, pos = p.take()
    if k != "num":
        raise ExprError(".file expects INDEX \"NAME\"", pos, max(len(t), 1))
    idx = parse_int(t, pos)
    k, s, spos = p.take()
    if k != "str":
        raise ExprError(".file expects INDEX \"NAME\" (a quoted name)", spos, max(len(s), 1))
    fname = _string(s, spos)
    p.expect_end()
    if idx == len(a.files):
        a.files.append(fname)
    elif 0 <= idx < len(a.files):
        if a.files[idx] != fname:
            raise ExprError(f"file {idx} is already \"{a.files[idx]}\"", pos, len(t))
    else:
        raise ExprError(f"file index {idx} skips ahead: the next file index is "
                        f"{len(a.files)}", pos, len(t))


def _loc(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    words = args.split()
    if len(words) == 1 and words[0].lower() == "none":
        a.cur_loc = 0
        return
    if len(words) not in (3, 5):
        raise LineError(".loc expects FILE LINE COL [ASMFILE ASMLINE] or 'none'", col, 4)
    vals = []
    off = 0
    for w in words:
        off = args.index(w, off)
        c = aoff + 1 + off
        off += len(w)
        try:
            v = int_literal(w)
        except ValueError:
            shown = w if len(w) <= 40 else w[:20] + "..."
            raise LineError(f".loc takes integers, got '{shown}'", c, len(w)) from None
        if not INT32[0] <= v <= INT32[1]:
            raise LineError(f"{v} does not fit 32 bits", c, len(w))
        if len(vals) in (0, 3) and not -1 <= v < len(a.files):
            raise LineError(f"file index {v} has not been declared with .file", c, len(w))
        vals.append(v)
    if len(vals) == 3:
        vals += [-1, -1]
    row = tuple(vals)
    idx = a.loc_index.get(row)
    if idx is None:
        idx = a.loc_index[row] = len(a.loc_rows)
        a.loc_rows.append(row)
    a.cur_loc = idx


def _source(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    text = args.lstrip()
    off = aoff + len(args) - len(text)
    if text[:1] == '"':
        key, end = _json_string(text, off)
    else:
        m = re.match(r"[0-9]+", text)
        if m is None:
            raise LineError('.source expects "NAME" "TEXT" or FILE-INDEX "TEXT"', off + 1)
        idx = parse_int(m.group(0), off - aoff)
        if idx >= len(a.files):
            raise LineError(f"file index {idx} has not been declared with .file", off + 1,
                            len(m.group(0)))
        key, end = a.files[idx], m.end()
    rest = text[end:]
    r2 = rest.lstrip()
    off2 = off + end + len(rest) - len(r2)
    if r2[:1] != '"':
        raise LineError(".source needs the text as a quoted string", off2 + 1)
    body, end2 = _json_string(r2, off2)
    if r2[end2:].strip():
        raise LineError("unexpected text after the .source string", off2 + end2 + 1)
    if key in a.sources:
        raise LineError(f"source \"{key}\" is given twice", off + 1, end)
    a.sources[key] = body


def _json_string(text: str, off: int) -> tuple[str, int]:
    try:
        v, end = JSON_DECODER.raw_decode(text)
    except json.JSONDecodeError as e:
        raise LineError(f"bad string literal: {e.msg}", off + 1 + e.pos) from None
    if not isinstance(v, str):
        raise LineError("expected a quoted string", off + 1)
    return v, end


def _symbol(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    text = args.lstrip()
    off = aoff + len(args) - len(text)
    if text[:1] == '"':
        name, end = _json_string(text, off)
    else:
        m = re.match(r"\S+", text)
        if m is None:
            raise LineError(".symbol expects NAME KIND VALUE BLOCK", col, 7)
        name, end = m.group(0), m.end()
    words = text[end:].split()
    if len(words) != 3:
        raise LineError(".symbol expects NAME KIND VALUE BLOCK", col, 7)
    kind = words[0]
    if kind not in SYMBOL_KINDS:
        raise LineError(f"symbol kind must be one of {', '.join(SYMBOL_KINDS)}, got '{kind}'",
                        off + 1 + text.index(kind, end), len(kind))
    try:
        value, block = int_literal(words[1]), int_literal(words[2])
    except ValueError:
        raise LineError(".symbol VALUE and BLOCK must be integers", col, 7) from None
    a.symbols.append(Symbol(name, kind, value, block))


def _meta(a: Assembler, ln: int, args: str, aoff: int, col: int) -> None:
    if a.meta is not None:
        raise LineError(f".meta is given twice (first at line {a.meta_line})", col, 5)
    try:
        v = json.loads(args)
    except (json.JSONDecodeError, RecursionError) as e:
        raise LineError(f"bad .meta JSON: {getattr(e, 'msg', e)}",
                        aoff + 1 + getattr(e, "pos", 0)) from None
    if not isinstance(v, dict):
        raise LineError(".meta must be a JSON object", aoff + 1)
    a.meta, a.meta_line = v, ln


HANDLERS: dict[str, Any] = {
    ".machine": _machine,
    ".text": lambda a, ln, args, aoff, col: _section(a, ln, args, aoff, col, "text"),
    ".data": lambda a, ln, args, aoff, col: _section(a, ln, args, aoff, col, "data"),
    ".equ": _equ,
    ".org": lambda a, ln, args, aoff, col: _layout(a, ln, args, aoff, col, "org"),
    ".align": lambda a, ln, args, aoff, col: _layout(a, ln, args, aoff, col, "align"),
    ".zero": lambda a, ln, args, aoff, col: _layout(a, ln, args, aoff, col, "zero"),
    ".f32": lambda a, ln, args, aoff, col: _floats(a, ln, args, aoff, col, 4, ".f32"),
    ".bf16": lambda a, ln, args, aoff, col: _floats(a, ln, args, aoff, col, 2, ".bf16"),
    ".word": _word,
    ".tensor": _tensor,
    ".piece": _piece,
    ".file": _file,
    ".loc": _loc,
    ".source": _source,
    ".symbol": _symbol,
    ".meta": _meta,
    ".init": _init,
}
for _name, _w in INT_WIDTH.items():
    HANDLERS[_name] = (lambda w, nm: lambda a, ln, args, aoff, col: _ints(
        a, ln, args, aoff, col, w, nm))(_w, _name)
