"""A measured latency lookup table for one device, task, width and input size, and its sum.

Every component of a multi-scale network is timed alone, compiled the way the deployable model is
(:func:`pipeline.nets.deploy.optimize_torchscript`: traced, frozen, BN folded,
``optimize_for_inference``): one block on each branch (every block of a branch has the same
shape), each fusion path ``k->j`` (the layer that maps branch k to branch j), the merge of a fused
target (sum + ReLU; charged once per fused target and step), and the fixed part (stem, the
transitions and the head). The fixed part is the measured end-to-end time of the smallest network
less its variable components, so it also carries the per-call overhead of the runtime.

A table only describes the machine and input it was measured on: its ``device`` block holds a
fingerprint (CPU model, logical CPUs, threads, torch version), and :func:`check_table` refuses a
table of another device or input size with one line naming both.

In the workflow the device is decided once, by the process that plans the run: it puts the
fingerprint in :data:`PLANNED_FP_ENV`, which every job inherits (a cluster job too), and a job
checks its table against that fingerprint (:func:`planned_fingerprint`), not against the node it
happens to run on; the job that measures the table refuses to measure any other device.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from pipeline.errors import InputError
from pipeline.io import atomic_write_text, read_json
from pipeline.nets.blocks import BasicBlock, fuse_layer
from pipeline.nets.supernet import INPUT_MULTIPLE, branch_channels
from pipeline.space.arch import Architecture
from pipeline.tasks.facts import task_facts

SCHEMA = "scalenas-latency/1"
#: The environment variable carrying the device fingerprint a workflow run planned its latency
#: table for (set by the planning process, inherited by every job).
PLANNED_FP_ENV = "SCALENAS_LATENCY_FP"


class LatencyError(InputError):
    """A latency table that does not fit the device, task or input; the message names both."""


def device_info(threads: int | None = None) -> dict[str, Any]:
    """What makes latencies comparable: CPU model, logical CPUs, torch threads and version.

    ``threads``: the torch threads the measurement runs with (default: this process's now), so a
    planner (the workflow, at parse time) can name the device of a job that will use them."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"device": "cpu", "cpu": cpu, "logical_cpus": os.cpu_count(),
            "threads": int(threads) if threads else torch.get_num_threads(),
            "torch": torch.__version__.split("+")[0]}
    info["fingerprint"] = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    return info


def planned_fingerprint() -> str | None:
    """The device fingerprint the workflow planned the latency table for (:data:`PLANNED_FP_ENV`),
    or None outside a workflow run (a stage or command started by hand)."""
    return os.environ.get(PLANNED_FP_ENV) or None


def _describe(dev: dict[str, Any]) -> str:
    return (f"{dev.get('cpu')} x{dev.get('logical_cpus')}, {dev.get('threads')} threads, "
            f"torch {dev.get('torch')} [{dev.get('fingerprint')}]")


