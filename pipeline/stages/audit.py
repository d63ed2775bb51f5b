"""Stage ``audit``: the ranking audit of one task, in three kinds of job.

Choosing (one job per task): the K ranked architectures and the comparison networks of each
fine-tune pick (:mod:`pipeline.audit.choose`), with the inherited search-split score of any that
the search did not evaluate (smallest, largest, HRNet, the comparisons: the supernet's subnet,
BN-calibrated, as every candidate)::

    python -m pipeline.stages.audit --choose --params results/params/seg/audit.json --task seg \\
        --checkpoint results/seg/supernet/model.pt --candidates results/seg/search/final/all.csv \\
        --selection results/seg/finetune/select/selection.json --out results/seg/audit_select

Training (one job per network and seed, independent, resumable): the architecture trained from
scratch as a stand-alone network with ``audit.<task>`` (the one training loop), BN statistics
recomputed on the calibration images, scored on val::

    python -m pipeline.stages.audit --slot a03 --seed 1 --choice .../audit_select/audit.json \\
        --params ... --task seg --out results/seg/audit_train/a03/seed_1

Ranking (one job per task): ``ranking.json``, ``ranking.md`` and ``ranking.png``
(:mod:`pipeline.audit.ranking`, :mod:`pipeline.audit.figure`); tau and rho are metrics of its
MLflow run::

    python -m pipeline.stages.audit --rank --choice ... --results .../result.json ... \\
        --records .../finetune.json ... --params ... --task seg --out results/seg/audit
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.space.arch import atomic_write_text
from pipeline.stages.common import StageContext, StageInputError, run_stage

PHASE = "audit"
CHOICE_FILE = "audit.json"
CHOICE_SCHEMA = "scalenas-audit-choice/1"
RESULT_FILE = "result.json"
RANKING_FILE = "ranking.json"


def add_args(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--choose", action="store_true", help="choose the audited networks")
    mode.add_argument("--slot", help="train the chosen network of this slot from scratch")
    mode.add_argument("--rank", action="store_true", help="rank and compare (ranking.json)")
    p.add_argument("--seed", type=int, default=None, help="training seed (--slot)")
    p.add_argument("--checkpoint", type=Path, default=None, help="the supernet (--choose)")
    p.add_argument("--candidates", type=Path, default=None,
                   help="everything the search evaluated: search/final/all.csv (--choose)")
    p.add_argument("--selection", type=Path, default=None,
                   help="the fine-tune selection.json (--choose)")
    p.add_argument("--choice", type=Path, default=None, help="audit.json (--slot, --rank)")
    p.add_argument("--results", nargs="*", type=Path, default=[],
                   help="every training job's result.json (--rank)")
    p.add_argument("--records", nargs="*", type=Path, default=[],
                   help="the fine-tuned models' finetune.json (--rank)")


def _section(ctx: StageContext) -> Any:
    return getattr(ctx.cfg.audit, ctx.task)


# -- choosing -------------------------------------------------------------------------------------
def _inherited(ctx: StageContext, slots: list, ) -> list:
    """Slots with the inherited search-split score filled in where the search had none."""
    from pipeline.evaluate import evaluate_subnet
    from pipeline.stages.build import task_from_config, load_calibration, load_supernet

    todo = [s for s in slots if s.inherited is None]
    if not todo:
        return slots
    task_obj = task_from_config(ctx.task, ctx.cfg)
    net = load_supernet(ctx.task, ctx.cfg, ctx.args.checkpoint, ctx.device)
    calib = load_calibration(task_obj, ctx.cfg, ctx.device)
    out = []
    for s in slots:
        if s.inherited is None:
            r = evaluate_subnet(task_obj, net, s.arch, "search", ctx.device, calib,
                                batch_size=int(ctx.cfg.calibration.batch_size))
            s = dataclasses.replace(s, inherited=float(r["score"]))
            print(f"{ctx.task}: {s.name} ({s.role} {s.label}): inherited {s.inherited:.4f}",
                  flush=True)
        out.append(s)
    return out


def choose_body(ctx: StageContext) -> dict[str, float]:
    from pipeline.audit.choose import check_k, choose_ranked, comparisons, same_networks
    from pipeline.finetune.select import SelectedModel, SelectionError
    from pipeline.search.table import load_results
    from pipeline.stages.build import make_cost_fn, search_groups

    for name in ("checkpoint", "candidates", "selection"):
        if getattr(ctx.args, name) is None:
            raise StageInputError(f"--choose needs --{name}")
    sec = _section(ctx)
    pool = load_results(ctx.args.candidates)
    check_k(int(sec.archs), len(pool), f"audit.{ctx.task}")
    doc = read_json(ctx.args.selection, "selection file", StageInputError)
    if not isinstance(doc, dict) or doc.get("task") != ctx.task:
        raise StageInputError(f"{ctx.args.selection}: not a {ctx.task} selection file")
    picks = {}
    for entry in doc.get("models", []):
        try:
            m = SelectedModel.from_dict(entry, source=str(ctx.args.selection))
        except (SelectionError, ValueError, TypeError, AttributeError) as e:
            raise StageInputError(f"{ctx.args.selection}: {e}") from None
        picks[m.name] = m.arch
    cost = make_cost_fn(ctx.task, ctx.cfg)
    ranked = choose_ranked(ctx.task, pool, int(sec.archs), picks, cost)
    pick_slots = {}
    for s in ranked:
        if s.role == "pick":
            for name in s.label.split("+"):
                pick_slots[name] = s
    ordered = {n: pick_slots[n] for n in picks}
    comps = comparisons(ctx.task, ordered, search_groups(ctx.cfg), int(ctx.cfg.run.seed), cost)
    slots = same_networks(_inherited(ctx, ranked + comps))
    for s in slots:
        s.arch.save(ctx.out / "archs" / f"{s.name}.json")
    out = {"schema": CHOICE_SCHEMA, "task": ctx.task, "pool_size": len(pool),
           "candidates": str(ctx.args.candidates), "archs": int(sec.archs),
           "seeds": list(sec.seeds), "picks": {n: s.name for n, s in ordered.items()},
           "slots": [s.to_dict() for s in slots]}
    atomic_write_text(ctx.out / CHOICE_FILE, json.dumps(out, indent=1) + "\n")
    ctx.run.log_artifact(ctx.out / CHOICE_FILE)
    for s in slots:
        print(f"{ctx.task}: {s.name}: {s.role} {s.label} {s.arch.arch_id[:10]} "
              f"{s.gflops:.4f} GFLOPs, inherited {s.inherited:.4f}")
    return {"pool_size": float(len(pool)), "slots": float(len(slots))}


def read_choice(path: Path, task: str) -> dict[str, Any]:
    doc = read_json(path, "audit choice file", StageInputError)
    if (not isinstance(doc, dict) or doc.get("schema") != CHOICE_SCHEMA
            or doc.get("task") != task or not isinstance(doc.get("slots"), list)):
        raise StageInputError(f"{path}: not a {task} audit choice file of schema {CHOICE_SCHEMA!r}")
    return doc


# -- training one network with one seed -----------------------------------------------------------
def train_body(ctx: StageContext) -> dict[str, float]:
    from pipeline.audit.standalone import train_standalone
    from pipeline.space.arch import Architecture

    if ctx.args.choice is None or ctx.args.seed is None:
        raise StageInputError("--slot needs --choice (audit.json) and --seed")
    seed = int(ctx.args.seed)
    doc = read_choice(ctx.args.choice, ctx.task)
    entry = next((s for s in doc["slots"] if s.get("slot") == ctx.args.slot), None)
    if entry is None:
        raise StageInputError(f"{ctx.args.choice}: no slot {ctx.args.slot!r} (slots: "
                              f"{[s.get('slot') for s in doc['slots']]})")
    arch = Architecture.load(ctx.args.choice.parent / "archs" / f"{ctx.args.slot}.json")
    if arch.arch_id != entry["arch_id"]:
        raise StageInputError(f"{ctx.args.choice}: slot {ctx.args.slot}: its architecture file "
                              f"holds {arch.arch_id}, not {entry['arch_id']}")
    if entry.get("same_as"):
        # No second training of one network: the ranking reads the first slot's results.
        rec = {"slot": ctx.args.slot, "seed": seed, "task": ctx.task, "arch_id": arch.arch_id,
               "role": entry["role"], "same_as": entry["same_as"]}
        ctx.run.set_tags({"scalenas.arch_id": arch.arch_id,
                          "scalenas.audit.same_as": entry["same_as"]})
        atomic_write_text(ctx.out / RESULT_FILE, json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print(f"{ctx.task}: {ctx.args.slot} is the network of {entry['same_as']} "
              f"({arch.arch_id[:10]}): trained once, its scores are used")
        return {}
    sec = _section(ctx)
    t0 = time.perf_counter()
    ctx.run.set_tags({"scalenas.arch_id": arch.arch_id, "scalenas.audit.slot": ctx.args.slot,
                      "scalenas.audit.role": entry["role"], "scalenas.seed": str(seed)})
    done = train_standalone(ctx.task, ctx.cfg, arch, sec, seed, ctx.work, ctx.device,
                            tracker=ctx.run)
    summary, result, score, metric = done.summary, done.result, done.score, done.metric
    rec = {"slot": ctx.args.slot, "seed": seed, "task": ctx.task, "arch_id": arch.arch_id,
           "role": entry["role"], "gflops": entry["gflops"], "params": entry["params"],
           "metric": metric, "val_score": score,
           "details": {k: float(v) for k, v in result.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)},
           "iterations": int(summary.iterations), "resumed_from": int(summary.resumed_from),
           "first_loss": summary.first_loss,
           "final_loss": summary.final_loss, "train_s": float(summary.seconds),
           "wall_s": time.perf_counter() - t0}
    atomic_write_text(ctx.out / RESULT_FILE, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(f"{ctx.task}: {ctx.args.slot} seed {seed} ({arch.arch_id[:10]}, {entry['gflops']:.4f} "
          f"GFLOPs): val {rec['metric']} {score:.4f} after {summary.iterations} iterations")
    return {"val_score": score, "final_loss": float(summary.final_loss),
            "gflops": float(entry["gflops"]), "iterations": float(summary.iterations)}


# -- ranking --------------------------------------------------------------------------------------
def rank_body(ctx: StageContext) -> dict[str, float]:
    from pipeline.audit.figure import scatter
    from pipeline.audit.ranking import build_ranking, markdown, metrics
    from pipeline.finetune.records import FinetuneRecord
    from pipeline.stages.training import write_stage_json

    if ctx.args.choice is None:
        raise StageInputError("--rank needs --choice (audit.json)")
    doc = read_choice(ctx.args.choice, ctx.task)
    sec = _section(ctx)
    scores: dict[str, dict[int, float]] = {}
    metric = "score"
    same_as = {str(s["slot"]): str(s["same_as"]) for s in doc["slots"] if s.get("same_as")}
    for p in ctx.args.results:
        r = read_json(p, "audit result", StageInputError)
        if (not isinstance(r, dict) or r.get("task") != ctx.task
                or ("val_score" not in r and r.get("slot") not in same_as)):
            raise StageInputError(f"{p}: not a {ctx.task} audit training result")
        if r["slot"] in same_as:
            continue
        scores.setdefault(str(r["slot"]), {})[int(r["seed"])] = float(r["val_score"])
        metric = str(r.get("metric", metric))
    for slot, first in same_as.items():
        scores[slot] = dict(scores.get(first, {}))
    missing = [(s["slot"], sd) for s in doc["slots"] for sd in doc["seeds"]
               if sd not in scores.get(s["slot"], {})]
    if missing:
        raise StageInputError(f"--results: no result for slot/seed {missing[:4]} "
                              f"({len(missing)} missing)")
    finetuned = {}
    for p in ctx.args.records:
        rec = FinetuneRecord.load(p)
        finetuned[rec.name] = float(rec.finetuned)
    recipe = {"iterations": sec.iterations, "epochs": sec.epochs, "batch_size": sec.batch_size,
              "optimizer": sec.optimizer.name, "lr": sec.optimizer.lr,
              "schedule": sec.schedule.name, "archs": sec.archs, "split": "trainfull",
              "from": "scratch"}
    ranking = build_ranking(ctx.task, metric, doc["slots"], scores, finetuned, doc["picks"],
                            resamples=int(sec.resamples), seed=int(ctx.cfg.run.seed),
                            recipe=recipe)
    ranking["pool_size"] = doc["pool_size"]
    write_stage_json(ctx.out / RANKING_FILE, ranking)
    scatter(ranking, ctx.out / "ranking.png")
    atomic_write_text(ctx.out / "ranking.md", markdown(ranking, "ranking.png"))
    for name in (RANKING_FILE, "ranking.png", "ranking.md"):
        ctx.run.log_artifact(ctx.out / name)
    m = metrics(ranking)
    st = ranking["stats"]
    print(f"{ctx.task}: tau {st['supernet']['tau']:.3f} "
          f"[{st['supernet']['tau_lo']:.3f}, {st['supernet']['tau_hi']:.3f}], "
          f"GFLOPs-only {st['gflops']['tau']:.3f}; largest-smallest "
          f"{st['largest_minus_smallest']:.4f}" if not math.isnan(st['supernet']['tau'])
          else f"{ctx.task}: tau undefined (constant scores)")
    return m


def body(ctx: StageContext) -> dict[str, float]:
    if ctx.args.choose:
        return choose_body(ctx)
    if ctx.args.rank:
        return rank_body(ctx)
    return train_body(ctx)


def main(argv: list[str] | None = None) -> int:
    return run_stage(PHASE, body, argv, add_args=add_args)


if __name__ == "__main__":
    sys.exit(main())
