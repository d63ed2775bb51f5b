"""The training stages under ``torchrun --nproc_per_node 2`` (gloo on CPU) through Snakemake, with
the device pool on: world size recorded, parallel shard jobs on devices of their own, a failing
rank failing the job, launcher checks.

Weights equal to one process with the doubled batch are checked for pose in
tests/train/test_train_ddp.py (the same loop, under torchrun). For seg they are not equal, by design of
the loss: OHEM keeps the hardest pixels of each rank's own batch and averages over that rank's
non-ignored pixels, so two half batches are not one whole batch (measured through this pipeline
with freeze_bn: up to 6.6 % of the largest weight update apart).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import config as pconfig
from pipeline import tracking
from test_workflow import REPO, SNAKEMAKE, TINY_DATA, _env

TORCHRUN = "torchrun --nproc_per_node 2"


def _params(tmp: Path, *, launcher: str, batch: int, devices=(), name="p.yaml") -> Path:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["data"].update({**TINY_DATA, "seg_train": 10})
    doc["tasks"] = ["seg"]
    doc["run"].update(launcher=launcher, devices=list(devices))
    doc["teacher"]["seg"] = {"iterations": 2, "batch_size": batch}
    doc["supernet"]["seg"].update(iterations=2, batch_size=batch, checkpoint_every=1)
    doc["search"]["random"].update(shards=4, samples_per_cell=1)
    doc["calibration"]["images"] = 2
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


def smk(workdir: Path, params: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args,
           "--config", f"params={params}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


def _ok(r: subprocess.CompletedProcess, workdir: Path) -> None:
    if r.returncode != 0:
        logs = "".join(f"\n== {p}\n{p.read_text()[-2000:]}"
                       for p in sorted((workdir / "results" / "logs").rglob("*.log")))
        raise AssertionError((r.stdout + r.stderr)[-3000:] + logs)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("ddp")
    params = _params(wd, launcher=TORCHRUN, batch=2, devices=(0, 1, 2, 3))
    # Four shard jobs side by side, bounded by four devices.
    r = smk(wd, params, "supernet_all", *[f"results/seg/search/sample/shard_{k}/rows.jsonl"
                                          for k in range(4)],
            "--cores", "4", "--resources", "gpu=4")
    _ok(r, wd)
    return wd


@pytest.mark.slow
def test_torchrun_world_size_is_recorded(ddp_run: Path) -> None:
    for phase in ("teacher", "supernet"):
        resolved = json.loads((ddp_run / f"results/seg/{phase}/resolved_params.json").read_text())
        assert resolved["world_size"] == 2, phase
        devices = resolved["devices"].split(",")
        assert len(devices) == 2 == len(set(devices)), resolved["devices"]
    client = tracking._client(tracking.default_uri(ddp_run))
    exp = client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`{tracking.TAG_PHASE}` = 'supernet'")
    assert [r.data.tags["scalenas.world_size"] for r in runs] == ["2"]  # rank 0 only


@pytest.mark.slow
def test_parallel_shard_jobs_get_distinct_devices(ddp_run: Path) -> None:
    got = [json.loads((ddp_run / f"results/seg/search/sample/shard_{k}/resolved_params.json")
                      .read_text())["devices"] for k in range(4)]
    assert all(len(d.split(",")) == 1 for d in got) and sorted(got) == ["0", "1", "2", "3"], got


@pytest.mark.slow
def test_changing_the_launcher_reruns_nothing(ddp_run: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, launcher="python", batch=2)
    r = smk(ddp_run, params, "--cores", "2", "-n", "supernet_all")
    _ok(r, ddp_run)
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_failing_rank_fails_the_job_with_one_line(ddp_run: Path, monkeypatch) -> None:
    from pipeline.stages.build import task_from_config

    params = ddp_run / "p.yaml"
    monkeypatch.chdir(ddp_run)
    task = task_from_config("seg", pconfig.from_dict(pconfig.load_resolved(params)))
    # One training image corrupt: the one rank whose share holds it fails, the other waits in a
    # collective until torchrun stops it.
    bad = Path(task.dataset("train", train=True).samples[3].image)
    bad.write_bytes(b"not a png")
    r = smk(ddp_run, params, "teacher_all", "--cores", "2", "--forcerun", "teacher",
            "--resources", "gpu=4", timeout=900)
    assert r.returncode != 0
    log = ddp_run / "results/logs/seg/teacher.log"
    assert str(log.relative_to(ddp_run)) in r.stdout + r.stderr
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: teacher[seg]: "), errors
    assert bad.name in errors[0]
    assert not (ddp_run / "results/seg/teacher/model.pt").exists()


@pytest.mark.parametrize("launcher, expected", [
    ("torchrunx --nproc_per_node 2", "'torchrunx' is not a command on PATH"),
    ("torchrun --nproc_per_node two", "needs --nproc_per_node N with N >= 1"),
    ("torchrun --nproc_per_node 8", "starts 8 processes per job but run.devices has 4"),
])
def test_a_launcher_that_cannot_start_stops_before_any_job(tmp_path: Path, launcher, expected):
    params = _params(tmp_path, launcher=launcher, batch=2, devices=(0, 1, 2, 3))
    r = smk(tmp_path, params, "--cores", "1", "-n", "supernet_all", timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "run.launcher" in ln]
    assert len(lines) == 1 and expected in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "results" / "seg").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_stops_before_any_job(tmp_path: Path) -> None:
    params = _params(tmp_path, launcher="python", batch=2)
    doc = yaml.safe_load(params.read_text())
    doc["run"]["device"] = "cuda"
    params.write_text(yaml.safe_dump(doc))
    # A dry run plans a GPU recipe anywhere (CI dry-runs the paper recipes; a cluster's login
    # node has no GPU): each training job asks for its device.
    r = smk(tmp_path, params, "--cores", "1", "-n", "supernet_all", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "results" / "seg").exists()
    r = smk(tmp_path, params, "--cores", "1", "supernet_all", timeout=120)
    assert r.returncode != 0
    assert "run.device is 'cuda' but torch sees no CUDA device" in r.stdout + r.stderr
    assert not (tmp_path / "results" / "seg").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_stage_on_a_cpu_node_fails_cleanly(tmp_path: Path) -> None:
    """The job side of the same check: a GPU job placed on a node without one."""
    params = _params(tmp_path, launcher="python", batch=2)
    out = tmp_path / "teacher"
    r = subprocess.run([sys.executable, "-m", "pipeline.stages.teacher", "--params", str(params),
                        "--task", "seg", "--out", str(out), "--device", "cuda"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2, r.stderr[-2000:]
    assert "run.device is 'cuda' but torch sees no CUDA device on this node" in r.stderr
    assert not out.exists()
