"""Starting weights of a stage: ``teacher|supernet|finetune.<task>.init`` and ``supernet.<task>.checkpoint``.

A starting checkpoint is one of
  * a model file of ours (``results/<task>/{teacher,supernet}/model.pt``: format + meta),
  * a state_dict in the official release's key layout (our module names are the official ones,
    scalenas.md section 9; ``{'state_dict': ...}`` and ``module.``/``model.`` wrappers are
    accepted), e.g. ``superscalenet_seg_w32.pth``,
  * an HRNet/ImageNet-pretrained backbone: no head, other fusion names; its missing keys are
    reported and allowed only with ``init_strict: false``.

:func:`check_fits` tells, from the file alone (no network is built), whether it is of the right
task, width and number of outputs; the workflow calls it at parse time (through
pipeline.stages.build.check_start_weights) so that a wrong file stops the run before any job
starts, with one line naming the file and what it looks like.
:func:`load_init` copies the weights into a network; shapes must always agree, keys only when
strict.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from pipeline.io import file_sha256  # noqa: F401 (re-exported)
from .checkpoint import CheckpointError, describe, load_into, torch_load, unwrap_state_dict

#: Trained-model file format of pipeline.train.artifacts (not imported: nets must not need train).
_OURS = "scalenas-trained/1"
_SEG_HEAD, _POSE_HEAD = "last_layer.3.weight", "final_layer.weight"
_WIDTH_KEY = "transition1.0.0.weight"
#: The fifth block of a branch of the last stage: only a supernet (or a teacher, the largest
#: subnet stored as a supernet) has it.
_DEPTH5_KEY = "stage4.0.branches.0.4.conv1.weight"


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint looks like, from its keys, shapes and (for ours) its meta."""

    path: str
    task: str | None
    width: int | None
    num_outputs: int | None
    kind: str          # supernet | teacher | network | backbone
    layout: str        # ours | official

    def looks_like(self) -> str:
        w = f"W{self.width}" if self.width is not None else "unknown-width"
        if self.task is None:
            return f"a {w} {self.kind} without a head"
        return f"a {self.task} {w} {self.kind} ({self.num_outputs} outputs)"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """``(state_dict, meta or None)`` of any accepted file (``weights_only``, memory-mapped)."""
    p = Path(path)
    obj = torch_load(p, mmap=True)
    meta = None
    if isinstance(obj, Mapping) and obj.get("format") == _OURS and isinstance(obj.get("meta"), Mapping):
        meta = dict(obj["meta"])
    return unwrap_state_dict(obj, source=str(p)), meta


def inspect(path: str | os.PathLike, state: Mapping[str, Tensor] | None = None,
            meta: Mapping[str, Any] | None = None) -> CheckpointInfo:
    """What the checkpoint at ``path`` is (reads it unless ``state`` is given)."""
    if state is None:
        state, meta = read_checkpoint(path)
    for key in (_SEG_HEAD, _POSE_HEAD):
        if key in state and state[key].dim() != 4:
            # A head convolution is (outputs, channels, kh, kw); a scalar has no outputs to count.
            raise CheckpointError(f"{path}: {key} has shape {tuple(state[key].shape)}, not a head "
                                  "convolution's (outputs, channels, kh, kw): a damaged or "
                                  "foreign checkpoint")
    head = state.get(_SEG_HEAD)
    task = "seg" if head is not None else None
    if head is None and _POSE_HEAD in state:
        head, task = state[_POSE_HEAD], "pose"
    t = state.get(_WIDTH_KEY)
    width = int(t.shape[0]) if t is not None and t.dim() == 4 else None
    outputs = int(head.shape[0]) if head is not None else None
    if meta is not None:
        kind = str(meta.get("kind", "network"))
    elif task is None:
        kind = "backbone"
    else:
        kind = "supernet" if _DEPTH5_KEY in state else "network"
    return CheckpointInfo(str(path), task, width, outputs, kind,
                          "ours" if meta is not None else "official")


def check_fits(path: str | os.PathLike, task: str, width: int, num_outputs: int, *,
               strict: bool = True, key: str = "init") -> CheckpointInfo:
    """Raise :class:`CheckpointError` (one line: file, what it looks like, what is needed) unless
    the file is a network of ``task``, ``width`` and ``num_outputs``; a headless backbone passes
    only when not ``strict``."""
    info = inspect(path)
    want = f"a {task} W{width} network ({num_outputs} outputs)"
    if info.task is None and strict:
        raise CheckpointError(f"{path}: looks like {info.looks_like()}, but {key} needs {want} "
                              f"(set init_strict: false to start from a backbone)")
    wrong = ((info.task is not None and info.task != task) or info.width != width
             or (info.num_outputs is not None and info.num_outputs != num_outputs))
    if wrong:
        raise CheckpointError(f"{path}: looks like {info.looks_like()}, but {key} needs {want}")
    return info


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What :func:`load_init` did: the file's hash and the keys it left at their initial values."""

    path: str
    sha256: str
    info: CheckpointInfo
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "looks_like": self.info.looks_like(),
                "layout": self.info.layout, "missing": list(self.missing),
                "unexpected": list(self.unexpected)}

    def summary(self) -> str:
        s = f"init from {self.path} ({self.info.looks_like()}, sha256 {self.sha256[:12]})"
        if self.missing or self.unexpected:
            s += (f": {len(self.missing)} key(s) of the model not in the file (kept at their "
                  f"initial values, e.g. {', '.join(self.missing[:3]) or '-'}), "
                  f"{len(self.unexpected)} key(s) of the file unused "
                  f"(e.g. {', '.join(self.unexpected[:3]) or '-'})")
        return s


def load_init(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> InitReport:
    """Copy the weights of ``path`` into ``model``.

    Shapes must agree (a wrong width or task is an error either way). ``strict``: every key of
    the model must be in the file and every key of the file in the model; otherwise missing keys
    keep their initial values and unused ones are dropped, both reported."""
    state, meta = read_checkpoint(path)
    info = inspect(path, state, meta)
    own = model.state_dict()
    missing = tuple(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = tuple(k for k in state if k not in own)
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if strict or shapes:
        load_into(model, state, str(path))  # raises, naming the file and the misfit
    else:
        with torch.no_grad():
            for k, v in own.items():
                if k in state:
                    v.copy_(state[k])
    return InitReport(str(path), file_sha256(path), info, missing, unexpected)
