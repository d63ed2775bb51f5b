"""What happens at iteration ``i``: the sampling group, the subnet, the learning rate.

Everything here is a pure function of the global iteration index (and the seed), never of a
counter carried along. So every rank of a distributed run draws the same subnet, and a resumed run
draws exactly what the uninterrupted one would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.space.arch import Architecture, ArchitectureError
from pipeline.space.sample import SamplingGroup, paper_groups, sample_group
from pipeline.errors import InputError


class ScheduleError(InputError):
    """A sampling-group or learning-rate setting that cannot be used; the message names the key."""


# -- sampling groups ---------------------------------------------------------------------------

def parse_groups(spec: str | Sequence[Mapping[str, Any]], task: str,
                 key: str = "groups") -> tuple[SamplingGroup, ...]:
    """Sampling groups from the configuration.

    ``spec`` is ``"paper"`` (the 11 groups of scalenas.md section 4, task-specific) or a list of
    ``{name, fusion_prob, depths}`` mappings, cycled in the order given.
    """
    if isinstance(spec, str):
        if spec != "paper":
            raise ScheduleError(f"{key}: expected 'paper' or a list of groups, got {spec!r}")
        return paper_groups(task)
    if not isinstance(spec, Sequence) or not spec:
        raise ScheduleError(f"{key}: expected 'paper' or a non-empty list of groups")
    groups = []
    for i, g in enumerate(spec):
        where = f"{key}[{i}]"
        if not isinstance(g, Mapping):
            raise ScheduleError(f"{where}: expected a mapping with fusion_prob and depths")
        unknown = set(g) - {"name", "fusion_prob", "depths"}
        missing = {"fusion_prob", "depths"} - set(g)
        if unknown or missing:
            raise ScheduleError(f"{where}: unknown key(s) {sorted(unknown)} / missing {sorted(missing)}")
        try:
            groups.append(SamplingGroup(g["fusion_prob"], tuple(g["depths"]),
                                        str(g.get("name") or f"group{i}")))
        except (ArchitectureError, TypeError) as e:
            raise ScheduleError(f"{where}: {e}") from None
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ScheduleError(f"{key}: group names must be unique, got {names}")
    return tuple(groups)


def group_index(iteration: int, num_groups: int) -> int:
    """The group trained at a global iteration: the groups cycle with the iteration index."""
    return iteration % num_groups


def subnet_rng(seed: int, iteration: int) -> np.random.Generator:
    return np.random.default_rng([seed, iteration])


def subnet_at(groups: Sequence[SamplingGroup], iteration: int, seed: int,
              task: str) -> tuple[int, Architecture]:
    """(group index, architecture) trained at ``iteration``; identical on every rank and resume."""
    gi = group_index(iteration, len(groups))
    return gi, sample_group(subnet_rng(seed, iteration), groups[gi], task)


# -- learning rate -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of the global iteration.

    ``poly``: ``lr * (1 - i / total) ** power`` (the segmentation recipe, power 0.9);
    ``step``: ``lr * gamma ** (number of milestones <= epoch)`` with ``epoch = i // iters_per_epoch``
    (the pose recipe, x0.1 at epochs 170 and 200); ``constant``: ``lr``. A linear warm-up over
    the first ``warmup_iters`` iterations multiplies any of them by ``(i + 1) / warmup_iters``.
    """

    kind: str
    base_lr: float
    total_iters: int
    iters_per_epoch: int
    power: float = 0.9
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("poly", "step", "constant"):
            raise ScheduleError(f"lr_schedule: expected 'poly', 'step' or 'constant', got {self.kind!r}")
        if not self.base_lr > 0:
            raise ScheduleError(f"lr: must be positive, got {self.base_lr}")
        if self.total_iters < 1 or self.iters_per_epoch < 1:
            raise ScheduleError(f"lr schedule: total_iters ({self.total_iters}) and iters_per_epoch "
                                f"({self.iters_per_epoch}) must be >= 1")
        if list(self.milestones) != sorted(self.milestones):
            raise ScheduleError(f"lr_steps: milestones must be increasing, got {list(self.milestones)}")

    def __call__(self, iteration: int) -> float:
        warm = min(1.0, (iteration + 1) / self.warmup_iters) if self.warmup_iters else 1.0
        if self.kind == "poly":
            frac = min(iteration, self.total_iters) / self.total_iters
            return warm * self.base_lr * (1.0 - frac) ** self.power
        if self.kind == "step":
            epoch = iteration // self.iters_per_epoch
            return warm * self.base_lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        return warm * self.base_lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's whole state (it has no hidden counter: the iteration is stored apart)."""
        return {"kind": self.kind, "base_lr": self.base_lr, "total_iters": self.total_iters,
                "iters_per_epoch": self.iters_per_epoch, "power": self.power,
                "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup_iters": self.warmup_iters}
