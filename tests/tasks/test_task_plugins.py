"""The task plug-ins are complete: nothing outside them branches on a task's name."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline import config as pc
from pipeline.space.arch import TASK_NAMES

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
#: Where the tasks may be told apart by name: the plug-ins and the network's head module.
ALLOWED = (PACKAGE / "tasks", PACKAGE / "nets" / "heads.py")
BRANCH = re.compile(r"""[!=]=\s*["'](seg|pose)["']|["'](seg|pose)["']\s*[!=]=""")


def test_no_task_name_branches_outside_the_plug_ins():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path == a or a in path.parents for a in ALLOWED):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BRANCH.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert not found, "task-name branches outside pipeline/tasks:\n" + "\n".join(found)


def test_one_registry_with_everything_a_task_owns():
    from pipeline.tasks import REGISTRY as TASKS

    assert tuple(TASKS) == TASK_NAMES
    cfg = pc.load_params(Path(__file__).resolve().parents[2] / "params" / "default.yaml")
    for name, cls in TASKS.items():
        assert cls.name == name and isinstance(cls.metric, str) and callable(cls.make_splits)
        task = cls.from_params(cfg.task(name), seed=3)
        assert task.config.seed == 3 and tuple(task.input_hw) == (
            tuple(cfg.seg.crop_size) if name == "seg" else tuple(cfg.pose.input_size))
    assert TASKS["seg"].cost_input_hw(cfg.seg) == tuple(cfg.seg.crop_size)  # flops_size null
    assert TASKS["pose"].cost_input_hw(cfg.pose) == tuple(cfg.pose.input_size)
    assert (TASKS["seg"].metric, TASKS["pose"].metric) == ("mIoU", "AP")


def test_a_task_refuses_settings_it_cannot_honour():
    from pipeline.tasks import REGISTRY as TASKS

    cfg = pc.load_params(Path(__file__).resolve().parents[2] / "params" / "default.yaml")
    with pytest.raises(pc.ConfigError, match="seg.num_classes"):
        TASKS["seg"].from_params(dataclasses.replace(cfg.seg, num_classes=21), seed=0)
    with pytest.raises(pc.ConfigError, match="pose.num_joints"):
        TASKS["pose"].from_params(dataclasses.replace(cfg.pose, num_joints=14), seed=0)


def test_registry_refuses_a_taken_name() -> None:
    from pipeline.tasks import REGISTRY, SegTask, register_task

    with pytest.raises(ValueError, match="task 'seg' is registered already"):
        register_task(type("OtherSeg", (), {"name": "seg"}))
    assert REGISTRY["seg"] is SegTask
