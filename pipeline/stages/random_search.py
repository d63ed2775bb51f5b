"""Stage: the random-search baseline's candidate list: as many extra evaluations as the whole
evolution makes (generations x population), each from a uniformly drawn grid cell, none already
in the sampling pool. Output: ``candidates.json``.

    python -m pipeline.stages.random_search --params P --task seg --out DIR --pool sample/results.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pipeline.search.candidates import random_baseline_candidates, write_candidates
from pipeline.stages.build import search_groups
from pipeline.search.table import load_all_results
from pipeline.stages.common import StageContext, run_stage

PHASE = "search_evolution"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", nargs="+", type=Path, required=True,
                   help="results tables already evaluated (never drawn again)")


def body(ctx: StageContext) -> dict[str, float]:
    e = ctx.cfg.search.evolution
    pool = load_all_results(ctx.args.pool)
    count = e.generations * e.population
    cands = random_baseline_candidates(ctx.task, search_groups(ctx.cfg), count, ctx.cfg.run.seed,
                                       e.shards, set(pool["arch_id"]))
    write_candidates(ctx.out / "candidates.json", "random", 0, e.shards, cands)
    return {"candidates": float(len(cands))}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
