"""Building blocks of the ScaleNAS network, laid out exactly like the official code.

Module and attribute names (``conv1``, ``bn1``, ``downsample``, the Sequential indices of fusion
and transition layers) are the official ones, so an official state_dict loads with no key
conversion. Only the layers are built here; which of them run is decided in ``module.py``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

#: PyTorch's default momentum, used by the BN inside coarse-to-fine fusion layers in every task
#: (the other BN layers take the task's momentum: pipeline.tasks.facts).
FUSE_UP_BN_MOMENTUM = 0.1


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU (channels unchanged, stride 1)."""

    def __init__(self, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN + (downsampled) residual, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, bn_momentum: float,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def make_layer1(bn_momentum: float) -> nn.Sequential:
    """Stage 1: 4 Bottlenecks of 64 planes (out 256); the first one downsamples 64->256 by 1x1."""
    down = nn.Sequential(conv1x1(64, 256), nn.BatchNorm2d(256, momentum=bn_momentum))
    blocks = [Bottleneck(64, 64, bn_momentum, down)]
    blocks += [Bottleneck(256, 64, bn_momentum) for _ in range(3)]
    return nn.Sequential(*blocks)


def conv_bn_relu(cin: int, cout: int, stride: int, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(conv3x3(cin, cout, stride), nn.BatchNorm2d(cout, momentum=bn_momentum),
                         nn.ReLU(inplace=True))


def new_branch_transition(cin: int, cout: int, bn_momentum: float) -> nn.Sequential:
    """A transition that opens a coarser branch; nested one level deeper, as in the official code."""
    return nn.Sequential(conv_bn_relu(cin, cout, 2, bn_momentum))


def fuse_layer(channels: tuple[int, ...], source: int, target: int,
               bn_momentum: float) -> nn.Sequential:
    """The layer that maps branch ``source`` to the resolution and width of branch ``target``."""
    cs, ct = channels[source], channels[target]
    if source > target:
        # Coarse to fine: 1x1 conv at the source resolution, then nearest upsampling.
        return nn.Sequential(conv1x1(cs, ct), nn.BatchNorm2d(ct, momentum=FUSE_UP_BN_MOMENTUM),
                             nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"))
    if source < target:
        hops = []
        for t in range(target - source):
            if t == target - source - 1:
                hops.append(nn.Sequential(conv3x3(cs, ct, 2),
                                          nn.BatchNorm2d(ct, momentum=bn_momentum)))
            else:
                hops.append(nn.Sequential(conv3x3(cs, cs, 2),
                                          nn.BatchNorm2d(cs, momentum=bn_momentum),
                                          nn.ReLU(inplace=True)))
        return nn.Sequential(*hops)
    raise ValueError(f"a branch does not fuse into itself (source = target = {source})")


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """HRNet's initialisation: conv/linear weights N(0, 0.001), their biases 0, BN weight 1 bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.001, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
