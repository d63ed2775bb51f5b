"""Bottom-up multi-person pose on COCO keypoints as a task plug-in: HigherHRNet's framework on the
ScaleNAS body (scalenas.md section 10; the head is pipeline.nets.heads.BottomUpHead).

Whole images, no person boxes: the network predicts heatmaps and associative-embedding tags at
1/4 of the input and heatmaps again at 1/2; people are found by grouping joints by tag
(pipeline.bottomup.group) and scored by pycocotools' keypoint OKS over whole images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from pipeline.bottomup.data import BottomUpCoco, ImageRecord, image_records
from pipeline.bottomup.group import GroupParams
from pipeline.bottomup.infer import predict_batch
from pipeline.bottomup.loss import LossWeights, bottomup_loss
from pipeline.data import splits
from pipeline.data.coco import annotation_path, image_dir, keypoint_splits, load_keypoint_json
from pipeline.data.errors import DataError
from pipeline.data.keypoints import NUM_JOINTS
from pipeline.data.manifest import pose_splits
from pipeline.errors import ConfigError
from pipeline.metrics.pose import coco_keypoint_eval, load_coco
from pipeline.tasks.base import ModeGuard, calibration_subset, collate
from pipeline.tasks.facts import BOTTOMUP


@dataclass(frozen=True)
class BottomUpTaskConfig:
    """Bottom-up settings; defaults are HigherHRNet's COCO recipe (W32 at 512)."""
    root: str
    train_split: str = "train2017"
    val_split: str = "val2017"
    input_size: int = 512
    sigma: float = 2.0
    max_people: int = 30
    scale_range: tuple[float, float] = (0.75, 1.5)
    max_rotation: float = 30.0
    max_translate: float = 40 / 512
    flip_prob: float = 0.5
    push_factor: float = 1e-3
    pull_factor: float = 1e-3
    heatmap_pos_weight: float = 0.0
    search_fraction: float = 0.2
    flip_test: bool = True
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if int(self.input_size) % 32:
            raise ConfigError(f"input_size {self.input_size} must be divisible by 32 "
                              "(network strides)")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ConfigError(f"bottomup.scale_range {list(self.scale_range)}: needs "
                              "0 < min <= max")


def bottomup_splits(root: Path, train_set: str, val_set: str, fraction: float
                    ) -> tuple[dict[str, list[int]], list[Path], dict[str, int]]:
    """The pose task's image splits; each must hold an annotated person (one line naming the
    annotation file otherwise): a split without people can teach or score nothing."""
    ids, files, persons = pose_splits(root, train_set, val_set, fraction)
    for name, count in persons.items():
        if ids[name] and not count:
            coco_split = val_set if name == "val" else train_set
            raise DataError(f"{annotation_path(root, coco_split)}: the {name} split "
                            f"({len(ids[name])} images) holds no person with an annotated "
                            f"keypoint: bottom-up pose needs people to learn and score")
    return ids, files, persons


