# Models stage, base regime (docs/formats.md, "Models"): results/models/{model}/base/ is the built-in tiny
# model pretrained here (save_pretrained folder + pretrain_log.csv), or model_ref.json pointing at a hub id
# or a local save_pretrained folder. Base folders are part of final_targets() (common.smk), so no
# STAGE_TARGETS entry is needed.


def base_model_inputs(wildcards):
    """The pretraining dataset's train split and labels.json for a builtin model; nothing otherwise."""
    cfg = model_cfg(wildcards.model)
    if cfg["source"] != "builtin":
        return {}
    files = data_files(cfg["builtin"]["pretrain_dataset"])
    return {"train": files["train"], "labels": files["labels"]}


def base_model_prompt(wildcards):
    """The prompt config block of a builtin model's pretraining dataset (None for hub/local models)."""
    cfg = model_cfg(wildcards.model)
    if cfg["source"] != "builtin":
        return None
    return config["prompts"][config["datasets"][cfg["builtin"]["pretrain_dataset"]]["prompt"]]


def is_builtin(model):
    return model_cfg(model)["source"] == "builtin"


rule base_model:
    input:
        unpack(base_model_inputs),
    output:
        directory(base_model_dir("{model}")),
    log:
        f"{R}/logs/models/{{model}}/base.log",
    benchmark:
        f"{R}/benchmarks/models/{{model}}/base.tsv"
    params:
        model=lambda wildcards: model_cfg(wildcards.model),
        prompt=base_model_prompt,
    threads: 2
    resources:
        mem_mb=lambda wildcards: 3000 if is_builtin(wildcards.model) else 500,
        runtime=lambda wildcards: 30 if is_builtin(wildcards.model) else 5,
    conda:
        ENV
    script:
        "../scripts/base_model.py"
