"""Sampling architectures: the official sampler, the named extremes and the sandwich groups.

Every function is pure; randomness comes only from the ``numpy.random.Generator`` passed in, so the
same seed always gives the same architecture (and the same ``arch_id``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.tasks.facts import task_facts

from .arch import (BRANCHES, MAX_DEPTH, MIN_DEPTH, TASK_NAMES, Architecture,
                   ArchitectureError, ModuleArch, check_task, make_module)

#: Fusion probabilities and depth candidates of the paper's grouped sampling (section 4) and of
#: the random-sampling search (section 6).
GRID_FUSION_PROBS: tuple[float, ...] = (0.2, 0.5, 0.8)
SEARCH_FUSION_PROBS: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)
GRID_DEPTHS: tuple[tuple[int, ...], ...] = ((2, 3), (3, 4), (4, 5))

#: Per-module fusions as mutable nested lists: ``bits[s][j]`` is the set of sources into j at s.
Fusions = list[list[set[int]]]


# -- validation -------------------------------------------------------------------------------------
def check_task_name(task: str) -> None:
    if task not in TASK_NAMES:
        raise ArchitectureError(f"unknown task {task!r} (expected one of {TASK_NAMES})")


def check_prob(p: float, name: str = "fusion_prob") -> float:
    """Return ``p`` as a float, or raise unless it is a real number in [0, 1]."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ArchitectureError(f"{name} must be a number in [0, 1], got {p!r}")
    p = float(p)
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ArchitectureError(f"{name} must be in [0, 1], got {p}")
    return p


def check_depth_candidates(depths: Sequence[int], name: str = "depth_candidates") -> tuple[int, ...]:
    """Return the candidates as a sorted tuple of unique ints, or raise if any is out of range."""
    try:
        cands = tuple(depths)
    except TypeError:
        raise ArchitectureError(f"{name} must be a sequence of integers, got {depths!r}") from None
    if not cands:
        raise ArchitectureError(f"{name} must not be empty")
    for d in cands:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not MIN_DEPTH <= d <= MAX_DEPTH:
            raise ArchitectureError(
                f"{name}: every depth must be an integer in {MIN_DEPTH}..{MAX_DEPTH}, got {d!r}")
    return tuple(sorted({int(d) for d in cands}))


# -- building blocks shared with ops.py -------------------------------------------------------------
def random_bits(rng: np.random.Generator, depths: Sequence[int], fusion_prob: float) -> Fusions:
    """Bits for one module: for each target j and step s < depth_j, each other source on with p.

    Draws a fixed number of uniforms (T x n x n) so the stream does not depend on the outcome.
    """
    n, T = len(depths), max(depths)
    u = rng.random((T, n, n))
    return [[{k for k in range(n) if k != j and s < depths[j] and u[s, j, k] < fusion_prob}
             for j in range(n)] for s in range(T)]


def to_module(depths: Sequence[int], bits: Fusions) -> ModuleArch:
    return make_module(tuple(int(d) for d in depths), bits)


def force_pose_last_module(depths: Sequence[int], bits: Fusions) -> Fusions:
    """Apply the release's pose rule to the last module's bits (a new list; the input is untouched).

    Target 0 fuses every other branch at its last step and nothing after it; targets k >= 1
    receive nothing at their own last step (their last output is never read by the pose head).
    """
    n = len(depths)
    out = [[set(srcs) for srcs in step] for step in bits]
    d0 = depths[0]
    out[d0 - 1][0] = set(range(1, n))
    for s in range(d0, len(out)):
        out[s][0] = set()
    for k in range(1, n):
        out[depths[k] - 1][k] = set()
    return out


def enforce_pose(arch: Architecture) -> Architecture:
    """The same architecture with the pose rule applied to its last module."""
    last = arch.modules[-1]
    bits = [[set(srcs) for srcs in step] for step in last.fusions]
    fixed = to_module(last.depths, force_pose_last_module(last.depths, bits))
    return Architecture(arch.modules[:-1] + (fixed,), arch.meta)


