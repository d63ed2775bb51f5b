"""Confusion-matrix segmentation metrics (mIoU with per-class IoU)."""
from __future__ import annotations

from typing import Sequence

import torch


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
    p = pred.reshape(-1).long()
    t = label.reshape(-1).long()
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"label values outside 0..{num_classes - 1} (and not {ignore_index})")
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class outside 0..{num_classes - 1}")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).cpu()


class ConfusionMeter:
    """Accumulates a confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        self.matrix += confusion_matrix(pred, label, self.num_classes, self.ignore_index)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        return miou_from_confusion(self.matrix, class_names)


def miou_from_confusion(matrix: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """mIoU = mean over classes of TP / (TP + FP + FN). Classes absent from both ground truth and
    prediction (TP + FP + FN = 0) have no defined IoU: they are left out of the mean and listed in
    "absent_classes". Returns dict(miou, iou: {name: float or None}, absent_classes: [names],
    pixel_acc, num_pixels)."""
    m = matrix.double()
    n = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    total = m.sum()
    miou = float(iou[present].mean()) if present.any() else 0.0
    return {
        "miou": miou,
        "iou": {names[i]: (float(iou[i]) if present[i] else None) for i in range(n)},
        "absent_classes": [names[i] for i in range(n) if not present[i]],
        "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
        "num_pixels": int(total),
    }
