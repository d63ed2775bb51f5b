"""The Markdown of the report stage (``REPORT.md``): an overview and one section per task.

Links are relative to the report's final directory, so the report can be moved with its results.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def screening_line(rows: Any) -> str | None:
    """How well the evolution's surrogate predicted the children it chose, per generation."""
    # Read leniently: a summary written by another version lacks keys; the report still runs.
    parts = []
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict) or "generation" not in r:
            continue
        if "surrogate_r" in r:
            parts.append(f"gen {r['generation']}: r {r['surrogate_r']:.2f}")
        elif "surrogate_mae" in r:
            parts.append(f"gen {r['generation']}: MAE {r['surrogate_mae']:.3g}")
    if not parts:
        return None
    return ("- evolution screening, predicted vs measured score of the evaluated children: "
            + ", ".join(parts))


def task_section(task: str, fig: str, sm: dict[str, Any], recs: list[Any],
                  record_dirs: dict[tuple[str, str], Path], reference: Any, final: Path,
                  cands: Path, front: Path, screening: str | None = None) -> str:
    """A task's section: its figure, the candidate and front tables, hypervolumes, screening,
    the reference network and every fine-tuned model, linked relative to ``final``."""
    lines = [f"## {task}", "", f"![{task} Pareto figure]({fig})", "",
             f"- candidates evaluated: {sm['evaluated']} ([table]({_rel(cands, final)}), "
             f"[plot data](plots/{task}_candidates.csv)); final front: {sm['front_size']} "
             f"([table]({_rel(front, final)}))"]
    hv = [f"{k.split('_', 1)[1]} {v:.4g}" for k, v in sm.items() if k.startswith("hypervolume_")]
    if hv:
        lines.append(f"- front hypervolume (fixed reference point): {', '.join(hv)}")
    if screening:
        lines.append(screening)
    if reference is not None:
        score = ("not evaluated" if reference.score is None
                 else f"{reference.score:.4f} {reference.note}")
        lat = ("" if getattr(reference, "latency_ms", None) is None
               else f", {reference.latency_ms:.4g} ms predicted")
        lines.append(f"- reference {reference.label}: {reference.gflops:.4g} GFLOPs{lat}, {score}")
    for r in recs:
        d = record_dirs[(r.task, r.name)]
        lines.append(f"- **{r.name}** (`{r.arch_id}`, {r.rule}): {r.metric} {r.inherited:.4f} -> "
                     f"{r.finetuned:.4f} ({r.gain:+.4f}); model "
                     f"[{_rel(d / r.model_dir, final)}]({_rel(d / r.model_dir, final)}), "
                     f"record [{_rel(d / 'finetune.json', final)}]({_rel(d / 'finetune.json', final)})")
    return "\n".join(lines) + "\n"


def report_md(sections: list[str], table_md: str, records: list[Any], params_hash: str,
              candidates_url: str = "") -> str:
    """REPORT.md: the overview, the final models' table, then one section per task.
    ``candidates_url``: the MLflow UI's page of the candidates, when the run was tracked."""
    improved = sum(r.gain > 0 for r in records)
    exact = sum(r.reloaded == r.finetuned for r in records)
    head = [
        "# ScaleNAS pipeline report", "",
        "Candidates are scored on the held-out search split with weights inherited from the "
        "supernet (after BN calibration); final models on val, before (inherited weights) and "
        "after fine-tuning. GFLOPs = multiply-accumulates / 2^30 at batch 1 and the run's input "
        "size (the paper's unit).", "",
        f"- fine-tuned models: {len(records)}; improved over inherited weights: {improved}; "
        f"reloaded from their files alone with the identical val metric: {exact}",
        "- metrics: [metrics.json](metrics.json) (`dvc metrics show`); plot data: [plots/](plots/) "
        "(`dvc plots show`)",
        "- everything here is also an artifact of the MLflow run of this stage "
        f"(tracking store of the run; stage params hash `{params_hash}`)",
        *([f"- the candidates in MLflow's runs table (a SQLite store: after `make ui`): "
           f"<{candidates_url}>"] if candidates_url else []),
        "- run a model on an image: `scalenas predict --model <model dir> IMAGE -o OUT.png`", "",
        "## Final models", "", table_md]
    return "\n".join(head) + "\n" + "\n".join(sections)
