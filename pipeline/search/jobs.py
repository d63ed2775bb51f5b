"""What the search stage entry points share: building the task, the data loaded once per job, the
evaluator, the cost model, the fixed hypervolume reference, summaries and MLflow records.

The stage scripts (``pipeline/stages/search_*.py``, ``sample.py``, ``evolve.py``) only read their
arguments and call these.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from pipeline.cost import Cost, profile
from pipeline.nets.checkpoint import load_into, load_state_dict_file
from pipeline.nets.supernet import SuperNet
from pipeline.space.arch import Architecture
from pipeline.space.official import official_bytes
from pipeline.space.summary import arch_summary
from pipeline.tracking import TAG_ARCH_ID, TAG_GENERATION, TAG_PHASE, TAG_STAGE, TAG_TASK

from .calibrate import CalibrationError, CalibrationSet, calibration_indices
from .candidates import STREAM_CALIBRATION, grid_groups
from .evaluate import CandidateEvaluator
from .evolution import Evaluated, EvolutionConfig, default_reference
from .pareto import hypervolume, pareto_front
from .table import Row, architectures

#: Multiple of 32 the network needs; calibration images are cropped (top-left) to it.
SIZE_MULTIPLE = 32


def cost_input_hw(task: str, cfg: Any) -> tuple[int, int]:
    """Input size at which GFLOPs are reported: seg ``flops_size`` (the paper counts at the
    1024x2048 evaluation size; default the training crop), pose ``input_size``."""
    tc = cfg.task(task)
    hw = (tc.flops_size or tc.crop_size) if task == "seg" else tc.input_size
    return int(hw[0]), int(hw[1])


def make_cost_fn(task: str, cfg: Any) -> Callable[[Architecture], Cost]:
    width, hw = int(cfg.task(task).width), cost_input_hw(task, cfg)
    return lambda arch: profile(arch, task, width, hw)


def reference_point(task: str, cfg: Any) -> tuple[float, float]:
    """Fixed hypervolume reference: (GFLOPs of the largest subnet, score 0). It depends only on
    the parameters, so hypervolumes of different stages and runs compare."""
    cost = make_cost_fn(task, cfg)
    return default_reference(task, lambda a: cost(a).gflops)


def evolution_config(cfg: Any) -> EvolutionConfig:
    """The library's EvolutionConfig from the ``search.evolution`` parameter section."""
    e = cfg.search.evolution
    return EvolutionConfig.from_mapping({
        "parents": e.parents, "population": e.population, "crossover_prob": e.crossover_prob,
        "mutation_prob": e.mutation_prob, "depth_mutation_prob": e.depth_mutation_prob,
        "mutation": e.mutation, "screen_factor": e.screen_factor,
        "flops_min": e.flops_min, "flops_max": e.flops_max,
        "release_operators": e.release_operators}, source="search.evolution")


def search_groups(cfg: Any) -> list:
    r = cfg.search.random
    return grid_groups(r.fusion_probs, r.depth_candidates)


def build_task(task: str, cfg: Any) -> Any:
    """The task plug-in for the search: the same one the training stages build from the params."""
    from pipeline.train.setup import task_from_config

    return task_from_config(cfg, task)


def load_supernet(task: str, cfg: Any, checkpoint: str | Path, device: str) -> SuperNet:
    net = SuperNet(task, int(cfg.task(task).width))
    load_into(net, load_state_dict_file(checkpoint), str(checkpoint))
    return net.to(device).eval()


def _crop32(img: Tensor) -> Tensor:
    h, w = img.shape[-2:]
    h2, w2 = h - h % SIZE_MULTIPLE, w - w % SIZE_MULTIPLE
    if h2 == 0 or w2 == 0:
        raise CalibrationError(f"calibration image of size {h}x{w} is smaller than {SIZE_MULTIPLE}")
    return img[..., :h2, :w2]


def load_calibration(task_obj: Any, cfg: Any, device: str) -> CalibrationSet:
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


def _calib_seed(cfg: Any) -> int:
    return int(cfg.run.seed) * 1000 + STREAM_CALIBRATION


def make_evaluator(task: str, cfg: Any, checkpoint: str | Path, device: str, *, stage: str,
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


def pool_from_table(df: pd.DataFrame) -> list[Evaluated]:
    return [Evaluated(a, float(g), float(s))
            for a, g, s in zip(architectures(df), df["gflops"], df["score"])]


def front_table(df: pd.DataFrame) -> pd.DataFrame:
    """The Pareto-front rows of a results table, by increasing GFLOPs."""
    if df.empty:
        return df
    idx = pareto_front(df["gflops"].to_numpy(float), df["score"].to_numpy(float))
    return df.iloc[idx].reset_index(drop=True)


def front_summary(df: pd.DataFrame, reference: tuple[float, float]) -> dict[str, float]:
    hv = hypervolume(df["gflops"].to_numpy(float), df["score"].to_numpy(float), reference) \
        if len(df) else 0.0
    return {"hypervolume": hv, "evaluated": float(len(df)),
            "front_size": float(len(front_table(df))),
            "best_score": float(df["score"].max()) if len(df) else math.nan}


def candidate_records(rows: Sequence[Row], *, task: str, phase: str) -> list[dict[str, Any]]:
    """Child-run records for :meth:`pipeline.tracking.StageRun.log_candidates`.

    Self-describing runs: tags say task, phase, stage (sample, random, evolve) and generation, so
    a filter string separates them without walking parent runs; params hold the grid cell and the
    architecture summary (per-branch depths, per-module fusion density) for the UI's parallel
    coordinates; artifacts are the architecture document and its release-format ``.npy``.
    """
    out = []
    for r in rows:
        arch = Architecture.from_dict(dict(r.arch), source=f"candidate {r.arch_id}")
        metrics = {"params": float(r.params), "gflops": r.gflops, "score": r.score,
                   **{f"metric_{k}": v for k, v in r.metrics.items()},
                   **{f"time_{k}": v for k, v in r.timing.items()}}
        out.append({"name": f"{r.stage}:g{r.generation}:{r.arch_id}",
                    "params": {"arch_id": r.arch_id, "group": r.group,
                               "fusion_prob": r.fusion_prob,
                               "depth_candidates": r.depth_candidates, **arch_summary(arch)},
                    "metrics": metrics,
                    "tags": {TAG_ARCH_ID: r.arch_id, TAG_TASK: task, TAG_PHASE: phase,
                             TAG_STAGE: r.stage, TAG_GENERATION: r.generation},
                    "artifacts": {"arch.json": json.dumps(dict(r.arch), indent=1),
                                  "arch.npy": official_bytes(arch)}})
    return out
