"""Multi-objective evolution, one generation at a time, as a pure function.

``next_generation(pool, rng_state, config, ...)`` takes everything evaluated so far, the random
generator's state and the configuration, and returns the next children together with the
generator's new state. Nothing else is read, so a generation written to a file (``Generation.save``)
is all a killed search needs to resume, and the same seed always gives the same children.

Parents: ``parents`` candidates from successive Pareto layers of the pool (GFLOPs down, score
up), the overflowing layer cut by crowding distance. Child: a uniformly drawn parent as the base,
each module replaced by a random parent's module with ``crossover_prob`` (``pipeline.space.ops
.crossover``), then mutation (fusion bits with ``mutation_prob``, depths with
``depth_mutation_prob``; ``mutation="resample"`` keeps a child near its parent's cost, ``"flip"``
is the release's bit flip). Children already evaluated, already made in this generation, or
outside the optional GFLOPs bounds are discarded and redrawn.

The release's search (``release_operators``, see :func:`operators`): the overflowing
Pareto layer is filled cheapest first; child ``i`` takes parent ``i`` (in selection order, cycling
when ``population`` exceeds ``parents``) as its crossover base and one uniformly drawn other parent
as its partner (``pipeline.space.ops.crossover_pair``); the last module is neither crossed nor
mutated; depths never change; a duplicate or out-of-bounds child is redrawn from the same base,
at most ``attempts_per_child`` times.

Screening (``screen_factor`` > 1): ``screen_factor * population`` children are drawn, a ridge
surrogate fitted to the pool predicts their scores, and the ``population`` with the largest
predicted hypervolume gain are kept (``pipeline.search.surrogate``). ``screen_factor = 1``
evaluates every child drawn, as the paper does.

The search takes an efficiency estimator (``estimate_cost``: architecture -> cost) and, in
``run_evolution``, an accuracy estimator as arguments, so the analytic cost model and the measured
evaluation (or a cheap stand-in in tests) swap freely. The cost is GFLOPs by default; with
``axis`` = :func:`pipeline.search.objective.latency_axis` it is predicted milliseconds (the pool's
``Evaluated.cost``, the estimator, the bounds ``cost_min``/``cost_max`` and the reference point
are then all in ms), and errors and the generation record say so.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from pipeline.config import EvolutionConfig
from pipeline.io import read_json
from pipeline.io import atomic_write_text
from pipeline.space.arch import Architecture, ArchitectureError
from pipeline.space.ops import crossover, crossover_pair, mutate
from pipeline.space.sample import largest, smallest

from .objective import GFLOPS_AXIS, CostAxis
from .pareto import select_by_rank
from .surrogate import features, fit_ridge, select_by_predicted_gain
from pipeline.errors import InputError

STATE_SCHEMA = "scalenas-evolution/1"

CostFn = Callable[[Architecture], float]
AccuracyFn = Callable[[Architecture], float]


class EvolutionError(InputError):
    """Bad evolution parameters or an impossible request; the message says which."""


class Evaluated(NamedTuple):
    """One member of the evaluated pool (``cost``: on the search's axis, GFLOPs or ms)."""

    arch: Architecture
    cost: float
    score: float


@dataclass(frozen=True)
class Operators:
    """How children are made, derived from the ``search.evolution`` section."""

    mutation: str
    screen_factor: int
    mutate_depth: bool
    mutate_last_module: bool
    #: The release's parent use, partner choice and cheapest-first fill (see the module doc).
    release_selection: bool


def operators(config: EvolutionConfig) -> Operators:
    """The section's operators; ``release_operators`` gives the release's search (bit-flip
    mutation, no depth mutation, last module never touched, every child drawn evaluated; each
    parent once as a crossover base with one random partner, cheapest-first fill)."""
    if config.release_operators:
        return Operators(mutation="flip", screen_factor=1, mutate_depth=False,
                         mutate_last_module=False, release_selection=True)
    return Operators(mutation=config.mutation, screen_factor=config.screen_factor,
                     mutate_depth=True, mutate_last_module=True, release_selection=False)


def config_record(config: EvolutionConfig, axis: CostAxis = GFLOPS_AXIS) -> dict[str, Any]:
    """What a generation file records of the settings that made it (a stable layout; the cost
    axis only when it is not GFLOPs, so a GFLOPs search writes what it always wrote)."""
    ops = operators(config)
    extra = {} if axis.objective == "gflops" else {"objective": axis.objective,
                                                     "cost_unit": axis.unit}
    return {**extra,"parents": config.parents, "population": config.population,
            "crossover_prob": config.crossover_prob, "mutation_prob": config.mutation_prob,
            "depth_mutation_prob": config.depth_mutation_prob,
            "depth_candidates": list(config.depth_candidates), "mutation": ops.mutation,
            "screen_factor": ops.screen_factor, "mutate_depth": ops.mutate_depth,
            "mutate_last_module": ops.mutate_last_module,
            # In a GFLOPs search the bounds are GFLOPs, under the names the file always had.
            **({"flops_min": config.cost_min, "flops_max": config.cost_max}
               if axis.objective == "gflops" else
               {"cost_min": config.cost_min, "cost_max": config.cost_max}),
            "max_attempts_per_child": config.attempts_per_child,
            "release_selection": ops.release_selection}


def in_bounds(config: EvolutionConfig, cost: float) -> bool:
    return ((config.cost_min is None or cost >= config.cost_min)
            and (config.cost_max is None or cost <= config.cost_max))


@dataclass(frozen=True)
class Generation:
    """One generation's record: parents chosen, children made, generator state before and after."""

    generation: int
    parents: tuple[str, ...]
    children: tuple[Architecture, ...]
    rng_in: Mapping[str, Any]
    rng_out: Mapping[str, Any]
    pool_size: int
    config: Mapping[str, Any]
    #: Screening record (candidates drawn, surrogate strength and leave-one-out R^2, each kept
    #: child's predicted score, or why screening was skipped); None when screen_factor is 1.
    screening: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": STATE_SCHEMA, "generation": self.generation,
             "pool_size": self.pool_size, "config": dict(self.config),
             "rng_in": self.rng_in, "rng_out": self.rng_out,
             "parents": list(self.parents),
             "children": [a.to_dict() for a in self.children]}
        if self.screening is not None:
            d["screening"] = dict(self.screening)
        return d

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Generation":
        p = Path(path)
        doc = read_json(p, "generation state file", EvolutionError)
        if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
            raise EvolutionError(f"{p}: not a generation state file (schema {STATE_SCHEMA!r})")
        screening = doc.get("screening")
        if screening is not None and not isinstance(screening, dict):
            raise EvolutionError(f"{p}: malformed generation state: screening must be an "
                                 f"object, got {type(screening).__name__}")
        try:
            children = tuple(Architecture.from_dict(c, source=f"{p}: child {i}")
                             for i, c in enumerate(doc["children"]))
            gen = cls(int(doc["generation"]), tuple(doc["parents"]), children, doc["rng_in"],
                      doc["rng_out"], int(doc["pool_size"]), doc["config"], screening)
            rng_from_state(gen.rng_out)
        except ArchitectureError as e:
            raise EvolutionError(str(e)) from None
        except (KeyError, TypeError, ValueError) as e:
            raise EvolutionError(f"{p}: malformed generation state: {e!r}") from None
        return gen


