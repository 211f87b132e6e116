"""The reference interpreter: the slow, plain-Python executable specification of the machine.

This module is the oracle that the fast Numba emulator (`emulator.Emulator`) is tested against. It
is written from docs/ISA.md and docs/TIMING.md alone, for reading rather than for speed: every word
is decoded with `d1isa.isa.decode` when it is fetched, each instruction (or tight family) is one
small function whose body reads like its semantics line, scalar registers are Python ints wrapped
to 64 bits, and every fp32 operation is one numpy float32 operation, rounded once.

Layers, as in Spike: a `_Node` holds one core's state (registers, SRAM, clock, statistics), a
`_Link` holds one directed link (its FIFO at the receiver and its timing memory), and
`ReferenceEmulator.run` runs the live nodes round-robin, `quantum` instructions per turn.

Decisions where the docs leave room (the fast emulator must make the same ones):

- An instruction that traps changes nothing: pc stays on it, its clock, statistics, registers,
  SRAM, FIFOs and generator are untouched. That includes the `trap` instruction itself (it is not
  counted and costs no cycles); its code goes to `trap_arg`.
- `halt` completes: it is counted (class sys), costs `cost_sys` cycles, and pc stays on it.
- A node whose block is -1 *or empty* has no code and is halted from the start.
- Before each instruction: the cycle limit (clock > max_cycles -> cause 9), then the pc range
  (cause 2, pc left at the out-of-range value, e.g. len(code) after falling off the end), then
  decoding (cause 1 for an invalid word or a register/accumulator index the machine lacks).
- Addresses are computed in 64-bit two's complement, wrapping, and read as signed
  (a = s64(rs1 + sext(imm) + i * stride)); then 0 <= a and a + size <= sram_bytes.
- Instructions touching several addresses (strided lanes, tile rows, both mma operands) trap
  with "out of range" if any address is out of range, else with "misaligned" if any is misaligned
  (range first, over the whole instruction). Strided stores write lanes in order, so on overlap
  the higher lane wins. Element alignment: fp32 4, bf16 2; sendb/recvb/relayb need none.
- Network instructions check, in order: neighbours (dir, then dir2), then for `sendb` the length
  (signed rs2 in 1..max_message_bytes, else cause 6) and the SRAM range of [rs1, rs1 + rs2);
  only then do they block (no message in: blocked on receive; for sends and relays, no room
  out: blocked on send). With the message present: length mismatch (cause 7, rs2 compared as a
  signed value), then for recvb/relayb the SRAM range of [rs1, rs1 + length).
- `vbcasti` and `vsplat` move bits unchanged (a NaN immediate or lane is not canonicalised); they
  are not arithmetic. Widening (vldw, vldsw, vwiden) appends 16 zero bits to the raw bf16.
- `vredsum` starts from lane 0 and adds lanes 1..15 (15 additions, matching its FLOP count);
  `vredmax` likewise folds vmax over lanes 1..15 into lane 0. Results are canonicalised.
- `mma.bf16` adds the exact product: acc = f32(acc + A*B) rounded once, computed as
  float32(float64(acc) + float64(A) * float64(B)), which is exact-then-rounded-once for bf16
  operands (the product of two bf16 values has at most 16 significant bits). This differs from
  rounding the product to fp32 first only when the product is outside the fp32 range (|p| >=
  2^128 or a product below the subnormal range), where "bf16 products are exact in fp32" does
  not hold.
- `mmak.*` reads rs3 as an unsigned 64-bit step count k (a negative register is a huge count,
  which runs out of SRAM: cause 3). It is one instruction of its class, costs max(k, 1) times the
  mma cost and counts 1024 * k FLOPs. k = 0 changes nothing (no address checks, NaNs in the
  accumulator are left as they are). Otherwise every row of every step is range-checked, then
  alignment-checked, before step 0 runs; steps then run in order as separate mmas would.
- SRAM high-water mark: highest written byte + 1 over initial data, host writes, stores and
  received messages; a zero-length write writes no byte.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np

from d1isa import traps
from d1isa.errors import D1Error
from d1isa.isa import FLOPS, INSTRUCTIONS, OPERANDS, EncodingError, Instruction, decode
from d1isa.machine import DIRECTIONS, OPPOSITE, TIMING_CLASSES
from d1isa.numbers import is_integer
from d1isa.objfile import ObjectFile

MASK64 = (1 << 64) - 1
MASK32 = 0xFFFF_FFFF
INT64_MIN = -(1 << 63)
CANONICAL_NAN = 0x7FC0_0000
BF16_NAN = 0x7FC0
GOLDEN = 0x9E37_79B9_7F4A_7C15
LANES = 16
TILE = 8

# Node states, as reported by state_dict()["state"].
RUNNING, BLOCKED_SEND, BLOCKED_RECV, HALTED, TRAPPED = range(5)


class Trap(Exception):
    """Raised by an instruction's semantics: the node traps and the instruction changes nothing."""

    def __init__(self, cause: int, arg: int = 0) -> None:
        super().__init__(traps.cause_name(cause))
        self.cause = cause
        self.arg = arg


class Block(Exception):
    """Raised by a network instruction that must wait; it changes nothing and is retried."""

    def __init__(self, state: int) -> None:
        super().__init__("blocked")
        self.state = state


# ---- numeric helpers --------------------------------------------------------------------------

def s64(v: int) -> int:
    """Wrap an int to signed 64-bit two's complement."""
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def u64(v: int) -> int:
    return v & MASK64


def sext32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v >> 31 else v


def f32(bits: int) -> np.float32:
    """The fp32 value with these bits."""
    return np.uint32(bits & MASK32).view(np.float32)


def is_nan_bits(u: int) -> bool:
    return (u & 0x7F80_0000) == 0x7F80_0000 and (u & 0x007F_FFFF) != 0


def bits(x: np.float32 | float) -> int:
    """Bits of an arithmetic fp32 result (a Python float is rounded once to fp32 first); every
    NaN becomes the canonical quiet NaN."""
    x = np.float32(x)
    if np.isnan(x):
        return CANONICAL_NAN
    return int(x.view(np.uint32))


