"""Reading the images ``predict`` is given, and marking the pictures it writes.

An image is checked from its header before any pixel is decoded: its size, once padded to a
multiple of 32 as the network takes it, must be within :data:`pipeline.limits.MAX_PIXELS` (PIL's
own decompression-bomb check is set aside while we open it, so our message, with the limit, is the
one the user sees, and PIL's warning never leaks). 16-bit greyscale images are scaled to 8 bits
(65535 -> 255), never clipped; 32-bit integer and floating-point images have no fixed range and
are refused.

Every PNG that ``predict`` writes carries a text chunk :data:`MARKER_KEY`: a second run over the
same folder recognises its own earlier pictures, leaves them out of the inputs, and may replace
them; a file without the marker is the user's.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from pipeline.io import check_regular_file
from pipeline.limits import MAX_PIXELS, padded

from .predict import PredictError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")

#: PNG text chunk on every picture ``predict`` writes; its value says what the picture is.
MARKER_KEY = "scalenas-predict"

#: 16-bit greyscale modes (PNG, TIFF): scaled to 8 bits.
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")


@contextlib.contextmanager
def _no_pil_bomb_check() -> Iterator[None]:
    """PIL's decompression-bomb check off: our own, lower, limit is checked from the header, and
    PIL's warning (or error, which names no limit of ours) must not reach the user."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_image_size(path: Path, w: int, h: int) -> None:
    """One ``PredictError`` when a ``w`` x ``h`` image is over the limit once padded."""
    ph, pw = padded(h, w)
    if ph * pw <= MAX_PIXELS:
        return
    pad = "" if (ph, pw) == (h, w) else f", padded to {pw}x{ph} = {ph * pw}"
    raise PredictError(f"{path}: image too large ({w}x{h} = {w * h} pixels{pad}; the limit is "
                       f"{MAX_PIXELS} pixels, e.g. 4096x4096): scale it down first")


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    if im.mode in _MODES_16 or (im.mode == "I" and im.format == "PNG"):
        # PNG's 16-bit greyscale (Pillow opens it as "I;16" or "I"): values 0..65535.
        a = np.asarray(im).astype(np.uint32)
        if a.size and (a.min() < 0 or a.max() > 65535):  # "I" outside 16 bits: not a PNG's
            raise PredictError(f"{path}: 32-bit integer image: not supported (save it with 8 "
                               f"or 16 bits per channel)")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F") or im.mode.startswith(("I;", "F;")):
        kind = "floating-point" if im.mode.startswith("F") else "32-bit integer"
        raise PredictError(f"{path}: {kind} image (mode {im.mode}): not supported (save it "
                           f"with 8 or 16 bits per channel)")
    return im.convert("RGB")


def read_image(path: Path) -> Image.Image:
    """Decode an RGB image, or raise one ``PredictError`` saying what is wrong with the file.

    The size is checked from the header, before any pixel is decoded."""
    check_regular_file(path, "image file", PredictError)
    try:
        with _no_pil_bomb_check(), Image.open(path) as im:
            w, h = im.size
            check_image_size(path, w, h)
            im.load()
            return _to_rgb(im, path)
    except PredictError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError,
            SyntaxError) as e:
        raise PredictError(f"{path}: not a readable image file ({type(e).__name__})") from None


def marker_of(path: Path) -> str | None:
    """The :data:`MARKER_KEY` text of a PNG that ``predict`` wrote, else ``None`` (read from the
    chunks before the pixels: nothing is decoded)."""
    if path.suffix.lower() != ".png":
        return None
    try:
        with _no_pil_bomb_check(), Image.open(path) as im:
            value = im.info.get(MARKER_KEY) if im.format == "PNG" else None
    except Exception:  # noqa: BLE001 - unreadable: not ours (reading it later says why)
        return None
    return value if isinstance(value, str) else None


def marked_png(image: Image.Image, what: str) -> bytes:
    """PNG bytes of ``image`` with the :data:`MARKER_KEY` chunk saying ``what`` it is."""
    info = PngImagePlugin.PngInfo()
    info.add_text(MARKER_KEY, what)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


__all__ = ["IMAGE_SUFFIXES", "MARKER_KEY", "read_image", "marker_of", "marked_png",
           "check_image_size"]
