"""Stage: the random-sampling candidate list (grid of fusion probability x depth candidates x
samples per cell, seeded, split into shards). Output: ``candidates.json``.

    python -m pipeline.stages.sample --params P --task seg --out results/seg/search/sample/candidates
"""
from __future__ import annotations

import sys
from typing import Sequence

from pipeline.search.candidates import grid_candidates, write_candidates
from pipeline.stages.build import search_groups
from pipeline.stages.common import StageContext, run_stage

PHASE = "search_random"


def body(ctx: StageContext) -> dict[str, float]:
    r = ctx.cfg.search.random
    cands = grid_candidates(ctx.task, search_groups(ctx.cfg), r.samples_per_cell,
                            ctx.cfg.run.seed, r.shards)
    write_candidates(ctx.out / "candidates.json", "sample", 0, r.shards, cands)
    return {"candidates": float(len(cands))}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(PHASE, body, argv)


if __name__ == "__main__":
    sys.exit(main())
