"""Kill -9 in the middle of a supernet stage, rerun the same command: bitwise the same weights.

Also the stage's one-line errors for bad input (exit status 2, nothing published).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import config as pconfig
from pipeline.data.synth import generate_all
from pipeline.nets.supernet import SuperNet
from pipeline.train.artifacts import read_trained, save_trained
from pipeline.train.checkpoint import read_checkpoint

ITERATIONS = 8
GROUPS = [{"name": "a", "fusion_prob": 0.0, "depths": [2]},
          {"name": "b", "fusion_prob": 0.5, "depths": [2, 3]}]


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("resume")
    root = base / "builtin"
    generate_all(root, 0, tasks=("pose",), pose_train=12, pose_val=2, pose_size_hw=(96, 128))
    doc = {
        "run": {"seed": 3, "device": "cpu"},
        "tasks": ["pose"],
        "data": {"builtin": True, "root": str(root)},
        "pose": {"root": str(root / "coco"), "width": 8, "input_size": [64, 64], "det_file": None},
        "supernet": {"pose": {"iterations": ITERATIONS, "batch_size": 2, "checkpoint_every": 2,
                              "kd_ratio": 0.0, "init_from_teacher": False, "groups": GROUPS,
                              "optimizer": {"name": "adam", "lr": 0.001}}},
        "tracking": {"enabled": False},
    }
    path = base / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def command(params: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.stages.supernet", "--params", str(params),
            "--task", "pose", "--out", str(out), "--threads", "1", *extra]


def checkpoint_dir(params: Path, out: Path) -> Path:
    """Where the stage keeps its checkpoints (pipeline.train.stage_util.training_dir)."""
    phase = pconfig.phase_params(pconfig.load_resolved(params), "supernet", "pose")
    return out.parent / ".supernet.work" / f"train-{pconfig.params_hash(phase)}" / "checkpoints"


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return read_trained(out / "model.pt", task="pose", width=8, kind="supernet")[0]


@pytest.mark.slow
def test_kill_and_rerun_gives_bitwise_identical_weights(params, tmp_path):
    ref = tmp_path / "ref" / "supernet"
    done = run(command(params, ref))
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "killed" / "supernet"
    ckpt = checkpoint_dir(params, out) / "last.pt"
    proc = subprocess.Popen(command(params, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    stopped_at = read_checkpoint(ckpt)["iteration"]
    assert 0 < stopped_at < ITERATIONS, "the run was not killed in the middle"
    assert not (out / "model.pt").exists()  # nothing published by the killed run

    again = run(command(params, out))
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = weights(ref), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_state = read_checkpoint(checkpoint_dir(params, ref) / "last.pt")
    new_state = read_checkpoint(ckpt)
    assert new_state["iteration"] == ITERATIONS
    assert new_state["stats"] == ref_state["stats"] | {"seconds": new_state["stats"]["seconds"]}
    assert all(torch.equal(x, y) for x, y in zip(
        ref_state["rng"]["torch"].flatten(), new_state["rng"]["torch"].flatten()))


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: supernet[pose]: ")
    return last


@pytest.mark.slow
def test_stage_bad_inputs(params, tmp_path):
    # a resume file from another configuration
    out = tmp_path / "s" / "supernet"
    work = checkpoint_dir(params, out)
    work.mkdir(parents=True)
    torch.save({"format": "scalenas-train-ckpt/1", "fingerprint": "0123456789abcdef",
                "iteration": 1}, work / "last.pt")
    msg = one_line_error(run(command(params, out)))
    assert "last.pt: resume checkpoint comes from another configuration" in msg
    assert not out.exists()

    # a teacher of the wrong width (init_from_teacher switched on through a second params file)
    doc = yaml.safe_load(params.read_text())
    doc["supernet"]["pose"]["init_from_teacher"] = True
    p2 = tmp_path / "p2.yaml"
    p2.write_text(yaml.safe_dump(doc))
    wide = SuperNet("pose", 16, seed=0)
    t16 = tmp_path / "teacher16.pt"
    save_trained(t16, wide, {"kind": "teacher", "task": "pose", "width": 16, "num_outputs": 17,
                             "arch": wide.arch.to_dict()})
    out2 = tmp_path / "t" / "supernet"
    msg = one_line_error(run(command(p2, out2, "--teacher", str(t16))))
    assert "teacher16.pt: a teacher of task 'pose' and width 16, but width 8 is needed" in msg
    # (a corrupt teacher file: tests/train/test_train_loop.py::test_bad_teacher_files)
    # no teacher given although one is needed
    msg = one_line_error(run(command(p2, out2)))
    assert "--teacher" in msg
    assert not out2.exists()
