"""Evolution vs random search over several seeds, with the trained supernet of a finished run.

For each seed: the sampling stage's candidates (``search.random`` grid), a random search with as
many extra evaluations as the evolution (``generations x population``), and the evolution under
each variant of its operators; every front's hypervolume at the run's fixed reference point. The
variants isolate the two choices of ``search.evolution``: ``mutation`` (resample / flip) and
``screen_factor`` (the surrogate screening; 1 = off). Seed 0 with variant ``ours`` is what the
default run itself computes (``results/<task>/search/final/summary.json``).

Evaluations are the pipeline's own (calibration + search split, one thread) and are cached by
architecture id in ``--cache`` (JSON), so variants and reruns share them: the cache belongs to one
trained supernet; delete it after retraining.

    .venv/bin/python benchmarks/search_quality.py --task seg --seeds 0 1 2 3 4 \\
        [--params params/default.yaml] [--variants ours flip_plain resample_plain flip_screened]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import dataclasses  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.search.candidates import (STREAM_EVOLUTION, Candidate, grid_candidates,  # noqa: E402
                                        random_baseline_candidates)
from pipeline.search.evolution import Evaluated, initial_rng_state, next_generation  # noqa: E402
from pipeline.stages.build import (make_cost_fn, make_evaluator, reference_point,  # noqa: E402
                                   search_groups)
from pipeline.search.pareto import hypervolume  # noqa: E402
from pipeline.space.arch import atomic_write_text  # noqa: E402

VARIANTS = {
    "ours": {},
    "flip_plain": {"mutation": "flip", "screen_factor": 1},
    "resample_plain": {"screen_factor": 1},
    "flip_screened": {"mutation": "flip"},
}


class CachedEvaluator:
    def __init__(self, task: str, cfg, checkpoint: Path, cache: Path) -> None:
        self.task, self.cfg, self.checkpoint, self.path = task, cfg, checkpoint, cache
        self.cache = json.loads(cache.read_text()) if cache.exists() else {}
        self.fn = None
        self.new = 0

    def __call__(self, arch) -> Evaluated:
        if arch.arch_id not in self.cache:
            if self.fn is None:
                self.fn, _ = make_evaluator(self.task, self.cfg, self.checkpoint, "cpu",
                                            stage="search_quality", generation=0,
                                            cache_mb=self.cfg.run.search_cache_mb)
            row = self.fn(Candidate(0, 0, "", None, "", arch))
            self.cache[arch.arch_id] = [row.gflops, row.score]
            self.new += 1
            if self.new % 10 == 0:
                self.save()
        g, s = self.cache[arch.arch_id]
        return Evaluated(arch, float(g), float(s))

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.cache))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=("seg", "pose"), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--params", type=Path, default=Path("params/default.yaml"))
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--cache", type=Path, default=None,
                    help="evaluation cache (default: <results>/benchmarks/search_quality_<task>"
                         ".json, outside the pipeline's outputs)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_params(a.params)
    ckpt = a.results / a.task / "supernet" / "model.pt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt}: no trained supernet (run the pipeline first)")
    cache = a.cache or a.results / "benchmarks" / f"search_quality_{a.task}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    ev = CachedEvaluator(a.task, cfg, ckpt, cache)
    cost = make_cost_fn(a.task, cfg)
    ref = reference_point(a.task, cfg)
    groups = search_groups(cfg)
    per_cell = int(cfg.search.random.samples_per_cell)
    gens = int(cfg.search.evolution.generations)
    hv = lambda pts: hypervolume([e.cost for e in pts], [e.score for e in pts], ref)  # noqa: E731
    print(f"task {a.task}, reference {ref}, {gens} generations; hypervolume per front")
    wins: dict[str, list[float]] = {v: [] for v in a.variants}
    t0 = time.perf_counter()
    for seed in a.seeds:
        sample = [ev(c.arch) for c in grid_candidates(a.task, groups, per_cell, seed, 2)]
        line = f"seed {seed}: sampling {hv(sample):.6f}"
        for name in a.variants:
            conf = dataclasses.replace(cfg.search.evolution, **VARIANTS[name])
            extra = gens * conf.population
            rand = [ev(c.arch) for c in random_baseline_candidates(
                a.task, groups, extra, seed, 2, {e.arch.arch_id for e in sample})]
            pool, state = list(sample), initial_rng_state(seed, STREAM_EVOLUTION)
            for g in range(1, gens + 1):
                gen = next_generation(pool, state, conf, task=a.task, generation=g, reference=ref,
                                      estimate_cost=lambda x: cost(x).gflops)
                pool += [ev(x) for x in gen.children]
                state = gen.rng_out
            h_r, h_e = hv(sample + rand), hv(pool)
            wins[name].append(h_e / h_r - 1)
            line += f" | {name}: random {h_r:.6f} evolution {h_e:.6f}"
        print(line, flush=True)
        ev.save()
    print(f"evolution vs random search with the same extra evaluations ({len(a.seeds)} seeds, "
          f"{ev.new} new evaluations, {time.perf_counter() - t0:.0f} s):")
    for name, rel in wins.items():
        print(f"  {name:15s} wins {sum(r > 0 for r in rel)}/{len(rel)}, "
              f"mean {100 * sum(rel) / len(rel):+.2f} %, "
              f"per seed " + " ".join(f"{100 * r:+.1f}" for r in rel))


if __name__ == "__main__":
    main()
