"""Building per-node instruction streams, as data.

`Code` is the program of one live node: a list of instructions (`d1isa.asm.program.Instr`,
each checked against the ISA table and the machine when it is built, so a bad operand is a
compiler error at the line that builds it), labels, and location marks that tie every
instruction to the DSL position of the IR node that caused it. Kernels append to it with
`op(mnemonic, *operands)` and a few helpers: `li` (which skips a load whose value the register
is known to hold), loops, labels unique within the node's program, and vector copies with
masked tails. Operand values: registers by name, ints, memory operands as (base, offset),
directions as N/E/S/W below (indices of d1isa.machine.DIRECTIONS), fp32 immediates as bit
patterns (`f32_bits`), branch targets as label names.

Register conventions (every kernel starts with nothing live in registers, since all values live
in SRAM between steps): r1..r13 and v0..v15 are the kernels' own; r14 and r15 hold the address
and length of block sends and receives (`COMM_ADDR`, `COMM_LEN`); kernels never write them, so
their known contents survive from one message to the next.
"""

from __future__ import annotations

import numpy as np

from d1isa.asm.program import InstrSet
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS, Machine

COMM_ADDR = "r14"
COMM_LEN = "r15"
MIN_SCALAR_REGS = 16
MIN_VECTOR_REGS = 16
N = DIRECTIONS.index("N")
E = DIRECTIONS.index("E")
S = DIRECTIONS.index("S")
W = DIRECTIONS.index("W")


