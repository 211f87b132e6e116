"""Per-block code facts: what the debugger needs to know about one code block, computed once.

For every pc of a block: its decoded row, its *line key* (the source line it comes from, else
its assembly line, else the pc itself), whether it is a call or a return, and whether control can
enter its line there from another line. Source-level stepping stops only at those entries,
calls and returns, so these facts decide which instructions get a stop flag.

Which opcodes branch, link or jump through a register comes from the ISA table (d1isa.isa),
never from a list written here.
"""

from __future__ import annotations

import numpy as np

from d1isa import isa

# Jumps that write a link register (jal, jalr): a call when the link register is not r0.
LINKING_JUMPS = isa.opcodes_where(lambda i: i.group == "control" and i.writes == "x")
# Jumps to a register's value (jalr): a return when it does not link.
INDIRECT_JUMPS = isa.opcodes_where(lambda i: i.group == "control" and "off" not in i.operands)


class BlockInfo:
    """What the debugger needs to know about one code block, computed once."""

    def __init__(self, words: np.ndarray, lines: np.ndarray) -> None:
        n = len(words)
        self.rows = isa.decode_array(words) if n else np.zeros((0, 6), dtype=np.int64)
        self.lines = lines
        # A "line key" per pc: (file, line) of the source, else of the assembly, else the pc.
        keys: list[tuple[int, int]] = []
        for p in range(n):
            fi, ln, _col, afi, aln = (int(v) for v in lines[p])
            if fi >= 0 and ln > 0:
                keys.append((fi, ln))
            elif afi >= 0 and aln > 0:
                keys.append((afi, aln))
            else:
                keys.append((-1, -1 - p))
        self.keys = keys
        ids: dict[tuple[int, int], int] = {}
        kid = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
        op = self.rows[:, 0]
        rd = self.rows[:, 1]
        # Calls are jumps that link (rd != r0); any indirect jump that does not link may be a
        # return.
        self.calls = np.isin(op, LINKING_JUMPS) & (rd != 0)
        self.rets = np.isin(op, INDIRECT_JUMPS) & (rd == 0)
        # Entries: every pc control can reach from an instruction of another line.
        entries = np.zeros(n, dtype=bool)
        if n:
            entries[0] = True
            entries[1:] = kid[1:] != kid[:-1]
            for p in np.nonzero(np.isin(op, isa.BRANCH_OPCODES))[0]:
                t = int(p) + int(self.rows[p, isa.SLOT_COLUMN["imm"]])
                if 0 <= t < n and kid[t] != kid[p]:
                    entries[t] = True
            after_call = np.nonzero(self.calls)[0] + 1
            entries[after_call[after_call < n]] = True
        self.entries = entries

    def __len__(self) -> int:
        return len(self.keys)
