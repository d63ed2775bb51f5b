"""The workflow frame: Snakemake dry runs, a real prepare phase, rerun isolation, DVC wiring."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import doc_section

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
DVC = str(BIN / "dvc")

# A tiny built-in dataset so the real prepare phase takes seconds.
TINY_DATA = {"seg_train": 6, "seg_val": 2, "seg_size": [64, 128],
             "pose_train": 6, "pose_val": 2, "pose_size": [96, 128]}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "SCALENAS_PARENT_RUN_ID",
                        "SCALENAS_LATENCY_FP")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return {**env, **extra}


def _params(tmp: Path, edit=None, name: str = "p.yaml") -> Path:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["data"].update(TINY_DATA)
    doc["calibration"]["images"] = 2  # prepare checks that the tiny train split holds them
    if edit:
        edit(doc)
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return path


def smk(workdir: Path, params: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Snakemake on `workdir`; `env`: extra environment variables."""
    # --config takes several values: keep it last.
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args,
           "--config", f"params={params}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**(env or {})),
                          timeout=300)


def test_dry_run_of_default_params(tmp_path: Path) -> None:
    r = smk(tmp_path, REPO / "params" / "default.yaml", "-n", "-p")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "builtin_data" in out and "prepare" in out
    # search.objective gflops (the default): no latency table in the job graph, and no job's
    # command (printed with -p) reads one.
    assert "pipeline.stages.search_shard" in out and "pipeline.stages.finetune" in out
    assert "latency_table" not in out and "--latency-table" not in out
    # A dry run writes nothing under results/, not even the per-rule parameter files (issue 21;
    # tests/config/test_params_lock.py): it plans the param_file jobs that publish them.
    assert "param_file" in out and not (tmp_path / "results").exists()


def test_latency_objective_builds_the_table_its_search_reads(tmp_path: Path) -> None:
    """The README's `snakemake --cores 2 latency_all`, for real; then the search's jobs read
    that table (search.objective latency) and the table's path names its device."""
    import json

    def latency(d):
        d["tasks"] = ["seg"]
        d["search"]["objective"] = "latency"
        d["tracking"]["enabled"] = False
    params = _params(tmp_path, latency)
    assert "snakemake --cores 2 latency_all" in doc_section("Latency as a search objective")
    r = smk(tmp_path, params, "latency_all")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    (table,) = (tmp_path / "results" / "seg" / "search" / "latency").glob("*/table.json")
    doc = json.loads(table.read_text())
    assert doc["device"]["fingerprint"] == table.parent.name and doc["input_hw"] == [64, 128]
    assert doc["device"]["threads"] == 1  # run.threads: the search jobs' threads
    r = smk(tmp_path, params, "-n", "-p", "search_evolution_all")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "rule latency_table" not in out  # built above, up to date
    rel = table.relative_to(tmp_path)
    for stage in ("search_shard", "search_merge", "evolve", "search_summary"):
        assert re.search(rf"pipeline\.stages\.{stage} .*--latency-table {rel}", out), stage

    # The planning process decides the device and hands it to the jobs (SCALENAS_LATENCY_FP):
    # a table of another device, brought under its fingerprint, is what every job reads, and the
    # table job has nothing to do (README: search for another device).
    fp = "0123456789abcdef"
    doc["device"].update(cpu="Some Other CPU", fingerprint=fp)
    other = table.parent.parent / fp / "table.json"
    other.parent.mkdir()
    other.write_text(json.dumps(doc))
    r = smk(tmp_path, params, "-n", "-p", "search_evolution_all", env={"SCALENAS_LATENCY_FP": fp})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "rule latency_table" not in out and str(rel) not in out
    for stage in ("search_shard", "search_merge", "evolve", "search_summary"):
        assert re.search(rf"pipeline\.stages\.{stage} .*--latency-table "
                         rf"{other.relative_to(tmp_path)}", out), stage
    # Missing, that table would be measured here (a local rule), which is not that device: the
    # job refuses with one line before measuring.
    other.unlink()
    r = smk(tmp_path, params, "latency_all", env={"SCALENAS_LATENCY_FP": fp})
    assert r.returncode != 0 and not other.exists()
    (log,) = (tmp_path / "results" / "logs" / "seg" / "search").glob(f"latency_{fp}*")
    err = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"not the device the run planned [{fp}]" in err[0], log.read_text()
    r = smk(tmp_path, params, "-n", "latency_all", env={"SCALENAS_LATENCY_FP": "../x"})
    assert r.returncode != 0 and "SCALENAS_LATENCY_FP='../x': not a device fingerprint" in (
        r.stdout + r.stderr)


