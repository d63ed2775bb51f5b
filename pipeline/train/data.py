"""Deterministic, resumable data feeding for the training loop.

Two pieces make the batch at any iteration a pure function of ``(seed, epoch, position)``, whatever
the number of workers, ranks or restarts:

* :class:`ResumableSampler` — torch's ``DistributedSampler`` (shuffled from ``seed + epoch``, split
  across ranks) that can start in the middle of an epoch and yields ``(epoch, index)`` pairs;
* :class:`SeededSamples` — a dataset wrapper that hands ``(epoch, index)`` to datasets that take
  it, and seeds ``random``, ``numpy`` and ``torch`` from ``(seed, epoch, index)`` around each item
  for any other dataset, so random augmentation depends on nothing else.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .distributed import DistInfo
from pipeline.errors import ConfigError


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` that yields ``(epoch, index)`` and can skip an epoch's first items."""

    def __init__(self, dataset: Dataset, info: DistInfo, *, shuffle: bool, seed: int) -> None:
        # drop_last: every rank gets the same number of items, no padding repeats.
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                         seed=seed, drop_last=info.world_size > 1)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Next pass covers ``epoch``, beginning after its first ``start`` items of this rank."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _seed_all(seed_seq: np.random.SeedSequence) -> None:
    a, b, c = seed_seq.generate_state(3, dtype=np.uint32)
    random.seed(int(a))
    np.random.seed(int(b))
    torch.manual_seed(int(c))


class SeededSamples(Dataset):
    """Item ``(epoch, i)`` = ``dataset[i]`` drawn with generators seeded from ``(seed, epoch, i)``.

    The global generator states of the calling process are restored afterwards, so feeding data in
    the main process (``num_workers=0``) leaves the training's own random stream untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        # The task datasets (pipeline.data) take ``(epoch, index)`` keys and draw their
        # augmentation from a per-sample generator; they announce it with ``set_epoch``.
        self.epoch_keys = callable(getattr(dataset, "set_epoch", None))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            _seed_all(np.random.SeedSequence([self.seed, epoch, index]))
            if self.epoch_keys:
                return self.dataset[(epoch, index)]
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def make_loader(dataset: Dataset, info: DistInfo, *, batch_size: int, seed: int,
                num_workers: int, collate: Callable[[list[Any]], Any] | None,
                shuffle: bool = True) -> tuple[DataLoader, ResumableSampler]:
    """A training loader (per-rank ``batch_size``, last partial batch dropped) and its sampler."""
    sampler = ResumableSampler(dataset, info, shuffle=shuffle, seed=seed)
    if sampler.num_samples < batch_size:
        raise ConfigError(f"batch_size {batch_size} is larger than the {sampler.num_samples} training "
                         f"items each of the {info.world_size} rank(s) gets from a dataset of "
                         f"{len(dataset)}")  # type: ignore[arg-type]
    loader = DataLoader(SeededSamples(dataset, seed), batch_size=batch_size, sampler=sampler,
                        num_workers=num_workers, collate_fn=collate, drop_last=True,
                        persistent_workers=False, pin_memory=info.device.type == "cuda",
                        # Its own generator: creating an iterator (one per epoch, and one more
                        # after a resume) must not draw from the global torch generator.
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler
