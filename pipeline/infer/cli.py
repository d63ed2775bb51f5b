"""``scalenas predict --model DIR INPUT... [-o OUT] [--runtime auto|eager|torchscript|onnx]``.

INPUT is an image, a folder (its image files, sorted) or a list file (``.txt``: one image path a
line, relative to the list file). The model runs in batches (``--batch-size``) with a progress bar.
Segmentation writes ``<name>_pred.png`` (the image blended with the Cityscapes colours) and
``<name>_mask.png`` (a palette PNG of the class ids). Pose writes ``<name>_pred.png`` (skeletons
on the person boxes) and one COCO-format results file (``results.json``); the boxes come from
``--boxes`` (a list of ``[x, y, w, h]``, or COCO detections with ``image_id``), else the whole
image. Any image size works: it is padded to a multiple of 32 (at most 4096x4096 pixels once
padded) and the prediction is cropped back. 16-bit greyscale images are scaled to 8 bits.

Outputs never replace an input or a file of the model directory, and never a file that predict
did not write unless --overwrite is given; its own earlier pictures (marked in the PNG) are
replaced, and left out of a folder's inputs. Two inputs that would write the same output stop
the run before any work (docs/predict.md).

The default runtime is the optimized TorchScript exported into the model directory (``scalenas
export``), else the eager model; ``--artifact FILE`` runs an artifact exported elsewhere. A lone
image that cannot be read is an error (exit 2); in a folder or list, unreadable images are
skipped, listed at the end, and the exit status is 1. Outputs are written atomically, image by
image, so what was finished stays written.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from pipeline.io import atomic_write_bytes, atomic_write_text, read_json
from pipeline.limits import MAX_PIXELS, PAD, padded
from pipeline.space.arch import ArchitectureError

from .images import IMAGE_SUFFIXES, marked_png, marker_of, read_image
from .outputs import RESULTS_FILE, Plan, check_plan, plan_outputs  # noqa: F401 (RESULTS_FILE)
from .predict import Box, PredictError, draw_pose, draw_seg, parse_box

LIST_SUFFIXES = (".txt", ".lst")


@dataclass
class Inputs:
    """The images to predict, and what the command reads (never replaced by an output)."""

    images: list[Path]
    lone: bool                       # one image named alone
    lists: list[Path] = field(default_factory=list)
    own_outputs: int = 0             # earlier outputs of predict left out of folders


def expand_inputs(inputs: list[Path]) -> Inputs:
    """The image paths named by ``inputs``: a folder's images (sorted) but the pictures an
    earlier ``predict`` wrote there, a list file's lines, or an image."""
    found = Inputs([], False)
    seen: set[str] = set()

    def add(path: Path) -> None:
        # The same image named twice (a folder and its file, two list lines) is predicted once.
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.images.append(path)

    for p in inputs:
        if p.is_dir():
            for f in sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES):
                if marker_of(f) is not None:
                    found.own_outputs += 1
                else:
                    add(f)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise PredictError(f"{p}: unreadable list file: {e}") from None
            found.lists.append(p)
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    add(p.parent / line.strip())
        elif p.exists():
            add(p)
        else:
            raise PredictError(f"{p}: no such image, folder or list file")
    if not found.images:
        own = (f" ({found.own_outputs} earlier output(s) of scalenas predict left out)"
               if found.own_outputs else "")
        raise PredictError(f"{' '.join(map(str, inputs))}: no image files found{own}")
    found.lone = len(inputs) == 1 and len(found.images) == 1 and inputs[0] == found.images[0]
    return found


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


def check_boxes_match(path: Path, boxes: dict[int | None, list[Box]], images: list[Path]) -> None:
    """Detections keyed by ``image_id`` of which none names an input image are a mistake (another
    split's detections, or file names without the COCO number): one line, before any work."""
    ids = {k for k in boxes if k is not None}
    if not ids or None in boxes:
        return
    mine = {image_id_of(p, i) for i, p in enumerate(images)}
    if not ids & mine:
        raise PredictError(
            f"{path}: 0 of its {len(ids)} image id(s) match the {len(images)} input image(s) "
            f"(an image's id is the number of its file name, 000000000139.jpg -> 139, else its "
            f"position in the inputs)")


