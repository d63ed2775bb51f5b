"""The audit's scatter figure: inherited (supernet) score against stand-alone score, one point per
ranked architecture (bars: the seeds' range), GFLOPs as colour; the comparison networks of each
fine-tune budget as open markers."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # before pyplot: runs headless inside pipeline jobs
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.io import atomic_savefig  # noqa: E402

_MARK = {"smallest": "v", "largest": "^", "hrnet": "s", "pick": "*", "pool": "o"}


def scatter(doc: Mapping[str, Any], path: str | Path, dpi: int = 120) -> None:
    archs = doc["archs"]
    st = doc["stats"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    costs = [a["gflops"] for a in archs]
    vmin, vmax = min(costs), max(costs)
    sc = None
    for role, marker in _MARK.items():
        pts = [a for a in archs if a["role"] == role]
        if not pts:
            continue
        for a in pts:
            vals = list(a["standalone_seeds"].values())
            if len(vals) > 1:
                ax.vlines(a["inherited"], min(vals), max(vals), color="0.7", lw=1, zorder=1)
        sc = ax.scatter([a["inherited"] for a in pts], [a["standalone"] for a in pts],
                        c=[a["gflops"] for a in pts], cmap="viridis", vmin=vmin, vmax=vmax,
                        marker=marker, s=90 if role == "pick" else 45, edgecolors="k",
                        linewidths=0.5, zorder=3, label=role)
        for a in pts:
            if role != "pool":
                ax.annotate(a["label"], (a["inherited"], a["standalone"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    for c in doc.get("comparisons", []):
        for kind, marker in (("random", "D"), ("uniform", "P")):
            o = c.get(kind)
            if not o or o.get("inherited") is None or not o["scores"]:
                continue
            y = sum(o["scores"].values()) / len(o["scores"])
            ax.scatter([o["inherited"]], [y], marker=marker, facecolors="none", edgecolors="C3",
                       s=45, zorder=2, label=f"{kind} at a pick's cost")
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="GFLOPs")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="best")
    t, g = st["supernet"]["tau"], st["gflops"]["tau"]
    fmt = (lambda v: "n/a" if v is None or math.isnan(v) else f"{v:.2f}")
    ax.set_title(f"{doc['task']}: Kendall tau supernet {fmt(t)}, GFLOPs-only {fmt(g)}",
                 fontsize=10)
    ax.set_xlabel(f"inherited score (supernet weights, search split, {doc['metric']})")
    ax.set_ylabel(f"stand-alone score (val, {doc['metric']}, mean of seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=dpi)
    plt.close(fig)
