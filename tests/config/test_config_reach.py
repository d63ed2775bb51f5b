"""Every parameter reaches what uses it: the schema, the typed records and their consumers agree.

1. The schema and the records of pipeline.config have the same keys, section by section (one
   name per key, no renames, no defaults outside the schema).
2. Each key of a section the library takes as it is is read by that library code: the section is
   wrapped in a recorder of attribute reads and handed to its consumer (the evolution, the
   training loop). Keys read elsewhere (the workflow, a stage) are checked in that source.
   Before the sections were passed as they are, ``search.evolution.depth_candidates`` was not in
   the record the evolution got: this test names such a key.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import numpy as np
import pytest

from pipeline import config as pc
from pipeline.config import (EvolutionConfig, SupernetTrainConfig, TrainConfig, load_schema,
                             make_section)

REPO = Path(__file__).resolve().parents[2]


def _node(ref_or_node):
    return pc._resolve(ref_or_node, load_schema())


def _record_type(tp):
    """The record class inside a field type (``X``, ``X | None``, ``tuple[X, ...]``)."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _record_type(arg)
        if found is not None:
            return found
    return None


def _compare(cls, node, where, problems):
    node = _node(node)
    props = node.get("properties", {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(props) - fields):
        problems.append(f"{where}.{key}: in the schema, not in {cls.__name__}")
    for key in sorted(fields - set(props)):
        problems.append(f"{where}.{key}: in {cls.__name__}, not in the schema")
    for key in sorted(set(props) & fields):
        sub = _record_type(hints[key])
        sub_node = _node(props[key])
        if sub is not None and "properties" in sub_node:
            _compare(sub, sub_node, f"{where}.{key}", problems)
        elif sub is not None and isinstance(sub_node.get("oneOf"), list):  # e.g. groups
            items = [o for o in sub_node["oneOf"] if o.get("type") == "array"]
            if items:
                _compare(sub, items[0]["items"], f"{where}.{key}[]", problems)


def test_schema_and_records_have_the_same_keys():
    problems: list[str] = []
    _compare(pc.Config, load_schema(), "params", problems)
    assert not problems, "\n".join(problems)


class Recorder:
    """A section whose attribute reads are recorded (isinstance sees the section's class)."""

    def __init__(self, target, prefix, seen):
        object.__setattr__(self, "_t", target)
        object.__setattr__(self, "_p", prefix)
        object.__setattr__(self, "_seen", seen)

    @property
    def __class__(self):  # noqa: D401 - isinstance(recorder, SectionClass) holds
        return type(object.__getattribute__(self, "_t"))

    def __getattr__(self, name):
        target = object.__getattribute__(self, "_t")
        value = getattr(target, name)
        if name in {f.name for f in dataclasses.fields(target)}:
            path = f"{object.__getattribute__(self, '_p')}{name}"
            object.__getattribute__(self, "_seen").add(path)
            if dataclasses.is_dataclass(value):
                return Recorder(value, f"{path}.", object.__getattribute__(self, "_seen"))
        return value


def _leaf_keys(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        sub = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(sub):
            out += _leaf_keys(sub, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _read_in(key, *files):
    """``key`` (the last part of a dotted path) is read in one of the source files."""
    name = key.split(".")[-1]
    pattern = re.compile(rf"""(\.{name}\b|\[["']{name}["']\]|get\(["']{name}["'])""")
    return any(pattern.search((REPO / f).read_text(encoding="utf-8")) for f in files)


def test_every_evolution_key_reaches_the_evolution():
    from pipeline.cost import profile
    from pipeline.search.evolution import (Evaluated, initial_rng_state, next_generation,
                                           operators)
    from pipeline.space.sample import sample_arch

    rng = np.random.default_rng(0)
    archs = [sample_arch(rng, p, d, "seg") for p, d in [(0.2, (2, 3)), (0.8, (4, 5))] * 5]
    pool = [Evaluated(a, profile(a, "seg", 8, (64, 64)).gflops, float(a.num_fusions()))
            for a in archs]
    seen: set[str] = set()
    for release in (False, True):
        section = make_section(EvolutionConfig, parents=4, population=3, screen_factor=2,
                               release_operators=release, cost_min=0.0, cost_max=100.0)
        spy = Recorder(section, "search.evolution.", seen)
        operators(spy)
        next_generation(pool, initial_rng_state(0), spy, task="seg", generation=1,
                        estimate_cost=lambda a: profile(a, "seg", 8, (64, 64)).gflops)
    by_workflow = {"search.evolution.generations", "search.evolution.shards"}
    missing = set(f"search.evolution.{k}" for k in _leaf_keys(EvolutionConfig)) - seen - by_workflow
    assert not missing, f"keys of search.evolution the evolution never reads: {sorted(missing)}"
    for key in by_workflow:
        assert _read_in(key, "workflow/rules/common.smk"), key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from pipeline.data.synth import generate_all

    root = tmp_path_factory.mktemp("data") / "builtin"
    generate_all(root, 0, ("pose",), pose_train=6, pose_val=2, pose_size_hw=(96, 128))
    return root


def test_every_training_key_reaches_the_loop(data, tmp_path):
    from pipeline.nets.supernet import SuperNet
    from pipeline.tasks import PoseTaskConfig, build_task
    from pipeline.train.loop import train
    from pipeline.train.runtime import TrainRun

    task = build_task("pose", PoseTaskConfig.for_synthetic(data / "coco", input_hw=(64, 64)))
    seen: set[str] = set()
    section = make_section(SupernetTrainConfig, iterations=1, batch_size=2, kd_ratio=0.5,
                           groups=[{"name": "a", "fusion_prob": 0.0, "depths": [2]}],
                           optimizer={"name": "sgd", "lr": 0.01},
                           schedule={"name": "step", "milestones": [1]})
    teacher = SuperNet("pose", 8, task.num_outputs, seed=1)
    teacher.set_arch(teacher.arch)
    train(task, SuperNet("pose", 8, task.num_outputs, seed=0),
          Recorder(section, "supernet.pose.", seen), tmp_path, teacher=teacher,
          run=TrainRun(device="cpu", progress=False))
    keys = {f"supernet.pose.{k}" for k in _leaf_keys(SupernetTrainConfig)}
    # Read by the stages and the workflow, not the loop: each by every file listed.
    elsewhere = {
        # whether a teacher is needed
        "supernet.pose.init_from_teacher": ("pipeline/stages/supernet.py",
                                            "workflow/rules/common.smk"),
        # starting weights: loaded by the stages, an input of the rules, checked at parse time
        "supernet.pose.init": ("pipeline/stages/training.py", "pipeline/stages/supernet.py",
                               "workflow/rules/common.smk"),
        "supernet.pose.init_strict": ("pipeline/stages/training.py", "pipeline/stages/build.py"),
        # a given supernet: the workflow searches it instead of training one
        "supernet.pose.checkpoint": ("workflow/rules/common.smk",),
    }
    missing = keys - seen - set(elsewhere)
    assert not missing, f"training keys the loop never reads: {sorted(missing)}"
    for key, files in elsewhere.items():
        for f in files:
            assert _read_in(key, f), f"{key} is not read in {f}"
    # The fine-tuning section's own keys choose the models (pipeline.finetune.select).
    for key in set(_leaf_keys(pc.FinetuneTrainConfig)) - set(_leaf_keys(TrainConfig)):
        assert _read_in(key, "pipeline/finetune/select.py", "pipeline/stages/finetune.py"), key


def test_task_sections_reach_the_task_plug_ins():
    from pipeline.tasks import REGISTRY as TASKS

    cfg = pc.load_params(REPO / "params" / "default.yaml")
    for name, cls in TASKS.items():
        seen: set[str] = set()
        section = Recorder(cfg.task(name), f"{name}.", seen)
        cls.from_params(section, seed=0)
        cls.cost_input_hw(section)
        for key in _leaf_keys(type(cfg.task(name))):
            full = f"{name}.{key}"
            assert full in seen or _read_in(
                key, f"pipeline/tasks/{name}.py", "pipeline/stages/build.py",
                "pipeline/stages/prepare.py", "workflow/rules/common.smk", "pipeline/config.py"), full
