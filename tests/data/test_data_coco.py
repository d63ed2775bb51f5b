"""The COCO top-down loader on the real COCO and OCHuman samples, the ground-truth round trip
through the full inference path, and bad keypoint JSON."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.coco import (CocoKeypoints, annotation_path, detection_person_records,
                                gt_person_records, image_dir, load_keypoint_json)
from pipeline.data.errors import DataError
from pipeline.data.heatmaps import generate_heatmaps
from pipeline.data.keypoints import flip_permutation
from pipeline.metrics.pose import (coco_keypoint_eval, flip_test_average, get_final_preds,
                                   keypoint_results)
from pipeline.tasks import PoseTaskConfig, build_task

pytestmark = pytest.mark.shared_data
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
COCO = DATA / "coco_sample"
OCHUMAN = DATA / "ochuman_sample"
DETS = COCO / "person_detection_results/COCO_sample_detections_AP_H_56_person.json"


def _records(root):
    doc = load_keypoint_json(annotation_path(root, "sample"))
    return doc, gt_person_records(doc, image_dir(root, "sample"), aspect_ratio=192 / 256)


def test_coco_sample_persons_and_keypoints():
    doc, recs = _records(COCO)
    annotated = [a for a in doc["annotations"] if a["num_keypoints"] > 0]
    assert len(recs) == len(annotated) == 12
    by_key = {(a["image_id"], tuple(a["bbox"])): a for a in annotated}
    for r, a in zip(recs, sorted(annotated, key=lambda a: (a["image_id"], a["id"]))):
        kp = np.array(a["keypoints"], float).reshape(17, 3)
        np.testing.assert_array_equal(r.joints, kp[:, :2])
        np.testing.assert_array_equal(r.vis, np.minimum(kp[:, 2], 1))
        x, y, w, h = a["bbox"]
        np.testing.assert_allclose(r.center, [x + w / 2, y + h / 2], atol=1.0)
        assert abs(r.scale[0] / r.scale[1] - 0.75) < 1e-9  # input aspect ratio
        assert r.scale[1] * 200 >= 1.25 * min(h, 2000) - 1.5
        assert (r.image_id, tuple(a["bbox"])) in by_key


def test_ochuman_sample_loads():
    doc, recs = _records(OCHUMAN)
    assert len(recs) == sum(a["num_keypoints"] > 0 for a in doc["annotations"])
    ds = CocoKeypoints(recs, train=False, input_hw=(256, 192))
    item = ds[0]
    assert item["image"].shape == (3, 256, 192) and item["target"].shape == (17, 64, 48)
    assert item["target_weight"].shape == (17, 1)


def test_detection_boxes_threshold():
    doc = load_keypoint_json(annotation_path(COCO, "sample"))
    dets = json.loads(DETS.read_text())
    all_recs = detection_person_records(DETS, doc, image_dir(COCO, "sample"), 0.75)
    assert len(all_recs) == len(dets) == 118
    hi = detection_person_records(DETS, doc, image_dir(COCO, "sample"), 0.75, score_threshold=0.5)
    assert len(hi) == sum(d["score"] >= 0.5 for d in dets) and all(r.score >= 0.5 for r in hi)


def test_train_items_shapes_ranges_and_flip():
    _, recs = _records(COCO)
    ds = CocoKeypoints(recs, train=True, input_hw=(128, 96), seed=1)
    for i in range(4):
        item = ds[i]
        assert item["image"].shape == (3, 128, 96)
        assert item["target"].shape == (17, 32, 24) and item["target"].max() <= 1.0
        w = item["target_weight"][:, 0]
        assert set(w.unique().tolist()) <= {0.0, 1.0}
        assert (item["target"].flatten(1).max(1).values[w == 0] == 0).all()
    # A flipped sample: its joints are the mirrored, left/right-swapped joints of the plain crop.
    plain = CocoKeypoints(recs, train=True, input_hw=(128, 96), scale_factor=0.0,
                          rotation_factor=0.0, half_body_prob=0.0, flip=False, seed=5)
    flip = CocoKeypoints(recs, train=True, input_hw=(128, 96), scale_factor=0.0,
                         rotation_factor=0.0, half_body_prob=0.0, flip=True, seed=5)
    seen = 0
    for i in range(len(recs)):
        a, b = plain[i], flip[i]
        if torch.equal(a["image"], b["image"]):
            continue
        seen += 1
        ja, jb = a["joints"].numpy(), b["joints"].numpy()
        perm = flip_permutation()
        both = (ja[perm, 2] > 0) & (jb[:, 2] > 0)
        # HRNet's crop centre is at w/2 = 48, so the mirror axis is x = 48 (x -> 96 - x); the
        # image and the joints use the same matrix, which is what matters.
        np.testing.assert_allclose(jb[both, 0], 96 - ja[perm][both, 0], atol=1e-3)
        np.testing.assert_allclose(jb[both, 1], ja[perm][both, 1], atol=1e-3)
        np.testing.assert_allclose(b["image"][..., 1:].numpy(),
                                   a["image"].flip(2)[..., :-1].numpy(), atol=0.08)
    assert seen >= 2


def test_ground_truth_round_trip_ap():
    """Targets -> flip test -> decoding -> affine back -> OKS NMS -> pycocotools: AP >= 0.95."""
    _, recs = _records(COCO)
    ds = CocoKeypoints(recs, train=False, input_hw=(256, 192))
    perm = flip_permutation()
    out, out_flip, centers, scales, scores, ids = [], [], [], [], [], []
    for i in range(len(ds)):
        item = ds[i]
        j = item["joints"].numpy()
        out.append(item["target"].numpy())
        jf = j.copy()
        jf[:, 0] = 191 - jf[:, 0]
        jf = jf[perm]
        out_flip.append(generate_heatmaps(jf[:, :2], jf[:, 2], (256, 192), (64, 48))[0])
        centers.append(item["center"].numpy())
        scales.append(item["scale"].numpy())
        scores.append(item["score"])
        ids.append(item["image_id"])
    hm = flip_test_average(torch.from_numpy(np.stack(out)), torch.from_numpy(np.stack(out_flip)))
    preds, maxvals = get_final_preds(hm.numpy(), np.stack(centers), np.stack(scales))
    results = keypoint_results(preds, maxvals, np.stack(centers), np.stack(scales),
                               np.array(scores), ids)
    stats = coco_keypoint_eval(annotation_path(COCO, "sample"), results)
    assert stats["AP"] >= 0.95, stats


def test_pose_task_on_sample_with_detections(tmp_path):
    task = build_task("pose", PoseTaskConfig(root=str(COCO), train_split="sample",
                                             val_split="sample", input_hw=(128, 96),
                                             use_gt_boxes=False, det_score_threshold=0.3,
                                             detection_file=str(DETS.relative_to(COCO))))
    recs = task.records("val")
    assert len(recs) == sum(d["score"] >= 0.3 for d in json.loads(DETS.read_text()))


# ----------------------------------------------------------------------------- bad input


def _copy(tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(COCO, root)
    return root


@pytest.mark.parametrize("drop,where", [("keypoints", "annotations[0]"),
                                        ("num_keypoints", "annotations[0]"),
                                        ("file_name", "images[0]"), ("categories", "top level")])
def test_keypoint_json_missing_fields(tmp_path, drop, where):
    root = _copy(tmp_path)
    path = annotation_path(root, "sample")
    doc = json.loads(path.read_text())
    if drop == "categories":
        del doc["categories"]
    elif where.startswith("images"):
        del doc["images"][0][drop]
    else:
        del doc["annotations"][0][drop]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as exc:
        load_keypoint_json(path)
    msg = str(exc.value)
    assert "person_keypoints_sample.json" in msg and drop in msg and where.split("[")[0] in msg


def test_missing_root_split_and_image(tmp_path):
    cfg = dict(train_split="sample", val_split="sample", input_hw=(128, 96))
    with pytest.raises(DataError, match="nowhere.*dataset root not found"):
        build_task("pose", PoseTaskConfig(root=str(tmp_path / "nowhere"), **cfg)).records("val")
    with pytest.raises(DataError, match="person_keypoints_val2017.json.*not found"):
        build_task("pose", PoseTaskConfig(root=str(COCO), input_hw=(128, 96))).records("val")
    root = _copy(tmp_path)
    (root / "images/sample/000000000785.jpg").unlink()
    ds = build_task("pose", PoseTaskConfig(root=str(root), **cfg)).dataset("val", train=False)
    with pytest.raises(DataError, match="000000000785.jpg: image file not found"):
        ds[0]
