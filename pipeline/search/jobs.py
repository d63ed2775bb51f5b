"""What the search stages share once the objects are built (pipeline.stages.build): the pool of
a results table, its Pareto front and summary, and MLflow candidate records."""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import pandas as pd

from pipeline.space.arch import Architecture
from pipeline.space.official import official_bytes
from pipeline.space.summary import arch_summary
from pipeline.tracking import TAG_ARCH_ID, TAG_GENERATION, TAG_PHASE, TAG_STAGE, TAG_TASK

from .evolution import Evaluated
from .pareto import hypervolume, pareto_front
from .table import Row, ResultsError, architectures


def _cost(df: pd.DataFrame, cost: str) -> pd.Series:
    if cost not in df.columns:
        raise ResultsError(f"results table has no {cost!r} column: it comes from a search with "
                           f"another search.objective")
    return df[cost]


def pool_from_table(df: pd.DataFrame, cost: str = "gflops") -> list[Evaluated]:
    """The evaluated pool of a results table; ``cost`` is the column of the search's cost axis
    (``gflops``, or ``latency_ms``: then ``Evaluated.cost`` is in milliseconds)."""
    return [Evaluated(a, float(g), float(s))
            for a, g, s in zip(architectures(df), _cost(df, cost), df["score"])]


def front_table(df: pd.DataFrame, cost: str = "gflops") -> pd.DataFrame:
    """The Pareto-front rows of a results table (cost = column ``cost``), by increasing cost."""
    if df.empty:
        return df
    idx = pareto_front(_cost(df, cost).to_numpy(float), df["score"].to_numpy(float))
    return df.iloc[idx].reset_index(drop=True)


def front_summary(df: pd.DataFrame, reference: tuple[float, float],
                  cost: str = "gflops") -> dict[str, float]:
    hv = hypervolume(_cost(df, cost).to_numpy(float), df["score"].to_numpy(float), reference) \
        if len(df) else 0.0
    return {"hypervolume": hv, "evaluated": float(len(df)),
            "front_size": float(len(front_table(df, cost))),
            "best_score": float(df["score"].max()) if len(df) else math.nan}


def candidate_records(rows: Sequence[Row], *, task: str, phase: str) -> list[dict[str, Any]]:
    """Child-run records for :meth:`pipeline.tracking.StageRun.log_candidates`.

    Self-describing runs: tags say task, phase, stage (sample, random, evolve) and generation, so
    a filter string separates them without walking parent runs; params hold the grid cell and the
    architecture summary (per-branch depths, per-module fusion density) for the UI's parallel
    coordinates; artifacts are the architecture document and its release-format ``.npy``.
    """
    out = []
    for r in rows:
        arch = Architecture.from_dict(dict(r.arch), source=f"candidate {r.arch_id}")
        metrics = {"params": float(r.params), "gflops": r.gflops, "score": r.score,
                   **({"latency_ms": r.latency_ms} if r.latency_ms is not None else {}),
                   **{f"metric_{k}": v for k, v in r.metrics.items()},
                   **{f"time_{k}": v for k, v in r.timing.items()}}
        out.append({"name": f"{r.stage}:g{r.generation}:{r.arch_id}",
                    "params": {"arch_id": r.arch_id, "group": r.group,
                               "fusion_prob": r.fusion_prob,
                               "depth_candidates": r.depth_candidates, **arch_summary(arch)},
                    "metrics": metrics,
                    "tags": {TAG_ARCH_ID: r.arch_id, TAG_TASK: task, TAG_PHASE: phase,
                             TAG_STAGE: r.stage, TAG_GENERATION: r.generation},
                    "artifacts": {"arch.json": json.dumps(dict(r.arch), indent=1),
                                  "arch.npy": official_bytes(arch)}})
    return out
