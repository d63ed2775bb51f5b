"""The frame every stage entry point runs in.

A stage script is ``python -m pipeline.stages.<name> --params FILE --task TASK --out DIR`` and
holds no logic of its own: it defines ``body(ctx) -> metrics | None`` and calls
:func:`run_stage`. The frame

1. parses the common arguments (plus the stage's own, through ``add_args``);
2. sets torch/OMP threads to ``--threads`` (the rule's Snakemake ``threads``);
3. loads the parameters: a per-rule parameter file written by the workflow
   (``results/params/<task>/<phase>.json``), or a whole parameter file (``params/*.yaml``, for
   runs outside Snakemake), validated, and restricted to the keys of the phase
   (:data:`pipeline.config.PHASES`): reading any other key raises;
4. seeds ``random``, numpy and torch from ``run.seed`` (when the phase reads it);
5. opens the MLflow child run (tags: phase, task, git commit, parameter hash, data hash) and
   logs the phase's parameters once;
6. runs the body with ``ctx.out`` pointing at a temporary directory next to the final one, and on
   success writes ``resolved_params.json`` into it and renames it to ``--out`` (replacing a
   previous output of the stage, so no stale file survives); on failure
   removes the temporary directory (the final directory is never half-written), prints one line
   ``error: <phase>[<task>]: <message>`` on stderr and exits non-zero: 2 for the project's input
   errors (:class:`pipeline.errors.InputError`) and a full disk (``<path>: no space left on
   device``, :mod:`pipeline.diskfull`), 1 for anything else (a bug), with its traceback above
   the line.

``ctx.work`` is a persistent scratch directory (``<out>/../.<out name>.work``) for checkpoints
and other resume state: it survives failures and kills, so a rerun can resume.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline import config as pconfig
from pipeline import diskfull, recovery, tracking
from pipeline.errors import EXIT_BAD_INPUT, EXIT_BUG, InputError, StageInputError
from pipeline.io import atomic_write_text, file_sha256, read_json
from pipeline.space.arch import TASK_NAMES

RESOLVED_NAME = "resolved_params.json"


@dataclass
class StageContext:
    """What a stage body gets. Write outputs under ``out``; resume state under ``work``."""

    phase: str
    task: str | None
    cfg: pconfig.Config
    params: dict[str, Any]
    params_hash: str
    out: Path
    final_out: Path
    work: Path
    threads: int
    device: str
    run: tracking.StageRun
    args: argparse.Namespace
    #: Execution settings (run.json): never an input, changing them reruns nothing.
    settings: pconfig.RunConfig
    data_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task_cfg(self) -> pconfig.SegConfig | pconfig.PoseConfig:
        """The task section (``cfg.seg`` or ``cfg.pose``)."""
        if self.task is None:
            raise pconfig.ConfigError(f"phase {self.phase!r} runs without a task")
        return self.cfg.task(self.task)


Body = Callable[[StageContext], "Mapping[str, float] | None"]


def build_parser(phase: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None,
                 needs_task: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{phase}",
                                description=f"Pipeline stage '{phase}'.")
    p.add_argument("--params", required=True, type=Path,
                   help="per-rule parameter file (results/params/...json) or a params/*.yaml file")
    p.add_argument("--task", choices=TASK_NAMES, required=needs_task, default=None)
    p.add_argument("--out", required=True, type=Path, help="output directory of this stage")
    p.add_argument("--threads", type=int, default=1, help="torch/OMP threads (the rule's threads)")
    p.add_argument("--run-settings", type=Path, default=None,
                   help="execution settings staged by the workflow (pipeline.workflow_params)")
    p.add_argument("--device", default=None, help="override run.device")
    p.add_argument("--manifest", type=Path, default=None,
                   help="data manifest (results/<task>/data/manifest.json) for the data-hash tag")
    p.add_argument("--label", default="", help="suffix of the MLflow run name (e.g. shard3)")
    if add_args is not None:
        add_args(p)
    return p


def set_threads(n: int) -> None:
    """Limit intra-op threads of torch and of OpenMP/MKL libraries loaded later."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_stage_params(path: Path, phase: str, task: str | None
                      ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """``(phase params, run settings, source)`` from a per-rule JSON file or a params YAML."""
    if path.suffix == ".json":
        doc = read_json(path, "parameter file", StageInputError)
        if not isinstance(doc, dict) or doc.get("phase") != phase or doc.get("task") != task:
            raise StageInputError(f"{path}: holds the parameters of phase {doc.get('phase')!r} "
                                  f"task {doc.get('task')!r}, not {phase!r} task {task!r}"
                                  if isinstance(doc, dict) else f"{path}: not a parameter file")
        params = doc.get("params", {})
        pconfig.validate(params, str(path))
        return params, {}, str(doc.get("source", path))
    resolved = pconfig.load_resolved(path)
    pconfig.check_paths(resolved, str(path))
    settings = {"run": resolved["run"], "tracking": resolved["tracking"]}
    return pconfig.phase_params(resolved, phase, task), settings, str(path)


