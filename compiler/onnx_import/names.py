"""ONNX names -> DSL names.

An ONNX value may be called anything (`input.1`, `/encoder/layer.0/Add_output_0`, `123`); a
DSL name matches `[A-Za-z_][A-Za-z0-9_]*`, may not be a keyword, a dtype or a builtin, and
becomes a file name (`OUT_DIR/NAME.npy`) and an object tensor name (at most 128 characters).
So a name is sanitised: every character that is not valid becomes `_`, a leading digit gets
a `t_` prefix, a reserved word or a name already taken gets a `_N` suffix, and a very long
name is cut. Names that are valid already keep their spelling: they are reserved first, so
`a.b` (-> `a_b`) never takes the spelling of a real `a_b`; it becomes `a_b_1`.
"""

from __future__ import annotations

import re

from compiler.check import RESERVED

# The builtins the language issue adds (docs/DSL.md lists what this build has): reserved here
# too, so an imported program keeps its names when the language grows.
FUTURE_BUILTINS = frozenset({
    "where", "pow", "erf", "gelu", "min", "argmax", "layernorm", "reshape", "concat",
    "conv2d", "maxpool2d", "avgpool2d",
})
# Object tensor names are at most 128 characters; room is kept for a `_N` suffix.
MAX_CHARS = 100
_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_]")


def is_reserved(name: str) -> bool:
    return name in RESERVED or name in FUTURE_BUILTINS


def sanitise(name: str) -> str:
    """The spelling rule alone: invalid characters -> `_`, a leading digit -> `t_` prefix."""
    out = _INVALID_CHAR.sub("_", name) or "t_"
    if out[0].isdigit():
        out = "t_" + out
    return out[:MAX_CHARS]


class Names:
    """The DSL name of every ONNX name, unique and not reserved, plus fresh temporaries."""

    def __init__(self, onnx_names: list[str]) -> None:
        self.dsl: dict[str, str] = {}
        self.taken: set[str] = set()
        for n in onnx_names:                      # valid names keep their spelling
            if n not in self.dsl and _VALID.match(n) and len(n) <= MAX_CHARS \
                    and not is_reserved(n):
                self.dsl[n] = n
                self.taken.add(n)
        for n in onnx_names:
            if n not in self.dsl:
                self.dsl[n] = self.fresh(sanitise(n))

    def fresh(self, base: str) -> str:
        """A new unused name: `base` if free, else `base_1`, `base_2`, ..."""
        base = sanitise(base)
        name, i = base, 0
        while name in self.taken or is_reserved(name):
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def __getitem__(self, onnx_name: str) -> str:
        return self.dsl[onnx_name]

    def renamed(self) -> dict[str, str]:
        """The names whose DSL spelling differs from the ONNX one."""
        return {k: v for k, v in self.dsl.items() if k != v}
