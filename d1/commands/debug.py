"""`d1 debug`: the interactive (or --batch) debugger prompt on top of `emulator.debugger`.

This module only parses command lines and prints what `Debugger` returns. Every command runs
inside a guard: a bad command or argument prints one `error:` line, an unexpected exception one
`internal error:` line, Ctrl-C one `interrupted` line, and the prompt carries on.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from d1.options import (
    emulated_machine,
    input_options,
    machine_options,
    params_option,
    parse_shapes,
    shape_option,
)
from d1isa import units
from d1isa.errors import D1Error
from d1isa.machine import DIRECTIONS

PROMPT = "(d1) "


class CommandError(D1Error):
    """A malformed command line."""


@dataclass
class Command:
    name: str
    aliases: tuple[str, ...]
    usage: str
    summary: str
    detail: str
    handler: Callable[[Session, list[str]], bool | None]
    group: str
    words: tuple[str, ...] = ()     # what its arguments can be, for completion (WORD_KINDS)


_COMMANDS: list[Command] = []


def command(name: str, aliases: tuple[str, ...], usage: str, summary: str, group: str,
            detail: str = "", words: tuple[str, ...] = ()) -> Callable:
    def wrap(fn: Callable[[Session, list[str]], bool | None]) -> Callable:
        _COMMANDS.append(Command(name, aliases, usage, summary, detail, fn, group, words))
        return fn
    return wrap


GROUPS = ("Execution", "Reverse execution", "Focus and state", "Breakpoints and watchpoints",
          "Session")


class Session:
    """One debugger session: a `Debugger`, the command table and an output function."""

    def __init__(self, dbg: Any, out: Callable[[str], None] = click.echo) -> None:
        self.dbg = dbg
        self.out = out
        self.table: dict[str, Command] = {}
        for c in _COMMANDS:
            self.table[c.name] = c
            for a in c.aliases:
                self.table[a] = c

    # ---- running lines --------------------------------------------------------------------------

    def execute(self, line: str) -> bool:
        """Run one command line; False when the session should end. Never raises."""
        text = line.strip()
        if not text or text.startswith("#"):
            return True
        try:
            words = text.split()
            cmd = self.lookup(words[0])
            return cmd.handler(self, words[1:]) is not False
        except D1Error as e:
            self.out(f"error: {_one_line(str(e))}")
        except KeyboardInterrupt:
            self.out("interrupted")
        except Exception as e:  # a bug in d1: report it in one line and keep the session
            if os.environ.get("D1_DEBUG"):
                import traceback
                traceback.print_exc()
            self.out(f"internal error: {type(e).__name__}: {_one_line(str(e))}")
        return True

    def lookup(self, word: str) -> Command:
        """A command by name, alias, or unique prefix of a name (as gdb allows)."""
        w = word.lower()
        cmd = self.table.get(w)
        if cmd is not None:
            return cmd
        found = sorted({c.name for c in _COMMANDS if c.name.startswith(w)})
        if len(found) == 1:
            return self.table[found[0]]
        if found:
            raise CommandError(f"ambiguous command {word!r}: {', '.join(found)}")
        raise CommandError(f"unknown command {word!r}; type 'help' for the list")

    def complete(self, line: str) -> tuple[str, list[str]]:
        """Tab completion of the word before the cursor, in any position of the line: (the
        text to replace, the words it may become). The first word is a command; later words
        are what that command takes there (Command.words): locations, node coordinates after
        `node`, registers and labels in an expression, tensor names, formats after `as`,
        topics, breakpoint numbers, and the words of `watch`."""
        words = line.split()
        partial = "" if not words or line[-1:].isspace() else words.pop()
        if not words:
            return partial, _starting(partial, [c.name for c in _COMMANDS])
        try:
            cmd = self.lookup(words[0])
        except CommandError:
            return partial, []
        low = [w.lower() for w in words[1:]]
        if low and low[-1] == "node":
            kinds: tuple[str, ...] = ("xy",)
        elif low and low[-1] == "as" and "as" in cmd.words:
            kinds = ("format",)
        elif "if" in low and "if" in cmd.words:
            kinds = ("expr",)
        elif cmd.name == "watch":
            kinds = _watch_words(low)
        else:
            kinds = cmd.words
        tail = re.search(r"[A-Za-z_.$][\w.$]*$", partial) if "expr" in kinds else None
        found: set[str] = set()
        if tail is not None or ("expr" in kinds and partial == ""):
            stem = tail.group() if tail is not None else ""
            found.update(_starting(stem, WORD_KINDS["expr"](self)))
            if stem != partial:           # inside an expression: only its names fit
                return stem, sorted(found, key=_natural)
        for kind in kinds:
            if kind != "expr":
                found.update(_starting(partial, WORD_KINDS[kind](self)))
        return partial, sorted(found, key=_natural)

    def show_stop(self, stop: Any) -> None:
        self.out(stop.describe())
        if stop.reason in ("deadlock", "stuck"):
            self.out(self.dbg.mesh().render())

    # ---- argument helpers -----------------------------------------------------------------------

    @staticmethod
    def take_node(args: list[str]) -> tuple[list[str], str | None]:
        """Split off a trailing `node X,Y` / `node ID` / `all`."""
        for i, a in enumerate(args):
            if a.lower() == "node":
                rest = args[i + 1:]
                if not rest:
                    raise CommandError("'node' needs X,Y or a node id")
                spec = rest[0]
                used = 1
                if spec.endswith(",") and len(rest) > 1:
                    spec += rest[1]
                    used = 2
                return args[:i] + rest[used:], spec
            if a.lower() == "all":
                return args[:i] + args[i + 1:], "all"
        return args, None

    @staticmethod
    def count(args: list[str], default: int = 1, what: str = "a count") -> int:
        if not args:
            return default
        if len(args) > 1:
            raise CommandError(f"unexpected {' '.join(args[1:])!r}")
        try:
            return int(args[0], 0)
        except ValueError:
            raise CommandError(f"expected {what}, got {args[0]!r}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" not in text else text.splitlines()[0]


# ---- completion ---------------------------------------------------------------------------------

def _starting(prefix: str, words: Any) -> list[str]:
    return [w for w in words if w.startswith(prefix)]


def _natural(word: str) -> list[Any]:
    """Sort key putting r2 before r10 and 2,0 before 10,0."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", word))]


