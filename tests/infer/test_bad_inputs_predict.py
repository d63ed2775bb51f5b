"""``scalenas predict`` on bad inputs and outputs, as a new user meets them (issue 21, items 1, 3
and 11). One row per case: (files to create, arguments, exit code, the exact one-line message).
Every refused case leaves every file in the folder byte for byte as it was, the model directory
included, and writes nothing."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import edit_model_record as record, save_tiny_models, tree_hashes
from pipeline.cli import main
from pipeline.infer.images import MARKER_KEY, read_image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"), {"seg": [64, 64], "pose": [64, 64]})


def png(path: Path, w: int = 70, h: int = 50, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write(name: str, text: str):
    def setup(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return setup


def both(*setups):
    def setup(d: Path) -> None:
        for s in setups:
            s(d)
    return setup


def image(name: str, w: int = 70, h: int = 50):
    return lambda d: png(d / name, w, h)


def blank(name: str, w: int, h: int, mode: str = "1"):
    """A large but cheap image: one bit per pixel, all zero (compresses to almost nothing)."""
    return lambda d: Image.new(mode, (w, h)).save(d / name)


def float_tiff(d: Path) -> None:
    Image.fromarray(np.full((50, 70), 0.5, dtype=np.float32)).save(d / "f.tif")


OVERWRITE_HINT = "(give another -o)"

#: (id, model task, setup, arguments after `predict`, exit code, the one stderr line)
CASES = [
    # -- item 1: outputs never replace what predict did not write --------------------------------
    ("user-mask-beside-input", "seg", both(image("street.png"), write("street_mask.png", "mine")),
     ["street.png"], 2,
     "street_mask.png: exists and was not written by scalenas predict; --overwrite replaces it "
     "(or give another -o)"),
    ("user-files-in-output-folder", "seg",
     both(image("in/a.png"), image("in/b.png"), write("out/a_pred.png", "1"),
          write("out/b_mask.png", "2")), ["in", "-o", "out"], 2,
     "out/a_pred.png; out/b_mask.png: exist and were not written by scalenas predict; "
     "--overwrite replaces them (or give another -o)"),
    ("user-results-file", "pose", both(image("p.png", 48, 64), write("out/results.json", "[1]")),
     ["p.png", "-o", "out"], 2,
     "out/results.json: exists and was not written by scalenas predict; --overwrite replaces it "
     "(or give another -o)"),
    ("same-stem-collide", "seg", both(image("imgs/a.png"), image("imgs/a.jpg")), ["imgs"], 2,
     "outputs collide: imgs/a.jpg and imgs/a.png both write imgs/a_mask.png; imgs/a.jpg and "
     "imgs/a.png both write imgs/a_pred.png (rename one, or predict them into different -o "
     "folders)"),
    ("two-folders-one-output", "pose", both(image("d1/a.png"), image("d2/a.png")),
     ["d1", "d2", "-o", "out"], 2,
     "outputs collide: d1/a.png and d2/a.png both write out/a_pred.png (rename one, or predict "
     "them into different -o folders)"),
    ("output-is-the-input", "seg", image("street.png"), ["street.png", "-o", "street.png"], 2,
     "street.png: is an input image; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("output-is-the-input-overwrite", "seg", image("street.png"),
     ["street.png", "-o", "street.png", "--overwrite"], 2,
     "street.png: is an input image; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("output-links-to-the-input", "seg",
     both(image("street.png"), lambda d: (d / "link.png").symlink_to("street.png")),
     ["street.png", "-o", "link.png", "--overwrite"], 2,
     "link.png: is an input image; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("output-is-another-input", "seg", both(image("imgs/x.png"), image("imgs/x_pred.png")),
     ["imgs", "--overwrite"], 2,
     "imgs/x_pred.png: is an input image; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("results-is-the-boxes-file", "pose",
     both(image("p.png", 48, 64), write("boxes.json", "[[1, 1, 20, 30]]")),
     ["p.png", "--boxes", "boxes.json", "--results", "boxes.json", "--overwrite"], 2,
     "boxes.json: is the boxes file; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("results-is-the-list-file", "pose", both(image("p.png", 48, 64), write("l.txt", "p.png\n")),
     ["l.txt", "--results", "l.txt", "--overwrite"], 2,
     "l.txt: is the list file; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    ("results-is-model-json", "pose", image("p.png", 48, 64),
     ["p.png", "--results", "model/model.json", "--overwrite"], 2,
     "model/model.json: is a file of the model directory model; predict never replaces it, even "
     "with --overwrite (give another -o)"),
    ("results-is-another-models-record", "pose",
     both(image("p.png"), lambda d: shutil.copytree(d / "model", d / "other")),
     ["p.png", "--results", "other/model.json", "--overwrite"], 2,
     "other/model.json: is a file of the model directory other; predict never replaces it, even "
     "with --overwrite (give another -o)"),
    ("output-is-model-weights", "seg", image("p.png"),
     ["p.png", "-o", "model/weights.pt"], 2,
     "model/weights.pt: -o names an existing file, not a folder"),
    ("one-png-for-many", "seg", both(image("imgs/a.png"), image("imgs/b.png")),
     ["imgs", "-o", "x.png"], 2,
     "x.png: -o names one picture, but 2 images are given: give a folder"),
    ("output-is-a-folder", "seg", both(image("s.png"), lambda d: (d / "s_pred.png").mkdir()),
     ["s.png", "--overwrite"], 2, "s_pred.png: output is a folder"),
    ("artifact-without-record", "seg", both(image("p.png"), write("x.ts", "junk")),
     ["p.png", "-o", "o.png", "--artifact", "x.ts"], 2,
     "x.ts: no artifact record beside it (x.ts.json missing or not one of ours): export it with "
     "scalenas export"),
    ("artifact-and-runtime", "seg", both(image("p.png"), write("x.ts", "junk")),
     ["p.png", "-o", "o.png", "--artifact", "x.ts", "--runtime", "eager"], 2,
     "give either --runtime or --artifact, not both"),
    ("results-is-the-artifact", "pose", both(image("p.png"), write("x.ts", "junk")),
     ["p.png", "--artifact", "x.ts", "--results", "x.ts", "--overwrite"], 2,
     "x.ts: is the artifact or its record; predict never replaces it, even with --overwrite "
     "(give another -o)"),
    # -- item 3: sizes checked after padding, before any allocation -------------------------------
    ("one-row-image", "seg", blank("wide.png", 16777216, 1), ["wide.png", "-o", "o.png"], 2,
     "wide.png: image too large (16777216x1 = 16777216 pixels, padded to 16777216x32 = "
     "536870912; the limit is 16777216 pixels, e.g. 4096x4096): scale it down first"),
    ("pose-input-hw-huge", "pose", both(image("p.png"), record(input_hw=[65536, 65536])),
     ["p.png", "-o", "o.png"], 2,
     "model/model.json: meta.input_hw too large (65536x65536 = 4294967296 pixels; the limit is "
     "16777216 pixels, e.g. 4096x4096)"),
    ("pose-input-hw-not-padded", "pose", both(image("p.png"), record(input_hw=[64, 48])),
     ["p.png", "-o", "o.png"], 2,
     "model/model.json: meta.input_hw 64x48: must be multiples of 32"),
    ("model-width-huge", "seg", both(image("p.png"), record(width=4096)), ["p.png", "-o", "o.png"],
     2, "model/model.json: width 4096 too large (the limit is 128)"),
    ("model-width-not-the-weights", "seg", both(image("p.png"), record(width=16)),
     ["p.png", "-o", "o.png"], 2,
     "model/weights.pt: does not fit the model: the checkpoint looks like a seg network of width "
     "8 with 19 outputs, the model is a seg network of width 16 with 19 outputs; 547 shape "
     "mismatch key(s): transition1.0.0.weight (8, 256, 3, 3) vs (16, 256, 3, 3), "
     "transition1.0.1.weight (8,) vs (16,), transition1.0.1.bias (8,) vs (16,) (and 544 more)"),
    # -- item 11: no silent wrong results ----------------------------------------------------------
    ("boxes-match-no-image", "pose",
     both(image("000000000007.jpg", 48, 64), write("dets.json", json.dumps(
         [{"image_id": 5, "bbox": [1, 1, 20, 30]}, {"image_id": 6, "bbox": [1, 1, 20, 30]}]))),
     ["000000000007.jpg", "--boxes", "dets.json", "-o", "out"], 2,
     "dets.json: 0 of its 2 image id(s) match the 1 input image(s) (an image's id is the number "
     "of its file name, 000000000139.jpg -> 139, else its position in the inputs)"),
    ("float-tiff", "seg", float_tiff, ["f.tif", "-o", "o.png"], 2,
     "f.tif: floating-point image (mode F): not supported (save it with 8 or 16 bits per "
     "channel)"),
    ("above-pil-warning-size", "seg", blank("big.png", 10000, 10000), ["big.png", "-o", "o.png"],
     2, "big.png: image too large (10000x10000 = 100000000 pixels, padded to 10016x10016 = "
        "100320256; the limit is 16777216 pixels, e.g. 4096x4096): scale it down first"),
    ("above-pil-error-size", "seg", blank("bigger.png", 20000, 10000),
     ["bigger.png", "-o", "o.png"], 2,
     "bigger.png: image too large (20000x10000 = 200000000 pixels, padded to 20000x10016 = "
     "200320000; the limit is 16777216 pixels, e.g. 4096x4096): scale it down first"),
]


@pytest.mark.parametrize("task, setup, argv, code, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_in_one_line_and_nothing_changes(models, tmp_path, monkeypatch, capsys, task, setup,
                                                 argv, code, message):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(models / task, tmp_path / "model")
    setup(tmp_path)
    before = tree_hashes(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["predict", *argv, "--model", "model", "-q"])
    cap = capsys.readouterr()
    assert rc == code, cap.err
    assert cap.err.splitlines() == [f"scalenas: error: {message}"]
    assert cap.out == ""
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert tree_hashes(tmp_path) == before  # the inputs, the model and every other file, byte for byte


@pytest.mark.slow  # a real `scalenas` process
def test_pil_bomb_warning_never_reaches_the_terminal(models, tmp_path):
    """Through the real command: stderr is our one line, none of PIL's warning lines."""
    import subprocess
    import sys

    blank("big.png", 10000, 10000)(tmp_path)
    r = subprocess.run([str(Path(sys.executable).parent / "scalenas"), "predict", "big.png",
                        "--model", str(models / "seg"), "-o", "o.png"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "scalenas: error: big.png: image too large (10000x10000 = 100000000 pixels, padded to "
        "10016x10016 = 100320256; the limit is 16777216 pixels, e.g. 4096x4096): scale it down "
        "first"]


# -- what is written, and what is left alone -------------------------------------------------------
def run(*argv: str) -> int:
    return main(["predict", *argv, "-q"])


def test_second_run_over_a_folder_replaces_only_its_own_outputs(models, tmp_path, capsys):
    src = tmp_path / "street"
    for name in ("a.png", "b.jpg"):
        png(src / name)
    inputs = tree_hashes(src)
    model = tree_hashes(models / "seg")
    assert run(str(src), "--model", str(models / "seg")) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "2 image(s) predicted, 4 file(s) written (seg, model ")
    first = tree_hashes(src)
    assert sorted(first) == ["a.png", "a_mask.png", "a_pred.png", "b.jpg", "b_mask.png",
                             "b_pred.png"]
    with Image.open(src / "a_mask.png") as m:
        assert m.info[MARKER_KEY] == "mask of a.png"
    # The second run leaves the first run's pictures out of its inputs and replaces them.
    assert run(str(src), "--model", str(models / "seg")) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert out.startswith("2 image(s) predicted, 4 file(s) written (seg, model ")
    assert out.endswith("; 4 earlier output(s) of predict in the folder left out")
    assert tree_hashes(src) == first  # same files, same bytes: no a_pred_pred.png
    assert {k: v for k, v in tree_hashes(src).items() if k in inputs} == inputs
    assert tree_hashes(models / "seg") == model


