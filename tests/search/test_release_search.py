"""The release's search (``release_operators: true``), each rule against a hand-worked example:
cheapest-first fill of the overflowing Pareto layer, each parent once as a crossover base, one
random other parent as partner, the last module never crossed over nor mutated."""
import numpy as np
import pytest

from pipeline.cost import profile
from pipeline.config import EvolutionConfig, make_section
from pipeline.search.evolution import (Evaluated, EvolutionError, initial_rng_state,
                                       next_generation, operators, select_parents)
from pipeline.search.pareto import select_by_rank
from pipeline.space.ops import crossover_pair
from pipeline.space.sample import largest, sample_arch, smallest

TASK = "seg"


def cost(arch):
    return profile(arch, TASK, 8, (64, 64)).gflops


def test_overflowing_layer_filled_cheapest_first():
    # Front: (1, .1) (2, .2) (3, .3) (4, .4); (2.5, .1) is dominated by (2, .2): second layer.
    cost_, score = [4, 1, 3, 2, 2.5], [0.4, 0.1, 0.3, 0.2, 0.1]
    keys = ["a", "b", "c", "d", "e"]
    # Two of the four front points: the two cheapest (1 and 2), not the crowding boundaries
    # (1 and 4) that NSGA-II keeps.
    assert select_by_rank(cost_, score, 2, keys, fill="cheapest").tolist() == [1, 3]
    assert sorted(select_by_rank(cost_, score, 2, keys).tolist()) == [0, 1]
    # Five: the whole front (by key), then the second layer.
    assert select_by_rank(cost_, score, 5, keys, fill="cheapest").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="fill"):
        select_by_rank(cost_, score, 2, keys, fill="dearest")


def test_release_parents_are_the_cheapest_of_the_overflowing_layer():
    archs = [sample_arch(np.random.default_rng(i), 0.5, (2, 3), TASK) for i in range(4)]
    pool = [Evaluated(a, g, s) for a, g, s in zip(archs, [4.0, 1.0, 3.0, 2.0], [.4, .1, .3, .2])]
    chosen = select_parents(pool, 2, fill="cheapest")
    assert [e.cost for e in chosen] == [1.0, 2.0]


def test_crossover_pair_hand_worked():
    base, partner = smallest(TASK), largest(TASK)
    assert len(base.modules) == 8
    rng = np.random.default_rng(0)
    # The uniforms this generator draws for modules 0..6 (the last, 7, draws none):
    assert np.round(np.random.default_rng(0).random(7), 3).tolist() == \
        [0.637, 0.27, 0.041, 0.017, 0.813, 0.913, 0.607]
    child = crossover_pair(base, partner, rng, 0.5, task=TASK)
    # u < 0.5 at modules 1, 2, 3: those come from the partner, the rest (and the last) from base.
    expect = [base, partner, partner, partner, base, base, base, base]
    assert list(child.modules) == [a.modules[i] for i, a in enumerate(expect)]
    # Probability 1 crosses every module but the last.
    child = crossover_pair(base, partner, np.random.default_rng(0), 1.0, task=TASK)
    assert list(child.modules) == list(partner.modules[:7]) + [base.modules[7]]
    # Our variant may cross it.
    child = crossover_pair(base, partner, np.random.default_rng(0), 1.0, task=TASK,
                           cross_last_module=True)
    assert child == partner


def _three_parents():
    """Three architectures with no module in common, all on the front."""
    archs = [sample_arch(np.random.default_rng(i), p, d, TASK)
             for i, (p, d) in enumerate([(0.2, (2, 3)), (0.5, (3, 4)), (0.8, (4, 5))])]
    for i in range(3):
        for j in range(i + 1, 3):
            assert all(a != b for a, b in zip(archs[i].modules, archs[j].modules))
    return [Evaluated(a, float(k + 1), 0.1 * (k + 1)) for k, a in enumerate(archs)]