def _read_settings(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    return read_json(path, "run settings file", StageInputError)


def _data_hash(manifest: Path | None) -> str | None:
    if manifest is None:
        return None
    doc = read_json(manifest, "data manifest", StageInputError)
    return doc.get("data_hash") if isinstance(doc, dict) else None


def _open_run(phase: str, task: str | None, label: str, settings: Mapping[str, Any],
              params: Mapping[str, Any], phash: str, data_hash: str | None) -> tracking.StageRun:
    trk = settings.get("tracking", {})
    # Disabled by the params file or the environment; never by mutating os.environ, which would
    # leak into every later stage run in the same process (tests) and its subprocesses.
    if not trk.get("enabled", True) or not tracking.enabled():
        return tracking.NullRun()
    uri = tracking.resolve_uri(trk.get("uri", ""))
    experiment = (os.environ.get(tracking.EXPERIMENT_ENV) or trk.get("experiment")
                  or tracking.DEFAULT_EXPERIMENT)
    name = ":".join(x for x in (phase, task or "", label) if x)
    tags = {tracking.TAG_PHASE: phase, tracking.TAG_TASK: task or "", tracking.TAG_KIND: "stage",
            tracking.TAG_PARAMS_HASH: phash}
    if data_hash:
        tags[tracking.TAG_DATA_HASH] = data_hash
    try:
        return tracking.start_run(name, uri=uri, experiment=experiment, tags=tags, params=params)
    except tracking.TrackingError as e:  # an InputError: one line naming tracking.uri, exit 2
        if trk.get("required", True):
            raise
        print(f"warning: tracking.required is false, going on without MLflow: {e}", file=sys.stderr)
        return tracking.NullRun()


def _check_replaceable(final: Path, marker: str | None = None) -> None:
    """Refuse to replace a directory that is not a previous output of a stage (one holding
    ``resolved_params.json``, or the stage's own ``marker`` file)."""
    # Snakemake creates the parent folders of declared outputs before the job starts, so a tree
    # of empty folders is not somebody's data.
    if final.exists() and (not final.is_dir() or (
            any(p.is_file() for p in final.rglob("*")) and not (final / RESOLVED_NAME).is_file()
            and not (marker is not None and (final / marker).is_file()))):
        raise StageInputError(f"--out {final}: exists and is not the output of a previous run of "
                              "a stage; refusing to replace it")


def _publish(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` (two renames: the old directory is removed afterwards)."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


_NOT_INPUTS = ("out", "run_settings", "params")
WORK_STAMP = "inputs.json"


def _inputs_fingerprint(phash: str, args: argparse.Namespace) -> dict[str, str]:
    """The parameters hash and the content hash of every input file named on the command line."""
    stamp = {"params": phash}
    for name, value in sorted(vars(args).items()):
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, v in enumerate(values):
            if name in _NOT_INPUTS or not isinstance(v, (str, Path)) or not Path(v).is_file():
                continue
            stamp[f"{name}[{i}]" if len(values) > 1 else name] = file_sha256(v)
    return stamp


def _work_dir(final: Path, phash: str, args: argparse.Namespace) -> Path:
    """The stage's resume directory (``<out>/../.<out name>.work``), kept only for the same inputs.

    A killed job resumes from what it left there; but when a parameter or an upstream file (a
    teacher or supernet checkpoint, a candidate list) changed, the old progress belongs to another
    computation and is discarded.
    """
    work = final.parent / f".{final.name}.work"
    stamp = _inputs_fingerprint(phash, args)
    try:
        old = json.loads((work / WORK_STAMP).read_text())
    except FileNotFoundError:
        old = stamp  # unknown provenance: kept; the stages check their own resume files
    except (OSError, ValueError):
        old = None
    if old != stamp:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / WORK_STAMP, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return work


TAG_WORLD_SIZE = "scalenas.world_size"
TAG_DEVICES = "scalenas.devices"


def _world() -> tuple[int, str | None]:
    """Processes of the job (torchrun's WORLD_SIZE, else 1) and the devices the pool gave it."""
    from pipeline.devices import ENV

    return int(os.environ.get("WORLD_SIZE", "1")), os.environ.get(ENV) or None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def run_phased_stage(phases: Sequence[str], body: Body | Mapping[str, Body],
                     argv: Sequence[str] | None = None, *,
                     add_args: Callable[[argparse.ArgumentParser], None] | None = None,
                     default: str | None = None,
                     options: Mapping[str, Mapping[str, Any]] | None = None) -> int:
    """``run_stage`` for an entry point shared by several phases, chosen by ``--phase``.

    ``body`` is one body for every phase or one per phase; ``options`` gives a phase's extra
    :func:`run_stage` keywords; without ``default`` the ``--phase`` argument is required."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--phase", choices=phases, required=default is None, default=default)
    known, rest = pre.parse_known_args(argv)
    phase = known.phase

    def with_phase(p: argparse.ArgumentParser) -> None:  # listed in --help, parsed above
        p.add_argument("--phase", choices=phases, default=phase, help="the phase to run")
        if add_args is not None:
            add_args(p)

    chosen = body[phase] if isinstance(body, Mapping) else body
    return run_stage(phase, chosen, ["--phase", phase, *rest], add_args=with_phase,
                     **dict((options or {}).get(phase, {})))


def run_stage(phase: str, body: Body, argv: Sequence[str] | None = None, *,
              add_args: Callable[[argparse.ArgumentParser], None] | None = None,
              needs_task: bool = True, write_resolved: bool = True,
              output_marker: str | None = None) -> int:
    """Run ``body`` inside the frame; returns the exit status (see the module docstring).

    ``write_resolved=False`` skips ``resolved_params.json`` (for outputs whose bytes must not
    depend on how the stage was called, such as the DVC-tracked built-in data); such a stage
    names the ``output_marker`` file its outputs always hold, so that a rerun may replace them."""
    args = build_parser(phase, add_args, needs_task).parse_args(argv)
    recovery.watch_workflow()  # a kill -9 of Snakemake stops this job too (cleanly)
    where = f"{phase}[{args.task}]" if args.task else phase
    run: tracking.StageRun | None = None
    tmp: Path | None = None
    settings: dict[str, Any] = {}
    try:
        if args.threads < 1:
            raise StageInputError(f"--threads must be >= 1, got {args.threads}")
        set_threads(args.threads)
        params, settings, source = load_stage_params(args.params, phase, args.task)
        settings = {**settings, **_read_settings(args.run_settings)}
        run_settings = pconfig.make_section(pconfig.RunConfig, settings.get("run"),
                                            source=f"{args.run_settings or args.params}: run")
        cfg = pconfig.from_dict(params, phase=phase)
        phash = pconfig.params_hash(params)
        seed = params.get("run", {}).get("seed", 0)
        seed_everything(seed)
        device = args.device or run_settings.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and (args.device or int(os.environ.get("SCALENAS_GPUS") or 0)):
            import torch

            if not torch.cuda.is_available():
                # A job given GPUs (resources.gpu, or --device cuda) on a node without one, e.g.
                # a cluster's CPU partition. Jobs that ask for none (prepare, merge, evolve,
                # report) never touch the device and run anywhere.
                raise StageInputError("run.device is 'cuda' but torch sees no CUDA device on "
                                      f"this node ({os.uname().nodename})")
        data_hash = _data_hash(args.manifest)
        final = args.out
        _check_replaceable(final, output_marker)
        recovery.sweep_stale(final.parent, final.name)  # leftovers of a killed run of this job
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        work = _work_dir(final, phash, args)
        run = _open_run(phase, args.task, args.label, settings, params, phash, data_hash)
        ctx = StageContext(phase=phase, task=args.task, cfg=cfg, params=params, params_hash=phash,
                           out=tmp, final_out=final, work=work, threads=args.threads,
                           device=device, run=run, args=args, data_hash=data_hash,
                           settings=run_settings,
                           # the workflow's planned training batches (pipeline.data.batches)
                           extra={"batches": settings.get("batches") or [],
                                  "source": settings.get("source") or source})
        world = _world()
        run.set_tags({TAG_WORLD_SIZE: str(world[0]), TAG_DEVICES: world[1] or "none"})
        metrics = body(ctx)
        if int(os.environ.get("RANK", "0")) != 0:
            # Under torchrun only rank 0 publishes: the other ranks' outputs would race it.
            shutil.rmtree(tmp, ignore_errors=True)
            tmp = None
            return 0
        resolved = {"phase": phase, "task": args.task, "source": source, "params_hash": phash,
                    "device": device, "params": params, "world_size": world[0],
                    "devices": world[1]}
        if write_resolved:
            atomic_write_text(tmp / RESOLVED_NAME,
                              json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        if metrics:
            run.log_metrics(dict(metrics))
        _publish(tmp, final)
        tmp = None
        run.end("FINISHED")
        return 0
    except KeyboardInterrupt:
        _abort(run, tmp, "KILLED")
        raise
    except InputError as e:  # the user's to fix: one line, no traceback
        _abort(run, tmp, "FAILED")
        print(f"error: {where}: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        # A full disk, in whatever shape the writer raised it: one line naming the path.
        full = diskfull.find(e, tmp if tmp is not None else getattr(args, "out", None),
                             store=_store(settings))
        if full is not None:
            _abort(run, tmp, "FAILED")
            print(f"error: {where}: {_one_line(full)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        # a bug: keep the traceback for the log, then the one line
        traceback.print_exc()
        _abort(run, tmp, "FAILED")
        print(f"error: {where}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_BUG


def _store(settings: Mapping[str, Any] | None) -> Path | None:
    """The SQLite file of the MLflow store the stage logs to (named when it fills the disk)."""
    try:
        return tracking.sqlite_path(tracking.resolve_uri((settings or {})["tracking"]["uri"]))
    except (KeyError, TypeError, ValueError, tracking.TrackingError):
        return None


def _abort(run: tracking.StageRun | None, tmp: Path | None, status: str) -> None:
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if run is not None:
        try:
            run.end(status)
        except Exception:  # the store being down must not hide the stage's own error
            pass
