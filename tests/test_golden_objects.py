"""Objects made before the architecture change (tests/golden/objects.json) are made again, the same.

Every program in programs/ (on d1 and m4x4) and every DSL program the suite compiled when the
record was taken is compiled or assembled again; its code, line table, node map, data, tensor
layouts, symbols, initial registers and block sizes must equal the recorded ones, section by
section. The record holds SHA-256 digests only, so a difference names the section, not the byte.

When a change is meant to change generated code, first check that every record's outputs stay
bit-identical and its modelled cycles the same or fewer (and say where not):

    python tests/golden/compare_cycles.py --before /path/to/the/tree/before/the/change

then regenerate the record and say so in the commit message:

    PYTHONPATH=. python tests/test_golden_objects.py --regenerate

which compiles every recorded source again (re-reading programs/ from disk, and adding a row on
d1 and on m4x4 for each shipped program not yet recorded) and writes the new digests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import compiler
from compiler.pipeline import CompileOptions
from d1isa.asm import assemble
from d1isa.machine import Machine
from d1isa.objfile import ObjectFile, tensor_to_json

RECORD_PATH = Path(__file__).parent / "golden" / "objects.json"
RECORD = json.loads(RECORD_PATH.read_text())


def section_digests(obj: ObjectFile) -> dict[str, str]:
    """One digest per part of the object that code generation decides."""
    def h(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()[:32]
    code = b"".join(b.words.astype("<u8").tobytes() for b in obj.blocks)
    lines = b"".join(b.lines.astype("<i4").tobytes() for b in obj.blocks)
    data = json.dumps([[d.node, d.addr, hashlib.sha256(bytes(d.data)).hexdigest()]
                       for d in obj.data]).encode()
    tensors = json.dumps([tensor_to_json(t) for t in obj.tensors], sort_keys=True).encode()
    symbols = json.dumps([[s.name, s.kind, s.value, s.block] for s in obj.symbols]).encode()
    out = {"CODE": h(code), "LINE": h(lines), "NMAP": h(obj.node_block.astype("<i4").tobytes()),
           "DATA": h(data), "tensors": h(tensors), "symbols": h(symbols),
           "blocks": h(json.dumps([len(b) for b in obj.blocks]).encode())}
    if obj.init:
        out["REGS"] = h(json.dumps(list(obj.init.regs)).encode() + obj.init.index.tobytes()
                        + obj.init.rows.tobytes())
    return out


def make_object(row: dict) -> ObjectFile:
    machine = Machine.from_dict(row["machine"])
    if row["kind"] == "d1s":
        return assemble(row["source"], row["filename"], machine)
    options = CompileOptions(**row["options"]) if row["options"] else None
    return compiler.compile_source(row["source"], machine, row["filename"], options)


def _id(row: dict) -> str:
    return f"{row['kind']}-{row['filename']}-{row['machine']['name']}"


def build(row: dict) -> ObjectFile:
    """The object of a record row, made again from its source, machine and options."""
    return make_object(row)


@pytest.mark.parametrize("row", RECORD, ids=[_id(r) for r in RECORD])
def test_object_is_unchanged(row):
    got = section_digests(build(row))
    differ = [k for k in set(row["sections"]) | set(got)
              if got.get(k) != row["sections"].get(k)]
    assert not differ, f"sections that changed: {', '.join(sorted(differ))}"


def test_every_shipped_program_is_recorded():
    # The 14 programs of the record's first version were recorded before the architecture
    # change; the training examples added since were recorded when they first compiled.
    root = Path(__file__).parent.parent
    shipped = {str(p.relative_to(root)) for p in
               [*root.glob("programs/*.d1k"), *root.glob("programs/asm/*.d1s")]}
    recorded = {r["filename"] for r in RECORD if r["filename"].startswith("programs/")}
    assert recorded == shipped


def regenerate() -> None:
    """Write the record anew: every row's digests from its object made again; the sources of
    shipped programs re-read; a d1 and an m4x4 row for every shipped program not yet in it."""
    from d1isa.machine import load_machine
    root = Path(__file__).parent.parent
    rows = []
    for row in RECORD:
        path = root / row["filename"]
        if row["filename"].startswith("programs/"):
            if not path.exists():
                continue                      # a program that was removed
            row = {**row, "source": path.read_text(encoding="utf-8")}
        rows.append(row)
    have = {(r["filename"], r["machine"]["name"]) for r in rows}
    for path in sorted([*root.glob("programs/*.d1k"), *root.glob("programs/asm/*.d1s")]):
        name = str(path.relative_to(root))
        for mname in ("d1", "m4x4"):
            if (name, mname) not in have and path.suffix == ".d1k":
                rows.append({"filename": name, "kind": "d1k",
                             "machine": load_machine(mname).to_dict(), "options": None,
                             "source": path.read_text(encoding="utf-8"), "sections": {}})
    for row in rows:
        row["sections"] = section_digests(build(row))
    RECORD_PATH.write_text(json.dumps(rows, indent=0, sort_keys=True) + "\n")
    print(f"wrote {len(rows)} rows to {RECORD_PATH}")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: PYTHONPATH=. python tests/test_golden_objects.py --regenerate")
    regenerate()
