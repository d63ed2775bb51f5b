"""Training batch sizes against the splits they draw from, checked before any training job.

Each training phase gives every rank of the launcher ``batch_size`` items per step from one split
and drops the last partial batch (:func:`pipeline.train.data.make_loader`), so a batch larger than
a rank's share of its split never fills and the job stops, late (after the data preparation and
the start of the job). The workflow checks every phase here as soon as the split sizes are known:
at parse time against an up-to-date manifest, and in each task's ``prepare`` job right after it
counts the splits (the uses travel in the run settings, which are never an input: changing a batch
size does not rerun ``prepare``). The data jobs have a higher Snakemake priority than the training
jobs, so with one job at a time every task's check runs before any training job; with several,
one task's training may already run while another's prepare refuses (no new job starts then).

Calibration is not checked: its images are read in batches of ``calibration.batch_size`` whose
last one may be partial, so a batch larger than the calibration set is one smaller batch, not an
error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from pipeline.errors import ConfigError

#: The split each training phase draws its batches from (pipeline.data.splits).
PHASE_SPLITS = {"teacher": "train", "supernet": "train", "finetune": "trainfull"}


@dataclass(frozen=True)
class BatchUse:
    key: str    # the parameter, e.g. "teacher.pose.batch_size"
    task: str
    batch: int  # items per rank and step
    ranks: int  # processes of the job (run.launcher)
    split: str  # "train" or "trainfull"


def uses(params: Mapping[str, Any], tasks: Iterable[str], ranks: int, *,
         trained: Iterable[str] = (), teacher: Iterable[str] = ()) -> list[BatchUse]:
    """The batches the planned jobs will draw: the teacher of the ``teacher`` tasks, the supernet
    of the ``trained`` ones, the fine-tuning of every task."""
    trained, teacher = set(trained), set(teacher)
    out = []
    for task in tasks:
        for phase, split in PHASE_SPLITS.items():
            if (phase == "teacher" and task not in teacher) or (
                    phase == "supernet" and task not in trained):
                continue
            out.append(BatchUse(f"{phase}.{task}.batch_size", task,
                                int(params[phase][task]["batch_size"]), ranks, split))
    return out


def to_json(items: Iterable[BatchUse]) -> list[dict[str, Any]]:
    return [asdict(u) for u in items]


def from_json(doc: Any) -> list[BatchUse]:
    return [BatchUse(**u) for u in doc or []]


def with_trainfull(counts: Mapping[str, int]) -> dict[str, int]:
    """The split counts plus ``trainfull`` (train + search, what fine-tuning trains on)."""
    out = {k: int(v) for k, v in counts.items()}
    out["trainfull"] = out.get("train", 0) + out.get("search", 0)
    return out


def split_sizes(manifest: Mapping[str, Any]) -> tuple[dict[str, int], str]:
    """``({split: items}, unit)`` of a manifest: pose trains on person crops, seg on images."""
    persons = manifest.get("persons")
    counts = persons if persons else {k: v["count"] for k, v in manifest["splits"].items()}
    return with_trainfull(counts), "persons" if persons else "images"


def check_manifest(task: str, items: Iterable[BatchUse], manifest: str | Path,
                   prepare_params: Mapping[str, Any], *, data_current: bool = True) -> None:
    """:func:`check` against ``task``'s manifest when it is up to date: written by a prepare job
    with ``prepare_params`` (its ``resolved_params.json``) from current data; else nothing (the
    prepare job that will rerun checks the new counts)."""
    path = Path(manifest)
    try:
        resolved = json.loads((path.parent / "resolved_params.json").read_text(encoding="utf-8"))
        doc = json.loads(path.read_text(encoding="utf-8"))
        counts, unit = split_sizes(doc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no usable manifest yet: the prepare job makes one and checks it
    if not data_current or resolved.get("params") != prepare_params:
        return
    try:
        check(task, items, counts, unit)
    except ConfigError as e:
        raise ConfigError(f"{e} ({path})") from None


def check(task: str, items: Iterable[BatchUse], counts: Mapping[str, int], unit: str) -> None:
    """One :class:`ConfigError` for the first batch of ``task`` that its split cannot fill."""
    for u in items:
        if u.task != task or u.split not in counts:
            continue
        if u.batch * u.ranks > counts[u.split]:
            ranks = f"{u.ranks} rank" + ("s (run.launcher)" if u.ranks > 1 else "")
            raise ConfigError(f"{u.key} = {u.batch} per rank x {ranks} needs "
                              f"{u.batch * u.ranks} {unit}, but the {u.split} split of {task} "
                              f"holds {counts[u.split]}")
