"""The fast emulator against the reference interpreter on random programs (hypothesis).

Three generators, all on small meshes (2x2, 3x2, 4x4 and the harvested h6x5) with 2 KiB of SRAM:

- compute: straight-line scalar, vector and matrix code whose registers start from random
  constants and whose SRAM holds special values (NaN payloads, infinities, -0, subnormals, bf16
  ties, saturation edges); memory accesses are mostly valid and aligned, sometimes not (traps).
- communication: matched send/receive pairs and relays between neighbours, issued by every node
  in one global order, which cannot deadlock whatever the FIFO depth; some cases are mutated
  (an operation dropped, two swapped, a stray receive, a length mismatch) and may deadlock.
- fuzz: random words, and valid opcodes with random field bits.

Both emulators must produce identical state dicts (registers, SRAM, pc, clocks, states, trap
causes, FIFOs, link timing and every statistic). The two use different, random scheduling quanta,
so a pass also shows the fast emulator's results do not depend on its quantum.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d1isa.disasm import format_word
from d1isa.isa import INSTRUCTIONS, f32_bits
from d1isa.isa import encode as E
from d1isa.machine import OPPOSITE, load_machine
from d1isa.objfile import CodeBlock, DataInit, ObjectFile
from emulator.reference import ReferenceEmulator, compare_states

try:
    from emulator import Emulator
except ImportError as exc:      # only while the fast emulator is still being written
    import emulator as _package
    hint = ""
    if getattr(_package, "__file__", None) is None:
        hint = (" (Python sees emulator/ as a namespace package: if emulator/__init__.py exists, "
                "the editable install predates it; re-run `pip install -e .` or run pytest with "
                "PYTHONPATH=.)")
    pytest.skip(f"the fast emulator (emulator.Emulator) cannot be imported yet: {exc}{hint}",
                allow_module_level=True)

SRAM = 2048
DATA_BYTES = 1536
MESHES = ("2x2", "3x2", "4x4", "h6x5")
ADDR_REGS = (1, 2, 3, 4)            # hold 0, 256, 512, 768 and are never overwritten
ADDR_VALUES = (0, 256, 512, 768)
STRIDE_F32, STRIDE_BF16 = 13, 14
MMAK_STEPS = 22                     # the K-step count of mmak instructions, 0..3
VALUE_REGS = tuple(range(5, 13))
DEST_REGS = (0, 5, 6, 7, 8, 9, 10, 11, 12, 15)
SOURCE_REGS = tuple(range(0, 16))
VREGS = tuple(range(8))
ACCS = tuple(range(4))

SETTINGS = settings(max_examples=60, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def F(x: float) -> int:
    return f32_bits(x)


F32_SPECIALS = (
    0, 0x8000_0000, F(1.0), F(-1.0), F(0.5), F(2.0), F(3.0), F(-7.25), F(0.1),
    0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7F80_0001, 0xFFC0_0001, 0x7FBF_FFFF,
    0x0000_0001, 0x807F_FFFF, 0x0040_0000, 0x0080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,
    0x3F80_8000, 0x3F81_8000, 0xBF80_8000, 0x7F7F_8000, 0x3F80_FFFF, 0x3F80_7FFF,
    F(2.0 ** 24), F(2.0 ** 24 + 2), 0x4F00_0000, 0xCF00_0000, 0x4EFF_FFFF, 0xCF00_0001,
    F(88.72), F(-87.5), F(89.0), F(-104.0), F(1e30), F(-1e-30), F(1e-40),
    0x0D80_0000, 0x8D80_0000, 0x7E80_0000, 0x0180_0000,
)
INT_SPECIALS = (0, 1, -1, 2, 63, 64, 65, 255, -256, (1 << 31) - 1, -(1 << 31), (1 << 63) - 1,
                -(1 << 63), 16777217, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)


# ---- machines and objects ---------------------------------------------------------------------

@cache
def small_machine(mesh: str, fifo_depth: int, hop_latency: int, link_bytes: int):
    over = {"sram_bytes": SRAM, "fifo_depth": fifo_depth, "hop_latency": hop_latency,
            "link_bytes_per_cycle": link_bytes, "max_message_bytes": 512}
    if mesh == "h6x5":
        return load_machine("h6x5", overrides=over)
    return load_machine(mesh=mesh, overrides=over)


machines = st.builds(small_machine, st.sampled_from(MESHES), st.sampled_from((1, 2, 4)),
                     st.sampled_from((0, 1, 3)), st.sampled_from((8, 64)))


def random_f32(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.45:
        return rng.choice(F32_SPECIALS)
    if pick < 0.7:
        return rng.getrandbits(32)
    return F(rng.choice((1, -1)) * rng.randint(0, 64) / rng.choice((1, 2, 4, 3, 7)))


def sram_image(seed: int) -> bytes:
    """Random fp32 words, special values among them, for the first DATA_BYTES of a node. Some
    64-byte rows repeat one value or are all negative, so that reductions and vmax/vmin see
    whole vectors of -0, NaN or negative numbers."""
    rng = random.Random(seed)
    words = []
    for _ in range(DATA_BYTES // 64):
        row = [random_f32(rng) for _ in range(16)]
        pick = rng.random()
        if pick < 0.15:
            row = [row[0]] * 16
        elif pick < 0.3:
            row = [u | 0x8000_0000 for u in row]
        words += row
    return struct.pack(f"<{DATA_BYTES // 4}I", *words)


@dataclass
class Case:
    obj: ObjectFile
    seed: int
    max_cycles: int
    quantum_ref: int
    quantum_fast: int
    threads: int = 1

    def __repr__(self) -> str:        # hypothesis prints this for a falsifying example
        return f"Case(\n{self.listing()}\n)"

    def listing(self) -> str:
        lines = [f"machine {self.obj.machine.name}: fifo_depth {self.obj.machine.fifo_depth}, "
                 f"seed {self.seed}, max_cycles {self.max_cycles}, quanta {self.quantum_ref} "
                 f"(reference) / {self.quantum_fast} (fast), threads {self.threads}",
                 f"node -> block: {list(map(int, self.obj.node_block))}"]
        for b, block in enumerate(self.obj.blocks):
            lines.append(f"block {b}:")
            for pc, w in enumerate(block.words):
                try:
                    text = format_word(int(w))
                except Exception:       # an invalid word has no text; show its bits
                    text = "<invalid>"
                lines.append(f"  {pc:3d}: {int(w):016x}  {text}")
        return "\n".join(lines)


def make_case(draw, m, programs: dict[int, list[int]], data_seed: int, max_cycles: int) -> Case:
    blocks, node_block = [], np.full(m.n_live, -1, dtype=np.int32)
    for node, words in sorted(programs.items()):
        node_block[node] = len(blocks)
        blocks.append(CodeBlock(np.array([w & ((1 << 64) - 1) for w in words], dtype=np.uint64)))
    data = [DataInit(node, 0, sram_image(data_seed * 1000 + node)) for node in programs]
    obj = ObjectFile(m, blocks, node_block, data)
    return Case(obj, seed=draw(st.integers(0, 3)), max_cycles=max_cycles,
                quantum_ref=draw(st.sampled_from((1, 3, 64))),
                quantum_fast=draw(st.sampled_from((1, 2, 7, 64, 1000))),
                threads=draw(st.sampled_from((1, 1, 2, 3))))


def li(rd: int, value: int) -> list[int]:
    value &= (1 << 64) - 1
    low = value & 0xFFFF_FFFF
    low = low - (1 << 32) if low >> 31 else low
    return [E("movi", rd=rd, imm=low), E("movhi", rd=rd, uimm=value >> 32)]


def prologue(draw) -> list[int]:
    """Address registers, random value registers, strides, and v0..v7 / a0..a3 from SRAM."""
    words = []
    for reg, addr in zip(ADDR_REGS, ADDR_VALUES, strict=True):
        words.append(E("movi", rd=reg, imm=addr))
    for reg in VALUE_REGS:
        value = draw(st.one_of(st.sampled_from(INT_SPECIALS), st.integers(-300, 300),
                               st.integers(-(1 << 63), (1 << 63) - 1)))
        words += li(reg, value)
    words.append(E("movi", rd=STRIDE_F32, imm=draw(st.sampled_from((4, 8, 16, 64, -4, 0)))))
    words.append(E("movi", rd=STRIDE_BF16, imm=draw(st.sampled_from((2, 6, 32, -2)))))
    words.append(E("movi", rd=MMAK_STEPS, imm=draw(st.integers(0, 3))))
    for v in VREGS:
        words.append(E("vld", rd=v, rs1=0, imm=64 * v + 4 * draw(st.integers(0, 3))))
    for a in ACCS:
        words.append(E("acc.ld", rd=a, rs1=ADDR_REGS[a], sa=32))
    return words


# ---- compute instructions ---------------------------------------------------------------------

SCALAR_RR = ("add", "sub", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu", "seq", "mul",
             "div", "divu", "rem", "remu")
SCALAR_RI = ("addi", "andi", "ori", "xori", "slti", "sltiu", "muli")
SHIFTS_I = ("slli", "srli", "srai")
LOADS = {"ld8": 1, "ld8u": 1, "ld16": 2, "ld16u": 2, "ld32": 4, "ld32u": 4, "ld64": 8}
STORES = {"st8": 1, "st16": 2, "st32": 4, "st64": 8}
VEC_BINARY = ("vadd", "vsub", "vmul", "vdiv", "vmax", "vmin", "vcmplt", "vcmple", "vcmpeq",
              "vand", "vor", "vxor", "vnarrow", "vnarrow.sr", "vpow")
VEC_UNARY = ("vmov", "vneg", "vabs", "vsqrt", "vrcp", "vexp", "vtanh", "vsigmoid", "verf",
             "vgelu", "vcvt.bf16",
             "vcvt.bf16.sr", "vwiden.lo", "vwiden.hi", "vcvt.f32.i32", "vcvt.i32.f32")
BRANCHES = ("beq", "bne", "blt", "bge", "bltu", "bgeu")

SAFE_KINDS = ("scalar_rr", "scalar_rr", "scalar_ri", "shift_i", "mov", "load", "store",
              "vload", "vstore", "vbinary", "vbinary", "vbinary", "vunary", "vunary", "v4",
              "vmove", "vreduce", "mma", "acc", "sys")
# Mostly safe instructions; now and then a branch, and rarely an access or an instruction that
# traps, so that about half the runs end in a trap.
ALL_KINDS = SAFE_KINDS * 6 + ("branch", "branch", "branch", "jal", "jal", "wild_memory", "rare")


def aligned_offset(draw, size: int, span: int = 256) -> int:
    return size * draw(st.integers(0, span // size - 1))


def compute_words(draw, pc: int, safe: bool) -> list[int]:
    """One random compute instruction (occasionally two) at index pc of the program."""
    kind = draw(st.sampled_from(SAFE_KINDS if safe else ALL_KINDS))
    rd = draw(st.sampled_from(DEST_REGS))
    rs = st.sampled_from(SOURCE_REGS)
    vr = st.sampled_from(VREGS)
    if kind == "scalar_rr":
        return [E(draw(st.sampled_from(SCALAR_RR)), rd=rd, rs1=draw(rs), rs2=draw(rs))]
    if kind == "scalar_ri":
        imm = draw(st.one_of(st.sampled_from((0, 1, -1, -(1 << 31), (1 << 31) - 1)),
                             st.integers(-(1 << 31), (1 << 31) - 1)))
        return [E(draw(st.sampled_from(SCALAR_RI)), rd=rd, rs1=draw(rs), imm=imm)]
    if kind == "shift_i":
        return [E(draw(st.sampled_from(SHIFTS_I)), rd=rd, rs1=draw(rs), shamt=draw(
            st.integers(0, 63)))]
    if kind == "mov":
        if draw(st.booleans()):
            return [E("movi", rd=rd, imm=draw(st.integers(-(1 << 31), (1 << 31) - 1)))]
        return [E("movhi", rd=rd, uimm=draw(st.integers(0, (1 << 32) - 1)))]
    if kind == "load":
        name = draw(st.sampled_from(sorted(LOADS)))
        return [E(name, rd=rd, rs1=draw(st.sampled_from(ADDR_REGS)),
                  imm=aligned_offset(draw, LOADS[name]))]
    if kind == "store":
        name = draw(st.sampled_from(sorted(STORES)))
        return [E(name, rs2=draw(rs), rs1=draw(st.sampled_from(ADDR_REGS)),
                  imm=aligned_offset(draw, STORES[name]))]
    if kind == "vload":
        name = draw(st.sampled_from(("vld", "vldw.bf16", "vlds", "vldsw.bf16")))
        base = draw(st.sampled_from(ADDR_REGS[1:3]))
        if name == "vld":
            return [E(name, rd=draw(vr), rs1=base, imm=aligned_offset(draw, 4))]
        if name == "vldw.bf16":
            return [E(name, rd=draw(vr), rs1=base, imm=aligned_offset(draw, 2))]
        stride = STRIDE_F32 if name == "vlds" else STRIDE_BF16
        return [E(name, rd=draw(vr), rs1=base, rs2=stride, imm=aligned_offset(draw, 4, 128) + 64)]
    if kind == "vstore":
        name = draw(st.sampled_from(("vst", "vstn.bf16", "vstn.bf16.sr", "vsts", "vstsn.bf16")))
        base = draw(st.sampled_from(ADDR_REGS[1:3]))
        if name == "vst":
            return [E(name, rs2=draw(vr), rs1=base, imm=aligned_offset(draw, 4))]
        if name in ("vstn.bf16", "vstn.bf16.sr"):
            return [E(name, rs2=draw(vr), rs1=base, imm=aligned_offset(draw, 2))]
        stride = STRIDE_F32 if name == "vsts" else STRIDE_BF16
        return [E(name, rs2=draw(vr), rs1=base, rs3=stride, imm=aligned_offset(draw, 4, 128) + 64)]
    if kind == "vbinary":
        return [E(draw(st.sampled_from(VEC_BINARY)), rd=draw(vr), rs1=draw(vr), rs2=draw(vr))]
    if kind == "vunary":
        return [E(draw(st.sampled_from(VEC_UNARY)), rd=draw(vr), rs1=draw(vr))]
    if kind == "v4":
        return [E(draw(st.sampled_from(("vfma", "vsel"))), rd=draw(vr), rs1=draw(vr),
                  rs2=draw(vr), rs3=draw(vr))]
    if kind == "vmove":
        which = draw(st.sampled_from(("vbcast", "vbcasti", "vext", "vins", "vsplat", "viota")))
        lane = draw(st.integers(0, 15))
        if which == "vbcast":
            return [E(which, rd=draw(vr), rs1=draw(rs))]
        if which == "vbcasti":
            fimm = draw(st.one_of(st.sampled_from(F32_SPECIALS), st.integers(0, (1 << 32) - 1)))
            return [E(which, rd=draw(vr), fimm=fimm)]
        if which == "vext":
            return [E(which, rd=rd, rs1=draw(vr), lane=lane)]
        if which == "vins":
            return [E(which, rd=draw(vr), rs1=draw(rs), lane=lane)]
        if which == "vsplat":
            return [E(which, rd=draw(vr), rs1=draw(vr), lane=lane)]
        return [E(which, rd=draw(vr))]
    if kind == "vreduce":
        return [E(draw(st.sampled_from(("vredsum", "vredmax"))), rd=rd, rs1=draw(vr))]
    if kind == "mma":
        bf16 = draw(st.booleans())
        strides = (16, 32, 64) if bf16 else (32, 64)
        fields = dict(rd=draw(st.sampled_from(ACCS)), rs1=draw(st.sampled_from(ADDR_REGS)),
                      rs2=draw(st.sampled_from(ADDR_REGS[:2])), sa=draw(st.sampled_from(strides)),
                      sb=draw(st.sampled_from(strides)))
        if draw(st.booleans()):
            return [E("mmak.bf16" if bf16 else "mmak.f32", rs3=MMAK_STEPS, **fields)]
        return [E("mma.bf16" if bf16 else "mma.f32", **fields)]
    if kind == "acc":
        name = draw(st.sampled_from(("acc.zero", "acc.ld", "acc.st", "acc.st.bf16")))
        a = draw(st.sampled_from(ACCS))
        if name == "acc.zero":
            return [E(name, rd=a)]
        sa = draw(st.sampled_from((32, 64) if name != "acc.st.bf16" else (16, 20, 32)))
        return [E(name, rd=a, rs1=draw(st.sampled_from(ADDR_REGS)), sa=sa)]
    if kind == "sys":
        which = draw(st.sampled_from(("rdcycle", "getid", "getx", "gety", "getw", "geth", "getn",
                                      "srseed", "nop")))
        if which == "srseed":
            return [E(which, rs1=draw(rs))]
        if which == "nop":
            return [E(which)]
        return [E(which, rd=rd)]
    if kind == "branch":
        return [E(draw(st.sampled_from(BRANCHES)), rs1=draw(rs), rs2=draw(rs),
                  off=draw(st.integers(1, 3)))]
    if kind == "jal":
        if draw(st.booleans()):
            return [E("jal", rd=rd, off=draw(st.integers(1, 3)))]
        return [E("jalr", rd=rd, rs1=0, imm=pc + draw(st.integers(1, 3)))]
    if kind == "wild_memory":
        name = draw(st.sampled_from(sorted(LOADS) + ["vld", "vlds", "vldw.bf16", "acc.ld"]))
        imm = draw(st.integers(-8, SRAM + 8))
        if name == "vlds":
            return [E(name, rd=draw(vr), rs1=0, rs2=draw(st.sampled_from((STRIDE_F32, 5))),
                      imm=imm)]
        if name == "acc.ld":
            return [E("movi", rd=15, imm=imm), E(name, rd=0, rs1=15, sa=draw(
                st.integers(0, 300)))]
        if name in ("vld", "vldw.bf16"):
            return [E(name, rd=draw(vr), rs1=0, imm=imm)]
        return [E(name, rd=rd, rs1=0, imm=imm)]
    # rare: user trap, a register the machine lacks, a short loop that hits the cycle limit
    which = draw(st.sampled_from(("trap", "illegal_reg", "loop")))
    if which == "trap":
        return [E("trap", uimm=draw(st.integers(0, (1 << 32) - 1)))]
    if which == "illegal_reg":
        return [E("add", rd=draw(st.integers(32, 63)), rs1=1, rs2=1)]
    return [E("addi", rd=15, rs1=15, imm=1), E("bne", rs1=15, rs2=0, off=-1)]


def draw_nodes(draw, m) -> list[int]:
    """One to four distinct live nodes of `m`."""
    n_nodes = draw(st.integers(1, min(4, m.n_live)))
    return draw(st.lists(st.integers(0, m.n_live - 1), min_size=n_nodes, max_size=n_nodes,
                         unique=True))


@st.composite
def compute_cases(draw) -> Case:
    m = draw(machines)
    nodes = draw_nodes(draw, m)
    programs = {}
    for node in nodes:
        words = prologue(draw)
        for _ in range(draw(st.integers(1, 30))):
            words += compute_words(draw, len(words), safe=False)
        if draw(st.integers(0, 9)):
            words += [E("halt")] * 4         # forward jumps of up to 3 land on a halt
        programs[node] = words
    return make_case(draw, m, programs, draw(st.integers(0, 1 << 16)), max_cycles=3000)


# ---- communication ----------------------------------------------------------------------------

def message_kind(draw) -> tuple[str, int]:
    kind = draw(st.sampled_from(("x", "x", "v", "b")))
    if kind == "x":
        return kind, 8
    if kind == "v":
        return kind, 64
    return kind, draw(st.one_of(st.integers(1, 16), st.integers(1, 512)))


def send_words(draw, kind: str, length: int, d: int) -> list[int]:
    if kind == "x":
        return [E("send", rs1=draw(st.sampled_from(SOURCE_REGS)), dir=d)]
    if kind == "v":
        return [E("vsend", rs1=draw(st.sampled_from(VREGS)), dir=d)]
    src = draw(st.integers(0, SRAM - length))
    return [E("movi", rd=16, imm=src), E("movi", rd=17, imm=length),
            E("sendb", rs1=16, rs2=17, dir=d)]


def recv_words(draw, kind: str, length: int, d: int) -> list[int]:
    use_block = draw(st.integers(0, 4)) == 0
    if kind == "x" and not use_block:
        return [E("recv", rd=draw(st.sampled_from(DEST_REGS)), dir=d)]
    if kind == "v" and not use_block:
        return [E("vrecv", rd=draw(st.sampled_from(VREGS)), dir=d)]
    dst = draw(st.integers(0, SRAM - length))
    return [E("movi", rd=18, imm=dst), E("movi", rd=19, imm=length),
            E("recvb", rs1=18, rs2=19, dir=d)]


def relay_words(draw, length: int, d_in: int, d_out: int) -> list[int]:
    if draw(st.booleans()):
        return [E("relay", dir=d_in, dir2=d_out)]
    dst = draw(st.integers(0, SRAM - length))
    return [E("movi", rd=20, imm=dst), E("movi", rd=21, imm=length),
            E("relayb", dir=d_in, dir2=d_out, rs1=20, rs2=21)]


def mutate(draw, items: dict[int, list[list[int]]], m) -> None:
    """Break the global order: the result may deadlock, leave messages behind, or trap."""
    busy = [node for node, ops in items.items() if ops]
    if not busy:
        return
    node = draw(st.sampled_from(busy))
    ops = items[node]
    how = draw(st.sampled_from(("drop", "swap", "stray", "mismatch")))
    if how == "drop":
        del ops[draw(st.integers(0, len(ops) - 1))]
    elif how == "swap" and len(ops) >= 2:
        i = draw(st.integers(0, len(ops) - 2))
        ops[i], ops[i + 1] = ops[i + 1], ops[i]
    elif how == "stray":
        dirs = [d for d in range(4) if m.neighbors[node, d] >= 0]
        if dirs:
            ops.append([E("recv", rd=5, dir=draw(st.sampled_from(dirs)))])
    else:
        dirs = [d for d in range(4) if m.neighbors[node, d] >= 0]
        if dirs:
            ops.insert(draw(st.integers(0, len(ops))),
                       [E("vrecv", rd=1, dir=draw(st.sampled_from(dirs)))])


@st.composite
def comm_cases(draw) -> Case:
    m = draw(machines)
    nbr = m.neighbors
    items: dict[int, list[list[int]]] = {node: [] for node in range(m.n_live)}

    def filler(node: int) -> None:
        for _ in range(draw(st.integers(0, 2))):
            items[node].append(compute_words(draw, 0, safe=True))

    for _ in range(draw(st.integers(1, 14))):
        s = draw(st.integers(0, m.n_live - 1))
        dirs = [d for d in range(4) if nbr[s, d] >= 0]
        if not dirs:
            continue
        d = draw(st.sampled_from(dirs))
        t = int(nbr[s, d])
        kind, length = message_kind(draw)
        filler(s)
        items[s].append(send_words(draw, kind, length, d))
        if draw(st.integers(0, 3)) == 0:
            # t relays the message on toward some neighbour of its own (possibly back to s)
            d2 = draw(st.sampled_from([e for e in range(4) if nbr[t, e] >= 0]))
            u = int(nbr[t, d2])
            filler(t)
            items[t].append(relay_words(draw, length, OPPOSITE[d], d2))
            t, d = u, d2
        filler(t)
        items[t].append(recv_words(draw, kind, length, OPPOSITE[d]))
    if draw(st.integers(0, 3)) == 0:
        mutate(draw, items, m)
    programs = {}
    for node, ops in items.items():
        if not ops and draw(st.booleans()):
            continue                                        # no code: halted from the start
        programs[node] = prologue(draw) + [w for op in ops for w in op] + [E("halt")]
    return make_case(draw, m, programs, draw(st.integers(0, 1 << 16)), max_cycles=200_000)


# ---- fuzzed words -----------------------------------------------------------------------------

def fuzz_word(draw) -> int:
    how = draw(st.sampled_from(("random", "fields", "small", "small", "small")))
    if how == "random":
        return draw(st.integers(0, (1 << 64) - 1))
    ins = draw(st.sampled_from(INSTRUCTIONS))
    word = ins.match
    for f in ins.fields:
        if how == "fields":
            value = draw(st.integers(0, (1 << f.width) - 1))
        elif f.kind == "reg":
            value = draw(st.integers(0, 7))
        elif f.kind == "dir":
            value = draw(st.integers(0, 3))
        elif f.name in ("sa", "sb"):
            value = draw(st.sampled_from((0, 2, 16, 32, 64, 100)))
        elif f.name == "off":
            value = draw(st.integers(-4, 4)) & 0xFFFF_FFFF
        else:
            value = draw(st.one_of(st.integers(0, 1100), st.integers(0, (1 << f.width) - 1)))
        word |= (value & ((1 << f.width) - 1)) << f.lo
    if draw(st.integers(0, 15)) == 0:
        word |= 1 << draw(st.integers(0, 55))             # maybe a reserved bit
    return word


@st.composite
def fuzz_cases(draw) -> Case:
    m = draw(machines)
    nodes = draw_nodes(draw, m)
    programs = {}
    for node in nodes:
        words = prologue(draw) if draw(st.booleans()) else []
        words += [fuzz_word(draw) for _ in range(draw(st.integers(1, 24)))]
        programs[node] = words
    return make_case(draw, m, programs, draw(st.integers(0, 1 << 16)), max_cycles=400)


# ---- the comparison ---------------------------------------------------------------------------

def check_agreement(case: Case) -> None:
    ref = ReferenceEmulator(case.obj, seed=case.seed, max_cycles=case.max_cycles,
                            quantum=case.quantum_ref)
    ref_status = ref.run()
    fast = Emulator(case.obj, seed=case.seed, max_cycles=case.max_cycles,
                    quantum=case.quantum_fast, threads=case.threads)
    fast_status = fast.run()
    diffs = compare_states(ref.state_dict(), fast.state_dict())
    if isinstance(fast_status, str) and fast_status != ref_status:
        diffs.insert(0, f"status: reference {ref_status!r}, fast {fast_status!r}")
    assert not diffs, ("reference (left) and fast emulator (right) disagree:\n  "
                       + "\n  ".join(diffs) + "\n" + case.listing())


@SETTINGS
@given(case=compute_cases())
def test_random_compute_programs_agree(case: Case) -> None:
    check_agreement(case)


@SETTINGS
@given(case=comm_cases())
def test_random_communication_agrees(case: Case) -> None:
    check_agreement(case)


@SETTINGS
@given(case=fuzz_cases())
def test_fuzzed_words_agree(case: Case) -> None:
    check_agreement(case)


# ---- targeted edge cases: one per place where the docs leave room ---------------------------
# Each runs on both emulators; the reference's docstring records the decision each one pins.

def edge_programs() -> dict[str, tuple[str, dict[int, list[int]], list[tuple[int, int, bytes]]]]:
    """name -> (mesh, node programs, initial data)."""
    vec = struct.pack("<16I", *([0x7F80_0001, 0x8000_0000] * 8))
    tiny = struct.pack("<8H", *([F(2.0 ** -100) >> 16] * 8))
    neg_tiny = struct.pack("<8H", *([F(-(2.0 ** -100)) >> 16] * 8))
    big_row = struct.pack("<8H", F(2.0 ** 64) >> 16, *[0] * 7)
    big_col = struct.pack("<8H", *[F(2.0 ** 64) >> 16] * 8)
    return {
        "halt stays and costs": ("2x2", {0: [E("nop"), E("halt"), E("nop")]}, []),
        "user trap costs nothing": ("2x2", {0: [E("nop"), E("trap", uimm=7)]}, []),
        "empty block is halted": ("2x2", {0: [], 1: [E("halt")]}, []),
        "fall off the end": ("2x2", {0: [E("nop")]}, []),
        "jump before the code": ("2x2", {0: [E("jal", rd=1, off=-3)]}, []),
        "jalr wraps to a negative pc": ("2x2", {0: li(1, (1 << 63) - 1) + [
            E("jalr", rd=2, rs1=1, imm=1)]}, []),
        "cycle limit": ("2x2", {0: [E("jal", rd=0, off=0)]}, []),
        "strided range before alignment": ("2x2", {0: [
            E("movi", rd=2, imm=SRAM), E("vlds", rd=1, rs1=0, rs2=2, imm=2)]}, []),
        "strided store overlap": ("2x2", {0: [E("viota", rd=1), E("movi", rd=3, imm=64),
                                              E("vsts", rs2=1, rs1=3, rs3=0, imm=0),
                                              E("halt")]}, []),
        "vbcasti and vsplat move NaN bits": ("2x2", {0: [
            E("vbcasti", rd=1, fimm=0x7F80_0001), E("vld", rd=2, rs1=0, imm=0),
            E("vsplat", rd=3, rs1=2, lane=2), E("vredsum", rd=4, rs1=2),
            E("vredmax", rd=5, rs1=2), E("halt")]}, [(0, 0, vec)]),
        "vredsum of negative zeros": ("2x2", {0: [
            E("vbcasti", rd=1, fimm=0x8000_0000), E("vredsum", rd=2, rs1=1),
            E("vredmax", rd=3, rs1=1), E("halt")]}, []),
        "mma.bf16 exact tiny product": ("2x2", {0: [
            E("movi", rd=2, imm=256), E("mma.bf16", rd=0, rs1=0, rs2=2, sa=0, sb=0),
            E("halt")]}, [(0, 0, tiny), (0, 256, neg_tiny)]),
        # 2^64 * 2^64 = 2^128 is beyond fp32, but -1.5 * 2^127 + 2^128 = 2^126 is not.
        "mma.bf16 product beyond fp32": ("2x2", {0: [
            E("movi", rd=2, imm=256), E("movi", rd=3, imm=512),
            E("acc.ld", rd=1, rs1=3, sa=0),
            E("mma.bf16", rd=1, rs1=0, rs2=2, sa=0, sb=0), E("halt")]},
            [(0, 0, big_row), (0, 256, big_col),
             (0, 512, struct.pack("<8I", *[0xFF40_0000] * 8))]),
        "mmak zero steps keeps NaNs": ("2x2", {0: [
            E("acc.ld", rd=1, rs1=0, sa=0), E("movi", rd=2, imm=-1),
            E("mmak.bf16", rd=1, rs1=2, rs2=2, rs3=0, sa=1, sb=1), E("halt")]}, [(0, 0, vec)]),
        "mmak negative count": ("2x2", {0: [
            E("movi", rd=3, imm=-1), E("mmak.f32", rd=1, rs1=0, rs2=0, rs3=3, sa=32, sb=32)]},
            []),
        "mmak later step out of range": ("2x2", {0: [
            E("movi", rd=2, imm=SRAM - 300), E("movi", rd=3, imm=3),
            E("mmak.bf16", rd=1, rs1=0, rs2=2, rs3=3, sa=16, sb=16)]}, []),
        "mmak two steps": ("2x2", {0: [
            E("movi", rd=3, imm=2), E("mmak.bf16", rd=1, rs1=0, rs2=0, rs3=3, sa=32, sb=16),
            E("mmak.f32", rd=2, rs1=0, rs2=0, rs3=3, sa=64, sb=32), E("halt")]},
            [(0, 0, sram_image(5)[:1024])]),
        "sendb bad length before neighbour room": ("2x2", {0: [
            E("movi", rd=2, imm=0), E("sendb", rs1=0, rs2=2, dir=1)]}, []),
        "sendb toward the edge": ("2x2", {0: [E("sendb", rs1=0, rs2=0, dir=3)]}, []),
        "recvb mismatch before range": ("2x2", {
            0: [E("send", rs1=0, dir=1), E("halt")],
            1: [E("movi", rd=1, imm=-5), E("movi", rd=2, imm=9),
                E("recvb", rs1=1, rs2=2, dir=3)]}, []),
        "recvb range after the message": ("2x2", {
            0: [E("send", rs1=0, dir=1), E("halt")],
            1: [E("movi", rd=1, imm=SRAM - 4), E("movi", rd=2, imm=8),
                E("recvb", rs1=1, rs2=2, dir=3)]}, []),
        "recvb with a bad range waits first": ("2x2", {
            1: [E("movi", rd=1, imm=-5), E("movi", rd=2, imm=8),
                E("recvb", rs1=1, rs2=2, dir=3)]}, []),
        "recvb negative length": ("2x2", {
            0: [E("send", rs1=0, dir=1), E("halt")],
            1: [E("movi", rd=2, imm=-8), E("recvb", rs1=0, rs2=2, dir=3)]}, []),
        "relayb waits for room before checking length": ("3x1", {
            0: [E("send", rs1=0, dir=1), E("send", rs1=0, dir=1), E("halt")],
            1: [E("movi", rd=2, imm=8), E("relayb", dir=3, dir2=1, rs1=0, rs2=2),
                E("movi", rd=2, imm=9), E("relayb", dir=3, dir2=1, rs1=0, rs2=2)]}, []),
        "relayb length mismatch": ("3x1", {
            0: [E("send", rs1=0, dir=1), E("send", rs1=0, dir=1), E("halt")],
            1: [E("movi", rd=2, imm=8), E("relayb", dir=3, dir2=1, rs1=0, rs2=2),
                E("movi", rd=2, imm=9), E("relayb", dir=3, dir2=1, rs1=0, rs2=2)],
            2: [E("recv", rd=1, dir=3), E("halt")]}, []),
        "relay blocked on send": ("3x1", {
            0: [E("send", rs1=0, dir=1)] * 6 + [E("halt")],
            1: [E("relay", dir=3, dir2=1)] * 6}, []),
        "relay back where it came from": ("3x1", {
            0: [E("movi", rd=1, imm=5), E("send", rs1=1, dir=1), E("recv", rd=2, dir=1),
                E("halt")],
            1: [E("relay", dir=3, dir2=3), E("halt")]}, []),
        "harvested pass-through": ("h6x5", {
            7: [E("vsend", rs1=0, dir=1), E("halt")], 8: [E("vrecv", rd=1, dir=3), E("halt")]},
            []),
        "srseed zero restores": ("2x2", {0: li(1, 12345) + [
            E("srseed", rs1=1), E("vcvt.bf16.sr", rd=2, rs1=2), E("srseed", rs1=0),
            E("vnarrow.sr", rd=3, rs1=2, rs2=2), E("halt")]}, []),
        "zero-length data": ("2x2", {0: [E("halt")]}, [(0, 100, b""), (1, 10, b"x")]),
        # C's pow at its special cases (poles, overflow to -inf, NaN exponents), erf and gelu
        # of infinities, NaNs and subnormals: lane i of v3 = pow(v1[i], v2[i]).
        "vpow verf vgelu special values": ("2x2", {0: [
            E("movi", rd=2, imm=64), E("vld", rd=1, rs1=0, imm=0), E("vld", rd=2, rs1=2, imm=0),
            E("vpow", rd=3, rs1=1, rs2=2), E("vpow", rd=4, rs1=2, rs2=1),
            E("verf", rd=5, rs1=1), E("vgelu", rd=6, rs1=1), E("vgelu", rd=7, rs1=2),
            E("halt")]},
            [(0, 0, struct.pack("<16I", F(-10.0), F(-10.0), 0, 0x8000_0000, 0x8000_0000,
                                F(-8.0), 0x7FC0_0000, F(1.0), F(2.0), F(-2.0), 0x7F80_0000,
                                0xFF80_0000, 0x0000_0001, F(1e30), F(-1.0), F(0.5))),
             (0, 64, struct.pack("<16I", F(309.0), F(310.0), F(-1.0), F(-1.0), F(-2.0),
                                 F(1 / 3), 0, 0x7FC0_0000, F(200.0), F(-200.0), F(-0.5),
                                 F(3.0), F(0.5), F(-3.0), 0x7F80_0000, 0xFF80_0000))]),
    }


@pytest.mark.parametrize("name", sorted(edge_programs()))
def test_edge_cases_agree(name: str) -> None:
    mesh, programs, data = edge_programs()[name]
    m = small_machine(mesh, 1, 1, 64) if mesh != "3x1" else load_machine(
        mesh="3x1", overrides={"sram_bytes": SRAM, "fifo_depth": 1, "max_message_bytes": 512})
    blocks, node_block = [], np.full(m.n_live, -1, dtype=np.int32)
    for node, words in sorted(programs.items()):
        node_block[node] = len(blocks)
        blocks.append(CodeBlock(np.array(words, dtype=np.uint64)))
    obj = ObjectFile(m, blocks, node_block, [DataInit(*d) for d in data])
    check_agreement(Case(obj, seed=1, max_cycles=200, quantum_ref=64, quantum_fast=3))
