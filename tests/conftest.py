"""Shared test settings, and the one finished tiny pipeline run that several modules read."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: The real data samples, official architecture files and reference fixtures (../shared).
SHARED = Path(__file__).resolve().parents[2] / "shared"


def doc_files() -> list[Path]:
    """The user documentation: the README, then docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_section(section: str) -> str:
    """The body of the first ``## <section>`` of the README or a docs/ page, or of a page titled
    ``# <section>`` (what a user reads), up to the next heading of that level."""
    import re

    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        m = re.search(rf"(?m)^(#{{1,2}}) {re.escape(section)}[ \t]*$", text)
        if m:
            body = text[m.end():]
            end = re.search(rf"(?m)^{m.group(1)} ", body)
            return body[:end.start()] if end else body
    raise AssertionError(f"no section '## {section}' in README.md or docs/")


def readme_bash_commands(section: str) -> list[str]:
    """The commands of the first bash block of the documentation's ``## <section>``, comments
    dropped."""
    import re

    block = re.search(r"```bash\n(.*?)```", doc_section(section), re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (names relative to it): "nothing changed" checks."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def save_tiny_models(root: Path, input_hw: dict[str, list[int]]) -> Path:
    """A W8 smallest-subnet model directory per task under ``root`` (``root/<task>``)."""
    from pipeline.nets.export import export_subnet, save_model
    from pipeline.nets.supernet import SuperNet
    from pipeline.space.sample import smallest

    torch.manual_seed(0)
    for task, hw in input_hw.items():
        sn = SuperNet(task, width=8, seed=0)
        sn.set_arch(smallest(task))
        save_model(root / task, export_subnet(sn).eval(), {"input_hw": hw})
    return root



def edit_model_record(**changes):
    """A case setup that edits the copied model's ``model/model.json`` (its weights stay as
    saved); ``input_hw`` goes into the record's meta."""
    import json

    def setup(d: Path) -> None:
        path = d / "model" / "model.json"
        rec = json.loads(path.read_text())
        for key, value in changes.items():
            if key == "input_hw":
                rec["meta"]["input_hw"] = value
            else:
                rec[key] = value
        path.write_text(json.dumps(rec))
    return setup


# tryfirst: pytest-xdist's own hook on each worker turns xdist_group marks into work units; marks
# added after it never reach the scheduler.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # A checkout outside the workplace has no ../shared: skip what reads it, saying so, instead
    # of failing on a missing file. Where the folder exists (CI), these tests run.
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"shared reference data not found at {SHARED}")
        for item in items:
            if "shared_data" in item.keywords:
                item.add_marker(skip)
    _schedule(items)


#: The work unit of every test that reads the shared tiny run.
TINY_UNIT = "tiny_run"


def _schedule(items: list[pytest.Item]) -> None:
    """Work units for ``--dist loadgroup`` (pyproject.toml): a module per unit, so that module
    fixtures are built once, except that every test of the shared tiny run (:func:`tiny_run`,
    minutes to build) joins one unit, so that one worker builds it. That unit goes first, then
    the units with more slow tests: the long ones start while short ones can still fill the
    other workers."""
    unit_of: dict[str, str] = {}
    for item in items:
        if "tiny_run" in item.fixturenames and item.get_closest_marker("slow") is None:
            # Reading the tiny run means building it (minutes): end-to-end by definition, so
            # `make test` (-m "not slow") leaves it to `make test-all`.
            item.add_marker(pytest.mark.slow)
        mark = item.get_closest_marker("xdist_group")
        if mark is None:
            unit = TINY_UNIT if "tiny_run" in item.fixturenames else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(unit))
        else:
            unit = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        unit_of[item.nodeid] = unit
    slow = Counter(unit_of[it.nodeid] for it in items if it.get_closest_marker("slow"))
    order = {u: i for i, u in enumerate(dict.fromkeys(unit_of.values()))}

    def rank(item: pytest.Item) -> tuple[bool, int, int]:
        unit = unit_of[item.nodeid]
        return unit != TINY_UNIT, -slow[unit], order[unit]

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # Tiny W8 tensors: more threads only add synchronisation (badly so on a busy machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- real servers on localhost, started and stopped by process id ---------------------------------

@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL cluster on a loopback port (pipeline/servers.py); skipped, saying
    what is missing, where it cannot run."""
    from pipeline import servers

    why = servers.missing()
    if why:
        pytest.skip(why)
    with servers.Postgres() as db:
        yield db


@pytest.fixture(scope="module")
def slurm_env():
    """A one-node SLURM on localhost (tests/slurm_cluster.py): the variables its commands need;
    skipped, saying what is missing, where it cannot run."""
    import slurm_cluster

    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    with slurm_cluster.running() as env:
        yield env


# -- one finished tiny run, shared ----------------------------------------------------------------

def tiny(doc: dict) -> dict:
    """The smallest run that goes through every phase of both tasks."""
    doc["data"].update({"seg_train": 6, "seg_val": 2, "seg_size": [64, 128],
                        "pose_train": 6, "pose_val": 2, "pose_size": [96, 128]})
    for t in ("seg", "pose"):
        doc["teacher"][t].update(iterations=2, batch_size=2)
        doc["supernet"][t].update(iterations=2, batch_size=2)
        doc["finetune"][t].update(iterations=2, batch_size=2)
    doc["calibration"].update(images=1, batch_size=1)
    doc["search"]["random"].update(fusion_probs=[0.5], depth_candidates=[[2, 3]],
                                   samples_per_cell=2, shards=1)
    doc["search"]["evolution"].update(generations=1, population=2, parents=2, shards=1,
                                      screen_factor=1)
    return doc


def clone_env(clone: Path) -> dict[str, str]:
    """The environment of a command run in ``clone``: its own code, no outer MLflow or DVC."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "SCALENAS_PARENT_RUN_ID",
                        "SCALENAS_WORKFLOW_PID", "DVC_STAGE", "DVC_ROOT")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(clone),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A git clone of the committed branch, the tiny parameters committed as its
    params/default.yaml, run with plain `snakemake --cores 2` (every phase, both tasks: minutes).
    One per session: tests/tracking/test_lineage_tracking.py reads and edits it (leaving it a finished,
    up-to-date run); a test that kills or reruns jobs works on a copy (:func:`copy_run`)."""
    root = tmp_path_factory.mktemp("tiny-run") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, timeout=120)
    params = root / "params" / "default.yaml"
    params.write_text(yaml.safe_dump(tiny(yaml.safe_load(params.read_text()))))
    for c in (["git", "config", "user.email", "t@example.org"], ["git", "config", "user.name", "t"],
              ["git", "commit", "-qam", "tiny parameters"]):
        subprocess.run(c, cwd=root, check=True, timeout=60)
    t0 = time.time()
    r = subprocess.run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, env=clone_env(root),
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    print(f"tiny pipeline: {time.time() - t0:.0f} s")
    assert "lineage recorded: dvc commit data.dvc prepare train search finetune report" in r.stderr
    return root


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run at ``dst`` that Snakemake sees as up to date (modification times
    kept). The copied MLflow store still names the original's artifact folder (an absolute URI):
    it is pointed at the copy's own, so that runs in the copy never write into the original."""
    shutil.copytree(src, dst, symlinks=True)
    db = dst / "results" / "mlflow.db"
    old, new = ((p / "results" / "mlartifacts").resolve().as_uri() for p in (src, dst))
    with sqlite3.connect(db) as con:
        n = con.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?",
                        (new, old)).rowcount
    con.close()
    assert n == 1, f"{db}: no experiment with artifacts at {old}"
    return dst
