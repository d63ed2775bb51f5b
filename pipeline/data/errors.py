"""The one exception type of the data layer: every message names the offending file or key."""
from __future__ import annotations

from pipeline.errors import InputError


class DataError(InputError):
    """Bad or missing dataset input; the message names the file/key and the problem."""
