"""The built-in synthetic datasets: determinism, real loaders reading them, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.data.cityscapes import list_cityscapes
from pipeline.data.coco import annotation_path, load_keypoint_json
from pipeline.data.synth import generate_all, generate_cityscapes, generate_coco
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_all(root, seed=0, seg_train=10, seg_val=4, pose_train=12, pose_val=6)
    return root


def test_same_seed_same_bytes(synth, tmp_path):
    again = tmp_path / "again"
    generate_all(again, seed=0, seg_train=10, seg_val=4, pose_train=12, pose_val=6)
    assert _tree(again) == _tree(synth)
    other = tmp_path / "other"
    generate_coco(other, seed=1, num_train=2, num_val=1)
    assert _tree(other)["images/train2017/000000000001.png"] != \
        _tree(synth / "coco")["images/train2017/000000000001.png"]


def test_record_and_layout(synth):
    rec = json.loads((synth / "SYNTH.json").read_text())
    assert rec["seed"] == 0 and rec["version"] >= 1 and set(rec["tasks"]) == {"seg", "pose"}
    assert len(list_cityscapes(synth / "cityscapes", "train")) == 10
    assert (synth / "cityscapes/gtFine/val").is_dir()


def test_seg_scenes_have_many_classes_at_many_scales(synth):
    task = build_task("seg", SegTaskConfig.for_synthetic(synth / "cityscapes"))
    freq = task.class_frequencies("trainfull")
    present = np.nonzero(freq)[0]
    # road, sidewalk, building, pole, light/sign, vegetation, sky, person, car
    assert {0, 1, 2, 5, 8, 10, 11, 13} <= set(present.tolist())
    item = task.dataset("val", train=False)[0]
    assert item["image"].shape == (3, 128, 256)


def test_pose_people_follow_coco_format(synth):
    doc = load_keypoint_json(annotation_path(synth / "coco", "train2017"))
    anns = doc["annotations"]
    per_image = np.bincount([a["image_id"] for a in anns])
    assert per_image.max() >= 2  # several people in some images
    heights = [a["bbox"][3] for a in anns]
    assert max(heights) > 2.5 * min(heights)  # very different scales
    v = np.array([a["keypoints"] for a in anns]).reshape(-1, 17, 3)[:, :, 2]
    assert (v == 2).any() and (v == 1).any() and (v == 0).any()
    dets = json.loads((synth / "coco/person_detection_results/"
                       "COCO_val2017_detections_synth.json").read_text())
    assert dets and all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in dets)
    task = build_task("pose", PoseTaskConfig.for_synthetic(synth / "coco", use_gt_boxes=False))
    assert len(task.records("val")) == len(dets)


def test_cityscapes_size_parameter(tmp_path):
    generate_cityscapes(tmp_path / "cs", seed=2, num_train=1, num_val=1, size_hw=(64, 96))
    item = build_task("seg", SegTaskConfig.for_synthetic(tmp_path / "cs")).dataset(
        "val", train=False)[0]
    assert item["label"].shape == (64, 96)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--seed", "0", "--task", "pose",
                 "--pose-train", "2", "--pose-val", "1"]) == 0
    assert (out / "coco/annotations/person_keypoints_val2017.json").is_file()
    assert not (out / "cityscapes").exists()
    assert "pose: 2 train / 1 val" in capsys.readouterr().out
    # a folder that is not ours is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    assert main(["data", "synth", "--out", str(mine), "--task", "seg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine" in err[0] and (mine / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