def bf16_rne(u: int) -> int:
    """fp32 bits -> bf16 bits, round to nearest even; NaN -> 0x7fc0."""
    if is_nan_bits(u):
        return BF16_NAN
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def bf16_sr(u: int, r: int) -> int:
    """fp32 bits -> bf16 bits, stochastic rounding with the random value r; NaN -> 0x7fc0."""
    if is_nan_bits(u):
        return BF16_NAN
    return (u + (r & 0xFFFF)) >> 16


def widen(h: int) -> int:
    """bf16 bits -> fp32 bits: append 16 zero bits."""
    return (h & 0xFFFF) << 16


def exp64(x: float) -> float:
    """exp in fp64; an fp64 overflow gives inf."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def pow64(x: float, y: float) -> float:
    """C's pow in fp64 (C99 Annex F): Python's math.pow, whose exceptions stand for C's results.
    An overflow is +-inf (-inf for a negative base and an odd integer exponent); zero to a
    negative power is a pole, +-inf likewise (-inf only for -0); a negative base to a non-integer
    power is NaN."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return -math.inf if x < 0 and _odd_integer(y) else math.inf
    except ValueError:
        if x == 0:
            return -math.inf if math.copysign(1.0, x) < 0 and _odd_integer(y) else math.inf
        return math.nan


def _odd_integer(y: float) -> bool:
    return math.isfinite(y) and y.is_integer() and abs(y) < 2.0 ** 53 and int(y) % 2 == 1


def gelu64(x: float) -> float:
    """The erf form of GELU in fp64, as vgelu computes it: 0.5 x erfc(-x / sqrt(2))."""
    return 0.5 * x * math.erfc(-x / math.sqrt(2.0))


def splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step: (new state, drawn value)."""
    state = (state + GOLDEN) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & MASK64
    return state, z ^ (z >> 31)


def lanes_from_bytes(b: bytes) -> list[int]:
    return [int.from_bytes(b[4 * i:4 * i + 4], "little") for i in range(len(b) // 4)]


def lanes_to_bytes(lanes: list[int]) -> bytes:
    return b"".join((v & MASK32).to_bytes(4, "little") for v in lanes)


def bf16_lane(v: list[int], i: int) -> int:
    """bf16 lane i (0..31) of a vector register: halfword i of its 64 little-endian bytes."""
    return (v[i // 2] >> (16 * (i % 2))) & 0xFFFF


def pack_bf16(halves: list[int]) -> list[int]:
    """32 bf16 lanes -> 16 fp32-lane words."""
    return [halves[2 * i] | (halves[2 * i + 1] << 16) for i in range(LANES)]


# ---- machine state ----------------------------------------------------------------------------

@dataclass
class _Node:
    """One live node: its core, its SRAM, its clock and its statistics."""

    id: int
    code: list[int]
    x: list[int]
    v: list[list[int]]
    acc: list[list[int]]            # [accumulator][row * 8 + col], raw fp32 bits
    sram: bytearray
    sr_state: int
    pc: int = 0
    clock: int = 0
    state: int = RUNNING
    cause: int = 0
    trap_arg: int = 0
    count: list[int] = field(default_factory=lambda: [0] * len(TIMING_CLASSES))
    flops: int = 0
    busy: int = 0
    stall: int = 0
    sram_hwm: int = 0


@dataclass
class _Link:
    """One directed link: the FIFO at its receiving end plus what the timing model remembers."""

    fifo: deque[tuple[int, int, bytes]]     # (length, arrival, payload), oldest first
    consumed: list[int]                     # ring: consumed[k % fifo_depth] = time message k left
    pushed: int = 0
    wire_free: int = 0

    @property
    def popped(self) -> int:
        return self.pushed - len(self.fifo)


# ---- the interpreter --------------------------------------------------------------------------

class ReferenceEmulator:
    """Runs an ObjectFile node by node, instruction by instruction, from the docs' rules."""

    def __init__(self, obj: ObjectFile, seed: int = 0, max_cycles: int = 50_000_000,
                 quantum: int = 64) -> None:
        if not isinstance(obj, ObjectFile):
            raise D1Error(f"ReferenceEmulator takes an ObjectFile, not {type(obj).__name__}")
        for what, value in (("seed", seed), ("max_cycles", max_cycles), ("quantum", quantum)):
            if not is_integer(value):
                raise D1Error(f"{what} must be an integer, not {type(value).__name__}")
        if quantum < 1:
            raise D1Error(f"quantum must be at least 1, got {quantum}")
        m = obj.machine
        self.obj = obj
        self.machine = m
        self.seed = seed
        self.max_cycles = max_cycles
        self.quantum = quantum
        self.n = m.n_live
        self.neighbors = [[int(t) for t in row] for row in m.neighbors]
        self.latency = [[int(t) for t in row] for row in m.link_latency]
        self.bandwidth = [[int(t) for t in row] for row in m.link_bandwidth]
        self.cost = {k: m.cost(k) for k in TIMING_CLASSES}
        self.nodes: list[_Node] = []
        for nid in range(self.n):
            block = obj.block_of(nid)
            code = [int(w) for w in block.words] if block is not None else []
            node = _Node(
                id=nid, code=code,
                x=[0] * m.scalar_regs,
                v=[[0] * LANES for _ in range(m.vector_regs)],
                acc=[[0] * (TILE * TILE) for _ in range(m.accumulators)],
                sram=bytearray(m.sram_bytes),
                sr_state=self.default_sr_state(nid),
            )
            if not code:
                node.state = HALTED
            self.nodes.append(node)
        self.links = [_Link(deque(), [0] * m.fifo_depth) for _ in range(self.n * 4)]
        self.link_bytes = [[0] * 4 for _ in range(self.n)]
        self.link_msgs = [[0] * 4 for _ in range(self.n)]
        self.link_busy = [[0] * 4 for _ in range(self.n)]
        for d in obj.data:
            self.write_sram(d.node, d.addr, bytes(d.data))
        for nid, regs in obj.init.nodes().items():
            for r, v in regs.items():
                self.nodes[nid].x[r] = s64(v)

    # ---- host interface -----------------------------------------------------------------------

    def default_sr_state(self, nid: int) -> int:
        return (self.seed * GOLDEN + nid + 1) & MASK64

    def write_sram(self, node: int, addr: int, data: bytes) -> None:
        """Host write into one node's SRAM (counts toward its high-water mark)."""
        if not 0 <= node < self.n:
            raise D1Error(f"no live node {node}")
        if not (0 <= addr and addr + len(data) <= self.machine.sram_bytes):
            raise D1Error(f"host write at {addr:#x}+{len(data)} is outside node {node}'s SRAM")
        self._store(self.nodes[node], addr, bytes(data))

    def read_sram(self, node: int, addr: int, size: int) -> bytes:
        return bytes(self.nodes[node].sram[addr:addr + size])

    def run(self) -> str:
        """Round-robin over live nodes until a full round makes no progress; the final status."""
        with np.errstate(all="ignore"):
            while True:
                progress = False
                for node in self.nodes:
                    if node.state in (HALTED, TRAPPED):
                        continue
                    for _ in range(self.quantum):
                        if not self.step(node):
                            break
                        progress = True
                        if node.state != RUNNING:
                            break
                if not progress:
                    break
        return self.status()

    def status(self) -> str:
        states = [node.state for node in self.nodes]
        if all(s == HALTED for s in states):
            return "halted"
        if any(s == TRAPPED for s in states):
            return "trapped"
        if any(s in (BLOCKED_SEND, BLOCKED_RECV) for s in states):
            return "deadlock"
        return "running"

    # ---- one instruction ----------------------------------------------------------------------

    def step(self, node: _Node) -> bool:
        """Try to execute node's next instruction; True if it completed (it may have halted)."""
        try:
            if node.clock > self.max_cycles:
                raise Trap(traps.CYCLE_LIMIT)
            if not 0 <= node.pc < len(node.code):
                raise Trap(traps.PC_OUT_OF_RANGE)
            ins, f = self.fetch(node.code[node.pc])
            clock_before = node.clock
            next_pc = SEMANTICS[ins.mnemonic](self, node, f)
        except Trap as t:
            node.state, node.cause, node.trap_arg = TRAPPED, t.cause, t.arg
            return False
        except Block as b:
            node.state = b.state
            return False
        if node.state in (BLOCKED_SEND, BLOCKED_RECV):
            node.state = RUNNING
        repeat, flops = 1, FLOPS.get(ins.mnemonic, 0)
        if ins.format == "MMAK":        # k mma steps: k times the FLOPs, max(k, 1) times the cost
            k = mmak_steps(node, f)
            repeat, flops = max(k, 1), flops * k
        if ins.group != "network":      # network instructions run the timing model themselves
            cost = self.cost[ins.timing] * repeat
            node.clock = clock_before + cost
            node.busy += cost
        node.count[TIMING_CLASSES.index(ins.timing)] += 1
        node.flops += flops
        node.pc = node.pc + 1 if next_pc is None else next_pc
        return True

    def fetch(self, word: int) -> tuple[Instruction, dict[str, int]]:
        """Decode a word and check its register operands against this machine."""
        try:
            ins, f = _decode(word)
        except EncodingError:
            raise Trap(traps.ILLEGAL_INSTRUCTION) from None
        m = self.machine
        limits = {"x": m.scalar_regs, "v": m.vector_regs, "a": m.accumulators}
        for field_name, kind in _register_operands(ins):
            if f[field_name] >= limits[kind]:
                raise Trap(traps.ILLEGAL_INSTRUCTION)
        return ins, f

    # ---- memory -------------------------------------------------------------------------------

    def check(self, addrs: list[int], size: int, align: int) -> None:
        """Every access [a, a + size) in range, then every a aligned (range first)."""
        sram = self.machine.sram_bytes
        if any(a < 0 or a + size > sram for a in addrs):
            raise Trap(traps.SRAM_OUT_OF_RANGE)
        if any(a % align for a in addrs):
            raise Trap(traps.MISALIGNED)

    def _store(self, node: _Node, addr: int, data: bytes) -> None:
        if not data:
            return
        node.sram[addr:addr + len(data)] = data
        node.sram_hwm = max(node.sram_hwm, addr + len(data))

    # ---- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        m, n = self.machine, self.n
        nodes = self.nodes
        return {
            "x": np.array([[s64(r) for r in nd.x] for nd in nodes],
                          dtype=np.int64).reshape(n, m.scalar_regs),
            "v": np.array([nd.v for nd in nodes], dtype=np.uint32).reshape(
                n, m.vector_regs, LANES),
            "acc": np.array([nd.acc for nd in nodes], dtype=np.uint32).reshape(
                n, m.accumulators, TILE, TILE),
            "sram": np.frombuffer(b"".join(bytes(nd.sram) for nd in nodes),
                                  dtype=np.uint8).reshape(n, m.sram_bytes).copy(),
            "pc": np.array([nd.pc for nd in nodes], dtype=np.int64),
            "clock": np.array([nd.clock for nd in nodes], dtype=np.int64),
            "state": np.array([nd.state for nd in nodes], dtype=np.int8),
            "cause": np.array([nd.cause for nd in nodes], dtype=np.int32),
            "trap_arg": np.array([nd.trap_arg for nd in nodes], dtype=np.int64),
            "sr_state": np.array([nd.sr_state for nd in nodes], dtype=np.uint64),
            "fifos": [list(link.fifo) for link in self.links],
            "link_pushed": np.array([link.pushed for link in self.links], dtype=np.int64),
            "link_wire_free": np.array([link.wire_free for link in self.links], dtype=np.int64),
            "stats": {
                "count": np.array([nd.count for nd in nodes], dtype=np.int64).reshape(
                    n, len(TIMING_CLASSES)),
                "flops": np.array([nd.flops for nd in nodes], dtype=np.int64),
                "busy": np.array([nd.busy for nd in nodes], dtype=np.int64),
                "stall": np.array([nd.stall for nd in nodes], dtype=np.int64),
                "sram_hwm": np.array([nd.sram_hwm for nd in nodes], dtype=np.int64),
                "link_bytes": np.array(self.link_bytes, dtype=np.int64).reshape(n, 4),
                "link_msgs": np.array(self.link_msgs, dtype=np.int64).reshape(n, 4),
                "link_busy": np.array(self.link_busy, dtype=np.int64).reshape(n, 4),
            },
        }


@lru_cache(maxsize=65536)
def _decode(word: int) -> tuple[Instruction, dict[str, int]]:
    return decode(word)


