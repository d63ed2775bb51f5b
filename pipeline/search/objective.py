"""The search's cost axis (``search.objective``): analytic GFLOPs or predicted latency in ms.

Everything that places a candidate on the cost axis (Pareto fronts, hypervolumes and their
reference point, the evolution's parent ranking, screening and cost bounds, the fine-tune
budgets, the figures) reads the column of the axis in the results tables: ``gflops`` always
there, ``latency_ms`` there when the objective is latency (``pipeline.search.table``).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import InputError

from .table import LATENCY


@dataclass(frozen=True)
class CostAxis:
    """One cost axis: its results-table column, unit, figure label and how errors name bounds."""

    objective: str
    column: str
    unit: str
    label: str
    bounds: str


#: The default axis: analytic GFLOPs (MACs / 2^30, the paper's unit).
GFLOPS_AXIS = CostAxis("gflops", "gflops", "GFLOPs", "GFLOPs (MACs / 2^30)", "FLOPs bounds")


def latency_axis(device: str = "") -> CostAxis:
    """Predicted latency (ms); ``device`` (e.g. the table's CPU) goes into the figure label."""
    where = f", {device}" if device else ""
    return CostAxis("latency", LATENCY, "ms", f"predicted latency (ms{where})", "latency bounds")


def cost_axis(objective: str, device: str = "") -> CostAxis:
    """The axis of a ``search.objective`` value; anything else is one error naming the key."""
    if objective == "gflops":
        return GFLOPS_AXIS
    if objective == "latency":
        return latency_axis(device)
    raise InputError(f"search.objective: must be one of ['gflops', 'latency'], got {objective!r}")


__all__ = ["CostAxis", "GFLOPS_AXIS", "latency_axis", "cost_axis"]
