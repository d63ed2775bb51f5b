# Phase "data" + "prepare": the built-in data (when data.builtin), then per task the dataset check
# and the deterministic train/search/val split lists.

if BUILTIN:

    rule builtin_data:
        input:
            params=param_file("data", None),
        output:
            marker=f"{DATA_ROOT}/SYNTH.json",
            seg=directory(f"{DATA_ROOT}/cityscapes"),
            pose=directory(f"{DATA_ROOT}/coco"),
        log:
            f"{LOGS}/builtin_data.log",
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
        f"{LOGS}/{{task}}/prepare.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("prepare", "--params {input.params}", "--task {wildcards.task}",
                  f"--out {RESULTS}/{{wildcards.task}}/data")


rule prepare_all:
    input:
        expand(manifest("{task}"), task=TASKS),


ALL_TARGETS += expand(manifest("{task}"), task=TASKS)
