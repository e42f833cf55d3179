# Estimators that turn generation files into per-label confidences q(l | x) (METHODS.md section 4):
# results/estimates/{dataset}/{model}/{regime}/{estimator}/{subset}/seed{seed}.parquet (docs/formats.md).
from labeldist.estimators import ESTIMATOR_NAMES as GENERATION_ESTIMATOR_NAMES


def estimate_inputs(wildcards):
    """The generation file an estimator reads, labels.json, and for Platt scaling the dev inputs."""
    prompting = ESTIMATOR_PROMPTING[wildcards.estimator]
    args = (wildcards.dataset, wildcards.model, wildcards.regime, prompting)
    inputs = {
        "generations": generation_file(*args, wildcards.subset, wildcards.seed),
        "labels": data_files(wildcards.dataset)["labels"],
    }
    if wildcards.estimator == "compare_to_none_platt":
        # (w, b) is fitted on the dev subset's generations against the dev split's p_ref, then applied
        # to the requested subset; for subset dev itself that means fitting and applying on dev (there
        # is no other held-out split), which is in-sample and only used for threshold tuning.
        inputs["dev_generations"] = generation_file(*args, "dev", wildcards.seed)
        inputs["dev_data"] = data_files(wildcards.dataset)["dev"]
    return inputs


rule estimate:
    input:
        unpack(estimate_inputs),
    output:
        estimate_file("{dataset}", "{model}", "{regime}", "{estimator}", "{subset}", "{seed}"),
    log:
        f"{R}/logs/estimate/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/{{subset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/estimate/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/{{subset}}/seed{{seed}}.tsv"
    wildcard_constraints:
        estimator="|".join(GENERATION_ESTIMATOR_NAMES),
    params:
        estimator=lambda wildcards: wildcards.estimator,
        seed=lambda wildcards: int(wildcards.seed),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    script:
        "../scripts/estimate.py"


def estimate_targets():
    """Estimates of this rule's estimators for subsets main and dev, every seed."""
    return [
        estimate_file(d, m, r, est, subset, seed)
        for d, m, r, est in estimate_combos()
        if est in GENERATION_ESTIMATOR_NAMES
        for subset in ("main", "dev")
        for seed in SEEDS
    ]


STAGE_TARGETS.append(estimate_targets)
