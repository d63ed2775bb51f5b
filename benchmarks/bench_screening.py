"""Cost of the evolution's surrogate screening at the paper's scale.

One generation (``next_generation``) over a pool shaped like the paper's search: about 1000
sampled subnets (the 5 x 3 fusion/depth grid), 100 parents, 100 children, analytic GFLOPs at W32
and the paper's input size, with screening (``screen_factor`` 10: 1000 children drawn, ridge fit,
greedy hypervolume choice) and without (``screen_factor`` 1). The pool's scores are a stand-in
(linear in the surrogate's features plus noise): timings do not depend on them. Compare the
extra seconds with one candidate's evaluation (minutes on a GPU at full width).

    .venv/bin/python benchmarks/bench_screening.py [--task seg] [--pool 1005] [--factor 10]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.cost import profile
from pipeline.config import EvolutionConfig, make_section
from pipeline.search.evolution import Evaluated, initial_rng_state, next_generation
from pipeline.search.surrogate import features
from pipeline.space.sample import sample_group, search_groups

SIZES = {"seg": (1024, 2048), "pose": (256, 192)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=sorted(SIZES), default="seg")
    ap.add_argument("--pool", type=int, default=1005)
    ap.add_argument("--factor", type=int, default=10)
    a = ap.parse_args()

    def cost(arch):
        return profile(arch, a.task, 32, SIZES[a.task]).gflops

    rng = np.random.default_rng(0)
    groups = search_groups()
    archs = [sample_group(rng, groups[i % len(groups)], a.task) for i in range(a.pool)]
    w = rng.normal(size=features(archs[0]).shape[0]) * 1e-3
    pool = [Evaluated(x, cost(x), float(0.7 + features(x) @ w + rng.normal() * 2e-3))
            for x in archs]
    print(f"task {a.task}, W32 {SIZES[a.task]}, pool {len(pool)}, parents 100, population 100")
    times = {}
    for factor in (1, a.factor):
        cfg = make_section(EvolutionConfig, parents=100, population=100, screen_factor=factor)
        t0 = time.perf_counter()
        gen = next_generation(pool, initial_rng_state(0), cfg, task=a.task, estimate_cost=cost,
                              generation=1)
        times[factor] = time.perf_counter() - t0
        extra = ""
        if gen.screening:
            extra = (f" (drew {gen.screening['candidates']}, ridge lambda "
                     f"{gen.screening['ridge_lambda']:g}, LOO R^2 {gen.screening['loo_r2']:.2f})")
        print(f"screen_factor {factor:3d}: {times[factor]:.2f} s per generation{extra}")
    print(f"screening adds {times[a.factor] - times[1]:.2f} s per generation "
          f"({(times[a.factor] - times[1]) / 100:.3f} s per evaluated child)")


if __name__ == "__main__":
    main()
