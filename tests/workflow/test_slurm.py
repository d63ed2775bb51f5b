"""The pipeline on a real one-node SLURM cluster, through Snakemake's SLURM executor plugin and
workflow/profiles/slurm: the jobs go through sbatch (squeue lists them), and the results equal a
local run's byte for byte.

Needs root, Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and the plugin
(``pip install -e '.[slurm]'``); skipped, saying which is missing, elsewhere. The daemons are
started here on localhost with a generated ``slurm.conf`` and stopped by their process ids.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, SNAKEMAKE, TINY_DATA, _env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# /etc/slurm/slurm.conf: where the job steps (srun inside the batch jobs) look for it.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")


def _missing() -> str | None:
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
    return f"""# scalenas test cluster (tests/workflow/test_slurm.py)
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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(why)
    t0 = time.monotonic()
    d = Path("/tmp") / f"scalenas-slurm-{os.getpid()}"  # munged needs a path others can traverse
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
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    try:
        # In the foreground (-F / -D): the pids are the daemons', to stop them by pid.
        procs.append(subprocess.Popen(
            ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged", "-F",
             f"--socket={d}/munge/munge.socket", f"--pid-file={d}/munge/munged.pid",
             f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: (d / "munge" / "munge.socket").exists(), "munged")
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env,
                                               capture_output=True, text=True).stdout, "sinfo")
        print(f"SLURM up in {time.monotonic() - t0:.1f} s")
        yield env
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


def _wait(ok, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not come up in {timeout} s")
        time.sleep(0.3)


def _params(d: Path) -> Path:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["data"].update(TINY_DATA)
    doc["tasks"] = ["seg"]
    doc["teacher"]["seg"] = {"iterations": 1, "batch_size": 2}
    doc["supernet"]["seg"].update(iterations=1, batch_size=2)
    doc["search"]["random"].update(shards=2, samples_per_cell=1)
    doc["calibration"]["images"] = 1  # the tiny data's search split holds 1 image
    p = d / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# Outputs whose bytes do not depend on where or when the job ran (logs, timings, MLflow ids and
# the resolved_params.json "source" path do).
COMPARED = ["data/builtin/SYNTH.json", "results/seg/data/manifest.json",
            "results/seg/teacher/model.pt", "results/seg/supernet/model.pt",
            "results/seg/search/sample/candidates/candidates.json",
            "results/seg/search/sample/merged/results.csv",
            "results/seg/search/sample/merged/front.csv"]


def test_prepare_train_and_search_through_slurm_equal_a_local_run(cluster, tmp_path: Path):
    target = "search_random_all"
    t0 = time.monotonic()
    # The local reference runs meanwhile: the cluster run spends most of its time waiting on
    # the plugin's status polls. One core, so that it leaves the cluster's jobs the other.
    lo = tmp_path / "local"
    lo.mkdir()
    log = tmp_path / "local.log"
    with open(log, "w") as out:
        local = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(lo),
                                  "--cores", "1", target, "--config", f"params={_params(lo)}"],
                                 stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                 start_new_session=True)
    try:
        t_slurm = _slurm_run(cluster, tmp_path / "slurm", target, t0)
        local.wait(timeout=900)
    finally:
        if local.poll() is None:  # the cluster run failed: stop the reference and its jobs
            os.killpg(local.pid, signal.SIGKILL)
            local.wait()
    assert local.returncode == 0, log.read_text()[-4000:]
    sl = tmp_path / "slurm"
    differ = [f for f in COMPARED if not filecmp.cmp(sl / f, lo / f, shallow=False)]
    assert not differ
    print(f"SLURM run {t_slurm:.0f} s; both done after {time.monotonic() - t0:.0f} s")

    # A job that fails on the cluster: the rule and its SLURM log are named.
    # A corrupt supernet checkpoint: the shard jobs that read it fail on the cluster.
    (sl / "results" / "seg" / "supernet" / "model.pt").write_bytes(b"not a checkpoint")
    r = subprocess.run(_slurm_cmd(sl, target, sl / "p.yaml"), capture_output=True, text=True,
                       env={**_env(), **cluster}, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Error in rule search_shard" in out, out[-3000:]
    assert f"{sl}/results/logs/slurm/rule_search_shard/" in out, out[-3000:]


def _slurm_cmd(sl: Path, target: str, params: Path) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(sl), "--profile",
            str(REPO / "workflow" / "profiles" / "slurm"), target, "--config", f"params={params}"]


def _slurm_run(cluster: dict[str, str], sl: Path, target: str, t0: float) -> float:
    """The run through SLURM; every job went through the cluster. Its duration."""
    sl.mkdir()
    r = subprocess.run(_slurm_cmd(sl, target, _params(sl)), capture_output=True, text=True,
                       env={**_env(), **cluster}, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    out = r.stdout + r.stderr
    jobs = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %j %T"], env=cluster,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    done = [j for j in jobs if j.strip() and j.split()[2] == "COMPLETED"]
    submitted = out.count("has been submitted with SLURM jobid")
    # builtin_data, prepare, teacher, supernet, sample, 2 shards, merge
    assert submitted == 8 and len(done) >= 8, (jobs, out[-3000:])
    return time.monotonic() - t0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
