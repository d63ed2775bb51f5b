"""The running totals of a training run, saved in every checkpoint so a resumed run reports the
same losses and counts as an uninterrupted one.

A checkpoint is read with ``torch.load(..., weights_only=True)``, which refuses custom classes, so
:class:`RunStats` is stored as the plain dict of :meth:`RunStats.to_dict`. Its keys are the eight
keys of the dict that checkpoints held before this class existed, so those checkpoints resume
unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from .checkpoint import CheckpointError


@dataclass
class RunStats:
    """Per-epoch loss sums, per-group counts and losses, first/last loss, wall time and images.

    ``seconds`` counts the steps' wall time (data loading included, checkpoint writing and other
    hooks excluded); it is the one field a resumed run does not reproduce.
    """

    loss_sum: list[float] = field(default_factory=list)
    loss_n: list[int] = field(default_factory=list)
    first_loss: float = math.nan
    last_loss: float = math.nan
    group_n: list[int] = field(default_factory=list)
    group_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0

    @classmethod
    def empty(cls, num_groups: int) -> "RunStats":
        return cls(group_n=[0] * num_groups, group_loss=[0.0] * num_groups)

    def begin_epoch(self, epoch: int) -> None:
        while len(self.loss_sum) <= epoch:
            self.loss_sum.append(0.0)
            self.loss_n.append(0)

    def record(self, iteration: int, epoch: int, loss: float, group: int | None,
               images: int) -> None:
        """One finished step: its (rank-averaged) loss and the images of all ranks."""
        self.images += images
        if iteration == 0:
            self.first_loss = loss
        self.last_loss = loss
        self.loss_sum[epoch] += loss
        self.loss_n[epoch] += 1
        if group is not None:
            self.group_n[group] += 1
            self.group_loss[group] += loss

    def epoch_losses(self) -> list[float]:
        return [s / n for s, n in zip(self.loss_sum, self.loss_n) if n]

    def group_counts(self, names: Sequence[str]) -> dict[str, int]:
        return {n: int(c) for n, c in zip(names, self.group_n)}

    def group_losses(self, names: Sequence[str]) -> dict[str, float]:
        return {n: (l / c if c else math.nan)
                for n, l, c in zip(names, self.group_loss, self.group_n)}

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (``weights_only``-loadable); copies, not views."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else v)
                for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Any, num_groups: int, where: str = "checkpoint") -> "RunStats":
        """Read the ``stats`` entry of a checkpoint; a missing or malformed one is an error."""
        names = [f.name for f in fields(cls)]
        if not isinstance(d, Mapping) or set(d) != set(names):
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise CheckpointError(f"{where}: 'stats' must have the keys {sorted(names)}, got {got}")
        stats = cls(**{k: (list(d[k]) if isinstance(d[k], (list, tuple)) else d[k])
                       for k in names})
        if len(stats.group_n) != num_groups or len(stats.group_loss) != num_groups \
                or len(stats.loss_sum) != len(stats.loss_n):
            raise CheckpointError(f"{where}: 'stats' does not fit this run ({num_groups} "
                                  f"sampling groups, got {len(stats.group_n)})")
        return stats
