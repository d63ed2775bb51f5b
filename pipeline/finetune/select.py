"""Which architectures become final models: points of the Pareto front at FLOPs budgets, or files.

A selection is a list of named entries from the parameters, each of exactly one kind:

* ``{"name": "S1", "gflops": 265.5}``: the best-scoring member of the final front whose GFLOPs
  are at most the budget (the paper's S1/S2/S4, P2/P3/P4 points). A budget outside the front's
  GFLOPs range is an error: below it nothing fits, above it the budget says nothing the front
  can honour (usually a unit or input-size mistake).
* ``{"name": "L1", "latency_ms": 12.5}``: the best-scoring member of the final front whose
  predicted latency (column ``latency_ms``, a search with ``search.objective: latency``) is at
  most the budget.
* ``{"name": "mid", "front_fraction": 0.5}``: the budget placed at that fraction of the front's
  span along the search's cost axis (GFLOPs, or ms with a latency objective; 0 = its cheapest
  member, 1 = its most expensive). Used by the tiny default run, whose front's absolute GFLOPs are
  not known in advance.
* ``{"name": "S1", "arch": "path/to/seg_w32_S1.npy"}``: a named architecture or architecture file,
  resolved by :func:`pipeline.space.registry.resolve`.

Selection is pure: it reads the front (a table with ``gflops``, ``score`` and ``arch`` columns,
and ``latency_ms`` after a latency search) and returns architectures; it never touches a network.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from pipeline.config import FinetuneTrainConfig
from pipeline.space.arch import Architecture, ArchitectureError
from pipeline.errors import InputError

#: Columns the front table must hold (names shared with the search results table).
GFLOPS, SCORE, ARCH, ARCH_ID, PARAMS = "gflops", "score", "arch", "arch_id", "params"
#: The predicted-latency column of a latency search's tables.
LATENCY = "latency_ms"
_KINDS = ("gflops", "latency_ms", "front_fraction", "arch")
#: Unit and name of the budgets along each cost column.
_UNITS = {GFLOPS: ("GFLOPs", "FLOPs budget"), LATENCY: ("ms", "latency budget")}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Names a model cannot take: they are folders of the fine-tuning stage's own.
RESERVED_NAMES = frozenset({"select"})


class SelectionError(InputError):
    """A selection entry that cannot be honoured; the message names the entry and the problem."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the selection parameters (exactly one of ``gflops``, ``latency_ms``,
    ``front_fraction``, ``arch``)."""

    name: str
    gflops: float | None = None
    front_fraction: float | None = None
    arch: str | None = None
    latency_ms: float | None = None

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) is not None)


@dataclass(frozen=True)
class SelectedModel:
    """A chosen architecture with how it was chosen and, for front members, its search row."""

    name: str
    task: str
    arch: Architecture
    rule: str                                    # human-readable, e.g. "front, GFLOPs <= 0.8"
    budget_gflops: float | None = None
    search: Mapping[str, Any] = field(default_factory=dict)   # gflops/params/score from the search
    #: The budget of a pick along the latency axis (ms); GFLOPs picks leave it None.
    budget_latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {"name": self.name, "task": self.task, "arch_id": self.arch.arch_id,
               "rule": self.rule, "budget_gflops": self.budget_gflops,
               "search": dict(self.search), "arch": self.arch.to_dict()}
        if self.budget_latency_ms is not None:
            doc["budget_latency_ms"] = self.budget_latency_ms
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "selection") -> "SelectedModel":
        try:
            arch = Architecture.from_dict(doc["arch"], source=f"{source}: model {doc.get('name')!r}")
            return cls(name=str(doc["name"]), task=str(doc["task"]), arch=arch, rule=str(doc["rule"]),
                       budget_gflops=doc.get("budget_gflops"), search=dict(doc.get("search") or {}),
                       budget_latency_ms=doc.get("budget_latency_ms"))
        except KeyError as e:
            raise SelectionError(f"{source}: model entry lacks key {e.args[0]!r}") from None


def parse_specs(items: Any, source: str = "selection") -> list[ModelSpec]:
    """Validate the selection parameters (a list of mappings) into :class:`ModelSpec` entries."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise SelectionError(f"{source}: expected a non-empty list of model entries, got {items!r}")
    specs: list[ModelSpec] = []
    for i, item in enumerate(items):
        where = f"{source}[{i}]"
        if not isinstance(item, Mapping):
            raise SelectionError(f"{where}: expected a mapping, got {item!r}")
        unknown = set(item) - {"name", *_KINDS}
        if unknown:
            raise SelectionError(f"{where}: unknown key(s) {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise SelectionError(f"{where}: 'name' must be a simple identifier "
                                 f"(letters, digits, '_', '-', '.'), got {name!r}")
        if name in RESERVED_NAMES:
            raise SelectionError(f"{where}: model name {name!r} is reserved")
        kinds = [k for k in _KINDS if item.get(k) is not None]
        if len(kinds) != 1:
            raise SelectionError(f"{where} ({name}): give exactly one of {list(_KINDS)}, got {kinds}")
        kind, value = kinds[0], item[kinds[0]]
        if kind == "arch":
            if not isinstance(value, str) or not value:
                raise SelectionError(f"{where} ({name}): 'arch' must be a name or a file path")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SelectionError(f"{where} ({name}): {kind!r} must be a finite number, got {value!r}")
            value = float(value)
            if kind == "gflops" and value <= 0:
                raise SelectionError(f"{where} ({name}): FLOPs budget must be positive, got {value}")
            if kind == "latency_ms" and value <= 0:
                raise SelectionError(f"{where} ({name}): latency budget must be positive, got {value}")
            if kind == "front_fraction" and not 0.0 <= value <= 1.0:
                raise SelectionError(f"{where} ({name}): 'front_fraction' must be in [0, 1], got {value}")
        specs.append(ModelSpec(name=name, **{kind: value}))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SelectionError(f"{source}: model name(s) {dup} used more than once")
    return specs


