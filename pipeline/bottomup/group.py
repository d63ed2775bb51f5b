"""Decoding and grouping of bottom-up pose (HigherHRNet's parser, scalenas.md section 10).

From per-joint heatmaps (J, h, w) and tags (J, h, w[, D]):
1. peaks: max-pool NMS, then the top ``max_people`` candidates per joint;
2. grouping: joint by joint in HigherHRNet's order, candidates above the detection threshold are
   matched to the people found so far by the Hungarian algorithm on tag distance (rounded, so the
   heatmap value breaks ties), over the pairs nearer than the tag threshold; a candidate left
   unmatched starts a new person;
3. adjustment: a quarter pixel toward the higher neighbour on each axis;
4. refinement: a person's missing joint is taken at the arg-max of heatmap minus rounded distance
   to the person's mean tag.
People come out in heatmap pixels (pixel i stands for input pixel ``i * stride``), and
``coco_results`` maps them to the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from pipeline.data.keypoints import NUM_JOINTS

#: HigherHRNet's COCO order: head and shoulders first, hips before the limbs' ends, so that each
#: joint is matched against people whose mean tag already rests on the sturdier joints.
JOINT_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


#: Assignment costs: above any allowed pair (at most 100 with rounded distances), and above that.
_NEW_PERSON = 1e4
_FORBIDDEN = 1e8


@dataclass(frozen=True)
class GroupParams:
    """HigherHRNet's COCO test settings."""
    max_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    use_detection_val: bool = True
    joint_order: tuple[int, ...] = JOINT_ORDER


def _as_tags(tags: np.ndarray | torch.Tensor) -> np.ndarray:
    """(J, h, w, D) float array from (J, h, w) or (J, h, w, D)."""
    t = tags.detach().cpu().numpy() if isinstance(tags, torch.Tensor) else np.asarray(tags)
    return t[..., None] if t.ndim == 3 else t


