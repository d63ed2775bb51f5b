"""What the search stages share once the objects are built (pipeline.stages.build): the pool of
a results table, its Pareto front and summary, and MLflow candidate records."""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import pandas as pd

from .evolution import Evaluated
from .pareto import hypervolume, pareto_front
from .table import Row, architectures


def pool_from_table(df: pd.DataFrame) -> list[Evaluated]:
    return [Evaluated(a, float(g), float(s))
            for a, g, s in zip(architectures(df), df["gflops"], df["score"])]


def front_table(df: pd.DataFrame) -> pd.DataFrame:
    """The Pareto-front rows of a results table, by increasing GFLOPs."""
    if df.empty:
        return df
    idx = pareto_front(df["gflops"].to_numpy(float), df["score"].to_numpy(float))
    return df.iloc[idx].reset_index(drop=True)


def front_summary(df: pd.DataFrame, reference: tuple[float, float]) -> dict[str, float]:
    hv = hypervolume(df["gflops"].to_numpy(float), df["score"].to_numpy(float), reference) \
        if len(df) else 0.0
    return {"hypervolume": hv, "evaluated": float(len(df)),
            "front_size": float(len(front_table(df))),
            "best_score": float(df["score"].max()) if len(df) else math.nan}


def candidate_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Child-run records for :meth:`pipeline.tracking.StageRun.log_candidates`."""
    out = []
    for r in rows:
        metrics = {"params": float(r.params), "gflops": r.gflops, "score": r.score,
                   **{f"metric_{k}": v for k, v in r.metrics.items()},
                   **{f"time_{k}": v for k, v in r.timing.items()}}
        out.append({"name": f"{r.stage}:g{r.generation}:{r.arch_id}",
                    "params": {"arch_id": r.arch_id, "group": r.group, "stage": r.stage,
                               "generation": r.generation, "fusion_prob": r.fusion_prob,
                               "depth_candidates": r.depth_candidates},
                    "metrics": metrics, "tags": {"scalenas.arch_id": r.arch_id},
                    "artifacts": {"arch.json": json.dumps(dict(r.arch), indent=1)}})
    return out
