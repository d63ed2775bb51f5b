"""Parameter files that name a `base:` file, the paper recipes built on it, and the smoke recipes."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config as pconfig

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params"


def test_base_is_deep_merged_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text(
        "run: {name: a, seed: 3}\nseg: {width: 16, crop_size: [64, 128]}\n"
        "search: {random: {fusion_probs: [0.2, 0.8], shards: 3}}\n")
    (tmp_path / "recipes" / "b.yaml").write_text(
        "base: a.yaml\nrun: {name: b}\nsearch: {random: {fusion_probs: [0.5]}}\n")
    (tmp_path / "c.yaml").write_text("base: recipes/b.yaml\nseg: {width: 8}\n")
    d = pconfig.load_resolved(tmp_path / "c.yaml")
    assert d["run"]["name"] == "b" and d["run"]["seed"] == 3          # inherited two levels up
    assert d["seg"]["width"] == 8 and d["seg"]["crop_size"] == [64, 128]
    assert d["search"]["random"]["fusion_probs"] == [0.5]             # lists replace
    assert d["search"]["random"]["shards"] == 3
    assert "base" not in d


@pytest.mark.parametrize("files, expected", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "b.yaml: base: a.yaml forms a cycle ("),
    ({"a.yaml": "base: a.yaml\n"}, "a.yaml: base: a.yaml forms a cycle"),
    ({"a.yaml": "base: nope.yaml\n"}, "a.yaml: base: parameter file not found:"),
    ({"a.yaml": "base: [x]\n"}, "a.yaml: base: expected the name of a parameter file"),
], ids=["cycle", "self", "missing", "not-a-name"])
def test_bad_base_is_one_line_naming_the_file(tmp_path: Path, files, expected) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(pconfig.ConfigError) as e:
        pconfig.load_resolved(tmp_path / "a.yaml")
    msg = str(e.value)
    assert "\n" not in msg and expected in msg and str(tmp_path) in msg, msg


def test_paper_recipes_share_their_base() -> None:
    w32 = pconfig.load_resolved(PARAMS / "cityscapes_w32.yaml")
    w48 = pconfig.load_resolved(PARAMS / "cityscapes_w48.yaml")
    assert w48["seg"]["width"] == 48 and w48["finetune"]["seg"]["budgets"] == [673.6]
    w48["seg"]["width"], w48["finetune"]["seg"]["budgets"] = 32, w32["finetune"]["seg"]["budgets"]
    w48["run"]["name"] = "cityscapes_w32"
    assert w48 == w32
    p4 = pconfig.load_resolved(PARAMS / "coco_w48_384x288.yaml")
    assert (p4["pose"]["width"], p4["pose"]["input_size"], p4["finetune"]["pose"]["budgets"]) == (
        48, [384, 288], [32.6])
    assert p4["finetune"]["pose"]["epochs"] == 20 and p4["teacher"]["pose"]["epochs"] == 210


@pytest.mark.parametrize("smoke, paper", [("smoke_cityscapes_w32", "cityscapes_w32"),
                                          ("smoke_coco_w32_256x192", "coco_w32_256x192")])
def test_smoke_recipes_keep_the_paper_shapes(smoke: str, paper: str) -> None:
    s = pconfig.load_resolved(PARAMS / f"{smoke}.yaml")
    p = pconfig.load_resolved(PARAMS / f"{paper}.yaml")
    task = p["tasks"][0]
    assert s["tasks"] == p["tasks"] and s[task]["width"] == p[task]["width"] == 32
    for key in ("crop_size", "flops_size", "input_size", "num_classes", "num_joints"):
        if key in p[task]:
            assert s[task][key] == p[task][key], key
    if task == "seg":
        assert s["data"]["seg_size"] == [1024, 2048]     # evaluation and calibration at full size
    else:
        assert s["pose"]["det_file"], "val uses detector boxes"
    for phase in ("teacher", "supernet", "finetune"):
        assert s[phase][task]["optimizer"] == p[phase][task]["optimizer"]
        assert s[phase][task]["schedule"] == p[phase][task]["schedule"]
        assert s[phase][task]["iterations"] <= 2
    assert s["supernet"][task]["groups"] == "paper"
    assert s["supernet"][task]["kd_ratio"] == p["supernet"][task]["kd_ratio"]
    assert s["search"]["evolution"]["generations"] == 1
    assert s["data"]["builtin"] and s["run"]["device"] == "cpu"
