"""Fine-tuning never reports a model below its inherited weights: precise BN after training, and
the inherited weights kept when the fine-tuned ones score lower on the search split (issue 20)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import TrainConfig, make_section
from pipeline.cost import profile
from pipeline.finetune.records import FinetuneRecord
from pipeline.finetune.select import SelectedModel
from pipeline.finetune.tune import RECORD_FILE, finetune_model
from pipeline.nets.export import load_model
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import smallest

from test_finetune import _calibration, _task


def test_harmful_finetune_keeps_the_inherited_weights(tmp_path: Path) -> None:
    from pipeline.train.loop import train
    from pipeline.train.runtime import TrainRun

    task, hw = _task("seg", tmp_path)
    arch = smallest("seg")
    # Inherited weights worth keeping: the subnet trained a little first.
    sn = SuperNet("seg", width=8, seed=0)
    sn.set_arch(arch)
    train(task, sn, make_section(TrainConfig, epochs=1, iterations=20, batch_size=4,
                                 optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
                                 schedule={"name": "constant"}, checkpoint_every=1000),
          tmp_path / "pre", run=TrainRun(device="cpu", progress=False))
    # A learning rate far too large: the fine-tuned weights are worse on the search split.
    cfg = make_section(TrainConfig, epochs=1, iterations=4, batch_size=4,
                       optimizer={"name": "sgd", "lr": 5.0, "momentum": 0.9},
                       schedule={"name": "constant"}, checkpoint_every=1000)
    calib = _calibration(task)
    rec = finetune_model(task, sn,
                         SelectedModel("m", "seg", arch, "test"), cfg, calib.calibrate,
                         tmp_path / "out", tmp_path / "work", cost=profile(arch, "seg", 8, hw),
                         input_hw=hw, device="cpu", eval_batch_size=4)
    assert rec.search_finetuned < rec.search_inherited, rec
    assert rec.kept == "inherited"
    assert rec.finetuned == rec.inherited == rec.reloaded
    assert FinetuneRecord.load(tmp_path / "out" / RECORD_FILE).kept == "inherited"
    net = load_model(tmp_path / "out" / "model")
    assert task.evaluate(net, "val", "cpu", 4)["score"] == rec.inherited
