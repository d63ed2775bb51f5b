"""Fine-tuning a selected subnet: inherited-weight metric, training with the one loop, export,
reload from the saved files alone (tiny built-in data, W8, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cost import profile
from pipeline.data.synth import generate_cityscapes, generate_coco
from pipeline.nets.export import load_model
from pipeline.nets.supernet import SuperNet
from pipeline.finetune.tune import RECORD_FILE, export_selected, finetune_model
from pipeline.finetune.records import FinetuneRecord
from pipeline.finetune.select import SelectedModel
from pipeline.nets.calibrate import CalibrationSet
from pipeline.space.sample import sample_arch, smallest
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task
from pipeline.config import SupernetTrainConfig, TrainConfig, make_section



def _task(name: str, root: Path):
    if name == "seg":
        generate_cityscapes(root / "cs", 0, num_train=16, num_val=4, size_hw=(64, 128))
        return build_task("seg", SegTaskConfig.for_synthetic(
            root / "cs", crop_hw=(64, 64), base_size=128, ohem_min_kept=512)), (64, 64)
    generate_coco(root / "coco", 0, num_train=12, num_val=3, size_hw=(128, 128))
    return build_task("pose", PoseTaskConfig.for_synthetic(root / "coco")), (128, 96)


def _calibration(task) -> CalibrationSet:
    sub = task.calibration_dataset(4, 0)
    return CalibrationSet.from_images(list(sub.indices),
                                      torch.stack([sub[i]["image"] for i in range(len(sub))]))


def _cfg(iterations: int, kind: type = TrainConfig) -> TrainConfig:
    return make_section(kind, epochs=1, iterations=iterations, batch_size=4,
                        optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
                        schedule={"name": "constant"}, checkpoint_every=1000)


def _run(task, hw, arch, out, work, iterations, split="trainfull"):
    sn = SuperNet(task.name, width=8, seed=0)
    sel = SelectedModel("m", task.name, arch, "test")
    rec = finetune_model(task, sn, sel, _cfg(iterations), _calibration(task).calibrate, out, work,
                         cost=profile(arch, task.name, 8, hw), input_hw=hw, device="cpu",
                         eval_batch_size=4, split=split)
    return rec


def test_seg_finetune_improves_and_reloads_exactly(tmp_path):
    task, hw = _task("seg", tmp_path)
    arch = smallest("seg")
    rec = _run(task, hw, arch, tmp_path / "out", tmp_path / "work", 20)
    assert rec.finetuned > rec.inherited + 0.02, (rec.inherited, rec.finetuned)
    assert rec.reloaded == rec.finetuned
    assert rec.iterations == 20 and rec.metric == "mIoU"
    assert FinetuneRecord.load(tmp_path / "out" / RECORD_FILE) == rec
    # The saved model alone rebuilds the network and reproduces the reported metric exactly.
    net = load_model(tmp_path / "out" / "model")
    assert net.arch == arch and net.meta["input_hw"] == list(hw)
    assert task.evaluate(net, "val", "cpu", 4)["score"] == rec.finetuned
    # A rerun with the same work directory resumes the finished training: same figures.
    again = _run(task, hw, arch, tmp_path / "out2", tmp_path / "work", 20)
    assert (again.inherited, again.finetuned) == (rec.inherited, rec.finetuned)


def test_pose_finetune_mechanics(tmp_path):
    task, hw = _task("pose", tmp_path)
    arch = sample_arch(np.random.default_rng(3), 0.5, (2, 3), "pose")
    rec = _run(task, hw, arch, tmp_path / "out", tmp_path / "work", 3, split="train")
    assert rec.metric == "AP" and rec.reloaded == rec.finetuned
    doc = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert doc["task"] == "pose" and doc["arch_id"] == arch.arch_id
    net = load_model(tmp_path / "out" / "model")
    assert task.evaluate(net, "val", "cpu", 4)["score"] == rec.finetuned
    assert rec.gflops == pytest.approx(profile(arch, "pose", 8, hw).gflops)


def test_exported_subnet_matches_calibrated_supernet(tmp_path):
    task, _ = _task("seg", tmp_path)
    sn = SuperNet("seg", width=8, seed=0)
    arch = smallest("seg")
    net = export_selected(sn, SelectedModel("m", "seg", arch, "test"), _calibration(task).calibrate)
    x = torch.randn(1, 3, 64, 64)
    sn.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), sn(x), atol=1e-5)


def test_groups_are_refused(tmp_path):
    task, hw = _task("seg", tmp_path)
    sel = SelectedModel("m", "seg", smallest("seg"), "test")
    with pytest.raises(ValueError, match="fixed architecture"):
        finetune_model(task, SuperNet("seg", width=8), sel, _cfg(1, SupernetTrainConfig),
                       lambda m: None, tmp_path / "o", tmp_path / "w", cost=None, input_hw=hw,
                       device="cpu", eval_batch_size=4)
