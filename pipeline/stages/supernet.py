"""Stage ``supernet``: one-shot training with grouped sampling, the sandwich rule and distillation.

``python -m pipeline.stages.supernet --params results/params/seg/supernet.json --task seg
--out results/seg/supernet --teacher results/seg/teacher/model.pt`` writes ``model.pt`` (the
supernet's weights + meta), ``train_summary.json`` (losses, per-group counts and losses,
throughput, checkpoint hash) and ``metrics.json``: the largest and the smallest subnet, each
after BN calibration, scored on the held-out search split next to the trivial predictor.

The student starts from the teacher's weights (``init_from_teacher``) and is distilled towards
its output (``kd_ratio`` > 0); the teacher file must be a teacher of the same task and width.
Runs under ``torchrun`` (every rank trains the same subnet at each iteration).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

from pipeline.nets.supernet import SuperNet
from pipeline.space.arch import Architecture
from pipeline.space.sample import largest, smallest
from pipeline.stages.build import task_from_config, train_run
from pipeline.stages.common import StageContext, StageInputError, run_stage
from pipeline.stages.training import (MODEL_FILE, base_metrics, disable_tracking_off_main,
                                      finish_training, start_weights, write_stage_json)
from pipeline.train.artifacts import load_state, read_trained
from pipeline.train.distributed import init_distributed, shutdown_distributed
from pipeline.train.evaluate import CHECK_CALIBRATION_IMAGES, calibration_set, evaluate_subnet
from pipeline.train.loop import train


def load_teacher(path: Path, task: str, width: int, num_outputs: int, seed: int) -> SuperNet:
    """The trained teacher (a supernet running its recorded architecture), checked first."""
    state, meta = read_trained(path, task=task, width=width, kind="teacher")
    arch = Architecture.from_dict(meta.get("arch"), source=f"{path}: meta.arch")
    net = SuperNet(task, width, num_outputs, seed=seed)
    load_state(net, state, str(path))
    net.set_arch(arch)
    return net.eval()


def _scores(task, model: SuperNet, name: str, info, seed: int, prefix: str = "") -> dict[str, float]:
    """Largest and smallest subnet, BN-calibrated on fixed training images, on the search split.

    With a prefix (the scores of the starting weights, before any step) the model's weights and
    BN statistics are restored afterwards, so training starts from the file's exact values."""
    model.to(info.device)
    saved = {k: v.clone() for k, v in model.state_dict().items()} if prefix else None
    calib = calibration_set(task, info.device, CHECK_CALIBRATION_IMAGES, seed)
    out = {}
    for label, arch in (("largest", largest(name)), ("smallest", smallest(name))):
        ev = evaluate_subnet(task, model, arch, "search", info.device, calib)
        out[f"{prefix}{label}_search_score"] = float(ev["score"])
    if saved is not None:
        model.load_state_dict(saved)
        model.set_arch(largest(name))
        model.train()
    return out


def body(ctx: StageContext) -> Mapping[str, float] | None:
    name = ctx.task
    assert name is not None
    cfg = ctx.cfg
    section = getattr(cfg.supernet, name)
    task = task_from_config(name, cfg)
    width = ctx.task_cfg.width
    run = train_run(cfg, ctx.device)
    from_teacher = section.init_from_teacher and not section.init  # init wins
    needs_teacher = from_teacher or section.kd_ratio > 0
    if needs_teacher and ctx.args.teacher is None:
        raise StageInputError(f"supernet.{name}: init_from_teacher / kd_ratio need a teacher: "
                              f"pass --teacher results/{name}/teacher/{MODEL_FILE}")
    info = init_distributed(run.device)
    model = SuperNet(name, width, task.num_outputs, seed=cfg.run.seed)
    teacher = None
    if needs_teacher:
        teacher = load_teacher(ctx.args.teacher, name, width, task.num_outputs, cfg.run.seed)
        if from_teacher:
            model.load_state_dict(teacher.state_dict())
    init, train_dir = start_weights(ctx, model, section)
    init_metrics = _scores(task, model, name, info, cfg.run.seed, "init_") if (
        init is not None and info.is_main) else {}
    summary = train(task, model, section, train_dir,
                    teacher=teacher if section.kd_ratio > 0 else None, tracker=ctx.run, run=run,
                    info=info)
    if not info.is_main:
        return None
    meta = {"kind": "supernet", "task": name, "width": width, "num_outputs": task.num_outputs,
            "fingerprint": summary.fingerprint, "iterations": summary.iterations,
            "seed": cfg.run.seed, "teacher": str(ctx.args.teacher) if needs_teacher else None,
            "init": init.to_dict() if init is not None else None}
    finish_training(ctx, model, meta, summary)

    # The checks overwrite BN buffers of the subnets they calibrate: the weights are saved above.
    metrics = base_metrics(summary)
    metrics.update(_scores(task, model, name, info, cfg.run.seed))
    metrics.update(init_metrics)
    metrics["baseline_search_score"] = float(task.baseline("search", info.device)["score"])
    for g, n in summary.group_counts.items():
        metrics[f"group_count/{g}"] = float(n)
    write_stage_json(ctx.out / "metrics.json", metrics)
    return metrics


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", type=Path, default=None,
                   help="the teacher's model.pt (results/<task>/teacher/model.pt)")


def main(argv: Sequence[str] | None = None) -> int:
    disable_tracking_off_main()
    try:
        return run_stage("supernet", body, argv, add_args=_args)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
