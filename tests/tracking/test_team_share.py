"""A team's workspace (issue 24, docs/team.md): a finished run that is copied or moved reruns
nothing and keeps its MLflow artifacts in its own folder; a run shared through a DVC remote
(README "Share a run") lets a fresh clone skip every phase and predict with the pulled model,
through a local-directory remote and through a WebDAV server on loopback.

All of it works on copies of the session's tiny run (tests/conftest.py: tiny_run)."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, clone_env, readme_bash_commands

pytestmark = pytest.mark.slow

SNAKEMAKE, DVC = str(BIN / "snakemake"), str(BIN / "dvc")


def sh(cwd: Path, *cmd: str, timeout: float = 600, check: bool = True
       ) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=clone_env(cwd), capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{(r.stdout + r.stderr)[-4000:]}"
    return r


def assert_up_to_date(ws: Path) -> None:
    r = sh(ws, SNAKEMAKE, "-n", "--cores", "2")
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert "Data and pipelines are up to date" in sh(ws, DVC, "status").stdout


def artifact_roots(ws: Path) -> tuple[str, set[str]]:
    """The experiment's artifact root and its runs' artifact URIs' roots, from the store."""
    with sqlite3.connect(ws / "results" / "mlflow.db") as con:
        exp = con.execute("SELECT artifact_location FROM experiments WHERE name = 'scalenas'"
                          ).fetchone()[0]
        runs = {u.split("/mlartifacts/")[0] + "/mlartifacts"
                for (u,) in con.execute("SELECT artifact_uri FROM runs")}
    con.close()
    return exp, runs


@pytest.fixture(scope="module")
def moved(tiny_run: Path, tmp_path_factory) -> Path:
    """The tiny run copied with `cp -a`, then that copy moved with `mv`: it reruns nothing at
    either place (Snakemake and DVC), and a job rerun at the new place logs its artifacts there,
    the store re-pointed at start with one line."""
    base = tmp_path_factory.mktemp("team")
    copy, dest = base / "copied", base / "elsewhere" / "moved"
    t0 = time.monotonic()
    subprocess.run(["cp", "-a", str(tiny_run), str(copy)], check=True, timeout=300)
    assert_up_to_date(copy)
    dest.parent.mkdir()
    subprocess.run(["mv", str(copy), str(dest)], check=True, timeout=300)
    assert not copy.exists()
    assert_up_to_date(dest)
    # No per-rule parameter file (a rule input) names the workspace.
    for f in (dest / "results" / "params").rglob("*.json"):
        text = f.read_text()
        assert str(tiny_run) not in text and str(dest) not in text, f
    print(f"cp -a, mv and both checks: {time.monotonic() - t0:.0f} s")
    return dest


