# Phase "finetune": choose the final models from the search's final Pareto front (FLOPs budgets,
# positions on the front, or architecture files: finetune.<task> in the parameters), then
# fine-tune each one as a standalone network with the supernet's weights.
#
#   results/{task}/finetune/select/selection.json   the chosen architectures + HRNet reference
#   results/{task}/finetune/{model}/finetune.json   val metric inherited / fine-tuned / reloaded
#   results/{task}/finetune/{model}/model/          weights.pt, arch.json, model.json, deploy/optimized.ts(.json)
# Training checkpoints live in results/{task}/finetune/.{model}.work/ (kept across kills).
wildcard_constraints:
    model=r"(?!select$)[A-Za-z0-9][A-Za-z0-9_.-]*",


rule finetune_select:
    input:
        params=param_file("finetune"),
        checkpoint=lambda wc: supernet_model(wc.task),
        front=paths.final("front.csv"),
        manifest=manifest(),
        archs=_arch_inputs,
        latency=latency_input,
    output:
        paths.selection(),
    log:
        log_file("finetune/select"),
    params:
        latency=latency_arg,
    threads: JOB_THREADS
    resources:
        gpu=gpus(),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("finetune", "--select", "--params {input.params}", "--task {wildcards.task}",
                  "--checkpoint {input.checkpoint}", "--front {input.front}",
                  "--manifest {input.manifest}", "--label select", "{params.latency}",
                  f"--out {paths.selection_dir()}", gpu=True)


rule finetune:
    input:
        params=param_file("finetune"),
        checkpoint=lambda wc: supernet_model(wc.task),
        selection=paths.selection(),
        manifest=manifest(),
        init=lambda wc: init_input("finetune", wc.task),
    output:
        record=paths.finetune_record(),
        model=f"{paths.finetune_model_dir()}/model/model.json",
    log:
        log_file("finetune/{model}"),
    threads: TRAIN_THREADS
    resources:
        gpu=gpus(distributed=True),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("finetune", "--model {wildcards.model}", "--params {input.params}",
                  "--task {wildcards.task}", "--checkpoint {input.checkpoint}",
                  "--selection {input.selection}", "--manifest {input.manifest}",
                  "--label {wildcards.model}", f"--out {paths.finetune_model_dir()}",
                  distributed=True, gpu=True)


rule finetune_all:
    input:
        [rec for task in TASKS for rec in finetune_records(task)],
