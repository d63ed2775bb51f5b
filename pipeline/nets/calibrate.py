"""BN calibration of the active subnet: exact pooled statistics over a fixed image list.

Before a candidate is evaluated, every BatchNorm layer that executes in its subnet gets
``running_mean`` / ``running_var`` recomputed from the calibration images passing through that
subnet (scalenas.md section 5). We differ from the release on purpose:

- the images are a fixed, recorded list (``calibration_indices``), loaded once per job and reused
  for every candidate (``CalibrationSet``); no augmentation unless asked for;
- the statistics are the exact pooled mean and variance of each layer's input over all images
  and positions: each batch's moments (which BN computes anyway to normalise) are combined in
  float64 with Chan et al.'s pairwise formula, not averaged as per-batch variances;
- the model is calibrated in place: the supernet's shared BN buffers are overwritten for the
  layers that run, so no copy of the model is made. Every executed layer is overwritten, so the
  result depends on the architecture only, never on which candidate was calibrated before.

Variance convention: ``running_var`` holds the *unbiased* variance (sum of squared deviations /
(n - 1), n = images x height x width), which is what PyTorch's BatchNorm stores in training mode
and divides by in eval mode.

During the calibration pass the BN layers run in training mode, so each normalises with the
statistics of the batch it sees, as during supernet training; with one batch holding all the
images (the default) those are exactly the pooled statistics being recorded.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from pipeline.errors import InputError


class CalibrationError(InputError):
    """A calibration request that cannot be honoured (too few images, nothing executed...)."""


@dataclass
class Moments:
    """Running count / mean / sum of squared deviations per channel, float64."""

    n: int
    mean: Tensor
    m2: Tensor

    def add_batch(self, nb: int, mean_b: Tensor, m2_b: Tensor) -> None:
        """Fold in one batch's count, mean and sum of squared deviations (Chan et al.)."""
        mean_b, m2_b = mean_b.to(torch.float64), m2_b.to(torch.float64)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * nb / n)
        self.n = n

    @property
    def unbiased_var(self) -> Tensor:
        return self.m2 / (self.n - 1)


