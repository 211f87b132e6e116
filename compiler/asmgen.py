"""Building per-node instruction streams as assembly text.

`Code` is the program of one live node: a list of assembly lines, with `.loc` lines that tie
every instruction to the DSL position of the IR node that caused it. Kernels append to it through
a few helpers: `li` (which skips a load whose value the register is known to hold), loops,
labels unique within the node's program, and vector copies with masked tails.

Register conventions (every kernel starts with nothing live in registers, since all values live
in SRAM between steps): r1..r13 and v0..v15 are the kernels' own; r14 and r15 hold the address
and length of block sends and receives (`COMM_ADDR`, `COMM_LEN`); kernels never write them, so
their known contents survive from one message to the next.
"""

from __future__ import annotations

import struct

from d1isa.errors import D1Error
from d1isa.machine import Machine

COMM_ADDR = "r14"
COMM_LEN = "r15"
MIN_SCALAR_REGS = 16
MIN_VECTOR_REGS = 16
DIRS = ("N", "E", "S", "W")


def check_machine(m: Machine) -> None:
    """The compiler's register needs; a clear error for a machine that cannot meet them."""
    if m.scalar_regs < MIN_SCALAR_REGS or m.vector_regs < MIN_VECTOR_REGS:
        raise D1Error(f"the compiler needs at least {MIN_SCALAR_REGS} scalar and "
                      f"{MIN_VECTOR_REGS} vector registers; machine '{m.name}' has "
                      f"{m.scalar_regs} and {m.vector_regs}")


def f32_hex(x: float) -> str:
    """The fp32 bit pattern of x as the assembler's exact hex immediate."""
    return f"0x{struct.unpack('<I', struct.pack('<f', x))[0]:08x}"


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


class Code:
    """The instruction stream of one live node."""

    __slots__ = ("lines", "loc", "nlab", "known", "ninstr", "nrelay", "sticky")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.loc: tuple[int, int] | None = None
        self.nlab = 0
        self.known: dict[str, int] = {}
        self.ninstr = 0
        self.nrelay = 0
        self.sticky: frozenset[str] = frozenset((COMM_ADDR, COMM_LEN))

    def at(self, loc: tuple[int, int]) -> None:
        """Attribute the following instructions to DSL position (line, col)."""
        if loc != self.loc:
            self.lines.append(f".loc 0 {loc[0]} {loc[1]}")
            self.loc = loc

    def op(self, text: str) -> None:
        self.lines.append("  " + text)
        self.ninstr += 1

    def ops(self, texts: list[str]) -> None:
        """Several instructions at once (each already indented by two spaces)."""
        self.lines.extend(texts)
        self.ninstr += len(texts)

    def li(self, reg: str, value: int) -> None:
        """Load a constant. The message registers remember their contents (nothing else writes
        them), and so do registers a kernel declares sticky while it runs, so a repeated
        address, length or count costs nothing."""
        if reg in self.sticky:
            if self.known.get(reg) == value:
                return
            self.known[reg] = value
        self.op(f"li {reg}, {value}")

    def clobber(self, *regs: str) -> None:
        for r in regs:
            self.known.pop(r, None)

    def stick(self, *regs: str) -> None:
        """Remember what `li` puts in these registers until `unstick` (the caller guarantees
        that nothing else writes them meanwhile, except through `li`, `counted` or a label)."""
        self.sticky = self.sticky | set(regs)

    def unstick(self, *regs: str) -> None:
        self.sticky = self.sticky - set(regs)
        self.clobber(*regs)

    def label(self, prefix: str = "L") -> str:
        self.nlab += 1
        return f".{prefix}{self.nlab}"

    def place(self, label: str) -> None:
        """Put a label here. Control may arrive from elsewhere, so nothing is known."""
        self.lines.append(f"{label}:")
        self.known.clear()

    def comment(self, text: str) -> None:
        self.lines.append(f"  # {text}")

    # ---- loops ----------------------------------------------------------------------------

    def counted(self, reg: str, n: int, body) -> None:
        """Run `body()` n times: unrolled once for n == 1, else a down-counting loop in `reg`
        (body must not write `reg`)."""
        if n <= 0:
            return
        if n == 1:
            body()
            return
        self.li(reg, n)
        top = self.label()
        self.place(top)
        body()
        self.op(f"addi {reg}, {reg}, -1")
        self.op(f"bnez {reg}, {top}")
        self.clobber(reg)

    # ---- messages -------------------------------------------------------------------------

    def sendb(self, d: int, addr: int, n: int, len_reg: str = COMM_LEN,
              addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op(f"sendb {DIRS[d]}, {addr_reg}, {len_reg}")

    def recvb(self, d: int, addr: int, n: int, len_reg: str = COMM_LEN,
              addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op(f"recvb {DIRS[d]}, {addr_reg}, {len_reg}")

    def relayb(self, d_from: int, d_to: int, addr: int, n: int, len_reg: str = COMM_LEN,
               addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op(f"relayb {DIRS[d_from]}, {DIRS[d_to]}, {addr_reg}, {len_reg}")

    def relay(self, d_from: int, d_to: int) -> None:
        self.op(f"relay {DIRS[d_from]}, {DIRS[d_to]}")
        self.nrelay += 1

    # ---- vector helpers -------------------------------------------------------------------

    def vload(self, vd: str, base: str, off: int, dtype: str) -> None:
        if dtype == "bf16":
            self.op(f"vldw.bf16 {vd}, [{base}{off:+d}]")
        else:
            self.op(f"vld {vd}, [{base}{off:+d}]")

    def vstore(self, vs: str, base: str, off: int, dtype: str) -> None:
        if dtype == "bf16":
            self.op(f"vstn.bf16 {vs}, [{base}{off:+d}]")
        else:
            self.op(f"vst {vs}, [{base}{off:+d}]")

    def lane_mask(self, vd: str, k: int, tmp: str) -> None:
        """vd lanes 0..k-1 all ones, the rest zero (k in 1..15)."""
        self.op(f"viota {vd}")
        self.op(f"vbcasti {tmp}, {f32_hex(float(k))}")
        self.op(f"vcmplt {vd}, {vd}, {tmp}")

    def copy_row(self, src: str, soff: int, dst: str, doff: int, n: int, dtype: str,
                 overrun_ok: bool) -> None:
        """Copy n elements from [src+soff] to [dst+doff]. With overrun_ok the last vector may
        write up to 15 elements past the end; otherwise the tail is merged under a lane mask."""
        size = 4 if dtype == "f32" else 2
        full, tail = divmod(n, 16)
        step = 16 * size
        for k in range(full):
            self.vload("v0", src, soff + k * step, dtype)
            self.vstore("v0", dst, doff + k * step, dtype)
        if tail:
            o = full * step
            self.vload("v0", src, soff + o, dtype)
            if not overrun_ok:
                self.vload("v1", dst, doff + o, dtype)
                self.lane_mask("v2", tail, "v3")
                self.op("vsel v0, v2, v0, v1")
            self.vstore("v0", dst, doff + o, dtype)

    def text(self) -> str:
        return "\n".join(self.lines)
