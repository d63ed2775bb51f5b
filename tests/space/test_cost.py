"""Analytic cost: the paper's table exactly, and agreement with a hook count of real forwards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cost import Cost, count_forward, profile, supernet_params
from pipeline.nets import SuperNet
from pipeline.space.arch import Architecture, make_module
from pipeline.space.official import load_official
from pipeline.space.sample import enforce_pose, hrnet, largest, sample_arch, smallest

MASKS = Path(__file__).parents[3] / "shared" / "masks"
SEG, POSE = (1024, 2048), (256, 192)



def s1() -> Architecture:
    return load_official(MASKS / "seg_w32_S1.npy")


def p2() -> Architecture:
    return load_official(MASKS / "w32_256_P2.npy")


#: Official release files (../shared/masks): only these cases need the shared folder.
OFFICIAL = ("S1", "P2")


def cases(rows):
    """``rows`` as parameters, the official architectures marked ``shared_data``."""
    return [pytest.param(*r, marks=pytest.mark.shared_data) if r[0] in OFFICIAL else r
            for r in rows]


# scalenas.md section 3: (architecture, task, width, input, params, paper-unit GFLOPs)
TABLE = cases([
    ("S1", "seg", 32, SEG, 25_349_139, 265.535),
    ("P2", "pose", 32, POSE, 35_614_321, 8.013),
    ("hrnet", "seg", 32, SEG, 29_546_515, 336.418),
    ("hrnet", "seg", 48, SEG, 65_859_379, 696.176),
    ("hrnet", "pose", 32, POSE, 28_536_113, 7.120),
    ("hrnet", "pose", 48, POSE, 63_595_745, 14.614),
    ("largest", "seg", 32, SEG, 47_850_259, 469.762),
    ("smallest", "seg", 32, SEG, 13_857_491, 200.707),
])


def named(name: str, task: str) -> Architecture:
    return {"S1": s1, "P2": p2, "hrnet": lambda: hrnet(task), "largest": lambda: largest(task),
            "smallest": lambda: smallest(task)}[name]()


@pytest.mark.parametrize("name,task,width,hw,params,gflops", TABLE)
def test_paper_table(name, task, width, hw, params, gflops):
    c = profile(named(name, task), task, width, hw)
    assert c.params == params
    assert f"{c.gflops:.3f}" == f"{gflops:.3f}"


def test_supernet_params():
    assert supernet_params("seg", 32) == 47_850_259
    assert supernet_params("seg", 48) == 106_994_611
    assert supernet_params("pose", 32) == 47_609_841
    assert supernet_params("pose", 48) == 106_461_185
    for task in ("seg", "pose"):
        net = SuperNet(task, 8)
        assert supernet_params(task, 8) == sum(p.numel() for p in net.parameters())


def test_cost_type():
    c = Cost(params=10, macs=2 ** 31)
    assert c.gflops == 2.0
    assert c.to_dict() == {"params": 10, "macs": 2 ** 31, "gflops": 2.0}


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "det"}, "task"), ({"width": 0}, "width"), ({"input_hw": (64, 48)}, "divisible"),
    ({"num_outputs": 0}, "num_outputs")])
def test_bad_arguments(kwargs, match):
    args = {"arch": smallest("seg"), "task": "seg", "width": 8, "input_hw": (64, 64)} | kwargs
    with pytest.raises(ValueError, match=match):
        profile(**args)


@pytest.mark.parametrize("name,task", cases([("S1", "seg"), ("P2", "pose"), ("hrnet", "seg"),
                                             ("hrnet", "pose"), ("largest", "seg"),
                                             ("smallest", "seg"), ("largest", "pose"),
                                             ("smallest", "pose")]))
def test_analytic_equals_hook_count(name, task):
    hw = (64, 64) if task == "seg" else (128, 96)
    net = SuperNet(task, 8)
    arch = named(name, task)
    net.set_arch(arch)
    assert count_forward(net, torch.randn(1, 3, *hw)) == profile(arch, task, 8, hw)


def test_num_outputs_counted():
    net = SuperNet("seg", 8, num_outputs=7)
    x = torch.randn(1, 3, 64, 64)
    assert count_forward(net, x) == profile(net.arch, "seg", 8, (64, 64), num_outputs=7)
    assert profile(net.arch, "seg", 8, (64, 64), 7) != profile(net.arch, "seg", 8, (64, 64))


def any_bits_arch(rng: np.random.Generator, task: str) -> Architecture:
    """Random depths 1..5 and bits at any step < T (past a target's depth too: legal, unsampled)."""
    mods = []
    for nb in (2, 3, 3, 3, 3, 4, 4, 4):
        depths = [int(d) for d in rng.integers(1, 6, size=nb)]
        fus = [[[k for k in range(nb) if k != j and rng.random() < 0.4] for j in range(nb)]
               for _ in range(max(depths))]
        mods.append(make_module(depths, fus))
    arch = Architecture(tuple(mods))
    return enforce_pose(arch) if task == "pose" else arch


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_analytic_equals_hook_count_random(task):
    """200 random architectures per task: 150 from the official sampler, 50 with any bits."""
    hw = (64, 64)
    rng = np.random.default_rng(2024 if task == "seg" else 7)
    net = SuperNet(task, 8)
    x = torch.randn(1, 3, *hw)
    groups = [(p, d) for p in (0.1, 0.2, 0.5, 0.8, 1.0) for d in ([2], [2, 3], [3, 4], [4, 5])]
    archs = [sample_arch(rng, *groups[i % len(groups)], task) for i in range(150)]
    archs += [any_bits_arch(rng, task) for _ in range(50)]
    for arch in archs:
        net.set_arch(arch)
        assert count_forward(net, x) == profile(arch, task, 8, hw), arch.arch_id


def test_count_forward_restores_mode_and_counts_repeats_once():
    net = SuperNet("pose", 8).train()
    before = net.bn1.running_mean.clone()
    count_forward(net, torch.randn(1, 3, 64, 64))
    assert net.training and torch.equal(before, net.bn1.running_mean)

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=True)

        def forward(self, x):
            return self.conv(self.conv(x[:, :2])[:, :2])

    c = count_forward(Twice(), torch.randn(1, 2, 4, 4))
    assert c == Cost(params=2 * 9 * 3 + 3, macs=2 * (2 * 9 * 3 * 16))
