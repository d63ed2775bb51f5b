"""Export of a subnet to a standalone network; TorchScript; save and load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.cost import profile
from pipeline.nets import (CheckpointError, ModelFileError, StandaloneNet, SuperNet, export_subnet,
                           load_model, load_state_dict_file, save_model, to_torchscript)
from pipeline.space.arch import ArchitectureError
from pipeline.space.official import load_official
from pipeline.space.sample import hrnet, sample_arch, smallest

MASKS = Path(__file__).parents[3] / "shared" / "masks"
HW = {"seg": (64, 64), "pose": (128, 96)}



def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms, so that copied buffers matter in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        elif isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=g)
    return net.eval()


def arch_of(kind: str, task: str):
    if kind == "official":
        return load_official(MASKS / ("seg_w32_S1.npy" if task == "seg" else "w32_256_P2.npy"))
    if kind == "hrnet":
        return hrnet(task)
    if kind == "smallest":
        return smallest(task)
    return sample_arch(np.random.default_rng(11), 0.5, [2, 3, 4, 5], task)


#: (kind, task) cases; only the release files of ../shared/masks need the shared folder.
EXPORT_CASES = [pytest.param(k, t, marks=pytest.mark.shared_data) if k == "official" else (k, t)
                for k in ("official", "hrnet", "smallest", "sampled") for t in ("seg", "pose")]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind,task", EXPORT_CASES)
def test_export_matches_supernet(kind, task):
    sup = trained_like(SuperNet(task, 8))
    x = torch.randn(2, 3, *HW[task])
    arch = arch_of(kind, task)
    sup.set_arch(arch)
    net = export_subnet(sup)
    assert isinstance(net, StandaloneNet) and net.arch == arch and not net.training
    with torch.no_grad():
        assert rel_err(net(x), sup(x)) < 1e-6
    assert sum(p.numel() for p in net.parameters()) == profile(arch, task, 8, HW[task]).params
    assert set(net.state_dict()) <= set(sup.state_dict())


def test_export_holds_only_active_layers():
    sup = SuperNet("seg", 8)
    arch = smallest("seg")
    sup.set_arch(arch)
    net = export_subnet(sup)
    keys = net.state_dict().keys()
    assert "stage3.1.branches.2.1.conv1.weight" in keys
    assert "stage3.1.branches.2.2.conv1.weight" not in keys
    assert not any("fuse_layers" in k for k in keys)  # smallest seg: no fusion at all
    # Every parameter of a segmentation subnet reaches the output.
    net.train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.shared_data
def test_torchscript_trace():
    sup = trained_like(SuperNet("seg", 8))
    sup.set_arch(load_official(MASKS / "seg_w32_S1.npy"))
    net = export_subnet(sup)
    ts = to_torchscript(net, torch.randn(1, 3, 64, 64))
    assert isinstance(ts, torch.jit.ScriptModule)
    x = torch.randn(2, 3, 96, 128)  # another batch and size than the trace example
    with torch.no_grad():
        assert rel_err(ts(x), net(x)) < 1e-6


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_save_and_load(tmp_path, task):
    sup = trained_like(SuperNet(task, 8, num_outputs=5))
    sup.set_arch(sample_arch(np.random.default_rng(1), 0.5, [2, 3], task))
    net = export_subnet(sup)
    save_model(tmp_path / "m", net, {"source": "test", "miou": 0.5})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "arch.json", "model.json", "weights.pt"]
    back = load_model(tmp_path / "m")
    assert back.arch == net.arch and back.task == task and back.num_outputs == 5
    assert back.meta == {"source": "test", "miou": 0.5}
    x = torch.randn(1, 3, *HW[task])
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_load_errors(tmp_path):
    sup = SuperNet("seg", 8)
    sup.set_arch(smallest("seg"))
    d = tmp_path / "m"
    save_model(d, export_subnet(sup), {})
    with pytest.raises(ModelFileError, match="model.json: model record not found"):
        load_model(tmp_path / "empty")

    rec = json.loads((d / "model.json").read_text())
    (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="weights.pt: checksum does not match"):
        load_model(d)
    with pytest.raises(CheckpointError, match="weights.pt: not a readable"):
        load_state_dict_file(d / "weights.pt")

    (d / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="model.json: unreadable"):
        load_model(d)
    (d / "model.json").write_text(json.dumps(rec))
    (d / "arch.json").unlink()
    with pytest.raises(ArchitectureError, match="arch.json: architecture file not found"):
        load_model(d)


def test_weights_of_another_architecture_are_refused(tmp_path):
    sup = SuperNet("seg", 8)
    sup.set_arch(smallest("seg"))
    save_model(tmp_path / "a", export_subnet(sup), {})
    sup.set_arch(hrnet("seg"))
    save_model(tmp_path / "b", export_subnet(sup), {})
    (tmp_path / "a" / "weights.pt").write_bytes((tmp_path / "b" / "weights.pt").read_bytes())
    rec = json.loads((tmp_path / "a" / "model.json").read_text())
    rec["weights_sha256"] = json.loads((tmp_path / "b" / "model.json").read_text())[
        "weights_sha256"]
    (tmp_path / "a" / "model.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="weights.pt: does not fit.*unexpected"):
        load_model(tmp_path / "a")


def test_meta_must_be_json(tmp_path):
    sup = SuperNet("pose", 8)
    with pytest.raises(ValueError, match="JSON"):
        save_model(tmp_path / "m", export_subnet(sup), {"x": object()})
    assert not (tmp_path / "m" / "model.json").exists()
