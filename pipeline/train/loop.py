"""The one training loop: teacher, supernet and fine-tuning are settings of it, not copies.

* Fixed architecture (``cfg.groups is None``): the model is trained as it is — the teacher (the
  largest architecture), or a selected subnet being fine-tuned (a ``SuperNet`` with its
  architecture set, or a standalone network).
* Supernet (``cfg.groups`` set): at global iteration ``i`` the model runs the subnet drawn from
  group ``i mod len(groups)`` with ``np.random.default_rng([seed, i])`` (pipeline.train.schedule).
* Distillation: with a ``teacher`` and ``cfg.kd_ratio > 0``, loss = task loss + kd_ratio x
  MSE(student output, teacher output); without a teacher there is no KD term at all.

The batch at an iteration, the subnet, the learning rate and every random draw are functions of
``(seed, iteration)`` only, and the whole state is checkpointed atomically, so a run killed at any
moment and started again with the same command ends with bitwise the same weights (on CPU).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .checkpoint import (LAST, CheckpointError, file_sha256, fingerprint, load_resume, rng_state,
                         save_checkpoint, set_rng_state)
from pipeline.config import TrainConfig

from .data import make_loader
from .runtime import TrainRun, fingerprint_settings, groups_of, kd_ratio_of
from .distributed import (DistInfo, all_reduce_mean, autocast, barrier, convert_sync_bn,
                          init_distributed, unwrap, wrap_ddp)
from .schedule import LRSchedule, parse_groups, subnet_at

CHECKPOINT_DIR = "checkpoints"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable model); the message says where."""


class TaskLike(Protocol):
    """What the loop needs from a task plug-in (pipeline.tasks)."""

    name: str

    def dataset(self, split: str, train: bool) -> Any: ...
    def loss(self, output: Tensor, batch: Any) -> Tensor: ...


class Tracker(Protocol):
    """What the loop needs from a tracker: batched metrics with steps."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...


@dataclass
class TrainSummary:
    """What a finished (or already finished) run reports; every figure is reproducible."""

    iterations: int
    epochs_run: float
    iters_per_epoch: int
    images_per_step: int
    first_loss: float
    final_loss: float
    epoch_losses: list[float]
    group_counts: dict[str, int] = field(default_factory=dict)
    group_losses: dict[str, float] = field(default_factory=dict)
    kd: bool = False
    images_per_s: float = 0.0
    seconds: float = 0.0
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    fingerprint: str = ""
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- pieces -----------------------------------------------------------------------------------

def build_optimizer(cfg: TrainConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (segmentation recipe) or Adam/AdamW (pose recipe) from the configuration."""
    opt = cfg.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                               weight_decay=opt.weight_decay, nesterov=opt.nesterov)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_images(batch: Any) -> Tensor:
    """The network input of a batch: ``batch["image"]`` (the tasks' convention) or ``batch[0]``."""
    if isinstance(batch, Mapping):
        return batch["image"]
    return batch[0]


