"""Whole-image COCO keypoints for bottom-up pose: the images of a split with all their people, and
HigherHRNet's augmentation (scalenas.md section 10).

Training items are square crops of ``input_size``: the image, scaled so that its longer side
fills the crop, then zoomed by a random factor in ``scale_range``, rotated up to
``max_rotation`` degrees, shifted up to ``max_translate`` (a fraction of the crop), and mirrored
with probability ``flip_prob`` (left and right joints swapped). Pixels outside the image are
masked out of the heatmap loss, as are crowd regions and people without labelled keypoints.

Evaluation items are the whole image resized so that its short side is ``input_size`` (the long
side rounded, then padded to a multiple of 32): HigherHRNet's single-scale test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.bottomup.targets import MAX_PEOPLE, bottomup_targets, ignore_mask, person_joints
from pipeline.data.errors import DataError
from pipeline.data.io import open_image
from pipeline.data.keypoints import flip_permutation
from pipeline.data.transforms import (get_affine_transform, sample_rng, to_normalized_tensor,
                                      warp_affine)

#: HigherHRNet's COCO augmentation (w48_640 / w32_512 configurations).
SCALE_RANGE = (0.75, 1.5)
MAX_ROTATION = 30.0
#: 40 pixels of a 512 crop.
MAX_TRANSLATE = 40 / 512
FLIP_PROB = 0.5
#: Evaluated images are padded to a multiple of this (the network's strides).
SIZE_DIVISOR = 32


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split with every annotation of its people (crowds included)."""

    image_id: int
    path: Path
    width: int
    height: int
    anns: tuple[dict, ...]

    @property
    def num_people(self) -> int:
        """People the network is taught to find (not crowds, at least one labelled keypoint)."""
        return len(person_joints(self.anns))


def image_records(doc: dict, img_root: Path, ids: Sequence[int]) -> list[ImageRecord]:
    """The images ``ids`` of a validated keypoint JSON, with their person annotations."""
    by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        if a.get("category_id", 1) == 1:
            by_image.setdefault(int(a["image_id"]), []).append(a)
    meta = {int(im["id"]): im for im in doc["images"]}
    out = []
    for i in ids:
        im = meta[int(i)]
        out.append(ImageRecord(int(i), img_root / im["file_name"], int(im["width"]),
                               int(im["height"]), tuple(by_image.get(int(i), ()))))
    return out


def flip_joints(joints: np.ndarray, width: int) -> np.ndarray:
    """(P, J, 3) joints of an image ``width`` pixels wide, mirrored, left and right swapped."""
    out = joints[:, flip_permutation(joints.shape[1])].copy()
    out[..., 0] = np.where(out[..., 2] > 0, width - 1 - out[..., 0], 0.0)
    return out


def eval_scale(height: int, width: int, input_size: int) -> tuple[float, tuple[int, int]]:
    """(scale, padded network input (H, W)) of HigherHRNet's test: the short side to
    ``input_size``, the long side rounded and padded up to a multiple of 32."""
    s = input_size / min(height, width)
    h, w = round(height * s), round(width * s)
    pad = lambda v: -(-v // SIZE_DIVISOR) * SIZE_DIVISOR  # noqa: E731
    return s, (pad(h), pad(w))


def resize_matrix(scale: float) -> np.ndarray:
    """Input->output matrix of a centre-aligned resize by ``scale`` (as cv2.resize)."""
    return np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5]])


