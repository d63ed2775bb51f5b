"""Search throughput at W8 on the default (built-in) data.

1. Per-candidate overhead: everything except the network's forward passes (calibration and
   evaluation), as a percentage of the candidate's wall time; broken down into set_arch + cost,
   BN-statistics hooks, the rest of evaluation (data batching, upsampling, metric), and the
   shard-file append. Target: <= 10 %.
2. Candidates evaluated per minute with 2 parallel jobs vs 1 job (each job = a process with one
   torch thread that loads the supernet, calibration images and search split once), with and
   without the per-job start-up.

    .venv/bin/python benchmarks/bench_search.py [--task seg] [--candidates 8]
        [--checkpoint results/seg/supernet/model.pt] [--params params/default.yaml]

Without --checkpoint (or when it does not exist) the supernet has its initial weights: timings
do not depend on the weights. Figures are wall-clock and depend on what else runs on the machine.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from pipeline import config as pconfig  # noqa: E402
from pipeline.nets.supernet import SuperNet  # noqa: E402
from pipeline.search.candidates import grid_candidates  # noqa: E402
from pipeline.stages.build import make_evaluator, search_groups  # noqa: E402
from pipeline.search.table import ShardWriter  # noqa: E402


def load_cfg(params: Path, task: str, data_root: Path | None) -> Any:
    resolved = pconfig.load_resolved(params)
    if data_root is not None:
        sub = "cityscapes" if task == "seg" else "coco"
        resolved[task]["root"] = str(data_root / sub)
    return pconfig.from_dict(resolved)


def ensure_data(cfg_root: str, task: str, tmp: Path) -> Path | None:
    """None when the configured data exists; else generate the built-in data under ``tmp``."""
    if Path(cfg_root).is_dir():
        return None
    from pipeline.data.synth import generate_all

    generate_all(tmp / "data", 0, (task,))
    return tmp / "data"


def _worker(args: tuple[str, str, str, str | None, int, int, int]) -> tuple[float, float, int]:
    params, task, ckpt, data_root, start, count, total = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_cfg(Path(params), task, Path(data_root) if data_root else None)
    ev, _ = make_evaluator(task, cfg, ckpt, "cpu", stage="bench", generation=0,
                           cache_mb=cfg.run.search_cache_mb)
    cands = grid_candidates(task, search_groups(cfg), total, cfg.run.seed, 1)[start:start + count]
    t1 = time.perf_counter()
    for c in cands:
        ev(c)
    return t1 - t0, time.perf_counter() - t1, len(cands)


def throughput(jobs: int, n: int, params: str, task: str, ckpt: str, data_root: str | None
               ) -> tuple[float, float]:
    """(candidates/min including start-up, candidates/min of the evaluation loop only)."""
    per = n // jobs
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    with ctx.Pool(jobs) as pool:
        out = pool.map(_worker, [(params, task, ckpt, data_root, j * per, per, n)
                                 for j in range(jobs)])
    wall = time.perf_counter() - t0
    loop = max(o[1] for o in out)
    done = sum(o[2] for o in out)
    return 60 * done / wall, 60 * done / loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="seg", choices=("seg", "pose"))
    ap.add_argument("--params", default="params/default.yaml")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--candidates", type=int, default=8, help="candidates per measurement")
    ap.add_argument("--skip-parallel", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_"))
    cfg = load_cfg(Path(a.params), a.task, None)
    data_root = ensure_data(cfg.task(a.task).root, a.task, tmp)
    cfg = load_cfg(Path(a.params), a.task, data_root)
    ckpt = a.checkpoint
    if not ckpt or not Path(ckpt).is_file():
        ckpt = str(tmp / "model.pt")
        torch.save(SuperNet(a.task, cfg.task(a.task).width).state_dict(), ckpt)
    tc = cfg.task(a.task)
    print(f"task {a.task}, W{tc.width}, data {tc.root}, calibration {cfg.calibration.images} images "
          f"(batch {cfg.calibration.batch_size}), torch threads 1, checkpoint {ckpt}")

    # -- 1. overhead per candidate -------------------------------------------------------------
    ev, calib = make_evaluator(a.task, cfg, ckpt, "cpu", stage="bench", generation=0,
                               cache_mb=cfg.run.search_cache_mb)
    cands = grid_candidates(a.task, search_groups(cfg), a.candidates + 1, cfg.run.seed, 1)
    ev(cands[0])  # warm-up (allocator, first-call costs)
    rows, appends, parts = [], [], []
    with ShardWriter(tmp / "rows.jsonl") as w:
        for c in cands[1:a.candidates + 1]:
            r = ev(c)
            parts.append(dict(ev.last_breakdown))
            t = time.perf_counter()
            w.append(r)
            appends.append(time.perf_counter() - t)
            rows.append(r)
    mean = statistics.mean
    wall = [r.timing["wall_s"] + ap_ for r, ap_ in zip(rows, appends)]
    fwd = [r.timing["forward_s"] for r in rows]
    over = [w_ - f for w_, f in zip(wall, fwd)]
    print(f"\n[1] per candidate (mean of {len(rows)}): wall {mean(wall):.3f} s, forward passes "
          f"{mean(fwd):.3f} s, overhead {mean(over):.3f} s = {100 * sum(over) / sum(wall):.1f} % "
          f"of wall (target <= 10 %); min/max "
          f"{100 * min(o / w_ for o, w_ in zip(over, wall)):.1f} / "
          f"{100 * max(o / w_ for o, w_ in zip(over, wall)):.1f} %")
    calib_rest = [r.timing["calib_s"] - p["calib_forward_s"] - p["hooks_s"] for r, p in zip(rows, parts)]
    eval_rest = [r.timing["eval_s"] - p["eval_forward_s"] for r, p in zip(rows, parts)]
    print("    overhead breakdown (s): "
          f"set_arch + cost {mean(p['setup_s'] for p in parts):.4f}, "
          f"BN-statistics hooks + pooling {mean(p['hooks_s'] for p in parts):.4f}, "
          f"rest of calibration {mean(calib_rest):.4f}, "
          f"task evaluate outside the forward (batching, upsampling, argmax, metric) {mean(eval_rest):.4f}, "
          f"shard append {mean(appends):.4f}")
    print(f"    forward passes (s): calibration {mean(p['calib_forward_s'] for p in parts):.3f}, "
          f"evaluation {mean(p['eval_forward_s'] for p in parts):.3f}")
    ev.close()

    # -- 2. parallel jobs ----------------------------------------------------------------------
    if a.skip_parallel:
        return
    n = max(2, a.candidates - a.candidates % 2)
    dr = str(data_root) if data_root else None
    for jobs in (1, 2):
        incl, loop = throughput(jobs, n, a.params, a.task, ckpt, dr)
        print(f"[2] {jobs} job(s), {n} candidates: {incl:.1f} candidates/min including job "
              f"start-up, {loop:.1f} candidates/min in the evaluation loop")


if __name__ == "__main__":
    main()
