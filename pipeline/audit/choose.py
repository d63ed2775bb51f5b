"""Which architectures the audit trains stand-alone.

*Ranked* architectures (``K`` of them): the smallest and largest subnets, the HRNet reference and
every fine-tune pick, then pool members (everything the search evaluated) chosen nearest to
costs spread evenly over the pool's cost span, so the ranking sees the whole range and not the
cluster where most candidates lie.

*Comparison* networks, at each fine-tune pick's budget: a random architecture of the search's
sampling grid with the cost nearest the pick's, and the uniform HRNet-like architecture nearest in
cost (every branch one depth; full fusion after the last step, as HRNet, or after every step).
They answer "does the searched pick beat what a random draw or a hand design of its cost gives?".

All functions are pure and seeded; costs come from the caller's ``cost_fn`` (GFLOPs at the run's
cost input), so they are exact and cheap.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.search.candidates import stream_rng
from pipeline.space.arch import Architecture
from pipeline.space.sample import (SamplingGroup, _uniform, hrnet, largest, sample_group,
                                   smallest)

#: Sub-stream of the run seed from which the random comparison architectures are drawn.
STREAM_AUDIT = 7
#: Random draws per budget; the nearest in cost is kept.
RANDOM_DRAWS = 400
#: Depths of the uniform family (the search space's depth range).
UNIFORM_DEPTHS: tuple[int, ...] = (2, 3, 4, 5)


class AuditError(InputError):
    """The audit cannot be set up as asked (one line naming the key or file)."""


@dataclass(frozen=True)
class Slot:
    """One network the audit trains (with every seed): ``name`` is its job's wildcard."""

    name: str
    role: str              # smallest | largest | hrnet | pick | pool | random | uniform
    arch: Architecture
    gflops: float
    params: int
    inherited: float | None = None   # search-split score with the supernet's weights
    label: str = ""                  # pick name, pool row, comparison's budget
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.name, "role": self.role, "label": self.label,
                "arch_id": self.arch.arch_id, "gflops": self.gflops, "params": self.params,
                "inherited": self.inherited, **dict(self.extra)}


def ranked_slot(i: int) -> str:
    """Wildcard name of the i-th ranked architecture."""
    return f"a{i:02d}"


def comparison_slots(models: Sequence[str]) -> list[str]:
    """Wildcard names of the comparison networks of fine-tune models ``models``."""
    return [f"{m}.{kind}" for m in models for kind in ("random", "uniform")]


def pool_size_bound(cells: int, samples_per_cell: int, generations: int, population: int) -> int:
    """How many candidates a search with these parameters evaluates (sampling + evolution)."""
    return cells * samples_per_cell + generations * population


def check_k(k: int, pool: int, where: str) -> None:
    """K must not exceed the evaluated pool (one line naming the key)."""
    if k > pool:
        raise AuditError(f"{where}: archs {k} is larger than the pool the search evaluated "
                         f"({pool} candidates)")


def spread_by_cost(costs: Sequence[float], n: int, exclude: Sequence[int] = ()) -> list[int]:
    """Indices of ``n`` entries nearest to ``n`` costs evenly spread over the span of ``costs``
    (targets at the centres of n equal bins), each index once; ties go to the lower index."""
    c = np.asarray(costs, dtype=float)
    free = [i for i in range(len(c)) if i not in set(exclude)]
    if n > len(free):
        raise AuditError(f"cannot choose {n} more architectures from {len(free)} left in the pool")
    if n <= 0:
        return []
    lo, hi = float(c.min()), float(c.max())
    out: list[int] = []
    for t in (lo + (k + 0.5) / n * (hi - lo) for k in range(n)):
        best = min((i for i in free if i not in out), key=lambda i: (abs(c[i] - t), i))
        out.append(best)
    return out


