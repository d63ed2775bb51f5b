"""Drawing predictions: the Cityscapes palette, segmentation overlays, pose skeletons, boxes.

The model runs in :mod:`pipeline.infer.batch`: segmentation images are padded to a
multiple of 32, the logits upsampled to the padded size (bilinear, as in evaluation), cropped back
and arg-maxed; pose boxes are cropped with the evaluation's top-down affine transform and the
heatmaps decoded to image coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.keypoints import COCO_SKELETON
from pipeline.errors import InputError

#: Colours of the 19 Cityscapes train ids (the benchmark's official palette).
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32))

Box = tuple[float, float, float, float]  # COCO x, y, w, h in image pixels


class PredictError(InputError):
    """A model or input that ``predict`` cannot use; the message names it."""


@dataclass(frozen=True)
class PosePrediction:
    box: Box
    joints: np.ndarray      # (K, 2) image coordinates
    scores: np.ndarray      # (K,) heatmap maxima


# -- segmentation ---------------------------------------------------------------------------------
def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: Cityscapes' first, then a fixed pseudo-random extension."""
    base = np.array(CITYSCAPES_PALETTE, dtype=np.uint8)
    if num_classes <= len(base):
        return base[:num_classes]
    extra = np.random.default_rng(0).integers(0, 256, (num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def draw_seg(image: Image.Image, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The image blended with the class colours."""
    colours = palette(num_classes)[labels.astype(np.int64)]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = (1 - alpha) * base + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(out.round(), 0, 255).astype(np.uint8))


# -- pose -----------------------------------------------------------------------------------------
def draw_pose(image: Image.Image, people: Sequence[PosePrediction]) -> Image.Image:
    """The image with each person's box, skeleton (COCO limbs) and joints."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    r = max(2, round(max(out.size) / 160))
    for p in people:
        x, y, w, h = p.box
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 0), width=max(1, r // 2))
        for a, b in COCO_SKELETON:
            if a - 1 < len(p.joints) and b - 1 < len(p.joints):
                pa, pb = p.joints[a - 1], p.joints[b - 1]
                draw.line([tuple(pa), tuple(pb)], fill=(0, 255, 0), width=max(1, r // 2 + 1))
        for jx, jy in p.joints:
            draw.ellipse([jx - r, jy - r, jx + r, jy + r], fill=(255, 0, 0))
    return out


def parse_box(text: str) -> Box:
    """``"x,y,w,h"`` -> a box with positive width and height."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise PredictError(f"box {text!r}: expected four numbers x,y,w,h") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
        raise PredictError(f"box {text!r}: expected x,y,w,h with positive w and h")
    return vals  # type: ignore[return-value]
