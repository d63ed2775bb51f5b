"""Built-in synthetic datasets, written in the real on-disk layouts so the real loaders read them.

Segmentation: street-like scenes in the Cityscapes layout (sky, buildings, vegetation, road,
sidewalk as background regions; cars, persons, poles with signs/lights as objects whose size grows
from the horizon to the bottom of the frame, so one image holds the same class at very different
scales). Pose: stick-figure people following the COCO skeleton, 1-3 per image at several scales,
some partly outside the frame (v=0) or occluded by later figures/boxes (v=1), written as COCO
person_keypoints JSON + PNG images + a detector-results file for val.

Everything is drawn from `np.random.default_rng([seed, task, split, index])`, written as PNG with
fixed settings and JSON with a fixed key order, so the same seed gives the same bytes.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.cityscapes import LABEL_TO_TRAIN
from pipeline.data.io import dumps_stable, save_png
from pipeline.io import atomic_write_bytes
from pipeline.data.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON, NUM_JOINTS

GENERATOR = "scalenas-synth"
#: The record every generated dataset (and the built-in data root) carries.
RECORD_FILE = "SYNTH.json"
VERSION = 1
_SEG, _POSE = 1, 2
_SPLIT_CODES = {"train": 1, "val": 2}

# Cityscapes label ids used by the scenes.
ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, SKY, PERSON, CAR = (
    7, 8, 11, 17, 19, 20, 21, 23, 24, 26)
EGO_VEHICLE = 1  # maps to the ignore label
CITIES = {"train": ("synthburg", "pixelstadt", "noiseville"), "val": ("valdorf",)}


def _rng(task: int, seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([task, int(seed) & 0xFFFFFFFF, _SPLIT_CODES[split], index])


def _jitter(rng: np.random.Generator, base: Iterable[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


# ----------------------------------------------------------------------------- segmentation


class _Canvas:
    """An image and its label map, painted region by region (later paint covers earlier)."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.img = np.zeros((h, w, 3), dtype=np.float32)
        self.lab = np.zeros((h, w), dtype=np.uint8)

    def paint(self, y0: float, y1: float, x0: float, x1: float, mask_fn, label: int,
              color: np.ndarray, texture=None) -> None:
        ya, yb = max(0, int(math.floor(y0))), min(self.h, int(math.ceil(y1)))
        xa, xb = max(0, int(math.floor(x0))), min(self.w, int(math.ceil(x1)))
        if ya >= yb or xa >= xb:
            return
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        m = mask_fn(yy, xx) if mask_fn is not None else np.ones(yy.shape, dtype=bool)
        if not m.any():
            return
        col = np.broadcast_to(color, (yb - ya, xb - xa, 3)).astype(np.float32)
        if texture is not None:
            col = col * texture(yy, xx)[..., None]
        self.img[ya:yb, xa:xb][m] = col[m]
        self.lab[ya:yb, xa:xb][m] = label


def _rect(canvas: _Canvas, y0, y1, x0, x1, label, color, texture=None) -> None:
    canvas.paint(y0, y1, x0, x1, None, label, color, texture)


def _ellipse(canvas: _Canvas, cy, cx, ry, rx, label, color, texture=None) -> None:
    canvas.paint(cy - ry, cy + ry + 1, cx - rx, cx + rx + 1,
                 lambda yy, xx: ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2
                 <= 1.0, label, color, texture)


def _windows(period: float, rng: np.random.Generator):
    """Building facade: a grid of darker windows with a random phase."""
    py, px = rng.uniform(0, period, 2)
    def tex(yy, xx):
        wy = ((yy + py) % period) < 0.55 * period
        wx = ((xx + px) % period) < 0.5 * period
        return np.where(wy & wx, 0.55, 1.0).astype(np.float32)
    return tex


