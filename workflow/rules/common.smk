# Shared frame of the workflow: parameters, per-rule parameter files, MLflow hooks, helpers.
#
# Conventions for a phase `<phase>` (see README "Adding a stage"):
#   - its keys are listed in pipeline.config.PHASES["<phase>"];
#   - its rules take `param_file("<phase>")` (results/params/{task}/<phase>.json) as an input, so a
#     change of any of those keys, and of no other key, reruns them;
#   - they run `stage_cmd("<module>", ...)`, a `log:` under results/logs/, and `threads:`;
#   - they append their final targets to ALL_TARGETS (rule `all`) and define `<phase>_all`.
import json
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from pipeline import config as pconfig
from pipeline import paths
from pipeline import recovery, tracking
from pipeline.errors import InputError
from pipeline.paths import (RESULTS, RUN_SETTINGS, log_file, manifest, merged, param_file,
                            teacher_model, trained_supernet)
from pipeline.stages.build import check_start_weights

envvars:
    "PATH",


# Jobs run `python` from the interpreter that runs Snakemake (the project's venv), found on PATH.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
CONDA_ENV = "../envs/scalenas.yaml"
ALL_TARGETS = []


def _params_source():
    """The parameter file: --config params=FILE, else the last --configfile, else the default."""
    if "params" in config:  # an empty `params=` is an error (read_yaml says so), not the default
        return "" if config["params"] is None else str(config["params"])
    if workflow.overwrite_configfiles:
        return str(list(workflow.overwrite_configfiles)[-1])
    return str(pconfig.DEFAULT_PARAMS)


PARAMS_SOURCE = _params_source()
try:
    PARAMS = pconfig.load_resolved(PARAMS_SOURCE)
    pconfig.check_paths(PARAMS, PARAMS_SOURCE)
    # Starting weights of the wrong task, width or outputs: stop before any job starts.
    check_start_weights(PARAMS, PARAMS_SOURCE)
except InputError as e:
    # Before any job starts: one line naming the file and the key.
    raise WorkflowError(f"invalid parameters: {e}")

TASKS = list(PARAMS["tasks"])
BUILTIN = bool(PARAMS["data"]["builtin"])
DATA_ROOT = PARAMS["data"]["root"]
wildcard_constraints:
    task="|".join(TASKS),


def write_if_changed(path, text):
    """Write `text` to `path` only when it differs, so unchanged files keep their mtime."""
    p = Path(path)
    if p.is_file() and p.read_text(encoding="utf-8") == text:
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def _phase_doc(phase, task):
    return {"phase": phase, "task": task,
            "params": pconfig.phase_params(PARAMS, phase, task)}


# Per-rule parameter files, written at parse time (content-compared, so mtimes move only when a
# value changes). Task-independent phases (no "{task}" in their keys) get one file.
#: Every per-rule parameter file, in pipeline order (the report lists them in parameters.html).
PARAM_FILES = []
for _phase, _keys in pconfig.PHASES.items():
    for _task in (TASKS if any("{task}" in k for k in _keys) else [None]):
        write_if_changed(param_file(_phase, _task),
                         json.dumps(_phase_doc(_phase, _task), indent=1, sort_keys=True) + "\n")
        if _phase not in pconfig.OPTIONAL_PHASES:  # the report lists the default run's phases
            PARAM_FILES.append(param_file(_phase, _task))

# Execution settings (device, threads, tracking): read by the jobs, never an input, so changing
# them reruns nothing.
write_if_changed(RUN_SETTINGS, json.dumps(
    {"source": PARAMS_SOURCE, "run": PARAMS["run"], "tracking": PARAMS["tracking"]},
    indent=1, sort_keys=True) + "\n")


# Launcher of distributed-capable stages (run.launcher, e.g. "torchrun --nproc_per_node 8"): an
# environment variable, so that switching it reruns nothing.
os.environ.update(SCALENAS_LAUNCHER=PARAMS["run"]["launcher"])


