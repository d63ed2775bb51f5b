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

:meth:`Trainer.train_step` is the step alone; checkpoints, metrics, throughput, progress, the
non-finite-loss guard and evaluations are hooks around it (pipeline.train.hooks), and the run's
totals are a :class:`~pipeline.train.stats.RunStats` saved in every checkpoint. The configuration
(the section and its :class:`~pipeline.train.runtime.TrainRun`) is read in :func:`build_optimizer`,
:func:`lr_schedule`, :meth:`Trainer.from_config` and :func:`default_hooks` only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import TrainConfig

from .checkpoint import (LAST, CheckpointError, find_resume, fingerprint, load_resume, rng_state,
                         set_rng_state)
from .data import make_loader
from .distributed import (DistInfo, all_reduce_mean, autocast, barrier, convert_sync_bn,
                          init_distributed, unwrap, wrap_ddp)
from .hooks import (Checkpointer, HookBase, IterationTimer, MetricWriter, NonFiniteGuard,
                    ProgressBar, Tracker, TrainingError)
from .runtime import TrainRun, fingerprint_settings, groups_of, kd_ratio_of
from .schedule import LRSchedule, parse_groups, subnet_at
from .stats import RunStats

CHECKPOINT_DIR = "checkpoints"


class TaskLike(Protocol):
    """What the loop needs from a task plug-in (pipeline.tasks)."""

    name: str

    def dataset(self, split: str, train: bool) -> Any: ...
    def loss(self, output: Tensor, batch: Any) -> Tensor: ...


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


def lr_schedule(cfg: TrainConfig, total: int, iters_per_epoch: int) -> LRSchedule:
    """The learning rate per global iteration, from the configuration."""
    sch = cfg.schedule
    return LRSchedule(sch.name, cfg.optimizer.lr, total, iters_per_epoch, sch.power,
                      sch.milestones, sch.gamma, sch.warmup_iters)


# -- the trainer ------------------------------------------------------------------------------

@dataclass
class StepResult:
    """One step, as the hooks see it. ``iteration`` is the step's index (0-based); ``loss`` is
    the rank-averaged total loss, ``task_loss`` and ``kd_loss`` this rank's parts."""

    iteration: int
    epoch: int
    lr: float
    group: int | None = None
    group_name: str | None = None
    images: int = 0
    loss: float = math.nan
    task_loss: float = math.nan
    kd_loss: float | None = None


