"""Stage: one evolution generation's children, a pure function of (everything evaluated so far,
the previous generation's generator state, the parameters). Outputs: ``state.json`` (parents,
children, generator state before/after) and ``candidates.json`` (the children, in shards).

    python -m pipeline.stages.evolve --params P --task seg --out DIR --generation 2 \\
        --pool sample/merged/results.csv evolve/gen_1/merged/results.csv \\
        --prev-state evolve/gen_1/children/state.json [--latency-table .../table.json]

Parents, screening and the cost bounds (``evolution.cost_min``/``cost_max``) are along the cost
axis of ``search.objective``: GFLOPs, or predicted latency in ms from ``--latency-table``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pipeline.search.candidates import STREAM_EVOLUTION, children_candidates, write_candidates
from pipeline.search.evolution import (EvolutionError, Generation, initial_rng_state,
                                       next_generation)
from pipeline.search.jobs import pool_from_table
from pipeline.stages.build import reference_point, search_cost
from pipeline.search.table import load_all_results
from pipeline.stages.common import StageContext, StageInputError, run_stage

PHASE = "search_evolution"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generation", type=int, required=True, help="1..generations")
    p.add_argument("--pool", nargs="+", type=Path, required=True,
                   help="every results table evaluated so far (sampling + earlier generations)")
    p.add_argument("--prev-state", type=Path, default=None,
                   help="state.json of the previous generation (required from generation 2)")
    p.add_argument("--latency-table", type=Path, default=None,
                   help="the latency lookup table (search.objective latency only)")


def body(ctx: StageContext) -> dict[str, float]:
    g = ctx.args.generation
    e = ctx.cfg.search.evolution
    if not 1 <= g <= e.generations:
        raise StageInputError(f"--generation {g} outside 1..{e.generations} (search.evolution.generations)")
    cost = search_cost(ctx.task, ctx.cfg, ctx.args.latency_table)
    pool_df = load_all_results(ctx.args.pool)
    if g == 1:
        rng_state = initial_rng_state(ctx.cfg.run.seed, STREAM_EVOLUTION)
    else:
        if ctx.args.prev_state is None:
            raise StageInputError(f"generation {g} needs --prev-state (generation {g - 1}'s state.json)")
        prev = Generation.load(ctx.args.prev_state)
        if prev.generation != g - 1:
            raise EvolutionError(f"{ctx.args.prev_state}: is generation {prev.generation}, expected {g - 1}")
        pooled = set(pool_df["arch_id"])
        missing = [a.arch_id for a in prev.children if a.arch_id not in pooled]
        if missing:
            raise EvolutionError(f"generation {g - 1}'s children {missing[:3]} are not in the pool "
                                 f"tables: pass its merged results.csv in --pool")
        rng_state = prev.rng_out
    gen = next_generation(pool_from_table(pool_df, cost.axis.column), rng_state,
                          ctx.cfg.search.evolution, task=ctx.task, estimate_cost=cost.estimate,
                          generation=g, reference=reference_point(ctx.task, ctx.cfg, cost),
                          axis=cost.axis)
    gen.save(ctx.out / "state.json")
    write_candidates(ctx.out / "candidates.json", "evolve", g, e.shards,
                     children_candidates(gen.children, e.shards))
    metrics = {"children": float(len(gen.children)), "pool": float(len(pool_df))}
    scr = gen.screening or {}
    if "loo_r2" in scr:
        metrics.update(screened_candidates=float(scr["candidates"]),
                       surrogate_loo_r2=float(scr["loo_r2"]),
                       surrogate_lambda=float(scr["ridge_lambda"]),
                       surrogate_used=float("predicted" in scr))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
