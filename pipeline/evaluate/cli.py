"""``scalenas eval``: score a network on a labelled split with the release's test protocol.

One command for everything the project can evaluate (docs/eval.md)::

    scalenas eval --supernet superscalenet_seg_w32.pth --arch seg_w32_S1.npy --data datasets/cityscapes
    scalenas eval --weights scalenet_P2_w32_256x192.pth --arch w32_256_P2.npy --data datasets/coco \\
        --split val2017 --det-file datasets/coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json
    scalenas eval --model results/seg/finetune/S-large/model --data data/builtin/cityscapes

It prints the release's profile line (params and GFLOPs at the paper's input size), the protocol,
then the task's table (seg: mIoU, pixel accuracy, IoU per class; pose: AP, AP50, AP75, APM, APL,
AR). ``-o results.json`` keeps all of it with the checksums of the weights and the data and the
runtime; ``--mlflow`` logs it as a run. The score comes from :func:`pipeline.evaluate.score`, the
function the search and fine-tuning score with, so a model directory on the run's val split
prints the report's fine-tuned figure.

Every check (the weights and the architecture agree, the split exists and passes ``prepare``'s
data checks, the detector file's images are the split's, ``--bn-calib`` fits the train split,
the model directory's checksums) runs before any work; a failure is one line, exit status 2,
and nothing is written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

SCHEMA = "scalenas-eval/1"


class EvalInputError(InputError):
    """A ``scalenas eval`` argument that cannot be honoured."""


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x192), got {text!r}") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"{text}: both sides must be positive multiples of 32")
    return h, w


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _load_source(args: argparse.Namespace) -> Any:
    from .sources import load_model_source, load_supernet_source, load_weights_source

    if args.model is not None:
        if args.arch is not None:
            raise EvalInputError("--arch: a model directory holds its own architecture")
        return load_model_source(args.model, args.runtime)
    if args.runtime != "eager":
        raise EvalInputError(f"--runtime {args.runtime}: only a model directory (--model) holds "
                             "deployed artifacts")
    if args.arch is None:
        raise EvalInputError("--arch is needed with --supernet and --weights (a registered "
                             "name, a .json document or a release .npy file)")
    if args.supernet is not None:
        return load_supernet_source(args.supernet, args.arch)
    return load_weights_source(args.weights, args.arch)


def _task(args: argparse.Namespace, source: Any) -> Any:
    from pipeline.tasks import REGISTRY
    from pipeline.tasks.base import EvalData

    cls = REGISTRY[source.task]
    defaults = cls.config_cls.__dataclass_fields__
    split = args.split or defaults["val_split"].default
    train_split = args.train_split or defaults["train_split"].default
    root = Path(args.data)
    if not root.is_dir():
        raise EvalInputError(f"--data {root}: dataset directory not found")
    found = cls.available_splits(root)
    for flag, name in (("--split", split), ("--train-split", train_split)):
        if name == "search" and flag == "--split":
            name = train_split
        if name not in found and (flag == "--split" or source.needs_calibration
                                  or split == "search"):
            raise EvalInputError(f"{flag} {name}: no such split in {root} "
                                 f"(found: {', '.join(found) or 'none'})")
    # A model directory records its network input (the pose crop; seg evaluates full images).
    recorded = source.meta.get("input_hw")
    input_hw = args.input or (tuple(recorded) if isinstance(recorded, list) else None)
    thresholds = tuple((k, float(v)) for k, v in (("det_score_threshold", args.det_thre),
                                                  ("oks_thre", args.oks_thre),
                                                  ("in_vis_thre", args.in_vis_thre))
                       if v is not None)
    data = EvalData(root=str(root), split=split, train_split=train_split,
                    search_fraction=args.search_fraction, flip=args.flip, input_hw=input_hw,
                    det_file=str(args.det_file) if args.det_file is not None else None,
                    gt_boxes=bool(args.gt_boxes), thresholds=thresholds)
    return cls.for_evaluation(data), split, train_split


def _calibration(args: argparse.Namespace, task: Any, train_split: str
                 ) -> tuple[tuple[list[int], int], dict[str, Any]]:
    """The calibration images (checked against the train split) and their record."""
    from pipeline.nets.calibrate import release_calibration_indices

    images, batch = task.release_calibration
    n = args.bn_calib or images
    bs = args.calib_batch_size or batch
    ds = task.dataset("trainfull", train=False)
    unit = task.item_unit
    if n > len(ds):
        raise EvalInputError(f"--bn-calib {n}: larger than the train split '{train_split}' of "
                             f"{args.data} ({len(ds)} {unit})")
    idx = release_calibration_indices(len(ds), n, args.calib_seed)
    record = {"split": train_split, "images": n, "unit": unit, "batch_size": bs,
              "stats": args.bn_stats, "seed": args.calib_seed,
              "selection": "first N of torch.randperm(train split) under the seed, in that order",
              "resizing": "none: as evaluated, each cropped top-left to a multiple of 32"}
    return (idx, bs), record


def _profile(source: Any, task: Any) -> dict[str, Any]:
    from pipeline.cost import profile

    hw = task.profile_input_hw(getattr(task, "input_hw", None))
    cost = profile(source.arch, source.task, source.width, hw, source.num_outputs)
    return {**cost.to_dict(), "input": [1, 3, int(hw[0]), int(hw[1])]}


def profile_line(source: Any, prof: dict[str, Any]) -> str:
    """The release's line (``params 25.3 M, flops 265.5 G``), with what it counts."""
    shape = "x".join(str(v) for v in prof["input"])
    return (f"{source.task} W{source.width} {source.arch.meta.get('imported_from', '')} "
            f"(arch {source.arch.arch_id}): params {prof['params'] / 1e6:.1f} M, "
            f"flops {prof['gflops']:.1f} G  [at {shape}; GFLOPs = MACs / 2^30, the paper's unit]"
            ).replace("  (arch", " (arch")


