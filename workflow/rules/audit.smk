# Phase "audit" (target audit_all; not part of the default target, see docs/audit.md): does the
# supernet rank architectures as training them stand-alone does?
#
#   results/{task}/audit_select/audit.json          the audited networks (K ranked + comparisons)
#   results/{task}/audit_train/{slot}/seed_{seed}/  one stand-alone training each (result.json);
#                                                   checkpoints in .seed_{seed}.work/ (resume)
#   results/{task}/audit/ranking.json               scores, tau/rho with intervals, baselines
#   results/{task}/audit/ranking.png, ranking.md    the scatter figure and the table
#   results/report/AUDIT.md                         every audited task on one page
# Needs finetune.smk (FINETUNE_MODELS, finetune_records) included before it.
from pipeline.audit.plan import plan_or_error

# Parameters that cannot be audited (K larger than the pool, a task the run does not search) stop
# a run that asks for the audit in onstart (common.smk), before any job; other runs go on.
AUDIT, AUDIT_ERROR = plan_or_error(PARAMS, PARAMS_SOURCE, FINETUNE_MODELS)

wildcard_constraints:
    slot=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed=r"\d+",


rule audit_choose:
    input:
        params=param_file("audit"),
        checkpoint=lambda wc: supernet_model(wc.task),
        candidates=paths.final("all.csv"),
        selection=paths.selection(),
        manifest=manifest(),
    output:
        paths.audit_choice(),
    log:
        log_file("audit/choose"),
    threads: JOB_THREADS
    resources:
        gpu=gpus(),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("audit", "--choose", "--params {input.params}", "--task {wildcards.task}",
                  "--checkpoint {input.checkpoint}", "--candidates {input.candidates}",
                  "--selection {input.selection}", "--manifest {input.manifest}",
                  "--label choose", f"--out {paths.audit_choice_dir()}", gpu=True)


# One job per network and seed: independent, one device each from the pool, resumable.
rule audit_train:
    input:
        params=param_file("audit"),
        choice=paths.audit_choice(),
        manifest=manifest(),
    output:
        paths.audit_result(),
    log:
        log_file("audit/{slot}_seed{seed}"),
    threads: TRAIN_THREADS
    resources:
        gpu=gpus(),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("audit", "--slot {wildcards.slot}", "--seed {wildcards.seed}",
                  "--choice {input.choice}", "--params {input.params}",
                  "--task {wildcards.task}", "--manifest {input.manifest}",
                  "--label {wildcards.slot}-s{wildcards.seed}",
                  f"--out {paths.audit_train_dir()}", gpu=True)


rule audit_rank:
    input:
        params=param_file("audit"),
        choice=paths.audit_choice(),
        manifest=manifest(),
        results=lambda wc: [paths.audit_result(wc.task, s, sd) for s in AUDIT[wc.task]["slots"]
                            for sd in AUDIT[wc.task]["seeds"]],
        records=lambda wc: finetune_records(wc.task),
    output:
        ranking=paths.audit_file("ranking.json"),
        table=paths.audit_file("ranking.md"),
        figure=report(paths.audit_file("ranking.png"), caption="../report/audit.rst",
                      category="Audit", subcategory="{task}",
                      labels={"task": "{task}", "figure": "ranking audit"}),
    log:
        log_file("audit/rank"),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("audit", "--rank", "--params {input.params}", "--task {wildcards.task}",
                  "--choice {input.choice}", "--results {input.results}",
                  "--records {input.records}", "--manifest {input.manifest}", "--label rank",
                  f"--out {paths.audit_dir()}")


# Every audited task on one page beside REPORT.md (pipeline/audit/summary.py).
rule audit_report:
    input:
        [paths.audit_file("ranking.json", t) for t in AUDIT],
    output:
        paths.report_file("AUDIT.md"),
    log:
        log_file("audit/report", None),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.audit.summary --out {output} {input} > {log} 2>&1"


rule audit_all:
    input:
        [paths.audit_file("ranking.json", t) for t in AUDIT],
        paths.report_file("AUDIT.md"),