def stage_cmd(module, *args, distributed=False, gpu=False):
    """Shell command of a stage job: threads pinned to the rule's `threads`, output to the log.

    `args` are appended verbatim (they may use {input}, {output}, {wildcards}, {params}).
    `distributed=True` starts the stage with run.launcher (python or torchrun) instead of python.
    `gpu=True`: the job takes `resources.gpu` devices of its own from the pool (scale-out block)."""
    # PASSIVE: idle OpenMP threads sleep instead of spinning; with two torch jobs on 2 cores a
    # spinning pool slowed training steps tenfold (measured).
    env = ("OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
           "OMP_WAIT_POLICY=PASSIVE")
    launcher = "$SCALENAS_LAUNCHER" if distributed else "python"
    if gpu:  # the pool as an environment variable too: changing run.devices reruns nothing
        env += " SCALENAS_GPUS={resources.gpu} $SCALENAS_DEVICE_WRAP"
    cmd = (f"{env} {launcher} -m pipeline.stages.{module} --threads {{threads}} "
           f"--run-settings {RUN_SETTINGS} " + " ".join(args) + " > {log} 2>&1")
    # Output patterns such as results/{task}/... may be passed as they are: a bare lower-case
    # {name} that is not a job attribute is a wildcard.
    return re.sub(r"(?<!\{)\{([a-z_][a-z0-9_]*)\}(?!\})",
                  lambda m: m.group(0) if m.group(1) in _JOB_NAMES else f"{{wildcards.{m.group(1)}}}",
                  cmd)


_JOB_NAMES = {"input", "output", "params", "wildcards", "threads", "log", "resources", "rule",
              "jobid", "attempt"}


def data_marker(task):
    """An input that changes when the task's dataset changes."""
    if BUILTIN:
        return paths.synth_record(DATA_ROOT)
    return PARAMS[task]["root"]


# -- MLflow: one parent run per invocation that runs jobs -----------------------------------------
_TRACK = PARAMS["tracking"]["enabled"]
if not _TRACK:
    os.environ[tracking.DISABLE_ENV] = "1"
else:
    try:  # before any job: an empty store file must not be silently replaced by a new store
        tracking.check_store_file(tracking.resolve_uri(PARAMS["tracking"]["uri"]))
    except tracking.TrackingError as e:
        raise WorkflowError(f"invalid tracking store: {e}")
# Stage jobs stop when this process is gone (kill -9): see pipeline.recovery.
os.environ[recovery.WATCH_ENV] = str(os.getpid())


def _check_cuda_here():
    """run.device 'cuda' on a machine without CUDA stops a run whose jobs execute here. At parse
    time Snakemake does not yet know whether it is a dry run (which plans a GPU recipe anywhere)
    or a cluster run (whose login node has no GPU), so this waits for onstart."""
    if PARAMS["run"]["device"] != "cuda" or not workflow.local_exec or workflow.touch:
        return
    import torch

    if not torch.cuda.is_available():
        print(f"error: invalid parameters: {PARAMS_SOURCE}: run.device is 'cuda' but torch sees "
              "no CUDA device here (use 'auto' or 'cpu')", file=sys.stderr)
        sys.exit(2)


onstart:
    _check_cuda_here()
    # audit.smk's parameter check, for runs that ask for the audit (audit_all, its files).
    from pipeline.audit.plan import requests_audit
    _audit_error = globals().get("AUDIT_ERROR")  # set by audit.smk, included after this file
    if _audit_error and requests_audit(workflow.dag_settings.targets):
        print(f"error: invalid parameters: {_audit_error}", file=sys.stderr)
        sys.exit(2)
    # Temporary directories of jobs killed with an earlier Snakemake (their pids are gone).
    recovery.sweep_tree(RESULTS)
    recovery.sweep_stale(Path(DATA_ROOT).parent, Path(DATA_ROOT).name)
    if _TRACK and not workflow.touch:
        try:
            tracking.start_pipeline(
                PARAMS["run"]["name"],
                uri=tracking.resolve_uri(PARAMS["tracking"]["uri"]),
                experiment=os.environ.get(tracking.EXPERIMENT_ENV) or PARAMS["tracking"]["experiment"],
                params=PARAMS,
                tags={tracking.TAG_PARAMS_HASH: pconfig.params_hash(PARAMS),
                      "scalenas.params_file": PARAMS_SOURCE})
        except tracking.TrackingError as e:
            if PARAMS["tracking"]["required"]:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            # Said once here; the jobs inherit the switch and do not try again.
            print(f"warning: tracking.required is false, running without MLflow: {e}",
                  file=sys.stderr)
            os.environ[tracking.DISABLE_ENV] = "1"


onsuccess:
    if _TRACK and not workflow.touch:
        tracking.end_pipeline(True)
    # Lineage stays true: record what this run produced in dvc.lock (never inside `dvc repro`).
    if not workflow.touch and not workflow.dryrun:
        from pipeline.lineage import record_after_snakemake
        _line = record_after_snakemake(".", PARAMS_SOURCE, workflow.dag_settings.targets)
        if _line:
            print(_line, file=sys.stderr)