def _timer(module: nn.Module, x: Any, repeats: int) -> float:
    from pipeline.nets.deploy import _quiet

    with torch.no_grad(), _quiet():
        ts = torch.jit.trace(module.eval(), x, check_trace=False)
        run = torch.jit.optimize_for_inference(torch.jit.freeze(ts.eval()))
        run(*x) if isinstance(x, tuple) else run(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(*x) if isinstance(x, tuple) else run(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


class _Merge(nn.Module):
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.relu(a + b)


def end_to_end(arch: Architecture, task: str, width: int, input_hw: tuple[int, int],
               repeats: int, channels_last: bool = False) -> float:
    """Median seconds of the exported, optimized network of ``arch`` (random weights)."""
    from pipeline.nets.deploy import optimize_torchscript
    from pipeline.nets.export import StandaloneNet

    net = StandaloneNet(task, width, None, arch).eval()
    x = torch.randn(1, 3, *input_hw)
    run = optimize_torchscript(net, x, channels_last).module
    with torch.no_grad():
        run(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def variable_parts(arch: Architecture) -> dict[str, int]:
    """How many times each table entry (other than ``fixed``) occurs in ``arch``."""
    counts: dict[str, int] = {}
    for m in arch.modules:
        for b, d in enumerate(m.depths):
            counts[f"block/{b}"] = counts.get(f"block/{b}", 0) + d
        for step in m.fusions:
            for j, srcs in enumerate(step):
                if not srcs:
                    continue
                counts[f"merge/{j}"] = counts.get(f"merge/{j}", 0) + 1
                for k in srcs:
                    if k != j:
                        counts[f"fuse/{k}->{j}"] = counts.get(f"fuse/{k}->{j}", 0) + 1
    return counts


#: Measurements of a table whose fixed part comes out negative before the build gives up.
ATTEMPTS = 3


def build_table(task: str, width: int, input_hw: tuple[int, int], repeats: int = 5,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every component on this machine; see the module docstring.

    The fixed part is the smallest network's end-to-end time less its components, each timed
    alone; it comes out negative only when the timings are noise (a busy machine, too few
    ``repeats``). Such a table would shift every prediction by that noise, so it is measured again,
    up to :data:`ATTEMPTS` times in all, and then refused with one :class:`LatencyError` line."""
    from pipeline.space.sample import smallest

    h, w = input_hw
    if h <= 0 or w <= 0 or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise LatencyError(f"input size {h}x{w}: must be positive multiples of {INPUT_MULTIPLE}")
    if width < 1 or repeats < 1:
        raise LatencyError(f"width {width}, repeats {repeats}: both must be at least 1")
    small = smallest(task)
    for attempt in range(1, ATTEMPTS + 1):
        entries, total = _measure(task, width, (h, w), repeats, progress)
        entries["fixed"] = total - sum(n * entries[k] for k, n in variable_parts(small).items())
        if entries["fixed"] >= 0:
            break
        note = (f"the fixed part came out negative ({entries['fixed'] * 1e3:.3f} ms: the "
                f"components, timed alone, took longer than the whole smallest network)")
        if attempt == ATTEMPTS:
            raise LatencyError(
                f"{task} W{width} {h}x{w}: {note} in {ATTEMPTS} measurements: the timings are "
                f"noise; measure on an idle machine, or with more --repeats than {repeats}")
        if progress:
            progress(f"{note}; measuring again ({attempt + 1} of {ATTEMPTS})")
    return {"schema": SCHEMA, "task": task, "width": int(width), "input_hw": [int(h), int(w)],
            "device": device_info(), "repeats": int(repeats), "unit": "s",
            "calibration": {"arch": "smallest", "end_to_end_s": total},
            "entries": {k: round(v, 7) for k, v in sorted(entries.items())}}


def _measure(task: str, width: int, input_hw: tuple[int, int], repeats: int,
             progress: Callable[[str], None] | None) -> tuple[dict[str, float], float]:
    """(seconds of each variable component, end-to-end seconds of the smallest network)."""
    from pipeline.space.sample import smallest

    h, w = input_hw
    mom = task_facts(task).bn_momentum
    chans = branch_channels(width, 4)
    feats = [torch.randn(1, c, h // 4 // 2 ** b, w // 4 // 2 ** b) for b, c in enumerate(chans)]
    entries: dict[str, float] = {}
    for b, c in enumerate(chans):
        entries[f"block/{b}"] = _timer(BasicBlock(c, mom), feats[b], repeats)
        entries[f"merge/{b}"] = _timer(_Merge(), (feats[b], feats[b]), repeats)
        for k in range(4):
            if k != b:
                entries[f"fuse/{k}->{b}"] = _timer(fuse_layer(chans, k, b, mom), feats[k], repeats)
        if progress:
            progress(f"branch {b} done")
    return entries, end_to_end(smallest(task), task, width, input_hw, repeats)


def save_table(path: str | os.PathLike, table: dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(table, indent=1) + "\n")


#: The table's JSON Schema: what every reader checks a table against (:func:`load_table`).
TABLE_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / \
    "latency_table.schema.yaml"
#: A table has at most 29 entries; anything much larger is not one.
MAX_TABLE_BYTES = 1 << 20
_SCHEMA_CACHE: dict[str, Any] = {}


def table_schema() -> dict[str, Any]:
    if "schema" not in _SCHEMA_CACHE:
        import yaml

        _SCHEMA_CACHE["schema"] = yaml.safe_load(TABLE_SCHEMA_PATH.read_text(encoding="utf-8"))
    return _SCHEMA_CACHE["schema"]


def validate_table(doc: Any, source: str) -> None:
    """Raise one :class:`LatencyError` naming ``source`` and the entry of every problem: the
    table schema's types and bounds, every entry a finite non-negative number of seconds."""
    from pipeline.config import problem_lines

    if not isinstance(doc, dict):
        raise LatencyError(f"{source}: not a latency table (a JSON object of schema {SCHEMA!r} "
                           f"expected, got {type(doc).__name__})")
    if doc.get("schema") != SCHEMA:
        raise LatencyError(f"{source}: not a latency table of schema {SCHEMA!r} "
                           f"(schema: {doc.get('schema')!r})")
    msgs = problem_lines(doc, table_schema())
    if msgs:
        more = f" (and {len(msgs) - 1} more: {'; '.join(msgs[1:])})" if len(msgs) > 1 else ""
        raise LatencyError(f"{source}: {msgs[0]}{more}")


def load_table(path: str | os.PathLike) -> dict[str, Any]:
    """A latency table read and validated (:func:`validate_table`); the one reader of the CLI
    and the workflow's jobs. A FIFO, a device or a huge file is refused before it is read."""
    p = Path(path)
    doc = read_json(p, "latency table", LatencyError, limit=MAX_TABLE_BYTES)
    validate_table(doc, str(p))
    doc["path"] = str(p)
    return doc


def check_table(table: dict[str, Any], task: str, width: int, input_hw: tuple[int, int],
                device: dict[str, Any] | None = None, planned: str | None = None) -> None:
    """Refuse a table measured for another device, task, width or input size.

    The device is ``planned`` (a fingerprint: the one a workflow run planned, see
    :func:`planned_fingerprint`) when given, else ``device`` (default: this machine)."""
    src = table.get("path", "latency table")
    have = table["device"].get("fingerprint")
    if planned is not None:
        if have != planned:
            raise LatencyError(
                f"{src}: measured on {_describe(table['device'])}, the run planned device "
                f"[{planned}] ({PLANNED_FP_ENV}); rebuild it on the machine that plans the run")
    else:
        dev = device or device_info()
        if have != dev["fingerprint"]:
            raise LatencyError(f"{src}: measured on {_describe(table['device'])}, this device is "
                               f"{_describe(dev)}; rebuild it here (scalenas latency build)")
    want = (task, int(width), [int(input_hw[0]), int(input_hw[1])])
    have = (table.get("task"), table.get("width"), table.get("input_hw"))
    if have != want:
        raise LatencyError(f"{src}: measured for {have[0]} W{have[1]} at "
                           f"{'x'.join(map(str, have[2] or []))}, needed {want[0]} W{want[1]} at "
                           f"{want[2][0]}x{want[2][1]}")


def describe_device(table: dict[str, Any]) -> str:
    """One line naming the device a table was measured on (CPU, threads, torch, fingerprint)."""
    return _describe(table["device"])


def predict_latency(table: dict[str, Any], arch: Architecture) -> float:
    """Predicted seconds of ``arch``: the fixed part plus each component times its count."""
    e = table["entries"]
    try:
        return e["fixed"] + sum(n * e[k] for k, n in variable_parts(arch).items())
    except KeyError as err:
        raise LatencyError(f"{table.get('path', 'latency table')}: no entry {err}") from None


__all__ = ["build_table", "save_table", "load_table", "check_table", "predict_latency",
           "device_info", "describe_device", "end_to_end", "variable_parts", "LatencyError",
           "PLANNED_FP_ENV", "planned_fingerprint"]
