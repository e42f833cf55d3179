# Estimators that turn generation files into per-label confidences q(l | x) (docs/methods.md section 4):
# results/estimates/{dataset}/{model}/{regime}/{estimator}/{subset}/seed{seed}.parquet (docs/formats.md).
# Input and target functions are lambdas: `snakemake --lint` flags files that mix `def`s and rules.
from labeldist.estimators import ESTIMATOR_NAMES as GENERATION_ESTIMATOR_NAMES


# Inputs: the generation file of the estimator's prompting mode for the same subset and seed, and
# labels.json. compare_to_none_platt also reads the dev subset's baseline generation and the dev split's
# p_ref: (w, b) is fitted there and applied to the requested subset. For subset dev itself that means
# fitting and applying on dev (there is no other held-out split): in-sample, only used for thresholds.
rule estimate:
    input:
        unpack(
            lambda wildcards: {
                "generations": generation_file(
                    wildcards.dataset,
                    wildcards.model,
                    wildcards.regime,
                    ESTIMATOR_PROMPTING[wildcards.estimator],
                    wildcards.subset,
                    wildcards.seed,
                ),
                "labels": data_files(wildcards.dataset)["labels"],
            }
            | (
                {
                    "dev_generations": generation_file(
                        wildcards.dataset, wildcards.model, wildcards.regime, "baseline", "dev", wildcards.seed
                    ),
                    "dev_data": data_files(wildcards.dataset)["dev"],
                }
                if wildcards.estimator == "compare_to_none_platt"
                else {}
            )
        ),
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


# Final targets of this stage: its estimators' estimates for subsets main and dev, every seed.
STAGE_TARGETS.append(
    lambda: [
        estimate_file(d, m, r, est, subset, seed)
        for d, m, r, est in estimate_combos()
        if est in GENERATION_ESTIMATOR_NAMES
        for subset in ("main", "dev")
        for seed in SEEDS
    ]
)
