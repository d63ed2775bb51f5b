"""The supernet: structure, official names, arch switching, module semantics, only-active compute."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.nets import SuperNet
from pipeline.nets.blocks import BasicBlock
from pipeline.nets.module import ScaleModule
from pipeline.space.arch import (BRANCHES, Architecture, ArchitectureError, make_module)
from pipeline.space.sample import hrnet, largest, sample_arch, smallest

SHARED = Path(__file__).parents[3] / "shared"
FIXTURE = SHARED / "reference" / "official_seg_w8_S1.pt"



def random_module(rng: np.random.Generator, nb: int, p: float = 0.5):
    """Any valid module, including bits at steps past a target's depth (legal, never sampled)."""
    depths = [int(d) for d in rng.integers(1, 6, size=nb)]
    T = max(depths)
    fus = [[[k for k in range(nb) if k != j and rng.random() < p] for j in range(nb)]
           for _ in range(T)]
    return make_module(depths, fus)


def test_state_dict_keys_are_the_official_ones():
    if not FIXTURE.exists():
        pytest.skip("official fixture not available")
    ref = torch.load(FIXTURE, weights_only=True)["state_dict"]
    ours = SuperNet("seg", 8).state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ours)


def test_pose_supernet_keys_and_head():
    keys = SuperNet("pose", 8).state_dict().keys()
    assert "final_layer.weight" in keys and "final_layer.bias" in keys
    assert not any(k.startswith("last_layer") for k in keys)
    assert "stage4.2.fuse_layers_5.3.0.2.1.weight" in keys  # dead in pose, but present (official)


@pytest.mark.parametrize("task,hw,out", [("seg", (64, 64), (2, 19, 16, 16)),
                                         ("pose", (128, 96), (2, 17, 32, 24))])
def test_output_shape(task, hw, out):
    net = SuperNet(task, 8).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, *hw)).shape == out


def test_num_outputs():
    net = SuperNet("seg", 8, num_outputs=5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape[1] == 5


def test_input_not_divisible_by_32():
    net = SuperNet("pose", 8).eval()
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 3, 64, 48))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="task"):
        SuperNet("detection", 8)
    with pytest.raises(ValueError, match="width"):
        SuperNet("seg", 0)


def test_bn_momentum_follows_the_official_code():
    for task, mom in (("seg", 0.01), ("pose", 0.1)):
        net = SuperNet(task, 8)
        assert net.bn1.momentum == mom
        assert net.stage3[1].branches[2][4].bn2.momentum == mom
        assert net.stage4[0].fuse_layers_2[3][0][2][1].momentum == mom   # fine-to-coarse
        assert net.stage4[0].fuse_layers_2[0][3][1].momentum == 0.1      # coarse-to-fine
    assert isinstance(net.stage4[0].fuse_layers_2[0][3][2], nn.Upsample)


def test_init_is_seeded_and_hrnet_like():
    a, b, c = SuperNet("seg", 8, seed=1), SuperNet("seg", 8, seed=1), SuperNet("seg", 8, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert abs(float(sa["stage2.0.branches.0.0.conv1.weight"].std()) - 0.001) < 3e-4
    assert torch.equal(sa["bn1.weight"], torch.ones(64))
    assert torch.equal(sa["bn1.bias"], torch.zeros(64))


def test_default_arch_is_largest_and_set_arch_validates():
    net = SuperNet("pose", 8)
    assert net.arch == largest("pose")
    net.set_arch(hrnet("pose"))
    assert net.arch == hrnet("pose")
    bad = smallest("seg")  # branch 0 of the last module fuses nothing: fine for seg, not for pose
    with pytest.raises(ArchitectureError, match="pose"):
        net.set_arch(bad)
    assert net.arch == hrnet("pose")
    with pytest.raises(TypeError):
        net.set_arch("hrnet")  # type: ignore[arg-type]


def test_set_arch_changes_no_weight():
    net = SuperNet("seg", 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.set_arch(smallest("seg"))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def reference_module_forward(m: ScaleModule, spec, xs):
    """The module semantics of scalenas.md section 1, written naively and independently."""
    xs = list(xs)
    for s in range(max(spec.depths)):
        xs = [m.branches[i][s](x) if s < spec.depths[i] else x for i, x in enumerate(xs)]
        fuse = getattr(m, f"fuse_layers_{s + 1}")
        new = []
        for j in range(len(xs)):
            y = xs[j]
            for k in spec.fusions[s][j]:
                y = y + fuse[j][k](xs[k])
            new.append(torch.relu(y))
        xs = new
    return xs


def test_module_forward_matches_the_reference_semantics():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    m = ScaleModule((8, 16, 32, 64), 0.1).eval()
    for mod in m.modules():  # non-trivial BN so that every term matters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.normal_()
    xs = [torch.relu(torch.randn(1, 8 * 2 ** b, 16 >> b, 16 >> b)) for b in range(4)]
    for _ in range(10):
        spec = random_module(rng, 4)
        m.set_arch(spec)
        with torch.no_grad():
            got, want = m(xs), reference_module_forward(m, spec, xs)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def count_block_calls(net: nn.Module, x: torch.Tensor) -> int:
    calls = []
    hooks = [b.register_forward_hook(lambda *a: calls.append(1))
             for b in net.modules() if isinstance(b, BasicBlock)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return len(calls)


def test_only_active_blocks_run():
    net = SuperNet("seg", 8).eval()
    x = torch.randn(1, 3, 64, 64)
    for arch in (smallest("seg"), largest("seg"),
                 sample_arch(np.random.default_rng(3), 0.5, [2, 3, 4, 5], "seg")):
        net.set_arch(arch)
        assert count_block_calls(net, x) == sum(sum(m.depths) for m in arch.modules)


def test_only_active_parameters_get_gradients():
    net = SuperNet("seg", 8).train()
    arch = sample_arch(np.random.default_rng(5), 0.3, [2, 3], "seg")
    net.set_arch(arch)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    m = arch.modules[1]
    mod = net.stage3[0]
    for b, d in enumerate(m.depths):
        assert mod.branches[b][d - 1].conv1.weight.grad is not None
        if d < 5:
            assert mod.branches[b][d].conv1.weight.grad is None
    on = {(s, j, k) for s, st in enumerate(m.fusions) for j, srcs in enumerate(st) for k in srcs}
    for s in range(5):
        for j in range(3):
            for k in range(3):
                if k != j:
                    layer = getattr(mod, f"fuse_layers_{s + 1}")[j][k]
                    assert (layer[0].weight.grad is not None if k > j
                            else layer[0][0].weight.grad is not None) == ((s, j, k) in on)


def test_module_count_and_branches():
    net = SuperNet("seg", 8)
    assert [m.num_branches for m in net.scale_modules()] == list(BRANCHES)
    assert isinstance(net.arch, Architecture)
