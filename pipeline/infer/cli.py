"""``scalenas predict --model DIR INPUT... [-o OUT] [--runtime auto|eager|torchscript|onnx]``.

INPUT is an image, a folder (its image files, sorted) or a list file (``.txt``: one image path a
line, relative to the list file). The model runs in batches (``--batch-size``) with a progress bar.
Segmentation writes ``<name>_pred.png`` (the image blended with the Cityscapes colours) and
``<name>_mask.png`` (a palette PNG of the class ids). Pose writes ``<name>_pred.png`` (skeletons
on the person boxes) and one COCO-format results file (``results.json``); the boxes come from
``--boxes`` (a list of ``[x, y, w, h]``, or COCO detections with ``image_id``), else the whole
image. Any image size works: it is padded to a multiple of 32 and the prediction is cropped back.

The default runtime is the optimized TorchScript recorded in ``model.json`` (``scalenas export``),
else the eager model. A lone image that cannot be read is an error (exit 2); in a folder or list,
unreadable images are skipped, listed at the end, and the exit status is 1. Outputs are written
atomically, image by image, so what was finished stays written.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

from pipeline.io import atomic_write_bytes, atomic_write_text, check_regular_file, read_json
from pipeline.space.arch import ArchitectureError

from .predict import Box, PredictError, draw_pose, draw_seg, parse_box

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")
LIST_SUFFIXES = (".txt", ".lst")
RESULTS_FILE = "results.json"


#: Largest image ``predict`` decodes: 4096x4096. The network's first convolution alone holds 64
#: bytes per input pixel (64 float channels at half resolution), 1 GiB at this size; a 9000x9000
#: picture would need 5 GiB before the first layer ends.
MAX_PIXELS = 4096 * 4096


def read_image(path: Path) -> Image.Image:
    """Decode an RGB image, or raise one ``PredictError`` saying the file is not an image.

    The size is checked from the header, before any pixel is decoded."""
    check_regular_file(path, "image file", PredictError)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise PredictError(f"{path}: image too large ({w}x{h} = {w * h} pixels; the limit "
                                   f"is {MAX_PIXELS} pixels, e.g. 4096x4096): scale it down first")
            im.load()
            return im.convert("RGB")
    except PredictError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        raise PredictError(f"{path}: not a readable image file ({type(e).__name__})") from None


def expand_inputs(inputs: list[Path]) -> tuple[list[Path], bool]:
    """The image paths named by ``inputs`` and whether the input was one lone image."""
    paths: list[Path] = []
    for p in inputs:
        if p.is_dir():
            paths += sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise PredictError(f"{p}: unreadable list file: {e}") from None
            paths += [p.parent / line.strip() for line in lines
                      if line.strip() and not line.lstrip().startswith("#")]
        elif p.exists():
            paths.append(p)
        else:
            raise PredictError(f"{p}: no such image, folder or list file")
    if not paths:
        raise PredictError(f"{' '.join(map(str, inputs))}: no image files found")
    lone = len(inputs) == 1 and len(paths) == 1 and inputs[0] == paths[0]
    return paths, lone


def read_boxes(path: Path) -> dict[int | None, list[Box]]:
    """Person boxes from JSON, keyed by COCO ``image_id`` (``None``: boxes for every image).

    Accepts a list of ``[x, y, w, h]`` or of COCO detections ``{"bbox": [...], "image_id": ...}``;
    detections of another category than person (1) are ignored.
    """
    doc = read_json(path, "boxes file", PredictError)
    if not isinstance(doc, list) or not doc:
        raise PredictError(f"{path}: expected a non-empty JSON list of boxes")
    boxes: dict[int | None, list[Box]] = defaultdict(list)
    for i, item in enumerate(doc):
        raw: Any = item.get("bbox") if isinstance(item, dict) else item
        if not isinstance(raw, list) or len(raw) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raise PredictError(f"{path}: entry {i}: expected [x, y, w, h] or {{\"bbox\": [x, y, w, h]}}")
        if isinstance(item, dict) and item.get("category_id", 1) != 1:
            continue
        key = item.get("image_id") if isinstance(item, dict) else None
        if key is not None and (not isinstance(key, int) or isinstance(key, bool)):
            raise PredictError(f"{path}: entry {i}: image_id must be an integer")
        try:
            boxes[key].append(parse_box(",".join(str(v) for v in raw)))
        except PredictError as e:
            raise PredictError(f"{path}: entry {i}: {e}") from None
    return dict(boxes)


def check_box(box: Box, width: int, height: int) -> None:
    """A person box must overlap the image and be at most a few times its size (a box of 1e308
    pixels would overflow the crop transform and draw garbage)."""
    x, y, w, h = box
    if x >= width or y >= height or x + w <= 0 or y + h <= 0 or w > 4 * width or h > 4 * height:
        raise PredictError(f"box {','.join(f'{v:g}' for v in box)}: must overlap the "
                           f"{width}x{height} image and be at most 4 times its size")


def _box_fits(box: Box, width: int, height: int) -> bool:
    try:
        check_box(box, width, height)
    except PredictError:
        return False
    return True


def image_id_of(path: Path, index: int) -> int:
    """COCO image id: the file name's number (``000000397133.jpg`` -> 397133), else the index."""
    return int(path.stem) if path.stem.isdigit() else index


