# Per-rule parameter files: results/params/{task}/<phase>.json and results/params/<phase>.json,
# published from the copies staged when the job graph is built (pipeline/workflow_params.py). A
# job, so the file changes only in a real run that holds Snakemake's lock, and only when the
# phase's values did; local, as it only copies a small file.

localrules:
    param_file,
    param_file_global,


rule param_file:
    input:
        lambda wc: STAGED.copy(param_file(wc.phase, wc.task)),
    output:
        param_file("{phase}"),
    log:
        log_file("params/{phase}"),
    priority: 10  # before the jobs that read them, as prepare (prepare.smk)
    conda:
        CONDA_ENV
    wildcard_constraints:
        phase="|".join(p for p in pconfig.PHASES if workflow_params.per_task(p)),
    shell:
        "python -m pipeline.workflow_params {input} {output} > {log} 2>&1"


rule param_file_global:
    input:
        lambda wc: STAGED.copy(param_file(wc.phase, None)),
    output:
        param_file("{phase}", None),
    log:
        log_file("params/{phase}", None),
    priority: 10  # before the jobs that read them, as prepare (prepare.smk)
    conda:
        CONDA_ENV
    wildcard_constraints:
        phase="|".join(p for p in pconfig.PHASES if not workflow_params.per_task(p)),
    shell:
        "python -m pipeline.workflow_params {input} {output} > {log} 2>&1"
