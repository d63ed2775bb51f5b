"""Sampler, named architectures, sandwich groups, mutation and crossover."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.space.arch import BRANCHES, Architecture, ArchitectureError, check_task
from pipeline.space.ops import crossover, mutate
from pipeline.space.registry import NAMES, resolve
from pipeline.space.sample import (SamplingGroup, hrnet, largest, paper_groups, sample_arch,
                                   sample_group, search_groups, smallest)

TASK_NAMES = ("seg", "pose")


def live_bits(arch: Architecture) -> tuple[int, int]:
    """(switched-on bits, possible bits) over steps below each target's depth."""
    on = total = 0
    for m in arch.modules:
        n = m.num_branches
        for s, step in enumerate(m.fusions):
            for j, srcs in enumerate(step):
                if s < m.depths[j]:
                    on += len(srcs)
                    total += n - 1
    return on, total


def assert_pose_rule(arch: Architecture) -> None:
    last = arch.modules[-1]
    d = last.depths
    assert last.fusions[d[0] - 1][0] == tuple(range(1, last.num_branches))
    for k in range(1, last.num_branches):
        assert last.fusions[d[k] - 1][k] == ()
    check_task(arch, "pose")


def assert_no_dead_bits(arch: Architecture) -> None:
    for m in arch.modules:
        for s, step in enumerate(m.fusions):
            for j, srcs in enumerate(step):
                if s >= m.depths[j]:
                    assert srcs == (), (s, j)


# -- sampler ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_fusion_rate_matches_probability(p):
    rng = np.random.default_rng(1)
    on = total = 0
    for _ in range(60):
        a = sample_arch(rng, p, (2, 3, 4, 5), "seg")
        o, t = live_bits(a)
        on, total = on + o, total + t
    assert abs(on / total - p) < 0.02, on / total


def test_depths_uniform_over_candidates_and_no_dead_bits():
    rng = np.random.default_rng(2)
    counts = {3: 0, 4: 0}
    for _ in range(100):
        a = sample_arch(rng, 0.5, (3, 4), "seg")
        assert_no_dead_bits(a)
        for m in a.modules:
            assert len(m.fusions) == max(m.depths)
            for d in m.depths:
                counts[d] += 1
    frac = counts[3] / (counts[3] + counts[4])
    assert set(counts) == {3, 4} and abs(frac - 0.5) < 0.05


def test_pose_rule_always_holds():
    rng = np.random.default_rng(3)
    for _ in range(300):
        p = float(rng.choice([0.0, 0.3, 1.0]))
        assert_pose_rule(sample_arch(rng, p, (2, 3, 4, 5), "pose"))


def test_determinism_same_seed_same_ids():
    ids1 = [sample_arch(np.random.default_rng(7), 0.5, (2, 3), t).arch_id for t in TASK_NAMES]
    ids2 = [sample_arch(np.random.default_rng(7), 0.5, (2, 3), t).arch_id for t in TASK_NAMES]
    assert ids1 == ids2
    assert sample_arch(np.random.default_rng(8), 0.5, (2, 3), "seg").arch_id != ids1[0]


@pytest.mark.parametrize("p,depths,match", [
    (1.5, (2,), "fusion_prob"), (-0.1, (2,), "fusion_prob"), (float("nan"), (2,), "fusion_prob"),
    ("0.5", (2,), "fusion_prob"), (0.5, (), "empty"), (0.5, (0, 2), "1..5"), (0.5, (6,), "1..5"),
    (0.5, (2.5,), "1..5"),
])
def test_sampler_rejects_bad_inputs(p, depths, match):
    with pytest.raises(ArchitectureError, match=match):
        sample_arch(np.random.default_rng(0), p, depths, "seg")


def test_sampler_rejects_unknown_task():
    with pytest.raises(ArchitectureError, match="unknown task"):
        sample_arch(np.random.default_rng(0), 0.5, (2,), "det")


