"""Every artifact of the pipeline, named once: the workflow's rules and the stages use these.

Each function returns a path relative to the working directory (the repository root); called
without arguments, the task (and step, shard, generation, model) are Snakemake wildcard patterns
(``results/{task}/supernet/model.pt``), so a rule may use the same call as its input or output.
"""
from __future__ import annotations

RESULTS = "results"
PARAMS_DIR = f"{RESULTS}/params"
LOGS = f"{RESULTS}/logs"
#: Lock files of the per-job device pool (pipeline/devices.py); never a rule input.
DEVICE_POOL = f"{RESULTS}/.devices"

#: File names inside the stage output folders.
MODEL_FILE = "model.pt"            # teacher and supernet weights + meta
MANIFEST_FILE = "manifest.json"
SYNTH_RECORD = "SYNTH.json"        # the generator's record of the built-in data
RESULTS_TABLE = "results.csv"

T, STEP, SHARD, GEN, MODEL = "{task}", "{step}", "{shard}", "{gen}", "{model}"


# -- parameters and logs --------------------------------------------------------------------------

def param_file(phase: str, task: str | None = T) -> str:
    """The per-rule parameter file of ``phase`` (one file for a task-independent phase)."""
    return f"{PARAMS_DIR}/{phase}.json" if task is None else f"{PARAMS_DIR}/{task}/{phase}.json"


def log_file(name: str, task: str | None = T) -> str:
    return f"{LOGS}/{name}.log" if task is None else f"{LOGS}/{task}/{name}.log"


# -- data -----------------------------------------------------------------------------------------

def synth_record(data_root: str) -> str:
    """The built-in data's record (its presence marks generated data)."""
    return f"{data_root}/{SYNTH_RECORD}"


def data_dir(task: str = T) -> str:
    return f"{RESULTS}/{task}/data"


def manifest(task: str = T) -> str:
    return f"{data_dir(task)}/{MANIFEST_FILE}"


# -- training -------------------------------------------------------------------------------------

def teacher_dir(task: str = T) -> str:
    return f"{RESULTS}/{task}/teacher"


def teacher_model(task: str = T) -> str:
    return f"{teacher_dir(task)}/{MODEL_FILE}"


def supernet_dir(task: str = T) -> str:
    return f"{RESULTS}/{task}/supernet"


def trained_supernet(task: str = T) -> str:
    """The supernet the supernet rule trains."""
    return f"{supernet_dir(task)}/{MODEL_FILE}"


def supernet_model(task: str, checkpoint: str | None = None) -> str:
    """What the search and the fine-tuning read: ``supernet.<task>.checkpoint`` when given (no
    teacher or supernet job then), else the trained supernet."""
    return checkpoint or trained_supernet(task)


# -- search ---------------------------------------------------------------------------------------

def search_dir(task: str = T) -> str:
    return f"{RESULTS}/{task}/search"


def candidates_dir(step: str = STEP, task: str = T) -> str:
    return f"{search_dir(task)}/{step}/candidates"


def candidates(step: str = STEP, task: str = T) -> str:
    return f"{candidates_dir(step, task)}/candidates.json"


def evolve_step(gen: int | str = GEN) -> str:
    return f"evolve/gen_{gen}"


def evolve_state(gen: int | str = GEN, task: str = T) -> str:
    """Generation ``gen``'s generator state (what generation gen+1 starts from)."""
    return f"{candidates_dir(evolve_step(gen), task)}/state.json"


def shard_dir(step: str = STEP, shard: int | str = SHARD, task: str = T) -> str:
    return f"{search_dir(task)}/{step}/shard_{shard}"


def merged_dir(step: str = STEP, task: str = T) -> str:
    return f"{search_dir(task)}/{step}/merged"


def merged(step: str = STEP, task: str = T) -> str:
    """The merged results table of a search step (sample, random, evolve/gen_<g>)."""
    return f"{merged_dir(step, task)}/{RESULTS_TABLE}"


#: File name of a latency lookup table (pipeline.search.latency) inside its folder.
LATENCY_TABLE = "table.json"
FINGERPRINT = "{fingerprint}"


def latency_dir(fingerprint: str = FINGERPRINT, task: str = T) -> str:
    """The latency lookup table's folder (search.objective latency): one per task and device,
    ``fingerprint`` being :func:`pipeline.search.latency.device_info`'s (CPU, logical CPUs,
    threads, torch version), so tables of different machines never replace each other."""
    return f"{search_dir(task)}/latency/{fingerprint}"


def latency_table(fingerprint: str = FINGERPRINT, task: str = T) -> str:
    return f"{latency_dir(fingerprint, task)}/{LATENCY_TABLE}"


def final_dir(task: str = T) -> str:
    return f"{search_dir(task)}/final"


def final(name: str, task: str = T) -> str:
    """A file of the search's final folder: all.csv, front.csv, front.png, summary.json."""
    return f"{final_dir(task)}/{name}"


# -- fine-tuning and report -----------------------------------------------------------------------

def finetune_dir(task: str = T) -> str:
    return f"{RESULTS}/{task}/finetune"


def selection_dir(task: str = T) -> str:
    return f"{finetune_dir(task)}/select"


def selection(task: str = T) -> str:
    return f"{selection_dir(task)}/selection.json"


def finetune_model_dir(task: str = T, model: str = MODEL) -> str:
    return f"{finetune_dir(task)}/{model}"


def finetune_record(task: str = T, model: str = MODEL) -> str:
    return f"{finetune_model_dir(task, model)}/finetune.json"


REPORT = f"{RESULTS}/report"


def report_file(name: str) -> str:
    return f"{REPORT}/{name}"


# -- ranking audit --------------------------------------------------------------------------------

SLOT, SEED = "{slot}", "{seed}"


def audit_choice_dir(task: str = T) -> str:
    """The audit's choice of networks (``audit.json``, ``archs/<slot>.json``)."""
    return f"{RESULTS}/{task}/audit_select"


def audit_choice(task: str = T) -> str:
    return f"{audit_choice_dir(task)}/audit.json"


def audit_train_dir(task: str = T, slot: str = SLOT, seed: int | str = SEED) -> str:
    """One stand-alone training of the audit (its checkpoints: ``.seed_<seed>.work`` beside)."""
    return f"{RESULTS}/{task}/audit_train/{slot}/seed_{seed}"


def audit_result(task: str = T, slot: str = SLOT, seed: int | str = SEED) -> str:
    return f"{audit_train_dir(task, slot, seed)}/result.json"


def audit_dir(task: str = T) -> str:
    """The audit's ranking: ``ranking.json``, ``ranking.md``, ``ranking.png``."""
    return f"{RESULTS}/{task}/audit"


def audit_file(name: str, task: str = T) -> str:
    return f"{audit_dir(task)}/{name}"
