"""Geometric and photometric transforms shared by the segmentation and pose pipelines.

All affine matrices here use the pixel-index convention of OpenCV/HRNet (pixel centres at
integer coordinates) and map *input* coordinates to *output* coordinates; `warp_affine` converts to
Pillow's continuous convention in one place.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_STD = 200.0  # HRNet expresses box scales in units of 200 pixels

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-sample generator: identical draws for a sample whatever the worker count or order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def get_affine_transform(center: Sequence[float], scale: Sequence[float], rot: float,
                         output_size: Sequence[int], inv: bool = False) -> np.ndarray:
    """2x3 similarity mapping the box (center, scale*200 wide, rotated by `rot` degrees) to an
    output of `output_size` = (width, height); `inv=True` gives the output->input map.

    Equivalent to HRNet's three-point construction (scale[0] sets the zoom, the box centre goes to
    the output centre (w/2, h/2), positive `rot` turns the crop counter-clockwise).
    """
    src_w = float(scale[0]) * PIXEL_STD
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    k = dst_w / src_w
    t = np.deg2rad(rot)
    cs, sn = np.cos(t), np.sin(t)
    # dst = k * R(-rot) @ (src - center) + dst_center
    lin = k * np.array([[cs, sn], [-sn, cs]], dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    off = np.array([dst_w * 0.5, dst_h * 0.5]) - lin @ c
    mat = np.concatenate([lin, off[:, None]], axis=1)
    return invert_affine(mat) if inv else mat


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([mat, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def affine_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ mat[:, :2].T + mat[:, 2]


def scale_crop_flip_matrix(src_hw: tuple[int, int], scaled_hw: tuple[int, int],
                           offset_xy: tuple[int, int], crop_hw: tuple[int, int],
                           flip: bool) -> np.ndarray:
    """Input->output matrix of "resize to `scaled_hw`, crop at `offset_xy`, optionally mirror".

    Done as one warp so the cost follows the crop, not the (up to 2.1x) rescaled image. The resize
    is centre-aligned like cv2.resize: index coords map as (x + .5) * s - .5.
    """
    sy = scaled_hw[0] / src_hw[0]
    sx = scaled_hw[1] / src_hw[1]
    ox, oy = offset_xy
    mat = np.array([[sx, 0.0, 0.5 * sx - 0.5 - ox],
                    [0.0, sy, 0.5 * sy - 0.5 - oy]])
    if flip:
        mat = np.array([[-1.0, 0.0, crop_hw[1] - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([mat, [0, 0, 1]])
    return mat


def warp_affine(img: Image.Image, mat: np.ndarray, output_wh: tuple[int, int], *,
                nearest: bool = False, fill: int | tuple[int, ...] = 0) -> Image.Image:
    """Warp `img` with the input->output index-convention matrix `mat` (like cv2.warpAffine)."""
    inv = invert_affine(mat)
    # Pillow samples at continuous coords (index + 0.5): conjugate the matrix by that half shift.
    (a, b, c), (d, e, f) = inv
    coeffs = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return img.transform((int(output_wh[0]), int(output_wh[1])), Image.Transform.AFFINE,
                         tuple(float(v) for v in coeffs), resample=resample, fillcolor=fill)


def to_normalized_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float32 3xHxW, scaled to [0, 1] and ImageNet-normalised."""
    arr = np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only buffers
    t = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
    return t.sub_(_MEAN).div_(_STD)


def denormalize(t: torch.Tensor) -> np.ndarray:
    """Inverse of `to_normalized_tensor` (for figures and checks): uint8 HxWx3."""
    x = (t.detach().cpu().float() * _STD + _MEAN).clamp(0, 1).mul(255).round()
    return x.permute(1, 2, 0).to(torch.uint8).numpy()
