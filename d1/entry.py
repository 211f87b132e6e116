"""The `d1` script's entry point: the command line, with Ctrl-C covered from the first moment.

Loading the command line (click, then numpy for the MPI check) takes a fifth of a second, and a
Ctrl-C in it would otherwise print a Python traceback. This module imports nothing heavy, so
the window left is the interpreter's own start.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from d1.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()
