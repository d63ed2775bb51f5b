"""The search results table: append-only shard files, strict loading, deterministic merge.

A shard job appends one JSON line per evaluated candidate and flushes it to disk before starting
the next, so a kill loses at most the row in progress. Loading is strict: any malformed row is an
error naming the file and line, except a torn *last* line (no trailing newline), which is what a
kill mid-write leaves; it is dropped and truncated away before the next append.

A finished shard file (``rows.jsonl``, what the merge depends on) holds no wall-clock figures, so
a rerun shard with the same scores leaves every downstream job up to date; its timings go to the
file next to it (:func:`timings_path`), which no rule takes as an input. Progress files keep the
timings inline.

The merged table is split in two so that reruns compare byte for byte:
- ``results.csv``: everything that is a function of the seed and the data (one row per arch id);
- ``timings.csv``: wall-clock figures of each evaluation, keyed by arch id.

With ``search.objective: latency`` every row also holds ``latency_ms`` (the latency table's
prediction, the search's cost axis; GFLOPs are still recorded), and the merged table gets a
``latency_ms`` column after ``gflops``. Rows of a GFLOPs search have neither, so their files are
the same bytes as before the key existed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from pipeline.io import atomic_write_text
from pipeline.space.arch import Architecture, ArchitectureError
from pipeline.errors import InputError

#: Deterministic columns of ``results.csv``, in order (metric_* columns follow, sorted by name).
RESULT_COLUMNS: tuple[str, ...] = (
    "arch_id", "stage", "generation", "index", "shard", "group", "fusion_prob",
    "depth_candidates", "params", "gflops", "score")
#: Columns of ``timings.csv``.
TIMING_COLUMNS: tuple[str, ...] = ("arch_id", "stage", "generation", "shard", "wall_s",
                                   "calib_s", "eval_s", "forward_s", "overhead_s")
#: The predicted-latency column (search.objective latency only): rows and tables may hold it.
LATENCY = "latency_ms"
#: Sort key of the merged table.
SORT_KEY: tuple[str, ...] = ("stage", "generation", "index", "arch_id", "shard")

_ROW_TYPES: dict[str, tuple[type, ...]] = {
    "arch_id": (str,), "stage": (str,), "generation": (int,), "index": (int,), "shard": (int,),
    "group": (str,), "fusion_prob": (float, int, type(None)), "depth_candidates": (str,),
    "params": (int,), "gflops": (float, int), "score": (float, int), "metrics": (dict,),
    "timing": (dict,), "arch": (dict,)}
#: Keys a row may leave out (and then does, so a GFLOPs search writes what it always wrote).
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {LATENCY: (float, int)}
#: wall_s = calib_s + eval_s + the rest; forward_s = time inside the network's forward passes
#: (calibration and evaluation, BN statistics hooks excluded); overhead_s = wall_s - forward_s.
_TIMING_KEYS = ("wall_s", "calib_s", "eval_s", "forward_s", "overhead_s")


class ResultsError(InputError):
    """A results file or row that is not valid; the message names the file and line."""


@dataclass(frozen=True)
class Row:
    """One evaluated candidate, as written to a shard file."""

    arch_id: str
    stage: str
    generation: int
    index: int
    shard: int
    group: str
    fusion_prob: float | None
    depth_candidates: str
    params: int
    gflops: float
    score: float
    metrics: Mapping[str, float]
    timing: Mapping[str, float]
    arch: Mapping[str, Any]
    #: Predicted latency (ms) from the search's latency table; None when the objective is GFLOPs.
    latency_ms: float | None = None

    def to_json(self, timing: bool = True) -> str:
        d = {k: getattr(self, k) for k in _ROW_TYPES}
        if self.latency_ms is not None:
            d[LATENCY] = self.latency_ms
        d["metrics"] = dict(self.metrics)
        d["timing"] = dict(self.timing)
        if not timing:
            del d["timing"]
        d["arch"] = dict(self.arch)
        return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_number(x: Any, where: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ResultsError(f"{where}: expected a finite number, got {x!r}")


def parse_row(doc: Any, where: str) -> Row:
    """Strictly validate one decoded row (``where`` = "file:line" for messages)."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    missing = sorted(set(_ROW_TYPES) - set(doc) - {"timing"})  # timings: see timings_path
    extra = sorted(set(doc) - set(_ROW_TYPES) - set(_OPTIONAL_TYPES))
    if missing or extra:
        raise ResultsError(f"{where}: missing key(s) {missing}, unknown key(s) {extra}")
    doc = {"timing": {}, **doc}
    for k, types in _ROW_TYPES.items():
        v = doc[k]
        if isinstance(v, bool) or not isinstance(v, types):
            raise ResultsError(f"{where}: key {k!r} has the wrong type ({type(v).__name__})")
    for k in ("gflops", "score"):
        _check_number(doc[k], f"{where}: key {k!r}")
    for k, types in _OPTIONAL_TYPES.items():
        if k in doc:
            if isinstance(doc[k], bool) or not isinstance(doc[k], types):
                raise ResultsError(f"{where}: key {k!r} has the wrong type ({type(doc[k]).__name__})")
            _check_number(doc[k], f"{where}: key {k!r}")
    for name, v in doc["metrics"].items():
        _check_number(v, f"{where}: metric {name!r}")
    if doc["timing"] and sorted(doc["timing"]) != sorted(_TIMING_KEYS):
        raise ResultsError(f"{where}: timing must have exactly the keys {list(_TIMING_KEYS)}")
    for name, v in doc["timing"].items():
        _check_number(v, f"{where}: timing {name!r}")
    try:
        arch = Architecture.from_dict(doc["arch"], source=f"{where}: arch")
    except ArchitectureError as e:
        raise ResultsError(str(e)) from None
    if arch.arch_id != doc["arch_id"]:
        raise ResultsError(f"{where}: arch_id {doc['arch_id']!r} does not match the architecture "
                           f"({arch.arch_id})")
    return Row(**{k: doc[k] for k in _ROW_TYPES}, **{k: doc[k] for k in _OPTIONAL_TYPES if k in doc})