def set_bn_eval(model: nn.Module) -> None:
    """Frozen BatchNorm: running statistics used and left unchanged (affine weights still learn)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def kd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """MSE between student and teacher outputs (logits for seg, heatmaps for pose)."""
    return F.mse_loss(student.float(), teacher.float())


def _deterministic(on: bool, device: torch.device) -> None:
    """Deterministic kernels on CPU (bitwise-reproducible runs and resumes are a CPU guarantee;
    on GPUs the fastest kernels are kept, and resumes are exact up to kernel nondeterminism)."""
    if on and device.type == "cpu":
        # warn_only: an op without a deterministic variant warns instead of failing a run.
        torch.use_deterministic_algorithms(True, warn_only=True)


class _MetricBuffer:
    """Metrics collected per step and sent to the tracker in batches (one call per window)."""

    def __init__(self, tracker: Tracker | None, every: int) -> None:
        self.tracker, self.every = tracker, every
        self.pending: list[tuple[dict[str, float], int]] = []

    def add(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is None:
            return
        self.pending.append((metrics, step))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.tracker is None or not self.pending:
            return
        for metrics, step in self.pending:
            self.tracker.log_metrics(metrics, step=step)
        send = getattr(self.tracker, "flush", None)  # pipeline.tracking.StageRun: one log_batch
        if send is not None:
            send()
        self.pending = []


# -- the loop ---------------------------------------------------------------------------------

def train(task: TaskLike, model: nn.Module, cfg: TrainConfig, out_dir: str | Path,
          teacher: nn.Module | None = None, tracker: Tracker | None = None, *,
          run: TrainRun = TrainRun(), info: DistInfo | None = None,
          split: str = "train") -> TrainSummary:
    """Train ``model`` on ``task``'s ``split`` with ``cfg``; resume from ``out_dir``/checkpoints.

    ``model`` is any module mapping images to the task's output; with ``cfg.groups`` it must have
    ``set_arch``. ``teacher`` (frozen, eval mode) provides distillation targets when
    ``cfg.kd_ratio > 0``. ``tracker`` receives losses, lr, per-group counts and losses, throughput
    and the checkpoint hash (rank 0 only). Returns the run's :class:`TrainSummary`; the trained
    weights stay in ``model`` (and in ``out_dir/checkpoints/last.pt``).

    ``split`` is the task split trained on ("train"; fine-tuning may use "trainfull"). ``info``
    (from :func:`~pipeline.train.distributed.init_distributed`) defaults to the environment's
    process group (``torchrun``) or a single process on ``cfg.device``. Raises
    :class:`TrainingError` on a non-finite loss and
    :class:`~pipeline.train.checkpoint.CheckpointError` for an unusable resume checkpoint.
    """
    info = info or init_distributed(run.device)
    _deterministic(run.deterministic, info.device)
    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    model = model.to(info.device)

    spec = groups_of(cfg)
    groups = parse_groups(spec, task.name) if spec is not None else None
    if groups is not None and not callable(getattr(model, "set_arch", None)):
        raise TrainingError(f"sampling groups are configured but {type(model).__name__} has no "
                            f"set_arch: a supernet is needed")
    names = [g.name for g in groups] if groups else []
    kd_ratio = kd_ratio_of(cfg)
    use_kd = teacher is not None and kd_ratio > 0
    if use_kd:
        teacher = teacher.to(info.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    dataset = task.dataset(split, train=True)
    loader, sampler = make_loader(dataset, info, batch_size=cfg.batch_size, seed=run.seed,
                                  num_workers=cfg.num_workers,
                                  collate=getattr(task, "collate", None))
    ipe = sampler.num_samples // cfg.batch_size
    total = cfg.iterations if cfg.iterations is not None else cfg.epochs * ipe
    sch = cfg.schedule
    sched = LRSchedule(sch.name, cfg.optimizer.lr, total, ipe, sch.power, sch.milestones,
                       sch.gamma, sch.warmup_iters)

    fp = fingerprint({**fingerprint_settings(cfg, run), "world_size": info.world_size,
                      "kd": use_kd, "split": split}, task.name, getattr(model, "width", None))
    ddp = wrap_ddp(convert_sync_bn(model, info) if cfg.sync_bn else model, info)
    net = unwrap(ddp)
    optimizer = build_optimizer(cfg, [p for p in net.parameters() if p.requires_grad])

    it = 0
    stats: dict[str, Any] = {"loss_sum": [], "loss_n": [], "first_loss": math.nan,
                             "last_loss": math.nan, "group_n": [0] * len(names),
                             "group_loss": [0.0] * len(names), "seconds": 0.0, "images": 0}
    state = load_resume(ckpt_dir, fp)
    resumed_from = 0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        it = resumed_from = int(state["iteration"])
        stats = state["stats"]
    # No rank may start (and rank 0 write a newer checkpoint) before every rank has read this one.
    barrier(info)

    def checkpoint() -> Path | None:
        if not info.is_main:
            return None
        return save_checkpoint(ckpt_dir, {
            "fingerprint": fp, "iteration": it, "epoch": it // ipe, "model": net.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng_state(), "stats": stats, "task": task.name,
            "width": getattr(net, "width", None)})

    metrics = _MetricBuffer(tracker if info.is_main else None, cfg.log_every)
    bar = tqdm(total=total, initial=it, file=sys.stderr, unit="it", dynamic_ncols=True,
               disable=not (run.progress and info.is_main), desc=f"train {task.name}",
               mininterval=0.1 if sys.stderr.isatty() else 10.0)  # logs: a line per 10 s
    last_saved: Path | None = ckpt_dir / LAST if state is not None else None
    ddp.train()
    if run.freeze_bn:
        set_bn_eval(ddp)
    t_window, n_window = time.perf_counter(), 0
    t_last = t_window
    while it < total:
        epoch, start = divmod(it, ipe)
        sampler.set_position(epoch, start * cfg.batch_size)
        while len(stats["loss_sum"]) <= epoch:
            stats["loss_sum"].append(0.0)
            stats["loss_n"].append(0)
        for batch in loader:
            lr = sched(it)
            for g in optimizer.param_groups:
                g["lr"] = lr
            gi = None
            if groups is not None:
                gi, arch = subnet_at(groups, it, run.seed, task.name)
                net.set_arch(arch)  # type: ignore[operator]
            batch = to_device(batch, info.device)
            images = batch_images(batch)
            with autocast(info, cfg.amp == "bf16"):
                output = ddp(images)
                task_loss = task.loss(output, batch)
                loss = task_loss
                kd = None
                if use_kd:
                    with torch.no_grad():
                        target = teacher(images)  # type: ignore[misc]
                    kd = kd_loss(output, target)
                    loss = task_loss + kd_ratio * kd
            mean_loss = all_reduce_mean(loss.float(), info)
            if not torch.isfinite(mean_loss):
                bar.close()
                metrics.flush()
                kept = f"last good checkpoint kept: {last_saved}" if last_saved else \
                    "no checkpoint was written yet"
                where = f", group {names[gi]!r}" if gi is not None else ""
                raise TrainingError(f"non-finite loss ({mean_loss.item()}) at iteration {it} "
                                    f"(epoch {epoch}{where}); training stopped, {kept}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            value = float(mean_loss)
            if it == 0:
                stats["first_loss"] = value
            stats["last_loss"] = value
            stats["loss_sum"][epoch] += value
            stats["loss_n"][epoch] += 1
            if gi is not None:
                stats["group_n"][gi] += 1
                stats["group_loss"][gi] += value
            images_step = images.shape[0] * info.world_size
            stats["images"] += images_step
            now = time.perf_counter()
            stats["seconds"] += now - t_last  # wall time per step, data loading included
            t_last = now
            it += 1
            n_window += images_step

            m = {"loss": value, "lr": lr, "task_loss": float(task_loss.detach())}
            if kd is not None:
                m["kd_loss"] = float(kd.detach())
            if gi is not None:
                m[f"group/{names[gi]}/loss"] = value
                m[f"group/{names[gi]}/count"] = float(stats["group_n"][gi])
            if it % cfg.log_every == 0:
                now = time.perf_counter()
                m["images_per_s"] = n_window / max(now - t_window, 1e-9)
                t_window, n_window = now, 0
            metrics.add(m, step=it)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)

            end_of_epoch = it % ipe == 0
            if it % cfg.checkpoint_every == 0 or end_of_epoch or it == total:
                saved = checkpoint()
                if saved is not None:
                    last_saved = saved
                    metrics.add({"checkpoint_iteration": float(it)}, step=it)
                t_last = time.perf_counter()  # checkpoint writing is not training throughput
            if it >= total or end_of_epoch:
                break
    bar.close()
    if info.is_main and not (ckpt_dir / LAST).exists():
        checkpoint()  # resumed from prev.pt of a finished run: make last.pt the final state
    metrics.flush()

    ckpt_path = ckpt_dir / LAST
    sha = file_sha256(ckpt_path) if info.is_main and ckpt_path.exists() else ""
    if tracker is not None and info.is_main and sha:
        tags = getattr(tracker, "set_tags", None)
        if tags is not None:
            tags({"checkpoint_sha256": sha})
    epoch_losses = [s / n for s, n in zip(stats["loss_sum"], stats["loss_n"]) if n]
    return TrainSummary(
        iterations=it, epochs_run=it / ipe, iters_per_epoch=ipe,
        images_per_step=cfg.batch_size * info.world_size,
        first_loss=float(stats["first_loss"]), final_loss=float(stats["last_loss"]),
        epoch_losses=epoch_losses,
        group_counts={n: int(c) for n, c in zip(names, stats["group_n"])},
        group_losses={n: (l / c if c else math.nan)
                      for n, l, c in zip(names, stats["group_loss"], stats["group_n"])},
        kd=use_kd, images_per_s=stats["images"] / max(stats["seconds"], 1e-9),
        seconds=float(stats["seconds"]), checkpoint=str(ckpt_path), checkpoint_sha256=sha,
        fingerprint=fp, resumed_from=resumed_from)


__all__ = ["train", "TrainSummary", "TrainingError", "CheckpointError", "build_optimizer",
           "kd_loss", "to_device", "batch_images", "set_bn_eval", "TaskLike", "Tracker"]
