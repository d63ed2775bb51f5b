"""Bad inputs and kills, as a new user meets them: through the real `scalenas` command, the real
stage entry points and `snakemake`. One row per case: (files to create, command, expected exit
code, expected start of the message line). Every case must finish under a timeout, print no
traceback, and leave every file it was given unchanged (hashes before and after)."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import doc_section

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCALENAS = str(BIN / "scalenas")
SNAKEMAKE = str(BIN / "snakemake")
TIMEOUT = 120

# A tiny built-in dataset (as tests/workflow/test_workflow.py) so the real phases take seconds.
TINY_DATA = {"seg_train": 6, "seg_val": 2, "seg_size": [64, 128],
             "pose_train": 6, "pose_val": 2, "pose_size": [96, 128]}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "SCALENAS_PARENT_RUN_ID",
                        "SCALENAS_WORKFLOW_PID")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _params(doc_edit=None) -> str:
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["data"].update(TINY_DATA)
    doc["calibration"]["images"] = 2  # prepare checks that the tiny train split holds them
    if doc_edit:
        doc_edit(doc)
    return yaml.safe_dump(doc)


def _png(path: Path, w: int, h: int) -> None:
    from PIL import Image

    Image.new("RGB", (w, h), (40, 80, 120)).save(path)


# -- the cases -------------------------------------------------------------------------------------
# Each setup(dir) creates the inputs; cmd is run in dir. "{py}" is this interpreter.
DEEP = "[" * 5000 + "]" * 5000


def _arch(d: Path) -> None:
    subprocess.run([SCALENAS, "arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth",
                    "2,3", "--seed", "0", "-o", str(d / "a.json")], check=True, env=_env(),
                   capture_output=True, timeout=TIMEOUT)


def _model(d: Path, task: str = "seg") -> None:
    from pipeline.nets.export import export_subnet, save_model
    from pipeline.nets.supernet import SuperNet
    from pipeline.space.sample import smallest

    sn = SuperNet(task, width=8, num_outputs=3 if task == "seg" else 17)
    sn.set_arch(smallest(task))
    save_model(d / "model", export_subnet(sn).eval(), {"input_hw": [64, 48]})


def _npy_truncated(d: Path) -> None:
    from pipeline.space.official import official_bytes
    from pipeline.space.registry import resolve

    data = official_bytes(resolve("hrnet", "seg"))
    (d / "t.npy").write_bytes(data[: len(data) - 40])


def _write(name: str, data: str | bytes):
    def setup(d: Path) -> None:
        (d / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def _all(*setups):
    def setup(d: Path) -> None:
        for s in setups:
            s(d)
    return setup


def _fifo(name: str):
    def setup(d: Path) -> None:
        os.mkfifo(d / name)
    return setup


def _deep_model(d: Path) -> None:
    _model(d)
    (d / "model" / "model.json").write_text(DEEP)


CLI_CASES = [
    # (id, setup, argv, exit code, first line starts with)
    ("deep-json-arch", _write("deep.json", DEEP), ["arch", "profile", "deep.json", "--task", "seg", "--width", "32"],
     2, "scalenas: error: deep.json: malformed JSON: nested too deeply"),
    ("deep-json-show", _write("deep.json", DEEP), ["arch", "show", "deep.json"],
     2, "scalenas: error: deep.json: malformed JSON: nested too deeply"),
    ("fifo-npy", _fifo("f.npy"), ["arch", "import", "f.npy", "-o", "f.json"],
     2, "scalenas: error: f.npy: architecture file is not a regular file (a FIFO)"),
    ("fifo-json", _fifo("f.json"), ["arch", "show", "f.json"],
     2, "scalenas: error: f.json: architecture file is not a regular file (a FIFO)"),
    ("big-npy", _write("big.npy", b"\0" * (5 << 20)), ["arch", "import", "big.npy", "-o", "b.json"],
     2, "scalenas: error: big.npy: architecture file too large (5.0 MiB (5242880 bytes)"),
    ("truncated-npy", _npy_truncated, ["arch", "import", "t.npy", "-o", "t.json"],
     2, "scalenas: error: t.npy: truncated file"),
    ("dir-arch", lambda d: (d / "adir").mkdir(), ["arch", "import", "adir", "-o", "x.json"],
     2, "scalenas: error: adir: is a directory (architecture file expected)"),
    ("missing-arch", None, ["arch", "show", "nope.json"],
     2, "scalenas: error: nope.json: architecture file not found"),
    ("not-utf8-arch", _write("bin.json", b"\xff\xfe\x00x"), ["arch", "show", "bin.json"],
     2, "scalenas: error: bin.json: architecture file is not UTF-8 text (byte 0xff at offset 0)"),
    ("negative-seed", None, ["arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth", "2,3",
                             "--seed", "-1", "-o", "a.json"],
     2, "scalenas arch sample: error: argument --seed: expected a non-negative integer seed"),
    ("write-to-proc", None, ["arch", "sample", "--task", "seg", "--fusion", "0.5", "--depth", "2,3",
                             "--seed", "0", "-o", "/proc/x.json"],
     2, "scalenas: error: /proc/x.json: cannot write"),
    ("deep-model-json", _deep_model, ["predict", "img.png", "--model", "model", "-o", "o.png"],
     2, "scalenas: error: model/model.json: unreadable model record: nested too deeply"),
    ("predict-dir", lambda d: (d / "imgdir").mkdir(), ["predict", "imgdir", "--model", "model"],
     2, "scalenas: error: imgdir: no image files found"),
    ("predict-fifo", _fifo("img.png"), ["predict", "img.png", "--model", "model"],
     2, "scalenas: error: img.png: image file is not a regular file (a FIFO)"),
    ("predict-huge-image", lambda d: _png(d / "huge.png", 9000, 9000),
     ["predict", "huge.png", "--model", "model", "-o", "o.png"],
     2, "scalenas: error: huge.png: image too large (9000x9000 = 81000000 pixels"),
    ("predict-deep-boxes", _all(lambda d: _model(d, "pose"), _write("boxes.json", DEEP)),
     ["predict", "img.png", "--model", "model", "--boxes", "boxes.json", "-o", "o.png"],
     2, "scalenas: error: boxes.json: unreadable boxes file: nested too deeply"),
    ("predict-huge-box", lambda d: _model(d, "pose"),
     ["predict", "img.png", "--model", "model", "--box", "0,0,1e308,1e308", "-o", "o.png"],
     2, "scalenas: error: box 0,0,1e+308,1e+308: must overlap the 70x50 image"),
    ("predict-box-outside", lambda d: _model(d, "pose"),
     ["predict", "img.png", "--model", "model", "--box", "500,500,10,10", "-o", "o.png"],
     2, "scalenas: error: box 500,500,10,10: must overlap the 70x50 image"),
]


def _run(cmd: list[str], cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(),
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hangs: {' '.join(cmd)}")


def _check(r: subprocess.CompletedProcess, code: int, first: str) -> None:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert r.returncode == code, out[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[0].startswith(first), out[-3000:]


@pytest.mark.parametrize("setup, argv, code, first", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line(tmp_path: Path, setup, argv, code, first) -> None:
    if setup is not None:
        setup(tmp_path)
    if "img.png" in argv and not (tmp_path / "img.png").exists():
        _png(tmp_path / "img.png", 70, 50)
    if "model" in argv and not (tmp_path / "model").exists():
        _model(tmp_path)
    fifos = {p for p in tmp_path.rglob("*") if p.is_fifo()}
    before = _hashes(tmp_path)
    r = _run([SCALENAS, *argv], tmp_path)
    _check(r, code, first)
    assert _hashes(tmp_path) == before  # nothing written, nothing changed
    assert {p for p in tmp_path.rglob("*") if p.is_fifo()} == fifos


# Parameter files, through a real stage entry point (what every Snakemake job runs) ...
PARAM_CASES = [
    ("params-dir", lambda d: (d / "p.yaml").mkdir(), 2, "error: prepare[seg]: p.yaml: is a directory (parameter file expected)"),
    ("params-not-utf8", _write("p.yaml", b"\xff\xfe\x00x"), 2,
     "error: prepare[seg]: p.yaml: parameter file is not UTF-8 text (byte 0xff at offset 0)"),
    ("params-fifo", _fifo("p.yaml"), 2, "error: prepare[seg]: p.yaml: parameter file is not a regular file (a FIFO)"),
    ("params-duplicate-key", _write("p.yaml", "run:\n  seed: 1\n  seed: 2\n"), 2,
     "error: prepare[seg]: p.yaml: line 3: duplicate key 'seed' (first at line 2)"),
    ("params-nan", _write("p.yaml", _params(lambda d: d["search"]["random"].update(fusion_probs=[float("nan"), 0.8]))),
     2, "error: prepare[seg]: p.yaml: search.random.fusion_probs[0]: must be a finite number, got nan"),
    ("params-inf", _write("p.yaml", _params(lambda d: d["supernet"]["seg"].update(kd_ratio=float("inf")))),
     2, "error: prepare[seg]: p.yaml: supernet.seg.kd_ratio: must be a finite number, got inf"),
    ("params-list-item-typo", _write("p.yaml", _params(lambda d: d["supernet"]["seg"]["groups"][0].update(fusion_prb=1))),
     2, "error: prepare[seg]: p.yaml: supernet.seg.groups[0].fusion_prb: unknown key"),
    ("params-deep", _write("p.yaml", "[" * 5000 + "]" * 5000), 2, "error: prepare[seg]: p.yaml: not valid YAML"),
]


@pytest.mark.parametrize("setup, code, first", [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES])
def test_stage_bad_parameter_file_is_one_line(tmp_path: Path, setup, code, first) -> None:
    setup(tmp_path)
    before = _hashes(tmp_path)
    r = _run([sys.executable, "-m", "pipeline.stages.prepare", "--params", "p.yaml", "--task", "seg",
              "--out", "out"], tmp_path)
    _check(r, code, first)
    assert _hashes(tmp_path) == before and not (tmp_path / "out").exists()


# ... and through Snakemake, which reads the parameter file before any job (dry runs).
SMK_CASES = [
    ("empty-params", None, "", "invalid parameters: no parameter file given"),
    ("nan", _write("p.yaml", _params(lambda d: d["search"]["random"].update(fusion_probs=[float("nan"), 0.8]))),
     "p.yaml", "invalid parameters: p.yaml: search.random.fusion_probs[0]: must be a finite number"),
    ("duplicate-key", _write("p.yaml", "run:\n  seed: 1\nrun:\n  seed: 2\n"), "p.yaml",
     "invalid parameters: p.yaml: line 3: duplicate key 'run' (first at line 1)"),
    ("empty-mlflow-store", _all(_write("p.yaml", _params()), lambda d: ((d / "results").mkdir(),
                                                                       (d / "results" / "mlflow.db").touch())),
     "p.yaml", "invalid tracking store: "),
]


@pytest.mark.slow
@pytest.mark.parametrize("setup, params, message", [c[1:] for c in SMK_CASES], ids=[c[0] for c in SMK_CASES])
def test_snakemake_bad_parameters_stop_before_any_job(tmp_path: Path, setup, params, message) -> None:
    if setup is not None:
        setup(tmp_path)
    before = _hashes(tmp_path)
    r = _run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n",
              "--config", f"params={params}"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out[-3000:]
    line = next((l for l in out.splitlines() if message in l), None)
    assert line is not None, out[-3000:]
    if "mlflow" in message or "store" in message:
        assert "results/mlflow.db: MLflow store is an empty file" in line
    after = _hashes(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("results/params/")} == before


# -- kill -9 of Snakemake and its job, then the README's recovery steps ----------------------------
def _readme_resume_commands() -> list[str]:
    section = doc_section("Resume")
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [l.split("#")[0].strip() for l in block.strip().splitlines() if l.split("#")[0].strip()]


def _temporaries(root: Path) -> list[Path]:
    pat = re.compile(r"^\..+\.(tmp|old)-\d+$|^\..+\.\d+\.tmp$")
    return [p for p in root.rglob(".*") if pat.match(p.name)]


def _results(root: Path) -> dict[str, str]:
    """Hashes of every file under results/ but the MLflow store (run ids, times, and the runs of
    killed processes: it differs between two runs by design)."""
    return {k: v for k, v in _hashes(root / "results").items() if k != "mlflow.db"}


@pytest.mark.slow
def test_kill_report_phase_then_readme_recovery_gives_identical_results(tiny_run: Path,
                                                                       tmp_path: Path) -> None:
    """The report phase of the default tiny run (tests/conftest.py), rerun as a user does
    (`--forcerun report`) in a copy of the finished run, is killed with `kill -9` (Snakemake and
    the report job) while the job writes; the README's "Resume" commands, run as printed, give
    the uninterrupted results byte for byte, no temporary folder and no MLflow run RUNNING."""
    from mlflow.exceptions import MlflowException

    from conftest import clone_env, copy_run
    from pipeline import tracking

    work = copy_run(tiny_run, tmp_path / "run")
    env = clone_env(work)
    ref = _results(work)
    assert "report/REPORT.md" in ref and "logs/report.log" in ref
    client = tracking._client(tracking.default_uri(work))
    exp = client.get_experiment_by_name("scalenas").experiment_id

    log = tmp_path / "forcerun.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", "--forcerun", "report"], cwd=work,
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    job = None
    deadline = time.time() + 300
    # The moment to kill: the report job has its temporary output and its MLflow run is open
    # (runs are tagged with their process as host:pid:start).
    while job is None and time.time() < deadline and proc.poll() is None:
        tmps = list((work / "results").glob(".report.tmp-*"))
        if tmps:
            pid = int(tmps[0].name.rsplit("-", 1)[1])
            job_owner = tracking.process_owner(pid)
            try:
                if client.search_runs([exp], "attributes.status = 'RUNNING' and "
                                             f"tags.`{tracking.TAG_OWNER}` = '{job_owner}'"):
                    job = pid
            except MlflowException:  # the store busy with the job's writes: look again
                pass
        time.sleep(0.05)
    if job is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"the report job was not caught running:\n{log.read_text()[-3000:]}")
    smk_owner = tracking.process_owner(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    try:
        os.kill(job, signal.SIGKILL)
    except ProcessLookupError:
        pytest.fail("the report job ended before it could be killed (it was caught running)")
    proc.wait()
    time.sleep(0.5)
    out = log.read_text()
    # Only the report (and the `all` target) was to run: the copy was up to date.
    assert re.search(r"^report\s+1$", out, re.M) and re.search(r"^total\s+2$", out, re.M), out
    assert [p.name for p in _temporaries(work)] == [f".report.tmp-{job}"]
    assert not (work / "results" / "report" / "REPORT.md").exists()  # Snakemake removed it

    # The README's steps, as printed (the tiny run's parameters are its params/default.yaml).
    for line in _readme_resume_commands():
        argv = line.split()
        assert argv[0] == "snakemake", line
        r = subprocess.run([SNAKEMAKE, *argv[1:]], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (line, (r.stdout + r.stderr)[-3000:])

    # The uninterrupted results, byte for byte; MLflow's artifact store only gained the folders
    # of the new runs (one per run id).
    after = _results(work)
    assert {k: v for k, v in after.items() if k in ref or not k.startswith("mlartifacts/")} == ref
    assert _temporaries(work) == []
    runs = client.search_runs([exp], max_results=5000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    # The runs of the killed Snakemake and job, marked KILLED when the recovery run started.
    killed = {r.data.tags.get(tracking.TAG_OWNER): r for r in runs}
    assert killed[smk_owner].info.status == "KILLED"
    assert killed[smk_owner].data.tags.get(tracking.TAG_KIND) == "pipeline"
    assert killed[job_owner].info.status == "KILLED"
    assert killed[job_owner].data.tags.get(tracking.TAG_PHASE) == "report"


def test_stage_stops_when_its_workflow_is_gone(tmp_path: Path) -> None:
    """A stage started by a workflow (SCALENAS_WORKFLOW_PID) that dies stops on its own, removes
    its temporary output and ends its MLflow run KILLED."""
    (tmp_path / "p.yaml").write_text(_params())
    parent = subprocess.Popen(["sleep", "600"])
    env = {**_env(), "SCALENAS_WORKFLOW_PID": str(parent.pid)}
    # The data phase of the default parameters takes several seconds: long enough to be stopped.
    stage = subprocess.Popen([sys.executable, "-m", "pipeline.stages.prepare", "--phase", "data",
                              "--params", "p.yaml", "--out", "data/builtin"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "data").glob(".builtin.tmp-*")) and time.time() < deadline:
        if stage.poll() is not None:
            pytest.fail(stage.stdout.read())
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    try:
        out, _ = stage.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stage.kill()
        pytest.fail("the stage kept running after its workflow died")
    assert stage.returncode != 0
    assert "is gone: stopping" in out
    assert not list((tmp_path / "data").glob(".builtin.tmp-*")) and not (tmp_path / "data" / "builtin").exists()
    from pipeline import tracking
    client = tracking._client(tracking.default_uri(tmp_path))
    exp = client.get_experiment_by_name("scalenas")  # None when killed before the run opened
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    assert all(r.info.status == "KILLED" for r in runs)


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path: Path) -> None:
    from pipeline.recovery import sweep_tree

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "a" / f".out.tmp-{dead.pid}").mkdir(parents=True)
    (tmp_path / "a" / f".out.old-{dead.pid}").mkdir()
    (tmp_path / f".p.json.{dead.pid}.tmp").write_text("x")
    alive = tmp_path / f".out.tmp-{os.getpid()}"
    alive.mkdir()
    keep = tmp_path / ".out.work"
    keep.mkdir()
    removed = sweep_tree(tmp_path)
    assert len(removed) == 3 and alive.exists() and keep.exists()


@pytest.mark.slow
def test_previous_output_comes_back_with_dvc_checkout(tmp_path: Path) -> None:
    """A rerun killed after Snakemake removed the previous output: `dvc checkout` of the last
    committed lineage brings it back, and `snakemake --touch` makes it up to date (README)."""
    work = tmp_path / "clone"
    work.mkdir()
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        src, dst = REPO / f, work / f
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    env = {**_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=work, check=True, env=env, capture_output=True, timeout=60)
    (work / "p.yaml").write_text(_params())
    dvc = str(BIN / "dvc")
    smk = lambda *a: [SNAKEMAKE, *a, "--config", "params=p.yaml"]  # noqa: E731
    r = _run(smk("--cores", "2", "prepare_all"), work, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = _run([dvc, "commit", "-f", "prepare"], work)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    good = {t: _hashes(work / "results" / t / "data") for t in ("seg", "pose")}

    proc = subprocess.Popen(smk("--cores", "2", "--forcerun", "prepare", "prepare_all"), cwd=work,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    tmps: list[Path] = []
    while not tmps and time.time() < deadline and proc.poll() is None:
        tmps = [p for p in (work / "results").glob("*/.data.tmp-*")]
        time.sleep(0.05)
    assert tmps, "the rerun never started its job"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        os.kill(int(tmps[0].name.rsplit("-", 1)[1]), signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert any(not (work / "results" / t / "data" / "manifest.json").exists() for t in good)

    incomplete = [f"results/{t}/data/manifest.json" for t in good]  # what Snakemake lists
    for cmd in (smk("--unlock"), [dvc, "checkout", "prepare"],
                [SNAKEMAKE, "--cleanup-metadata", *incomplete],
                smk("--cores", "1", "--touch", "prepare_all")):
        r = _run(cmd, work, timeout=300)
        assert r.returncode == 0, (cmd, (r.stdout + r.stderr)[-3000:])
    assert {t: _hashes(work / "results" / t / "data") for t in good} == good
    r = _run(smk("--cores", "1", "-n", "prepare_all"), work, timeout=300)
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