class Trainer:
    """The training state, :meth:`train_step`, and the hooks run around it (pipeline.train.hooks).

    The trainer runs on the parts it is given (model, optimizer, loader and its sampler, learning
    rate schedule), as detectron2's does, so a test can drive it with an ``nn.Linear`` and a list
    of batches. :meth:`from_config` builds those parts from a training section, as every stage
    does. Building either way resumes from ``out_dir/checkpoints`` when a checkpoint with the same
    fingerprint is there.
    """

    def __init__(self, task: TaskLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: Any, schedule: Any, out_dir: str | Path, *, total: int, batch_size: int,
                 sampler: Any = None, info: DistInfo | None = None, teacher: nn.Module | None = None,
                 groups: Sequence[Any] | None = None, kd_ratio: float = 0.0, seed: int = 0,
                 amp: bool = False, freeze_bn: bool = False, fingerprint: str = "",
                 split: str = "train") -> None:
        """``model`` is already on ``info.device`` (and wrapped for DDP where it runs under it);
        ``loader`` yields batches (``sampler``, when given, has ``num_samples`` and
        ``set_position(epoch, offset)`` for exact resumes); ``schedule(iteration)`` is the
        learning rate; ``groups`` (a supernet) are sampled by the iteration's seed."""
        self.task, self.split = task, split
        self.info = info or init_distributed("cpu")
        self.ckpt_dir = Path(out_dir) / CHECKPOINT_DIR
        # The only settings the steps read (the hooks get theirs from default_hooks).
        self.batch_size, self.seed, self.kd_ratio = batch_size, seed, kd_ratio
        self.amp, self.freeze_bn = amp, freeze_bn
        self.groups = list(groups) if groups is not None else None
        self.group_names = [g.name for g in self.groups] if self.groups else []
        self.use_kd = teacher is not None and kd_ratio > 0
        self.teacher = teacher if self.use_kd else None
        self.loader, self.sampler, self.schedule = loader, sampler, schedule
        self.iters_per_epoch = (sampler.num_samples // batch_size if sampler is not None
                                else len(loader))
        self.total, self.fingerprint = total, fingerprint
        self.model, self.net, self.optimizer = model, unwrap(model), optimizer

        self.iter = 0
        self.stats = RunStats.empty(len(self.group_names))
        self.resumed_from = 0
        self.last_checkpoint: Path | None = None
        self.checkpoint_sha256 = ""
        self.step: StepResult | None = None  # type: ignore[assignment]
        self.metrics: dict[str, float] = {}
        self.hooks: list[HookBase] = []
        self._resume()

    @classmethod
    def from_config(cls, task: TaskLike, model: nn.Module, cfg: TrainConfig, out_dir: str | Path,
                    teacher: nn.Module | None = None, *, run: TrainRun = TrainRun(),
                    info: DistInfo | None = None, split: str = "train") -> "Trainer":
        """The parts a training section describes: the task's split in a resumable loader, the
        optimizer and schedule of the recipe, sampling groups, the frozen teacher, DDP."""
        info = info or init_distributed(run.device)
        _deterministic(run.deterministic, info.device)
        kd_ratio = kd_ratio_of(cfg)
        model = model.to(info.device)
        spec = groups_of(cfg)
        groups = parse_groups(spec, task.name) if spec is not None else None
        if groups is not None and not callable(getattr(model, "set_arch", None)):
            raise TrainingError(f"sampling groups are configured but {type(model).__name__} has "
                                f"no set_arch: a supernet is needed")
        use_kd = teacher is not None and kd_ratio > 0
        if use_kd:
            assert teacher is not None
            teacher = teacher.to(info.device).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

        loader, sampler = make_loader(
            task.dataset(split, train=True), info, batch_size=cfg.batch_size, seed=run.seed,
            num_workers=cfg.num_workers, collate=getattr(task, "collate", None))
        iters_per_epoch = sampler.num_samples // cfg.batch_size
        total = cfg.iterations if cfg.iterations is not None else cfg.epochs * iters_per_epoch
        schedule = lr_schedule(cfg, total, iters_per_epoch)
        fp = fingerprint({**fingerprint_settings(cfg, run), "world_size": info.world_size,
                          "kd": use_kd, "split": split}, task.name, getattr(model, "width", None))
        model = wrap_ddp(convert_sync_bn(model, info) if cfg.sync_bn else model, info)
        optimizer = build_optimizer(cfg, [p for p in unwrap(model).parameters() if p.requires_grad])
        return cls(task, model, optimizer, loader, schedule, out_dir, total=total,
                   batch_size=cfg.batch_size, sampler=sampler, info=info,
                   teacher=teacher if use_kd else None, groups=groups, kd_ratio=kd_ratio,
                   seed=run.seed, amp=cfg.amp == "bf16", freeze_bn=run.freeze_bn,
                   fingerprint=fp, split=split)

    # -- state ---------------------------------------------------------------------------------

    def _resume(self) -> None:
        state = load_resume(self.ckpt_dir, self.fingerprint)
        if state is not None:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            self.iter = self.resumed_from = int(state["iteration"])
            self.stats = RunStats.from_dict(state["stats"], len(self.group_names),
                                            where=str(find_resume(self.ckpt_dir)))
            self.last_checkpoint = self.ckpt_dir / LAST
        # No rank may start (and rank 0 write a newer checkpoint) before every rank has read it.
        barrier(self.info)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as plain data (pipeline.train.checkpoint)."""
        return {"fingerprint": self.fingerprint, "iteration": self.iter,
                "epoch": self.iter // self.iters_per_epoch, "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "rng": rng_state(), "stats": self.stats.to_dict(), "task": self.task.name,
                "width": getattr(self.net, "width", None)}

    def set_train_mode(self) -> None:
        self.model.train()
        if self.freeze_bn:
            set_bn_eval(self.model)

    # -- one step ------------------------------------------------------------------------------

    def train_step(self, data: Any) -> StepResult:
        """Iteration ``self.iter`` on the next batch of ``data``: lr, subnet, forward, loss,
        the hooks' ``after_loss``, backward, optimiser step."""
        it = self.iter
        lr = self.schedule(it)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        step = self.step = StepResult(iteration=it, epoch=it // self.iters_per_epoch, lr=lr)
        if self.groups is not None:
            step.group, arch = subnet_at(self.groups, it, self.seed, self.task.name)
            step.group_name = self.group_names[step.group]
            self.net.set_arch(arch)  # type: ignore[operator]
        batch = to_device(next(data), self.info.device)
        images = batch_images(batch)
        with autocast(self.info, self.amp):
            output = self.model(images)
            task_loss = self.task.loss(output, batch)
            loss, kd = task_loss, None
            if self.teacher is not None:
                with torch.no_grad():
                    target = self.teacher(images)
                # The task says what of its output is distilled (kd_loss: all of it).
                kd = getattr(self.task, "distill", kd_loss)(output, target)
                loss = task_loss + self.kd_ratio * kd
        mean_loss = all_reduce_mean(loss.float(), self.info)
        for h in self.hooks:
            h.after_loss(self, mean_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        step.loss = float(mean_loss)
        step.task_loss = float(task_loss.detach())
        step.kd_loss = float(kd.detach()) if kd is not None else None
        step.images = images.shape[0] * self.info.world_size
        self.stats.record(it, step.epoch, step.loss, step.group, step.images)
        return step

    # -- the run -------------------------------------------------------------------------------

    def run(self, hooks: Sequence[HookBase]) -> None:
        """Steps from ``self.iter`` to ``self.total``, with ``hooks`` around them."""
        self.hooks = list(hooks)
        try:
            self.set_train_mode()
            self.metrics = {}
            for h in self.hooks:
                h.before_train(self)
            while self.iter < self.total:
                epoch, start = divmod(self.iter, self.iters_per_epoch)
                if self.sampler is not None:
                    self.sampler.set_position(epoch, start * self.batch_size)
                self.stats.begin_epoch(epoch)
                data = iter(self.loader)
                for _ in range(min(self.iters_per_epoch - start, self.total - self.iter)):
                    self.metrics = {}
                    for h in self.hooks:
                        h.before_step(self)
                    self.train_step(data)
                    self.iter += 1
                    for h in self.hooks:
                        h.after_step(self)
            self.metrics = {}
            for h in self.hooks:
                h.after_train(self)
        finally:
            for h in self.hooks:
                h.close(self)

    def summary(self) -> TrainSummary:
        names, stats = self.group_names, self.stats
        return TrainSummary(
            iterations=self.iter, epochs_run=self.iter / self.iters_per_epoch,
            iters_per_epoch=self.iters_per_epoch,
            images_per_step=self.batch_size * self.info.world_size,
            first_loss=float(stats.first_loss), final_loss=float(stats.last_loss),
            epoch_losses=stats.epoch_losses(), group_counts=stats.group_counts(names),
            group_losses=stats.group_losses(names), kd=self.use_kd,
            images_per_s=stats.images_per_s, seconds=float(stats.seconds),
            checkpoint=str(self.ckpt_dir / LAST), checkpoint_sha256=self.checkpoint_sha256,
            fingerprint=self.fingerprint, resumed_from=self.resumed_from)


def default_hooks(cfg: TrainConfig, task_name: str, tracker: Tracker | None,
                  extra: Sequence[HookBase] = (), run: TrainRun = TrainRun()) -> list[HookBase]:
    """Timer first (it times the step alone), the writer last (it sends what the others put)."""
    return [IterationTimer(cfg.log_every), NonFiniteGuard(), Checkpointer(cfg.checkpoint_every),
            *extra, ProgressBar(run.progress, f"train {task_name}"),
            MetricWriter(tracker, cfg.log_every)]


def train(task: TaskLike, model: nn.Module, cfg: TrainConfig, out_dir: str | Path,
          teacher: nn.Module | None = None, tracker: Tracker | None = None, *,
          run: TrainRun = TrainRun(), info: DistInfo | None = None, split: str = "train",
          hooks: Sequence[HookBase] = ()) -> TrainSummary:
    """Train ``model`` on ``task``'s ``split`` with ``cfg``; resume from ``out_dir``/checkpoints.

    ``model`` is any module mapping images to the task's output; with ``cfg.groups`` it must have
    ``set_arch``. ``teacher`` (frozen, eval mode) provides distillation targets when
    ``cfg.kd_ratio > 0``. ``tracker`` receives losses, lr, per-group counts and losses, throughput
    and the checkpoint hash (rank 0 only). ``hooks`` (e.g. an
    :class:`~pipeline.train.hooks.EvalHook`) run after the checkpointer. Returns the run's
    :class:`TrainSummary`; the trained weights stay in ``model`` (and in
    ``out_dir/checkpoints/last.pt``).

    ``split`` is the task split trained on ("train"; fine-tuning may use "trainfull"). ``info``
    (from :func:`~pipeline.train.distributed.init_distributed`) defaults to the environment's
    process group (``torchrun``) or a single process on ``run.device``. Raises
    :class:`TrainingError` on a non-finite loss and
    :class:`~pipeline.train.checkpoint.CheckpointError` for an unusable resume checkpoint.
    """
    trainer = Trainer.from_config(task, model, cfg, out_dir, teacher, run=run, info=info,
                                  split=split)
    trainer.run(default_hooks(cfg, task.name, tracker if trainer.info.is_main else None, hooks,
                              run))
    return trainer.summary()


__all__ = ["train", "Trainer", "StepResult", "TrainSummary", "RunStats", "TrainingError",
           "CheckpointError", "HookBase", "default_hooks", "build_optimizer", "lr_schedule",
           "kd_loss", "to_device", "batch_images", "set_bn_eval", "TaskLike", "Tracker"]
