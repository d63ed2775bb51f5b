"""Pareto-front figures (PNG, matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.io import atomic_savefig  # noqa: E402

from .pareto import pareto_front  # noqa: E402


def plot_fronts(series: Sequence[tuple[str, pd.DataFrame]], path: str | os.PathLike, *,
                title: str = "", score_label: str = "score", dpi: int = 120,
                cost: str = "gflops", cost_label: str = "GFLOPs (MACs / 2^30)") -> None:
    """Scatter every table's points and draw its Pareto front as a staircase; atomic write.
    ``cost`` is the column on the x axis (``gflops`` or ``latency_ms``), ``cost_label`` its label."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, df) in enumerate(series):
        if df.empty:
            continue
        c = colors[i % len(colors)]
        g, s = df[cost].to_numpy(float), df["score"].to_numpy(float)
        ax.scatter(g, s, s=10, alpha=0.35, color=c)
        f = pareto_front(g, s)
        ax.step(g[f], s[f], where="post", color=c, marker="o", ms=3,
                label=f"{label} ({len(df)} evaluated, {len(f)} on front)")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(score_label)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


__all__ = ["plot_fronts"]
