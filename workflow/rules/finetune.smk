# Finetuning regimes (docs/methods.md section 5) and the sequence-classification-head baseline (section 4).
#   sft, rl:      results/models/{dataset}/{model}/{sft,rl}/  merged save_pretrained folders with
#                 training_log.csv (docs/formats.md); the generation rules pull them in via model_dir().
#   seq_cls_head: estimates/{dataset}/{model}/base/seq_cls_head.parquet (every seed)
# Input functions live in common.smk; resource lambdas here (`snakemake --lint` flags files that mix
# `def`s and rules).
# Threads: threads_for() in common.smk (1 for the built-in tiny model).
from labeldist.batched import gpu_resource

# RL finetunes all weights of models up to 50M parameters and uses LoRA above (labeldist.finetune).


rule sft:
    input:
        unpack(data_inputs("train", "dev", "labels", "subsets")),
        base=get_base_model_dir,
    output:
        directory(model_dir("{dataset}", "{model}", "sft")),
    log:
        f"{R}/logs/finetune/{{dataset}}/{{model}}/sft.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{dataset}}/{{model}}/sft.tsv"
    # sft -> rl -> their generations is the longest chain of the DAG: start it before independent jobs
    priority: 50
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "sft"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt, "sft"),
        runtime=lambda wildcards, attempt: runtime_for("sft", wildcards, attempt),
    params:
        prompt=get_prompt_cfg,
        sft=get_finetune_cfg("sft"),
        generation=config["generation"],
        device=config["device"],
        dtype=get_model_dtype,
        load_in_4bit=get_model_4bit,
    script:
        "../scripts/sft.py"


rule rl:
    input:
        unpack(data_inputs("train", "dev", "labels", "subsets")),
        start=get_rl_start,
    output:
        directory(model_dir("{dataset}", "{model}", "rl")),
    log:
        f"{R}/logs/finetune/{{dataset}}/{{model}}/rl.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{dataset}}/{{model}}/rl.tsv"
    priority: 50
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "rl"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt, "rl"),
        runtime=lambda wildcards, attempt: runtime_for("rl", wildcards, attempt),
    params:
        prompt=get_prompt_cfg,
        rl=get_finetune_cfg("rl"),
        sft=get_finetune_cfg("sft"),
        generation=config["generation"],
        device=config["device"],
        dtype=get_model_dtype,
        load_in_4bit=get_model_4bit,
    script:
        "../scripts/rl.py"


rule seq_cls_head:
    input:
        unpack(data_inputs("train", "dev", "test", "labels", "subsets")),
        base=get_base_model_dir,
    output:
        estimates=estimate_file("{dataset}", "{model}", "base", "seq_cls_head"),
    log:
        f"{R}/logs/seq_cls_head/{{dataset}}/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/seq_cls_head/{{dataset}}/{{model}}.tsv"
    conda:
        ENV
    threads: lambda wildcards: threads_for(wildcards.model)
    resources:
        **{GPU_KEY: lambda wildcards: gpu_resource(gpu_for(wildcards.model, "seq_cls_head"), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: llm_mem_mb(wildcards.model, attempt, "seq_cls_head"),
        runtime=lambda wildcards, attempt: runtime_for("seq_cls_head", wildcards, attempt) * len(SEEDS),
    params:
        seq_cls=get_finetune_cfg("seq_cls"),
        seeds=SEEDS,
        device=config["device"],
        dtype=get_model_dtype,
        load_in_4bit=get_model_4bit,
    script:
        "../scripts/seq_cls.py"


# No entry in STAGE_TARGETS: the seq_cls_head estimates are inputs of the base runs' metrics and the sft/rl
# folders inputs of the generation rules.
