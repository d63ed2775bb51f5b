# Shared frame of the workflow: parameters, per-rule parameter files, MLflow hooks, helpers.
#
# Conventions for a phase `<phase>` (see README "Adding a stage"):
#   - its keys are listed in pipeline.config.PHASES["<phase>"];
#   - its rules take `param_file("<phase>")` (results/params/{task}/<phase>.json) as an input, so a
#     change of any of those keys, and of no other key, reruns them;
#   - they run `stage_cmd("<module>", ...)`, a `log:` under results/logs/, and `threads:`;
#   - they define `<phase>_all`; the default rule's targets are pipeline.plan.final_targets.
# Policy (launcher, device pool, latency device, stage commands, targets) is in pipeline/plan.py,
# tested on its own; this file holds the parameters, input functions and Snakemake's hooks.
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from pipeline import config as pconfig
from pipeline import paths
from pipeline import diskfull, plan, recovery, tracking, workflow_params
from pipeline.workflow_tracking import PipelineTracking, TrackingStartError
from pipeline.errors import InputError
from pipeline.paths import (RESULTS, log_file, manifest, merged, param_file, teacher_model,
                            trained_supernet)
from pipeline.stages.build import check_start_weights, check_task_params

envvars:
    "PATH",


# Jobs run `python` from the interpreter that runs Snakemake (the project's venv), found on PATH.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
CONDA_ENV = "../envs/scalenas.yaml"


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
    # What a task refuses (bottomup.det_file), masks of another task: the same.
    check_task_params(PARAMS, PARAMS_SOURCE)
except InputError as e:
    # Before any job starts: one line naming the file and the key.
    raise WorkflowError(f"invalid parameters: {e}")

TASKS = list(PARAMS["tasks"])
BUILTIN = bool(PARAMS["data"]["builtin"])
DATA_ROOT = PARAMS["data"]["root"]
wildcard_constraints:
    task="|".join(TASKS),


# The parameter files of the rules, per phase (policy in pipeline/workflow_params.py). Staged
# outside results/ when the job graph is built (STAGED, at the end of this file; a dry run, or a
# run the lock refuses, changes nothing there), published by the param_file jobs after the lock,
# the other phases' files refreshed by onstart.
PARAM_TEXTS = workflow_params.phase_texts(PARAMS, TASKS)
#: Every per-rule parameter file, in pipeline order (the report lists them in parameters.html).
# (the report lists the default run's phases: not the audit's, asked for on its own)
PARAM_FILES = [param_file(_phase, _task) for _phase, _keys in pconfig.PHASES.items()
               if _phase not in pconfig.OPTIONAL_PHASES
               for _task in (TASKS if any("{task}" in k for k in _keys) else [None])]


def stage_cmd(module, *args, distributed=False, gpu=False):
    """Shell command of a stage job (pipeline.plan.stage_cmd); `args` may use {input},
    {output}, {params} and bare wildcards such as {task}. The run settings are this run's staged
    copy (SCALENAS_RUN_SETTINGS), so a run in progress keeps its own."""
    return plan.stage_cmd(module, args, f"${workflow_params.RUN_SETTINGS_ENV}",
                          distributed=distributed, gpu=gpu)


def data_marker(task):
    """An input that changes when the task's dataset changes."""
    if BUILTIN:
        return paths.synth_record(DATA_ROOT)
    return PARAMS[task]["root"]


# -- MLflow: one parent run per invocation that runs jobs (pipeline/workflow_tracking.py) --------
TRACKING = PipelineTracking(PARAMS, PARAMS_SOURCE)
try:
    TRACKING.at_parse()
except tracking.TrackingError as e:
    raise WorkflowError(f"invalid tracking store: {e}")
# Stage jobs stop when this process is gone (kill -9): see pipeline.recovery.
os.environ[recovery.WATCH_ENV] = str(os.getpid())


def _check_cuda_here():
    """run.device 'cuda' on a machine without CUDA stops a run whose jobs execute here. At parse
    time Snakemake does not yet know whether it is a dry run (which plans a GPU recipe anywhere)
    or a cluster run (whose login node has no GPU), so this waits for onstart."""
    if not workflow.local_exec or workflow.touch:
        return
    try:
        plan.check_cuda(PARAMS["run"]["device"], f"invalid parameters: {PARAMS_SOURCE}")
    except plan.PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _start():
    """The onstart hook: after Snakemake holds its lock, in real and --touch runs only."""
    _check_cuda_here()
    # audit.smk's parameter check, for runs that ask for the audit (audit_all, its files).
    from pipeline.audit.plan import requests_audit
    _audit_error = globals().get("AUDIT_ERROR")  # set by audit.smk, included after this file
    if _audit_error and requests_audit(workflow.dag_settings.targets):
        print(f"error: invalid parameters: {_audit_error}", file=sys.stderr)
        sys.exit(2)
    STAGED.ensure()  # the run settings the jobs read
    # After the lock: this run's per-rule files, and those of phases no running Snakemake uses.
    workflow_params.refresh(
        PARAM_TEXTS, ours={str(f) for f in workflow.persistence.all_inputfiles()}
        | {str(f) for f in workflow.persistence.all_outputfiles()},
        locked=workflow_params.locked_paths())
    # Temporary directories of jobs killed with an earlier Snakemake (their pids are gone).
    recovery.sweep_tree(RESULTS)
    recovery.sweep_stale(Path(DATA_ROOT).parent, Path(DATA_ROOT).name)
    try:
        _line = TRACKING.start(touch=workflow.touch)
    except TrackingStartError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if _line:
        print(_line, file=sys.stderr)


