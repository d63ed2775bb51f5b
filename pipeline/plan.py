"""What the workflow decides when it plans a run, as plain Python that unit tests can reach: the
launcher of distributed-capable stages, the device pool, the latency device fingerprint, the
shell command of a stage job and the final targets of the default rule.

``workflow/rules/common.smk`` only calls these and turns a :class:`PlanError` into Snakemake's
one-line ``WorkflowError``; Snakemake itself is never imported here.
"""
from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline.errors import InputError


class PlanError(InputError):
    """A run that cannot start as planned (the message names the parameter file and key)."""


# -- the launcher --------------------------------------------------------------------------------

#: torchrun options that set a rendezvous; without any, ``--standalone`` is added so that two
#: training jobs side by side do not share torchrun's default port 29500.
TORCHRUN_RENDEZVOUS = ("--standalone", "--rdzv_endpoint", "--rdzv-endpoint", "--master_port",
                       "--master-port", "--master_addr", "--master-addr", "--nnodes")


@dataclass(frozen=True)
class Launcher:
    command: str     # what the training rules start instead of `python`
    nproc: int       # processes (and devices) of one training job


def parse_launcher(text: str, source: str, which: Callable[[str], str | None] = shutil.which
                   ) -> Launcher:
    """``run.launcher`` checked: a command on PATH; torchrun needs ``--nproc_per_node N``."""
    where = f"{source}: run.launcher {text!r}"
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise PlanError(f"{where}: {e}") from None
    if not argv or which(argv[0]) is None:
        raise PlanError(f"{where}: {argv[0] if argv else ''!r} is not a command on PATH")
    torchrun = Path(argv[0]).name == "torchrun" or argv[1:3] == ["-m", "torch.distributed.run"]
    if not torchrun:
        return Launcher(text, 1)
    nproc = None
    for i, a in enumerate(argv):
        for flag in ("--nproc_per_node", "--nproc-per-node"):
            if a == flag:
                nproc = argv[i + 1] if i + 1 < len(argv) else ""
            elif a.split("=", 1)[0] == flag and "=" in a:
                nproc = a.split("=", 1)[1]
    if nproc is None or not nproc.isdigit() or int(nproc) < 1:
        raise PlanError(f"{where}: needs --nproc_per_node N with N >= 1 (the processes, and "
                        f"devices, of one training job), got {nproc!r}")
    if not any(a.split("=")[0] in TORCHRUN_RENDEZVOUS for a in argv):
        argv.insert(1 if Path(argv[0]).name == "torchrun" else 3, "--standalone")
    return Launcher(shlex.join(argv), int(nproc))


# -- the device pool -----------------------------------------------------------------------------

