"""Stages ``data`` and ``prepare``: materialise the built-in data; verify a dataset and write its
deterministic split lists.

``python -m pipeline.stages.prepare --phase data --params results/params/data.json --out data/builtin``
generates the built-in synthetic datasets (both tasks, so the bytes and data.dvc's hash do not
depend on which tasks a run selects).

``python -m pipeline.stages.prepare --params results/params/seg/prepare.json --task seg
--out results/seg/data`` reads the dataset (built-in or user-supplied), carves the held-out search
split from train (:mod:`pipeline.data.splits`) and writes ``manifest.json``: counts, the key lists
of train/search/val and their hashes, and the data hash (tagged on every later MLflow run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pipeline.data import checks
from pipeline.space.arch import atomic_write_text
from pipeline.stages.common import StageContext, StageInputError, run_stage

MANIFEST = "manifest.json"
#: Above this many bytes the data hash uses file sizes instead of contents (unless a
#: ``<root>.dvc`` file gives DVC's hash of the dataset for free).
CONTENT_HASH_LIMIT = 2 * 1024**3


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _dvc_hash(root: Path) -> str | None:
    """DVC's md5 of ``root`` when it was added with ``dvc add`` (``<root>.dvc`` next to it)."""
    import yaml

    dvc_file = root.with_name(root.name + ".dvc")
    if not dvc_file.is_file():
        return None
    doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    outs = doc.get("outs") or [{}]
    md5 = outs[0].get("md5")
    return f"dvc:{md5}" if md5 else None


def data_hash(root: Path, files: Iterable[Path]) -> str:
    """Hash of the dataset files a run uses: DVC's hash when available, else contents (or sizes
    for very large datasets), over the sorted relative paths."""
    dvc = _dvc_hash(root)
    if dvc:
        return dvc
    files = sorted(set(files))
    total = sum(f.stat().st_size for f in files)
    h = hashlib.sha256()
    by_content = total <= CONTENT_HASH_LIMIT
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.as_posix()
        h.update(rel.encode() + b"\0")
        if by_content:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            h.update(str(f.stat().st_size).encode())
    return ("sha256:" if by_content else "sizes:") + h.hexdigest()


def _split_record(keys: Sequence[Any]) -> dict[str, Any]:
    return {"count": len(keys), "sha256": _sha(json.dumps(list(keys))), "keys": list(keys)}


def _seg_splits(root: Path, train_set: str, val_set: str, fraction: float
                ) -> tuple[dict[str, list[str]], list[Path], dict[str, int]]:
    from pipeline.data.cityscapes import list_cityscapes
    from pipeline.data.splits import select

    train = list_cityscapes(root, train_set)
    val = list_cityscapes(root, val_set)
    names = [s.name for s in train]
    if len(set(names)) != len(names):
        raise StageInputError(f"{root}: duplicate frame names in split '{train_set}'")
    mask = select(names, "search", fraction)
    splits = {"train": [n for n, m in zip(names, mask) if not m],
              "search": [n for n, m in zip(names, mask) if m],
              "val": [s.name for s in val]}
    checks.check_seg_pairs(checks.seg_pairs([*train, *val]))
    files = [p for s in (*train, *val) for p in (s.image, s.label)]
    return splits, files, {}