onerror:
    if _TRACK and not workflow.touch:
        tracking.end_pipeline(False)


# --- helpers of train.smk (here because `snakemake --lint` wants rule files without functions)
TRAIN_THREADS = int(PARAMS["run"]["train_threads"])
def supernet_model(task):
    """The supernet the search and the fine-tuning read: supernet.<task>.checkpoint when given
    (no teacher or supernet job then), else the one the supernet rule trains."""
    return paths.supernet_model(task, PARAMS["supernet"][task]["checkpoint"])


#: Tasks whose supernet is trained here (not given by supernet.<task>.checkpoint).
TRAINED_TASKS = [t for t in TASKS if not PARAMS["supernet"][t]["checkpoint"]]
def init_input(phase, task):
    """Starting weights of a phase (teacher|supernet|finetune.<task>.init): an input, so a new
    file reruns the phase and what follows."""
    path = PARAMS[phase][task]["init"]
    return [path] if path else []


def _needs_teacher(task):
    s = PARAMS["supernet"][task]
    return (bool(s["init_from_teacher"]) and not s["init"]) or float(s["kd_ratio"]) > 0


def _teacher_input(wc):
    return [teacher_model(wc.task)] if _needs_teacher(wc.task) else []


def _teacher_arg(wc, input):
    return f"--teacher {input.teacher}" if _needs_teacher(wc.task) else ""


# --- helpers of search.smk (here because `snakemake --lint` wants rule files without functions)
SEARCH_THREADS = int(PARAMS["run"]["threads"])
_RANDOM = PARAMS["search"]["random"]
_EVO = PARAMS["search"]["evolution"]
GENERATIONS = int(_EVO["generations"])
def search_phase(step):
    return "search_random" if step == "sample" else "search_evolution"


def search_shards(step):
    return int(_RANDOM["shards"] if step == "sample" else _EVO["shards"])


def pool_before(gen, task="{task}"):
    """Results tables evaluated before generation `gen`: sampling + generations 1..gen-1."""
    return [merged("sample", task)] + [merged(paths.evolve_step(g), task) for g in range(1, gen)]


def _shard_dirs(wc):
    return [f"{paths.shard_dir(wc.step, k, wc.task)}/rows.jsonl"
            for k in range(search_shards(wc.step))]


def _merge_pool(wc):
    if wc.step.startswith("evolve/gen_"):
        return pool_before(int(wc.step.split("_")[-1]), wc.task)
    return []


# search.objective latency: the cost axis is the predicted latency of a table measured on the
# machine that plans the run (rule latency_table, a local rule), with the search jobs' threads;
# the device fingerprint is part of the table's path, so another machine (or torch, or thread
# count) builds its own table. The planning process decides the fingerprint once and hands it to
# every job through the environment: a job that re-parses this file elsewhere (a cluster node)
# names the same table, and its stage checks the table against it, not against the node it runs on.
from pipeline.search.latency import PLANNED_FP_ENV, device_info
OBJECTIVE = PARAMS["search"]["objective"]
LATENCY_FP = os.environ.get(PLANNED_FP_ENV) or device_info(SEARCH_THREADS)["fingerprint"]
if not re.fullmatch(r"[0-9a-f]{16}", LATENCY_FP):
    raise WorkflowError(f"{PLANNED_FP_ENV}={LATENCY_FP!r}: not a device fingerprint (16 hex "
                        "digits, as a latency table's device.fingerprint)")
os.environ[PLANNED_FP_ENV] = LATENCY_FP
# Passed to the jobs of executors that do not hand them the whole environment (sbatch does).
envvars:
    PLANNED_FP_ENV,


def latency_input(wc):
    """The latency table a search or selection job reads: only with search.objective latency,
    so a GFLOPs run's jobs and DAG stay what they were."""
    return [paths.latency_table(LATENCY_FP, wc.task)] if OBJECTIVE == "latency" else []


def latency_arg(wc, input):
    return f"--latency-table {input.latency[0]}" if input.latency else ""


# --- helpers of finetune.smk (here because `snakemake --lint` wants rule files without functions)
from pipeline.finetune.select import SelectionError, specs_from_params
def _finetune_specs(task):
    try:
        section = pconfig.make_section(pconfig.FinetuneTrainConfig, PARAMS["finetune"][task],
                                       source=f"{PARAMS_SOURCE}: finetune.{task}")
        return specs_from_params(section, f"{PARAMS_SOURCE}: finetune.{task}",
                                 PARAMS["search"]["objective"])
    except SelectionError as e:
        raise WorkflowError(f"invalid parameters: {e}")


