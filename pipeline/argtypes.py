"""argparse value types shared by the command-line modules: a bad value is one usage line."""
from __future__ import annotations

import argparse


def seed_arg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer seed, got {text!r}")
    return v
