"""Task plug-ins with a tiny stand-in network on small synthetic sets."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.data.synth import generate_all
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, Task, build_task, make_config
from pipeline.tasks.seg import ohem_cross_entropy


class TinyNet(nn.Module):
    """(N, 3, H, W) -> (N, C, H/4, W/4), 8 channels."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, out, 1))

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks") / "synth"
    generate_all(root, seed=0, seg_train=8, seg_val=3, pose_train=10, pose_val=4)
    return root


@pytest.fixture(scope="module")
def seg(roots):
    return build_task("seg", SegTaskConfig.for_synthetic(roots / "cityscapes"))


@pytest.fixture(scope="module")
def pose(roots):
    return build_task("pose", PoseTaskConfig.for_synthetic(roots / "coco"))


def test_protocol_and_factory(seg, pose, roots):
    assert isinstance(seg, Task) and isinstance(pose, Task)
    assert (seg.name, seg.num_outputs, seg.input_hw) == ("seg", 19, (64, 128))
    assert (pose.name, pose.num_outputs, pose.input_hw) == ("pose", 17, (128, 96))
    cfg = make_config("pose", root=str(roots), input_hw=[256, 192])
    assert cfg.input_hw == (256, 192)
    with pytest.raises(ValueError, match="unknown pose task option"):
        make_config("pose", root="x", bogus=1)
    with pytest.raises(ValueError, match="divisible by 32"):
        SegTaskConfig(root="x", crop_hw=(100, 128))
    with pytest.raises(ValueError, match="unknown task"):
        build_task("depth", {})


@pytest.mark.parametrize("name", ["seg", "pose"])
def test_train_step_and_evaluate(name, seg, pose):
    task = seg if name == "seg" else pose
    torch.manual_seed(0)
    model = TinyNet(task.num_outputs)
    loader = DataLoader(task.dataset("train", train=True), batch_size=4, shuffle=True,
                        collate_fn=task.collate)
    batch = next(iter(loader))
    assert batch["image"].shape[-2:] == task.input_hw
    out = model(batch["image"])
    loss = task.loss(out, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.body[0].weight.grad.abs().sum() > 0
    model.train()
    res = task.evaluate(model, "val", "cpu", batch_size=2)
    assert 0.0 <= res["score"] <= 1.0 and model.training  # mode restored
    assert ("miou" in res) if name == "seg" else ({"AP", "AP50", "AR"} <= set(res))


def test_seg_baseline_and_absent_classes(seg):
    res = seg.baseline("val")
    assert 0.0 < res["score"] < 0.2  # one class everywhere
    assert "wall" in res["absent_classes"] and res["iou"]["wall"] is None


def test_pose_baseline_is_a_floor(pose):
    res = pose.baseline("val")
    assert 0.0 <= res["score"] < 0.5


def test_workers_do_not_change_augmentation(seg):
    ds = seg.dataset("train", train=True)
    ds.set_epoch(2)
    a = next(iter(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=seg.collate)))
    b = next(iter(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=seg.collate)))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_splits_and_calibration(seg, pose):
    names = {s: {x.name for x in seg.samples(s)} for s in ("train", "search", "trainfull")}
    assert names["train"] | names["search"] == names["trainfull"]
    assert not names["train"] & names["search"] and names["search"]
    ids = {s: set(pose.image_ids(s)) for s in ("train", "search", "val")}
    assert not ids["train"] & ids["search"] and not ids["val"] & ids["train"]
    calib = seg.calibration_dataset(3, seed=1)
    assert len(calib) == 3 and calib.indices == seg.calibration_dataset(3, seed=1).indices


def test_ohem_keeps_hard_pixels():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = torch.tensor([[5.0, 5.0], [-5.0, 0.0]])
    label = torch.tensor([[[0, 0], [0, 255]]])
    full = ohem_cross_entropy(logits, label, thresh=0.9, min_kept=0)
    hard = torch.nn.functional.cross_entropy(logits, label, ignore_index=255, reduction="none")
    assert full == pytest.approx(float(hard[0, 1, 0]), rel=1e-5)  # only the misclassified pixel
