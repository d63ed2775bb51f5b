"""Training figures: supernet vs exported subnet per training step; supernet training throughput.

Run: ``python benchmarks/bench_train.py [--widths 8 32] [--repeats 3] [--throughput-iters 24]``.

1. One training step (forward + backward + SGD step, train mode) of the supernet running
   architecture A vs the exported standalone A, at the paper crop (seg 512x1024, pose 256x192),
   CPU, 2 threads, batch 1 (seg) / 2 (pose). A is ScaleNet-S1 / -P2 when the official files are at
   ../shared/masks, else a seeded sample of the middle group. The two are timed alternately and the
   medians compared (target: ratio <= 1.10). The machine may be shared: expect noise.
2. Images per second of supernet training (the real loop: data loading, grouped sampling,
   logging, checkpoints off) at W8 on the built-in data with the default parameters
   (params/default.yaml supernet section), 2 threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import config as pconfig
from pipeline.nets.export import export_subnet
from pipeline.nets.supernet import SuperNet
from pipeline.space.arch import Architecture
from pipeline.space.sample import sample_arch

REPO = Path(__file__).resolve().parents[1]
MASKS = REPO.parent / "shared" / "masks"
PAPER_INPUT = {"seg": (512, 1024), "pose": (256, 192)}
BATCH = {"seg": 1, "pose": 2}
OFFICIAL = {"seg": "seg_w32_S1.npy", "pose": "w32_256_P2.npy"}


def arch_a(task: str) -> tuple[str, Architecture]:
    path = MASKS / OFFICIAL[task]
    if path.is_file():
        from pipeline.space.official import load_official

        arch = load_official(path)
        if task == "pose":
            from pipeline.space.sample import enforce_pose

            arch = enforce_pose(arch)
        return path.stem, arch
    return "sampled p0.5 d[3,4]", sample_arch(np.random.default_rng(0), 0.5, [3, 4], task)


def step_fn(net: torch.nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer):
    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        opt.step()
        return time.perf_counter() - t
    return step


def bench_step(task: str, width: int, repeats: int) -> None:
    name, arch = arch_a(task)
    sup = SuperNet(task, width, seed=0)
    sup.set_arch(arch)
    alone = export_subnet(sup)
    sup.train(), alone.train()
    x = torch.randn(BATCH[task], 3, *PAPER_INPUT[task])
    s = step_fn(sup, x, torch.optim.SGD([p for p in sup.parameters()], lr=1e-6, momentum=0.9))
    a = step_fn(alone, x, torch.optim.SGD(alone.parameters(), lr=1e-6, momentum=0.9))
    s(), a()  # warm-up (allocations, momentum buffers)
    ts, ta = [], []
    for _ in range(repeats):
        ts.append(s())
        ta.append(a())
    ms, ma = statistics.median(ts), statistics.median(ta)
    print(f"train step {task} W{width} {PAPER_INPUT[task][0]}x{PAPER_INPUT[task][1]} "
          f"batch {BATCH[task]} arch {name}: supernet {ms:.3f} s, standalone {ma:.3f} s, "
          f"ratio {ms / ma:.3f} (target <= 1.10; median of {repeats})", flush=True)


def bench_throughput(task: str, iters: int, data_root: Path) -> None:
    from pipeline.train.loop import train
    from pipeline.stages.build import task_from_config
    from pipeline.train.runtime import TrainRun

    resolved = pconfig.load_resolved(REPO / "params" / "default.yaml")
    resolved[task]["root"] = str(data_root / ("cityscapes" if task == "seg" else "coco"))
    cfg = pconfig.from_dict(resolved)
    t = task_from_config(task, cfg)
    section = getattr(cfg.supernet, task)
    tcfg = dataclasses.replace(section, iterations=iters, kd_ratio=0.0, checkpoint_every=10**9)
    model = SuperNet(task, cfg.task(task).width, t.num_outputs, seed=0)
    with tempfile.TemporaryDirectory() as out:
        s = train(t, model, tcfg, out, run=TrainRun(device="cpu", progress=False))
    print(f"supernet training {task} W{cfg.task(task).width} (default data and groups, batch "
          f"{tcfg.batch_size}, no KD): {s.images_per_s:.2f} images/s over {s.iterations} "
          f"iterations ({s.seconds:.1f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--tasks", nargs="+", default=["seg", "pose"], choices=["seg", "pose"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--throughput-iters", type=int, default=24)
    ap.add_argument("--data", type=Path, default=None,
                    help="built-in data root (default: generate one into a temporary directory)")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if not args.skip_steps:
        for task in args.tasks:
            for w in args.widths:
                bench_step(task, w, args.repeats)
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory() as tmp:
            root = args.data
            if root is None:
                from pipeline.data.synth import generate_all

                root = Path(tmp) / "builtin"
                generate_all(root, 0)
            for task in args.tasks:
                bench_throughput(task, args.throughput_iters, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
