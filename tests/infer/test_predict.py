"""``scalenas predict``: a saved model on one image writes a PNG; bad inputs fail cleanly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.nets.export import export_subnet, save_model
from pipeline.nets.supernet import SuperNet
from pipeline.infer.cli import read_image
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
    txt = tmp_path / "notes.png"  # (a .txt would be read as a list of image paths)
    txt.write_text("not an image\n")
    out = tmp_path / "never.png"
    assert main(["predict", "--model", str(models["seg"]), str(txt), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.png" in err[0] and "not a readable image" in err[0]
    assert not out.exists()
    with pytest.raises(InputError, match="not a readable image"):
        read_image(txt)


@pytest.mark.parametrize("extra, msg", [
    (["--box", "1,2,3"], "x,y,w,h"),
    (["--batch-size", "0"], "at least 1"),
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


# -- batches: folders, list files, runtimes ---------------------------------------------------------
def test_seg_folder_batches_any_size_and_skips_unreadable(models, tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    _image(src / "a.png", 70, 50)
    _image(src / "b.jpg", 64, 64)
    _image(src / "c.png", 70, 50)  # same padded size as a.png: one batch
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    (src / "notes.txt").write_text("ignored: not an image suffix\n")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(models["seg"]), str(src), "-o", str(out),
                 "--batch-size", "3", "--runtime", "eager"]) == 1
    cap = capsys.readouterr()
    assert "3 image(s) predicted" in cap.out
    assert "skipped 1 unreadable" in cap.err and "broken.png" in cap.err
    assert "img/s" in cap.err or "s/img" in cap.err  # tqdm's rate and ETA
    for stem, size in (("a", (70, 50)), ("b", (64, 64)), ("c", (70, 50))):
        with Image.open(out / f"{stem}_mask.png") as m:
            assert m.mode == "P" and m.size == size
            assert m.getpalette()[:3] == [128, 64, 128]  # Cityscapes road
        assert (out / f"{stem}_pred.png").is_file()
    assert not (out / "broken_pred.png").exists()


def test_pose_list_file_coco_results_and_detector_boxes(models, tmp_path):
    _image(tmp_path / "000000000007.jpg", 96, 128)
    _image(tmp_path / "000000000009.png", 100, 60)
    lst = tmp_path / "list.txt"
    lst.write_text("000000000007.jpg\n# a comment\n000000000009.png\n")
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([
        {"image_id": 7, "category_id": 1, "bbox": [10, 10, 40, 80], "score": 0.9},
        {"image_id": 7, "category_id": 1, "bbox": [50, 20, 30, 60], "score": 0.8},
        {"image_id": 9, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.8},
    ]))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(models["pose"]), str(lst), "--boxes", str(dets),
                 "-o", str(out), "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["image_id"] for r in res] == [7, 7]  # image 9 has no person detection
    assert all(len(r["keypoints"]) == 17 * 3 and r["category_id"] == 1 for r in res)
    assert (out / "000000000009_pred.png").is_file()
    # Without boxes: the whole image, one person each.
    assert main(["predict", "--model", str(models["pose"]), str(lst), "-o", str(out), "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["image_id"] for r in res] == [7, 9] and res[1]["bbox"] == [0.0, 0.0, 100.0, 60.0]


def test_optimized_runtime_gives_the_eager_prediction(models, tmp_path):
    import shutil

    d = tmp_path / "seg"
    shutil.copytree(models["seg"], d)
    assert main(["export", str(d), "--channels-last", "off"]) == 0
    img = _image(tmp_path / "x.png", 70, 50)
    for rt in ("eager", "auto"):
        assert main(["predict", "--model", str(d), str(img), "--runtime", rt,
                     "-o", str(tmp_path / f"{rt}.png"), "-q"]) == 0
    masks = [np.asarray(Image.open(tmp_path / f"{rt}_mask.png")) for rt in ("eager", "auto")]
    assert np.array_equal(*masks)
    (d / "deploy" / "optimized.ts").write_bytes(b"x")
    assert main(["predict", "--model", str(d), str(img), "--runtime", "torchscript"]) == 2