def _stripes(period: float, vertical: bool):
    def tex(yy, xx):
        t = xx if vertical else yy
        return (0.85 + 0.15 * np.sin(2 * np.pi * t / period)).astype(np.float32)
    return tex


def _draw_car(c: _Canvas, rng, bottom: float, cx: float, width: float) -> None:
    height = width * rng.uniform(0.45, 0.6)
    body = _jitter(rng, rng.choice([(150, 30, 30), (40, 60, 140), (200, 200, 200), (50, 50, 55),
                                    (120, 120, 110), (170, 140, 60)]), 30)
    top = bottom - height
    _rect(c, top + 0.35 * height, bottom - 0.12 * height, cx - width / 2, cx + width / 2, CAR, body)
    _rect(c, top, top + 0.4 * height, cx - 0.32 * width, cx + 0.3 * width, CAR, body)
    glass = _jitter(rng, (70, 90, 110), 15)
    _rect(c, top + 0.08 * height, top + 0.36 * height, cx - 0.27 * width, cx + 0.25 * width, CAR,
          glass)
    r = 0.13 * width
    for wx in (cx - 0.3 * width, cx + 0.3 * width):
        _ellipse(c, bottom - r, wx, r, r, CAR, np.array([20, 20, 20], np.float32))


def _draw_person(c: _Canvas, rng, bottom: float, cx: float, height: float) -> None:
    shirt = _jitter(rng, rng.choice([(180, 40, 40), (40, 40, 160), (40, 130, 40), (220, 220, 60),
                                     (60, 60, 60), (150, 70, 150)]), 35)
    legs = _jitter(rng, (50, 50, 80), 25)
    skin = _jitter(rng, (210, 170, 140), 25)
    w = height * 0.28
    _rect(c, bottom - 0.48 * height, bottom, cx - 0.4 * w, cx - 0.05 * w, PERSON, legs)
    _rect(c, bottom - 0.48 * height, bottom, cx + 0.05 * w, cx + 0.4 * w, PERSON, legs)
    _ellipse(c, bottom - 0.66 * height, cx, 0.2 * height, w / 2, PERSON, shirt)
    _ellipse(c, bottom - 0.9 * height, cx, 0.09 * height, 0.09 * height, PERSON, skin)


def _draw_pole(c: _Canvas, rng, bottom: float, cx: float, height: float) -> None:
    pw = max(1.0, height * 0.02)
    gray = _jitter(rng, (110, 110, 115), 20)
    top = bottom - height
    _rect(c, top, bottom, cx - pw / 2, cx + pw / 2, POLE, gray)
    kind = rng.integers(3)
    s = height * rng.uniform(0.08, 0.14)
    if kind == 0:  # traffic sign: coloured disc or plate on the pole
        col = _jitter(rng, rng.choice([(200, 30, 30), (30, 60, 200), (230, 200, 30)]), 20)
        if rng.random() < 0.5:
            _ellipse(c, top + s, cx, s, s, SIGN, col)
        else:
            _rect(c, top, top + 1.6 * s, cx - s, cx + s, SIGN, col)
    elif kind == 1:  # traffic light: dark box with a lit lamp
        _rect(c, top, top + 2.4 * s, cx - 0.6 * s, cx + 0.6 * s, LIGHT,
              np.array([25, 25, 25], np.float32))
        lamp = rng.integers(3)
        lamp_col = np.array([(230, 40, 30), (240, 190, 30), (40, 220, 80)][lamp], np.float32)
        _ellipse(c, top + (0.4 + 0.8 * lamp) * s, cx, 0.3 * s, 0.3 * s, LIGHT, lamp_col)


