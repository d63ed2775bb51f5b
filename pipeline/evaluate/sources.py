"""What ``scalenas eval`` evaluates, loaded and checked before any work.

Three sources, each giving a network of a known task and width with its architecture:

- a supernet file (ours or the release's ``superscalenet_*.pth``) with ``--arch``: the subnet runs
  inside the supernet, after BN calibration;
- a model directory of ours (``results/<task>/finetune/<name>/model``): its checksums are verified
  (weights, and the artifact of ``--runtime torchscript|onnx``);
- a standalone weights file (a release fine-tuned ``scalenet_P2_*.pth``) with ``--arch``.

A mismatch between the architecture and the weights (another task, another width recorded in
the architecture's meta, keys or shapes that do not fit) is one :class:`SourceError` line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from pipeline.errors import InputError
from pipeline.io import file_sha256
from pipeline.space.arch import Architecture, ArchitectureError

RUNTIMES = ("eager", "torchscript", "onnx")


class SourceError(InputError):
    """Weights, architecture or model directory that cannot be evaluated together."""


class RuntimeModule(nn.Module):
    """A deployed artifact (TorchScript, ONNX session) called like the eager network.

    The task evaluations switch their model to eval mode and back; an artifact is always in
    inference mode, so the wrapper has no children to switch."""

    def __init__(self, run: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "run", run)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)


@dataclass
class Source:
    """A network ready to score, with what ``results.json`` records about it."""

    kind: str                      # supernet | model | weights
    task: str
    width: int
    num_outputs: int
    arch: Architecture
    model: nn.Module
    runtime: str = "eager"
    #: Files whose bytes decide the result: role -> path (their sha256 go into results.json).
    files: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_calibration(self) -> bool:
        return self.kind == "supernet"

    def checksums(self) -> dict[str, dict[str, str]]:
        return {role: {"path": str(p), "sha256": file_sha256(p)} for role, p in self.files.items()}


def _meta_task_width(arch: Architecture) -> tuple[str | None, int | None]:
    """Task and width an architecture document records about itself, if any."""
    meta = dict(arch.meta or {})
    sampler = meta.get("sampler") if isinstance(meta.get("sampler"), dict) else {}
    task = meta.get("task", sampler.get("task"))
    width = meta.get("width")
    return (task if isinstance(task, str) else None,
            width if isinstance(width, int) and not isinstance(width, bool) else None)


def resolve_arch(spec: str, task: str, width: int, weights: Path, looks_like: str) -> Architecture:
    """``--arch`` (a registered name, ``.json`` or ``.npy``) checked against the weights' task and
    width; every mismatch is one line naming both."""
    from pipeline.space.registry import resolve

    try:
        arch = resolve(spec, task)
    except ArchitectureError as e:
        if Path(spec).is_file() and "pose architecture" in str(e):
            raise SourceError(f"--arch {spec}: not an architecture of the {task} task "
                              f"({' '.join(str(e).split())}), but {weights} holds {looks_like}"
                              ) from None
        raise
    meta_task, meta_width = _meta_task_width(arch)
    if meta_task is not None and meta_task != task:
        raise SourceError(f"--arch {spec}: an architecture of the {meta_task} task (its meta), "
                          f"but {weights} holds {looks_like}")
    if meta_width is not None and meta_width != width:
        raise SourceError(f"--arch {spec}: an architecture of width {meta_width} (its meta), "
                          f"but {weights} holds {looks_like}")
    return arch


def _arch_file(spec: str) -> dict[str, Path]:
    return {"arch": Path(spec)} if Path(spec).is_file() else {}


def _inspected(path: Path, flag: str, need: str) -> tuple[Any, Any]:
    """The checkpoint's weights and what they look like; one line when no task or width shows."""
    from pipeline.nets.init import inspect, read_checkpoint

    state, meta = read_checkpoint(path)
    info = inspect(path, state, meta)
    if info.task is None or info.width is None:
        raise SourceError(f"{flag} {path}: looks like {info.looks_like()}; {need}")
    return state, info


def load_supernet_source(path: Path, arch_spec: str) -> Source:
    """A supernet file (ours or the release's) running ``arch_spec``."""
    from pipeline.nets.checkpoint import load_into
    from pipeline.nets.supernet import SuperNet

    state, info = _inspected(path, "--supernet", "a supernet of a task is needed")
    if info.kind not in ("supernet", "teacher"):
        raise SourceError(f"--supernet {path}: looks like {info.looks_like()}, not a supernet "
                          "(evaluate a standalone network with --weights FILE --arch ARCH)")
    arch = resolve_arch(arch_spec, info.task, info.width, path, info.looks_like())
    net = SuperNet(info.task, info.width, info.num_outputs)
    load_into(net, state, str(path))
    net.set_arch(arch)
    return Source("supernet", info.task, info.width, int(info.num_outputs or net.num_outputs),
                  arch, net.eval(), files={"supernet": path, **_arch_file(arch_spec)})


def load_weights_source(path: Path, arch_spec: str) -> Source:
    """A standalone network's weights (a release fine-tuned ``.pth``) with its architecture."""
    from pipeline.nets.checkpoint import load_into
    from pipeline.nets.export import StandaloneNet

    state, info = _inspected(path, "--weights", "a network with its head is needed")
    arch = resolve_arch(arch_spec, info.task, info.width, path, info.looks_like())
    net = StandaloneNet(info.task, info.width, info.num_outputs, arch)
    try:
        load_into(net, state, str(path), ignore_unexpected=info.kind in ("supernet", "teacher"))
    except InputError as e:
        raise SourceError(f"--arch {arch_spec}: does not fit the weights: "
                          f"{' '.join(str(e).split())}") from None
    return Source("weights", info.task, info.width, int(net.num_outputs), arch, net.eval(),
                  files={"weights": path, **_arch_file(arch_spec)})


def load_model_source(directory: Path, runtime: str) -> Source:
    """One of our model directories; ``runtime`` picks the eager network or a recorded artifact
    (checksums of the weights and of the artifact verified)."""
    from pipeline.nets.deploy import load_artifact
    from pipeline.nets.export import ARCH_FILE, MODEL_JSON, WEIGHTS_FILE, load_model

    if runtime not in RUNTIMES:
        raise SourceError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    net = load_model(directory)  # ModelFileError on a checksum that fails
    files = {"weights": directory / WEIGHTS_FILE, "arch": directory / ARCH_FILE,
             "model_record": directory / MODEL_JSON}
    model: nn.Module = net
    if runtime != "eager":
        run, entry = load_artifact(directory, runtime)
        files[runtime] = directory / str(entry["file"])
        model = RuntimeModule(run)
    return Source("model", net.task, int(net.width), int(net.num_outputs), net.arch, model,
                  runtime=runtime, files=files, meta=dict(getattr(net, "meta", {}) or {}))


def to_device(source: Source, device: str) -> None:
    """Move the eager network to ``device``; artifacts run where they were built (the CPU)."""
    if source.runtime != "eager":
        if torch.device(device).type != "cpu":
            raise SourceError(f"--runtime {source.runtime} runs on the CPU (the artifact was "
                              f"built and optimised for it); use --runtime eager on {device}")
        return
    source.model.to(device)


__all__ = ["Source", "SourceError", "RuntimeModule", "RUNTIMES", "load_supernet_source",
           "load_weights_source", "load_model_source", "resolve_arch", "to_device"]
