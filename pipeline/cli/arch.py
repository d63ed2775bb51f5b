"""``scalenas arch ...``: import/export release files, sample, show and profile architectures.

ARCH arguments are a registered name (``hrnet``, ``largest``, ``smallest``), a ``.json``
architecture document or a release ``.npy`` file. Output files are written atomically, and only
after the input has been fully read and checked.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.argtypes import seed_arg
from pipeline.space.arch import MODULE_NAMES, TASK_NAMES, Architecture
from pipeline.space.official import load_official, save_official
from pipeline.space.registry import NAMES, resolve
from pipeline.space.sample import sample_arch
from pipeline.tasks.facts import FACTS, task_facts

DEFAULT_WIDTH = 32


# -- argument types -----------------------------------------------------------------------------------
def _input_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 1024x2048), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return h, w


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _depth_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated depths (e.g. 2,3), got {text!r}") from None


def _probability(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None


# -- helpers ------------------------------------------------------------------------------------------
def _cost(arch: Architecture, task: str, width: int, input_hw: tuple[int, int],
          classes: int | None) -> Any:
    # Lazy: the cost model pulls in the network definition, which most commands do not need.
    cost = importlib.import_module("pipeline.cost")
    return cost.profile(arch, task=task, width=width, input_hw=input_hw, num_outputs=classes)


def _input_for(args: argparse.Namespace) -> tuple[int, int]:
    return args.input if args.input is not None else task_facts(args.task).profile_input_hw


def _edges(step: tuple[tuple[int, ...], ...]) -> str:
    edges = [f"{k}->{j}" for j, srcs in enumerate(step) for k in srcs]
    return ", ".join(edges) if edges else "-"


def describe(arch: Architecture) -> list[str]:
    """Readable lines: per module the depth of each branch and the fusion edges of each step."""
    lines = [f"architecture {arch.arch_id}: {arch.num_fusions()} fusion edges"]
    for name, m in zip(MODULE_NAMES, arch.modules):
        lines.append(f"  {name}: depths {list(m.depths)}")
        for s, step in enumerate(m.fusions):
            lines.append(f"    step {s}: {_edges(step)}")
    return lines


# -- commands -----------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    arch = load_official(args.file)
    arch.save(args.output)
    print(f"{args.file} -> {args.output} (id {arch.arch_id})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    arch = resolve(args.arch, args.task)
    save_official(arch, args.output)
    print(f"{args.arch} -> {args.output} (id {arch.arch_id})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    arch = sample_arch(rng, args.fusion, args.depth, args.task).with_meta(
        sampler={"task": args.task, "fusion_prob": args.fusion,
                 "depth_candidates": list(args.depth), "seed": args.seed})
    arch.save(args.output)
    print(f"sampled {arch.arch_id} -> {args.output}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    arch = resolve(args.arch, args.task)
    hw = _input_for(args)
    c = _cost(arch, args.task, args.width, hw, args.classes)
    if args.json:
        print(json.dumps({"arch": str(args.arch), "arch_id": arch.arch_id, "task": args.task,
                          "width": args.width, "input": list(hw), "classes": args.classes,
                          "params": int(c.params), "macs": int(c.macs),
                          "gflops": float(c.gflops)}))
    else:
        print(f"{arch.arch_id}  task {args.task}  W{args.width}  input {hw[0]}x{hw[1]}  "
              f"params {c.params:,}  GFLOPs {c.gflops:.3f} (MACs/2^30)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    arch = resolve(args.arch, args.task)
    hw = _input_for(args)
    lines = describe(arch)
    c = _cost(arch, args.task, args.width, hw, None)
    lines.append(f"cost ({args.task}, W{args.width}, input {hw[0]}x{hw[1]}): "
                 f"params {c.params:,}, GFLOPs {c.gflops:.3f} (MACs/2^30)")
    print("\n".join(lines))
    return 0


# -- registration -------------------------------------------------------------------------------------
def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``arch`` group to the ``scalenas`` command."""
    group = subparsers.add_parser("arch", help="architectures: import/export, sample, show, profile",
                                  description=__doc__)
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="command", metavar="COMMAND")
    arch_help = f"registered name ({', '.join(NAMES)}), .json document or release .npy file"

    p = sub.add_parser("import", help="convert a release .npy file to a JSON architecture")
    p.add_argument("file", help="release .npy architecture file")
    p.add_argument("-o", "--output", required=True, type=Path, help="output .json")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write an architecture as a release .npy file")
    p.add_argument("arch", help=arch_help)
    p.add_argument("-o", "--output", required=True, type=Path, help="output .npy")
    p.add_argument("--task", choices=TASK_NAMES, default="seg")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sample", help="draw an architecture with the official sampler")
    p.add_argument("--task", choices=TASK_NAMES, required=True)
    p.add_argument("--fusion", type=_probability, required=True, help="fusion probability")
    p.add_argument("--depth", type=_depth_list, required=True, help="depth candidates, e.g. 2,3")
    p.add_argument("--seed", type=seed_arg, required=True)
    p.add_argument("-o", "--output", required=True, type=Path, help="output .json")
    p.set_defaults(func=cmd_sample)

    for name, func, hlp in (("profile", cmd_profile, "params and FLOPs of an architecture"),
                            ("show", cmd_show, "readable summary of an architecture")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("arch", help=arch_help)
        p.add_argument("--task", choices=TASK_NAMES, required=(name == "profile"),
                       default=None if name == "profile" else "seg")
        p.add_argument("--width", type=_positive_int, required=(name == "profile"),
                       default=None if name == "profile" else DEFAULT_WIDTH,
                       help="branch-0 width C (32 for W32)")
        p.add_argument("--input", type=_input_hw, default=None,
                       help="input HxW (default: " + ", ".join(
                           f"{f.profile_input_hw[0]}x{f.profile_input_hw[1]} {t}"
                           for t, f in FACTS.items()) + ")")
        if name == "profile":
            p.add_argument("--classes", type=_positive_int, default=None,
                           help="head outputs (default: 19 seg classes / 17 joints)")
            p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=func)
