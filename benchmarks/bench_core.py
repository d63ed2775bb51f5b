"""Figures for the core: analytic cost speed, supernet vs exported subnet speed, time vs FLOPs.

Run: ``python benchmarks/bench_core.py [--repeats N]``. CPU, 2 threads, eval, no_grad, batch 1,
W32 at 512x1024; best of a few interleaved repeats (the machine may be shared: expect some noise).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.cost import profile
from pipeline.nets import SuperNet, export_subnet
from pipeline.space.official import load_official
from pipeline.space.sample import largest, sample_arch

MASKS = Path(__file__).resolve().parents[2] / "shared" / "masks"


def bench_profile(n: int) -> None:
    rng = np.random.default_rng(0)
    groups = [(p, d) for p in (0.2, 0.5, 0.8) for d in ([2, 3], [3, 4], [4, 5])]
    archs = [sample_arch(rng, *groups[i % len(groups)], "seg") for i in range(n)]
    profile(archs[0], "seg", 32, (1024, 2048))  # build the cached tables first
    t = time.perf_counter()
    for a in archs:
        profile(a, "seg", 32, (1024, 2048))
    dt = time.perf_counter() - t
    print(f"analytic profile: {n} random architectures in {dt * 1e3:.1f} ms "
          f"= {dt / n * 1e6:.1f} us each")


def realistic_weights(net: torch.nn.Module) -> torch.nn.Module:
    """He-initialised convs: HRNet's N(0, 0.001) init drives activations towards denormal floats,
    which are slow on CPUs and would not represent a trained network."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, generator=g)
    return net


def one_time(net: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(wall, CPU) seconds of one forward; CPU time is less disturbed by other processes."""
    with torch.no_grad():
        w, c = time.perf_counter(), time.process_time()
        net(x)
        return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profiles", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    bench_profile(args.profiles)

    s1 = load_official(MASKS / "seg_w32_S1.npy")
    big = largest("seg")
    hw = (512, 1024)
    x = torch.randn(1, 3, *hw)
    sup = realistic_weights(SuperNet("seg", 32)).eval()
    sup.set_arch(s1)
    alone = export_subnet(sup).eval()
    sup_big = realistic_weights(SuperNet("seg", 32)).eval()
    sup_big.set_arch(big)
    runs: dict[str, list[tuple[float, float]]] = {"sup": [], "alone": [], "big": []}
    for net in (sup, alone, sup_big):
        one_time(net, x)  # warm-up
    # Interleave, alternating the order, so that load changes on a shared machine hit all alike;
    # the minimum is the figure least disturbed by other processes.
    order = [("sup", sup), ("alone", alone), ("big", sup_big)]
    for r in range(args.repeats):
        for key, net in (order if r % 2 == 0 else order[::-1]):
            runs[key].append(one_time(net, x))
    med = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    fs, fl = profile(s1, "seg", 32, hw).gflops, profile(big, "seg", 32, hw).gflops
    print(f"W32 {hw[0]}x{hw[1]} batch 1, 2 threads, eval, no_grad, best of {args.repeats}"
          f" (wall ms / CPU ms):")
    for key, label in (("sup", "supernet running S1"), ("alone", "exported S1"),
                       ("big", "supernet running largest")):
        print(f"  {label:26s} {med[key][0] * 1e3:8.0f} / {med[key][1] * 1e3:8.0f}")
    for i, unit in enumerate(("wall", "CPU")):
        print(f"  {unit}: supernet/exported S1 = {med['sup'][i] / med['alone'][i]:.3f} "
              f"(target <= 1.05); S1/largest time = {med['sup'][i] / med['big'][i]:.3f}")
    print(f"  S1/largest FLOPs = {fs / fl:.3f} ({fs:.1f} / {fl:.1f} GFLOPs, paper unit MACs/2^30)")


if __name__ == "__main__":
    main()
