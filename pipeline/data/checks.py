"""Checks of a dataset's content that would otherwise fail a later stage (training, calibration,
evaluation) after minutes or hours: run by ``prepare`` before any training, each failure one
line naming the file.

Images of any size are accepted (evaluation pads to the multiple of 32 the network needs and
crops the output back; calibration crops); what is checked is what no stage can work around.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .errors import DataError

#: Smallest side the network takes (its coarsest branch downsamples by 32).
MIN_SIDE = 32
#: Cityscapes label ids (labelIds files) run 0..33; 255 is a common "void" in converted data.
MAX_LABEL_ID = 33
VOID_ID = 255


def _size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def check_seg_pairs(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Each image at least 32 px a side, its label of the same size, single-channel, with
    Cityscapes label ids (0..33, or 255)."""
    for image, label in pairs:
        wh = _size(image)
        if min(wh) < MIN_SIDE:
            raise DataError(f"{image}: image of {wh[1]}x{wh[0]} is smaller than {MIN_SIDE} "
                            f"pixels a side")
        with Image.open(label) as lab:
            if lab.size != wh:
                raise DataError(f"{label}: label of {lab.size[1]}x{lab.size[0]} does not match "
                                f"its image {image.name} ({wh[1]}x{wh[0]})")
            if lab.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{label}: label has mode {lab.mode} (colour?); expected one "
                                f"channel of Cityscapes label ids")
            ids = np.unique(np.asarray(lab))
        bad = ids[(ids > MAX_LABEL_ID) & (ids != VOID_ID)]
        if bad.size:
            raise DataError(f"{label}: label ids {bad[:5].tolist()} are not Cityscapes label "
                            f"ids (0..{MAX_LABEL_ID}, {VOID_ID})")


def check_coco_images(root_of_split: Path, doc: Mapping[str, Any]) -> None:
    """Each image at least 32 px a side and of the width/height its annotation file states
    (boxes and keypoints are in those pixels)."""
    for im in doc["images"]:
        path = root_of_split / im["file_name"]
        w, h = _size(path)
        if (w, h) != (int(im["width"]), int(im["height"])):
            raise DataError(f"{path}: image is {h}x{w} but the annotations say "
                            f"{im['height']}x{im['width']}")
        if min(w, h) < MIN_SIDE:
            raise DataError(f"{path}: image of {h}x{w} is smaller than {MIN_SIDE} pixels a side")


def check_split_sizes(task: str, root: Path, counts: Mapping[str, int],
                      calibration_images: int | None, unit: str = "images") -> None:
    """Every split non-empty; the train split holds the calibration images."""
    for split in ("train", "search", "val"):
        if counts.get(split, 0) == 0:
            raise DataError(f"{root}: the {split} split of {task} has no {unit}")
    if calibration_images is not None and counts["train"] < calibration_images:
        raise DataError(f"{root}: calibration.images = {calibration_images} but the train split "
                        f"of {task} has only {counts['train']} {unit}")


def seg_pairs(samples: Sequence[Any]) -> list[tuple[Path, Path]]:
    return [(s.image, s.label) for s in samples]