def _mlflow(args: argparse.Namespace, doc: dict[str, Any]) -> str:
    from pipeline import tracking

    uri = tracking.resolve_uri(args.mlflow)
    tags = {tracking.TAG_PHASE: "eval", tracking.TAG_TASK: doc["task"],
            tracking.TAG_KIND: "eval", tracking.TAG_ARCH_ID: doc["arch"]["id"],
            tracking.TAG_DATA_HASH: doc["data"]["hash"], "scalenas.source": doc["source"]["kind"],
            "scalenas.runtime": doc["runtime"]["runtime"]}
    for role, c in doc["checksums"].items():
        tags[f"scalenas.{role}_sha256"] = c["sha256"]
    params = {"split": doc["data"]["split"], "root": doc["data"]["root"],
              **{f"protocol.{k}": v for k, v in tracking.flatten(doc["protocol"]).items()}}
    run = tracking.start_run(f"eval:{doc['task']}", uri=uri, experiment=args.experiment,
                             parent_run_id="", tags=tags, params=params)
    metrics = {k: float(v) for k, v in doc["metrics"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update(params=float(doc["profile"]["params"]), gflops=doc["profile"]["gflops"])
    run.log_metrics(metrics)
    run.log_text(json.dumps(doc, indent=1), "results.json")
    run.end("FINISHED")
    return uri


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``scalenas eval`` does up to the printed tables; returns results.json's doc."""
    import torch
    from tqdm import tqdm

    from pipeline.data.manifest import data_hash
    from pipeline.nets.calibrate import CalibrationSet, image_batches

    from .score import score
    from .sources import to_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalInputError(f"--device {device}: torch sees no CUDA device")
    if args.output is not None and not args.output.parent.is_dir():
        raise EvalInputError(f"-o {args.output}: folder {args.output.parent} not found")

    # -- every check, before any work ---------------------------------------------------------
    source = _load_source(args)
    task, split, train_split = _task(args, source)
    named = "search" if split == "search" else "val"
    checked = task.check_eval_data(named)
    calib_plan = calib_record = None
    if source.needs_calibration:
        task.check_eval_data("trainfull")  # the calibration images pass the same checks
        calib_plan, calib_record = _calibration(args, task, train_split)
    elif args.bn_calib is not None:
        raise EvalInputError("--bn-calib: only a subnet of a supernet (--supernet) is "
                             "calibrated; a fine-tuned network keeps its statistics")
    to_device(source, device)
    batch_size = (args.batch_size or int(source.meta.get("eval_batch_size") or 0)
                  or task.eval_batch_size)
    prof = _profile(source, task)
    print(profile_line(source, prof), flush=True)
    protocol = {"split": split, **task.protocol(), "batch_size": batch_size,
                "bn_calibration": calib_record}
    print("protocol: " + "; ".join(f"{k} {v}" for k, v in protocol.items()
                                   if k != "bn_calibration"), flush=True)
    if calib_record is not None:
        print("BN calibration: " + ", ".join(f"{k} {v}" for k, v in calib_record.items()),
              flush=True)

    t0 = time.perf_counter()
    calib_files: list[Path] = []
    if calib_plan is not None:
        idx, bs = calib_plan
        ds = task.dataset("trainfull", train=False)
        load = tqdm(idx, desc="calibration images", unit="img", file=sys.stderr,
                    disable=args.quiet, dynamic_ncols=True)
        items = [ds[i] for i in load]
        calib = CalibrationSet(idx, image_batches([it["image"] for it in items], bs, device),
                               [str(it.get("name", it.get("image_id"))) for it in items],
                               stats=args.bn_stats)
        calib_record["names"] = calib.names
        calib_files = task.item_files("trainfull", idx)
        calib.calibrate(source.model)
    bar = tqdm(total=checked.get("items"), desc=f"eval {split}", unit=" " + task.item_unit,
               file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    with torch.no_grad():
        result = score(task, source.model, named, device, batch_size, progress=bar.update)
    bar.close()
    wall = time.perf_counter() - t0

    for line in task.metric_lines(result):
        print(line)
    files = [Path(p) for p in checked["files"]] + calib_files
    doc = {
        "schema": SCHEMA, "task": source.task, "width": source.width,
        "metric": getattr(task, "metric", "score"), "score": result["score"],
        "source": {"kind": source.kind, "path": str(args.model or args.supernet or args.weights),
                   "arch": str(args.arch) if args.arch else None},
        "arch": {"id": source.arch.arch_id, "doc": source.arch.to_dict()},
        "profile": prof, "protocol": protocol, "metrics": result,
        "checksums": source.checksums(),
        "data": {"root": str(args.data), "split": split, "hash": data_hash(Path(args.data), files),
                 "files": len(files), **{k: v for k, v in checked.items() if k != "files"}},
        "runtime": {"runtime": source.runtime, "device": device, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "wall_s": round(wall, 3)},
    }
    return doc


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.io import atomic_write_text

    doc = run_eval(args)
    if args.output is not None:
        atomic_write_text(args.output, json.dumps(doc, indent=1) + "\n")
        print(f"results -> {args.output}")
    if args.mlflow is not None:
        print(f"logged to MLflow ({_mlflow(args, doc)})")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``eval`` command to ``scalenas``."""
    from pipeline.nets.calibrate import RELEASE_CALIBRATION_SEED, STATS

    from .sources import RUNTIMES

    p = subparsers.add_parser("eval", help="score a network on a labelled split (the release's "
                              "test protocol)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--supernet", type=Path, help="a supernet file (ours or the release's); "
                      "needs --arch; the subnet is BN-calibrated first")
    what.add_argument("--model", type=Path, help="one of our model directories "
                      "(results/<task>/finetune/<name>/model)")
    what.add_argument("--weights", type=Path, help="a standalone network's weights (a release "
                      "fine-tuned .pth); needs --arch")
    p.add_argument("--arch", help="architecture: a registered name, a .json document or a "
                   "release .npy file")
    p.add_argument("--runtime", choices=RUNTIMES, default="eager",
                   help="--model: the eager network (default: what the pipeline scores) or its "
                        "recorded TorchScript / ONNX artifact")
    p.add_argument("--data", type=Path, required=True, help="dataset root (Cityscapes or COCO layout)")
    p.add_argument("--split", default=None, help="split to score: a split folder of the data "
                   "(default val / val2017) or 'search' (the pipeline's held-out part of train)")
    p.add_argument("--train-split", default=None, help="split folder BN calibration reads "
                   "(default train / train2017)")
    p.add_argument("--search-fraction", type=float, default=0.2,
                   help="--split search: the run's search.fraction (default 0.2)")
    p.add_argument("--det-file", type=Path, default=None, help="pose: the detector's person "
                   "boxes (COCO results JSON), as the release's test")
    p.add_argument("--gt-boxes", action="store_true", help="pose: ground-truth person boxes")
    p.add_argument("--input", type=_hw, default=None, help="pose: network input HxW (default: "
                   "the model's record, else 256x192)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None,
                      help="average with the mirrored input (pose default: on; seg: off)")
    flip.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--det-thre", type=float, default=None, help="pose: detector score threshold "
                   "(release 0.0)")
    p.add_argument("--oks-thre", type=float, default=None, help="pose: OKS NMS threshold (release 0.9)")
    p.add_argument("--in-vis-thre", type=float, default=None,
                   help="pose: joint confidence counted in the rescoring (release 0.2)")
    p.add_argument("--bn-calib", type=_positive, default=None, metavar="N",
                   help="--supernet: calibration images (default the release's: seg 24, pose 1024)")
    p.add_argument("--calib-batch-size", type=_positive, default=None,
                   help="calibration batch (default the release's: seg 3, pose 128)")
    p.add_argument("--calib-seed", type=int, default=RELEASE_CALIBRATION_SEED,
                   help="seed of the draw of calibration images (default the release's)")
    p.add_argument("--bn-stats", choices=STATS, default="release",
                   help="release: average of per-batch statistics, as the release; pooled: exact "
                        "pooled statistics, as the pipeline's search")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="evaluation batch (default: the model's recorded one, else seg 4, pose 32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    p.add_argument("-o", "--output", type=Path, default=None, help="results.json to write")
    p.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                   help="log a run (default store: MLFLOW_TRACKING_URI, else results/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default scalenas)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)