def _expression_words(s: Session) -> list[str]:
    m = s.dbg.machine
    return ([f"r{i}" for i in range(m.scalar_regs)]
            + ["zero", "sp", "ra", "pc", "clock", "x", "y", "id", "T", "and", "or", "not"]
            + [f"mem{w}[" for w in (8, 16, 32, 64)]
            + [sym.name for sym in s.dbg.obj.symbols])


def _location_words(s: Session) -> list[str]:
    obj = s.dbg.obj
    return ([sym.name for sym in obj.symbols if sym.kind == "code"]
            + [f"{Path(f).name}:" for f in obj.files])


def _node_words(s: Session) -> list[str]:
    return [f"{int(x)},{int(y)}" for x, y in s.dbg.machine.xy]


def _watch_words(args: list[str]) -> tuple[str, ...]:
    """What `watch` takes after `args`: mem ADDR [LEN], rN, or link X,Y DIR."""
    if not args:
        return ("watched",)
    if args[0] == "mem":
        return ("expr", "node")
    if args[0] == "link":
        return ("xy", "node") if len(args) == 1 else ("direction",)
    return ("node",)


# Kinds of word a command's arguments can be (Command.words), and the words of each.
WORD_KINDS: dict[str, Callable[[Session], list[str]]] = {
    "expr": _expression_words,
    "location": _location_words,
    "xy": _node_words,
    "tensor": lambda s: _value_names(s),
    "vreg": lambda s: [f"v{i}" for i in range(s.dbg.machine.vector_regs)],
    "acc": lambda s: [f"a{i}" for i in range(s.dbg.machine.accumulators)],
    "format": lambda s: ["f32", "bf16", "i32", "i64", "hex"],
    "topic": lambda s: ["breakpoints", "registers", "checkpoints", "position"],
    "point": lambda s: [str(b.number) for b in s.dbg.breakpoints()],
    "command": lambda s: [c.name for c in _COMMANDS],
    "direction": lambda s: list(DIRECTIONS),
    "watched": lambda s: ["mem", "link", "zero", "sp", "ra"]
    + [f"r{i}" for i in range(s.dbg.machine.scalar_regs)],
    # words that stand for themselves
    "node": lambda s: ["node"],
    "all": lambda s: ["all"],
    "if": lambda s: ["if"],
    "as": lambda s: ["as"],
}


# ---- execution ----------------------------------------------------------------------------------

def _step_args(s: Session, args: list[str], allow_all: bool = True) -> tuple[int, bool]:
    args, node = s.take_node(args)
    if node is not None and node != "all":
        s.dbg.set_focus(node)
    if node == "all" and not allow_all:
        raise CommandError("this command works on the focused node only")
    return s.count(args), node == "all"


@command("run", ("r",), "run", "Start from the beginning (T=0) and continue.", "Execution",
         "Restores the state right after loading (inputs in place), keeps every breakpoint, "
         "and runs every node until a breakpoint, watchpoint, trap, deadlock or the end.")
