"""The pipeline on a real one-node SLURM cluster, through Snakemake's SLURM executor plugin and
workflow/profiles/slurm: the jobs go through sbatch (squeue lists them), and the results equal a
local run's byte for byte.

Needs root, Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and the plugin
(``pip install -e '.[slurm]'``); skipped, saying which is missing, elsewhere. The cluster (the
fixture ``slurm_env``) is tests/slurm_cluster.py's: started on localhost with a generated
``slurm.conf``, stopped by process ids.
"""
from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import slurm_cluster
from test_workflow import REPO, SNAKEMAKE, TINY_DATA, _env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


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


def test_prepare_train_and_search_through_slurm_equal_a_local_run(slurm_env, tmp_path: Path):
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
        t_slurm = _slurm_run(slurm_env, tmp_path / "slurm", target, t0)
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
                       env={**_env(), **slurm_env}, timeout=600)
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
    jobs = slurm_cluster.jobs(cluster)
    done = [j for j, (_, state) in jobs.items() if state == "COMPLETED"]
    submitted = out.count("has been submitted with SLURM jobid")
    # builtin_data, prepare, teacher, supernet, sample, 2 shards, merge
    assert submitted == 8 and len(done) >= 8, (jobs, out[-3000:])
    return time.monotonic() - t0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
