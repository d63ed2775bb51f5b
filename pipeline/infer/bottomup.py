"""``scalenas predict`` for a bottom-up pose model: every person of each image in one pass, grouped
by tag, drawn as skeletons (``<name>_pred.png``), and one COCO-format results file.

Each image goes through the model's test: its short side resized to the model's input size, the
long side padded to a multiple of 32, the flip test, the heatmaps of both resolutions averaged,
people grouped by tag (pipeline.bottomup.infer), joints mapped back to the image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.data.keypoints import COCO_SKELETON

from .cli import Chunk, PoseWriter, _Job, _model_input_hw
from .predict import PredictError


#: One colour per person (cycled), so that grouped skeletons tell apart.
_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def draw_people(image: Image.Image, results: list[dict]) -> Image.Image:
    """The image with each grouped person's skeleton (COCO limbs between found joints) and
    joints, one colour per person."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    r = max(2, round(max(out.size) / 160))
    for n, res in enumerate(results):
        colour = _COLOURS[n % len(_COLOURS)]
        kps = np.asarray(res["keypoints"], dtype=np.float64).reshape(-1, 3)
        found = kps[:, 2] > 0
        for a, b in COCO_SKELETON:
            if a - 1 < len(kps) and b - 1 < len(kps) and found[a - 1] and found[b - 1]:
                draw.line([tuple(kps[a - 1, :2]), tuple(kps[b - 1, :2])], fill=colour,
                          width=max(1, r // 2 + 1))
        for x, y in kps[found, :2]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return out


class BottomUpWriter:
    """Grouped skeletons on the whole image and one COCO results file (no boxes needed)."""

    kinds = ("pred",)
    writes_results = True

    @staticmethod
    def check_record(record: dict[str, Any], model_dir: Path) -> None:
        hw = _model_input_hw(record["meta"], model_dir)
        if hw[0] != hw[1]:
            raise PredictError(f"{model_dir}: meta.input_hw {hw[0]}x{hw[1]}: a bottom-up model "
                               "takes a square input size")

    @staticmethod
    def check(job: _Job) -> None:
        if job.given is not None:
            raise PredictError("--boxes/--box: a bottom-up model finds every person itself; "
                               "give no boxes")
        job.input_hw = _model_input_hw(job.net.meta, job.args.model)

    @staticmethod
    def write(job: _Job, chunk: Chunk, step: Callable[[], Any]) -> None:
        from pipeline.bottomup.data import eval_scale, resize_matrix
        from pipeline.bottomup.infer import predict_batch
        from pipeline.data.transforms import to_normalized_tensor, warp_affine

        from .cli import image_id_of

        size = int(job.input_hw[0])
        for i, path, im in chunk:
            rgb = im.convert("RGB")
            scale, (h, w) = eval_scale(rgb.height, rgb.width, size)
            x = to_normalized_tensor(warp_affine(rgb, resize_matrix(scale), (w, h),
                                                 fill=(0, 0, 0)))[None]
            with torch.no_grad():
                results = predict_batch(job.run, x, [scale], [image_id_of(path, i)],
                                        int(job.net.num_outputs), flip=True)[0]
            job.results += results
            job.write(path, "pred", draw_people(rgb, results))
            job.images += 1
            step()

    #: The COCO results file, written as the top-down writer writes it.
    finish = staticmethod(PoseWriter.finish)


__all__ = ["BottomUpWriter", "draw_people"]
