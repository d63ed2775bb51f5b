"""Two-objective Pareto tools: minimise cost (GFLOPs), maximise accuracy (score).

Pure numpy; every function takes the two objective vectors explicitly, so the efficiency estimate
(analytic FLOPs) and the accuracy estimate (a measured metric) can come from anywhere.

Ties are broken by a caller-supplied key (the architecture id) wherever an order matters, so the
same inputs always give the same selection, whatever order the rows arrived in.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_arrays(cost: Sequence[float], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(cost, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if c.shape != s.shape or c.ndim != 1:
        raise ValueError(f"cost and score must be 1-D and of equal length, got {c.shape} and {s.shape}")
    if not (np.isfinite(c).all() and np.isfinite(s).all()):
        raise ValueError("cost and score must be finite")
    return c, s


def non_dominated_sort(cost: Sequence[float], score: Sequence[float]) -> list[np.ndarray]:
    """Split indices into successive Pareto layers (layer 0 = the front), each sorted by index.

    O(n^2) dominance counting (Deb et al., NSGA-II); n is at most a few thousand here.
    """
    c, s = _as_arrays(cost, score)
    n = len(c)
    if n == 0:
        return []
    # dom[i, j]: i dominates j.
    le_c = c[:, None] <= c[None, :]
    ge_s = s[:, None] >= s[None, :]
    strict = (c[:, None] < c[None, :]) | (s[:, None] > s[None, :])
    dom = le_c & ge_s & strict
    counts = dom.sum(axis=0)  # how many dominate j
    layers: list[np.ndarray] = []
    remaining = np.ones(n, dtype=bool)
    current = np.flatnonzero(counts == 0)
    while current.size:
        layers.append(np.sort(current))
        remaining[current] = False
        counts = counts - dom[current].sum(axis=0)
        current = np.flatnonzero(remaining & (counts == 0))
    return layers


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated points, ordered by increasing cost (then decreasing score)."""
    c, s = _as_arrays(cost, score)
    if len(c) == 0:
        return np.zeros(0, dtype=np.int64)
    front = non_dominated_sort(c, s)[0]
    order = np.lexsort((-s[front], c[front]))
    return front[order]


def crowding_distance(cost: Sequence[float], score: Sequence[float],
                      layer: Sequence[int]) -> np.ndarray:
    """NSGA-II crowding distance of each index in ``layer`` (same order); boundary points get inf.

    Each objective's gap is normalised by that objective's range within the layer.
    """
    c, s = _as_arrays(cost, score)
    idx = np.asarray(layer, dtype=np.int64)
    m = len(idx)
    dist = np.zeros(m, dtype=np.float64)
    if m <= 2:
        dist[:] = np.inf
        return dist
    for obj in (c[idx], s[idx]):
        order = np.argsort(obj, kind="stable")
        vals = obj[order]
        span = vals[-1] - vals[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (vals[2:] - vals[:-2]) / span
    return dist


def select_by_rank(cost: Sequence[float], score: Sequence[float], n: int,
                   tie_key: Sequence[str], fill: str = "crowding") -> np.ndarray:
    """Pick ``n`` indices from successive Pareto layers; the layer that overflows is cut by
    decreasing crowding distance (``fill="crowding"``, NSGA-II) or by increasing cost
    (``fill="cheapest"``, the release's rule); ties by ``tie_key`` (e.g. the architecture id).

    Raises ``ValueError`` when ``n`` exceeds the number of points.
    """
    if fill not in ("crowding", "cheapest"):
        raise ValueError(f"fill must be 'crowding' or 'cheapest', got {fill!r}")
    c, s = _as_arrays(cost, score)
    keys = list(tie_key)
    if len(keys) != len(c):
        raise ValueError("tie_key must have one entry per point")
    if n > len(c):
        raise ValueError(f"cannot select {n} points from {len(c)}")
    chosen: list[int] = []
    for layer in non_dominated_sort(c, s):
        if len(chosen) + len(layer) <= n:
            chosen.extend(sorted(layer.tolist(), key=lambda i: keys[i]))
            continue
        if fill == "cheapest":
            ranked = sorted(range(len(layer)), key=lambda k: (c[layer[k]], keys[layer[k]]))
        else:
            cd = crowding_distance(c, s, layer)
            ranked = sorted(range(len(layer)), key=lambda k: (-cd[k], keys[layer[k]]))
        chosen.extend(int(layer[k]) for k in ranked[:n - len(chosen)])
        break
    return np.asarray(chosen, dtype=np.int64)


def hypervolume(cost: Sequence[float], score: Sequence[float],
                reference: tuple[float, float]) -> float:
    """Area dominated by the points and bounded by ``reference = (max_cost, min_score)``.

    Points that do not strictly improve on the reference in both objectives contribute nothing.
    """
    c, s = _as_arrays(cost, score)
    ref_c, ref_s = float(reference[0]), float(reference[1])
    keep = (c < ref_c) & (s > ref_s)
    c, s = c[keep], s[keep]
    if len(c) == 0:
        return 0.0
    front = pareto_front(c, s)
    fc, fs = c[front], s[front]  # cost increasing, score increasing
    right = np.append(fc[1:], ref_c)
    return float(np.sum((right - fc) * (fs - ref_s)))