def bn_layers(model: nn.Module) -> dict[str, _BatchNorm]:
    """Every BatchNorm layer of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}


@dataclass
class HookTimer:
    """Seconds spent inside the statistics hooks (calibration overhead, not forward time)."""

    seconds: float = 0.0


def collect_bn_input_moments(model: nn.Module, batches: Sequence[Tensor] | Tensor,
                             *, train_mode: bool = True, timer: HookTimer | None = None,
                             layers: dict[str, _BatchNorm] | None = None) -> dict[str, Moments]:
    """Run ``batches`` through ``model`` in training mode and return the pooled moments of each
    BN layer's input, for the layers that executed (keyed by module name).

    BN in training mode already computes each batch's per-channel mean and variance to normalise;
    rather than recomputing them from the activations, the layers run with ``momentum = 1`` so
    that after every call their running buffers hold exactly that batch's mean and unbiased
    variance, which a post-hook copies; they are pooled in float64 after the pass. (Momentum and the
    buffers are overwritten by :func:`calibrate_bn` afterwards; momentum is restored here.)

    Only the BN layers are switched to training mode (BN is the only layer whose behaviour
    depends on the mode here); the model's own flags are left alone, because walking the whole
    supernet's module tree twice per candidate is measurable overhead. ``layers`` (the result of
    :func:`bn_layers`) may be passed to skip that walk too.
    """
    if isinstance(batches, Tensor):
        batches = [batches]
    if not train_mode:
        raise CalibrationError("BN input moments are collected in training mode only")
    # Per layer, per call: (values per channel, batch mean, unbiased batch variance), float32
    # copies only; the float64 pooling happens once after the pass, off the forward's path.
    seen: dict[str, list[tuple[int, Tensor, Tensor]]] = {}
    handles = []
    layers = bn_layers(model) if layers is None else layers

    def make_hook(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            t0 = time.perf_counter()
            x = inputs[0]
            seen.setdefault(name, []).append(
                (x.numel() // x.shape[1], mod.running_mean.clone(), mod.running_var.clone()))
            if timer is not None:
                timer.seconds += time.perf_counter() - t0
        return hook

    saved = {}
    for name, m in layers.items():
        if not m.track_running_stats or m.running_mean is None:
            raise CalibrationError(f"calibration: BN layer {name} does not track running statistics")
        saved[name] = (m.momentum, m.training)
        m.momentum = 1.0
        m.training = True
        handles.append(m.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
        for name, m in layers.items():
            m.momentum, m.training = saved[name]
    t0 = time.perf_counter()
    moments: dict[str, Moments] = {}
    for name, calls in seen.items():
        mom = moments[name] = Moments(0, torch.zeros(0), torch.zeros(0))
        for nb, mean_b, var_b in calls:
            mom.add_batch(nb, mean_b, var_b.to(torch.float64) * (nb - 1))  # unbiased -> sum
    if timer is not None:
        timer.seconds += time.perf_counter() - t0
    return moments


def calibrate_bn(model: nn.Module, batches: Sequence[Tensor] | Tensor,
                 timer: HookTimer | None = None,
                 layers: dict[str, _BatchNorm] | None = None) -> dict[str, Moments]:
    """Set running_mean / running_var (unbiased) of every BN layer that executes on ``batches``
    to the exact pooled statistics of its input. Returns the moments used, by layer name.

    Every flag and ``momentum`` is restored. ``num_batches_tracked`` counts the calibration
    batches too; nothing reads it while ``momentum`` is set.
    """
    layers = bn_layers(model) if layers is None else layers
    # The training-mode forward would also blend batch statistics into the buffers with the
    # layer's momentum; we overwrite them below, so only layers that ran are changed at all.
    moments = collect_bn_input_moments(model, batches, train_mode=True, timer=timer,
                                       layers=layers)
    if not moments:
        raise CalibrationError("calibration: no BatchNorm layer executed")
    with torch.no_grad():
        for name, mom in moments.items():
            if mom.n < 2:
                raise CalibrationError(
                    f"calibration: BN layer {name} saw {mom.n} value per channel; need at least 2")
            bn = layers[name]
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(mom.mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(mom.unbiased_var.to(bn.running_var.dtype))
    return moments


def calibration_indices(num_items: int, n: int, seed: int) -> list[int]:
    """The fixed list of ``n`` item indices (of a split with ``num_items``) used for calibration:
    a seeded draw without replacement, sorted so the recorded list reads naturally."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CalibrationError(f"calibration.num_images must be a positive integer, got {n!r}")
    if n > num_items:
        raise CalibrationError(
            f"calibration.num_images = {n} exceeds the {num_items} images of the search split")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_items, size=n, replace=False))


@dataclass
class CalibrationSet:
    """The calibration images of one job: loaded once, reused for every candidate.

    ``batches`` are ready-made input tensors (on the evaluation device); ``indices`` records which
    items of the split they are.
    """

    indices: list[int]
    batches: list[Tensor]
    #: BN layers per model (by id), so the module tree is walked once per job, not per candidate.
    _layers: dict[int, dict[str, _BatchNorm]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_images(cls, indices: Sequence[int], images: Tensor,
                    batch_size: int | None = None) -> "CalibrationSet":
        if images.dim() != 4 or images.shape[0] != len(indices):
            raise CalibrationError(
                f"calibration images must be (N, C, H, W) with N = {len(indices)}, got {tuple(images.shape)}")
        bs = images.shape[0] if not batch_size else int(batch_size)
        return cls(list(indices), list(torch.split(images, bs)))

    @property
    def num_images(self) -> int:
        return sum(b.shape[0] for b in self.batches)

    def calibrate(self, model: nn.Module, timer: HookTimer | None = None) -> dict[str, Moments]:
        layers = self._layers.get(id(model))
        if layers is None:
            layers = self._layers[id(model)] = bn_layers(model)
        return calibrate_bn(model, self.batches, timer, layers)
