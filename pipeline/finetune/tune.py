"""Fine-tuning one selected architecture: export with inherited weights, train, evaluate, save.

The steps, in order, each a call into the library that owns it:

1. the supernet runs the selected architecture, its BN statistics are re-calibrated (the search's
   calibration, :mod:`pipeline.nets.calibrate`), and the subnet is exported as a standalone
   network with those weights (:func:`pipeline.nets.export.export_subnet`);
2. its val metric with the inherited weights is measured (the "before" figure);
3. it is trained with the one training loop (:func:`pipeline.train.loop.train`, fixed
   architecture), which checkpoints and resumes on its own;
4. its BN statistics are recomputed on the calibration images (precise BN); the fine-tuned weights
   are kept only when they score at least the inherited ones on the search split, else the
   inherited weights are kept (``kept`` in the record);
5. its val metric is measured again (the "after" figure), the model is saved
   (:func:`pipeline.nets.export.save_model`), reloaded from its files alone and evaluated once
   more: the record keeps all three figures, so "reloads and reproduces" is checked, not assumed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from pipeline.evaluate import score
from pipeline.nets.export import export_subnet, load_model, save_model
from pipeline.config import TrainConfig
from pipeline.errors import ConfigError
from pipeline.nets.supernet import SuperNet
from pipeline.train.runtime import TrainRun, groups_of

from .records import FinetuneRecord
from .select import SelectedModel

MODEL_DIR = "model"
TRAIN_DIR = "train"
RECORD_FILE = "finetune.json"
#: The split that decides whether the fine-tuned or the inherited weights are kept (never val).
SEARCH_SPLIT = "search"


def _scores(result: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    if "score" not in result:
        raise ValueError(f"task evaluation returned no 'score' (keys: {sorted(result)})")
    details = {k: float(v) for k, v in result.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return float(result["score"]), details


def export_selected(supernet: SuperNet, selected: SelectedModel,
                    calibrate: Callable[[nn.Module], Any]) -> nn.Module:
    """The selected subnet as a standalone network carrying the supernet's (calibrated) weights."""
    supernet.set_arch(selected.arch)
    calibrate(supernet)
    return export_subnet(supernet).eval()


def finetune_model(task: Any, supernet: SuperNet, selected: SelectedModel,
                   train_cfg: TrainConfig,
                   calibrate: Callable[[nn.Module], Any], out_dir: str | Path,
                   work_dir: str | Path, *, cost: Any, input_hw: tuple[int, int], device: torch.device | str,
                   eval_batch_size: int, split: str = "trainfull",
                   tracker: Any = None, run: TrainRun | None = None) -> FinetuneRecord:
    """Run steps 1-4 for one selected model; write ``out_dir/model/`` and ``out_dir/finetune.json``.

    ``train_cfg`` is a training section (:class:`pipeline.config.TrainConfig`; a fixed
    architecture: not a supernet section with sampling groups), ``run`` the loop's runtime record;
    ``cost`` is the model's analytic :class:`pipeline.cost.Cost` at ``input_hw``. The training
    loop's checkpoints live in ``work_dir/train/`` (kept across failures) so a killed job resumes.
    """
    from pipeline.train.loop import train  # the loop pulls in tqdm and the distributed helpers

    if groups_of(train_cfg) is not None:
        raise ConfigError("fine-tuning trains one fixed architecture: the training config must "
                         "not have sampling groups")
    out = Path(out_dir)
    t0 = time.perf_counter()
    net = export_selected(supernet, selected, calibrate).to(device)
    inherited, d_before = _scores(score(task, net, "val", device, eval_batch_size))
    if tracker is not None:
        tracker.log_metrics({"val_inherited": inherited}, step=0)

    # The inherited weights, and their score on the search split: what fine-tuning must beat.
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    search_before, _ = _scores(score(task, net, SEARCH_SPLIT, device, eval_batch_size))
    summary = train(task, net, train_cfg, Path(work_dir) / TRAIN_DIR, tracker=tracker, split=split,
                    run=run or TrainRun(device=str(device)))
    # Precise BN, as the teacher: with the seg models' BN momentum (0.01) a short fine-tune leaves
    # running averages that are mostly the inherited calibration's while the weights moved on;
    # that mismatch, not the training, lowered the seg models on val (issue 20).
    calibrate(net)
    net.eval()
    search_after, _ = _scores(score(task, net, SEARCH_SPLIT, device, eval_batch_size))
    kept = "finetuned"
    if search_after < search_before:
        # Fine-tuning did not help: keep the better weights, judged on the search split (val
        # only reports).
        net.load_state_dict(start)
        net.eval()
        kept = "inherited"
    finetuned, d_after = _scores(score(task, net, "val", device, eval_batch_size))

    metric = getattr(task, "metric", "score")
    meta = {"name": selected.name, "input_hw": list(input_hw), "metric": metric,
            "val_inherited": inherited, "val_finetuned": finetuned,
            "selection_rule": selected.rule, "iterations": summary.iterations, "kept": kept,
            # `scalenas eval --model` scores in batches of this size too, so that it prints the
            # val figures above to the last bit.
            "eval_batch_size": int(eval_batch_size)}
    save_model(out / MODEL_DIR, net, meta)
    reloaded_net = load_model(out / MODEL_DIR).to(device)
    reloaded, _ = _scores(score(task, reloaded_net, "val", device, eval_batch_size))

    record = FinetuneRecord(
        name=selected.name, task=task.name, arch_id=selected.arch.arch_id, rule=selected.rule,
        metric=metric, params=int(cost.params), gflops=float(cost.gflops),
        input_hw=(int(input_hw[0]), int(input_hw[1])), width=int(supernet.width),
        inherited=inherited, finetuned=finetuned, reloaded=reloaded,
        iterations=int(summary.iterations), epochs=float(summary.epochs_run),
        wall_s=time.perf_counter() - t0, model_dir=MODEL_DIR,
        search_score=selected.search.get("score"),
        details_inherited=d_before, details_finetuned=d_after,
        search_inherited=search_before, search_finetuned=search_after, kept=kept)
    record.save(out / RECORD_FILE)
    if tracker is not None:
        tracker.log_metrics({"val_finetuned": finetuned, "val_reloaded": reloaded,
                             "val_gain": finetuned - inherited}, step=summary.iterations)
    return record
