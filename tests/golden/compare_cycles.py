"""Compare what every recorded program does, before and after a change to code generation.

tests/test_golden_objects.py keeps the objects of tests/golden/objects.json byte-identical. A
change that means to alter generated code (shared SPMD blocks, loops instead of unrolled code)
must first show that every recorded program still computes the same outputs, bit for bit, in
the same or fewer modelled cycles. This script runs every record on two source trees and
prints both:

    python tests/golden/compare_cycles.py --before /path/to/old/tree [--after .] [--json F]

Each tree runs in its own process (PYTHONPATH=TREE): compile (or assemble) the record, draw
the inputs from seed 0 (params from their INIT), emulate, and note the modelled cycles, the
object's size and code words, and a digest of every output's bytes. The summary lists every
record whose outputs differ or whose cycles went up, and the totals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = HERE / "objects.json"


def measure(rows: list[dict]) -> list[dict]:
    """Run in the tree under test: one result per record."""
    import numpy as np

    import compiler
    from compiler.pipeline import CompileOptions, compile_text
    from compiler.reference import init_params
    from d1isa.asm import assemble
    from d1isa.machine import Machine
    from emulator import Emulator

    out = []
    for row in rows:
        machine = Machine.from_dict(row["machine"])
        graph = None
        if row["kind"] == "d1s":
            obj = assemble(row["source"], row["filename"], machine)
        else:
            options = CompileOptions(**row["options"]) if row["options"] else None
            c = compile_text(row["source"], machine, row["filename"], options)
            obj, graph = c.obj, c.graph
        emu = Emulator(obj)
        if graph is not None:
            values = {**compiler.make_inputs(graph, 0), **init_params(graph, 0)}
            for name, value in values.items():
                emu.set_input(name, value)
        res = emu.run()
        digests = {}
        for t in obj.tensors:
            if t.role == "output":
                digests[t.name] = hashlib.sha256(
                    np.ascontiguousarray(emu.output(t.name)).tobytes()).hexdigest()[:16]
        out.append({"status": res.status, "cycles": int(res.cycles),
                    "bytes": len(obj.to_bytes()), "words": sum(len(b) for b in obj.blocks),
                    "blocks": len(obj.blocks), "outputs": digests})
    return out


def run_tree(tree: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, __file__, "--measure"], env=env, cwd=tree,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"measuring {tree} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="the source tree before the change")
    ap.add_argument("--after", type=Path, default=HERE.parent.parent,
                    help="the source tree after it (default: this one)")
    ap.add_argument("--json", type=Path, help="write every record's figures here")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = json.loads(RECORD.read_text())
    if args.measure:
        print(json.dumps(measure(rows)))
        return
    if args.before is None:
        ap.error("--before is required")
    before, after = run_tree(args.before.resolve()), run_tree(args.after.resolve())
    worse, differ = [], []
    totals = {k: [0, 0] for k in ("cycles", "bytes", "words", "blocks")}
    lines = []
    for row, b, a in zip(rows, before, after, strict=True):
        name = f"{row['kind']} {row['filename']} on {row['machine']['name']}" + (
            f" {row['options']}" if row["options"] else "")
        for k in totals:
            totals[k][0] += b[k]
            totals[k][1] += a[k]
        mark = ""
        if a["outputs"] != b["outputs"] or a["status"] != b["status"]:
            differ.append(name)
            mark = "  OUTPUTS DIFFER"
        elif a["cycles"] > b["cycles"]:
            worse.append(name)
            mark = "  SLOWER"
        lines.append(f"{b['cycles']:>9,} -> {a['cycles']:>9,} cycles  {b['bytes']:>10,} -> "
                     f"{a['bytes']:>9,} B  {b['blocks']:>5} -> {a['blocks']:>4} blocks  "
                     f"{name}{mark}")
    print("\n".join(lines))
    print(f"\n{len(rows)} records: outputs identical in {len(rows) - len(differ)}, cycles "
          f"higher in {len(worse)}")
    for k, (b, a) in totals.items():
        print(f"  total {k:<7} {b:>12,} -> {a:>12,}")
    for name in differ:
        print(f"outputs differ: {name}")
    for name in worse:
        print(f"slower: {name}")
    if args.json:
        args.json.write_text(json.dumps({"before": before, "after": after}, indent=1))


if __name__ == "__main__":
    main()
