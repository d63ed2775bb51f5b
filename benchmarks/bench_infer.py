"""Inference speed of the deployable artifacts against the machine's practical limit.

Run: ``python benchmarks/bench_infer.py [--repeats N] [--threads 2]``. CPU, eval, no_grad, batch 1.
For ScaleNet-S1 (seg, W32, 512x1024) and ScaleNet-P2 (pose, W32, 256x192) it times, interleaved
in one process (so a busy machine slows every variant alike), the eager exported network, the
optimized TorchScript (:func:`pipeline.nets.deploy.optimize_torchscript`: BN folded, frozen,
channels_last where faster) and onnxruntime (when the ``deploy`` extra is installed), plus a lone
3x3 convolution 64->64 at 128x256 in channels_last, timed in bursts of ``CONV_CALLS``: the rate a
convolution reaches on this machine, i.e. the practical limit. It prints medians, GMAC/s (analytic MACs / time) and the
fraction of the limit; the last line reads ``S1: optimized X.XXx eager, NN% of the conv limit``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from pipeline.cost import profile
from pipeline.nets import SuperNet, export_subnet
from pipeline.nets.deploy import (OnnxRunner, onnx_available, onnx_bytes, optimize_torchscript,
                                  rel_err)
from pipeline.space.official import load_official

MASKS = Path(__file__).resolve().parents[2] / "shared" / "masks"
MODELS = (("S1", "seg", "seg_w32_S1.npy", (512, 1024)), ("P2", "pose", "w32_256_P2.npy", (256, 192)))


def trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """He-initialised convs and non-trivial BN statistics: HRNet's N(0, 0.001) init drives
    activations towards denormal floats, which are slow on CPUs and unlike a trained network."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, generator=g)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


#: Back-to-back calls per timed conv sample. A single 50 ms call right after a model's
#: seconds-long run measures the caches and thread pool waking up (about a third of the rate the
#: same call reaches warm, measured); a burst measures the convolution.
CONV_CALLS = 10


def conv_limit() -> tuple[Callable[[], object], float]:
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval().to(
        memory_format=torch.channels_last)
    x = torch.randn(1, 64, 128, 256).contiguous(memory_format=torch.channels_last)

    def burst() -> None:
        for _ in range(CONV_CALLS):
            conv(x)
    return burst, CONV_CALLS * 64 * 64 * 9 * 128 * 256 / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="S1,P2", help="comma-separated subset of S1,P2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved repeats, "
          f"medians; onnxruntime: {onnx_available() or 'yes'}")
    conv_fn, conv_gmac = conv_limit()
    summary = ""
    for name, task, mask, hw in MODELS:
        if name not in args.models.split(","):
            continue
        arch = load_official(MASKS / mask)
        sup = trained_like(SuperNet(task, 32))
        sup.set_arch(arch)
        net = export_subnet(sup).eval()
        del sup
        x = torch.randn(1, 3, *hw)
        gmac = profile(arch, task, 32, hw).macs / 1e9
        opt = optimize_torchscript(net, x, None, repeats=1)
        variants: dict[str, Callable[[], object]] = {"eager": lambda: net(x),
                                                     "optimized": lambda: opt.module(x)}
        with torch.no_grad():
            ref = net(x)
            errs = {"optimized": rel_err(opt.module(x), ref)}
            if onnx_available() is None:
                ort = OnnxRunner(onnx_bytes(net, x), args.threads)
                errs["onnxruntime"] = rel_err(ort(x), ref)
                variants["onnxruntime"] = lambda: ort(x)
            variants["conv limit"] = conv_fn
            times: dict[str, list[float]] = {k: [] for k in variants}
            for fn in variants.values():
                fn()  # warm-up
            for _ in range(args.repeats):
                for k, fn in variants.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        limit = conv_gmac / med["conv limit"]
        print(f"\n{name} ({task}, W32, {hw[0]}x{hw[1]}, {gmac:.1f} GMAC), optimized "
              f"channels_last={opt.info['channels_last']}:")
        for k, t in med.items():
            rate = (conv_gmac if k == "conv limit" else gmac) / t
            spread = f"{min(times[k]) * 1e3:.0f}-{max(times[k]) * 1e3:.0f}"
            extra = f", rel err {errs[k]:.1e}" if k in errs else ""
            print(f"  {k:12s} {t * 1e3:8.1f} ms (range {spread}) {rate:6.1f} GMAC/s "
                  f"{rate / limit:5.0%} of limit{extra}")
        line = (f"{name}: optimized {med['eager'] / med['optimized']:.2f}x eager, "
                f"{gmac / med['optimized'] / limit:.0%} of the conv limit")
        print(line)
        if name == "S1":
            summary = line
    if summary:
        print(summary)


if __name__ == "__main__":
    main()