class BottomUpCoco(Dataset):
    """Whole images of one split: training crops with targets, or evaluation inputs."""

    def __init__(self, records: Sequence[ImageRecord], *, train: bool, input_size: int,
                 num_joints: int = 17, sigma: float = 2.0, max_people: int = MAX_PEOPLE,
                 scale_range: tuple[float, float] = SCALE_RANGE,
                 max_rotation: float = MAX_ROTATION, max_translate: float = MAX_TRANSLATE,
                 flip_prob: float = FLIP_PROB, seed: int = 0) -> None:
        self.records = list(records)
        self.train = train
        self.input_size = int(input_size)
        self.num_joints = num_joints
        self.sigma, self.max_people = sigma, max_people
        self.scale_range, self.max_rotation = scale_range, max_rotation
        self.max_translate, self.flip_prob = max_translate, flip_prob
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, rec: ImageRecord) -> Image.Image:
        img = open_image(rec.path)
        if img.size != (rec.width, rec.height):
            raise DataError(f"{rec.path}: image is {img.size[0]}x{img.size[1]}, the annotations "
                            f"say {rec.width}x{rec.height}")
        return img

    def crop_matrix(self, rec: ImageRecord, rng: np.random.Generator | None
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(mirrored image->crop matrix for the joints, image->crop matrix for the pixels,
        whether it mirrors); ``rng`` None: the plain crop (the longer side fills the square,
        centred). Without a mirror both matrices are the same."""
        side = float(max(rec.width, rec.height))
        center = np.array([rec.width / 2.0, rec.height / 2.0])
        rot, flip = 0.0, False
        if rng is not None:
            side *= float(rng.uniform(*self.scale_range))
            rot = float(rng.uniform(-self.max_rotation, self.max_rotation))
            center = center + rng.uniform(-self.max_translate, self.max_translate, 2) * side
            flip = bool(rng.random() < self.flip_prob)
        s = self.input_size
        mat = get_affine_transform(center, (side / 200.0, side / 200.0), rot, (s, s))
        if not flip:
            return mat, mat, False
        # The pixels are mirrored (x -> W-1-x) inside the warp; the joints are mirrored and their
        # left and right swapped first (flip_joints), then cropped with the plain matrix.
        mirror = np.array([[-1.0, 0.0, rec.width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return mat, mat @ mirror, True

    def training_item(self, index: int, epoch: int | None = None, augment: bool = True) -> dict:
        rec = self.records[index]
        img = self._image(rec)
        rng = sample_rng(self.seed, self.epoch if epoch is None else epoch, index) \
            if augment else None
        jmat, mat, flip = self.crop_matrix(rec, rng)
        joints = person_joints(rec.anns, self.num_joints)
        if flip:
            joints = flip_joints(joints, rec.width)
        if len(joints):
            pts = joints[..., :2].reshape(-1, 2) @ jmat[:, :2].T + jmat[:, 2]
            joints = np.concatenate([pts.reshape(joints.shape[:2] + (2,)), joints[..., 2:]], -1)
        s = self.input_size
        crop = warp_affine(img, mat, (s, s), fill=(0, 0, 0))
        keep = ignore_mask(rec.anns, rec.height, rec.width)
        # Outside the image there is nothing to learn: masked like a crowd (fill 0).
        mask = np.asarray(warp_affine(Image.fromarray((keep * 255).astype(np.uint8)), mat, (s, s),
                                      nearest=True, fill=0), dtype=np.float32) / 255.0
        t = bottomup_targets(joints, mask, (s, s), self.sigma, self.max_people)
        return {"image": to_normalized_tensor(crop),
                "heatmaps0": torch.from_numpy(t["heatmaps"][0]),
                "heatmaps1": torch.from_numpy(t["heatmaps"][1]),
                "mask0": torch.from_numpy(t["masks"][0]), "mask1": torch.from_numpy(t["masks"][1]),
                "joints": torch.from_numpy(t["joints"][0]),
                "image_id": rec.image_id, "flipped": flip, "index": index}

    def eval_item(self, index: int) -> dict:
        rec = self.records[index]
        scale, (h, w) = eval_scale(rec.height, rec.width, self.input_size)
        img = warp_affine(self._image(rec), resize_matrix(scale), (w, h), fill=(0, 0, 0))
        return {"image": to_normalized_tensor(img), "image_id": rec.image_id,
                "scale": float(scale), "index": index}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        if self.train:
            return self.training_item(index, epoch)
        return self.eval_item(index)


__all__ = ["BottomUpCoco", "ImageRecord", "eval_scale", "flip_joints", "image_records",
           "resize_matrix"]