def finish_arch(modules: Sequence[ModuleArch], task: str) -> Architecture:
    """Assemble modules into an architecture valid for ``task`` (pose: the last-module rule)."""
    arch = Architecture(tuple(modules))
    if task_facts(task).single_scale_output:
        arch = enforce_pose(arch)
    check_task(arch, task)
    return arch


# -- the official sampler ---------------------------------------------------------------------------
def sample_arch(rng: np.random.Generator, fusion_prob: float, depth_candidates: Sequence[int],
                task: str) -> Architecture:
    """Draw one architecture as the release's sampler does.

    Each branch depth is uniform over ``depth_candidates``; for each target j and step s < depth_j
    every other source is switched on with probability ``fusion_prob``; steps s >= depth_j get no
    bits. For pose the last module is then forced (see :func:`force_pose_last_module`).
    """
    check_task_name(task)
    p = check_prob(fusion_prob)
    cands = check_depth_candidates(depth_candidates)
    modules = []
    for nb in BRANCHES:
        depths = [cands[i] for i in rng.integers(0, len(cands), size=nb)]
        modules.append(to_module(depths, random_bits(rng, depths, p)))
    return finish_arch(modules, task)


def _uniform(depth: int, task: str, steps_on: Sequence[int]) -> Architecture:
    """Every branch at ``depth``; all sources into all targets at each step in ``steps_on``."""
    modules = []
    for nb in BRANCHES:
        bits = [[set(range(nb)) - {j} if s in steps_on else set() for j in range(nb)]
                for s in range(depth)]
        modules.append(to_module([depth] * nb, bits))
    return finish_arch(modules, task)


def smallest(task: str) -> Architecture:
    """Depth 2 everywhere, no fusion (pose: the forced last-module fusion into branch 0)."""
    check_task_name(task)
    return _uniform(2, task, ())


def largest(task: str) -> Architecture:
    """Depth 5 everywhere, every source into every target at every step (pose rule applied)."""
    check_task_name(task)
    return _uniform(MAX_DEPTH, task, range(MAX_DEPTH))


def hrnet(task: str) -> Architecture:
    """HRNet: depth 4, full fusion after step 3 only; pose: last module fuses into branch 0 only."""
    check_task_name(task)
    return _uniform(4, task, (3,))


# -- sandwich groups --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingGroup:
    """One sampling group: a fusion probability and the depth candidates of every branch."""

    fusion_prob: float
    depth_candidates: tuple[int, ...]
    name: str

    def __post_init__(self) -> None:
        check_prob(self.fusion_prob)
        object.__setattr__(self, "depth_candidates", check_depth_candidates(self.depth_candidates))


def _grid(probs: Sequence[float]) -> list[SamplingGroup]:
    return [SamplingGroup(p, d, f"p{p:g}_d{''.join(map(str, d))}") for p in probs for d in GRID_DEPTHS]


def paper_groups(task: str) -> tuple[SamplingGroup, ...]:
    """The 11 sandwich groups of supernet training, in cycling order: smallest, 3x3 grid, largest.

    The smallest group fuses with probability 0.1 for segmentation and 0.0 for pose.
    """
    check_task_name(task)
    small = SamplingGroup(task_facts(task).smallest_fusion_prob, (2,), "smallest")
    return (small, *_grid(GRID_FUSION_PROBS), SamplingGroup(1.0, (MAX_DEPTH,), "largest"))


def search_groups() -> tuple[SamplingGroup, ...]:
    """The 15 groups of the random-sampling search: 5 fusion probabilities x 3 depth ranges."""
    return tuple(_grid(SEARCH_FUSION_PROBS))


def sample_group(rng: np.random.Generator, group: SamplingGroup, task: str) -> Architecture:
    """Draw one architecture from ``group``."""
    return sample_arch(rng, group.fusion_prob, group.depth_candidates, task)
