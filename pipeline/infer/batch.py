"""Batched prediction over many images with any runtime (eager, optimized TorchScript, ONNX).

A runtime is a callable ``(N, 3, H, W) tensor -> output tensor``. Segmentation images are padded
to a multiple of 32 (zero after normalisation: the dataset mean colour) and the prediction is
cropped back; images of the same padded size share a batch. Pose crops all have the model's input
size, so person boxes from every image share batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pipeline.data.keypoints import box_to_center_scale
from pipeline.data.transforms import get_affine_transform, to_normalized_tensor, warp_affine
from pipeline.metrics.pose import get_final_preds
from pipeline.nets.supernet import INPUT_MULTIPLE

from .predict import Box, PosePrediction, palette

Runtime = Callable[[Tensor], Tensor]


def pad_to_multiple(x: Tensor, multiple: int = INPUT_MULTIPLE) -> Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))


@torch.no_grad()
def seg_labels(run: Runtime, images: Sequence[Image.Image]) -> list[np.ndarray]:
    """Per-pixel class ids of same-padded-size images, in one forward pass."""
    xs = [to_normalized_tensor(im) for im in images]
    sizes = [tuple(x.shape[-2:]) for x in xs]
    batch = torch.stack([pad_to_multiple(x) for x in xs])
    logits = run(batch).float()
    logits = F.interpolate(logits, size=batch.shape[-2:], mode="bilinear", align_corners=False)
    dtype = torch.uint8 if logits.shape[1] <= 256 else torch.int64
    return [logits[i, :, :h, :w].argmax(0).to(dtype).numpy() for i, (h, w) in enumerate(sizes)]


def mask_image(labels: np.ndarray, num_classes: int) -> Image.Image:
    """A palette PNG: pixel values are the class ids, shown in the Cityscapes colours."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette(min(num_classes, 256)).reshape(-1).tolist())
    return im


def padded_key(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    return -(-h // INPUT_MULTIPLE) * INPUT_MULTIPLE, -(-w // INPUT_MULTIPLE) * INPUT_MULTIPLE


@dataclass(frozen=True)
class Crop:
    owner: int               # index of the image in the caller's list
    box: Box
    center: np.ndarray
    scale: np.ndarray
    tensor: Tensor


def pose_crops(owner: int, image: Image.Image, boxes: Iterable[Box],
               input_hw: tuple[int, int]) -> list[Crop]:
    """The evaluation's top-down affine crop of each person box."""
    ih, iw = input_hw
    crops = []
    for box in boxes:
        center, scale = box_to_center_scale(box, iw / ih)
        mat = get_affine_transform(center, scale, 0.0, (iw, ih))
        crops.append(Crop(owner, tuple(float(v) for v in box), center, scale,  # type: ignore[arg-type]
                          to_normalized_tensor(warp_affine(image, mat, (iw, ih)))))
    return crops


@torch.no_grad()
def pose_people(run: Runtime, crops: Sequence[Crop]) -> list[PosePrediction]:
    """Decoded joints of a batch of crops (arg-max, quarter-pixel shift, inverse affine)."""
    if not crops:
        return []
    heat = run(torch.stack([c.tensor for c in crops])).float().numpy()
    joints, maxvals = get_final_preds(heat, np.stack([c.center for c in crops]),
                                      np.stack([c.scale for c in crops]))
    return [PosePrediction(c.box, j.astype(np.float64), m[:, 0])
            for c, j, m in zip(crops, joints, maxvals)]


def coco_result(image_id: int, person: PosePrediction) -> dict:
    """One COCO keypoint result: x, y, score per joint; the person score is the mean joint score
    (the box score is unknown for whole-image boxes)."""
    kps = np.concatenate([person.joints, person.scores[:, None]], axis=1).reshape(-1)
    return {"image_id": image_id, "category_id": 1,
            "keypoints": [round(float(v), 3) for v in kps],
            "score": round(float(person.scores.mean()), 5), "bbox": list(person.box)}


__all__ = ["seg_labels", "mask_image", "padded_key", "pose_crops", "pose_people", "coco_result",
           "pad_to_multiple", "Runtime"]
