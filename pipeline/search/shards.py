"""Running one shard of a candidate list, resumably, and merging the finished shards.

A shard job appends each result to a *partial* file as soon as it is known and skips the
candidates already there, so a killed job resumes where it stopped. Only when every candidate of
the shard is recorded does it write the shard's declared output (atomically), which is what the
workflow sees; the workflow manager may delete a failed job's outputs, never the partial file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .candidates import Candidate
from .table import Row, ShardWriter, merge_shards, write_shard, write_table
from pipeline.errors import InputError


def partial_path(shard_output: str | os.PathLike) -> Path:
    """Where the shard job keeps its append-only progress (next to the declared output)."""
    p = Path(shard_output)
    return p.parent / "partial" / p.name


def run_shard(candidates: Sequence[Candidate], shard_output: str | os.PathLike,
              evaluate: Callable[[Candidate], Row],
              on_row: Callable[[Row], None] | None = None,
              partial: str | os.PathLike | None = None) -> tuple[list[Row], int]:
    """Evaluate every candidate of ``candidates`` not yet in the partial file (default
    :func:`partial_path`), then write the finished shard. Returns (rows of the shard in candidate
    order, number newly evaluated)."""
    wanted = {c.arch_id for c in candidates}
    with ShardWriter(partial if partial is not None else partial_path(shard_output)) as w:
        stray = w.done - wanted
        if stray:
            raise InputError(f"{w.path}: holds {len(stray)} architecture(s) that are not in this "
                             f"shard's candidate list (a changed candidate list?); delete it to start over")
        new = 0
        for c in candidates:
            if c.arch_id in w.done:
                continue
            row = evaluate(c)
            w.append(row)
            new += 1
            if on_row is not None:
                on_row(row)
        by_id = {r.arch_id: r for r in w.rows}
    rows = [by_id[c.arch_id] for c in candidates]
    write_shard(shard_output, rows)
    return rows, new


def merge_outputs(shard_outputs: Sequence[str | os.PathLike], results_csv: str | os.PathLike,
                  timings_csv: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge finished shard files into ``results.csv`` (deterministic) and ``timings.csv``."""
    res, tim = merge_shards(shard_outputs)
    write_table(res, results_csv)
    write_table(tim, timings_csv)
    return res, tim