class _MeanMaps(nn.Module):
    """The trivial predictor: every image gets the mean training heatmaps (one person at the
    average position of each joint), tags all zero."""

    def __init__(self, heatmaps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("heatmaps", heatmaps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        j = self.heatmaps.shape[0]
        q = F.interpolate(self.heatmaps[None], size=(h // 4, w // 4), mode="bilinear",
                          align_corners=False).expand(n, -1, -1, -1)
        half = F.interpolate(self.heatmaps[None], size=(h // 2, w // 2), mode="bilinear",
                             align_corners=False).expand(n, -1, -1, -1)
        return torch.cat([q, torch.zeros_like(q)], 1), half[:, :j]


class BottomUpTask:
    """Bottom-up pose plug-in; see pipeline.tasks.base.Task."""
    name = "bottomup"
    #: What the network, the search space and predict know of the task.
    facts = BOTTOMUP
    num_outputs = NUM_JOINTS
    metric = "AP"
    config_cls = BottomUpTaskConfig
    make_splits = staticmethod(bottomup_splits)

    # -- scalenas eval ---------------------------------------------------------------------------
    #: BN calibration of a subnet: images and batch size.
    release_calibration = (64, 8)
    #: HigherHRNet-W32's input (W48: 640).
    default_input_hw = (512, 512)
    item_unit = "images"
    eval_batch_size = 1

    @staticmethod
    def profile_input_hw(input_hw: tuple[int, int] | None) -> tuple[int, int]:
        """Where ``scalenas eval`` counts params/GFLOPs: the square input."""
        return tuple(input_hw) if input_hw else BottomUpTask.default_input_hw  # type: ignore[return-value]

    #: Splits of a COCO-layout root (``annotations/person_keypoints_<split>.json``).
    available_splits = staticmethod(keypoint_splits)

    @classmethod
    def for_evaluation(cls, data: Any) -> "BottomUpTask":
        """The task ``scalenas eval`` scores with (whole images: no boxes of any kind)."""
        if data.det_file is not None or data.gt_boxes:
            raise ConfigError("bottomup: finds every person in one pass; --det-file and "
                              "--gt-boxes do not apply")
        hw = tuple(data.input_hw) if data.input_hw else cls.default_input_hw
        if hw[0] != hw[1]:
            raise ConfigError(f"bottomup: the input is a square, got {hw[0]}x{hw[1]}")
        kw: dict[str, Any] = dict(
            root=str(data.root), train_split=data.train_split,
            val_split=data.train_split if data.split == "search" else data.split,
            input_size=int(hw[0]), search_fraction=data.search_fraction)
        if data.flip is not None:
            kw["flip_test"] = bool(data.flip)
        kw.update(dict(data.thresholds))
        return cls(BottomUpTaskConfig(**kw))

    def protocol(self) -> dict[str, Any]:
        c = self.config
        return {"input": f"short side {c.input_size}, padded to a multiple of 32",
                "flip": c.flip_test, "boxes": "none (bottom-up)",
                "aggregation": "heatmaps of 1/4 (upsampled) and 1/2 averaged",
                "grouping": f"tag threshold {c.tag_threshold}, detection threshold "
                            f"{c.detection_threshold}, NMS {c.nms_kernel}x{c.nms_kernel}, "
                            "Hungarian matching, adjust, refine"}

    def check_eval_data(self, split: str) -> dict[str, Any]:
        from pipeline.data.checks import check_coco_images

        doc = self.annotations(split)
        coco_split = self._coco_split(split)
        root = image_dir(Path(self.config.root), coco_split)
        for im in doc["images"]:
            if not (root / im["file_name"]).is_file():
                raise DataError(f"{root / im['file_name']}: image {im['id']} of split "
                                f"'{coco_split}' not found")
        check_coco_images(root, doc)
        recs = self.records(split)
        files = [annotation_path(Path(self.config.root), coco_split)] + [r.path for r in recs]
        return {"images": len(recs), "files": files, "items": len(recs),
                "persons": sum(r.num_people for r in recs)}

    def item_files(self, split: str, indices: Sequence[int]) -> list[Path]:
        recs = self.records(split)
        files = [annotation_path(Path(self.config.root), self._coco_split(split))]
        return files + sorted({recs[i].path for i in indices})

    @staticmethod
    def metric_lines(result: Mapping[str, Any]) -> list[str]:
        names = ("AP", "AP50", "AP75", "APM", "APL", "AR")
        return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                "| " + " | ".join(f"{result[n]:.3f}" for n in names) + " |",
                f"images: {result['num_images']}   people found: {result['num_results']}"]

    @staticmethod
    def cost_input_hw(section: Any) -> tuple[int, int]:
        """Input at which params/GFLOPs are counted: the square input."""
        return int(section.input_size), int(section.input_size)

    @staticmethod
    def check_params(resolved: Mapping[str, Any], source: str) -> None:
        """Refuse, before any job, what the recipe cannot mean (one line)."""
        if resolved.get("bottomup", {}).get("det_file") is not None:
            raise ConfigError(f"{source}: bottomup.det_file: bottom-up pose finds every person "
                              "in one pass and takes no detector boxes; remove det_file")
        lo, hi = resolved.get("bottomup", {}).get("scale_range", (1.0, 1.0))
        if not 0 < lo <= hi:
            raise ConfigError(f"{source}: bottomup.scale_range [{lo}, {hi}]: needs "
                              "0 < min <= max")

    @classmethod
    def from_params(cls, section: Any, *, seed: int) -> "BottomUpTask":
        if section.num_joints != NUM_JOINTS:
            raise ConfigError(f"bottomup.num_joints: the COCO task has {NUM_JOINTS} keypoints, "
                              f"got {section.num_joints}")
        if section.det_file is not None:
            raise ConfigError("bottomup.det_file: bottom-up pose takes no detector boxes; "
                              "remove det_file")
        return cls(BottomUpTaskConfig(
            root=str(section.root), train_split=section.train_set, val_split=section.val_set,
            input_size=int(section.input_size), search_fraction=section.search_fraction,
            flip_test=bool(section.flip_test), scale_range=tuple(section.scale_range),
            max_rotation=float(section.max_rotation),
            heatmap_pos_weight=float(section.heatmap_pos_weight), seed=seed))

    def __init__(self, config: BottomUpTaskConfig) -> None:
        self.config = config
        s = int(config.input_size)
        self.input_hw = (s, s)
        self.collate = collate
        self.group_params = GroupParams(max_people=config.max_people,
                                        detection_threshold=config.detection_threshold,
                                        tag_threshold=config.tag_threshold,
                                        nms_kernel=config.nms_kernel)
        self.weights = LossWeights(push=config.push_factor, pull=config.pull_factor,
                                   heatmap_pos=config.heatmap_pos_weight)
        self._docs: dict[str, dict] = {}
        self._coco: dict[str, Any] = {}
        self._ids: dict[str, list[int]] = {}

    def _coco_split(self, split: str) -> str:
        return self.config.val_split if splits.check_split(split) == "val" else self.config.train_split

    def annotations(self, split: str) -> dict:
        coco_split = self._coco_split(split)
        if coco_split not in self._docs:
            root = Path(self.config.root)
            if not root.is_dir():
                raise DataError(f"{root}: dataset root not found")
            self._docs[coco_split] = load_keypoint_json(annotation_path(root, coco_split))
        return self._docs[coco_split]

    def coco_index(self, split: str) -> Any:
        coco_split = self._coco_split(split)
        if coco_split not in self._coco:
            self._coco[coco_split] = load_coco(self.annotations(split))
        return self._coco[coco_split]

    def image_ids(self, split: str) -> list[int]:
        """Image ids of a named split (search/train carved from the train annotations, by image,
        as the pose task)."""
        if split not in self._ids:
            doc = self.annotations(split)
            ids = sorted(im["id"] for im in doc["images"])
            if split != "val":
                keep = splits.select(ids, split, self.config.search_fraction)
                ids = [i for i, k in zip(ids, keep) if k]
            self._ids[split] = ids
        return list(self._ids[split])

    def records(self, split: str, *, training: bool = False) -> list[ImageRecord]:
        """The images of a split; for training only those with an annotated person
        (HigherHRNet's filter: an image without people teaches background only)."""
        coco_split = self._coco_split(split)
        img_root = image_dir(Path(self.config.root), coco_split)
        if not img_root.is_dir():
            raise DataError(f"{img_root}: image folder of split '{coco_split}' not found")
        recs = image_records(self.annotations(split), img_root, self.image_ids(split))
        if training:
            recs = [r for r in recs if r.num_people]
            if not recs:
                raise DataError(f"{annotation_path(Path(self.config.root), coco_split)}: no "
                                f"image of the {split} split holds a person with an annotated "
                                "keypoint")
        return recs

    def dataset(self, split: str, train: bool) -> BottomUpCoco:
        """Training crops with targets (``train``), or whole images for evaluation."""
        c = self.config
        return BottomUpCoco(self.records(split, training=train), train=train,
                            input_size=c.input_size, num_joints=NUM_JOINTS, sigma=c.sigma,
                            max_people=c.max_people, scale_range=tuple(c.scale_range),
                            max_rotation=c.max_rotation, max_translate=c.max_translate,
                            flip_prob=c.flip_prob, seed=c.seed)

    def calibration_dataset(self, num_images: int, seed: int = 0) -> Subset:
        return calibration_subset(self.dataset("train", train=False), num_images, seed)

    def loss(self, output: Sequence[torch.Tensor], batch: dict) -> torch.Tensor:
        """Heatmap MSE at 1/4 and 1/2 (masked) plus the AE pull/push on the 1/4 tags."""
        dev = output[0].device
        hms = [batch["heatmaps0"].to(dev), batch["heatmaps1"].to(dev)]
        masks = [batch["mask0"].to(dev), batch["mask1"].to(dev)]
        terms = bottomup_loss([o.float() for o in output], hms, masks, batch["joints"].to(dev),
                              NUM_JOINTS, self.weights)
        return terms["total"]

    @staticmethod
    def distill(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        """Distillation on the heatmaps of both resolutions (not on the tags: a tag's value
        means nothing by itself, only its distance to the others)."""
        j = NUM_JOINTS
        return (F.mse_loss(student[0][:, :j].float(), teacher[0][:, :j].float())
                + F.mse_loss(student[1].float(), teacher[1].float()))

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu",
                batch_size: int = 1, progress: Callable[[int], Any] | None = None) -> list[dict]:
        """COCO keypoint results of every image of ``dataset`` (evaluation items); images of one
        padded size share a batch."""
        results: list[dict] = []
        pending: list[dict] = []

        def run() -> None:
            imgs = torch.stack([it["image"] for it in pending]).to(device)
            for r in predict_batch(model, imgs, [it["scale"] for it in pending],
                                   [it["image_id"] for it in pending], NUM_JOINTS,
                                   self.config.flip_test, self.group_params):
                results.extend(r)
            if progress is not None:
                progress(len(pending))
            pending.clear()

        with ModeGuard(model):
            # Iterated, not indexed: the search passes a streamed dataset (pipeline.data.stream).
            for item in iter(dataset):  # type: ignore[call-overload]
                if pending and (item["image"].shape != pending[0]["image"].shape
                                or len(pending) >= max(1, batch_size)):
                    run()
                pending.append(item)
            if pending:
                run()
        return results

    def evaluate(self, model: nn.Module, split: str, device: str | torch.device = "cpu",
                 batch_size: int = 1, dataset: Dataset | None = None,
                 progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """COCO keypoint metrics over whole images of ``split``: dict(score=AP, AP, AP50, AP75,
        APM, APL, AR, num_images, num_results)."""
        ds = dataset if dataset is not None else self.dataset(split, train=False)
        results = self.predict(model, ds, device, batch_size, progress)
        stats = coco_keypoint_eval(self.coco_index(split), results, self.image_ids(split))
        return {"score": max(0.0, stats["AP"]), **stats, "num_images": len(ds),
                "num_results": len(results)}

    def mean_heatmaps(self) -> torch.Tensor:
        """(J, s/4, s/4): the mean 1/4 target heatmaps of the plain "train" crops."""
        ds = self.dataset("train", train=False)
        total = None
        for i in range(len(ds)):
            hm = ds.training_item(i, augment=False)["heatmaps0"]
            total = hm if total is None else total + hm
        assert total is not None
        mean = total / len(ds)
        return mean / mean.amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)

    def baseline_model(self) -> nn.Module:
        return _MeanMaps(self.mean_heatmaps())

    def baseline(self, split: str, device: str | torch.device = "cpu") -> dict[str, Any]:
        return self.evaluate(self.baseline_model().to(device), split, device)


__all__ = ["BottomUpTask", "BottomUpTaskConfig", "bottomup_splits"]
