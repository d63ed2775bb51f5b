"""Small helpers shared by the training stage entry points."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.space.arch import atomic_write_text


def disable_tracking_off_main() -> None:
    """Under ``torchrun`` only rank 0 opens an MLflow run (the others would duplicate it)."""
    if int(os.environ.get("RANK", "0")) != 0:
        os.environ[tracking.DISABLE_ENV] = "1"


def training_dir(ctx: Any) -> Path:
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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=1, sort_keys=True) + "\n")


def start_weights(ctx: Any, model: Any, section: Any) -> tuple[Any, Path]:
    """Load ``section.init`` (when set) into ``model``; return ``(InitReport or None, training
    directory)``. The file's sha256 is tagged (scalenas.init_sha256) and keys the training
    directory, so a new file at the same path never resumes the old run's checkpoints."""
    from pipeline.nets.init import load_init

    path = getattr(section, "init", None)
    if not path:
        return None, training_dir(ctx)
    report = load_init(model, path, strict=bool(section.init_strict))
    print(report.summary(), flush=True)
    ctx.run.set_tags({"scalenas.init_sha256": report.sha256, "scalenas.init_path": str(path),
                      "scalenas.init_missing_keys": str(len(report.missing))})
    return report, Path(ctx.work) / f"train-{ctx.params_hash}-init-{report.sha256[:12]}"

