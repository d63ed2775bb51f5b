"""A shared MLflow server on a real PostgreSQL (issue 24, docs/team.md): the tiny run's
candidate-logging jobs, run in parallel, log through ``tracking.uri`` to ``mlflow server`` on a
throwaway PostgreSQL cluster, and every stage and candidate run arrives, none lost or twice,
equal to the session's SQLite run of the same parameters; a server down at the start stops the
run before any job with one line; a server that goes away fails the job with one line naming the
URI, and the rerun after it returns completes with nothing logged twice.

Needs Debian's ``postgresql`` and the ``team`` extra (``.ci/run`` installs both); skipped,
saying which is missing, elsewhere. Only the jobs that log candidates run (the random baseline's
and the evolution's merges, both tasks): the cheapest jobs of the run that write every kind of
run (stage, candidate) and artifact."""
from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import BIN, clone_env
from pipeline import servers, tracking
from test_lineage_tracking import readme_filters

pytestmark = pytest.mark.slow

STEPS = ("random", "evolve/gen_1")
TASKS = ("seg", "pose")


@pytest.fixture(scope="module")
def pg():
    why = servers.missing()
    if why:
        pytest.skip(why)
    with servers.Postgres() as db:
        yield db


def merge_targets() -> list[str]:
    return [f"results/{t}/search/{s}/merged/results.csv" for t in TASKS for s in STEPS]


def smk(ws: Path, cores: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--cores", str(cores), *merge_targets()],
                          cwd=ws, env=clone_env(ws), capture_output=True, text=True, timeout=900)


def merge_runs(client, exp_id: str) -> tuple[Counter, dict]:
    """The merge jobs' FINISHED stage runs (by name) and their active candidate runs, keyed by
    (stage run name, arch id), with tags, params and metrics."""
    stages = {r.info.run_id: r.info.run_name for r in client.search_runs(
        [exp_id], "tags.scalenas.kind = 'stage' and attributes.status = 'FINISHED'",
        max_results=5000) if r.info.run_name.split(":", 2)[-1] in STEPS}
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
    assert dup == 0
    return Counter(stages.values()), cands


def test_parallel_jobs_log_to_a_postgres_server(tiny_run: Path, pg, tmp_path: Path) -> None:
    t_all = time.monotonic()
    ws = tmp_path / "ws"
    subprocess.run(["cp", "-a", str(tiny_run), str(ws)], check=True, timeout=300)
    server = servers.MlflowServer(pg.uri, tmp_path / "artifacts")
    params = ws / "params" / "default.yaml"
    doc = yaml.safe_load(params.read_text())
    doc["tracking"]["uri"] = server.uri  # a run setting: reruns nothing
    params.write_text(yaml.safe_dump(doc))
    for t in TASKS:
        for s in STEPS:
            subprocess.run(["rm", "-rf", str(ws / f"results/{t}/search/{s}/merged")], check=True)
    logs = [ws / f"results/logs/{t}/search/{s}/merge.log" for t in TASKS for s in STEPS]
    for log in logs:
        log.unlink(missing_ok=True)

    # 1. The server is down: one line, before any job.
    r = smk(ws)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(err) == 1 and server.uri in err[0], r.stderr[-3000:]
    assert "cannot reach the MLflow server" in err[0]
    assert not any(log.exists() for log in logs)

    # 2. The server goes away in the middle: the job fails with one line naming the URI.
    server.start()
    try:
        client = tracking._client(server.uri)
        proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", *merge_targets()],
                                cwd=ws, env=clone_env(ws), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while True:  # until the first candidate arrives or a merge job has finished
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no run arrived in 300 s"
            exp = client.get_experiment_by_name("scalenas")
            if exp is not None and any(client.search_runs([exp.experiment_id], f, max_results=1)
                                       for f in ("tags.scalenas.kind = 'candidate'",
                                                 "tags.scalenas.kind = 'stage' and "
                                                 "attributes.status = 'FINISHED'")):
                break
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode != 0, out[-3000:]
        failed = [log for log in logs if log.exists() and "error:" in log.read_text()]
        assert failed, out[-3000:]
        for log in failed:
            text = log.read_text()
            lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1 and server.uri in lines[0], text[-2000:]
            assert "Traceback" not in text, text[-2000:]
            print(f"{log.relative_to(ws)}: {lines[0]}")
        assert "Traceback" not in out, out[-3000:]

        # 3. The server is back: the rerun completes; nothing is logged twice.
        server.start()
        t0 = time.monotonic()
        r = smk(ws)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        t_rerun = time.monotonic() - t0
        exp_id = client.get_experiment_by_name("scalenas").experiment_id
        stages, cands = merge_runs(client, exp_id)

        # The same runs as the session's SQLite run of the same parameters.
        lite = tracking._client(tracking.default_uri(tiny_run))
        lite_exp = lite.get_experiment_by_name("scalenas").experiment_id
        lite_stages, lite_cands = merge_runs(lite, lite_exp)
        assert stages == lite_stages == Counter(
            {f"search_evolution:{t}:{s}": 1 for t in TASKS for s in STEPS}), (stages, lite_stages)
        assert cands == lite_cands and len(cands) == 8, set(cands) ^ set(lite_cands)
        # Every candidate's artifacts went through the server to its artifacts destination.
        some = client.search_runs([exp_id], "tags.scalenas.kind = 'candidate'", max_results=1)[0]
        assert sorted(a.path for a in client.list_artifacts(some.info.run_id)) == [
            "arch.json", "arch.npy"]
        # (a candidate whose stage the kill cut short keeps its files under its deleted run, so
        # count those of the live candidate runs)
        live = {r.info.run_id for r in client.search_runs(
            [exp_id], "tags.scalenas.kind = 'candidate'", max_results=1000)}
        stored = [p for p in (tmp_path / "artifacts").rglob("arch.json")
                  if any(part in live for part in p.parts)]
        assert len(live) == 8 and len(stored) == 8, (len(live), len(stored))

        # The README's filters find the same candidates in both stores.
        def found(c, e, f):
            merges = {r.info.run_id for r in c.search_runs(
                [e], "tags.scalenas.kind = 'stage' and attributes.status = 'FINISHED'",
                max_results=5000) if r.info.run_name.split(":", 2)[-1] in STEPS}
            return sorted((r.data.tags["scalenas.task"], r.data.tags["scalenas.stage"],
                           r.data.tags["scalenas.arch_id"])
                          for r in c.search_runs([e], f, max_results=5000)
                          if r.data.tags.get("mlflow.parentRunId") in merges)

        hits = 0
        for f in readme_filters():
            got = found(client, exp_id, f)
            assert got == found(lite, lite_exp, f), f
            hits += len(got)
        assert hits >= 8
        runs = client.search_runs([exp_id], "", max_results=5000)
        status = Counter(r.info.status for r in runs if r.data.tags.get("scalenas.kind") ==
                         "pipeline")
        assert status == Counter({"FINISHED": 1, "KILLED": 1}), status
        print(f"PostgreSQL: {len(stages)} stage and {len(cands)} candidate runs equal SQLite's; "
              f"rerun {t_rerun:.0f} s; all {time.monotonic() - t_all:.0f} s")
    finally:
        server.stop()
