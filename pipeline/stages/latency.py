"""Stage ``latency``: the latency lookup table of one task on this machine, what a search with
``search.objective: latency`` puts on its cost axis (:mod:`pipeline.search.latency`).

Every component of the task's network (width ``<task>.width``) is timed alone at the input size
the search's costs are counted at (``pipeline.stages.build.cost_input_hw``), compiled as the
deployable model is, with the job's threads (the rule's, ``run.threads``, like the search jobs
that read the table: the thread count is part of the device fingerprint)::

    python -m pipeline.stages.latency --params results/params/seg/latency.json --task seg \\
        --threads 1 --out results/seg/search/latency/<fingerprint>

writes ``table.json`` (``scalenas latency predict ARCH --table .../table.json`` sums it).

In a workflow run the table is for the device the run planned (``SCALENAS_LATENCY_FP``: the
fingerprint of the planning machine at ``run.threads``, which names the output directory). The
job measures on the machine it runs on with the threads it was given; when that is not the
planned device (another machine, or Snakemake gave the job fewer threads than ``run.threads``,
e.g. ``--cores 1``) it refuses with one line before measuring, rather than write a table whose
path and content describe different devices.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from pipeline.paths import LATENCY_TABLE
from pipeline.stages.common import StageContext, run_stage

PHASE = "latency"
#: Timed runs per component (the median is kept).
REPEATS = 5


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"timed runs per component, median kept (default {REPEATS})")


def check_planned_device() -> None:
    """Refuse (one line) to measure a device other than the one the workflow run planned."""
    from pipeline.search.latency import (PLANNED_FP_ENV, LatencyError, describe_device,
                                         device_info, planned_fingerprint)

    planned = planned_fingerprint()
    here = device_info()  # this machine, at the threads this job measures with
    if planned is None or here["fingerprint"] == planned:
        return
    # This machine at another thread count (run.threads, when Snakemake gave the job fewer)?
    for n in range(1, max(os.cpu_count() or 1, here["threads"], 64) + 1):
        if device_info(n)["fingerprint"] == planned:
            raise LatencyError(
                f"this job measures with {here['threads']} thread(s), the run planned its table "
                f"for {n} (run.threads) [{planned}]: give Snakemake --cores >= {n} (a job never "
                "gets more threads than --cores)")
    raise LatencyError(
        f"this machine is {describe_device({'device': here})}, not the device the run planned "
        f"[{planned}] ({PLANNED_FP_ENV}): the table is measured on the machine that plans the "
        "run (rule latency_table is local); for another device build it there with "
        "`scalenas latency build`")


def body(ctx: StageContext) -> dict[str, float]:
    import torch

    from pipeline.search.latency import build_table, save_table
    from pipeline.stages.build import cost_input_hw

    check_planned_device()
    torch.manual_seed(0)
    hw = cost_input_hw(ctx.task, ctx.cfg)
    table = build_table(ctx.task, int(ctx.task_cfg.width), hw, max(1, ctx.args.repeats),
                        progress=lambda m: print(m, flush=True))
    save_table(ctx.out / LATENCY_TABLE, table)
    dev = table["device"]
    print(f"{ctx.task}: latency table W{table['width']} {hw[0]}x{hw[1]}, {len(table['entries'])} "
          f"entries, smallest subnet {table['calibration']['end_to_end_s'] * 1e3:.2f} ms on "
          f"{dev['cpu']} ({dev['threads']} thread(s)), device {dev['fingerprint']}")
    ctx.run.set_tags({"scalenas.device_fingerprint": dev["fingerprint"]})
    ctx.run.log_artifact(ctx.out / LATENCY_TABLE)
    return {"entries": float(len(table["entries"])),
            "smallest_ms": table["calibration"]["end_to_end_s"] * 1e3,
            "fixed_ms": table["entries"]["fixed"] * 1e3}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
