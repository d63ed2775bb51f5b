"""Every training batch (teacher, supernet, fine-tune), times the launcher's ranks, is checked
against the split it draws from before any training job starts: in ``prepare`` as soon as the
splits are counted, and at parse time against an up-to-date manifest (issue 21, item 13)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import config as pconfig
from pipeline.data.synth import generate_cityscapes, generate_coco
from pipeline.errors import ConfigError
from pipeline.stages import prepare
from pipeline.data import batches
from pipeline.data.batches import BatchUse

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_uses_follow_the_planned_jobs() -> None:
    params = pconfig.load_resolved(REPO / "params" / "default.yaml")
    got = batches.uses(params, ["seg", "pose"], 2, trained=["seg", "pose"], teacher=["pose"])
    assert [(u.key, u.ranks, u.split) for u in got] == [
        ("supernet.seg.batch_size", 2, "train"), ("finetune.seg.batch_size", 2, "trainfull"),
        ("teacher.pose.batch_size", 2, "train"), ("supernet.pose.batch_size", 2, "train"),
        ("finetune.pose.batch_size", 2, "trainfull")]
    # A task searched from a given supernet trains no teacher and no supernet.
    assert [u.key for u in batches.uses(params, ["seg"], 1)] == ["finetune.seg.batch_size"]
    assert batches.from_json(json.loads(json.dumps(batches.to_json(got)))) == got


COUNTS = {"train": 5, "search": 1, "val": 2}
CHECKS = [
    ("teacher-one-rank", BatchUse("teacher.pose.batch_size", "pose", 8, 1, "train"), "persons",
     "teacher.pose.batch_size = 8 per rank x 1 rank needs 8 persons, but the train split of pose "
     "holds 5"),
    ("supernet-two-ranks", BatchUse("supernet.pose.batch_size", "pose", 3, 2, "train"), "persons",
     "supernet.pose.batch_size = 3 per rank x 2 ranks (run.launcher) needs 6 persons, but the "
     "train split of pose holds 5"),
    ("finetune-trainfull", BatchUse("finetune.seg.batch_size", "seg", 4, 2, "trainfull"), "images",
     "finetune.seg.batch_size = 4 per rank x 2 ranks (run.launcher) needs 8 images, but the "
     "trainfull split of seg holds 6"),
]


@pytest.mark.parametrize("use, unit, message", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_a_batch_its_split_cannot_fill_is_one_line(use, unit, message) -> None:
    with pytest.raises(ConfigError) as e:
        batches.check(use.task, [use], batches.with_trainfull(COUNTS), unit)
    assert str(e.value) == message


def test_batches_that_fill_pass() -> None:
    counts = batches.with_trainfull(COUNTS)
    batches.check("pose", [BatchUse("teacher.pose.batch_size", "pose", 5, 1, "train"),
                           BatchUse("finetune.pose.batch_size", "pose", 3, 2, "trainfull"),
                           BatchUse("teacher.seg.batch_size", "seg", 99, 1, "train")],  # other task
                  counts, "persons")


# -- the prepare job: right after counting the splits ------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_cityscapes(root / "cs", 0, num_train=6, num_val=2, size_hw=(64, 128))
    generate_coco(root / "coco", 0, num_train=6, num_val=2, size_hw=(96, 128))
    return root


def _prepare(data: Path, tmp: Path, task: str, uses: list[BatchUse], capsys) -> tuple[int, list[str]]:
    doc = {"tasks": [task], "data": {"builtin": False}, "tracking": {"enabled": False},
           "calibration": {"images": 1, "batch_size": 1},
           "seg": {"root": str(data / "cs")},
           "pose": {"root": str(data / "coco"), "det_file": str(
               data / "coco" / "person_detection_results" / "COCO_val2017_detections_synth.json")}}
    params = tmp / "p.yaml"
    params.write_text(yaml.safe_dump(doc))
    settings = tmp / "run.json"
    settings.write_text(json.dumps({"source": "p.yaml", "run": {}, "tracking": {"enabled": False},
                                    "batches": batches.to_json(uses)}))
    rc = prepare.main(["--params", str(params), "--task", task, "--out", str(tmp / task),
                       "--run-settings", str(settings)])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_prepare_refuses_a_batch_larger_than_its_split(data: Path, tmp_path: Path, capsys,
                                                       task: str) -> None:
    rc, err = _prepare(data, tmp_path, task, [], capsys)
    assert rc == 0, err
    counts, unit = batches.split_sizes(json.loads((tmp_path / task / "manifest.json").read_text()))
    assert unit == ("persons" if task == "pose" else "images")
    before = (tmp_path / task / "manifest.json").read_bytes()
    n = counts["train"]
    rc, err = _prepare(data, tmp_path, task,
                       [BatchUse(f"teacher.{task}.batch_size", task, n + 1, 1, "train")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (f"error: prepare[{task}]: p.yaml: teacher.{task}.batch_size = {n + 1} per "
                      f"rank x 1 rank needs {n + 1} {unit}, but the train split of {task} holds {n}")
    assert (tmp_path / task / "manifest.json").read_bytes() == before  # the last good one stays


# -- the workflow: no training job starts; a later plan stops at parse time ---------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALENAS_", "MLFLOW_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    return env


def _smk(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(cwd),
                           "--cores", "1", *args, "--config", "params=p.yaml"], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=_env())


def _write_params(cwd: Path, batch: int, launcher: str = "python") -> None:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tracking"]["enabled"] = False
    doc["run"]["launcher"] = launcher
    doc["data"].update(seg_train=6, seg_val=2, seg_size=[64, 128], pose_train=6, pose_val=2,
                       pose_size=[96, 128])
    doc["calibration"].update(images=1, batch_size=1)
    for phase in batches.PHASE_SPLITS:
        for task in ("seg", "pose"):
            doc[phase][task]["batch_size"] = 1
    doc["teacher"]["pose"]["batch_size"] = batch
    (cwd / "p.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.slow
def test_workflow_stops_before_any_training_job(tmp_path: Path) -> None:
    _write_params(tmp_path, 50)
    r = _smk(tmp_path, "teacher_all")
    assert r.returncode != 0
    log = (tmp_path / "results" / "logs" / "pose" / "prepare.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: prepare[pose]: p.yaml: teacher.pose.batch_size = 50 per rank "
                              "x 1 rank needs 50 persons, but the train split of pose holds "), log
    assert not list((tmp_path / "results").glob("*/teacher")), "a training job started"
    assert not (tmp_path / "results" / "pose" / "data" / "manifest.json").exists()

    # With the split counted (an up-to-date manifest), the next plan stops at parse time,
    # the launcher's ranks included, before any job.
    _write_params(tmp_path, 1)
    assert _smk(tmp_path, "prepare_all").returncode == 0
    manifest = tmp_path / "results" / "pose" / "data" / "manifest.json"
    n = batches.split_sizes(json.loads(manifest.read_text()))[0]["train"]
    _write_params(tmp_path, n, launcher="torchrun --nproc_per_node 2")
    r = _smk(tmp_path, "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out[-3000:]
    line = (f"invalid parameters: p.yaml: teacher.pose.batch_size = {n} per rank x 2 ranks "
            f"(run.launcher) needs {2 * n} persons, but the train split of pose holds {n} "
            f"(results/pose/data/manifest.json)")
    assert any(line in l for l in out.splitlines()), out[-3000:]
