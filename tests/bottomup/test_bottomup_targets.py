"""Bottom-up targets: heatmaps at 1/4 and 1/2, the crowd / unlabelled-person mask, joint indices
into the tag maps."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.bottomup.targets import (bottomup_targets, ignore_mask, joint_indices,
                                       person_joints, render_heatmaps, resize_mask)
from bottomup_scenes import REAL_SAMPLES, load_real


def _ann(kps, iscrowd=0, segmentation=None):
    kps = np.asarray(kps, dtype=float).reshape(17, 3)
    return {"keypoints": kps.reshape(-1).tolist(), "num_keypoints": int((kps[:, 2] > 0).sum()),
            "iscrowd": iscrowd, "segmentation": segmentation or []}


def test_person_joints_skips_crowd_and_unlabelled():
    a = np.zeros((17, 3))
    a[0] = (10, 20, 2)
    a[5] = (30, 40, 1)
    joints = person_joints([_ann(a), _ann(np.zeros((17, 3))), _ann(a, iscrowd=1)])
    assert joints.shape == (1, 17, 3)
    assert joints[0, 0].tolist() == [10, 20, 1] and joints[0, 5, 2] == 1 and joints[0, 1, 2] == 0
    assert person_joints([]).shape == (0, 17, 3)


def test_heatmaps_peak_at_joint_at_each_resolution():
    joints = np.zeros((2, 17, 3))
    joints[0, 3] = (40.0, 24.0, 1)
    joints[1, 3] = (48.0, 24.0, 1)      # close: the maximum keeps both peaks at 1
    joints[1, 7] = (200.0, 200.0, 1)    # off the map: nothing drawn
    joints[0, 8] = (20.0, 20.0, 0)      # unlabelled: nothing drawn
    quarter = render_heatmaps(joints, (64, 96), (16, 24))
    half = render_heatmaps(joints, (64, 96), (32, 48))
    assert quarter[3, 6, 10] == pytest.approx(1.0) and quarter[3, 6, 12] == pytest.approx(1.0)
    assert half[3, 12, 20] == pytest.approx(1.0) and half[3, 12, 24] == pytest.approx(1.0)
    assert quarter[7].max() == 0 and quarter[8].max() == 0
    assert quarter.max() <= 1.0


def test_ignore_mask_covers_crowd_and_people_without_keypoints():
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    labelled = np.zeros((17, 3))
    labelled[0] = (50, 50, 2)
    from pycocotools import mask as mask_utils
    crowd_rle = mask_utils.encode(np.asfortranarray(
        np.pad(np.ones((5, 5), np.uint8), ((40, 19), (0, 59)))))
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    anns = [_ann(np.zeros((17, 3)), segmentation=square),
            _ann(labelled, segmentation=[[40, 40, 60, 40, 60, 60, 40, 60]]),
            _ann(np.zeros((17, 3)), iscrowd=1, segmentation=crowd_rle)]
    mask = ignore_mask(anns, 64, 64)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask[20, 20] == 0 and mask[42, 2] == 0     # unlabelled person, crowd
    assert mask[50, 50] == 1 and mask[5, 60] == 1     # labelled person, background
    assert resize_mask(mask, (16, 16))[5, 5] == 0


def test_joint_indices_point_into_tag_maps():
    joints = np.zeros((2, 17, 3))
    joints[0, 4] = (17.0, 9.0, 1)
    joints[1, 16] = (60.0, 30.0, 1)
    joints[1, 2] = (500.0, 30.0, 1)     # off the map
    idx = joint_indices(joints, (64, 64), (16, 16), max_people=3)
    assert idx.shape == (3, 17, 2)
    tags = np.zeros((17, 16, 16))
    tags[4, 2, 4] = 7.0                 # (9 / 4, 17 / 4) rounded
    tags[16, 8, 15] = 8.0
    assert tags.reshape(-1)[idx[0, 4, 0]] == 7.0 and idx[0, 4, 1] == 1
    assert tags.reshape(-1)[idx[1, 16, 0]] == 8.0 and idx[1, 16, 1] == 1
    assert idx[1, 2, 1] == 0 and idx[2, :, 1].sum() == 0 and idx[0, 0, 1] == 0


def test_bottomup_targets_shapes():
    joints = np.zeros((1, 17, 3))
    joints[0, 0] = (30, 30, 1)
    t = bottomup_targets(joints, np.ones((128, 96), np.float32), (128, 96))
    assert [h.shape for h in t["heatmaps"]] == [(17, 32, 24), (17, 64, 48)]
    assert [m.shape for m in t["masks"]] == [(32, 24), (64, 48)]
    assert t["joints"][0].shape == (30, 17, 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        bottomup_targets(joints, np.ones((10, 10)), (10, 10))


@pytest.mark.shared_data
def test_real_sample_mask_removes_unlabelled_people():
    if not REAL_SAMPLES["coco_sample"].is_file():
        pytest.skip("coco_sample not found")
    doc = load_real("coco_sample")
    for im in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        mask = ignore_mask(anns, im["height"], im["width"])
        empty = [a for a in anns if a["num_keypoints"] == 0]
        assert (mask == 0).any() == bool(empty)
        for a in empty:
            x, y, w, h = a["bbox"]
            box = mask[int(y):int(y + h) + 1, int(x):int(x + w) + 1]
            assert (box == 0).mean() > 0.2
