"""The held-out search split."""
from __future__ import annotations

import pytest

from pipeline.data.splits import search_keys, select, stable_hash


def test_stable_hash_is_fixed():
    assert stable_hash("frankfurt_000000_000294") == stable_hash("frankfurt_000000_000294")
    assert stable_hash("a") != stable_hash("b")


def test_search_split_deterministic_disjoint_order_free():
    keys = [f"img{i}" for i in range(100)]
    held = search_keys(keys, 0.2)
    assert len(held) == 20 and held == search_keys(list(reversed(keys)), 0.2)
    train = [k for k, m in zip(keys, select(keys, "train", 0.2)) if m]
    search = [k for k, m in zip(keys, select(keys, "search", 0.2)) if m]
    assert set(train).isdisjoint(search) and len(train) + len(search) == 100
    assert all(select(keys, "trainfull", 0.2))
    assert held != search_keys([f"img{i}" for i in range(100, 200)], 0.2)


def test_tiny_sets_get_both_sides_and_bad_input():
    assert len(search_keys(["a", "b", "c"], 0.2)) == 1
    assert len(search_keys(["a", "b"], 0.9)) == 1
    assert search_keys(["a", "b"], 0.0) == set()
    with pytest.raises(ValueError, match="fraction"):
        search_keys(["a"], 1.0)
    with pytest.raises(ValueError, match="unknown split"):
        select(["a"], "test", 0.2)
