# Phase "report": one job over every task. Pareto figure per task (candidates by stage and
# generation, final front, fine-tuned models before -> after, HRNet reference), the table of final
# models, metrics.json (dvc metrics) and plot data (dvc plots); results/report/REPORT.md links all.
# Outputs marked report(...) go into Snakemake's report (`snakemake --report report.zip`; captions
# in workflow/report/), with the final models, parameters and software as HTML pages.
# Needs finetune.smk (FINETUNE_MODELS, finetune_record) included before it.

rule report:
    input:
        params=param_file("report", None),
        candidates=[paths.final("all.csv", t) for t in TASKS],
        fronts=[paths.final("front.csv", t) for t in TASKS],
        summaries=[paths.final("summary.json", t) for t in TASKS],
        selections=[paths.selection(t) for t in TASKS],
        records=[rec for t in TASKS for rec in finetune_records(t)],
        param_files=PARAM_FILES,
    output:
        REPORT_OUTPUTS,
        [report(paths.report_file(f"{t}_pareto.png"), caption="../report/pareto.rst",
                category="Report", subcategory=t, labels={"task": t, "figure": "Pareto front"})
         for t in TASKS],
        [paths.report_file(f"plots/{t}_candidates.csv") for t in TASKS],
        [paths.report_file(f"plots/{t}_front.csv") for t in TASKS],
        report(paths.report_file("final_models.html"), caption="../report/final_models.rst",
               category="Report", subcategory="final models", labels={"table": "final models"}),
        report(paths.report_file("parameters.html"), caption="../report/parameters.rst",
               category="Run", subcategory="parameters", labels={"page": "parameters"}),
        report(paths.report_file("software.html"), caption="../report/software.rst",
               category="Run", subcategory="software", labels={"page": "software versions"}),
    log:
        log_file("report", None),
    params:
        pairs=" ".join(
            f"--candidates {t}={paths.final('all.csv', t)} --front {t}={paths.final('front.csv', t)} "
            f"--summary {t}={paths.final('summary.json', t)} "
            f"--selection {t}={paths.selection(t)}" for t in TASKS),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("report", "--params {input.params}", "{params.pairs}",
                  "--records {input.records}", "--param-files {input.param_files}",
                  f"--out {paths.REPORT}")


rule report_all:
    input:
        REPORT_TARGETS,