def _model_input_hw(meta: dict[str, Any], model_dir: Path) -> tuple[int, int]:
    from pipeline.limits import check_input_hw
    from pipeline.nets.export import MODEL_JSON, meta_input_hw

    hw = meta_input_hw(meta, model_dir / MODEL_JSON)  # malformed: one line naming the record
    if hw is None:
        raise PredictError(f"{model_dir / MODEL_JSON}: pose model record lacks meta.input_hw "
                           f"[h, w]")
    check_input_hw(f"{model_dir / MODEL_JSON}", hw[0], hw[1], "meta.input_hw", PredictError)
    if hw[0] % PAD or hw[1] % PAD:  # crops go to the network unpadded
        raise PredictError(f"{model_dir / MODEL_JSON}: meta.input_hw {hw[0]}x{hw[1]}: must be "
                           f"multiples of {PAD}")
    return hw[0], hw[1]


def read_record(model_dir: Path) -> dict[str, Any]:
    """The model record (task, meta), read before the network is built."""
    from pipeline.nets.export import MODEL_JSON, read_record as _read

    return _read(model_dir / MODEL_JSON)


def load_runtime(model_dir: Path, runtime: str,
                 artifact: Path | None = None) -> tuple[Any, Any, str]:
    """(eager net for task/meta, callable runtime, name of the runtime used)."""
    from pipeline.nets.deploy import DeployError, find_entry, load_artifact
    from pipeline.nets.export import load_model

    try:
        net = load_model(model_dir)
    except ArchitectureError as e:
        raise PredictError(f"{model_dir}: {e}") from None
    if artifact is not None:
        module, entry = load_artifact(model_dir, artifact=artifact)
        return net, module, f"{entry['format']} ({artifact})"
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


def model_files(model_dir: Path) -> list[Path]:
    """The model directory's own files: record, architecture, weights, and its artifacts."""
    files = [f for f in model_dir.iterdir() if f.is_file()] if model_dir.is_dir() else []
    from pipeline.nets.deploy import DEPLOY_DIR

    deploy = model_dir / DEPLOY_DIR
    if deploy.is_dir():
        files += [f for f in deploy.rglob("*") if f.is_file()]
    return files


@dataclass
class _Job:
    """What one ``predict`` call writes, shared by the task writers."""

    args: argparse.Namespace
    plan: Plan
    net: Any
    run: Any
    given: dict[int | None, list[Box]] | None
    input_hw: tuple[int, int] = (0, 0)  # pose: the model's crop size
    images: int = 0                     # images predicted
    files: int = 0                      # files written
    results: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path, kind: str, image: Image.Image) -> None:
        atomic_write_bytes(self.plan.files[path][kind], marked_png(image, f"{kind} of {path.name}"))
        self.files += 1


Chunk = list[tuple[int, Path, Image.Image]]


def _pixels(image: Image.Image) -> int:
    h, w = padded(image.height, image.width)
    return h * w


