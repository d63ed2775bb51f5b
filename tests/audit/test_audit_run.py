"""The ranking audit end to end on a copy of the shared tiny run: `snakemake audit_all` after
the pipeline writes each task's ranking, trains every network and seed as its own job, logs the
trainings to MLflow, resumes a killed training, and leaves the finished pipeline up to date."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, clone_env, copy_run


def _sh(root: Path, *cmd: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, env=clone_env(root), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def audited(tiny_run: Path, tmp_path_factory) -> Path:
    root = copy_run(tiny_run, tmp_path_factory.mktemp("audit") / "run")
    params = root / "params" / "default.yaml"
    doc = yaml.safe_load(params.read_text())
    # The tiny search evaluates 4 candidates: smallest, largest, HRNet and one pick fill K = 4.
    for t in ("seg", "pose"):
        doc["finetune"][t]["models"] = doc["finetune"][t]["models"][-1:]
        doc["audit"][t].update(archs=4, seeds=[0, 1], iterations=2, batch_size=2, resamples=100)
    params.write_text(yaml.safe_dump(doc))
    t0 = time.time()
    r = _sh(root, str(BIN / "snakemake"), "--cores", "2", "audit_all")
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    print(f"audit_all on the tiny run: {time.time() - t0:.0f} s")
    assert "dvc commit" in r.stderr and " audit" in r.stderr.split("lineage recorded:")[-1]
    return root


@pytest.mark.slow
def test_audit_all_writes_rankings_with_statistics(audited: Path) -> None:
    for task in ("seg", "pose"):
        out = audited / "results" / task / "audit"
        doc = json.loads((out / "ranking.json").read_text())
        roles = [a["role"] for a in doc["archs"]]
        assert roles[:3] == ["smallest", "largest", "hrnet"] and "pick" in roles, roles
        assert len(doc["archs"]) == 4 and doc["seeds"] == [0, 1]
        for a in doc["archs"]:
            assert set(a["standalone_seeds"]) == {"0", "1"} and a["inherited"] is not None
        pick = next(a for a in doc["archs"] if a["role"] == "pick")
        assert pick["finetuned"] is not None
        st = doc["stats"]
        for key in ("supernet", "gflops", "params"):
            assert {"tau", "tau_lo", "tau_hi", "rho", "rho_lo", "rho_hi"} <= set(st[key])
        assert "repeatability" in st and "largest_minus_smallest" in st
        comp = doc["comparisons"][0]
        assert {"random", "uniform"} <= set(comp) and len(comp["random"]["scores"]) == 2
        assert (out / "ranking.png").read_bytes()[:4] == b"\x89PNG"
        assert "Kendall tau" in (out / "ranking.md").read_text()
    page = (audited / "results" / "report" / "AUDIT.md").read_text()  # both tasks on one page
    assert "## Ranking audit: seg" in page and "## Ranking audit: pose" in page
    assert "(../seg/audit/ranking.png)" in page


@pytest.mark.slow
def test_audit_trainings_are_mlflow_child_runs_and_tau_a_metric(audited: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{audited / 'results' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["scalenas"],
                              filter_string="tags.scalenas.phase = 'audit'")
    trainings = runs[runs["tags.scalenas.audit.slot"].notna()]
    # 4 ranked + a random and a uniform network, 2 seeds, 2 tasks; a slot whose network an
    # earlier slot trains (the uniform one may be HRNet) trains nothing
    slots = [s for t in ("seg", "pose") for s in json.loads(
        (audited / "results" / t / "audit_select" / "audit.json").read_text())["slots"]]
    assert len(slots) == 12
    trained = [s for s in slots if not s.get("same_as")]
    assert len(trainings) == 2 * len(trained), runs[["tags.mlflow.runName"]]
    same = runs.get("tags.scalenas.audit.same_as")
    assert (0 if same is None else int(same.notna().sum())) == 2 * (12 - len(trained))
    assert trainings["tags.mlflow.parentRunId"].notna().all()
    ranks = runs[runs["tags.mlflow.runName"].str.endswith(":rank")]
    assert len(ranks) == 2 and ranks["metrics.largest_minus_smallest"].notna().all()
    for _, run in ranks.iterrows():
        task = run["tags.scalenas.task"]
        st = json.loads((audited / "results" / task / "audit" / "ranking.json").read_text())["stats"]
        # tau and rho are metrics wherever they are defined (two steps of training may leave
        # every tiny pose score at 0: no order, no tau, null in ranking.json)
        for key in ("tau", "rho"):
            want = st["supernet"][key]
            assert (run[f"metrics.{key}"] == pytest.approx(want) if want is not None
                    else pd.isna(run[f"metrics.{key}"])), (task, key, want)


@pytest.mark.slow
def test_audit_training_resumes_and_pipeline_stays_up_to_date(audited: Path) -> None:
    r = _sh(audited, str(BIN / "snakemake"), "-n", "--cores", "2", "audit_all")
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    # the default target did not grow: the audit is not part of `snakemake` alone
    r = _sh(audited, str(BIN / "snakemake"), "-n", "--cores", "2")
    assert "rule audit_" not in r.stdout, r.stdout[-3000:]
    # a training whose result is lost reruns from its kept checkpoints (no step trained again)
    res = audited / "results" / "seg" / "audit_train" / "a00" / "seed_1" / "result.json"
    before = json.loads(res.read_text())
    res.unlink()
    r = _sh(audited, str(BIN / "snakemake"), "--cores", "1", str(res.relative_to(audited)))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    after = json.loads(res.read_text())
    assert after["resumed_from"] == before["iterations"] == 2
    assert after["val_score"] == before["val_score"]