@cache
def _register_operands(ins: Instruction) -> tuple[tuple[str, str], ...]:
    """(field, register file) of each register operand: x scalar, v vector, a accumulator."""
    out = []
    for operand in ins.operands:
        if operand.startswith("["):
            out.append(("rs1", "x"))
            continue
        field_name, kind = OPERANDS[operand]
        if kind in ("x", "v", "a"):
            out.append((field_name, kind))
    return tuple(out)


# ---- semantics --------------------------------------------------------------------------------
# Each function takes (emulator, node, fields) and returns the next pc, or None for pc + 1. It
# raises Trap or Block before changing anything.

Semantics = Callable[[ReferenceEmulator, _Node, dict[str, int]], "int | None"]
SEMANTICS: dict[str, Semantics] = {}


def semantics(*mnemonics: str) -> Callable[[Semantics], Semantics]:
    def register(fn: Semantics) -> Semantics:
        for name in mnemonics:
            SEMANTICS[name] = fn
        return fn
    return register


def set_x(node: _Node, rd: int, value: int) -> None:
    if rd != 0:
        node.x[rd] = s64(value)


def address(node: _Node, f: dict[str, int], extra: int = 0) -> int:
    """rs1 + sext(imm) + extra, in wrapping 64-bit arithmetic, read as signed."""
    return s64(node.x[f["rs1"]] + f["imm"] + extra)


def load(node: _Node, a: int, size: int) -> int:
    return int.from_bytes(node.sram[a:a + size], "little")


# ---- system

@semantics("nop")
def _nop(emu, node, f):
    return None


@semantics("halt")
def _halt(emu, node, f):
    node.state = HALTED
    return node.pc


@semantics("trap")
def _trap(emu, node, f):
    raise Trap(traps.USER_TRAP, f["uimm"])


@semantics("getx")
def _getx(emu, node, f):
    set_x(node, f["rd"], int(emu.machine.xy[node.id][0]))


@semantics("gety")
def _gety(emu, node, f):
    set_x(node, f["rd"], int(emu.machine.xy[node.id][1]))


@semantics("getid")
def _getid(emu, node, f):
    set_x(node, f["rd"], node.id)


@semantics("getw")
def _getw(emu, node, f):
    set_x(node, f["rd"], emu.machine.width)


@semantics("geth")
def _geth(emu, node, f):
    set_x(node, f["rd"], emu.machine.height)


@semantics("getn")
def _getn(emu, node, f):
    set_x(node, f["rd"], emu.n)


@semantics("rdcycle")
def _rdcycle(emu, node, f):
    set_x(node, f["rd"], node.clock)


@semantics("srseed")
def _srseed(emu, node, f):
    value = u64(node.x[f["rs1"]])
    node.sr_state = value if value != 0 else emu.default_sr_state(node.id)


# ---- scalar: pure functions of two signed 64-bit values, results wrapped by set_x

def _div(a: int, b: int) -> int:
    if b == 0:
        return -1
    if a == INT64_MIN and b == -1:
        return INT64_MIN
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem(a: int, b: int) -> int:
    if b == 0:
        return a
    if a == INT64_MIN and b == -1:
        return 0
    return a - b * _div(a, b)


SCALAR_OPS: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "sll": lambda a, b: a << (b & 63),
    "srl": lambda a, b: u64(a) >> (b & 63),
    "sra": lambda a, b: a >> (b & 63),
    "slt": lambda a, b: int(a < b),
    "sltu": lambda a, b: int(u64(a) < u64(b)),
    "seq": lambda a, b: int(a == b),
    "mul": lambda a, b: a * b,
    "div": _div,
    "divu": lambda a, b: MASK64 if b == 0 else u64(a) // u64(b),
    "rem": _rem,
    "remu": lambda a, b: a if b == 0 else u64(a) % u64(b),
}

# Immediate forms: which register-register operation each one is.
IMMEDIATE_OPS = {"addi": "add", "andi": "and", "ori": "or", "xori": "xor", "slli": "sll",
                 "srli": "srl", "srai": "sra", "slti": "slt", "sltiu": "sltu", "muli": "mul"}


def _register_scalar() -> None:
    for name, op in SCALAR_OPS.items():
        def rr(emu, node, f, op=op):
            set_x(node, f["rd"], op(node.x[f["rs1"]], node.x[f["rs2"]]))
        SEMANTICS[name] = rr
    for name, base in IMMEDIATE_OPS.items():
        def ri(emu, node, f, op=SCALAR_OPS[base]):
            imm = f["shamt"] if "shamt" in f else f["imm"]   # imm is already sign-extended
            set_x(node, f["rd"], op(node.x[f["rs1"]], imm))
        SEMANTICS[name] = ri


_register_scalar()


@semantics("movi")
def _movi(emu, node, f):
    set_x(node, f["rd"], f["imm"])


@semantics("movhi")
def _movhi(emu, node, f):
    rd = f["rd"]
    set_x(node, rd, (f["uimm"] << 32) | (node.x[rd] & MASK32))


# ---- memory

# The scalar loads and stores and their sizes, from the ISA table's memory column; a load
# sign-extends unless its semantics say zext.
LOADS = {i.mnemonic: (i.memory.width, "zext" not in i.semantics) for i in INSTRUCTIONS
         if i.group == "memory" and i.memory.kind == "load"}
STORES = {i.mnemonic: i.memory.width for i in INSTRUCTIONS
          if i.group == "memory" and i.memory.kind == "store"}


def _register_memory() -> None:
    for name, (size, signed) in LOADS.items():
        def ld(emu, node, f, size=size, signed=signed):
            a = address(node, f)
            emu.check([a], size, size)
            value = load(node, a, size)
            if signed and value >> (8 * size - 1):
                value -= 1 << (8 * size)
            set_x(node, f["rd"], value)
        SEMANTICS[name] = ld
    for name, size in STORES.items():
        def st(emu, node, f, size=size):
            a = address(node, f)
            emu.check([a], size, size)
            value = node.x[f["rs2"]] & ((1 << (8 * size)) - 1)
            emu._store(node, a, value.to_bytes(size, "little"))
        SEMANTICS[name] = st


_register_memory()


# ---- control

