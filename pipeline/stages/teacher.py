"""Stage ``teacher``: train the largest architecture of a task as a plain network.

``python -m pipeline.stages.teacher --params results/params/seg/teacher.json --task seg
--out results/seg/teacher`` writes ``model.pt`` (weights with BN statistics recomputed exactly on
fixed training images + meta: task, width, outputs, architecture), ``arch.json``, ``train_summary.json`` and ``metrics.json`` (the teacher's score on
the held-out search split next to the trivial predictor's). Checkpoints live in the stage's work
directory, so a killed run started again resumes. Runs under ``torchrun`` too.
"""
from __future__ import annotations

import sys
from typing import Mapping, Sequence

from pipeline.evaluate import score
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import largest
from pipeline.stages.build import task_from_config, train_run
from pipeline.stages.common import StageContext, run_stage
from pipeline.stages.training import (base_metrics, disable_tracking_off_main, finish_training,
                                      start_weights, write_stage_json)
from pipeline.train.distributed import init_distributed, shutdown_distributed
from pipeline.train.evaluate import CHECK_CALIBRATION_IMAGES, calibration_set
from pipeline.train.loop import train


def body(ctx: StageContext) -> Mapping[str, float] | None:
    name = ctx.task
    assert name is not None
    cfg = ctx.cfg
    task = task_from_config(name, cfg)
    width = ctx.task_cfg.width
    run = train_run(cfg, ctx.device)
    info = init_distributed(run.device)
    arch = largest(name)
    model = SuperNet(name, width, task.num_outputs, seed=cfg.run.seed)
    model.set_arch(arch)
    init, train_dir = start_weights(ctx, model, getattr(cfg.teacher, name))
    summary = train(task, model, getattr(cfg.teacher, name), train_dir, tracker=ctx.run,
                    run=run, info=info)
    if not info.is_main:
        return None
    # Precise BN: the running averages of a short run (momentum 0.01 for seg) are far from the
    # statistics of the trained weights, and the teacher is used in eval mode (distillation
    # targets, evaluation), so they are recomputed exactly on fixed training images.
    calib = calibration_set(task, info.device, CHECK_CALIBRATION_IMAGES, cfg.run.seed)
    calib.calibrate(model)
    meta = {"kind": "teacher", "task": name, "width": width, "num_outputs": task.num_outputs,
            "arch": arch.to_dict(), "fingerprint": summary.fingerprint,
            "iterations": summary.iterations, "seed": cfg.run.seed,
            "bn_calibration_images": calib.indices,
            "init": init.to_dict() if init is not None else None}
    finish_training(ctx, model, meta, summary)
    arch.save(ctx.out / "arch.json")
    ev = score(task, model, "search", info.device, 4)
    base = task.baseline("search", info.device)
    metrics = {"search_score": float(ev["score"]), "baseline_search_score": float(base["score"]),
               **base_metrics(summary)}
    write_stage_json(ctx.out / "metrics.json", metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    disable_tracking_off_main()
    try:
        return run_stage("teacher", body, argv)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
