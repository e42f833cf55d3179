# Generation stage (docs/formats.md, "Generations"): per example, the greedy label list with per-step
# label distributions (first-token and whole-label), hidden states at the first label step (baseline),
# the token-level marginal (baseline, config generation.marginal), and the unary / pairwise prompts.
#   results/generations/{dataset}/{model}/{regime}/{prompting}/{subset}/seed{seed}.jsonl
#   results/generations/{dataset}/{model}/{regime}/baseline/{subset}/seed{seed}.hidden.safetensors
# One GPU job per (dataset, model, regime, prompting mode) writes every subset of its mode for every
# seed, loading the model once (labeldist.batched.generate_subsets; docs/study_grid.md). Output keys are
# records__{subset}__{seed} (and hidden__{subset}__{seed}).
# Input functions live in common.smk; resource lambdas here (`snakemake --lint` flags files that mix
# `def`s and rules).
from labeldist.batched import gpu_resource

GENERATION_PARAMS = {
    "generation": config["generation"],
    "device": config["device"],
}


# baseline: records and the hidden states the probes read, every baseline subset
rule generate_baseline:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        **{
            f"records__{s}__{seed}": generation_file("{dataset}", "{model}", "{regime}", "baseline", s, seed)
            for s in generation_subsets("baseline")
            for seed in SEEDS
        },
        **{
            f"hidden__{s}__{seed}": hidden_file("{dataset}", "{model}", "{regime}", s, seed)
            for s in generation_subsets("baseline")
            for seed in SEEDS
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/baseline.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/baseline.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, "baseline", s)
                for s in generation_subsets("baseline")
            )
            * len(SEEDS),
            attempt,
        ),
    params:
        **GENERATION_PARAMS,
        prompting="baseline",
        prompt=get_prompt_cfg,
        model=get_model_cfg,
    script:
        "../scripts/generate.py"


# unary and pairwise: records of subsets main and dev
rule generate:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        **{
            f"records__{s}__{seed}": generation_file("{dataset}", "{model}", "{regime}", "{prompting}", s, seed)
            for s in generation_subsets("unary")
            for seed in SEEDS
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}.tsv"
    wildcard_constraints:
        prompting="unary|pairwise",
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, wildcards.prompting, s)
                for s in generation_subsets(wildcards.prompting)
            )
            * len(SEEDS),
            attempt,
        ),
    params:
        **GENERATION_PARAMS,
        prompting=lambda wildcards: wildcards.prompting,
        prompt=get_prompt_cfg,
        model=get_model_cfg,
    script:
        "../scripts/generate.py"


# the multi-label in-context sweep: records of subset main
rule generate_icl_sweep:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        **{
            f"records__{s}__{seed}": generation_file("{dataset}", "{model}", "{regime}", "icl_sweep", s, seed)
            for s in generation_subsets("icl_sweep")
            for seed in SEEDS
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/icl_sweep.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/icl_sweep.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, "icl_sweep", s)
                for s in generation_subsets("icl_sweep")
            )
            * len(SEEDS),
            attempt,
        ),
    params:
        **GENERATION_PARAMS,
        prompting="icl_sweep",
        prompt=get_prompt_cfg,
        model=get_model_cfg,
    script:
        "../scripts/generate.py"


# Final targets of this stage: one file of each generation job (a job runs when any of its outputs is
# requested; the later stages read the others, and listing all ~2,500 of the study grid slowed planning).
STAGE_TARGETS.append(lambda: generation_files(subset="main", seed=SEEDS[0]))
