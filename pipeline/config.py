"""Parameter files: load, validate against the schema, fill defaults, expose typed sections.

A parameter file (``params/*.yaml``) is validated against ``workflow/schemas/params.schema.yaml``
(every key typed, defaulted and described; unknown keys are errors). Errors are raised as one
:class:`ConfigError` whose message names the file and the key path, e.g.
``params/x.yaml: search.random.samples_per_cell: unknown key``.

There is no global configuration object: :func:`load_params` returns a frozen :class:`Config`,
which callers pass on. Each pipeline *phase* reads only the keys listed for it in :data:`PHASES`;
:func:`phase_params` extracts that subset (what the per-rule parameter files of the workflow hold,
so that a change reruns exactly the affected jobs), and :func:`restrict` gives a :class:`Config`
in which reading any other key raises, so a stage cannot silently depend on a key that does not
trigger its rerun.
"""
from __future__ import annotations

import copy
import sys
import dataclasses
import io
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import yaml

from pipeline.errors import ConfigError  # noqa: F401  (raised here; importers use this name)
from pipeline.io import big_number, content_hash, decode_text, path_problem, read_bytes
from pipeline.space.arch import TASK_NAMES

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"
DEFAULT_PARAMS = Path("params") / "default.yaml"

#: Keys (dotted paths; ``{task}`` is replaced by the job's task) whose values each phase reads.
#: A per-rule parameter file holds exactly these values, so changing any other key never reruns
#: the phase's jobs. When a stage starts reading a new key, list it here (a test checks that every
#: path exists in the schema). Execution settings (run.name/device/threads, tracking) are never
#: listed: they do not change results.
PHASES: dict[str, tuple[str, ...]] = {
    "data": ("data.root", "data.seed", "data.seg_train", "data.seg_val", "data.seg_size",
             "data.pose_train", "data.pose_val", "data.pose_size"),
    "prepare": ("data.builtin", "{task}.root", "{task}.train_set", "{task}.val_set",
                "{task}.search_fraction", "calibration.images"),
    "teacher": ("run.seed", "{task}", "teacher.{task}"),
    "supernet": ("run.seed", "{task}", "supernet.{task}"),
    # The latency lookup table (search.objective latency): the network's width and input size.
    "latency": ("{task}",),
    "search_random": ("run.seed", "{task}", "calibration", "search.objective", "search.random"),
    # The random-search baseline draws from the sampling grid (its cells, not its sizes).
    "search_evolution": ("run.seed", "{task}", "calibration", "search.objective",
                         "search.random.fusion_probs", "search.random.depth_candidates",
                         "search.evolution"),
    # The objective is the unit of the fine-tune budgets.
    "finetune": ("run.seed", "{task}", "calibration", "search.objective", "finetune.{task}"),
    "report": ("report",),
    # The ranking audit: stand-alone training of chosen architectures (the search grid draws the
    # random comparison networks).
    "audit": ("run.seed", "{task}", "calibration", "search.random.fusion_probs",
              "search.random.depth_candidates", "audit.{task}"),
}
#: Phases outside the default target (``snakemake`` alone never runs them): their per-rule
#: parameter files are no input of the report, so changing their keys reruns only them.
OPTIONAL_PHASES: tuple[str, ...] = ("audit",)


# -- typed sections ------------------------------------------------------------------------------

class _Excluded:
    """Placeholder for a key outside a phase's parameters: reading it raises (see _Section)."""

    __slots__ = ("path", "phase")

    def __init__(self, path: str, phase: str) -> None:
        self.path, self.phase = path, phase