onstart:
    try:
        _start()
    except Exception as _e:
        # A full disk (a parameter file, the MLflow store): one line naming the path, exit 2.
        _full = diskfull.find(_e, RESULTS)
        if _full is None:
            raise
        print(f"error: {_full}", file=sys.stderr)
        sys.exit(2)


onsuccess:
    if _line := TRACKING.end(True, touch=workflow.touch):
        print(_line, file=sys.stderr)
    # Lineage stays true: record what this run produced in dvc.lock (never inside `dvc repro`).
    if not workflow.touch and not workflow.dryrun:
        from pipeline.lineage import record_after_snakemake
        _line = record_after_snakemake(".", PARAMS_SOURCE, workflow.dag_settings.targets)
        if _line:
            print(_line, file=sys.stderr)


onerror:
    if _line := TRACKING.end(False, touch=workflow.touch):
        print(_line, file=sys.stderr)


# Threads of a job: training jobs take run.train_threads, every other torch job run.threads,
# and jobs that only read and write files one.
TRAIN_THREADS = int(PARAMS["run"]["train_threads"])
JOB_THREADS = int(PARAMS["run"]["threads"])


# --- helpers of train.smk (here because `snakemake --lint` wants rule files without functions)
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
from pipeline.search.latency import PLANNED_FP_ENV
OBJECTIVE = PARAMS["search"]["objective"]
try:
    LATENCY_FP = plan.planned_fingerprint(os.environ.get(PLANNED_FP_ENV), JOB_THREADS)
except plan.PlanError as e:
    raise WorkflowError(str(e))
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
REPORT_TARGETS = plan.report_targets()


def final_targets():
    """The default rule's targets (pipeline.plan.final_targets)."""
    return plan.final_targets(PARAMS, FINETUNE_MODELS)


# --- scale-out: the launcher, the per-job device pool (pipeline.plan), checked at parse time, so a
# launcher that cannot start stops the run before any job starts, with one line naming the key.
try:
    LAUNCHER = plan.parse_launcher(PARAMS["run"]["launcher"], f"invalid parameters: {PARAMS_SOURCE}")
    DEVICE_IDS = plan.device_ids(PARAMS["run"])
    plan.check_pool(LAUNCHER, DEVICE_IDS, f"invalid parameters: {PARAMS_SOURCE}")
except plan.PlanError as e:
    raise WorkflowError(str(e))
# An environment variable, so that switching the launcher or the pool reruns nothing.
os.environ.update(SCALENAS_LAUNCHER=LAUNCHER.command,
                  SCALENAS_DEVICE_WRAP=plan.device_wrap(paths.DEVICE_POOL, DEVICE_IDS))


def gpus(distributed=False):
    """`resources: gpu=` of a job (pipeline.plan.gpus)."""
    return plan.gpus(distributed, LAUNCHER, DEVICE_IDS, PARAMS["run"]["device"])


# --- every training batch against its split (issue 21), before any training job ----------------
# Now, for a task whose manifest is up to date; else in its prepare job, which counts the splits
# and reads the batches from the run settings.
from pipeline.data import batches as train_batches
BATCH_USES = train_batches.uses(PARAMS, TASKS, LAUNCHER.nproc, trained=TRAINED_TASKS,
                                teacher=[t for t in TRAINED_TASKS if _needs_teacher(t)])
_DATA_CURRENT = not BUILTIN or workflow_params.published(param_file("data", None), PARAM_TEXTS)
for _task in TASKS:
    try:
        train_batches.check_manifest(_task, BATCH_USES, manifest(_task),
                                     json.loads(PARAM_TEXTS[param_file("prepare", _task)])["params"],
                                     data_current=_DATA_CURRENT)
    except InputError as e:
        raise WorkflowError(f"invalid parameters: {PARAMS_SOURCE}: {e}")

# Execution settings (device, threads, tracking; the batches above): read by the jobs, never an
# input, so changing them reruns nothing; a content-addressed copy, so a run in progress keeps its
# own. Staged with the parameter copies, after every check above.
STAGED = workflow_params.Staged(PARAM_TEXTS, workflow_params.settings_text(
    PARAMS, PARAMS_SOURCE, train_batches.to_json(BATCH_USES)))
os.environ[workflow_params.RUN_SETTINGS_ENV] = STAGED.settings_path
