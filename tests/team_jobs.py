"""The tiny run's candidate-logging jobs against an MLflow server, and what the server must hold
afterwards: shared by tests/tracking/test_team_postgres.py (``--cores 2``) and
tests/tracking/test_team_postgres_slurm.py (the SLURM profile).

Only the jobs that log candidates run (the random baseline's and the evolution's merges, both
tasks): the cheapest jobs of the run that write every kind of run (stage, candidate) and
artifact."""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import yaml

from pipeline import tracking
from test_lineage_tracking import readme_filters

STEPS = ("random", "evolve/gen_1")
TASKS = ("seg", "pose")
#: The stage runs the merge jobs open, one each.
STAGE_RUNS = Counter({f"search_evolution:{t}:{s}": 1 for t in TASKS for s in STEPS})
#: The candidate runs of the tiny run's merges (2 per merge).
N_CANDIDATES = 8


def merge_targets() -> list[str]:
    return [f"results/{t}/search/{s}/merged/results.csv" for t in TASKS for s in STEPS]


def workspace(tiny_run: Path, ws: Path, uri: str) -> list[Path]:
    """A copy of the finished tiny run at ``ws`` tracking to ``uri``, its merge outputs and
    logs removed (so that exactly the merge jobs rerun). The merge jobs' log files."""
    subprocess.run(["cp", "-a", str(tiny_run), str(ws)], check=True, timeout=300)
    params = ws / "params" / "default.yaml"
    doc = yaml.safe_load(params.read_text())
    doc["tracking"]["uri"] = uri  # a run setting: reruns nothing
    params.write_text(yaml.safe_dump(doc))
    for t in TASKS:
        for s in STEPS:
            subprocess.run(["rm", "-rf", str(ws / f"results/{t}/search/{s}/merged")], check=True)
    logs = [ws / f"results/logs/{t}/search/{s}/merge.log" for t in TASKS for s in STEPS]
    for log in logs:
        log.unlink(missing_ok=True)
    return logs


def merge_stage_runs(client, exp_id: str) -> dict:
    """The merge jobs' FINISHED stage runs: run id -> run."""
    return {r.info.run_id: r for r in client.search_runs(
        [exp_id], "tags.scalenas.kind = 'stage' and attributes.status = 'FINISHED'",
        max_results=5000) if r.info.run_name.split(":", 2)[-1] in STEPS}


def merge_runs(client, exp_id: str) -> tuple[Counter, dict]:
    """The merge jobs' FINISHED stage runs (by name) and their active candidate runs, keyed by
    (stage run name, arch id), with tags, params and metrics. None is there twice."""
    stages = {i: r.info.run_name for i, r in merge_stage_runs(client, exp_id).items()}
    cands: dict = {}
    dup = 0
    for r in client.search_runs([exp_id], "tags.scalenas.kind = 'candidate'", max_results=5000):
        parent = r.data.tags["mlflow.parentRunId"]
        if parent not in stages:
            continue
        key = (stages[parent], r.data.tags["scalenas.arch_id"])
        dup += key in cands
        tags = {k: v for k, v in r.data.tags.items() if k.startswith("scalenas.")}
        cands[key] = (tags, r.data.params, r.data.metrics, r.info.status)
    assert dup == 0, f"{dup} candidate runs logged twice"
    return Counter(stages.values()), cands


def same_as_sqlite(client, tiny_run: Path, artifacts: Path) -> tuple[Counter, dict]:
    """Check that the server holds the merge jobs' runs of the session's SQLite run of the same
    parameters, none lost, none twice, equal in tags, params and metrics; that every live
    candidate's artifacts went through the server to ``artifacts`` (its artifacts destination);
    and that the README's filters find the same candidates in both stores. The stage and
    candidate runs compared."""
    exp_id = client.get_experiment_by_name("scalenas").experiment_id
    stages, cands = merge_runs(client, exp_id)
    lite = tracking._client(tracking.default_uri(tiny_run))
    lite_exp = lite.get_experiment_by_name("scalenas").experiment_id
    lite_stages, lite_cands = merge_runs(lite, lite_exp)
    assert stages == lite_stages == STAGE_RUNS, (stages, lite_stages)
    assert cands == lite_cands and len(cands) == N_CANDIDATES, set(cands) ^ set(lite_cands)

    some = client.search_runs([exp_id], "tags.scalenas.kind = 'candidate'", max_results=1)[0]
    assert sorted(a.path for a in client.list_artifacts(some.info.run_id)) == [
        "arch.json", "arch.npy"]
    # (a candidate whose stage a kill cut short keeps its files under its deleted run, so count
    # those of the live candidate runs)
    live = {r.info.run_id for r in client.search_runs(
        [exp_id], "tags.scalenas.kind = 'candidate'", max_results=1000)}
    stored = [p for p in artifacts.rglob("arch.json") if any(part in live for part in p.parts)]
    assert len(live) == len(stored) == N_CANDIDATES, (len(live), len(stored))

    def found(c, e, f):
        merges = merge_stage_runs(c, e)
        return sorted((r.data.tags["scalenas.task"], r.data.tags["scalenas.stage"],
                       r.data.tags["scalenas.arch_id"])
                      for r in c.search_runs([e], f, max_results=5000)
                      if r.data.tags.get("mlflow.parentRunId") in merges)

    hits = 0
    for f in readme_filters():
        got = found(client, exp_id, f)
        assert got == found(lite, lite_exp, f), f
        hits += len(got)
    assert hits >= N_CANDIDATES
    return stages, cands


def pipeline_runs(client) -> Counter:
    """The statuses of the server's pipeline (parent) runs."""
    exp_id = client.get_experiment_by_name("scalenas").experiment_id
    return Counter(r.info.status for r in client.search_runs([exp_id], "", max_results=5000)
                   if r.data.tags.get("scalenas.kind") == "pipeline")
