"""Grouping is exact: ground-truth maps rendered from annotations, put through the project's own
decoding and grouping, give every labelled joint to its own person, and COCO keypoint AP (OKS on
whole images, no boxes) close to 1; what remains is the quantisation of the heatmap grid."""
from __future__ import annotations

import numpy as np
import pytest

import torch

from pipeline.bottomup.group import (GroupParams, aggregate, coco_results, find_peaks, group,
                                     heatmap_to_image, match_by_tag, upsample2)
from pipeline.bottomup.targets import person_joints
from pipeline.metrics.pose import coco_keypoint_eval
from bottomup_scenes import (REAL_SAMPLES, gt_maps, identity_errors, load_real,
                                   synthetic_scene)

STRIDE = 4
SHORT_SIDE = 512  # HigherHRNet-W32's test input: the image scaled so its short side is 512
CATEGORY = {"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)],
            "skeleton": []}


def _decode_image(anns: list[dict], hw: tuple[int, int], scale: float, both: bool = False):
    """Ground truth of one image -> (people in heatmap pixels, scores, joints in input pixels,
    stride). ``both``: maps at 1/4 and 1/2, aggregated at 1/2 as the head's outputs would be."""
    joints = person_joints(anns)
    joints[..., :2] *= scale
    in_h = int(np.ceil(hw[0] * scale / STRIDE)) * STRIDE
    in_w = int(np.ceil(hw[1] * scale / STRIDE)) * STRIDE
    heatmaps, tags = gt_maps(joints, (in_h, in_w), (in_h // STRIDE, in_w // STRIDE))
    if not both:
        return (*group(heatmaps, tags), joints, STRIDE)
    half, _ = gt_maps(joints, (in_h, in_w), (in_h // 2, in_w // 2))
    quarter = torch.from_numpy(np.concatenate([heatmaps, tags]))
    heatmaps, tags = aggregate(quarter, torch.from_numpy(half))
    return (*group(heatmaps, tags), joints, 2)


def _evaluate(doc: dict, scale_of, both: bool = False) -> tuple[float, list[str], int]:
    """AP over all images of ``doc``, identity failures, and number of decoded people."""
    results, errors, decoded = [], [], 0
    for im in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        scale = scale_of(im)
        people, scores, joints, stride = _decode_image(anns, (im["height"], im["width"]), scale,
                                                       both)
        tol = 0.75 * STRIDE  # a quarter-pixel-adjusted 1/4 peak is within 0.25 px on each axis
        errors += [f"image {im['id']}: {e}" for e in identity_errors(people, joints, stride, tol)]
        results += coco_results(people, scores, im["id"], heatmap_to_image(stride, scale))
        decoded += len(people)
    return coco_keypoint_eval(doc, results)["AP"], errors, decoded


def _synthetic_doc(seed: int, n_images: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    layouts = [(8, (0.15, 0.5), 0.25), (5, (0.3, 0.9), 0.12), (12, (0.1, 0.35), 0.3)]
    for i in range(n_images):
        n, heights, spread = layouts[i % len(layouts)]
        for a in synthetic_scene(rng, n, (512, 512), heights, spread):
            anns.append({**a, "id": len(anns) + 1, "image_id": i + 1})
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 512, "width": 512})
    return {"images": images, "annotations": anns, "categories": [CATEGORY]}


@pytest.mark.parametrize("seed,both", [(0, False), (1, False), (2, False), (0, True)])
def test_synthetic_grouping_exact_and_ap(seed, both):
    doc = _synthetic_doc(seed)
    people = sum(1 for a in doc["annotations"])
    ap, errors, decoded = _evaluate(doc, lambda im: 1.0, both)
    print(f"synthetic seed {seed} aggregated={both}: {people} people, {decoded} decoded, "
          f"AP {ap:.4f}")
    assert not errors, errors
    assert decoded == people  # no person split in two, none invented
    assert ap >= 0.95, ap


@pytest.mark.shared_data
@pytest.mark.parametrize("name,both", [(n, b) for n in sorted(REAL_SAMPLES) for b in (False, True)])
def test_real_samples_grouping_exact_and_ap(name, both):
    if not REAL_SAMPLES[name].is_file():
        pytest.skip(f"{REAL_SAMPLES[name]} not found")
    doc = load_real(name)
    ap, errors, decoded = _evaluate(doc, lambda im: SHORT_SIDE / min(im["height"], im["width"]),
                                    both)
    print(f"{name} aggregated={both}: {decoded} decoded, AP {ap:.4f}")
    assert not errors, errors
    assert ap >= 0.9, ap


def test_close_same_joints_recovered_by_refinement():
    """Two people's noses one heatmap pixel apart leave one NMS peak; refinement finds the
    other from its own tag region, so both people keep their nose."""
    joints = np.zeros((2, 17, 3))
    joints[0, :, :2] = np.column_stack([np.full(17, 40.0), np.linspace(20, 200, 17)])
    joints[1, :, :2] = joints[0, :, :2] + (60.0, 0.0)
    joints[1, 0, :2] = joints[0, 0, :2] + (6.0, 0.0)
    joints[..., 2] = 1
    heatmaps, tags = gt_maps(joints, (256, 256), (64, 64))
    loc, val, _ = find_peaks(heatmaps, tags)
    assert (val[0] > 0.1).sum() == 1   # NMS kept one nose
    people, _ = group(heatmaps, tags)
    assert identity_errors(people, joints, STRIDE, 0.75 * STRIDE) == []
    unrefined, _ = group(heatmaps, tags, do_refine=False)
    assert identity_errors(unrefined, joints, STRIDE, 0.75 * STRIDE)


def test_plateau_gives_one_candidate():
    """A joint exactly between two pixels makes two equal maxima; one candidate comes out."""
    joints = np.zeros((1, 17, 3))
    joints[0, 3] = (4 * 10.5, 4 * 7.0, 1)
    heatmaps, tags = gt_maps(joints, (64, 96), (16, 24))
    _, val, _ = find_peaks(heatmaps, tags)
    assert (val[3] > 0.1).sum() == 1
    people, _ = group(heatmaps, tags)
    assert len(people) == 1


def test_match_respects_tag_threshold_and_hungarian():
    """Candidates go to the person of the nearest mean tag, one each; a tag 1 or more away from
    every person starts a new one."""
    num = 17
    loc = np.zeros((num, 3, 2), dtype=np.int64)
    val = np.zeros((num, 3))
    tag = np.zeros((num, 3, 1))
    loc[0, :2] = [(1, 1), (5, 5)]
    val[0, :2] = 0.9
    tag[0, :2, 0] = [1.0, 2.0]
    loc[1, :3] = [(6, 5), (2, 1), (9, 9)]
    val[1, :3] = 0.8
    tag[1, :3, 0] = [2.2, 0.9, 3.5]
    people = match_by_tag(loc, val, tag, GroupParams())
    assert len(people) == 3
    assert people[0, 1, :2].tolist() == [2, 1] and people[1, 1, :2].tolist() == [6, 5]
    assert people[2, 1, :2].tolist() == [9, 9] and people[2, 0, 2] == 0


def test_far_pair_never_displaces_a_near_one():
    """1-D tags tie: matching {3, 4} to people {1, 3} costs the same either way over all pairs
    (|3-3| + |4-1| = |3-1| + |4-3|); only pairs within the threshold may be chosen, so the
    candidate of tag 3 joins person 3 and tag 4 starts a new person."""
    num = 17
    loc = np.zeros((num, 2, 2), dtype=np.int64)
    val = np.zeros((num, 2))
    tag = np.zeros((num, 2, 1))
    loc[0] = [(1, 1), (5, 5)]
    val[0] = 0.9
    tag[0, :, 0] = [1.0, 3.0]
    loc[1] = [(6, 5), (9, 9)]
    val[1] = 0.9
    tag[1, :, 0] = [3.0, 4.0]
    people = match_by_tag(loc, val, tag, GroupParams())
    assert len(people) == 3
    assert people[1, 1, :2].tolist() == [6, 5] and people[0, 1, 2] == 0
    assert people[2, 1, :2].tolist() == [9, 9]


def test_upsample_keeps_the_grid_and_aggregate_checks_shapes():
    maps = torch.arange(12.0).reshape(1, 3, 4)
    up = upsample2(maps)
    assert up.shape == (1, 6, 8)
    assert torch.equal(up[:, ::2, ::2], maps)
    assert up[0, 1, 1].item() == pytest.approx(maps[0, :2, :2].mean().item())
    with pytest.raises(ValueError, match="not"):
        aggregate(torch.zeros(34, 4, 4), torch.zeros(17, 4, 4))


def test_coco_results_format():
    people = np.zeros((1, 17, 4))
    people[0, :, :2] = 3.0
    people[0, :, 2] = 0.5
    res = coco_results(people, np.array([0.5]), 7, heatmap_to_image(4, 2.0))
    assert res[0]["image_id"] == 7 and res[0]["category_id"] == 1
    assert res[0]["keypoints"][:3] == [6.0, 6.0, 0.5] and len(res[0]["keypoints"]) == 51
    assert res[0]["score"] == 0.5


def test_bad_maps_rejected():
    with pytest.raises(ValueError, match="must be"):
        group(np.zeros((17, 8, 8)), np.zeros((17, 8, 9)))
