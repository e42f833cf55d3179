# Estimators that turn generation files into per-label confidences q(l | x) (docs/methods.md section 4):
# results/estimates/{dataset}/{model}/{regime}/{estimator}/{subset}/seed{seed}.parquet (docs/formats.md).
# One CPU job per (dataset, model, regime, seed) writes every estimator that reads generation files, for
# subsets main and dev (labeldist.batched.estimate_run; docs/study_grid.md). Models that run different
# prompting modes (models.<key>.prompting) write different estimator sets: one rule per such group,
# `estimate` when all models run the same modes (labeldist.batched.prompting_groups).
# compare_to_none_platt also reads the dev subset's baseline generation and the dev split's p_ref:
# (w, b) is fitted there and applied to the requested subset. For subset dev itself that means fitting
# and applying on dev (there is no other held-out split): in-sample, only used for thresholds.
from labeldist.batched import estimate_inputs

EVAL_SUBSETS = ("main", "dev")

for _prompting, _models in PROMPTING_GROUPS.items():
    _estimators = run_estimators(config, _prompting)
    if not _estimators:
        continue

    rule:
        name:
            f"estimate{rule_suffix(_prompting, PROMPTING_GROUPS)}"
        input:
            unpack(estimate_inputs(generation_file, data_files, _estimators)),
        output:
            **{
                f"est__{est}__{s}": estimate_file("{dataset}", "{model}", "{regime}", est, s, "{seed}")
                for est in _estimators
                for s in EVAL_SUBSETS
            },
        log:
            f"{R}/logs/estimate/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.log",
        benchmark:
            f"{R}/benchmarks/estimate/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.tsv"
        wildcard_constraints:
            model="|".join(_models),
        params:
            estimators=_estimators,
            seed=lambda wildcards: int(wildcards.seed),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=lambda wildcards, attempt: 30 * attempt,
        conda:
            ENV
        script:
            "../scripts/estimate.py"


# No entry in STAGE_TARGETS: every file of this stage is an input of the metrics, which the tables
# (a final target whenever estimators are configured) read; listing the ~7,500 files of the study grid
# again in `rule all` only slowed planning (docs/study_grid.md).
