"""Evolution operators: crossover and mutation of architectures.

Pure functions of (architectures, rng). With ``mutate_last_module=False, mutate_depth=False`` and
the default probabilities they are the release's operators; the defaults add depth mutation and
mutation of the last module (scalenas.md section 6). For pose the last-module rule is re-applied
to every child, so every result passes ``check_task``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .arch import Architecture, ArchitectureError, ModuleArch, check_task
from .sample import check_depth_candidates, check_prob, check_task_name, finish_arch, to_module


def crossover(parents: Sequence[Architecture], rng: np.random.Generator,
              module_prob: float = 0.25, *, task: str) -> Architecture:
    """Start from ``parents[0]``; replace each module by a random parent's with ``module_prob``.

    One uniform and one parent index are drawn per module whatever the outcome, so the random
    stream does not depend on the parents' content.
    """
    check_task_name(task)
    p = check_prob(module_prob, "module_prob")
    if not parents:
        raise ArchitectureError("crossover needs at least one parent")
    for i, a in enumerate(parents):
        if not isinstance(a, Architecture):
            raise ArchitectureError(f"crossover: parent {i} is not an Architecture ({type(a).__name__})")
    modules = list(parents[0].modules)
    for mi in range(len(modules)):
        u, pick = rng.random(), int(rng.integers(0, len(parents)))
        if u < p:
            modules[mi] = parents[pick].modules[mi]
    return finish_arch(modules, task)


def crossover_pair(base: Architecture, partner: Architecture, rng: np.random.Generator,
                   module_prob: float = 0.25, *, task: str,
                   cross_last_module: bool = False) -> Architecture:
    """The release's crossover: start from ``base``; replace each module by ``partner``'s with
    ``module_prob``. The last module is never crossed unless ``cross_last_module``.

    One uniform is drawn per module that may be crossed, whatever the outcome.
    """
    check_task_name(task)
    p = check_prob(module_prob, "module_prob")
    for name, a in (("base", base), ("partner", partner)):
        if not isinstance(a, Architecture):
            raise ArchitectureError(f"crossover: {name} is not an Architecture ({type(a).__name__})")
    modules = list(base.modules)
    crossed = len(modules) if cross_last_module else len(modules) - 1
    for mi in range(crossed):
        if rng.random() < p:
            modules[mi] = partner.modules[mi]
    return finish_arch(modules, task)


MUTATION_MODES = ("resample", "flip")


def _depth_choices(depth: int, cands: tuple[int, ...], mode: str) -> list[int]:
    """Depths a mutated branch may take: any other candidate ("flip"), or the nearest candidate
    below and above ("resample"; ``cands`` is sorted)."""
    if mode == "flip":
        return [d for d in cands if d != depth]
    below = [d for d in cands if d < depth]
    above = [d for d in cands if d > depth]
    return below[-1:] + above[:1]


def _mutate_module(m: ModuleArch, rng: np.random.Generator, fusion_prob: float,
                   depth_prob: float, cands: tuple[int, ...], mutate_depth: bool,
                   mode: str) -> ModuleArch:
    """Mutate live bits, then (optionally) change depths; bits at steps >= a target's depth
    vanish."""
    n, old_depths = m.num_branches, m.depths
    bits = [[{k for k in m.fusions[s][j] if s < old_depths[j]} for j in range(n)]
            for s in range(m.steps)]
    live = sum(n - 1 for s in range(m.steps) for j in range(n) if s < old_depths[j])
    on = sum(len(b) for step in bits for b in step)
    # Laplace-smoothed so that a module with no (or all) fusions can still gain (or lose) one.
    density = (on + 1) / (live + 2)
    u = rng.random((m.steps, n, n))
    v = rng.random((m.steps, n, n)) if mode == "resample" else None
    for s in range(m.steps):
        for j in range(n):
            if s >= old_depths[j]:
                continue
            for k in range(n):
                if k == j or u[s, j, k] >= fusion_prob:
                    continue
                if mode == "flip":
                    bits[s][j] ^= {k}
                elif v[s, j, k] < density:
                    bits[s][j] |= {k}
                else:
                    bits[s][j] -= {k}
    depths = list(old_depths)
    if mutate_depth:
        for b in range(n):
            u_b, pick = rng.random(), rng.random()
            others = _depth_choices(depths[b], cands, mode)
            if u_b < depth_prob and others:
                depths[b] = others[int(pick * len(others))]
    T = max(depths)
    bits = (bits + [[set() for _ in range(n)] for _ in range(T - len(bits))])[:T]
    # Steps a branch gains are filled as the sampler would fill them (at the module's own
    # density when resampling).
    new_prob = fusion_prob if mode == "flip" else density
    fresh = rng.random((T, n, n))
    for j in range(n):
        for s in range(T):
            if s >= depths[j]:
                bits[s][j] = set()
            elif s >= old_depths[j]:
                bits[s][j] = {k for k in range(n) if k != j and fresh[s, j, k] < new_prob}
    return to_module(depths, bits)


def mutate(arch: Architecture, rng: np.random.Generator, fusion_prob: float = 0.2,
           depth_prob: float = 0.1, depth_candidates: Sequence[int] = (2, 3, 4, 5), *,
           task: str, mutate_last_module: bool = True, mutate_depth: bool = True,
           mode: str = "flip") -> Architecture:
    """Mutate ``arch``: touch each live fusion bit with ``fusion_prob``, each depth with
    ``depth_prob``.

    A live bit is one at a step below its target's depth. ``mode``:

    - ``"flip"`` (the release's operator): a touched bit is flipped; a changed depth is another
      candidate chosen uniformly; a branch that grows gets bits with ``fusion_prob`` for its new
      steps. Flipping drifts every module toward half its bits on, so the children of a sparse,
      cheap parent are on average denser and costlier than the parent.
    - ``"resample"``: a touched bit is redrawn on with the module's own fusion density
      (Laplace-smoothed, so slightly pulled toward 1/2), so a child keeps about its parent's
      density; a changed depth moves to the nearest candidate below or above; new steps get bits
      at the module's density. Children stay near their parent in cost, which is what a search
      along a FLOPs/accuracy front needs.

    A branch that shrinks loses the bits of the steps it no longer runs. In every module that may
    be mutated, bits at steps >= the target's depth are dropped (the sampler never makes them).
    ``mutate_last_module=False, mutate_depth=False`` with ``mode="flip"`` are the release's
    operators: depths and the last module are then left exactly as they were.
    """
    check_task_name(task)
    fp = check_prob(fusion_prob, "fusion_prob")
    dp = check_prob(depth_prob, "depth_prob")
    cands = check_depth_candidates(depth_candidates)
    if not isinstance(arch, Architecture):
        raise ArchitectureError(f"mutate: expected an Architecture, got {type(arch).__name__}")
    if mode not in MUTATION_MODES:
        raise ArchitectureError(f"mutate: mode must be one of {list(MUTATION_MODES)}, got {mode!r}")
    check_task(arch, task)
    last = len(arch.modules) - 1
    modules = [m if (mi == last and not mutate_last_module)
               else _mutate_module(m, rng, fp, dp, cands, mutate_depth, mode)
               for mi, m in enumerate(arch.modules)]
    return finish_arch(modules, task)
