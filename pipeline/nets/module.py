"""The multi-resolution module: blocks per branch, one fusion layer set per block step.

The same class serves the supernet (every block and every fusion layer built, an architecture
chooses which run) and the standalone network (only what one architecture uses is built). The
attribute names are the official ones: ``branches.<branch>.<block>`` and
``fuse_layers_<step+1>.<target>.<source>`` (``None`` where nothing is built).

``set_arch`` turns a ``ModuleArch`` into a plan of plain Python lists of module references, so
the forward pass does no lookups, no numpy and no mask arithmetic: it runs exactly the active
blocks and fusions.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from pipeline.space.arch import MAX_DEPTH, ModuleArch

from .blocks import BasicBlock, fuse_layer

#: One step of the plan: the (branch, block) pairs to run, then for each fused target the terms
#: to add in the official order (ascending branch; ``None`` = the target's own feature).
_Step = tuple[list[tuple[int, nn.Module]], list[tuple[int, list[tuple[int, nn.Module | None]]]]]


class ScaleModule(nn.Module):
    """One module of ``len(channels)`` branches.

    ``spec=None`` builds the supernet module (``MAX_DEPTH`` blocks per branch, all fusion layers of
    all ``MAX_DEPTH`` steps). With a ``ModuleArch`` only that architecture's blocks and fusion
    layers are built, under the same names.
    """

    def __init__(self, channels: Sequence[int], bn_momentum: float,
                 spec: ModuleArch | None = None) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        nb = len(self.channels)
        if spec is not None and spec.num_branches != nb:
            raise ValueError(f"module architecture has {spec.num_branches} branches, expected {nb}")
        depths = [MAX_DEPTH] * nb if spec is None else list(spec.depths)
        self.branches = nn.ModuleList(
            nn.ModuleList(BasicBlock(c, bn_momentum) for _ in range(d))
            for c, d in zip(self.channels, depths))
        steps = MAX_DEPTH if spec is None else spec.steps
        for s in range(steps):
            targets = []
            for j in range(nb):
                wanted = set(range(nb)) - {j} if spec is None else set(spec.fusions[s][j])
                targets.append(nn.ModuleList(
                    fuse_layer(self.channels, k, j, bn_momentum) if k in wanted else None
                    for k in range(nb)))
            self.add_module(f"fuse_layers_{s + 1}", nn.ModuleList(targets))
        self._plan: list[_Step] = []
        if spec is not None:
            self.set_arch(spec)

    @property
    def num_branches(self) -> int:
        return len(self.channels)

    def set_arch(self, spec: ModuleArch) -> None:
        """Select the blocks and fusions to run; raise if this module lacks one of them."""
        nb = self.num_branches
        if spec.num_branches != nb:
            raise ValueError(f"module architecture has {spec.num_branches} branches, expected {nb}")
        plan: list[_Step] = []
        for s in range(spec.steps):
            blocks = []
            for i, d in enumerate(spec.depths):
                if s < d:
                    if s >= len(self.branches[i]):
                        raise ValueError(f"branch {i} has no block {s} in this network")
                    blocks.append((i, self.branches[i][s]))
            fuses = []
            for j in range(nb):
                srcs = spec.fusions[s][j]
                if not srcs:
                    continue  # x_j is post-ReLU already: ReLU(x_j) is x_j, so skip the no-op
                layers = getattr(self, f"fuse_layers_{s + 1}", None)
                terms: list[tuple[int, nn.Module | None]] = []
                for k in sorted(set(srcs) | {j}):
                    if k == j:
                        terms.append((j, None))
                        continue
                    op = None if layers is None else layers[j][k]
                    if op is None:
                        raise ValueError(f"step {s}: no fusion layer {k}->{j} in this network")
                    terms.append((k, op))
                fuses.append((j, terms))
            plan.append((blocks, fuses))
        self._plan = plan

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = list(xs)
        for blocks, fuses in self._plan:
            for i, block in blocks:
                xs[i] = block(xs[i])
            if not fuses:
                continue
            # Every target of a step reads the same post-block tensors.
            out = list(xs)
            for j, terms in fuses:
                y: Tensor | None = None
                for k, op in terms:
                    t = xs[k] if op is None else op(xs[k])
                    y = t if y is None else y + t
                assert y is not None
                out[j] = torch.relu(y)
            xs = out
        return xs
