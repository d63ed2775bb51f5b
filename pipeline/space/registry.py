"""Named architectures and the one function that turns a name or a file into an architecture."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .arch import Architecture, ArchitectureError, check_task
from .sample import check_task_name, hrnet, largest, smallest

_BUILDERS: dict[str, Callable[[str], Architecture]] = {
    "hrnet": hrnet, "largest": largest, "smallest": smallest}
#: Registered names, each built for a task by a function of the task.
NAMES: tuple[str, ...] = tuple(_BUILDERS)


def get(name: str, task: str) -> Architecture:
    """The registered architecture ``name`` for ``task``."""
    if name not in _BUILDERS:
        raise ArchitectureError(f"unknown architecture name {name!r} (registered: {', '.join(NAMES)})")
    return _BUILDERS[name](task)


def resolve(name_or_path: str, task: str) -> Architecture:
    """A registered name, a ``.json`` architecture document or an official ``.npy`` file.

    The result is checked against ``task`` (the pose rule); errors name the file or the name.
    """
    check_task_name(task)
    key = str(name_or_path)
    if key in _BUILDERS:
        return get(key, task)
    path = Path(key)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npy"):
        if path.exists():
            raise ArchitectureError(f"{path}: unsupported architecture file type (expected .json or .npy)")
        raise ArchitectureError(
            f"unknown architecture {key!r}: not a registered name ({', '.join(NAMES)}) "
            f"nor a .json/.npy file")
    if suffix == ".json":
        arch = Architecture.load(path)
    else:
        from .official import load_official  # numpy pickle parsing only when needed
        arch = load_official(path)
    try:
        check_task(arch, task)
    except ArchitectureError as e:
        raise ArchitectureError(f"{path}: {e}") from None
    return arch
