"""Make the crafted hostile objects kept in this directory (the regression files of
tests/test_hostile.py).

Each case starts from a small valid object (programs/asm/vadd.d1s, unless it names another
program, assembled for a 2x2 mesh), rewrites its META or MACH JSON, and repacks it with
`d1isa.objfile.pack_sections`, which recomputes the CRC: the damage is in what the object
says, not in its container. Every one of them must be refused with exit status 2 and a
message that names the file.

    python tests/hostile/make_cases.py          # rewrite the .d1o files next to this script

`build_case(name)` gives one case's bytes (the tests check that each committed file is still
what the generator makes of it, and that the generator's cases are refused too).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from d1isa.objfile import ENTRY, HEADER, pack_sections  # noqa: E402

BASE_SOURCE = "programs/asm/vadd.d1s"
GIB = 1 << 30


def split_sections(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The (tag, payload) sections of a well-formed object, in file order."""
    _magic, _version, nsect, _total, _crc, _ = HEADER.unpack_from(raw, 0)
    out = []
    for i in range(nsect):
        tag, _, off, length = ENTRY.unpack_from(raw, HEADER.size + i * ENTRY.size)
        out.append((tag, raw[off:off + length]))
    return out


def rewrite(raw: bytes, mach: Callable[[dict], Any] | None = None,
            meta: Callable[[dict], Any] | None = None) -> bytes:
    """`raw` with its MACH and META JSON passed through `mach` / `meta` (each edits the dict
    in place, or returns a replacement), repacked with a fresh CRC."""
    out = []
    for tag, payload in split_sections(raw):
        fn = {b"MACH": mach, b"META": meta}.get(tag)
        if fn is not None:
            doc = json.loads(payload)
            new = fn(doc)
            doc = doc if new is None else new
            payload = json.dumps(doc, separators=(",", ":")).encode()
        out.append((tag, payload))
    return pack_sections(out)


def base_object(mesh: str = "2x2", source: str = BASE_SOURCE, **sets: Any) -> bytes:
    """An assembly program (vadd.d1s unless told) assembled for a small mesh, with parameter
    overrides, as object bytes."""
    from d1isa.asm import assemble
    from d1isa.machine import load_machine

    text = (ROOT / source).read_text()
    return assemble(text, source, load_machine(mesh=mesh, overrides=sets)).to_bytes()


def tensor(meta: dict, name: str) -> dict:
    return next(t for t in meta["tensors"] if t["name"] == name)


def rename(old: str, new: str) -> Callable[[dict], None]:
    """Rename tensor `old` to `new` (its role unchanged)."""
    def edit(meta: dict) -> None:
        tensor(meta, old)["name"] = new
    return edit


def huge_stride0(meta: dict) -> None:
    """Output c as f32[2^31] held by one piece whose only stride is 0: 8 GiB on the host,
    four bytes of SRAM."""
    c = tensor(meta, "c")
    n = 1 << 31
    c["shape"] = [n]
    c["pieces"] = [[0, 512, [0], [n], [0]]]


def set_meta(key: str, value: Any) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        meta["meta"][key] = value
    return edit


def set_top(key: str, value: Any) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        meta[key] = value
    return edit


def set_tensor(name: str, key: str, value: Any) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        tensor(meta, name)[key] = value
    return edit


def named_value(pieces: list) -> Callable[[dict], None]:
    """A debugger record (d1isa.debuginfo) describing one value 'v' f32[4] with `pieces`, on a
    program of no compiler steps."""
    def edit(meta: dict) -> None:
        meta["meta"]["values"] = {
            "steps": 0, "step_pcs": [], "node_steps": [-1] * 4,
            "named": [{"name": "v", "kind": "value", "dtype": "f32", "shape": [4], "line": 1,
                       "col": 1, "aliases": [], "note": "",
                       "stores": [{"from": -1, "until": 0, "pieces": pieces}]}]}
    return edit


def set_machine(**values: Any) -> Callable[[dict], None]:
    def edit(mach: dict) -> None:
        mach.update(values)
    return edit