def _check_front(front: pd.DataFrame | None, source: str,
                 cost: str = GFLOPS) -> pd.DataFrame:
    if front is None or len(front) == 0:
        raise SelectionError(f"{source}: the Pareto front is empty; FLOPs budgets need search results")
    missing = [c for c in (GFLOPS, SCORE, ARCH) if c not in front.columns]
    if missing:
        raise SelectionError(f"{source}: front table lacks column(s) {missing}")
    if cost not in front.columns:
        raise SelectionError(f"{source}: front table has no {cost!r} column: latency budgets "
                             f"need a search with search.objective latency")
    return front


def pick_at_budget(front: pd.DataFrame, budget: float, name: str = "budget",
                   source: str = "front", cost: str = GFLOPS) -> pd.Series:
    """The best-scoring front member with ``cost`` (column: ``gflops`` or ``latency_ms``) <=
    ``budget`` (ties: the cheaper one).

    Raises :class:`SelectionError` naming the budget when it lies outside the front's range.
    """
    front = _check_front(front, source, cost)
    unit, what = _UNITS[cost]
    lo, hi = float(front[cost].min()), float(front[cost].max())
    # A relative tolerance so a budget copied from a printed front value (rounded) still selects it.
    tol = 1e-6 * max(abs(hi), 1e-12)
    if budget < lo - tol or budget > hi + tol:
        raise SelectionError(
            f"{name}: {what} {budget:g} {unit} is outside the final Pareto front "
            f"({len(front)} members, {lo:.6g} .. {hi:.6g} {unit})")
    fits = front[front[cost] <= budget + tol]
    best = fits.sort_values([SCORE, cost], ascending=[False, True], kind="mergesort")
    return best.iloc[0]