def choose_ranked(task: str, pool: pd.DataFrame, k: int, picks: Mapping[str, Architecture],
                  cost_fn: Callable[[Architecture], Any]) -> list[Slot]:
    """The K ranked architectures: mandatory ones first (smallest, largest, HRNet, each pick, in
    that order, each arch once), then pool members spread over the pool's cost span.

    ``pool`` is the search's ``all.csv`` (arch_id, gflops, params, score, arch); a mandatory
    architecture that is in it takes its inherited score from there (else ``inherited`` is None
    and the caller evaluates it)."""
    if len(pool) == 0:
        raise AuditError("the search evaluated no candidates")
    by_id = {aid: i for i, aid in enumerate(pool["arch_id"])}
    mandatory: list[tuple[str, str, Architecture]] = [
        ("smallest", "smallest", smallest(task)), ("largest", "largest", largest(task)),
        ("hrnet", "HRNet", hrnet(task))]
    mandatory += [("pick", name, arch) for name, arch in picks.items()]
    seen: dict[str, int] = {}
    chosen: list[tuple[str, str, Architecture]] = []
    for role, label, arch in mandatory:
        if arch.arch_id in seen:  # e.g. both picks the same front member: one network, two labels
            j = seen[arch.arch_id]
            r, lab, a = chosen[j]
            chosen[j] = (r, f"{lab}+{label}", a)
            continue
        seen[arch.arch_id] = len(chosen)
        chosen.append((role, label, arch))
    if len(chosen) > k:
        raise AuditError(f"archs {k} is fewer than the {len(chosen)} architectures every audit "
                         "trains (smallest, largest, HRNet and each fine-tune pick)")
    in_pool = [by_id[a.arch_id] for _, _, a in chosen if a.arch_id in by_id]
    extra = spread_by_cost(pool["gflops"].tolist(), k - len(chosen), exclude=in_pool)
    for i in extra:
        row = pool.iloc[i]
        chosen.append(("pool", f"{row['stage']} g{int(row['generation'])} #{int(row['index'])}",
                       Architecture.from_json(row["arch"], source=f"all.csv row {row['arch_id']}")))
    slots = []
    for n, (role, label, arch) in enumerate(chosen):
        cost = cost_fn(arch)
        inherited = (float(pool["score"].iloc[by_id[arch.arch_id]])
                     if arch.arch_id in by_id else None)
        slots.append(Slot(ranked_slot(n), role, arch, float(cost.gflops), int(cost.params),
                          inherited, label))
    return slots


def uniform_family(task: str) -> list[Architecture]:
    """Uniform HRNet-like architectures: every branch at one depth, fusing everything into
    everything after the last step (as HRNet) or after every step."""
    out, seen = [], set()
    for d in UNIFORM_DEPTHS:
        for steps in ((d - 1,), tuple(range(d))):
            a = _uniform(d, task, steps)
            if a.arch_id not in seen:
                seen.add(a.arch_id)
                out.append(a)
    return out


def nearest_uniform(task: str, gflops: float, cost_fn: Callable[[Architecture], Any],
                    exclude: Sequence[str] = ()) -> Architecture:
    """The uniform architecture nearest in GFLOPs to ``gflops`` (not one of ``exclude``)."""
    fam = [a for a in uniform_family(task) if a.arch_id not in set(exclude)]
    return min(fam, key=lambda a: (abs(cost_fn(a).gflops - gflops), a.arch_id))


def random_at_cost(task: str, gflops: float, groups: Sequence[SamplingGroup], seed: int,
                   index: int, cost_fn: Callable[[Architecture], Any],
                   exclude: Sequence[str] = (), draws: int = RANDOM_DRAWS) -> Architecture:
    """A random architecture of the search's sampling grid (a uniformly drawn cell per draw) with
    the cost nearest ``gflops``, out of ``draws`` seeded draws (stream ``STREAM_AUDIT``, ``index``
    the budget's position)."""
    if not groups:
        raise AuditError("no sampling groups to draw random architectures from")
    rng = stream_rng(seed, STREAM_AUDIT, index)
    best: tuple[float, str, Architecture] | None = None
    for _ in range(draws):
        arch = sample_group(rng, groups[int(rng.integers(0, len(groups)))], task)
        if arch.arch_id in set(exclude):
            continue
        key = (abs(cost_fn(arch).gflops - gflops), arch.arch_id, arch)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        raise AuditError(f"no random architecture outside the excluded ones in {draws} draws")
    return best[2]


def comparisons(task: str, picks: Mapping[str, Slot], groups: Sequence[SamplingGroup],
                seed: int, cost_fn: Callable[[Architecture], Any]) -> list[Slot]:
    """Per fine-tune pick (in order): a random and a uniform architecture nearest its cost."""
    out: list[Slot] = []
    for i, (name, pick) in enumerate(picks.items()):
        rnd = random_at_cost(task, pick.gflops, groups, seed, i, cost_fn,
                             exclude=[pick.arch.arch_id])
        uni = nearest_uniform(task, pick.gflops, cost_fn, exclude=[pick.arch.arch_id])
        for kind, arch in (("random", rnd), ("uniform", uni)):
            c = cost_fn(arch)
            out.append(Slot(f"{name}.{kind}", kind, arch, float(c.gflops), int(c.params), None,
                            name, {"pick_slot": pick.name, "pick_gflops": pick.gflops}))
    return out


def same_networks(slots: Sequence[Slot]) -> list[Slot]:
    """Marks a slot whose architecture an earlier slot already trains (``same_as``): the uniform
    network nearest two picks' costs, or HRNet itself, is one network, trained once per seed."""
    first: dict[str, str] = {}
    out = []
    for s in slots:
        if s.arch.arch_id in first:
            s = dataclasses.replace(s, extra={**dict(s.extra), "same_as": first[s.arch.arch_id]})
        else:
            first[s.arch.arch_id] = s.name
        out.append(s)
    return out


__all__ = ["AuditError", "Slot", "ranked_slot", "comparison_slots", "pool_size_bound", "check_k",
           "spread_by_cost", "choose_ranked", "uniform_family", "nearest_uniform",
           "random_at_cost", "comparisons", "same_networks"]
