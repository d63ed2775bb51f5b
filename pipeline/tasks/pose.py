"""COCO top-down keypoints as a task plug-in."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pipeline.data import splits
from pipeline.data.manifest import pose_splits
from pipeline.data.coco import (CocoKeypoints, PersonRecord, annotation_path,
                                detection_person_records, gt_person_records, image_dir,
                                keypoint_splits, load_keypoint_json)
from pipeline.errors import ConfigError
from pipeline.data.errors import DataError
from pipeline.data.heatmaps import generate_heatmaps
from pipeline.data.keypoints import NUM_JOINTS
from pipeline.data.transforms import affine_points, get_affine_transform
from pipeline.metrics.pose import (coco_keypoint_eval, flip_test_average, get_final_preds,
                                   keypoint_results, load_coco)
from pipeline.tasks.facts import POSE
from pipeline.tasks.base import ModeGuard, calibration_subset, collate


@dataclass(frozen=True)
class PoseTaskConfig:
    """Pose settings; defaults are HRNet's COCO 256x192 recipe."""
    root: str
    train_split: str = "train2017"
    val_split: str = "val2017"
    input_hw: tuple[int, int] = (256, 192)
    sigma: float = 2.0
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    bbox_padding: float = 1.25
    search_fraction: float = 0.2
    use_gt_boxes: bool = True        # val only; train/search always use ground-truth boxes
    detection_file: str = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    det_score_threshold: float = 0.0
    flip_test: bool = True
    shift_heatmap: bool = True
    in_vis_thre: float = 0.2
    oks_thre: float = 0.9
    seed: int = 0
    num_workers: int = 0

    @classmethod
    def for_synthetic(cls, root: str | Path, **overrides: Any) -> "PoseTaskConfig":
        """Settings for the built-in data (generated detections, small input)."""
        from pipeline.data.synth import DETECTION_FILE
        base = dict(root=str(root), input_hw=(128, 96), detection_file=DETECTION_FILE)
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if any(int(v) % 32 for v in self.input_hw):
            raise ConfigError(f"input_hw {self.input_hw} must be divisible by 32 (network strides)")


