"""One generation as a pure function: determinism, resume from the state file, bad inputs."""
import numpy as np
import pytest

from pipeline.cost import profile
from pipeline.config import ConfigError, EvolutionConfig, make_section
from pipeline.search.evolution import (Evaluated, EvolutionError, Generation, initial_rng_state,
                                       next_generation, operators, run_evolution)
from pipeline.search.pareto import hypervolume
from pipeline.search.surrogate import features, fit_ridge
from pipeline.space.sample import largest, sample_arch

TASK = "seg"


def cost(arch):
    return profile(arch, TASK, 8, (64, 64)).gflops


def accuracy(arch):
    # A cheap stand-in with a FLOPs/accuracy trade-off and diminishing returns.
    return float(np.log1p(arch.num_fusions()) + 0.3 * np.log(sum(map(sum, arch.depths()))))


def initial_pool(n=12, seed=0):
    rng = np.random.default_rng(seed)
    archs = [sample_arch(rng, p, d, TASK) for p, d in
             [(0.2, (2, 3)), (0.5, (3, 4)), (0.8, (4, 5))] * (n // 3)]
    return [Evaluated(a, cost(a), accuracy(a)) for a in archs]


def evo(**kw) -> EvolutionConfig:
    """The search.evolution section a parameter file with these values gives."""
    return make_section(EvolutionConfig, kw, source="search.evolution")


CFG = evo(parents=6, population=5)


def test_same_seed_same_children_and_resume(tmp_path):
    pool = initial_pool()
    gens, final = run_evolution(pool, CFG, 2, seed=3, task=TASK, estimate_cost=cost,
                                estimate_accuracy=accuracy)
    gens2, _ = run_evolution(pool, CFG, 2, seed=3, task=TASK, estimate_cost=cost,
                             estimate_accuracy=accuracy)
    ids = [[a.arch_id for a in g.children] for g in gens]
    assert ids == [[a.arch_id for a in g.children] for g in gens2]
    all_ids = [e.arch.arch_id for e in final]
    assert len(set(all_ids)) == len(all_ids) == 12 + 10  # never a duplicate
    # Resume: generation 2 from generation 1's file equals the uninterrupted run.
    gens[0].save(tmp_path / "gen_1.json")
    g1 = Generation.load(tmp_path / "gen_1.json")
    assert g1 == gens[0]
    pool1 = pool + [Evaluated(a, cost(a), accuracy(a)) for a in g1.children]
    g2 = next_generation(pool1, g1.rng_out, CFG, task=TASK, estimate_cost=cost, generation=2)
    assert g2 == gens[1]
    assert run_evolution(pool, CFG, 1, seed=4, task=TASK, estimate_cost=cost,
                         estimate_accuracy=accuracy)[0][0].children != gens[0].children


def test_release_operators_keep_depths_and_last_module():
    pool = initial_pool()
    cfg = evo(**{"parents": 6, "population": 8, "release_operators": True})
    gen = next_generation(pool, initial_rng_state(0), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    parents = {e.arch.arch_id: e.arch for e in pool}
    lasts = {parents[i].modules[-1] for i in gen.parents}
    depth_sets = {m.depths for i in gen.parents for m in parents[i].modules}
    for child in gen.children:
        assert child.modules[-1] in lasts
        assert all(m.depths in depth_sets for m in child.modules)


def test_cost_bounds_respected():
    pool = initial_pool()
    gf = sorted(e.cost for e in pool)
    cfg = evo(parents=6, population=4, cost_max=gf[len(gf) // 2])
    gen = next_generation(pool, initial_rng_state(1), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    assert all(cost(a) <= cfg.cost_max for a in gen.children)


def test_bad_inputs_one_clear_error_each():
    pool = initial_pool(6)
    with pytest.raises(EvolutionError, match=r"parents \(the parent population\) = 7 is larger than the evaluated pool \(6"):
        next_generation(pool, initial_rng_state(0), evo(parents=7, population=2),
                        task=TASK, estimate_cost=cost, generation=1)
    with pytest.raises(EvolutionError, match="cost_max = 0.001 is below the smallest seg subnet"):
        next_generation(pool, initial_rng_state(0),
                        evo(parents=3, population=2, cost_max=0.001),
                        task=TASK, estimate_cost=cost, generation=1)
    with pytest.raises(EvolutionError, match="cost_min = 1000.0 is above the largest"):
        next_generation(pool, initial_rng_state(0),
                        evo(parents=3, population=2, cost_min=1000.0),
                        task=TASK, estimate_cost=cost, generation=1)
    with pytest.raises(ConfigError, match="search.evolution: .*'parens' was unexpected"):
        evo(**{"parens": 3})
    with pytest.raises(ConfigError, match="search.evolution: population: 0 is less than"):
        evo(population=0)
    with pytest.raises(EvolutionError, match=r"cost_min \(2.0\) exceeds evolution.cost_max"):
        next_generation(pool, initial_rng_state(0), evo(parents=3, population=2, cost_min=2.0,
                                                        cost_max=1.0),
                        task=TASK, estimate_cost=cost, generation=1)


def test_evolution_beats_random_in_memory():
    """With a stand-in accuracy, evolution's front dominates more than the same budget of
    random samples from the same groups (sanity check of the operators and selection)."""
    pool = initial_pool(12)
    cfg = evo(parents=8, population=8)
    _, evolved = run_evolution(pool, cfg, 4, seed=0, task=TASK, estimate_cost=cost,
                               estimate_accuracy=accuracy)
    rng = np.random.default_rng(99)
    extra = [sample_arch(rng, p, d, TASK) for p, d in [(0.2, (2, 3)), (0.5, (3, 4)),
                                                        (0.8, (4, 5)), (0.35, (2, 3))] * 8]
    rand = pool + [Evaluated(a, cost(a), accuracy(a)) for a in extra]
    allpts = evolved + rand
    ref = (max(e.cost for e in allpts) * 1.01, min(e.score for e in allpts))
    hv = lambda pts: hypervolume([e.cost for e in pts], [e.score for e in pts], ref)
    assert hv(evolved) > hv(rand) > hv(pool)


def hard_accuracy(arch):
    """A score the surrogate cannot fit exactly: the stand-in accuracy, plus an interaction of
    depth and fusion (nonlinear in the features) and noise seeded by the architecture (the same
    architecture always gets the same score, as a real evaluation on fixed data would)."""
    f = features(arch)
    depth, fusions = f[0::2], f[1::2]
    interaction = 0.2 * float(np.sin(depth @ fusions / 10.0))
    noise = 0.1 * np.random.default_rng(int(arch.arch_id[-12:], 16)).normal()
    return accuracy(arch) + interaction + float(noise)


def _hv_gain(cfg, seed):
    pool = [Evaluated(e.arch, e.cost, hard_accuracy(e.arch)) for e in initial_pool(12, seed)]
    _, evolved = run_evolution(pool, cfg, 2, seed=seed, task=TASK, estimate_cost=cost,
                               estimate_accuracy=hard_accuracy)
    ref = (cost(largest(TASK)), 0.0)
    hv = lambda pts: hypervolume([e.cost for e in pts], [e.score for e in pts], ref)
    return hv(evolved) - hv(pool)


def test_screening_helps_with_a_score_it_cannot_fit():
    """The surrogate only approximates the score (skill, but no exact fit), yet the children it
    keeps add more hypervolume than as many children kept in draw order, over five seeds."""
    r2 = []
    for seed in range(5):
        pool = initial_pool(12, seed)
        X = np.array([features(e.arch) for e in pool])
        r2.append(fit_ridge(X, [hard_accuracy(e.arch) for e in pool]).loo_r2)
    assert 0.3 < min(r2) and max(r2) < 0.98, r2
    screened = [_hv_gain(evo(parents=8, population=4, screen_factor=10), s)
                for s in range(5)]
    plain = [_hv_gain(evo(parents=8, population=4, screen_factor=1), s)
             for s in range(5)]
    assert sum(a > b for a, b in zip(screened, plain)) >= 4, (screened, plain)
    assert np.mean(screened) > 1.5 * np.mean(plain), (screened, plain)


def test_screening_record_round_trips_and_is_deterministic(tmp_path):
    pool = initial_pool()
    cfg = evo(parents=6, population=4, screen_factor=5)
    gen = next_generation(pool, initial_rng_state(7), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    again = next_generation(pool, initial_rng_state(7), cfg, task=TASK, estimate_cost=cost,
                            generation=1)
    assert gen == again
    scr = gen.screening
    assert scr["factor"] == 5 and scr["candidates"] == 20
    assert sorted(scr["predicted"]) == sorted(a.arch_id for a in gen.children)
    assert scr["loo_r2"] > 0.5  # the stand-in accuracy is smooth in the features
    gen.save(tmp_path / "g.json")
    assert Generation.load(tmp_path / "g.json") == gen
    plain = next_generation(pool, initial_rng_state(7), evo(parents=6, population=4,
                            screen_factor=1), task=TASK, estimate_cost=cost, generation=1)
    assert plain.screening is None and "screening" not in plain.to_dict()


def test_release_search_is_unscreened_bit_flip():
    cfg = evo(**{"release_operators": True, "screen_factor": 10})
    ops = operators(cfg)
    assert (ops.mutation, ops.screen_factor, ops.mutate_depth, ops.mutate_last_module) == \
        ("flip", 1, False, False)
    with pytest.raises(ConfigError, match="mutation: 'shuffle' is not one of"):
        evo(mutation="shuffle")
    with pytest.raises(ConfigError, match="screen_factor: 0 is less than the minimum"):
        evo(screen_factor=0)


def test_surrogate_without_skill_is_not_used():
    """Scores unrelated to the architecture: the surrogate is no better than the mean, so the
    children are kept in draw order (not silently ranked by cost)."""
    rng = np.random.default_rng(5)
    pool = [Evaluated(e.arch, e.cost, float(rng.random())) for e in initial_pool(12)]
    cfg = evo(parents=6, population=4, screen_factor=5)
    gen = next_generation(pool, initial_rng_state(2), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    assert gen.screening["skipped"] == "surrogate has no skill" and gen.screening["loo_r2"] <= 0
    assert "predicted" not in gen.screening
    first = next_generation(pool, initial_rng_state(2), evo(parents=6, population=20),
                            task=TASK, estimate_cost=cost, generation=1)
    # Same draws (the unscreened generation of 20 draws the same stream): the first 4 are kept.
    assert gen.children == first.children[:4]
