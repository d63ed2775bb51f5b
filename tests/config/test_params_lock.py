"""Per-rule parameter files (pipeline/workflow_params.py): nothing is written under results/ when
the workflow is parsed; a run in progress keeps reading its own values (issue 21, item 2).

The unit tests drive the policy directly; the slow test runs real Snakemake: a run in progress,
a second `snakemake` with other parameters (refused by the lock) and a `snakemake -n`."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import config as pconfig
from pipeline import workflow_params as wp
from pipeline.paths import param_file

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def _params(**changes) -> dict:
    doc = pconfig.load_resolved(REPO / "params" / "default.yaml")
    for dotted, value in changes.items():
        *head, last = dotted.split(".")
        node = doc
        for k in head:
            node = node[k]
        node[last] = value
    return doc


# -- the policy, without Snakemake -----------------------------------------------------------------

def test_texts_are_the_phase_values_one_file_per_phase_and_task() -> None:
    texts = wp.phase_texts(_params(), ["seg", "pose"])
    assert param_file("teacher", "seg") in texts and param_file("report", None) in texts
    doc = json.loads(texts[param_file("supernet", "pose")])
    assert doc == {"phase": "supernet", "task": "pose",
                   "params": pconfig.phase_params(_params(), "supernet", "pose")}
    # Changing one phase's key changes that phase's files only.
    other = wp.phase_texts(_params(**{"teacher.seg.iterations": 7}), ["seg", "pose"])
    assert [k for k in texts if texts[k] != other[k]] == [param_file("teacher", "seg")]


def test_staging_writes_nothing_under_results(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    staged = wp.stage_all(wp.phase_texts(_params(), ["seg"]))
    assert not (tmp_path / "results").exists()
    for final, copy in staged.items():
        assert copy.startswith(wp.STAGE_DIR + "/")
        assert Path(copy).read_text() == wp.phase_texts(_params(), ["seg"])[final]
    # Content-addressed: other values are another copy, the first one stays as it was.
    again = wp.stage_all(wp.phase_texts(_params(**{"teacher.seg.iterations": 7}), ["seg"]))
    key = param_file("teacher", "seg")
    assert again[key] != staged[key] and Path(staged[key]).is_file()


def _mtime(p: str | Path) -> int:
    return os.stat(p).st_mtime_ns


def test_staged_copy_is_newer_than_the_published_file_exactly_when_they_differ(
        tmp_path: Path, monkeypatch) -> None:
    """Snakemake without its records decides on mtimes: the copy must look newer than the
    per-rule file when (and only when) the values differ, or a phase would rerun for nothing or
    keep results of other values."""
    monkeypatch.chdir(tmp_path)
    final = param_file("teacher", "seg")
    a, b = "A\n", "B\n"
    copy_a = wp.stage(final, a)                      # nothing published yet
    wp.publish(copy_a, final)
    old = _mtime(final) - 10**9
    os.utime(final, ns=(old, old))
    # Same values, copy made after the file (e.g. .snakemake/ removed): not newer.
    assert _mtime(wp.stage(final, a)) <= _mtime(final)
    # Other values: newer.
    copy_b = wp.stage(final, b)
    assert _mtime(copy_b) > _mtime(final)
    wp.publish(copy_b, final)
    # Back to the first values, whose copy is old: newer again.
    assert _mtime(wp.stage(final, a)) > _mtime(final)
    assert Path(final).read_text() == b           # staging never writes the per-rule file


def test_publish_refuses_an_edited_copy(tmp_path: Path) -> None:
    final = str(tmp_path / "out.json")
    copy = Path(wp.stage(final, "A\n", tmp_path / "stage"))
    copy.write_text("edited\n")
    with pytest.raises(ValueError, match="does not match its name"):
        wp.publish(copy, final)
    assert not Path(final).exists()
    assert wp.main([str(copy), final]) == 2


def test_refresh_skips_the_files_of_another_running_snakemake(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mine, theirs, free = (param_file("prepare", "seg"), param_file("teacher", "seg"),
                          param_file("supernet", "seg"))
    texts = {mine: "mine\n", theirs: "new\n", free: "free\n"}
    Path(theirs).parent.mkdir(parents=True)
    Path(theirs).write_text("old\n")
    locks = tmp_path / wp.LOCK_DIR
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text(f"{theirs}\n{mine}\n")   # the other run's
    (locks / "1.input.lock").write_text(f"{mine}\n")             # ours
    written = wp.refresh(texts, ours={mine}, locked=wp.locked_paths())
    assert written == [mine, free]
    assert Path(theirs).read_text() == "old\n"
    assert wp.refresh(texts, ours={mine}, locked=wp.locked_paths()) == []   # unchanged: no write


def test_nothing_is_staged_before_the_job_graph_needs_it(tmp_path: Path) -> None:
    """Parsing may still fail after the texts are known (a bad tracking store): the copies are
    written on first use only."""
    texts = wp.phase_texts(_params(), ["seg"])
    staged = wp.Staged(texts, wp.settings_text(_params(), "p.yaml"), tmp_path / "stage")
    assert staged.settings_path.startswith(str(tmp_path / "stage" / "run-"))
    assert not (tmp_path / "stage").exists()
    copy = staged.copy(param_file("teacher", "seg"))
    assert Path(copy).read_text() == texts[param_file("teacher", "seg")]
    assert Path(staged.settings_path).is_file()


def test_settings_copy_is_content_addressed(tmp_path: Path) -> None:
    one = wp.stage_settings(wp.settings_text(_params(), "p.yaml"), tmp_path)
    two = wp.stage_settings(wp.settings_text(_params(**{"run.threads": 3}), "p.yaml"), tmp_path)
    assert one != two and json.loads(Path(one).read_text())["source"] == "p.yaml"


# -- real Snakemake: a run in progress, a refused run, a dry run -------------------------------------

def _tiny(doc: dict, seg_train: int, images: int) -> dict:
    doc["tasks"] = ["seg", "pose"]
    doc["tracking"]["enabled"] = False
    doc["data"].update(seg_train=seg_train, seg_val=2, seg_size=[64, 128], pose_train=6,
                       pose_val=2, pose_size=[96, 128])
    doc["calibration"].update(images=images, batch_size=1)
    for t in ("seg", "pose"):
        doc["teacher"][t].update(iterations=1, batch_size=1)
    return doc


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _smk(cwd: Path, params: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(cwd), "--cores", "1",
                           *extra, "--config", f"params={params}"], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCALENAS_WORKFLOW_PID", "SCALENAS_RUN_SETTINGS", "DVC_STAGE", "DVC_ROOT")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.mark.slow
def test_refused_and_dry_runs_leave_a_run_in_progress_its_own_values(tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    (tmp_path / "p1.yaml").write_text(
        yaml.safe_dump(_tiny(yaml.safe_load(yaml.safe_dump(base)), 6, 1)))
    # Other values of the data and prepare phases, which the first run's jobs read.
    (tmp_path / "p2.yaml").write_text(yaml.safe_dump(_tiny(base, 8, 2)))
    want = wp.phase_texts(pconfig.load_resolved(tmp_path / "p1.yaml"), ["seg", "pose"])
    other = wp.phase_texts(pconfig.load_resolved(tmp_path / "p2.yaml"), ["seg", "pose"])
    assert all(want[param_file(p, t)] != other[param_file(p, t)]
               for p, t in (("data", None), ("prepare", "seg"), ("prepare", "pose")))
    first = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                              "--cores", "1", "prepare_all", "--config", "params=p1.yaml"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=_env())
    try:
        # Paused while its built-in data job runs (one job at a time: --cores 1): it holds its
        # lock, its parameter files are there, and the jobs that read them (prepare) are to come.
        published = [tmp_path / param_file("prepare", t) for t in ("seg", "pose")]
        deadline = time.time() + 240
        while not ((tmp_path / "results" / "logs" / "builtin_data.log").is_file()
                   and all(p.is_file() for p in published)):
            assert first.poll() is None, first.stdout.read()
            assert time.time() < deadline, "the first run never started its data job"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        assert list((tmp_path / wp.LOCK_DIR).glob("*.lock"))
        params_before = _digests(tmp_path / "results" / "params")

        # The whole target: refused (the lock, or the data job's files marked incomplete).
        refused = _smk(tmp_path, "p2.yaml", "prepare_all")
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert "LockException" in out or "IncompleteFilesException" in out, out[-3000:]
        assert _digests(tmp_path / "results" / "params") == params_before
        # Just a parameter file that the paused run reads next: refused by the lock.
        refused = _smk(tmp_path, "p2.yaml", param_file("prepare", "seg"))
        assert "LockException" in refused.stdout + refused.stderr, refused.stderr[-3000:]
        assert _digests(tmp_path / "results" / "params") == params_before
        # A dry run (past the running job's incomplete marks) plans p2's jobs and writes nothing.
        dry = _smk(tmp_path, "p2.yaml", "-n", "--ignore-incomplete")
        assert dry.returncode == 0, dry.stderr[-3000:]
        assert "param_file" in dry.stdout + dry.stderr
        assert _digests(tmp_path / "results" / "params") == params_before
    finally:
        first.send_signal(signal.SIGCONT)
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-5000:]

    # Every job of the first run read the first run's values.
    for task in ("seg", "pose"):
        doc = json.loads(want[param_file("prepare", task)])
        resolved = json.loads((tmp_path / "results" / task / "data" / "resolved_params.json")
                              .read_text())
        assert resolved["params"] == doc["params"]
        assert resolved["params_hash"] == pconfig.params_hash(doc["params"])
    seg = json.loads((tmp_path / "results" / "seg" / "data" / "manifest.json").read_text())
    assert seg["splits"]["train"]["count"] + seg["splits"]["search"]["count"] == 6  # p1's data
    for final, text in want.items():   # the phases outside the target too (onstart, for DVC)
        assert (tmp_path / final).read_text() == text, final
    # ... and the run is complete for its own values: nothing to plan again.
    again = _smk(tmp_path, "p1.yaml", "-n", "prepare_all")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]
