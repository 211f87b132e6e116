"""Numba plumbing of the run loop, kept apart from what the loop computes.

- `helper`: the decorator of the loop's group helpers (compiled without Python entry points, so
  calling one from Python is a clear error: `JitOnly`);
- `pipeline`: Numba's nopython pipeline minus two passes the loop never needs;
- `fingerprint`: drops cached machine code built from other sources than the ones loaded now
  (Numba keys its cache on a function's own file only);
- `precompile` and its record `helper_signatures`: the second process that compiles the
  helpers while the first compiles the loop, on a cold start.

Why together: each is about how the loop gets compiled and cached, none about what it does; the
README's "The first run and Numba's cache" describes them.
"""