def _row_arch(row: pd.Series, name: str) -> Architecture:
    doc = row[ARCH]
    try:
        if isinstance(doc, str):
            return Architecture.from_json(doc, source=f"model {name}: front row")
        return Architecture.from_dict(doc, source=f"model {name}: front row")
    except ArchitectureError as e:
        raise SelectionError(str(e)) from None


def _search_fields(row: pd.Series) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in (GFLOPS, LATENCY, PARAMS, SCORE):
        if col in row.index and pd.notna(row[col]):
            v = row[col]
            out[col] = int(v) if col == PARAMS else float(v)
    return out


def select_models(specs: Iterable[ModelSpec], task: str, front: pd.DataFrame | None,
                  source: str = "selection", cost: str = GFLOPS) -> list[SelectedModel]:
    """Resolve every entry to an architecture; errors name the entry (and the budget or file).

    ``cost`` is the column of the search's cost axis (``gflops``, or ``latency_ms`` after a latency
    search): ``front_fraction`` places its budget along it."""
    from pipeline.space.registry import resolve  # the registry pulls in numpy import code

    chosen: list[SelectedModel] = []
    for spec in specs:
        where = f"{source}: model {spec.name!r} ({task})"
        if spec.kind == "arch":
            try:
                arch = resolve(spec.arch, task)
            except ArchitectureError as e:
                raise SelectionError(f"{where}: {e}") from None
            chosen.append(SelectedModel(spec.name, task, arch, rule=f"file {spec.arch}"))
            continue
        if spec.kind == "gflops":
            column = GFLOPS
            budget, rule = float(spec.gflops), f"front, GFLOPs <= {spec.gflops:g}"
        elif spec.kind == "latency_ms":
            column = LATENCY
            budget, rule = float(spec.latency_ms), f"front, latency <= {spec.latency_ms:g} ms"
        else:
            column = cost
            fr = _check_front(front, where, column)
            lo, hi = float(fr[column].min()), float(fr[column].max())
            budget = lo + float(spec.front_fraction) * (hi - lo)
            label = "GFLOPs" if column == GFLOPS else "latency"
            unit = "" if column == GFLOPS else " ms"
            rule = f"front, {label} <= {budget:.4g}{unit} ({spec.front_fraction:g} of its span)"
        fr = _check_front(front, where, column)
        row = pick_at_budget(fr, budget, name=where, cost=column)
        arch = _row_arch(row, spec.name)
        if column == GFLOPS:
            chosen.append(SelectedModel(spec.name, task, arch, rule=rule, budget_gflops=budget,
                                        search=_search_fields(row)))
        else:
            chosen.append(SelectedModel(spec.name, task, arch, rule=rule,
                                        search=_search_fields(row), budget_latency_ms=budget))
    return chosen



def specs_from_params(section: FinetuneTrainConfig, source: str = "finetune",
                      objective: str = "gflops") -> list[ModelSpec]:
    """The selection of a ``finetune.<task>`` parameter section.

    ``models`` (named entries, see the module docstring) come first; each of ``budgets`` adds a
    front pick in the unit of ``objective`` (``search.objective``): named ``gflops<budget>``
    (GFLOPs) or ``ms<budget>`` (latency, ms); each of ``arch_files`` a file named by its stem.
    """
    items: list[dict[str, Any]] = [dict(m) for m in section.models]
    if objective == "latency":
        items += [{"name": f"ms{float(b):g}", "latency_ms": b} for b in section.budgets]
    else:
        items += [{"name": f"gflops{float(b):g}", "gflops": b} for b in section.budgets]
    for f in section.arch_files:
        stem = Path(str(f)).stem
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) if stem else "arch"
        items.append({"name": name if _NAME_RE.match(name) else f"arch_{name}", "arch": str(f)})
    if not items:
        raise SelectionError(f"{source}: nothing to fine-tune: give 'models', 'budgets' or "
                             f"'arch_files'")
    return parse_specs(items, source)
