"""Formatting numbers with their units, so every printed metric says what it measures."""

from __future__ import annotations

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str, digits: int = 3) -> str:
    """1.234e12, 'FLOP/s' -> '1.23 TFLOP/s' (decimal prefixes)."""
    v = float(value)
    for scale, prefix in _SI:
        if abs(v) >= scale:
            return f"{v / scale:.{digits}g} {prefix}{unit}"
    return f"{v:.{digits}g} {unit}".rstrip()      # no unit, no prefix: a bare number


def nbytes(n: float) -> str:
    """Bytes with a binary prefix and the exact count: '1.25 MiB (1,310,720 B)'."""
    n = float(n)
    for scale, prefix in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {prefix} ({int(n):,} B)"
    return f"{int(n):,} B"


def seconds(s: float) -> str:
    s = float(s)
    if s == 0:
        return "0 s"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if abs(s) >= scale:
            return f"{s / scale:.4g} {unit}"
    return f"{s / 1e-12:.4g} ps"


def number(v: object) -> str:
    """An integer with thousands separators (1416 -> '1,416'); anything else as it is (a
    statistics file read back may hold any value there)."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def count(n: float, noun: str) -> str:
    """3, 'message' -> '3 messages', and 1 -> '1 message' (thousands separated)."""
    return f"{int(n):,} {noun}{'' if int(n) == 1 else 's'}"


def cycles(c: float) -> str:
    return count(c, "cycle")


def percent(fraction: float) -> str:
    return f"{100.0 * fraction:.1f}%"
