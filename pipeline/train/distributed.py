"""Process-group setup for ``torchrun`` (DDP), rank helpers, SyncBN and mixed precision.

One process per device. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything
degrades to a single process, so the same training code runs in tests, on a laptop and on GPUs.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``. NCCL is the
    backend on GPUs, gloo on CPU. Calling it twice is harmless.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' requested but no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is untouched)."""
    out = value.detach().clone()
    if info.distributed:
        dist.all_reduce(out)
        out /= info.world_size
    return out


def convert_sync_bn(model: nn.Module, info: DistInfo) -> nn.Module:
    """BatchNorm -> SyncBatchNorm for multi-GPU runs.

    torch's SyncBatchNorm runs only on GPUs; on CPU the model is returned unchanged (each rank
    then normalises with its own batch statistics), which the caller should report.
    """
    if not info.distributed:
        return model
    if info.device.type != "cuda":
        warnings.warn("sync_bn: torch's SyncBatchNorm runs on GPUs only; on CPU every rank "
                      "normalises with its own batch statistics", stacklevel=2)
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel for multi-process runs, the model itself otherwise.

    A supernet trains one subnet per iteration, so most parameters get no gradient in a given
    step: ``find_unused_parameters`` is required. Every rank runs the same subnet, so the set of
    used parameters agrees across ranks, which DDP needs.
    """
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def autocast(info: DistInfo, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs when enabled; a no-op on CPU (exact float32 there)."""
    if enabled and info.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
