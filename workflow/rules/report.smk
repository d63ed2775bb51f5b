# Phase "report": one job over every task. Pareto figure per task (candidates by stage and
# generation, final front, fine-tuned models before -> after, HRNet reference), the table of final
# models, metrics.json (dvc metrics) and plot data (dvc plots); results/report/REPORT.md links all.
# Needs finetune.smk (FINETUNE_MODELS, finetune_record) included before it.

rule report:
    input:
        params=param_file("report", None),
        candidates=[_final(t, "all.csv") for t in TASKS],
        fronts=[_final(t, "front.csv") for t in TASKS],
        summaries=[_final(t, "summary.json") for t in TASKS],
        selections=[f"{RESULTS}/{t}/finetune/select/selection.json" for t in TASKS],
        records=[rec for t in TASKS for rec in finetune_records(t)],
    output:
        REPORT_OUTPUTS,
        [f"{REPORT}/{t}_pareto.png" for t in TASKS],
        [f"{REPORT}/plots/{t}_candidates.csv" for t in TASKS],
        [f"{REPORT}/plots/{t}_front.csv" for t in TASKS],
    log:
        f"{LOGS}/report.log",
    params:
        pairs=" ".join(
            f"--candidates {t}={_final(t, 'all.csv')} --front {t}={_final(t, 'front.csv')} "
            f"--summary {t}={_final(t, 'summary.json')} "
            f"--selection {t}={RESULTS}/{t}/finetune/select/selection.json" for t in TASKS),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("report", "--params {input.params}", "{params.pairs}",
                  "--records {input.records}", f"--out {REPORT}")


rule report_all:
    input:
        f"{REPORT}/REPORT.md",


ALL_TARGETS += [f"{REPORT}/REPORT.md"]