def timings_path(shard_file: str | os.PathLike) -> Path:
    """The wall-clock figures of a finished shard file: ``rows.jsonl`` -> ``rows.timings.jsonl``."""
    p = Path(shard_file)
    return p.with_name(f"{p.stem}.timings.jsonl")


def _read_timings(path: Path) -> dict[str, dict[str, float]]:
    """``{arch_id: timing}`` of a timings file; absent or unreadable: none (they are only
    figures for the timings table, never an input of a result)."""
    out: dict[str, dict[str, float]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            doc = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        t = doc.get("timing") if isinstance(doc, dict) else None
        if isinstance(t, dict) and sorted(t) == sorted(_TIMING_KEYS) and isinstance(
                doc.get("arch_id"), str):
            out[doc["arch_id"]] = t
    return out


def read_shard(path: str | os.PathLike) -> tuple[list[Row], int]:
    """Load a shard file strictly. Returns (rows, byte length of the valid prefix).

    Only a final line without its newline (a torn write) is tolerated; it is not returned and the
    valid length excludes it. A missing file is an empty shard. Rows without timings get them
    from :func:`timings_path` when it has them.
    """
    p = Path(path)
    if not p.exists():
        return [], 0
    data = p.read_bytes()
    rows: list[Row] = []
    pos = 0
    lineno = 0
    while pos < len(data):
        lineno += 1
        nl = data.find(b"\n", pos)
        if nl < 0:  # torn last line from a kill: dropped, re-evaluated on resume
            break
        where = f"{p}:{lineno}"
        try:
            doc = json.loads(data[pos:nl].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResultsError(f"{where}: corrupt row (not valid JSON: {e})") from None
        except RecursionError:
            raise ResultsError(f"{where}: corrupt row (JSON nested too deeply)") from None
        rows.append(parse_row(doc, where))
        pos = nl + 1
    if any(not r.timing for r in rows):
        timings = _read_timings(timings_path(p))
        rows = [r if r.timing or r.arch_id not in timings
                else dataclasses.replace(r, timing=timings[r.arch_id]) for r in rows]
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, 1):
        if r.arch_id in seen:
            raise ResultsError(f"{p}:{i}: duplicate arch_id {r.arch_id} (first at line {seen[r.arch_id]})")
        seen[r.arch_id] = i
    return rows, pos


class ShardWriter:
    """Append-only writer of one shard file; resumes an existing file.

    On open, a torn last line is truncated away so the next row starts on a fresh line.
    ``done`` holds the arch ids already recorded.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows, valid = read_shard(self.path)
        if self.path.exists() and self.path.stat().st_size != valid:
            with open(self.path, "r+b") as f:
                f.truncate(valid)
        self.done = {r.arch_id for r in self.rows}
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, row: Row) -> None:
        line = row.to_json()
        parse_row(json.loads(line), f"{self.path}: new row")  # never write what we cannot read
        if row.arch_id in self.done:
            raise ResultsError(f"{self.path}: arch_id {row.arch_id} is already recorded")
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.rows.append(row)
        self.done.add(row.arch_id)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_shard(path: str | os.PathLike, rows: Sequence[Row]) -> None:
    """Write a complete shard file atomically (the finished output of a shard job): the rows
    without their wall-clock timings, which go to :func:`timings_path`."""
    atomic_write_text(timings_path(path), "".join(json.dumps(
        {"arch_id": r.arch_id, "timing": dict(r.timing)}, sort_keys=True) + "\n" for r in rows))
    atomic_write_text(Path(path), "".join(r.to_json(timing=False) + "\n" for r in rows))


def rows_to_frames(rows: Iterable[Row]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, timings) frames, sorted by ``SORT_KEY`` and deduplicated by arch id (first kept)."""
    rows = list(rows)
    metric_names = sorted({m for r in rows for m in r.metrics})
    latency = [r.latency_ms is not None for r in rows]
    if any(latency) and not all(latency):
        raise ResultsError(f"{latency.count(False)} of {len(rows)} rows have no {LATENCY}: rows of "
                           f"a GFLOPs search and of a latency search do not merge")
    columns = list(RESULT_COLUMNS)
    if rows and all(latency):
        columns.insert(columns.index("gflops") + 1, LATENCY)
    recs = []
    for r in rows:
        rec = {k: getattr(r, k) for k in RESULT_COLUMNS}
        rec["fusion_prob"] = float("nan") if r.fusion_prob is None else float(r.fusion_prob)
        rec["gflops"], rec["score"] = float(r.gflops), float(r.score)
        if r.latency_ms is not None:
            rec[LATENCY] = float(r.latency_ms)
        for m in metric_names:
            rec[f"metric_{m}"] = float(r.metrics.get(m, float("nan")))
        rec["arch"] = json.dumps(dict(r.arch), sort_keys=True, separators=(",", ":"))
        rec.update({k: float(r.timing.get(k, math.nan)) for k in _TIMING_KEYS})
        recs.append(rec)
    cols = columns + [f"metric_{m}" for m in metric_names] + ["arch"]
    df = pd.DataFrame.from_records(recs, columns=cols + list(_TIMING_KEYS))
    df = df.sort_values(list(SORT_KEY), kind="mergesort").drop_duplicates("arch_id", keep="first")
    df = df.reset_index(drop=True)
    return df[cols], df[list(TIMING_COLUMNS)]


def merge_shards(shard_paths: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Strictly load every shard file and merge them (see ``rows_to_frames``)."""
    rows: list[Row] = []
    for p in shard_paths:
        rows.extend(read_shard(p)[0])
    return rows_to_frames(rows)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as CSV atomically; floats in round-trip precision."""
    atomic_write_text(Path(path), df.to_csv(index=False, lineterminator="\n"))


_TABLE_DTYPES: dict[str, str] = {
    "arch_id": "str", "stage": "str", "generation": "int", "index": "int", "shard": "int",
    "group": "str", "fusion_prob": "float", "depth_candidates": "str", "params": "int",
    "gflops": "float", "score": "float", "arch": "str"}
#: Columns a table may hold (the latency search's), typed and checked like the required ones.
_OPTIONAL_DTYPES: dict[str, str] = {LATENCY: "float"}


def load_results(path: str | os.PathLike, *, check_arch: bool = True) -> pd.DataFrame:
    """Load a merged ``results.csv`` strictly: required columns, types per row, unique arch ids,
    finite cost/score (``latency_ms`` too, when there), and (``check_arch``) each architecture document valid and matching its id.
    Errors name the file and the CSV line."""
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"{p}: results table not found")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResultsError(f"{p}: not a readable CSV table: {e}") from None
    missing = [c for c in _TABLE_DTYPES if c not in df.columns]
    if missing:
        raise ResultsError(f"{p}: missing column(s) {missing}")
    out: dict[str, list[Any]] = {c: [] for c in df.columns}
    seen: dict[str, int] = {}
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2  # header is line 1
        where = f"{p}:{line}"
        for c, v in rec.items():
            kind = _TABLE_DTYPES.get(c) or _OPTIONAL_DTYPES.get(
                c, "float" if c.startswith("metric_") else "str")
            try:
                if kind == "int":
                    val: Any = int(v)
                elif kind == "float":
                    val = float(v) if v != "" else float("nan")
                else:
                    val = v
            except ValueError:
                raise ResultsError(f"{where}: corrupt row: column {c!r} = {v!r} is not {kind}") from None
            out[c].append(val)
        for c in ("gflops", "score", *(k for k in _OPTIONAL_DTYPES if k in out)):
            if not math.isfinite(out[c][-1]):
                raise ResultsError(f"{where}: corrupt row: column {c!r} must be a finite number")
        aid = rec["arch_id"]
        if aid in seen:
            raise ResultsError(f"{where}: duplicate arch_id {aid} (first at line {seen[aid]})")
        seen[aid] = line
        if check_arch:
            try:
                arch = Architecture.from_json(rec["arch"], source=f"{where}: arch")
            except ArchitectureError as e:
                raise ResultsError(f"corrupt row: {e}") from None
            if arch.arch_id != aid:
                raise ResultsError(f"{where}: corrupt row: arch_id {aid!r} does not match the "
                                   f"architecture ({arch.arch_id})")
    return pd.DataFrame(out, columns=list(df.columns))


def load_all_results(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Strictly load several results tables and concatenate them (an arch id may appear once)."""
    return concat_tables([load_results(p) for p in paths], [str(p) for p in paths])


def concat_tables(frames: Sequence[pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """Concatenate loaded tables; an arch id may appear in only one of them (``names`` says
    which tables, for the error)."""
    if not frames:
        return pd.DataFrame(columns=list(_TABLE_DTYPES))
    df = pd.concat(frames, ignore_index=True)
    dup = df["arch_id"].duplicated()
    if dup.any():
        raise ResultsError(f"arch_id {df['arch_id'][dup].iloc[0]} appears in more than one of "
                           f"{list(names)}")
    return df


def architectures(df: pd.DataFrame) -> list[Architecture]:
    """The architecture of each row of a loaded table, in row order."""
    return [Architecture.from_json(a, source=f"table row {aid}")
            for a, aid in zip(df["arch"], df["arch_id"])]
