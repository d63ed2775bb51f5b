"""The tracking pieces of a team's setup, on real stores without a pipeline run (seconds): a
moved SQLite store re-pointed at its own artifacts folder, a server that goes away as one line
naming the URI, partial candidates of an unfinished stage deleted, the candidates' UI link."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import servers, tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str, str]:
    """One fresh store (a workspace's results/mlflow.db) with a stage run and its candidate:
    created once, since a fresh store costs seconds of migrations."""
    root = tmp_path_factory.mktemp("ws")
    uri = tracking.default_uri(root)
    (root / "results").mkdir(parents=True)
    exp = tracking.init_store(uri)
    run = tracking.start_run("search_evolution:seg:random", uri=uri, parent_run_id="",
                             tags={tracking.TAG_KIND: "stage"})
    run.log_candidates([{"name": "c0", "metrics": {"gflops": 1.0},
                         "artifacts": {"arch.json": "{}"}}])
    run.end()
    return root, uri, exp


def test_a_moved_store_writes_artifacts_in_its_new_place(store, tmp_path: Path, capsys) -> None:
    root, _, exp = store
    shutil.copytree(root, tmp_path / "a", symlinks=True)  # a workspace of its own, then moved
    tracking.init_store(tracking.default_uri(tmp_path / "a"))  # re-pointed at a/ (tested below)
    capsys.readouterr()
    shutil.move(tmp_path / "a", tmp_path / "b")
    uri = tracking.default_uri(tmp_path / "b")
    new_root = (tmp_path / "b" / "results" / "mlartifacts").as_uri()
    assert tracking.init_store(uri) == exp
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "workspace moved" in ln]
    assert new_root in line and (tmp_path / "a").as_uri() in line
    client = tracking._client(uri)
    assert client.get_experiment(exp).artifact_location == new_root
    runs = client.search_runs([exp], "", max_results=100)
    assert runs and all(r.info.artifact_uri.startswith(new_root) for r in runs)
    # The old runs' artifacts came along and read back; a new run writes next to the store.
    (cand,) = [r for r in runs if r.data.tags.get(tracking.TAG_KIND) == "candidate"]
    assert Path(client.download_artifacts(cand.info.run_id, "arch.json", str(tmp_path))).is_file()
    run = tracking.start_run("x", uri=uri, parent_run_id="")
    run.log_text("hello", "note.txt")
    run.end()
    assert list((tmp_path / "b" / "results" / "mlartifacts").rglob("note.txt"))
    assert not list((root / "results" / "mlartifacts").rglob("note.txt"))
    assert tracking.repoint_artifacts(uri) is None  # once only


def test_an_artifact_root_the_user_chose_is_left_alone(store, tmp_path: Path) -> None:
    _, uri, _ = store
    mine = (tmp_path / "elsewhere").as_uri()
    tracking._client(uri).create_experiment("mine", artifact_location=mine)
    assert tracking.repoint_artifacts(uri, "mine") is None
    assert tracking._client(uri).get_experiment_by_name("mine").artifact_location == mine


def test_a_server_gone_while_logging_is_one_line_naming_it(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    run = tracking.StageRun(tracking._client(uri), "0" * 32, "1", uri=uri)
    with pytest.raises(tracking.TrackingError) as e:
        run.log_candidates([{"name": "c0", "metrics": {"gflops": 1.0}}])
    msg = str(e.value)
    assert msg.startswith(f"tracking.uri {uri}: ") and "\n" not in msg
    assert tracking.end_pipeline(False) is None  # no parent run here: nothing to say
    with pytest.raises(tracking.TrackingError, match="cannot reach the MLflow server"):
        tracking.init_store(uri)


def test_partial_candidates_of_an_unfinished_stage_are_deleted(store) -> None:
    _, uri, exp = store
    client = tracking._client(uri)
    failed = tracking.start_run("search_evolution:seg:evolve/gen_1", uri=uri, parent_run_id="",
                                tags={tracking.TAG_KIND: "stage"})
    failed.log_candidates([{"name": "partial", "metrics": {"gflops": 2.0}}])
    failed.end("FAILED")
    gone = tracking.delete_partial_candidates(uri, "scalenas")
    assert len(gone) == 1 and client.get_run(gone[0]).info.lifecycle_stage == "deleted"
    left = client.search_runs([exp], "tags.scalenas.kind = 'candidate'", max_results=100)
    assert [r.info.run_name for r in left] == ["c0"]


def test_the_candidates_link_opens_the_saved_view(store) -> None:
    import json

    _, uri, exp = store
    tags = tracking._client(uri).get_experiment(exp).tags
    view = json.loads(tags[tracking.VIEW_TAG])
    assert view["searchFilter"] == 'tags.scalenas.kind = "candidate"'
    assert "metrics.`gflops`" in view["selectedColumns"]
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.candidates_url(uri, exp) == (
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs?viewStateShareKey=candidates"
        "&workflowType=machine_learning")
    assert tracking.candidates_url("http://team:5000", exp).startswith("http://team:5000/#/")
    assert tracking.main(["link", "--uri", uri]) == 0
