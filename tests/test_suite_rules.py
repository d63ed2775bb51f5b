"""Rules the test suite keeps so that it can fail: a broken project import is an error, not a skip."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_project_imports_are_never_importorskipped():
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).split(".")[0] == "pipeline"):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"project modules imported with pytest.importorskip: {found}"
