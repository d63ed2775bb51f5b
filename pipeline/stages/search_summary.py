"""Stage: the search's final tables and the acceptance comparison.

Fronts compared at the same fixed reference point (``pipeline.stages.build.reference_point``):
- ``sample``: the random-sampling stage alone;
- ``random``: sampling + the random-search baseline (as many extra evaluations as the evolution);
- ``evolution``: sampling + every generation (the evolution's final front), and per generation.

With ``--states`` (each generation's state.json) the summary also says how well the screening
surrogate predicted the children it chose: per generation its leave-one-out R^2 on the pool and
the correlation and mean absolute error of predicted vs measured scores.

Outputs: ``all.csv`` (every evaluated candidate, sampling + evolution; the baseline only serves
the comparison and is in ``random.csv``), ``front.csv`` (the final Pareto front, GFLOPs
increasing: what fine-tuning and the report read), ``front.png``, ``summary.json``. Fronts and
hypervolumes are along the cost axis of ``search.objective``: GFLOPs, or predicted latency in ms
(``--latency-table`` gives the reference point; ``summary.json`` then names the objective and
``front.csv`` is ordered by ``latency_ms``).

    python -m pipeline.stages.search_summary --params P --task seg --out results/seg/search/final \\
        --sample .../sample/merged/results.csv --random .../random/merged/results.csv \\
        --generations .../evolve/gen_1/merged/results.csv ... \\
        --states .../evolve/gen_1/candidates/state.json ... [--latency-table .../table.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.search.evolution import Generation
from pipeline.search.jobs import front_summary, front_table
from pipeline.stages.build import reference_point, search_cost
from pipeline.search.plots import plot_fronts
from pipeline.search.table import concat_tables, load_results, write_table
from pipeline.io import atomic_write_text
from pipeline.stages.common import StageContext, StageInputError, run_stage

PHASE = "search_evolution"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", type=Path, required=True)
    p.add_argument("--random", type=Path, default=None, help="the random-search baseline table")
    p.add_argument("--generations", nargs="*", type=Path, default=[],
                   help="each generation's results table, in order")
    p.add_argument("--states", nargs="*", type=Path, default=[],
                   help="each generation's state.json, in order (screening record)")
    p.add_argument("--latency-table", type=Path, default=None,
                   help="the latency lookup table (search.objective latency only)")


def screening_check(states: Sequence[Path], gens: Sequence[pd.DataFrame]) -> list[dict]:
    """Predicted vs measured scores of the children the surrogate kept, per generation."""
    if len(states) != len(gens):
        raise StageInputError(f"--states lists {len(states)} files but --generations "
                              f"{len(gens)}: pass one state.json per generation, in order")
    out = []
    for g, (path, table) in enumerate(zip(states, gens), start=1):
        gen = Generation.load(path)
        if gen.generation != g:
            raise StageInputError(f"{path}: is generation {gen.generation}, expected {g} "
                                  f"(--states must be in generation order)")
        scr = gen.screening or {}
        pred = scr.get("predicted")
        if not pred:
            continue
        measured = dict(zip(table["arch_id"], table["score"]))
        missing = sorted(set(pred) - set(measured))
        if missing:
            raise StageInputError(f"{path}: children {missing[:3]} are not in generation {g}'s "
                                  f"results table")
        pairs = np.array([(p, measured[a]) for a, p in sorted(pred.items())])
        row = {"generation": g, "surrogate_loo_r2": scr["loo_r2"], "children": int(len(pairs)),
               "surrogate_mae": float(np.abs(pairs[:, 0] - pairs[:, 1]).mean())}
        if len(pairs) >= 3 and pairs[:, 0].std() > 0 and pairs[:, 1].std() > 0:
            row["surrogate_r"] = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])
        out.append(row)
    return out


def body(ctx: StageContext) -> dict[str, float]:
    cost = search_cost(ctx.task, ctx.cfg, ctx.args.latency_table)
    axis, col = cost.axis, cost.axis.column
    ref = reference_point(ctx.task, ctx.cfg, cost)
    sample = load_results(ctx.args.sample)
    gens = [load_results(p) for p in ctx.args.generations]
    evolved = concat_tables([sample, *gens],
                            [str(p) for p in (ctx.args.sample, *ctx.args.generations)])
    history = []
    for g in range(len(gens) + 1):
        upto = pd.concat([sample, *gens[:g]], ignore_index=True)
        history.append(front_summary(upto, ref, col)["hypervolume"])
        ctx.run.log_metrics({"hypervolume_evolution": history[-1]}, step=g)
    out = {"reference": list(ref), "sample": front_summary(sample, ref, col),
           "evolution": front_summary(evolved, ref, col), "hypervolume_by_generation": history}
    if axis.objective != "gflops":  # a GFLOPs search writes what it always wrote
        out = {"objective": axis.objective, "cost": col, "cost_unit": axis.unit,
               "cost_label": axis.label, **out}
    if ctx.args.states:
        out["screening"] = screening_check(ctx.args.states, gens)
        for row in out["screening"]:
            ctx.run.log_metrics({k: v for k, v in row.items() if k.startswith("surrogate_")},
                                step=row["generation"])
    series = [("random sampling", sample)]
    if ctx.args.random is not None:
        rand = load_results(ctx.args.random)
        baseline = concat_tables([sample, rand], [str(ctx.args.sample), str(ctx.args.random)])
        out["random"] = front_summary(baseline, ref, col)
        write_table(rand, ctx.out / "random.csv")
        series.append(("sampling + random search", baseline))
    series.append(("sampling + evolution", evolved))
    hv_e = out["evolution"]["hypervolume"]
    out["evolution_beats_sample"] = hv_e > out["sample"]["hypervolume"]
    if "random" in out:
        out["evolution_beats_random"] = hv_e > out["random"]["hypervolume"]
    write_table(evolved, ctx.out / "all.csv")
    write_table(front_table(evolved, col), ctx.out / "front.csv")
    plot_fronts(series, ctx.out / "front.png", cost=col, cost_label=axis.label,
                title=f"{ctx.task}: search fronts (HV ref {ref[0]:.3g} {axis.unit}, 0)")
    atomic_write_text(ctx.out / "summary.json", json.dumps(out, indent=1) + "\n")
    ctx.run.log_artifact(ctx.out / "front.png")
    metrics = {"hv_sample": out["sample"]["hypervolume"], "hv_evolution": hv_e}
    if "random" in out:
        metrics["hv_random"] = out["random"]["hypervolume"]
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