class _ConstantHeatmaps(nn.Module):
    """Outputs the same heatmaps for every input (the mean-pose baseline)."""

    def __init__(self, heatmaps: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("heatmaps", heatmaps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class PoseTask:
    """Top-down pose plug-in; see pipeline.tasks.base.Task."""
    name = "pose"
    #: What the network, the search space and predict know of the task.
    facts = POSE
    num_outputs = NUM_JOINTS
    #: Name of the score ``evaluate`` returns (search tables, fine-tuning records, the report).
    metric = "AP"
    config_cls = PoseTaskConfig
    #: The split maker of the dataset layout (pipeline.data.manifest).
    make_splits = staticmethod(pose_splits)

    # -- scalenas eval: the release's test configuration (pipeline.evaluate) -------------------
    #: BN calibration of a supernet's subnet: person crops and batch size (the release's calib_bn:
    #: 8 batches of its training batch, 32 crops per GPU on 4 GPUs).
    release_calibration = (1024, 128)
    #: The network input of the release's COCO test configurations unless told otherwise.
    default_input_hw = (256, 192)
    #: What one dataset item is, and how many ``scalenas eval`` scores a batch by default.
    item_unit = "person crops"
    eval_batch_size = 32

    @staticmethod
    def profile_input_hw(input_hw: tuple[int, int] | None) -> tuple[int, int]:
        """Where ``scalenas eval`` counts params/GFLOPs: the network input (256x192 or 384x288)."""
        return tuple(input_hw) if input_hw else PoseTask.default_input_hw  # type: ignore[return-value]

    #: Splits of a COCO-layout root (``annotations/person_keypoints_<split>.json``).
    available_splits = staticmethod(keypoint_splits)

    @classmethod
    def for_evaluation(cls, data: Any) -> "PoseTask":
        """The task ``scalenas eval`` scores with (:class:`pipeline.tasks.base.EvalData`)."""
        if (data.det_file is None) == (not data.gt_boxes):
            raise ConfigError("pose: give either --det-file FILE (the detector's person boxes, "
                              "as the release's test) or --gt-boxes")
        if data.det_file is not None and not Path(data.det_file).is_file():
            raise ConfigError(f"--det-file {data.det_file}: file not found")
        hw = tuple(data.input_hw) if data.input_hw else cls.default_input_hw
        kw: dict[str, Any] = dict(
            root=str(data.root), train_split=data.train_split,
            val_split=data.train_split if data.split == "search" else data.split,
            input_hw=(int(hw[0]), int(hw[1])), search_fraction=data.search_fraction,
            use_gt_boxes=data.det_file is None)
        if data.det_file is not None:
            kw["detection_file"] = str(Path(data.det_file).absolute())
        if data.flip is not None:
            kw["flip_test"] = bool(data.flip)
        kw.update(dict(data.thresholds))
        return cls(PoseTaskConfig(**kw))

    def protocol(self) -> dict[str, Any]:
        """How ``evaluate`` scores, as ``scalenas eval`` states it."""
        c = self.config
        return {"input_hw": list(c.input_hw), "flip": c.flip_test, "shift_heatmap": c.shift_heatmap,
                "boxes": "ground truth" if c.use_gt_boxes else f"detector ({c.detection_file})",
                "det_score_threshold": c.det_score_threshold, "oks_nms_threshold": c.oks_thre,
                "in_vis_threshold": c.in_vis_thre, "bbox_padding": c.bbox_padding,
                "decoding": "arg-max, quarter-pixel shift"}

    def check_eval_data(self, split: str) -> dict[str, Any]:
        """``prepare``'s checks of the images of ``split``, and for detector boxes that their
        image ids are images of the split (one line naming the file)."""
        from pipeline.data.checks import check_coco_images
        from pipeline.data.io import read_json

        doc = self.annotations(split)
        coco_split = self._coco_split(split)
        root = image_dir(Path(self.config.root), coco_split)
        for im in doc["images"]:
            if not (root / im["file_name"]).is_file():
                raise DataError(f"{root / im['file_name']}: image {im['id']} of split "
                                f"'{coco_split}' not found")
        check_coco_images(root, doc)
        ids = set(self.image_ids(split))
        files = [annotation_path(Path(self.config.root), coco_split)]
        files += [root / im["file_name"] for im in doc["images"] if im["id"] in ids]
        info: dict[str, Any] = {"images": len(ids), "files": files}
        if split == "val" and not self.config.use_gt_boxes:
            det = Path(self.config.root) / self.config.detection_file
            dets = read_json(det)
            if not isinstance(dets, list):
                raise DataError(f"{det}: detection results must be a JSON list")
            people = [d for d in dets if isinstance(d, dict) and d.get("category_id") == 1]
            known = {im["id"] for im in doc["images"]}
            matched = sum(1 for d in people if d.get("image_id") in ids)
            absent = [d.get("image_id") for d in people if d.get("image_id") not in known]
            if not matched or absent:
                example = f", e.g. image_id {absent[0]}" if absent else ""
                raise DataError(f"{det}: {matched} of its {len(people)} person detections match "
                                f"an image of split '{coco_split}' ({len(ids)} images){example}")
            info.update(detections=len(people), files=files + [det])
        info["items"] = len(self.records(split))
        return info

    def item_files(self, split: str, indices: Sequence[int]) -> list[Path]:
        """The files behind items ``indices`` of ``split`` (annotations, the persons' images)."""
        records = self.records(split)
        files = [annotation_path(Path(self.config.root), self._coco_split(split))]
        return files + sorted({records[i].image_path for i in indices})

    @staticmethod
    def metric_lines(result: Mapping[str, Any]) -> list[str]:
        """The release's COCO table: AP, AP50, AP75, APM, APL, AR."""
        names = ("AP", "AP50", "AP75", "APM", "APL", "AR")
        return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                "| " + " | ".join(f"{result[n]:.3f}" for n in names) + " |",
                f"persons: {result['num_persons']}   results after OKS NMS: {result['num_results']}"]

    @staticmethod
    def cost_input_hw(section: Any) -> tuple[int, int]:
        """Input size at which params/GFLOPs are counted: the network input."""
        return int(section.input_size[0]), int(section.input_size[1])

    @classmethod
    def from_params(cls, section: Any, *, seed: int) -> "PoseTask":
        """The task of a ``pose`` parameter section (pipeline.config.PoseConfig); a null
        ``det_file`` evaluates val with ground-truth boxes."""
        if section.num_joints != NUM_JOINTS:
            raise ConfigError(f"pose.num_joints: the COCO task has {NUM_JOINTS} keypoints, got "
                              f"{section.num_joints}")
        root = Path(section.root)
        kw: dict[str, Any] = dict(
            root=str(root), train_split=section.train_set, val_split=section.val_set,
            input_hw=(int(section.input_size[0]), int(section.input_size[1])),
            search_fraction=section.search_fraction, use_gt_boxes=section.det_file is None,
            seed=seed)
        if section.det_file is not None:
            det = Path(section.det_file)
            kw["detection_file"] = (str(det.relative_to(root)) if det.is_relative_to(root)
                                    else str(det.resolve()))
        return cls(PoseTaskConfig(**kw))

    def __init__(self, config: PoseTaskConfig) -> None:
        self.config = config
        self.input_hw = tuple(config.input_hw)
        self.heatmap_hw = (self.input_hw[0] // 4, self.input_hw[1] // 4)
        self.collate = collate
        self._docs: dict[str, dict] = {}
        self._coco: dict[str, Any] = {}
        self._ids: dict[str, list[int]] = {}

    @property
    def aspect_ratio(self) -> float:
        return self.input_hw[1] / self.input_hw[0]

    def _coco_split(self, split: str) -> str:
        return self.config.val_split if splits.check_split(split) == "val" else self.config.train_split

    def annotations(self, split: str) -> dict:
        """The validated keypoint JSON behind a named split."""
        coco_split = self._coco_split(split)
        if coco_split not in self._docs:
            root = Path(self.config.root)
            if not root.is_dir():
                raise DataError(f"{root}: dataset root not found")
            self._docs[coco_split] = load_keypoint_json(annotation_path(root, coco_split))
        return self._docs[coco_split]

    def coco_index(self, split: str) -> Any:
        """The pycocotools index of a split's annotations, built once: every evaluation (one per
        search candidate) reuses it instead of re-indexing the whole annotation file."""
        coco_split = self._coco_split(split)
        if coco_split not in self._coco:
            self._coco[coco_split] = load_coco(self.annotations(split))
        return self._coco[coco_split]

    def image_ids(self, split: str) -> list[int]:
        """Image ids of a named split (search/train carved from the train annotations)."""
        if split not in self._ids:
            doc = self.annotations(split)
            ids = sorted(im["id"] for im in doc["images"])
            if split != "val":
                keep = splits.select(ids, split, self.config.search_fraction)
                ids = [i for i, k in zip(ids, keep) if k]
            self._ids[split] = ids
        return list(self._ids[split])

    def records(self, split: str) -> list[PersonRecord]:
        """Person crops of a split: GT boxes, or detector boxes for val when use_gt_boxes is off."""
        c = self.config
        doc = self.annotations(split)
        coco_split = self._coco_split(split)
        img_root = image_dir(Path(c.root), coco_split)
        if not img_root.is_dir():
            raise DataError(f"{img_root}: image folder of split '{coco_split}' not found")
        ids = set(self.image_ids(split))
        if split == "val" and not c.use_gt_boxes:
            return detection_person_records(Path(c.root) / c.detection_file, doc, img_root,
                                            self.aspect_ratio, c.det_score_threshold,
                                            c.bbox_padding, ids)
        return gt_person_records(doc, img_root, self.aspect_ratio, c.bbox_padding, ids)

    def dataset(self, split: str, train: bool) -> CocoKeypoints:
        c = self.config
        return CocoKeypoints(self.records(split), train=train, input_hw=c.input_hw, sigma=c.sigma,
                             scale_factor=c.scale_factor, rotation_factor=c.rotation_factor,
                             rotation_prob=c.rotation_prob, flip=c.flip,
                             half_body_prob=c.half_body_prob,
                             half_body_min_joints=c.half_body_min_joints, seed=c.seed)

    def calibration_dataset(self, num_images: int, seed: int = 0) -> Subset:
        """Fixed un-augmented "train" person crops for BN calibration (`.indices` records which)."""
        return calibration_subset(self.dataset("train", train=False), num_images, seed)

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """HRNet's JointsMSELoss: 0.5 * mean over joints/pixels of ((pred - gt) * weight)^2."""
        target = batch["target"].to(output.device, non_blocking=True)
        weight = batch["target_weight"].to(output.device, non_blocking=True).unsqueeze(-1)
        return 0.5 * ((output - target) * weight).pow(2).mean()

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: Dataset, device: str | torch.device = "cpu",
                batch_size: int = 32, progress: Callable[[int], Any] | None = None) -> list[dict]:
        """COCO keypoint results for every person of `dataset` (flip test, decoding, OKS NMS);
        ``progress(n)`` is told after each batch how many persons it held."""
        c = self.config
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                            num_workers=c.num_workers, collate_fn=self.collate)
        preds, maxvals, centers, scales, scores, ids = [], [], [], [], [], []
        with ModeGuard(model):
            for batch in loader:
                img = batch["image"].to(device)
                out = model(img)
                if c.flip_test:
                    out = flip_test_average(out, model(img.flip(3)), c.shift_heatmap)
                p, m = get_final_preds(out.float().cpu().numpy(), batch["center"].numpy(),
                                       batch["scale"].numpy())
                preds.append(p)
                maxvals.append(m)
                centers.append(batch["center"].numpy())
                scales.append(batch["scale"].numpy())
                scores.append(batch["score"].numpy())
                ids.extend(int(i) for i in batch["image_id"])
                if progress is not None:
                    progress(int(img.shape[0]))
        if not ids:
            return []
        return keypoint_results(np.concatenate(preds), np.concatenate(maxvals),
                                np.concatenate(centers), np.concatenate(scales),
                                np.concatenate(scores), ids, c.in_vis_thre, c.oks_thre)

    def evaluate(self, model: nn.Module, split: str, device: str | torch.device = "cpu",
                 batch_size: int = 32, dataset: Dataset | None = None,
                 progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """COCO keypoint metrics on `split`: dict(score=AP, AP, AP50, AP75, APM, APL, AR,
        num_persons, num_results)."""
        ds = dataset if dataset is not None else self.dataset(split, train=False)
        results = self.predict(model, ds, device, batch_size, progress)
        stats = coco_keypoint_eval(self.coco_index(split), results, self.image_ids(split))
        return {"score": max(0.0, stats["AP"]), **stats, "num_persons": len(ds),
                "num_results": len(results)}

    def mean_pose_heatmaps(self) -> torch.Tensor:
        """Heatmaps (J, h, w) of the mean position of each joint in the "train" crops."""
        h, w = self.input_hw
        total = np.zeros((NUM_JOINTS, 2))
        count = np.zeros(NUM_JOINTS)
        for r in self.records("train"):
            pts = affine_points(r.joints, get_affine_transform(r.center, r.scale, 0.0, (w, h)))
            total += pts * (r.vis > 0)[:, None]
            count += r.vis > 0
        mean = total / np.maximum(count, 1)[:, None]
        hm, _ = generate_heatmaps(mean, np.ones(NUM_JOINTS), self.input_hw, self.heatmap_hw,
                                  self.config.sigma)
        return torch.from_numpy(hm)

    def baseline_model(self) -> nn.Module:
        """Predicts the mean training pose inside every box."""
        return _ConstantHeatmaps(self.mean_pose_heatmaps())

    def baseline(self, split: str, device: str | torch.device = "cpu") -> dict[str, Any]:
        """The trivial predictor's metrics on `split` (a floor for acceptance checks)."""
        return self.evaluate(self.baseline_model().to(device), split, device)
