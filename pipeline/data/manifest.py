"""A dataset's manifest: the deterministic split lists of a task and the hash of its files.

``build_manifest`` reads the dataset through the task's split maker (``seg_splits``,
``pose_splits``; the task plug-ins name theirs), carves the held-out search split from train
(:mod:`pipeline.data.splits`) and returns counts, the key lists of train/search/val with their
hashes, and the data hash (tagged on every later MLflow run). The data checks that no later
stage can work around (:mod:`pipeline.data.checks`: image and label sizes, label ids, empty
splits, a train split too small for the calibration) run here, before any training.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from pipeline.data import checks
from pipeline.data.errors import DataError

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


def split_record(keys: Sequence[Any]) -> dict[str, Any]:
    return {"count": len(keys), "sha256": _sha(json.dumps(list(keys))), "keys": list(keys)}


def seg_splits(root: Path, train_set: str, val_set: str, fraction: float
                ) -> tuple[dict[str, list[str]], list[Path], dict[str, int]]:
    from pipeline.data.cityscapes import list_cityscapes
    from pipeline.data.splits import select

    train = list_cityscapes(root, train_set)
    val = list_cityscapes(root, val_set)
    names = [s.name for s in train]
    if len(set(names)) != len(names):
        raise DataError(f"{root}: duplicate frame names in split '{train_set}'")
    mask = select(names, "search", fraction)
    splits = {"train": [n for n, m in zip(names, mask) if not m],
              "search": [n for n, m in zip(names, mask) if m],
              "val": [s.name for s in val]}
    checks.check_seg_pairs(checks.seg_pairs([*train, *val]))
    files = [p for s in (*train, *val) for p in (s.image, s.label)]
    return splits, files, {}


def pose_splits(root: Path, train_set: str, val_set: str, fraction: float
                 ) -> tuple[dict[str, list[int]], list[Path], dict[str, int]]:
    from pipeline.data.coco import annotation_path, image_dir, load_keypoint_json
    from pipeline.data.splits import select

    docs = {s: load_keypoint_json(annotation_path(root, s)) for s in (train_set, val_set)}
    files = [annotation_path(root, s) for s in docs]
    for s, doc in docs.items():
        for im in doc["images"]:
            path = image_dir(root, s) / im["file_name"]
            if not path.is_file():
                raise DataError(f"{path}: image {im['id']} of split '{s}' not found")
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


SplitMaker = Callable[[Path, str, str, float],
                      "tuple[dict[str, list[Any]], list[Path], dict[str, int]]"]


def build_manifest(task: str, make_splits: SplitMaker, root: Path, train_set: str, val_set: str,
                   search_fraction: float, *, builtin: bool,
                   calibration_images: int | None = None, batches: Sequence[Any] = (),
                   batches_source: str | None = None) -> dict[str, Any]:
    """The manifest of ``task``'s dataset at ``root`` (raises DataError for unusable data; the
    train split must hold ``calibration_images`` when given, and each split the training
    ``batches`` (:class:`pipeline.data.batches.BatchUse`, from ``batches_source``) it feeds, as
    soon as the splits are counted)."""
    if not root.is_dir():
        raise DataError(f"{task}.root: dataset directory not found: {root}")
    splits, files, persons = make_splits(root, train_set, val_set, search_fraction)
    if not splits["train"] or not splits["search"]:
        raise DataError(f"{task}.search_fraction={search_fraction} leaves "
                        f"{len(splits['train'])} train / {len(splits['search'])} search "
                        "images; both must be non-empty")
    # Pose calibrates on person crops, seg on images.
    counts = persons or {k: len(v) for k, v in splits.items()}
    checks.check_split_sizes(task, root, counts, calibration_images,
                             "persons" if persons else "images")
    if batches:
        from pipeline.errors import ConfigError
        from pipeline.data.batches import check, with_trainfull

        try:
            check(task, batches, with_trainfull(counts), "persons" if persons else "images")
        except ConfigError as e:
            raise ConfigError(f"{batches_source}: {e}" if batches_source else str(e)) from None
    manifest: dict[str, Any] = {
        "task": task, "root": str(root), "builtin": builtin,
        "train_set": train_set, "val_set": val_set, "search_fraction": search_fraction,
        "data_hash": data_hash(root, files), "files": len(files),
        "splits": {k: split_record(v) for k, v in splits.items()},
    }
    if persons:
        manifest["persons"] = persons
    return manifest
