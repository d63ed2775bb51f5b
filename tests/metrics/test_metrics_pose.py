"""Heatmap decoding, flip test, OKS NMS and the COCO evaluation wrapper."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.heatmaps import generate_heatmaps
from pipeline.metrics.pose import (coco_keypoint_eval, flip_back, get_final_preds, get_max_preds,
                                   oks_nms)

COCO_GT = Path(__file__).resolve().parents[3] / "shared/data/coco_sample/annotations/" \
    "person_keypoints_sample.json"


def test_max_preds_and_quarter_offset():
    hm = np.zeros((1, 2, 8, 6), dtype=np.float32)
    hm[0, 0, 3, 2] = 1.0
    hm[0, 0, 3, 3] = 0.5   # right neighbour higher -> +0.25 in x
    hm[0, 0, 2, 2] = 0.2   # upper neighbour higher -> -0.25 in y
    coords, maxvals = get_max_preds(hm)
    assert coords[0, 0].tolist() == [2, 3] and maxvals[0, 0, 0] == 1.0
    assert coords[0, 1].tolist() == [0, 0] and maxvals[0, 1, 0] == 0.0
    # centre = heatmap centre and scale*200 = heatmap width: identity up to the centre offset
    preds, _ = get_final_preds(hm, np.array([[3.0, 4.0]]), np.array([[6 / 200, 8 / 200]]))
    np.testing.assert_allclose(preds[0, 0], [2.25, 2.75], atol=1e-5)


def test_subpixel_targets_decode_close():
    joints = np.array([[37.3, 81.9]] * 17)
    hm, _ = generate_heatmaps(joints, np.ones(17), (128, 96), (32, 24))
    preds, _ = get_final_preds(hm[None], np.array([[48.0, 64.0]]), np.array([[96 / 200, 128 / 200]]))
    assert np.abs(preds[0] - joints).max() <= 4 * 0.25 + 1e-6


def test_flip_back_swaps_and_mirrors():
    x = torch.arange(2 * 17 * 2 * 3, dtype=torch.float32).reshape(2, 17, 2, 3)
    y = flip_back(x)
    assert torch.equal(y[:, 1], x[:, 2].flip(-1)) and torch.equal(y[:, 0], x[:, 0].flip(-1))
    assert torch.equal(flip_back(y), x)


def test_oks_nms_suppresses_duplicates():
    base = np.zeros((17, 3))
    base[:, 0], base[:, 1], base[:, 2] = np.arange(17) * 5, np.arange(17) * 3, 1
    near = base.copy()
    near[:, 0] += 0.5
    far = base.copy()
    far[:, 0] += 200
    poses = [{"keypoints": base, "score": 0.9, "area": 5000.0},
             {"keypoints": near, "score": 0.8, "area": 5000.0},
             {"keypoints": far, "score": 0.7, "area": 5000.0}]
    assert oks_nms(poses, 0.9) == [0, 2]
    assert oks_nms([], 0.9) == []


@pytest.mark.shared_data
def test_coco_eval_perfect_and_quiet(capsys):
    import json
    gt = json.loads(COCO_GT.read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in gt["annotations"] if a["num_keypoints"] > 0]
    stats = coco_keypoint_eval(COCO_GT, results)
    assert set(stats) == {"AP", "AP50", "AP75", "APM", "APL", "AR"}
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""
    assert coco_keypoint_eval(gt, [])["AP"] == 0.0
    one_image = coco_keypoint_eval(gt, results[:1], image_ids=[785])
    assert one_image["AP"] == pytest.approx(1.0)