def test_each_parent_is_one_childs_base_with_one_other_parent_as_partner():
    pool = _three_parents()
    # Crossover certain, no mutation: child i = partner's modules 0..6 + base i's last module.
    cfg = make_section(EvolutionConfig, {"parents": 3, "population": 3, "crossover_prob": 1.0,
                                        "mutation_prob": 0.0, "release_operators": True})
    gen = next_generation(pool, initial_rng_state(0), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    by_id = {e.arch.arch_id: e.arch for e in pool}
    parents = [by_id[i] for i in gen.parents]
    assert len(gen.children) == 3
    for i, child in enumerate(gen.children):
        assert child.modules[-1] == parents[i].modules[-1]  # base i, last module kept
        partners = [p for p in parents if list(p.modules[:-1]) == list(child.modules[:-1])]
        assert len(partners) == 1 and partners[0] is not parents[i]  # one partner, not the base
    # Population above parents: the bases cycle, every parent twice.
    cfg6 = make_section(EvolutionConfig, {"parents": 3, "population": 6, "crossover_prob": 1.0,
                                         "mutation_prob": 0.0, "release_operators": True,
                                         "attempts_per_child": 50})
    # 3 parents and 2 partners each give 6 distinct children exactly.
    gen6 = next_generation(pool, initial_rng_state(1), cfg6, task=TASK, estimate_cost=cost,
                           generation=1)
    assert [c.modules[-1] for c in gen6.children] == [p.modules[-1] for p in parents * 2]
    assert len({c.arch_id for c in gen6.children}) == 6


def test_release_never_touches_the_last_module_even_with_certain_mutation():
    pool = _three_parents()
    cfg = make_section(EvolutionConfig, {"parents": 3, "population": 3, "crossover_prob": 1.0,
                                        "mutation_prob": 1.0, "release_operators": True})
    gen = next_generation(pool, initial_rng_state(2), cfg, task=TASK, estimate_cost=cost,
                          generation=1)
    by_id = {e.arch.arch_id: e.arch for e in pool}
    for i, child in enumerate(gen.children):
        base = by_id[gen.parents[i]]
        assert child.modules[-1] == base.modules[-1]
        # Depths are never mutated: modules 0..6 have the partner's depths exactly.
        assert [m.depths for m in child.modules[:-1]] in \
            [[m.depths for m in by_id[p].modules[:-1]] for p in gen.parents if p != base.arch_id]
        assert child != base


def test_release_gives_up_after_attempts_per_child():
    pool = _three_parents()
    # No crossover, no mutation: every draw is its base again, already evaluated.
    cfg = make_section(EvolutionConfig, {"parents": 3, "population": 1, "crossover_prob": 0.0,
                                        "mutation_prob": 0.0, "release_operators": True,
                                        "attempts_per_child": 5})
    with pytest.raises(EvolutionError, match="child 0 .* in 5 draws"):
        next_generation(pool, initial_rng_state(0), cfg, task=TASK, estimate_cost=cost,
                        generation=1)


def test_release_children_reproducible_and_recorded():
    pool = _three_parents()
    cfg = make_section(EvolutionConfig, {"parents": 3, "population": 3, "release_operators": True,
                                        "mutation_prob": 0.5})
    a = next_generation(pool, initial_rng_state(5), cfg, task=TASK, estimate_cost=cost,
                        generation=1)
    b = next_generation(pool, initial_rng_state(5), cfg, task=TASK, estimate_cost=cost,
                        generation=1)
    assert a == b and a.config["release_selection"] is True and a.screening is None


def test_paper_recipes_run_the_release_search_and_default_runs_ours():
    from pathlib import Path

    from pipeline import config as pc

    params = Path(__file__).resolve().parents[2] / "params"
    for name in ("cityscapes_w32", "cityscapes_w48", "coco_w32_256x192", "coco_w32_384x288"):
        ops = operators(pc.load_params(params / f"{name}.yaml").search.evolution)
        assert ops.release_selection and ops.mutation == "flip" and ops.screen_factor == 1, name
        assert not ops.mutate_last_module and not ops.mutate_depth, name
    ours_section = pc.load_params(params / "default.yaml").search.evolution
    ours = operators(ours_section)
    assert not ours.release_selection and ours.mutation == "resample"
    assert ours_section.attempts_per_child == 200
