"""``scalenas predict --model DIR IMAGE [-o OUT.png] [--boxes JSON | --box x,y,w,h]``.

Runs a saved (fine-tuned) model on one image and writes a PNG of the prediction: a colour overlay
for segmentation, the skeleton drawn on the person boxes for pose (default box: the whole image).
Everything is read and checked before the output is written (atomically).
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from pipeline.io import atomic_write_bytes
from pipeline.space.arch import ArchitectureError

from .predict import Box, PredictError, draw_pose, draw_seg, parse_box, predict_pose, predict_seg
from pipeline.io import read_json


def read_image(path: Path) -> Image.Image:
    """Decode an RGB image, or raise one ``PredictError`` saying the file is not an image."""
    if not path.is_file():
        raise PredictError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise PredictError(f"{path}: not a readable image file ({type(e).__name__})") from None


def read_boxes(path: Path) -> list[Box]:
    """Person boxes from JSON: a list of ``[x, y, w, h]`` or of COCO detections ``{"bbox": [...]}``."""
    doc = read_json(path, "boxes file", PredictError)
    if not isinstance(doc, list) or not doc:
        raise PredictError(f"{path}: expected a non-empty JSON list of boxes")
    boxes = []
    for i, item in enumerate(doc):
        raw: Any = item.get("bbox") if isinstance(item, dict) else item
        if not isinstance(raw, list) or len(raw) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raise PredictError(f"{path}: entry {i}: expected [x, y, w, h] or {{\"bbox\": [x, y, w, h]}}")
        boxes.append(parse_box(",".join(str(v) for v in raw)))
    return boxes


def _model_input_hw(net: Any, model_dir: Path) -> tuple[int, int]:
    hw = (net.meta or {}).get("input_hw")
    if not (isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) and v > 0 for v in hw)):
        raise PredictError(f"{model_dir}: pose model record lacks meta.input_hw [h, w]")
    return hw[0], hw[1]


def _render_seg(net: Any, image: Image.Image, boxes: list[Box] | None, model: Path) -> Image.Image:
    if boxes is not None:
        raise PredictError("--boxes/--box apply to pose models only")
    return draw_seg(image, predict_seg(net, image), net.num_outputs)


def _render_pose(net: Any, image: Image.Image, boxes: list[Box] | None, model: Path) -> Image.Image:
    if boxes is None:
        boxes = [(0.0, 0.0, float(image.width), float(image.height))]
    return draw_pose(image, predict_pose(net, image, boxes, _model_input_hw(net, model)))


#: How each task's prediction is drawn.
_RENDER = {"seg": _render_seg, "pose": _render_pose}


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.nets.export import load_model  # torch and the network only when predicting

    image = read_image(args.image)
    if args.boxes is not None and args.box:
        raise PredictError("give either --boxes or --box, not both")
    boxes: list[Box] | None = read_boxes(args.boxes) if args.boxes is not None else (
        [parse_box(b) for b in args.box] if args.box else None)
    try:
        net = load_model(args.model)
    except ArchitectureError as e:
        raise PredictError(f"{args.model}: {e}") from None
    picture = _RENDER[net.task](net, image, boxes, args.model)
    out = args.output or args.image.with_name(f"{args.image.stem}_pred.png")
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    print(f"{args.image} -> {out} ({net.task}, model {net.arch.arch_id})")
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``predict`` command to ``scalenas``."""
    p = subparsers.add_parser("predict", help="run a saved model on one image and draw the prediction",
                              description=__doc__)
    p.add_argument("image", type=Path, help="input image (PNG, JPEG, ...)")
    p.add_argument("--model", type=Path, required=True,
                   help="saved model directory (model.json, arch.json, weights.pt)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output PNG (default: IMAGE_pred.png next to the image)")
    p.add_argument("--boxes", type=Path, default=None,
                   help="pose: JSON list of person boxes [x,y,w,h] or COCO detections")
    p.add_argument("--box", action="append", default=[], metavar="x,y,w,h",
                   help="pose: one person box (repeatable)")
    p.set_defaults(func=cmd_predict)
