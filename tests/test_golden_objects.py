"""Objects made before the architecture change (tests/golden/objects.json) are made again, the same.

Every program in programs/ (on d1 and m4x4) and every DSL program the suite compiled when the
record was taken is compiled or assembled again; its code, line table, node map, data, tensor
layouts, symbols, initial registers and block sizes must equal the recorded ones, section by
section. The record holds SHA-256 digests only, so a difference names the section, not the byte.

A change that means to alter generated code regenerates the record, after checking that every
record's outputs are bit-identical and its modelled cycles the same or fewer:

    python tests/golden/compare_cycles.py --before /path/to/the/tree/before/the/change
    python tests/test_golden_objects.py --regenerate      # rewrites tests/golden/objects.json

(the sources, machines and options of the records stay; only their digests are recomputed),
and says so in the commit message.
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

RECORD = json.loads((Path(__file__).parent / "golden" / "objects.json").read_text())


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


@pytest.mark.parametrize("row", RECORD, ids=[_id(r) for r in RECORD])
def test_object_is_unchanged(row):
    got = section_digests(make_object(row))
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
    """Recompute every record's digests from its source, machine and options."""
    for row in RECORD:
        row["sections"] = section_digests(make_object(row))
    path = Path(__file__).parent / "golden" / "objects.json"
    path.write_text(json.dumps(RECORD, indent=0, sort_keys=True) + "\n")
    print(f"rewrote {path} ({len(RECORD)} records)")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--regenerate"]:
        raise SystemExit("usage: python tests/test_golden_objects.py --regenerate")
    regenerate()
