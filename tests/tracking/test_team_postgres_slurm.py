"""The shared MLflow server on PostgreSQL from SLURM jobs (issue 24, docs/team.md): the tiny
run's candidate-logging jobs go through workflow/profiles/slurm (one sbatch job each, on the
one-node cluster of tests/slurm_cluster.py) and log through ``tracking.uri`` to ``mlflow server``
on a throwaway PostgreSQL; every stage and candidate run arrives, none lost or twice, equal to
the session's SQLite run of the same parameters, each stage run a child of the submitting
Snakemake's pipeline run. A server down at the start stops the run before anything is
submitted, with one line.

Needs root, Debian's ``postgresql``, ``slurm-wlm`` and ``munge``, and the ``team`` and ``slurm``
extras (``.ci/run`` installs them all); skipped, saying which is missing, elsewhere. The jobs
and checks are tests/team_jobs.py's, as in tests/tracking/test_team_postgres.py (``--cores 2``, and the
server killed mid-run)."""
from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import slurm_cluster
from conftest import BIN, clone_env
from pipeline import servers, tracking
from team_jobs import (STAGE_RUNS, merge_stage_runs, merge_targets, pipeline_runs, same_as_sqlite,
                       workspace)

# Checked at collection too: a machine without the daemons skips before building the tiny run.
WHY_NOT = servers.missing() or slurm_cluster.missing()
pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]

SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def smk_slurm(ws: Path, cluster: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--profile", "workflow/profiles/slurm",
                           *merge_targets()], cwd=ws, env={**clone_env(ws), **cluster},
                          capture_output=True, text=True, timeout=1200)


def test_slurm_jobs_log_to_a_postgres_server(tiny_run: Path, pg, slurm_env, tmp_path: Path):
    t_all = time.monotonic()
    ws = tmp_path / "ws"
    artifacts = tmp_path / "artifacts"
    server = servers.MlflowServer(pg.uri, artifacts)
    logs = workspace(tiny_run, ws, server.uri)
    before = set(slurm_cluster.jobs(slurm_env))

    # The server is down: one line, and nothing reaches the cluster.
    r = smk_slurm(ws, slurm_env)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(err) == 1 and server.uri in err[0], r.stderr[-3000:]
    assert "cannot reach the MLflow server" in err[0]
    assert not SUBMITTED.search(r.stdout + r.stderr)
    assert set(slurm_cluster.jobs(slurm_env)) == before
    assert not any(log.exists() for log in logs)

    with server:
        t0 = time.monotonic()
        r = smk_slurm(ws, slurm_env)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        t_run = time.monotonic() - t0
        # Every merge job was its own SLURM job, and finished there.
        ids = SUBMITTED.findall(out)
        jobs = slurm_cluster.jobs(slurm_env)
        assert len(ids) == len(STAGE_RUNS), out[-3000:]
        assert all(jobs[i][1] == "COMPLETED" for i in ids), jobs

        client = tracking._client(server.uri)
        stages, cands = same_as_sqlite(client, tiny_run, artifacts)
        assert pipeline_runs(client) == Counter({"FINISHED": 1})
        # The jobs' runs nest under the run of the Snakemake that submitted them.
        exp_id = client.get_experiment_by_name("scalenas").experiment_id
        parent = client.search_runs([exp_id], "tags.scalenas.kind = 'pipeline'")[0].info.run_id
        assert {r.data.tags.get("mlflow.parentRunId")
                for r in merge_stage_runs(client, exp_id).values()} == {parent}
    print(f"PostgreSQL from {len(ids)} SLURM jobs: {sum(stages.values())} stage and "
          f"{len(cands)} candidate runs equal SQLite's, 0 lost, 0 twice; SLURM run {t_run:.0f} s; "
          f"all {time.monotonic() - t_all:.0f} s")
