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

wildcard_constraints:
    step=r"sample|random|evolve/gen_\d+",
    gen=r"\d+",
    shard=r"\d+",


rule search_sample:
    input:
        params=param_file("search_random"),
    output:
        f"{SEARCH}/sample/candidates/candidates.json",
    log:
        f"{LOGS}/{{task}}/search/sample_candidates.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("sample", "--params {input.params}", "--task {wildcards.task}",
                  f"--out {SEARCH}/sample/candidates")


rule search_random_baseline:
    input:
        params=param_file("search_evolution"),
        pool=merged("sample"),
    output:
        f"{SEARCH}/random/candidates/candidates.json",
    log:
        f"{LOGS}/{{task}}/search/random_candidates.log",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("random_search", "--params {input.params}", "--task {wildcards.task}",
                  "--pool {input.pool}", f"--out {SEARCH}/random/candidates")


rule search_evolve:
    input:
        params=param_file("search_evolution"),
        pool=lambda wc: pool_before(int(wc.gen), wc.task),
        prev=lambda wc: ([f"{RESULTS}/{wc.task}/search/evolve/gen_{int(wc.gen) - 1}/candidates/state.json"]
                         if int(wc.gen) > 1 else []),
    output:
        candidates=f"{SEARCH}/evolve/gen_{{gen}}/candidates/candidates.json",
        state=f"{SEARCH}/evolve/gen_{{gen}}/candidates/state.json",
    log:
        f"{LOGS}/{{task}}/search/evolve_gen_{{gen}}.log",
    params:
        prev=lambda wc, input: f"--prev-state {input.prev[0]}" if input.prev else "",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("evolve", "--params {input.params}", "--task {wildcards.task}",
                  "--generation {wildcards.gen}", "--pool {input.pool}", "{params.prev}",
                  f"--out {SEARCH}/evolve/gen_{{wildcards.gen}}/candidates")


rule search_shard:
    input:
        params=lambda wc: param_file(search_phase(wc.step), wc.task),
        candidates=f"{SEARCH}/{{step}}/candidates/candidates.json",
        checkpoint=SUPERNET_CKPT,
        manifest=manifest(),
    output:
        f"{SEARCH}/{{step}}/shard_{{shard}}/rows.jsonl",
        f"{SEARCH}/{{step}}/shard_{{shard}}/calibration.json",
    log:
        f"{LOGS}/{{task}}/search/{{step}}/shard_{{shard}}.log",
    params:
        phase=lambda wc: search_phase(wc.step),
    threads: SEARCH_THREADS
    resources:
        gpu=gpus(),
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_shard", "--phase {params.phase}", "--params {input.params}",
                  "--task {wildcards.task}", "--candidates {input.candidates}",
                  "--shard {wildcards.shard}", "--checkpoint {input.checkpoint}",
                  "--manifest {input.manifest}", "--label {wildcards.step}/shard{wildcards.shard}",
                  f"--out {SEARCH}/{{wildcards.step}}/shard_{{wildcards.shard}}", gpu=True)


rule search_merge:
    input:
        params=lambda wc: param_file(search_phase(wc.step), wc.task),
        candidates=f"{SEARCH}/{{step}}/candidates/candidates.json",
        shards=_shard_dirs,
        pool=_merge_pool,
    output:
        results=f"{SEARCH}/{{step}}/merged/results.csv",
        timings=f"{SEARCH}/{{step}}/merged/timings.csv",
        front=f"{SEARCH}/{{step}}/merged/front.csv",
        plot=f"{SEARCH}/{{step}}/merged/front.png",
        summary=f"{SEARCH}/{{step}}/merged/summary.json",
    log:
        f"{LOGS}/{{task}}/search/{{step}}/merge.log",
    params:
        phase=lambda wc: search_phase(wc.step),
        shard_dirs=lambda wc, input: " ".join(os.path.dirname(p) for p in input.shards),
        pool=lambda wc, input: f"--pool {' '.join(input.pool)}" if input.pool else "",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_merge", "--phase {params.phase}", "--params {input.params}",
                  "--task {wildcards.task}", "--candidates {input.candidates}",
                  "--shards {params.shard_dirs}", "{params.pool}",
                  "--label {wildcards.step}", f"--out {SEARCH}/{{wildcards.step}}/merged")


rule search_summary:
    input:
        params=param_file("search_evolution"),
        sample=merged("sample"),
        random=merged("random") if GENERATIONS > 0 else [],
        gens=[merged(f"evolve/gen_{g}") for g in range(1, GENERATIONS + 1)],
        states=[f"{SEARCH}/evolve/gen_{g}/candidates/state.json"
                for g in range(1, GENERATIONS + 1)],
    output:
        all=f"{SEARCH}/final/all.csv",
        front=f"{SEARCH}/final/front.csv",
        plot=f"{SEARCH}/final/front.png",
        summary=f"{SEARCH}/final/summary.json",
    log:
        f"{LOGS}/{{task}}/search/summary.log",
    params:
        random=lambda wc, input: f"--random {input.random}" if input.random else "",
        gens=lambda wc, input: f"--generations {' '.join(input.gens)}" if input.gens else "",
        states=lambda wc, input: f"--states {' '.join(input.states)}" if input.states else "",
    threads: 1
    conda:
        CONDA_ENV
    shell:
        stage_cmd("search_summary", "--params {input.params}", "--task {wildcards.task}",
                  "--sample {input.sample}", "{params.random}", "{params.gens}", "{params.states}",
                  f"--out {SEARCH}/final")


rule search_random_all:
    input:
        expand(merged("sample", "{task}"), task=TASKS),


rule search_evolution_all:
    input:
        expand(f"{RESULTS}/{{task}}/search/final/summary.json", task=TASKS),


ALL_TARGETS += expand(f"{RESULTS}/{{task}}/search/final/summary.json", task=TASKS)
