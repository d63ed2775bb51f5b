"""A tracking store that cannot be used: one line naming tracking.uri, fast; or, with
`tracking.required: false`, the stage goes on and says so once."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import sqlite3
import time
from pathlib import Path

import yaml

from pipeline import tracking
from pipeline.stages.common import run_stage

REPO = Path(__file__).resolve().parents[2]


def _dead_uri() -> str:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _stage(tmp: Path, monkeypatch, capsys, **trk) -> tuple[int, list[str], float]:
    for var in (tracking.URI_ENV, tracking.PARENT_ENV, tracking.DISABLE_ENV, tracking.EXPERIMENT_ENV):
        monkeypatch.delenv(var, raising=False)
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tracking"].update(trk)
    params = tmp / "p.yaml"
    params.write_text(yaml.safe_dump(doc))
    calls = []
    t0 = time.time()
    rc = run_stage("report", lambda ctx: calls.append(1) or {"x": 1.0},
                   ["--params", str(params), "--out", str(tmp / "out")], needs_task=False)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err, time.time() - t0, calls


def test_unreachable_server_fails_fast_naming_tracking_uri(tmp_path, monkeypatch, capsys) -> None:
    uri = _dead_uri()
    rc, err, took, calls = _stage(tmp_path, monkeypatch, capsys, uri=uri)
    assert rc == 2 and not calls and not (tmp_path / "out").exists()
    assert len(err) == 1 and err[0].startswith(f"error: report: tracking.uri {uri}: "), err
    assert took < 20, took


def test_unreachable_server_not_required_goes_on_and_says_so(tmp_path, monkeypatch, capsys) -> None:
    rc, err, took, calls = _stage(tmp_path, monkeypatch, capsys, uri=_dead_uri(), required=False)
    assert rc == 0 and calls == [1] and (tmp_path / "out").is_dir()
    assert len(err) == 1 and err[0].startswith("warning: tracking.required is false"), err
    assert "tracking.uri" in err[0] and took < 20


def test_store_of_another_version_is_one_line(tmp_path, monkeypatch) -> None:
    db = tmp_path / "old" / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.init_store(uri, "scalenas")
    with sqlite3.connect(db) as con:  # as if written by another MLflow (schema revision unknown)
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tracking"]["uri"] = uri
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(doc))
    # A fresh process: MLflow caches a store per URI within one process.
    code = ("import sys; from pipeline.stages.common import run_stage; "
            "sys.exit(run_stage('report', lambda ctx: {}, sys.argv[1:], needs_task=False))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "SCALENAS_"))}
    r = subprocess.run([sys.executable, "-c", code, "--params", str(params), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=600)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and not (tmp_path / "out").exists(), r.stderr
    assert len(err) == 1 and err[0].startswith(f"error: report: tracking.uri {uri}: "), err


def test_new_experiment_is_a_training_experiment(tmp_path) -> None:
    uri = tracking.default_uri(tmp_path)
    tracking.init_store(uri, "e")
    exp = tracking._client(uri).get_experiment_by_name("e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
