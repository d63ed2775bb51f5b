"""Top-down pose decoding, flip test, OKS NMS and COCO keypoint AP through pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from pipeline.data.keypoints import OKS_SIGMAS, flip_permutation
from pipeline.data.transforms import PIXEL_STD, affine_points, get_affine_transform

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR")
_STAT_INDEX = (0, 1, 2, 3, 4, 5)


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max of (N, J, h, w) heatmaps: coords (N, J, 2) as (x, y) and maxvals (N, J, 1).
    Joints whose maximum is not positive get coords (0, 0)."""
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, J, h, w), got shape {heatmaps.shape}")
    n, j, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, j, -1)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2).astype(np.float32)
    coords = np.stack([idx % w, idx // w], axis=2).astype(np.float32)
    coords *= (maxvals > 0.0)
    return coords, maxvals


def transform_preds(coords: np.ndarray, center: np.ndarray, scale: np.ndarray,
                    heatmap_wh: tuple[int, int]) -> np.ndarray:
    """Heatmap coords (J, 2) of one person -> original image coords."""
    inv = get_affine_transform(center, scale, 0.0, heatmap_wh, inv=True)
    return affine_points(coords, inv).astype(np.float32)


def get_final_preds(heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
                    quarter_offset: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode (N, J, h, w) heatmaps to image coords (N, J, 2) and maxvals (N, J, 1): arg-max,
    then a quarter-pixel shift toward the higher neighbour, then the inverse crop affine."""
    coords, maxvals = get_max_preds(heatmaps)
    n, j, h, w = heatmaps.shape
    if quarter_offset:
        px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
        py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
        inner_x = (px > 0) & (px < w - 1)
        inner_y = (py > 0) & (py < h - 1)
        ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
        hm = heatmaps
        dx = np.where(inner_x, hm[ni, ji, py, np.clip(px + 1, 0, w - 1)]
                      - hm[ni, ji, py, np.clip(px - 1, 0, w - 1)], 0.0)
        dy = np.where(inner_y, hm[ni, ji, np.clip(py + 1, 0, h - 1), px]
                      - hm[ni, ji, np.clip(py - 1, 0, h - 1), px], 0.0)
        coords = coords + 0.25 * np.stack([np.sign(dx), np.sign(dy)], axis=2).astype(np.float32)
    center = np.asarray(center, dtype=np.float64).reshape(n, 2)
    scale = np.asarray(scale, dtype=np.float64).reshape(n, 2)
    preds = np.stack([transform_preds(coords[i], center[i], scale[i], (w, h)) for i in range(n)])
    return preds.reshape(n, j, 2), maxvals


def flip_back(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps of a mirrored input -> heatmaps of the original: mirror and swap left/right."""
    perm = torch.as_tensor(flip_permutation(heatmaps.shape[1]), device=heatmaps.device)
    return heatmaps.flip(3)[:, perm]


def flip_test_average(output: torch.Tensor, output_of_flipped: torch.Tensor,
                      shift: bool = True) -> torch.Tensor:
    """Average the heatmaps with those of the mirrored input. `shift` moves the flipped-back maps one
    pixel right (HRNet's SHIFT_HEATMAP): with heatmap pixel i at input pixel 4i, mirroring is
    off by 3/4 of a heatmap pixel."""
    back = flip_back(output_of_flipped)
    if shift:
        back = torch.cat([back[..., :1], back[..., :-1]], dim=3)
    return (output + back) * 0.5


def oks_iou(g: np.ndarray, d: np.ndarray, area_g: float, area_d: np.ndarray,
            sigmas: np.ndarray = OKS_SIGMAS, in_vis_thre: float | None = None) -> np.ndarray:
    """OKS between one pose g (J, 3) and poses d (M, J, 3), areas as in HRNet's NMS."""
    var = (sigmas * 2) ** 2
    dx = d[:, :, 0] - g[None, :, 0]
    dy = d[:, :, 1] - g[None, :, 1]
    e = (dx ** 2 + dy ** 2) / var / ((area_g + area_d[:, None]) / 2 + np.spacing(1)) / 2
    if in_vis_thre is not None:
        keep = (g[None, :, 2] > in_vis_thre) & (d[:, :, 2] > in_vis_thre)
        num = keep.sum(1)
        s = (np.exp(-e) * keep).sum(1)
        return np.where(num > 0, s / np.maximum(num, 1), 0.0)
    return np.exp(-e).mean(1)


def oks_nms(poses: Sequence[dict], thresh: float = 0.9, sigmas: np.ndarray = OKS_SIGMAS,
            in_vis_thre: float | None = None) -> list[int]:
    """Greedy NMS over poses of ONE image: dicts with 'keypoints' (J, 3), 'score', 'area'.
    Returns the indices kept, best first."""
    if not poses:
        return []
    scores = np.array([p["score"] for p in poses])
    kpts = np.stack([np.asarray(p["keypoints"], dtype=np.float64) for p in poses])
    areas = np.array([p["area"] for p in poses], dtype=np.float64)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        ovr = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, in_vis_thre)
        order = rest[ovr <= thresh]
    return keep


def keypoint_results(preds: np.ndarray, maxvals: np.ndarray, centers: np.ndarray,
                     scales: np.ndarray, box_scores: np.ndarray, image_ids: Iterable[int],
                     in_vis_thre: float = 0.2, oks_thre: float = 0.9) -> list[dict]:
    """Per-person predictions -> COCO results after HRNet's rescoring (box score x mean confidence
    of joints above `in_vis_thre`) and per-image OKS NMS."""
    per_image: dict[int, list[dict]] = {}
    for k, img_id in enumerate(image_ids):
        kp = np.concatenate([preds[k], maxvals[k].reshape(-1, 1)], axis=1)
        conf = kp[:, 2]
        valid = conf > in_vis_thre
        kscore = float(conf[valid].mean()) if valid.any() else 0.0
        area = float(np.prod(np.asarray(scales[k], dtype=np.float64) * PIXEL_STD))
        per_image.setdefault(int(img_id), []).append(
            {"keypoints": kp, "score": kscore * float(box_scores[k]), "area": area})
    results: list[dict] = []
    for img_id in sorted(per_image):
        poses = per_image[img_id]
        for i in oks_nms(poses, oks_thre):
            results.append({"image_id": img_id, "category_id": 1,
                            "keypoints": [round(float(v), 3) for v in poses[i]["keypoints"].ravel()],
                            "score": float(poses[i]["score"])})
    return results


def load_coco(gt: Any):
    """A pycocotools ``COCO`` index of ``gt`` (a path, a keypoint dict, or one already built)."""
    from pycocotools.coco import COCO  # imported lazily: pycocotools is heavy and prints
    if isinstance(gt, COCO):
        return gt
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(gt, (str, Path)):
            return COCO(str(gt))
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        return coco


def coco_keypoint_eval(gt: Any, results: Sequence[dict],
                       image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCO keypoint AP/AP50/AP75/APM/APL/AR of `results` against `gt` (a path, a dataset dict or
    a pycocotools COCO), optionally restricted to `image_ids`. pycocotools' printing is captured
    and dropped so it never reaches our logs. A figure is -1 (pycocotools' convention) when no
    ground truth falls in its area range."""
    from pycocotools.cocoeval import COCOeval
    coco = load_coco(gt)
    if not results:  # loadRes rejects an empty list; nothing predicted scores zero
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(list(results))
        ev = COCOeval(coco, dt, "keypoints")
        ev.params.useSegm = None
        if image_ids is not None:
            ev.params.imgIds = sorted(set(int(i) for i in image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(ev.stats[i]) for name, i in zip(COCO_STAT_NAMES, _STAT_INDEX)}
