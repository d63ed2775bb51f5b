"""Sizes that set memory, each with its stated limit, checked before anything is allocated.

A size that a user can give (an image, a traced input size, a model's ``meta.input_hw`` or
``width``) is checked here against its limit *after* padding: the network takes inputs padded to
a multiple of 32, so a 16777216x1 image is 32 rows high by the time it reaches the first layer.
Every message names the file (or argument) and the limit.
"""
from __future__ import annotations

from pipeline.errors import InputError

#: Inputs of the network are padded to a multiple of this: the network's own
#: :data:`pipeline.nets.supernet.INPUT_MULTIPLE` (not imported: the network modules read these
#: limits; tests/nets/test_bad_inputs_export.py checks that the two agree).
PAD = 32

#: Largest padded input the network is run on, in pixels: 4096x4096. The first convolution alone
#: holds 64 bytes per input pixel (64 float channels at half resolution): 1 GiB at this size.
#: Images given to ``predict``, ``export --input`` and a model's ``meta.input_hw`` are held to it.
MAX_PIXELS = 4096 * 4096

#: Largest network width (channels of the first branch) a saved model may declare: twice HRNet's
#: widest (W64). Weights grow with its square; the declared width must also match the weights'.
MAX_WIDTH = 128


def padded(h: int, w: int, multiple: int = PAD) -> tuple[int, int]:
    """``(h, w)`` rounded up to a multiple of ``multiple``."""
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def too_large(source: str, h: int, w: int, what: str, w_first: bool = False) -> str | None:
    """Why an input of ``h`` x ``w`` is too large once padded, or ``None`` when it fits.

    ``source`` names the file or argument, ``what`` the kind of size (``"image"``, ...);
    ``w_first``: sizes written width first, as image sizes are."""
    ph, pw = padded(h, w)
    if ph * pw <= MAX_PIXELS:
        return None
    a, b, pa, pb = (w, h, pw, ph) if w_first else (h, w, ph, pw)
    pad = "" if (ph, pw) == (h, w) else f", padded to {pa}x{pb} = {ph * pw}"
    return (f"{source}: {what} too large ({a}x{b} = {h * w} pixels{pad}; the limit is "
            f"{MAX_PIXELS} pixels, e.g. 4096x4096)")


def check_input_hw(source: str, h: int, w: int, what: str,
                   error: type[Exception] = InputError) -> None:
    """Raise ``error`` when an ``h`` x ``w`` input is over :data:`MAX_PIXELS` once padded."""
    msg = too_large(source, h, w, what)
    if msg is not None:
        raise error(msg)


def check_width(source: str, width: int, error: type[Exception] = InputError) -> None:
    if width > MAX_WIDTH:
        raise error(f"{source}: width {width} too large (the limit is {MAX_WIDTH})")
