"""The stage frame's resume directory: kept for the same inputs, discarded when an input changed."""
from __future__ import annotations

import argparse
from pathlib import Path

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