def initial_rng_state(seed: int, *stream: int) -> dict[str, Any]:
    """JSON-able state of a fresh generator for ``seed`` (and an optional sub-stream id)."""
    return np.random.default_rng([int(seed), *map(int, stream)] if stream else int(seed)
                                 ).bit_generator.state


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A generator restored from a JSON-able state (PCG64, numpy's default)."""
    if not isinstance(state, Mapping) or state.get("bit_generator") != "PCG64":
        raise ValueError(f"expected a PCG64 generator state, got {state!r:.80}")
    bg = np.random.PCG64()
    bg.state = dict(state)
    return np.random.Generator(bg)


def default_reference(task: str, estimate_cost: CostFn) -> tuple[float, float]:
    """The fixed hypervolume reference point: (cost of the largest subnet, score 0)."""
    return float(estimate_cost(largest(task))), 0.0


def check_bounds_feasible(config: EvolutionConfig, task: str, estimate_cost: CostFn,
                          axis: CostAxis = GFLOPS_AXIS) -> None:
    """Fail early when the cost bounds exclude the whole space (smallest .. largest subnet)."""
    if (config.cost_min is not None and config.cost_max is not None
            and config.cost_min > config.cost_max):
        raise EvolutionError(f"evolution.cost_min ({config.cost_min}) exceeds "
                             f"evolution.cost_max ({config.cost_max}): no architecture "
                             f"satisfies the {axis.bounds}")
    if config.cost_max is not None:
        lo = estimate_cost(smallest(task))
        if lo > config.cost_max:
            raise EvolutionError(
                f"evolution.cost_max = {config.cost_max} is below the smallest {task} subnet "
                f"({lo:.4f} {axis.unit}): no architecture satisfies the {axis.bounds}")
    if config.cost_min is not None:
        hi = estimate_cost(largest(task))
        if hi < config.cost_min:
            raise EvolutionError(
                f"evolution.cost_min = {config.cost_min} is above the largest {task} subnet "
                f"({hi:.4f} {axis.unit}): no architecture satisfies the {axis.bounds}")


def select_parents(pool: Sequence[Evaluated], parents: int,
                   fill: str = "crowding") -> list[Evaluated]:
    """``parents`` members by Pareto rank, the overflowing layer by crowding distance or
    cheapest first (``fill``; ties by arch id)."""
    if parents > len(pool):
        raise EvolutionError(
            f"evolution.parents (the parent population) = {parents} is larger than the evaluated "
            f"pool ({len(pool)} candidates): lower it or sample more candidates")
    idx = select_by_rank([e.cost for e in pool], [e.score for e in pool], parents,
                         [e.arch.arch_id for e in pool], fill=fill)
    return [pool[i] for i in idx]


def next_generation(pool: Sequence[Evaluated], rng_state: Mapping[str, Any],
                    config: EvolutionConfig, *, task: str, estimate_cost: CostFn,
                    generation: int, reference: tuple[float, float] | None = None,
                    axis: CostAxis = GFLOPS_AXIS) -> Generation:
    """Make the children of one generation (pure: same inputs -> same children and rng_out).

    ``reference`` is the hypervolume reference point the screening aims at (default:
    ``default_reference``, as the search stages use). ``axis`` names the unit of the costs
    (``estimate_cost``, the pool, the bounds) in errors and in the generation's record.
    """
    check_bounds_feasible(config, task, estimate_cost, axis)
    ops = operators(config)
    parents = select_parents(pool, config.parents,
                             "cheapest" if ops.release_selection else "crowding")
    parent_archs = [p.arch for p in parents]
    rng = rng_from_state(rng_state)
    seen = {e.arch.arch_id for e in pool}
    if ops.release_selection:
        children = _release_children(parent_archs, rng, seen, config, ops, task, estimate_cost,
                                     generation, axis)
        return Generation(generation, tuple(p.arch.arch_id for p in parents), tuple(children),
                          dict(rng_state), rng.bit_generator.state, len(pool),
                          config_record(config, axis), None)
    drawn: list[Architecture] = []
    wanted = config.population * ops.screen_factor
    attempts, budget = 0, config.population * config.attempts_per_child
    out_of_bounds = 0
    while len(drawn) < wanted and attempts < budget:
        attempts += 1
        base = int(rng.integers(0, len(parent_archs)))
        child = crossover([parent_archs[base], *parent_archs], rng, config.crossover_prob, task=task)
        child = mutate(child, rng, config.mutation_prob, config.depth_mutation_prob,
                       config.depth_candidates, task=task,
                       mutate_last_module=ops.mutate_last_module,
                       mutate_depth=ops.mutate_depth, mode=ops.mutation)
        if child.arch_id in seen:
            continue
        if (config.cost_min is not None or config.cost_max is not None) and \
                not in_bounds(config, estimate_cost(child)):
            out_of_bounds += 1
            continue
        seen.add(child.arch_id)
        drawn.append(child)
    if len(drawn) < config.population:
        bounds = f"[{config.cost_min}, {config.cost_max}] {axis.unit}"
        raise EvolutionError(
            f"generation {generation}: made only {len(drawn)} of {config.population} new "
            f"children in {attempts} draws ({out_of_bounds} outside the {axis.bounds} {bounds}, "
            f"the rest duplicates): the {axis.bounds} are too tight or the space is exhausted")
    children, screening = _screen(drawn, pool, config, task, estimate_cost, reference)
    return Generation(generation, tuple(p.arch.arch_id for p in parents), tuple(children),
                      dict(rng_state), rng.bit_generator.state, len(pool),
                      config_record(config, axis), screening)


def _release_children(parents: list[Architecture], rng: np.random.Generator, seen: set[str],
                      config: EvolutionConfig, ops: Operators, task: str,
                      estimate_cost: CostFn, generation: int,
                      axis: CostAxis = GFLOPS_AXIS) -> list[Architecture]:
    """The release's children: parent ``i`` (cycling) is child ``i``'s base, one random other
    parent its partner; redrawn from the same base until new and within the bounds."""
    children: list[Architecture] = []
    bounded = config.cost_min is not None or config.cost_max is not None
    for i in range(config.population):
        b = i % len(parents)
        for _ in range(config.attempts_per_child):
            j = int(rng.integers(0, len(parents) - 1)) if len(parents) > 1 else 0
            partner = parents[j + (j >= b)] if len(parents) > 1 else parents[b]
            child = crossover_pair(parents[b], partner, rng, config.crossover_prob, task=task,
                                   cross_last_module=ops.mutate_last_module)
            child = mutate(child, rng, config.mutation_prob, config.depth_mutation_prob,
                           config.depth_candidates, task=task,
                           mutate_last_module=ops.mutate_last_module,
                           mutate_depth=ops.mutate_depth, mode=ops.mutation)
            if child.arch_id in seen or (bounded and not in_bounds(config, estimate_cost(child))):
                continue
            seen.add(child.arch_id)
            children.append(child)
            break
        else:
            raise EvolutionError(
                f"generation {generation}: child {i} (base {parents[b].arch_id}) found no new "
                f"child within [{config.cost_min}, {config.cost_max}] {axis.unit} in "
                f"{config.attempts_per_child} draws (search.evolution.attempts_per_child): "
                f"the {axis.bounds} are too tight or the space is exhausted")
    return children


def _screen(drawn: list[Architecture], pool: Sequence[Evaluated], config: EvolutionConfig,
            task: str, estimate_cost: CostFn, reference: tuple[float, float] | None
            ) -> tuple[list[Architecture], dict[str, Any] | None]:
    """Keep ``population`` of the drawn children, by the surrogate's predicted hypervolume gain."""
    factor = operators(config).screen_factor
    if factor == 1:
        return drawn[:config.population], None
    record: dict[str, Any] = {"factor": factor, "candidates": len(drawn)}
    if len(drawn) <= config.population:
        return drawn, {**record, "skipped": "nothing to choose from"}
    if len(pool) < 3:
        return drawn[:config.population], {**record, "skipped": "fewer than 3 evaluated"}
    model = fit_ridge(np.stack([features(e.arch) for e in pool]), [e.score for e in pool])
    record.update(ridge_lambda=model.lam, loo_r2=model.loo_r2)
    if model.loo_r2 <= 0:
        # No better than the pool's mean: a near-constant prediction would only rank children
        # by cost, which is a bias, not information. Keep the draw order instead.
        return drawn[:config.population], {**record, "skipped": "surrogate has no skill"}
    if reference is None:
        reference = default_reference(task, estimate_cost)
    pred = model.predict(np.stack([features(a) for a in drawn]))
    cost = [float(estimate_cost(a)) for a in drawn]
    keep = sorted(select_by_predicted_gain(cost, pred, [e.cost for e in pool],
                                           [e.score for e in pool], config.population, reference))
    children = [drawn[i] for i in keep]
    return children, {**record, "predicted": {drawn[i].arch_id: float(pred[i]) for i in keep}}


def run_evolution(initial: Sequence[Evaluated], config: EvolutionConfig, generations: int,
                  seed: int, *, task: str, estimate_cost: CostFn,
                  estimate_accuracy: AccuracyFn,
                  reference: tuple[float, float] | None = None
                  ) -> tuple[list[Generation], list[Evaluated]]:
    """Run ``generations`` generations in memory (tests, benchmarks, quick experiments).

    The pipeline runs the same ``next_generation`` one generation per job, with the measured
    evaluation in place of ``estimate_accuracy``.
    """
    pool = list(initial)
    state: Mapping[str, Any] = initial_rng_state(seed)
    gens = []
    for g in range(1, generations + 1):
        gen = next_generation(pool, state, config, task=task, estimate_cost=estimate_cost,
                              generation=g, reference=reference)
        pool.extend(Evaluated(a, float(estimate_cost(a)), float(estimate_accuracy(a)))
                    for a in gen.children)
        state = gen.rng_out
        gens.append(gen)
    return gens, pool
