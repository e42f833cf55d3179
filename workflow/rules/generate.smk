# Generation stage (docs/formats.md, "Generations"): per example, the greedy label list with per-step
# label distributions (first-token and whole-label), hidden states at the first label step (baseline),
# the token-level marginal (baseline, config generation.marginal), and the unary / pairwise prompts.
#   results/generations/{dataset}/{model}/{regime}/{prompting}/{subset}/seed{seed}.jsonl
#   results/generations/{dataset}/{model}/{regime}/baseline/{subset}/seed{seed}.hidden.safetensors
# One GPU job per (dataset, model, regime, prompting mode, seed) writes every subset of its mode,
# loading the model once (labeldist.batched.generate_subsets; docs/study_grid.md).
# Input and resource functions are lambdas: `snakemake --lint` flags files that mix `def`s and rules.
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
            f"records__{s}": generation_file("{dataset}", "{model}", "{regime}", "baseline", s, "{seed}")
            for s in generation_subsets("baseline")
        },
        **{
            f"hidden__{s}": hidden_file("{dataset}", "{model}", "{regime}", s, "{seed}")
            for s in generation_subsets("baseline")
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/baseline/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/baseline/seed{{seed}}.tsv"
    params:
        prompting="baseline",
        seed=lambda wildcards: int(wildcards.seed),
        prompt=lambda wildcards: config["prompts"][config["datasets"][wildcards.dataset]["prompt"]],
        model=lambda wildcards: model_cfg(wildcards.model),
        **GENERATION_PARAMS,
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, "baseline", s)
                for s in generation_subsets("baseline")
            ),
            attempt,
        ),
    conda:
        ENV
    script:
        "../scripts/generate.py"


# unary and pairwise: records of subsets main and dev
rule generate:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        **{
            f"records__{s}": generation_file("{dataset}", "{model}", "{regime}", "{prompting}", s, "{seed}")
            for s in generation_subsets("unary")
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}/seed{{seed}}.tsv"
    wildcard_constraints:
        prompting="unary|pairwise",
    params:
        prompting=lambda wildcards: wildcards.prompting,
        seed=lambda wildcards: int(wildcards.seed),
        prompt=lambda wildcards: config["prompts"][config["datasets"][wildcards.dataset]["prompt"]],
        model=lambda wildcards: model_cfg(wildcards.model),
        **GENERATION_PARAMS,
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, wildcards.prompting, s)
                for s in generation_subsets(wildcards.prompting)
            ),
            attempt,
        ),
    conda:
        ENV
    script:
        "../scripts/generate.py"


# the multi-label in-context sweep: records of subset main
rule generate_icl_sweep:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        **{
            f"records__{s}": generation_file("{dataset}", "{model}", "{regime}", "icl_sweep", s, "{seed}")
            for s in generation_subsets("icl_sweep")
        },
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/icl_sweep/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/icl_sweep/seed{{seed}}.tsv"
    params:
        prompting="icl_sweep",
        seed=lambda wildcards: int(wildcards.seed),
        prompt=lambda wildcards: config["prompts"][config["datasets"][wildcards.dataset]["prompt"]],
        model=lambda wildcards: model_cfg(wildcards.model),
        **GENERATION_PARAMS,
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "generate"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: _cost.runtime_minutes(
            sum(
                _cost.generation_seconds(config, wildcards.dataset, wildcards.model, "icl_sweep", s)
                for s in generation_subsets("icl_sweep")
            ),
            attempt,
        ),
    conda:
        ENV
    script:
        "../scripts/generate.py"


# Final targets of this stage: every generation file the config plans (hidden states come with baseline).
STAGE_TARGETS.append(lambda: generation_files())
