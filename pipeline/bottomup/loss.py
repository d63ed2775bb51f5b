"""Losses of bottom-up pose (HigherHRNet, scalenas.md section 10): masked heatmap MSE at each
resolution, and the associative-embedding pull/push loss on the 1/4 tags ("exp" push)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor


def heatmap_loss(pred: Tensor, target: Tensor, mask: Tensor, pos_weight: float = 0.0) -> Tensor:
    """Per-image masked MSE (N,): mean over joints and pixels of
    ``mask * (1 + pos_weight * target) * (pred - target)^2``; ``pos_weight`` 0 is HigherHRNet's.

    ``pred`` and ``target`` are (N, J, h, w), ``mask`` (N, h, w). Masked pixels still count in
    the mean's denominator, as in HigherHRNet, so a crowd region lowers the weight of its image
    rather than inflating the rest. A positive ``pos_weight`` lifts the pixels near joints, which
    are a few per cent of a map: on a short budget the plain mean is minimised by an all-zero
    map and hardly leaves it (docs/bottomup.md, Status)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if mask.shape != (pred.shape[0],) + tuple(pred.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match heatmaps {tuple(pred.shape)}")
    sq = (pred - target) ** 2
    if pos_weight:
        sq = sq * (1.0 + pos_weight * target)
    return (sq * mask[:, None]).mean(dim=(1, 2, 3))


def ae_loss(tags: Tensor, joints: Tensor) -> tuple[Tensor, Tensor]:
    """Associative-embedding (push, pull), each (N,), of tag maps ``tags`` (N, J, h, w).

    ``joints`` (N, P, J, 2) holds flat indices into one image's (J, h, w) tags and a validity
    flag (pipeline.bottomup.targets.joint_indices). Per image, with t_p the mean tag of person p:
    pull = mean over people of the mean squared deviation of their tags from t_p; push =
    sum over ordered pairs p != q of exp(-(t_p - t_q)^2), / (n (n - 1)) / 2. An image with
    fewer than two people has no push; one with none has neither.
    """
    n_img = tags.shape[0]
    flat = tags.reshape(n_img, -1)
    idx, valid = joints[..., 0].long(), joints[..., 1] > 0           # (N, P, J)
    picked = torch.gather(flat, 1, idx.reshape(n_img, -1)).reshape(idx.shape)
    w = valid.to(tags.dtype)
    count = w.sum(dim=2)                                               # (N, P)
    present = count > 0
    mean = (picked * w).sum(dim=2) / count.clamp(min=1)                # (N, P)
    dev = (((picked - mean[..., None]) ** 2) * w).sum(dim=2) / count.clamp(min=1)
    n_people = present.sum(dim=1).to(tags.dtype)                       # (N,)
    pull = (dev * present).sum(dim=1) / n_people.clamp(min=1)
    diff = mean[:, :, None] - mean[:, None, :]
    pair = present[:, :, None] & present[:, None, :]
    pair = pair & ~torch.eye(pair.shape[1], dtype=torch.bool, device=pair.device)[None]
    push_sum = (torch.exp(-diff ** 2) * pair).sum(dim=(1, 2))
    denom = n_people * (n_people - 1)
    push = torch.where(denom > 0, push_sum / denom.clamp(min=1) * 0.5,
                       torch.zeros_like(push_sum))
    return push, pull


@dataclass(frozen=True)
class LossWeights:
    """HigherHRNet's COCO factors: heatmaps 1.0 at each resolution, push and pull 0.001, and
    no extra weight on the pixels near joints (``heatmap_pos``, see heatmap_loss)."""
    heatmaps: tuple[float, ...] = (1.0, 1.0)
    push: float = 1e-3
    pull: float = 1e-3
    heatmap_pos: float = 0.0


def bottomup_loss(outputs: Sequence[Tensor], heatmaps: Sequence[Tensor],
                  masks: Sequence[Tensor], joints: Tensor, num_joints: int,
                  weights: LossWeights = LossWeights()) -> dict[str, Tensor]:
    """Batch-mean loss terms and their ``total`` for the head's outputs: (N, 2J, h, w) at 1/4
    (heatmaps, then tags) and (N, J, 2h, 2w) at 1/2. Tags are pulled and pushed at 1/4 only."""
    if len(outputs) != len(heatmaps) or len(outputs) != len(masks) \
            or len(outputs) != len(weights.heatmaps):
        raise ValueError(f"{len(outputs)} outputs, {len(heatmaps)} heatmap targets, "
                         f"{len(masks)} masks and {len(weights.heatmaps)} weights must agree")
    terms = {}
    for r, (out, hm, mk, wt) in enumerate(zip(outputs, heatmaps, masks, weights.heatmaps)):
        terms[f"heatmap{r}"] = wt * heatmap_loss(out[:, :num_joints], hm, mk,
                                                       weights.heatmap_pos).mean()
    push, pull = ae_loss(outputs[0][:, num_joints:2 * num_joints], joints)
    terms["push"] = weights.push * push.mean()
    terms["pull"] = weights.pull * pull.mean()
    terms["total"] = sum(terms.values())
    return terms