class _Section:
    """Base of the frozen sections: reading a key excluded from the phase raises ConfigError."""

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if isinstance(value, _Excluded):
            raise ConfigError(
                f"{value.path}: not a parameter of phase '{value.phase}'; list it in "
                f"pipeline.config.PHASES['{value.phase}'] so that changing it reruns the phase")
        return value

    def _items(self) -> Iterator[tuple[str, Any]]:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            yield f.name, object.__getattribute__(self, f.name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={'<excluded>' if isinstance(v, _Excluded) else repr(v)}"
                          for k, v in self._items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine = [(k, None if isinstance(v, _Excluded) else v) for k, v in self._items()]
        theirs = [(k, None if isinstance(v, _Excluded) else v) for k, v in other._items()]  # type: ignore[attr-defined]
        return mine == theirs

    def __hash__(self) -> int:
        return hash(tuple(k for k, _ in self._items()))


section = dataclasses.dataclass(frozen=True, kw_only=True, repr=False, eq=False)


@section
class RunConfig(_Section):
    name: str
    seed: int
    device: str
    threads: int
    train_threads: int
    launcher: str
    devices: tuple[int, ...]
    search_cache_mb: int


@section
class DataConfig(_Section):
    builtin: bool
    root: str
    seed: int
    seg_train: int
    seg_val: int
    seg_size: tuple[int, int]
    pose_train: int
    pose_val: int
    pose_size: tuple[int, int]


@section
class SegConfig(_Section):
    root: str
    train_set: str
    val_set: str
    width: int
    crop_size: tuple[int, int]
    flops_size: tuple[int, int] | None
    num_classes: int
    ignore_label: int
    search_fraction: float


@section
class PoseConfig(_Section):
    root: str
    train_set: str
    val_set: str
    width: int
    input_size: tuple[int, int]
    num_joints: int
    search_fraction: float
    det_file: str | None


@section
class BottomUpConfig(_Section):
    root: str
    train_set: str
    val_set: str
    width: int
    input_size: int
    num_joints: int
    search_fraction: float
    det_file: str | None
    flip_test: bool
    scale_range: tuple[float, float]
    max_rotation: float
    heatmap_pos_weight: float


@section
class OptimizerConfig(_Section):
    name: str
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool


@section
class ScheduleConfig(_Section):
    name: str
    power: float
    milestones: tuple[int, ...]
    gamma: float
    warmup_iters: int


@section
class TrainConfig(_Section):
    epochs: int
    iterations: int | None
    batch_size: int
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    checkpoint_every: int
    log_every: int
    sync_bn: bool
    amp: str
    num_workers: int
    init: str | None
    init_strict: bool


@section
class GroupConfig(_Section):
    fusion_prob: float
    depths: tuple[int, ...]
    name: str | None = None


@section
class SupernetTrainConfig(TrainConfig):
    kd_ratio: float
    init_from_teacher: bool
    checkpoint: str | None
    #: "paper" or explicit groups (see pipeline.train.schedule.parse_groups).
    groups: str | tuple[GroupConfig, ...]


@section
class FinetuneTrainConfig(TrainConfig):
    budgets: tuple[float, ...]
    arch_files: tuple[str, ...]
    models: tuple[dict[str, Any], ...]


@section
class AuditTrainConfig(TrainConfig):
    #: K: architectures ranked.
    archs: int
    seeds: tuple[int, ...]
    resamples: int


@section
class TeacherConfig(_Section):
    seg: TrainConfig
    pose: TrainConfig
    bottomup: TrainConfig


@section
class SupernetConfig(_Section):
    seg: SupernetTrainConfig
    pose: SupernetTrainConfig
    bottomup: SupernetTrainConfig


@section
class FinetuneConfig(_Section):
    seg: FinetuneTrainConfig
    pose: FinetuneTrainConfig
    bottomup: FinetuneTrainConfig


@section
class AuditConfig(_Section):
    tasks: tuple[str, ...]
    seg: AuditTrainConfig
    pose: AuditTrainConfig
    bottomup: AuditTrainConfig


@section
class CalibrationConfig(_Section):
    images: int
    batch_size: int
    augment: bool


@section
class RandomSearchConfig(_Section):
    fusion_probs: tuple[float, ...]
    depth_candidates: tuple[tuple[int, ...], ...]
    samples_per_cell: int
    shards: int


@section
class EvolutionConfig(_Section):
    generations: int
    population: int
    parents: int
    crossover_prob: float
    mutation_prob: float
    depth_mutation_prob: float
    #: Depths a branch may take in depth mutation (sorted; "resample" steps to a neighbour).
    depth_candidates: tuple[int, ...]
    mutation: str
    screen_factor: int
    release_operators: bool
    attempts_per_child: int
    #: Bounds of children on the search's cost axis (GFLOPs, or ms with search.objective latency).
    cost_min: float | None
    cost_max: float | None
    shards: int


#: Values of ``search.objective``: the cost axis of the search.
OBJECTIVES: tuple[str, ...] = ("gflops", "latency")


@section
class SearchConfig(_Section):
    #: The cost axis (Pareto fronts, cost bounds, fine-tune budgets): "gflops" or "latency".
    objective: str
    random: RandomSearchConfig
    evolution: EvolutionConfig


@section
class ReportConfig(_Section):
    hrnet_reference: bool
    dpi: int


@section
class TrackingConfig(_Section):
    enabled: bool
    uri: str
    experiment: str
    required: bool


@section
class Config(_Section):
    """The whole, validated parameter set (or a phase's view of it, see :func:`restrict`)."""

    run: RunConfig
    tasks: tuple[str, ...]
    data: DataConfig
    seg: SegConfig
    pose: PoseConfig
    bottomup: BottomUpConfig
    teacher: TeacherConfig
    supernet: SupernetConfig
    calibration: CalibrationConfig
    search: SearchConfig
    finetune: FinetuneConfig
    report: ReportConfig
    tracking: TrackingConfig
    audit: AuditConfig

    def task(self, name: str) -> SegConfig | PoseConfig | BottomUpConfig:
        """The task section (``seg``, ``pose`` or ``bottomup``)."""
        if name not in TASK_NAMES:
            raise ConfigError(f"unknown task {name!r}; expected one of {list(TASK_NAMES)}")
        return getattr(self, name)


# -- schema, validation, defaults ----------------------------------------------------------------

_SCHEMA_CACHE: dict[str, Any] = {}


def load_schema() -> dict[str, Any]:
    """The parameter schema (parsed once per process)."""
    if "schema" not in _SCHEMA_CACHE:
        with open(SCHEMA_PATH, encoding="utf-8") as f:
            _SCHEMA_CACHE["schema"] = yaml.safe_load(f)
    return _SCHEMA_CACHE["schema"]


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """A schema node with its ``$ref`` merged in (the use site's keywords win)."""
    node = dict(node)
    while "$ref" in node:
        ref = node.pop("$ref")
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **node}
    return node


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def fill_defaults(value: Any, node: Mapping[str, Any] | None = None,
                  root: Mapping[str, Any] | None = None) -> Any:
    """``value`` with every missing key set from the schema (a use site's object default is
    deep-merged under the given value, then each property's own default fills what is left)."""
    root = root if root is not None else load_schema()
    node = _resolve(node if node is not None else root, root)
    props = node.get("properties")
    if props is None:
        return value
    base = copy.deepcopy(node.get("default", {})) if isinstance(node.get("default"), Mapping) else {}
    value = _deep_merge(base, value or {})
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key in value:
            if "properties" in sub_r and isinstance(value[key], Mapping):
                value[key] = fill_defaults(value[key], sub_r, root)
        elif "properties" in sub_r:
            value[key] = fill_defaults(None, sub_r, root)
        elif "default" in sub_r:
            value[key] = copy.deepcopy(sub_r["default"])
    return value


