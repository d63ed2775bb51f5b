"""The one translation from the typed parameters (pipeline.config) to library objects.

Stages call these; the library packages (train/, search/, report/) take the objects built here
(a task plug-in, a cost function, a supernet, calibration images, the sections themselves) and
never read the parameter layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from pipeline.config import Config
from pipeline.cost import Cost, profile
from pipeline.nets.checkpoint import load_into, load_state_dict_file
from pipeline.nets.supernet import SuperNet
from pipeline.nets.calibrate import CalibrationError, CalibrationSet, calibration_indices
from pipeline.search.candidates import STREAM_CALIBRATION, grid_groups
from pipeline.search.evaluate import CandidateEvaluator
from pipeline.search.evolution import default_reference
from pipeline.space.arch import Architecture
from pipeline.tasks import TASKS, Task
from pipeline.train.runtime import TrainRun

#: Multiple of 32 the network needs; calibration images are cropped (top-left) to it.
SIZE_MULTIPLE = 32


def build_task(task: str, cfg: Config) -> Task:
    """The task plug-in of ``cfg``'s ``task`` section, seeded with the run's seed."""
    return TASKS[task].from_params(cfg.task(task), seed=cfg.run.seed)


def train_run(cfg: Config, device: str, **settings: Any) -> TrainRun:
    """The loop's runtime record: the run's seed and device (plus e.g. ``progress=False``)."""
    return TrainRun(seed=cfg.run.seed, device=device, **settings)


def cost_input_hw(task: str, cfg: Config) -> tuple[int, int]:
    """Input size at which params/GFLOPs are reported (the task plug-in says which key)."""
    return TASKS[task].cost_input_hw(cfg.task(task))


def make_cost_fn(task: str, cfg: Config) -> Callable[[Architecture], Cost]:
    width, hw = int(cfg.task(task).width), cost_input_hw(task, cfg)
    return lambda arch: profile(arch, task, width, hw)


def reference_point(task: str, cfg: Config) -> tuple[float, float]:
    """Fixed hypervolume reference: (GFLOPs of the largest subnet, score 0). It depends only on
    the parameters, so hypervolumes of different stages and runs compare."""
    cost = make_cost_fn(task, cfg)
    return default_reference(task, lambda a: cost(a).gflops)


def search_groups(cfg: Config) -> list:
    r = cfg.search.random
    return grid_groups(r.fusion_probs, r.depth_candidates)


def load_supernet(task: str, cfg: Config, checkpoint: str | Path, device: str) -> SuperNet:
    net = SuperNet(task, int(cfg.task(task).width))
    load_into(net, load_state_dict_file(checkpoint), str(checkpoint))
    return net.to(device).eval()


def _crop32(img: Tensor) -> Tensor:
    h, w = img.shape[-2:]
    h2, w2 = h - h % SIZE_MULTIPLE, w - w % SIZE_MULTIPLE
    if h2 == 0 or w2 == 0:
        raise CalibrationError(f"calibration image of size {h}x{w} is smaller than {SIZE_MULTIPLE}")
    return img[..., :h2, :w2]


def _calib_seed(cfg: Config) -> int:
    return int(cfg.run.seed) * 1000 + STREAM_CALIBRATION


def load_calibration(task_obj: Any, cfg: Config, device: str) -> CalibrationSet:
    """The fixed list of calibration images of the search split, loaded once.

    ``calibration.augment`` reads them through the training transforms (the release's augmented
    crops), seeded so that the list and the crops are the same in every job.
    """
    c = cfg.calibration
    ds = task_obj.dataset("search", train=bool(c.augment))
    idx = calibration_indices(len(ds), int(c.images), seed=_calib_seed(cfg))
    if c.augment:
        torch.manual_seed(_calib_seed(cfg))
    imgs = [_crop32(ds[i]["image"]) for i in idx]
    batches: list[Tensor] = []
    bs = int(c.batch_size)
    for i in range(0, len(imgs), bs):
        chunk = imgs[i:i + bs]
        if all(t.shape == chunk[0].shape for t in chunk):
            batches.append(torch.stack(chunk).to(device))
        else:  # mixed sizes: one image per batch; the pooled statistics stay exact
            batches.extend(t.unsqueeze(0).to(device) for t in chunk)
    return CalibrationSet(idx, batches)


def make_evaluator(task: str, cfg: Config, checkpoint: str | Path, device: str, *, stage: str,
                   generation: int) -> tuple[CandidateEvaluator, CalibrationSet]:
    """Supernet, calibration images and the search split: all loaded once for the whole job."""
    task_obj = build_task(task, cfg)
    net = load_supernet(task, cfg, checkpoint, device)
    calib = load_calibration(task_obj, cfg, device)
    search_ds = task_obj.dataset("search", train=False)
    cached = [search_ds[i] for i in range(len(search_ds))]  # decoded once, reused per candidate
    bs = int(cfg.calibration.batch_size)

    def evaluate_fn(model: torch.nn.Module) -> Mapping[str, Any]:
        return task_obj.evaluate(model, "search", device, batch_size=bs, dataset=cached)

    return CandidateEvaluator(net, calib, evaluate_fn, make_cost_fn(task, cfg), stage=stage,
                              generation=generation), calib