def _run(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("run takes no arguments")
    s.show_stop(s.dbg.run())


@command("continue", ("c", "cont"), "continue", "Run every node until something stops them.",
         "Execution",
         "Stops at a breakpoint or watchpoint, on the first trap, on a deadlock (showing the "
         "wait-for cycle and the mesh), or when every node has halted.")
def _continue(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("continue takes no arguments")
    s.show_stop(s.dbg.cont())


@command("step", ("s",), "step [N] [all]", "Run to the next source line (into calls).",
         "Execution",
         "Runs the focused node until it reaches another source line (the DSL line of a .d1k, "
         "the assembly line of a .d1s), N times. Other nodes run only while it waits for them. "
         "With 'all', every node steps to its own next line.",
         words=("all", "node"))
def _step(s: Session, args: list[str]) -> None:
    n, all_nodes = _step_args(s, args)
    s.show_stop(s.dbg.step(n, all_nodes=all_nodes))


@command("next", ("n",), "next [N] [all]", "Run to the next source line, over calls.",
         "Execution",
         "As step, but a call (jal with rd=ra) runs to its return first.",
         words=("all", "node"))
def _next(s: Session, args: list[str]) -> None:
    n, all_nodes = _step_args(s, args)
    s.show_stop(s.dbg.next(n, all_nodes=all_nodes))


@command("stepi", ("si",), "stepi [N] [all]", "Execute N instructions (default 1).",
         "Execution",
         "On the focused node, or N instructions on every node with 'all' (nodes that must "
         "wait stop early).",
         words=("all", "node"))
def _stepi(s: Session, args: list[str]) -> None:
    n, all_nodes = _step_args(s, args)
    s.show_stop(s.dbg.stepi(n, all_nodes=all_nodes))


@command("finish", ("fin",), "finish", "Run until the focused node returns from this call.",
         "Execution", "Stops after the matching `ret` (jalr r0, ra, 0), or when the node halts.")
def _finish(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("finish takes no arguments")
    s.show_stop(s.dbg.finish())


@command("until", ("u",), "until [LOC]", "Run to a location, or to a later line.",
         "Execution",
         "With LOC (as for break): continue until it is reached (a temporary breakpoint). "
         "Without: like next, but never stops at an earlier line, so it leaves a loop.",
         words=("location", "node"))
def _until(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    if not args:
        if node is not None:
            raise CommandError("until without a location works on the focused node")
        s.show_stop(s.dbg.until())
        return
    s.show_stop(s.dbg.until(" ".join(args), node=node))


# ---- reverse execution --------------------------------------------------------------------------

@command("reverse-step", ("rs",), "reverse-step [N]",
         "Back to the start of the previous source line.", "Reverse execution",
         "Restores a checkpoint and replays (the emulator is deterministic) to where the "
         "focused node began the source line it ran before this one.",
         words=("node",))
def _reverse_step(s: Session, args: list[str]) -> None:
    n, _ = _step_args(s, args, allow_all=False)
    s.show_stop(s.dbg.reverse_step(n))


@command("reverse-stepi", ("rsi",), "reverse-stepi [N] [all]",
         "Undo the last N instructions of the focused node (or of every node).",
         "Reverse execution",
         "Nodes that consumed what the undone instructions produced go back as far as needed.",
         words=("all", "node"))
def _reverse_stepi(s: Session, args: list[str]) -> None:
    n, all_nodes = _step_args(s, args)
    s.show_stop(s.dbg.reverse_stepi(n, all_nodes=all_nodes))


@command("reverse-continue", ("rc",), "reverse-continue",
         "Back to the previous breakpoint hit.", "Reverse execution",
         "Replays from checkpoints and stops at the latest earlier position where an enabled "
         "breakpoint (with its condition) hits; at T=0 if there is none.")
def _reverse_continue(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("reverse-continue takes no arguments")
    s.show_stop(s.dbg.reverse_continue())


# ---- focus and state ----------------------------------------------------------------------------

@command("node", ("focus",), "node X,Y | node ID", "Focus a node (steps and views use it).",
         "Focus and state",
         words=("xy",))
def _node(s: Session, args: list[str]) -> None:
    d = s.dbg
    if args:
        d.set_focus(" ".join(args))
    w = d.where()
    st = d.mesh().cell(w.x, w.y).state
    s.out(f"focus {w.xy} [id {w.node}], {_state_words(st)}: {w.describe()}")
    line = d.source_line(w)
    if line:
        s.out(line)


def _state_words(state: str) -> str:
    return {"send": "blocked on send", "recv": "blocked on receive",
            "idle": "no code"}.get(state, state)


@command("where", ("mesh", "w"), "where | mesh",
         "Draw the mesh with every node's state.", "Focus and state",
         "Running, blocked on send/receive (with the direction), halted, trapped; harvested "
         "nodes are X, the focused node is in brackets, nodes of a wait-for cycle carry *.")
def _where(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("where takes no arguments")
    s.out(s.dbg.mesh().render())
    w = s.dbg.where()
    s.out(f"focus: {w.describe()}")


@command("regs", ("registers",), "regs [node X,Y]", "Scalar registers, pc and clock.",
         "Focus and state",
         words=("node",))
def _regs(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    if args:
        raise CommandError(f"unexpected {' '.join(args)!r}")
    d = s.dbg
    nid = d.node(node)
    r = d.regs(nid)
    w = d.where(nid)
    s.out(f"node {w.xy} [id {nid}] pc {r['pc']} clock {r['clock']:,}")
    alias = {0: "zero", 30: "sp", 31: "ra"}
    names = [k for k in r if k.startswith("r")]
    half = (len(names) + 1) // 2
    for i in range(half):
        cols = []
        for j in (i, i + half):
            if j < len(names):
                v = r[names[j]]
                nm = f"{names[j]} {alias.get(j, '')}".strip()
                cols.append(f"{nm:<8}{v:>21}  0x{v & 0xFFFFFFFFFFFFFFFF:016x}")
        s.out("   ".join(cols))
    init = d.init_regs(nid)
    if init:
        s.out("set at start by the object: "
              + ", ".join(f"{k} = {v}" for k, v in init.items()))


@command("vregs", ("v",), "vregs [N] [node X,Y]",
         "Vector registers as f32 lanes and hex (all-zero ones omitted).", "Focus and state",
         words=("vreg", "node"))
def _vregs(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    d = s.dbg
    v = d.vregs(node)
    pick = _register_pick(args, v.shape[0], "v")
    shown = 0
    for i in pick:
        if len(pick) > 1 and not v[i].any():
            continue
        shown += 1
        f = v[i].view(np.float32)
        s.out(f"v{i:<3} f32 " + " ".join(f"{x:.6g}" for x in f))
        s.out("     hex " + " ".join(f"{int(x):08x}" for x in v[i]))
    if len(pick) > 1 and shown < len(pick):
        s.out(f"({len(pick) - shown} all-zero vector registers not shown)")


def _register_pick(args: list[str], n: int, prefix: str) -> list[int]:
    if not args:
        return list(range(n))
    if len(args) > 1:
        raise CommandError(f"unexpected {' '.join(args[1:])!r}")
    t = args[0].lower().removeprefix(prefix)
    # isascii: '²' is a digit to str.isdigit, not to int(); nor are 5,000 digits
    if not (t.isascii() and t.isdigit() and len(t) <= 4300) or not 0 <= int(t) < n:
        raise CommandError(f"no register {args[0]!r} (0..{n - 1})")
    return [int(t)]


@command("acc", (), "acc [N] [node X,Y]", "Matrix accumulators (8x8 f32; zero ones omitted).",
         "Focus and state",
         words=("acc", "node"))
def _acc(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    a = s.dbg.acc(node)
    pick = _register_pick(args, a.shape[0], "a")
    shown = 0
    for i in pick:
        if len(pick) > 1 and not a[i].any():
            continue
        shown += 1
        s.out(f"a{i}:")
        with np.printoptions(precision=5, suppress=True, linewidth=110):
            s.out(str(a[i]))
    if len(pick) > 1 and shown < len(pick):
        s.out(f"({len(pick) - shown} all-zero accumulators not shown)")


@command("mem", ("x",), "mem ADDR [N] [as f32|bf16|i32|i64|hex] [node X,Y]",
         "SRAM contents.", "Focus and state",
         "ADDR is a number, a data label or an expression (write it without spaces, or in "
         "parentheses: `mem buf+64`, `mem (r4 + 8)`). N counts bytes for hex (default 64) and "
         "elements otherwise (default 16).",
         words=("expr", "as", "node"))
def _mem(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    if node == "all":
        raise CommandError("mem shows one node")
    fmt = "hex"
    if "as" in [a.lower() for a in args]:
        i = [a.lower() for a in args].index("as")
        if i + 1 >= len(args):
            raise CommandError("'as' needs a format: f32, bf16, i32, i64 or hex")
        fmt = args[i + 1].lower()
        args = args[:i] + args[i + 2:]
    if not args:
        raise CommandError("usage: mem ADDR [N] [as FMT] [node X,Y]")
    addr, rest = _take_expr(args)
    count = s.count(rest, default=None) if rest else None
    view = s.dbg.mem(addr, count, fmt, node)
    s.out(f"node {s.dbg.where(view.node).xy} SRAM at 0x{view.addr:x} ({view.fmt}):")
    s.out(view.render())


def _take_expr(args: list[str]) -> tuple[str, list[str]]:
    """The first argument, or a parenthesised run of arguments, as one expression."""
    if args[0].startswith("("):
        depth = 0
        for i, a in enumerate(args):
            depth += a.count("(") - a.count(")")
            if depth <= 0:
                return " ".join(args[:i + 1]), args[i + 1:]
        raise CommandError("missing ')' in the address")
    return args[0], args[1:]


@command("tensor", ("t",), "tensor NAME", "Show a named value gathered from its pieces.",
         "Focus and state",
         "Any value a compiled program names (input, param, `NAME = EXPR`, a gradient by its "
         "name or as `grad(loss, w)`) while its bytes hold it; otherwise why not: \"not computed "
         "yet\", \"overwritten at T=... (cycle ...)\" or \"not stored\" (fused into a "
         "kernel, ...). For an assembly program, any tensor of the object as it is now. The "
         "print is truncated like numpy's.",
         words=("tensor",))
def _tensor(s: Session, args: list[str]) -> None:
    if not args:
        names = ", ".join(_value_names(s)) or "none"
        raise CommandError(f"usage: tensor NAME (values: {names})")
    v = s.dbg.value(" ".join(args))
    s.out(v.header())
    if v.array is None:
        s.out(v.detail)
        return
    with np.printoptions(threshold=200, edgeitems=3, precision=5, suppress=True, linewidth=100):
        s.out(str(v.array))


def _value_names(s: Session) -> list[str]:
    from emulator.debugger.values import names
    return names(s.dbg)


@command("links", (), "links [node X,Y]",
         "FIFO occupancy and traffic on the node's four links.", "Focus and state",
         words=("node",))
def _links(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    if args:
        raise CommandError(f"unexpected {' '.join(args)!r}")
    d = s.dbg
    nid = d.node(node)
    s.out(f"links of {d.where(nid).xy} (FIFO depth {d.machine.fifo_depth} messages):")
    s.out("dir  neighbour   out: waiting (bytes)   sent msgs (bytes)   "
          "in: waiting (bytes)   received msgs")
    for lv in d.links(nid):
        if lv.neighbour is None:
            s.out(f" {lv.direction}   (edge)")
            continue
        nb = f"({lv.neighbour[0]},{lv.neighbour[1]})"
        s.out(f" {lv.direction}   {nb:<10}  {lv.out_fill:>2}/{lv.depth} ({lv.out_bytes:>5} B)"
              f"       {lv.sent_messages:>6} ({lv.sent_bytes:>7} B)   "
              f"{lv.in_fill:>2}/{lv.depth} ({lv.in_bytes:>5} B)      {lv.received_messages:>6}")


@command("list", ("l",), "list [LINE]",
         "Source around the current line next to the node's instructions.", "Focus and state")
def _list(s: Session, args: list[str]) -> None:
    line = s.count(args, default=None) if args else None
    s.out(s.dbg.listing(line=line).render())


@command("disasm", ("disas",), "disasm [N]", "N instructions around the focused node's pc.",
         "Focus and state")
def _disasm(s: Session, args: list[str]) -> None:
    n = s.count(args, default=10)
    d = s.dbg
    rows = d.disasm(n)              # a bad count is an error before any output
    s.out(f"node {d.where().xy}:")
    for pc, text, loc, cur in rows:
        s.out(f"{'=>' if cur else '  '}{pc:>6}  {text:<34} {loc}".rstrip())


@command("stats", (), "stats", "Modelled time, FLOP/s, traffic and stalls so far.",
         "Focus and state")
def _stats(s: Session, args: list[str]) -> None:
    if args:
        raise CommandError("stats takes no arguments")
    st = s.dbg.stats()
    md = st["modelled"]
    host = st["host"]
    dbg = st["debugger"]
    s.out(f"machine {st['machine']}: {units.number(st['live_nodes'])} live nodes at "
          f"{units.si(st['clock_hz'], 'Hz')}; position T={dbg['position']:,}")
    s.out(f"modelled: {md['kernel_cycles']:,} cycles = {units.seconds(md['kernel_seconds'])}; "
          f"{md['instructions']:,} instructions; {md['flops']:,} FLOP = "
          f"{units.si(md['flops_per_second'], 'FLOP/s')} "
          f"({md['percent_of_peak']:.3g}% of the {md['peak_dtype']} peak)")
    s.out(f"          busy {md['busy_cycles']:,} node-cycles, stalled {md['stall_cycles']:,} "
          f"(receive {md['stall_recv_cycles']:,}, send {md['stall_send_cycles']:,}); links "
          f"{units.nbytes(md['link_bytes'])} in {md['link_messages']:,} messages; "
          f"SRAM high water {units.nbytes(md['sram_high_water_bytes'])}")
    s.out(f"host: {host['node_instructions']:,} node-instructions emulated in "
          f"{units.seconds(host['wall_seconds'])} (measured on the host, replays included)")
    s.out(f"checkpoints: {dbg['checkpoints']} using {units.nbytes(dbg['bytes'])}, every "
          f"{dbg['interval_instructions']:,} instructions")


# ---- breakpoints and watchpoints ----------------------------------------------------------------

def _split_if(args: list[str]) -> tuple[list[str], str | None]:
    low = [a.lower() for a in args]
    if "if" in low:
        i = low.index("if")
        cond = " ".join(args[i + 1:])
        if not cond:
            raise CommandError("'if' needs a condition, e.g. if r5 == 3")
        return args[:i], cond
    return args, None


def _break(s: Session, args: list[str], temporary: bool) -> None:
    args, cond = _split_if(args)
    args, node = s.take_node(args)
    if not args:
        raise CommandError("usage: break LOC [node X,Y|all] [if COND]; LOC is *PC, pc PC, "
                           "LABEL, LINE[:COL] or FILE:LINE")
    bp = s.dbg.break_at(" ".join(args), node=node, condition=cond, temporary=temporary)
    kind = "Temporary breakpoint" if temporary else "Breakpoint"
    s.out(f"{kind} {bp.number} at {bp.describe()} ({len(bp.slots)} instruction"
          f"{'s' if len(bp.slots) != 1 else ''})")


@command("break", ("b", "br"), "break LOC [node X,Y|all] [if COND]", "Set a breakpoint.",
         "Breakpoints and watchpoints",
         "LOC: *PC or 'pc PC' (an instruction index), a code label, LINE, LINE:COL or "
         "FILE:LINE[:COL]. Default nodes: the focused node for a pc or label, every node for a "
         "source line. COND uses registers rN, pc, clock, x, y, id, T, labels, mem32[ADDR] "
         "(also mem8/16/64), C operators and and/or/not, e.g. `if r5 == 3 && x > 0`.",
         words=("location", "node", "all", "if"))
def _break_cmd(s: Session, args: list[str]) -> None:
    _break(s, args, False)


@command("tbreak", ("tb",), "tbreak LOC [node X,Y|all] [if COND]",
         "A breakpoint deleted at its first hit.", "Breakpoints and watchpoints",
         words=("location", "node", "all", "if"))
def _tbreak(s: Session, args: list[str]) -> None:
    _break(s, args, True)


@command("watch", ("wa",), "watch mem ADDR [LEN] | watch rN | watch link X,Y DIR [> N]",
         "Stop when memory, a register or a link changes.", "Breakpoints and watchpoints",
         "watch mem ADDR [LEN] [node X,Y]: after a write that changes the LEN bytes (default "
         "4) at ADDR, showing old and new bytes. watch rN [node X,Y]: after rN changes. "
         "watch link X,Y DIR: when a message crosses the link leaving (X,Y) toward DIR; "
         "'> N': when that link's FIFO holds more than N messages.",
         words=("watched",))
def _watch(s: Session, args: list[str]) -> None:
    d = s.dbg
    if not args:
        raise CommandError("usage: watch mem ADDR [LEN] | watch rN | watch link X,Y DIR [> N]")
    kind = args[0].lower()
    if kind == "link":
        rest = args[1:]
        above = None
        if ">" in rest:
            i = rest.index(">")
            if i + 1 >= len(rest):
                raise CommandError("'>' needs a message count")
            above = s.count(rest[i + 1:])
            rest = rest[:i]
        if rest and rest[0].lower() == "node":
            rest = rest[1:]
        if len(rest) == 3 and rest[0].endswith(","):
            rest = [rest[0] + rest[1], rest[2]]
        if len(rest) != 2:
            raise CommandError("usage: watch link X,Y DIR [> N]")
        w = d.watch_link(rest[0], rest[1], above)
    else:
        args, node = s.take_node(args)
        if node == "all":
            raise CommandError("a watchpoint watches one node")
        if kind == "mem":
            if len(args) < 2:
                raise CommandError("usage: watch mem ADDR [LEN] [node X,Y]")
            addr, rest = _take_expr(args[1:])
            length = s.count(rest, default=4)
            w = d.watch_mem(addr, length, node)
        elif re.fullmatch(r"r\d+|zero|sp|ra", kind):
            if len(args) != 1:
                raise CommandError(f"unexpected {' '.join(args[1:])!r}")
            w = d.watch_reg(kind, node)
        else:
            raise CommandError(f"cannot watch {args[0]!r}: use mem, rN or link")
    s.out(f"Watchpoint {w.number}: {w.describe()} ({len(w.slots)} instruction"
          f"{'s' if len(w.slots) != 1 else ''} can change it)")


@command("delete", ("d",), "delete [N]", "Delete breakpoint/watchpoint N, or all of them.",
         "Breakpoints and watchpoints",
         words=("point",))
def _delete(s: Session, args: list[str]) -> None:
    n = s.count(args, default=None, what="a breakpoint number") if args else None
    k = s.dbg.delete(n)
    s.out(f"deleted {k} breakpoint{'s' if k != 1 else ''}/watchpoint{'s' if k != 1 else ''}"
          if n is None else f"deleted {n}")


def _enable(s: Session, args: list[str], on: bool) -> None:
    if not args:
        raise CommandError(f"usage: {'enable' if on else 'disable'} N")
    for a in args:
        try:
            n = int(a)
        except ValueError:
            raise CommandError(f"expected a breakpoint number, got {a!r}") from None
        s.dbg.enable(n, on)
    s.out(f"{'enabled' if on else 'disabled'} {' '.join(args)}")


@command("enable", ("en",), "enable N...", "Enable breakpoints/watchpoints.",
         "Breakpoints and watchpoints",
         words=("point",))
def _enable_cmd(s: Session, args: list[str]) -> None:
    _enable(s, args, True)


@command("disable", ("dis",), "disable N...", "Disable breakpoints/watchpoints.",
         "Breakpoints and watchpoints",
         words=("point",))
def _disable_cmd(s: Session, args: list[str]) -> None:
    _enable(s, args, False)


@command("info", ("i",), "info breakpoints|registers|checkpoints|position",
         "Breakpoints (i b), registers (i r), checkpoints, or the position.",
         "Breakpoints and watchpoints",
         words=("topic",))
def _info(s: Session, args: list[str]) -> None:
    if not args:
        raise CommandError("usage: info breakpoints|registers|checkpoints|position")
    what = args[0].lower()
    if len(args) > 1 and what not in ("r", "reg", "registers"):    # only registers take more
        raise CommandError(f"unexpected {' '.join(args[1:])!r}")
    if what in ("b", "br", "break", "breakpoints", "watch", "watchpoints"):
        items = s.dbg.breakpoints()
        if not items:
            s.out("no breakpoints or watchpoints")
            return
        s.out("Num  Type        Enb  Hits  What")
        for it in items:
            kind = "watchpoint" if it.kind == "watchpoint" else (
                "tbreakpoint" if getattr(it, "temporary", False) else "breakpoint")
            s.out(f"{it.number:<4} {kind:<11} {'y' if it.enabled else 'n':<4} {it.hits:<5} "
                  f"{it.describe()}")
    elif what in ("r", "reg", "registers"):
        _regs(s, args[1:])
    elif what in ("checkpoints", "ck"):
        ci = s.dbg.checkpoint_info()
        s.out(f"{ci['checkpoints']} checkpoints, {units.nbytes(ci['bytes'])} of "
              f"{units.nbytes(ci['budget_bytes'])}; one every {ci['interval_instructions']:,} "
              f"instructions; at T = {', '.join(f'{p:,}' for p in ci['positions'][:12])}"
              + (" ..." if len(ci["positions"]) > 12 else ""))
        s.out(f"time taking checkpoints {units.seconds(ci['seconds_taking'])}, replaying "
              f"{units.seconds(ci['seconds_replaying'])}")
    elif what in ("position", "pos", "timeline"):
        d = s.dbg
        c = d.counts()
        s.out(f"T={d.position:,} instructions executed; focused node "
              f"{d.where().xy} has executed {int(c[d.focus]):,}; per node min "
              f"{int(c.min()):,}, max {int(c.max()):,}")
    else:
        raise CommandError(f"unknown info topic {args[0]!r}: breakpoints, registers, "
                           "checkpoints, position")


# ---- session ------------------------------------------------------------------------------------

@command("print", ("p",), "print EXPR", "Evaluate an expression on the focused node.",
         "Session", "The language of breakpoint conditions: rN, pc, clock, x, y, id, T, labels, "
         "mem8/16/32/64[ADDR], C operators.",
         words=("expr", "node"))
def _print(s: Session, args: list[str]) -> None:
    args, node = s.take_node(args)
    if not args:
        raise CommandError("usage: print EXPR")
    from emulator.debugger.views import fmt_value
    s.out(fmt_value(s.dbg.evaluate(" ".join(args), node)))


@command("help", ("h", "?"), "help [COMMAND]", "List the commands, or explain one.", "Session",
         words=("command",))
def _help(s: Session, args: list[str]) -> None:
    if len(args) > 1:
        raise CommandError(f"unexpected {' '.join(args[1:])!r}")
    if args:
        c = s.lookup(args[0])
        names = ", ".join((c.name,) + c.aliases)
        s.out(f"{c.usage}    ({names})")
        s.out(f"  {c.summary}")
        if c.detail:
            import textwrap
            s.out(textwrap.fill(c.detail, 96, initial_indent="  ", subsequent_indent="  "))
        return
    for g in GROUPS:
        s.out(f"{g}:")
        for c in _COMMANDS:
            if c.group == g:
                al = f" ({', '.join(c.aliases)})" if c.aliases else ""
                if len(c.usage) > 50:
                    s.out(f"  {c.usage}")
                    s.out(f"  {'':<50} {c.summary}{al}")
                else:
                    s.out(f"  {c.usage:<50} {c.summary}{al}")
    s.out("Nodes: X,Y or a live-node id. 'help COMMAND' explains one command.")


@command("quit", ("q", "exit"), "quit", "End the session.", "Session")
def _quit(s: Session, args: list[str]) -> bool:
    if args:
        raise CommandError(f"unexpected {' '.join(args)!r}")
    return False


# ---- the click command --------------------------------------------------------------------------

def _banner(s: Session, path: Path) -> None:
    d = s.dbg
    m = d.machine
    obj = d.obj
    words = sum(len(b) for b in obj.blocks)
    s.out(f"d1 debug {path}: {words:,} instruction{'s' if words != 1 else ''} in "
          f"{len(obj.blocks):,} code block"
          f"{'s' if len(obj.blocks) != 1 else ''}; machine {m.name} ({m.width}x{m.height}, "
          f"{m.n_live:,} live nodes)")
    w = d.where()
    s.out(f"focus {w.describe()}; T=0. Type 'help' for commands.")


def prompt_completer(s: Session) -> Any:
    """A prompt_toolkit completer that asks Session.complete."""
    from prompt_toolkit.completion import Completer, Completion

    class SessionCompleter(Completer):
        def get_completions(self, document: Any, event: Any) -> Any:
            word, found = s.complete(document.text_before_cursor)
            for w in found:
                yield Completion(w, start_position=-len(word))

    return SessionCompleter()


def _interactive(s: Session) -> None:
    if sys.stdin.isatty() and sys.stdout.isatty():
        try:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory, InMemoryHistory
        except ImportError:
            pass
        else:
            try:
                history: Any = FileHistory(os.path.expanduser("~/.d1_debug_history"))
            except OSError:
                history = InMemoryHistory()
            ps: Any = PromptSession(history=history, completer=prompt_completer(s))
            while True:
                try:
                    line = ps.prompt(PROMPT)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if not s.execute(line):
                    break
            return
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            break
        except KeyboardInterrupt:
            s.out("interrupted")
            continue
        if not s.execute(line):
            break


@click.command("debug")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@input_options
@shape_option
@params_option
@click.option("--batch", is_flag=True,
              help="No prompt: run the -ex commands, then any commands on stdin, and exit.")
@click.option("-ex", "commands", multiple=True, metavar="CMD",
              help="Run this debugger command first (repeatable, in order).")
@machine_options
def debug(file: Path, inputs: tuple[str, ...], seed: int, shapes: tuple[str, ...],
          params_file: Path | None, batch: bool, commands: tuple[str, ...],
          machine_name: str | None, mesh: str | None, chips: str | None,
          sets: tuple[str, ...]) -> None:
    """Debug FILE (.d1k, .d1s, .d1o or an .onnx model) on the whole emulated mesh.

    Breakpoints on pcs, labels and source lines (conditional, per node or on all nodes),
    watchpoints on memory, registers and links, source-level stepping of one node or of every
    node, reverse stepping and reverse-continue (checkpoints plus deterministic replay), and a
    drawing of the mesh with every node's state and the wait-for cycle of a deadlock. Type
    `help` at the (d1) prompt; docs/DEBUGGER.md has the full reference.

    \b
    Examples:
      d1 debug programs/asm/token_ring.d1s --mesh 4x4
      d1 debug programs/asm/deadlock.d1s --mesh 4x4 --batch -ex run -ex where
      d1 debug programs/softmax.d1k --mesh 4x4 --batch -ex "break 14" -ex run -ex list
      d1 debug programs/train_digits.d1k --params out/params.npz -ex "break 13" -ex run
    """
    from d1.commands.run import one_process, params_for, parse_inputs, program_inputs
    from d1.program import load_program

    one_process("d1 debug", "stepping, breakpoints and reverse execution need the single "
                "serial order of one process")
    machine = emulated_machine(machine_name, mesh, sets, chips, file)
    given = parse_inputs(inputs)
    params = None
    if params_file is not None:
        from d1.params import load_params
        params = load_params(params_file)
    prog = load_program(file, machine, shapes=parse_shapes(shapes))
    for note in prog.notes:
        click.echo(f"note: {note}", err=True)
    prog.check_host_memory()
    if params is not None:
        params = params_for(prog, params, params_file)
    from emulator.debugger import Debugger
    arrays = program_inputs(prog, given, seed, params)
    dbg = Debugger(prog.obj, inputs=arrays, seed=seed)
    s = Session(dbg)
    _banner(s, file)
    for c in commands:
        if batch:
            s.out(PROMPT + c)
        if not s.execute(c):
            return
    if batch:
        if not sys.stdin.isatty():
            for line in sys.stdin:
                if line.strip():
                    s.out(PROMPT + line.rstrip("\n"))
                if not s.execute(line):
                    return
        return
    _interactive(s)
