"""The project's input-error types: what the user can fix (a parameter, a file, an argument).

A stage or command that fails with an :class:`InputError` reports one line naming the problem and
exits with status 2; any other exception is a bug in the pipeline: its traceback stays in the log
and the exit status is 1 (pipeline.stages.common). Every module-level error type that describes
bad input derives from :class:`InputError`; it stays a ``ValueError`` so callers that catch
``ValueError`` keep working.
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_BUG = 1


class InputError(ValueError):
    """Bad input the user can fix; the message names the file, key or argument and the problem."""


class ConfigError(InputError):
    """A parameter file that cannot be used; the message names the file and the key path."""


class StageInputError(InputError):
    """Bad stage input (arguments, files): reported as one line, exit status 2."""
