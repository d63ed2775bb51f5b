"""Atomic file writes (every output of the project goes through here), bounded reads of regular
files, the one JSON reader with one-line errors, and the canonical JSON hash behind architecture
ids and parameter hashes.

A file is written to a temporary name in its own directory, then renamed over the target, so a
crash or a kill never leaves a half-written file and readers see either the old or the new one.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates 0600 files; give outputs the ordinary permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            # The temporary name means nothing to the user: name the output.
            raise _write_error(path, e) from None
        raise


def _write_error(path: Path, e: OSError) -> OSError:
    if e.errno == errno.ENOSPC:
        from pipeline.diskfull import DiskFullError

        return DiskFullError(path)
    err = OSError(f"{path}: cannot write ({e.strerror or e})")
    err.errno = e.errno
    return err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_savefig(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure (PNG unless ``format`` says otherwise)."""
    savefig_kwargs.setdefault("format", "png")
    atomic_write(path, lambda f: fig.savefig(f, **savefig_kwargs))


#: Default read bound of :func:`read_bytes` / :func:`read_json` (parameter files, architecture
#: documents, model records, box lists and manifests are all far smaller).
MAX_READ_BYTES = 64 << 20


def _size_text(n: int) -> str:
    return f"{n} bytes" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB ({n} bytes)"


def read_bytes(path: str | os.PathLike, what: str, error: type[Exception],
               limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, else one ``error`` naming it.

    A FIFO, a device or a directory is refused before anything is read (a FIFO would block
    forever); the file is opened non-blocking so even a FIFO swapped in after the check cannot
    hang, and at most ``limit + 1`` bytes are ever read.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise error(f"{p}: is a directory ({what} expected)") from None
    except OSError as e:
        raise error(open_problem(p, what, e)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{p}: is a directory ({what} expected)")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{p}: {what} is not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise error(f"{p}: {what} too large ({_size_text(st.st_size)}; the limit is "
                        f"{_size_text(limit)})")
        chunks, total = [], 0
        while total <= limit:
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise error(f"{p}: cannot read {what}: no data (not a regular file?)") from None
                raise error(f"{p}: cannot read {what}: {e.strerror or e}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # the file grew while we read it
            raise error(f"{p}: {what} too large (more than the limit of {_size_text(limit)})")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def open_problem(path: Path, what: str, e: OSError) -> str:
    """One line for a path that cannot be opened: missing, a dangling link, a link loop, ...

    A symbolic link loop and a link to nothing are named as such: "not found" would send the user
    looking for a file that is, in a sense, there."""
    if e.errno == errno.ELOOP:
        return f"{path}: symbolic link loop ({what} expected)"
    if e.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"{path}: {what} not found (broken symbolic link to {os.readlink(path)})"
        return f"{path}: {what} not found"
    if e.errno == errno.ENOTDIR:
        return f"{path}: {what} not found (a parent is not a directory)"
    return f"{path}: cannot read {what}: {e.strerror or e}"


def path_problem(path: str | os.PathLike, kind: str = "file") -> str | None:
    """Why ``path`` is not a usable ``kind`` ("file": a regular file, "dir": a directory), as
    the end of a message ("is a directory, a file expected", ...), or None when it is."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno == errno.ENOENT and os.path.islink(p):
            return f"broken symbolic link to {os.readlink(p)}"
        return "not found" if e.errno in (errno.ENOENT, errno.ENOTDIR) else (e.strerror or str(e))
    if kind == "dir":
        return None if stat.S_ISDIR(st.st_mode) else "not a directory"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, a file expected"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_file_kind(st.st_mode)})"
    return None


def check_regular_file(path: str | os.PathLike, what: str, error: type[Exception]) -> Path:
    """``path`` if it is a regular file (symlinks followed), else one ``error`` saying what it is."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise error(open_problem(p, what, e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: is a directory ({what} expected)")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: {what} is not a regular file ({_file_kind(st.st_mode)})")
    return p


def decode_text(data: bytes, path: str | os.PathLike, what: str, error: type[Exception]) -> str:
    """UTF-8 text of ``data``, else one ``error`` naming the file and the offending byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                    f"{e.start})") from None


def loads_json(text: str | bytes, source: str, what: str, error: type[Exception]) -> Any:
    """Decode JSON text; malformed or absurdly nested text is one ``error`` naming ``source``."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        # Python's decoder recurses once per nesting level; no document of ours is deeper than 10.
        raise error(f"{source}: unreadable {what}: nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{source}: unreadable {what}: {e}") from None
    except ValueError as e:  # Python refuses to convert an integer literal of over 4300 digits
        raise error(f"{source}: unreadable {what}: {big_number(e)}") from None


def big_number(e: ValueError) -> str:
    """What a decoder's "Exceeds the limit (4300 digits) for integer string conversion" means,
    without its advice to raise the interpreter's limit."""
    if "digits" in str(e):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_json(path: str | os.PathLike, what: str, error: type[Exception],
              limit: int = MAX_READ_BYTES) -> Any:
    """Decode a JSON file; a missing, non-regular, oversized, non-UTF-8, malformed or too deeply
    nested one is one ``error`` naming the file and ``what``."""
    text = decode_text(read_bytes(path, what, error, limit), path, what, error)
    return loads_json(text, str(path), what, error)


def canonical_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for hashes and per-rule parameter files."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``obj``."""
    import hashlib

    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
