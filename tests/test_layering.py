"""The architecture's rules, checked by reading every module's source.

- `d1isa` imports neither `compiler` nor `emulator`; `compiler` and `emulator` never import each
  other (the CLI, `d1`, sits on top of all three). Every import statement counts, including
  those inside functions.
- No module outside `d1isa/` spells a list of opcode mnemonics or the string "NESW": facts about
  instructions come from the ISA table (d1isa.isa), directions from d1isa.machine.DIRECTIONS.
  What is not a hand-written list of facts: naming opcodes one by one (`A, B = OP["a"],
  OP["b"]`, or chosen by a condition), a semantics table from mnemonics to functions or to
  other instructions (the reference interpreter, Spike-style), and the lists in ALLOWED, each
  a choice of its module rather than a fact about the instructions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from d1isa import isa

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("d1isa", "compiler", "emulator", "d1", "benchmarks")
FORBIDDEN = {"d1isa": {"compiler", "emulator", "d1"}, "compiler": {"emulator", "d1"},
             "emulator": {"compiler", "d1"}}
MNEMONICS = frozenset(isa.BY_MNEMONIC)
# (module, name bound to the list): why it is not an ISA fact.
ALLOWED = {
    ("emulator/decode.py", "INNER_OPS"): "which instructions the run loop's inner loop executes "
                                         "itself, in dispatch order: a speed choice of the "
                                         "emulator",
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], node.lineno))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downward(package):
    bad = []
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for top, line in _imported_packages(tree):
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not bad, "\n".join(bad)


def _opcode_item(node: ast.AST) -> bool:
    """A mnemonic string, or OP["mnemonic"] / isa.OP["mnemonic"]."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in MNEMONICS
    return (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str) and node.slice.value in MNEMONICS)


def _constant_data(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, bool)) and not isinstance(node.value, str)
    if isinstance(node, ast.Tuple):
        return all(_constant_data(e) for e in node.elts)
    return False


def _hand_written_lists(tree: ast.AST, module: str = "") -> list[int]:
    """Lines of displays that list opcodes: a tuple, list or set whose items are all opcode
    items (two or more), or a dict from opcodes to constant data (sizes, flags)."""
    skip = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and (module, target.id) in ALLOWED:
            skip.add(id(value))
        if isinstance(target, ast.Tuple):
            choices = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
            skip.update(id(v) for v in choices
                        if isinstance(v, ast.Tuple) and len(v.elts) == len(target.elts))
    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            # Two plain strings may be words that happen to be mnemonics ("send", "recv" as
            # node states); two OP[...] look-ups, or three mnemonic strings, are a list.
            strings = all(isinstance(e, ast.Constant) for e in node.elts)
            listed = (len(node.elts) >= (3 if strings else 2)
                      and all(_opcode_item(e) for e in node.elts))
        elif isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
            listed = (len(keys) >= 2 and all(_opcode_item(k) for k in keys)
                      and all(_constant_data(v) for v in node.values))
        else:
            continue
        if listed:
            lines.append(node.lineno)
    return lines


def _spells_nesw(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value == "NESW":
            lines.append(node.lineno)
        elif isinstance(node, (ast.Tuple, ast.List)) and [
                e.value for e in node.elts if isinstance(e, ast.Constant)] == ["N", "E", "S", "W"]:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("package", [p for p in PACKAGES if p != "d1isa"])
def test_no_hand_written_opcode_lists_or_directions_outside_d1isa(package):
    bad = []
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT)
        bad += [f"{rel}:{n}: a list of opcode mnemonics"
                for n in _hand_written_lists(tree, str(rel))]
        bad += [f'{rel}:{n}: spells the directions ("NESW")' for n in _spells_nesw(tree)]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_look_for():
    tree = ast.parse('X = (OP["send"], OP["vsend"])\nY = {"st8": 1, "st16": 2}\n'
                     'A, B = OP["add"], OP["sub"]\nD = "NESW"\nE = ("N", "E", "S", "W")\n'
                     'import compiler.ir\nfrom emulator import kernel\n'
                     'F = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b}\n'
                     'G = {"send": 1, "recv": 2, "idle": 3}\n'
                     'h, k = ("ld32", "st32") if f else ("ld16", "st16")\n'
                     'INNER_OPS = ("add", "sub", "and")\n'
                     'if s in ("send", "recv"): pass\nZ = ["ld8", "st8", "add"]\n')
    assert _hand_written_lists(tree) == [1, 2, 11, 13]
    assert _hand_written_lists(tree, "emulator/decode.py") == [1, 2, 13]
    assert _spells_nesw(tree) == [4, 5]
    assert [p for p, _ in _imported_packages(tree)] == ["compiler", "emulator"]
