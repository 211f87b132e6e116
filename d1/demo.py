"""`make demo`: a showcase run end to end on a fresh checkout.

It shows the machine, assembles and inspects an assembly program, runs a token around the whole
mesh, compiles the two-layer perceptron, runs it on all 354 nodes and checks the result against
numpy, and lets the debugger explain a deadlock. Each step prints the `d1` command it runs, so
a reader can repeat it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"


def d1(*args: str, check: bool = True) -> int:
    cmd = [sys.executable, "-m", "d1", *args]
    shown = "d1 " + " ".join(shlex.quote(a) for a in args)
    print(f"\n$ {shown}", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if check and rc != 0:
        print(f"demo step failed (exit {rc}): {shown}", file=sys.stderr)
        sys.exit(rc)
    return rc


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    d1("info")
    vadd = str(OUT / "vadd.d1o")
    d1("asm", "programs/asm/vadd.d1s", "-o", vadd)
    d1("disasm", vadd, "--plain")
    d1("run", "programs/asm/token_ring.d1s", "--stats", "--out-dir", str(OUT))
    d1("compile", "programs/mlp.d1k", "--emit", "ir")
    d1("run", "programs/mlp.d1k", "--check", "--stats", "--out-dir", str(OUT))
    d1("debug", "programs/asm/deadlock.d1s", "--mesh", "4x4", "--batch", "-ex", "run")
    print("\ndemo finished: the MLP ran on all 354 nodes and matched numpy")


if __name__ == "__main__":
    main()
