# Supervised estimator `demux` (docs/methods.md section 4): a BERT-style encoder reading
# `label_1, ..., label_L [SEP] text`, trained per dataset and seed on the train split with early stopping
# on dev. Not tied to an LLM: model key `encoder`, regime `base` (docs/formats.md). One job per dataset
# writes estimates/{d}/encoder/base/demux.parquet (every seed) and, per seed, the trained model
# models/{d}/encoder/demux/seed{s}/ (save_pretrained encoder + tokenizer, head, demux.json,
# training_log.csv with the early-stopping history).


rule demux:
    input:
        **data_files("{dataset}"),
    output:
        **{f"model__{seed}": directory(demux_model_dir("{dataset}", seed)) for seed in SEEDS},
        estimates=estimate_file("{dataset}", ENCODER, "base", "demux"),
    log:
        f"{R}/logs/demux/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/demux/{{dataset}}.tsv"
    conda:
        ENV
    # the built-in encoder (<1M parameters) gains nothing from intra-op threads; measured on a loaded
    # 2-core machine, 2 torch threads made an epoch 7-10x slower than 1
    threads: 1 if config["demux"]["encoder"] == "builtin" else threads_for(ENCODER)
    resources:
        **{GPU_KEY: gpu_resource(gpu_for(ENCODER), GPU_KEY)},
        mem_mb=lambda wildcards, attempt: (16000 if gpu_for(ENCODER) else 4000) * attempt,
        runtime=lambda wildcards, attempt: runtime_for("demux", wildcards, attempt) * len(SEEDS),
    params:
        demux=config["demux"],
        device=config["device"],
        seeds=SEEDS,
    script:
        "../scripts/demux.py"


# No entry in STAGE_TARGETS: every file of this stage is an input of the metrics, which the tables
# (a final target whenever estimators are configured) read; listing the ~7,500 files of the study grid
# again in `rule all` only slowed planning (docs/study_grid.md).
