"""The audit's ranking document: what was trained, how it scored, and the statistics.

:func:`build_ranking` takes the chosen networks (``audit.json`` of the selection job: slot,
role, arch id, GFLOPs, params, inherited search-split score), the stand-alone val scores per slot
and seed, and the fine-tuned val scores of the picks, and returns ``ranking.json``'s content:

- ``archs``: per ranked architecture its id, GFLOPs, params, inherited score, stand-alone score
  (mean over seeds, and per seed) and, for a fine-tune pick, its fine-tuned score;
- ``stats``: tau and rho (bootstrap intervals) of the supernet's inherited scores against the
  stand-alone scores, the same for the cost-only predictors (GFLOPs, params), top-k overlap,
  per-seed tau, the largest-minus-smallest stand-alone spread, seed repeatability;
- ``comparisons``: per fine-tune pick, its stand-alone scores against a random and the nearest
  uniform architecture of its cost, trained with the same budget and seeds (margins).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from . import stats

SCHEMA = "scalenas-audit-ranking/1"
#: Roles of the ranked architectures (the comparison networks have "random" and "uniform").
RANKED_ROLES = ("smallest", "largest", "hrnet", "pick", "pool")


def _mean(v: Sequence[float]) -> float:
    return float(np.mean(v)) if len(v) else math.nan


def build_ranking(task: str, metric: str, slots: Sequence[Mapping[str, Any]],
                  scores: Mapping[str, Mapping[int, float]], finetuned: Mapping[str, float],
                  picks: Mapping[str, str], *, resamples: int, seed: int, top_k: int = 3,
                  recipe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``ranking.json`` of one task.

    ``slots``: ``audit.json``'s slot entries; ``scores[slot][seed]``: stand-alone val score;
    ``finetuned[pick name]``: the fine-tuned val score; ``picks[pick name]``: its ranked slot."""
    seeds = sorted({s for per in scores.values() for s in per})
    ranked = [s for s in slots if s["role"] in RANKED_ROLES]
    slot_picks: dict[str, list[str]] = {}
    for name, slot in picks.items():
        slot_picks.setdefault(slot, []).append(name)
    archs = []
    for s in ranked:
        per_seed = {int(k): float(v) for k, v in sorted(scores.get(s["slot"], {}).items())}
        names = slot_picks.get(s["slot"], [])
        ft = [finetuned[n] for n in names if n in finetuned]
        archs.append({"slot": s["slot"], "role": s["role"], "label": s.get("label", ""),
                      "arch_id": s["arch_id"], "gflops": s["gflops"], "params": s["params"],
                      "inherited": s["inherited"], "standalone": _mean(list(per_seed.values())),
                      "standalone_seeds": per_seed, "picks": names,
                      "finetuned": max(ft) if ft else None})
    inh = [a["inherited"] for a in archs]
    sa = [a["standalone"] for a in archs]
    boot = {"resamples": resamples, "seed": seed}
    k = max(1, min(top_k, len(archs)))
    by_role = {a["role"]: a for a in archs if a["role"] in ("smallest", "largest")}
    per_seed_tau = {str(sd): stats.kendall_tau(
        [a["inherited"] for a in archs if sd in a["standalone_seeds"]],
        [a["standalone_seeds"][sd] for a in archs if sd in a["standalone_seeds"]]) for sd in seeds}
    spread = (by_role["largest"]["standalone"] - by_role["smallest"]["standalone"]
              if len(by_role) == 2 else math.nan)
    st = {
        "supernet": stats.correlation(inh, sa, **boot),
        "gflops": stats.correlation([a["gflops"] for a in archs], sa, **boot),
        "params": stats.correlation([float(a["params"]) for a in archs], sa, **boot),
        "top_k": k,
        "top_k_overlap": {"supernet": stats.top_k_overlap(inh, sa, k),
                          "gflops": stats.top_k_overlap([a["gflops"] for a in archs], sa, k)},
        "tau_per_seed": per_seed_tau,
        "largest_minus_smallest": spread,
        "standalone_range": [float(np.min(sa)), float(np.max(sa))] if sa else [math.nan] * 2,
        "inherited_range": [float(np.min(inh)), float(np.max(inh))] if inh else [math.nan] * 2,
        "repeatability": stats.repeatability(
            {a["slot"]: list(a["standalone_seeds"].values()) for a in archs}),
    }
    st["supernet_minus_gflops_tau"] = st["supernet"]["tau"] - st["gflops"]["tau"]
    comps = []
    by_slot = {s["slot"]: s for s in slots}
    for name, pslot in picks.items():
        pick_scores = scores.get(pslot, {})
        entry: dict[str, Any] = {"pick": name, "slot": pslot,
                                 "gflops": by_slot[pslot]["gflops"],
                                 "pick_scores": {int(k): float(v) for k, v in pick_scores.items()}}
        for kind in ("random", "uniform"):
            other = by_slot.get(f"{name}.{kind}")
            if other is None:
                continue
            o_scores = scores.get(other["slot"], {})
            common = sorted(set(pick_scores) & set(o_scores))
            entry[kind] = {"slot": other["slot"], "arch_id": other["arch_id"],
                           "gflops": other["gflops"], "params": other["params"],
                           "inherited": other["inherited"],
                           "scores": {int(s): float(o_scores[s]) for s in common},
                           "margin": stats.margin([pick_scores[s] for s in common],
                                                  [o_scores[s] for s in common])}
        comps.append(entry)
    return {"schema": SCHEMA, "task": task, "metric": metric, "seeds": seeds,
            "recipe": dict(recipe or {}), "archs": archs, "stats": st, "comparisons": comps}


