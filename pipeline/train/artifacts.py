"""Trained-network files of the training stages (``results/<task>/{teacher,supernet}/model.pt``).

One file: ``{"format", "state_dict", "meta"}`` with ``meta`` = task, width, outputs, kind
("teacher" | "supernet" | ...), architecture document (for a fixed-architecture network) and
whatever the stage adds. It is read with ``weights_only=True``; ``pipeline.nets.checkpoint
.load_state_dict_file`` also reads it (it unwraps ``state_dict``). Loading checks that the file is
what the caller expects (task, width, kind), so a teacher of the wrong width or task is one clear
error naming the file, before any weight is copied.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from pipeline.nets.checkpoint import load_into, torch_load

from .checkpoint import CheckpointError, atomic_torch_save, file_sha256

FORMAT = "scalenas-trained/1"


def save_trained(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any]) -> str:
    """Write ``model``'s weights and ``meta`` atomically to ``path``; return the file's sha256."""
    try:
        meta_json = json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: model meta must be JSON-serialisable: {e}") from None
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "state_dict": sd, "meta": meta_json}, Path(path))
    return file_sha256(path)


def read_trained(path: str | os.PathLike, *, task: str | None = None, width: int | None = None,
                 kind: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a trained-network file, checked against what the caller needs."""
    p = Path(path)
    doc = torch_load(p, what="trained model file", error=CheckpointError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("state_dict"), dict) or not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"{p}: not a trained model file of format {FORMAT!r}")
    meta = doc["meta"]
    for key, want in (("task", task), ("width", width), ("kind", kind)):
        if want is not None and meta.get(key) != want:
            raise CheckpointError(f"{p}: a {meta.get('kind', '?')} of task {meta.get('task')!r} "
                                  f"and width {meta.get('width')!r}, but {key} {want!r} is needed")
    return doc["state_dict"], meta


def load_state(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, *,
               ignore_unexpected: bool = False) -> None:
    """Copy weights into ``model``; any misfit (keys, shapes: wrong width or task) is one
    :class:`CheckpointError` naming ``source`` and what the weights look like."""
    load_into(model, state_dict, source, ignore_unexpected=ignore_unexpected)
