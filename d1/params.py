"""Param values on the host: `.npz` files, the starting values of a run, and object data.

- `load_params` / `params_npz`: a `.npz` of float arrays, one per param name (what `--params`
  reads and what `d1 train` writes as params.npz). Read safely (d1isa.files caps, no pickles).
- `starting_params`: the values a program's params start from: the given ones, else the
  values the object embeds (`d1 compile --params`; `embedded_values` reads them back), else
  each declaration's INIT drawn by `compiler.reference.init_params(graph, seed)`, the
  documented numpy generator.
- `embed_params`: the values as the object's initial SRAM contents (`DataInit` records at the
  params' own pieces, so loading the object places them) and `meta["embedded_params"]`.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from d1isa.errors import D1Error, printable
from d1isa.files import read_bytes
from d1isa.objfile import DTYPE_BYTES, DataInit, ObjectFile, TensorLayout

if TYPE_CHECKING:
    from d1.program import Program

# A params file, and the arrays it holds once decompressed, are at most this large (every param
# must also fit the machine's SRAM).
MAX_PARAMS_BYTES = 4 << 30
EMBEDDED = "embedded_params"


def load_params(path: str | Path, what: str = "--params") -> dict[str, np.ndarray]:
    """The arrays of a `.npz` file by name (float or integer arrays; no pickled objects).

    Every member is a .npy array whose header is read, and checked against the member's
    size, before numpy allocates what it declares; the members hold at most
    MAX_PARAMS_BYTES in all. A header alone can claim gigabytes, and a compressed member
    can expand a thousandfold: neither may reach numpy's allocator unchecked."""
    raw = read_bytes(path, MAX_PARAMS_BYTES, ".npz file")
    out = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            members = z.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_PARAMS_BYTES:
                raise D1Error(f"{what}: {path} holds {total:,} bytes of arrays, more than "
                              f"the {MAX_PARAMS_BYTES:,}-byte limit for a .npz file")
            for m in members:
                # a name with an escape sequence would act on the terminal in a note; escaped,
                # it still names no param (params are identifiers)
                name = printable(m.filename.removesuffix(".npy"))
                if name in out:
                    # np.load keeps one of them, silently; which one is meant is unknowable
                    raise D1Error(f"{what}: {path} holds two arrays named '{name}'")
                with z.open(m) as f:
                    check_npy(f, m.file_size, f"{what}: {path}: '{name}'", "member",
                              "params are numbers")
                    f.seek(0)
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, SyntaxError, TypeError, OverflowError, EOFError, KeyError,
            NotImplementedError, RuntimeError, zipfile.BadZipFile, zlib.error) as e:
        raise D1Error(f"{what}: {path} is not a readable .npz file of arrays ({e})") from None
    return out


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a .npy stream's header declares, read without the data (ValueError
    if it has no such header)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
    return shape, dtype


def check_npy(f: BinaryIO, size: int, what: str, holder: str, advice: str) -> None:
    """A .npy stream of `size` bytes (a file, a .npz member: `holder`) must be an array of
    numbers whose header declares exactly the data that follows it, so that nothing is
    allocated for a header that claims more; read past the header. The errors start with
    `what` and end a wrong dtype with `advice`."""
    try:
        shape, dtype = _npy_header(f)
    except (ValueError, SyntaxError, TypeError, OverflowError, EOFError) as e:
        raise D1Error(f"{what} is not a .npy array{' file' if holder == 'file' else ''} "
                      f"({e})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise D1Error(f"{what} holds {dtype} values; {advice}")
    need = math.prod(shape) * dtype.itemsize
    if need != size - f.tell():
        raise D1Error(f"{what} is damaged: its header says shape {list(shape)} of {dtype} "
                      f"({need:,} B), the {holder} holds {size - f.tell():,} B of data")


def params_npz(values: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an uncompressed `.npz` holding `values` as float32 arrays."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in values.items()})
    return buf.getvalue()


def split_params(prog: Program, given: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], list[str]]:
    """(the arrays of `given` that name params of `prog`, the other names): a params file
    written for one program (a trained model with its optimizer state) may feed another that
    reads only some of them (the same model, forward only)."""
    names = set(prog.params)
    return ({k: v for k, v in given.items() if k in names},
            [k for k in given if k not in names])


def check_params(prog: Program, given: Mapping[str, Any], what: str = "--params"
                 ) -> dict[str, np.ndarray]:
    """`given` checked against the program's params: every name a param, every shape the
    param's; float64 arrays, by name."""
    shapes = {t.name: tuple(t.shape) for t in prog.obj.tensors if t.role == "param"}
    out = {}
    for name, value in given.items():
        if name not in shapes:
            known = ", ".join(shapes) or "none"
            raise D1Error(f"{what}: '{name}' is not a param of {prog.path} (its params: "
                          f"{known})")
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise D1Error(f"{what}: param '{name}' must be an array of real numbers") from None
        if a.shape != shapes[name]:
            raise D1Error(f"{what}: param '{name}' has shape {a.shape}, the program declares "
                          f"{shapes[name]}")
        out[name] = a
    return out


def embedded(obj: ObjectFile) -> list[str]:
    """The params whose starting values the object holds as initial SRAM data."""
    names = obj.meta.get(EMBEDDED, [])
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def starting_params(prog: Program, given: Mapping[str, Any] | None = None, seed: int = 0,
                    what: str = "--params") -> dict[str, np.ndarray]:
    """The value of every param of `prog` at the start of a run, by name.

    A param takes its value from `given`, else from the object if it embeds one, else from
    its declaration's INIT (`init_params(graph, seed)`); a program with no DSL source to take
    INITs from must be given, or embed, every param. `what` names `given` in errors."""
    values = check_params(prog, given or {}, what)
    inside = [n for n in embedded(prog.obj) if n not in values]
    values.update(embedded_values(prog.obj, inside))
    missing = [n for n in prog.params if n not in values]
    if missing:
        if prog.graph is None:
            raise D1Error(f"{prog.path} has no DSL source to take the INIT of param"
                          f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} from; "
                          "give them with --params")
        from compiler.reference import init_params
        drawn = init_params(prog.graph, seed)
        values.update({n: drawn[n] for n in missing})
    return {n: values[n] for n in prog.params}