def test_prepare_runs_then_nothing_to_do_and_changes_rerun_exactly(tmp_path: Path) -> None:
    params = _params(tmp_path)
    r = smk(tmp_path, params, "prepare_all")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    seg = tmp_path / "results" / "seg" / "data"
    manifest = yaml.safe_load((seg / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["search"]["count"] == 6
    assert manifest["data_hash"].startswith("sha256:")
    resolved = yaml.safe_load((seg / "resolved_params.json").read_text())
    assert resolved["params"]["seg"]["search_fraction"] == 0.2
    assert not list((tmp_path / "results" / "seg").glob(".data.tmp-*"))

    r = smk(tmp_path, params, "-n", "prepare_all")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]

    # A parameter prepare does not read: nothing to do.
    def more_samples(d): d["search"]["random"]["samples_per_cell"] = 7
    r = smk(tmp_path, _params(tmp_path, more_samples), "-n", "prepare_all")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    # An execution setting: nothing to do either.
    def threads(d): d["run"]["threads"] = 2; d["run"]["device"] = "auto"
    r = smk(tmp_path, _params(tmp_path, threads), "-n", "prepare_all")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]

    # A parameter of seg's prepare: exactly that job.
    def frac(d): d["seg"]["search_fraction"] = 0.5
    r = smk(tmp_path, _params(tmp_path, frac), "-n", "prepare_all")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert out.count("rule prepare:") == 1 and "task=seg" in out and "builtin_data" not in out, out

    # Every stage run and the parent run are in the store, tagged.
    from pipeline import tracking
    uri = tracking.default_uri(tmp_path)
    client = tracking._client(uri)
    exp = client.get_experiment_by_name("scalenas")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"default", "data", "prepare:seg", "prepare:pose"}
    parent = runs["default"].info.run_id
    assert runs["default"].info.status == "FINISHED"
    for name in ("data", "prepare:seg", "prepare:pose"):
        assert runs[name].data.tags[tracking.PARENT_TAG] == parent
        assert runs[name].data.tags[tracking.TAG_PARAMS_HASH]
    assert runs["prepare:seg"].data.tags[tracking.TAG_DATA_HASH] == manifest["data_hash"]
    assert runs["prepare:seg"].data.metrics["search_images"] >= 1


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["search"]["random"].update(samples_per_celll=3),
     "search.random.samples_per_celll: unknown key"),
    (lambda d: d["seg"].update(width="eight"), "seg.width: expected integer"),
    (lambda d: (d["data"].update(builtin=False), d["seg"].update(root="datasets/nope")),
     "seg.root: directory not found: datasets/nope"),
], ids=["unknown-key", "wrong-type", "missing-dataset"])
def test_bad_params_fail_before_any_job(tmp_path: Path, edit, expected) -> None:
    r = smk(tmp_path, _params(tmp_path, edit), "prepare_all")
    assert r.returncode != 0
    assert expected in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "results" / "seg").exists() and not (tmp_path / "data").exists()


def test_failed_stage_leaves_no_output(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    def real(d):
        d["tasks"] = ["seg"]
        d["data"]["builtin"] = False
        d["seg"]["root"] = str(empty)
        d["tracking"]["enabled"] = False
    params = _params(tmp_path, real)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pipeline.stages.prepare", "--params", str(params),
                        "--task", "seg", "--out", str(out)], capture_output=True, text=True,
                       env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: prepare[seg]: ") and "empty" in lines[-1], r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_builtin_data_hash_matches_data_dvc(tmp_path: Path) -> None:
    """The quick start regenerates data/ from scratch; its hash must be data.dvc's."""
    from pipeline import config as pc
    from pipeline.data.synth import generate_all

    d = pc.load_params(REPO / "params" / "default.yaml").data
    generate_all(tmp_path / "data" / "builtin", d.seed, ("seg", "pose"), seg_train=d.seg_train,
                 seg_val=d.seg_val, seg_size_hw=d.seg_size, pose_train=d.pose_train,
                 pose_val=d.pose_val, pose_size_hw=d.pose_size)
    shutil.copy(REPO / "data.dvc", tmp_path / "data.dvc")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    env = _env()
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    r = subprocess.run([DVC, "status", "data.dvc"], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=120)
    # A fresh clone has no DVC cache: "not in cache" means the hash matches; "modified" not.
    assert r.returncode == 0 and "modified" not in r.stdout, r.stdout + r.stderr
    assert "up to date" in r.stdout or "not in cache" in r.stdout, r.stdout + r.stderr


def test_dvc_yaml_calls_snakemake_per_phase() -> None:
    from pipeline import config as pc

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    default = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    for name, st in stages.items():
        # One Snakemake target per phase (or group of phases), never the jobs themselves.
        assert re.fullmatch(r"snakemake --cores \d+ [a-z_]+_all", st["cmd"]), (name, st["cmd"])
        for out in st.get("outs") or []:  # the frozen audit stage declares none
            (path, opts), = out.items()
            assert opts.get("persist") is True, f"{name}: {path} must be persist: true"
        deps = set(st["deps"])
        if name not in pc.PHASES:
            continue  # a DVC stage that groups several phases names its files itself
        per_task = any("{task}" in k for k in pc.PHASES[name])
        for task in default["tasks"] if per_task else [None]:
            rel = f"results/params/{task}/{name}.json" if task else f"results/params/{name}.json"
            assert rel in deps, f"{name}: per-rule parameter file {rel} is not a dep"
        # The phase's own sections are declared as DVC params (task sections and `run` may be
        # left to the per-rule files, which hold every resolved value).
        own = {k.split(".")[0] for k in pc.phase_keys(name, "seg")} - {"run", "seg", "pose"}
        (pfile, keys), = st["params"][0].items()
        assert pfile == "params/default.yaml"
        assert own <= {k.split(".")[0] for k in keys}, f"{name}: params miss {own}"
