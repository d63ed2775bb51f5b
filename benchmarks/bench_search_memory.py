"""Memory of a seg search shard job at full resolution: the search split streamed vs held decoded.

A shard job (pipeline.stages.build.make_evaluator) loads the supernet and the calibration images
once, then scores candidates on the search split. Each measurement runs in a fresh process and
reports its peak RSS (the job's own process; the decoding worker is reported apart, its RSS
counts pages it shares with the job) and the wall time per candidate.

    python benchmarks/bench_search_memory.py [--sizes 8 64] [--hw 1024 2048] [--cache-mb MB]
        [--candidates 2] [--data DIR]

Two measurements:
- memory: today's shard job ("stream": the first images of the split, up to run.search_cache_mb
  or --cache-mb, decoded once and kept; one persistent worker decodes the others ahead while the
  network runs) scoring one candidate at each size. Target: peak RSS grows by less than 10 % from
  the smallest size to the largest.
- time: at the smallest size, the worst case of streaming ("stream0": budget 0, every image
  decoded again for every candidate) against the previous code ("cached": every search image
  decoded once and kept), --candidates each, the first one not timed (it warms the worker and the
  allocator). Target: within 10 %. Scores must be identical across the three.
The data is the built-in synthetic data generated at --hw (Cityscapes' 1024x2048 by default), W8,
calibration 4 images, batch 1, one torch thread, the smallest subnet's group. At 1024x2048 a W8
candidate takes about 10 s per image on one CPU thread (the stem and the first stage run at a
quarter of the resolution with 64-256 channels whatever the width): the default sizes take about
20 minutes.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from pipeline import config as pconfig  # noqa: E402
from pipeline.nets.supernet import SuperNet  # noqa: E402
from pipeline.search.candidates import grid_candidates, grid_groups  # noqa: E402
from pipeline.search.evaluate import CandidateEvaluator  # noqa: E402
from pipeline.stages import build as jobs  # noqa: E402

CALIB_IMAGES = 4


def _cfg(data: Path, train: int, n: int) -> Any:
    resolved = pconfig.load_resolved(pconfig.DEFAULT_PARAMS)
    resolved["seg"].update(root=str(data / "cityscapes"), search_fraction=n / train)
    resolved["calibration"].update(images=CALIB_IMAGES, batch_size=1)
    return pconfig.from_dict(resolved)


def _job(args: tuple[str, str, int, int, int, str, int]) -> dict[str, float]:
    """One shard job: build the evaluator, score ``count`` candidates; figures of this process."""
    mode, data, train, n, count, ckpt, cache_mb = args
    torch.set_num_threads(1)
    cfg = _cfg(Path(data), train, n)
    if mode.startswith("stream"):
        ev, _ = jobs.make_evaluator("seg", cfg, ckpt, "cpu", stage="bench", generation=0,
                                    cache_mb=0 if mode == "stream0" else cache_mb)
    else:  # the previous code path, kept here to compare with
        task = jobs.task_from_config("seg", cfg)
        net = jobs.load_supernet("seg", cfg, ckpt, "cpu")
        calib = jobs.load_calibration(task, cfg, "cpu")
        ds = task.dataset("search", train=False)
        cached = [ds[i] for i in range(len(ds))]

        def fn(model: torch.nn.Module) -> Any:
            return task.evaluate(model, "search", "cpu", batch_size=1, dataset=cached)

        ev = CandidateEvaluator(net, calib, fn, jobs.make_cost_fn("seg", cfg), stage="bench",
                                generation=0)
    groups = grid_groups([0.2], [[2]])  # the cheapest subnets: the data path weighs most
    cands = grid_candidates("seg", groups, count, cfg.run.seed, 1)
    times, scores = [], []
    for c in cands:
        t = time.perf_counter()
        scores.append(ev(c).score)
        times.append(time.perf_counter() - t)
    return {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "s_per_candidate": statistics.mean(times[1:] if len(times) > 1 else times),
            "scores": scores}


def _child(args: tuple, q: Any) -> None:
    try:
        q.put(_job(args))
    except BaseException as e:  # the parent waits on the queue: never leave it empty
        q.put({"error": f"{type(e).__name__}: {e}"})
        raise


def run(mode: str, data: Path, train: int, n: int, count: int, ckpt: str,
        cache_mb: int) -> dict[str, Any]:
    # A fresh (non-daemonic: it starts the decoding worker) process: its own peak RSS.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=((mode, str(data), train, n, count, ckpt, cache_mb), q))
    p.start()
    while True:  # a child killed outright (the OOM killer) puts nothing on the queue
        try:
            out = q.get(timeout=5)
            break
        except queue.Empty:
            if p.exitcode is not None:
                raise SystemExit(f"{mode} N={n}: the job died (exit code {p.exitcode})")
    p.join()
    if "error" in out:
        raise SystemExit(f"{mode} N={n}: {out['error']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--candidates", type=int, default=2, help="per job of the time comparison")
    ap.add_argument("--hw", type=int, nargs=2, default=[1024, 2048])
    ap.add_argument("--data", type=Path, default=None, help="reuse data generated before")
    ap.add_argument("--cache-mb", type=int, default=None,
                    help="decoded images a streamed job keeps (default: run.search_cache_mb)")
    a = ap.parse_args()
    if a.cache_mb is None:
        a.cache_mb = pconfig.make_section(pconfig.RunConfig).search_cache_mb
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_memory_"))
    sizes = sorted(a.sizes)
    # search_fraction n / train keeps exactly n images; calibration reads the rest
    train = sizes[-1] + CALIB_IMAGES
    data = a.data or tmp / "data"
    if (data / "SYNTH.json").is_file():  # made before: it must hold these sizes exactly
        seg = json.loads((data / "SYNTH.json").read_text())["tasks"]["seg"]
        if (seg["num_train"], list(seg["size_hw"])) != (train, list(a.hw)):
            raise SystemExit(f"{data}: {seg['num_train']} train images at {seg['size_hw']}; these "
                             f"sizes need {train} at {a.hw}: give another --data folder")
    else:
        from pipeline.data.synth import generate_all

        t = time.perf_counter()
        generate_all(data, 0, ("seg",), seg_train=train, seg_val=1, seg_size_hw=tuple(a.hw))
        print(f"generated {train} seg images at {a.hw[0]}x{a.hw[1]} in "
              f"{time.perf_counter() - t:.0f} s under {data}")
    ckpt = str(tmp / "model.pt")
    torch.save(SuperNet("seg", 8).state_dict(), ckpt)
    print(f"seg W8, {a.hw[0]}x{a.hw[1]}, calibration {CALIB_IMAGES} images, batch 1, 1 thread, "
          f"stream budget {a.cache_mb} MB", flush=True)
    print(f"{'path':<9}{'N':>5}{'cands':>7}{'peak RSS MB':>13}{'worker MB':>11}"
          f"{'s/candidate':>13}")
    plan = [("stream", n, 1) for n in sizes] + [("stream0", sizes[0], a.candidates),
                                                ("cached", sizes[0], a.candidates)]
    res: dict[tuple[str, int], dict[str, Any]] = {}
    for mode, n, count in plan:
        r = res[mode, n] = run(mode, data, train, n, count, ckpt, a.cache_mb)
        print(f"{mode:<9}{n:>5}{count:>7}{r['rss_mb']:>13.0f}{r['worker_rss_mb']:>11.0f}"
              f"{r['s_per_candidate']:>13.2f}", flush=True)
    lo, hi = res["stream", sizes[0]], res["stream", sizes[-1]]
    growth = 100 * (hi["rss_mb"] / lo["rss_mb"] - 1)
    print(f"peak RSS growth N={sizes[0]} -> {sizes[-1]}: {growth:+.1f} % (target below 10 %)")
    s0, c = res["stream0", sizes[0]], res["cached", sizes[0]]
    dt = 100 * (s0["s_per_candidate"] / c["s_per_candidate"] - 1)
    same = s0["scores"] == c["scores"] and lo["scores"] == c["scores"][:1]
    print(f"time per candidate, every image streamed vs all cached, N={sizes[0]}: {dt:+.1f} % "
          f"(target within 10 %); scores identical: {same}")


if __name__ == "__main__":
    main()