class SegWriter:
    """Class-id palette masks and blended pictures; images of one padded size share a batch, of
    at most :data:`MAX_PIXELS` padded pixels in all (a lone image may fill it)."""

    kinds = ("mask", "pred")
    writes_results = False

    @staticmethod
    def check_record(record: dict[str, Any], model_dir: Path) -> None:
        pass

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
        for same in groups.values():
            per = max(1, MAX_PIXELS // _pixels(same[0][2]))
            for s in range(0, len(same), per):
                items = same[s:s + per]
                labels = seg_labels(job.run, [im for _, _, im in items])
                for (_, path, im), lab in zip(items, labels):
                    job.write(path, "mask", mask_image(lab, job.net.num_outputs))
                    job.write(path, "pred", draw_seg(im, lab, job.net.num_outputs))
                    job.images += 1
                    step()

    @staticmethod
    def finish(job: _Job) -> None:
        pass


class PoseWriter:
    """Skeleton pictures and one COCO results file; people from every image share batches."""

    kinds = ("pred",)
    writes_results = True

    @staticmethod
    def check_record(record: dict[str, Any], model_dir: Path) -> None:
        _model_input_hw(record["meta"], model_dir)  # its size sets the crops' memory, checked first

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
        ph, pw = padded(*job.input_hw)
        size = max(1, min(job.args.batch_size, MAX_PIXELS // (ph * pw)))
        for s in range(0, len(crops), size):
            people += pose_people(job.run, crops[s:s + size])
        for i, path, im in chunk:
            mine = [p for c, p in zip(crops, people) if c.owner == i]
            job.results += [coco_result(image_id_of(path, i), p) for p in mine]
            job.write(path, "pred", draw_pose(im, mine))
            job.images += 1
            step()

    @staticmethod
    def finish(job: _Job) -> None:
        res_path = job.plan.results
        assert res_path is not None
        atomic_write_text(res_path, json.dumps(job.results) + "\n")
        job.files += 1
        print(f"{len(job.results)} people -> {res_path}")


def task_writer(task: str, source: Path) -> Any:
    """The writer of ``task``'s predictions, named by the task's facts (pipeline.tasks.facts)."""
    from pipeline.tasks.facts import FACTS

    if task not in FACTS:
        raise PredictError(f"{source}: task {task!r} has no predict writer")
    module, _, name = FACTS[task].predict_writer.partition(":")
    return getattr(importlib.import_module(module), name)


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    if args.boxes is not None and args.box:
        raise PredictError("give either --boxes or --box, not both")
    if args.batch_size < 1:
        raise PredictError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.artifact is not None and args.runtime != "auto":
        raise PredictError("give either --runtime or --artifact, not both")
    found = expand_inputs(args.inputs)
    paths = found.images
    given: dict[int | None, list[Box]] | None = read_boxes(args.boxes) if args.boxes else (
        {None: [parse_box(b) for b in args.box]} if args.box else None)
    if args.boxes is not None and given is not None:
        check_boxes_match(args.boxes, given, paths)
    if found.lone:
        # A lone unreadable image or a box outside it is an input error, before any work.
        image = read_image(paths[0])
        for b in (given or {}).get(None, []) + (given or {}).get(image_id_of(paths[0], 0), []):
            try:
                check_box(b, image.width, image.height)
            except PredictError as e:  # name the boxes file the box came from
                raise PredictError(f"{args.boxes}: {e}" if args.boxes else str(e)) from None
    # Where every output goes, checked before the network is built or anything is written.
    record = read_record(args.model)
    task = record["task"]
    writer = task_writer(task, args.model)
    writer.check_record(record, args.model)
    plan = plan_outputs(args.output, args.results, paths, found.lone, writer.kinds,
                        writer.writes_results)
    check_plan(plan, {"an input image": paths, "the list file": found.lists,
                      "the boxes file": [args.boxes] if args.boxes else [],
                      f"a file of the model directory {args.model}": model_files(args.model),
                      "the artifact or its record": [] if args.artifact is None else [
                          args.artifact, args.artifact.with_name(args.artifact.name + ".json")]},
               args.overwrite)
    net, run, used = load_runtime(args.model, args.runtime, args.artifact)
    writer = task_writer(net.task, args.model)
    job = _Job(args, plan, net, run, given)
    writer.check(job)
    skipped: list[str] = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", file=sys.stderr,
               disable=args.quiet, dynamic_ncols=True)
    with torch.no_grad():
        # Read ahead one batch of images (at most MAX_PIXELS padded pixels), then run them.
        chunk: Chunk = []
        pixels = 0
        for i, path in enumerate(paths):
            try:
                im = read_image(path)
            except PredictError as e:
                skipped.append(str(e))
                bar.update(1)
                continue
            chunk.append((i, path, im))
            pixels += _pixels(im)
            if len(chunk) >= args.batch_size or pixels >= MAX_PIXELS:
                writer.write(job, chunk, lambda: bar.update(1))
                chunk, pixels = [], 0
        if chunk:
            writer.write(job, chunk, lambda: bar.update(1))
    bar.close()
    writer.finish(job)
    left_out = (f"; {found.own_outputs} earlier output(s) of predict in the folder left out"
                if found.own_outputs else "")
    print(f"{job.images} image(s) predicted, {job.files} file(s) written ({net.task}, model "
          f"{net.arch.arch_id}, runtime {used}){left_out}")
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
                   help="auto: the optimized TorchScript exported into the model directory, else "
                        "eager")
    p.add_argument("--artifact", type=Path, default=None, metavar="FILE",
                   help="run this artifact of `scalenas export -o FILE` (TorchScript or ONNX, as "
                        "its record FILE.json says; it must come from the model's weights)")
    p.add_argument("--batch-size", type=int, default=4, help="images (seg) or people (pose) a batch")
    p.add_argument("--boxes", type=Path, default=None,
                   help="pose: JSON list of person boxes [x,y,w,h] or COCO detections")
    p.add_argument("--box", action="append", default=[], metavar="x,y,w,h",
                   help="pose: one person box for every image (repeatable)")
    p.add_argument("--results", type=Path, default=None,
                   help="pose: COCO results file (default OUTPUT/results.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files that predict did not write (never an input or a "
                        "file of the model directory); its own earlier outputs are always "
                        "replaced")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)
