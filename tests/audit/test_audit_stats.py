"""The audit's statistics and choices on known inputs (no training: milliseconds)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.audit import stats
from pipeline.audit.choose import (AuditError, choose_ranked, comparisons, nearest_uniform,
                                   random_at_cost, spread_by_cost, uniform_family)
from pipeline.audit.plan import plan
from pipeline.audit.ranking import build_ranking, markdown, metrics
from pipeline.config import load_resolved
from pipeline.cost import profile
from pipeline.search.candidates import grid_groups
from pipeline.space.sample import hrnet, largest, sample_arch, smallest


def test_kendall_tau_known_values():
    assert stats.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert stats.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # one discordant pair of six: (5 - 1) / 6
    assert stats.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # tau-b with ties (scipy.stats.kendalltau([1,1,2,3],[1,2,3,4]) = 0.9128709)
    assert stats.kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9128709, abs=1e-6)
    assert math.isnan(stats.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(stats.kendall_tau([1], [2]))


def test_spearman_rho_known_values():
    assert stats.spearman_rho([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6*2/(4*15) = 0.8
    assert stats.spearman_rho([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert list(stats.ranks([3, 1, 3, 2])) == [3.5, 1.0, 3.5, 2.0]


def test_bootstrap_interval_brackets_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + 0.5 * rng.normal(size=30)
    lo, hi = stats.bootstrap_interval(x, y, stats.kendall_tau, resamples=500, seed=3)
    tau = stats.kendall_tau(x, y)
    assert lo < tau < hi and -1 <= lo and hi <= 1
    assert (lo, hi) == stats.bootstrap_interval(x, y, stats.kendall_tau, resamples=500, seed=3)
    c = stats.correlation(x, y, resamples=200)
    assert c["tau_lo"] <= c["tau"] <= c["tau_hi"] and c["rho_lo"] <= c["rho"] <= c["rho_hi"]
    assert all(math.isnan(v) for v in stats.bootstrap_interval([1, 2], [1, 2], stats.kendall_tau))


def test_top_k_overlap():
    assert stats.top_k_overlap([5, 4, 3, 2, 1], [50, 40, 30, 20, 10], 2) == 1.0
    assert stats.top_k_overlap([1, 2, 3, 4, 5], [50, 40, 30, 20, 10], 2) == 0.0
    assert stats.top_k_overlap([5, 1, 4, 2, 3], [50, 40, 30, 20, 10], 3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        stats.top_k_overlap([1, 2], [1, 2], 3)


def test_repeatability_separates_noise_from_architecture():
    good = stats.repeatability({"a": [0.10, 0.11], "b": [0.30, 0.31], "c": [0.50, 0.49]})
    assert good["repeatable"] == 1.0 and good["ratio"] > 10
    assert good["within_sd"] == pytest.approx(math.sqrt(np.mean([5e-5, 5e-5, 5e-5])))
    bad = stats.repeatability({"a": [0.1, 0.5], "b": [0.5, 0.1], "c": [0.3, 0.31]})
    assert bad["repeatable"] == 0.0 and bad["ratio"] < 1
    one_seed = stats.repeatability({"a": [0.1], "b": [0.2]})
    assert math.isnan(one_seed["within_sd"]) and math.isnan(one_seed["repeatable"])


def test_margin():
    m = stats.margin([0.5, 0.6, 0.7], [0.4, 0.4, 0.8])
    assert m["mean"] == pytest.approx((0.1 + 0.2 - 0.1) / 3)
    assert m["wins"] == pytest.approx(2 / 3) and m["min"] == pytest.approx(-0.1)
    assert m["seeds"] == 3.0 and m["se"] > 0


def test_spread_by_cost_covers_the_span():
    costs = [0.10, 0.11, 0.12, 0.13, 0.50, 0.90, 0.95, 1.00]
    # bins centred at 0.325 and 0.775 of a 0.1..1.0 span: the nearest are 0.13/0.50 and 0.90
    assert spread_by_cost(costs, 2) == [4, 5]
    assert spread_by_cost(costs, 2, exclude=[4]) == [3, 5]
    assert len(set(spread_by_cost(costs, 8))) == 8
    with pytest.raises(AuditError):
        spread_by_cost(costs, 9)


def _cost(task):
    return lambda a: profile(a, task, 8, (64, 128) if task == "seg" else (128, 96))


def _pool(task, n=12):
    rng = np.random.default_rng(0)
    rows, seen = [], set()
    while len(rows) < n:
        a = sample_arch(rng, float(rng.choice([0.2, 0.8])), [2, 3, 4, 5], task)
        if a.arch_id in seen:
            continue
        seen.add(a.arch_id)
        c = _cost(task)(a)
        rows.append({"arch_id": a.arch_id, "stage": "sample", "generation": 0, "index": len(rows),
                     "gflops": c.gflops, "params": c.params, "score": 0.1 + 0.01 * len(rows),
                     "arch": a.to_json(indent=None)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_choose_ranked_always_holds_the_mandatory_ones(task):
    pool = _pool(task)
    pick = pool["arch"].iloc[3]
    from pipeline.space.arch import Architecture

    picks = {"P-small": Architecture.from_json(pick), "P-large": Architecture.from_json(pick)}
    slots = choose_ranked(task, pool, 7, picks, _cost(task))
    ids = [s.arch.arch_id for s in slots]
    assert len(slots) == 7 and len(set(ids)) == 7
    assert ids[:3] == [smallest(task).arch_id, largest(task).arch_id, hrnet(task).arch_id]
    # both picks are one network: one slot, labelled with both names, inherited from the pool
    assert slots[3].role == "pick" and slots[3].label == "P-small+P-large"
    assert slots[3].inherited == pytest.approx(pool["score"].iloc[3])
    assert slots[0].inherited is None  # the smallest is not in the pool: the stage evaluates it
    assert [s.name for s in slots] == [f"a{i:02d}" for i in range(7)]
    with pytest.raises(AuditError, match="fewer than the 4"):
        choose_ranked(task, pool, 3, picks, _cost(task))


def test_comparisons_are_near_the_pick_cost_and_seeded():
    task, cost = "seg", _cost("seg")
    fam = uniform_family(task)
    assert hrnet(task).arch_id in {a.arch_id for a in fam} and len(fam) == 8
    pool = _pool(task)
    from pipeline.space.arch import Architecture

    pick = Architecture.from_json(pool["arch"].iloc[5])
    slots = choose_ranked(task, pool, 5, {"S": pick}, cost)
    groups = grid_groups([0.2, 0.8], [[2, 3], [4, 5]])
    comp = comparisons(task, {"S": slots[3]}, groups, 0, cost)
    assert [c.name for c in comp] == ["S.random", "S.uniform"]
    gap = abs(comp[0].gflops - slots[3].gflops)
    assert gap <= min(abs(cost(a).gflops - slots[3].gflops) for a in fam) + 0.05
    again = random_at_cost(task, slots[3].gflops, groups, 0, 0, cost, exclude=[pick.arch_id])
    assert again.arch_id == comp[0].arch.arch_id
    u = nearest_uniform(task, cost(hrnet(task)).gflops, cost)
    assert u.arch_id == hrnet(task).arch_id


def test_build_ranking_statistics():
    slots = [{"slot": f"a{i:02d}", "role": r, "label": lab, "arch_id": f"id{i}",
              "gflops": g, "params": 1000 + i, "inherited": inh}
             for i, (r, lab, g, inh) in enumerate([
                 ("smallest", "smallest", 0.1, 0.10), ("largest", "largest", 0.4, 0.40),
                 ("hrnet", "HRNet", 0.3, 0.30), ("pick", "S", 0.2, 0.35), ("pool", "x", 0.25, 0.2)])]
    slots += [{"slot": "S.random", "role": "random", "label": "S", "arch_id": "r",
               "gflops": 0.2, "params": 5, "inherited": 0.1},
              {"slot": "S.uniform", "role": "uniform", "label": "S", "arch_id": "u",
               "gflops": 0.21, "params": 6, "inherited": 0.2}]
    truth = {"a00": 0.1, "a01": 0.5, "a02": 0.3, "a03": 0.4, "a04": 0.2,
             "S.random": 0.25, "S.uniform": 0.35}
    scores = {s: {0: v, 1: v + 0.01} for s, v in truth.items()}
    doc = build_ranking("seg", "mIoU", slots, scores, {"S": 0.45}, {"S": "a03"},
                        resamples=200, seed=0)
    st = doc["stats"]
    assert st["supernet"]["tau"] == pytest.approx(1.0)   # inherited orders as stand-alone
    assert st["gflops"]["tau"] == pytest.approx(0.6)     # one swap (0.2 vs 0.25 GFLOPs)
    assert st["largest_minus_smallest"] == pytest.approx(0.4)
    assert st["repeatability"]["repeatable"] == 1.0
    assert [a["finetuned"] for a in doc["archs"]] == [None, None, None, 0.45, None]
    c = doc["comparisons"][0]
    assert c["random"]["margin"]["mean"] == pytest.approx(0.15)
    assert c["uniform"]["margin"]["mean"] == pytest.approx(0.05)
    assert metrics(doc)["tau"] == pytest.approx(1.0)
    text = markdown(doc, "ranking.png")
    assert "| supernet (inherited weights) | 1.000" in text and "ranking.png" in text


def test_plan_refuses_bad_input_with_one_line():
    params = load_resolved("params/default.yaml")
    models = {"seg": ["S-small", "S-large"], "pose": ["P-small", "P-large"]}
    p = plan(params, "params/default.yaml", models)
    assert p["seg"]["slots"][-4:] == ["S-small.random", "S-small.uniform", "S-large.random",
                                      "S-large.uniform"]
    params["audit"]["seg"]["archs"] = 1000
    with pytest.raises(AuditError, match=r"audit.seg: archs 1000 is larger than the pool"):
        plan(params, "params/default.yaml", models)
    params["audit"]["seg"]["archs"] = 8
    params["tasks"] = ["seg"]
    params["audit"]["tasks"] = ["pose"]
    with pytest.raises(AuditError, match="audit.tasks: pose is not searched by this run"):
        plan(params, "params/default.yaml", models)


def test_scatter_figure_is_written(tmp_path):
    from pipeline.audit.figure import scatter

    slots = [{"slot": f"a{i:02d}", "role": r, "label": r, "arch_id": f"id{i}", "gflops": 0.1 * (i + 1),
              "params": 10 * i, "inherited": 0.1 * i} for i, r in
             enumerate(["smallest", "largest", "hrnet", "pick", "pool"])]
    slots.append({"slot": "S.random", "role": "random", "label": "S", "arch_id": "r",
                  "gflops": 0.4, "params": 1, "inherited": 0.2})
    scores = {s["slot"]: {0: 0.05 * i, 1: 0.05 * i + 0.01} for i, s in enumerate(slots)}
    doc = build_ranking("pose", "AP", slots, scores, {}, {"S": "a03"}, resamples=100, seed=0)
    scatter(doc, tmp_path / "r.png", dpi=50)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_unauditable_parameters_only_stop_runs_that_ask_for_the_audit():
    from pipeline.audit.plan import plan_or_error, requests_audit

    params = load_resolved("params/default.yaml")
    params["audit"]["pose"]["archs"] = 1000
    jobs, err = plan_or_error(params, "p.yaml", {"seg": ["S"], "pose": ["P"]})
    assert "audit.pose: archs 1000 is larger than the pool" in err
    assert set(jobs) == {"seg", "pose"} and len(jobs["seg"]["slots"]) == 8 + 2
    assert requests_audit(["audit_all"]) and requests_audit(["results/seg/audit/ranking.json"])
    assert not requests_audit([]) and not requests_audit(["all", "report_all"])


def test_the_frozen_audit_stage_is_recorded_only_by_its_own_target():
    import yaml

    from pipeline.lineage import stages_for

    doc = yaml.safe_load(open("dvc.yaml"))
    assert doc["stages"]["audit"]["frozen"] is True and "outs" not in doc["stages"]["audit"]
    assert "audit" not in stages_for(doc, ["all"]) and "report" in stages_for(doc, [])
    assert stages_for(doc, ["audit_all"]) == ["prepare", "train", "search", "finetune", "audit"]


def test_one_network_in_two_slots_is_trained_once():
    """HRNet is in the uniform family, and two picks of close cost share their nearest uniform
    network: the later slot names the first (``same_as``) and its jobs train nothing."""
    from pipeline.audit.choose import Slot, same_networks

    task = "seg"
    h, s = hrnet(task), smallest(task)
    slots = [Slot("a00", "smallest", s, 1.0, 1), Slot("a02", "hrnet", h, 2.0, 2),
             Slot("S-small.uniform", "uniform", h, 2.0, 2),
             Slot("S-large.uniform", "uniform", h, 2.0, 2)]
    out = same_networks(slots)
    assert [o.extra.get("same_as") for o in out] == [None, None, "a02", "a02"]
    assert out[2].to_dict()["same_as"] == "a02" and "same_as" not in out[1].to_dict()