# name -> (what it is, base object's keyword arguments, MACH edit, META edit, what the error
# message must contain besides the file name). Every case is refused by every command, except
# those of LOADS, which are refused only where they would run.
CASES: dict[str, tuple[str, dict, Callable | None, Callable | None, str]] = {
    "huge_output_stride0.d1o": (
        "output f32[2147483648] with one stride-0 piece, on the 2x2 machine",
        {}, None, huge_stride0, "more than the machine's"),
    "huge_output_stride0_big_sram.d1o": (
        "output f32[2147483648] with one stride-0 piece, on a 4x4 machine with 1 GiB of SRAM "
        "per node (16 GiB in all, so the tensor fits the machine's SRAM)",
        {"mesh": "4x4", "sram_bytes": GIB}, None, huge_stride0, "stride"),
    "name_dotdot.d1o": ("output named ../../x", {}, None, rename("c", "../../x"),
                        "not an identifier"),
    "name_absolute.d1o": ("output named /abs/path", {}, None, rename("c", "/abs/path"),
                          "not an identifier"),
    "name_slash.d1o": ("input named a/b", {}, None, rename("a", "a/b"), "not an identifier"),
    "name_nul.d1o": ("output named c<NUL>x", {}, None, rename("c", "c\x00x"),
                     "not a short printable name"),
    "name_300_chars.d1o": ("output named with 300 characters", {}, None,
                           rename("c", "c" * 300), "not a short printable name"),
    "name_internal_nul.d1o": ("internal tensor named with a NUL", {}, None,
                              lambda m: tensor(m, "c").update(name="in\x00ternal",
                                                              role="internal"),
                              "not a short printable name"),
    "meta_outputs_int.d1o": ("META outputs: 7", {}, None, set_meta("outputs", 7),
                             "'outputs' must be a list"),
    "meta_inputs_string.d1o": ("META inputs: \"a\"", {}, None, set_meta("inputs", "a"),
                               "'inputs' must be a list"),
    "meta_outputs_path.d1o": ("META outputs: [\"../x\"]", {}, None,
                              set_meta("outputs", ["../x"]), "'outputs' must be a list"),
    "meta_outputs_unknown.d1o": ("META outputs names a tensor the object lacks", {}, None,
                                 set_meta("outputs", ["zz"]), "not a tensor of the object"),
    "meta_scalar_outputs_dict.d1o": ("META scalar_outputs: {}", {}, None,
                                     set_meta("scalar_outputs", {}), "'scalar_outputs' must"),
    "meta_scalar_output_of_256.d1o": (
        "META scalar_outputs names an output of 256 elements (found by tests/"
        "test_fuzz_objects.py: `d1 run` reshaped it to a scalar and failed)", {}, None,
        lambda m: m["meta"].update(outputs=["c"], scalar_outputs=["c"]), "not one"),
    "meta_regions_numbers.d1o": ("META regions: [1, 2]", {}, None,
                                 set_meta("regions", [1, 2]), "'regions' must"),
    "meta_sram_peak_string.d1o": ("META sram_peak_bytes: \"lots\"", {}, None,
                                  set_meta("sram_peak_bytes", "lots"), "'sram_peak_bytes'"),
    "meta_producer_list.d1o": ("META producer: []", {}, None, set_meta("producer", []),
                               "'producer' must be text without control characters"),
    "meta_meta_list.d1o": ("META meta: []", {}, None, set_top("meta", []), "bad meta"),
    "meta_values_list.d1o": ("META values (the debugger's record): [7]", {}, None,
                             set_meta("values", [7]), "'values' must be a table"),
    "meta_values_piece_past_sram.d1o": (
        "a named value of the debugger's record whose piece runs past the end of SRAM", {},
        None, named_value([[0, 1310720 - 8, [0], [4], [4]]]), "past the end of SRAM"),
    "meta_values_string_shape.d1o": (
        "a named value of the debugger's record with a piece shape \"4\"", {},
        None, named_value([[0, 0, [0], "4", [4]]]), "piece shape must be a list"),
    "meta_tensors_dict.d1o": ("META tensors: {}", {}, None, set_top("tensors", {"a": 1}),
                              "tensor record"),
    "meta_blocks_string.d1o": ("META blocks: \"9\"", {}, None, set_top("blocks", "9"),
                               "block list"),
    "meta_files_int.d1o": ("META files: 3", {}, None, set_top("files", 3), "file list"),
    "meta_symbols_numbers.d1o": ("META symbols: [[1, 2, 3, 4]]", {}, None,
                                 set_top("symbols", [[1, 2, 3, 4]]), "symbol record"),
    "tensor_shape_string.d1o": ("tensor shape \"64\"", {}, None,
                                set_tensor("c", "shape", "64"), "shape"),
    "tensor_shape_float.d1o": ("tensor shape [4.0, 64]", {}, None,
                               set_tensor("c", "shape", [4.0, 64]), "shape"),
    "tensor_shape_negative.d1o": ("tensor shape [-4, -64]", {}, None,
                                  set_tensor("c", "shape", [-4, -64]), "bad shape"),
    "tensor_rank_99.d1o": ("tensor of rank 99", {}, None,
                           set_tensor("c", "shape", [1] * 99), "shape"),
    "tensor_dtype_f64.d1o": ("tensor dtype f64", {}, None, set_tensor("c", "dtype", "f64"),
                             "unknown dtype"),
    "tensor_negative_stride.d1o": (
        "piece with a negative stride", {}, None,
        set_tensor("c", "pieces", [[0, 512, [0, 0], [1, 64], [256, -4]]]), "strides"),
    "tensor_piece_past_sram.d1o": (
        "piece that runs past the end of SRAM", {}, None,
        set_tensor("c", "pieces", [[0, 1310720 - 64, [0, 0], [4, 64], [4096, 4]]]),
        "past the end of SRAM"),
    "machine_huge_mesh.d1o": ("embedded machine with a 1000000 x 1000000 mesh", {},
                              set_machine(cols=1_000_000, rows=1_000_000), None, "mesh"),
    "machine_negative_sram.d1o": ("embedded machine with sram_bytes -1", {},
                                  set_machine(sram_bytes=-1), None, "sram_bytes"),
    "machine_clock_huge.d1o": ("embedded machine with clock_hz 1e308", {},
                               set_machine(clock_hz=1e308), None, "clock_hz"),
    "machine_clock_inf.d1o": ("embedded machine with clock_hz Infinity", {},
                              set_machine(clock_hz=float("inf")), None, "clock_hz"),
    "machine_cols_nan.d1o": ("embedded machine with cols NaN", {},
                             set_machine(cols=float("nan")), None, "cols"),
    "machine_string_regs.d1o": ("embedded machine with scalar_regs \"32\"", {},
                                set_machine(scalar_regs="32"), None, "scalar_regs"),
    "machine_huge_fifos.d1o": (
        "a valid 16x16 machine whose FIFOs would take 16 TiB of host memory (it loads, and "
        "disassembles; it cannot run)",
        {"mesh": "16x16", "fifo_depth": 1024, "max_message_bytes": 1 << 24, "sram_bytes": GIB},
        None, None, "host memory"),
    "machine_small_messages.d1o": (
        "row_broadcast.d1s with max_message_bytes 16: FIFO slots too small for its vsend "
        "messages (found by tests/test_fuzz_objects.py: the emulator wrote past its FIFO "
        "buffer and corrupted the heap)",
        {"source": "programs/asm/row_broadcast.d1s"}, set_machine(max_message_bytes=16), None,
        "max_message_bytes must be at least 64"),
    "machine_unknown_key.d1o": ("embedded machine with an unknown parameter", {},
                                set_machine(warp_drive=1), None, "unknown machine parameter"),
    "machine_not_table.d1o": ("embedded machine that is a list", {}, lambda m: [1, 2], None,
                              "not a table"),
}


LOADS = {"machine_huge_fifos.d1o"}


def build_case(name: str) -> bytes:
    """The bytes of one crafted case."""
    _what, base, mach, meta, _expect = CASES[name]
    base = dict(base)
    return rewrite(base_object(**base), mach, meta)


def main(out: Path = HERE) -> None:
    for name in CASES:
        (out / name).write_bytes(build_case(name))
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
