"""Record DVC lineage after a Snakemake run, so that `dvc status` stays true without a second
command (the workflow's ``onsuccess`` calls :func:`record_after_snakemake`).

`dvc commit` is run for the DVC stages the finished Snakemake run brought up to date: every stage
for the default target, else the stages whose `snakemake ... <target>` command was among the run's
targets, plus the stages upstream of them (Snakemake ran those too), plus ``data.dvc``.

Never inside DVC: `dvc repro` / `dvc exp run` set ``DVC_STAGE`` for every stage command and write
dvc.lock themselves; a `dvc commit` there would contend for DVC's lock. Nor when the run read
another parameter file than the one dvc.yaml declares (the lineage would name the wrong values).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import yaml

UNDER_DVC_ENV = "DVC_STAGE"
DVC_PARAMS = Path("params") / "default.yaml"
DEFAULT_TARGETS = {"", "all"}


def _stage_graph(doc: dict) -> dict[str, tuple[str, set[str]]]:
    """``{stage: (snakemake target, upstream stages)}`` from a dvc.yaml document."""
    stages = doc.get("stages") or {}
    outs_of = {}
    for name, st in stages.items():
        for out in st.get("outs") or []:
            path = next(iter(out)) if isinstance(out, dict) else out
            outs_of[str(path).rstrip("/")] = name
    graph = {}
    for name, st in stages.items():
        ups = set()
        for dep in st.get("deps") or []:
            dep = str(dep).rstrip("/")
            for out, owner in outs_of.items():
                if owner != name and (dep == out or dep.startswith(out + "/")
                                      or out.startswith(dep + "/")):
                    ups.add(owner)
        graph[name] = (str(st.get("cmd", "")).split()[-1] if st.get("cmd") else "", ups)
    return graph


def stages_for(doc: dict, targets: Iterable[str]) -> list[str]:
    """The DVC stages a Snakemake run of ``targets`` brought up to date, in dvc.yaml order."""
    graph = _stage_graph(doc)
    targets = set(targets) or {""}
    if targets & DEFAULT_TARGETS:
        # A frozen stage (the audit) is outside the default target: only its own target runs it.
        return [s for s in graph if not (doc["stages"][s] or {}).get("frozen")]
    todo = [s for s, (t, _) in graph.items() if t in targets]
    chosen: set[str] = set()
    while todo:
        s = todo.pop()
        if s not in chosen:
            chosen.add(s)
            todo.extend(graph[s][1])
    return [s for s in graph if s in chosen]


def _outs_exist(root: Path, stage: dict) -> bool:
    outs = [*(stage.get("outs") or []), *(stage.get("metrics") or []), *(stage.get("plots") or [])]
    return all((root / (next(iter(o)) if isinstance(o, dict) else o)).exists() for o in outs)


def record_after_snakemake(root: str | Path, params_source: str | Path, targets: Iterable[str],
                           timeout: float = 600) -> str:
    """Run `dvc commit` for what the run produced; returns the one line it reports."""
    root = Path(root).resolve()
    if os.environ.get(UNDER_DVC_ENV):
        return ""  # dvc repro / dvc exp run records the lineage itself
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        return ""  # not a DVC project (a scratch working directory)
    if Path(params_source).resolve() != (root / DVC_PARAMS).resolve():
        return (f"lineage not recorded: dvc.yaml reads {DVC_PARAMS}, this run read "
                f"{params_source} (run `dvc commit` yourself if that is intended)")
    doc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    stages = [s for s in stages_for(doc, targets) if _outs_exist(root, doc["stages"][s])]
    if not stages:
        return ""
    args = (["data.dvc"] if (root / "data.dvc").is_file() and (root / "data").exists() else [])
    cmd = ["dvc", "commit", "-f", "-q", *args, *stages]
    dvc = Path(sys.executable).with_name("dvc")
    if dvc.is_file():
        cmd[0] = str(dvc)
    try:
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"lineage not recorded: {' '.join(cmd[1:])}: {e}"
    if r.returncode != 0:
        err = " ".join((r.stderr or r.stdout).split())[:300]
        return f"lineage not recorded: `dvc {' '.join(cmd[1:])}` failed: {err}"
    return f"lineage recorded: dvc commit {' '.join(args + stages)}"


# -- code dependencies of the DVC stages -----------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.lineage [--write | --check]``.

    ``--write`` generates dvc.yaml from :mod:`pipeline.dvcyaml`; ``--check`` (CI) fails when the
    tree's dvc.yaml is not what it would generate. Without a flag: list, per dvc.yaml stage, the
    imported files its deps miss (a hand-edited dvc.yaml)."""
    import argparse

    from pipeline import dvcyaml
    from pipeline.codedeps import missing_code_deps

    ap = argparse.ArgumentParser(prog="python -m pipeline.lineage")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="generate dvc.yaml")
    mode.add_argument("--check", action="store_true", help="fail if dvc.yaml is not up to date")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if args.write:
        changed = dvcyaml.write(root)
        print(f"dvc.yaml {'written' if changed else 'already up to date'}")
        return 0
    if args.check and dvcyaml.stale(root):
        print("dvc.yaml: not what pipeline/dvcyaml.py generates; run `python -m pipeline.lineage "
              "--write` and commit it", file=sys.stderr)
        return 1
    doc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    bad = 0
    for name, st in doc["stages"].items():
        for f in missing_code_deps(root, st):
            print(f"dvc.yaml: stage {name} imports {f}, not among its deps")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
