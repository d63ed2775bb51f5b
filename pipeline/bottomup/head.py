"""HigherHRNet's head on the network's highest-resolution branch (scalenas.md section 10).

At 1/4 of the input a 1x1 conv predicts J heatmaps and J associative-embedding tags. The branch
features, concatenated with that prediction, go through one 4x4 stride-2 transposed conv
(BN, ReLU) to 1/2, then ``num_blocks`` BasicBlocks, then a 1x1 conv to J heatmaps (no tags).

Cost is in the paper's unit (pipeline/cost.py): MACs of the convs that run, no bias, BN, ReLU or
concatenation. A transposed conv counts kernel volume x output positions, the rule of the
official counter (HigherHRNet's ``get_model_summary``, which the published GFLOPs come from).
"""
from __future__ import annotations

from torch import Tensor, nn
import torch

from pipeline.nets.blocks import BasicBlock

#: COCO joints; HigherHRNet's number of residual blocks after the deconvolution.
NUM_JOINTS = 17
NUM_BLOCKS = 4


class HigherHead(nn.Module):
    """Maps (N, C, h, w) branch-0 features to [(N, 2J, h, w), (N, J, 2h, 2w)]."""

    def __init__(self, channels: int, num_joints: int = NUM_JOINTS,
                 deconv_channels: int | None = None, num_blocks: int = NUM_BLOCKS,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        if channels <= 0 or num_joints <= 0 or num_blocks < 0:
            raise ValueError(f"bad head shape: channels {channels}, joints {num_joints}, "
                             f"blocks {num_blocks}")
        cd = channels if deconv_channels is None else deconv_channels
        self.num_joints = num_joints
        self.first = nn.Conv2d(channels, 2 * num_joints, kernel_size=1, bias=True)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(channels + 2 * num_joints, cd, kernel_size=4, stride=2, padding=1,
                               bias=False),
            nn.BatchNorm2d(cd, momentum=bn_momentum), nn.ReLU(inplace=True),
            *[BasicBlock(cd, bn_momentum) for _ in range(num_blocks)])
        self.second = nn.Conv2d(cd, num_joints, kernel_size=1, bias=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        y = self.first(x)
        z = self.deconv(torch.cat((x, y), 1))
        return [y, self.second(z)]


def head_cost(channels: int, positions: int, num_joints: int = NUM_JOINTS,
              deconv_channels: int | None = None, num_blocks: int = NUM_BLOCKS
              ) -> tuple[int, int]:
    """(params, MACs) of ``HigherHead`` for ``positions`` output positions at 1/4 (h * w)."""
    c, j = channels, num_joints
    cd = c if deconv_channels is None else deconv_channels
    up = 4 * positions  # positions at 1/2
    params = (c * 2 * j + 2 * j) + (c + 2 * j) * cd * 16 + 2 * cd \
        + num_blocks * (2 * 9 * cd * cd + 4 * cd) + (cd * j + j)
    macs = c * 2 * j * positions + (c + 2 * j) * cd * 16 * up \
        + num_blocks * 2 * 9 * cd * cd * up + cd * j * up
    return params, macs