def device_ids(run: Mapping[str, Any], cuda_count: Callable[[], int] | None = None) -> list[str]:
    """The pool's device ids: ``run.devices``, else every GPU torch sees when ``run.device`` is
    cuda/auto. Empty on CPU (no pool: commands run as they are). A missing GPU is not an error
    here: a dry run or a login node may plan a GPU recipe (the run's start checks it)."""
    given = [str(d) for d in run["devices"]]
    if run["device"] == "cpu" or given:
        return given
    if cuda_count is None:
        import torch

        cuda_count = (lambda: torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return [str(i) for i in range(cuda_count())]


def check_pool(launcher: Launcher, ids: Sequence[str], source: str) -> None:
    if ids and launcher.nproc > len(ids):
        raise PlanError(f"{source}: run.launcher starts {launcher.nproc} processes per job but "
                        f"run.devices has {len(ids)} device(s)")


def gpus(distributed: bool, launcher: Launcher, ids: Sequence[str], device: str) -> int:
    """``resources: gpu=`` of a job: its processes' devices; 0 on CPU (no pool, not cuda)."""
    if not ids and device != "cuda":
        return 0
    return launcher.nproc if distributed else 1


def device_wrap(pool_dir: str | Path, ids: Sequence[str]) -> str:
    """Prefix that runs a job on ``SCALENAS_GPUS`` devices of its own (pipeline.devices); empty
    without a pool, so CPU jobs start as they always did."""
    if not ids:
        return ""
    return f"python -m pipeline.devices --pool {pool_dir} --devices {','.join(ids)} --"


def check_cuda(device: str, source: str, available: Callable[[], bool] | None = None) -> None:
    """``run.device: cuda`` where torch sees no GPU. Checked only where jobs run here (Snakemake's
    start, not a dry run or a cluster's login node, which may plan a GPU recipe)."""
    if device != "cuda":
        return
    if available is None:
        import torch

        available = torch.cuda.is_available
    if not available():
        raise PlanError(f"{source}: run.device is 'cuda' but torch sees no CUDA device here "
                        "(use 'auto' or 'cpu')")


# -- the latency device ----------------------------------------------------------------------------

_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


def planned_fingerprint(given: str | None, threads: int,
                        measure: Callable[[int], str] | None = None) -> str:
    """The device whose latency table the search reads: the planning process's own machine at
    the search jobs' threads, unless a fingerprint is handed down (a job re-parsing the workflow
    on a cluster node, or a user bringing another device's table)."""
    from pipeline.search.latency import PLANNED_FP_ENV

    if not given:
        if measure is None:
            from pipeline.search.latency import device_info

            measure = lambda t: device_info(t)["fingerprint"]  # noqa: E731
        return measure(threads)
    if not _FINGERPRINT.fullmatch(given):
        raise PlanError(f"{PLANNED_FP_ENV}={given!r}: not a device fingerprint (16 hex digits, "
                        "as a latency table's device.fingerprint)")
    return given


# -- stage commands --------------------------------------------------------------------------------

#: Names Snakemake formats in a shell command; any other ``{name}`` is a wildcard.
JOB_NAMES = frozenset({"input", "output", "params", "wildcards", "threads", "log", "resources",
                       "rule", "jobid", "attempt"})
_BRACED = re.compile(r"(?<!\{)\{([a-z_][a-z0-9_]*)\}(?!\})")


def as_wildcards(text: str) -> str:
    """``{task}`` -> ``{wildcards.task}`` for every bare name that is not a job attribute, so the
    rules can pass output patterns of pipeline.paths (``results/{task}/...``) as they are."""
    return _BRACED.sub(lambda m: m.group(0) if m.group(1) in JOB_NAMES
                       else f"{{wildcards.{m.group(1)}}}", text)


def stage_cmd(module: str, args: Sequence[str], run_settings: str | Path, *,
              distributed: bool = False, gpu: bool = False) -> str:
    """Shell command of a stage job: threads pinned to the rule's ``threads``, output to its log.

    ``distributed`` starts the stage with the launcher (``$SCALENAS_LAUNCHER``: python or
    torchrun); ``gpu`` gives the job ``resources.gpu`` devices of its own from the pool."""
    # PASSIVE: idle OpenMP threads sleep instead of spinning; with two torch jobs on 2 cores a
    # spinning pool slowed training steps tenfold (measured).
    env = ("OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
           "OMP_WAIT_POLICY=PASSIVE")
    launcher = "$SCALENAS_LAUNCHER" if distributed else "python"
    if gpu:  # the pool as an environment variable too: changing run.devices reruns nothing
        env += " SCALENAS_GPUS={resources.gpu} $SCALENAS_DEVICE_WRAP"
    return as_wildcards(f"{env} {launcher} -m pipeline.stages.{module} --threads {{threads}} "
                        f"--run-settings {run_settings} " + " ".join(args) + " > {log} 2>&1")


# -- the default target ------------------------------------------------------------------------------

def final_targets(params: Mapping[str, Any], finetune_models: Mapping[str, Sequence[str]]
                  ) -> list[str]:
    """What ``snakemake`` (rule ``all``) builds, in pipeline order: each task's manifest, its
    trained supernet (unless given by ``supernet.<task>.checkpoint``), its search summary and
    fine-tuned models, then the report. One function instead of lists appended by each rule
    file, so the order of the includes cannot change it."""
    from pipeline import paths

    tasks = list(params["tasks"])
    trained = [t for t in tasks if not params["supernet"][t]["checkpoint"]]
    return [*(paths.manifest(t) for t in tasks),
            *(paths.trained_supernet(t) for t in trained),
            *(paths.final("summary.json", t) for t in tasks),
            *(paths.finetune_record(t, m) for t in tasks for m in finetune_models[t]),
            *report_targets()]


def report_targets() -> list[str]:
    """REPORT.md and the pages of Snakemake's report (requested by name, so that a run made
    before they existed builds them; ``snakemake --report`` needs every marked file)."""
    from pipeline import paths

    return [paths.report_file(n) for n in
            ("REPORT.md", "final_models.html", "parameters.html", "software.html")]
