"""`make demo`: a showcase run end to end on a fresh checkout.

It shows the machine, assembles and inspects an assembly program, runs it on the emulated mesh,
and, when the compiler is present, compiles a DSL kernel, runs it on all 354 nodes and checks the
result against numpy. Each step prints the `d1` command it runs, so a reader can repeat it.
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


def have(module: str, attr: str) -> bool:
    try:
        mod = __import__(module, fromlist=[attr])
    except ImportError:
        return False
    return hasattr(mod, attr)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    d1("info")
    ring = "programs/asm/token_ring.d1s"
    if (ROOT / ring).exists() and have("d1isa.asm", "assemble"):
        obj = str(OUT / "token_ring.d1o")
        d1("asm", ring, "-o", obj)
        d1("disasm", obj, "--plain")
        if have("emulator", "Emulator"):
            d1("run", obj, "--stats", "--out-dir", str(OUT))
    mlp = "programs/mlp.d1k"
    if (ROOT / mlp).exists() and have("compiler", "compile_file"):
        d1("run", mlp, "--check", "--stats", "--out-dir", str(OUT))
    print("\ndemo finished")


if __name__ == "__main__":
    main()
