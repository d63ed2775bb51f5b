"""Affine math, warping conventions, heatmaps and per-sample randomness."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.data.heatmaps import generate_heatmaps
from pipeline.data.keypoints import box_to_center_scale, flip_permutation, fliplr_joints
from pipeline.data.transforms import (affine_points, denormalize, get_affine_transform,
                                      sample_rng, scale_crop_flip_matrix, to_normalized_tensor,
                                      warp_affine)


def _hrnet_three_point(center, scale, rot, output_size):
    """HRNet's construction (three point pairs), solved with numpy instead of OpenCV."""
    src_w = scale[0] * 200.0
    dst_w, dst_h = output_size
    t = np.pi * rot / 180
    sn, cs = np.sin(t), np.cos(t)
    src_dir = np.array([0 * cs - (src_w * -0.5) * sn, 0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0, dst_w * -0.5])
    src = np.array([center, center + src_dir, [0, 0]], dtype=np.float64)
    dst = np.array([[dst_w * 0.5, dst_h * 0.5], [dst_w * 0.5, dst_h * 0.5] + dst_dir, [0, 0]])
    for p in (src, dst):
        d = p[0] - p[1]
        p[2] = p[1] + np.array([-d[1], d[0]])
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
def test_affine_matches_hrnet_construction(rot):
    center, scale = np.array([320.5, 200.25]), np.array([1.3, 1.7333])
    m = get_affine_transform(center, scale, rot, (192, 256))
    np.testing.assert_allclose(m, _hrnet_three_point(center, scale, rot, (192, 256)), atol=1e-9)
    inv = get_affine_transform(center, scale, rot, (192, 256), inv=True)
    pts = np.array([[1.0, 2.0], [300.0, -5.0]])
    np.testing.assert_allclose(affine_points(affine_points(pts, m), inv), pts, atol=1e-9)
    np.testing.assert_allclose(affine_points(center[None], m), [[96.0, 128.0]], atol=1e-9)


def test_warp_uses_pixel_index_convention():
    a = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    im = Image.fromarray(a)
    shifted = np.array(warp_affine(im, np.array([[1.0, 0, -1], [0, 1, 0]]), (8, 8), fill=255))
    np.testing.assert_array_equal(shifted[:, :7], a[:, 1:])
    assert (shifted[:, 7] == 255).all()
    up = np.array(warp_affine(im, np.array([[2.0, 0, 0], [0, 2, 0]]), (16, 16), nearest=True))
    np.testing.assert_array_equal(up[::2, ::2], a)  # even output pixels sit on input pixels


def test_scale_crop_flip_matrix_maps_corners():
    m = scale_crop_flip_matrix((100, 200), (50, 100), (10, 5), (32, 64), flip=False)
    # centre-aligned resize by 1/2: input pixel 0.5 -> output 0 - offset
    np.testing.assert_allclose(affine_points([[0.5, 0.5]], m), [[-10.0, -5.0]])
    mf = scale_crop_flip_matrix((100, 200), (50, 100), (10, 5), (32, 64), flip=True)
    np.testing.assert_allclose(affine_points([[0.5, 0.5]], mf), [[63 + 10.0, -5.0]])


def test_normalisation_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_normalized_tensor(arr)
    assert t.shape == (3, 5, 7) and t.dtype.is_floating_point
    np.testing.assert_array_equal(denormalize(t), arr)


def test_sample_rng_depends_on_seed_epoch_index():
    draw = lambda *k: sample_rng(*k).random(3)  # noqa: E731
    np.testing.assert_array_equal(draw(0, 1, 2), draw(0, 1, 2))
    assert not np.allclose(draw(0, 1, 2), draw(0, 2, 2))
    assert not np.allclose(draw(0, 1, 2), draw(0, 1, 3))
    assert not np.allclose(draw(0, 1, 2), draw(1, 1, 2))


def test_box_to_center_scale_aspect_and_padding():
    c, s = box_to_center_scale((10, 20, 100, 100), aspect_ratio=0.75)
    np.testing.assert_allclose(c, [60, 70])
    np.testing.assert_allclose(s, [100 / 200 * 1.25, 100 / 0.75 / 200 * 1.25])


def test_flip_pairs_and_fliplr():
    perm = flip_permutation()
    assert perm[1] == 2 and perm[5] == 6 and perm[0] == 0 and (perm[perm] == np.arange(17)).all()
    j = np.arange(34, dtype=float).reshape(17, 2)
    v = np.arange(17, dtype=float)
    jf, vf = fliplr_joints(j, v, width=100)
    assert jf[1, 0] == 99 - j[2, 0] and jf[1, 1] == j[2, 1] and vf[1] == v[2]


def test_heatmaps_peak_and_weights():
    joints = np.array([[40.0, 60.0], [-50.0, 10.0], [10.0, 10.0]])
    vis = np.array([1.0, 1.0, 0.0])
    hm, w = generate_heatmaps(joints, vis, (128, 96), (32, 24), sigma=2.0)
    assert hm.shape == (3, 32, 24) and w.shape == (3, 1)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (15, 10)
    assert hm[0].max() == pytest.approx(1.0)
    assert w[:, 0].tolist() == [1.0, 0.0, 0.0] and hm[1].max() == 0 and hm[2].max() == 0
