"""The ScaleNAS network: HRNet stem and stage 1, 8 searchable multi-resolution modules, task head.

``ScaleNet`` is the shared body; ``SuperNet`` builds every block and fusion layer and switches the
active subnet with ``set_arch``; ``pipeline.nets.export.StandaloneNet`` builds only one
architecture's layers. Attribute names are the official ones (scalenas.md section 9): an official
state_dict loads into ``SuperNet`` as is.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from pipeline.space.arch import TASK_NAMES, Architecture, check_task
from pipeline.space.sample import largest

from pipeline.tasks.facts import task_facts

from .blocks import (conv3x3, conv_bn_relu, init_weights, make_layer1,
                     new_branch_transition)
from .heads import HEADS
from .module import ScaleModule

#: Default number of outputs: Cityscapes classes / COCO joints.
DEFAULT_OUTPUTS = {task: head.default_outputs for task, head in HEADS.items()}
#: Modules per stage (stage2, stage3, stage4); their branch counts are 2, 3, 4.
STAGE_MODULES = (1, 4, 3)
#: Inputs must be divisible by this so that every branch's 2^k upsampling lines up.
INPUT_MULTIPLE = 32


def branch_channels(width: int, num_branches: int) -> tuple[int, ...]:
    return tuple(width * 2 ** b for b in range(num_branches))


def check_net_args(task: str, width: int, num_outputs: int | None) -> int:
    """Validate the network's task and width; return the number of outputs (task default if None)."""
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r} (expected one of {TASK_NAMES})")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    n = DEFAULT_OUTPUTS[task] if num_outputs is None else num_outputs
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_outputs must be a positive integer, got {num_outputs!r}")
    return n


class ScaleNet(nn.Module):
    """The shared network body. ``make_module(index, channels, bn_momentum)`` builds module ``index``."""

    def __init__(self, task: str, width: int, num_outputs: int | None,
                 make_module: Callable[[int, tuple[int, ...], float], ScaleModule]) -> None:
        super().__init__()
        num_outputs = check_net_args(task, width, num_outputs)
        self.task, self.width, self.num_outputs = task, width, num_outputs
        mom = task_facts(task).bn_momentum
        C = branch_channels(width, 4)

        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64, momentum=mom)
        self.conv2 = conv3x3(64, 64, stride=2)
        self.bn2 = nn.BatchNorm2d(64, momentum=mom)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer1(mom)

        self.transition1 = nn.ModuleList([conv_bn_relu(256, C[0], 1, mom),
                                          new_branch_transition(256, C[1], mom)])
        index = 0
        for stage, count in enumerate(STAGE_MODULES, start=2):
            nb = stage
            mods = []
            for _ in range(count):
                mods.append(make_module(index, C[:nb], mom))
                index += 1
            self.add_module(f"stage{stage}", nn.Sequential(*mods))
            if stage < 4:
                # Kept branches pass through (None); the new one comes from the last branch.
                self.add_module(f"transition{stage}", nn.ModuleList(
                    [None] * nb + [new_branch_transition(C[nb - 1], C[nb], mom)]))

        self._head = HEADS[task]
        self.add_module(self._head.attribute, self._head.build(C, num_outputs, mom))

    def scale_modules(self) -> list[ScaleModule]:
        """The 8 searchable modules in architecture order (stage2.0, stage3.0-3, stage4.0-2)."""
        return [m for s in (self.stage2, self.stage3, self.stage4) for m in s]  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        """Logits (seg) or heatmaps (pose) at 1/4 of the input resolution."""
        if not torch.jit.is_tracing():
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected an input of shape (N, 3, H, W), got {tuple(x.shape)}")
            h, w = x.shape[-2:]
            if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
                raise ValueError(f"input size {h}x{w} is not divisible by {INPUT_MULTIPLE}: the "
                                 f"branches' 2^k upsampling would not line up (e.g. use 128x96)")
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = [t(x) for t in self.transition1]
        xs = self.stage2(xs)
        xs = xs + [self.transition2[2](xs[-1])]  # type: ignore[index]
        xs = self.stage3(xs)
        xs = xs + [self.transition3[3](xs[-1])]  # type: ignore[index]
        xs = self.stage4(xs)
        return self._head.forward(getattr(self, self._head.attribute), xs)


class SuperNet(ScaleNet):
    """The whole weight-sharing supernet; ``set_arch`` picks the subnet that runs (default: largest).

    Only the active blocks and fusions execute. Weights: HRNet's initialisation, drawn from a
    ``torch.Generator`` seeded with ``seed``.
    """

    def __init__(self, task: str, width: int = 32, num_outputs: int | None = None, *,
                 seed: int = 0) -> None:
        super().__init__(task, width, num_outputs,
                         lambda i, ch, mom: ScaleModule(ch, mom, None))
        init_weights(self, torch.Generator().manual_seed(seed))
        self.set_arch(largest(task))

    @property
    def arch(self) -> Architecture:
        return self._arch

    def set_arch(self, arch: Architecture) -> None:
        """Switch the active subnet (no rebuild, no weight change)."""
        if not isinstance(arch, Architecture):
            raise TypeError(f"expected an Architecture, got {type(arch).__name__}")
        check_task(arch, self.task)
        for module, spec in zip(self.scale_modules(), arch.modules):
            module.set_arch(spec)
        self._arch = arch


__all__ = ["ScaleNet", "SuperNet", "branch_channels", "DEFAULT_OUTPUTS", "INPUT_MULTIPLE"]
