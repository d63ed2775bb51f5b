"""Does architecture matter on this data? The smallest, the largest and the HRNet subnet of the
search space trained stand-alone from scratch with the audit's recipe (``audit.<task>``, the
function the audit's training jobs call), several seeds each, scored on val.

Prints per task and network its GFLOPs and val scores, then the largest-minus-smallest spread
(issue 20's target: at least 0.10 mIoU / AP) and the spread between seeds of one network against
the spread between networks. A quick check of a data generator or recipe change before a whole
``make run && make audit``.

    .venv/bin/python benchmarks/arch_spread.py [--params params/default.yaml] [--tasks seg pose bottomup]
        [--seeds 0 1] [--iterations 300] [--archs smallest largest hrnet] [--jobs 2]
        [--data DIR]   # default: generate the built-in data of the parameters into a temp dir
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


from pipeline.config import from_dict, read_with_base, resolve_dict  # noqa: E402
from pipeline.tasks.facts import TASK_NAMES  # noqa: E402


def _config(params: Path, data: Path, iterations: int | None) -> dict:
    doc = read_with_base(params)  # a recipe may name a base (bottomup_tiny.yaml does)
    doc.setdefault("seg", {})["root"] = str(data / "cityscapes")
    for t in ("pose", "bottomup"):
        sec = doc.setdefault(t, {})
        sec["root"] = str(data / "coco")
        if sec.get("det_file"):
            sec["det_file"] = str(data / "coco" / "person_detection_results" /
                                  Path(sec["det_file"]).name)
    doc.setdefault("tracking", {})["enabled"] = False
    if iterations is not None:
        for t in TASK_NAMES:
            doc.setdefault("audit", {}).setdefault(t, {})["iterations"] = iterations
    return resolve_dict(doc, str(params))


def _one(job: tuple) -> tuple:
    import torch

    torch.set_num_threads(1)
    from pipeline.audit.standalone import train_standalone
    from pipeline.cost import profile
    from pipeline.space import sample

    resolved, task, name, seed, work = job
    cfg = from_dict(resolved)
    arch = getattr(sample, name)(task)
    sec = getattr(cfg.audit, task)
    t0 = time.perf_counter()
    done = train_standalone(task, cfg, arch, sec, seed, Path(work) / f"{task}-{name}-{seed}",
                            progress=False)
    from pipeline.stages.build import cost_input_hw

    gflops = profile(arch, task, int(cfg.task(task).width), cost_input_hw(task, cfg)).gflops
    print(f"  {task} {name} seed {seed}: {done.metric} {done.score:.4f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return task, name, seed, gflops, done.metric, done.score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params/default.yaml"))
    ap.add_argument("--tasks", nargs="+", default=["seg", "pose"], choices=list(TASK_NAMES))
    ap.add_argument("--archs", nargs="+", default=["smallest", "largest", "hrnet"],
                    choices=["smallest", "largest", "hrnet"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--iterations", type=int, default=None,
                    help="stand-alone iterations (default: audit.<task>.iterations)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings side by side (one core each)")
    ap.add_argument("--data", type=Path, default=None,
                    help="built-in data root (default: generated from data.* into a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="arch-spread-") as tmp:
        data = args.data
        if data is None:
            from pipeline.data.synth import generate_all

            d = read_with_base(args.params).get("data", {})
            d = resolve_dict({"data": d}, str(args.params))["data"]
            data = Path(tmp) / "data"
            t0 = time.perf_counter()
            generate_all(data, d["seed"], ("seg", "pose"), seg_train=d["seg_train"],
                         seg_val=d["seg_val"], seg_size_hw=tuple(d["seg_size"]),
                         pose_train=d["pose_train"], pose_val=d["pose_val"],
                         pose_size_hw=tuple(d["pose_size"]))
            print(f"built-in data generated in {time.perf_counter() - t0:.0f} s", flush=True)
        resolved = _config(args.params, data, args.iterations)
        jobs = [(resolved, t, a, s, tmp) for t in args.tasks for a in args.archs
                for s in args.seeds]
        print(f"{len(jobs)} stand-alone trainings, {args.jobs} side by side", flush=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_one, jobs))
    print(f"\n{time.perf_counter() - t0:.0f} s in all\n")
    for task in args.tasks:
        got = {a: [r for r in rows if r[0] == task and r[1] == a] for a in args.archs}
        metric = next(iter(got.values()))[0][4]
        print(f"{task} ({metric}, {resolved['audit'][task]['iterations']} iterations, "
              f"seeds {args.seeds})")
        means = {}
        for a, rs in got.items():
            scores = [r[5] for r in sorted(rs, key=lambda r: r[2])]
            means[a] = statistics.fmean(scores)
            print(f"  {a:9s} {rs[0][3]:.4f} GFLOPs  " + "  ".join(f"{v:.4f}" for v in scores)
                  + f"  mean {means[a]:.4f}")
        if {"smallest", "largest"} <= set(means):
            print(f"  largest - smallest: {means['largest'] - means['smallest']:+.4f}")
        if len(args.seeds) > 1 and len(means) > 1:
            within = statistics.fmean(statistics.stdev(r[5] for r in rs) for rs in got.values())
            between = statistics.stdev(means.values())
            print(f"  SD between networks {between:.4f}, within (seeds) {within:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
