"""``scalenas export MODEL_DIR --format torchscript|onnx [--optimize] [-o PATH] [--input HxW]``.

Writes a deployable artifact of a saved model (default ``MODEL_DIR/deploy/optimized.ts`` or
``.onnx``), checked against the eager model, and its record beside it (``PATH.json``: checksum,
format, traced size, and the model's weights checksum). The model directory's own files are never
rewritten: an export elsewhere leaves the directory byte-identical, and ``-o`` naming one of its
files is refused even with --overwrite. An existing file at PATH (or PATH.json) that export did not
write is replaced only with --overwrite. ``predict`` runs the artifacts in MODEL_DIR/deploy/
(:mod:`pipeline.nets.deploy`; docs/predict.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.limits import check_input_hw


def parse_hw(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> (512, 1024)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 9 and int(p) > 0 for p in parts):
        raise InputError(f"input size {text!r}: expected HxW, e.g. 512x1024")
    h, w = int(parts[0]), int(parts[1])
    check_input_hw("--input", h, w, "input size")
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .deploy import export_artifact, record_path

    torch.manual_seed(0)
    entry = export_artifact(args.model_dir, args.format, args.optimize, args.output,
                            parse_hw(args.input) if args.input else None,
                            {"auto": None, "on": True, "off": False}[args.channels_last],
                            overwrite=args.overwrite)
    where = args.output or args.model_dir / entry["file"]
    extra = f", channels_last={entry['channels_last']}" if "channels_last" in entry else ""
    print(f"{args.model_dir} -> {where} (record {record_path(where)}; {args.format}, "
          f"optimized={entry['optimized']}{extra}, "
          f"traced at {'x'.join(map(str, entry['input_shape']))}, other sizes: "
          f"{'yes' if entry['other_sizes'] else 'no'}, rel err {entry['rel_err']:.1e})")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    p = subparsers.add_parser("export", help="write a deployable TorchScript or ONNX model",
                              description=__doc__)
    p.add_argument("model_dir", type=Path, help="saved model directory (model.json, weights.pt)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BN, freeze, channels_last where measured faster (default: on)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="artifact path (default MODEL_DIR/deploy/optimized.ts|.onnx); its record "
                        "goes beside it as PATH.json")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing file at PATH that export did not write (never a "
                        "file of the model directory); its own artifacts are always replaced")
    p.add_argument("--input", default=None, metavar="HxW",
                   help="traced input size, multiples of 32, at most 4096x4096 pixels "
                        "(default: the model's meta.input_hw)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory format with --optimize (default auto: the faster one, measured)")
    p.set_defaults(func=cmd_export)
