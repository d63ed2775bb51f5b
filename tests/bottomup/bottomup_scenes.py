"""Shared helpers of the bottom-up tests: synthetic multi-person layouts, ground-truth maps
rendered from annotations, and the identity check of a grouping."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.bottomup.targets import person_joints, render_heatmaps

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_SAMPLES = {name: SHARED / name / "annotations" / "person_keypoints_sample.json"
                for name in ("coco_sample", "ochuman_sample")}

# A standing person in body units (hip centre at the origin, height 1): COCO joint order.
_BODY = np.array([
    (0.0, -0.86), (0.03, -0.89), (-0.03, -0.89), (0.07, -0.87), (-0.07, -0.87),
    (0.13, -0.72), (-0.13, -0.72), (0.2, -0.52), (-0.2, -0.52), (0.24, -0.33), (-0.24, -0.33),
    (0.09, 0.0), (-0.09, 0.0), (0.1, 0.25), (-0.1, 0.25), (0.11, 0.5), (-0.11, 0.5)])


def synthetic_scene(rng: np.random.Generator, n_people: int, hw: tuple[int, int],
                    heights: tuple[float, float], spread: float) -> list[dict]:
    """COCO-style annotations of ``n_people`` in an ``hw`` image, heights a fraction of the image
    height drawn log-uniformly from ``heights``, hips within ``spread`` of the image's width of
    a common centre (small spread: people overlap), limbs jittered, some joints unlabelled."""
    h, w = hw
    centre = np.array([w / 2, h / 2]) + rng.uniform(-0.1, 0.1, 2) * (w, h)
    anns = []
    for p in range(n_people):
        height = h * np.exp(rng.uniform(np.log(heights[0]), np.log(heights[1])))
        hip = centre + rng.uniform(-spread, spread, 2) * w
        body = _BODY + rng.normal(0, 0.03, _BODY.shape)
        body[:, 0] *= rng.choice([-1, 1]) * rng.uniform(0.8, 1.2)
        pts = body * height + hip
        vis = (rng.random(17) > 0.15) & (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) \
            & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        kps = np.zeros((17, 3))
        kps[vis, :2] = np.round(pts[vis], 2)
        kps[vis, 2] = 2
        if not vis.any():
            continue
        x0, y0 = kps[vis, :2].min(0)
        x1, y1 = kps[vis, :2].max(0)
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                     "keypoints": [float(v) for v in kps.reshape(-1)],
                     "num_keypoints": int(vis.sum()), "bbox": [float(x0), float(y0), bw, bh],
                     # a body-like share of the box, as the built-in data (OKS scale)
                     "area": float(0.5 * max(bw, 0.3 * bh) * bh)})
    return anns


def gt_maps(joints: np.ndarray, input_hw: tuple[int, int], out_hw: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (J, h, w) and tags (J, h, w) rendered from ``joints`` (P, J, 3) in input pixels:
    person p's tag is the constant p + 1 wherever its Gaussian of that joint is the largest."""
    per_person = np.stack([render_heatmaps(person[None], input_hw, out_hw) for person in joints])
    heatmaps = per_person.max(axis=0)
    owner = per_person.argmax(axis=0)
    tags = np.where(heatmaps > 0, owner + 1, 0).astype(np.float32)
    return heatmaps, tags


def identity_errors(people: np.ndarray, joints: np.ndarray, stride: float, tol: float
                    ) -> list[str]:
    """Check that each person's labelled joints all lie in one decoded person of its own.

    ``people`` (D, J, >=3) in heatmap pixels, ``joints`` (P, J, 3) in input pixels. A decoded
    joint stands for person p's joint j when it lies within ``tol`` input pixels of it (two
    people's joints closer than that are one grid cell apart: position cannot tell them apart,
    only the grouping can). Person p's decoded person is the one holding most of p's joints; the
    check fails when it does not hold all of them, or when two people share one. Joints a person
    has no label for are not checked (refinement fills them from the maps).
    Returns a description of each failure (empty when the grouping is exact)."""
    errors = []
    owner: dict[int, int] = {}
    for p, person in enumerate(joints):
        labelled = np.nonzero(person[:, 2] > 0)[0]
        held = np.zeros((len(people), len(labelled)), dtype=bool)
        for c, j in enumerate(labelled):
            dist = np.linalg.norm(people[:, j, :2] * stride - person[j, :2], axis=1)
            held[:, c] = (people[:, j, 2] > 0) & (dist <= tol)
        if not len(people):
            errors.append(f"person {p}: nothing decoded")
            continue
        d = int(held.sum(axis=1).argmax())
        missing = [int(j) for c, j in enumerate(labelled) if not held[d, c]]
        if missing:
            errors.append(f"person {p}: joints {missing} not in its decoded person {d}")
        if d in owner:
            errors.append(f"people {owner[d]} and {p} share decoded person {d}")
        owner[d] = p
    return errors


def load_real(name: str) -> dict:
    return json.loads(REAL_SAMPLES[name].read_text())
