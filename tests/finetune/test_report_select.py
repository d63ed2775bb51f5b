"""Selection of final models: FLOPs budgets on the front, named files, and the error cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import config as pc
from pipeline.finetune.select import (ModelSpec, SelectionError, SelectedModel, parse_specs,
                                    pick_at_budget, select_models, specs_from_params)
from pipeline.search.jobs import front_table
from pipeline.space.sample import sample_arch

SHARED = Path(__file__).parents[3] / "shared"


def _table(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arch = sample_arch(rng, 0.5, (2, 3), "seg")
        rows.append({"arch_id": arch.arch_id, "stage": "random", "generation": 0,
                     "params": 1000 + i, "gflops": 1.0 + i, "score": float(rng.random()),
                     "arch": arch.to_json(indent=None)})
    return pd.DataFrame(rows)


def test_front_is_non_dominated_and_sorted():
    table = _table()
    front = front_table(table)
    assert list(front["gflops"]) == sorted(front["gflops"])
    assert list(front["score"]) == sorted(front["score"])  # on a 2-D front score rises with cost
    for _, row in table.iterrows():
        dominated_by_front = ((front["gflops"] <= row.gflops) & (front["score"] >= row.score)).any()
        assert dominated_by_front


def test_budget_picks_best_member_within_budget():
    front = front_table(_table())
    for budget in np.linspace(front["gflops"].min(), front["gflops"].max(), 7):
        row = pick_at_budget(front, float(budget))
        fits = front[front["gflops"] <= budget + 1e-9]
        assert row["score"] == fits["score"].max()
        assert row["gflops"] <= budget + 1e-9


def test_select_models_mixes_budgets_fractions_and_files():
    table = _table()
    front = front_table(table)
    specs = parse_specs([
        {"name": "lo", "front_fraction": 0.0},
        {"name": "hi", "front_fraction": 1.0},
        {"name": "mid", "gflops": float(front["gflops"].iloc[len(front) // 2])},
        {"name": "hr", "arch": "hrnet"},
    ])
    chosen = select_models(specs, "seg", front)
    assert [c.name for c in chosen] == ["lo", "hi", "mid", "hr"]
    assert chosen[0].arch.arch_id == front["arch_id"].iloc[0]
    assert chosen[1].arch.arch_id == front["arch_id"].iloc[-1]
    assert chosen[2].search["gflops"] <= chosen[2].budget_gflops
    assert chosen[3].rule == "file hrnet" and chosen[3].search == {}
    again = SelectedModel.from_dict(chosen[2].to_dict())
    assert again.arch == chosen[2].arch and again.search == chosen[2].search


def test_official_file_resolves():
    path = SHARED / "masks" / "seg_w32_S1.npy"
    if not path.exists():
        pytest.skip("shared masks not available")
    chosen = select_models([ModelSpec("S1", arch=str(path))], "seg", None)
    assert chosen[0].arch.arch_id


@pytest.mark.parametrize("budget", [0.5, 1e6])
def test_budget_outside_front_is_one_clear_error(budget):
    front = front_table(_table())
    with pytest.raises(SelectionError, match=r"'S9'.*budget .* outside the final Pareto front"):
        select_models([ModelSpec("S9", gflops=budget)], "seg", front)


def test_missing_architecture_file_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(SelectionError, match=r"'P2'.*nope\.json.*not found"):
        select_models([ModelSpec("P2", arch=str(missing))], "pose", None)


def test_budget_without_search_results_is_an_error():
    with pytest.raises(SelectionError, match="front is empty"):
        select_models([ModelSpec("x", gflops=1.0)], "seg", pd.DataFrame())


@pytest.mark.parametrize("items, msg", [
    ([], "non-empty list"),
    ([{"name": "a"}], "exactly one of"),
    ([{"name": "a", "gflops": 1, "arch": "hrnet"}], "exactly one of"),
    ([{"name": "a", "gflops": -1}], "positive"),
    ([{"name": "a", "front_fraction": 1.5}], r"\[0, 1\]"),
    ([{"name": "a b", "gflops": 1}], "simple identifier"),
    ([{"name": "a", "gflops": 1}, {"name": "a", "gflops": 2}], "more than once"),
    ([{"name": "a", "flops": 1}], "unknown key"),
])
def test_bad_specs(items, msg):
    with pytest.raises(SelectionError, match=msg):
        parse_specs(items)


def _finetune(**values):
    return pc.make_section(pc.FinetuneTrainConfig, values)


def test_specs_from_params_names_budgets_and_files():
    specs = specs_from_params(_finetune(models=[{"name": "S1", "gflops": 2.0}], budgets=[0.5],
                                        arch_files=["x/seg_w32_S1.npy"]))
    assert [(s.name, s.kind) for s in specs] == [("S1", "gflops"), ("gflops0.5", "gflops"),
                                                 ("seg_w32_S1", "arch")]
    with pytest.raises(SelectionError, match="nothing to fine-tune"):
        specs_from_params(_finetune(models=[], budgets=[], arch_files=[]))
    with pytest.raises(SelectionError, match="reserved"):
        specs_from_params(_finetune(models=[{"name": "select", "gflops": 1.0}]))
