# Generation stage (docs/formats.md, "Generations"): per example, the greedy label list with per-step
# label distributions (first-token and whole-label), hidden states at the first label step (baseline),
# the token-level marginal (baseline, config generation.marginal), and the unary / pairwise prompts.
#   results/generations/{dataset}/{model}/{regime}/{prompting}/{subset}/seed{seed}.jsonl
#   results/generations/{dataset}/{model}/{regime}/baseline/{subset}/seed{seed}.hidden.safetensors
# Input and resource functions are lambdas: `snakemake --lint` flags files that mix `def`s and rules.
from types import SimpleNamespace


# baseline: records and the hidden states the probes read
rule generate_baseline:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        records=generation_file("{dataset}", "{model}", "{regime}", "baseline", "{subset}", "{seed}"),
        hidden=hidden_file("{dataset}", "{model}", "{regime}", "{subset}", "{seed}"),
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/baseline/{{subset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/baseline/{{subset}}/seed{{seed}}.tsv"
    params:
        prompting="baseline",
        subset=lambda wildcards: wildcards.subset,
        seed=lambda wildcards: int(wildcards.seed),
        generation=config["generation"],
        prompt=lambda wildcards: config["prompts"][config["datasets"][wildcards.dataset]["prompt"]],
        model=lambda wildcards: model_cfg(wildcards.model),
        device=config["device"],
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        gpu=lambda wildcards: gpu_for(wildcards.model, "generate"),
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: runtime_for(
            "generate", SimpleNamespace(prompting="baseline", **dict(wildcards.items())), attempt
        ),
    conda:
        ENV
    script:
        "../scripts/generate.py"


# icl_sweep, unary, pairwise: records only
rule generate:
    input:
        unpack(get_data),
        model=get_model_dir,
    output:
        records=generation_file("{dataset}", "{model}", "{regime}", "{prompting}", "{subset}", "{seed}"),
    log:
        f"{R}/logs/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}/{{subset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{dataset}}/{{model}}/{{regime}}/{{prompting}}/{{subset}}/seed{{seed}}.tsv"
    wildcard_constraints:
        prompting="icl_sweep|unary|pairwise",
    params:
        prompting=lambda wildcards: wildcards.prompting,
        subset=lambda wildcards: wildcards.subset,
        seed=lambda wildcards: int(wildcards.seed),
        generation=config["generation"],
        prompt=lambda wildcards: config["prompts"][config["datasets"][wildcards.dataset]["prompt"]],
        model=lambda wildcards: model_cfg(wildcards.model),
        device=config["device"],
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        gpu=lambda wildcards: gpu_for(wildcards.model, "generate"),
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt),
        runtime=lambda wildcards, attempt: runtime_for("generate", wildcards, attempt),
    conda:
        ENV
    script:
        "../scripts/generate.py"


# Final targets of this stage: every generation file the config plans (hidden states come with baseline).
STAGE_TARGETS.append(lambda: generation_files())
