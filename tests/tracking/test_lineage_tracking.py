"""MLflow, DVC and Snakemake's report as their users use them, on one tiny pipeline run in a fresh
clone (issue 16): the README's filter strings against the real store, the UI in a real browser,
`dvc status` after `snakemake`, code and parameter changes seen by DVC, `dvc repro` rerunning only
what changed, a `dvc exp run` listed by `dvc exp show`, `snakemake --report report.zip`."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from cdp import Browser
from conftest import clone_env, doc_files, doc_section
from pipeline import codedeps, lineage

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
# What the GenAI overview of an experiment without traces shows: its panels (MLflow 3.17), or an
# onboarding page (3.18).
GENAI_OVERVIEW = ("Token Usage", "Send your first trace")

def _env(clone: Path) -> dict[str, str]:
    return clone_env(clone)


def sh(clone: Path, *cmd: str, timeout: float = 2400) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=clone, env=_env(clone), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def clone(tiny_run: Path) -> Path:
    """The session's tiny run (tests/conftest.py): a git clone of the committed branch, tiny
    parameters committed, run with `snakemake`."""
    return tiny_run


def _status(clone: Path) -> str:
    r = sh(clone, str(BIN / "dvc"), "status", timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_dvc_status_up_to_date_after_snakemake(clone: Path) -> None:
    assert "Data and pipelines are up to date" in _status(clone)


# -- MLflow --------------------------------------------------------------------------------------

def readme_filters() -> list[str]:
    """Every filter string the README's MLflow section prints."""
    section = doc_section("MLflow: runs and candidates")
    found = re.findall(r'filter_string="([^"]+)"', section)
    inline = re.sub(r"```.*?```", " ", section, flags=re.S)  # a fence would shift the pairs of `
    found += [c for c in re.findall(r"`([^`]+)`", inline)
              if re.match(r"(tags|params|metrics|attributes)\.", c)]
    return found


_CLAUSE = re.compile(r"""(tags|params|metrics)\.(`[^`]+`|[\w.]+)\s*(=|!=|>=|<=|>|<)\s*
                         (?:"([^"]*)"|'([^']*)'|([-\d.eE]+))""", re.X)