def test_overwrite_replaces_a_users_file_but_never_an_input(models, tmp_path, capsys):
    img = png(tmp_path / "street.png")
    (tmp_path / "street_mask.png").write_text("mine")
    before = tree_hashes(tmp_path)
    assert run(str(img), "--model", str(models / "seg")) == 2
    assert tree_hashes(tmp_path) == before
    capsys.readouterr()
    assert run(str(img), "--model", str(models / "seg"), "--overwrite") == 0
    assert "1 image(s) predicted, 2 file(s) written" in capsys.readouterr().out
    assert tree_hashes(tmp_path)["street.png"] == before["street.png"]
    with Image.open(tmp_path / "street_mask.png") as m:
        assert m.mode == "P" and MARKER_KEY in m.info


def test_pose_results_are_recognised_as_own(models, tmp_path, capsys):
    img = png(tmp_path / "000000000007.png", 48, 64)
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces its own results.json and picture
        assert run(str(img), "--model", str(models / "pose"), "-o", str(out)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("1 image(s) predicted, 2 file(s) written (pose")
    assert sorted(p.name for p in out.iterdir()) == ["000000000007_pred.png", "results.json"]


def test_boxes_partly_matching_are_used(models, tmp_path, capsys):
    for i in (7, 9):
        png(tmp_path / f"{i:012d}.png", 48, 64)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 7, "bbox": [1, 1, 20, 30]},
                                {"image_id": 99, "bbox": [1, 1, 20, 30]}]))
    lst = tmp_path / "l.txt"
    lst.write_text("000000000007.png\n000000000009.png\n")
    assert run(str(lst), "--model", str(models / "pose"), "--boxes", str(dets), "-o",
               str(tmp_path / "o")) == 0
    assert [r["image_id"] for r in json.loads((tmp_path / "o" / "results.json").read_text())] == [7]


# -- 16-bit images: scaled, not clipped ------------------------------------------------------------
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # what Pillow makes of 16-bit greyscale
    rgb = np.asarray(read_image(tmp_path / "g16.png"))
    want = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], want) and np.array_equal(rgb[..., 2], want)
    assert (rgb == 255).mean() < 0.01  # clipping made 99.7 % of such an image white


def test_16_bit_rgb_png_keeps_its_range(tmp_path):
    import struct
    import zlib

    # Pillow cannot write 48-bit RGB: a minimal PNG by hand (colour type 2, depth 16).
    h, w = 8, 8
    px = (np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3) * 341).astype(">u2")
    raw = b"".join(b"\0" + px[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    (tmp_path / "c16.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    rgb = np.asarray(read_image(tmp_path / "c16.png")).astype(np.int64)
    assert np.abs(rgb - px.astype(np.int64) * 255 // 65535).max() <= 1