# -- named architectures ------------------------------------------------------------------------------
def test_smallest_largest_hrnet_shapes():
    for task in TASK_NAMES:
        s, l, h = smallest(task), largest(task), hrnet(task)
        assert s.depths() == [[2] * n for n in BRANCHES]
        assert l.depths() == [[5] * n for n in BRANCHES]
        assert h.depths() == [[4] * n for n in BRANCHES]
        for a in (s, l, h):
            check_task(a, task)
    assert smallest("seg").num_fusions() == 0
    assert smallest("pose").num_fusions() == 3  # only the forced fusion into branch 0
    full = sum(n * (n - 1) for n in BRANCHES)
    assert largest("seg").num_fusions() == 5 * full
    # Pose: targets 1..3 of the last module receive nothing at their last step.
    assert largest("pose").num_fusions() == 5 * full - 9
    assert hrnet("seg").num_fusions() == full
    for m in hrnet("seg").modules:
        assert all(srcs == () for step in m.fusions[:3] for srcs in step)
    last = hrnet("pose").modules[-1]
    assert last.fusions[3] == ((1, 2, 3), (), (), ())
    assert hrnet("pose").num_fusions() == full - 12 + 3


def test_registry_names_and_errors(tmp_path):
    for name in NAMES:
        for task in TASK_NAMES:
            assert resolve(name, task) is not None
    assert resolve("hrnet", "seg") == hrnet("seg")
    with pytest.raises(ArchitectureError, match="'resnet'"):
        resolve("resnet", "seg")
    with pytest.raises(ArchitectureError, match="missing.json"):
        resolve(str(tmp_path / "missing.json"), "seg")
    odd = tmp_path / "arch.yaml"
    odd.write_text("x")
    with pytest.raises(ArchitectureError, match="arch.yaml"):
        resolve(str(odd), "seg")
    doc = tmp_path / "seg.json"
    smallest("seg").save(doc)
    assert resolve(str(doc), "seg") == smallest("seg")
    with pytest.raises(ArchitectureError, match="seg.json.*branch 0 must fuse"):
        resolve(str(doc), "pose")


# -- sandwich groups ----------------------------------------------------------------------------------
def test_paper_groups():
    for task, p_small in (("seg", 0.1), ("pose", 0.0)):
        groups = paper_groups(task)
        assert len(groups) == 11
        assert (groups[0].fusion_prob, groups[0].depth_candidates) == (p_small, (2,))
        assert (groups[-1].fusion_prob, groups[-1].depth_candidates) == (1.0, (5,))
        grid = {(g.fusion_prob, g.depth_candidates) for g in groups[1:-1]}
        assert grid == {(p, d) for p in (0.2, 0.5, 0.8) for d in ((2, 3), (3, 4), (4, 5))}
        assert len({g.name for g in groups}) == 11
    assert len(search_groups()) == 15
    rng = np.random.default_rng(0)
    assert sample_group(rng, paper_groups("seg")[-1], "seg") == largest("seg")
    assert sample_group(rng, paper_groups("pose")[-1], "pose") == largest("pose")
    assert sample_group(rng, paper_groups("pose")[0], "pose") == smallest("pose")
    with pytest.raises(ArchitectureError):
        SamplingGroup(1.2, (2,), "bad")


# -- mutation and crossover ---------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_operators_always_valid(task):
    rng = np.random.default_rng(11)
    pool = [sample_arch(rng, float(rng.random()), (2, 3, 4, 5), task) for _ in range(8)]
    changed_depth = 0
    for i in range(500):
        parents = [pool[int(k)] for k in rng.choice(len(pool), size=3, replace=False)]
        child = crossover(parents, rng, task=task)
        check_task(child, task)
        for mi, m in enumerate(child.modules):
            assert any(m == p.modules[mi] for p in parents)
        mut = mutate(child, rng, depth_prob=0.3, task=task)
        check_task(mut, task)
        assert_no_dead_bits(mut)
        changed_depth += mut.depths() != child.depths()
        if task == "pose":
            assert_pose_rule(mut)
        pool[i % len(pool)] = mut
    assert changed_depth > 400


def test_mutation_grows_and_trims_steps():
    rng = np.random.default_rng(5)
    a = smallest("seg")
    grown = mutate(a, rng, fusion_prob=1.0, depth_prob=1.0, depth_candidates=(2, 5), task="seg")
    assert grown.depths() == [[5] * n for n in BRANCHES]
    # Every bit existed at depth 2 and flipped on (p=1); new steps were filled with p=1.
    assert grown == largest("seg")
    trimmed = mutate(largest("seg"), rng, fusion_prob=0.0, depth_prob=1.0, depth_candidates=(3, 5),
                     task="seg")
    assert all(len(m.fusions) == 3 for m in trimmed.modules)
    assert all(len(srcs) == m.num_branches - 1 for m in trimmed.modules
               for step in m.fusions for srcs in step)


