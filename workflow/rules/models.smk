# Models stage, base regime (docs/formats.md, "Models"): results/models/{model}/base/ is the built-in tiny
# model pretrained here (save_pretrained folder + pretrain_log.csv), a GGUF file converted once into a
# save_pretrained folder (+ gguf_source.json), or model_ref.json pointing at a hub id or a local
# save_pretrained folder. Base folders are part of final_targets() (common.smk), so no
# STAGE_TARGETS entry is needed.
# pretrain_dataset, pretrain_prompt: labeldist.config, imported in common.smk (planning imports no torch)


rule base_model:
    input:
        # builtin: the pretraining dataset's train split and labels.json; hub/local: nothing
        unpack(get_pretrain_inputs),
    output:
        directory(base_model_dir("{model}")),
    log:
        f"{R}/logs/models/{{model}}/base.log",
    benchmark:
        f"{R}/benchmarks/models/{{model}}/base.tsv"
    conda:
        ENV
    # One thread for the tiny model (~0.7M parameters gain little from a second OpenMP thread: ~75 s CPU
    # for the default 800 x 8-document steps on one core; two threads spin badly on a shared core); the
    # GGUF conversion is file and memory work (~20 s SmolLM2, ~75 s Gemma-3-270M).
    threads: 1
    resources:
        mem_mb=lambda wildcards: base_model_mem_mb(wildcards.model),
        runtime=lambda wildcards: 30 if model_cfg(wildcards.model)["source"] in ("builtin", "gguf") else 5,
    params:
        model=get_model_cfg,
        prompt=lambda wildcards: pretrain_prompt(config, wildcards.model),
    script:
        "../scripts/base_model.py"
