"""Training checkpoints: atomic, rotating, fingerprinted, loadable without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so ``torch.load(...,
weights_only=True)`` reads it. It holds the model, optimiser and scheduler states, every random
generator state (python, numpy, torch CPU, CUDA), the iteration and epoch, and the fingerprint of the
configuration that produced it. Writing goes through a temporary file and ``os.replace``; the
previous checkpoint is kept as ``prev.pt`` so that one bad write or a damaged ``last.pt`` never
loses every state.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from pipeline import diskfull
from pipeline.io import file_sha256  # noqa: F401 (re-exported)
# One error for every checkpoint that cannot be used (corrupt, of another format, another
# configuration, or not fitting the network), whoever reads it.
from pipeline.nets.checkpoint import CheckpointError, torch_load  # noqa: F401 (re-exported)

FORMAT = "scalenas-train-ckpt/1"
LAST = "last.pt"
PREV = "prev.pt"


def fingerprint(config: Mapping[str, Any], task: str, width: int | None) -> str:
    """Hash of the resolved training configuration, task and width (what makes states comparable)."""
    doc = {"config": config, "task": task, "width": width}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


# -- random generator states -------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global generator state as tensors and plain lists (``weights_only``-loadable)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- saving and loading ------------------------------------------------------------------------

def _write_temp(obj: Any, directory: Path, prefix: str) -> str:
    """``torch.save`` into a complete, synced temporary file of ``directory``; return its path."""
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    except OSError as e:
        raise diskfull.find(e, directory) or e
    try:
        # mkstemp makes the file private; results are meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        # Before the partial file goes: torch's short-write error says nothing of the disk, its
        # free space does.
        full = diskfull.find(e, directory) if isinstance(e, Exception) else None
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from None
        raise
    return tmp


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(obj, path.parent, f".{path.name}.")
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(ckpt_dir: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` as the new ``last.pt``; the former ``last.pt`` becomes ``prev.pt``.

    The new file is complete on disk before anything is renamed, so a kill at any moment leaves
    at least one readable checkpoint (``last.pt``, or ``prev.pt`` between the two renames).
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp({"format": FORMAT, **state}, d, ".ckpt.")
    try:
        if (d / LAST).exists():
            os.replace(d / LAST, d / PREV)
        os.replace(tmp, d / LAST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / LAST


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one checkpoint file safely; any damage is one :class:`CheckpointError` naming it."""
    p = Path(path)
    doc = torch_load(p, what="checkpoint", error=CheckpointError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a training checkpoint of format {FORMAT!r}")
    return doc


def find_resume(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a restarted run continues from, or None for a fresh start.

    ``last.pt`` when present (a damaged one is an error, not silently skipped: the user decides
    whether to fall back to ``prev.pt``); ``prev.pt`` alone means the run was killed between the
    two renames of :func:`save_checkpoint`.
    """
    d = Path(ckpt_dir)
    if (d / LAST).exists():
        return d / LAST
    if (d / PREV).exists():
        return d / PREV
    return None


def load_resume(ckpt_dir: str | os.PathLike, expected_fingerprint: str) -> dict[str, Any] | None:
    """Read the resume checkpoint of ``ckpt_dir`` and check it belongs to this configuration."""
    path = find_resume(ckpt_dir)
    if path is None:
        return None
    try:
        doc = read_checkpoint(path)
    except CheckpointError as e:
        hint = ""
        if path.name == LAST and (path.parent / PREV).exists():
            hint = f"; the previous good checkpoint is kept as {path.parent / PREV}"
        raise CheckpointError(f"{e}{hint} (delete or replace the damaged file to go on)") from None
    got = doc.get("fingerprint")
    if got != expected_fingerprint:
        raise CheckpointError(
            f"{path}: resume checkpoint comes from another configuration (fingerprint {got}, "
            f"this run {expected_fingerprint}); use a fresh output directory or delete "
            f"{path.parent}")
    return doc
