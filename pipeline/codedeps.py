"""The code a phase runs: every file of the ``pipeline`` package that the stage entry points of
its Snakemake rules import, transitively (read from the source with :mod:`ast`, nothing is
imported). dvc.yaml's code deps are generated from it (:mod:`pipeline.dvcyaml`)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def _module_file(root: Path, module: str) -> Path | None:
    base = root / Path(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(root: Path, path: Path, module: str) -> set[str]:
    """Modules of the ``pipeline`` package that ``path`` imports (at any depth of the file)."""
    import ast

    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    out = set()
    for m in found:
        if m.split(".")[0] == "pipeline" and _module_file(root, m):
            parts = m.split(".")
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                       if _module_file(root, ".".join(parts[:i])))
    return out


def module_closure(root: str | Path, entry_modules: Iterable[str]) -> list[Path]:
    """Every file of the ``pipeline`` package the entry modules import, transitively."""
    root = Path(root)
    seen: set[str] = set()
    todo = list(entry_modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_imports(root, _module_file(root, m), m))
    return sorted(_module_file(root, m).relative_to(root) for m in seen)


def stage_entry_modules(root: str | Path, rule_files: Iterable[str]) -> list[str]:
    """The ``pipeline.stages`` modules the Snakemake rules in ``rule_files`` run (stage_cmd)."""
    import re

    mods = set()
    for f in rule_files:
        text = (Path(root) / f).read_text(encoding="utf-8")
        mods.update(f"pipeline.stages.{m}" for m in re.findall(r'stage_cmd\(\s*"([a-z_0-9]+)"', text))
    return sorted(mods)


def missing_code_deps(root: str | Path, stage: dict) -> list[str]:
    """Files the stage's entry points import that none of its ``deps`` covers."""
    root = Path(root)
    deps = [str(d).rstrip("/") for d in stage.get("deps") or []]
    rules = [d for d in deps if d.startswith("workflow/rules/") and d.endswith(".smk")]
    files = module_closure(root, stage_entry_modules(root, rules))
    return [str(f) for f in files
            if not any(str(f) == d or str(f).startswith(d + "/") for d in deps)]
