"""Training data pipeline throughput vs. a CPU W8 training step.

Prints images/second of the augmented training loaders (2 workers) for both tasks at the paper
crop sizes (seg 512x1024 from 1024x2048 frames, pose 256x192 from COCO-sized images) and at the
built-in synthetic defaults, next to the images/second of one W8 supernet (largest subnet) training
step (forward + loss + backward) at the same input size. The loader must be the faster of the two.

Usage: .venv/bin/python benchmarks/bench_data.py [--batches 6] [--step-threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.data.synth import generate_cityscapes, generate_coco
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_sample"


def loader_rate(task, batch_size: int, batches: int, workers: int = 2) -> float:
    ds = task.dataset("trainfull", train=True)
    # Sampling with replacement: tiny sample sets still yield as many batches as asked for.
    sampler = torch.utils.data.RandomSampler(ds, replacement=True,
                                             num_samples=batch_size * (batches + 1),
                                             generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=task.collate)
    it = iter(loader)
    next(it)  # worker start-up is not counted
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def step_rate(task, batch_size: int, steps: int = 2, warmup: int = 1) -> float | None:
    try:
        from pipeline.nets.supernet import SuperNet
    except ImportError:
        return None
    model = SuperNet(task.name, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ds = task.dataset("trainfull", train=True)
    batch = task.collate([ds[i % len(ds)] for i in range(batch_size)])
    times = []
    for _ in range(steps + warmup):
        t = time.perf_counter()
        opt.zero_grad()
        task.loss(model(batch["image"]), batch).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch_size / min(times[warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--step-threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.step_threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        generate_cityscapes(tmp / "cs_paper", 0, num_train=6, num_val=1, size_hw=(1024, 2048))
        generate_cityscapes(tmp / "cs_small", 0, num_train=40, num_val=1)
        generate_coco(tmp / "coco_small", 0, num_train=40, num_val=1)
        if COCO_SAMPLE.is_dir():
            pose_paper = PoseTaskConfig(root=str(COCO_SAMPLE), train_split="sample",
                                        val_split="sample", search_fraction=0.0)
            pose_src = "real COCO sample JPEGs"
        else:
            generate_coco(tmp / "coco_paper", 0, num_train=20, num_val=1, size_hw=(480, 640))
            pose_paper = PoseTaskConfig.for_synthetic(tmp / "coco_paper", input_hw=(256, 192))
            pose_src = "synthetic 480x640"
        print(f"data generated in {time.perf_counter() - t:.1f} s (not part of the figures)")
        cases = [
            ("seg  512x1024 (synthetic 1024x2048 frames)",
             build_task("seg", SegTaskConfig(root=str(tmp / "cs_paper"), search_fraction=0.0)), 2,
             (1, 1, 0)),
            (f"pose 256x192 ({pose_src})", build_task("pose", pose_paper), 16, (8, 1, 1)),
            ("seg  64x128 (synthetic default 128x256)",
             build_task("seg", SegTaskConfig.for_synthetic(tmp / "cs_small")), 8, (8, 2, 1)),
            ("pose 128x96 (synthetic default 192x256)",
             build_task("pose", PoseTaskConfig.for_synthetic(tmp / "coco_small")), 16, (16, 2, 1)),
        ]
        print(f"{'case':46s} {'batch':>5s} {'loader img/s (2 workers)':>25s} "
              f"{'W8 step img/s':>14s} {'ratio':>6s}")
        # Step timing (batch, timed steps, warm-up steps): a 512x1024 W8 step takes about a
        # minute on 2 cores, so it is timed once.
        for name, task, bs, (step_bs, steps, warmup) in cases:
            lr = loader_rate(task, bs, args.batches)
            sr = step_rate(task, step_bs, steps, warmup)
            ratio = f"{lr / sr:6.1f}" if sr else "   n/a"
            srs = f"{sr:14.3f}" if sr else f"{'n/a':>14s}"
            print(f"{name:46s} {bs:5d} {lr:25.1f} {srs} {ratio}", flush=True)


if __name__ == "__main__":
    main()
