"""Where ``predict`` writes, decided and checked before any image is predicted.

Rules (docs/predict.md):

- an output never replaces an input of the command (an image, a list file, the boxes file) or a
  file of the model directory (its record, architecture, weights, artifacts), even with
  ``--overwrite``;
- an output never replaces a file that ``predict`` did not write (a PNG without its marker, see
  :mod:`pipeline.infer.images`; a results file that is not ``predict``'s COCO results), unless
  ``--overwrite`` is given; its own earlier outputs are replaced;
- two inputs never write the same output (two ``street.*`` images, or two folders' ``a.png``
  into one ``-o`` folder): the run is refused, naming the pairs.

Each refusal is one :class:`PredictError` line naming the file; nothing has been written then.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io import read_json
from pipeline.nets.export import is_model_file

from .images import marker_of
from .predict import PredictError

RESULTS_FILE = "results.json"
#: The keys of each entry of the COCO results file that ``predict`` writes (batch.coco_result).
RESULT_KEYS = frozenset({"image_id", "category_id", "keypoints", "score", "bbox"})
#: How many paths a refusal lists before "and N more".
SHOWN = 3


@dataclass
class Plan:
    """The output paths of every input image (``files[image][kind]``) and the results file."""

    files: dict[Path, dict[str, Path]] = field(default_factory=dict)
    results: Path | None = None

    def all(self) -> list[tuple[Path | None, Path]]:
        """(input image or None for the results file, output) pairs."""
        out: list[tuple[Path | None, Path]] = [(img, p) for img, kinds in self.files.items()
                                               for p in kinds.values()]
        if self.results is not None:
            out.append((None, self.results))
        return out


def _more(items: list[str]) -> str:
    extra = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + extra


def _keys(path: Path) -> set[tuple]:
    """Identities of a path: its real path, and its inode where it exists (hard links)."""
    keys: set[tuple] = {("path", os.path.realpath(path))}
    try:
        st = os.stat(path)
        keys.add(("inode", st.st_dev, st.st_ino))
    except OSError:
        pass
    return keys


def is_own_results(path: Path) -> bool:
    """Whether ``path`` holds COCO results exactly as ``predict`` writes them."""
    try:
        doc = read_json(path, "results file", PredictError)
    except PredictError:
        return False
    return isinstance(doc, list) and all(isinstance(e, dict) and set(e) == RESULT_KEYS
                                         for e in doc)


def plan_outputs(output: Path | None, results: Path | None, images: list[Path], lone: bool,
                 kinds_written: tuple[str, ...], writes_results: bool) -> Plan:
    """Output paths of ``images`` (``-o`` is ``output``, ``--results`` ``results``): a picture
    per image and kind (``<name>_<kind>.png``), and the results file where the task writes one
    (what a task writes is its writer's: pipeline.infer.cli)."""
    single = lone and output is not None and output.suffix.lower() == ".png"
    if output is not None and output.suffix.lower() == ".png" and not lone:
        raise PredictError(f"{output}: -o names one picture, but {len(images)} images are given: "
                           f"give a folder")
    if output is not None and not single and output.exists() and not output.is_dir():
        raise PredictError(f"{output}: -o names an existing file, not a folder")
    plan = Plan()
    for img in images:
        kinds: dict[str, Path] = {}
        for kind in kinds_written:
            if single:
                assert output is not None
                kinds[kind] = output if kind == "pred" else output.with_name(
                    f"{output.stem}_{kind}.png")
            else:
                folder = output if output is not None else img.parent
                kinds[kind] = folder / f"{img.stem}_{kind}.png"
        plan.files[img] = kinds
    if writes_results:
        plan.results = results if results is not None else (
            (output if output is not None and not single else images[0].parent) / RESULTS_FILE)
    return plan


def check_plan(plan: Plan, inputs: dict[str, list[Path]], overwrite: bool) -> None:
    """Refuse, in one line, outputs that collide, replace an input or a model file, are folders,
    or (without ``overwrite``) replace files ``predict`` did not write."""
    by_path: dict[str, list[tuple[Path | None, Path]]] = {}
    for img, out in plan.all():
        by_path.setdefault(os.path.realpath(out), []).append((img, out))
    pairs = []
    for group in by_path.values():
        if len(group) > 1:
            names = [str(img) if img is not None else "the results file" for img, _ in group]
            pairs.append(f"{' and '.join(names)} both write {group[0][1]}")
    if pairs:
        raise PredictError(f"outputs collide: {_more(pairs)} (rename one, or predict them into "
                           f"different -o folders)")
    protected = {key: role for role, paths in inputs.items() for p in paths for key in _keys(p)}
    for _, out in plan.all():
        role = next((protected[k] for k in _keys(out) if k in protected), None)
        if role is None and is_model_file(out):
            role = f"a file of the model directory {out.parent}"
        if role is not None:
            raise PredictError(f"{out}: is {role}; predict never replaces it, even with "
                               f"--overwrite (give another -o)")
    dirs = [str(out) for _, out in plan.all() if out.is_dir()]
    if dirs:
        raise PredictError(f"{dirs[0]}: output is a folder" + (
            f" (and {len(dirs) - 1} more)" if len(dirs) > 1 else ""))
    if overwrite:
        return
    foreign = [str(out) for img, out in plan.all() if out.exists() and not (
        is_own_results(out) if img is None else marker_of(out) is not None)]
    if foreign:
        raise PredictError(f"{_more(foreign)}: exist{'s' if len(foreign) == 1 else ''} and "
                           f"{'was' if len(foreign) == 1 else 'were'} not written by scalenas "
                           f"predict; --overwrite replaces {'it' if len(foreign) == 1 else 'them'}"
                           f" (or give another -o)")


__all__ = ["Plan", "plan_outputs", "check_plan", "is_own_results", "RESULTS_FILE"]
