"""COCO person keypoints, top-down: person records from ground truth or detections, the Dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.errors import DataError
from pipeline.data.heatmaps import generate_heatmaps
from pipeline.data.io import open_image, read_json
from pipeline.data.keypoints import (NUM_JOINTS, box_to_center_scale, fliplr_joints,
                                     half_body_box)
from pipeline.data.transforms import (affine_points, get_affine_transform, sample_rng,
                                      to_normalized_tensor, warp_affine)

PERSON_CATEGORY = 1
_IMAGE_FIELDS = ("id", "file_name", "width", "height")
_ANN_FIELDS = ("id", "image_id", "category_id", "bbox", "keypoints", "area", "iscrowd",
               "num_keypoints")
_DET_FIELDS = ("image_id", "category_id", "bbox", "score")


def keypoint_splits(root: str | Path) -> list[str]:
    """Splits of a COCO-layout root: ``annotations/person_keypoints_<split>.json``."""
    prefix = "person_keypoints_"
    return sorted(p.stem[len(prefix):] for p in (Path(root) / "annotations").glob(
        f"{prefix}*.json"))


def annotation_path(root: Path, split: str) -> Path:
    """`<root>/annotations/person_keypoints_<split>.json`."""
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def image_dir(root: Path, split: str) -> Path:
    """`<root>/images/<split>` (the layout of HRNet's data/coco)."""
    return Path(root) / "images" / split


def _require(record: Any, fields: Sequence[str], where: str, path: Path) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} is not an object")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataError(f"{path}: {where} is missing required field(s) {', '.join(missing)}")


def load_keypoint_json(path: Path) -> dict:
    """Read and validate a COCO person-keypoints file (every field pycocotools and we need)."""
    path = Path(path)
    doc = read_json(path)
    _require(doc, ("images", "annotations", "categories"), "top level", path)
    for i, im in enumerate(doc["images"]):
        _require(im, _IMAGE_FIELDS, f"images[{i}]", path)
    image_ids = {im["id"] for im in doc["images"]}
    for i, ann in enumerate(doc["annotations"]):
        _require(ann, _ANN_FIELDS, f"annotations[{i}] (id {ann.get('id', '?')})"
                 if isinstance(ann, dict) else f"annotations[{i}]", path)
        if len(ann["keypoints"]) != 3 * NUM_JOINTS:
            raise DataError(f"{path}: annotations[{i}] has {len(ann['keypoints'])} keypoint values,"
                            f" expected {3 * NUM_JOINTS}")
        if len(ann["bbox"]) != 4:
            raise DataError(f"{path}: annotations[{i}].bbox must have 4 numbers")
        if ann["image_id"] not in image_ids:
            raise DataError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
    cats = [c for c in doc["categories"] if isinstance(c, dict) and c.get("id") == PERSON_CATEGORY]
    if not cats or "keypoints" not in cats[0]:
        raise DataError(f"{path}: no person category (id 1) with a 'keypoints' list")
    return doc


@dataclass(frozen=True)
class PersonRecord:
    """One person crop to process: the box, and the GT joints when known (zeros otherwise)."""
    image_id: int
    image_path: Path
    width: int
    height: int
    center: np.ndarray
    scale: np.ndarray
    score: float
    joints: np.ndarray = field(repr=False)   # (J, 2) image pixels
    vis: np.ndarray = field(repr=False)      # (J,) 1 labelled (visible or occluded), 0 not
    area: float = 0.0