BRANCHES: dict[str, Callable[[int, int], bool]] = {
    "beq": lambda a, b: a == b,
    "bne": lambda a, b: a != b,
    "blt": lambda a, b: a < b,
    "bge": lambda a, b: a >= b,
    "bltu": lambda a, b: u64(a) < u64(b),
    "bgeu": lambda a, b: u64(a) >= u64(b),
}


def _register_branches() -> None:
    for name, taken in BRANCHES.items():
        def branch(emu, node, f, taken=taken):
            if taken(node.x[f["rs1"]], node.x[f["rs2"]]):
                return node.pc + f["off"]
            return None
        SEMANTICS[name] = branch


_register_branches()


@semantics("jal")
def _jal(emu, node, f):
    target = node.pc + f["off"]
    set_x(node, f["rd"], node.pc + 1)
    return target


@semantics("jalr")
def _jalr(emu, node, f):
    target = s64(node.x[f["rs1"]] + f["imm"])
    set_x(node, f["rd"], node.pc + 1)
    return target


# ---- vector memory

@semantics("vld")
def _vld(emu, node, f):
    a = address(node, f)
    emu.check([a], 64, 4)
    node.v[f["rd"]] = lanes_from_bytes(node.sram[a:a + 64])


@semantics("vst")
def _vst(emu, node, f):
    a = address(node, f)
    emu.check([a], 64, 4)
    emu._store(node, a, lanes_to_bytes(node.v[f["rs2"]]))


@semantics("vldw.bf16")
def _vldw_bf16(emu, node, f):
    a = address(node, f)
    emu.check([a], 32, 2)
    node.v[f["rd"]] = [widen(load(node, a + 2 * i, 2)) for i in range(LANES)]


def _store_bf16_lanes(emu, node, a, halves):
    emu._store(node, a, b"".join(h.to_bytes(2, "little") for h in halves))


@semantics("vstn.bf16")
def _vstn_bf16(emu, node, f):
    a = address(node, f)
    emu.check([a], 32, 2)
    _store_bf16_lanes(emu, node, a, [bf16_rne(u) for u in node.v[f["rs2"]]])


@semantics("vstn.bf16.sr")
def _vstn_bf16_sr(emu, node, f):
    a = address(node, f)
    emu.check([a], 32, 2)
    _store_bf16_lanes(emu, node, a, [bf16_sr(u, draw(node)) for u in node.v[f["rs2"]]])


def strided(node: _Node, f: dict[str, int], stride_field: str) -> list[int]:
    stride = node.x[f[stride_field]]
    return [address(node, f, i * stride) for i in range(LANES)]


@semantics("vlds")
def _vlds(emu, node, f):
    addrs = strided(node, f, "rs2")
    emu.check(addrs, 4, 4)
    node.v[f["rd"]] = [load(node, a, 4) for a in addrs]


@semantics("vldsw.bf16")
def _vldsw_bf16(emu, node, f):
    addrs = strided(node, f, "rs2")
    emu.check(addrs, 2, 2)
    node.v[f["rd"]] = [widen(load(node, a, 2)) for a in addrs]


@semantics("vsts")
def _vsts(emu, node, f):
    addrs = strided(node, f, "rs3")
    emu.check(addrs, 4, 4)
    for a, u in zip(addrs, node.v[f["rs2"]], strict=True):
        emu._store(node, a, u.to_bytes(4, "little"))


@semantics("vstsn.bf16")
def _vstsn_bf16(emu, node, f):
    addrs = strided(node, f, "rs3")
    emu.check(addrs, 2, 2)
    for a, u in zip(addrs, node.v[f["rs2"]], strict=True):
        emu._store(node, a, bf16_rne(u).to_bytes(2, "little"))


# ---- vector arithmetic: per-lane functions of fp32 bits returning fp32 bits

def fmax(a: int, b: int) -> int:
    if is_nan_bits(a) or is_nan_bits(b):
        return CANONICAL_NAN
    x, y = f32(a), f32(b)
    if x == y:                      # equal values; for zeros, +0 wins
        return a if not a >> 31 else b
    return a if x > y else b


def fmin(a: int, b: int) -> int:
    if is_nan_bits(a) or is_nan_bits(b):
        return CANONICAL_NAN
    x, y = f32(a), f32(b)
    if x == y:                      # equal values; for zeros, -0 wins
        return a if a >> 31 else b
    return a if x < y else b


LANEWISE2: dict[str, Callable[[int, int], int]] = {
    "vadd": lambda a, b: bits(f32(a) + f32(b)),
    "vsub": lambda a, b: bits(f32(a) - f32(b)),
    "vmul": lambda a, b: bits(f32(a) * f32(b)),
    "vdiv": lambda a, b: bits(f32(a) / f32(b)),
    "vmax": fmax,
    "vmin": fmin,
    "vpow": lambda a, b: bits(pow64(float(f32(a)), float(f32(b)))),
    "vcmplt": lambda a, b: MASK32 if f32(a) < f32(b) else 0,
    "vcmple": lambda a, b: MASK32 if f32(a) <= f32(b) else 0,
    "vcmpeq": lambda a, b: MASK32 if f32(a) == f32(b) else 0,
    "vand": lambda a, b: a & b,
    "vor": lambda a, b: a | b,
    "vxor": lambda a, b: a ^ b,
}


def _cvt_i32(a: int) -> int:
    """fp32 -> int32 bits: truncate toward zero, saturate, NaN -> 0."""
    if is_nan_bits(a):
        return 0
    x = float(f32(a))
    if x >= 2.0 ** 31:
        return 0x7FFF_FFFF
    if x <= -(2.0 ** 31):
        return 0x8000_0000
    return math.trunc(x) & MASK32


LANEWISE1: dict[str, Callable[[int], int]] = {
    "vmov": lambda a: a,
    "vneg": lambda a: a ^ 0x8000_0000,
    "vabs": lambda a: a & 0x7FFF_FFFF,
    "vsqrt": lambda a: bits(np.sqrt(f32(a))),
    "vrcp": lambda a: bits(np.float32(1.0) / f32(a)),
    "vexp": lambda a: bits(exp64(float(f32(a)))),
    "vtanh": lambda a: bits(math.tanh(float(f32(a)))),
    "vsigmoid": lambda a: bits(1.0 / (1.0 + exp64(-float(f32(a))))),
    "verf": lambda a: bits(math.erf(float(f32(a)))),
    "vgelu": lambda a: bits(gelu64(float(f32(a)))),
    "vcvt.bf16": lambda a: widen(bf16_rne(a)),
    "vcvt.f32.i32": lambda a: bits(np.float32(sext32(a))),
    "vcvt.i32.f32": _cvt_i32,
}


