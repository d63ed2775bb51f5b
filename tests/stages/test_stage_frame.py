"""The stage frame's resume directory: kept for the same inputs, discarded when an input changed."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from pipeline.stages.common import _check_replaceable, _work_dir


def _args(tmp_path: Path, ckpt: Path) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path / "out", params=tmp_path / "p.json",
                              run_settings=None, checkpoint=ckpt, task="seg", threads=1)


def test_work_dir_survives_same_inputs_and_is_reset_when_an_input_changes(tmp_path: Path) -> None:
    ckpt = tmp_path / "supernet.pt"
    ckpt.write_bytes(b"weights v1")
    work = _work_dir(tmp_path / "out", "hash1", _args(tmp_path, ckpt))
    (work / "rows.jsonl").write_text("progress\n")

    again = _work_dir(tmp_path / "out", "hash1", _args(tmp_path, ckpt))
    assert (again / "rows.jsonl").read_text() == "progress\n"  # a killed job resumes

    ckpt.write_bytes(b"weights v2")  # the upstream checkpoint was retrained
    fresh = _work_dir(tmp_path / "out", "hash1", _args(tmp_path, ckpt))
    assert not (fresh / "rows.jsonl").exists()

    (fresh / "rows.jsonl").write_text("progress\n")
    other = _work_dir(tmp_path / "out", "hash2", _args(tmp_path, ckpt))  # a parameter changed
    assert not (other / "rows.jsonl").exists()


def test_output_folder_made_by_snakemake_is_replaceable(tmp_path: Path) -> None:
    (tmp_path / "out" / "model").mkdir(parents=True)  # parents of declared outputs, all empty
    _check_replaceable(tmp_path / "out")
    (tmp_path / "out" / "model" / "notes.txt").write_text("someone's file")
    try:
        _check_replaceable(tmp_path / "out")
    except ValueError as e:
        assert "refusing to replace" in str(e)
    else:
        raise AssertionError("a folder holding files that no stage wrote was replaced")


def _run(tmp_path: Path, body, capsys) -> tuple[int, str]:
    from pipeline.stages.common import run_stage

    params = tmp_path / "params.yaml"
    params.write_text("tracking: {enabled: false}\ndata: {builtin: true}\n")
    rc = run_stage("report", body, ["--params", str(params), "--out", str(tmp_path / "out")],
                   needs_task=False)
    return rc, capsys.readouterr().err


def test_input_errors_exit_2_in_one_line_and_bugs_exit_1_with_traceback(tmp_path: Path,
                                                                         capsys) -> None:
    from pipeline.errors import ConfigError

    def bad_input(ctx):
        raise ConfigError("params.yaml: report.dpi: too small")

    def bug(ctx):
        return {}["missing"]  # a KeyError inside a stage is the pipeline's fault, not the user's

    def value_bug(ctx):
        raise ValueError("plain ValueError from library code")

    rc, err = _run(tmp_path, bad_input, capsys)
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["error: report: params.yaml: report.dpi: too small"]
    for fn, kind in ((bug, "KeyError"), (value_bug, "ValueError")):
        rc, err = _run(tmp_path, fn, capsys)
        assert rc == 1 and "Traceback" in err
        assert err.strip().splitlines()[-1].startswith(f"error: report: {kind}: ")
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_is_checked_only_in_jobs_given_gpus(tmp_path: Path, capsys, monkeypatch) -> None:
    """run.device 'cuda' on a node without CUDA: a job the workflow gave devices
    (SCALENAS_GPUS = resources.gpu > 0) stops with one line; a job given none (prepare, merge,
    evolve, report: they never touch the device) runs, as on a cluster's CPU nodes."""
    from pipeline.stages.common import run_stage

    params = tmp_path / "params.yaml"
    params.write_text("tracking: {enabled: false}\ndata: {builtin: true}\n")
    settings = tmp_path / "run.json"
    settings.write_text('{"run": {"device": "cuda"}}')
    seen = []

    def body(ctx):
        seen.append(ctx.device)

    argv = ["--params", str(params), "--run-settings", str(settings), "--out", str(tmp_path / "o")]
    monkeypatch.setenv("SCALENAS_GPUS", "0")
    assert run_stage("report", body, argv, needs_task=False) == 0
    assert seen == ["cuda"]
    monkeypatch.setenv("SCALENAS_GPUS", "1")
    assert run_stage("report", body, argv + ["--out", str(tmp_path / "o2")], needs_task=False) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.device is 'cuda' but torch sees no CUDA device" in err[0], err
    assert seen == ["cuda"] and not (tmp_path / "o2").exists()
