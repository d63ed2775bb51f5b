"""Task plug-ins: segmentation ("seg") and top-down pose ("pose")."""
from __future__ import annotations

from typing import Any

from pipeline.tasks.base import Task, collate
from pipeline.tasks.pose import PoseTask, PoseTaskConfig
from pipeline.tasks.seg import SegTask, SegTaskConfig
from pipeline.errors import ConfigError

TASKS = ("seg", "pose")


def make_config(task_name: str, **kwargs: Any) -> SegTaskConfig | PoseTaskConfig:
    """Build a task config from keyword values (e.g. a params YAML section); unknown keys raise."""
    cls = {"seg": SegTaskConfig, "pose": PoseTaskConfig}.get(task_name)
    if cls is None:
        raise ConfigError(f"unknown task {task_name!r}; expected one of {', '.join(TASKS)}")
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown {task_name} task option(s): {', '.join(unknown)}")
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**tupled)


def build_task(task_name: str, config: SegTaskConfig | PoseTaskConfig | dict) -> Task:
    """The task plug-in for "seg" or "pose"."""
    if isinstance(config, dict):
        config = make_config(task_name, **config)
    if task_name == "seg":
        if not isinstance(config, SegTaskConfig):
            raise TypeError("the seg task needs a SegTaskConfig")
        return SegTask(config)
    if task_name == "pose":
        if not isinstance(config, PoseTaskConfig):
            raise TypeError("the pose task needs a PoseTaskConfig")
        return PoseTask(config)
    raise ConfigError(f"unknown task {task_name!r}; expected one of {', '.join(TASKS)}")


__all__ = ["TASKS", "Task", "SegTask", "SegTaskConfig", "PoseTask", "PoseTaskConfig",
           "build_task", "make_config", "collate"]