def _seg_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    c = _Canvas(h, w)
    horizon = h * rng.uniform(0.35, 0.5)
    overcast = rng.random() < 0.3
    sky = _jitter(rng, (165, 170, 175) if overcast else (110, 160, 225), 20)
    _rect(c, 0, horizon, 0, w, SKY, sky, lambda yy, xx: (0.85 + 0.3 * yy / h).astype(np.float32))
    x = -rng.uniform(0, 0.1) * w
    while x < w:  # a skyline of buildings with gaps
        bw = w * rng.uniform(0.08, 0.25)
        if rng.random() < 0.8:
            top = horizon - h * rng.uniform(0.08, 0.35)
            col = _jitter(rng, rng.choice([(140, 130, 120), (170, 150, 120), (120, 110, 110),
                                           (190, 180, 160)]), 20)
            _rect(c, top, horizon + 1, x, x + bw, BUILDING, col, _windows(h * rng.uniform(0.03, 0.07), rng))
        x += bw
    for _ in range(rng.integers(0, 4)):
        r = w * rng.uniform(0.04, 0.12)
        col = _jitter(rng, (60, 120, 50), 25)
        _ellipse(c, horizon - r * rng.uniform(0.2, 0.9), rng.uniform(0, w), r * 0.8, r, VEGETATION,
                 col, lambda yy, xx: (0.8 + 0.4 * ((np.sin(yy * 1.7) * np.sin(xx * 2.3)) > 0))
                 .astype(np.float32))
    road = _jitter(rng, (115, 110, 115), 15)
    _rect(c, horizon, h, 0, w, ROAD, road, _stripes(h * 0.05, vertical=False))
    # Sidewalk: a wedge along one side widening toward the viewer.
    side = rng.integers(2)
    walk = _jitter(rng, (175, 150, 160), 20)
    edge0, slope = w * rng.uniform(0.0, 0.25), rng.uniform(0.6, 1.6)
    def wedge(yy, xx, side=side, edge0=edge0, slope=slope):
        reach = edge0 + slope * (yy - horizon) * (w / h) * 0.5
        return (xx < reach) if side == 0 else (xx > w - reach)
    c.paint(horizon, h, 0, w, wedge, SIDEWALK, walk, _stripes(h * 0.02, vertical=True))
    # Dashed lane marking (still road).
    for k in range(6):
        y0 = horizon + (h - horizon) * k / 6
        _rect(c, y0, y0 + (h - horizon) / 14, w / 2 - 1 - k * 0.4, w / 2 + 1 + k * 0.4, ROAD,
              np.array([230, 230, 230], np.float32))
    # Objects, far (near the horizon, small) to near (bottom, large).
    objs = []
    for _ in range(rng.integers(1, 6)):
        objs.append(("car", rng.uniform(0.04, 1.0)))
    for _ in range(rng.integers(0, 6)):
        objs.append(("person", rng.uniform(0.02, 1.0)))
    for _ in range(rng.integers(0, 4)):
        objs.append(("pole", rng.uniform(0.02, 1.0)))
    for kind, depth in sorted(objs, key=lambda o: o[1]):
        bottom = horizon + (h - horizon) * depth
        near = 0.1 + 0.9 * depth  # apparent size grows toward the bottom of the frame
        cx = rng.uniform(0, w)
        if kind == "car":
            _draw_car(c, rng, bottom, cx, w * 0.4 * near)
        elif kind == "person":
            _draw_person(c, rng, bottom, cx, h * 0.6 * near)
        else:
            _draw_pole(c, rng, bottom, cx, h * 0.9 * near)
    if rng.random() < 0.3:  # ego-vehicle hood: an ignored region, as in real Cityscapes frames
        _rect(c, h * rng.uniform(0.9, 0.95), h, 0, w, EGO_VEHICLE, np.array([30, 30, 35], np.float32))
    img = c.img + rng.normal(0.0, 7.0, c.img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.uint8), c.lab


