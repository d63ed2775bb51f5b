"""The report's tables and machine-readable outputs: markdown, ``metrics.json`` and plot data.

``metrics.json`` is what ``dvc metrics show`` reads (nested: task -> model -> value); the plot data
are flat CSV files with one row per point that ``dvc plots`` draws (x = gflops, y = score).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from pipeline.io import atomic_write_text

from pipeline.finetune.records import FinetuneRecord


def _fmt(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}f}"


def final_models_table(records: Sequence[FinetuneRecord],
                       latency_ms: Mapping[tuple[str, str], float] | None = None) -> str:
    """A markdown table of the final models: cost, and the val metric before and after fine-tuning.

    ``latency_ms`` ((task, model name) -> predicted ms; a latency search) adds a column of the
    predicted latency after GFLOPs (a model without a value shows "-")."""
    lat = dict(latency_ms or {})
    extra = " predicted latency (ms) |" if lat else ""
    head = ("| task | model | arch id | selected by | input | params (M) | GFLOPs |" + extra +
            " metric | inherited | fine-tuned | gain | reloaded |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        cell = ""
        if lat:
            v = lat.get((r.task, r.name))
            cell = f" {v:.4g} |" if v is not None else " - |"
        lines.append(
            f"| {r.task} | {r.name} | `{r.arch_id}` | {r.rule} | {r.input_hw[0]}x{r.input_hw[1]} "
            f"| {r.params / 1e6:.3f} | {r.gflops:.4g} |{cell} {r.metric} | {_fmt(r.inherited)} "
            f"| {_fmt(r.finetuned)} | {r.gain:+.4f} | {_fmt(r.reloaded)} |")
    return "\n".join(lines) + "\n"


def metrics_doc(records: Sequence[FinetuneRecord],
                fronts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The nested metrics document: per task, per model, plus per-task front summaries."""
    doc: dict[str, Any] = {}
    for r in records:
        doc.setdefault(r.task, {}).setdefault("models", {})[r.name] = {
            "params": r.params, "gflops": r.gflops, "metric": r.metric,
            "inherited": r.inherited, "finetuned": r.finetuned, "gain": r.gain,
            "reloaded": r.reloaded, "reload_matches": r.reloaded == r.finetuned}
    for task, summary in (fronts or {}).items():
        doc.setdefault(task, {})["search"] = dict(summary)
    return doc


def write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    atomic_write_text(path, buf.getvalue())


def finetune_plot_frame(records: Sequence[FinetuneRecord]) -> pd.DataFrame:
    """Long-form rows (one per model and phase) so dvc plots can draw before/after per model."""
    rows = []
    for r in records:
        for phase, value in (("inherited", r.inherited), ("finetuned", r.finetuned)):
            rows.append({"task": r.task, "model": r.name, "phase": phase, "gflops": r.gflops,
                         "params": r.params, "score": value})
    return pd.DataFrame(rows, columns=["task", "model", "phase", "gflops", "params", "score"])
