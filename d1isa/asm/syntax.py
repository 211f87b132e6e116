"""The line level of `.d1s` text: comments, quoted strings, names, operand lists, and errors.

A statement is one line. Everything after `#` or `;` is a comment unless it is inside a
double-quoted string (JSON syntax, backslash escapes), and operands are separated by commas that
are not inside parentheses, brackets or strings. These helpers are written for speed (the
compiler's output has hundreds of thousands of lines): a line without quotes never takes the
character-by-character path.

Errors: `LineError` is an error at a column of the line being read (or of another line), and
`Diagnostics` collects the located `Diagnostic`s of one text, stopping at `MAX_ERRORS`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import Any

from d1isa.errors import Diagnostic
from d1isa.expr import ExprError

MAX_ERRORS = 100

COMMENT_RE = re.compile(r"[#;]")
LABEL_RE = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*):")
ASSIGN_RE = re.compile(r"([A-Za-z_.$][A-Za-z0-9_.$]*)\s*=(?!=)")
NAME_RE = re.compile(r"[A-Za-z_.$][A-Za-z0-9_.$]*\Z")
MEM_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*([+-].*)?\Z", re.S)
REGLIKE_RE = re.compile(r"(?:[rRvVaA][0-9]+|zero|sp|ra|ZERO|SP|RA)\Z")
EXPLICIT_LINES_RE = re.compile(r"^[ \t]*\.(?:file|loc|source)\b", re.M | re.I)
EXPLICIT_SYMBOLS_RE = re.compile(r"^[ \t]*\.symbol\b", re.M | re.I)
JSON_DECODER = json.JSONDecoder()


def quote(text: str) -> str:
    """`text` as a .d1s string literal (JSON syntax), for `.file`, `.source`, names."""
    return json.dumps(text)


def is_plain_name(name: str) -> bool:
    """True if `name` can be written bare (not quoted) where the syntax allows a name."""
    return bool(NAME_RE.match(name)) and not REGLIKE_RE.match(name)


def unquoted(text: str) -> Iterator[tuple[int, str]]:
    """(index, char) for every character outside double-quoted strings (backslash escapes)."""
    in_str = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        else:
            yield i, c
        i += 1


def strip_comment(line: str) -> str:
    """The line without its comment, honouring double-quoted strings with backslash escapes."""
    if '"' not in line:
        m = COMMENT_RE.search(line)
        return line[:m.start()] if m else line
    for i, c in unquoted(line):
        if c == "#" or c == ";":
            return line[:i]
    return line


def split_top(text: str) -> list[str]:
    """Split at commas outside parentheses, brackets and strings."""
    parts, depth, start = [], 0, 0
    for i, c in unquoted(text):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def suggest(name: str, choices: Any) -> str:
    """'; did you mean ...?' for the closest of `choices`, or nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class LineError(Exception):
    """A located error on the line being read (1-based column), or on another `line`."""

    def __init__(self, msg: str, col: int, width: int = 1, line: int | None = None) -> None:
        super().__init__(msg)
        self.msg, self.col, self.width, self.line = msg, col, max(width, 1), line


class Reported(Exception):
    """An error already reported elsewhere (a broken equate used again)."""


class TooManyErrors(Exception):
    """`MAX_ERRORS` diagnostics: stop reading."""


class Diagnostics:
    """The diagnostics of one text: each reported once, sorted, with its source line."""

    def __init__(self, filename: str, lines: list[str]) -> None:
        self.filename = filename
        self.lines = lines
        self.items: list[Diagnostic] = []
        self.seen: set[tuple[int, int, str]] = set()

    def __bool__(self) -> bool:
        return bool(self.items)

    def diag(self, line: int, col: int, msg: str, width: int = 1) -> None:
        key = (line, col, msg)
        if key in self.seen:
            return
        self.seen.add(key)
        src = self.lines[line - 1] if 1 <= line <= len(self.lines) else None
        self.items.append(Diagnostic(self.filename, line, max(col, 1), msg, src, width=width))
        if len(self.items) >= MAX_ERRORS:
            raise TooManyErrors()

    def first_col(self, line: int) -> int:
        """The column of the first non-blank character of `line`: where an error about the
        whole statement points (column 1 would be the indentation)."""
        src = self.lines[line - 1] if 1 <= line <= len(self.lines) else ""
        return len(src) - len(src.lstrip()) + 1

    def report(self, e: Exception, line: int, col: int) -> None:
        """Report a LineError/ExprError raised while handling `line`; `col` locates an
        ExprError whose position is relative to its expression."""
        if isinstance(e, LineError):
            self.diag(e.line or line, e.col, e.msg, e.width)
        elif isinstance(e, ExprError):
            if e.line is not None:
                self.diag(e.line, e.col or 1, e.msg, e.width)
            else:
                self.diag(line, col + max(e.pos, 0), e.msg, e.width)

    def sorted(self) -> list[Diagnostic]:
        """All diagnostics in text order, with a closing note if reading stopped early."""
        out = sorted(self.items, key=lambda d: (d.line, d.col))
        if len(out) >= MAX_ERRORS:
            out.append(Diagnostic(self.filename, out[-1].line, 1,
                                  f"too many errors ({MAX_ERRORS}); stopping", severity="note"))
        return out
