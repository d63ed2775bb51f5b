"""``scalenas predict``: a saved model on one image writes a PNG; bad inputs fail cleanly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.nets.export import export_subnet, save_model
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import smallest


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    out = {}
    for task, hw in (("seg", [64, 64]), ("pose", [128, 96])):
        sn = SuperNet(task, width=8, seed=0)
        sn.set_arch(smallest(task))
        save_model(root / task, export_subnet(sn).eval(), {"input_hw": hw})
        out[task] = root / task
    return out


def _image(path, w=70, h=50):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_seg_overlay(models, tmp_path):
    img = _image(tmp_path / "street.png")
    out = tmp_path / "o" / "seg.png"
    assert main(["predict", "--model", str(models["seg"]), str(img), "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (70, 50) and im.mode == "RGB"


def test_pose_skeleton_default_box_and_given_boxes(models, tmp_path):
    img = _image(tmp_path / "person.jpg", 96, 128)
    assert main(["predict", "--model", str(models["pose"]), str(img)]) == 0
    assert (tmp_path / "person_pred.png").is_file()
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"bbox": [10, 10, 40, 80], "score": 0.9}, [50, 20, 30, 60]]))
    out = tmp_path / "pose2.png"
    assert main(["predict", "--model", str(models["pose"]), str(img), "--boxes", str(boxes),
                 "-o", str(out)]) == 0
    with Image.open(out) as im:
        drawn = np.asarray(im)
    assert drawn.shape == (128, 96, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(img)))


def test_non_image_file_is_one_clear_error(models, tmp_path, capsys):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image\n")
    out = tmp_path / "never.png"
    assert main(["predict", "--model", str(models["seg"]), str(txt), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and "not a readable image" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("extra, msg", [
    (["--box", "1,2,3"], "x,y,w,h"),
    (["--box", "0,0,-1,5"], "positive"),
])
def test_bad_boxes(models, tmp_path, capsys, extra, msg):
    img = _image(tmp_path / "p.png", 96, 128)
    assert main(["predict", "--model", str(models["pose"]), str(img), *extra]) == 2
    assert msg in capsys.readouterr().err


def test_missing_model_dir(tmp_path, capsys):
    img = _image(tmp_path / "p.png")
    assert main(["predict", "--model", str(tmp_path / "nomodel"), str(img)]) == 2
    assert "model record not found" in capsys.readouterr().err
