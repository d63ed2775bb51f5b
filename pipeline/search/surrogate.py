"""Accuracy surrogate and child screening for the evolution.

Why: an evaluation (calibrate + evaluate on the search split) costs seconds to hours, while the
score of a subnet is close to linear in a handful of architecture features: per-branch depth and
the number of fusions a branch receives (the search summary reports, per generation, how well
the predictions matched the measured scores). So each generation draws ``screen_factor`` times
as many children as it evaluates, predicts their scores with a ridge model fitted to everything
evaluated so far, and evaluates the ``population`` children whose predicted points add the most
hypervolume to the front (GFLOPs are exact, from the cost model).

Pure numpy and deterministic: the same pool and candidates always give the same choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.space.arch import Architecture

from .pareto import hypervolume, pareto_front

#: Ridge strengths tried; the one with the lowest leave-one-out error is kept.
LAMBDAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def features(arch: Architecture) -> np.ndarray:
    """Per module and branch: the depth and the number of fusions the branch receives."""
    f: list[float] = []
    for m in arch.modules:
        for j in range(m.num_branches):
            f.append(float(m.depths[j]))
            f.append(float(sum(len(m.fusions[s][j]) for s in range(m.steps))))
    return np.asarray(f, dtype=np.float64)


@dataclass(frozen=True)
class Ridge:
    """A fitted ridge model on standardised features (the intercept is not penalised)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    lam: float
    #: Leave-one-out R^2 of the kept strength (how far its predictions can be trusted).
    loo_r2: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self._design(X) @ self.weights

    def _design(self, X: np.ndarray) -> np.ndarray:
        return np.c_[np.ones(len(X)), (X - self.mean) / self.scale]


def fit_ridge(X: np.ndarray, y: Sequence[float], lambdas: Sequence[float] = LAMBDAS) -> Ridge:
    """Ridge regression with the strength chosen by closed-form leave-one-out error.

    The leave-one-out residuals are exact for the standardisation fitted on all rows. A pool
    whose scores are all equal gets R^2 = 0 (nothing to learn).
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    if len(X) != len(y) or len(y) < 3:
        raise ValueError(f"fit_ridge needs at least 3 rows and one score per row, "
                         f"got {X.shape} and {y.shape}")
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature carries nothing; keep it finite
    Z = np.c_[np.ones(len(X)), (X - mean) / scale]
    # Rounding leaves a tiny non-zero variance for equal scores; R^2 against it is meaningless.
    constant = float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.abs(y).max()))
    var = 0.0 if constant else float(((y - y.mean()) ** 2).mean())
    best: tuple[float, float, np.ndarray] | None = None
    for lam in lambdas:
        pen = np.eye(Z.shape[1]) * lam
        pen[0, 0] = 0.0
        A = Z.T @ Z + pen
        w = np.linalg.solve(A, Z.T @ y)
        h = np.einsum("ij,ji->i", Z, np.linalg.solve(A, Z.T))
        loo = (y - Z @ w) / np.maximum(1.0 - h, 1e-9)
        err = float((loo ** 2).mean())
        if best is None or err < best[0]:
            best = (err, float(lam), w)
    err, lam, w = best
    return Ridge(mean, scale, w, lam, 1.0 - err / var if var > 0 else 0.0)


def select_by_predicted_gain(cand_cost: Sequence[float], cand_pred: Sequence[float],
                             pool_cost: Sequence[float], pool_score: Sequence[float], k: int,
                             reference: tuple[float, float]) -> list[int]:
    """Greedily pick ``k`` candidate indices by predicted hypervolume gain.

    Each pick joins the front with its predicted score, so later picks go where the front is
    still thin. A candidate with no predicted gain ranks by how close its prediction comes to the
    front at its cost; ties go to the lower index (the draw order), so the choice is
    deterministic.
    """
    cc = np.asarray(cand_cost, dtype=np.float64)
    cp = np.asarray(cand_pred, dtype=np.float64)
    if k > len(cc):
        raise ValueError(f"asked for {k} of {len(cc)} candidates")
    front = pareto_front(pool_cost, pool_score)
    fc = [float(pool_cost[i]) for i in front]
    fs = [float(pool_score[i]) for i in front]
    left = list(range(len(cc)))
    chosen: list[int] = []
    for _ in range(k):
        base = hypervolume(fc, fs, reference) if fc else 0.0
        fc_arr = np.asarray(fc, dtype=np.float64)
        best_key, best_i = None, -1
        for i in left:
            # The front is sorted by cost with rising scores: its best score at or below this
            # cost is the last entry not costlier.
            j = int(np.searchsorted(fc_arr, cc[i], side="right")) - 1
            best_below = fs[j] if j >= 0 else reference[1]
            dominated = j >= 0 and (best_below > cp[i] or (best_below == cp[i] and fc[j] < cc[i]))
            outside = cc[i] >= reference[0] or cp[i] <= reference[1]
            # A dominated or out-of-box point leaves the front as it is: its gain is exactly 0,
            # no need to recompute the hypervolume (the hot loop: k x candidates).
            gain = (0.0 if dominated or outside
                    else hypervolume(fc + [cc[i]], fs + [cp[i]], reference) - base)
            # Beyond the reference cost a child can never count, however good its score.
            gap = -np.inf if cc[i] >= reference[0] else cp[i] - best_below
            key = (gain, gap)
            if best_key is None or key > best_key:
                best_key, best_i = key, i
        chosen.append(best_i)
        left.remove(best_i)
        fc.append(float(cc[best_i]))
        fs.append(float(cp[best_i]))
        keep = pareto_front(fc, fs)
        fc, fs = [fc[i] for i in keep], [fs[i] for i in keep]
    return chosen
