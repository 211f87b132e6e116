"""The .d1o object format: exact save/load round trips, and robustness against damage.

Every malformed input must raise ObjectFormatError (never another exception, never a hang, never
a huge allocation): random mutations are parsed both with the checksum checked and with it
recomputed, so the parser behind the checksum is exercised too; hostile files target each check.
"""

from __future__ import annotations

import json
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from d1isa.asm import assemble, assemble_file
from d1isa.errors import D1Error, ObjectFormatError
from d1isa.machine import load_machine
from d1isa.objfile import (
    HEADER,
    CodeBlock,
    DataInit,
    InitRegs,
    ObjectFile,
    Symbol,
    TensorLayout,
    TensorPiece,
    load_object,
)
from d1isa.objfile import pack_sections as build  # a container around any section payloads

ROOT = Path(__file__).resolve().parent.parent
M4 = load_machine(mesh="4x4")
M2 = load_machine(mesh="2x2")


def rich_object() -> ObjectFile:
    """An object using every part of the format: blocks, lines, data, symbols, tensors, meta."""
    return assemble_file(ROOT / "programs" / "asm" / "row_broadcast.d1s", load_machine(mesh="3x2"))


def meta(**kw) -> bytes:
    d = {"blocks": [], "line_runs": [], "init_regs": [], "data": [], "symbols": [], "tensors": [],
         "files": [], "sources": {}, "meta": {}}
    d.update(kw)
    return json.dumps(d).encode()


def sections(mach=None, meta_=None, code=b"", line=b"", nmap=None, data=b"", regs=b""):
    return [(b"MACH", json.dumps(mach if mach is not None else M2.to_dict()).encode()),
            (b"META", meta_ if meta_ is not None else meta()), (b"CODE", code), (b"LINE", line),
            (b"NMAP", nmap if nmap is not None else struct.pack("<4i", -1, -1, -1, -1)),
            (b"DATA", data), (b"REGS", regs)]


def reseal(raw: bytes | bytearray) -> bytes:
    """Fix the header's length and CRC after a mutation, so the parser proper sees it."""
    b = bytearray(raw)
    if len(b) >= HEADER.size:
        struct.pack_into("<Q", b, 16, len(b))
        struct.pack_into("<I", b, 24, zlib.crc32(bytes(b[HEADER.size:])))
    return bytes(b)


def rejects(raw: bytes, match: str, check_crc: bool = True) -> None:
    with pytest.raises(ObjectFormatError, match=match):
        ObjectFile.from_bytes(raw, "hostile.d1o", check_crc=check_crc)


# ---- round trips ---------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    obj = rich_object()
    path = tmp_path / "prog.d1o"
    obj.save(path)
    back = load_object(path)
    assert back.to_bytes() == obj.to_bytes() == path.read_bytes()
    assert back.machine == obj.machine
    assert [b.words.tolist() for b in back.blocks] == [b.words.tolist() for b in obj.blocks]
    assert [b.lines.tolist() for b in back.blocks] == [b.lines.tolist() for b in obj.blocks]
    assert back.node_block.tolist() == obj.node_block.tolist()
    assert [(d.node, d.addr, bytes(d.data)) for d in back.data] == \
           [(d.node, d.addr, bytes(d.data)) for d in obj.data]
    assert back.symbols == obj.symbols and back.tensors == obj.tensors
    assert (back.files, back.sources, back.meta) == (obj.files, obj.sources, obj.meta)


def test_identical_data_payloads_are_stored_once():
    obj = ObjectFile(M4, [], np.full(16, -1, np.int32),
                     data=[DataInit(n, 64, bytes(range(200))) for n in range(16)])
    raw = obj.to_bytes()
    assert len(raw) < 200 * 2 + 2000
    back = ObjectFile.from_bytes(raw)
    assert all(d.data == bytes(range(200)) for d in back.data)
    assert len({id(d.data) for d in back.data}) == 1        # one shared bytes object


def test_hand_built_object_round_trips_through_bytes():
    obj = ObjectFile(
        M2, [CodeBlock(np.array([1, 2, 3], np.uint64), np.arange(15, dtype=np.int32).reshape(3, 5)
                       % 2 - 1)],
        np.array([0, -1, 0, -1], np.int32), [DataInit(3, 8, b"xyz")],
        [Symbol("s", "code", 2, 0), Symbol("t", "equ", -(2**70))],
        [TensorLayout("t", "i32", (2, 2), "output", [TensorPiece(1, 0, (0, 0), (2, 2), (8, 4))])],
        ["a.d1k"], {"a.d1k": "x\n"}, {"k": [1, None, "v"]})
    back = ObjectFile.from_bytes(obj.to_bytes())
    assert back.to_bytes() == obj.to_bytes()
    assert back.symbols[1].value == -(2**70)


