"""What the training stage entry points (teacher, supernet) share: the checkpoint directory, the
tracking switch under ``torchrun`` and the finishing code (model file, summary, metrics, tags)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from pipeline import tracking
from pipeline.config import TrainConfig
from pipeline.io import atomic_write_text
from pipeline.nets.init import InitReport, load_init
from pipeline.stages.common import StageContext
from pipeline.train.artifacts import save_trained
from pipeline.train.loop import TrainSummary

from pipeline.paths import MODEL_FILE  # noqa: F401 (re-exported: the trained model file)


def disable_tracking_off_main() -> None:
    """Under ``torchrun`` only rank 0 opens an MLflow run (the others would duplicate it)."""
    if int(os.environ.get("RANK", "0")) != 0:
        os.environ[tracking.DISABLE_ENV] = "1"


def training_dir(ctx: StageContext) -> Path:
    """Where a training stage keeps its checkpoints: ``<work>/train-<params hash>``.

    The work directory survives kills, so the same command resumes; keyed by the hash of the
    phase's parameters, a run with changed parameters starts afresh instead of failing on the
    old checkpoint, while a checkpoint that does not match its own parameters (another world
    size, a file copied in) is still refused with a clear error by the loop.
    """
    return Path(ctx.work) / f"train-{ctx.params_hash}"


def _clean(obj: Any) -> Any:
    """JSON has no NaN: a metric that does not exist (a group never trained) becomes null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_stage_json(path: Path, obj: Any) -> None:
    """A stage record (summaries, metrics) as JSON, a missing figure (NaN) as null."""
    atomic_write_text(path, json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")


def finish_training(ctx: StageContext, model: Any, meta: Mapping[str, Any],
                    summary: TrainSummary) -> str:
    """Write the trained model (``model.pt``: weights + meta) and ``train_summary.json`` into the
    stage's output, tag the MLflow run with both hashes; returns the model file's hash."""
    sha = save_trained(ctx.out / MODEL_FILE, model, dict(meta))
    write_stage_json(ctx.out / "train_summary.json", summary.to_dict())
    ctx.run.set_tags({"scalenas.model_sha256": sha,
                      "scalenas.checkpoint_sha256": summary.checkpoint_sha256})
    return sha


def base_metrics(summary: TrainSummary) -> dict[str, float]:
    """The metrics every training stage reports of its run."""
    return {"first_loss": summary.first_loss, "final_loss": summary.final_loss,
            "images_per_s": summary.images_per_s, "iterations": float(summary.iterations)}


def start_weights(ctx: StageContext, model: Any,
                  section: TrainConfig) -> tuple[InitReport | None, Path]:
    """Load ``section.init`` (when set) into ``model``; return ``(InitReport or None, training
    directory)``. The file's sha256 is tagged (scalenas.init_sha256) and keys the training
    directory, so a new file at the same path never resumes the old run's checkpoints."""
    path = section.init
    if not path:
        return None, training_dir(ctx)
    report = load_init(model, path, strict=bool(section.init_strict))
    print(report.summary(), flush=True)
    ctx.run.set_tags({"scalenas.init_sha256": report.sha256, "scalenas.init_path": str(path),
                      "scalenas.init_missing_keys": str(len(report.missing))})
    return report, Path(ctx.work) / f"train-{ctx.params_hash}-init-{report.sha256[:12]}"
