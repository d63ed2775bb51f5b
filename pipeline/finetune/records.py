"""The record a fine-tuning job leaves for the report: one JSON file per final model."""
from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pipeline.io import atomic_write_text
from pipeline.io import read_json
from pipeline.errors import InputError


class RecordError(InputError):
    """A fine-tuning record that is missing, malformed or incomplete; the message names the file."""


@dataclass(frozen=True)
class FinetuneRecord:
    """What fine-tuning one selected model measured (val metric before and after, cost, files)."""

    name: str
    task: str
    arch_id: str
    rule: str
    metric: str                      # "mIoU" or "AP": the name of ``score`` in the task's evaluation
    params: int
    gflops: float                    # analytic, paper unit (MACs / 2^30), at ``input_hw``
    input_hw: tuple[int, int]
    width: int
    inherited: float                 # val score with the supernet's weights after BN calibration
    finetuned: float                 # val score after fine-tuning
    reloaded: float                  # val score of the model reloaded from its saved files alone
    iterations: int
    epochs: float
    wall_s: float
    model_dir: str                   # relative to the record file's folder
    search_score: float | None = None    # held-out search split score from the search table
    details_inherited: Mapping[str, float] = field(default_factory=dict)
    details_finetuned: Mapping[str, float] = field(default_factory=dict)
    search_inherited: float | None = None   # search-split score before fine-tuning
    search_finetuned: float | None = None   # ... after (precise BN): decides which weights are kept
    kept: str = "finetuned"                 # "finetuned" or "inherited" (fine-tuning did not help)

    @property
    def gain(self) -> float:
        return self.finetuned - self.inherited

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["details_inherited"] = dict(self.details_inherited)
        d["details_finetuned"] = dict(self.details_finetuned)
        return d

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FinetuneRecord":
        p = Path(path)
        doc = read_json(p, "fine-tuning record", RecordError)
        return cls.from_dict(doc, source=str(p))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "record") -> "FinetuneRecord":
        if not isinstance(doc, Mapping):
            raise RecordError(f"{source}: expected a JSON object")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(doc))
        if missing:
            raise RecordError(f"{source}: missing key(s) {missing}")
        unknown = sorted(set(doc) - names)
        if unknown:
            raise RecordError(f"{source}: unknown key(s) {unknown}")
        kw = dict(doc)
        kw["input_hw"] = tuple(int(v) for v in kw["input_hw"])
        for k in ("inherited", "finetuned", "reloaded", "gflops"):
            if not isinstance(kw[k], (int, float)) or not math.isfinite(kw[k]):
                raise RecordError(f"{source}: {k!r} must be a finite number, got {kw[k]!r}")
        return cls(**kw)
