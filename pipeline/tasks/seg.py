"""Cityscapes semantic segmentation as a task plug-in."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pipeline.data import splits
from pipeline.data.manifest import seg_splits
from pipeline.data.synth import read_record
from pipeline.data.cityscapes import (CLASS_NAMES, CLASS_WEIGHTS, IGNORE_INDEX, NUM_CLASSES,
                                      CityscapesSegmentation, SegSample, list_cityscapes)
from pipeline.errors import ConfigError
from pipeline.metrics.segmentation import ConfusionMeter
from pipeline.tasks.facts import SEG
from pipeline.tasks.base import ModeGuard, calibration_subset, collate


@dataclass(frozen=True)
class SegTaskConfig:
    """Segmentation settings; defaults are the paper's Cityscapes recipe."""
    root: str
    train_split: str = "train"
    val_split: str = "val"
    crop_hw: tuple[int, int] = (512, 1024)
    base_size: int = 2048            # long side that the random scale multiplies
    scale_range: tuple[float, float] = (0.5, 2.1)
    scale_step: float = 0.1
    flip: bool = True
    search_fraction: float = 0.2
    ohem_thresh: float = 0.9
    ohem_min_kept: int = 131072
    class_weights: bool = True
    size_divisor: int = 32           # eval images are padded to a multiple of this
    eval_flip: bool = False          # average with the mirrored image's logits (the release: off)
    seed: int = 0
    num_workers: int = 0

    @classmethod
    def for_synthetic(cls, root: str | Path, **overrides: Any) -> "SegTaskConfig":
        """Settings for the built-in 128x256 data: the paper's crop/image ratio (1/2 per side) and
        min_kept scaled by the crop area."""
        base = dict(root=str(root), crop_hw=(64, 128), base_size=256, ohem_min_kept=2048)
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if any(int(v) % 32 for v in self.crop_hw):
            raise ConfigError(f"crop_hw {self.crop_hw} must be divisible by 32 (network strides)")