def _register_lanewise() -> None:
    for name, op in LANEWISE2.items():
        def vv(emu, node, f, op=op):
            node.v[f["rd"]] = [op(a, b) for a, b in zip(node.v[f["rs1"]], node.v[f["rs2"]],
                                                         strict=True)]
        SEMANTICS[name] = vv
    for name, op in LANEWISE1.items():
        def v1(emu, node, f, op=op):
            node.v[f["rd"]] = [op(a) for a in node.v[f["rs1"]]]
        SEMANTICS[name] = v1


_register_lanewise()


@semantics("vfma")
def _vfma(emu, node, f):
    v1, v2, v3 = node.v[f["rs1"]], node.v[f["rs2"]], node.v[f["rs3"]]
    node.v[f["rd"]] = [bits((f32(a) * f32(b)) + f32(c)) for a, b, c in zip(v1, v2, v3,
                                                                             strict=True)]


@semantics("vsel")
def _vsel(emu, node, f):
    v1, v2, v3 = node.v[f["rs1"]], node.v[f["rs2"]], node.v[f["rs3"]]
    node.v[f["rd"]] = [b if m != 0 else c for m, b, c in zip(v1, v2, v3, strict=True)]


def draw(node: _Node) -> int:
    """Draw one value from the node's stochastic-rounding generator."""
    node.sr_state, r = splitmix64(node.sr_state)
    return r


@semantics("vcvt.bf16.sr")
def _vcvt_bf16_sr(emu, node, f):
    node.v[f["rd"]] = [widen(bf16_sr(u, draw(node))) for u in node.v[f["rs1"]]]


@semantics("vwiden.lo")
def _vwiden_lo(emu, node, f):
    v1 = node.v[f["rs1"]]
    node.v[f["rd"]] = [widen(bf16_lane(v1, i)) for i in range(LANES)]


@semantics("vwiden.hi")
def _vwiden_hi(emu, node, f):
    v1 = node.v[f["rs1"]]
    node.v[f["rd"]] = [widen(bf16_lane(v1, LANES + i)) for i in range(LANES)]


@semantics("vnarrow")
def _vnarrow(emu, node, f):
    halves = [bf16_rne(u) for u in node.v[f["rs1"]] + node.v[f["rs2"]]]
    node.v[f["rd"]] = pack_bf16(halves)


@semantics("vnarrow.sr")
def _vnarrow_sr(emu, node, f):
    halves = [bf16_sr(u, draw(node)) for u in node.v[f["rs1"]] + node.v[f["rs2"]]]
    node.v[f["rd"]] = pack_bf16(halves)


@semantics("vbcast")
def _vbcast(emu, node, f):
    node.v[f["rd"]] = [node.x[f["rs1"]] & MASK32] * LANES


@semantics("vbcasti")
def _vbcasti(emu, node, f):
    node.v[f["rd"]] = [f["fimm"]] * LANES


@semantics("vext")
def _vext(emu, node, f):
    set_x(node, f["rd"], node.v[f["rs1"]][f["lane"]])


@semantics("vins")
def _vins(emu, node, f):
    lanes = list(node.v[f["rd"]])
    lanes[f["lane"]] = node.x[f["rs1"]] & MASK32
    node.v[f["rd"]] = lanes


@semantics("vsplat")
def _vsplat(emu, node, f):
    node.v[f["rd"]] = [node.v[f["rs1"]][f["lane"]]] * LANES


@semantics("viota")
def _viota(emu, node, f):
    node.v[f["rd"]] = [bits(np.float32(i)) for i in range(LANES)]


@semantics("vredsum")
def _vredsum(emu, node, f):
    lanes = node.v[f["rs1"]]
    s = f32(lanes[0])
    for u in lanes[1:]:
        s = s + f32(u)
    set_x(node, f["rd"], bits(s))


@semantics("vredmax")
def _vredmax(emu, node, f):
    lanes = node.v[f["rs1"]]
    m = lanes[0]
    for u in lanes[1:]:
        m = fmax(m, u)
    set_x(node, f["rd"], m if not is_nan_bits(m) else CANONICAL_NAN)


# ---- matrix

def tile_rows(node: _Node, base_reg: int, stride: int, offset: int = 0) -> list[int]:
    """Row addresses base + offset + i * stride of an 8-row tile (wrapping, read as signed)."""
    return [s64(node.x[base_reg] + offset + i * stride) for i in range(TILE)]


def mma_tile(node: _Node, acc: list[int], rows_a: list[int], rows_b: list[int],
             bf16: bool) -> list[int]:
    """One 8 x 8 x 8 step, acc + A @ B, accumulating in k order and rounding every addition."""
    out = []
    if bf16:
        a = [[float(f32(widen(load(node, r + 2 * k, 2)))) for k in range(TILE)] for r in rows_a]
        b = [[float(f32(widen(load(node, r + 2 * j, 2)))) for j in range(TILE)] for r in rows_b]
        for i in range(TILE):
            for j in range(TILE):
                s = f32(acc[i * TILE + j])
                for k in range(TILE):
                    # The bf16 product is exact in fp64, and so is its sum with an fp32 value
                    # (or the double is far from an fp32 rounding boundary): one rounding.
                    s = np.float32(float(s) + a[i][k] * b[k][j])
                out.append(bits(s))
    else:
        a = [[f32(load(node, r + 4 * k, 4)) for k in range(TILE)] for r in rows_a]
        b = [[f32(load(node, r + 4 * j, 4)) for j in range(TILE)] for r in rows_b]
        for i in range(TILE):
            for j in range(TILE):
                s = f32(acc[i * TILE + j])
                for k in range(TILE):
                    s = s + a[i][k] * b[k][j]      # f32 product, then f32 sum
                out.append(bits(s))
    return out


