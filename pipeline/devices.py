"""A per-node pool of GPU ids: each job that runs side by side with others gets devices of its own.

Snakemake bounds how many devices are in use at once (``resources: gpu=N`` on the rules,
``--resources gpu=N`` on the command line) but never says *which* ones a job may use. This
module fills that gap: ``python -m pipeline.devices --pool DIR --devices 0,1,2,3 --count N --
CMD...`` (``--count`` defaults to ``$SCALENAS_GPUS``, which the workflow sets from the rule's
``resources.gpu``) takes ``N`` free devices of the pool, starts ``CMD`` with
``CUDA_VISIBLE_DEVICES`` set to them (``SCALENAS_DEVICES`` too, for the record) and frees them
when ``CMD`` ends.

A device is held by an exclusive ``flock`` on ``DIR/<host>/<id>.lock``, taken by this process
and kept for the lifetime of the command. The kernel drops the lock when the holder dies, however
it dies (kill -9 included), so a crashed job never leaves a device taken: there is no stale lock
to reclaim and no race between two jobs reclaiming the same one. The file holds the pid of the
holder for people reading the directory. The directory is keyed by host name because device ids
are per node, while ``results/`` may be shared by the nodes of a cluster.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ENV = "SCALENAS_DEVICES"


class PoolError(RuntimeError):
    pass


def host_dir(pool: str | Path) -> Path:
    return Path(pool) / socket.gethostname().split(".")[0]


def parse_ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids or len(set(ids)) != len(ids) or not all(t.isdigit() for t in ids):
        raise PoolError(f"--devices: expected distinct device ids such as 0,1,2,3, got {text!r}")
    return ids


def try_acquire(pool: str | Path, ids: Sequence[str], count: int) -> list[tuple[str, int]] | None:
    """``count`` free devices of ``ids`` as (id, open locked fd), or None (none taken) if fewer
    are free."""
    d = host_dir(pool)
    d.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, int]] = []
    for dev in ids:
        if len(held) == count:
            break
        fd = os.open(d / f"{dev}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        held.append((dev, fd))
    if len(held) < count:
        release(held)
        return None
    return held


def release(held: Sequence[tuple[str, int]]) -> None:
    for _, fd in held:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


def acquire(pool: str | Path, ids: Sequence[str], count: int, timeout: float,
            poll: float = 0.2) -> list[tuple[str, int]]:
    """Wait (up to ``timeout`` seconds) until ``count`` devices are free; take them all at once.

    Taking all or none avoids two torchrun jobs each holding half of what the other needs."""
    if not 1 <= count <= len(ids):
        raise PoolError(f"a job asks for {count} device(s) but the pool has {len(ids)} "
                        f"({','.join(ids)}): see run.devices and run.launcher")
    deadline = time.monotonic() + timeout
    while True:
        held = try_acquire(pool, ids, count)
        if held is not None:
            return held
        if time.monotonic() > deadline:
            raise PoolError(f"no {count} free device(s) in {host_dir(pool)} after {timeout:.0f} s "
                            "(is --resources gpu= larger than the pool?)")
        time.sleep(poll)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.devices",
                                description="Run a command on devices of its own from a pool.")
    p.add_argument("--pool", required=True, type=Path, help="lock directory (results/.devices)")
    p.add_argument("--devices", required=True, help="the pool's device ids, e.g. 0,1,2,3")
    p.add_argument("--count", type=int, default=int(os.environ.get("SCALENAS_GPUS") or 1),
                   help="devices this command needs (default: $SCALENAS_GPUS, else 1)")
    p.add_argument("--timeout", type=float, default=24 * 3600.0,
                   help="seconds to wait for free devices")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if cmd and os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        # SLURM already gave this job its GPUs (--gpus): they are its own; use them as they are.
        os.environ[ENV] = os.environ["CUDA_VISIBLE_DEVICES"]
        os.execvp(cmd[0], cmd)
    try:
        if not cmd:
            raise PoolError("no command given after --")
        held = acquire(args.pool, parse_ids(args.devices), args.count, args.timeout)
    except PoolError as e:
        print(f"error: device pool: {e}", file=sys.stderr)
        return 2
    visible = ",".join(dev for dev, _ in held)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, ENV: visible}
    try:
        child = subprocess.Popen(cmd, env=env)
        # Snakemake stops a job with SIGTERM: pass it on, then free the devices after the child.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: child.send_signal(s))
        return child.wait()
    finally:
        release(held)


if __name__ == "__main__":
    sys.exit(main())
