"""Bottom-up losses: masked heatmap MSE, the associative-embedding pull/push by hand, and on a
tiny net a few optimisation steps that pull each person's tags together and push people apart."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.bottomup.group import group
from pipeline.bottomup.loss import LossWeights, ae_loss, bottomup_loss, heatmap_loss
from pipeline.bottomup.targets import joint_indices, person_joints, render_heatmaps
from bottomup_scenes import identity_errors, synthetic_scene


def test_heatmap_loss_masks_and_checks_shapes():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0, :, 0, 0] = 1.0
    mask = torch.ones(2, 4, 4)
    assert heatmap_loss(pred, target, mask).tolist() == [3 / 48, 0.0]
    mask[0, 0, 0] = 0.0
    assert heatmap_loss(pred, target, mask).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="differ"):
        heatmap_loss(pred, target[:, :2], mask)
    with pytest.raises(ValueError, match="mask"):
        heatmap_loss(pred, target, mask[:, :2])


def test_heatmap_pos_weight_lifts_the_pixels_near_joints():
    """Weight 1 + w * target: a missed peak (target 1) costs 1 + w times a false positive of the
    same error on the background (target 0); w = 0 is the plain MSE."""
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    mask = torch.ones(1, 2, 2)
    missed = torch.zeros(1, 1, 2, 2)                      # the peak predicted as 0
    false_pos = target.clone()
    false_pos[0, 0, 1, 1] = 1.0                           # a background pixel predicted as 1
    assert heatmap_loss(missed, target, mask, 0.0).item() == heatmap_loss(missed, target, mask).item()
    assert heatmap_loss(missed, target, mask, 10.0).item() == pytest.approx(11 / 4)
    assert heatmap_loss(false_pos, target, mask, 10.0).item() == pytest.approx(1 / 4)
    w = LossWeights(heatmap_pos=10.0)
    assert w.heatmap_pos == 10.0 and LossWeights().heatmap_pos == 0.0


def _joints(people: list[list[int]], num_joints: int, max_people: int = 4) -> torch.Tensor:
    """(1, P, J, 2) from lists of flat tag indices per person."""
    out = torch.zeros(1, max_people, num_joints, 2, dtype=torch.long)
    for p, idx in enumerate(people):
        for j, i in enumerate(idx):
            out[0, p, j] = torch.tensor([i, 1])
    return out


def test_ae_loss_by_hand():
    tags = torch.tensor([1.0, 1.0, 3.0, 5.0, 9.0]).reshape(1, 1, 1, 5)
    push, pull = ae_loss(tags, _joints([[0, 1], [2, 3]], 2))
    # means 1 and 4; pull = (0 + ((3-4)^2 + (5-4)^2) / 2) / 2; push over the 2 ordered pairs
    assert pull.item() == pytest.approx(0.5)
    assert push.item() == pytest.approx(2 * math.exp(-9) / 2 * 0.5)
    push, pull = ae_loss(tags, _joints([[2, 3]], 2))
    assert push.item() == 0.0 and pull.item() == pytest.approx(1.0)
    push, pull = ae_loss(tags, _joints([], 2))
    assert push.item() == 0.0 and pull.item() == 0.0


def test_bottomup_loss_terms():
    torch.manual_seed(0)
    out = [torch.rand(2, 6, 4, 4, requires_grad=True), torch.rand(2, 3, 8, 8)]
    hms = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8)]
    masks = [torch.ones(2, 4, 4), torch.ones(2, 8, 8)]
    joints = torch.zeros(2, 4, 3, 2, dtype=torch.long)
    joints[:, 0, :, 1] = 1
    joints[:, 0, :, 0] = torch.tensor([0, 17, 34])
    joints[:, 1, :, 1] = 1
    joints[:, 1, :, 0] = torch.tensor([5, 22, 39])
    terms = bottomup_loss(out, hms, masks, joints, 3, LossWeights())
    assert set(terms) == {"heatmap0", "heatmap1", "push", "pull", "total"}
    assert terms["total"].item() == pytest.approx(sum(v.item() for k, v in terms.items()
                                                      if k != "total"))
    terms["total"].backward()
    assert torch.isfinite(out[0].grad).all() and out[0].grad[:, 3:].abs().sum() > 0
    with pytest.raises(ValueError, match="must agree"):
        bottomup_loss(out[:1], hms, masks, joints, 3)


def _separation(tags: np.ndarray, joints: np.ndarray) -> tuple[float, float]:
    """(largest within-person std of tags, smallest gap between two people's mean tags) over
    the images; ``joints`` (N, P, J, 2) flat indices and flags."""
    spread, gap = 0.0, math.inf
    for t, jn in zip(tags, joints):
        flat = t.reshape(-1)
        means = []
        for person in jn:
            v = flat[person[person[:, 1] > 0, 0]]
            if len(v):
                spread = max(spread, float(v.std()))
                means.append(float(v.mean()))
        means.sort()
        gap = min([gap] + [b - a for a, b in zip(means, means[1:])])
    return spread, gap


STEPS = 150


def test_ae_loss_separates_people_on_a_tiny_net():
    """A tiny net sees the ground-truth heatmaps and the pixel coordinates. Before training its
    tags cannot tell people apart; after 150 Adam steps on the AE loss alone, each person's tags
    have gathered (std under 0.1) and people's mean tags are at least 1 apart, so grouping by
    tag (threshold 1) with these tags gives every joint to its own person."""
    rng = np.random.default_rng(0)
    in_hw, out_hw = (128, 128), (32, 32)
    inputs, idx, scenes = [], [], []
    ys, xs = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    for _ in range(2):
        joints = person_joints(synthetic_scene(rng, 4, in_hw, (0.35, 0.6), 0.3))
        hm = render_heatmaps(joints, in_hw, out_hw)
        inputs.append(np.concatenate([hm, ys[None], xs[None]]).astype(np.float32))
        idx.append(joint_indices(joints, in_hw, out_hw, max_people=8))
        scenes.append((hm, joints))
    x = torch.from_numpy(np.stack(inputs))
    jt = torch.from_numpy(np.stack(idx))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(19, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(16, 17, 1))
    with torch.no_grad():
        spread0, gap0 = _separation(net(x).numpy(), jt.numpy())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(STEPS):
        push, pull = ae_loss(net(x), jt)
        opt.zero_grad()
        (push + pull).mean().backward()
        opt.step()
    with torch.no_grad():
        tags = net(x).numpy()
    spread, gap = _separation(tags, jt.numpy())
    print(f"before: spread {spread0:.3f} gap {gap0:.3f}; after: spread {spread:.3f} gap {gap:.3f}")
    assert gap0 < 0.5
    assert spread < 0.1 and gap > 1.0
    for (hm, joints), t in zip(scenes, tags):
        people, _ = group(hm, t)
        assert identity_errors(people, joints, 4, 3.0) == []
