"""Image and JSON reading/writing with errors that name the file, and byte-stable writers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.errors import DataError
from pipeline.io import read_json as pipeline_read_json


def open_image(path: Path, mode: str = "RGB") -> Image.Image:
    """Open an image file fully decoded in `mode`; missing/unreadable files raise DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if im.mode != mode else im.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def read_label_png(path: Path, expected_wh: tuple[int, int] | None = None) -> Image.Image:
    """Read a single-channel label PNG as mode "L" (values kept, not palette colours)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "P"):
                # A palette PNG stores class indices; keep the indices, not the colours.
                lab = im.copy() if im.mode == "L" else Image.fromarray(np.asarray(im, dtype=np.uint8))
            elif im.mode in ("I", "I;16", "I;16B"):
                arr = np.asarray(im)
                if arr.min() < 0 or arr.max() > 255:
                    raise DataError(f"{path}: label values outside 0..255 ({arr.min()}..{arr.max()})")
                lab = Image.fromarray(arr.astype(np.uint8))
            else:
                raise DataError(f"{path}: label PNG must be single-channel, got mode {im.mode}")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read label image ({exc})") from exc
    if expected_wh is not None and lab.size != tuple(expected_wh):
        raise DataError(f"{path}: label size {lab.size[0]}x{lab.size[1]} (WxH) does not match "
                        f"its image {expected_wh[0]}x{expected_wh[1]}")
    return lab


def read_json(path: Path) -> Any:
    """Parse a JSON file; missing or malformed files raise DataError naming the file."""
    return pipeline_read_json(path, "JSON file", DataError)


def dumps_stable(obj: Any) -> str:
    """JSON text that depends only on the content (fixed separators, insertion-ordered keys)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n"



def save_png(path: Path, array: np.ndarray) -> None:
    """Save uint8 HxW or HxWx3 as PNG with fixed settings (no metadata, so bytes are reproducible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        path, format="PNG", compress_level=1, optimize=False)
