"""``scalenas export`` on bad outputs and sizes (issue 21, items 1 and 3). One row per case:
(setup, arguments, exit code, the exact one-line message); every refused case leaves every file,
the model directory's above all, byte for byte as it was. An export elsewhere leaves the model
directory byte-identical and records the artifact's checksum beside it; predict and
:mod:`pipeline.nets.deploy` find the artifacts of the model directory by those records, and still
read model directories whose ``model.json`` lists them (older versions)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import edit_model_record as record, save_tiny_models, tree_hashes
from pipeline.cli import main
from pipeline.nets.deploy import (ARTIFACT_SCHEMA, DeployError, deploy_entries, find_entry,
                                  load_artifact, record_path)
from pipeline.nets.export import load_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"), {"seg": [32, 64], "pose": [64, 64]})


def write(name: str, text: str):
    return lambda d: (d / name).write_text(text)


def nothing(d: Path) -> None:
    pass


NEVER = "export never replaces one, even with --overwrite (give another -o)"

#: (id, model task, setup, arguments after `export model`, exit code, the one stderr line)
CASES = [
    # -- item 1: the model directory's own files, and files export did not write ------------------
    ("onto-weights", "seg", nothing, ["-o", "model/weights.pt"], 2,
     f"model/weights.pt: is a file of the model directory model; {NEVER}"),
    ("onto-weights-overwrite", "seg", nothing, ["-o", "model/weights.pt", "--overwrite"], 2,
     f"model/weights.pt: is a file of the model directory model; {NEVER}"),
    ("onto-model-json", "pose", nothing, ["-o", "model/model.json", "--overwrite"], 2,
     f"model/model.json: is a file of the model directory model; {NEVER}"),
    ("onto-arch-json", "seg", nothing, ["-o", "model/arch.json"], 2,
     f"model/arch.json: is a file of the model directory model; {NEVER}"),
    ("record-onto-model-json", "seg", nothing, ["-o", "model/model", "--overwrite"], 2,
     f"model/model: its record model/model.json would replace a file of the model directory "
     f"model; {NEVER}"),
    ("through-a-symlink", "seg", lambda d: (d / "w.ts").symlink_to("model/weights.pt"),
     ["-o", "w.ts", "--overwrite"], 2, f"w.ts: is a file of the model directory model; {NEVER}"),
    ("onto-another-models-weights", "seg", lambda d: shutil.copytree(d / "model", d / "other"),
     ["-o", "other/weights.pt", "--overwrite"], 2,
     f"other/weights.pt: is a file of the model directory other; {NEVER}"),
    ("users-file", "seg", write("mine.ts", "my own file"), ["-o", "mine.ts"], 2,
     "mine.ts: exists and was not written by scalenas export; --overwrite replaces it "
     "(or give another -o)"),
    ("users-file-at-record", "seg", write("x.ts.json", "{}"), ["-o", "x.ts"], 2,
     "x.ts.json: exists and was not written by scalenas export; --overwrite replaces it "
     "(or give another -o)"),
    ("json-name", "seg", nothing, ["-o", "art.json"], 2,
     "art.json: an artifact's name must not end in .json (that name is for the record written "
     "beside it)"),
    ("onto-a-folder", "seg", lambda d: (d / "adir").mkdir(), ["-o", "adir", "--overwrite"], 2,
     "adir: is a folder (an artifact file path expected)"),
    # -- item 3: sizes that set memory -------------------------------------------------------------
    ("input-huge", "seg", nothing, ["--input", "32768x32768"], 2,
     "--input: input size too large (32768x32768 = 1073741824 pixels; the limit is 16777216 "
     "pixels, e.g. 4096x4096)"),
    ("input-hw-huge", "pose", record(input_hw=[65536, 65536]), [], 2,
     "model/model.json: meta.input_hw too large (65536x65536 = 4294967296 pixels; the limit is "
     "16777216 pixels, e.g. 4096x4096)"),
    ("width-huge", "seg", record(width=4096), [], 2,
     "model/model.json: width 4096 too large (the limit is 128)"),
    ("width-not-the-weights", "pose", record(width=16), ["-o", "x.ts"], 2,
     "model/weights.pt: does not fit the model: the checkpoint looks like a pose network of width "
     "8 with 17 outputs, the model is a pose network of width 16 with 17 outputs; 556 shape "
     "mismatch key(s): transition1.0.0.weight (8, 256, 3, 3) vs (16, 256, 3, 3), "
     "transition1.0.1.weight (8,) vs (16,), transition1.0.1.bias (8,) vs (16,) (and 553 more)"),
]


@pytest.mark.parametrize("task, setup, argv, code, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_in_one_line_and_nothing_changes(models, tmp_path, monkeypatch, capsys, task,
                                                 setup, argv, code, message):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(models / task, tmp_path / "model")
    setup(tmp_path)
    before = tree_hashes(tmp_path)
    rc = main(["export", "model", "--channels-last", "off", *argv])
    cap = capsys.readouterr()
    assert rc == code, cap.err
    assert cap.err.splitlines() == [f"scalenas: error: {message}"] and cap.out == ""
    assert tree_hashes(tmp_path) == before  # no file changed, none added


def _copy(models: Path, task: str, to: Path) -> Path:
    shutil.copytree(models / task, to)
    return to


@pytest.mark.slow  # a real export: seconds of tracing
def test_export_elsewhere_leaves_the_model_directory_byte_identical(models, tmp_path, capsys):
    d = _copy(models, "seg", tmp_path / "model")
    before = tree_hashes(d)
    out = tmp_path / "far" / "seg.ts"
    assert main(["export", str(d), "-o", str(out), "--no-optimize"]) == 0
    assert f"(record {out}.json; torchscript" in capsys.readouterr().out
    assert tree_hashes(d) == before
    rec = json.loads(record_path(out).read_text())
    assert rec["schema"] == ARTIFACT_SCHEMA and rec["file"] == "seg.ts"
    assert rec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    model = json.loads((d / "model.json").read_text())
    assert rec["model"] == {k: model[k] for k in ("task", "arch_id", "weights_sha256")}
    # Exporting again to the same place replaces its own artifact without --overwrite.
    assert main(["export", str(d), "-o", str(out), "--no-optimize"]) == 0
    assert tree_hashes(d) == before
    # An artifact elsewhere is not the model's default; predict runs it when named.
    with pytest.raises(DeployError, match="no torchscript artifact recorded"):
        find_entry(d, "torchscript")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    capsys.readouterr()
    assert main(["predict", str(img), "--model", str(d), "--artifact", str(out), "-q"]) == 0
    assert f"runtime torchscript ({out})" in capsys.readouterr().out
    assert tree_hashes(d) == before
    # ... but not for another model's weights.
    rec["model"]["weights_sha256"] = "0" * 64
    record_path(out).write_text(json.dumps(rec))
    assert main(["predict", str(img), "--model", str(d), "--artifact", str(out), "-q",
                 "--overwrite"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"scalenas: error: {out}: exported from other weights than {d}/model.json (record "
        f"{out}.json); export it again"]


@pytest.mark.slow  # a real export: seconds of tracing
def test_default_export_is_found_by_its_record(models, tmp_path, capsys):
    d = _copy(models, "seg", tmp_path / "model")
    own = {k: v for k, v in tree_hashes(d).items()}
    assert main(["export", str(d), "--channels-last", "off"]) == 0
    after = tree_hashes(d)
    assert {k: after[k] for k in own} == own  # model.json, arch.json, weights.pt unchanged
    assert sorted(set(after) - set(own)) == ["deploy/optimized.ts", "deploy/optimized.ts.json"]
    (entry,) = deploy_entries(d)
    assert entry["file"] == "deploy/optimized.ts" and entry["record"] == "deploy/optimized.ts.json"
    module, _ = load_artifact(d, "torchscript")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert (module(x) - load_model(d)(x)).abs().max() < 1e-4
    # predict's default runtime is that artifact.
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    capsys.readouterr()
    assert main(["predict", str(img), "--model", str(d), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert "runtime torchscript (deploy/optimized.ts)" in capsys.readouterr().out
    # Weights changed after the export: the artifact is refused, naming its record.
    rec = json.loads((d / "deploy" / "optimized.ts.json").read_text())
    rec["model"]["weights_sha256"] = "0" * 64
    (d / "deploy" / "optimized.ts.json").write_text(json.dumps(rec))
    with pytest.raises(DeployError, match=r"optimized.ts: exported from other weights than .*"
                                          r"model.json \(record .*optimized.ts.json\)"):
        load_artifact(d, "torchscript")


@pytest.mark.slow  # a real export: seconds of tracing
def test_model_directory_of_an_older_version_still_reads(models, tmp_path):
    """Artifacts listed in model.json (before records moved beside them) are found and checked."""
    d = _copy(models, "seg", tmp_path / "model")
    art = d / "deploy" / "model.ts"
    assert main(["export", str(d), "--no-optimize"]) == 0
    side = json.loads(record_path(art).read_text())
    record_path(art).unlink()
    rec = json.loads((d / "model.json").read_text())
    rec["deploy"] = [{k: v for k, v in side.items() if k not in ("schema", "model")}
                     | {"file": "deploy/model.ts"}]
    (d / "model.json").write_text(json.dumps(rec))
    module, entry = load_artifact(d, "torchscript")
    assert entry["file"] == "deploy/model.ts"
    # Re-exporting replaces it (its own artifact, listed in model.json) without --overwrite, and
    # leaves model.json as it was.
    before = (d / "model.json").read_bytes()
    assert main(["export", str(d), "--no-optimize"]) == 0
    assert (d / "model.json").read_bytes() == before and record_path(art).is_file()
    art.write_bytes(b"junk")
    with pytest.raises(DeployError, match="model.ts: checksum does not match .*model.ts.json"):
        load_artifact(d, "torchscript")


@pytest.mark.slow  # a real export: seconds of tracing
def test_overwrite_replaces_a_users_file(models, tmp_path, capsys):
    d = _copy(models, "pose", tmp_path / "model")
    before = tree_hashes(d)
    mine = tmp_path / "mine.ts"
    mine.write_text("my own file")
    assert main(["export", str(d), "-o", str(mine), "--no-optimize"]) == 2
    assert mine.read_text() == "my own file"
    assert main(["export", str(d), "-o", str(mine), "--no-optimize", "--overwrite"]) == 0
    assert json.loads(record_path(mine).read_text())["sha256"] == hashlib.sha256(
        mine.read_bytes()).hexdigest()
    assert tree_hashes(d) == before


def test_parameter_widths_stay_within_the_saved_models_limit():
    """A run whose width a saved model may not have would fail at the fine-tune reload, hours in:
    the parameter schema holds the same limit."""
    import yaml

    from pipeline.limits import MAX_WIDTH

    schema = yaml.safe_load((Path(__file__).parents[2] / "workflow" / "schemas" /
                             "params.schema.yaml").read_text())
    widths = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("width"), dict) and node["width"].get("type") == "integer":
                widths.append(node["width"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    from pipeline.tasks.facts import TASK_NAMES

    # One width per task section.
    assert len(widths) == len(TASK_NAMES) and all(w["maximum"] == MAX_WIDTH for w in widths)


def test_padding_is_the_networks():
    from pipeline.limits import PAD
    from pipeline.nets.supernet import INPUT_MULTIPLE

    assert PAD == INPUT_MULTIPLE
