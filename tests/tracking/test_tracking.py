"""MLflow tracking: concurrent writers, batching, parent/child runs, the UI's REST API."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import tracking

WRITER = r"""
import os, sys
from pipeline import tracking
i = int(sys.argv[1])
run = tracking.start_run(f"job{i}", tags={tracking.TAG_PHASE: "test"}, params={"job": i, "cfg": {"a": [1, 2]}})
for step in range(20):
    run.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
run.log_candidates([{"name": f"job{i}-cand{k}", "params": {"arch_id": f"{i}-{k}"},
                     "metrics": {"gflops": float(k), "miou": 0.1 * k},
                     "artifacts": {"arch.json": "{}"}} for k in range(3)])
run.end()
"""


def _env(uri: str, parent: str | None = None) -> dict[str, str]:
    env = {**os.environ, tracking.URI_ENV: uri, tracking.EXPERIMENT_ENV: "t"}
    env.pop(tracking.PARENT_ENV, None)
    if parent:
        env[tracking.PARENT_ENV] = parent
    return env


def _run_writers(uri: str, n: int, parent: str | None) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i)], env=_env(uri, parent),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "locked" not in err, err[-2000:]


def _check_runs(uri: str, n: int, parent: str | None) -> None:
    client = tracking._client(uri)
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    jobs = {r.info.run_name: r for r in runs if r.info.run_name.startswith("job") and "-" not in r.info.run_name}
    cands = [r for r in runs if "-cand" in r.info.run_name]
    assert sorted(jobs) == [f"job{i}" for i in range(n)]
    assert len(cands) == 3 * n
    for r in jobs.values():
        assert r.info.status == "FINISHED"
        assert r.data.params["job"] == r.info.run_name[3:] and r.data.params["cfg.a"] == "[1, 2]"
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 20
        assert r.data.tags.get(tracking.PARENT_TAG) == parent
        assert tracking.TAG_COMMIT in r.data.tags
    for c in cands:
        assert c.data.tags[tracking.PARENT_TAG] == jobs[c.info.run_name.split("-")[0]].info.run_id
        assert set(c.data.metrics) == {"gflops", "miou"} and "arch_id" in c.data.params
        assert [a.path for a in client.list_artifacts(c.info.run_id)] == ["arch.json"]


def test_four_parallel_writers_on_initialised_store(tmp_path: Path) -> None:
    uri = tracking.default_uri(tmp_path)
    os.environ.pop(tracking.PARENT_ENV, None)
    tracking.init_store(uri, "t")
    parent = tracking.start_run("pipeline", uri=uri, experiment="t", parent_run_id="").run_id
    _run_writers(uri, 4, parent)
    _check_runs(uri, 4, parent)


def test_concurrent_first_use_of_fresh_store(tmp_path: Path) -> None:
    # No init beforehand: the lock + rename in init_store must keep the migration race away.
    uri = tracking.default_uri(tmp_path / "fresh")
    _run_writers(uri, 2, None)
    _check_runs(uri, 2, None)


def test_batches_respect_limits_and_uri_resolution(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    assert tracking.resolve_uri("sqlite:///rel/m.db", tmp_path) == f"sqlite:///{tmp_path}/rel/m.db"
    assert tracking.resolve_uri("", tmp_path) == f"sqlite:///{tmp_path}/results/mlflow.db"
    monkeypatch.setenv(tracking.URI_ENV, "http://127.0.0.1:1")
    assert tracking.resolve_uri("sqlite:///x.db", tmp_path) == "http://127.0.0.1:1"
    uri = tracking.default_uri(tmp_path)
    run = tracking.start_run("big", uri=uri, experiment="b",
                             params={f"p{i}": i for i in range(250)})
    for step in range(1200):
        run.log_metrics({"a": step, "b": -step}, step=step)
    run.end()
    client = tracking._client(uri)
    r = client.get_run(run.run_id)
    assert len(r.data.params) == 250 and PARENT_TAG_ABSENT(r)
    assert len(client.get_metric_history(run.run_id, "b")) == 1200


def PARENT_TAG_ABSENT(r) -> bool:  # a run outside Snakemake has no parent
    return tracking.PARENT_TAG not in r.data.tags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_server_lists_runs_with_metrics(tmp_path: Path) -> None:
    uri = tracking.default_uri(tmp_path)
    exp_id = tracking.init_store(uri, "ui")
    run = tracking.start_run("stage", uri=uri, experiment="ui", parent_run_id="")
    run.log_metrics({"miou": 0.42}, step=3)
    run.end()
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # The README's command (mlflow ui == mlflow server without remote-artifact options).
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "mlflow server did not start in 90 s"
                time.sleep(0.5)
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search",
                                     data=json.dumps({"experiment_ids": [exp_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
        doc = json.load(urllib.request.urlopen(req, timeout=10))
        runs = doc["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["stage"]
        assert runs[0]["data"]["metrics"] == [{"key": "miou", "value": 0.42, "timestamp":
                                                runs[0]["data"]["metrics"][0]["timestamp"], "step": 3}]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