def find_peaks(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor,
               params: GroupParams = GroupParams()
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top candidates per joint after NMS: locations (J, K, 2) int (x, y), values (J, K), tags
    (J, K, D), K = ``max_people``, best first; slots without a peak hold value 0.

    A peak exactly between two pixels leaves a plateau of equal maxima; only the best-ranked of
    them is kept, so one joint never becomes two candidates.
    """
    det = torch.as_tensor(heatmaps, dtype=torch.float32)
    tag = _as_tags(tags)
    num, h, w = det.shape
    pad = params.nms_kernel // 2
    pooled = F.max_pool2d(det[None], params.nms_kernel, 1, pad)[0]
    det = (det * (pooled == det)).reshape(num, -1)
    k = min(params.max_people, h * w)
    val, ind = det.topk(k, dim=1)
    val, ind = val.numpy().copy(), ind.numpy()
    xs, ys = ind % w, ind // w
    for j in range(num):
        for a in range(1, k):
            if val[j, a] <= 0:
                break
            same = ((val[j, :a] == val[j, a]) & (np.abs(xs[j, :a] - xs[j, a]) <= pad)
                    & (np.abs(ys[j, :a] - ys[j, a]) <= pad))
            if same.any():
                val[j, a] = 0.0
    order = np.argsort(-val, axis=1, kind="stable")
    val = np.take_along_axis(val, order, 1)
    xs, ys = np.take_along_axis(xs, order, 1), np.take_along_axis(ys, order, 1)
    tag_k = tag[np.arange(num)[:, None], ys, xs]
    return np.stack([xs, ys], axis=2), val, tag_k


def match_by_tag(loc: np.ndarray, val: np.ndarray, tag: np.ndarray,
                 params: GroupParams = GroupParams()) -> np.ndarray:
    """People (P, J, 3 + D): x, y, value, tag per joint (all zero where missing), from the
    candidates of ``find_peaks``."""
    num, _, dim = tag.shape
    people: list[np.ndarray] = []
    person_tags: list[list[np.ndarray]] = []
    for j in params.joint_order:
        keep = val[j] > params.detection_threshold
        if not keep.any():
            continue
        joints = np.concatenate([loc[j][keep].astype(np.float64), val[j][keep, None],
                                 tag[j][keep]], axis=1)
        tags = tag[j][keep]
        n_grouped = min(len(people), params.max_people)
        assigned = np.full(len(joints), -1)
        if n_grouped:
            means = np.array([np.mean(person_tags[p], axis=0) for p in range(n_grouped)])
            dist = np.linalg.norm(tags[:, None, :] - means[None, :, :], axis=2)
            cost = np.round(dist) * 100 - joints[:, 2:3] if params.use_detection_val else dist
            # Pairs at or beyond the threshold are forbidden, and each candidate may start a new
            # person instead at a cost above any allowed pair. HigherHRNet solves the assignment
            # over all pairs and rejects far ones afterwards; with 1-D tags that leaves ties in
            # which a far pair displaces a near one, and a person is split in two.
            cost = np.where(dist < params.tag_threshold, cost, _FORBIDDEN)
            new_person = np.full((len(joints), len(joints)), _NEW_PERSON)
            rows, cols = linear_sum_assignment(np.concatenate([cost, new_person], axis=1))
            for r, c in zip(rows, cols):
                if c < n_grouped and dist[r, c] < params.tag_threshold:
                    assigned[r] = c
        for r, joint in enumerate(joints):
            if assigned[r] >= 0:
                people[assigned[r]][j] = joint
                person_tags[assigned[r]].append(tags[r])
            else:
                person = np.zeros((num, 3 + dim))
                person[j] = joint
                people.append(person)
                person_tags.append([tags[r]])
    if not people:
        return np.zeros((0, num, 3 + dim))
    return np.stack(people)


def adjust(people: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Shift every found joint a quarter pixel toward its higher neighbour, on each axis (none
    where the neighbours are equal or the joint is on the border)."""
    out = people.copy()
    _, h, w = heatmaps.shape
    for p, j in zip(*np.nonzero(people[:, :, 2] > 0)):
        x, y = int(people[p, j, 0]), int(people[p, j, 1])
        hm = heatmaps[j]
        if 0 < x < w - 1:
            out[p, j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
        if 0 < y < h - 1:
            out[p, j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    return out


def refine(person: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Fill ``person``'s missing joints (value 0): per joint, the arg-max of heatmap minus the
    rounded distance to the person's mean tag, adjusted a quarter pixel, if its value is > 0."""
    out = person.copy()
    found = person[:, 2] > 0
    missing = np.nonzero(~found)[0]
    if not found.any() or not len(missing):
        return out
    _, h, w = heatmaps.shape
    xs = np.round(person[found, 0]).astype(np.int64).clip(0, w - 1)
    ys = np.round(person[found, 1]).astype(np.int64).clip(0, h - 1)
    mean = tags[np.nonzero(found)[0], ys, xs].mean(axis=0)
    for j in missing:
        dist = np.linalg.norm(tags[j] - mean, axis=-1)
        score = heatmaps[j] - np.round(dist)
        y, x = np.unravel_index(np.argmax(score), score.shape)
        v = heatmaps[j, y, x]
        if v > 0:
            out[j, :2] = (x, y)
            out[j, 2] = v
            out[j, 3:] = tags[j, y, x]
            out[j:j + 1] = adjust(out[None, j:j + 1], heatmaps[j:j + 1])[0]
    return out


def group(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor,
          params: GroupParams = GroupParams(), do_adjust: bool = True, do_refine: bool = True
          ) -> tuple[np.ndarray, np.ndarray]:
    """People (P, J, 3 + D) in heatmap pixels and their scores (P,): the mean joint value over
    all J joints after adjustment and before refinement (HigherHRNet's score)."""
    det = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) \
        else np.asarray(heatmaps)
    tag = _as_tags(tags)
    if det.ndim != 3 or tag.shape[:3] != det.shape:
        raise ValueError(f"heatmaps {det.shape} and tags {tag.shape} must be (J, h, w)")
    people = match_by_tag(*find_peaks(det, tag, params), params)
    if do_adjust:
        people = adjust(people, det)
    scores = people[:, :, 2].mean(axis=1) if len(people) else np.zeros(0)
    if do_refine:
        people = np.stack([refine(p, det, tag) for p in people]) if len(people) else people
    return people, scores


def upsample2(maps: torch.Tensor) -> torch.Tensor:
    """(..., h, w) maps at twice the resolution in the heatmap convention: pixel i goes to 2i and
    the pixels between are interpolated linearly (the last row and column are repeated)."""
    h, w = maps.shape[-2:]
    flat = maps.reshape(-1, 1, h, w)
    up = F.interpolate(flat, size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=True)
    up = F.pad(up, (0, 1, 0, 1), mode="replicate")
    return up.reshape(*maps.shape[:-2], 2 * h, 2 * w)


def aggregate(quarter: torch.Tensor, half: torch.Tensor, num_joints: int = NUM_JOINTS
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (J, 2h, 2w) and tags (J, 2h, 2w) at 1/2 of the input from one image's head
    outputs, (2J, h, w) at 1/4 and (J, 2h, 2w) at 1/2: the 1/4 heatmaps and tags are brought to
    1/2 and the heatmaps of both resolutions averaged (HigherHRNet's aggregation)."""
    if quarter.shape[0] != 2 * num_joints or half.shape != (num_joints, 2 * quarter.shape[1],
                                                             2 * quarter.shape[2]):
        raise ValueError(f"outputs {tuple(quarter.shape)} and {tuple(half.shape)} are not "
                         f"(2J, h, w) and (J, 2h, 2w) with J = {num_joints}")
    up = upsample2(quarter)
    return (up[:num_joints] + half) / 2, up[num_joints:]


def coco_results(people: np.ndarray, scores: np.ndarray, image_id: int,
                 to_image: Callable[[np.ndarray], np.ndarray]) -> list[dict]:
    """COCO keypoint results of one image; ``to_image`` maps (J, 2) heatmap pixels to image
    pixels (the inverse of the input transform, times the stride)."""
    results = []
    for person, score in zip(people, scores):
        xy = to_image(person[:, :2].astype(np.float64))
        kps = np.concatenate([xy, person[:, 2:3]], axis=1)
        results.append({"image_id": int(image_id), "category_id": 1,
                        "keypoints": [float(v) for v in kps.reshape(-1)],
                        "score": float(score)})
    return results


def heatmap_to_image(stride: float, scale: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """``to_image`` for an input that is the image resized by ``scale`` (no crop or rotation)."""
    return lambda xy: xy * (stride / scale)


__all__ = ["GroupParams", "JOINT_ORDER", "NUM_JOINTS", "adjust", "aggregate", "coco_results",
           "find_peaks", "group", "heatmap_to_image", "match_by_tag", "refine", "upsample2"]
