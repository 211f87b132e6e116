"""The `d1` script's entry point: the command line, with Ctrl-C covered from the first moment.

Loading the command line (click, then numpy for the MPI check) takes a fifth of a second, and a
Ctrl-C in it would otherwise print a Python traceback. This module imports nothing heavy, so
the window left is the interpreter's own start.

Under an MPI launcher with several ranks (`mpiexec -n R d1 ...`) the launcher passes a Ctrl-C to
every rank, and a rank that left on its own while the others start would leave them waiting for
it forever. So there a Ctrl-C during the start is only noted (`INTERRUPTED`): the other ranks
ignore it from the start and follow rank 0 (d1.cli), and rank 0, once every rank has joined,
reports it once and releases them all with exit status 130, as one process exits.
"""

from __future__ import annotations

import signal
import sys

# Set when a Ctrl-C arrived while an MPI rank was starting (see above).
INTERRUPTED: list[bool] = []


def _note(signum: int, frame: object) -> None:
    INTERRUPTED.append(True)


def main() -> None:
    try:
        from emulator.mpi import launched_ranks  # imports nothing else

        if launched_ranks() > 1:
            signal.signal(signal.SIGINT, _note)
        from d1.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()
