"""The `d1` command line: a thin layer over d1isa, compiler and emulator.

It also holds the one loader every command uses, for Python too:

    from d1 import load_program
    prog = load_program("programs/mlp.d1k", machine)    # .d1k, .d1s or .d1o -> Program
    emu = Emulator(prog.obj)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from d1.program import Program, load_program

__all__ = ["Program", "load_program"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `d1 --help` and `d1 info` do not import the loader's dependencies.
    if name in __all__:
        from d1 import program
        return getattr(program, name)
    raise AttributeError(f"module 'd1' has no attribute '{name}'")