def _model_input_hw(meta: dict[str, Any], model_dir: Path) -> tuple[int, int]:
    from pipeline.nets.export import MODEL_FILE, meta_input_hw

    hw = meta_input_hw(meta, model_dir / MODEL_FILE)
    if hw is None:
        raise PredictError(f"{model_dir / MODEL_FILE}: pose model record lacks meta.input_hw [h, w]")
    return hw


def load_runtime(model_dir: Path, runtime: str) -> tuple[Any, Any, str]:
    """(eager net for task/meta, callable runtime, name of the runtime used)."""
    from pipeline.nets.deploy import DeployError, find_entry, load_artifact
    from pipeline.nets.export import load_model

    try:
        net = load_model(model_dir)
    except ArchitectureError as e:
        raise PredictError(f"{model_dir}: {e}") from None
    if runtime == "auto":
        try:
            find_entry(model_dir, "torchscript")
            runtime = "torchscript"
        except DeployError:  # no artifact recorded
            runtime = "eager"
    if runtime == "eager":
        return net, net, "eager"
    module, entry = load_artifact(model_dir, runtime)
    return net, module, f"{runtime} ({entry['file']})"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _out_path(args: argparse.Namespace, path: Path, lone: bool, kind: str) -> Path:
    if lone and args.output is not None and args.output.suffix.lower() == ".png":
        return args.output if kind == "pred" else args.output.with_name(
            f"{args.output.stem}_{kind}.png")
    folder = args.output if args.output is not None else path.parent
    return folder / f"{path.stem}_{kind}.png"


@dataclass
class _Job:
    """What one ``predict`` call writes, shared by the task writers."""

    args: argparse.Namespace
    lone: bool
    net: Any
    run: Any
    given: dict[int | None, list[Box]] | None
    input_hw: tuple[int, int] = (0, 0)  # pose: the model's crop size
    written: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def out(self, path: Path, kind: str) -> Path:
        return _out_path(self.args, path, self.lone, kind)


Chunk = list[tuple[int, Path, Image.Image]]


class _SegWriter:
    """Class-id palette masks and blended pictures; images of one padded size share a batch."""

    @staticmethod
    def check(job: _Job) -> None:
        if job.given is not None:
            raise PredictError("--boxes/--box apply to pose models only")

    @staticmethod
    def write(job: _Job, chunk: Chunk, step: Callable[[], Any]) -> None:
        from .batch import mask_image, padded_key, seg_labels

        groups: dict[tuple[int, int], Chunk] = defaultdict(list)
        for item in chunk:
            groups[padded_key(item[2])].append(item)
        for items in groups.values():
            labels = seg_labels(job.run, [im for _, _, im in items])
            for (_, path, im), lab in zip(items, labels):
                atomic_write_bytes(job.out(path, "mask"), _png(mask_image(lab, job.net.num_outputs)))
                atomic_write_bytes(job.out(path, "pred"),
                                   _png(draw_seg(im, lab, job.net.num_outputs)))
                job.written += 1
                step()

    @staticmethod
    def finish(job: _Job, paths: list[Path]) -> None:
        pass


