# ScaleNAS pipeline. Thin on purpose: every phase lives in workflow/rules/<phase>.smk, included
# below in pipeline order (a new phase adds its line); common.smk holds parameters, per-rule
# parameter files, MLflow hooks and input functions; pipeline/plan.py decides the launcher, devices,
# stage commands and the default targets; pipeline/paths.py names every artifact.
# Parameters: `snakemake --cores 2 --config params=params/<file>.yaml` (default params/default.yaml)
# or `--configfile params/<file>.yaml`. See README.md for the rules of use with DVC.
# Snakemake's report: `snakemake --report report.zip` (figures and tables marked report(...) in the
# rules, captions in workflow/report/, per-rule runtimes).
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/params.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/audit.smk"


rule all:
    default_target: True
    input:
        final_targets(),
