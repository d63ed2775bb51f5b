"""The held-out search split, carved from train by a stable hash of each image's key.

Split names used across the project:
  "trainfull" - the dataset's whole training split;
  "search"    - the held-out part of it, on which candidates are scored during the search;
  "train"     - trainfull minus search, on which the supernet is trained;
  "val"       - the dataset's validation split, only for the final report.
"""
from __future__ import annotations

import hashlib
from typing import Hashable, Sequence
from pipeline.errors import ConfigError

SPLITS = ("train", "search", "val", "trainfull")


def stable_hash(key: str, salt: str = "scalenas-search-split") -> int:
    """64-bit hash that is the same on every machine and Python run (unlike hash())."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big")


def search_keys(keys: Sequence[Hashable], fraction: float) -> set:
    """The keys held out for the search: the round(fraction * n) keys of smallest hash, at least
    one and at most n - 1 when 0 < fraction < 1 and n >= 2 (so tiny sets still get both sides).
    Depends only on the set of keys, not on their order."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"search fraction must be in [0, 1), got {fraction}")
    uniq = sorted(set(keys), key=lambda k: (stable_hash(str(k)), str(k)))
    n = len(uniq)
    count = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        count = min(max(count, 1), n - 1)
    return set(uniq[:count])


def check_split(split: str) -> str:
    """Validate a split name."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def select(keys: Sequence[Hashable], split: str, fraction: float) -> list[bool]:
    """Membership mask of `keys` (items of the dataset's train split) for split `split`
    ("train", "search" or "trainfull")."""
    check_split(split)
    if split == "val":
        raise ValueError("'val' is a separate dataset split, not carved from train")
    if split == "trainfull":
        return [True] * len(keys)
    held = search_keys(keys, fraction)
    return [(k in held) == (split == "search") for k in keys]
