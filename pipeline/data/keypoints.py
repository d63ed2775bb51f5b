"""COCO keypoint conventions and the top-down box/joint helpers (HRNet's recipe)."""
from __future__ import annotations

import numpy as np

from pipeline.data.transforms import PIXEL_STD

COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle")
NUM_JOINTS = len(COCO_KEYPOINT_NAMES)
# 1-based, as stored in the COCO category record.
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
                 (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5),
                 (4, 6), (5, 7))
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
UPPER_BODY_JOINTS = tuple(range(11))
OKS_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                       .87, .87, .89, .89]) / 10.0


def flip_permutation(num_joints: int = NUM_JOINTS) -> np.ndarray:
    """Index array that swaps left/right joints."""
    perm = np.arange(num_joints)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def box_to_center_scale(box: tuple[float, float, float, float], aspect_ratio: float,
                        padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """COCO xywh box -> (center, scale in units of 200 px), widened to the input's aspect ratio
    (width / height) and padded by `padding`."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float64) * padding
    return center, scale


def fliplr_joints(joints: np.ndarray, vis: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirror joints of an image `width` pixels wide and swap left/right."""
    perm = flip_permutation(joints.shape[0])
    j = joints.copy()
    j[:, 0] = width - 1 - j[:, 0]
    return j[perm], vis[perm].copy()


def half_body_box(joints: np.ndarray, vis: np.ndarray, rng: np.random.Generator,
                  aspect_ratio: float, min_joints: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """HRNet's half-body augmentation: a centre/scale around the upper or lower body joints."""
    visible = vis > 0
    upper = [j for j in range(len(joints)) if visible[j] and j in UPPER_BODY_JOINTS]
    lower = [j for j in range(len(joints)) if visible[j] and j not in UPPER_BODY_JOINTS]
    chosen = upper if (rng.random() < 0.5 and len(upper) > 2) else lower
    if len(chosen) < 2:
        chosen = upper if len(upper) >= 2 else lower
    if len(chosen) < min_joints:
        return None
    pts = joints[chosen, :2]
    center = pts.mean(axis=0)
    lt, rb = pts.min(axis=0), pts.max(axis=0)
    w, h = rb[0] - lt[0], rb[1] - lt[1]
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD]) * 1.5
    return center, scale
