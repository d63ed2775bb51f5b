"""The task heads of the network, registered by task name: the one place in the network that
knows the tasks apart.

Each head attaches its layers to the network under the official attribute name (``last_layer``
for segmentation, ``final_layer`` for pose, scalenas.md section 9), maps the four branch outputs
to the task's output, and states its cost (parameters, MACs) for pipeline.cost.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: (params, MACs) of one layer; see pipeline.cost.
Cost = tuple[int, int]
ConvCost = Callable[..., Cost]


class SegHead:
    """Every branch upsampled to branch 0, concatenated, 1x1 conv-BN-ReLU, 1x1 conv to classes."""

    attribute = "last_layer"
    default_outputs = 19  # Cityscapes classes

    @staticmethod
    def build(channels: Sequence[int], num_outputs: int, bn_momentum: float) -> nn.Module:
        c = sum(channels)
        return nn.Sequential(
            nn.Conv2d(c, c, kernel_size=1, bias=True), nn.BatchNorm2d(c, momentum=bn_momentum),
            nn.ReLU(inplace=True), nn.Conv2d(c, num_outputs, kernel_size=1, bias=True))

    @staticmethod
    def forward(layer: nn.Module, xs: Sequence[Tensor]) -> Tensor:
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                         for t in xs[1:]]
        return layer(torch.cat(ups, 1))

    @staticmethod
    def cost(channels: Sequence[int], num_outputs: int, positions: int, conv: ConvCost,
             bn: Callable[[int], Cost], total: Callable[..., Cost]) -> Cost:
        c = sum(channels)
        return total(conv(c, c, 1, positions, bias=True), bn(c),
                     conv(c, num_outputs, 1, positions, bias=True))


class PoseHead:
    """A 1x1 conv from branch 0 to one heatmap per joint."""

    attribute = "final_layer"
    default_outputs = 17  # COCO joints

    @staticmethod
    def build(channels: Sequence[int], num_outputs: int, bn_momentum: float) -> nn.Module:
        return nn.Conv2d(channels[0], num_outputs, kernel_size=1, bias=True)

    @staticmethod
    def forward(layer: nn.Module, xs: Sequence[Tensor]) -> Tensor:
        return layer(xs[0])

    @staticmethod
    def cost(channels: Sequence[int], num_outputs: int, positions: int, conv: ConvCost,
             bn: Callable[[int], Cost], total: Callable[..., Cost]) -> Cost:
        return conv(channels[0], num_outputs, 1, positions, bias=True)


class BottomUpHead:
    """HigherHRNet's head on branch 0 (pipeline.bottomup.head): heatmaps and tags at 1/4, then a
    deconvolution stage to heatmaps at 1/2. The output is the pair (1/4, 1/2), a tuple so that
    tracing and scripting keep it."""

    attribute = "higher_head"
    default_outputs = 17  # COCO joints (2 x 17 channels at 1/4: heatmaps, then tags)

    @staticmethod
    def build(channels: Sequence[int], num_outputs: int, bn_momentum: float) -> nn.Module:
        from pipeline.bottomup.head import HigherHead

        return HigherHead(channels[0], num_outputs, bn_momentum=bn_momentum)

    @staticmethod
    def forward(layer: nn.Module, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        quarter, half = layer(xs[0])
        return quarter, half

    @staticmethod
    def cost(channels: Sequence[int], num_outputs: int, positions: int, conv: ConvCost,
             bn: Callable[[int], Cost], total: Callable[..., Cost]) -> Cost:
        from pipeline.bottomup.head import head_cost

        return head_cost(channels[0], positions, num_outputs)


HEADS = {"seg": SegHead, "pose": PoseHead, "bottomup": BottomUpHead}