def seeded_params(prog: Program, given: Mapping[str, Any] | None = None) -> list[str]:
    """The params whose start the seed of the INITs draws (`starting_params`): neither given
    nor embedded in the object, with a random INIT (glorot, normal). None of them means that a
    seed the user chose (`d1 train --init`) changes nothing, which is worth saying."""
    if prog.graph is None:
        return []
    inside = set(embedded(prog.obj))
    return [p.name for p in prog.graph.params if p.name not in (given or {})
            and p.name not in inside and p.init.kind in ("glorot", "normal")]


def embedded_values(obj: ObjectFile, names: list[str]) -> dict[str, np.ndarray]:
    """The starting values the object holds for params `names` (float32), read back from its
    data records at the params' pieces."""
    records: dict[int, list[DataInit]] = {}
    for d in obj.data:
        records.setdefault(d.node, []).append(d)
    out = {}
    for name in names:
        t = obj.tensor(name)
        esize = DTYPE_BYTES[t.dtype]
        bits = np.zeros(t.shape, dtype=np.uint32 if t.dtype == "f32" else np.uint16)
        for p in t.pieces:
            addrs = element_addresses(p.addr, p.shape, p.strides)
            if not addrs.size:
                continue
            lo, hi = int(addrs.min()), int(addrs.max()) + esize
            rec = next((d for d in records.get(p.node, ()) if d.addr <= lo
                        and hi <= d.addr + len(d.data)), None)
            if rec is None:
                raise D1Error(f"the object names '{name}' among its embedded params but holds "
                              f"no data for its piece on node {p.node}")
            image = np.frombuffer(rec.data, dtype=np.uint8)
            idx = (addrs[:, None] - rec.addr + np.arange(esize)).ravel()
            sl = tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))
            bits[sl] = image[idx].view(bits.dtype).reshape(p.shape)
        wide = bits if t.dtype == "f32" else bits.astype(np.uint32) << 16
        out[name] = wide.view(np.float32)
    return out


def embed_params(obj: ObjectFile, values: Mapping[str, np.ndarray]) -> None:
    """Store `values` (one per param) in `obj` as initial SRAM data at the params' pieces, and
    name them in `meta["embedded_params"]`. A param's pieces on one node lie in its one
    buffer, so each node gets one record spanning them (gaps between rows zero-filled)."""
    images: dict[tuple[int, int], bytearray] = {}
    for name, value in values.items():
        t = obj.tensor(name)
        raw = element_bits(np.asarray(value), t)
        esize = DTYPE_BYTES[t.dtype]
        spans: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for p in t.pieces:
            sl = tuple(slice(o, o + s) for o, s in zip(p.offset, p.shape, strict=True))
            addrs = element_addresses(p.addr, p.shape, p.strides)
            spans.setdefault(p.node, []).append((addrs, np.ascontiguousarray(raw[sl]).ravel()))
        for node, parts in spans.items():
            lo = min(int(a.min()) for a, _ in parts if a.size)
            hi = max(int(a.max()) for a, _ in parts if a.size) + esize
            image = np.zeros(hi - lo, dtype=np.uint8)
            for addrs, bits in parts:
                idx = (addrs[:, None] - lo + np.arange(esize)).ravel()
                image[idx] = bits.view(np.uint8)
            images[(node, lo)] = bytearray(image.tobytes())
    obj.data = [d for d in obj.data if (d.node, d.addr) not in images]
    obj.data += [DataInit(node, addr, bytes(b)) for (node, addr), b in sorted(images.items())]
    obj.meta[EMBEDDED] = [t.name for t in obj.tensors if t.name in values or
                          t.name in embedded(obj)]


def element_addresses(addr: int, shape: tuple[int, ...], strides: tuple[int, ...]
                      ) -> np.ndarray:
    """Byte address of every element of a piece, in row-major element order (int64)."""
    a = np.full((1,) * len(shape), addr, dtype=np.int64)
    for d, (s, st) in enumerate(zip(shape, strides, strict=True)):
        shp = [1] * len(shape)
        shp[d] = s
        a = a + (np.arange(s, dtype=np.int64) * st).reshape(shp)
    return np.broadcast_to(a, shape).reshape(-1)


def element_bits(a: np.ndarray, t: TensorLayout) -> np.ndarray:
    """Values as the tensor's element bits (f32: uint32; bf16: uint16, rounded to nearest
    even, as the emulator's host writes round)."""
    from compiler.ir import round_to
    if t.dtype not in ("f32", "bf16"):
        raise D1Error(f"tensor '{t.name}' is {t.dtype}; params are f32 or bf16")
    f = np.ascontiguousarray(round_to(a, t.dtype))
    bits = f.view(np.uint32)
    return bits if t.dtype == "f32" else (bits >> 16).astype(np.uint16)
