"""Candidate evaluation: set the subnet, calibrate its BN layers, measure it, record one row.

The supernet is shared by every candidate of a job (no copy): ``set_arch`` switches the active
subnet and calibration overwrites the BN statistics of every layer that runs. The accuracy comes
from a task-supplied ``evaluate_fn(model) -> metrics`` (it must contain ``"score"``, higher is
better); the cost from the analytic model (``cost_fn(arch) -> pipeline.cost.Cost``) and, when the
search's objective is latency, the predicted latency in ms (``latency_fn(arch) -> float``, the
measured lookup table of :mod:`pipeline.search.latency`).

Wall time is split into calibration, evaluation and the rest; ``forward_s`` is the time spent
inside the network's forward passes (measured with hooks on the model, the BN statistics hooks
excluded), so ``overhead_s = wall_s - forward_s`` is everything a faster search harness could save.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from pipeline.cost import Cost
from pipeline.nets.supernet import SuperNet

from pipeline.nets.calibrate import CalibrationSet, HookTimer
from .candidates import Candidate
from .table import Row
from pipeline.evaluate.score import EvaluationError

EvaluateFn = Callable[[nn.Module], Mapping[str, Any]]
CostFn = Callable[[Any], Cost]


@dataclass
class ForwardTimer:
    """Accumulates the time spent inside ``model.forward`` (top-level calls only)."""

    seconds: float = 0.0
    calls: int = 0
    _start: list[float] = field(default_factory=list)

    def attach(self, model: nn.Module) -> list[Any]:
        def pre(mod: nn.Module, args: Any) -> None:
            self._start.append(time.perf_counter())

        def post(mod: nn.Module, args: Any, out: Any) -> None:
            self.seconds += time.perf_counter() - self._start.pop()
            self.calls += 1
        return [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]


def numeric_metrics(metrics: Mapping[str, Any], where: str) -> tuple[float, dict[str, float]]:
    """(score, the finite numeric metrics) of a task evaluation result."""
    if "score" not in metrics:
        raise EvaluationError(f"{where}: the task evaluation returned no 'score' "
                              f"(keys: {sorted(metrics)})")
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(float(v)):
            raise EvaluationError(f"{where}: metric {k!r} is not finite ({v})")
        out[k] = float(v)
    if "score" not in out:
        raise EvaluationError(f"{where}: 'score' is not a number ({metrics['score']!r})")
    return out.pop("score"), out


class _Frozen(nn.Module):
    """Forwards to the supernet without registering it as a child.

    Task evaluations switch their model to eval mode and back (a walk over every module); the
    supernet stays in eval mode for the whole job anyway (calibration flips only its BN layers),
    so the evaluation gets this wrapper and that walk costs nothing.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)


class CandidateEvaluator:
    """Evaluates candidates on one supernet with one calibration set (both loaded once per job)."""

    def __init__(self, supernet: SuperNet, calibration: CalibrationSet, evaluate_fn: EvaluateFn,
                 cost_fn: CostFn, *, stage: str, generation: int,
                 latency_fn: Callable[[Any], float] | None = None) -> None:
        self.supernet = supernet
        self.calibration = calibration
        self.evaluate_fn = evaluate_fn
        self.cost_fn = cost_fn
        self.latency_fn = latency_fn
        self.stage, self.generation = stage, generation
        self._fwd = ForwardTimer()
        self._hooks = self._fwd.attach(supernet)
        supernet.eval()
        self._frozen = _Frozen(supernet)
        self.last_breakdown: dict[str, float] = {}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    def __call__(self, cand: Candidate) -> Row:
        t0 = time.perf_counter()
        fwd0 = self._fwd.seconds
        arch = cand.arch
        self.supernet.set_arch(arch)
        cost = self.cost_fn(arch)
        hooks = HookTimer()
        t1 = time.perf_counter()
        self.calibration.calibrate(self.supernet, hooks)
        t2 = time.perf_counter()
        fwd_calib = self._fwd.seconds - fwd0
        metrics = self.evaluate_fn(self._frozen)
        t3 = time.perf_counter()
        score, rest = numeric_metrics(metrics, f"candidate {cand.index} ({arch.arch_id})")
        row_fields = dict(arch_id=arch.arch_id, stage=self.stage, generation=self.generation,
                          index=cand.index, shard=cand.shard, group=cand.group,
                          fusion_prob=cand.fusion_prob, depth_candidates=cand.depth_candidates,
                          params=int(cost.params), gflops=float(cost.gflops), score=score,
                          metrics=rest, arch=arch.to_dict())
        wall = time.perf_counter() - t0
        # The BN statistics hooks run inside the calibration forward; they are harness cost.
        forward = self._fwd.seconds - fwd0 - hooks.seconds
        timing = {"wall_s": wall, "calib_s": t2 - t1, "eval_s": t3 - t2, "forward_s": forward,
                  "overhead_s": wall - forward}
        #: Finer split of the last candidate's time (benchmarks): forward passes of calibration
        #: (hooks excluded) and of evaluation, BN-statistics hooks, set_arch + cost.
        self.last_breakdown = {"calib_forward_s": fwd_calib - hooks.seconds,
                               "eval_forward_s": self._fwd.seconds - fwd0 - fwd_calib,
                               "hooks_s": hooks.seconds, "setup_s": t1 - t0}
        if self.latency_fn is not None:
            row_fields["latency_ms"] = float(self.latency_fn(arch))
        return Row(**row_fields, timing=timing)
