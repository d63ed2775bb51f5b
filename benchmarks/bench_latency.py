"""How well the latency lookup table predicts measured end-to-end latency.

Run: ``python benchmarks/bench_latency.py [--task seg --width 32 --input 512x1024 --subnets 20
--repeats 3 --rounds 2]``. Builds a table on this machine (or reads ``--table``), then for
``--subnets`` random subnets plus smallest, largest and HRNet measures the exported, optimized
network (:func:`pipeline.search.latency.end_to_end`, median of ``--repeats``) and compares it with
the table's prediction: Spearman rank correlation and mean absolute relative error, per round
(table rebuilt and networks re-measured each round), so the spread over rounds is shown.
Targets on this CPU: rho >= 0.9, error <= 10 %.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from pipeline.nets.export_cli import parse_hw
from pipeline.search.latency import build_table, check_table, end_to_end, load_table, predict_latency
from pipeline.space.sample import hrnet, largest, sample_arch, smallest

#: Paper-scale input size of each task (Cityscapes crop, COCO person crop).
PAPER_HW = {"seg": (512, 1024), "pose": (256, 192)}


def spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="seg", choices=("seg", "pose"))
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--input", default=None, help="HxW (default seg 512x1024, pose 256x192)")
    ap.add_argument("--subnets", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", default=None, help="use this table instead of building one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hw = parse_hw(args.input) if args.input else PAPER_HW[args.task]
    rng = np.random.default_rng(0)
    groups = [(p, d) for p in (0.2, 0.5, 0.8) for d in ([2, 3], [3, 4], [4, 5], [2, 5])]
    archs = {f"random{i}": sample_arch(rng, *groups[i % len(groups)], args.task)
             for i in range(args.subnets)}
    archs.update(smallest=smallest(args.task), largest=largest(args.task), hrnet=hrnet(args.task))
    print(f"{args.task} W{args.width} {hw[0]}x{hw[1]}, {len(archs)} networks, {args.threads} "
          f"threads, {args.rounds} rounds x median of {args.repeats}")
    rhos, errs = [], []
    for r in range(args.rounds):
        torch.manual_seed(r)
        if args.table:
            table = load_table(args.table)
            check_table(table, args.task, args.width, hw)
        else:
            table = build_table(args.task, args.width, hw, args.repeats)
        pred, meas = [], []
        for name, arch in archs.items():
            p = predict_latency(table, arch)
            m = end_to_end(arch, args.task, args.width, hw, args.repeats)
            pred.append(p)
            meas.append(m)
            print(f"  round {r} {name:9s} predicted {p * 1e3:8.1f} ms measured {m * 1e3:8.1f} ms "
                  f"({(p - m) / m:+.1%})", flush=True)
        rho = spearman(pred, meas)
        err = float(np.mean([abs(p - m) / m for p, m in zip(pred, meas)]))
        rhos.append(rho)
        errs.append(err)
        print(f"round {r}: Spearman rho {rho:.3f}, mean abs relative error {err:.1%}")
    spread = lambda v: f"{statistics.median(v):.3f} (range {min(v):.3f}-{max(v):.3f})"  # noqa: E731
    print(f"latency table: Spearman rho {spread(rhos)}, mean abs rel error {spread(errs)} "
          f"over {args.rounds} rounds (targets rho >= 0.9, error <= 0.10)")


if __name__ == "__main__":
    main()
