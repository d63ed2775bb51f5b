"""From a bottom-up network's outputs to people: flip test, aggregation over the two
resolutions, grouping, and the map back to the image (HigherHRNet's single-scale test).

With the flip test the mirrored image's outputs are mirrored back, left and right joints swapped;
the heatmaps of the two passes are averaged and their tags kept side by side (2-D tags), as
HigherHRNet does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from pipeline.bottomup.group import GroupParams, aggregate, coco_results, group
from pipeline.data.keypoints import flip_permutation


def shift_right(maps: Tensor, frac: float) -> Tensor:
    """``maps`` resampled a fraction ``frac`` (0..1) of a pixel to the right along the width:
    out[k] = (1 - frac) * in[k] + frac * in[k - 1] (the first column repeated)."""
    left = torch.cat([maps[..., :1], maps[..., :-1]], dim=-1)
    return (1 - frac) * maps + frac * left


def flip_back(quarter: Tensor, half: Tensor, num_joints: int) -> tuple[Tensor, Tensor]:
    """Outputs of a mirrored input, mirrored back: width reversed, left and right swapped
    (heatmaps and tags alike), and realigned.

    A map pixel i stands for input pixel ``i * stride`` (pipeline.bottomup.targets), so the
    reversed map of a mirrored input of width W = stride * w has pixel i standing for input pixel
    ``W - 1 - stride * (w - 1 - i) = stride * i + stride - 1``: it lies ``(stride - 1) / stride``
    of a pixel to the left of where it belongs (3/4 at 1/4, 1/2 at 1/2), and is moved back by
    that much. Without this the two passes' peaks part by up to 3 input pixels and the average
    blurs them (HigherHRNet's pixel-centre convention has no such offset).
    """
    perm = torch.as_tensor(flip_permutation(num_joints), device=quarter.device)
    q = quarter.flip(-1)
    q = torch.cat([q[:, :num_joints][:, perm], q[:, num_joints:][:, perm]], 1)
    return shift_right(q, 0.75), shift_right(half.flip(-1)[:, perm], 0.5)


def maps(outputs: Sequence[Tensor], flipped: Sequence[Tensor] | None, num_joints: int
         ) -> list[tuple[Tensor, Tensor]]:
    """Per image of the batch: heatmaps (J, H, W) at 1/2 of the input and tags (J, H, W, D),
    D = 2 with the flip test, else 1."""
    out = []
    q, h = outputs
    if flipped is not None:
        fq, fh = flip_back(flipped[0], flipped[1], num_joints)
    for n in range(q.shape[0]):
        hm, tag = aggregate(q[n], h[n], num_joints)
        tags = [tag]
        if flipped is not None:
            fhm, ftag = aggregate(fq[n], fh[n], num_joints)
            hm = (hm + fhm) / 2
            tags.append(ftag)
        out.append((hm, torch.stack(tags, dim=-1)))
    return out


def image_people(heatmaps: Tensor, tags: Tensor, params: GroupParams = GroupParams()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """People (P, J, 3 + D) in pixels of the 1/2 maps, and their scores."""
    return group(heatmaps.float().cpu(), tags.float().cpu().numpy(), params)


def to_image(scale: float, stride: float = 2.0):
    """Map (N, 2) points of the 1/2 maps to pixels of an image resized by ``scale``
    (centre-aligned, pipeline.bottomup.data.resize_matrix)."""
    return lambda xy: (xy * stride + 0.5) / scale - 0.5


@torch.no_grad()
def predict_batch(model: torch.nn.Module, images: Tensor, scales: Sequence[float],
                  image_ids: Sequence[int], num_joints: int, flip: bool = True,
                  params: GroupParams = GroupParams()) -> list[list[dict]]:
    """COCO keypoint results of each image of a batch (same padded size)."""
    out = model(images)
    flipped = model(images.flip(-1)) if flip else None
    results = []
    for (hm, tag), scale, image_id in zip(maps(out, flipped, num_joints), scales, image_ids):
        people, scores = image_people(hm, tag, params)
        results.append(coco_results(people, scores, int(image_id), to_image(float(scale))))
    return results


__all__ = ["shift_right", "flip_back", "image_people", "maps", "predict_batch", "to_image"]
