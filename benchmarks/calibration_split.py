"""How the split BN calibration reads moves a search: the sampling stage's candidates of a
finished run, each calibrated on the search split (the old behaviour) and on the train split
(scalenas.md section 5), scored on the search split; prints each pool's hypervolume at the run's
fixed reference point, its front size and the rank correlation of the two scores.

    .venv/bin/python benchmarks/calibration_split.py --task seg \\
        --checkpoint results/seg/supernet/model.pt [--params params/default.yaml] [--limit 40]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.config import load_params  # noqa: E402
from pipeline.stages import build  # noqa: E402
from pipeline.nets.calibrate import CalibrationSet, calibration_indices, image_batches  # noqa: E402
from pipeline.search.candidates import grid_candidates  # noqa: E402
from pipeline.search.pareto import hypervolume, pareto_front  # noqa: E402


def calibration_on(split: str, task_obj, cfg) -> CalibrationSet:
    c = cfg.calibration
    ds = task_obj.dataset(split, train=False)
    idx = calibration_indices(len(ds), min(int(c.images), len(ds)), seed=build._calib_seed(cfg))
    return CalibrationSet(idx, image_batches([ds[i]["image"] for i in idx], int(c.batch_size)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("seg", "pose"), required=True)
    ap.add_argument("--params", type=Path, default=Path("params/default.yaml"))
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=0, help="first N sampling candidates (0 = all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_params(a.params)
    task_obj = build.task_from_config(a.task, cfg)
    net = build.load_supernet(a.task, cfg, a.checkpoint, "cpu")
    cost = build.make_cost_fn(a.task, cfg)
    ref = build.reference_point(a.task, cfg)
    cands = grid_candidates(a.task, build.search_groups(cfg), cfg.search.random.samples_per_cell,
                            cfg.run.seed, 1)
    cands = cands[:a.limit] if a.limit else cands
    search = task_obj.dataset("search", train=False)
    cached = [search[i] for i in range(len(search))]
    calibs = {s: calibration_on(s, task_obj, cfg) for s in ("search", "train")}
    gflops, scores = [], {s: [] for s in calibs}
    for cand in cands:
        net.set_arch(cand.arch)
        gflops.append(cost(cand.arch).gflops)
        for s, calib in calibs.items():
            calib.calibrate(net)
            res = task_obj.evaluate(net, "search", "cpu", batch_size=int(cfg.calibration.batch_size),
                                    dataset=cached)
            scores[s].append(float(res["score"]))
    g = np.asarray(gflops)
    for s, sc in scores.items():
        sc = np.asarray(sc)
        print(f"{a.task} calibration on {s:6s}: candidates {len(sc)}  hypervolume "
              f"{hypervolume(g, sc, ref):.5f}  front {len(pareto_front(g, sc))}  "
              f"mean score {sc.mean():.4f}")
    r = np.corrcoef(np.argsort(np.argsort(scores['search'])),
                    np.argsort(np.argsort(scores['train'])))[0, 1]
    print(f"{a.task} Spearman rank correlation of the two scores: {r:.3f}")


if __name__ == "__main__":
    main()
