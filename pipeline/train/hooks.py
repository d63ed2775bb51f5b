"""What happens around a training step, one hook per concern (in the manner of detectron2's hooks).

:class:`~pipeline.train.loop.Trainer` runs its hooks, in list order, at these points:

``before_train`` -> for each step: ``before_step`` -> (the step: data, forward, loss)
-> ``after_loss`` -> (backward, optimiser step) -> ``after_step`` -> ... -> ``after_train``;
``close`` runs last in every case, also when a step raised.

``after_loss`` sees the loss before the weights change, so a hook may stop training there.
In ``after_step``, ``trainer.iter`` counts the steps done and ``trainer.step`` describes the one
just run; hooks put scalars for the tracker into ``trainer.metrics`` and the
:class:`MetricWriter` (the last hook) sends them with ``step=trainer.iter``.

No hook draws random numbers or touches the weights, the optimiser or the data order, so which
hooks run does not change what is trained (tests/train/test_train_loop.py checks it bitwise).
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

import torch
from tqdm import tqdm

from .checkpoint import LAST, file_sha256, rng_state, save_checkpoint, set_rng_state

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from .distributed import DistInfo
    from .stats import RunStats


class Trainer(Protocol):
    """What a hook reads and sets of the trainer (pipeline.train.loop.Trainer), declared here so
    that the hooks do not import the loop that runs them."""

    info: "DistInfo"
    iter: int
    total: int
    iters_per_epoch: int
    ckpt_dir: "Path"
    last_checkpoint: "Path | None"
    checkpoint_sha256: str
    metrics: dict[str, float]
    model: "nn.Module"
    stats: "RunStats"
    step: Any

    def state_dict(self) -> dict[str, Any]: ...

    def set_train_mode(self) -> None: ...


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unusable model); the message says where."""


class Tracker(Protocol):
    """What the loop needs from a tracker: batched metrics with steps."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...


class HookBase:
    """A hook does nothing at any point unless it overrides that point."""

    def before_train(self, trainer: "Trainer") -> None: ...
    def before_step(self, trainer: "Trainer") -> None: ...
    def after_loss(self, trainer: "Trainer", loss: torch.Tensor) -> None: ...
    def after_step(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...
    def close(self, trainer: "Trainer") -> None: ...


class IterationTimer(HookBase):
    """Wall time per step into the run's statistics; images/s every ``every`` steps.

    A step's time runs from ``before_step`` to ``after_step`` and includes data loading; put
    first, the timer stops before the other hooks' ``after_step`` (checkpoint writing is not
    training throughput).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self._start = 0.0
        self._window_images = 0
        self._window_seconds = 0.0

    def before_step(self, trainer: "Trainer") -> None:
        self._start = time.perf_counter()

    def after_step(self, trainer: "Trainer") -> None:
        seconds = time.perf_counter() - self._start
        trainer.stats.seconds += seconds
        self._window_seconds += seconds
        self._window_images += trainer.step.images
        if trainer.iter % self.every == 0:
            trainer.metrics["images_per_s"] = self._window_images / max(self._window_seconds, 1e-9)
            self._window_images, self._window_seconds = 0, 0.0


class NonFiniteGuard(HookBase):
    """Stops on a non-finite (rank-averaged) loss before it reaches the weights."""

    def after_loss(self, trainer: "Trainer", loss: torch.Tensor) -> None:
        if torch.isfinite(loss):
            return
        kept = (f"last good checkpoint kept: {trainer.last_checkpoint}"
                if trainer.last_checkpoint else "no checkpoint was written yet")
        step = trainer.step
        where = f", group {step.group_name!r}" if step.group_name is not None else ""
        raise TrainingError(f"non-finite loss ({loss.item()}) at iteration {step.iteration} "
                            f"(epoch {step.epoch}{where}); training stopped, {kept}")


