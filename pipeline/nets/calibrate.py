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

``stats="release"`` (:func:`release_calibrate_bn`) does what the release's ``calib_bn_seg``
does instead, with its arithmetic (``scalenas eval`` reproduces the release's test command with
it): every BN layer normalises with the mean and *biased* variance (mean of squared deviations)
it computes from its batch, and records their averages over the batches, weighted by each
batch's number of images, in float32.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from pipeline.errors import InputError


class CalibrationError(InputError):
    """A calibration request that cannot be honoured (too few images, nothing executed...)."""


#: How the recorded statistics combine the batches: ``pooled`` (ours: exact pooled mean and
#: unbiased variance) or ``release`` (the release's per-batch averages of mean and biased variance).
STATS = ("pooled", "release")


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


@dataclass
class BatchAverages:
    """The release's running averages of one BN layer (its ``AverageMeter``, float32): the sums
    of batch mean x images and biased batch variance x images, and the images counted."""

    images: int = 0
    mean_sum: Tensor | float = 0.0
    var_sum: Tensor | float = 0.0

    def add_batch(self, images: int, mean_b: Tensor, biased_var_b: Tensor) -> None:
        self.images += images
        self.mean_sum = self.mean_sum + mean_b * images
        self.var_sum = self.var_sum + biased_var_b * images

    @property
    def mean(self) -> Tensor:
        return self.mean_sum / self.images  # type: ignore[return-value]

    @property
    def var(self) -> Tensor:
        return self.var_sum / self.images  # type: ignore[return-value]


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
                 layers: dict[str, _BatchNorm] | None = None,
                 stats: str = "pooled") -> dict[str, Any]:
    """Set running_mean / running_var (unbiased) of every BN layer that executes on ``batches``
    to the exact pooled statistics of its input (``stats="release"``: the release's batch
    averages, see the module docstring). Returns the moments used, by layer name.

    Every flag and ``momentum`` is restored. ``num_batches_tracked`` counts the calibration
    batches too; nothing reads it while ``momentum`` is set.
    """
    layers = bn_layers(model) if layers is None else layers
    if stats not in STATS:
        raise CalibrationError(f"calibration statistics {stats!r}: expected one of {', '.join(STATS)}")
    if stats == "release":
        return release_calibrate_bn(model, batches, layers)
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


def release_calibrate_bn(model: nn.Module, batches: Sequence[Tensor] | Tensor,
                         layers: dict[str, _BatchNorm] | None = None) -> dict[str, BatchAverages]:
    """The release's BN calibration (scalenas.md section 5), step for step and in float32.

    During the pass every BN layer computes its input's per-channel mean (a mean over the batch,
    then the rows, then the columns) and biased variance (the same means of the squared
    deviations), normalises with them, and adds both, times the batch's number of images, to its
    sums; afterwards the running statistics of every layer that ran become sums / images.
    """
    if isinstance(batches, Tensor):
        batches = [batches]
    layers = bn_layers(model) if layers is None else layers
    averages: dict[str, BatchAverages] = {}

    def make_forward(name: str, bn: _BatchNorm) -> Callable[[Tensor], Tensor]:
        def forward(x: Tensor) -> Tensor:
            mean = x.mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
            dev = x - mean
            var = (dev * dev).mean(0, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
            mean, var = mean.reshape(-1), var.reshape(-1)
            averages.setdefault(name, BatchAverages()).add_batch(int(x.shape[0]), mean, var)
            return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return forward

    for name, m in layers.items():
        if not m.track_running_stats or m.running_mean is None:
            raise CalibrationError(f"calibration: BN layer {name} does not track running statistics")
        m.forward = make_forward(name, m)  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for m in layers.values():
            del m.forward  # the class's forward again
    if not averages:
        raise CalibrationError("calibration: no BatchNorm layer executed")
    with torch.no_grad():
        for name, avg in averages.items():
            bn = layers[name]
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(avg.mean)
            bn.running_var.copy_(avg.var)
    return averages


#: Multiple of 32 the network needs; calibration images are cropped (top-left) to it.
SIZE_MULTIPLE = 32


def crop_to_multiple(img: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """``img`` cropped (top-left) to the largest size divisible by ``multiple``.

    Cropped, not padded: padding would add pixels that no image has to the BN statistics.
    """
    h, w = img.shape[-2:]
    h2, w2 = h - h % multiple, w - w % multiple
    if h2 == 0 or w2 == 0:
        raise CalibrationError(f"calibration image of size {h}x{w} is smaller than {multiple}")
    return img[..., :h2, :w2]


def image_batches(images: Sequence[Tensor], batch_size: int,
                  device: torch.device | str = "cpu") -> list[Tensor]:
    """Images of any size as network-ready batches: each cropped to a multiple of 32, batched
    by ``batch_size``; a chunk of mixed sizes goes one image per batch (the pooled statistics
    stay exact)."""
    imgs = [crop_to_multiple(t) for t in images]
    batches: list[Tensor] = []
    bs = max(1, int(batch_size))
    for i in range(0, len(imgs), bs):
        chunk = imgs[i:i + bs]
        if all(t.shape == chunk[0].shape for t in chunk):
            batches.append(torch.stack(chunk).to(device))
        else:
            batches.extend(t.unsqueeze(0).to(device) for t in chunk)
    return batches


def calibration_indices(num_items: int, n: int, seed: int) -> list[int]:
    """The fixed list of ``n`` item indices (of a split with ``num_items``) used for calibration:
    a seeded draw without replacement, sorted so the recorded list reads naturally."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CalibrationError(f"calibration.images must be a positive integer, got {n!r}")
    if n > num_items:
        raise CalibrationError(
            f"calibration.images = {n} exceeds the {num_items} images of the train split")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(num_items, size=n, replace=False))


#: Seed of the release's draw of calibration images: its ``calib_bn`` takes the first N of a
#: ``torch.randperm`` of the training list under this seed.
RELEASE_CALIBRATION_SEED = 937162211


def release_calibration_indices(num_items: int, n: int,
                                seed: int = RELEASE_CALIBRATION_SEED) -> list[int]:
    """The release's calibration images: the first ``n`` of a seeded ``torch.randperm`` over the
    ``num_items`` training items, in the permutation's order. (The release then feeds them through
    an unseeded random sampler; we keep the permutation's order so that a run is repeatable.)"""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CalibrationError(f"the number of calibration images must be a positive integer, "
                               f"got {n!r}")
    if n > num_items:
        raise CalibrationError(f"{n} calibration images asked for, but the train split has only "
                               f"{num_items}")
    g = torch.Generator().manual_seed(int(seed))
    return [int(i) for i in torch.randperm(num_items, generator=g)[:n]]


@dataclass
class CalibrationSet:
    """The calibration images of one job: loaded once, reused for every candidate.

    ``batches`` are ready-made input tensors (on the evaluation device); ``indices`` records which
    items of the split they are.
    """

    indices: list[int]
    batches: list[Tensor]
    #: Which images they are (seg frame names, pose image ids), when known.
    names: list[str] = field(default_factory=list)
    #: How batches combine into the recorded statistics (:data:`STATS`).
    stats: str = "pooled"
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
        return calibrate_bn(model, self.batches, timer, layers, self.stats)
