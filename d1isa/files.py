"""Reading and writing the user's files safely: every tool's files go through here.

Reading: only regular files, and never more than a cap (a device such as /dev/zero or a pipe
reports size 0 and would be read without end). Writing: to a temporary file in the target's
directory, renamed into place, so a full disk or a crash never leaves a truncated file where a
good one stood; a target that exists and is not a regular file (/dev/null, a FIFO) is refused
rather than replaced. Destinations are checked before a run starts, so a long run never ends in
"cannot write". docs/SECURITY.md lists the limits.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from d1isa.errors import D1Error

MiB = 1 << 20
# Sources (.d1k, .d1s, machine .toml) and objects; generous for real programs, finite always.
MAX_SOURCE_BYTES = 64 * MiB
MAX_OBJECT_BYTES = 2048 * MiB
MAX_JSON_BYTES = 512 * MiB


def _a(what: str) -> str:
    """`what` with its article: "an object file", "an ONNX model", "a .npy file"."""
    return f"{'an' if what[:1] in tuple('aeiouAEIOU') else 'a'} {what}"


def _path(path: Any, what: str) -> Path:
    """`path` as a Path: a str or os.PathLike naming something (not "", which Path reads as
    the current directory, and without a NUL byte, which os calls refuse with ValueError)."""
    if not isinstance(path, str | os.PathLike):
        raise D1Error(f"the path of the {what} must be a str or a Path, not "
                      f"{type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        raise D1Error(f"the path of the {what} must be a str or a Path, not bytes")
    if not text:
        raise D1Error(f"the path of the {what} is empty")
    if "\0" in text:
        raise D1Error(f"the path of the {what} contains a NUL byte: {text!r}")
    return Path(path)


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; D1Error otherwise."""
    p = _path(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        raise D1Error(f"cannot read {p}: {_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise D1Error(f"cannot read {p}: not a regular file ({_kind(st.st_mode)}); "
                          f"give {_a(what)} on disk")
        if st.st_size > limit:
            raise D1Error(f"cannot read {p}: {st.st_size:,} bytes is more than the "
                          f"{limit:,}-byte limit for {_a(what)}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 24, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise D1Error(f"cannot read {p}: more than the {limit:,}-byte limit for "
                              f"{_a(what)}")
        return b"".join(chunks)
    except OSError as e:
        raise D1Error(f"cannot read {p}: {_reason(e)}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int = MAX_SOURCE_BYTES, what: str = "source file") -> str:
    """A UTF-8 text file (read as `read_bytes` does); a leading byte-order mark is kept for the
    reader to skip, so that columns stay those of the file."""
    raw = read_bytes(path, limit, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise D1Error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _made_in(directory: Path, option: str, shown: Path) -> Path:
    """Where files for `directory` will be made: the directory itself, or, if it does not
    exist yet, its nearest existing ancestor, which must be a writable directory (the missing
    ones are made by the first write, `write_atomic`: a command that fails before writing
    leaves no empty directory behind)."""
    at = directory
    while not at.exists() and not at.is_symlink() and at != at.parent:
        at = at.parent
    if not at.is_dir():
        raise D1Error(f"{option} {shown}: cannot create the directory {directory}: {at} is not "
                      "a directory")
    if not os.access(at, os.W_OK | os.X_OK):
        raise D1Error(f"{option} {shown}: the directory {at} is not writable")
    return at


def _probe(directory: Path, message: str) -> None:
    """Make (and remove) a file in `directory`: permission bits say nothing for root, nor for
    /proc, a read-only mount or a full quota."""
    try:
        fd, made = tempfile.mkstemp(dir=directory, prefix=".d1-probe-")
        os.close(fd)
        os.unlink(made)
    except OSError as e:
        raise D1Error(f"{message}: {_reason(e)}") from None


def check_destination(path: str | Path, option: str = "output", probe: bool = True) -> Path:
    """Check, before any work, that `path` can be written: its directory exists or can be made
    (it is made by the write), a file can be made there, and the path is not a directory or a
    special file.

    The directory (or the ancestor it will be made in) is probed by making and removing a
    file in it. `write_atomic`, which makes its temporary file there anyway, does not probe.

    '-' is refused: where an option means standard output by it (`--json -`), the caller
    handles it before asking here; anywhere else it would make a file named '-'."""
    p = _path(path, f"{option} file")
    if str(path) == "-":
        raise D1Error(f"{option} needs a file name: '-' (standard output) is taken only by "
                      "--json of d1 run, d1 train and d1 compile")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise D1Error(f"{option} {p}: {_reason(e)}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise D1Error(f"{option} {p}: not a regular file ({_kind(st.st_mode)}); d1 writes "
                      "only regular files")
    parent = p.parent if str(p.parent) else Path(".")
    at = _made_in(parent, option, p)
    if probe:
        _probe(at, f"{option} {p}: cannot write files in {at}")
    return p


def check_output_dir(path: str | Path, option: str = "--out-dir") -> Path:
    """Check that files can be made in the output directory, or where it will be made (by the
    first write) if it does not exist ('-' is refused: it reads as standard output, which a
    directory cannot be)."""
    p = _path(path, f"{option} directory")
    if str(path) == "-":
        raise D1Error(f"{option} needs a directory name: '-' (standard output) cannot hold "
                      "the output files")
    if p.exists() and not p.is_dir():
        raise D1Error(f"{option} {p}: exists and is not a directory")
    at = _made_in(p, option, p)
    _probe(at, f"{option} {p}: cannot write files there" if at == p
           else f"{option} {p}: cannot make it in {at}")
    return p


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename: the
    old file stays whole until the new one is complete."""
    p = check_destination(path, probe=False)
    parent = p.parent                   # "." for a bare file name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise D1Error(f"cannot create the directory {parent} for {p}: {_reason(e)}") from None
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".tmp")
        view = memoryview(payload)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        mode = os.stat(p).st_mode & 0o777 if p.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, p)
        tmp = ""
    except OSError as e:
        raise D1Error(f"cannot write {p}: {_reason(e)}") from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (both existing), or resolve to one path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwrite(output: str | Path, inputs: list[str | Path], what: str = "-o") -> None:
    """An output may never replace one of the command's inputs."""
    for i in inputs:
        if same_file(output, i):
            raise D1Error(f"{what} would replace {i}, an input of this command; refusing "
                          "(choose another output name or directory)")


def refuse_twice(path: str | Path, written: list[tuple[str | Path, str]], what: str) -> None:
    """Two files one command writes may not be the same file (the second would replace the
    first); `written` holds (file, the option that names it)."""
    for other, option in written:
        if same_file(path, other):
            raise D1Error(f"{what} is also the {option} file of this run; give each its own "
                          "file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _reason(e: OSError) -> str:
    return e.strerror or str(e)
