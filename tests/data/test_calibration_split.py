"""BN calibration reads training images, never the search split the candidates are scored on
(scalenas.md section 5), plain or augmented, for the search and for the training stages' checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import config as pc
from pipeline.data.synth import generate_cityscapes, generate_coco
from pipeline.nets.calibrate import CalibrationError
from pipeline.stages.build import task_from_config, load_calibration
from pipeline.train.evaluate import calibration_set


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    # Odd sizes on purpose: calibration crops them to the multiple of 32 the network needs.
    generate_cityscapes(root / "cs", 0, num_train=20, num_val=2, size_hw=(72, 100))
    generate_coco(root / "coco", 0, num_train=20, num_val=2, size_hw=(90, 130))
    return root


def cfg_for(root: Path, task: str, images: int, augment: bool):
    doc = {"tasks": [task], "data": {"builtin": False},
           "seg": {"root": str(root / "cs"), "crop_size": [64, 64]},
           "pose": {"root": str(root / "coco")},
           "calibration": {"images": images, "batch_size": 4, "augment": augment},
           "tracking": {"enabled": False}}
    p = root / f"{task}_{images}_{augment}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return pc.load_params(p)


def split_names(task_obj, task: str, split: str) -> set[str]:
    if task == "seg":
        return {s.name for s in task_obj.samples(split)}
    return {str(i) for i in task_obj.image_ids(split)}


@pytest.mark.parametrize("task", ["seg", "pose"])
@pytest.mark.parametrize("augment", [False, True])
def test_calibration_list_never_in_the_search_split(data, task, augment):
    cfg = cfg_for(data, task, 12, augment)
    task_obj = task_from_config(task, cfg)
    calib = load_calibration(task_obj, cfg, "cpu")
    search, train = (split_names(task_obj, task, s) for s in ("search", "train"))
    assert search and calib.num_images == 12 and len(calib.names) == 12
    assert set(calib.names) <= train
    assert not set(calib.names) & search
    for b in calib.batches:
        assert b.shape[-2] % 32 == 0 and b.shape[-1] % 32 == 0
    if task == "seg" and not augment:  # plain 72x100 images cropped to 64x96
        assert {tuple(b.shape[-2:]) for b in calib.batches} == {(64, 96)}
    # Same list and crops in every job.
    again = load_calibration(task_from_config(task, cfg), cfg, "cpu")
    assert again.names == calib.names
    assert all((a == b).all() for a, b in zip(again.batches, calib.batches))


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_training_checks_calibrate_on_train_images_of_any_size(data, task):
    cfg = cfg_for(data, task, 4, False)
    task_obj = task_from_config(task, cfg)
    calib = calibration_set(task_obj, "cpu", 5, 0)
    train_ds = task_obj.dataset("train", train=False)
    search = split_names(task_obj, task, "search")
    from pipeline.stages.build import item_name
    names = {item_name(train_ds[i]) for i in calib.indices}
    assert len(names) and not names & search
    assert all(b.shape[-2] % 32 == 0 and b.shape[-1] % 32 == 0 for b in calib.batches)


def test_too_many_calibration_images_names_the_train_split(data):
    cfg = cfg_for(data, "seg", 500, False)
    with pytest.raises(CalibrationError, match="calibration.images = 500 exceeds the 16 images "
                                               "of the train split"):
        load_calibration(task_from_config("seg", cfg), cfg, "cpu")
