"""A few numbers that describe an architecture, for tables and the MLflow UI's parallel-coordinates
and compare views: the mean depth of each resolution branch over the modules that have it, the
total number of blocks, and each module's fusion density.

Fusion density of a module: switched-on fusion edges / possible edges, where a module with ``nb``
branches and ``T`` steps can fuse each of ``nb - 1`` other branches into each target after every
step (``T * nb * (nb - 1)`` edges). 17 numbers in all: small enough to be MLflow params.
"""
from __future__ import annotations

from .arch import BRANCHES, MODULE_NAMES, Architecture

BRANCH_COUNT = max(BRANCHES)


def arch_summary(arch: Architecture) -> dict[str, float]:
    """``{"depth.branch<b>": mean depth, "depth.blocks": total, "fusion.<module>": density}``."""
    out: dict[str, float] = {}
    for b in range(BRANCH_COUNT):
        ds = [m.depths[b] for m in arch.modules if m.num_branches > b]
        out[f"depth.branch{b}"] = round(sum(ds) / len(ds), 4)
    out["depth.blocks"] = float(sum(sum(m.depths) for m in arch.modules))
    for name, m in zip(MODULE_NAMES, arch.modules):
        nb = m.num_branches
        on = sum(len(srcs) for step in m.fusions for srcs in step)
        out[f"fusion.{name}"] = round(on / (m.steps * nb * (nb - 1)), 4)
    out["fusion.edges"] = float(arch.num_fusions())
    return out
