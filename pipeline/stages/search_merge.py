"""Stage: merge the finished shards of one candidate list into one results table, with its
Pareto front, front plot and hypervolume; every candidate becomes an MLflow child run (batched).

Outputs: ``results.csv`` (deterministic: one row per arch id), ``timings.csv``, ``front.csv``
(the front of this table plus ``--pool``), ``front.png``, ``summary.json``.

    python -m pipeline.stages.search_merge --phase search_random --params P --task seg \\
        --out results/seg/search/sample/merged --candidates .../candidates.json \\
        --shards .../shard_0 .../shard_1 [--pool earlier/results.csv ...] \\
        [--latency-table .../table.json]

The front, hypervolume and plot are along the cost axis of ``search.objective`` (GFLOPs, or
predicted latency in ms: then ``--latency-table`` gives the reference point and ``summary.json``
names the objective).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.search.candidates import read_candidates
from pipeline.search.jobs import candidate_records, front_summary, front_table
from pipeline.stages.build import reference_point, search_cost
from pipeline.search.plots import plot_fronts
from pipeline.search.table import load_all_results, read_shard, rows_to_frames, write_table
from pipeline.io import atomic_write_text
from pipeline.stages.common import StageContext, StageInputError, run_phased_stage

PHASES = ("search_random", "search_evolution")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", type=Path, required=True)
    p.add_argument("--shards", nargs="+", type=Path, required=True,
                   help="shard output directories (each holds rows.jsonl)")
    p.add_argument("--pool", nargs="*", type=Path, default=[],
                   help="earlier results tables: the front and hypervolume are cumulative")
    p.add_argument("--latency-table", type=Path, default=None,
                   help="the latency lookup table (search.objective latency only)")


def body(ctx: StageContext) -> dict[str, float]:
    cost = search_cost(ctx.task, ctx.cfg, ctx.args.latency_table)
    axis = cost.axis
    cl = read_candidates(ctx.args.candidates)
    rows = [r for d in ctx.args.shards for r in read_shard(d / "rows.jsonl")[0]]
    res, tim = rows_to_frames(rows)
    want = {c.arch_id for c in cl.candidates}
    got = set(res["arch_id"])
    if want != got:
        raise StageInputError(f"{ctx.args.candidates}: {len(want - got)} candidate(s) missing from "
                              f"the shards and {len(got - want)} unexpected: run every shard first")
    write_table(res, ctx.out / "results.csv")
    write_table(tim, ctx.out / "timings.csv")
    pool = load_all_results(ctx.args.pool) if ctx.args.pool else res.iloc[0:0]
    cumulative = pd.concat([pool, res], ignore_index=True) if len(pool) else res
    ref = reference_point(ctx.task, ctx.cfg, cost)
    front = front_table(cumulative, axis.column)
    write_table(front, ctx.out / "front.csv")
    label = cl.stage if cl.stage != "evolve" else f"generation {cl.generation}"
    series = [("evaluated before", pool), (label, res)] if len(pool) else [(label, res)]
    plot_fronts(series, ctx.out / "front.png", title=f"{ctx.task}: {label}", cost=axis.column,
                cost_label=axis.label)
    summary = {"stage": cl.stage, "generation": cl.generation, "reference": list(ref),
               "this": front_summary(res, ref, axis.column),
               "cumulative": front_summary(cumulative, ref, axis.column),
               "overhead_fraction": float(tim["overhead_s"].sum() / tim["wall_s"].sum())}
    if axis.objective != "gflops":  # a GFLOPs search writes what it always wrote
        summary.update(objective=axis.objective, cost=axis.column, cost_unit=axis.unit,
                       cost_label=axis.label)
    atomic_write_text(ctx.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    ctx.run.log_candidates(candidate_records(rows, task=ctx.task, phase=ctx.phase))
    ctx.run.log_metrics({"hypervolume": summary["cumulative"]["hypervolume"],
                         "hypervolume_this": summary["this"]["hypervolume"]},
                        step=cl.generation)
    ctx.run.log_artifact(ctx.out / "front.png")
    return {"evaluated": float(len(res)), "front_size": summary["cumulative"]["front_size"]}


def main(argv: Sequence[str] | None = None) -> int:
    return run_phased_stage(PHASES, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
