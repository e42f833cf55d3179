# Supervised estimator `linear_probe` (METHODS.md section 4): logistic-regression probes on the LLM's
# hidden state at the first label step, trained on the `train` subset against the train split's gold
# labels, applied to the `main` and `dev` subsets. One job per dataset x model x regime x seed writes
#   estimates/{d}/{m}/{r}/linear_probe/{main,dev}/seed{s}.parquet      (last layer; docs/formats.md)
#   estimates/{d}/{m}/{r}/linear_probe/{main,dev}/seed{s}.layers.csv   (layer, id, label, q per probes.layers)
#   estimates/{d}/{m}/{r}/linear_probe/main/seed{s}.own_labels.csv     (probes of the model's own labels)


def probe_layers_file(dataset, model, regime, subset, seed):
    """Per-layer probe estimates (long format: layer, id, label, q) of one subset."""
    return f"{R}/estimates/{dataset}/{model}/{regime}/linear_probe/{subset}/seed{seed}.layers.csv"


def own_labels_file(dataset, model, regime, seed):
    """F1/accuracy per label of probes predicting the model's own emitted labels (variants all, non_first)."""
    return f"{R}/estimates/{dataset}/{model}/{regime}/linear_probe/main/seed{seed}.own_labels.csv"


def probe_inputs(wildcards):
    """Hidden states of the train/main/dev subsets, baseline generations of train/main, gold labels."""
    args = (wildcards.dataset, wildcards.model, wildcards.regime)
    data = data_files(wildcards.dataset)
    return {
        **{f"hidden_{s}": hidden_file(*args, s, wildcards.seed) for s in ("train", "main", "dev")},
        **{
            f"generations_{s}": generation_file(*args, "baseline", s, wildcards.seed)
            for s in ("train", "main")
        },
        "train": data["train"],
        "labels": data["labels"],
    }


rule linear_probe:
    input:
        unpack(probe_inputs),
    output:
        main=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", "main", "{seed}"),
        dev=estimate_file("{dataset}", "{model}", "{regime}", "linear_probe", "dev", "{seed}"),
        layers_main=probe_layers_file("{dataset}", "{model}", "{regime}", "main", "{seed}"),
        layers_dev=probe_layers_file("{dataset}", "{model}", "{regime}", "dev", "{seed}"),
        own_labels=own_labels_file("{dataset}", "{model}", "{regime}", "{seed}"),
    log:
        f"{R}/logs/linear_probe/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/linear_probe/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.tsv"
    params:
        probes=config["probes"],
        seed=lambda wildcards: int(wildcards.seed),
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        ENV
    script:
        "../scripts/probe.py"


def probe_targets():
    """Linear-probe estimates (main, dev), per-layer tables and own-label scores, every seed."""
    out = []
    for d, m, r, est in estimate_combos():
        if est != "linear_probe":
            continue
        for seed in SEEDS:
            out += [estimate_file(d, m, r, est, s, seed) for s in ("main", "dev")]
            out += [probe_layers_file(d, m, r, s, seed) for s in ("main", "dev")]
            out.append(own_labels_file(d, m, r, seed))
    return out


STAGE_TARGETS.append(probe_targets)
