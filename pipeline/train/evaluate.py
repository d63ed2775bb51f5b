"""Quick checks of trained networks that the training stages record in their metrics.

A supernet's BN statistics are a blend over every subnet trained, so a subnet is evaluated after
BN calibration (pipeline.nets.calibrate) on a fixed list of un-augmented training images.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.nets.calibrate import CalibrationSet
from pipeline.space.arch import Architecture

from .loop import TaskLike

#: Calibration images of the stages' own checks (the search phase has its own setting).
CHECK_CALIBRATION_IMAGES = 16


def calibration_set(task: Any, device: torch.device | str, num_images: int, seed: int
                    ) -> CalibrationSet:
    """The task's fixed calibration images as one batch on ``device``."""
    subset = task.calibration_dataset(num_images, seed)
    images = torch.stack([subset[i]["image"] for i in range(len(subset))]).to(device)
    return CalibrationSet.from_images(list(subset.indices), images)


def evaluate_subnet(task: TaskLike, supernet: nn.Module, arch: Architecture, split: str,
                    device: torch.device | str, calib: CalibrationSet | None,
                    batch_size: int = 4) -> dict[str, Any]:
    """``task.evaluate`` of ``supernet`` running ``arch`` (after BN calibration when given).

    BN buffers of the layers that run are overwritten by the calibration: call it on a copy of
    the trained weights or after they were saved.
    """
    supernet.set_arch(arch)  # type: ignore[operator]
    if calib is not None:
        calib.calibrate(supernet)
    return task.evaluate(supernet, split, device, batch_size)  # type: ignore[attr-defined]
