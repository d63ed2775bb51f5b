"""What a training run needs besides its parameter section (pipeline.config.TrainConfig).

The section (``teacher.seg``, ``supernet.pose``, ``finetune.seg``...) is passed to the loop as it
is; a supernet section (:class:`~pipeline.config.SupernetTrainConfig`) adds the sampling groups
and the distillation weight. :class:`TrainRun` holds the rest: values that are not parameters of
the section (the run's seed, the device) or that a caller sets for itself (BN freezing, the
progress bar).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import SupernetTrainConfig, TrainConfig


@dataclass(frozen=True)
class TrainRun:
    seed: int = 0
    device: str = "auto"
    #: BN layers in eval mode: running statistics, no update.
    freeze_bn: bool = False
    deterministic: bool = True
    progress: bool = True


def groups_of(cfg: TrainConfig) -> Any:
    """The sampling groups of a supernet section (``"paper"`` or ``{name, fusion_prob, depths}``
    mappings, as pipeline.train.schedule.parse_groups reads them); None (one fixed architecture)
    for any other section."""
    if not isinstance(cfg, SupernetTrainConfig):
        return None
    if isinstance(cfg.groups, str):
        return cfg.groups
    return [{"fusion_prob": g.fusion_prob, "depths": tuple(g.depths), "name": g.name}
            for g in cfg.groups]


def kd_ratio_of(cfg: TrainConfig) -> float:
    return float(cfg.kd_ratio) if isinstance(cfg, SupernetTrainConfig) else 0.0


def fingerprint_settings(cfg: TrainConfig, run: TrainRun) -> dict[str, Any]:
    """The settings that define the computation (what a resume must agree on).

    The layout (flat keys) is the one checkpoints have always been fingerprinted with, so
    checkpoints and models written before the sections were passed as they are still resume and
    stay byte-identical. Settings that do not change the computation (checkpoint_every,
    log_every, num_workers, progress, device) are left out: a resumed run may change them.
    """
    opt, sch = cfg.optimizer, cfg.schedule
    return {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": opt.lr,
            "optimizer": opt.name, "momentum": opt.momentum, "weight_decay": opt.weight_decay,
            "nesterov": opt.nesterov, "lr_schedule": sch.name, "poly_power": sch.power,
            "lr_steps": list(sch.milestones), "lr_gamma": sch.gamma,
            "warmup_iters": sch.warmup_iters, "iterations": cfg.iterations,
            "groups": groups_of(cfg),
            "kd_ratio": kd_ratio_of(cfg), "seed": run.seed, "sync_bn": cfg.sync_bn,
            "freeze_bn": run.freeze_bn, "amp": cfg.amp == "bf16",
            "deterministic": run.deterministic}
