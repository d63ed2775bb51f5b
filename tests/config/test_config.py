"""Parameter files: schema validation, defaults, typed sections, phase views, path checks."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from pipeline import config as pc

REPO = Path(__file__).resolve().parents[2]
PARAM_FILES = sorted((REPO / "params").glob("*.yaml"))


def write(tmp_path: Path, doc: object, name: str = "x.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return p


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_shipped_param_files_validate(path: Path) -> None:
    from pipeline.tasks.facts import TASK_NAMES

    cfg = pc.load_params(path)
    assert cfg.tasks and set(cfg.tasks) <= set(TASK_NAMES)


def test_paper_recipes_hold_the_paper_numbers() -> None:
    seg = pc.load_params(REPO / "params" / "cityscapes_w32.yaml")
    assert seg.seg.width == 32 and seg.seg.crop_size == (512, 1024)
    assert seg.supernet.seg.optimizer.name == "sgd" and seg.supernet.seg.epochs == 484
    assert seg.supernet.seg.kd_ratio == 0.5 and seg.supernet.seg.groups == "paper"
    r = seg.search.random
    assert len(r.fusion_probs) * len(r.depth_candidates) * r.samples_per_cell == 1005
    pose = pc.load_params(REPO / "params" / "coco_w32_384x288.yaml")
    assert pose.pose.input_size == (384, 288)
    assert pose.supernet.pose.schedule.milestones == (170, 200)
    assert pose.finetune.pose.epochs == 20


def test_defaults_filled(tmp_path: Path) -> None:
    cfg = pc.load_params(write(tmp_path, {"tasks": ["pose"]}))
    assert cfg.seg.ignore_label == 255 and cfg.run.seed == 0
    # A use-site default (pose trains with Adam) under the definition's own defaults.
    assert cfg.teacher.pose.optimizer.name == "adam"
    assert cfg.teacher.seg.optimizer.name == "sgd"
    assert cfg.teacher.pose.checkpoint_every == 50
    # A partial user value keeps the other defaults of that object.
    cfg = pc.load_params(write(tmp_path, {"teacher": {"pose": {"optimizer": {"lr": 0.5}}}}))
    assert cfg.teacher.pose.optimizer.lr == 0.5 and cfg.teacher.pose.optimizer.name == "adam"
    assert isinstance(cfg.seg.crop_size, tuple) and isinstance(cfg.seg.search_fraction, float)


def test_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    p = write(tmp_path, {"search": {"random": {"samples_per_celll": 3}}})
    with pytest.raises(pc.ConfigError) as e:
        pc.load_params(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: search.random.samples_per_celll: unknown key")
    assert "samples_per_cell" in msg  # the allowed keys are listed


def test_wrong_type_names_key(tmp_path: Path) -> None:
    p = write(tmp_path, {"seg": {"width": "eight"}})
    with pytest.raises(pc.ConfigError, match=r"x\.yaml: seg\.width: expected integer, got string 'eight'"):
        pc.load_params(p)
    with pytest.raises(pc.ConfigError, match=r"run\.device: must be one of"):
        pc.load_params(write(tmp_path, {"run": {"device": "tpu"}}))
    with pytest.raises(pc.ConfigError, match=r"seg\.crop_size\[0\]"):
        pc.load_params(write(tmp_path, {"seg": {"crop_size": [63, 128]}}))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(pc.ConfigError, match="not valid YAML"):
        pc.load_params(write(tmp_path, "run: [unclosed\n"))
    with pytest.raises(pc.ConfigError, match="parameter file not found"):
        pc.load_params(tmp_path / "nope.yaml")
    with pytest.raises(pc.ConfigError, match="expected a mapping"):
        pc.load_params(write(tmp_path, "- a\n- b\n"))


def test_missing_dataset_path(tmp_path: Path) -> None:
    p = write(tmp_path, {"data": {"builtin": False}, "tasks": ["seg"],
                         "seg": {"root": "datasets/cityscapes"}})
    resolved = pc.load_resolved(p)
    with pytest.raises(pc.ConfigError, match=r"seg\.root: directory not found: datasets/cityscapes"):
        pc.check_paths(resolved, str(p), base=tmp_path)
    (tmp_path / "datasets" / "cityscapes").mkdir(parents=True)
    pc.check_paths(resolved, str(p), base=tmp_path)  # exists now; pose is not run: not checked
    # Built-in data is exempt (the builtin_data rule creates it) ...
    pc.check_paths(pc.load_resolved(REPO / "params" / "default.yaml"), "d", base=tmp_path)
    # ... but an architecture file of fine-tuning is not.
    p2 = write(tmp_path, {"finetune": {"seg": {"arch_files": ["missing.json"]}}}, "y.yaml")
    with pytest.raises(pc.ConfigError, match=r"finetune\.seg\.arch_files\[0\]: file not found"):
        pc.check_paths(pc.load_resolved(p2), str(p2), base=tmp_path)


def _schema_objects(node, root, prefix=""):
    node = pc._resolve(node, root)
    if "properties" in node:
        yield prefix, node
        for k, sub in node["properties"].items():
            yield from _schema_objects(sub, root, f"{prefix}.{k}" if prefix else k)


def test_every_schema_key_has_type_default_description() -> None:
    schema = pc.load_schema()
    for where, node in _schema_objects(schema, schema):
        assert node.get("additionalProperties") is False, where
        for key, sub in node["properties"].items():
            sub = pc._resolve(sub, schema)
            assert sub.get("description"), f"{where}.{key}: no description"
            assert "properties" in sub or "default" in sub, f"{where}.{key}: no default"


def _dataclass_for(path: str):
    tp = pc.Config
    for part in [p for p in path.split(".") if p]:
        tp = typing.get_type_hints(tp)[part]
    return tp


def test_dataclasses_match_schema() -> None:
    schema = pc.load_schema()
    for where, node in _schema_objects(schema, schema):
        cls = _dataclass_for(where)
        assert dataclasses.is_dataclass(cls), where
        assert {f.name for f in dataclasses.fields(cls)} == set(node["properties"]), where


def test_phases_reference_schema_keys_and_views_are_strict() -> None:
    resolved = pc.load_resolved(REPO / "params" / "default.yaml")
    for phase in pc.PHASES:
        for task in pc.TASK_NAMES:
            pc.phase_params(resolved, phase, task)
    view = pc.restrict(resolved, "prepare", "seg")
    assert view.seg.search_fraction == 0.2
    with pytest.raises(pc.ConfigError, match=r"seg\.width: not a parameter of phase 'prepare'"):
        _ = view.seg.width
    with pytest.raises(pc.ConfigError, match="search: not a parameter"):
        _ = view.search
    assert "excluded" in repr(view.seg)


def test_phase_params_isolate_changes(tmp_path: Path) -> None:
    base = pc.load_resolved(REPO / "params" / "default.yaml")
    doc = yaml.safe_load((REPO / "params" / "default.yaml").read_text())
    doc["search"]["random"]["samples_per_cell"] = 5
    changed = pc.load_resolved(write(tmp_path, doc))
    for phase in pc.PHASES:
        same = pc.phase_params(base, phase, "seg") == pc.phase_params(changed, phase, "seg")
        assert same == (phase != "search_random"), phase
    assert pc.params_hash(pc.phase_params(base, "prepare", "seg")) == \
        pc.params_hash(pc.phase_params(changed, "prepare", "seg"))


def test_deprecated_flops_bounds_are_the_cost_bounds(capsys) -> None:
    """search.evolution.flops_min/flops_max (their old names) resolve to cost_min/cost_max: the
    same resolved parameters, one warning per name, and both names at once is an error."""
    from pipeline import config as C

    C._warned.clear()
    new = C.resolve_dict({"search": {"evolution": {"cost_min": 0.1, "cost_max": 0.2}}}, "new.yaml")
    old_doc = {"search": {"evolution": {"flops_min": 0.1, "flops_max": 0.2}}}
    old = C.resolve_dict(old_doc, "old.yaml")
    assert old == new and "flops_min" not in old["search"]["evolution"]
    assert old_doc["search"]["evolution"] == {"flops_min": 0.1, "flops_max": 0.2}  # not mutated
    C.resolve_dict(old_doc, "old.yaml")
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: old.yaml: search.evolution.flops_min is deprecated, use "
                   "search.evolution.cost_min (same meaning, in the unit of search.objective)",
                   "warning: old.yaml: search.evolution.flops_max is deprecated, use "
                   "search.evolution.cost_max (same meaning, in the unit of search.objective)"]
    with pytest.raises(C.ConfigError, match="search.evolution.flops_max and "
                       "search.evolution.cost_max both given"):
        C.resolve_dict({"search": {"evolution": {"flops_max": 1, "cost_max": 1}}}, "x.yaml")
    assert C.from_dict(old).search.evolution.cost_max == 0.2


def test_deprecated_key_in_a_parameter_file_and_its_base(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("search:\n  evolution: {flops_min: 0.1}\n")
    (tmp_path / "p.yaml").write_text("base: b.yaml\nsearch:\n  evolution: {flops_max: 0.3}\n")
    got = pc.load_resolved(tmp_path / "p.yaml")["search"]["evolution"]
    assert (got["cost_min"], got["cost_max"]) == (0.1, 0.3) and "flops_max" not in got