def _f(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def _ci(c: Mapping[str, float], key: str) -> str:
    return f"{_f(c[key])} [{_f(c[key + '_lo'])}, {_f(c[key + '_hi'])}]"


def markdown(doc: Mapping[str, Any], figure: str | None = None) -> str:
    """The ranking as Markdown: the statistics, the comparisons and the table of architectures."""
    st, m = doc["stats"], doc["metric"]
    lines = [f"# Ranking audit: {doc['task']}", "",
             f"Stand-alone training from scratch, seeds {doc['seeds']}; scores on val ({m}); "
             "inherited = the search's score with the supernet's weights (search split).", "",
             "| predictor of the stand-alone score | Kendall tau [95 % CI] | Spearman rho [95 % CI] |",
             "|---|---|---|"]
    for key, name in (("supernet", "supernet (inherited weights)"), ("gflops", "GFLOPs only"),
                      ("params", "params only")):
        lines.append(f"| {name} | {_ci(st[key], 'tau')} | {_ci(st[key], 'rho')} |")
    rep = st["repeatability"]
    lines += ["", f"- top-{st['top_k']} overlap: supernet {_f(st['top_k_overlap']['supernet'], 2)}, "
              f"GFLOPs {_f(st['top_k_overlap']['gflops'], 2)}",
              f"- largest minus smallest stand-alone: {_f(st['largest_minus_smallest'])} {m}",
              f"- seed repeatability: between-arch SD {_f(rep['between_sd'], 4)}, within-arch "
              f"(seed) SD {_f(rep['within_sd'], 4)}, ratio {_f(rep['ratio'], 2)}; mean |diff| of "
              f"two seeds {_f(rep['seed_pair_diff'], 4)} vs two archs {_f(rep['arch_pair_diff'], 4)}",
              f"- tau per seed: " + ", ".join(f"seed {k}: {_f(v)}"
                                              for k, v in st["tau_per_seed"].items())]
    if doc["comparisons"]:
        lines += ["", "| pick | GFLOPs | pick | random (GFLOPs) | margin | uniform (GFLOPs) | margin |",
                  "|---|---|---|---|---|---|---|"]
        for c in doc["comparisons"]:
            cells = [c["pick"], _f(c["gflops"], 4), _f(_mean(list(c["pick_scores"].values())))]
            for kind in ("random", "uniform"):
                o = c.get(kind)
                if o is None:
                    cells += ["n/a", "n/a"]
                    continue
                mg = o["margin"]
                cells += [f"{_f(_mean(list(o['scores'].values())))} ({_f(o['gflops'], 4)})",
                          f"{_f(mg['mean'])} ± {_f(mg['se'])} (wins {_f(mg['wins'], 2)})"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| slot | role | arch | GFLOPs | params | inherited | stand-alone | fine-tuned |",
              "|---|---|---|---|---|---|---|---|"]
    for a in sorted(doc["archs"], key=lambda a: a["gflops"]):
        role = a["role"] + (f" ({a['label']})" if a["role"] in ("pick",) else "")
        lines.append(f"| {a['slot']} | {role} | {a['arch_id'][:10]} | {_f(a['gflops'], 4)} | "
                     f"{a['params']} | {_f(a['inherited'])} | {_f(a['standalone'])} | "
                     f"{_f(a['finetuned'])} |")
    if figure:
        lines += ["", f"![inherited vs stand-alone]({figure})"]
    return "\n".join(lines) + "\n"


def metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures as MLflow metrics of the ranking stage's run."""
    st = doc["stats"]
    out = {"tau": st["supernet"]["tau"], "rho": st["supernet"]["rho"],
           "tau_lo": st["supernet"]["tau_lo"], "tau_hi": st["supernet"]["tau_hi"],
           "tau_gflops": st["gflops"]["tau"], "rho_gflops": st["gflops"]["rho"],
           "tau_params": st["params"]["tau"], "largest_minus_smallest": st["largest_minus_smallest"],
           "repeat_ratio": st["repeatability"]["ratio"],
           "top_k_overlap": st["top_k_overlap"]["supernet"]}
    for c in doc["comparisons"]:
        for kind in ("random", "uniform"):
            if kind in c:
                out[f"margin_{c['pick']}_{kind}"] = c[kind]["margin"]["mean"]
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}
