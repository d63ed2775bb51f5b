"""Stage: evaluate one shard of a candidate list (calibrate + evaluate each candidate on the
trained supernet), resumably: progress is appended to ``<work>/rows.jsonl`` row by row, candidates
already there are skipped, and ``rows.jsonl`` + ``calibration.json`` (the recorded image list)
are published only when the shard is complete.

    python -m pipeline.stages.search_shard --phase search_random --params P --task seg \\
        --out results/seg/search/sample/shard_0 --candidates .../candidates.json --shard 0 \\
        --checkpoint results/seg/supernet/model.pt [--latency-table .../table.json]

With ``search.objective: latency`` each row also holds the candidate's predicted latency
(``latency_ms``) from ``--latency-table``, refused when measured on another device or input size.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from pipeline.search.candidates import read_candidates
from pipeline.stages.build import make_evaluator, search_cost
from pipeline.search.shards import run_shard
from pipeline.io import atomic_write_text
from pipeline.stages.common import StageContext, run_phased_stage

PHASES = ("search_random", "search_evolution")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", type=Path, required=True, help="candidates.json of the stage")
    p.add_argument("--shard", type=int, required=True, help="shard index 0..shards-1")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="trained supernet state_dict (results/<task>/supernet/model.pt)")
    p.add_argument("--latency-table", type=Path, default=None,
                   help="the latency lookup table (search.objective latency only)")


def body(ctx: StageContext) -> dict[str, float]:
    from pipeline.nets.init import file_sha256

    # Lineage: which supernet file (trained here or supernet.<task>.checkpoint) was searched.
    ctx.run.set_tags({"scalenas.supernet_sha256": file_sha256(ctx.args.checkpoint)})
    cost = search_cost(ctx.task, ctx.cfg, ctx.args.latency_table)
    cl = read_candidates(ctx.args.candidates)
    mine = cl.shard(ctx.args.shard)
    evaluator, calib = make_evaluator(ctx.task, ctx.cfg, ctx.args.checkpoint, ctx.device,
                                      stage=cl.stage, generation=cl.generation,
                                      cache_mb=ctx.settings.search_cache_mb, latency=cost.latency)
    rows, new = run_shard(mine, ctx.out / "rows.jsonl", evaluator,
                          partial=ctx.work / "rows.jsonl")
    evaluator.close()
    atomic_write_text(ctx.out / "calibration.json", json.dumps(
        {"split": "train", "indices": calib.indices, "images": calib.names,
         "num_images": calib.num_images,
         "augment": bool(ctx.cfg.calibration.augment)}, indent=1) + "\n")
    wall = sum(r.timing["wall_s"] for r in rows)
    over = sum(r.timing["overhead_s"] for r in rows)
    return {"candidates": float(len(rows)), "evaluated_now": float(new),
            "overhead_fraction": over / wall if wall else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    return run_phased_stage(PHASES, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
