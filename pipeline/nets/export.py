"""A subnet as a network of its own: export from the supernet, save, load, TorchScript.

``StandaloneNet`` is the same body as the supernet (``ScaleNet``, ``ScaleModule``) built with only
one architecture's blocks and fusion layers, under the same (official) names. Its state_dict is
therefore a subset of the supernet's: exporting is building it and copying those entries, and an
official fine-tuned checkpoint loads into it directly.

A saved model is a directory: ``weights.pt`` (state_dict, read back with ``weights_only=True``),
``arch.json`` (the architecture document) and ``model.json`` (task, width, outputs, architecture
id, weights checksum, free-form meta). ``model.json`` is written last and names the checksum of
the weights, so a directory caught half-rewritten is detected, never loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipeline.io import atomic_write_bytes, atomic_write_text, read_json
from pipeline.limits import check_width
from pipeline.space.arch import Architecture, ArchitectureError, check_task

from .checkpoint import CheckpointError, load_into, load_state_dict_file
from .module import ScaleModule
from .supernet import ScaleNet, SuperNet
from pipeline.errors import InputError

MODEL_SCHEMA = "scalenas-model/1"
WEIGHTS_FILE, ARCH_FILE, MODEL_JSON = "weights.pt", "arch.json", "model.json"


class ModelFileError(InputError):
    """A saved model directory that is missing a file or whose files do not agree."""


def meta_input_hw(meta: Any, record: str | os.PathLike) -> tuple[int, int] | None:
    """The model's input size ``meta.input_hw`` [h, w] of the record ``record``, None when it
    has none; anything but two positive integers is one :class:`ModelFileError` naming it."""
    hw = meta.get("input_hw") if isinstance(meta, dict) else None
    if hw is None:
        return None
    if not (isinstance(hw, list) and len(hw) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):
        shown = repr(hw) if len(repr(hw)) <= 60 else repr(hw)[:57] + "..."
        raise ModelFileError(f"{record}: meta.input_hw: expected [h, w] (two positive "
                             f"integers), got {shown}")
    return hw[0], hw[1]


class StandaloneNet(ScaleNet):
    """One architecture as a plain network: only its active blocks, fusions and head exist."""

    def __init__(self, task: str, width: int, num_outputs: int | None, arch: Architecture) -> None:
        check_task(arch, task)
        super().__init__(task, width, num_outputs,
                         lambda i, ch, mom: ScaleModule(ch, mom, arch.modules[i]))
        self.arch = arch


def export_subnet(supernet: SuperNet) -> StandaloneNet:
    """The supernet's current subnet as a ``StandaloneNet`` with its weights and BN buffers copied.

    The result is on the supernet's device and dtype and in the same train/eval mode.
    """
    net = StandaloneNet(supernet.task, supernet.width, supernet.num_outputs, supernet.arch)
    load_into(net, supernet.state_dict(), "supernet", ignore_unexpected=True)
    ref = next(supernet.parameters())
    return net.to(device=ref.device, dtype=ref.dtype).train(supernet.training)


def to_torchscript(net: StandaloneNet, example: Tensor) -> torch.jit.ScriptModule:
    """A TorchScript module of ``net`` by tracing on ``example`` (the net is put in eval mode).

    Tracing, not scripting: the forward walks a precomputed plan of Python lists of modules, which
    TorchScript cannot compile; for one fixed architecture the traced graph is the whole network
    (no data-dependent control flow), and sizes stay symbolic, so other inputs divisible by 32 work.
    """
    net.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # torch >= 2.11 flags torch.jit as deprecated; it still works and is what users deploy.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(net, example, check_trace=False)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()




def save_model(directory: str | os.PathLike, net: StandaloneNet, meta: dict[str, Any]) -> None:
    """Write ``net`` to ``directory`` (created if needed): weights, architecture, model record."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    try:
        meta_json = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise ValueError(f"model meta must be JSON-serialisable: {e}") from None
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    weights = buf.getvalue()
    atomic_write_bytes(d / WEIGHTS_FILE, weights)
    net.arch.save(d / ARCH_FILE)
    record = {"schema": MODEL_SCHEMA, "task": net.task, "width": net.width,
              "num_outputs": net.num_outputs, "arch_id": net.arch.arch_id,
              "weights_sha256": _sha256(weights), "meta": meta_json}
    atomic_write_text(d / MODEL_JSON, json.dumps(record, indent=1) + "\n")