def test_mutation_probability_zero_is_identity():
    rng = np.random.default_rng(6)
    for task in TASK_NAMES:
        a = sample_arch(rng, 0.5, (2, 3, 4, 5), task)
        assert mutate(a, rng, fusion_prob=0.0, depth_prob=0.0, task=task) == a


def test_release_operators_touch_neither_depth_nor_last_module():
    rng = np.random.default_rng(9)
    for task in TASK_NAMES:
        for _ in range(50):
            a = sample_arch(rng, 0.5, (2, 3, 4, 5), task)
            b = mutate(a, rng, fusion_prob=0.5, depth_prob=1.0, task=task,
                       mutate_last_module=False, mutate_depth=False)
            assert b.depths() == a.depths()
            assert b.modules[-1] == a.modules[-1]
            assert b != a


def test_operator_determinism():
    def run(seed):
        rng = np.random.default_rng(seed)
        parents = [sample_arch(rng, 0.5, (2, 3, 4, 5), "pose") for _ in range(4)]
        return [mutate(crossover(parents, rng, 0.5, task="pose"), rng, task="pose").arch_id
                for _ in range(20)]
    assert run(4) == run(4)
    assert run(4) != run(5)


def test_operator_bad_inputs():
    rng = np.random.default_rng(0)
    a = smallest("seg")
    with pytest.raises(ArchitectureError, match="at least one parent"):
        crossover([], rng, task="seg")
    with pytest.raises(ArchitectureError, match="module_prob"):
        crossover([a], rng, 2.0, task="seg")
    with pytest.raises(ArchitectureError, match="depth_prob"):
        mutate(a, rng, depth_prob=-1, task="seg")
    with pytest.raises(ArchitectureError, match="depth_candidates"):
        mutate(a, rng, depth_candidates=(9,), task="seg")
    with pytest.raises(ArchitectureError, match="branch 0 must fuse"):
        mutate(a, rng, task="pose")  # a seg architecture is not a valid pose parent
    with pytest.raises(ArchitectureError, match="mode must be one of"):
        mutate(a, rng, mode="swap", task="seg")


def test_resample_mutation_keeps_the_parents_cost_flip_drifts_it():
    """Flipping pushes a sparse parent toward half its bits on; resampling keeps its density
    in expectation and moves depths only to a neighbouring candidate."""
    rng = np.random.default_rng(0)
    parent = sample_arch(rng, 0.2, (2, 3), "seg")
    on, total = live_bits(parent)
    dens = {}
    for mode in ("flip", "resample"):
        kids = [mutate(parent, rng, 0.2, 0.0, mode=mode, task="seg") for _ in range(200)]
        dens[mode] = np.mean([live_bits(k)[0] / live_bits(k)[1] for k in kids])
    assert abs(dens["resample"] - on / total) < 0.02
    assert dens["flip"] > on / total + 0.05
    for _ in range(50):
        kid = mutate(parent, rng, 0.2, 1.0, depth_candidates=(2, 3, 4, 5), mode="resample",
                     task="seg")
        for m, pm in zip(kid.modules, parent.modules):
            assert all(abs(d - pd) == 1 for d, pd in zip(m.depths, pm.depths))


def test_mutation_modes_match_the_parameter_schema():
    import yaml
    from pathlib import Path

    from pipeline.space.ops import MUTATION_MODES
    schema = yaml.safe_load((Path(__file__).parents[2] / "workflow/schemas/params.schema.yaml")
                            .read_text())
    enum = schema["properties"]["search"]["properties"]["evolution"]["properties"]["mutation"]["enum"]
    assert tuple(enum) == MUTATION_MODES


def test_resample_depth_step_from_a_depth_outside_the_candidates():
    from pipeline.space.ops import _depth_choices
    assert _depth_choices(3, (2, 4, 5), "resample") == [2, 4]
    assert _depth_choices(5, (2, 3), "resample") == [3]
    assert _depth_choices(3, (2, 4, 5), "flip") == [2, 4, 5]
