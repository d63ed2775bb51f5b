"""The ridge surrogate and the greedy hypervolume-gain choice behind the evolution's screening."""
import numpy as np
import pytest

from pipeline.search.pareto import hypervolume
from pipeline.search.surrogate import features, fit_ridge, select_by_predicted_gain
from pipeline.space.arch import BRANCHES
from pipeline.space.sample import sample_arch, smallest


def test_features_are_depth_and_incoming_fusions_per_branch():
    a = smallest("seg")
    f = features(a)
    assert f.shape == (2 * sum(BRANCHES),)
    assert (f[0::2] == 2).all() and (f[1::2] == 0).all()
    b = sample_arch(np.random.default_rng(0), 0.5, (2, 3, 4), "seg")
    fb = features(b)
    assert fb[1::2].sum() == b.num_fusions()
    assert list(fb[0::2]) == [d for m in b.modules for d in m.depths]


def test_ridge_recovers_a_linear_score_and_reports_no_skill_on_noise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])
    y = X @ w + 0.7
    model = fit_ridge(X, y)
    assert model.loo_r2 > 0.99 and model.lam <= 0.1
    Xt = rng.normal(size=(10, 6))
    np.testing.assert_allclose(model.predict(Xt), Xt @ w + 0.7, atol=0.05)
    noise = fit_ridge(X, rng.normal(size=40))
    assert noise.loo_r2 < 0.1 and noise.lam >= 100
    const = fit_ridge(np.ones((5, 3)), [1.0, 2.0, 3.0, 4.0, 5.0])  # constant features stay finite
    assert np.isfinite(const.predict(np.ones((1, 3)))).all()
    with pytest.raises(ValueError, match="at least 3 rows"):
        fit_ridge(X[:2], y[:2])


def test_greedy_choice_extends_the_front_and_spreads_out():
    pool_c, pool_s = [1.0, 2.0, 3.0], [0.2, 0.5, 0.6]
    ref = (4.0, 0.0)
    # 0: dominated; 1 and 2: the same spot, above the front; 3: cheaper than anything.
    cand_c = [2.5, 1.5, 1.5, 0.5]
    cand_p = [0.3, 0.6, 0.6, 0.3]
    picks = select_by_predicted_gain(cand_c, cand_p, pool_c, pool_s, 2, ref)
    assert picks[0] == 1  # the largest gain; 2 ties with it but comes later
    assert picks[1] == 3  # 2 would now add nothing: the next pick goes elsewhere
    hv = lambda c, s: hypervolume(c, s, ref)
    base = hv(pool_c, pool_s)
    gains = [hv(pool_c + [c], pool_s + [p]) - base for c, p in zip(cand_c, cand_p)]
    assert gains[1] == max(gains)
    # With nothing to gain, the candidate predicted closest to the front comes first.
    assert select_by_predicted_gain([2.5, 2.5], [0.1, 0.4], pool_c, pool_s, 1, ref) == [1]
    with pytest.raises(ValueError, match="asked for 3 of 2"):
        select_by_predicted_gain([1, 2], [0.1, 0.2], pool_c, pool_s, 3, ref)


def test_equal_scores_have_nothing_to_learn():
    X = np.random.default_rng(1).normal(size=(12, 52))
    for v in (0.1, 0.3, 0.5):
        assert fit_ridge(X, [v] * 12).loo_r2 == 0.0


def test_children_beyond_the_reference_cost_come_last():
    # Neither candidate adds hypervolume; the one past the reference cost can never count.
    picks = select_by_predicted_gain([5.0, 2.5], [0.9, 0.1], [1.0, 2.0], [0.2, 0.5], 2, (4.0, 0.0))
    assert picks == [1, 0]
