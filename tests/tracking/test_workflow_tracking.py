"""The MLflow lifecycle of one Snakemake invocation (pipeline/workflow_tracking.py), without
Snakemake: the parent run opened and closed on a real SQLite store, tracking off reaching the jobs
through the environment, a required store that fails stopping the run, an optional one a warning."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline import tracking
from pipeline.config import load_resolved
from pipeline.workflow_tracking import PipelineTracking, TrackingStartError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def params():
    """The default parameters. The lifecycle exports its state to the jobs through os.environ
    (parent run, store, tracking off): restored afterwards, or every later test of this worker
    that starts Snakemake would inherit a closed parent run or tracking switched off."""
    import os

    saved = dict(os.environ)
    for var in (tracking.URI_ENV, tracking.PARENT_ENV, tracking.DISABLE_ENV,
                tracking.EXPERIMENT_ENV):
        os.environ.pop(var, None)
    yield load_resolved(REPO / "params" / "default.yaml")
    os.environ.clear()
    os.environ.update(saved)


def _with(params: dict, **trk) -> PipelineTracking:
    return PipelineTracking({**params, "tracking": {**params["tracking"], **trk}}, "p.yaml")


def _dead_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_parent_run_opened_and_closed_on_a_real_store(params, tmp_path) -> None:
    import os

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = _with(params, uri=uri)
    t.at_parse()
    assert t.start() is None
    run_id = os.environ[tracking.PARENT_ENV]
    client = tracking._client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags[tracking.TAG_KIND] == "pipeline"
    assert run.data.tags["scalenas.params_file"] == "p.yaml"
    assert run.data.tags[tracking.TAG_PARAMS_HASH]
    assert t.end(False) is None
    assert client.get_run(run_id).info.status == "FAILED"


def test_touch_and_disabled_open_nothing(params, tmp_path) -> None:
    import os

    db = tmp_path / "mlflow.db"
    t = _with(params, uri=f"sqlite:///{db}")
    assert t.start(touch=True) is None and t.end(True, touch=True) is None
    assert tracking.PARENT_ENV not in os.environ and not db.exists()
    off = _with(params, enabled=False, uri=f"sqlite:///{db}")
    off.at_parse()
    assert os.environ[tracking.DISABLE_ENV] == "1"
    assert off.start() is None and not db.exists()


def test_empty_store_file_is_refused_at_parse(params, tmp_path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    with pytest.raises(tracking.TrackingError):
        _with(params, uri=f"sqlite:///{db}").at_parse()
    assert db.read_bytes() == b""


def test_required_store_that_fails_stops_optional_one_warns(params) -> None:
    import os

    uri = _dead_uri()
    with pytest.raises(TrackingStartError, match=uri):
        _with(params, uri=uri).start()
    assert tracking.DISABLE_ENV not in os.environ
    line = _with(params, uri=uri, required=False).start()
    assert line.startswith("warning: tracking.required is false") and uri in line
    assert os.environ[tracking.DISABLE_ENV] == "1"
