"""Cityscapes-layout semantic segmentation: file discovery, label mapping, the Dataset."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pipeline.data.errors import DataError
from pipeline.data.io import open_image, read_label_png
from pipeline.data.transforms import (sample_rng, scale_crop_flip_matrix, to_normalized_tensor,
                                      warp_affine)

IGNORE_INDEX = 255
NUM_CLASSES = 19
CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")
# labelId -> trainId of cityscapesScripts' labels.py; every other id is ignored.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# Class weights of the official OHEM loss (HRNet-Semantic-Segmentation cityscapes.py).
CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)

_LUT = [LABEL_TO_TRAIN.get(i, IGNORE_INDEX) for i in range(256)]
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_ids_to_train_ids(label: Image.Image | np.ndarray) -> np.ndarray:
    """Map Cityscapes label ids (uint8) to train ids 0..18, others 255."""
    arr = np.asarray(label, dtype=np.uint8)
    return np.asarray(_LUT, dtype=np.uint8)[arr]


@dataclass(frozen=True)
class SegSample:
    """One image/label pair; `name` is the frame stem (e.g. frankfurt_000000_000294)."""
    name: str
    image: Path
    label: Path


def list_cityscapes(root: Path, split: str) -> list[SegSample]:
    """Samples of `split`: from `<root>/<split>.lst` (HRNet list format: image<TAB>label, relative
    to root) when present, else by scanning leftImg8bit/<split>/<city>/*_leftImg8bit.png.
    Sorted by name. Every listed file must exist."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    lst = root / f"{split}.lst"
    samples: list[SegSample] = []
    if lst.is_file():
        for lineno, line in enumerate(lst.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) < 2:
                raise DataError(f"{lst}:{lineno}: expected 'image label', got {line!r}")
            img, lab = root / parts[0], root / parts[1]
            name = img.name[: -len(IMAGE_SUFFIX)] if img.name.endswith(IMAGE_SUFFIX) else img.stem
            samples.append(SegSample(name, img, lab))
    else:
        img_dir = root / "leftImg8bit" / split
        if not img_dir.is_dir():
            raise DataError(f"{img_dir}: split '{split}' not found (no {lst.name} list either)")
        for img in sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            name = img.name[: -len(IMAGE_SUFFIX)]
            lab = root / "gtFine" / split / img.parent.name / f"{name}{LABEL_SUFFIX}"
            samples.append(SegSample(name, img, lab))
    if not samples:
        raise DataError(f"{root}: split '{split}' has no images")
    for s in samples:
        if not s.image.is_file():
            raise DataError(f"{s.image}: image listed for split '{split}' not found")
        if not s.label.is_file():
            raise DataError(f"{s.label}: label of {s.image.name} not found")
    return sorted(samples, key=lambda s: s.name)


class CityscapesSegmentation(Dataset):
    """Cityscapes-layout segmentation. Training: random long-side scale, random crop with ignore
    padding, flip; evaluation: the full-resolution image. Items: dict(image float32 3xHxW
    ImageNet-normalised, label int64 HxW (255 = ignore), index, name)."""

    def __init__(self, samples: Sequence[SegSample], *, train: bool,
                 crop_hw: tuple[int, int] = (512, 1024), base_size: int = 2048,
                 scale_range: tuple[float, float] = (0.5, 2.1), scale_step: float = 0.1,
                 flip: bool = True, seed: int = 0) -> None:
        self.samples = list(samples)
        self.train = train
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.base_size = int(base_size)
        n_steps = int(round((scale_range[1] - scale_range[0]) / scale_step)) if scale_step > 0 else 0
        self.scales = tuple(scale_range[0] + i * scale_step for i in range(n_steps + 1))
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before creating the loader iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, Image.Image]:
        """Image (RGB) and train-id label (mode L) of sample `index`, sizes checked."""
        s = self.samples[index]
        img = open_image(s.image)
        lab = read_label_png(s.label, expected_wh=img.size)
        return img, Image.fromarray(label_ids_to_train_ids(lab))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        img, lab = self.load(index)
        if self.train:
            img, lab = self._augment(img, lab, sample_rng(self.seed, epoch, index))
        return {"image": to_normalized_tensor(img),
                "label": torch.from_numpy(np.array(lab, dtype=np.int64)),
                "index": index, "name": self.samples[index].name}

    def _augment(self, img: Image.Image, lab: Image.Image, rng: np.random.Generator
                 ) -> tuple[Image.Image, Image.Image]:
        w, h = img.size
        long_size = int(self.base_size * self.scales[int(rng.integers(len(self.scales)))] + 0.5)
        if h > w:
            new_h, new_w = long_size, int(w * long_size / h + 0.5)
        else:
            new_w, new_h = long_size, int(h * long_size / w + 0.5)
        ch, cw = self.crop_hw
        # Crop offsets inside the scaled image padded (bottom/right) to at least the crop size.
        oy = int(rng.integers(max(new_h, ch) - ch + 1))
        ox = int(rng.integers(max(new_w, cw) - cw + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        mat = scale_crop_flip_matrix((h, w), (new_h, new_w), (ox, oy), self.crop_hw, flip)
        # Pixels beyond the scaled image are padding: black image, ignored label.
        img_out = warp_affine(img, mat, (cw, ch), fill=(0, 0, 0))
        lab_out = warp_affine(lab, mat, (cw, ch), nearest=True, fill=IGNORE_INDEX)
        return img_out, lab_out
