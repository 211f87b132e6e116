"""d1isa: the single source of truth for the D1-like machine.

It owns the machine description (`machine`), the ISA table and its encoding (`isa`), the
assembler (`asm`), the disassembler (`disasm`) and the object file format (`objfile`). The compiler
and the emulator both import it; it imports neither of them.
"""

from d1isa.errors import D1Error, MachineError, ObjectFormatError, SourceError
from d1isa.machine import Machine, default_machine, load_machine

__all__ = ["D1Error", "Machine", "MachineError", "ObjectFormatError", "SourceError",
           "default_machine", "load_machine"]
__version__ = "0.1.0"
