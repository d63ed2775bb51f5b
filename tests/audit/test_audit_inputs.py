"""Bad audit parameters stop `snakemake audit_all` with one line before any job (exit 2), and
do not stop a run that does not ask for the audit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _run(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    params = tmp_path / "p.yaml"
    params.write_text(f"base: {REPO / 'params' / 'default.yaml'}\ntracking: {{enabled: false}}\n"
                      + body)
    return subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "w"),
                           "--cores", "1", *args, "--config", f"params={params}"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("body, line", [
    ("audit:\n  seg: {archs: 100}\n",
     "audit.seg: archs 100 is larger than the pool the search evaluated (36 candidates)"),
    ("tasks: [seg]\naudit:\n  tasks: [pose]\n",
     "audit.tasks: pose is not searched by this run (tasks: ['seg'])"),
])
def test_audit_all_refuses_before_any_job(tmp_path: Path, body: str, line: str) -> None:
    r = _run(tmp_path, body, "audit_all")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr  # Snakemake writes its log to either, depending on the terminal
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and line in errors[0], out[-2000:]
    assert not (tmp_path / "w" / "data").exists() and not (tmp_path / "w" / "results" / "seg").exists()
    # the same parameters plan the default run (which never runs the audit) as usual
    r = _run(tmp_path, body, "-n")
    assert r.returncode == 0 and "rule audit_" not in r.stdout + r.stderr, r.stderr[-2000:]


def test_a_budget_of_zero_is_refused_by_the_schema(tmp_path: Path) -> None:
    r = _run(tmp_path, "audit:\n  pose: {iterations: 0}\n", "-n", "audit_all")
    assert r.returncode != 0
    assert "audit.pose.iterations: 0 is less than the minimum of 1" in r.stdout + r.stderr