def test_moved_workspace_reruns_nothing_and_logs_artifacts_in_place(moved: Path,
                                                                    tiny_run: Path) -> None:
    new_root = (moved / "results" / "mlartifacts").as_uri()
    before = {p for p in (tiny_run / "results" / "mlartifacts").rglob("*") if p.is_file()}
    r = sh(moved, SNAKEMAKE, "--cores", "2", "--forcerun", "report")
    err = r.stderr
    moves = [ln for ln in err.splitlines() if "the workspace moved" in ln]
    assert len(moves) == 1 and new_root in moves[0], err[-3000:]
    exp, runs = artifact_roots(moved)
    assert exp == new_root and runs == {new_root}, (exp, runs)
    # The rerun report job's artifacts are in the moved workspace, none in the original's.
    from pipeline import tracking

    client = tracking._client(tracking.default_uri(moved))
    (rep,) = client.search_runs([client.get_experiment_by_name("scalenas").experiment_id],
                                "tags.scalenas.phase = 'report' and attributes.status = 'FINISHED'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    art = Path(rep.info.artifact_uri.removeprefix("file://"))
    assert art.is_relative_to(moved) and any(art.rglob("*.png")), art
    assert {p for p in (tiny_run / "results" / "mlartifacts").rglob("*") if p.is_file()} == before
    # Older runs' artifacts were moved with the workspace: still readable through the store.
    assert sh(moved, DVC, "status").stdout.strip() == "Data and pipelines are up to date."
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(
        sh(moved, SNAKEMAKE, "-n", "--cores", "2"))
    # A second start has nothing to re-point and says nothing.
    assert tracking.repoint_artifacts(tracking.default_uri(moved)) is None


# -- Share a run ----------------------------------------------------------------------------------

def share_commands() -> tuple[list[str], list[str]]:
    """README "Share a run": (the sharer's commands, the colleague's commands)."""
    cmds = readme_bash_commands("Share a run")
    cut = next(i for i, c in enumerate(cmds) if c.startswith("git clone"))
    return cmds[:cut], cmds[cut:]


def run_readme(cwd: Path, env_root: Path, cmds: list[str], subs: dict[str, str]) -> float:
    """The commands as one shell script (a `cd` holds for the next ones); its duration."""
    script = "\n".join(["set -e", *cmds])
    for k, v in subs.items():
        script = script.replace(k, v)
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-c", script], cwd=cwd, env=clone_env(env_root),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{script}:\n{(r.stdout + r.stderr)[-3000:]}"
    return time.monotonic() - t0


def round_trip(ws: Path, remote: str, clone: Path, name: str, full: bool = True) -> None:
    """The README's commands with `remote` as the remote's URL: what the clone pulls is enough
    to skip every phase, and it predicts with the pulled model (``full=False``: the pull
    restores every phase's outputs, `dvc status` is clean; the rest is the remote's kind's
    business no more)."""
    share, pull = share_commands()
    subs = {"/mnt/team/scalenas-dvc": remote, " team ": f" {name} ",
            "HOST:/path/to/repo": str(ws), "scalenas-run": str(clone)}
    t_push = run_readme(ws, ws, share, subs)
    # The colleague's commands up to the pull; then, before `--touch`, nothing may be missing:
    # every planned job is only there for the new timestamps of restored files.
    upto = next(i for i, c in enumerate(pull) if "--touch" in c)
    t_pull = run_readme(clone.parent, clone, pull[:upto], subs)
    print(f"{name}: push {t_push:.1f} s, clone + pull {t_pull:.1f} s")
    if not full:  # the README's `--touch` writes the per-rule parameter files, DVC deps
        run_readme(clone, clone, pull[upto:upto + 1], subs)
        assert "Data and pipelines are up to date" in sh(clone, DVC, "status").stdout
        assert (clone / "results/seg/finetune/S-large/model").is_dir()
        return
    dry = sh(clone, SNAKEMAKE, "-n", "--cores", "2")
    # Only the per-rule parameter files may be missing: they are derived from the parameters, and
    # a dry run writes nothing under results/ (issue 21); the README's --touch publishes them.
    missing = re.findall(r"Missing output files: ([^;\n]+)", dry.stdout + dry.stderr)
    assert all(f.strip().startswith("results/params/") for m in missing
                           for f in m.split(",")), dry.stdout[-3000:]
    # The README's `--touch`; its last `snakemake -n` is the first check below.
    assert pull[upto + 1:] == ["snakemake -n"], pull
    run_readme(clone, clone, pull[upto:upto + 1], subs)
    assert_up_to_date(clone)
    for phase in ("data/builtin/SYNTH.json", "results/seg/data/manifest.json",
                  "results/pose/supernet/model.pt", "results/seg/search/final/summary.json",
                  "results/seg/finetune/S-large/model", "results/report/REPORT.md"):
        assert (clone / phase).exists(), phase
    # The pulled model predicts.
    img = next((clone / "data" / "builtin" / "cityscapes").rglob("*leftImg8bit.png"))
    out = clone.parent / f"{name}-pred"
    sh(clone, str(BIN / "scalenas"), "predict", str(img), "--model",
       "results/seg/finetune/S-large/model", "-o", str(out))
    assert any(out.glob("*_mask.png")), list(out.iterdir())


def test_readme_share_a_run_through_a_local_remote(moved: Path, tmp_path: Path) -> None:
    round_trip(moved, str(tmp_path / "remote"), tmp_path / "colleague", "team")


def test_share_a_run_through_webdav(moved: Path, tmp_path: Path) -> None:
    """The same through WebDAV on loopback (wsgidav from PyPI, DVC's webdav remote): a network
    remote that runs without root, as a university or group storage offers it."""
    from pipeline.servers import WebDav, webdav_missing

    why = webdav_missing()
    if why:
        pytest.skip(why)
    (tmp_path / "dav" / "scalenas").mkdir(parents=True)  # the group's folder on the server
    with WebDav(tmp_path / "dav") as dav:
        round_trip(moved, f"webdav://127.0.0.1:{dav.port}/scalenas", tmp_path / "colleague",
                   "dav", full=False)
