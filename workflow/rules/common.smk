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
from pipeline import tracking
from pipeline.paths import (RESULTS, RUN_SETTINGS, log_file, manifest, merged, param_file,
                            supernet_model, teacher_model)

envvars:
    "PATH",


# Jobs run `python` from the interpreter that runs Snakemake (the project's venv), found on PATH.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
CONDA_ENV = "../envs/scalenas.yaml"
ALL_TARGETS = []


def _params_source():
    """The parameter file: --config params=FILE, else the last --configfile, else the default."""
    if config.get("params"):
        return str(config["params"])
    if workflow.overwrite_configfiles:
        return str(list(workflow.overwrite_configfiles)[-1])
    return str(pconfig.DEFAULT_PARAMS)


PARAMS_SOURCE = _params_source()
try:
    PARAMS = pconfig.load_resolved(PARAMS_SOURCE)
    pconfig.check_paths(PARAMS, PARAMS_SOURCE)
except pconfig.ConfigError as e:
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
for _phase, _keys in pconfig.PHASES.items():
    if any("{task}" in k for k in _keys):
        for _task in TASKS:
            write_if_changed(param_file(_phase, _task),
                             json.dumps(_phase_doc(_phase, _task), indent=1, sort_keys=True) + "\n")
    else:
        write_if_changed(param_file(_phase, None),
                         json.dumps(_phase_doc(_phase, None), indent=1, sort_keys=True) + "\n")

# Execution settings (device, threads, tracking): read by the jobs, never an input, so changing
# them reruns nothing.
write_if_changed(RUN_SETTINGS, json.dumps(
    {"source": PARAMS_SOURCE, "run": PARAMS["run"], "tracking": PARAMS["tracking"]},
    indent=1, sort_keys=True) + "\n")


# Launcher of distributed-capable stages (run.launcher, e.g. "torchrun --nproc_per_node 8"): an
# environment variable, so that switching it reruns nothing.
os.environ.update(SCALENAS_LAUNCHER=PARAMS["run"]["launcher"])


def stage_cmd(module, *args, distributed=False):
    """Shell command of a stage job: threads pinned to the rule's `threads`, output to the log.

    `args` are appended verbatim (they may use {input}, {output}, {wildcards}, {params}).
    `distributed=True` starts the stage with run.launcher (python or torchrun) instead of python."""
    # PASSIVE: idle OpenMP threads sleep instead of spinning; with two torch jobs on 2 cores a
    # spinning pool slowed training steps tenfold (measured).
    env = ("OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
           "OMP_WAIT_POLICY=PASSIVE")
    launcher = "$SCALENAS_LAUNCHER" if distributed else "python"
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


onstart:
    if _TRACK and not workflow.touch:
        tracking.start_pipeline(
            PARAMS["run"]["name"],
            uri=tracking.resolve_uri(PARAMS["tracking"]["uri"]),
            experiment=os.environ.get(tracking.EXPERIMENT_ENV) or PARAMS["tracking"]["experiment"],
            params=PARAMS,
            tags={tracking.TAG_PARAMS_HASH: pconfig.params_hash(PARAMS),
                  "scalenas.params_file": PARAMS_SOURCE})


onsuccess:
    if _TRACK and not workflow.touch:
        tracking.end_pipeline(True)


onerror:
    if _TRACK and not workflow.touch:
        tracking.end_pipeline(False)


# --- helpers of train.smk (here because `snakemake --lint` wants rule files without functions)
TRAIN_THREADS = int(PARAMS["run"]["train_threads"])
def _needs_teacher(task):
    s = PARAMS["supernet"][task]
    return bool(s["init_from_teacher"]) or float(s["kd_ratio"]) > 0


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


# --- helpers of finetune.smk (here because `snakemake --lint` wants rule files without functions)
from pipeline.report.select import SelectionError, specs_from_params
def _finetune_specs(task):
    try:
        return specs_from_params(PARAMS["finetune"][task], f"{PARAMS_SOURCE}: finetune.{task}")
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
