"""The registry of task plug-ins by name (see pipeline.tasks)."""
from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.tasks.base import Task, collate
from pipeline.tasks.bottomup import BottomUpTask, BottomUpTaskConfig
from pipeline.tasks.pose import PoseTask, PoseTaskConfig
from pipeline.tasks.seg import SegTask, SegTaskConfig

#: The plug-ins by task name (the names are pipeline.tasks.facts.TASK_NAMES, in the same order).
REGISTRY: dict[str, Any] = {}


def register_task(cls: Any) -> Any:
    """Add a plug-in under its ``name``; a name taken already is refused (a second plug-in
    would silently replace the first)."""
    name = cls.name
    if name in REGISTRY:
        raise ValueError(f"task {name!r} is registered already (by {REGISTRY[name].__name__})")
    REGISTRY[name] = cls
    return cls


register_task(SegTask)
register_task(PoseTask)
register_task(BottomUpTask)


def task_class(task_name: str) -> Any:
    try:
        return REGISTRY[task_name]
    except KeyError:
        raise ConfigError(f"unknown task {task_name!r}; expected one of {', '.join(REGISTRY)}") from None


def make_config(task_name: str, **kwargs: Any) -> SegTaskConfig | PoseTaskConfig:
    """Build a task config from keyword values (e.g. a params YAML section); unknown keys raise."""
    cls = task_class(task_name).config_cls
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown {task_name} task option(s): {', '.join(unknown)}")
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**tupled)


def build_task(task_name: str, config: SegTaskConfig | PoseTaskConfig | dict) -> Task:
    """The task plug-in ``task_name`` with its settings."""
    cls = task_class(task_name)
    if isinstance(config, dict):
        config = make_config(task_name, **config)
    if not isinstance(config, cls.config_cls):
        raise TypeError(f"the {task_name} task needs a {cls.config_cls.__name__}")
    return cls(config)


def from_params(task_name: str, section: Any, *, seed: int) -> Task:
    """The task plug-in built from its parameter section (pipeline.config.SegConfig/PoseConfig)."""
    return task_class(task_name).from_params(section, seed=seed)


__all__ = ["REGISTRY", "register_task", "Task", "SegTask", "SegTaskConfig", "PoseTask", "PoseTaskConfig",
           "BottomUpTask", "BottomUpTaskConfig",
           "build_task", "from_params", "make_config", "task_class", "collate"]