class _PoseWriter:
    """Skeleton pictures and one COCO results file; people from every image share batches."""

    @staticmethod
    def check(job: _Job) -> None:
        job.input_hw = _model_input_hw(job.net.meta, job.args.model)

    @staticmethod
    def write(job: _Job, chunk: Chunk, step: Callable[[], Any]) -> None:
        from .batch import coco_result, pose_crops, pose_people

        crops = []
        for i, path, im in chunk:
            given = job.given
            boxes = ([(0.0, 0.0, float(im.width), float(im.height))] if given is None
                     else given.get(None, []) + given.get(image_id_of(path, i), []))
            # A detector box far outside its image would overflow the crop transform.
            boxes = [b for b in boxes if _box_fits(b, im.width, im.height)]
            crops += pose_crops(i, im, boxes, job.input_hw)
        people = []
        size = job.args.batch_size
        for s in range(0, len(crops), size):
            people += pose_people(job.run, crops[s:s + size])
        for i, path, im in chunk:
            mine = [p for c, p in zip(crops, people) if c.owner == i]
            job.results += [coco_result(image_id_of(path, i), p) for p in mine]
            atomic_write_bytes(job.out(path, "pred"), _png(draw_pose(im, mine)))
            job.written += 1
            step()

    @staticmethod
    def finish(job: _Job, paths: list[Path]) -> None:
        args = job.args
        res_path = args.results or ((args.output if args.output is not None and not (
            job.lone and args.output.suffix.lower() == ".png") else paths[0].parent) / RESULTS_FILE)
        atomic_write_text(res_path, json.dumps(job.results) + "\n")
        print(f"{len(job.results)} people -> {res_path}")


#: What each task writes for its predictions.
_WRITERS = {"seg": _SegWriter, "pose": _PoseWriter}


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    if args.boxes is not None and args.box:
        raise PredictError("give either --boxes or --box, not both")
    if args.batch_size < 1:
        raise PredictError(f"--batch-size {args.batch_size}: must be at least 1")
    paths, lone = expand_inputs(args.inputs)
    given: dict[int | None, list[Box]] | None = read_boxes(args.boxes) if args.boxes else (
        {None: [parse_box(b) for b in args.box]} if args.box else None)
    if lone:
        # A lone unreadable image or a box outside it is an input error, before any work.
        image = read_image(paths[0])
        for b in (given or {}).get(None, []) + (given or {}).get(image_id_of(paths[0], 0), []):
            try:
                check_box(b, image.width, image.height)
            except PredictError as e:  # name the boxes file the box came from
                raise PredictError(f"{args.boxes}: {e}" if args.boxes else str(e)) from None
    net, run, used = load_runtime(args.model, args.runtime)
    writer = _WRITERS[net.task]
    job = _Job(args, lone, net, run, given)
    writer.check(job)
    skipped: list[str] = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr,
               disable=args.quiet, dynamic_ncols=True)
    with torch.no_grad():
        # Read ahead one batch of images, then run them.
        for start in range(0, len(paths), args.batch_size):
            chunk: Chunk = []
            for i in range(start, min(start + args.batch_size, len(paths))):
                try:
                    chunk.append((i, paths[i], read_image(paths[i])))
                except PredictError as e:
                    skipped.append(str(e))
                    bar.update(1)
            writer.write(job, chunk, lambda: bar.update(1))
    bar.close()
    writer.finish(job, paths)
    print(f"{job.written} image(s) predicted ({net.task}, model {net.arch.arch_id}, runtime {used})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``predict`` command to ``scalenas``."""
    p = subparsers.add_parser("predict", help="run a saved model on images and draw the predictions",
                              description=__doc__)
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                   help="image, folder of images, or list file (.txt, one path a line)")
    p.add_argument("--model", type=Path, required=True,
                   help="saved model directory (model.json, arch.json, weights.pt)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (or, for one image, the output PNG); default: next to "
                        "each image")
    p.add_argument("--runtime", choices=("auto", "eager", "torchscript", "onnx"), default="auto",
                   help="auto: the optimized TorchScript recorded in model.json, else eager")
    p.add_argument("--batch-size", type=int, default=4, help="images (seg) or people (pose) a batch")
    p.add_argument("--boxes", type=Path, default=None,
                   help="pose: JSON list of person boxes [x,y,w,h] or COCO detections")
    p.add_argument("--box", action="append", default=[], metavar="x,y,w,h",
                   help="pose: one person box for every image (repeatable)")
    p.add_argument("--results", type=Path, default=None,
                   help="pose: COCO results file (default OUTPUT/results.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
