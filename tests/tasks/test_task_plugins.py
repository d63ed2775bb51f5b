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
_NAME = "|".join(TASK_NAMES)
#: A comparison with a task's name: ``task == "seg"``, ``"pose" != name``.
BRANCH = re.compile(rf"""[!=]=\s*["']({_NAME})["']|["']({_NAME})["']\s*[!=]=""")
#: A table keyed by task name: ``{"seg": ..., ...}`` or ``dict(seg=...)``.
TABLE = re.compile(rf"""["']({_NAME})["']\s*:|\bdict\(\s*({_NAME})\s*=""")


def _offending_lines(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path == a or a in path.parents for a in ALLOWED):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    return found


def test_no_task_name_branches_outside_the_plug_ins():
    found = _offending_lines(BRANCH)
    assert not found, "task-name branches outside pipeline/tasks:\n" + "\n".join(found)


def test_no_tables_keyed_by_task_name_outside_the_plug_ins():
    found = _offending_lines(TABLE)
    assert not found, "tables keyed by task name outside pipeline/tasks:\n" + "\n".join(found)


@pytest.mark.parametrize("line", ['BN = {"seg": 0.01, "pose": 0.1}', "X = dict(pose=(1, 2))",
                                  "if task == 'pose':", 'ok = "seg" != t'])
def test_the_checks_catch_what_they_look_for(line: str) -> None:
    assert TABLE.search(line) or BRANCH.search(line)


def test_facts_are_declared_once_and_read_by_every_plug_in() -> None:
    from pipeline.tasks import REGISTRY
    from pipeline.tasks.facts import FACTS, TaskFacts, declare

    assert tuple(FACTS) == TASK_NAMES
    for name, cls in REGISTRY.items():
        assert cls.facts is FACTS[name]
    with pytest.raises(ValueError, match="task 'pose' is declared already"):
        declare(TaskFacts(**{**FACTS["pose"].__dict__}))
    # The numbers the official models use (scalenas.md sections 1, 3, 4), unchanged by the move.
    assert (FACTS["seg"].bn_momentum, FACTS["pose"].bn_momentum) == (0.01, 0.1)
    assert (FACTS["seg"].smallest_fusion_prob, FACTS["pose"].smallest_fusion_prob) == (0.1, 0.0)
    assert (FACTS["seg"].single_scale_output, FACTS["pose"].single_scale_output) == (False, True)
    assert FACTS["seg"].profile_input_hw == (1024, 2048)
    assert FACTS["pose"].profile_input_hw == (256, 192)
    assert (FACTS["seg"].deploy_input_hw, FACTS["pose"].deploy_input_hw) == ((64, 128), (256, 192))


def test_the_low_layers_load_facts_without_the_plug_ins() -> None:
    """pipeline.space and pipeline.nets read facts, never the plug-ins (no upward import)."""
    import subprocess
    import sys

    code = ("import sys, pipeline.space.sample, pipeline.cli.arch; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.tasks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pipeline.tasks', 'pipeline.tasks.facts']"


def test_one_registry_with_everything_a_task_owns():
    from pipeline.tasks import REGISTRY as TASKS

    assert tuple(TASKS) == TASK_NAMES
    cfg = pc.load_params(Path(__file__).resolve().parents[2] / "params" / "default.yaml")
    for name, cls in TASKS.items():
        assert cls.name == name and isinstance(cls.metric, str) and callable(cls.make_splits)
        task = cls.from_params(cfg.task(name), seed=3)
        assert task.config.seed == 3
    assert tuple(TASKS["seg"].from_params(cfg.seg, seed=0).input_hw) == tuple(cfg.seg.crop_size)
    assert tuple(TASKS["pose"].from_params(cfg.pose, seed=0).input_hw) == tuple(cfg.pose.input_size)
    assert tuple(TASKS["bottomup"].from_params(cfg.bottomup, seed=0).input_hw) == (
        cfg.bottomup.input_size,) * 2
    assert TASKS["seg"].cost_input_hw(cfg.seg) == tuple(cfg.seg.crop_size)  # flops_size null
    assert TASKS["pose"].cost_input_hw(cfg.pose) == tuple(cfg.pose.input_size)
    assert TASKS["bottomup"].cost_input_hw(cfg.bottomup) == (cfg.bottomup.input_size,) * 2
    assert [TASKS[t].metric for t in ("seg", "pose", "bottomup")] == ["mIoU", "AP", "AP"]


def test_a_task_refuses_settings_it_cannot_honour():
    from pipeline.tasks import REGISTRY as TASKS

    cfg = pc.load_params(Path(__file__).resolve().parents[2] / "params" / "default.yaml")
    with pytest.raises(pc.ConfigError, match="seg.num_classes"):
        TASKS["seg"].from_params(dataclasses.replace(cfg.seg, num_classes=21), seed=0)
    with pytest.raises(pc.ConfigError, match="pose.num_joints"):
        TASKS["pose"].from_params(dataclasses.replace(cfg.pose, num_joints=14), seed=0)
    with pytest.raises(pc.ConfigError, match="bottomup.num_joints"):
        TASKS["bottomup"].from_params(dataclasses.replace(cfg.bottomup, num_joints=14), seed=0)
    with pytest.raises(pc.ConfigError, match="bottomup.det_file"):
        TASKS["bottomup"].from_params(dataclasses.replace(cfg.bottomup, det_file="d.json"), seed=0)


def test_registry_refuses_a_taken_name() -> None:
    from pipeline.tasks import REGISTRY, SegTask, register_task

    with pytest.raises(ValueError, match="task 'seg' is registered already"):
        register_task(type("OtherSeg", (), {"name": "seg"}))
    assert REGISTRY["seg"] is SegTask
