"""The one translation from the typed parameters (pipeline.config) to library objects.

Stages call these; the library packages (train/, search/, report/) take the objects built here
(a task plug-in, a cost function, a supernet, calibration images, the sections themselves) and
never read the parameter layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from pipeline.config import Config
from pipeline.cost import Cost, profile
from pipeline.data.stream import Streamed
from pipeline.evaluate import score
from pipeline.nets.checkpoint import CheckpointError, load_into, load_state_dict_file
from pipeline.nets.init import check_fits
from pipeline.nets.supernet import SuperNet
from pipeline.nets.calibrate import CalibrationSet, calibration_indices, image_batches
from pipeline.search.candidates import STREAM_CALIBRATION, grid_groups
from pipeline.search.evaluate import CandidateEvaluator
from pipeline.errors import StageInputError
from pipeline.search.evolution import default_reference
from pipeline.search.objective import GFLOPS_AXIS, CostAxis, latency_axis
from pipeline.space.arch import Architecture
from pipeline.tasks import REGISTRY, Task
from pipeline.train.runtime import TrainRun

#: Persistent processes decoding the images beyond the budget ahead of the network.
STREAM_WORKERS = 1


def task_from_config(task: str, cfg: Config) -> Task:
    """The task plug-in of ``cfg``'s ``task`` section, seeded with the run's seed."""
    return REGISTRY[task].from_params(cfg.task(task), seed=cfg.run.seed)


def train_run(cfg: Config, device: str, **settings: Any) -> TrainRun:
    """The loop's runtime record: the run's seed and device (plus e.g. ``progress=False``)."""
    return TrainRun(seed=cfg.run.seed, device=device, **settings)


def cost_input_hw(task: str, cfg: Config) -> tuple[int, int]:
    """Input size at which params/GFLOPs are reported (the task plug-in says which key)."""
    return REGISTRY[task].cost_input_hw(cfg.task(task))


def make_cost_fn(task: str, cfg: Config) -> Callable[[Architecture], Cost]:
    width, hw = int(cfg.task(task).width), cost_input_hw(task, cfg)
    return lambda arch: profile(arch, task, width, hw)


@dataclass(frozen=True)
class SearchCost:
    """The search's cost axis (``search.objective``) and the estimator of a candidate's cost on
    it; ``latency`` (ms per architecture) is set when the objective is latency."""

    axis: CostAxis
    estimate: Callable[[Architecture], float]
    latency: Callable[[Architecture], float] | None = None


def latency_predictor(task: str, cfg: Config, table_path: str | Path
                      ) -> tuple[Callable[[Architecture], float], dict[str, Any]]:
    """(architecture -> predicted ms, the table) of a latency table, after checking that it was
    measured on the run's device for the task's width and cost input size (else one
    :class:`pipeline.search.latency.LatencyError` line naming both).

    The run's device is the one the workflow planned (its fingerprint, named by the table's path
    and carried in ``SCALENAS_LATENCY_FP``), whichever node this job runs on: the table describes
    the machine that planned the run. A stage started by hand (no planned fingerprint) checks the
    table against this machine (CPU, logical CPUs, torch) at the table's own thread count: the
    threads are how the table was measured, not how many the job that reads it runs with (a merge
    job runs on one)."""
    from pipeline.search.latency import (check_table, device_info, load_table,
                                         planned_fingerprint, predict_latency)

    table = load_table(table_path)
    width, hw = int(cfg.task(task).width), cost_input_hw(task, cfg)
    planned = planned_fingerprint()
    if planned is not None:
        check_table(table, task, width, hw, planned=planned)
    else:
        threads = table["device"].get("threads")
        ok = isinstance(threads, int) and not isinstance(threads, bool) and threads > 0
        check_table(table, task, width, hw, device=device_info(threads=threads if ok else None))
    return (lambda arch: predict_latency(table, arch) * 1e3), table


def search_cost(task: str, cfg: Config, latency_table: str | Path | None = None) -> SearchCost:
    """The cost axis of ``search.objective``: GFLOPs (analytic), or predicted latency (ms) from
    ``latency_table`` (required then; the ``latency_table`` rule's table.json)."""
    objective = cfg.search.objective
    if objective == "gflops":
        if latency_table is not None:
            raise StageInputError(f"--latency-table {latency_table}: search.objective is "
                                  "gflops; a latency table is only read when it is latency")
        cost = make_cost_fn(task, cfg)
        return SearchCost(GFLOPS_AXIS, lambda a: cost(a).gflops)
    if latency_table is None:
        raise StageInputError("search.objective is latency: pass --latency-table (the table "
                              "of the latency_table rule, or of `scalenas latency build`)")
    predict, table = latency_predictor(task, cfg, latency_table)
    dev = table["device"]
    axis = latency_axis(f"{dev.get('cpu')}, {dev.get('threads')} thread(s)")
    return SearchCost(axis, predict, predict)


def reference_point(task: str, cfg: Config, cost: SearchCost | None = None
                    ) -> tuple[float, float]:
    """Fixed hypervolume reference: (cost of the largest subnet on the search's axis, score 0):
    GFLOPs, or predicted ms with ``cost`` of a latency objective. It depends only on the
    parameters (and the latency table), so hypervolumes of different stages and runs compare."""
    if cost is not None:
        return default_reference(task, cost.estimate)
    gflops = make_cost_fn(task, cfg)
    return default_reference(task, lambda a: gflops(a).gflops)


def search_groups(cfg: Config) -> list:
    r = cfg.search.random
    return grid_groups(r.fusion_probs, r.depth_candidates)


def load_supernet(task: str, cfg: Config, checkpoint: str | Path, device: str) -> SuperNet:
    net = SuperNet(task, int(cfg.task(task).width))
    load_into(net, load_state_dict_file(checkpoint), str(checkpoint))
    return net.to(device).eval()


#: The split calibration reads: training images, never the split candidates are scored on.
CALIBRATION_SPLIT = "train"


def item_name(item: Mapping[str, Any]) -> str:
    """Which image a dataset item is: the seg frame name or the pose image id."""
    return str(item["name"] if "name" in item else item["image_id"])


def _calib_seed(cfg: Config) -> int:
    return int(cfg.run.seed) * 1000 + STREAM_CALIBRATION


def load_calibration(task_obj: Any, cfg: Config, device: str) -> CalibrationSet:
    """The fixed list of calibration images of the train split, loaded once
    (scalenas.md section 5: the release calibrates on training images).

    ``calibration.augment`` reads them through the training transforms (the release's augmented
    crops), seeded so that the list and the crops are the same in every job; otherwise they are
    the plain images (seg: full size cropped to a multiple of 32; pose: the person crop resized
    to the input size).
    """
    c = cfg.calibration
    ds = task_obj.dataset(CALIBRATION_SPLIT, train=bool(c.augment))
    idx = calibration_indices(len(ds), int(c.images), seed=_calib_seed(cfg))
    if c.augment:
        torch.manual_seed(_calib_seed(cfg))
    items = [ds[i] for i in idx]
    return CalibrationSet(idx, image_batches([it["image"] for it in items], int(c.batch_size),
                                             device), [item_name(it) for it in items])


def make_evaluator(task: str, cfg: Config, checkpoint: str | Path, device: str, *, stage: str,
                   generation: int, cache_mb: int,
                   latency: Callable[[Architecture], float] | None = None
                   ) -> tuple[CandidateEvaluator, CalibrationSet]:
    """Supernet, calibration images and the search split (up to ``cache_mb`` of it decoded, the
    run setting ``run.search_cache_mb``): all loaded once for the whole job. ``latency`` (ms per
    architecture, a latency objective's :attr:`SearchCost.latency`) adds each row's predicted
    latency."""
    task_obj = task_from_config(task, cfg)
    net = load_supernet(task, cfg, checkpoint, device)
    calib = load_calibration(task_obj, cfg, device)
    # Kept decoded up to a budget, the rest streamed: a small split is read as fast as when it
    # was held whole, a big one's memory stays bounded whatever its size.
    search_ds = Streamed(task_obj.dataset("search", train=False), workers=STREAM_WORKERS,
                         cache_bytes=cache_mb * 2**20)
    bs = int(cfg.calibration.batch_size)

    def evaluate_fn(model: torch.nn.Module) -> Mapping[str, Any]:
        return score(task_obj, model, "search", device, bs, dataset=search_ds)

    return CandidateEvaluator(net, calib, evaluate_fn, make_cost_fn(task, cfg), stage=stage,
                              generation=generation, latency_fn=latency), calib


def check_task_params(resolved: Mapping[str, Any], source: str) -> None:
    """What each task of the run refuses in its parameters (its plug-in's ``check_params``), and
    every architecture its fine-tuning names must be one of the task's (an official seg mask
    for a pose task breaks the single-scale rule): one line, before any job starts."""
    from pipeline.errors import ConfigError
    from pipeline.space.arch import ArchitectureError
    from pipeline.space.registry import resolve

    for task in resolved.get("tasks", ()):
        check = getattr(REGISTRY[task], "check_params", None)
        if check is not None:
            check(resolved, source)
        sec = resolved.get("finetune", {}).get(task, {})
        named = [(f"finetune.{task}.models[{i}].arch", m["arch"])
                 for i, m in enumerate(sec.get("models", ())) if "arch" in m]
        named += [(f"finetune.{task}.arch_files[{i}]", f)
                  for i, f in enumerate(sec.get("arch_files", ()))]
        for key, arch in named:
            if not Path(str(arch)).suffix or not Path(str(arch)).is_file():
                continue  # a registered name, or a missing file (check_paths says so)
            try:
                resolve(str(arch), task)
            except ArchitectureError as e:
                raise ConfigError(f"{source}: {key}: {e}") from None


#: Parameter keys of starting weights, per task: (section, key); "checkpoint" must be a supernet.
START_WEIGHT_KEYS = (("teacher", "init"), ("supernet", "init"), ("finetune", "init"),
                     ("supernet", "checkpoint"))


def check_start_weights(resolved: Mapping[str, Any], source: str) -> None:
    """Every starting checkpoint the parameters name fits its task, width and outputs (the
    workflow calls this at parse time, before any job starts).

    Raises one :class:`CheckpointError` (an input error): ``<source>: supernet.seg.checkpoint:
    <file>: looks like a pose W8 supernet (17 outputs), but ... needs a seg W8 network (19
    outputs)``."""
    for task in resolved.get("tasks", ()):
        width, outs = int(resolved[task]["width"]), int(REGISTRY[task].num_outputs)
        for section, key in START_WEIGHT_KEYS:
            sec = resolved[section][task]
            path = sec.get(key)
            if not path:
                continue
            name = f"{section}.{task}.{key}"
            strict = key == "checkpoint" or bool(sec.get("init_strict", True))
            try:
                info = check_fits(path, task, width, outs, strict=strict, key=name)
                if key == "checkpoint" and info.kind != "supernet":
                    raise CheckpointError(f"{path}: looks like {info.looks_like()}, but {name} "
                                          f"needs a {task} W{width} supernet")
            except CheckpointError as e:
                raise CheckpointError(f"{source}: {name}: {e}") from None
