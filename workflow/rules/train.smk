# Phases "teacher" + "supernet": the largest architecture trained as a plain network, then the
# one-shot supernet (grouped sampling, sandwich rule, initialised from and distilled towards the
# teacher).
#
#   results/{task}/teacher/model.pt     weights + meta (task, width, architecture)
#   results/{task}/teacher/metrics.json search-split score vs the trivial predictor, losses
#   results/{task}/supernet/model.pt    the supernet's weights (what the search phases read)
#   results/{task}/supernet/metrics.json largest / smallest subnet (BN-calibrated) vs trivial
# Checkpoints live in results/{task}/.<phase>.work/train-<params hash>/checkpoints/ and survive
# kills and failures: rerunning the same job resumes where it stopped (bitwise on CPU).
# On GPUs: run the same stage command under `torchrun --nproc_per_node N` (see README).

rule teacher:
    input:
        params=param_file("teacher"),
        manifest=manifest(),
        init=lambda wc: init_input("teacher", wc.task),
    output:
        model=teacher_model(),
        metrics=f"{paths.teacher_dir()}/metrics.json",
        summary=f"{paths.teacher_dir()}/train_summary.json",
    log:
        log_file("teacher"),
    threads: TRAIN_THREADS
    resources:
        gpu=gpus(distributed=True),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("teacher", "--params {input.params}", "--task {wildcards.task}",
                  "--manifest {input.manifest}", f"--out {paths.teacher_dir()}",
                  distributed=True, gpu=True)


rule supernet:
    input:
        params=param_file("supernet"),
        manifest=manifest(),
        teacher=_teacher_input,
        init=lambda wc: init_input("supernet", wc.task),
    output:
        model=trained_supernet(),
        metrics=f"{paths.supernet_dir()}/metrics.json",
        summary=f"{paths.supernet_dir()}/train_summary.json",
    params:
        teacher=_teacher_arg,
    log:
        log_file("supernet"),
    threads: TRAIN_THREADS
    resources:
        gpu=gpus(distributed=True),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("supernet", "--params {input.params}", "--task {wildcards.task}",
                  "--manifest {input.manifest}", "{params.teacher}",
                  f"--out {paths.supernet_dir()}",
                  distributed=True, gpu=True)


rule teacher_all:
    input:
        expand(teacher_model("{task}"), task=TRAINED_TASKS),


rule supernet_all:
    input:
        [supernet_model(t) for t in TASKS],

