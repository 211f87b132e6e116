"""Dropping cached machine code that was compiled from other sources than the ones loaded now.

Why: Numba keys a cached function on its own file's timestamp only. The run loop's code also
holds what it inlines or freezes from other modules: the group helpers (emulator.semantics,
IR-inlined or linked), the opcode numbers and layouts (emulator.opcodes, .constants, .decode,
themselves derived from d1isa's ISA table), emulator.simd's vector code, the passes of
emulator.jit.pipeline. After a change to any of those, the cached loop would still load and
run the old code. So `check` hashes the source of every module the loop's module imports,
transitively (within emulator and d1isa, top-level imports only: what the compiled code can
see), and when that digest differs from the one stored beside the loop's cache, flushes the
cache of every jitted function in those modules. The set of modules is found, not listed, so a
new helper module is covered as soon as the loop imports it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

_PACKAGES = ("emulator", "d1isa")
STAMP = "kernel.isa-fingerprint"

# Top-level (unindented) import statements: `from X import a, b` (maybe parenthesised over
# several lines) and `import X`.
_FROM = re.compile(r"^from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_IMPORT = re.compile(r"^import[ \t]+([\w., \t]+)$", re.M)


def _ours(name: str) -> bool:
    return name.split(".")[0] in _PACKAGES


def _imports(source: str) -> list[str]:
    """Modules of ours that `source` imports at top level (a name imported from a package
    counts as the submodule when there is one, else as the package)."""
    found = []
    for module, names in _FROM.findall(source):
        if not _ours(module):
            continue
        attrs = False
        for part in names.strip("()").split(","):
            name = part.split("#")[0].split(" as ")[0].strip()
            if not name:
                continue
            if f"{module}.{name}" in sys.modules:
                found.append(f"{module}.{name}")
            else:
                attrs = True
        if attrs:
            found.append(module)
    for line in _IMPORT.findall(source):
        found += [m.split(" as ")[0].strip() for m in line.split(",")
                  if _ours(m.split(" as ")[0].strip())]
    return found


def modules(root: str) -> list[str]:
    """`root` and every module of ours it imports at top level, transitively, sorted."""
    seen: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if path is None:
            continue
        source = Path(path).read_text()
        seen[name] = source
        todo += _imports(source)
    return sorted(seen)


def digest(names: list[str]) -> str:
    """SHA-256 over the module names and the bytes of their source files."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        try:
            h.update(Path(sys.modules[name].__file__).read_bytes())
        except (OSError, KeyError, TypeError):
            h.update(b"?")
    return h.hexdigest()


def _dispatchers(names: list[str]) -> list[Any]:
    """Every jitted function with a disk cache in these modules (once each)."""
    found: dict[int, Any] = {}
    for name in names:
        for obj in list(vars(sys.modules[name]).values()):
            cache = getattr(obj, "_cache", None)
            if cache is not None and hasattr(cache, "flush"):
                found[id(obj)] = obj
    return list(found.values())


def check(run_loop: Any) -> bool:
    """Flush the caches of run_loop's module and of everything it imports if the stored digest
    is not the digest of the sources loaded now; returns whether it flushed. A no-op without the
    JIT or a disk cache. Never raises on file errors: a failure only costs a compile."""
    path = getattr(getattr(run_loop, "_cache", None), "cache_path", None)
    if not path:
        return False
    names = modules(run_loop.__module__)
    current = digest(names)
    stamp = os.path.join(path, STAMP)
    try:
        with open(stamp) as f:
            if f.read().strip() == current:
                return False
    except OSError:
        pass
    for disp in _dispatchers(names):
        try:
            disp._cache.flush()
        except OSError:
            pass
    try:
        os.makedirs(path, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(current + "\n")
    except OSError:
        pass
    return True
