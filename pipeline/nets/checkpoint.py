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
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from pipeline.errors import InputError
from pipeline.io import check_regular_file, open_problem


class CheckpointError(InputError):
    """A checkpoint that cannot be read, does not fit the network, or (a training checkpoint) is
    of another configuration; the message names the file."""


#: torch.save's formats: a zip archive (torch >= 1.6), or a pickle stream that starts with
#: torch's magic number (pickle protocol 2, ``0x1950a86a20f9469cfc6c`` as LONG1), the format
#: older published weights are in.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")


def torch_load(path: str | os.PathLike, *, what: str = "checkpoint file",
               error: type[Exception] = CheckpointError, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure one ``error`` naming the file.

    Both of torch.save's formats load (``mmap`` only applies to the zip one); anything else is
    refused before a byte of it is unpickled: an empty file, a plain Python pickle, text. A file
    whose pickle holds objects other than tensors and plain data is refused as such, and torch's
    advice to retry with ``weights_only=False`` (which would run the file's code) never reaches
    the user. Missing files, directories, link loops and FIFOs are named as what they are.
    """
    p = check_regular_file(path, what, error)
    try:
        # Non-blocking: a FIFO swapped in after the check cannot hang the read.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            head = os.read(fd, len(_LEGACY_MAGIC))
        finally:
            os.close(fd)
    except OSError as e:
        raise error(open_problem(p, what, e)) from None
    if not head:
        raise error(f"{p}: {what} is empty (0 bytes)")
    if head.startswith(_ZIP_MAGIC):
        fmt = "zip"
    elif head == _LEGACY_MAGIC:
        fmt, mmap = "pre-1.6", False  # torch memory-maps only the zip format
    elif head.startswith(b"\x80"):
        raise error(f"{p}: a plain Python pickle, not a file of torch.save; refused unread "
                    "(unpickling it could run code)")
    else:
        raise error(f"{p}: not a PyTorch checkpoint (neither torch.save's zip format nor its "
                    "pre-1.6 format)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. the pickle-protocol notice of old files
            return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, garbled, or objects weights_only refuses
        raise error(f"{p}: {_load_failure(e, fmt)}") from None


def _load_failure(e: Exception, fmt: str) -> str:
    """What a failed ``torch.load`` means, in our words: torch's own text for a refused pickle
    starts with advice to load it with ``weights_only=False``, which must never be passed on."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "Unsupported" in text:
            obj = f" ({found.group(1)})" if found else ""
            return (f"refused: holds Python objects other than tensors and plain data{obj}, "
                    "which are never unpickled (that could run code)")
        text = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text \
            else ""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.split(". This is an internal")[0]  # miniz's note adds nothing for the user
    if isinstance(e, EOFError) and not first:
        first = "the file ends early"
    return (f"not a readable PyTorch checkpoint (corrupt or truncated, {fmt} format): "
            f"{first or type(e).__name__}")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state_dict from ``path`` (never unpickling arbitrary objects: ``weights_only``)."""
    return unwrap_state_dict(torch_load(path), source=str(Path(path)))


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
    outs = f"{head.shape[0]} outputs" if head is not None and head.dim() else "unknown outputs"
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
