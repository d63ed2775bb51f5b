"""Confusion matrix and mIoU."""
from __future__ import annotations

import pytest
import torch

from pipeline.metrics.segmentation import ConfusionMeter, confusion_matrix, miou_from_confusion


def test_perfect_prediction_is_one():
    label = torch.randint(0, 19, (2, 16, 16))
    label[0, :2] = 255
    meter = ConfusionMeter(19)
    pred = label.clone()
    pred[label == 255] = 3  # ignored pixels do not count whatever is predicted
    meter.update(pred, label)
    res = meter.compute()
    assert res["miou"] == pytest.approx(1.0) and res["pixel_acc"] == 1.0


def test_known_confusion_hand_computed():
    # 3 classes. GT: 4 px of 0, 4 px of 1. Pred: class 0 -> [0,0,0,1], class 1 -> [1,1,1,0].
    label = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 255])
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 2])
    m = confusion_matrix(pred, label, 3)
    assert m.tolist() == [[3, 1, 0], [1, 3, 0], [0, 0, 0]]
    res = miou_from_confusion(m, ["a", "b", "c"])
    # IoU(a) = 3 / (3 + 1 + 1) = 0.6, IoU(b) = 0.6; c absent from GT and prediction -> left out
    assert res["iou"] == {"a": pytest.approx(0.6), "b": pytest.approx(0.6), "c": None}
    assert res["absent_classes"] == ["c"] and res["miou"] == pytest.approx(0.6)


def test_predicted_but_absent_in_gt_counts_as_zero():
    label = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 1])
    res = miou_from_confusion(confusion_matrix(pred, label, 2))
    assert res["iou"]["1"] == 0.0 and res["miou"] == pytest.approx((0.75 + 0.0) / 2)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 2)
    with pytest.raises(ValueError, match="label values"):
        confusion_matrix(torch.zeros(2), torch.tensor([0, 7]), 2)
