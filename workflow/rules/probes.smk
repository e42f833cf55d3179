# Supervised estimator `linear_probe` (docs/methods.md section 4): logistic-regression probes on the LLM's
# hidden state at the first label step, trained on the `train` subset against the train split's gold
# labels, applied to the `main` and `dev` subsets. One job per dataset x model x regime writes, for
# every seed (labeldist.artifacts.estimates, docs/formats.md):
#   estimates/{d}/{m}/{r}/linear_probe.parquet         (last layer)
#   estimates/{d}/{m}/{r}/linear_probe.layers.csv      (every layer of probes.layers)
#   estimates/{d}/{m}/{r}/linear_probe.own_labels.csv  (probes of the model's own labels)


# Inputs: hidden states of the train/main/dev subsets, baseline generations of train and main (the
# model's own emitted labels), the train split's gold labels and labels.json.
rule linear_probe:
    input:
        unpack(get_probe_inputs),
    output:
        estimates=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe"),
        layers=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", ".layers.csv"),
        own_labels=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", ".own_labels.csv"),
    log:
        f"{R}/logs/linear_probe/{{dataset}}/{{model}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/linear_probe/{{dataset}}/{{model}}/{{regime}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * len(SEEDS) * attempt,
    params:
        probes=config["probes"],
        seeds=SEEDS,
    script:
        "../scripts/probe.py"


# No entry in STAGE_TARGETS: every file of this stage is an input of the metrics, which the tables
# (a final target whenever estimators are configured) read; listing the ~7,500 files of the study grid
# again in `rule all` only slowed planning (docs/study_grid.md).
