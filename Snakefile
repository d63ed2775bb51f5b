# ScaleNAS pipeline. Thin on purpose: every phase lives in workflow/rules/<phase>.smk, included in
# pipeline order; common.smk holds parameters, per-rule parameter files, MLflow hooks and helpers.
# Parameters: `snakemake --cores 2 --config params=params/<file>.yaml` (default params/default.yaml)
# or `--configfile params/<file>.yaml`. See README.md for the rules of use with DVC.
from pathlib import Path


include: "workflow/rules/common.smk"


# Every phase rule file, in pipeline order; a new phase only adds workflow/rules/<phase>.smk
# (files not in ORDER come after, sorted by name).
ORDER = ("prepare", "train", "teacher", "supernet", "search", "finetune", "report")
_rules = sorted((Path(workflow.basedir) / "workflow" / "rules").glob("*.smk"))
_names = [p.stem for p in _rules if p.stem != "common"]
for _phase in sorted(_names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):

    include: f"workflow/rules/{_phase}.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
