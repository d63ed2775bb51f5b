"""Deployable artifacts: optimized TorchScript and ONNX match the eager model, are recorded with
checksums in model.json, accept other sizes; bad weights or artifacts are refused in one line."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.nets.deploy import (ONNX_OPSET, DeployError, deploy_entries, load_artifact,
                                  onnx_available, rel_err)
from pipeline.nets.export import export_subnet, load_model, save_model
from pipeline.nets.export_cli import parse_hw
from pipeline.nets.supernet import SuperNet
from pipeline.space.sample import sample_arch

HW = [64, 64]


def trained_like(net, seed):
    """Non-trivial BN statistics, so that folding them into the convolutions is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    out = {}
    for task in ("seg", "pose"):
        sup = trained_like(SuperNet(task, 8, seed=0), seed=1)
        # Up- and down-sampling fusion paths on every branch, yet a graph small enough to export
        # quickly on a busy machine.
        sup.set_arch(sample_arch(np.random.default_rng(3), 0.3, [2], task))
        save_model(root / task, export_subnet(sup).eval(), {"input_hw": HW})
        out[task] = root / task
    return out


def _entry(model_dir, fmt):
    return [e for e in deploy_entries(model_dir) if e["format"] == fmt][-1]


@pytest.mark.parametrize("task, cl", [("seg", "on"), ("pose", "off")])
def test_optimized_torchscript(models, task, cl, capsys):
    d = models[task]
    assert main(["export", str(d), "--format", "torchscript", "--optimize",
                 "--channels-last", cl]) == 0
    assert "other sizes: yes" in capsys.readouterr().out
    e = _entry(d, "torchscript")
    art = d / e["file"]
    assert e["file"] == "deploy/optimized.ts" and art.is_file()
    assert e["sha256"] == hashlib.sha256(art.read_bytes()).hexdigest()
    assert e["optimized"] and e["bn_folded"] and e["frozen"] and e["channels_last"] == (cl == "on")
    assert e["input_shape"] == [1, 3, *HW] and e["other_sizes"] is True and e["rel_err"] < 1e-5
    module, _ = load_artifact(d, "torchscript")
    # BN is folded: no batch_norm left in the saved, frozen graph.
    assert "batch_norm" not in str(torch.jit.load(str(art)).graph)
    assert "batch_norm" not in str(module.graph)
    net = load_model(d)  # the weights are untouched by the export
    x = torch.randn(2, 3, 96, 128)  # another batch and size than the traced one
    with torch.no_grad():
        assert rel_err(module(x), net(x)) < 1e-5


def test_auto_channels_last_is_measured(models, tmp_path):
    out = tmp_path / "plain.ts"
    assert main(["export", str(models["seg"]), "-o", str(out), "--input", "32x64"]) == 0
    e = json.loads((tmp_path / "plain.ts.json").read_text())  # the record beside the artifact
    t = e["measured_s"]
    assert e["channels_last"] == (t["channels_last"] < t["contiguous"])
    assert e["input_shape"] == [1, 3, 32, 64]


def test_unoptimized_trace(models, tmp_path):
    out = tmp_path / "trace.ts"
    assert main(["export", str(models["pose"]), "--no-optimize", "-o", str(out)]) == 0
    assert out.is_file()
    e = json.loads((tmp_path / "trace.ts.json").read_text())
    assert e["file"] == "trace.ts" and e["optimized"] is False


@pytest.mark.skipif(onnx_available() is not None, reason=str(onnx_available()))
@pytest.mark.parametrize("task", ["seg", "pose"])
def test_onnx(models, task):
    import onnx

    d = models[task]
    assert main(["export", str(d), "--format", "onnx"]) == 0
    e = _entry(d, "onnx")
    assert e["opset"] == ONNX_OPSET and e["other_sizes"] is True and e["rel_err"] < 1e-4
    model = onnx.load(str(d / e["file"]))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [x.dim_param for x in dims] == ["batch", "", "height", "width"]
    runner, _ = load_artifact(d, "onnx")
    x = torch.randn(3, 3, 128, 96)
    with torch.no_grad():
        assert rel_err(runner(x), load_model(d)(x)) < 1e-4


def test_mismatched_weights_refused_in_one_line(tmp_path, capsys):
    sup = SuperNet("seg", 8)
    d = tmp_path / "m"
    save_model(d, export_subnet(sup), {})
    (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:-10] + b"0" * 10)
    before = (d / "model.json").read_bytes()
    assert main(["export", str(d), "--optimize"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights.pt: checksum does not match" in err[0]
    assert (d / "model.json").read_bytes() == before and not (d / "deploy").exists()


def test_tampered_artifact_refused(models, tmp_path):
    d = tmp_path / "copy"
    d.mkdir()
    for name in ("weights.pt", "arch.json"):
        (d / name).write_bytes((models["seg"] / name).read_bytes())
    # The record without the artifacts other tests exported into the shared model directory.
    rec = json.loads((models["seg"] / "model.json").read_text())
    rec.pop("deploy", None)
    (d / "model.json").write_text(json.dumps(rec))
    # An artifact elsewhere, then the default one: the default (inside the model) is the one run.
    assert main(["export", str(d), "--channels-last", "off", "-o", str(tmp_path / "x.ts")]) == 0
    assert main(["export", str(d), "--channels-last", "off"]) == 0
    (d / "deploy" / "optimized.ts").write_bytes(b"junk")
    # A bad checksum is the user's input to fix (the project's InputError: exit 2, one line).
    with pytest.raises(InputError, match="optimized.ts: checksum does not match"):
        load_artifact(d, "torchscript")
    with pytest.raises(DeployError, match="no onnx artifact recorded"):
        load_artifact(d, "onnx")


def test_bad_input_size(models, capsys):
    assert main(["export", str(models["seg"]), "--input", "50x64"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    with pytest.raises(InputError, match="expected HxW"):
        parse_hw("64")
