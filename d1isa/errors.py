"""The project's error types.

Every mistake a user can make surfaces as a `D1Error`, never a bare Python exception, so the CLI can
print it cleanly and pick the exit code: 2 for usage and compile errors, 1 for runtime failures.
Errors tied to a place in a source file carry that place and render the gcc way:

    prog.d1s:3:9: error: unknown register 'r99'
        add r1, r99, r2
                ^
"""

from __future__ import annotations

from dataclasses import dataclass, field


class D1Error(Exception):
    """Base class of every error the project reports to users."""

    exit_code = 2

    def render(self) -> str:
        """Text for the user, without a traceback."""
        return f"error: {self}"


class MachineError(D1Error):
    """An invalid machine description or override."""


class ObjectFormatError(D1Error):
    """A .d1o file that is truncated, corrupted, hostile or for another machine."""


class RuntimeFault(D1Error):
    """A run that ended in a trap or a deadlock (exit code 1)."""

    exit_code = 1


# Longest stretch of a source line a diagnostic shows.
SHOWN_LINE_CHARS = 120
# Control characters of a quoted source line are shown as '?', one for one (the caret stays
# under its column): a NUL shows nothing, and an escape sequence would act on the terminal.
_CONTROLS = {c: "?" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
# In a message (which quotes tokens of the source: `unexpected character`, `unknown
# instruction`) they are spelled as escapes instead, so the message says what the byte was.
_ESCAPED = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c != 0x0A}


def printable(text: str, keep: str = "") -> str:
    """`text` as it may be shown on a terminal: every control character (but those in `keep`,
    such as a newline of a multi-line listing) spelled as an escape (\\x1b). Names and text
    that come from a file (an object's source names, a statistics file's strings, the
    members of a .npz) go through here, so an escape sequence in them cannot act on the
    terminal (set its title, write to the clipboard, clear the screen)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)


@dataclass
class Diagnostic:
    """One located message: file:line:col: severity: message, plus the source line and a caret."""

    file: str
    line: int
    col: int
    message: str
    source_line: str | None = None
    severity: str = "error"
    width: int = 1

    def render(self) -> str:
        head = (f"{self.file}:{self.line}:{self.col}: {self.severity}: "
                f"{self.message.translate(_ESCAPED)}")
        if self.source_line is None:
            return head
        text = self.source_line.rstrip("\n").expandtabs(1).translate(_CONTROLS)
        col, width = max(self.col - 1, 0), max(self.width, 1)
        if len(text) > SHOWN_LINE_CHARS:
            # A very long line is shown as a window around the column, marked with "...".
            start = max(0, min(col - 20, len(text) - SHOWN_LINE_CHARS))
            end = start + SHOWN_LINE_CHARS
            text = ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
            col = col - start + (3 if start else 0)
            width = min(width, SHOWN_LINE_CHARS - (col - (3 if start else 0)))
        caret = " " * col + "^" + "~" * max(width - 1, 0)
        return f"{head}\n    {text}\n    {caret}"


def line_of(text: str, line: int) -> str | None:
    """The 1-based `line` of `text`, or None if it does not exist."""
    lines = text.splitlines()
    if 1 <= line <= len(lines):
        # A UTF-8 byte-order mark is not part of line 1 as an editor shows it.
        return lines[line - 1].removeprefix("\ufeff") if line == 1 else lines[line - 1]
    return None


@dataclass
class SourceError(D1Error):
    """One or more located diagnostics from the assembler or the compiler (exit code 2)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        body = "\n".join(d.render() for d in self.diagnostics)
        n = sum(1 for d in self.diagnostics if d.severity == "error")
        if n > 1:
            body += f"\n{n} errors"
        return body

    def __str__(self) -> str:
        return self.render()

    @classmethod
    def at(cls, file: str, text: str | None, line: int, col: int, message: str,
           width: int = 1) -> SourceError:
        """A single diagnostic, with the source line taken from `text`."""
        src = line_of(text, line) if text is not None else None
        return cls([Diagnostic(file, line, col, message, src, width=width)])
