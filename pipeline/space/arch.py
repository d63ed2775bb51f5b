"""The architecture document: which blocks each branch runs and which fusions each module makes.

An architecture is plain data. For each of the 8 searchable modules it records the depth of every
resolution branch and, after every block step ``s < T`` (``T`` = the module's largest depth), the
sources fused into each target branch. Everything else (sampling, cost, the supernet, the search)
reads this one type.

JSON form (``schema`` is versioned so that old documents keep loading or fail loudly)::

    {"schema": "scalenas-arch/1",
     "modules": [{"depths": [3, 4],
                  "fusions": [[[1], [0]], [[], [0]], [[1], [0]], [[], [0]]]}, ...],
     "meta": {...}}                        # optional, free-form, not part of the identity

``fusions[s][j]`` lists the source branches fused into target ``j`` after step ``s``; the branch's
own feature always enters once and is never listed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pipeline.io import atomic_write_text, big_number, content_hash, decode_text, read_bytes
from pipeline.errors import InputError
from pipeline.tasks.facts import TASK_NAMES, task_facts

SCHEMA = "scalenas-arch/1"
#: Branch count of each searchable module: stage2.0, stage3.0-3, stage4.0-2.
BRANCHES: tuple[int, ...] = (2, 3, 3, 3, 3, 4, 4, 4)
#: Official module names, in the order of ``BRANCHES``.
MODULE_NAMES: tuple[str, ...] = (
    "stage2.0", "stage3.0", "stage3.1", "stage3.2", "stage3.3", "stage4.0", "stage4.1", "stage4.2")
MAX_DEPTH = 5
MIN_DEPTH = 1

def single_scale_output(task: str) -> bool:
    """Whether ``task``'s head reads branch 0 only (pose's heatmaps; segmentation concatenates
    every branch): then the last module must fuse every branch into branch 0 (see check_task)."""
    return task_facts(task).single_scale_output


class ArchitectureError(InputError):
    """An architecture document or file that is not valid; the message names where."""


@dataclass(frozen=True)
class ModuleArch:
    """One multi-resolution module: depth per branch, fused sources per (step, target)."""

    depths: tuple[int, ...]
    fusions: tuple[tuple[tuple[int, ...], ...], ...]

    @property
    def num_branches(self) -> int:
        return len(self.depths)

    @property
    def steps(self) -> int:
        """T: the number of block steps the module runs (its largest depth)."""
        return max(self.depths)

    def to_dict(self) -> dict[str, Any]:
        return {"depths": list(self.depths),
                "fusions": [[list(srcs) for srcs in step] for step in self.fusions]}


@dataclass(frozen=True)
class Architecture:
    """A complete subnet of the search space (8 modules). Immutable and hashable."""

    modules: tuple[ModuleArch, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        validate_modules(self.modules)

    # -- identity -----------------------------------------------------------------------------
    @cached_property
    def arch_id(self) -> str:
        """Canonical id: a hash of the depths and fusions only (meta excluded). Cached: the
        search reads it for every candidate, pool member and table row."""
        return content_hash([m.to_dict() for m in self.modules])

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA, "id": self.arch_id,
                             "modules": [m.to_dict() for m in self.modules]}
        if self.meta:
            d["meta"] = dict(self.meta)
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, doc: Any, *, source: str = "architecture") -> "Architecture":
        return from_dict(doc, source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "architecture") -> "Architecture":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchitectureError(f"{source}: malformed JSON: {e}") from None
        except RecursionError:
            raise ArchitectureError(f"{source}: malformed JSON: nested too deeply") from None
        except ValueError as e:  # an integer of over 4300 digits, which Python refuses
            raise ArchitectureError(f"{source}: malformed JSON: {big_number(e)}") from None
        return from_dict(doc, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Architecture":
        p = Path(path)
        data = read_bytes(p, "architecture file", ArchitectureError)
        return cls.from_json(decode_text(data, p, "architecture file", ArchitectureError),
                             source=str(p))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self.to_json() + "\n")

    def with_meta(self, **meta: Any) -> "Architecture":
        return Architecture(self.modules, {**self.meta, **meta})

    # -- views ------------------------------------------------------------------------------------
    def depths(self) -> list[list[int]]:
        return [list(m.depths) for m in self.modules]

    def num_fusions(self) -> int:
        """Number of switched-on (source, target, step) fusion edges."""
        return sum(len(srcs) for m in self.modules for step in m.fusions for srcs in step)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def make_module(depths: Sequence[int], fusions: Iterable[Iterable[Iterable[int]]]) -> ModuleArch:
    """Build a module in canonical form (sources sorted, tuples); validation happens in Architecture."""
    return ModuleArch(tuple(depths),
                      tuple(tuple(tuple(sorted(srcs)) for srcs in step) for step in fusions))


def validate_modules(modules: Sequence[ModuleArch], source: str = "architecture") -> None:
    if len(modules) != len(BRANCHES):
        raise ArchitectureError(
            f"{source}: expected {len(BRANCHES)} modules, got {len(modules)}")
    for mi, (m, nb) in enumerate(zip(modules, BRANCHES)):
        where = f"{source}: module {mi} ({MODULE_NAMES[mi]})"
        if len(m.depths) != nb:
            raise ArchitectureError(f"{where}: expected {nb} branches, got {len(m.depths)}")
        for b, d in enumerate(m.depths):
            if not _is_int(d) or not MIN_DEPTH <= d <= MAX_DEPTH:
                raise ArchitectureError(
                    f"{where}, branch {b}: depth must be an integer in {MIN_DEPTH}..{MAX_DEPTH}, got {d!r}")
        T = max(m.depths)
        if len(m.fusions) != T:
            raise ArchitectureError(
                f"{where}: fusions must list one entry per step 0..{T - 1} (max depth {T}), "
                f"got {len(m.fusions)}")
        for s, step in enumerate(m.fusions):
            if len(step) != nb:
                raise ArchitectureError(
                    f"{where}, step {s}: expected a source list for each of {nb} targets, got {len(step)}")
            for j, srcs in enumerate(step):
                seen = set()
                for k in srcs:
                    if not _is_int(k) or not 0 <= k < nb:
                        raise ArchitectureError(
                            f"{where}, step {s}, target {j}: source {k!r} out of range 0..{nb - 1}")
                    if k == j:
                        raise ArchitectureError(
                            f"{where}, step {s}, target {j}: a branch cannot fuse into itself")
                    if k in seen:
                        raise ArchitectureError(
                            f"{where}, step {s}, target {j}: source {k} listed twice")
                    seen.add(k)
                if list(srcs) != sorted(srcs):
                    raise ArchitectureError(
                        f"{where}, step {s}, target {j}: sources must be sorted")


def from_dict(doc: Any, *, source: str = "architecture") -> Architecture:
    """Parse and strictly validate a JSON document (already decoded)."""
    if not isinstance(doc, dict):
        raise ArchitectureError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {"schema", "id", "modules", "meta"}
    if unknown:
        raise ArchitectureError(f"{source}: unknown key(s) {sorted(unknown)}")
    if doc.get("schema") != SCHEMA:
        raise ArchitectureError(
            f"{source}: unknown schema version {doc.get('schema')!r} (expected {SCHEMA!r})")
    mods = doc.get("modules")
    if not isinstance(mods, list):
        raise ArchitectureError(f"{source}: 'modules' must be a list")
    if len(mods) != len(BRANCHES):
        raise ArchitectureError(f"{source}: expected {len(BRANCHES)} modules, got {len(mods)}")
    modules = []
    for mi, md in enumerate(mods):
        where = f"{source}: module {mi} ({MODULE_NAMES[mi]})"
        if not isinstance(md, dict) or set(md) != {"depths", "fusions"}:
            raise ArchitectureError(f"{where}: expected an object with keys 'depths' and 'fusions'")
        depths, fusions = md["depths"], md["fusions"]
        if not isinstance(depths, list):
            raise ArchitectureError(f"{where}: 'depths' must be a list")
        if not isinstance(fusions, list) or not all(
                isinstance(st, list) and all(isinstance(x, list) for x in st) for st in fusions):
            raise ArchitectureError(f"{where}: 'fusions' must be a list (steps) of lists (targets) "
                                    f"of lists (sources)")
        # Sources are a set: accept any order, store sorted (non-integers are reported below).
        modules.append(ModuleArch(tuple(depths), tuple(
            tuple(tuple(sorted(x)) if all(_is_int(k) for k in x) else tuple(x) for x in st)
            for st in fusions)))
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise ArchitectureError(f"{source}: 'meta' must be an object")
    validate_modules(modules, source)
    arch = Architecture(tuple(modules), meta)
    if "id" in doc and doc["id"] != arch.arch_id:
        raise ArchitectureError(
            f"{source}: recorded id {doc['id']!r} does not match the content (id {arch.arch_id})")
    return arch


def check_task(arch: Architecture, task: str) -> None:
    """Raise unless ``arch`` is usable for ``task``.

    Pose uses only branch 0 of the last module, so there branch 0 must fuse every other branch at
    its last step and receive nothing afterwards: that is what makes HRNet's single-scale output a
    point of the space. (Fusions into branches 1..3 of the last module are legal but dead; they
    still count as cost, as in the official counter.)
    """
    if task not in TASK_NAMES:
        raise ArchitectureError(f"unknown task {task!r} (expected one of {TASK_NAMES})")
    if not single_scale_output(task):
        return
    last = arch.modules[-1]
    d0 = last.depths[0]
    want = tuple(range(1, last.num_branches))
    if last.fusions[d0 - 1][0] != want:
        raise ArchitectureError(
            f"{task} architecture: module 7 ({MODULE_NAMES[-1]}), step {d0 - 1}, target 0: "
            f"branch 0 must fuse all of {list(want)} at its last step, got {list(last.fusions[d0 - 1][0])}")
    for s in range(d0, last.steps):
        if last.fusions[s][0]:
            raise ArchitectureError(
                f"{task} architecture: module 7 ({MODULE_NAMES[-1]}), step {s}, target 0: "
                f"nothing may fuse into branch 0 after its last step {d0 - 1}")
