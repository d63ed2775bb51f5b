"""Atomic file writes (every output of the project goes through here), the one JSON reader with
one-line errors, and the canonical JSON hash behind architecture ids and parameter hashes.

A file is written to a temporary name in its own directory, then renamed over the target, so a
crash or a kill never leaves a half-written file and readers see either the old or the new one.
"""
from __future__ import annotations

import os
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates 0600 files; give outputs the ordinary permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_savefig(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure (PNG unless ``format`` says otherwise)."""
    savefig_kwargs.setdefault("format", "png")
    atomic_write(path, lambda f: fig.savefig(f, **savefig_kwargs))


def read_json(path: str | os.PathLike, what: str, error: type[Exception]) -> Any:
    """Decode a JSON file; a missing or unreadable one is one ``error`` naming the file and ``what``."""
    import json

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{p}: unreadable {what}: {e}") from None


def canonical_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) used for hashes and per-rule parameter files."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``obj``."""
    import hashlib

    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]