def read_record(path: Path) -> dict[str, Any]:
    """The checked model record at ``path`` (``model.json``); nothing else is read."""
    if not path.exists():
        raise ModelFileError(f"{path}: model record not found (not a saved model directory?)")
    rec = read_json(path, "model record", ModelFileError)
    if not isinstance(rec, dict) or rec.get("schema") != MODEL_SCHEMA:
        raise ModelFileError(f"{path}: not a model record of schema {MODEL_SCHEMA!r}")
    for key, typ in (("task", str), ("width", int), ("num_outputs", int), ("arch_id", str),
                     ("weights_sha256", str), ("meta", dict)):
        if not isinstance(rec.get(key), typ) or isinstance(rec.get(key), bool):
            raise ModelFileError(f"{path}: field {key!r} missing or not a {typ.__name__}")
    check_width(str(path), rec["width"], ModelFileError)
    return rec


_read_record = read_record  # the name other modules imported before it was public


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or would replace) a saved model's own file: its record, architecture
    or weights, in a directory that holds a model record."""
    p = Path(path)
    return p.name in (MODEL_JSON, ARCH_FILE, WEIGHTS_FILE) and (p.parent / MODEL_JSON).is_file()


def check_fits(task: str, width: int, num_outputs: int, arch: Architecture,
               state: dict[str, Tensor], source: str, record: Path) -> None:
    """Compare the weights' shapes with the network the record describes, built on the meta
    device (no memory), so that a record whose width or outputs disagree with its weights is
    refused before the network is allocated."""
    try:
        with torch.device("meta"):
            shape_net = StandaloneNet(task, width, num_outputs, arch)
    except (ValueError, ArchitectureError) as e:
        raise ModelFileError(f"{record}: {e}") from None
    load_into(shape_net, state, source)  # copying into meta tensors is free


def load_model(directory: str | os.PathLike) -> StandaloneNet:
    """Rebuild a saved ``StandaloneNet`` from its directory alone; returned in eval mode.

    ``net.meta`` holds the saved meta. Raises ``ModelFileError``, ``ArchitectureError`` or
    ``CheckpointError`` (all ``ValueError``) naming the file at fault.
    """
    d = Path(directory)
    rec = _read_record(d / MODEL_JSON)
    arch = Architecture.load(d / ARCH_FILE)
    if arch.arch_id != rec["arch_id"]:
        raise ModelFileError(f"{d / ARCH_FILE}: architecture id {arch.arch_id} does not match "
                             f"{rec['arch_id']} recorded in {d / MODEL_JSON}")
    wpath = d / WEIGHTS_FILE
    if not wpath.is_file():
        raise ModelFileError(f"{wpath}: weights file not found")
    if _sha256(wpath.read_bytes()) != rec["weights_sha256"]:
        raise ModelFileError(f"{wpath}: checksum does not match {d / MODEL_JSON} "
                             f"(corrupt or from another save)")
    state = load_state_dict_file(wpath)
    check_fits(rec["task"], rec["width"], rec["num_outputs"], arch, state, str(wpath),
               d / MODEL_JSON)
    try:
        net = StandaloneNet(rec["task"], rec["width"], rec["num_outputs"], arch)
    except (ValueError, ArchitectureError) as e:
        raise ModelFileError(f"{d / MODEL_JSON}: {e}") from None
    load_into(net, state, str(wpath))
    net.meta = rec["meta"]
    return net.eval()


__all__ = ["StandaloneNet", "export_subnet", "to_torchscript", "save_model", "load_model",
           "read_record", "check_fits", "is_model_file",
           "ModelFileError", "CheckpointError"]