class CompilerLimit(D1Error):
    """A program the language allows but this compiler cannot map (a matmul row too long for
    the mma stride field, a fused expression needing more registers than there are). The
    pipeline reports it at the statement that caused it, as
    `file:line:col: error: ... (a limit of this compiler: LIMIT)`."""

    def __init__(self, message: str, limit: str, loc: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message, self.limit, self.loc = message, limit, loc


def check_machine(m: Machine) -> None:
    """The compiler's register needs; a clear error for a machine that cannot meet them."""
    if m.scalar_regs < MIN_SCALAR_REGS or m.vector_regs < MIN_VECTOR_REGS:
        raise D1Error(f"the compiler needs at least {MIN_SCALAR_REGS} scalar and "
                      f"{MIN_VECTOR_REGS} vector registers; machine '{m.name}' has "
                      f"{m.scalar_regs} and {m.vector_regs}")


def f32_bits(x: float) -> int:
    """The fp32 bit pattern of x rounded to fp32 as numpy's float32(x) rounds it (beyond the
    range: an infinity, as a literal is): the value of an fp32 immediate operand."""
    with np.errstate(over="ignore"):
        return int(np.float32(x).view(np.uint32))


def f32_hex(x: float) -> str:
    """The fp32 bit pattern of x as the assembler's exact hex immediate."""
    return f"0x{f32_bits(x):08x}"


class Code:
    """The instruction stream of one live node.

    `lanes` (f32 lanes of a vector register), `vbytes` (its bytes) and `tile` (the matrix
    unit's tile edge) are the machine's, for the kernels' vector and tile arithmetic."""

    __slots__ = ("instrs", "cache", "items", "loc", "nlab", "known", "ninstr", "nrelay",
                 "sticky", "lanes", "vbytes", "tile")

    def __init__(self, instrs: InstrSet) -> None:
        self.instrs = instrs
        self.cache = instrs.cache
        self.items: list = []
        self.loc: tuple[int, int] | None = None
        self.nlab = 0
        self.known: dict[str, int] = {}
        self.ninstr = 0
        self.nrelay = 0
        self.sticky: frozenset[str] = frozenset((COMM_ADDR, COMM_LEN))
        m = instrs.machine
        self.lanes = m.vector_lanes_f32
        self.vbytes = 4 * self.lanes
        self.tile = m.mma_dim

    def at(self, loc: tuple[int, int]) -> None:
        """Attribute the following instructions to DSL position (line, col)."""
        if loc != self.loc:
            self.items.append(self.instrs.mark(loc))
            self.loc = loc

    def op(self, mnemonic: str, *ops: object) -> None:
        """Append one instruction (checked and encoded once per distinct instruction)."""
        try:
            ins = self.cache.get((mnemonic, ops, self.loc))
        except TypeError:
            ins = None
        if ins is None:
            ins = self.instrs.instr(mnemonic, ops, self.loc)
        self.items.append(ins)
        self.ninstr += 1

    def ops(self, mnemonic: str, operands: list[tuple]) -> None:
        """Append one `mnemonic` instruction per operand tuple (a matmul's runs of tiles)."""
        cache, loc, append = self.cache, self.loc, self.items.append
        for ops in operands:
            try:
                ins = cache.get((mnemonic, ops, loc))
            except TypeError:
                ins = None
            if ins is None:
                ins = self.instrs.instr(mnemonic, ops, loc)
            append(ins)
        self.ninstr += len(operands)

    def li(self, reg: str, value: int) -> None:
        """Load a constant. The message registers remember their contents (nothing else writes
        them), and so do registers a kernel declares sticky while it runs, so a repeated
        address, length or count costs nothing."""
        if reg in self.sticky:
            if self.known.get(reg) == value:
                return
            self.known[reg] = value
        ops = (reg, value)
        ins = self.cache.get(("li", ops, self.loc))     # the most frequent instruction
        if ins is None:
            ins = self.instrs.instr("li", ops, self.loc)
        self.items.append(ins)
        self.ninstr += 1

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
        self.items.append(self.instrs.label(label))
        self.known.clear()

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
        self.op("addi", reg, reg, -1)
        self.op("bnez", reg, top)
        self.clobber(reg)

    # ---- messages -------------------------------------------------------------------------

    def sendb(self, d: int, addr: int, n: int, len_reg: str = COMM_LEN,
              addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op("sendb", d, addr_reg, len_reg)

    def recvb(self, d: int, addr: int, n: int, len_reg: str = COMM_LEN,
              addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op("recvb", d, addr_reg, len_reg)

    def relayb(self, d_from: int, d_to: int, addr: int, n: int, len_reg: str = COMM_LEN,
               addr_reg: str = COMM_ADDR) -> None:
        self.li(addr_reg, addr)
        self.li(len_reg, n)
        self.op("relayb", d_from, d_to, addr_reg, len_reg)

    def relay(self, d_from: int, d_to: int) -> None:
        self.op("relay", d_from, d_to)
        self.nrelay += 1

    # ---- vector helpers -------------------------------------------------------------------

    def vload(self, vd: str, base: str, off: int, dtype: str) -> None:
        self.op("vldw.bf16" if dtype == "bf16" else "vld", vd, (base, off))

    def vstore(self, vs: str, base: str, off: int, dtype: str) -> None:
        self.op("vstn.bf16" if dtype == "bf16" else "vst", vs, (base, off))

    def lane_mask(self, vd: str, k: int, tmp: str) -> None:
        """vd lanes 0..k-1 all ones, the rest zero (k in 1..lanes - 1)."""
        self.op("viota", vd)
        self.op("vbcasti", tmp, f32_bits(float(k)))
        self.op("vcmplt", vd, vd, tmp)

    def copy_row(self, src: str, soff: int, dst: str, doff: int, n: int, dtype: str,
                 overrun_ok: bool) -> None:
        """Copy n elements from [src+soff] to [dst+doff]. With overrun_ok the last vector may
        write up to lanes - 1 elements past the end; otherwise the tail is merged under a lane
        mask."""
        size = 4 if dtype == "f32" else 2
        full, tail = divmod(n, self.lanes)
        step = self.lanes * size
        for k in range(full):
            self.vload("v0", src, soff + k * step, dtype)
            self.vstore("v0", dst, doff + k * step, dtype)
        if tail:
            o = full * step
            self.vload("v0", src, soff + o, dtype)
            if not overrun_ok:
                self.vload("v1", dst, doff + o, dtype)
                self.lane_mask("v2", tail, "v3")
                self.op("vsel", "v0", "v2", "v0", "v1")
            self.vstore("v0", dst, doff + o, dtype)

