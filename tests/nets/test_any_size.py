"""Images of any size: evaluation pads to the multiple of 32 the network needs and crops the
output back, the metric counted at the label's resolution; ``prepare`` stops bad data (sizes,
label ids, empty splits, a train split too small for the calibration) with one line naming the
file, before any training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline import config as pc
from pipeline.data.cityscapes import IGNORE_INDEX, label_ids_to_train_ids
from pipeline.data.synth import generate_cityscapes, generate_coco
from pipeline.nets.supernet import SuperNet
from pipeline.stages.build import task_from_config, load_calibration
from pipeline.space.sample import smallest
from pipeline.stages import prepare

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid_cityscapes_layout"


def params(tmp: Path, name: str, **over) -> Path:
    doc = {"tasks": ["seg"], "data": {"builtin": False}, "seg": {"crop_size": [64, 64]},
           "calibration": {"images": 2, "batch_size": 2}, "tracking": {"enabled": False}}
    for k, v in over.items():
        doc[k] = {**doc.get(k, {}), **v}
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def net(task: str) -> SuperNet:
    m = SuperNet(task, width=8, seed=0)
    m.set_arch(smallest(task))
    return m.eval()


def labelled_pixels(task_obj, split: str) -> int:
    return sum(int((label_ids_to_train_ids(Image.open(s.label)) != IGNORE_INDEX).sum())
               for s in task_obj.samples(split))


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    generate_cityscapes(root / "cs", 0, num_train=10, num_val=2, size_hw=(72, 100))
    generate_coco(root / "coco", 0, num_train=10, num_val=3, size_hw=(90, 130))
    return root


def test_seg_evaluation_on_odd_sizes_counts_at_label_resolution(odd):
    cfg = pc.load_params(params(odd, "seg", seg={"root": str(odd / "cs")}))
    task = task_from_config("seg", cfg)
    model = net("seg")
    load_calibration(task, cfg, "cpu").calibrate(model)
    res = task.evaluate(model, "val", "cpu", batch_size=2)
    assert res["num_images"] == 2
    assert res["num_pixels"] == labelled_pixels(task, "val")  # 72x100 labels, not 96x128
    assert 0.0 <= res["score"] <= 1.0


def test_pose_evaluation_on_odd_sized_images(odd):
    p = params(odd, "pose", pose={"root": str(odd / "coco"), "det_file": str(
        odd / "coco" / "person_detection_results" / "COCO_val2017_detections_synth.json")})
    doc = yaml.safe_load(p.read_text())
    doc["tasks"] = ["pose"]
    p.write_text(yaml.safe_dump(doc))
    cfg = pc.load_params(p)
    task = task_from_config("pose", cfg)
    model = SuperNet("pose", width=8, seed=0)
    model.set_arch(smallest("pose"))
    load_calibration(task, cfg, "cpu").calibrate(model)
    res = task.evaluate(model, "val", "cpu", batch_size=4)
    assert res["num_persons"] > 0 and res["num_results"] > 0
    assert 0.0 <= res["score"] <= 1.0


@pytest.mark.shared_data
def test_seg_on_real_480x360_frames(tmp_path):
    """Real CamVid frames (360x480: 360 is not a multiple of 32) through prepare, calibration
    on its training frames and evaluation."""
    p = params(tmp_path, "camvid", seg={"root": str(CAMVID), "search_fraction": 0.5})
    assert prepare.main(["--params", str(p), "--task", "seg", "--out",
                         str(tmp_path / "data")]) == 0
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["splits"]["val"]["count"] == 3
    cfg = pc.load_params(p)
    task = task_from_config("seg", cfg)
    assert Image.open(task.samples("val")[0].image).size == (480, 360)
    model = net("seg")
    calib = load_calibration(task, cfg, "cpu")
    assert {tuple(b.shape[-2:]) for b in calib.batches} == {(352, 480)}
    calib.calibrate(model)
    res = task.evaluate(model, "val", "cpu", batch_size=1)
    assert res["num_pixels"] == labelled_pixels(task, "val") > 0


# -- prepare stops bad data before any training ------------------------------------------------

@pytest.fixture()
def small_seg(tmp_path):
    generate_cityscapes(tmp_path / "cs", 0, num_train=10, num_val=2, size_hw=(72, 100))
    return tmp_path


def run_prepare(tmp: Path, capsys, **over) -> tuple[int, list[str]]:
    p = params(tmp, "bad", seg={"root": str(tmp / "cs"), **over.pop("seg", {})}, **over)
    rc = prepare.main(["--params", str(p), "--task", "seg", "--out", str(tmp / "data")])
    return rc, capsys.readouterr().err.strip().splitlines()


def first_val(tmp: Path):
    return task_from_config("seg", pc.load_params(params(tmp, "t", seg={"root": str(tmp / "cs")}))
                      ).samples("val")[0]


@pytest.mark.parametrize("damage, message", [
    ("label_size", "does not match its image"),
    ("label_ids", "label ids [200] are not Cityscapes label ids"),
    ("label_rgb", "label has mode RGB"),
    ("tiny", "image of 20x100 is smaller than 32 pixels a side"),
])
def test_prepare_stops_bad_seg_files_naming_them(small_seg, capsys, damage, message):
    s = first_val(small_seg)
    lab = np.asarray(Image.open(s.label))
    if damage == "label_size":
        Image.fromarray(lab[:50]).save(s.label)
    elif damage == "label_ids":
        lab = lab.copy()
        lab[0, 0] = 200
        Image.fromarray(lab).save(s.label)
    elif damage == "label_rgb":
        Image.fromarray(np.stack([lab] * 3, -1)).save(s.label)
    else:
        Image.fromarray(np.asarray(Image.open(s.image))[:20]).save(s.image)
        Image.fromarray(lab[:20]).save(s.label)
    rc, err = run_prepare(small_seg, capsys)
    assert rc == 2 and len(err) == 1, err
    assert message in err[0] and (s.label.name in err[0] or s.image.name in err[0]), err


def test_prepare_stops_a_train_split_too_small_for_calibration(small_seg, capsys):
    rc, err = run_prepare(small_seg, capsys, calibration={"images": 50})
    assert rc == 2 and len(err) == 1
    assert "calibration.images = 50 but the train split of seg has only" in err[0]
    assert str(small_seg / "cs") in err[0]
    assert not (small_seg / "data" / "manifest.json").exists()


def test_prepare_stops_an_empty_val_split(small_seg, capsys):
    (small_seg / "cs" / "val.lst").write_text("")
    rc, err = run_prepare(small_seg, capsys)
    assert rc == 2 and len(err) == 1 and "val" in err[0], err
