"""What each instruction does, one small jitted helper per instruction group.

- `memory`: SRAM address checks, and the scalar loads and stores;
- `scalar`: the other scalar, control and system instructions;
- `vector`: vector arithmetic, conversions, moves, loads and stores;
- `matrix`: mma steps and the accumulator tiles;
- `network`: sends, receives and relays over the link FIFOs, with their timing.

Why apart from the run loop (emulator.kernel): each helper can be read, and tested through its
`.py_func`, on its own, while the loop owns only scheduling. The loop's inner loop runs the
frequent instructions without calls; where it does what a helper does, it calls that helper and
Numba inlines it (`inline="always"`), so the semantics are written once.

Every helper takes its state as arrays; one that can trap returns the cause (0: fine) rather
than raising: every address a program supplies is checked here before anything is read or
written, so an instruction that traps changes nothing.
"""
