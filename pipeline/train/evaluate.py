"""Quick checks of trained networks that the training stages record in their metrics.

A supernet's BN statistics are a blend over every subnet trained, so a subnet is evaluated after
BN calibration (pipeline.nets.calibrate) on a fixed list of un-augmented training images.
"""
from __future__ import annotations

from typing import Any

import torch

from pipeline.evaluate import evaluate_subnet  # noqa: F401 (re-exported: the stages' checks)
from pipeline.nets.calibrate import CalibrationSet, image_batches

#: Calibration images of the stages' own checks (the search phase has its own setting).
CHECK_CALIBRATION_IMAGES = 16


def calibration_set(task: Any, device: torch.device | str, num_images: int, seed: int
                    ) -> CalibrationSet:
    """The task's fixed calibration images (train split, un-augmented) on ``device``, as one
    batch when they share a size; images of any size are cropped to a multiple of 32."""
    subset = task.calibration_dataset(num_images, seed)
    images = [subset[i]["image"] for i in range(len(subset))]
    return CalibrationSet(list(subset.indices), image_batches(images, len(images), device))

