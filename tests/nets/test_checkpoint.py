"""Official checkpoints load as they are and reproduce the official output; bad files fail clearly."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from pipeline.nets import CheckpointError, SuperNet, load_into, load_state_dict_file
from pipeline.space.official import load_official

SHARED = Path(__file__).parents[3] / "shared"
FIXTURE = SHARED / "reference" / "official_seg_w8_S1.pt"

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="official fixture not available")


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def test_official_output_is_reproduced(fixture):
    assert fixture["task"] == "seg" and fixture["width"] == 8
    net = SuperNet(fixture["task"], fixture["width"], fixture["num_outputs"])
    load_into(net, load_state_dict_file(FIXTURE), str(FIXTURE))
    net.set_arch(load_official(SHARED / "masks" / fixture["arch_file"]))
    net.eval()
    with torch.no_grad():
        out = net(fixture["input"])
    ref = fixture["output"]
    assert out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 1e-5


def test_wrappers_and_prefixes(fixture, tmp_path):
    sd = fixture["state_dict"]
    variants = {
        "plain": dict(sd),
        "wrapped": {"state_dict": dict(sd), "epoch": torch.tensor(3)},
        "ddp": {"module." + k: v for k, v in sd.items()},
        "fullmodel": {**{"model." + k: v for k, v in sd.items()},
                      "loss.criterion.weight": torch.ones(19)},
        "ddp_fullmodel": {"module.model." + k: v for k, v in sd.items()},
    }
    for name, obj in variants.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        got = load_state_dict_file(path)
        assert list(got) == list(sd), name
        assert torch.equal(got["conv1.weight"], sd["conv1.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint file not found"):
        load_state_dict_file(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.pt"
    path.write_bytes(FIXTURE.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable PyTorch checkpoint"):
        load_state_dict_file(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_state_dict_file(path)
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="list.pt: expected a state_dict"):
        load_state_dict_file(path)


class Payload:
    """Stands for arbitrary pickled code: weights_only loading must refuse it."""


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: holds Python objects other "
                       r"than tensors and plain data \(test_checkpoint.Payload\)"):
        load_state_dict_file(path)
    path = tmp_path / "counter.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": collections.Counter(a=1)}, path)
    with pytest.raises(CheckpointError, match="counter.pt: not a state_dict: entry 'x'"):
        load_state_dict_file(path)


def test_other_width_is_named(fixture):
    net = SuperNet("seg", 16)
    with pytest.raises(CheckpointError, match=r"width 8 .*width 16.*shape mismatch"):
        load_into(net, fixture["state_dict"], "w8.pt")


def test_other_task_is_named(fixture):
    net = SuperNet("pose", 8)
    with pytest.raises(CheckpointError, match=r"w8.pt: .*seg network.*pose network.*missing"):
        load_into(net, fixture["state_dict"], "w8.pt")


def test_failed_load_leaves_model_untouched(fixture):
    net = SuperNet("seg", 8)
    before = net.conv1.weight.clone()
    sd = dict(fixture["state_dict"])
    del sd["last_layer.3.bias"]
    with pytest.raises(CheckpointError, match="1 missing key.*last_layer.3.bias"):
        load_into(net, sd, "partial.pt")
    assert torch.equal(before, net.conv1.weight)
