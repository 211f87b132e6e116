"""Whether this process was started by an MPI launcher with several ranks, and its communicator.

Why a module of its own: every `d1` command asks this before anything else, and the answer for a
plain process must cost nothing. mpi4py is an optional extra (`pip install -e '.[mpi]'`), and
importing it initialises MPI, so it is imported only when a launcher's environment says this
process is one of several ranks (MPICH and Intel MPI set PMI_SIZE, Open MPI
OMPI_COMM_WORLD_SIZE). A single process, and `mpiexec -n 1`, never import it; the emulator on
ranks is emulator.distributed. The launcher checks import nothing (not even numpy), so that the
`d1` script can make them first of all (d1.entry).
"""

from __future__ import annotations

import os
from typing import Any

# Environment variables in which launchers announce the number of ranks.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")

_WORLD: list[Any] = []


def launched_ranks() -> int:
    """Ranks the launcher started (1 when not started by an MPI launcher)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return max(1, int(value))
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher announced it (0 when not under a launcher)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def world() -> Any:
    """MPI.COMM_WORLD when this process is one of several MPI ranks, else None (and mpi4py is
    not imported). D1Error when a launcher started several ranks but mpi4py is missing."""
    if _WORLD:
        return _WORLD[0]
    comm = None
    if launched_ranks() > 1:
        from d1isa.errors import D1Error  # here: the launcher checks above import nothing

        try:
            from mpi4py import MPI
        except ImportError:
            raise D1Error(f"started by an MPI launcher as one of {launched_ranks()} ranks, but "
                          "mpi4py is not installed: pip install -e '.[mpi]' (docs/SCALE.md)"
                          ) from None
        if MPI.COMM_WORLD.Get_size() > 1:
            comm = MPI.COMM_WORLD
    _WORLD.append(comm)
    return comm
