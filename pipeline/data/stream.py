"""A split read in order, decoded a few items ahead in worker processes, never held whole.

The search jobs score every candidate on the same split. Keeping the split decoded in memory
costs about 25 MB per 1024x2048 Cityscapes image (image + label), 15 GB for the 595 search images
of a paper run, in every parallel shard job. :class:`Streamed` instead decodes each item when it
is needed: memory is bounded by the items in flight (``workers`` x ``prefetch``), whatever the
size of the split. The items and their order are those of the dataset, so scores are the same to
the bit.
"""
from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info


class Streamed(IterableDataset):
    """``dataset[0], dataset[1], ...`` in order, decoded by ``workers`` background processes
    (0: in the calling process), at most ``prefetch`` items ahead per worker. ``len()`` is the
    dataset's, so an evaluation that reports the number of images still can."""

    def __init__(self, dataset: Dataset, workers: int = 1, prefetch: int = 2) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers}, {prefetch}")
        self.dataset = dataset
        self.workers = workers
        self.prefetch = prefetch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if get_worker_info() is not None:
            # Each worker of an outer loader would yield the whole split again.
            raise RuntimeError("Streamed must be read by a DataLoader with num_workers=0: it "
                               "starts its own workers")
        if self.workers == 0:
            for i in range(len(self)):
                yield self.dataset[i]
            return
        # batch_size=None: one item at a time (the caller's loader batches them), in index order.
        yield from DataLoader(self.dataset, batch_size=None, shuffle=False,
                              num_workers=self.workers, prefetch_factor=self.prefetch)