def test_a_version_1_object_still_loads():
    obj = rich_object()
    raw = obj.to_bytes()
    parts = dict(split(raw))
    meta_ = json.loads(parts[b"META"])
    del meta_["line_runs"], meta_["init_regs"]
    rows = b"".join(b.lines.astype("<i4").tobytes() for b in obj.blocks)
    v1 = [(b"MACH", parts[b"MACH"]), (b"META", json.dumps(meta_).encode()),
          (b"CODE", parts[b"CODE"]), (b"LINE", rows), (b"NMAP", parts[b"NMAP"]),
          (b"DATA", parts[b"DATA"])]
    old = bytearray(build(v1))
    struct.pack_into("<I", old, 8, 1)
    back = ObjectFile.from_bytes(reseal(old))
    assert back.to_bytes() == raw


def split(raw: bytes) -> list[tuple[bytes, bytes]]:
    from d1isa.objfile import ENTRY
    n = struct.unpack_from("<I", raw, 12)[0]
    out = []
    for i in range(n):
        tag, _, off, length = ENTRY.unpack_from(raw, HEADER.size + i * ENTRY.size)
        out.append((tag, raw[off:off + length]))
    return out


def test_locations_are_stored_as_runs():
    rows = np.repeat(np.array([[0, 3, 5, -1, -1], [0, 4, 1, -1, -1]], np.int32), [1000, 24],
                     axis=0)
    block = CodeBlock(np.arange(1024, dtype=np.uint64), rows)
    obj = ObjectFile(M2, [block, CodeBlock(np.zeros(0, np.uint64))],
                     np.array([0, 0, 1, -1], np.int32), files=["a.d1k"])
    raw = obj.to_bytes()
    assert len(dict(split(raw))[b"LINE"]) == 2 * 6 * 4            # two runs of 6 int32
    back = ObjectFile.from_bytes(raw)
    assert np.array_equal(back.blocks[0].lines, rows) and len(back.blocks[1]) == 0


def test_initial_registers_round_trip_in_canonical_form():
    init = InitRegs.from_nodes(4, {3: {7: 5, 2: 0}, 1: {7: 5}, 0: {9: 2**64 - 1}, 2: {4: 0}})
    assert init.regs == (7, 9)                     # r2 and r4 are never set to anything but 0
    assert init.of(0) == {9: -1} and init.of(1) == init.of(3) == {7: 5} and init.of(2) == {}
    assert len(init.rows) == 2 and init.index.tolist() == [0, 1, -1, 1]
    obj = ObjectFile(M2, [], np.full(4, -1, np.int32), init=init)
    back = ObjectFile.from_bytes(obj.to_bytes())
    assert back.init == init and back.to_bytes() == obj.to_bytes()
    assert len(dict(split(obj.to_bytes()))[b"REGS"]) == 4 * 4 + 2 * 2 * 8


def test_bad_initial_registers_are_rejected():
    def regs_section(index, rows):
        return (struct.pack(f"<{len(index)}i", *index)
                + np.asarray(rows, np.int64).astype("<i8").tobytes())

    ok = regs_section([0, -1, -1, 0], [[5]])
    ObjectFile.from_bytes(build(sections(meta_=meta(init_regs=[3]), regs=ok)))
    rejects(build(sections(meta_=meta(init_regs=[0]), regs=ok)), "r0 does not exist or cannot")
    rejects(build(sections(meta_=meta(init_regs=[32]), regs=ok)), "r32 does not exist")
    rejects(build(sections(meta_=meta(init_regs=[3, 3]),
                           regs=regs_section([0, -1, -1, 0], [[5, 6]]))), "once each")
    rejects(build(sections(meta_=meta(init_regs=[3]), regs=ok[:-1])), "REGS size")
    rejects(build(sections(meta_=meta(init_regs=[3]), regs=regs_section([0, 1, -1, 0], [[5]]))),
            "row that does not exist")
    rejects(build(sections(meta_=meta(init_regs=[]), regs=ok)), "no register is listed")
    rejects(build(sections(meta_=meta(init_regs="r3"), regs=ok)), "short list")
    rejects(build(sections(meta_=meta(init_regs=[3]), regs=regs_section([-1] * 4, [[1]] * 5))),
            "more rows than nodes")


