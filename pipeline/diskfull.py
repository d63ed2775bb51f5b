"""A full disk, named as such.

A write that runs out of space surfaces in many shapes: ``OSError`` errno 28 from Python,
torch's ``RuntimeError`` from its zip writer ("unexpected pos ...", "file write failed"), or
SQLite's "database or disk is full" wrapped by SQLAlchemy and MLflow. The project reports every
one as the same line, ``<path>: no space left on device``, with exit status 2 (the user frees
space and runs again): :class:`DiskFullError` at the write sites that know the path, and
:func:`find` for the stage frame and the workflow's start, which see whatever was raised.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

from pipeline.errors import InputError

NO_SPACE = "no space left on device"
_CODES = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: Torch's zip writer reports a short write without the OS error behind it.
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed")
_SQLITE_FULL = "database or disk is full"
#: Free space below which a short write is put down to a full disk.
LOW_SPACE = 1 << 20


class DiskFullError(InputError, OSError):
    """No space left where the project writes; an input error (exit 2) and an ``OSError``, so
    code that handles failed writes handles it too."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"{path}: {NO_SPACE}")
        self.errno = errno.ENOSPC
        self.path = str(path)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__  # type: ignore[assignment]


def _links(e: BaseException) -> Iterator[BaseException]:
    for x in _chain(e):  # SQLAlchemy keeps the DB-API error as .orig, not as the cause
        yield x
        orig = getattr(x, "orig", None)
        if isinstance(orig, BaseException):
            yield from _chain(orig)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this process at ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def find(e: BaseException, where: str | os.PathLike | None = None, *,
         store: str | os.PathLike | None = None) -> DiskFullError | None:
    """The :class:`DiskFullError` that ``e`` (or an exception behind it) means, else None.

    The path is the one the error names (its own, or an ``OSError``'s file name), else ``store``
    (the SQLite database) for SQLite's error, else ``where``; a short write of torch's with no OS
    error behind it counts only when ``where`` has less than :data:`LOW_SPACE` free."""
    path = None
    full = False
    for x in _links(e):
        if isinstance(x, DiskFullError):
            return x
        if isinstance(x, OSError) and x.errno in _CODES:
            full = True
            path = path or x.filename
        text = str(x)
        if _SQLITE_FULL in text:
            full = True
            path = path or store
        if "[Errno 28]" in text or "No space left on device" in text:
            full = True
        if (not full and where is not None and isinstance(x, RuntimeError)
                and any(s in text for s in _TORCH_SHORT_WRITE)):
            free = free_bytes(where)
            full = free is not None and free < LOW_SPACE
    if not full:
        return None
    err = DiskFullError(path or where or "the output disk")
    err.__cause__ = e
    return err
