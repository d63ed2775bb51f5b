"""The search split streamed (decoded per batch in worker processes) scores candidates exactly as
the split held in memory did."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.data.stream import Streamed
from pipeline.data.synth import generate_all
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import smallest
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_all(root, seed=0, seg_train=10, seg_val=2, pose_train=10, pose_val=2,
                 seg_size_hw=(64, 128), pose_size_hw=(96, 128))
    return root


@pytest.mark.parametrize("name", ["seg", "pose"])
def test_streamed_scores_equal_cached_ones_bit_for_bit(roots: Path, name: str) -> None:
    task = build_task(name, SegTaskConfig.for_synthetic(roots / "cityscapes", search_fraction=0.5)
                      if name == "seg" else
                      PoseTaskConfig.for_synthetic(roots / "coco", input_hw=(64, 64),
                                                   search_fraction=0.5))
    net = SuperNet(name, 8, task.num_outputs, seed=0).eval()
    net.set_arch(smallest(name))
    ds = task.dataset("search", train=False)
    assert len(ds) >= 3
    cached = [ds[i] for i in range(len(ds))]  # what the search jobs held before
    want = task.evaluate(net, "search", "cpu", batch_size=2, dataset=cached)
    for workers in (0, 2):
        got = task.evaluate(net, "search", "cpu", batch_size=2,
                            dataset=Streamed(ds, workers=workers))
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), workers


def test_streamed_keeps_order_and_length() -> None:
    data = [{"x": torch.tensor([i]), "i": i, "name": f"n{i}"} for i in range(7)]
    s = Streamed(data, workers=2, prefetch=1)
    assert len(s) == 7
    got = list(s)
    assert [g["i"] for g in got] == list(range(7))
    assert all(torch.equal(g["x"], d["x"]) and g["name"] == d["name"] for g, d in zip(got, data))
    with pytest.raises(ValueError):
        Streamed(data, workers=-1)
