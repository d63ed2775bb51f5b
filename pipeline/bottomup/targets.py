"""Training targets of bottom-up pose: heatmaps of every person, the ignore mask, joint indices.

Coordinates follow the project's heatmap convention (pipeline/data/heatmaps.py): output pixel i
stands for input pixel ``i * stride``, and each Gaussian is centred on the joint's exact sub-pixel
position, so that arg-max plus the quarter offset recovers the side of the peak.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.data.keypoints import NUM_JOINTS

#: HigherHRNet's COCO settings (scalenas.md section 10).
SIGMA = 2.0
MAX_PEOPLE = 30


def person_joints(anns: Sequence[dict], num_joints: int = NUM_JOINTS) -> np.ndarray:
    """(P, J, 3) joints (x, y, labelled) of the people that carry keypoints, in annotation order.

    Crowd annotations and people without an annotated keypoint are left out: they are what the
    mask removes (``ignore_mask``), not people the network is taught to find.
    """
    people = [np.asarray(a["keypoints"], dtype=np.float64).reshape(num_joints, 3)
              for a in anns if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    if not people:
        return np.zeros((0, num_joints, 3), dtype=np.float64)
    out = np.stack(people)
    out[..., 2] = (out[..., 2] > 0).astype(np.float64)
    return out


def ignore_mask(anns: Sequence[dict], height: int, width: int) -> np.ndarray:
    """(H, W) float32 at image resolution: 0 over crowd regions and over people annotated without
    keypoints (their pixels would teach the net that a real person is background), 1 elsewhere."""
    from pycocotools import mask as mask_utils  # lazily: heavy, and only needed with masks
    hit = np.zeros((height, width), dtype=bool)
    for a in anns:
        if not (a.get("iscrowd", 0) or a.get("num_keypoints", 0) == 0):
            continue
        seg = a.get("segmentation")
        if not seg:
            continue
        if isinstance(seg, list):  # polygons
            rles = mask_utils.frPyObjects(seg, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        hit |= mask_utils.decode(rle).astype(bool)
    return (~hit).astype(np.float32)


def resize_mask(mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``mask`` (input resolution) at ``out_hw``: pixel i samples input pixel ``i * stride``,
    the same point the heatmap pixel stands for."""
    h, w = mask.shape
    oh, ow = out_hw
    ys = np.clip(np.round(np.arange(oh) * (h / oh)).astype(np.int64), 0, h - 1)
    xs = np.clip(np.round(np.arange(ow) * (w / ow)).astype(np.int64), 0, w - 1)
    return mask[np.ix_(ys, xs)].astype(np.float32)


def render_heatmaps(joints: np.ndarray, input_hw: tuple[int, int], out_hw: tuple[int, int],
                    sigma: float = SIGMA) -> np.ndarray:
    """(J, h, w) float32: per joint, the maximum over people of a Gaussian at each labelled joint.

    ``joints`` is (P, J, 3) in input pixels. The maximum, not the sum, keeps every peak at 1 where
    people overlap (HigherHRNet's rule), so a nearby person never shifts another's peak.
    """
    joints = np.asarray(joints, dtype=np.float64)
    num = joints.shape[1] if joints.ndim == 3 else NUM_JOINTS
    oh, ow = out_hw
    sy, sx = input_hw[0] / oh, input_hw[1] / ow
    out = np.zeros((num, oh, ow), dtype=np.float32)
    radius = 3 * sigma
    xs = np.arange(ow, dtype=np.float64)
    ys = np.arange(oh, dtype=np.float64)
    for person in joints.reshape(-1, num, 3):
        for j, (x, y, v) in enumerate(person):
            if v <= 0:
                continue
            mx, my = x / sx, y / sy
            if mx + radius < 0 or my + radius < 0 or mx - radius >= ow or my - radius >= oh:
                continue
            x0, x1 = max(0, int(np.floor(mx - radius))), min(ow, int(np.ceil(mx + radius)) + 1)
            y0, y1 = max(0, int(np.floor(my - radius))), min(oh, int(np.ceil(my + radius)) + 1)
            g = (np.exp(-((ys[y0:y1, None] - my) ** 2) / (2 * sigma ** 2))
                 * np.exp(-((xs[None, x0:x1] - mx) ** 2) / (2 * sigma ** 2)))
            np.maximum(out[j, y0:y1, x0:x1], g.astype(np.float32), out=out[j, y0:y1, x0:x1])
    return out


def joint_indices(joints: np.ndarray, input_hw: tuple[int, int], out_hw: tuple[int, int],
                  max_people: int = MAX_PEOPLE) -> np.ndarray:
    """(max_people, J, 2) int64 for the associative-embedding loss: per person and joint, the
    flat index ``j * h * w + y * w + x`` into the (J, h, w) tag maps, and 1 where the joint is
    labelled and falls on the map (0 otherwise: that row is ignored).

    People beyond ``max_people`` are dropped (HigherHRNet's cap of 30).
    """
    joints = np.asarray(joints, dtype=np.float64)
    num = joints.shape[1] if joints.ndim == 3 else NUM_JOINTS
    oh, ow = out_hw
    sy, sx = input_hw[0] / oh, input_hw[1] / ow
    out = np.zeros((max_people, num, 2), dtype=np.int64)
    for p, person in enumerate(joints.reshape(-1, num, 3)[:max_people]):
        px = np.floor(person[:, 0] / sx + 0.5).astype(np.int64)
        py = np.floor(person[:, 1] / sy + 0.5).astype(np.int64)
        ok = (person[:, 2] > 0) & (px >= 0) & (py >= 0) & (px < ow) & (py < oh)
        j = np.arange(num)
        out[p, :, 0] = np.where(ok, j * oh * ow + py * ow + px, 0)
        out[p, :, 1] = ok.astype(np.int64)
    return out


def bottomup_targets(joints: np.ndarray, mask: np.ndarray, input_hw: tuple[int, int],
                     sigma: float = SIGMA, max_people: int = MAX_PEOPLE) -> dict[str, list]:
    """Targets at 1/4 and 1/2 of ``input_hw`` (in that order, the order of the head's outputs):
    ``heatmaps`` (J, h, w), ``masks`` (h, w), and ``joints`` indices for the 1/4 tags only.

    ``joints`` (P, J, 3) and ``mask`` (H, W) are already in input pixels (after augmentation).
    """
    h, w = input_hw
    if h % 4 or w % 4:
        raise ValueError(f"input size {h}x{w} must be divisible by 4")
    sizes = [(h // 4, w // 4), (h // 2, w // 2)]
    return {
        "heatmaps": [render_heatmaps(joints, input_hw, s, sigma) for s in sizes],
        "masks": [resize_mask(mask, s) for s in sizes],
        "joints": [joint_indices(joints, input_hw, sizes[0], max_people)],
    }