def _pose_splits(root: Path, train_set: str, val_set: str, fraction: float
                 ) -> tuple[dict[str, list[int]], list[Path], dict[str, int]]:
    from pipeline.data.coco import annotation_path, image_dir, load_keypoint_json
    from pipeline.data.splits import select

    docs = {s: load_keypoint_json(annotation_path(root, s)) for s in (train_set, val_set)}
    files = [annotation_path(root, s) for s in docs]
    for s, doc in docs.items():
        for im in doc["images"]:
            path = image_dir(root, s) / im["file_name"]
            if not path.is_file():
                raise StageInputError(f"{path}: image {im['id']} of split '{s}' not found")
            files.append(path)
        checks.check_coco_images(image_dir(root, s), doc)
    ids = sorted(im["id"] for im in docs[train_set]["images"])
    # Split by image, so that the people of one image never straddle train and search.
    mask = select(ids, "search", fraction)
    splits = {"train": [i for i, m in zip(ids, mask) if not m],
              "search": [i for i, m in zip(ids, mask) if m],
              "val": sorted(im["id"] for im in docs[val_set]["images"])}
    persons: dict[str, int] = {}
    for name, id_list in splits.items():
        doc = docs[val_set if name == "val" else train_set]
        wanted = set(id_list)
        persons[name] = sum(1 for a in doc["annotations"]
                            if a["image_id"] in wanted and a.get("num_keypoints", 0) > 0
                            and not a.get("iscrowd", 0))
    return splits, files, persons


def prepare(ctx: StageContext) -> Mapping[str, float]:
    tc = ctx.task_cfg
    root = Path(tc.root)
    if not root.is_dir():
        raise StageInputError(f"{ctx.task}.root: dataset directory not found: {root}")
    fn = _seg_splits if ctx.task == "seg" else _pose_splits
    splits, files, persons = fn(root, tc.train_set, tc.val_set, tc.search_fraction)
    if not splits["train"] or not splits["search"]:
        raise StageInputError(f"{ctx.task}.search_fraction={tc.search_fraction} leaves "
                              f"{len(splits['train'])} train / {len(splits['search'])} search "
                              "images; both must be non-empty")
    # Pose calibrates on person crops, seg on images.
    counts = persons or {k: len(v) for k, v in splits.items()}
    checks.check_split_sizes(ctx.task, root, counts, int(ctx.cfg.calibration.images),
                             "persons" if persons else "images")
    dhash = data_hash(root, files)
    manifest = {
        "task": ctx.task, "root": str(root), "builtin": ctx.cfg.data.builtin,
        "train_set": tc.train_set, "val_set": tc.val_set, "search_fraction": tc.search_fraction,
        "data_hash": dhash, "files": len(files),
        "splits": {k: _split_record(v) for k, v in splits.items()},
    }
    if persons:
        manifest["persons"] = persons
    atomic_write_text(ctx.out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    ctx.run.set_tags({"scalenas.data_hash": dhash})
    ctx.run.log_artifact(ctx.out / MANIFEST)
    metrics = {f"{k}_images": float(len(v)) for k, v in splits.items()}
    metrics.update({f"{k}_persons": float(v) for k, v in persons.items()})
    return metrics


def generate(ctx: StageContext) -> Mapping[str, float]:
    from pipeline.data.synth import generate_all

    d = ctx.cfg.data
    rec = generate_all(ctx.out, d.seed, ("seg", "pose"), seg_train=d.seg_train, seg_val=d.seg_val,
                       seg_size_hw=tuple(d.seg_size), pose_train=d.pose_train,
                       pose_val=d.pose_val, pose_size_hw=tuple(d.pose_size))
    ctx.run.log_text(json.dumps(rec, indent=1), "SYNTH.json")
    return {"seg_images": float(d.seg_train + d.seg_val),
            "pose_images": float(d.pose_train + d.pose_val)}


def main(argv: Sequence[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--phase", choices=("data", "prepare"), default="prepare")
    known, rest = pre.parse_known_args(argv)

    def add_phase(p: argparse.ArgumentParser) -> None:
        p.add_argument("--phase", choices=("data", "prepare"), default="prepare",
                       help="data: generate the built-in data; prepare: verify and split")

    rest = ["--phase", known.phase, *rest]
    if known.phase == "data":
        return run_stage("data", generate, rest, add_args=add_phase, needs_task=False,
                         write_resolved=False)
    return run_stage("prepare", prepare, rest, add_args=add_phase)


if __name__ == "__main__":
    sys.exit(main())
