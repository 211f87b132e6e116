"""Alias of emulator.jit.precompile, its home since the Numba plumbing moved to emulator.jit.

Why it remains: emulator.emulator (being rewritten in another branch) still imports it as
`from emulator import precompile`. This module replaces itself in sys.modules with the real
one, so both names are the very same module object (state such as the running helper process
is shared). Remove it once emulator.emulator imports emulator.jit.precompile.
"""

import sys

from emulator.jit import precompile as _precompile

if __name__ == "__main__":
    sys.exit(_precompile.main())
sys.modules[__name__] = _precompile
