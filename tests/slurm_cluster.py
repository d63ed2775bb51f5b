"""A real one-node SLURM cluster on localhost, for the tests that run the pipeline through
workflow/profiles/slurm (tests/workflow/test_slurm.py, tests/tracking/test_team_postgres_slurm.py; the fixture
``slurm_env`` in conftest.py).

Needs root, Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and Snakemake's
SLURM executor plugin (``pip install -e '.[slurm]'``): :func:`missing` says which is missing.
The daemons run in the foreground with a generated ``slurm.conf`` and are stopped by their
process ids. The cluster's ports and ``/etc/slurm/slurm.conf`` are the machine's, so one cluster
runs at a time: a second waits for the first (a lock file), as with two pytest workers or two
checkouts testing side by side.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# /etc/slurm/slurm.conf: where the job steps (srun inside the batch jobs) look for it.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
#: Held while a cluster runs (fixed ports, the system slurm.conf).
LOCK = Path("/tmp/scalenas-slurm.lock")
#: How long a test waits for another test's cluster to end.
LOCK_WAIT_S = 3600


def missing() -> str | None:
    """Why a cluster cannot start here (a test's skip reason), else None."""
    if os.geteuid() != 0:
        return "needs root (munged runs as munge, slurmd as root)"
    gone = [c for c in NEEDED if shutil.which(c, path="/usr/sbin:/usr/bin:" + os.environ["PATH"])
            is None]
    if gone:
        return f"{', '.join(gone)} not installed (apt-get install -y slurm-wlm munge)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')"
    if SYSTEM_CONF.exists() and "# scalenas test cluster" not in SYSTEM_CONF.read_text():
        return f"{SYSTEM_CONF} belongs to another cluster"
    return None


def _conf(d: Path) -> str:
    host = socket.gethostname().split(".")[0]
    return f"""# scalenas test cluster (tests/slurm_cluster.py)
ClusterName=scalenas
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MinJobAge=3600
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName={host} CPUs={os.cpu_count()} RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def wait(ok, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not come up in {timeout} s")
        time.sleep(0.3)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with open(LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for the SLURM test cluster of another test ({LOCK})",
                  file=sys.stderr, flush=True)
            end = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > end:
                        raise AssertionError(f"{LOCK} still held after {LOCK_WAIT_S} s")
                    time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def running() -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd; yield the variables SLURM's commands need (add them
    to a command's environment); stop the daemons by process id."""
    with _machine_lock():
        t0 = time.monotonic()
        # munged needs a path others can traverse
        d = Path("/tmp") / f"scalenas-slurm-{os.getpid()}"
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("munge", "state", "spool"):
            (d / sub).mkdir(parents=True)
        d.chmod(0o755)
        shutil.chown(d / "munge", "munge", "munge")
        (d / "munge").chmod(0o755)
        conf = d / "slurm.conf"
        conf.write_text(_conf(d))
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(conf, SYSTEM_CONF)
        extra = {"SLURM_CONF": str(conf)}
        env = {**os.environ, **extra}
        procs: list[subprocess.Popen] = []
        try:
            # In the foreground (-F / -D): the pids are the daemons', to stop them by pid.
            procs.append(subprocess.Popen(
                ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged", "-F",
                 f"--socket={d}/munge/munge.socket", f"--pid-file={d}/munge/munged.pid",
                 f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait(lambda: (d / "munge" / "munge.socket").exists(), "munged")
            for daemon in ("slurmctld", "slurmd"):
                procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            # 120 s: slurmctld's first start on a loaded 2-core machine
            wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env,
                                                  capture_output=True, text=True).stdout,
                 "sinfo", timeout=120)
            print(f"SLURM up in {time.monotonic() - t0:.1f} s")
            yield extra
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            SYSTEM_CONF.unlink(missing_ok=True)
            shutil.rmtree(d, ignore_errors=True)


def jobs(cluster: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Every job the cluster knows (finished ones too, for MinJobAge): id -> (name, state)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %j %T"],
                         env={**os.environ, **cluster}, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return {f[0]: (f[1], f[2]) for f in (ln.split() for ln in out.splitlines()) if len(f) == 3}
