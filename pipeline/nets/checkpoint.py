"""Reading checkpoints and loading them into our networks, with errors that say what is wrong.

Our module names ARE the official ScaleNAS/HRNet names (scalenas.md section 9): an official
supernet, teacher or fine-tuned checkpoint loads into ``SuperNet`` with no key converter. The
wrappers that training code adds are removed here: a ``{'state_dict': ...}`` dict, the ``module.``
prefix of DataParallel/DDP, and the ``model.`` prefix of HRNet-seg's ``FullModel`` (whose
``loss.*`` criterion buffers are dropped).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from pipeline.errors import InputError


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the network; the message names the file."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state_dict from ``path`` (never unpickling arbitrary objects: ``weights_only``)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            OSError, AttributeError, TypeError, KeyError, IndexError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint "
                              f"(corrupt, truncated or not a weights file): {first}") from None
    return unwrap_state_dict(obj, source=str(p))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """Strip the usual wrappers and prefixes; check that what remains is names -> tensors."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors) or "
                              f"{{'state_dict': ...}}, got {type(obj).__name__}"
                              + (" (empty)" if isinstance(obj, Mapping) else ""))
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state_dict: entry {bad[0]!r} is not a named tensor")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("model.") for k in sd) and all(
            k.startswith(("model.", "loss.")) for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return sd


def describe(state: Mapping[str, Tensor]) -> str:
    """'seg network of width 8 with 19 outputs' as far as the keys and shapes tell."""
    from .heads import HEADS

    found = [(t, k) for t, h in HEADS.items() for k in state
             if k.startswith(h.attribute + ".") and k.endswith("weight")]
    task = found[0][0] if found else "unknown-task"
    head = state[max((k for t, k in found if t == task), default="")] if found else None
    t = state.get("transition1.0.0.weight")
    width = f"width {t.shape[0]}" if t is not None and t.dim() == 4 else "unknown width"
    outs = f"{head.shape[0]} outputs" if head is not None else "unknown outputs"
    return f"{task} network of {width} with {outs}"


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, *,
              ignore_unexpected: bool = False) -> None:
    """Copy ``state_dict`` into ``model``; raise ``CheckpointError`` naming ``source`` on any misfit.

    Missing keys, unexpected keys (unless ``ignore_unexpected``: e.g. a supernet checkpoint into
    a standalone subnet) and shape mismatches are reported together with what the checkpoint and
    the model are (task, width, outputs). Missing ``num_batches_tracked`` counters are tolerated.
    """
    own = model.state_dict()
    given = dict(state_dict)
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [] if ignore_unexpected else [k for k in given if k not in own]
    shapes = [k for k in own if k in given and given[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected),
                           ("shape mismatch", shapes)):
            if keys:
                extra = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
                detail = ", ".join(
                    f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}" if what ==
                    "shape mismatch" else k for k in keys[:3])
                problems.append(f"{len(keys)} {what} key(s): {detail}{extra}")
        raise CheckpointError(
            f"{source}: does not fit the model: the checkpoint looks like a {describe(given)}, "
            f"the model is a {describe(own)}; " + "; ".join(problems))
    with torch.no_grad():
        for k, v in own.items():
            if k in given:
                v.copy_(given[k])
