"""Task plug-ins: segmentation ("seg"), top-down pose ("pose") and bottom-up pose ("bottomup"),
registered by name.

A task owns what differs between the tasks: its datasets and split maker, loss, metric (name and
evaluation), trivial baseline, the input size its cost is counted at, and its construction from
its parameter section (``REGISTRY[name].from_params(section, seed=...)``). The network's head lives
with the network (pipeline.nets.heads). Code outside this package asks the plug-in instead of
testing the task's name; the low layers (pipeline.nets, pipeline.space) read the task's plain
facts from :mod:`pipeline.tasks.facts`.

The plug-ins (pipeline.tasks.registry) load on first use, so that importing
``pipeline.tasks.facts`` from the low layers pulls in neither torch nor the data loaders.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # also what pipeline.codedeps reads: the registry is code of every user
    from pipeline.tasks.registry import (REGISTRY, BottomUpTask, BottomUpTaskConfig, PoseTask, PoseTaskConfig, SegTask,  # noqa: F401
                                         SegTaskConfig, Task, build_task, collate, from_params,
                                         make_config, register_task, task_class)

_REGISTRY_NAMES = frozenset({
    "REGISTRY", "register_task", "Task", "SegTask", "SegTaskConfig", "PoseTask", "PoseTaskConfig",
    "BottomUpTask", "BottomUpTaskConfig",
    "build_task", "from_params", "make_config", "task_class", "collate"})


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        return getattr(importlib.import_module("pipeline.tasks.registry"), name)
    raise AttributeError(f"module 'pipeline.tasks' has no attribute {name!r}")


__all__ = sorted(_REGISTRY_NAMES)