def _mma(emu, node, f, bf16: bool):
    row = 2 * TILE if bf16 else 4 * TILE
    rows_a = tile_rows(node, f["rs1"], f["sa"])
    rows_b = tile_rows(node, f["rs2"], f["sb"])
    emu.check(rows_a + rows_b, row, row // TILE)
    node.acc[f["rd"]] = mma_tile(node, node.acc[f["rd"]], rows_a, rows_b, bf16)


@semantics("mma.bf16")
def _mma_bf16(emu, node, f):
    _mma(emu, node, f, bf16=True)


@semantics("mma.f32")
def _mma_f32(emu, node, f):
    _mma(emu, node, f, bf16=False)


def mmak_steps(node: _Node, f: dict[str, int]) -> int:
    """The K-step count of an mmak: rs3, read as an unsigned 64-bit value."""
    return u64(node.x[f["rs3"]])


def _mmak(emu, node, f, bf16: bool):
    """k mma steps along K: A_s at rs1 + s * row bytes, B_s at rs2 + 8s * sb."""
    row = 2 * TILE if bf16 else 4 * TILE
    steps = []
    for s in range(mmak_steps(node, f)):
        rows_a = tile_rows(node, f["rs1"], f["sa"], offset=row * s)
        rows_b = tile_rows(node, f["rs2"], f["sb"], offset=TILE * s * f["sb"])
        # Range first, over every step. A advances every step, so a huge count leaves SRAM
        # within sram_bytes / 16 steps and this loop stays short.
        emu.check(rows_a + rows_b, row, 1)
        steps.append((rows_a, rows_b))
    emu.check([r for rows_a, rows_b in steps for r in rows_a + rows_b], row, row // TILE)
    acc = node.acc[f["rd"]]
    for rows_a, rows_b in steps:
        acc = mma_tile(node, acc, rows_a, rows_b, bf16)
    node.acc[f["rd"]] = acc


@semantics("mmak.bf16")
def _mmak_bf16(emu, node, f):
    _mmak(emu, node, f, bf16=True)


@semantics("mmak.f32")
def _mmak_f32(emu, node, f):
    _mmak(emu, node, f, bf16=False)


@semantics("acc.zero")
def _acc_zero(emu, node, f):
    node.acc[f["rd"]] = [0] * (TILE * TILE)


@semantics("acc.ld")
def _acc_ld(emu, node, f):
    rows = tile_rows(node, f["rs1"], f["sa"])
    emu.check(rows, 4 * TILE, 4)
    node.acc[f["rd"]] = [load(node, r + 4 * j, 4) for r in rows for j in range(TILE)]


@semantics("acc.st")
def _acc_st(emu, node, f):
    rows = tile_rows(node, f["rs1"], f["sa"])
    emu.check(rows, 4 * TILE, 4)
    acc = node.acc[f["rd"]]
    for i, r in enumerate(rows):
        emu._store(node, r, lanes_to_bytes(acc[i * TILE:(i + 1) * TILE]))


@semantics("acc.st.bf16")
def _acc_st_bf16(emu, node, f):
    rows = tile_rows(node, f["rs1"], f["sa"])
    emu.check(rows, 2 * TILE, 2)
    acc = node.acc[f["rd"]]
    for i, r in enumerate(rows):
        _store_bf16_lanes(emu, node, r, [bf16_rne(u) for u in acc[i * TILE:(i + 1) * TILE]])


# ---- network: functional checks, then the timing equations of docs/TIMING.md

def neighbour(emu: ReferenceEmulator, node: _Node, d: int) -> int:
    t = emu.neighbors[node.id][d]
    if t < 0:
        raise Trap(traps.NO_NEIGHBOUR)
    return t


def link_in(emu: ReferenceEmulator, node: _Node, d: int) -> _Link:
    """The FIFO at this node holding messages that came from direction d."""
    return emu.links[node.id * 4 + d]


def link_out(emu: ReferenceEmulator, node: _Node, d: int) -> _Link:
    """The FIFO at the neighbour toward d that a send from this node fills."""
    return emu.links[neighbour(emu, node, d) * 4 + OPPOSITE[d]]


def next_message(emu: ReferenceEmulator, node: _Node, d: int) -> tuple[int, int, bytes]:
    """The oldest message from d, or block on receive."""
    fifo = link_in(emu, node, d).fifo
    if not fifo:
        raise Block(BLOCKED_RECV)
    return fifo[0]


def need_room(emu: ReferenceEmulator, node: _Node, d: int) -> None:
    if len(link_out(emu, node, d).fifo) >= emu.machine.fifo_depth:
        raise Block(BLOCKED_SEND)


def timed_send(emu: ReferenceEmulator, node: _Node, d: int, payload: bytes) -> None:
    """Push one message toward d at the node's clock (the Send equations)."""
    link = link_out(emu, node, d)
    depth = emu.machine.fifo_depth
    n = len(payload)
    j = link.pushed
    slot = 0 if j < depth else link.consumed[(j - depth) % depth]
    issue = max(node.clock, slot)
    depart = max(issue, link.wire_free)
    ser = -(-n // emu.bandwidth[node.id][d])
    arrive = depart + emu.latency[node.id][d] + ser
    link.wire_free = depart + ser
    link.fifo.append((n, arrive, payload))
    link.pushed += 1
    cost = emu.cost["send"]
    node.stall += issue - node.clock
    node.busy += cost
    node.clock = issue + cost
    emu.link_bytes[node.id][d] += n
    emu.link_msgs[node.id][d] += 1
    emu.link_busy[node.id][d] += ser


def timed_receive(emu: ReferenceEmulator, node: _Node, d: int) -> bytes:
    """Take the oldest message from d at the node's clock (the Receive equations)."""
    link = link_in(emu, node, d)
    k = link.popped
    _, arrive, payload = link.fifo.popleft()
    start = max(node.clock, arrive)
    cost = emu.cost["recv"]
    node.stall += start - node.clock
    node.busy += cost
    node.clock = start + cost
    link.consumed[k % emu.machine.fifo_depth] = node.clock
    return payload


def expect_length(length: int, expected: int) -> None:
    if length != expected:
        raise Trap(traps.MESSAGE_LENGTH_MISMATCH)


@semantics("send")
def _send(emu, node, f):
    need_room(emu, node, f["dir"])
    timed_send(emu, node, f["dir"], u64(node.x[f["rs1"]]).to_bytes(8, "little"))


@semantics("vsend")
def _vsend(emu, node, f):
    need_room(emu, node, f["dir"])
    timed_send(emu, node, f["dir"], lanes_to_bytes(node.v[f["rs1"]]))


@semantics("sendb")
def _sendb(emu, node, f):
    neighbour(emu, node, f["dir"])
    a, n = node.x[f["rs1"]], node.x[f["rs2"]]
    if not 1 <= n <= emu.machine.max_message_bytes:
        raise Trap(traps.BAD_MESSAGE_LENGTH)
    emu.check([a], n, 1)
    need_room(emu, node, f["dir"])
    timed_send(emu, node, f["dir"], bytes(node.sram[a:a + n]))


@semantics("recv")
def _recv(emu, node, f):
    neighbour(emu, node, f["dir"])
    length, _, _ = next_message(emu, node, f["dir"])
    expect_length(length, 8)
    set_x(node, f["rd"], int.from_bytes(timed_receive(emu, node, f["dir"]), "little"))


@semantics("vrecv")
def _vrecv(emu, node, f):
    neighbour(emu, node, f["dir"])
    length, _, _ = next_message(emu, node, f["dir"])
    expect_length(length, 64)
    node.v[f["rd"]] = lanes_from_bytes(timed_receive(emu, node, f["dir"]))


@semantics("recvb")
def _recvb(emu, node, f):
    neighbour(emu, node, f["dir"])
    length, _, _ = next_message(emu, node, f["dir"])
    expect_length(length, node.x[f["rs2"]])
    a = node.x[f["rs1"]]
    emu.check([a], length, 1)
    emu._store(node, a, timed_receive(emu, node, f["dir"]))


@semantics("relay")
def _relay(emu, node, f):
    d_in, d_out = f["dir"], f["dir2"]
    neighbour(emu, node, d_in)
    neighbour(emu, node, d_out)
    next_message(emu, node, d_in)
    need_room(emu, node, d_out)
    timed_send(emu, node, d_out, timed_receive(emu, node, d_in))


@semantics("relayb")
def _relayb(emu, node, f):
    d_in, d_out = f["dir"], f["dir2"]
    neighbour(emu, node, d_in)
    neighbour(emu, node, d_out)
    length, _, _ = next_message(emu, node, d_in)
    need_room(emu, node, d_out)
    expect_length(length, node.x[f["rs2"]])
    a = node.x[f["rs1"]]
    emu.check([a], length, 1)
    payload = timed_receive(emu, node, d_in)
    emu._store(node, a, payload)
    timed_send(emu, node, d_out, payload)


def _check_complete() -> None:
    missing = [i.mnemonic for i in INSTRUCTIONS if i.mnemonic not in SEMANTICS]
    if missing:
        raise RuntimeError(f"reference interpreter lacks semantics for: {', '.join(missing)}")


_check_complete()


# ---- comparing two runs -----------------------------------------------------------------------

STATE_KEYS = ("x", "v", "acc", "sram", "pc", "clock", "state", "cause", "trap_arg", "sr_state",
              "fifos", "link_pushed", "link_wire_free", "stats")
STATS_KEYS = ("count", "flops", "busy", "stall", "sram_hwm", "link_bytes", "link_msgs",
              "link_busy")


def _where(name: str, idx: tuple[int, ...]) -> str:
    """Name an element of a state array: node, register, lane, address, link or class."""
    dirs = DIRECTIONS
    if name in ("link_pushed", "link_wire_free"):
        return f"FIFO at node {idx[0] // 4} from {dirs[idx[0] % 4]}"
    if name in ("stats.link_bytes", "stats.link_msgs", "stats.link_busy"):
        return f"node {idx[0]} toward {dirs[idx[1]]}"
    if name == "stats.count":
        return f"node {idx[0]} class {TIMING_CLASSES[idx[1]]}"
    if name == "x":
        return f"node {idx[0]} r{idx[1]}"
    if name == "v":
        return f"node {idx[0]} v{idx[1]} lane {idx[2]}"
    if name == "acc":
        return f"node {idx[0]} a{idx[1]} row {idx[2]} col {idx[3]}"
    if name == "sram":
        return f"node {idx[0]} address {idx[1]:#x}"
    return f"node {idx[0]}"


def _compare_array(name: str, a: Any, b: Any) -> list[str]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return [f"{name}: shape {a.shape} != {b.shape}"]
    out = [f"{name}: dtype {a.dtype} != {b.dtype}"] if a.dtype != b.dtype else []
    diff = np.argwhere(a != b)
    if len(diff):
        idx = tuple(int(i) for i in diff[0])
        va, vb = int(a[idx]), int(b[idx])
        if name in ("v", "acc"):
            values = f"0x{va:08x} != 0x{vb:08x}"
        elif name == "sr_state":
            values = f"0x{va:016x} != 0x{vb:016x}"
        else:
            values = f"{va} != {vb}"
        out.append(f"{name} [{_where(name, idx)}]: {values} ({len(diff)} element(s) differ)")
    return out


def compare_states(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two state dicts (the first differing element of each
    array, with node/register/address indexes); empty when they agree exactly."""
    out: list[str] = []
    for key in sorted(set(a) ^ set(b)):
        out.append(f"key '{key}' present in only one state")
    for key in STATE_KEYS:
        if key not in a or key not in b:
            continue
        if key == "fifos":
            fa, fb = a[key], b[key]
            if len(fa) != len(fb):
                out.append(f"fifos: {len(fa)} != {len(fb)} FIFOs")
                continue
            for i, (qa, qb) in enumerate(zip(fa, fb, strict=True)):
                qa = [(int(n), int(t), bytes(p)) for n, t, p in qa]
                qb = [(int(n), int(t), bytes(p)) for n, t, p in qb]
                if qa != qb:
                    out.append(f"fifos[node {i // 4}, from dir {i % 4}]: {qa!r} != {qb!r}")
                    break
        elif key == "stats":
            for sk in sorted(set(a[key]) | set(b[key])):
                if sk not in a[key] or sk not in b[key]:
                    out.append(f"stats: key '{sk}' present in only one state")
                    continue
                out.extend(_compare_array(f"stats.{sk}", a[key][sk], b[key][sk]))
        else:
            out.extend(_compare_array(key, a[key], b[key]))
    return out
