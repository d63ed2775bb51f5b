"""The one scoring function of the pipeline and of ``scalenas eval``."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.nets.calibrate import CalibrationSet
from pipeline.space.arch import Architecture


class EvaluationError(InputError):
    """A task evaluation that returned something unusable."""


def check_score(result: Mapping[str, Any], where: str = "evaluation") -> float:
    """The result's ``score`` (the task's headline metric, higher is better), checked finite."""
    if "score" not in result:
        raise EvaluationError(f"{where}: the task evaluation returned no 'score' "
                              f"(keys: {sorted(result)})")
    value = result["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationError(f"{where}: 'score' is not a number ({value!r})")
    if not math.isfinite(float(value)):
        raise EvaluationError(f"{where}: 'score' is not finite ({value})")
    return float(value)


def score(task: Any, model: nn.Module, split: str, device: torch.device | str,
          batch_size: int, *, dataset: Any = None,
          progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """``task``'s metric of ``model`` on ``split`` (its ``evaluate``): the dict holds ``score``.

    ``dataset`` replaces the split's dataset (the search passes its partly cached one);
    ``progress(n)`` is told after each batch how many items it held.
    """
    kwargs: dict[str, Any] = {}
    if dataset is not None:
        kwargs["dataset"] = dataset
    if progress is not None:
        kwargs["progress"] = progress
    result = dict(task.evaluate(model, split, device, batch_size, **kwargs))
    check_score(result, f"{getattr(task, 'name', 'task')} evaluation on {split}")
    return result


def evaluate_subnet(task: Any, supernet: nn.Module, arch: Architecture, split: str,
                    device: torch.device | str, calib: CalibrationSet | None,
                    batch_size: int = 4, *,
                    progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """:func:`score` of ``supernet`` running ``arch``, after BN calibration when ``calib`` is given.

    BN buffers of the layers that run are overwritten by the calibration: call it on a copy of
    the trained weights or after they were saved.
    """
    supernet.set_arch(arch)  # type: ignore[operator]
    if calib is not None:
        calib.calibrate(supernet)
    return score(task, supernet, split, device, batch_size, progress=progress)
