"""The search split streamed (kept decoded up to a byte budget, the rest decoded per pass, in a
persistent worker or in process) scores candidates exactly as the split held in memory did."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.data.stream import Streamed, nbytes
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
    one = nbytes(cached[0])
    # Nothing kept (all streamed), part kept (budget of 1.5 items: the first is kept), all kept.
    for workers, budget, kept in [(0, 0, 0), (2, 0, 0), (1, one * 3 // 2, 1), (1, 1 << 40, len(ds)),
                                  (0, one * 3 // 2, 1)]:
        s = Streamed(ds, workers=workers, cache_bytes=budget)
        for _ in range(2):  # the second pass reads the kept items and the same workers again
            got = task.evaluate(net, "search", "cpu", batch_size=2, dataset=s)
            assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), \
                (workers, budget)
        assert s.kept == kept, (workers, budget)


def test_streamed_keeps_order_and_length() -> None:
    data = [{"x": torch.tensor([i]), "i": i, "name": f"n{i}"} for i in range(7)]
    s = Streamed(data, workers=2, prefetch=1)
    assert len(s) == 7
    got = list(s)
    assert [g["i"] for g in got] == list(range(7))
    assert all(torch.equal(g["x"], d["x"]) and g["name"] == d["name"] for g, d in zip(got, data))
    with pytest.raises(ValueError):
        Streamed(data, workers=-1)


def test_only_the_items_beyond_the_budget_are_decoded_again() -> None:
    class Counting(list):
        reads: list[int] = []

        def __getitem__(self, i):
            self.reads.append(i)
            return list.__getitem__(self, i)

    data = Counting({"x": torch.zeros(4, dtype=torch.uint8), "i": i} for i in range(5))
    s = Streamed(data, workers=0, cache_bytes=8)  # two items of 4 bytes fit
    for _ in range(3):
        assert [g["i"] for g in s] == list(range(5))
    assert s.kept == 2
    # First pass: items 0-2 read to fill (2 kept, item 2 over the budget), 2-4 streamed; later
    # passes read 2-4 only.
    assert data.reads == [0, 1, 2, 2, 3, 4] + [2, 3, 4] * 2


@pytest.mark.slow
def test_memory_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """benchmarks/bench_search_memory.py, as the README runs it, at 64x128 with 1 and 2 search
    images: it measures every path and the streamed scores equal the cached ones."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_search_memory.py"
    cmd = [sys.executable, str(script), "--sizes", "1", "2", "--hw", "64", "128",
           "--data", str(tmp_path / "data")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = [line.split() for line in r.stdout.splitlines()
            if line.split()[:1] in (["stream"], ["stream0"], ["cached"])]
    assert [(row[0], row[1]) for row in rows] == [("stream", "1"), ("stream", "2"),
                                                  ("stream0", "1"), ("cached", "1")], r.stdout
    assert "peak RSS growth N=1 -> 2" in r.stdout and "scores identical: True" in r.stdout
    # The data made for these sizes is reused; other sizes are refused, not silently misread.
    r = subprocess.run(cmd[:3] + ["3"] + cmd[4:], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "give another --data folder" in r.stderr, r.stderr[-2000:]