def ohem_cross_entropy(logits: torch.Tensor, label: torch.Tensor, *, thresh: float = 0.9,
                       min_kept: int = 131072, weight: torch.Tensor | None = None,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """HRNet's OHEM cross-entropy: logits are upsampled (bilinear) to the label size; the loss
    averages the pixels whose true-class probability is below max(thresh, the min_kept-th
    smallest probability)."""
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    pixel_losses = F.cross_entropy(logits, label, weight=weight, ignore_index=ignore_index,
                                   reduction="none").reshape(-1)
    mask = label.reshape(-1) != ignore_index
    if not mask.any():
        return logits.sum() * 0.0
    with torch.no_grad():
        prob = F.softmax(logits, dim=1)
        safe = label.clone()
        safe[safe == ignore_index] = 0
        prob = prob.gather(1, safe.unsqueeze(1)).reshape(-1)[mask]
        sorted_prob, order = prob.sort()
        min_value = sorted_prob[min(min_kept, sorted_prob.numel() - 1)]
        threshold = max(float(min_value), thresh)
    losses = pixel_losses[mask][order]
    kept = losses[sorted_prob < threshold]
    return kept.mean() if kept.numel() else losses.mean()


def mean_iou_all(result: Mapping[str, Any]) -> float:
    """The release's mean_IoU: the mean over every class, a class absent from both the labels and
    the predictions counting 0 (the same as ``miou`` when every class occurs, as on Cityscapes val)."""
    iou = result["iou"]
    return float(sum(v or 0.0 for v in iou.values()) / len(iou))


class _ConstantLogits(nn.Module):
    """Predicts one class everywhere (the trivial baseline)."""

    def __init__(self, cls: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("logits", F.one_hot(torch.tensor(cls), num_classes).float() * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return self.logits.view(1, -1, 1, 1).expand(n, -1, h // 4, w // 4)


#: Paper crop and OHEM minimum: min_kept scales with the crop area.
PAPER_CROP_AREA = 512 * 1024
PAPER_OHEM_MIN_KEPT = 131072
CITYSCAPES_BASE_SIZE = 2048


class SegTask:
    """Segmentation plug-in; see pipeline.tasks.base.Task."""
    name = "seg"
    #: What the network, the search space and predict know of the task.
    facts = SEG
    num_outputs = NUM_CLASSES
    class_names = CLASS_NAMES
    #: Name of the score ``evaluate`` returns (search tables, fine-tuning records, the report).
    metric = "mIoU"
    config_cls = SegTaskConfig
    #: The split maker of the dataset layout (pipeline.data.manifest).
    make_splits = staticmethod(seg_splits)

    # -- scalenas eval: the release's test configuration (pipeline.evaluate) -------------------
    #: BN calibration of a supernet's subnet: images and batch size (the release's calib_bn_seg:
    #: 8 batches of its 3 training images per GPU).
    release_calibration = (24, 3)
    #: Input at which the release's test prints params and GFLOPs (Cityscapes' full frame).
    paper_input_hw = (1024, 2048)
    #: What one dataset item is, and how many ``scalenas eval`` scores a batch by default.
    item_unit = "images"
    eval_batch_size = 4

    @staticmethod
    def profile_input_hw(input_hw: tuple[int, int] | None) -> tuple[int, int]:
        """Where ``scalenas eval`` counts params/GFLOPs: the full Cityscapes frame."""
        return SegTask.paper_input_hw

    @staticmethod
    def available_splits(root: str | Path) -> list[str]:
        """Split folders of a Cityscapes-layout root (``leftImg8bit/<split>`` or ``<split>.lst``)."""
        r = Path(root)
        found = {p.name for p in (r / "leftImg8bit").glob("*") if p.is_dir()}
        found |= {p.stem for p in r.glob("*.lst")}
        return sorted(found)

    @classmethod
    def for_evaluation(cls, data: Any) -> "SegTask":
        """The task ``scalenas eval`` scores with (:class:`pipeline.tasks.base.EvalData`)."""
        if data.det_file is not None or data.gt_boxes or data.thresholds:
            raise ConfigError("--det-file, --gt-boxes and the pose thresholds apply to pose "
                              "models only")
        return cls(SegTaskConfig(
            root=str(data.root), train_split=data.train_split,
            val_split=data.train_split if data.split == "search" else data.split,
            search_fraction=data.search_fraction,
            eval_flip=bool(data.flip) if data.flip is not None else False))

    def protocol(self) -> dict[str, Any]:
        """How ``evaluate`` scores, as ``scalenas eval`` states it."""
        return {"scales": [1.0], "flip": self.config.eval_flip,
                "resolution": "each image at its own size (padded to a multiple of "
                              f"{self.config.size_divisor}, counted at the label's size)",
                "ignore_label": IGNORE_INDEX, "classes": NUM_CLASSES}

    def check_eval_data(self, split: str) -> dict[str, Any]:
        """``prepare``'s checks of the images and labels of ``split`` (one line naming the file)."""
        from pipeline.data.checks import check_seg_pairs, seg_pairs

        samples = self.samples(split)
        check_seg_pairs(seg_pairs(samples))
        return {"images": len(samples), "items": len(samples),
                "files": [p for s in samples for p in (s.image, s.label)]}

    def item_files(self, split: str, indices: Sequence[int]) -> list[Path]:
        """The files behind items ``indices`` of ``split`` (images and labels)."""
        samples = self.samples(split)
        return [p for i in indices for p in (samples[i].image, samples[i].label)]

    @staticmethod
    def metric_lines(result: Mapping[str, Any]) -> list[str]:
        """The printed table: mIoU, pixel accuracy, IoU per class."""
        iou = result["iou"]
        present = [v for v in iou.values() if v is not None]
        lines = [f"mIoU: {result['miou']:.4f} (mean over the {len(present)} classes present; "
                 f"over all {len(iou)} classes as the release's mean_IoU counts: "
                 f"{mean_iou_all(result):.4f})",
                 f"pixel accuracy: {result['pixel_acc']:.4f}   images: {result['num_images']}   "
                 f"labelled pixels: {result['num_pixels']}",
                 f"{'class':<15} IoU"]
        lines += [f"{name:<15} {'-' if v is None else f'{v:.4f}'}" for name, v in iou.items()]
        return lines

    @staticmethod
    def cost_input_hw(section: Any) -> tuple[int, int]:
        """Input size at which params/GFLOPs are counted: ``flops_size`` (the paper counts at the
        1024x2048 evaluation size), by default the training crop."""
        hw = section.flops_size or section.crop_size
        return int(hw[0]), int(hw[1])

    @classmethod
    def from_params(cls, section: Any, *, seed: int) -> "SegTask":
        """The task of a ``seg`` parameter section (pipeline.config.SegConfig).

        Settings the parameters do not carry follow the data: the built-in data records its
        image size (the random-scale base is its long side); the OHEM minimum of kept pixels
        follows the crop area (131072 at the paper's 512x1024 crop).
        """
        if (section.num_classes, section.ignore_label) != (NUM_CLASSES, IGNORE_INDEX):
            raise ConfigError(f"seg.num_classes / seg.ignore_label: the Cityscapes task has "
                              f"{NUM_CLASSES} train ids and ignores {IGNORE_INDEX}, got "
                              f"{section.num_classes} / {section.ignore_label}")
        root = Path(section.root)
        record = read_record(root)
        crop = (int(section.crop_size[0]), int(section.crop_size[1]))
        base = max(record["size_hw"]) if record and "size_hw" in record else CITYSCAPES_BASE_SIZE
        min_kept = max(1, PAPER_OHEM_MIN_KEPT * crop[0] * crop[1] // PAPER_CROP_AREA)
        return cls(SegTaskConfig(
            root=str(root), train_split=section.train_set, val_split=section.val_set,
            crop_hw=crop, base_size=int(base), search_fraction=section.search_fraction,
            ohem_min_kept=min_kept, seed=seed))

    def __init__(self, config: SegTaskConfig) -> None:
        self.config = config
        self.input_hw = tuple(config.crop_hw)
        self.collate = collate

    @cached_property
    def _trainfull(self) -> list[SegSample]:
        return list_cityscapes(Path(self.config.root), self.config.train_split)

    def samples(self, split: str) -> list[SegSample]:
        """The (image, label) files of a named split (see pipeline.data.splits)."""
        splits.check_split(split)
        if split == "val":
            return list_cityscapes(Path(self.config.root), self.config.val_split)
        items = self._trainfull
        keep = splits.select([s.name for s in items], split, self.config.search_fraction)
        return [s for s, k in zip(items, keep) if k]

    def dataset(self, split: str, train: bool) -> CityscapesSegmentation:
        """`train=True`: augmented crops; `train=False`: full-resolution images."""
        c = self.config
        return CityscapesSegmentation(self.samples(split), train=train, crop_hw=c.crop_hw,
                                      base_size=c.base_size, scale_range=c.scale_range,
                                      scale_step=c.scale_step, flip=c.flip, seed=c.seed)

    def calibration_dataset(self, num_images: int, seed: int = 0) -> Subset:
        """Fixed un-augmented "train" images for BN calibration (`.indices` records which)."""
        return calibration_subset(self.dataset("train", train=False), num_images, seed)

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        label = batch["label"].to(output.device, non_blocking=True)
        weight = (torch.tensor(CLASS_WEIGHTS, device=output.device, dtype=output.dtype)
                  if self.config.class_weights else None)
        return ohem_cross_entropy(output, label, thresh=self.config.ohem_thresh,
                                  min_kept=self.config.ohem_min_kept, weight=weight)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: str | torch.device = "cpu",
                 batch_size: int = 1, dataset: Dataset | None = None,
                 progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """Single-scale full-resolution mIoU on `split`. Returns dict(score=miou, miou, iou per
        class (None when absent from both GT and prediction), absent_classes, pixel_acc,
        num_pixels, num_images). ``progress(n)`` is told after each batch how many images it held."""
        ds = dataset if dataset is not None else self.dataset(split, train=False)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False,
                            num_workers=self.config.num_workers, collate_fn=self.collate)
        meter = ConfusionMeter(NUM_CLASSES, IGNORE_INDEX)
        div = self.config.size_divisor
        with ModeGuard(model):
            for batch in loader:
                img = batch["image"].to(device)
                h, w = img.shape[-2:]
                ph, pw = -h % div, -w % div
                if ph or pw:  # the network needs sizes divisible by 32; pad and crop back
                    img = F.pad(img, (0, pw, 0, ph))
                logits = model(img)
                if self.config.eval_flip:
                    logits = (logits + model(img.flip(3)).flip(3)) * 0.5
                logits = F.interpolate(logits, size=(h + ph, w + pw), mode="bilinear",
                                       align_corners=False)[..., :h, :w]
                # Counted where the logits are: only the 19x19 matrix comes back to the host,
                # not a full-resolution prediction per image.
                meter.update(logits.argmax(1), batch["label"].to(logits.device))
                if progress is not None:
                    progress(int(img.shape[0]))
        res = meter.compute(CLASS_NAMES)
        return {"score": res["miou"], **res, "num_images": len(ds)}

    def class_frequencies(self, split: str = "train") -> np.ndarray:
        """Pixel count per train id over the labels of `split`."""
        ds = self.dataset(split, train=False)
        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        for i in range(len(ds)):
            lab = np.asarray(ds.load(i)[1])
            counts += np.bincount(lab[lab != IGNORE_INDEX].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        return counts

    def baseline_model(self) -> nn.Module:
        """Predicts the most frequent "train" class everywhere."""
        return _ConstantLogits(int(self.class_frequencies("train").argmax()), NUM_CLASSES)

    def baseline(self, split: str, device: str | torch.device = "cpu") -> dict[str, Any]:
        """The trivial predictor's metrics on `split` (a floor for acceptance checks)."""
        return self.evaluate(self.baseline_model().to(device), split, device)
