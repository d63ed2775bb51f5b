"""Statistics of the ranking audit, on plain sequences (no scipy: numpy only).

Every function is deterministic (the bootstrap takes a seed) and returns plain floats, ``nan``
where a statistic is undefined (fewer than two points, a constant sequence): a JSON writer turns
those into ``null``.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Callable, Mapping, Sequence

import numpy as np

Stat = Callable[[np.ndarray, np.ndarray], float]


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two sequences of one length, got {a.shape} and {b.shape}")
    return a, b


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either sequence count as neither concordant nor discordant,
    and the denominator is corrected for them, as scipy.stats.kendalltau's default)."""
    a, b = _pair(x, y)
    n = len(a)
    if n < 2:
        return math.nan
    i, j = np.triu_indices(n, k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    s = float(np.sum(da * db))
    n0 = len(i)
    n1, n2 = float(np.sum(da == 0)), float(np.sum(db == 0))
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    return s / denom if denom > 0 else math.nan


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a), dtype=float)
    sorted_a = a[order]
    start = 0
    while start < len(a):
        end = start
        while end + 1 < len(a) and sorted_a[end + 1] == sorted_a[start]:
            end += 1
        r[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return r


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks."""
    a, b = _pair(x, y)
    if len(a) < 2:
        return math.nan
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(np.sum(ra * ra) * np.sum(rb * rb)))
    return float(np.sum(ra * rb)) / denom if denom > 0 else math.nan


def bootstrap_interval(x: Sequence[float], y: Sequence[float], stat: Stat, *,
                       resamples: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(x, y)`` over pairs drawn with replacement.

    Resamples on which the statistic is undefined (e.g. every pair the same point) are dropped;
    with fewer than 3 pairs or no defined resample the interval is ``(nan, nan)``."""
    a, b = _pair(x, y)
    if len(a) < 3:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(resamples)):
        idx = rng.integers(0, len(a), size=len(a))
        v = stat(a[idx], b[idx])
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return math.nan, math.nan
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def correlation(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000,
                level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Kendall's tau and Spearman's rho of ``x`` against ``y``, each with its bootstrap interval."""
    t_lo, t_hi = bootstrap_interval(x, y, kendall_tau, resamples=resamples, level=level, seed=seed)
    r_lo, r_hi = bootstrap_interval(x, y, spearman_rho, resamples=resamples, level=level,
                                    seed=seed)
    return {"tau": kendall_tau(x, y), "tau_lo": t_lo, "tau_hi": t_hi,
            "rho": spearman_rho(x, y), "rho_lo": r_lo, "rho_hi": r_hi, "n": float(len(x))}


def top_k_overlap(pred: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Fraction of the ``k`` best by ``truth`` that are also among the ``k`` best by ``pred``
    (higher is better; ties broken by position, so the result is deterministic)."""
    a, b = _pair(pred, truth)
    if not 1 <= k <= len(a):
        raise ValueError(f"k must be in 1..{len(a)}, got {k}")
    top_a = set(np.argsort(-a, kind="mergesort")[:k].tolist())
    top_b = set(np.argsort(-b, kind="mergesort")[:k].tolist())
    return len(top_a & top_b) / k


def repeatability(scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Is one training a measurement of its architecture? Per architecture, the scores of its
    seeds.

    - ``within_sd``: pooled standard deviation between seeds of one architecture (sqrt of the
      mean of the per-architecture variances, ddof 1; architectures with one seed are left out);
    - ``between_sd``: standard deviation of the architectures' mean scores (ddof 1);
    - ``seed_pair_diff``: mean |difference| between two seeds of one architecture;
    - ``arch_pair_diff``: mean |difference| between the mean scores of two architectures;
    - ``ratio``: ``between_sd / within_sd``; the protocol separates architectures when it is
      well above 1 (``repeatable``: 1.0 when ``seed_pair_diff < arch_pair_diff``, else 0.0).
    """
    multi = {k: np.asarray(v, dtype=float) for k, v in scores.items() if len(v) >= 2}
    means = np.asarray([float(np.mean(v)) for v in scores.values() if len(v)], dtype=float)
    within = (math.sqrt(float(np.mean([np.var(v, ddof=1) for v in multi.values()])))
              if multi else math.nan)
    between = float(np.std(means, ddof=1)) if len(means) >= 2 else math.nan
    seed_diffs = [abs(a - b) for v in multi.values() for a, b in combinations(v.tolist(), 2)]
    arch_diffs = [abs(a - b) for a, b in combinations(means.tolist(), 2)]
    seed_pair = float(np.mean(seed_diffs)) if seed_diffs else math.nan
    arch_pair = float(np.mean(arch_diffs)) if arch_diffs else math.nan
    ratio = between / within if within and not math.isnan(within) and within > 0 else math.nan
    repeatable = (math.nan if math.isnan(seed_pair) or math.isnan(arch_pair)
                  else float(seed_pair < arch_pair))
    return {"within_sd": within, "between_sd": between, "seed_pair_diff": seed_pair,
            "arch_pair_diff": arch_pair, "ratio": ratio, "repeatable": repeatable,
            "archs_with_seeds": float(len(multi))}


def margin(pick: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    """The searched pick against another network, seed by seed (the same seeds, in order):
    mean margin, its standard error, the smallest margin and the share of seeds the pick wins."""
    a, b = _pair(pick, other)
    if len(a) == 0:
        return {"mean": math.nan, "se": math.nan, "min": math.nan, "wins": math.nan, "seeds": 0.0}
    d = a - b
    se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) >= 2 else math.nan
    return {"mean": float(np.mean(d)), "se": se, "min": float(np.min(d)),
            "wins": float(np.mean(d > 0)), "seeds": float(len(d))}
