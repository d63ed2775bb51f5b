"""From the typed parameters (pipeline.config) to the objects a training stage needs.

* :func:`task_from_config` — the task plug-in (pipeline.tasks) for the task section of the
  parameters. Dataset-dependent settings the parameters do not carry are derived from the data:
  the built-in data records its image size in ``<root>/SYNTH.json`` (the random-scale base is its
  long side); the OHEM minimum of kept pixels follows the crop area (131072 at the paper's
  512x1024 crop).
* :func:`train_config` — the loop's :class:`~pipeline.train.config.TrainConfig` of a stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.tasks import PoseTaskConfig, SegTaskConfig, build_task
from pipeline.tasks.base import Task

from .config import TrainConfig

#: Paper crop and OHEM minimum: min_kept scales with the crop area.
PAPER_CROP_AREA = 512 * 1024
PAPER_OHEM_MIN_KEPT = 131072
CITYSCAPES_BASE_SIZE = 2048


def _synth_record(root: Path) -> dict[str, Any] | None:
    p = root / "SYNTH.json"
    if not p.is_file():
        return None
    doc = read_json(p, "built-in data record", ValueError)
    return doc if isinstance(doc, dict) else None


def task_from_config(cfg: Any, name: str, *, seed: int | None = None) -> Task:
    """The task plug-in for ``cfg.<name>`` (``cfg``: a pipeline.config.Config or a phase view)."""
    tc = cfg.task(name)
    seed = cfg.run.seed if seed is None else seed
    root = Path(tc.root)
    synth = _synth_record(root)
    if name == "seg":
        crop = tuple(int(v) for v in tc.crop_size)
        base = max(synth["size_hw"]) if synth and "size_hw" in synth else CITYSCAPES_BASE_SIZE
        min_kept = max(1, PAPER_OHEM_MIN_KEPT * crop[0] * crop[1] // PAPER_CROP_AREA)
        return build_task("seg", SegTaskConfig(
            root=str(root), train_split=tc.train_set, val_split=tc.val_set, crop_hw=crop,
            base_size=int(base), search_fraction=tc.search_fraction, ohem_min_kept=min_kept,
            seed=seed))
    det = tc.det_file
    det_rel = None
    if det is not None:
        p = Path(det)
        det_rel = str(p.relative_to(root)) if p.is_relative_to(root) else str(p.resolve())
    kw: dict[str, Any] = dict(
        root=str(root), train_split=tc.train_set, val_split=tc.val_set,
        input_hw=tuple(int(v) for v in tc.input_size), search_fraction=tc.search_fraction,
        use_gt_boxes=det is None, seed=seed)
    if det_rel is not None:
        kw["detection_file"] = det_rel
    return build_task("pose", PoseTaskConfig(**kw))


def train_config(section: Any, cfg: Any, *, device: str, section_name: str,
                 **overrides: Any) -> TrainConfig:
    """The loop's settings of a training section (``cfg.teacher.seg``, ``cfg.supernet.pose``...)."""
    return TrainConfig.from_params(section, seed=cfg.run.seed, device=device,
                                   section_name=section_name, **overrides)
