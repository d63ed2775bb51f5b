"""Candidate lists: what a search stage evaluates, fixed before any evaluation starts.

A stage (random sampling, the random-search baseline, one evolution generation) first writes its
whole candidate list (``candidates.json``); each candidate carries its position and its shard, so
parallel shard jobs split the work without talking to each other, and a killed shard knows exactly
what is left. Shards are assigned round-robin so every shard gets a mix of groups (costs).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline.io import atomic_write_text
from pipeline.space.arch import Architecture, ArchitectureError
from pipeline.space.sample import SamplingGroup, sample_group
from pipeline.io import read_json
from pipeline.errors import InputError

SCHEMA = "scalenas-candidates/1"
#: Sub-streams of the run seed, so the stages never share random numbers.
STREAM_SAMPLE, STREAM_RANDOM_BASELINE, STREAM_EVOLUTION, STREAM_CALIBRATION = 1, 2, 3, 4
#: Draws allowed per requested candidate before a grid cell is declared exhausted.
MAX_DRAWS_PER_CANDIDATE = 100


class CandidatesError(InputError):
    """A candidate list that cannot be made or read; the message names the file or parameter."""


@dataclass(frozen=True)
class Candidate:
    """One architecture to evaluate, with where it came from."""

    index: int
    shard: int
    group: str
    fusion_prob: float | None
    depth_candidates: str
    arch: Architecture

    @property
    def arch_id(self) -> str:
        return self.arch.arch_id

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "shard": self.shard, "group": self.group,
                "fusion_prob": self.fusion_prob, "depth_candidates": self.depth_candidates,
                "arch": self.arch.to_dict()}


def depth_label(depths: Sequence[int]) -> str:
    return "-".join(str(d) for d in depths)


def grid_groups(fusion_probs: Sequence[float],
                depth_candidates: Sequence[Sequence[int]]) -> list[SamplingGroup]:
    """The cells of the sampling grid, fusion probability major."""
    return [SamplingGroup(float(p), tuple(d), f"p{float(p):g}_d{''.join(map(str, d))}")
            for p in fusion_probs for d in depth_candidates]


def stream_rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """A generator for one named sub-stream of the run seed."""
    return np.random.default_rng([int(seed), int(stream), *map(int, extra)])


def _draw_unique(rng: np.random.Generator, group: SamplingGroup, task: str,
                 seen: set[str]) -> Architecture:
    for _ in range(MAX_DRAWS_PER_CANDIDATE):
        arch = sample_group(rng, group, task)
        if arch.arch_id not in seen:
            seen.add(arch.arch_id)
            return arch
    raise CandidatesError(f"sampling group {group.name}: no new architecture in "
                          f"{MAX_DRAWS_PER_CANDIDATE} draws (the group's space is exhausted)")


def grid_candidates(task: str, groups: Sequence[SamplingGroup], samples_per_cell: int,
                    seed: int, shards: int) -> list[Candidate]:
    """``samples_per_cell`` distinct architectures from every group, seeded; round-robin shards."""
    _check_positive(samples_per_cell=samples_per_cell, shards=shards)
    rng = stream_rng(seed, STREAM_SAMPLE)
    seen: set[str] = set()
    out = []
    for g in groups:
        for _ in range(samples_per_cell):
            i = len(out)
            out.append(Candidate(i, i % shards, g.name, g.fusion_prob,
                                 depth_label(g.depth_candidates), _draw_unique(rng, g, task, seen)))
    return out


def random_baseline_candidates(task: str, groups: Sequence[SamplingGroup], count: int, seed: int,
                               shards: int, exclude: Iterable[str]) -> list[Candidate]:
    """The random-search baseline: ``count`` more architectures, each from a uniformly drawn grid
    cell, none already in ``exclude`` (the evaluated pool)."""
    _check_positive(shards=shards)
    if count < 0:
        raise CandidatesError(f"random baseline: count must be >= 0, got {count}")
    rng = stream_rng(seed, STREAM_RANDOM_BASELINE)
    seen = set(exclude)
    out = []
    for i in range(count):
        g = groups[int(rng.integers(0, len(groups)))]
        out.append(Candidate(i, i % shards, g.name, g.fusion_prob,
                             depth_label(g.depth_candidates), _draw_unique(rng, g, task, seen)))
    return out


def children_candidates(children: Sequence[Architecture], shards: int) -> list[Candidate]:
    """An evolution generation's children as candidates (group ``evolved``)."""
    _check_positive(shards=shards)
    return [Candidate(i, i % shards, "evolved", None, "", a) for i, a in enumerate(children)]


def _check_positive(**values: int) -> None:
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CandidatesError(f"{k} must be a positive integer, got {v!r}")


def write_candidates(path: str | os.PathLike, stage: str, generation: int, shards: int,
                     candidates: Sequence[Candidate]) -> None:
    doc = {"schema": SCHEMA, "stage": stage, "generation": generation, "shards": shards,
           "candidates": [c.to_dict() for c in candidates]}
    atomic_write_text(Path(path), json.dumps(doc, indent=1) + "\n")


@dataclass(frozen=True)
class CandidateList:
    stage: str
    generation: int
    shards: int
    candidates: tuple[Candidate, ...]

    def shard(self, k: int) -> list[Candidate]:
        if not 0 <= k < self.shards:
            raise CandidatesError(f"shard {k} out of range 0..{self.shards - 1}")
        return [c for c in self.candidates if c.shard == k]


def read_candidates(path: str | os.PathLike) -> CandidateList:
    p = Path(path)
    doc = read_json(p, "candidate list", CandidatesError)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CandidatesError(f"{p}: not a candidate list (schema {SCHEMA!r})")
    try:
        cands = tuple(
            Candidate(int(c["index"]), int(c["shard"]), str(c["group"]), c["fusion_prob"],
                      str(c["depth_candidates"]),
                      Architecture.from_dict(c["arch"], source=f"{p}: candidate {i}"))
            for i, c in enumerate(doc["candidates"]))
        out = CandidateList(str(doc["stage"]), int(doc["generation"]), int(doc["shards"]), cands)
    except ArchitectureError as e:
        raise CandidatesError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:
        raise CandidatesError(f"{p}: malformed candidate list: {e!r}") from None
    ids = [c.arch_id for c in cands]
    if len(set(ids)) != len(ids):
        raise CandidatesError(f"{p}: an architecture is listed twice")
    return out
