# Supervised estimator `linear_probe` (docs/methods.md section 4): logistic-regression probes on the LLM's
# hidden state at the first label step, trained on the `train` subset against the train split's gold
# labels, applied to the `main` and `dev` subsets. One job per dataset x model x regime writes, per seed,
#   estimates/{d}/{m}/{r}/linear_probe/{main,dev}/seed{s}.parquet      (last layer; docs/formats.md)
#   estimates/{d}/{m}/{r}/linear_probe/{main,dev}/seed{s}.layers.csv   (layer, id, label, q per probes.layers)
#   estimates/{d}/{m}/{r}/linear_probe/main/seed{s}.own_labels.csv     (probes of the model's own labels:
#                                                                      variant, label, f1, accuracy, n_pos)
# Input and target functions are lambdas: `snakemake --lint` flags files that mix `def`s and rules.


# (output key, subset, suffix beside the estimate's path) of each file a probe job writes per seed
PROBE_OUTPUTS = [
    ("main", "main", ".parquet"),
    ("dev", "dev", ".parquet"),
    ("layers_main", "main", ".layers.csv"),
    ("layers_dev", "dev", ".layers.csv"),
    ("own_labels", "main", ".own_labels.csv"),
]


# Inputs: hidden states of the train/main/dev subsets, baseline generations of train and main (the
# model's own emitted labels), the train split's gold labels and labels.json.
rule linear_probe:
    input:
        unpack(
            lambda wildcards: {
                **{
                    f"hidden_{s}__{seed}": hidden_file(
                        wildcards.dataset, wildcards.model, wildcards.regime, s, seed
                    )
                    for s in ("train", "main", "dev")
                    for seed in SEEDS
                },
                **{
                    f"generations_{s}__{seed}": generation_file(
                        wildcards.dataset, wildcards.model, wildcards.regime, "baseline", s, seed
                    )
                    for s in ("train", "main")
                    for seed in SEEDS
                },
                "train": data_files(wildcards.dataset)["train"],
                "labels": data_files(wildcards.dataset)["labels"],
            }
        ),
    output:
        **{
            f"{key}__{seed}": estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", s, seed)
            .removesuffix(".parquet")
            + suffix
            for key, s, suffix in PROBE_OUTPUTS
            for seed in SEEDS
        },
    log:
        f"{R}/logs/linear_probe/{{dataset}}/{{model}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/linear_probe/{{dataset}}/{{model}}/{{regime}}.tsv"
    params:
        probes=config["probes"],
        seeds=SEEDS,
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * len(SEEDS) * attempt,
    conda:
        ENV
    script:
        "../scripts/probe.py"


# No entry in STAGE_TARGETS: every file of this stage is an input of the metrics, which the tables
# (a final target whenever estimators are configured) read; listing the ~7,500 files of the study grid
# again in `rule all` only slowed planning (docs/study_grid.md).