def generate_cityscapes(out_root: Path, seed: int, num_train: int = 120, num_val: int = 30,
                        size_hw: tuple[int, int] = (128, 256)) -> dict:
    """Write a synthetic Cityscapes-layout dataset under `out_root` (leftImg8bit, gtFine labelIds
    and labelTrainIds, train.lst/val.lst, SYNTH.json). Returns the SYNTH.json record."""
    out_root = Path(out_root)
    h, w = int(size_hw[0]), int(size_hw[1])
    lut = np.array([LABEL_TO_TRAIN.get(i, 255) for i in range(256)], dtype=np.uint8)
    for split, count in (("train", num_train), ("val", num_val)):
        lines = []
        cities = CITIES[split]
        for i in range(count):
            city = cities[i % len(cities)]
            name = f"{city}_{i // len(cities):06d}_{19 * i % 1000000:06d}"
            img, lab = _seg_scene(_rng(_SEG, seed, split, i), h, w)
            img_rel = f"leftImg8bit/{split}/{city}/{name}_leftImg8bit.png"
            lab_rel = f"gtFine/{split}/{city}/{name}_gtFine_labelIds.png"
            save_png(out_root / img_rel, img)
            save_png(out_root / lab_rel, lab)
            save_png(out_root / f"gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png", lut[lab])
            lines.append(f"{img_rel}\t{lab_rel}\n")
        atomic_write_bytes(out_root / f"{split}.lst", "".join(lines).encode())
    record = {"generator": GENERATOR, "version": VERSION, "task": "seg", "layout": "cityscapes",
              "seed": int(seed), "num_train": int(num_train), "num_val": int(num_val),
              "size_hw": [h, w]}
    atomic_write_bytes(out_root / "SYNTH.json", dumps_stable(record).encode())
    return record


# ----------------------------------------------------------------------------- pose

# Front-facing template in units of body height, origin at the hip centre, y down; the person's
# left is image right (+x), as for a person facing the camera.
_HEAD = np.array([0.0, -0.43])
_FACE = {0: (0.0, -0.42), 1: (0.03, -0.445), 2: (-0.03, -0.445), 3: (0.06, -0.43),
         4: (-0.06, -0.43)}