def test_save_validates_first():
    obj = ObjectFile(M2, [], np.array([0, -1, -1, -1], np.int32))
    with pytest.raises(ObjectFormatError, match="code block that does not exist"):
        obj.to_bytes()
    obj = ObjectFile(M2, [], np.full(4, -1, np.int32), data=[DataInit(0, M2.sram_bytes - 1, b"ab")])
    with pytest.raises(ObjectFormatError, match="outside node 0's"):
        obj.to_bytes()


def test_load_errors_are_d1_errors(tmp_path):
    with pytest.raises(D1Error, match="cannot read"):
        ObjectFile.load(tmp_path / "missing.d1o")
    (tmp_path / "text.d1o").write_text("hello")
    with pytest.raises(ObjectFormatError, match="not a d1 object file"):
        ObjectFile.load(tmp_path / "text.d1o")


# ---- random damage -------------------------------------------------------------------------


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    kind = rng.randrange(5)
    if kind == 0:                                   # bit flips
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:                                 # byte changes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 2:                                 # truncation
        del b[rng.randrange(len(b)):]
    elif kind == 3:                                 # insertion
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:                                           # a little-endian field set to an extreme
        i = rng.randrange(max(len(b) - 8, 1))
        b[i:i + 8] = struct.pack("<Q", rng.choice([0, 2**31, 2**32 - 1, 2**63, 2**64 - 1]))
    return bytes(b)


def test_random_mutations_load_or_raise_object_format_error():
    raw = rich_object().to_bytes()
    rng = random.Random(20240611)
    outcomes = {"ok": 0, "rejected": 0}
    start = time.perf_counter()
    worst = 0.0
    for _ in range(1000):
        damaged = _mutate(rng, raw)
        for data, crc in ((damaged, True), (reseal(damaged), False), (reseal(damaged), True)):
            t = time.perf_counter()
            try:
                obj = ObjectFile.from_bytes(data, check_crc=crc)
            except ObjectFormatError:
                outcomes["rejected"] += 1
            else:
                outcomes["ok"] += 1
                obj.validate()
                assert ObjectFile.from_bytes(obj.to_bytes()).to_bytes() == obj.to_bytes()
            worst = max(worst, time.perf_counter() - t)
    assert worst < 1.0, f"one parse took {worst:.2f} s"
    assert time.perf_counter() - start < 15
    # With the CRC checked nearly everything is rejected; behind a recomputed CRC many
    # mutations (in payload bytes, JSON string contents, code words) still load.
    assert outcomes["rejected"] > 1000 and outcomes["ok"] > 100


# ---- hostile files -------------------------------------------------------------------------


def test_container_damage_is_rejected():
    good = build(sections())
    ObjectFile.from_bytes(good)
    rejects(good[:10], "too short")
    rejects(b"X" + good[1:], "bad magic")
    rejects(good[:8] + struct.pack("<I", 3) + good[12:], "version 3 is not supported")
    rejects(good + b"\0", "truncated or padded")
    rejects(good[:-1], "truncated or padded")
    rejects(good[:-1] + bytes([good[-1] ^ 1]), "checksum mismatch")
    rejects(reseal(good[:8] + good[8:12] + struct.pack("<I", 65) + good[16:]),
            "bad section table")
    rejects(build(sections()[:-2]), "missing section DATA")
    rejects(build(sections()[:-1]), "missing section REGS")
    rejects(build(sections() + [(b"DATA", b"")]), "appears twice")


def test_huge_declared_lengths_and_offsets_past_eof():
    good = bytearray(build(sections()))
    for field_at, value in ((8, 2**64 - 1), (8, 10**12), (0, 2**63)):
        b = bytearray(good)
        struct.pack_into("<Q", b, HEADER.size + field_at + 8, value)   # entry 0: offset, length
        rejects(reseal(b), "lies outside the file", check_crc=False)
    b = bytearray(good)
    struct.pack_into("<Q", b, 16, 2**64 - 1)                           # total length
    rejects(bytes(b), "truncated or padded")
    rejects(build(sections(meta_=meta(blocks=[2**62]))), "larger than the file")
    rejects(build(sections(meta_=meta(blocks=[10**400]))), "larger than the file")
    rejects(build(sections(meta_=meta(blocks=[-1]))), "negative")
    rejects(build(sections(meta_=meta(blocks=[2]), code=bytes(8))), "CODE holds 8 B")
    rejects(build(sections(meta_=meta(data=[[0, 0, 0, 2**40]]))), "points outside DATA")


