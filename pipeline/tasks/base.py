"""The task plug-in interface shared by training, BN calibration, candidate evaluation and
fine-tuning: a task supplies datasets, the loss, the metric and a trivial baseline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, default_collate


@runtime_checkable
class Task(Protocol):
    """A model for a task maps (N, 3, H, W) normalised images to (N, num_outputs, H/4, W/4)
    (bottom-up pose: the pair of its 1/4 and 1/2 maps).

    Optional: ``distill(student_output, teacher_output)``, the distillation loss of the task's
    output (default: the MSE of the whole output, pipeline.train.loop.kd_loss); ``facts``, the
    task's plain facts (pipeline.tasks.facts)."""

    name: str          # "seg", "pose" or "bottomup"
    num_outputs: int   # 19 classes / 17 heatmaps / 17 joints
    input_hw: tuple[int, int]  # training input (crop) size

    def dataset(self, split: str, train: bool) -> Dataset: ...

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module, split: str, device: str | torch.device = "cpu",
                 batch_size: int = 1) -> dict[str, Any]: ...

    def baseline(self, split: str, device: str | torch.device = "cpu") -> dict[str, Any]: ...

    def calibration_dataset(self, num_images: int, seed: int = 0) -> Subset: ...

    collate: Callable[[list[dict]], dict]


@dataclass(frozen=True)
class EvalData:
    """What ``scalenas eval`` evaluates on (each plug-in's ``for_evaluation`` builds its task).

    ``split`` is a split folder of the dataset (``val``, ``test``, ``val2017``...) or ``search``
    (the pipeline's held-out part of ``train_split``); ``train_split`` is the folder that BN
    calibration reads. ``flip`` None keeps the task's protocol default; ``input_hw`` is the
    network input of a top-down pose model; pose takes either ``det_file`` (detector boxes) or
    ``gt_boxes``.
    """

    root: str
    split: str
    train_split: str
    search_fraction: float = 0.2
    flip: bool | None = None
    input_hw: tuple[int, int] | None = None
    det_file: str | None = None
    gt_boxes: bool = False
    thresholds: tuple[tuple[str, float], ...] = ()


def collate(items: list[dict]) -> dict:
    """Default batching: tensors stacked, numbers to tensors, strings to lists."""
    return default_collate(items)


def calibration_subset(dataset: Dataset, num_images: int, seed: int = 0) -> Subset:
    """A fixed, recorded subset (sorted indices drawn from `seed`) for BN calibration."""
    n = len(dataset)
    k = min(int(num_images), n)
    idx = np.sort(np.random.default_rng([seed, 7]).choice(n, size=k, replace=False))
    return Subset(dataset, [int(i) for i in idx])


class ModeGuard:
    """Put a model in eval mode for the duration of a block and restore its previous mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
