"""A full disk is named as such: one line ``<path>: no space left on device``, exit 2, and nothing
half-written (issue 21, item 6).

The write sites run against a real full file system: a 64 KiB tmpfs (mounting needs root; the
tests are skipped without it). The translation of each shape the error takes is checked on its
own too."""
from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import diskfull, tracking
from pipeline.diskfull import DiskFullError
from pipeline.io import atomic_write_text
from pipeline.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _mount(path: Path, size: str = "64k") -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def full(tmp_path: Path):
    """A 64 KiB file system: anything larger than that does not fit."""
    root = tmp_path / "small"
    _mount(root)
    yield root
    # Lazy: a torch writer or an SQLite engine still referenced by the test's traceback may
    # hold a file open there.
    subprocess.run(["umount", "-l", str(root)], check=True)


# -- each shape of the error, translated ------------------------------------------------------------

class _SqlAlchemyLike(Exception):
    """SQLAlchemy keeps the DB-API error as ``.orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(f"(sqlite3.OperationalError) {orig}")
        self.orig = orig


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__context__ = inner
    return outer


CASES = [
    ("oserror", OSError(errno.ENOSPC, "No space left on device", "/x/out.json"), "/x",
     "/x/out.json: no space left on device"),
    ("torch-zip-writer", _chained(RuntimeError("[enforce fail at inline_container.cc:672] . "
                                               "unexpected pos 704 vs 598"),
                                  OSError(errno.ENOSPC, "No space left on device")),
     "/x/checkpoints", "/x/checkpoints: no space left on device"),
    ("sqlite", _SqlAlchemyLike(sqlite3.OperationalError("database or disk is full")),
     "/x/mlflow.db", "/x/mlflow.db: no space left on device"),
    ("ours", DiskFullError("/x/a.txt"), None, "/x/a.txt: no space left on device"),
]


@pytest.mark.parametrize("error, where, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_shape_of_a_full_disk_is_one_message(error, where, message) -> None:
    found = diskfull.find(error, where)
    assert isinstance(found, DiskFullError) and isinstance(found, OSError)
    assert str(found) == message and found.errno == errno.ENOSPC


def test_sqlite_error_names_the_store_not_the_output() -> None:
    e = _SqlAlchemyLike(sqlite3.OperationalError("database or disk is full"))
    assert str(diskfull.find(e, "/out/.x.tmp-1", store="/db/mlflow.db")) == (
        "/db/mlflow.db: no space left on device")


def test_other_errors_are_not_called_a_full_disk(tmp_path: Path) -> None:
    assert diskfull.find(ValueError("bad value"), tmp_path) is None
    assert diskfull.find(OSError(errno.EACCES, "Permission denied", "x"), tmp_path) is None
    # torch's short write with no OS error behind it counts only where the disk is (nearly) full
    assert diskfull.find(RuntimeError("unexpected pos 1 vs 2"), tmp_path) is None


# -- the write sites, on a full file system --------------------------------------------------------

def test_atomic_write(full: Path) -> None:
    (full / "keep.txt").write_text("old\n")
    with pytest.raises(DiskFullError) as e:
        atomic_write_text(full / "keep.txt", "x" * 200_000)
    assert str(e.value) == f"{full}/keep.txt: no space left on device"
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert (full / "keep.txt").read_text() == "old\n"


def test_checkpoint_write_keeps_the_last_checkpoint(full: Path) -> None:
    ckpt = full / "checkpoints"
    save_checkpoint(ckpt, {"w": torch.zeros(10)})
    before = (ckpt / "last.pt").read_bytes()
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(ckpt, {"w": torch.zeros(100_000)})
    assert str(e.value) == f"{ckpt}: no space left on device"
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]
    assert (ckpt / "last.pt").read_bytes() == before


def test_torch_short_write_without_an_os_error(full: Path) -> None:
    """torch.save to a path reports only "unexpected pos": the free space says why."""
    with pytest.raises(RuntimeError) as e:
        torch.save({"w": torch.zeros(100_000)}, full / "w.pt")
    assert str(diskfull.find(e.value, full)) == f"{full}: no space left on device"


@pytest.mark.slow  # importing MLflow and creating a store: seconds
def test_mlflow_store(full: Path) -> None:
    uri = f"sqlite:///{full}/mlflow.db"
    with pytest.raises(DiskFullError) as e:
        tracking.start_run("x", uri=uri, experiment="e")
    assert str(e.value) == f"{full}/mlflow.db: no space left on device"
    assert not any(p.name.endswith(".tmp") or p.name == "mlflow.db" for p in full.iterdir())


def test_stage_frame_prints_one_line_and_exits_2(full: Path, tmp_path: Path, capsys) -> None:
    """The built-in data stage writing onto a full disk: one line, exit 2, nothing left."""
    from pipeline.stages import prepare

    params = tmp_path / "p.yaml"
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tracking"]["enabled"] = False
    params.write_text(yaml.safe_dump(doc))
    rc = prepare.main(["--phase", "data", "--params", str(params), "--out", str(full / "builtin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in "\n".join(err)
    assert re.fullmatch(rf"error: data: {re.escape(str(full))}/\S+: no space left on device",
                        err[-1]), err[-1]
    # No partial output; only the stage's resume folder (kept on failure by design).
    assert [p.name for p in full.iterdir()] == [".builtin.work"]


@pytest.mark.slow  # importing MLflow and creating a store: seconds
def test_stage_whose_mlflow_store_is_full(full: Path, tmp_path: Path, capsys,
                                          monkeypatch) -> None:
    """The output has room, the store's disk has none: the line names the store."""
    from pipeline.stages import prepare

    params = tmp_path / "p.yaml"
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["tracking"].update(enabled=True, uri=f"sqlite:///{full}/mlflow.db")
    params.write_text(yaml.safe_dump(doc))
    monkeypatch.delenv(tracking.URI_ENV, raising=False)
    rc = prepare.main(["--phase", "data", "--params", str(params), "--out",
                       str(tmp_path / "builtin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == f"error: data: {full}/mlflow.db: no space left on device", err
    assert not (tmp_path / "builtin").exists()


@pytest.mark.slow
def test_workflow_start_names_the_full_disk(tmp_path: Path) -> None:
    """onstart (MLflow's start) on a full results/: one line, exit 2, no half-built store."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "default.yaml").write_text((REPO / "params" / "default.yaml").read_text())
    _mount(tmp_path / "results")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALENAS_", "MLFLOW_"))}
        env.update(MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
        r = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d",
                            str(tmp_path), "--cores", "1", "prepare_all"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 2, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        # The first write that finds the disk full names its file: a per-rule parameter file or
        # the MLflow store, whichever onstart writes first.
        full = [l for l in out.splitlines() if l.endswith(": no space left on device")]
        assert len(full) == 1 and re.fullmatch(
            rf"error: ({re.escape(str(tmp_path))}/)?results/\S+: no space left on device",
            full[0]), out[-3000:]
        assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".mlflow")]
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "results")], check=True)
