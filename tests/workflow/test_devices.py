"""The per-job device pool (pipeline/devices.py): real processes racing for real lock files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.devices import acquire, host_dir, release, try_acquire

# Each command records which devices it got and when it held them.
RECORD = ('import os, sys, time; t0 = time.time(); time.sleep(0.4); '
          'd = os.environ["CUDA_VISIBLE_DEVICES"]; '
          'open(sys.argv[1], "w").write(f"{d} {t0} {time.time()}")')


def _pool(pool: Path, count: int, *cmd: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.devices", "--pool", str(pool), "--devices", "0,1,2,3",
            "--count", str(count), "--", *cmd]


def test_parallel_jobs_get_distinct_devices_and_never_oversubscribe(tmp_path: Path) -> None:
    pool = tmp_path / ".devices"
    counts = [1, 1, 2, 1, 1, 2, 1, 1]  # two "torchrun" jobs of 2 processes among single jobs
    procs = [subprocess.Popen(_pool(pool, n, sys.executable, "-c", RECORD, str(tmp_path / f"j{i}")))
             for i, n in enumerate(counts)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    jobs = []
    for i, n in enumerate(counts):
        devs, t0, t1 = (tmp_path / f"j{i}").read_text().split()
        ids = devs.split(",")
        assert len(ids) == n == len(set(ids)) and set(ids) <= {"0", "1", "2", "3"}
        jobs.append((set(ids), float(t0), float(t1)))
    # At every job's start: the devices held by the jobs running then are disjoint, at most 4.
    for _, start, _ in jobs:
        running = [d for d, t0, t1 in jobs if t0 <= start < t1]
        held = [x for d in running for x in d]
        assert len(held) == len(set(held)) <= 4, running
    assert max(sum(1 for _, t0, t1 in jobs if t0 <= s < t1) for _, s, _ in jobs) >= 2  # overlap
    assert not any((host_dir(pool) / f"{d}.lock").read_text() for d in "0123")  # all freed


def test_a_killed_holder_frees_its_device(tmp_path: Path) -> None:
    pool = tmp_path / ".devices"
    holder = subprocess.Popen(_pool(pool, 4, sys.executable, "-c", "import time; time.sleep(60)"),
                              start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
            (host_dir(pool) / f"{d}.lock").is_file() and (host_dir(pool) / f"{d}.lock").read_text()
            for d in "0123"):
        time.sleep(0.05)
    assert try_acquire(pool, ["0", "1", "2", "3"], 1) is None  # all four are taken
    os.killpg(holder.pid, signal.SIGKILL)  # no cleanup code runs: the kernel drops the locks
    holder.wait(timeout=10)
    held = acquire(pool, ["0", "1", "2", "3"], 4, timeout=10)
    assert [d for d, _ in held] == ["0", "1", "2", "3"]
    release(held)


def test_asking_for_more_than_the_pool_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(_pool(tmp_path, 5, "true"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: device pool: a job asks for 5 device(s) but the pool has 4 (0,1,2,3): see "
        "run.devices and run.launcher"]
