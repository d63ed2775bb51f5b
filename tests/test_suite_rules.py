"""Rules the test suite keeps so that it can fail: a broken project import is an error, not a skip."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def test_project_imports_are_never_importorskipped():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).split(".")[0] == "pipeline"):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"project modules imported with pytest.importorskip: {found}"


@pytest.mark.slow
def test_each_module_runs_on_one_worker_and_the_tiny_run_first():
    """The work units of tests/conftest.py reach pytest-xdist's scheduler: a module's tests run on
    one worker (its module fixtures are built once). pytest 9.2 broke that silently (pyproject)."""
    mods = ["tests/config/test_config.py", "tests/data/test_data_splits.py",
            "tests/data/test_data_transforms.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-v",
                        *mods], cwd=TESTS.parent, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    ran = re.findall(r"^\[(gw\d)\].*? PASSED (\S+?)::\S+@(\S+)", r.stdout, re.M)
    assert len(ran) > 20 and all(path == unit for _, path, unit in ran), r.stdout[-3000:]
    workers = {path: {w for w, p, _ in ran if p == path} for path in mods}
    assert all(len(w) == 1 for w in workers.values()), workers

    # The tiny run's unit is queued first: its build is the longest item of the suite.
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
                        "--collect-only", "-q"], cwd=TESTS.parent, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith(("tests/audit/test_audit_run.py", "tests/workflow/test_bad_inputs.py::test_kill",
                             "tests/tracking/test_lineage")), first
