"""The ISA table: self-validation, encode/decode round trips, and docs/ISA.md staying in sync."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from d1isa import isa, isadoc
from d1isa.machine import TIMING_CLASSES, load_machine


def test_table_covers_required_groups():
    groups = {i.group for i in isa.INSTRUCTIONS}
    assert groups == set(isa.GROUPS)
    names = set(isa.OP)
    for required in ["add", "movi", "movhi", "ld8", "ld16", "ld32", "ld64", "st8", "st64",
                     "beq", "jal", "jalr", "nop", "halt", "getx", "gety", "getid", "rdcycle",
                     "vld", "vst", "vldw.bf16", "vstn.bf16", "vlds", "vadd", "vsub", "vmul",
                     "vfma", "vmax", "vmin", "vdiv", "vrcp", "vcmplt", "vsel", "vbcast",
                     "vredsum", "vredmax", "vcvt.bf16", "vcvt.bf16.sr", "vexp", "vtanh",
                     "vsigmoid", "vsqrt", "mma.bf16", "mma.f32", "acc.zero", "acc.ld",
                     "acc.st", "send", "recv", "sendb", "recvb", "relay", "relayb"]:
        assert required in names


def test_every_bit_is_defined_and_no_two_decode_the_same():
    full = (1 << 64) - 1
    for ins in isa.INSTRUCTIONS:
        field_bits = 0
        for f in ins.fields:
            assert field_bits & f.mask == 0
            field_bits |= f.mask
        assert field_bits & ins.mask == 0
        assert field_bits | ins.mask == full
    for a in isa.INSTRUCTIONS:
        for b in isa.INSTRUCTIONS:
            if a is not b:
                common = a.mask & b.mask
                assert (a.match & common) != (b.match & common)


def test_every_timing_class_has_a_cost_parameter():
    m = load_machine()
    for ins in isa.INSTRUCTIONS:
        assert ins.timing in TIMING_CLASSES
        assert m.cost(ins.timing) >= 1


def test_encode_rejects_out_of_range_fields():
    import pytest

    with pytest.raises(isa.EncodingError, match="out of range"):
        isa.encode("addi", rd=64)
    with pytest.raises(isa.EncodingError, match="out of range"):
        isa.encode("slli", rd=1, rs1=1, shamt=64)
    with pytest.raises(isa.EncodingError, match="no field"):
        isa.encode("add", imm=3)
    with pytest.raises(isa.EncodingError, match="not a valid"):
        isa.decode(isa.encode("add", rd=1) | 1)  # a reserved bit set


@st.composite
def instructions(draw):
    ins = draw(st.sampled_from(isa.INSTRUCTIONS))
    values = {}
    for f in ins.fields:
        lo, hi = f.value_range()
        values[f.name] = draw(st.integers(lo, hi))
    return ins, values


@given(instructions())
def test_encode_decode_roundtrip(case):
    ins, values = case
    word = isa.encode(ins.mnemonic, **values)
    got, got_values = isa.decode(word)
    assert got is ins
    assert got_values == values
    row = isa.decode_array(np.array([word], dtype=np.uint64))[0]
    assert row[0] == ins.opcode


@given(st.integers(0, (1 << 64) - 1))
def test_vector_decode_agrees_with_scalar_decode(word):
    row = isa.decode_array(np.array([word], dtype=np.uint64))[0]
    try:
        ins, values = isa.decode(word)
    except isa.EncodingError:
        assert row[0] == -1
        return
    assert row[0] == ins.opcode
    for f in ins.fields:
        col = isa.SLOT_COLUMN[f.slot]
        if f.name in ("sa", "sb"):
            assert (row[col] >> (f.lo - isa.SLOTS[f.slot][1])) & 0xFFFF == values[f.name]
        else:
            assert row[col] == values[f.name]


def test_docs_isa_md_is_in_sync():
    committed = isadoc.DOC_PATH.read_text(encoding="utf-8")
    assert committed == isadoc.render(), "docs/ISA.md is stale: run `d1 docs`"


def test_docs_document_every_instruction_encoding_and_semantics():
    text = isadoc.render()
    for ins in isa.INSTRUCTIONS:
        assert f"| `{ins.mnemonic}` | `{ins.opcode:08b}`" in text
        assert ins.semantics in text


def test_writes_column_agrees_with_the_semantics():
    dest = {"x": ("rd = ", "rd = ("), "v": ("vd", "bits(vd", "bf16 lanes 0..15 of vd",
                                            "int32 bits of vd"), "a": ("acc[ad]",)}
    for ins in isa.INSTRUCTIONS:
        starts = [f for f, prefixes in dest.items()
                  if any(ins.semantics.startswith(p) for p in prefixes)]
        if ins.mnemonic in ("jal", "jalr", "recv", "vrecv", "vnarrow.sr", "mma.bf16", "mma.f32",
                            "mmak.bf16", "mmak.f32"):
            continue        # their semantics say it in other words; checked below
        assert [ins.writes] == starts or (not ins.writes and not starts), ins.mnemonic
    for name, f in (("jal", "x"), ("jalr", "x"), ("recv", "x"), ("vrecv", "v"),
                    ("mma.bf16", "a"), ("mmak.f32", "a"), ("acc.st", ""), ("relay", ""),
                    ("vnarrow.sr", "v")):
        assert isa.BY_MNEMONIC[name].writes == f


def test_memory_column_gives_access_kind_width_and_shape():
    for bits, name in ((8, "ld8"), (16, "ld16u"), (32, "st32"), (64, "st64")):
        m = isa.BY_MNEMONIC[name].memory
        assert m.width == bits // 8 and m.shape == "contiguous"
        assert m.kind == ("load" if name.startswith("ld") else "store")
    assert isa.BY_MNEMONIC["vst"].memory == isa.MemAccess("store", 64, "contiguous")
    assert isa.BY_MNEMONIC["vldsw.bf16"].memory == isa.MemAccess("load", 2, "strided")
    assert isa.BY_MNEMONIC["acc.st.bf16"].memory == isa.MemAccess("store", 16, "tile", 1)
    assert isa.BY_MNEMONIC["recvb"].memory == isa.MemAccess("store", 0, "message")
    assert isa.BY_MNEMONIC["add"].memory is None


def test_network_column_names_the_senders_receivers_and_relays():
    def names(ops):
        return sorted(isa.BY_OPCODE[o].mnemonic for o in ops)
    assert names(isa.SEND_OPCODES) == ["send", "sendb", "vsend"]
    assert names(isa.RECV_OPCODES) == ["recv", "recvb", "vrecv"]
    assert names(isa.RELAY_OPCODES) == ["relay", "relayb"]
    assert isa.BY_MNEMONIC["vrecv"].network == isa.NetRole("recv", 64)
    assert isa.BY_MNEMONIC["send"].network == isa.NetRole("send", 8)
    assert isa.BY_MNEMONIC["sendb"].network.nbytes is None
    assert "relayb" in names(isa.STORE_OPCODES) and "sendb" in names(isa.LOAD_OPCODES)


def test_lanes_column_matches_the_machine():
    from d1isa.machine import default_machine
    m = default_machine()
    for ins in isa.INSTRUCTIONS:
        if ins.group != "vector":
            assert ins.lanes == 0, ins.mnemonic
        elif ins.mnemonic.startswith("vnarrow"):
            assert ins.lanes == 2 * m.vector_lanes_f32
        else:
            assert ins.lanes == m.vector_lanes_f32, ins.mnemonic
