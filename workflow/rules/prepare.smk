# Phase "data" + "prepare": the built-in data (when data.builtin), then per task the dataset check
# and the deterministic train/search/val split lists.

if BUILTIN:

    rule builtin_data:
        input:
            params=param_file("data", None),
        output:
            marker=paths.synth_record(DATA_ROOT),
            seg=directory(f"{DATA_ROOT}/cityscapes"),
            pose=directory(f"{DATA_ROOT}/coco"),
        log:
            log_file("builtin_data", None),
        priority: 10  # before any training job, as prepare (below)
        threads: 1
        conda:
            CONDA_ENV
        shell:
            stage_cmd("prepare", "--phase data", "--params {input.params}", f"--out {DATA_ROOT}")


rule prepare:
    input:
        params=param_file("prepare"),
        data=lambda wc: data_marker(wc.task),
    output:
        manifest=manifest(),
    log:
        log_file("prepare"),
    # Before any training job that is ready too: prepare checks every task's training batches
    # against its splits (pipeline/data/batches.py), so a refused batch stops the run first.
    priority: 10
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("prepare", "--params {input.params}", "--task {wildcards.task}",
                  f"--out {paths.data_dir()}")


rule prepare_all:
    input:
        expand(manifest("{task}"), task=TASKS),
