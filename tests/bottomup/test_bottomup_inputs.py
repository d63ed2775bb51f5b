"""Bottom-up pose as a user meets it: `scalenas predict` draws grouped skeletons and writes COCO
results for a bottom-up model (eager and its TorchScript), and the inputs the task refuses stop
before any job with one line: a recipe with det_file, a mask of another task, boxes to predict."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, save_tiny_models
from pipeline import config as pc
from pipeline.errors import ConfigError
from pipeline.stages.build import check_task_params

REPO = Path(__file__).resolve().parents[2]
SCALENAS = str(Path(sys.executable).parent / "scalenas")
SEG_MASK = SHARED / "masks" / "seg_w32_S1.npy"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_models(tmp_path_factory.mktemp("bu_models"), {"bottomup": [64, 64]}) / "bottomup"


def _image(path: Path, hw=(96, 128)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_draws_people_and_writes_results(model, tmp_path):
    img = _image(tmp_path / "street.png")
    out = tmp_path / "out"
    r = subprocess.run([SCALENAS, "predict", str(img), "--model", str(model), "-o", str(out),
                        "--runtime", "eager", "--quiet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    pred = Image.open(out / "street_pred.png")
    assert pred.size == (128, 96)
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results, list)
    for res in results:
        assert res["category_id"] == 1 and len(res["keypoints"]) == 17 * 3


def test_predict_refuses_boxes_for_a_bottom_up_model(model, tmp_path):
    img = _image(tmp_path / "a.png")
    r = subprocess.run([SCALENAS, "predict", str(img), "--model", str(model), "-o",
                        str(tmp_path / "o"), "--box", "0,0,10,10"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2
    assert "a bottom-up model finds every person itself" in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def _tiny() -> dict:
    return pc.load_resolved(REPO / "params" / "bottomup_tiny.yaml")


def test_a_bottom_up_recipe_with_det_file_is_refused():
    resolved = _tiny()
    check_task_params(resolved, "p.yaml")  # the recipe as committed passes
    resolved["bottomup"]["det_file"] = "dets.json"
    with pytest.raises(ConfigError) as e:
        check_task_params(resolved, "p.yaml")
    assert str(e.value).startswith("p.yaml: bottomup.det_file: bottom-up pose finds every person")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [[1.5, 0.75], [0.0, 1.0]])
def test_a_scale_range_that_cannot_be_drawn_from_is_refused(bad):
    resolved = _tiny()
    resolved["bottomup"]["scale_range"] = bad
    with pytest.raises(ConfigError) as e:
        check_task_params(resolved, "p.yaml")
    assert str(e.value) == f"p.yaml: bottomup.scale_range [{bad[0]}, {bad[1]}]: needs 0 < min <= max"


def test_a_mask_of_another_task_is_refused():
    resolved = _tiny()
    resolved["finetune"]["bottomup"]["arch_files"] = [str(SEG_MASK)]
    with pytest.raises(ConfigError) as e:
        check_task_params(resolved, "p.yaml")
    msg = str(e.value)
    assert msg.startswith("p.yaml: finetune.bottomup.arch_files[0]: ")
    assert "bottomup architecture: module 7 (stage4.2)" in msg and "\n" not in msg


def test_snakemake_stops_before_any_job(tmp_path):
    """Through Snakemake (a dry run plans nothing): one line, non-zero exit."""
    p = tmp_path / "p.yaml"
    p.write_text(f"base: {REPO / 'params' / 'bottomup_tiny.yaml'}\nbottomup:\n"
                 "  det_file: dets.json\n")
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1",
                        "--config", f"params={p}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert "bottomup.det_file: bottom-up pose finds every person in one pass" in r.stdout + r.stderr
