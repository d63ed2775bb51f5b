"""A split read in order, held decoded up to a byte budget, the rest decoded as it is needed.

The search jobs score every candidate on the same split. Keeping the split decoded in memory
costs about 42 MB per 1024x2048 Cityscapes image (float image, int64 label), 25 GB for the 595
search images of a paper run, in every parallel shard job; decoding every image again for every
candidate costs time (most, relatively, on small images and fast devices). :class:`Streamed` does
both within a budget: the first items of the split, up to ``cache_bytes``, are decoded once and
kept; the items beyond are decoded again on every pass, by one persistent worker process that
decodes ahead while the network runs on the kept items (or in the calling process with
``workers=0``). So a small split is read as fast as a cached one and a
big one's memory is bounded by the budget plus the items in flight. The items and their order are
those of the dataset, so scores are the same to the bit.
"""
from __future__ import annotations

import ctypes
import itertools
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, get_worker_info


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the heap's freed pages back to the operating system (glibc; elsewhere nothing)."""
    if _TRIM is not None:
        _TRIM(0)


def nbytes(item: Any) -> int:
    """Bytes of the tensors and arrays inside an item (dicts, lists and tuples of them)."""
    if isinstance(item, torch.Tensor):
        return item.element_size() * item.nelement()
    if isinstance(item, np.ndarray):
        return int(item.nbytes)
    if isinstance(item, dict):
        return sum(nbytes(v) for v in item.values())
    if isinstance(item, (list, tuple)):
        return sum(nbytes(v) for v in item)
    return 0


class Streamed(IterableDataset):
    """``dataset[0], dataset[1], ...`` in order, every pass. Items are kept decoded from the first
    pass on while they fit in ``cache_bytes`` (a prefix of the split); the others are decoded on
    each pass by ``workers`` persistent background processes (0: in the calling process), at most
    ``prefetch`` items ahead per worker. ``len()`` is the dataset's, so an evaluation that reports
    the number of images still can.

    One item ahead is enough (decoding a 1024x2048 image takes a fraction of a forward pass); each
    more is one more decoded image held (42 MB at 1024x2048): with two, a search job's peak memory
    grew with the split's size (benchmarks/bench_search_memory.py: +10 % from 8 to 64 images)."""

    def __init__(self, dataset: Dataset, workers: int = 1, prefetch: int = 1,
                 cache_bytes: int = 0) -> None:
        if workers < 0 or prefetch < 1 or cache_bytes < 0:
            raise ValueError("workers and cache_bytes must be >= 0 and prefetch >= 1, got "
                             f"{workers}, {cache_bytes}, {prefetch}")
        self.dataset = dataset
        self.workers = workers
        self.prefetch = prefetch
        self.cache_bytes = cache_bytes
        self._kept: list[Any] | None = None  # filled on the first pass
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def kept(self) -> int:
        """Items held decoded (known after the first pass)."""
        return len(self._kept or ())

    def _fill(self) -> None:
        kept: list[Any] = []
        used = 0
        for i in range(len(self) if self.cache_bytes else 0):
            item = self.dataset[i]
            used += nbytes(item)
            if used > self.cache_bytes:
                break
            kept.append(item)
        self._kept = kept

    def _rest(self) -> Iterator[Any]:
        start, n = self.kept, len(self)
        if start == n:
            return iter(())
        if self.workers == 0:
            return (self.dataset[i] for i in range(start, n))
        if self._loader is None:
            # One loader for the job's life: its workers start once, not once per pass.
            self._loader = DataLoader(Subset(self.dataset, range(start, n)), batch_size=None,
                                      shuffle=False, num_workers=self.workers,
                                      prefetch_factor=self.prefetch, persistent_workers=True)
        return iter(self._loader)

    def __iter__(self) -> Iterator[Any]:
        if get_worker_info() is not None:
            # Each worker of an outer loader would yield the whole split again.
            raise RuntimeError("Streamed must be read by a DataLoader with num_workers=0: it "
                               "starts its own workers")
        if self._kept is None:
            self._fill()
        rest = self._rest()  # the workers decode ahead while the kept items are used
        for item in itertools.chain(self._kept, rest):  # type: ignore[arg-type]
            yield item
            # The consumer is done with the item (it asks for the next one). A full-resolution
            # forward frees hundreds of MB of activations of many sizes, and glibc keeps freed
            # heap pages: over a long split the job's memory crept up with the number of items
            # (bench_search_memory.py). Handing them back here keeps it flat.
            release_freed_memory()