def test_json_bombs_are_rejected_quickly():
    t = time.perf_counter()
    rejects(build(sections(meta_=b"[" * 200000 + b"]" * 200000)), "malformed object file")
    rejects(build(sections(meta_=meta(meta=None)[:-1] + b"[" * 100000 + b"]" * 100000 + b"}")),
            "malformed|META")
    rejects(build(sections(mach=None, meta_=b'{"blocks": ' + b"9" * 5000 + b"}")), "malformed")
    rejects(build([(b"MACH", b"\xff\xfe"), *sections()[1:]]), "malformed")
    rejects(build(sections(meta_=b"[1, 2]")), "META is not a table")
    assert time.perf_counter() - t < 5


def test_wrong_or_hostile_machines_are_rejected_before_allocation():
    bad = M2.to_dict()
    del bad["rows"]
    rejects(build(sections(mach=bad)), "machine description lacks: rows")
    bad = M2.to_dict() | {"cols": "two"}
    rejects(build(sections(mach=bad)), "must be an integer")
    bad = M2.to_dict() | {"frobs": 1}
    rejects(build(sections(mach=bad)), "unknown machine parameter")
    rejects(build(sections(mach=[1, 2])), "not a table")
    t = time.perf_counter()
    for huge in ({"cols": 60000, "rows": 60000}, {"chips_x": 5000, "chips_y": 5000},
                 {"cols": 1e12}):
        rejects(build(sections(mach=M2.to_dict() | huge)), "more than this toolchain supports")
    assert time.perf_counter() - t < 1
    rejects(build(sections(mach=M4.to_dict())), "node map has 4 entries, the machine has 16")


def test_amplifying_records_are_rejected():
    payload = bytes(1 << 16)
    distinct = [[0, 0, i, len(payload) - 1000] for i in range(1000)]
    rejects(build(sections(meta_=meta(data=distinct), data=payload)), "more bytes than DATA")
    shared = [[i % 4, 0, 0, 1024] for i in range(5000)]   # one payload for many records is fine
    obj = ObjectFile.from_bytes(build(sections(meta_=meta(data=shared), data=payload)))
    assert len(obj.data) == 5000
    rejects(build(sections(meta_=meta(blocks=[0] * 100000))), "100000 code blocks for 4 nodes")


@pytest.mark.parametrize("bad, message", [
    ([3, 0, [0, 0], [1, 2], [8, 0]], "several elements at one SRAM address"),
    ([9, 0, [0, 0], [1, 2], [8, 4]], "piece on missing node 9"),
    ([1, 2, [0, 0], [1, 2], [8, 4]], "bad piece address"),
    ([1, 0, [0, 3], [1, 2], [8, 4]], "piece lies outside the tensor"),
    ([1, 0, [0, 0], [1, 2], [8, True]], "must be an integer"),
])
def test_a_bad_piece_among_many_is_found(bad, message):
    """Tensors of many pieces (one per node of a large machine) are checked at once; the
    piece that fails is still named."""
    good = [[n % 4, 4096 * (n // 4), [n, 0], [1, 2], [8, 4]] for n in range(100)]
    tensor = {"name": "t", "dtype": "f32", "shape": [101, 4], "role": "input",
              "pieces": good + [bad]}
    ObjectFile.from_bytes(build(sections(meta_=meta(tensors=[tensor | {"pieces": good}]))))
    rejects(build(sections(meta_=meta(tensors=[tensor]))), message)


def test_bad_line_runs_are_rejected():
    code = struct.pack("<2Q", 0, 0)
    two = {"blocks": [2], "line_runs": [1]}
    run = struct.pack("<6i", 2, *[-1] * 5)
    ObjectFile.from_bytes(build(sections(meta_=meta(**two), code=code, line=run)))
    rejects(build(sections(meta_=meta(**two), code=code, line=struct.pack("<6i", 1, *[-1] * 5))),
            "do not add up")
    rejects(build(sections(meta_=meta(**two), code=code, line=struct.pack("<6i", 0, *[-1] * 5))),
            "covers no word")
    rejects(build(sections(meta_=meta(blocks=[2], line_runs=[3]), code=code, line=run * 3)),
            "more than its words")
    rejects(build(sections(meta_=meta(blocks=[2], line_runs=[]), code=code, line=run)),
            "one run count per code block")
    rejects(build(sections(meta_=meta(**two), code=code, line=run + b"x")), "LINE size")


def test_inconsistent_contents_are_rejected():
    one_block = {"blocks": [1], "line_runs": [1]}
    code, line = struct.pack("<Q", 0), struct.pack("<6i", 1, 0, 1, 1, 0, 1)
    rejects(build(sections(meta_=meta(**one_block), code=code, line=line)),
            "line table refers to a missing source file")
    rejects(build(sections(meta_=meta(**one_block), code=code, line=line[:-4])),
            "LINE size does not match")
    rejects(build(sections(meta_=meta(**one_block), code=code,
                           line=struct.pack("<6i", 1, *[-1] * 5),
                           nmap=struct.pack("<4i", 1, -1, -1, -1))), "block that does not exist")
    rejects(build(sections(meta_=meta(data=[[9, 0, 0, 0]]))), "no such live node")
    rejects(build(sections(meta_=meta(data=[[0, -4, 0, 0]]))), "outside node 0's")
    rejects(build(sections(meta_=meta(symbols=[["a", "func", 0, -1]]))), "bad symbol")
    rejects(build(sections(meta_=meta(symbols=[["a", "code", 0, 5]]))), "missing code block")
    rejects(build(sections(meta_=meta(symbols=[["a", "code", 1.5, -1]]))), "must be an integer")
    tensor = {"name": "t", "dtype": "f32", "shape": [4], "role": "input",
              "pieces": [[0, 2, [0], [4], [4]]]}
    rejects(build(sections(meta_=meta(tensors=[tensor]))), "bad piece address")
    rejects(build(sections(meta_=meta(tensors=[tensor | {"shape": [2**40, 2**40]}]))),
            "too large")
    rejects(build(sections(meta_=meta(tensors=[tensor | {"dtype": "f64"}]))), "unknown dtype")
    good = tensor | {"pieces": [[0, 0, [0], [4], [4]]]}
    ObjectFile.from_bytes(build(sections(meta_=meta(tensors=[good]))))
    rejects(build(sections(meta_=meta(tensors=[good, good]))), "described twice")
    rejects(build(sections(meta_=meta(tensors=[tensor | {"pieces": [[0, 0, [0], [4]]]}]))),
            "bad tensor piece")
    rejects(build(sections(meta_=meta(files=[1]))), "bad file list")
    rejects(build(sections(meta_=meta(sources={"a": 1}))), "bad sources")
    rejects(build(sections(meta_=meta(meta=[1]))), "bad meta")


def test_an_assembled_object_survives_reload_with_every_program():
    for path in sorted((ROOT / "programs" / "asm").glob("*.d1s")):
        obj = assemble_file(path, M4)
        back = ObjectFile.from_bytes(obj.to_bytes(), path.name)
        assert back.to_bytes() == obj.to_bytes()
    small = assemble(".text all\n halt\n", "h.d1s", M2)
    assert len(small.to_bytes()) < 2000


def test_a_directory_is_not_an_object_file(tmp_path):
    with pytest.raises(D1Error, match=r"not a regular file \(a directory\); give an object file"):
        ObjectFile.load(tmp_path)


def test_load_and_from_bytes_say_what_they_take(tmp_path):
    """A path that is not a str or a Path was a TypeError from pathlib, bytes given as None or
    text a misleading 'a field has the wrong type', a memoryview an AttributeError."""
    from d1isa.errors import D1Error

    with pytest.raises(D1Error, match="the path of the object file must be a str or a Path, "
                                      "not int"):
        ObjectFile.load(123)
    for bad in (None, "D1OBJ"):
        with pytest.raises(D1Error, match="from_bytes takes the bytes of an object, not"):
            ObjectFile.from_bytes(bad)
    obj = assemble(".text all\n halt\n", "h.d1s", M2)
    assert ObjectFile.from_bytes(memoryview(obj.to_bytes())).to_bytes() == obj.to_bytes()


@pytest.mark.parametrize("call, says", [
    (lambda obj, d: ObjectFile.load(str(d / "a\0b.d1o")), "path of the object file contains a NUL"),
    (lambda obj, d: ObjectFile.load(""), "path of the object file is empty"),
    (lambda obj, d: obj.save(None), "output file must be a str or a Path, not NoneType"),
    (lambda obj, d: obj.save(7), "path of the output file must be a str or a Path, not int"),
    (lambda obj, d: obj.save(str(d / "a\0b.d1o")), "path of the output file contains a NUL"),
    (lambda obj, d: obj.save(""), "path of the output file is empty"),
])
def test_load_and_save_refuse_paths_that_name_no_file(tmp_path, call, says):
    """A path with a NUL byte was ValueError('embedded null byte') from os, a save to None or
    7 a TypeError, and "" was read as the current directory."""
    from d1isa.errors import D1Error

    obj = assemble(".text all\n halt\n", "h.d1s", M2)
    with pytest.raises(D1Error, match=says):
        call(obj, tmp_path)
    obj.save(tmp_path / "ok.d1o")
    assert ObjectFile.load(tmp_path / "ok.d1o").to_bytes() == obj.to_bytes()