def _key_path(path: Any) -> str:
    parts = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(v), type(v).__name__)


def strict_validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator of ``schema`` in which ``integer`` means a Python int: JSON
    Schema counts 1.0 as an integer, but a count of 1.0 would only fail later, inside a job."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def schema_problems(doc: Any, schema: Mapping[str, Any] | None = None
                    ) -> list[tuple[list[Any], str]]:
    """``(key path, problem)`` for every place ``doc`` breaks ``schema`` (default: the parameter
    schema) or holds a NaN or infinity, sorted by key path."""
    validator = strict_validator(schema if schema is not None else load_schema())
    out: dict[tuple[str, str], list[Any]] = {}
    for err in validator.iter_errors(doc):
        # oneOf/anyOf: report the most specific sub-error, i.e. the deepest one (a typo inside
        # a list item is that item's unknown key, not "not valid under any of the schemas").
        best = _deepest(err) if err.context else err
        path = list(best.absolute_path)
        if best.validator == "additionalProperties":
            allowed = set(best.schema.get("properties", {}))
            hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
            for key in sorted(set(best.instance) - allowed, key=str):
                out[(_key_path(path + [key]), "unknown key" + hint)] = path + [key]
            continue
        if "propertyNames" in best.schema_path:  # a key that names nothing the schema knows
            path = path + [best.instance]
            msg = f"unknown key (must match {best.validator_value})" \
                if best.validator == "pattern" else f"unknown key: {best.message}"
        elif best.validator == "type":
            shown = "" if best.instance is None else f" {_short(best.instance)}"
            msg = f"expected {best.validator_value}, got {_type_name(best.instance)}{shown}"
        elif best.validator == "enum":
            msg = f"must be one of {best.validator_value}, got {_short(best.instance)}"
        elif best.validator == "required":
            for key in best.validator_value:
                if key not in best.instance:
                    out[(_key_path(path + [key]), "missing")] = path + [key]
            continue
        else:
            msg = best.message
        out[(_key_path(path), msg)] = path
    for path, msg in _non_finite(doc, []):
        out[(_key_path(path), msg)] = path
    return [(out[k], k[1]) for k in sorted(out)]


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def problem_lines(doc: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """One message per problem, ``key.path: problem``, sorted by key path."""
    return [f"{_key_path(path)}: {msg}" for path, msg in schema_problems(doc, schema)]


def _non_finite(doc: Any, path: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """``(key path, problem)`` for every NaN or infinite number (JSON Schema's ``number`` admits
    them)."""
    if isinstance(doc, float) and not math.isfinite(doc):
        yield path, f"must be a finite number, got {doc!r}"
    elif isinstance(doc, Mapping):
        for k, v in doc.items():
            yield from _non_finite(v, path + [k])
    elif isinstance(doc, (list, tuple)):
        for i, v in enumerate(doc):
            yield from _non_finite(v, path + [i])


def _deepest(err: Any) -> Any:
    """The sub-error of a oneOf/anyOf error that reaches furthest into the document (ties: an
    unknown key first, then jsonschema's own relevance order)."""
    import jsonschema

    leaves, todo = [], list(err.context)
    while todo:
        e = todo.pop()
        if e.context:
            todo.extend(e.context)
        else:
            leaves.append(e)
    if not leaves:
        return jsonschema.exceptions.best_match([err])
    depth = max(len(e.absolute_path) for e in leaves)
    deepest = [e for e in leaves if len(e.absolute_path) == depth]
    if depth <= len(err.absolute_path):  # nothing more specific than the value itself
        return jsonschema.exceptions.best_match([err])
    unknown = [e for e in deepest if e.validator == "additionalProperties"]
    return (unknown or [jsonschema.exceptions.best_match(deepest)])[0]


def validate(doc: Any, source: str, owner: Any = None) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the key path of every problem.

    ``owner(key path)``: the file a value comes from when it is not ``source`` itself (a
    ``base:`` file); that file is named instead."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: expected a mapping of parameter sections, got {_type_name(doc)}")
    msgs = [((owner and owner(path)) or source, f"{_key_path(path)}: {msg}")
            for path, msg in schema_problems(doc)]
    if msgs:
        (where, first), rest = msgs[0], msgs[1:]
        more = "; ".join(m if f == where else f"{f}: {m}" for f, m in rest)
        raise ConfigError(f"{where}: {first}" + (f" (and {len(rest)} more: {more})" if rest else ""))


# -- building the typed view ---------------------------------------------------------------------

def _convert(tp: Any, value: Any, path: str, phase: str | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            if arg is str and isinstance(value, str):
                return value
            if arg is not str:
                try:
                    return _convert(arg, value, path, phase)
                except (TypeError, ValueError, KeyError):
                    continue
        raise ConfigError(f"{path}: value {value!r} does not fit {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise TypeError(path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]", phase) for i, v in enumerate(value))
        return tuple(_convert(a, v, f"{path}[{i}]", phase) for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise TypeError(path)
        return _build(tp, value, path, phase)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _build(cls: type, value: Mapping[str, Any], path: str, phase: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        sub = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            kwargs[f.name] = _convert(hints[f.name], value[f.name], sub, phase)
        elif f.default is not dataclasses.MISSING:
            kwargs[f.name] = f.default
        elif phase is not None:
            kwargs[f.name] = _Excluded(sub, phase)
        else:
            raise ConfigError(f"{sub}: missing (schema and pipeline.config dataclasses disagree)")
    return cls(**kwargs)


# -- public API ----------------------------------------------------------------------------------

class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the
    last one silently, so a pasted override would hide the value above it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: overrides are its point
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first at line "
                                        f"{seen[key]})")
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file (duplicate keys refused), with errors that name it."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ConfigError("no parameter file given (e.g. --config params=params/default.yaml)")
    text = decode_text(read_bytes(path, "parameter file", ConfigError), path, "parameter file",
                       ConfigError)
    stream = io.StringIO(text)
    stream.name = str(path)  # type: ignore[misc]  (YAML's error marks name the file)
    try:
        return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as e:  # an integer of over 4300 digits, which Python refuses to convert
        raise ConfigError(f"{path}: not valid YAML: {big_number(e)}") from None


#: Deprecated key -> its name now. The old name still works, says so once, and is resolved to
#: the new one (so resolved files and per-rule parameter files name only the new key).
DEPRECATED_KEYS: dict[tuple[str, ...], str] = {
    ("search", "evolution", "flops_min"): "cost_min",
    ("search", "evolution", "flops_max"): "cost_max",
}
_warned: set[str] = set()


def rename_deprecated(doc: Any, source: str) -> Any:
    """``doc`` with every deprecated key renamed (a copy where anything changed); both names
    given is an error."""
    if not isinstance(doc, Mapping):
        return doc
    out = None
    for path, new in DEPRECATED_KEYS.items():
        node: Any = out if out is not None else doc
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping) or path[-1] not in node:
            continue
        old_key, new_key = ".".join(path), ".".join((*path[:-1], new))
        if new in node:
            raise ConfigError(f"{source}: {old_key} and {new_key} both given: {old_key} is the "
                              f"deprecated name of {new_key}; keep only {new_key}")
        if out is None:
            out = copy.deepcopy(dict(doc))
            node = out
            for part in path[:-1]:
                node = node[part]
        node[new] = node.pop(path[-1])
        if old_key not in _warned:
            _warned.add(old_key)
            print(f"warning: {source}: {old_key} is deprecated, use {new_key} (same meaning, in "
                  f"the unit of search.objective)", file=sys.stderr)
    return out if out is not None else doc


def resolve_dict(doc: Any, source: str) -> dict[str, Any]:
    """Validate a raw parameter mapping and return it with all defaults filled."""
    doc = rename_deprecated(doc, source)
    validate(doc if doc is not None else {}, source)
    resolved = fill_defaults(doc or {})
    validate(resolved, f"{source} (after defaults)")
    return resolved


def from_dict(resolved: Mapping[str, Any], *, phase: str | None = None) -> Config:
    """The typed view of a resolved mapping; with ``phase``, absent keys read as excluded."""
    return _build(Config, resolved, "", phase)


#: Where in the schema each section record is described (records used on their own: tests,
#: benchmarks, library callers that build one section without a whole parameter file).
SECTION_SCHEMA: dict[type, tuple[str, ...]] = {}


def _register_sections() -> None:
    SECTION_SCHEMA.update({
        TrainConfig: ("$defs", "train"), SupernetTrainConfig: ("$defs", "supernet_train"),
        FinetuneTrainConfig: ("$defs", "finetune_train"),
        AuditTrainConfig: ("$defs", "audit_train"),
        OptimizerConfig: ("$defs", "optimizer"), ScheduleConfig: ("$defs", "schedule"),
        CalibrationConfig: ("properties", "calibration"),
        RandomSearchConfig: ("properties", "search", "properties", "random"),
        EvolutionConfig: ("properties", "search", "properties", "evolution"),
        SegConfig: ("properties", "seg"), PoseConfig: ("properties", "pose"),
        BottomUpConfig: ("properties", "bottomup"),
        ReportConfig: ("properties", "report"), RunConfig: ("properties", "run"),
    })


def make_section(cls: type, values: Mapping[str, Any] | None = None, *, source: str = "parameters",
                 **kw: Any) -> Any:
    """One section record from (partial) values, defaults from the schema, validated by it.

    ``make_section(TrainConfig, iterations=5, optimizer={"name": "adam", "lr": 1e-3})`` is the
    record a parameter file with those values would give; there are no other defaults.
    """
    if not SECTION_SCHEMA:
        _register_sections()
    if cls not in SECTION_SCHEMA:
        raise TypeError(f"{cls.__name__} is not a section record with its own schema node")
    import jsonschema

    root = load_schema()
    node: Any = root
    for part in SECTION_SCHEMA[cls]:
        node = node[part]
    doc = fill_defaults(_deep_merge(dict(values or {}), kw), node, root)
    errors = sorted(strict_validator({**node, "$defs": root["$defs"]})
                    .iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"{source}: {_key_path(list(e.absolute_path))}: {e.message}")
    return _build(cls, doc, "", None)


def load_params(path: str | Path) -> Config:
    """Load, validate and default-fill a parameter file. Raises :class:`ConfigError`."""
    return from_dict(load_resolved(path))


def load_resolved(path: str | Path) -> dict[str, Any]:
    """The validated, default-filled parameters of a file as a plain mapping.

    A problem in a value that a ``base:`` file gives is reported with that file's name."""
    chain = [(p, rename_deprecated(d, str(p))) for p, d in read_chain(path)]
    owner = _chain_owner(chain) if len(chain) > 1 else None
    doc = _merge_chain(chain)
    validate(doc if doc is not None else {}, str(path), owner)
    resolved = fill_defaults(doc or {})
    validate(resolved, f"{path} (after defaults)")
    return resolved


#: A parameter file may name a base file (relative to itself) whose values it overrides.
BASE_KEY = "base"
#: The longest chain of ``base:`` files followed (a real chain has two or three).
MAX_BASE_CHAIN = 100


def read_chain(path: str | Path) -> list[tuple[Path, Any]]:
    """``[(file, its document without base:)]`` of a parameter file and its ``base:`` files, the
    file itself first. A missing, unreadable or looping base, or a chain longer than
    :data:`MAX_BASE_CHAIN`, is one :class:`ConfigError` naming the file whose ``base:`` it is."""
    path = Path(path)
    chain: list[tuple[Path, Any]] = []
    seen: list[Path] = []
    while True:
        doc = read_yaml(path)
        if chain and not isinstance(doc, Mapping):
            raise ConfigError(f"{path}: expected a mapping of parameter sections "
                              f"(base of {chain[-1][0]}), got {_type_name(doc)}")
        if not isinstance(doc, Mapping) or BASE_KEY not in doc:
            chain.append((path, doc))
            return chain
        chain.append((path, {k: v for k, v in doc.items() if k != BASE_KEY}))
        seen.append(path.resolve())
        base = doc[BASE_KEY]
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: {BASE_KEY}: expected the name of a parameter file, got {base!r}")
        base_path = path.parent / base
        problem = path_problem(base_path)
        if problem == "not found":
            raise ConfigError(f"{path}: {BASE_KEY}: parameter file not found: {base_path}")
        if problem is not None:
            raise ConfigError(f"{path}: {BASE_KEY}: {base_path}: {problem}")
        if base_path.resolve() in seen:
            cycle = " -> ".join(str(p) for p in seen + [base_path.resolve()])
            raise ConfigError(f"{path}: {BASE_KEY}: {base} forms a cycle ({cycle})")
        if len(chain) >= MAX_BASE_CHAIN:
            raise ConfigError(f"{chain[0][0]}: {BASE_KEY}: a chain of more than {MAX_BASE_CHAIN} "
                              f"parameter files (stopped at {base_path})")
        path = base_path


def _merge_chain(chain: list[tuple[Path, Any]]) -> Any:
    doc = chain[-1][1]
    for _, over in reversed(chain[:-1]):
        doc = _deep_merge(doc, over)
    return doc


def read_with_base(path: str | Path) -> Any:
    """A parameter file deep-merged over its ``base:`` file (recursively; mappings merge key by
    key, any other value, lists included, replaces the base's). A missing base file or a cycle is
    one :class:`ConfigError` naming the file."""
    return _merge_chain(read_chain(path))


def _chain_owner(chain: list[tuple[Path, Any]]) -> Any:
    """key path -> the base file that gives the value there (None: the file itself): the file
    that reaches furthest along the path, the nearest to the file itself on a tie."""
    def reach(doc: Any, path: list[Any]) -> int:
        n = 0
        for part in path:
            if isinstance(doc, Mapping) and part in doc:
                doc = doc[part]
            elif isinstance(doc, list) and isinstance(part, int) and 0 <= part < len(doc):
                doc = doc[part]
            else:
                break
            n += 1
        return n

    def owner(path: list[Any]) -> str | None:
        depths = [reach(doc, path) for _, doc in chain]
        best = depths.index(max(depths))
        return None if best == 0 else f"{chain[best][0]} (base of {chain[best - 1][0]})"
    return owner


def phase_keys(phase: str, task: str | None) -> tuple[str, ...]:
    """The dotted key paths phase ``phase`` reads for ``task``."""
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; known: {sorted(PHASES)}")
    keys = PHASES[phase]
    if any("{task}" in k for k in keys):
        if task not in TASK_NAMES:
            raise ConfigError(f"phase {phase!r} needs a task (one of {list(TASK_NAMES)}), got {task!r}")
        keys = tuple(k.replace("{task}", task) for k in keys)
    return keys


def phase_params(resolved: Mapping[str, Any], phase: str, task: str | None) -> dict[str, Any]:
    """The nested subset of a resolved mapping that ``phase`` reads (see :data:`PHASES`)."""
    out: dict[str, Any] = {}
    for key in phase_keys(phase, task):
        src: Any = resolved
        parts = key.split(".")
        for p in parts:
            if not isinstance(src, Mapping) or p not in src:
                raise ConfigError(f"PHASES[{phase!r}]: key {key!r} is not in the parameters")
            src = src[p]
        dst = out
        for p in parts[:-1]:
            dst = dst.setdefault(p, {})
        dst[parts[-1]] = copy.deepcopy(src)
    return out


def restrict(resolved: Mapping[str, Any], phase: str, task: str | None) -> Config:
    """A :class:`Config` in which only the keys of ``phase`` can be read."""
    return from_dict(phase_params(resolved, phase, task), phase=phase)


params_hash = content_hash


def path_keys(node: Mapping[str, Any] | None = None, prefix: str = "",
              root: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(dotted key, kind)`` of every schema key marked ``x-path`` (``[]`` marks list items)."""
    root = root if root is not None else load_schema()
    node = _resolve(node if node is not None else root, root)
    out: list[tuple[str, str]] = []
    if "x-path" in node:
        out.append((prefix, node["x-path"]))
    for key, sub in node.get("properties", {}).items():
        out += path_keys(sub, f"{prefix}.{key}" if prefix else key, root)
    if isinstance(node.get("items"), Mapping):
        out += path_keys(node["items"], f"{prefix}[]", root)
    return out


def _values_at(doc: Any, key: str) -> Iterator[tuple[str, Any]]:
    parts = key.replace("[]", ".[]").split(".")

    def walk(obj: Any, i: int, where: str) -> Iterator[tuple[str, Any]]:
        if i == len(parts):
            yield where, obj
            return
        p = parts[i]
        if p == "[]":
            for j, item in enumerate(obj or []):
                yield from walk(item, i + 1, f"{where}[{j}]")
        elif isinstance(obj, Mapping) and p in obj:
            yield from walk(obj[p], i + 1, f"{where}.{p}" if where else p)

    yield from walk(doc, 0, "")


def check_paths(resolved: Mapping[str, Any], source: str, base: str | Path = ".") -> None:
    """Every path-valued key the run uses must exist (relative paths are relative to ``base``).

    Only the sections of the tasks being run are checked. The task roots are exempt while
    ``data.builtin`` is true and they lie under ``data.root``: the ``builtin_data`` rule creates
    them. Raises one :class:`ConfigError` naming the file, key and path.
    """
    base = Path(base)
    tasks = set(resolved.get("tasks", TASK_NAMES))
    data = resolved.get("data", {})
    builtin_root = Path(data.get("root", "data/builtin"))
    problems = []
    for key, kind in path_keys():
        head = key.split(".")[0]
        owner = key.split(".")[1] if head in ("teacher", "supernet", "finetune") else head
        if owner in TASK_NAMES and owner not in tasks:
            continue
        for where, value in _values_at(resolved, key):
            if value is None or value == "":
                continue
            p = Path(value)
            if data.get("builtin") and (p == builtin_root or builtin_root in p.parents):
                continue
            full = p if p.is_absolute() else base / p
            problem = path_problem(full, kind)
            if problem == "not found":
                what = "directory" if kind == "dir" else "file"
                hint = " (see README: Bring your own data)" if kind == "dir" else ""
                problems.append(f"{where}: {what} not found: {value}{hint}")
            elif problem is not None:  # a directory, a link loop, a FIFO: not "not found"
                problems.append(f"{where}: {value}: {problem}")
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise ConfigError(f"{source}: {problems[0]}{more}")
    if data.get("builtin"):
        for t in sorted(tasks):
            root = Path(resolved[t]["root"])
            if not (root == builtin_root or builtin_root in root.parents):
                raise ConfigError(f"{source}: {t}.root: {root} is not under data.root ({builtin_root}) "
                                  "although data.builtin is true")