class Checkpointer(HookBase):
    """The whole training state, atomically, every ``every`` steps, at each epoch end and at the
    end (rank 0 writes, every rank has the same state)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def save(self, trainer: "Trainer") -> None:
        if not trainer.info.is_main:
            return
        trainer.last_checkpoint = save_checkpoint(trainer.ckpt_dir, trainer.state_dict())
        trainer.metrics["checkpoint_iteration"] = float(trainer.iter)

    def after_step(self, trainer: "Trainer") -> None:
        it = trainer.iter
        if it % self.every == 0 or it % trainer.iters_per_epoch == 0 or it == trainer.total:
            self.save(trainer)

    def after_train(self, trainer: "Trainer") -> None:
        last = trainer.ckpt_dir / LAST
        if trainer.info.is_main and not last.exists():
            self.save(trainer)  # resumed from prev.pt of a finished run: last.pt = final state
        if trainer.info.is_main and last.exists():
            trainer.checkpoint_sha256 = file_sha256(last)


class EvalHook(HookBase):
    """``fn(trainer) -> {name: value}`` every ``period`` steps and after the last one; the values
    go to the tracker under ``prefix``.

    Evaluation must not change training: the model is put in eval mode and back, and the global
    random generators are restored afterwards. ``fn`` itself must leave the weights and BN buffers
    as it found them (calibrate a copy). It runs on every rank; only rank 0 writes.
    """

    def __init__(self, period: int, fn: Callable[["Trainer"], Mapping[str, float]],
                 prefix: str = "eval/") -> None:
        self.period, self.fn, self.prefix = period, fn, prefix
        self.results: list[tuple[int, dict[str, float]]] = []
        self._done_at = -1

    def _evaluate(self, trainer: "Trainer") -> None:
        saved = rng_state()
        trainer.model.eval()
        try:
            values = {k: float(v) for k, v in self.fn(trainer).items()}
        finally:
            trainer.set_train_mode()
            set_rng_state(saved)
        self.results.append((trainer.iter, values))
        self._done_at = trainer.iter
        trainer.metrics.update({self.prefix + k: v for k, v in values.items()})

    def after_step(self, trainer: "Trainer") -> None:
        if self.period > 0 and trainer.iter % self.period == 0:
            self._evaluate(trainer)

    def after_train(self, trainer: "Trainer") -> None:
        if self._done_at != trainer.iter:
            self._evaluate(trainer)


class ProgressBar(HookBase):
    """A tqdm bar on rank 0 (steps, rate, ETA, loss, lr); in logs a line per 10 s."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled, self.desc = enabled, desc
        self.bar: tqdm | None = None

    def before_train(self, trainer: "Trainer") -> None:
        self.bar = tqdm(total=trainer.total, initial=trainer.iter, file=sys.stderr, unit="it",
                        dynamic_ncols=True, disable=not (self.enabled and trainer.info.is_main),
                        desc=self.desc, mininterval=0.1 if sys.stderr.isatty() else 10.0)

    def after_step(self, trainer: "Trainer") -> None:
        assert self.bar is not None
        self.bar.set_postfix(loss=f"{trainer.step.loss:.4f}", lr=f"{trainer.step.lr:.2e}",
                             refresh=False)
        self.bar.update(1)

    def close(self, trainer: "Trainer") -> None:
        if self.bar is not None:
            self.bar.close()


class MetricWriter(HookBase):
    """Each step's metrics (loss, lr, task and KD loss, the group's loss and count, and what the
    other hooks added) to the tracker, sent in batches of ``every`` steps; at the end the
    checkpoint's hash as a tag. Rank 0 only; put last."""

    def __init__(self, tracker: Tracker | None, every: int) -> None:
        self.tracker, self.every = tracker, every
        self.pending: list[tuple[dict[str, float], int]] = []

    def after_step(self, trainer: "Trainer") -> None:
        if self.tracker is None or not trainer.info.is_main:
            return
        s = trainer.step
        m: dict[str, float] = {"loss": s.loss, "lr": s.lr, "task_loss": s.task_loss}
        if s.kd_loss is not None:
            m["kd_loss"] = s.kd_loss
        if s.group_name is not None:
            m[f"group/{s.group_name}/loss"] = s.loss
            m[f"group/{s.group_name}/count"] = float(trainer.stats.group_n[s.group])
        m.update(trainer.metrics)
        self.pending.append((m, trainer.iter))
        if len(self.pending) >= self.every:
            self.flush()

    def after_train(self, trainer: "Trainer") -> None:
        if self.tracker is None or not trainer.info.is_main:
            return
        if trainer.metrics:  # written after the last step (a final checkpoint, an evaluation)
            self.pending.append((dict(trainer.metrics), trainer.iter))
        self.flush()
        tags = getattr(self.tracker, "set_tags", None)
        if tags is not None and trainer.checkpoint_sha256:
            tags({"checkpoint_sha256": trainer.checkpoint_sha256})

    def flush(self) -> None:
        if self.tracker is None or not self.pending:
            return
        for metrics, step in self.pending:
            self.tracker.log_metrics(metrics, step=step)
        send: Any = getattr(self.tracker, "flush", None)  # pipeline.tracking.StageRun: one batch
        if send is not None:
            send()
        self.pending = []

    def close(self, trainer: "Trainer") -> None:
        self.flush()  # a failed run still shows its losses up to the failure
