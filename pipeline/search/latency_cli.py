"""``scalenas latency build|predict``: measure a per-component latency table, sum it for an ARCH.

``build --task seg --width 32 --input 512x1024 --device cpu -o TABLE.json`` times every component
on this machine (:mod:`pipeline.search.latency`). ``predict ARCH --table TABLE.json`` prints the
predicted end-to-end latency of the exported, optimized network; a table of another device or
input size is refused with one line naming both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.space.arch import TASK_NAMES


def _count(least: int, what: str):
    """An argparse type: an integer of at least ``least`` (``what`` says which)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = least - 1
        if v < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive = _count(1, "a positive integer")
_threads = _count(0, "a positive number of threads (0: torch's default)")


def cmd_build(args: argparse.Namespace) -> int:
    import torch

    from pipeline.nets.export_cli import parse_hw

    from .latency import LatencyError, build_table, save_table

    if args.device != "cpu":
        raise LatencyError(f"--device {args.device}: only cpu tables are measured so far")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    table = build_table(args.task, args.width, parse_hw(args.input), args.repeats,
                        progress=lambda m: print(m, file=sys.stderr))
    save_table(args.output, table)
    print(f"{args.output}: {len(table['entries'])} entries, fixed "
          f"{table['entries']['fixed'] * 1e3:.1f} ms, device {table['device']['fingerprint']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from pipeline.nets.export_cli import parse_hw
    from pipeline.space.registry import resolve

    from .latency import check_table, load_table, predict_latency

    table = load_table(args.table)
    if args.threads:
        torch.set_num_threads(args.threads)
    hw = parse_hw(args.input) if args.input else tuple(table["input_hw"])
    width = args.width or table["width"]
    task = args.task or table["task"]
    check_table(table, task, width, hw)
    arch = resolve(args.arch, task)
    ms = predict_latency(table, arch) * 1e3
    print(f"{arch.arch_id}: {ms:.1f} ms predicted ({task} W{width} {hw[0]}x{hw[1]}, "
          f"{table['device']['cpu']})")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    g = subparsers.add_parser("latency", help="measured latency lookup table",
                              description=__doc__)
    sub = g.add_subparsers(dest="command", metavar="COMMAND")
    g.set_defaults(group_parser=g)
    b = sub.add_parser("build", help="measure the table on this machine")
    b.add_argument("--task", choices=TASK_NAMES, required=True)
    b.add_argument("--width", type=_positive, default=32)
    b.add_argument("--input", required=True, metavar="HxW")
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeats", type=_positive, default=5, help="timed runs per component (median)")
    b.add_argument("--threads", type=_threads, default=0, help="torch threads (default: torch's)")
    b.add_argument("-o", "--output", type=Path, default=Path("latency.json"))
    b.set_defaults(func=cmd_build)
    p = sub.add_parser("predict", help="sum the table for an architecture")
    p.add_argument("arch", help="hrnet, largest, smallest, a .json or a release .npy")
    p.add_argument("--table", type=Path, default=Path("latency.json"))
    p.add_argument("--task", choices=TASK_NAMES, default=None)
    p.add_argument("--width", type=_positive, default=None)
    p.add_argument("--input", default=None, metavar="HxW", help="default: the table's")
    p.add_argument("--threads", type=_threads, default=0)
    p.set_defaults(func=cmd_predict)
