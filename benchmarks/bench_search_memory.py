"""Memory of a seg search shard job at full resolution: the search split streamed vs held decoded.

A shard job (pipeline.stages.build.make_evaluator) loads the supernet and the calibration images
once, then scores candidates on the search split. Each measurement runs in a fresh process and
reports its peak RSS (the job's own process; the decoding worker is reported apart, its RSS
counts pages it shares with the job) and the wall time per candidate.

    python benchmarks/bench_search_memory.py [--sizes 8 64] [--candidates 2] [--hw 1024 2048]
        [--cache-mb 1024]

Measured: "stream" (today's code: the first images of the split, up to --cache-mb, decoded once
and kept; one persistent worker decodes the others ahead while the network runs) at every size,
and "cached" (the previous code: every search image decoded once and kept) at the smallest size,
plus the largest size with --cached-all. Targets: once the split exceeds the budget the streamed
job's peak RSS stays flat (budget + items in flight); its time per candidate is within 10 % of the
cached one. The data is the built-in synthetic data generated at --hw (Cityscapes' 1024x2048 by
default), W8, calibration 8 images, batch 1, one torch thread, the smallest subnet's group.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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

CALIB_IMAGES = 8


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
    if mode == "stream":
        ev, _ = jobs.make_evaluator("seg", cfg, ckpt, "cpu", stage="bench", generation=0,
                                    cache_mb=cache_mb)
    else:  # the previous code path, kept here to compare with
        task = jobs.build_task("seg", cfg)
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
    q.put(_job(args))


def run(mode: str, data: Path, train: int, n: int, count: int, ckpt: str,
        cache_mb: int) -> dict[str, Any]:
    # A fresh (non-daemonic: it starts the decoding worker) process: its own peak RSS.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=((mode, str(data), train, n, count, ckpt, cache_mb), q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--hw", type=int, nargs=2, default=[1024, 2048])
    ap.add_argument("--data", type=Path, default=None, help="reuse data generated before")
    ap.add_argument("--cached-all", action="store_true", help="the cached path at every size")
    ap.add_argument("--cache-mb", type=int, default=jobs.SEARCH_CACHE_MB,
                    help="decoded images a streamed job keeps (default: the shard jobs' budget)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_search_memory_"))
    sizes = sorted(a.sizes)
    train = sizes[-1] + 1  # search_fraction n / train keeps exactly n images
    data = a.data or tmp / "data"
    if not (data / "SYNTH.json").is_file():
        from pipeline.data.synth import generate_all

        t = time.perf_counter()
        generate_all(data, 0, ("seg",), seg_train=train, seg_val=1, seg_size_hw=tuple(a.hw))
        print(f"generated {train} seg images at {a.hw[0]}x{a.hw[1]} in "
              f"{time.perf_counter() - t:.0f} s under {data}")
    ckpt = str(tmp / "model.pt")
    torch.save(SuperNet("seg", 8).state_dict(), ckpt)
    print(f"seg W8, {a.hw[0]}x{a.hw[1]}, calibration {CALIB_IMAGES} images, batch 1, 1 thread, "
          f"{a.candidates} candidates per job, stream budget {a.cache_mb} MB")
    print(f"{'path':<8}{'N':>5}{'peak RSS MB':>13}{'worker MB':>11}{'s/candidate':>13}")
    res: dict[tuple[str, int], dict[str, Any]] = {}
    for n in sizes:
        modes = ["stream"] + (["cached"] if a.cached_all or n == sizes[0] else [])
        for mode in modes:
            r = res[mode, n] = run(mode, data, train, n, a.candidates, ckpt, a.cache_mb)
            print(f"{mode:<8}{n:>5}{r['rss_mb']:>13.0f}{r['worker_rss_mb']:>11.0f}"
                  f"{r['s_per_candidate']:>13.2f}", flush=True)
    lo, hi = res["stream", sizes[0]], res["stream", sizes[-1]]
    growth = 100 * (hi["rss_mb"] / lo["rss_mb"] - 1)
    print(f"streamed peak RSS growth N={sizes[0]} -> {sizes[-1]}: {growth:+.1f} %")
    c = res["cached", sizes[0]]
    dt = 100 * (lo["s_per_candidate"] / c["s_per_candidate"] - 1)
    same = lo["scores"] == c["scores"]
    print(f"time per candidate streamed vs cached at N={sizes[0]}: {dt:+.1f} % (target within "
          f"10 %); scores identical: {same}")
    if ("cached", sizes[-1]) in res:
        c = res["cached", sizes[-1]]
        dt = 100 * (hi["s_per_candidate"] / c["s_per_candidate"] - 1)
        print(f"cached peak RSS at N={sizes[-1]}: {c['rss_mb']:.0f} MB; time per candidate "
              f"streamed vs cached at N={sizes[-1]}: {dt:+.1f} %; scores identical: "
              f"{hi['scores'] == c['scores']}")


if __name__ == "__main__":
    main()
