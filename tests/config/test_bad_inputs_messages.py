"""Messages that must name the file at fault, through the real `scalenas` command: a 5000-digit
integer in an architecture, bad entries of a ``--boxes`` file, a model record whose
``meta.input_hw`` is not two positive integers (predict and export). One line, exit 2, no
traceback, nothing written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCALENAS = str(Path(sys.executable).parent / "scalenas")
BIG = "1" * 5000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SCALENAS_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _model(d: Path, meta_edit=None) -> None:
    """A tiny pose model directory (W8, 64x48 crops), its record's meta edited."""
    from pipeline.nets.export import export_subnet, save_model
    from pipeline.nets.supernet import SuperNet
    from pipeline.space.sample import smallest

    sn = SuperNet("pose", width=8, num_outputs=17)
    sn.set_arch(smallest("pose"))
    save_model(d / "model", export_subnet(sn).eval(), {"input_hw": [64, 48]})
    if meta_edit is not None:
        rec = json.loads((d / "model" / "model.json").read_text())
        meta_edit(rec["meta"])
        (d / "model" / "model.json").write_text(json.dumps(rec))


def _input_hw(value):
    return lambda d: _model(d, lambda meta: meta.update(input_hw=value))


def _boxes(text: str):
    def setup(d: Path) -> None:
        _model(d)
        (d / "boxes.json").write_text(text)
    return setup


def _arch_big(d: Path) -> None:
    (d / "a.json").write_text('{"schema": "scalenas-arch/1", "modules": [' + BIG + "]}")


PREDICT = ["predict", "img.png", "--model", "model", "-o", "o.png"]
WITH_BOXES = PREDICT + ["--boxes", "boxes.json"]
CASES = [
    # (id, setup(dir), argv, the one line after "scalenas: error: ")
    ("arch-5000-digit-integer", _arch_big, ["arch", "show", "a.json"],
     "a.json: malformed JSON: a number of more than 4300 digits"),
    ("boxes-5000-digit-integer", _boxes("[[0, 0, " + BIG + ", 10]]"), WITH_BOXES,
     "boxes.json: unreadable boxes file: a number of more than 4300 digits"),
    ("boxes-negative-size", _boxes("[[0, 0, -5, 10]]"), WITH_BOXES,
     "boxes.json: entry 0: box '0,0,-5,10': expected x,y,w,h with positive w and h"),
    ("boxes-nan", _boxes('[[1, 2, 3, 4], {"bbox": [0, 0, NaN, 10], "image_id": 1}]'), WITH_BOXES,
     "boxes.json: entry 1: box '0,0,nan,10': expected x,y,w,h with positive w and h"),
    ("boxes-string", _boxes('[["0", 0, 5, 10]]'), WITH_BOXES,
     'boxes.json: entry 0: expected [x, y, w, h] or {"bbox": [x, y, w, h]}'),
    ("boxes-three-numbers", _boxes("[[0, 0, 5]]"), WITH_BOXES,
     'boxes.json: entry 0: expected [x, y, w, h] or {"bbox": [x, y, w, h]}'),
    ("boxes-float-image-id", _boxes('[{"bbox": [0, 0, 5, 5], "image_id": 1.5}]'), WITH_BOXES,
     "boxes.json: entry 0: image_id must be an integer"),
    ("boxes-outside-the-image", _boxes("[[500, 500, 10, 10]]"), WITH_BOXES,
     "boxes.json: box 500,500,10,10: must overlap the 70x50 image and be at most 4 times its size"),
    ("input-hw-strings", _input_hw(["a", "b"]), PREDICT,
     "model/model.json: meta.input_hw: expected [h, w] (two positive integers), got ['a', 'b']"),
    ("input-hw-null", _input_hw([None, 128]), PREDICT,
     "model/model.json: meta.input_hw: expected [h, w] (two positive integers), got [None, 128]"),
    ("input-hw-strings-export", _input_hw(["a", "b"]), ["export", "model", "-o", "m.ts"],
     "model/model.json: meta.input_hw: expected [h, w] (two positive integers), got ['a', 'b']"),
    ("input-hw-null-export", _input_hw([None, 128]), ["export", "model", "-o", "m.ts"],
     "model/model.json: meta.input_hw: expected [h, w] (two positive integers), got [None, 128]"),
    ("input-hw-number-export", _input_hw(64), ["export", "model", "-o", "m.ts"],
     "model/model.json: meta.input_hw: expected [h, w] (two positive integers), got 64"),
]


@pytest.mark.parametrize("setup, argv, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_message_names_the_file(tmp_path: Path, setup, argv, line) -> None:
    from PIL import Image

    setup(tmp_path)
    Image.new("RGB", (70, 50), (40, 80, 120)).save(tmp_path / "img.png")
    before = _hashes(tmp_path)
    r = subprocess.run([SCALENAS, *argv], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=_env(), stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and r.returncode == 2, out[-3000:]
    assert r.stderr.splitlines() == [f"scalenas: error: {line}"], out[-3000:]
    assert _hashes(tmp_path) == before  # nothing written, nothing changed
