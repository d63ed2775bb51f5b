"""A shared MLflow server on a real PostgreSQL (issue 24, docs/team.md): the tiny run's
candidate-logging jobs, run in parallel, log through ``tracking.uri`` to ``mlflow server`` on a
throwaway PostgreSQL cluster, and every stage and candidate run arrives, none lost or twice,
equal to the session's SQLite run of the same parameters; a server down at the start stops the
run before any job with one line; a server that goes away fails the job with one line naming the
URI, and the rerun after it returns completes with nothing logged twice.

Needs Debian's ``postgresql`` and the ``team`` extra (``.ci/run`` installs both); skipped,
saying which is missing, elsewhere (the fixture ``pg``, conftest.py). The jobs and the checks
are tests/team_jobs.py's; tests/tracking/test_team_postgres_slurm.py runs the same jobs through the SLURM
profile."""
from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, clone_env
from pipeline import servers, tracking
from team_jobs import merge_targets, pipeline_runs, same_as_sqlite, workspace

# Checked at collection too: a machine without PostgreSQL skips before building the tiny run.
WHY_NOT = servers.missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]


def smk(ws: Path, cores: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--cores", str(cores), *merge_targets()],
                          cwd=ws, env=clone_env(ws), capture_output=True, text=True, timeout=900)


def test_parallel_jobs_log_to_a_postgres_server(tiny_run: Path, pg, tmp_path: Path) -> None:
    t_all = time.monotonic()
    ws = tmp_path / "ws"
    server = servers.MlflowServer(pg.uri, tmp_path / "artifacts")
    logs = workspace(tiny_run, ws, server.uri)

    # 1. The server is down: one line, before any job.
    r = smk(ws)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(err) == 1 and server.uri in err[0], r.stderr[-3000:]
    assert "cannot reach the MLflow server" in err[0]
    assert not any(log.exists() for log in logs)

    # 2. The server goes away in the middle: the job fails with one line naming the URI.
    server.start()
    proc = None
    try:
        client = tracking._client(server.uri)
        # Its output to a file: a pipe nobody reads while the test polls could fill and stall it.
        out_file = tmp_path / "killed-run.log"
        with open(out_file, "w") as fh:
            proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", *merge_targets()],
                                    cwd=ws, env=clone_env(ws), stdout=fh,
                                    stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 600
        while True:  # until the first candidate arrives or a merge job has finished
            assert proc.poll() is None, out_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "no run arrived in 600 s"
            exp = client.get_experiment_by_name("scalenas")
            if exp is not None and any(client.search_runs([exp.experiment_id], f, max_results=1)
                                       for f in ("tags.scalenas.kind = 'candidate'",
                                                 "tags.scalenas.kind = 'stage' and "
                                                 "attributes.status = 'FINISHED'")):
                break
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        proc.wait(timeout=600)
        out = out_file.read_text()
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
        stages, cands = same_as_sqlite(client, tiny_run, tmp_path / "artifacts")
        status = pipeline_runs(client)
        assert status == Counter({"FINISHED": 1, "KILLED": 1}), status
        print(f"PostgreSQL: {len(stages)} stage and {len(cands)} candidate runs equal SQLite's; "
              f"rerun {t_rerun:.0f} s; all {time.monotonic() - t_all:.0f} s")
    finally:
        if proc is not None and proc.poll() is None:  # a failed check: its jobs watch it and stop
            proc.kill()
            proc.wait()
        server.stop()
