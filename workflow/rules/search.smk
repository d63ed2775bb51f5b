# Phases "search_random" + "search_evolution": BN-calibrated evaluation of candidates on the
# trained supernet, random sampling, a random-search baseline, and G generations of evolution.
#
# Every step is "candidate list -> K parallel shard jobs -> merge":
#   results/{task}/search/<step>/candidates/candidates.json   the fixed list (seeded), in shards
#   results/{task}/search/<step>/shard_{k}/rows.jsonl         one shard's rows (published when done;
#                                                             progress lives in .shard_{k}.work/ and
#                                                             survives a kill, so a rerun resumes)
#   results/{task}/search/<step>/merged/results.csv           one row per candidate (+ timings.csv,
#                                                             front.csv, front.png, summary.json)
# with <step> = sample | random | evolve/gen_<g>. Generation g's children come from everything
# evaluated before it (sampling + generations < g) and generation g-1's state.json (rng state).
# results/{task}/search/final/ holds all.csv, front.csv (the final Pareto front), summary.json
# (hypervolumes of sampling, random search and evolution at one fixed reference point).
#
# search.objective latency: the cost axis (fronts, hypervolumes, evolution bounds, fine-tune
# budgets) is the predicted latency of the table results/{task}/search/latency/<device>/table.json
# (rule latency_table, <device> = the fingerprint of the machine that plans the run, carried to
# every job in SCALENAS_LATENCY_FP); the shard, merge, evolve, summary and selection jobs take it
# as an input then, and only then, and check it against that fingerprint, not their node's.
# The front figures (front.png) are marked for Snakemake's report (category Search, per task).

wildcard_constraints:
    step=r"sample|random|evolve/gen_\d+",
    gen=r"\d+",
    shard=r"\d+",


# The table is measured where the run is planned (the device its fingerprint names), never on a
# cluster node: the stage refuses to measure a device other than the planned one.
localrules:
    latency_table,


rule latency_table:
    input:
        params=param_file("latency"),
    output:
        paths.latency_table(LATENCY_FP),
    log:
        log_file(f"search/latency_{LATENCY_FP}"),
    threads: JOB_THREADS
    conda:
        CONDA_ENV
    shell:
        stage_cmd("latency", "--params {input.params}", "--task {wildcards.task}",
                  f"--out {paths.latency_dir(LATENCY_FP)}")


rule search_sample:
    input:
        params=param_file("search_random"),
    output:
        paths.candidates("sample"),
    log:
        log_file("search/sample_candidates"),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("sample", "--params {input.params}", "--task {wildcards.task}",
                  f"--out {paths.candidates_dir('sample')}")


rule search_random_baseline:
    input:
        params=param_file("search_evolution"),
        pool=merged("sample"),
    output:
        paths.candidates("random"),
    log:
        log_file("search/random_candidates"),
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("random_search", "--params {input.params}", "--task {wildcards.task}",
                  "--pool {input.pool}", f"--out {paths.candidates_dir('random')}")


rule search_evolve:
    input:
        params=param_file("search_evolution"),
        pool=lambda wc: pool_before(int(wc.gen), wc.task),
        prev=lambda wc: ([paths.evolve_state(int(wc.gen) - 1, wc.task)]
                         if int(wc.gen) > 1 else []),
        latency=latency_input,
    output:
        candidates=paths.candidates(paths.evolve_step()),
        state=paths.evolve_state(),
    log:
        log_file("search/evolve_gen_{gen}"),
    params:
        prev=lambda wc, input: f"--prev-state {input.prev[0]}" if input.prev else "",
        latency=latency_arg,
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("evolve", "--params {input.params}", "--task {wildcards.task}",
                  "--generation {wildcards.gen}", "--pool {input.pool}", "{params.prev}",
                  "{params.latency}",
                  f"--out {paths.candidates_dir(paths.evolve_step())}")


rule search_shard:
    input:
        params=lambda wc: param_file(search_phase(wc.step), wc.task),
        candidates=paths.candidates(),
        checkpoint=lambda wc: supernet_model(wc.task),
        manifest=manifest(),
        latency=latency_input,
    output:
        f"{paths.shard_dir()}/rows.jsonl",
        f"{paths.shard_dir()}/calibration.json",
    log:
        log_file("search/{step}/shard_{shard}"),
    params:
        phase=lambda wc: search_phase(wc.step),
        latency=latency_arg,
    threads: JOB_THREADS
    resources:
        gpu=gpus(),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_shard", "--phase {params.phase}", "--params {input.params}",
                  "--task {wildcards.task}", "--candidates {input.candidates}",
                  "--shard {wildcards.shard}", "--checkpoint {input.checkpoint}",
                  "--manifest {input.manifest}", "--label {wildcards.step}/shard{wildcards.shard}",
                  "{params.latency}",
                  f"--out {paths.shard_dir()}", gpu=True)


rule search_merge:
    input:
        params=lambda wc: param_file(search_phase(wc.step), wc.task),
        candidates=paths.candidates(),
        shards=_shard_dirs,
        pool=_merge_pool,
        latency=latency_input,
    output:
        results=merged(),
        timings=f"{paths.merged_dir()}/timings.csv",
        front=f"{paths.merged_dir()}/front.csv",
        plot=report(f"{paths.merged_dir()}/front.png", caption="../report/search_front.rst",
                    category="Search", subcategory="{task}",
                    labels={"task": "{task}", "step": "{step}"}),
        summary=f"{paths.merged_dir()}/summary.json",
    log:
        log_file("search/{step}/merge"),
    params:
        phase=lambda wc: search_phase(wc.step),
        shard_dirs=lambda wc, input: " ".join(os.path.dirname(p) for p in input.shards),
        pool=lambda wc, input: f"--pool {' '.join(input.pool)}" if input.pool else "",
        latency=latency_arg,
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_merge", "--phase {params.phase}", "--params {input.params}",
                  "--task {wildcards.task}", "--candidates {input.candidates}",
                  "--shards {params.shard_dirs}", "{params.pool}", "{params.latency}",
                  "--label {wildcards.step}", f"--out {paths.merged_dir()}")


rule search_summary:
    input:
        params=param_file("search_evolution"),
        sample=merged("sample"),
        random=merged("random") if GENERATIONS > 0 else [],
        gens=[merged(paths.evolve_step(g)) for g in range(1, GENERATIONS + 1)],
        states=[paths.evolve_state(g) for g in range(1, GENERATIONS + 1)],
        latency=latency_input,
    output:
        all=paths.final("all.csv"),
        front=paths.final("front.csv"),
        plot=report(paths.final("front.png"), caption="../report/search_final.rst",
                    category="Search", subcategory="{task}",
                    labels={"task": "{task}", "step": "final front"}),
        summary=paths.final("summary.json"),
    log:
        log_file("search/summary"),
    params:
        random=lambda wc, input: f"--random {input.random}" if input.random else "",
        gens=lambda wc, input: f"--generations {' '.join(input.gens)}" if input.gens else "",
        states=lambda wc, input: f"--states {' '.join(input.states)}" if input.states else "",
        latency=latency_arg,
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_summary", "--params {input.params}", "--task {wildcards.task}",
                  "--sample {input.sample}", "{params.random}", "{params.gens}", "{params.states}",
                  "{params.latency}",
                  f"--out {paths.final_dir()}")


rule latency_all:
    input:
        [paths.latency_table(LATENCY_FP, t) for t in TASKS],


rule search_random_all:
    input:
        expand(merged("sample", "{task}"), task=TASKS),


rule search_evolution_all:
    input:
        [paths.final("summary.json", t) for t in TASKS],