FINETUNE_MODELS = {task: [s.name for s in _finetune_specs(task)] for task in TASKS}
def _arch_inputs(wc):
    """Architecture files named by the selection: their content is an input."""
    return [s.arch for s in _finetune_specs(wc.task)
            if s.arch is not None and os.path.isfile(s.arch)]


def finetune_records(task):
    return [paths.finetune_record(task, m) for m in FINETUNE_MODELS[task]]


# --- helpers of report.smk (here because `snakemake --lint` wants rule files without functions)
REPORT_OUTPUTS = [paths.report_file(n) for n in
                  ("REPORT.md", "metrics.json", "final_models.md", "plots/finetune.csv")]
#: Targets of the phase: REPORT.md and the pages of Snakemake's report (requested by name, so that
#: a run made before they existed builds them; `snakemake --report` needs every marked file).
REPORT_TARGETS = [paths.report_file(n) for n in
                  ("REPORT.md", "final_models.html", "parameters.html", "software.html")]


# --- scale-out (issue 15): launcher and device checks, the per-job device pool -------------------
# Checked at parse time, so a launcher that cannot start or a missing GPU stops the run before any
# job starts, with one line naming the key.
import shlex
import shutil

_TORCHRUN_ADDR = ("--standalone", "--rdzv_endpoint", "--rdzv-endpoint", "--master_port",
                  "--master-port", "--master_addr", "--master-addr", "--nnodes")


def _launcher(text):
    """(command the training rules start, processes per job) from run.launcher."""
    where = f"invalid parameters: {PARAMS_SOURCE}: run.launcher {text!r}"
    try:
        argv = shlex.split(text)
    except ValueError as e:
        raise WorkflowError(f"{where}: {e}")
    if not argv or shutil.which(argv[0]) is None:
        raise WorkflowError(f"{where}: {argv[0] if argv else ''!r} is not a command on PATH")
    torchrun = Path(argv[0]).name == "torchrun" or argv[1:3] == ["-m", "torch.distributed.run"]
    if not torchrun:
        return text, 1
    nproc = None
    for i, a in enumerate(argv):
        for flag in ("--nproc_per_node", "--nproc-per-node"):
            if a == flag:
                nproc = argv[i + 1] if i + 1 < len(argv) else ""
            elif a.split("=", 1)[0] == flag and "=" in a:
                nproc = a.split("=", 1)[1]
    if nproc is None or not nproc.isdigit() or int(nproc) < 1:
        raise WorkflowError(f"{where}: needs --nproc_per_node N with N >= 1 (the processes, and "
                            f"devices, of one training job), got {nproc!r}")
    # Two torchrun jobs side by side (seg and pose) must not share torchrun's default port 29500.
    if not any(a.split("=")[0] in _TORCHRUN_ADDR for a in argv):
        argv.insert(1 if Path(argv[0]).name == "torchrun" else 3, "--standalone")
    return shlex.join(argv), int(nproc)


LAUNCHER, NPROC = _launcher(PARAMS["run"]["launcher"])
os.environ.update(SCALENAS_LAUNCHER=LAUNCHER)


def _device_ids():
    run = PARAMS["run"]
    if run["device"] == "cpu":
        return [str(d) for d in run["devices"]]
    import torch

    if not torch.cuda.is_available():
        # No pool to build; whether that is an error waits for onstart (see _check_cuda_here).
        return [str(d) for d in run["devices"]]
    return [str(d) for d in run["devices"]] or [str(i) for i in range(torch.cuda.device_count())]


DEVICE_IDS = _device_ids()
if DEVICE_IDS and NPROC > len(DEVICE_IDS):
    raise WorkflowError(f"invalid parameters: {PARAMS_SOURCE}: run.launcher starts {NPROC} "
                        f"processes per job but run.devices has {len(DEVICE_IDS)} device(s)")


def gpus(distributed=False):
    """`resources: gpu=` of a job: its processes' devices; 0 on CPU (no pool, device not 'cuda')."""
    return (NPROC if distributed else 1) if DEVICE_IDS or PARAMS["run"]["device"] == "cuda" else 0


# Prefix that runs a job on SCALENAS_GPUS (= resources.gpu) devices of its own
# (pipeline/devices.py); empty without a pool, so CPU jobs start as they always did.
os.environ.update(SCALENAS_DEVICE_WRAP=(
    f"python -m pipeline.devices --pool {paths.DEVICE_POOL} --devices {','.join(DEVICE_IDS)} --"
    if DEVICE_IDS else ""))
