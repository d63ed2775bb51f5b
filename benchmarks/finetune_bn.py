"""Why fine-tuning lowered the seg models (issue 20): the val score of a fine-tuned network with
the BN running averages the training left (the old behaviour) against the same weights with BN
statistics recomputed on the calibration images (precise BN, what fine-tuning now does).

The inherited weights are a subnet of a finished run's supernet (``--checkpoint``), calibrated as
the search calibrates; without a checkpoint, a subnet trained ``--pretrain`` steps from scratch
stands in for them. The fine-tune recipe is ``finetune.<task>`` of the parameters.

    .venv/bin/python benchmarks/finetune_bn.py --task seg --arch hrnet \\
        [--checkpoint results/seg/supernet/model.pt] [--pretrain 100] [--finetune 50]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.nets.export import export_subnet  # noqa: E402
from pipeline.nets.supernet import SuperNet  # noqa: E402
from pipeline.space.registry import resolve  # noqa: E402
from pipeline.stages import build  # noqa: E402
from pipeline.train.loop import train  # noqa: E402
from pipeline.train.runtime import TrainRun  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("seg", "pose"), default="seg")
    ap.add_argument("--params", type=Path, default=Path("params/default.yaml"))
    ap.add_argument("--arch", default="hrnet", help="hrnet, smallest, largest or a .json file")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a finished run's supernet")
    ap.add_argument("--pretrain", type=int, default=100,
                    help="steps from scratch standing in for the supernet (no --checkpoint)")
    ap.add_argument("--finetune", type=int, default=None, help="default: finetune.<task>")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_params(a.params)
    task = build.task_from_config(a.task, cfg)
    arch = resolve(a.arch, a.task)
    calib = build.load_calibration(task, cfg, "cpu")
    ft = getattr(cfg.finetune, a.task)
    ft = dataclasses.replace(ft, iterations=a.finetune or ft.iterations, checkpoint_every=10**6)
    run = TrainRun(seed=0, device="cpu", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        if a.checkpoint is not None:
            sup = build.load_supernet(a.task, cfg, a.checkpoint, "cpu")
            sup.set_arch(arch)
            source = f"supernet {a.checkpoint}"
        else:
            sup = SuperNet(a.task, int(cfg.task(a.task).width), task.num_outputs, seed=0)
            sup.set_arch(arch)
            pre = dataclasses.replace(getattr(cfg.teacher, a.task), iterations=a.pretrain,
                                      checkpoint_every=10**6)
            train(task, sup, pre, Path(tmp) / "pre", run=run)
            source = f"{a.pretrain} steps from scratch"
        calib.calibrate(sup)
        net = export_subnet(sup.eval()).eval()
        ev = lambda split: task.evaluate(net, split, "cpu", int(ft.batch_size))["score"]  # noqa: E731
        inherited = ev("val")
        train(task, net, ft, Path(tmp) / "ft", split="trainfull", run=run)
        net.eval()
        stale = ev("val")
        calib.calibrate(net)
        net.eval()
        precise = ev("val")
    print(f"{a.task} {a.arch} ({arch.arch_id}), inherited weights: {source}; fine-tune "
          f"{ft.iterations} steps {ft.optimizer.name} lr {ft.optimizer.lr}")
    print(f"val {task.metric}: inherited {inherited:.4f} | fine-tuned, BN running averages "
          f"{stale:.4f} | fine-tuned, precise BN {precise:.4f}   ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
