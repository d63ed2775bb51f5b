"""The ``scalenas`` command: one entry point, subcommand groups contributed by modules.

Each module named in :data:`GROUPS` exposes ``register(subparsers)``, which adds its group (e.g.
``scalenas arch ...``) and sets ``func`` on every leaf parser: ``func(args) -> int | None``.
Errors from our code (``ArchitectureError`` and other ``ValueError``/``OSError``) become a single
``scalenas: error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

#: Modules that contribute subcommand groups, in help order.
GROUPS: tuple[str, ...] = ("pipeline.cli.arch", "pipeline.data.cli", "pipeline.infer.cli",
                           "pipeline.evaluate.cli", "pipeline.nets.export_cli",
                           "pipeline.search.latency_cli")

PROG = "scalenas"
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one stderr line (subparsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="ScaleNAS pipeline command line.")
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP")
    for name in GROUPS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage error or --help: report the status instead of exiting
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    func = getattr(args, "func", None)
    if func is None:
        # A group or nothing was named without a command: show what is available.
        (getattr(args, "group_parser", None) or parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        rc = func(args)
    except (ValueError, OSError) as e:  # ArchitectureError is a ValueError
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