def _unit(angle_deg: float) -> np.ndarray:
    """Direction `angle` degrees from straight down, positive toward +x."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])


def _skeleton(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """17 joints in body units, and whether the figure faces away from the camera."""
    j = np.zeros((NUM_JOINTS, 2))
    for k, p in _FACE.items():
        j[k] = p
    shoulder_y = -0.30
    j[5], j[6] = (0.12, shoulder_y), (-0.12, shoulder_y)
    j[11], j[12] = (0.09, 0.0), (-0.09, 0.0)
    for side, (s, e, wri) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        up = side * rng.uniform(-20, 150)
        bend = side * rng.uniform(-10, 100)
        j[e] = j[s] + 0.16 * _unit(up)
        j[wri] = j[e] + 0.14 * _unit(up + bend)
    for side, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        a = side * rng.uniform(-10, 35)
        bend = -side * rng.uniform(0, 45) if rng.random() < 0.5 else 0.0
        j[kn] = j[hp] + 0.24 * _unit(a)
        j[an] = j[kn] + 0.24 * _unit(a + bend)
    back = bool(rng.random() < 0.2)
    if back:  # seen from behind: the person's left is on the image left
        j[:, 0] *= -1
    return j, back


def _place(rng: np.random.Generator, body: np.ndarray, height: float, hip_xy: np.ndarray
           ) -> np.ndarray:
    lean = math.radians(rng.uniform(-12, 12))
    rot = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]])
    squash = np.array([rng.uniform(0.85, 1.15), 1.0])
    return (body * squash) @ rot.T * height + hip_xy


_LIMBS_LEFT = ((5, 7), (7, 9), (11, 13), (13, 15))
_LIMBS_RIGHT = ((6, 8), (8, 10), (12, 14), (14, 16))


def _draw_figure(draws: list[ImageDraw.ImageDraw], rng, pts: np.ndarray, height: float,
                 back: bool) -> None:
    """Draw one figure on every canvas in `draws` (colour image first, then masks)."""
    lw = max(2, int(round(height * 0.045)))
    warm = tuple(int(v) for v in _jitter(rng, (220, 90, 50), 30))
    cool = tuple(int(v) for v in _jitter(rng, (50, 110, 220), 30))
    shirt = tuple(int(v) for v in _jitter(rng, rng.choice([(90, 160, 90), (200, 200, 200),
                                                           (150, 100, 160), (60, 60, 60)]), 30))
    skin = tuple(int(v) for v in _jitter(rng, (225, 185, 150), 20))
    hair = tuple(int(v) for v in _jitter(rng, (70, 50, 30), 20))
    p = [tuple(float(v) for v in q) for q in pts]
    head_c = (pts[3] + pts[4]) / 2
    head_r = height * 0.07
    for k, d in enumerate(draws):
        col = (lambda rgb: rgb) if k == 0 else (lambda rgb: 255)
        d.polygon([p[5], p[6], p[12], p[11]], fill=col(shirt))
        for (a, b) in _LIMBS_LEFT:
            d.line([p[a], p[b]], fill=col(warm), width=lw)
        for (a, b) in _LIMBS_RIGHT:
            d.line([p[a], p[b]], fill=col(cool), width=lw)
        neck = ((p[5][0] + p[6][0]) / 2, (p[5][1] + p[6][1]) / 2)
        d.line([neck, tuple(head_c)], fill=col(skin), width=lw)
        d.ellipse([head_c[0] - head_r, head_c[1] - head_r * 1.15, head_c[0] + head_r,
                   head_c[1] + head_r * 1.15], fill=col(hair if back else skin))
        if k == 0 and not back:
            er = max(1.0, height * 0.012)
            for e in (1, 2):
                d.ellipse([p[e][0] - er, p[e][1] - er, p[e][0] + er, p[e][1] + er], fill=(20, 20, 20))
            d.ellipse([p[0][0] - er, p[0][1] - er, p[0][0] + er, p[0][1] + er], fill=(200, 60, 60))
        for e in (3, 4):  # ears, in the limb colour of their side
            side_col = warm if (e == 3) != back else cool
            er = max(1.0, height * 0.015)
            d.ellipse([p[e][0] - er, p[e][1] - er, p[e][0] + er, p[e][1] + er], fill=col(side_col))


def _pose_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
    """One image and its people: dicts with keypoints (17, 3), bbox, area."""
    c0, c1 = _jitter(rng, rng.uniform(60, 200, 3), 0), _jitter(rng, rng.uniform(60, 200, 3), 0)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = (c0 * (1 - t) + c1 * t) * np.ones((1, w, 1), np.float32)
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 7)):  # distractors: bars and blocks, some limb-like
        col = tuple(int(v) for v in rng.uniform(30, 230, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x0 + rng.uniform(-60, 60), y0 + rng.uniform(-60, 60))], fill=col,
                      width=int(rng.integers(2, 7)))
        else:
            draw.rectangle([x0, y0, x0 + rng.uniform(5, 50), y0 + rng.uniform(5, 50)], fill=col)
    n_people = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    people = []
    for _ in range(n_people):
        height = h * math.exp(rng.uniform(math.log(0.22), math.log(0.95)))
        foot_y = rng.uniform(0.55, 1.08) * h
        hip = np.array([rng.uniform(-0.05, 1.05) * w, foot_y - 0.48 * height])
        body, back = _skeleton(rng)
        people.append((foot_y, np.round(_place(rng, body, height, hip), 1), height, back))
    people.sort(key=lambda p: p[0])  # far (higher in frame) first, so near figures occlude
    masks = []
    for _, pts, height, back in people:
        mask = Image.new("L", (w, h), 0)
        _draw_figure([draw, ImageDraw.Draw(mask)], rng, pts, height, back)
        masks.append(np.asarray(mask) > 0)
    occluder = np.zeros((h, w), dtype=bool)
    if rng.random() < 0.35:  # a box in front of everyone
        x0, y0 = rng.uniform(0, w * 0.8), rng.uniform(h * 0.3, h * 0.9)
        x1, y1 = x0 + rng.uniform(0.1, 0.35) * w, y0 + rng.uniform(0.1, 0.3) * h
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.uniform(40, 200, 3)))
        occ = Image.new("L", (w, h), 0)
        ImageDraw.Draw(occ).rectangle([x0, y0, x1, y1], fill=255)
        occluder = np.asarray(occ) > 0
    img = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 6.0, (h, w, 3))
    out = []
    for i, (_, pts, _, back) in enumerate(people):
        m = masks[i]
        if not m.any():
            continue
        covered = occluder.copy()
        for later in masks[i + 1:]:
            covered |= later
        kps = np.zeros((NUM_JOINTS, 3))
        for k in range(NUM_JOINTS):
            x, y = pts[k]
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                continue  # outside the image: unlabelled (0, 0, 0) as in COCO
            if back and k in (0, 1, 2):
                continue  # face not seen from behind: unlabelled
            occluded = covered[int(round(y)), int(round(x))]
            kps[k] = (round(x), round(y), 1 if occluded else 2)
        ys, xs = np.nonzero(m)
        bw, bh = float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
        # OKS scales errors by sqrt(area). A stick figure's painted area is far below a real
        # body's, which would make OKS much stricter than on COCO; use a body-like fraction of
        # the box instead (COCO persons cover roughly half of their box).
        out.append({"keypoints": kps, "bbox": [float(xs.min()), float(ys.min()), bw, bh],
                    "area": round(0.5 * bw * bh, 2)})
    return np.clip(img, 0, 255).round().astype(np.uint8), out


def _coco_category() -> dict:
    return {"supercategory": "person", "id": 1, "name": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": [list(e) for e in COCO_SKELETON]}


def generate_coco(out_root: Path, seed: int, num_train: int = 150, num_val: int = 40,
                  size_hw: tuple[int, int] = (192, 256)) -> dict:
    """Write a synthetic COCO person-keypoints dataset under `out_root`: images/{train2017,val2017},
    annotations/person_keypoints_{train2017,val2017}.json, person_detection_results/
    COCO_val2017_detections_synth.json, SYNTH.json. Returns the SYNTH.json record."""
    out_root = Path(out_root)
    h, w = int(size_hw[0]), int(size_hw[1])
    ann_id = 1
    for split, count, first_id in (("train", num_train, 1), ("val", num_val, 100001)):
        coco_split = f"{split}2017"
        images, anns, dets = [], [], []
        for i in range(count):
            rng = _rng(_POSE, seed, split, i)
            img, people = _pose_scene(rng, h, w)
            img_id = first_id + i
            fname = f"{img_id:012d}.png"
            save_png(out_root / "images" / coco_split / fname, img)
            images.append({"id": img_id, "file_name": fname, "width": w, "height": h})
            for p in people:
                x, y, bw, bh = p["bbox"]
                kp = p["keypoints"]
                anns.append({"id": ann_id, "image_id": img_id, "category_id": 1, "iscrowd": 0,
                             "area": p["area"], "bbox": [x, y, bw, bh],
                             "num_keypoints": int((kp[:, 2] > 0).sum()),
                             "keypoints": [int(v) for v in kp.ravel()],
                             "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
                ann_id += 1
                if split == "val" and kp[:, 2].max() > 0 and rng.random() < 0.95:
                    jx, jy = rng.normal(0, 0.05, 2)
                    sw, sh = np.exp(rng.normal(0, 0.08, 2))
                    dets.append({"image_id": img_id, "category_id": 1,
                                 "bbox": [round(x + jx * bw, 2), round(y + jy * bh, 2),
                                          round(bw * sw, 2), round(bh * sh, 2)],
                                 "score": round(float(rng.uniform(0.55, 1.0)), 4)})
            if split == "val":
                for _ in range(rng.poisson(0.5)):  # false positives with low scores
                    bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.2, 0.7) * h
                    dets.append({"image_id": img_id, "category_id": 1,
                                 "bbox": [round(rng.uniform(0, w - bw), 2),
                                          round(rng.uniform(0, h - bh), 2), round(bw, 2), round(bh, 2)],
                                 "score": round(float(rng.uniform(0.05, 0.5)), 4)})
        doc = {"info": {"description": f"{GENERATOR} v{VERSION} seed {seed}"},
               "images": images, "annotations": anns, "categories": [_coco_category()]}
        atomic_write_bytes(out_root / "annotations" / f"person_keypoints_{coco_split}.json",
                           dumps_stable(doc).encode())
        if split == "val":
            atomic_write_bytes(out_root / "person_detection_results" /
                               "COCO_val2017_detections_synth.json", dumps_stable(dets).encode())
    record = {"generator": GENERATOR, "version": VERSION, "task": "pose", "layout": "coco",
              "seed": int(seed), "num_train": int(num_train), "num_val": int(num_val),
              "size_hw": [h, w], "detection_file": DETECTION_FILE}
    atomic_write_bytes(out_root / "SYNTH.json", dumps_stable(record).encode())
    return record


DETECTION_FILE = "person_detection_results/COCO_val2017_detections_synth.json"
SEG_DIR, POSE_DIR = "cityscapes", "coco"


def generate_all(out_root: Path, seed: int, tasks: tuple[str, ...] = ("seg", "pose"), *,
                 seg_train: int = 120, seg_val: int = 30, seg_size_hw: tuple[int, int] = (128, 256),
                 pose_train: int = 150, pose_val: int = 40,
                 pose_size_hw: tuple[int, int] = (192, 256)) -> dict:
    """Generate the requested tasks into `out_root`/{cityscapes,coco} with a SYNTH.json at the root.

    Built in a temporary sibling directory and moved into place at the end, so a failure leaves
    nothing half-written. An existing `out_root` is replaced only if it is itself a synthetic
    dataset (has SYNTH.json) or empty."""
    out_root = Path(out_root)
    unknown = [t for t in tasks if t not in ("seg", "pose")]
    if unknown or not tasks:
        raise ValueError(f"tasks must be 'seg' and/or 'pose', got {list(tasks)}")
    if out_root.exists():
        if not out_root.is_dir():
            raise FileExistsError(f"{out_root}: exists and is not a directory")
        if any(out_root.iterdir()) and not (out_root / "SYNTH.json").is_file():
            raise FileExistsError(f"{out_root}: exists, is not empty and is not a synthetic "
                                  "dataset (no SYNTH.json); refusing to replace it")
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.tmp-"))
    try:
        record = {"generator": GENERATOR, "version": VERSION, "seed": int(seed), "tasks": {}}
        if "seg" in tasks:
            record["tasks"]["seg"] = {"root": SEG_DIR, **generate_cityscapes(
                tmp / SEG_DIR, seed, seg_train, seg_val, seg_size_hw)}
        if "pose" in tasks:
            record["tasks"]["pose"] = {"root": POSE_DIR, **generate_coco(
                tmp / POSE_DIR, seed, pose_train, pose_val, pose_size_hw)}
        atomic_write_bytes(tmp / "SYNTH.json", dumps_stable(record).encode())
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset should be readable
        if out_root.exists():
            shutil.rmtree(out_root)
        os.replace(tmp, out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def read_record(root: Path) -> dict | None:
    """The generator's record of a built-in dataset at ``root``; None for other data."""
    import json

    from pipeline.data.errors import DataError

    p = Path(root) / RECORD_FILE
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: unreadable built-in data record: {e}") from None
    return doc if isinstance(doc, dict) else None
