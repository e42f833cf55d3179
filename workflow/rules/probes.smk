# Supervised estimator `linear_probe` (docs/methods.md section 4): logistic-regression probes on the LLM's
# hidden state at the first label step, trained on the `train` subset against the train split's gold
# labels, applied to the `main` and `dev` subsets. One job per dataset x model x regime writes, for
# every seed (labeldist.artifacts.estimates, docs/formats.md):
#   estimates/{d}/{m}/{r}/linear_probe.parquet         (last layer)
#   estimates/{d}/{m}/{r}/linear_probe.layers.csv      (every layer of probes.layers)
#   estimates/{d}/{m}/{r}/linear_probe.own_labels.csv  (probes of the model's own labels)
# Input and target functions are lambdas: `snakemake --lint` flags files that mix `def`s and rules.


# Inputs: hidden states of the train/main/dev subsets, baseline generations of train and main (the
# model's own emitted labels), the train split's gold labels and labels.json.
rule linear_probe:
    input:
        unpack(
            lambda wildcards: {
                **{
                    f"hidden__{s}__{seed}": hidden_file(
                        wildcards.dataset, wildcards.model, wildcards.regime, s, seed
                    )
                    for s in ("train", "main", "dev")
                    for seed in SEEDS
                },
                **{
                    f"generations__{s}__{seed}": generation_file(
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
        estimates=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe"),
        layers=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", ".layers.csv"),
        own_labels=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", ".own_labels.csv"),
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