def _clean_box(bbox: Sequence[float], width: int, height: int) -> tuple[float, ...] | None:
    """HRNet's box sanitation: clip to the image; None when empty."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 < x1 or y2 < y1 or (x2 - x1) * (y2 - y1) <= 0:
        return None
    return x1, y1, x2 - x1, y2 - y1


def gt_person_records(doc: dict, img_root: Path, aspect_ratio: float, padding: float = 1.25,
                      image_ids: set[int] | None = None) -> list[PersonRecord]:
    """Non-crowd persons with at least one labelled keypoint, boxes from the annotation."""
    images = {im["id"]: im for im in doc["images"]}
    out: list[PersonRecord] = []
    for ann in sorted(doc["annotations"], key=lambda a: (a["image_id"], a["id"])):
        if ann["category_id"] != PERSON_CATEGORY or ann["iscrowd"]:
            continue
        if image_ids is not None and ann["image_id"] not in image_ids:
            continue
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(NUM_JOINTS, 3)
        if kp[:, 2].max() <= 0:
            continue
        im = images[ann["image_id"]]
        box = _clean_box(ann["bbox"], im["width"], im["height"])
        if box is None:
            continue
        c, s = box_to_center_scale(box, aspect_ratio, padding)
        out.append(PersonRecord(im["id"], Path(img_root) / im["file_name"], im["width"],
                                im["height"], c, s, 1.0, kp[:, :2].copy(),
                                np.minimum(kp[:, 2], 1.0), float(ann["area"])))
    return out


def detection_person_records(det_path: Path, doc: dict, img_root: Path, aspect_ratio: float,
                             score_threshold: float = 0.0, padding: float = 1.25,
                             image_ids: set[int] | None = None) -> list[PersonRecord]:
    """Person boxes of a detector results file (COCO results format) with score >= threshold."""
    det_path = Path(det_path)
    dets = read_json(det_path)
    if not isinstance(dets, list):
        raise DataError(f"{det_path}: detection results must be a JSON list")
    images = {im["id"]: im for im in doc["images"]}
    out: list[PersonRecord] = []
    for i, d in enumerate(dets):
        _require(d, _DET_FIELDS, f"entry {i}", det_path)
        if d["category_id"] != PERSON_CATEGORY or d["score"] < score_threshold:
            continue
        if d["image_id"] not in images:
            raise DataError(f"{det_path}: entry {i} refers to image_id {d['image_id']} absent from "
                            "the keypoint annotations")
        if image_ids is not None and d["image_id"] not in image_ids:
            continue
        im = images[d["image_id"]]
        c, s = box_to_center_scale(d["bbox"], aspect_ratio, padding)
        out.append(PersonRecord(im["id"], Path(img_root) / im["file_name"], im["width"],
                                im["height"], c, s, float(d["score"]),
                                np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS)))
    return out


class CocoKeypoints(Dataset):
    """Top-down person crops. Training augments (scale, rotation, flip, half-body); evaluation uses
    the plain box. Items: image (3,H,W), target (J,H/4,W/4), target_weight (J,1), joints (J,3) in
    crop pixels (x, y, weight), center (2,), scale (2,), rotation, score, image_id, area, index."""

    def __init__(self, records: Sequence[PersonRecord], *, train: bool,
                 input_hw: tuple[int, int] = (256, 192), sigma: float = 2.0,
                 scale_factor: float = 0.35, rotation_factor: float = 45.0,
                 rotation_prob: float = 0.6, flip: bool = True, half_body_prob: float = 0.3,
                 half_body_min_joints: int = 8, seed: int = 0) -> None:
        self.records = list(records)
        self.train = train
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.heatmap_hw = (self.input_hw[0] // 4, self.input_hw[1] // 4)
        self.sigma = sigma
        self.scale_factor = scale_factor
        self.rotation_factor = rotation_factor
        self.rotation_prob = rotation_prob
        self.flip = flip
        self.half_body_prob = half_body_prob
        self.half_body_min_joints = half_body_min_joints
        self.seed = seed
        self.epoch = 0

    @property
    def aspect_ratio(self) -> float:
        return self.input_hw[1] / self.input_hw[0]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before creating the loader iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rec = self.records[index]
        img = open_image(rec.image_path)
        if img.size != (rec.width, rec.height):
            raise DataError(f"{rec.image_path}: image is {img.size[0]}x{img.size[1]}, the "
                            f"annotations say {rec.width}x{rec.height}")
        joints, vis = rec.joints.copy(), rec.vis.copy()
        center, scale, rot = rec.center.copy(), rec.scale.copy(), 0.0
        flipped = False
        if self.train:
            rng = sample_rng(self.seed, epoch, index)
            if (vis > 0).sum() > self.half_body_min_joints and rng.random() < self.half_body_prob:
                hb = half_body_box(joints, vis, rng, self.aspect_ratio)
                if hb is not None:
                    center, scale = hb
            sf, rf = self.scale_factor, self.rotation_factor
            scale = scale * float(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
            r = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
            rot = r if rng.random() <= self.rotation_prob else 0.0
            if self.flip and rng.random() < 0.5:
                flipped = True
                joints, vis = fliplr_joints(joints, vis, rec.width)
                center[0] = rec.width - center[0] - 1
        h, w = self.input_hw
        mat = get_affine_transform(center, scale, rot, (w, h))
        crop_joints = affine_points(joints, mat)
        if flipped:
            # Fold the mirror into the warp instead of flipping the whole image first.
            mirror = np.array([[-1.0, 0.0, rec.width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            mat = mat @ mirror
        crop = warp_affine(img, mat, (w, h), fill=(0, 0, 0))
        target, weight = generate_heatmaps(crop_joints, vis, self.input_hw, self.heatmap_hw,
                                           self.sigma)
        return {
            "image": to_normalized_tensor(crop),
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight),
            "joints": torch.from_numpy(np.concatenate([crop_joints, weight], 1).astype(np.float32)),
            "center": torch.from_numpy(center.astype(np.float32)),
            "scale": torch.from_numpy(scale.astype(np.float32)),
            "rotation": float(rot),
            "score": float(rec.score),
            "image_id": int(rec.image_id),
            "area": float(rec.area),
            "index": index,
        }
