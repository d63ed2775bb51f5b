"""``scalenas data ...``: generate the built-in synthetic datasets.

``scalenas data synth --out DIR --seed 0`` writes DIR/cityscapes (Cityscapes layout) and DIR/coco
(COCO keypoints layout) plus DIR/SYNTH.json; ``--task seg|pose`` makes only one. The same seed
gives byte-identical files. DIR is built aside and moved into place at the end.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pipeline.data.synth import POSE_DIR, SEG_DIR, generate_all
from pipeline.argtypes import seed_arg


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _size_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x256, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"image size must be at least 32x32, got {text!r}")
    return h, w


def cmd_synth(args: argparse.Namespace) -> int:
    tasks = (args.task,) if args.task else ("seg", "pose")
    start = time.perf_counter()
    record = generate_all(Path(args.out), args.seed, tasks,
                          seg_train=args.seg_train, seg_val=args.seg_val, seg_size_hw=args.seg_size,
                          pose_train=args.pose_train, pose_val=args.pose_val,
                          pose_size_hw=args.pose_size)
    took = time.perf_counter() - start
    for task, rec in record["tasks"].items():
        print(f"{task}: {rec['num_train']} train / {rec['num_val']} val images "
              f"{rec['size_hw'][0]}x{rec['size_hw'][1]} -> {Path(args.out) / rec['root']}")
    print(f"seed {args.seed}, {took:.1f} s")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``data`` group to the ``scalenas`` command."""
    group = subparsers.add_parser("data", help="datasets: generate the built-in synthetic data",
                                  description=__doc__)
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("synth", help="generate synthetic Cityscapes-layout and COCO-layout data",
                       description=__doc__)
    p.add_argument("--out", required=True, help=f"output folder (gets {SEG_DIR}/, {POSE_DIR}/)")
    p.add_argument("--seed", type=seed_arg, default=0, help="generator seed (default 0)")
    p.add_argument("--task", choices=("seg", "pose"), help="generate only this task")
    p.add_argument("--seg-train", type=_count, default=120, help="segmentation train images")
    p.add_argument("--seg-val", type=_count, default=30, help="segmentation val images")
    p.add_argument("--seg-size", type=_size_hw, default=(128, 256), help="HxW (default 128x256)")
    p.add_argument("--pose-train", type=_count, default=150, help="pose train images")
    p.add_argument("--pose-val", type=_count, default=40, help="pose val images")
    p.add_argument("--pose-size", type=_size_hw, default=(192, 256), help="HxW (default 192x256)")
    p.set_defaults(func=cmd_synth)
