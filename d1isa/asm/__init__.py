"""The assembler: `.d1s` text to an `ObjectFile` (docs/ASSEMBLY.md describes the language).

    from d1isa.asm import assemble, assemble_file, quote, is_plain_name

The package follows the assembler's own seams, one idea per module:

    syntax      lines, comments, quoted strings, names; located errors and their collection
    encode      instruction words from operands: plans from the ISA table, fast encoders,
                pseudo-instructions, `li` expansion, register names
    directives  `.text`, `.data`, `.equ`, `.tensor`, `.loc`, ... (pass 1)
    layout      sections to nodes, labels, data, shared code blocks, tensors, symbols, line
                rows, the object (pass 2; the compiler links through it too)
    assembler   the driver: pass 1 over the lines, then the layout
    program     instructions as data, checked against the ISA table when built, for
                generated code (the compiler's back end); written as text only on request

Operands and directives are read with the integer expression language of d1isa.expr, in its
ASSEMBLY dialect (the debugger reads the same language in its own).
"""

from d1isa.asm.assembler import PRODUCER, Assembler, assemble, assemble_file
from d1isa.asm.directives import DIRECTIVES
from d1isa.asm.encode import PLANS, bf16_from_f32_bits
from d1isa.asm.layout import SELECTORS
from d1isa.asm.syntax import is_plain_name, quote

__all__ = ["DIRECTIVES", "PLANS", "PRODUCER", "SELECTORS", "Assembler", "assemble",
           "assemble_file", "bf16_from_f32_bits", "is_plain_name", "quote"]