def _matches(run, clause) -> bool:
    kind, key, op, s1, s2, num = clause
    key = key.strip("`")
    have = getattr(run.data, kind).get(key)
    if have is None:
        return False
    if num:
        a, b = float(have), float(num)
    else:
        a, b = str(have), s1 or s2 or ""
    return {"=": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


@pytest.mark.slow
def test_readme_filters_find_the_expected_runs(clone: Path) -> None:
    import mlflow

    from pipeline import tracking
    from pipeline.space.arch import Architecture
    from pipeline.space.official import load_official

    filters = readme_filters()
    assert len(filters) >= 3, filters
    uri = tracking.default_uri(clone)
    mlflow.set_tracking_uri(uri)
    client = tracking._client(uri)
    exp = client.get_experiment_by_name("scalenas")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    every = client.search_runs([exp.experiment_id], max_results=5000)
    for f in filters:
        clauses = _CLAUSE.findall(f)
        assert len(clauses) == f.lower().count(" and ") + 1, f"cannot read filter {f!r}"
        expected = {r.info.run_id for r in every if all(_matches(r, c) for c in clauses)}
        got = mlflow.search_runs(experiment_names=["scalenas"], filter_string=f,
                                 output_format="list", max_results=5000)
        assert expected and {r.info.run_id for r in got} == expected, f

    cands = [r for r in every if r.data.tags.get("scalenas.kind") == "candidate"]
    # 2 sampled + 2 random baseline + 2 evolved, per task
    assert len(cands) == 12
    for r in cands:
        t = r.data.tags
        assert t["scalenas.task"] in ("seg", "pose")
        assert (t["scalenas.stage"], t["scalenas.phase"]) in {
            # The random-search baseline is drawn against the evolution's budget: its phase is
            # search_evolution (pipeline.config.PHASES).
            ("sample", "search_random"), ("random", "search_evolution"),
            ("evolve", "search_evolution")}, t
        assert t["scalenas.generation"] == ("1" if t["scalenas.stage"] == "evolve" else "0")
        assert {"params", "gflops", "score"} <= set(r.data.metrics)
        p = r.data.params
        assert len(p) <= 36 and {"depth.branch0", "depth.branch3", "fusion.stage4.2"} <= set(p)
        assert 0 <= float(p["fusion.stage2.0"]) <= 1
        assert sorted(a.path for a in client.list_artifacts(r.info.run_id)) == ["arch.json",
                                                                                "arch.npy"]
    one = cands[0].info.run_id
    d = Path(client.download_artifacts(one, "", str(clone.parent / "dl")))
    arch = Architecture.load(d / "arch.json")
    assert load_official(d / "arch.npy") == arch
    assert arch.arch_id == cands[0].data.tags["scalenas.arch_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _button_js(label: str, aria: bool = False) -> str:
    test = (f"e.getAttribute('aria-label') === {json.dumps(label)}" if aria
            else f"e.innerText.trim() === {json.dumps(label)}")
    return f"Array.from(document.querySelectorAll('button')).find(e => {test})"


@pytest.mark.slow
def test_browser_from_the_landing_page_and_the_printed_link(clone: Path, request) -> None:
    """As a new user: `make ui`, a fresh browser on the start page, a click on the experiment,
    then the link `make ui` printed. What the README says is what each page shows here."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (Debian package `chromium`; .ci/run installs it)")
    from pipeline import tracking

    uri = tracking.default_uri(clone)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # The line `make ui` prints first (at its own port, 5000).
    r = sh(clone, str(BIN / "python"), "-m", "pipeline.tracking", "link", timeout=120)
    assert r.returncode == 0, r.stderr
    (link,) = re.findall(r"(http://127\.0\.0\.1:5000/\S+)", r.stdout)
    assert "viewStateShareKey=candidates" in link
    link = link.replace(tracking.UI_BASE, base)
    # As `make ui` starts it.
    env = {**_env(clone), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    art = Path(request.config.rootpath) / ".pytest-artifacts"  # not in git (.gitignore)
    art.mkdir(exist_ok=True)
    png = art / "mlflow_runs.png"
    profile = clone.parent / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)  # a fresh browser
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "mlflow server did not start in 120 s"
                time.sleep(0.5)
        with Browser(CHROMIUM, profile) as page:
            # The start page: MLflow's welcome page, the experiment among the recent ones.
            page.goto(f"{base}/")
            exp_link = ("Array.from(document.querySelectorAll('a'))"
                        ".find(e => e.innerText.trim() === 'scalenas')")
            page.wait(f"!!{exp_link}", "the experiment on the start page", 120)
            landing = page.js("document.body.innerText")
            # A click on it: the GenAI overview (a fresh browser's UI is in GenAI mode, which
            # ignores the experiment's kind), no runs.
            page.click(exp_link, "the experiment's link")
            page.wait("location.hash.includes('/overview')", "the experiment's overview", 60)
            # Its panels load one request each: slow on a loaded 2-core machine. MLflow 3.17 shows
            # its panels (token usage among them); 3.18 shows, for an experiment without traces,
            # an onboarding page instead.
            page.wait(f"[{', '.join(repr(m) for m in GENAI_OVERVIEW)}]"
                      ".some(m => document.body.innerText.includes(m))", "the overview", 180)
            overview = page.js("document.body.innerText")
            # The printed link: the candidates' runs, sorted by GFLOPs, their columns shown.
            page.goto(link)
            headers = page.wait(
                "(h => ['gflops', 'score', 'depth.blocks', 'fusion.edges'].every(c => "
                "h.includes(c)) && h)(Array.from(document.querySelectorAll("
                "'[role=columnheader]')).map(e => e.innerText.trim()))",
                "the gflops, score, depth and fusion columns", 120)
            page.wait("document.body.innerText.includes('evolve:g1:')", "the candidates", 60)
            text = page.js("document.body.innerText")
            first = page.js("Array.from(document.querySelectorAll('[role=row] [col-id*=gflops]'))"
                            ".map(e => e.innerText.trim()).filter(t => t && t !== 'gflops')")
            page.screenshot(png)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    section = " ".join(doc_section("MLflow: runs and candidates").split())
    assert "Welcome to MLflow" in landing and "Welcome to MLflow" in section, landing[:2000]
    assert any(m in overview for m in GENAI_OVERVIEW), overview[-2000:]
    assert "sample:g0:" not in overview, overview[-2000:]
    assert "GenAI overview" in section
    assert "Sort: gflops" in text and "sample:g0:" in text, text[-3000:]
    assert "shared view" in text and "shared view" in section
    assert "search_evolution:seg" not in text  # candidates only, no stage run
    # Sorted by GFLOPs, ascending.
    values = [float(v) for v in first]
    assert len(values) >= 4 and values == sorted(values), first
    assert png.stat().st_size > 10_000
    print(f"screenshot: {png}")


# -- DVC -----------------------------------------------------------------------------------------

def test_dvc_yaml_deps_cover_every_imported_module() -> None:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, st in doc["stages"].items():
        assert codedeps.stage_entry_modules(REPO, [d for d in st["deps"] if d.endswith(".smk")]), name
        assert codedeps.missing_code_deps(REPO, st) == [], name
    r = subprocess.run([sys.executable, "-m", "pipeline.lineage"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline.lineage", "--check"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dvc_yaml_is_generated_and_a_new_import_reaches_it(tmp_path: Path) -> None:
    """A module a stage starts to import appears in the generated deps; the check then fails
    on the old file and passes after --write."""
    from pipeline import dvcyaml

    tree = tmp_path / "tree"
    shutil.copytree(REPO / "pipeline", tree / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow", tree / "workflow")
    shutil.copytree(REPO / "params", tree / "params")  # dvc.yaml's stages: the default run's tasks
    shutil.copy(REPO / "dvc.yaml", tree / "dvc.yaml")
    assert not dvcyaml.stale(tree)
    (tree / "pipeline" / "newmod.py").write_text("X = 1\n")
    report = tree / "pipeline" / "stages" / "report.py"
    report.write_text("import pipeline.newmod  # noqa: F401\n" + report.read_text())
    assert dvcyaml.stale(tree)
    r = subprocess.run([sys.executable, "-m", "pipeline.lineage", "--check"], cwd=tree,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--write" in r.stderr, r.stdout + r.stderr
    assert dvcyaml.write(tree)
    doc = yaml.safe_load((tree / "dvc.yaml").read_text())
    assert "pipeline/newmod.py" in doc["stages"]["report"]["deps"]
    assert "pipeline/newmod.py" not in doc["stages"]["prepare"]["deps"]
    assert not dvcyaml.stale(tree)
    search = codedeps.module_closure(REPO, ["pipeline.stages.search_shard"])
    assert Path("pipeline/cost.py") in search and Path("pipeline/nets/supernet.py") in search


@pytest.mark.slow
def test_code_change_marks_search_changed(clone: Path) -> None:
    cost = clone / "pipeline" / "cost.py"
    text = cost.read_text()
    try:
        cost.write_text(text + "\n# a change of the cost model\n")
        out = _status(clone)
        stages = set(re.findall(r"^(\w+):", out, re.M))
        # Exactly the stages whose entry points import the cost model (train does too, through
        # the parameter-to-library glue pipeline/stages/build.py).
        doc = yaml.safe_load((clone / "dvc.yaml").read_text())
        importers = {n for n, st in doc["stages"].items() if not st.get("frozen") and
                     Path("pipeline/cost.py") in
                     codedeps.module_closure(clone, codedeps.stage_entry_modules(
                         clone, [d for d in st["deps"] if str(d).endswith(".smk")]))}
        assert {"search", "finetune"} <= importers and "prepare" not in importers, importers
        assert stages == importers, out
    finally:
        cost.write_text(text)
    assert "Data and pipelines are up to date" in _status(clone)


@pytest.mark.slow
def test_param_edit_repro_reruns_only_affected_phases(clone: Path) -> None:
    params = clone / "params" / "default.yaml"
    doc = yaml.safe_load(params.read_text())
    doc["report"]["dpi"] = 100
    params.write_text(yaml.safe_dump(doc))
    r = sh(clone, str(BIN / "dvc"), "repro")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    ran = set(re.findall(r"Running stage '(\w+)'", out))
    assert ran == {"report"}, out[-4000:]
    assert "Data and pipelines are up to date" in _status(clone)
    # dvc repro ran snakemake: the onsuccess handler saw DVC_STAGE and did not run dvc itself.
    assert "lineage recorded" not in out


def test_stages_for_targets_include_upstream() -> None:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert lineage.stages_for(doc, []) == ["prepare", "train", "search", "finetune", "report"]
    assert lineage.stages_for(doc, ["all"]) == lineage.stages_for(doc, [])
    assert lineage.stages_for(doc, ["search_evolution_all"]) == ["prepare", "train", "search"]
    assert lineage.stages_for(doc, ["prepare_all"]) == ["prepare"]
    assert lineage.stages_for(doc, ["builtin_data"]) == []


def test_no_dvc_inside_dvc_and_no_lineage_for_other_params(tmp_path, monkeypatch) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    monkeypatch.setenv("DVC_STAGE", "search")
    assert lineage.record_after_snakemake(tmp_path, "params/default.yaml", []) == ""
    monkeypatch.delenv("DVC_STAGE")
    line = lineage.record_after_snakemake(tmp_path, tmp_path / "other.yaml", [])
    assert line.startswith("lineage not recorded: dvc.yaml reads params/default.yaml")


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix`` (in a ```bash block)."""
    text = "\n".join(p.read_text() for p in doc_files())
    lines = [ln.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for ln in block.splitlines() if ln.strip().startswith(prefix)]
    assert lines, f"README shows no `{prefix} ...` command"
    return lines[0].split()


# -- Snakemake's report ----------------------------------------------------------------------------

@pytest.mark.slow
def test_snakemake_report_holds_pareto_figures_tables_and_captions(clone: Path) -> None:
    cmd = readme_command("snakemake --report")
    assert cmd == ["snakemake", "--report", "report.zip"], cmd
    t0 = time.time()
    r = sh(clone, str(BIN / "snakemake"), *cmd[1:], timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    print(f"snakemake --report: {time.time() - t0:.0f} s")
    with zipfile.ZipFile(clone / "report.zip") as z:
        files = [Path(n) for n in z.namelist()]
        page = z.read("report/report.html").decode()
        pareto = [n for n in files if n.name == "seg_pareto.png"]
        assert pareto and z.read(str(pareto[0]))[:8] == b"\x89PNG\r\n\x1a\n"
    names = sorted(n.name for n in files)
    for f in ("seg_pareto.png", "pose_pareto.png", "final_models.html", "parameters.html",
              "software.html"):
        assert names.count(f) == 1, names
    # Per task: the fronts of sampling, random search, generation 1 and the final fronts.
    assert names.count("front.png") == 8, names
    # Categories per phase and task, the captions, per-rule runtimes, the workflow description.
    m = re.search(r"var categories = (\{.*?\});?\n", page)
    assert m, "no categories in report.html"
    cats = json.loads(m.group(1))
    assert set(cats) == {"Search", "Report", "Run"}, cats
    assert set(cats["Search"]) == {"seg", "pose"} and len(cats["Search"]["seg"]) == 4, cats
    assert cats["Report"]["seg"] == ["results/report/seg_pareto.png"], cats
    assert cats["Report"]["final models"] == ["results/report/final_models.html"], cats
    for caption in ("pareto.rst", "search_front.rst", "software.rst"):
        first = (REPO / "workflow" / "report" / caption).read_text().splitlines()[0]
        assert first in page, caption
    assert '"rule": "supernet", "runtime"' in page and '"rule": "report", "runtime"' in page
    assert "one-shot architecture search over multi-scale" in page  # workflow/report/workflow.rst
    params_page = (clone / "results" / "report" / "parameters.html").read_text()
    assert "<h2>search_random (seg)</h2>" in params_page
    assert "<td>search.random.samples_per_cell</td><td>2</td>" in params_page
    assert "<td>snakemake</td>" in (clone / "results" / "report" / "software.html").read_text()


# -- DVC experiments -------------------------------------------------------------------------------

def _exp_rows(clone: Path) -> list[dict]:
    r = sh(clone, str(BIN / "dvc"), "exp", "show", "--json", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = []
    for base in json.loads(r.stdout):
        rows.append(base)
        rows += [rev for e in base.get("experiments") or [] for rev in e.get("revs") or []]
    return rows


@pytest.mark.slow
def test_dvc_exp_run_is_listed_with_params_and_report_metrics(clone: Path) -> None:
    # The README's form (a parameter of params/default.yaml, the file dvc.yaml declares), with a
    # value whose change reruns only the report stage: the search.random.samples_per_cell
    # reruns search, finetune and report (README), too long for CI.
    cmd = readme_command("dvc exp run")
    assert cmd[:4] == ["dvc", "exp", "run", "-S"] and \
        cmd[4].startswith("params/default.yaml:search.random.samples_per_cell="), cmd
    t0 = time.time()
    r = sh(clone, str(BIN / "dvc"), "exp", "run", "-n", "dpi90", "-S",
           "params/default.yaml:report.dpi=90", timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    print(f"dvc exp run (report stage): {time.time() - t0:.0f} s")
    assert set(re.findall(r"Running stage '(\w+)'", out)) == {"report"}, out[-4000:]
    assert "lineage recorded" not in out  # DVC writes dvc.lock itself
    rows = _exp_rows(clone)
    exp = [row for row in rows
           if (row.get("name") or (row.get("data") or {}).get("name")) == "dpi90"]
    assert len(exp) == 1, [(row.get("rev"), row.get("name")) for row in rows]
    data = exp[0]["data"]
    params = data["params"]["params/default.yaml"]["data"]
    assert params["report"]["dpi"] == 90
    assert params["search"]["random"]["samples_per_cell"] == 2
    metrics = data["metrics"]["results/report/metrics.json"]
    assert "error" not in metrics, metrics
    want = yaml.safe_load((clone / "results" / "report" / "metrics.json").read_text())
    assert metrics["data"] == want
    assert set(metrics["data"]["seg"]["models"]) == {"S-small", "S-large"}
    assert metrics["data"]["pose"]["search"]["evaluated"] > 0
    assert "Data and pipelines are up to date" in _status(clone)
