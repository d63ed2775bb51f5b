"""Params and FLOPs of a subnet: analytic from the architecture, and counted on a real forward.

The unit is the paper's (scalenas.md section 3): multiply-accumulates of every conv and linear
layer that executes (kernel volume x output positions, no bias, no BN/ReLU/upsample/add), for one
image, and "GFLOPs" = MACs / 2**30. Params are the weights and biases of the conv/linear/BN layers
that execute (BN running statistics excluded).

``profile`` never runs the network: it sums per-component tables (stem, blocks, fusion layers,
head) computed once per (task, width, input size, outputs) and cached. ``count_forward`` hooks a
real forward pass; tests prove the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.nets.heads import HEADS
from pipeline.nets.supernet import INPUT_MULTIPLE, branch_channels, check_net_args
from pipeline.space.arch import BRANCHES, MAX_DEPTH, Architecture
from pipeline.errors import ConfigError

#: Divisor of the paper's "GFLOPs" (it prints MACs / 2^30).
GIGA = 2 ** 30


@dataclass(frozen=True)
class Cost:
    """Parameter count and multiply-accumulates of one network for one image."""

    params: int
    macs: int

    @property
    def gflops(self) -> float:
        """The paper's unit: MACs / 2**30."""
        return self.macs / GIGA

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs, "gflops": self.gflops}


def _conv(cin: int, cout: int, k: int, hw: int, bias: bool = False) -> tuple[int, int]:
    """(params, MACs) of a conv producing ``hw`` output positions."""
    return cin * k * k * cout + (cout if bias else 0), cin * k * k * cout * hw


def _bn(c: int) -> tuple[int, int]:
    return 2 * c, 0


def _sum(*parts: tuple[int, int]) -> tuple[int, int]:
    return sum(p for p, _ in parts), sum(m for _, m in parts)


@dataclass(frozen=True)
class _Tables:
    base: tuple[int, int]                          # stem, stage 1, transitions, head
    block: tuple[tuple[int, int], ...]             # one BasicBlock of branch b
    fuse: tuple[tuple[tuple[int, int], ...], ...]  # fuse[k][j]: layer from source k to target j


@lru_cache(maxsize=64)
def _tables(task: str, width: int, h: int, w: int, num_outputs: int) -> _Tables:
    C = branch_channels(width, 4)
    # Output positions at 1/2, and at branch b's resolution 1/4 * 2^-b.
    half = (h // 2) * (w // 2)
    pos = [(h // 4 >> b) * (w // 4 >> b) for b in range(4)]
    stem = _sum(_conv(3, 64, 3, half), _bn(64), _conv(64, 64, 3, pos[0]), _bn(64))
    layer1 = _sum(_conv(64, 64, 1, pos[0]), _bn(64), _conv(64, 64, 3, pos[0]), _bn(64),
                  _conv(64, 256, 1, pos[0]), _bn(256), _conv(64, 256, 1, pos[0]), _bn(256),
                  *[_sum(_conv(256, 64, 1, pos[0]), _bn(64), _conv(64, 64, 3, pos[0]), _bn(64),
                         _conv(64, 256, 1, pos[0]), _bn(256)) for _ in range(3)])
    trans = _sum(_conv(256, C[0], 3, pos[0]), _bn(C[0]), _conv(256, C[1], 3, pos[1]), _bn(C[1]),
                 _conv(C[1], C[2], 3, pos[2]), _bn(C[2]), _conv(C[2], C[3], 3, pos[3]), _bn(C[3]))
    head = HEADS[task].cost(C, num_outputs, pos[0], _conv, _bn, _sum)
    block = tuple(_sum(_conv(C[b], C[b], 3, pos[b]), _bn(C[b]),
                       _conv(C[b], C[b], 3, pos[b]), _bn(C[b])) for b in range(4))
    fuse = []
    for k in range(4):
        row = []
        for j in range(4):
            if k > j:    # 1x1 conv at the source resolution, then upsampling (free)
                row.append(_sum(_conv(C[k], C[j], 1, pos[k]), _bn(C[j])))
            elif k < j:  # a chain of stride-2 3x3 convs: Ck channels, the last one to Cj
                row.append(_sum(*[_sum(_conv(C[k], C[k] if t < j - k - 1 else C[j], 3,
                                             pos[k + t + 1]),
                                       _bn(C[k] if t < j - k - 1 else C[j]))
                                  for t in range(j - k)]))
            else:
                row.append((0, 0))
        fuse.append(tuple(row))
    return _Tables(_sum(stem, layer1, trans, head), block, tuple(fuse))


def _check(task: str, width: int, input_hw: tuple[int, int], num_outputs: int | None) -> int:
    n = check_net_args(task, width, num_outputs)
    h, w = input_hw
    if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE or h <= 0 or w <= 0:
        raise ConfigError(f"input size {h}x{w} must be positive and divisible by {INPUT_MULTIPLE}")
    return n


def profile(arch: Architecture, task: str, width: int, input_hw: tuple[int, int],
            num_outputs: int | None = None) -> Cost:
    """Params and MACs of ``arch`` for one ``input_hw`` image, computed without a forward pass.

    Every active block and fusion counts, including those in the pose network's last module that
    cannot reach the output (the official counter counts them, and the network executes them).
    """
    n = _check(task, width, input_hw, num_outputs)
    t = _tables(task, width, int(input_hw[0]), int(input_hw[1]), n)
    params, macs = t.base
    block, fuse = t.block, t.fuse
    for m in arch.modules:
        for b, d in enumerate(m.depths):
            p, a = block[b]
            params += d * p
            macs += d * a
        for step in m.fusions:
            for j, srcs in enumerate(step):
                for k in srcs:
                    p, a = fuse[k][j]
                    params += p
                    macs += a
    return Cost(params, macs)


def supernet_params(task: str, width: int, num_outputs: int | None = None) -> int:
    """Parameters of the whole supernet (every block, every fusion layer of every step)."""
    n = _check(task, width, (32, 32), num_outputs)
    t = _tables(task, width, 32, 32, n)
    params = t.base[0]
    for nb in BRANCHES:
        params += MAX_DEPTH * sum(t.block[b][0] for b in range(nb))
        params += MAX_DEPTH * sum(t.fuse[k][j][0] for k in range(nb) for j in range(nb))
    return params


def count_forward(model: nn.Module, x: Tensor) -> Cost:
    """Params and MACs per image of the conv/linear/BN layers that actually execute on ``x``.

    Runs one forward pass in eval mode under ``no_grad`` (BN statistics are not touched; the
    training flag is restored). A layer that runs several times counts its params once and its
    MACs every time.
    """
    seen: dict[int, int] = {}
    macs = 0

    def hook(mod: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> None:
        nonlocal macs
        if id(mod) not in seen:
            seen[id(mod)] = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            per_pos = mod.in_channels // mod.groups * kh * kw * mod.out_channels
            macs += per_pos * out.shape[-1] * out.shape[-2]
        elif isinstance(mod, nn.ConvTranspose2d):
            # the official counter's rule: the whole kernel at every output position
            macs += mod.weight.numel() * out.shape[-1] * out.shape[-2]
        elif isinstance(mod, nn.Linear):
            macs += mod.in_features * mod.out_features * (out.numel() // out.shape[0]
                                                          // mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for hd in handles:
            hd.remove()
    return Cost(sum(seen.values()), macs)
