"""The report's Pareto figure: one PNG per task (matplotlib, Agg backend, no display needed).

It shows every evaluated candidate coloured by the search stage / evolution generation that
produced it (score on the held-out search split, inherited weights), the final front, the HRNet
reference point at the same input, and each fine-tuned model as an arrow from its inherited-weight
val score to its fine-tuned val score. The x axis is the search's cost axis: GFLOPs, or the
predicted latency (column ``latency_ms``) after a search with ``search.objective: latency``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report runs headless inside pipeline jobs
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.io import atomic_savefig  # noqa: E402

from pipeline.finetune.records import FinetuneRecord  # noqa: E402
from pipeline.finetune.select import GFLOPS, SCORE  # noqa: E402

#: Columns of the results table that say which stage / generation produced a candidate.
STAGE, GENERATION = "stage", "generation"


@dataclass(frozen=True)
class ReferencePoint:
    """A reference network (HRNet) at the report's input: analytic GFLOPs, score if evaluated,
    predicted latency (ms) after a latency search."""

    label: str
    gflops: float
    score: float | None = None
    note: str = ""
    latency_ms: float | None = None


#: Readable names of the search stages of the results table.
STAGE_NAMES = {"sample": "random sampling", "random": "random search", "evolve": "evolution"}


def group_labels(table: pd.DataFrame) -> pd.Series:
    """One label per candidate: its stage, plus the generation when it is above 0
    ("random sampling", "evolution g3")."""
    stage = (table[STAGE].astype(str).map(lambda s: STAGE_NAMES.get(s, s))
             if STAGE in table.columns else pd.Series("search", index=table.index))
    if GENERATION not in table.columns:
        return stage
    gen = pd.to_numeric(table[GENERATION], errors="coerce").fillna(0).astype(int)
    return (stage + " g" + gen.astype(str)).where(gen > 0, stage)


def _group_order(labels: pd.Series) -> list[str]:
    def key(label: str) -> tuple[int, str]:
        _, _, gen = label.rpartition(" g")
        return (int(gen) if gen.isdigit() else 0, label)
    return sorted(labels.unique(), key=key)


def save_figure_atomic(fig: plt.Figure, path: Path, dpi: int = 120) -> None:
    """Save a PNG atomically, so a crash never leaves a truncated image."""
    try:
        atomic_savefig(fig, path, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


#: The figure's default x label (the GFLOPs axis).
GFLOPS_LABEL = "GFLOPs (multiply-accumulates / 2^30, batch 1)"


def pareto_figure(candidates: pd.DataFrame, front: pd.DataFrame, records: Sequence[FinetuneRecord],
                  reference: ReferencePoint | None, task: str, metric: str, out: Path,
                  subtitle: str = "", dpi: int = 120, cost: str = GFLOPS,
                  cost_label: str = GFLOPS_LABEL,
                  record_cost: Mapping[str, float] | None = None) -> None:
    """Draw and write the task's Pareto figure to ``out`` (PNG).

    ``cost`` is the column on the x axis (``gflops`` or ``latency_ms``) and ``cost_label`` its
    label; off the GFLOPs axis each record sits at ``record_cost[record name]`` (records without
    one are left out) and the reference at its ``latency_ms``."""
    on_gflops = cost == GFLOPS
    costs = dict(record_cost or {})
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    labels = group_labels(candidates)
    groups = _group_order(labels)
    # Generation-0 groups (sampling, baselines) in greys, generations along a colour map.
    plain = [g for g in groups if not g.rpartition(" g")[2].isdigit()]
    evo = [g for g in groups if g not in plain]
    cmap = plt.get_cmap("viridis")
    for g in groups:
        sel = candidates[labels == g]
        color = (str(0.55 + 0.25 * plain.index(g) / max(len(plain) - 1, 1)) if g in plain
                 else cmap(0.15 + 0.75 * evo.index(g) / max(len(evo) - 1, 1)))
        ax.scatter(sel[cost], sel[SCORE], s=14, color=color, alpha=0.75, linewidths=0,
                   label=f"{g} ({len(sel)})")
    if len(front):
        f = front.sort_values(cost)
        ax.step(f[cost], f[SCORE], where="post", color="crimson", lw=1.2)
        ax.scatter(f[cost], f[SCORE], s=30, facecolors="none", edgecolors="crimson",
                   label=f"final front ({len(f)})")
    placed = [(r, r.gflops if on_gflops else costs[r.name]) for r in records
              if on_gflops or r.name in costs]
    for i, (r, x) in enumerate(placed):
        ax.annotate("", xy=(x, r.finetuned), xytext=(x, r.inherited),
                    arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2})
        ax.scatter([x], [r.inherited], marker="o", s=36, facecolors="white",
                   edgecolors="black", zorder=3,
                   label="selected, val, inherited weights" if i == 0 else None)
        ax.scatter([x], [r.finetuned], marker="*", s=110, color="black", zorder=3,
                   label="selected, val, fine-tuned" if i == 0 else None)
        ax.annotate(r.name, (x, r.finetuned), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ref_x = None if reference is None else (reference.gflops if on_gflops
                                            else reference.latency_ms)
    if reference is not None and ref_x is not None:
        if reference.score is not None and math.isfinite(reference.score):
            ax.scatter([ref_x], [reference.score], marker="D", s=40, color="tab:orange",
                       zorder=3, label=f"{reference.label} {reference.note}".strip())
        else:
            # Not evaluated: show where it sits on the cost axis only, and say so in the legend.
            unit = "GFLOPs" if on_gflops else "latency"
            ax.axvline(ref_x, color="tab:orange", ls="--", lw=1,
                       label=f"{reference.label} {unit} (accuracy not evaluated)")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(f"{metric} (candidates: search split; selected: val)")
    title = f"{task}: candidates, final Pareto front and fine-tuned models"
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    save_figure_atomic(fig, out, dpi=dpi)
