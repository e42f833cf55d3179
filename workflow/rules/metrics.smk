# Estimates and metrics. Estimators turn generation files into per-label confidences q(l | x)
# (docs/methods.md section 4): estimates/{dataset}/{model}/{regime}/{estimator}.parquet (every seed and
# subset);
# metrics (section 6) score every estimate of a (dataset, model, regime), each seed, in one file:
# metrics/{dataset}/{model}/{regime}.json (docs/formats.md); the tables aggregate them over seeds.
# One CPU job per (dataset, model, regime) writes both for every seed (labeldist.batched.evaluate_run;
# docs/study_grid.md): the estimators that read generation files (subsets main and dev), then the metrics
# of those and of the supervised estimates other rules wrote (linear_probe; seq_cls_head on base). Runs
# that run different prompting modes (models.<key>.prompting, per model or per regime) write different
# estimator sets: one rule per such group, `evaluate` when all runs run the same modes
# (labeldist.batched.evaluation_groups).
# Demux, which has no LLM, gets its own metrics file per dataset (model `encoder`, regime base).
# compare_to_none_platt also reads the dev subset's baseline generation and the dev split's p_ref:
# (w, b) is fitted there and applied to the requested subset. For subset dev itself that means fitting
# and applying on dev (there is no other held-out split): in-sample, only used for thresholds.
# Config `estimation` (which slots are label steps, what a record without one gets; ours by default, the
# study's in config/study.yaml) goes to the estimators through the rule's params.
# Input and target functions are lambdas: `snakemake --lint` flags files that mix functions and rules.
from labeldist.batched import evaluate_inputs, metric_estimators

TABLE_ORDER = {
    "dataset": DATASETS,
    "model": MODELS + [ENCODER],
    "regime": REGIMES,
    "estimator": ESTIMATORS,
}


for _group in EVAL_GROUPS:
    _prompting = _group.prompting
    if not any(metric_estimators(config, _prompting, r) for r in _group.regimes):
        continue
    _estimators = run_estimators(config, _prompting)

    rule:
        name:
            _group.rule
        input:
            unpack(evaluate_inputs(config, _prompting, generation_file, estimate_file, data_files)),
        output:
            **{f"est__{est}": estimate_file("{dataset}", "{model}", "{regime}", est) for est in _estimators},
            metrics=metric_file("{dataset}", "{model}", "{regime}"),
        log:
            f"{R}/logs/evaluate/{{dataset}}/{{model}}/{{regime}}.log",
        benchmark:
            f"{R}/benchmarks/evaluate/{{dataset}}/{{model}}/{{regime}}.tsv"
        wildcard_constraints:
            model="|".join(_group.models),
            regime="|".join(_group.regimes),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30 * len(SEEDS),
        params:
            estimators=_estimators,
            metric_estimators=lambda wildcards, prompting=_prompting: metric_estimators(
                config, prompting, wildcards.regime
            ),
            seeds=SEEDS,
            metrics=config["metrics"],
            estimation=config["estimation"],
            meta=lambda wildcards: {k: wildcards[k] for k in ("dataset", "model", "regime")},
        script:
            "../scripts/evaluate.py"


rule evaluate_demux:
    input:
        unpack(data_inputs("test", "dev", "labels", "subsets")),
        est__demux=estimate_file("{dataset}", ENCODER, "base", "demux"),
    output:
        metrics=metric_file("{dataset}", ENCODER, "base"),
    log:
        f"{R}/logs/evaluate/{{dataset}}/{ENCODER}/base.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10 * len(SEEDS),
    params:
        estimators=[],
        metric_estimators=["demux"],
        seeds=SEEDS,
        metrics=config["metrics"],
        estimation=config["estimation"],
        meta=lambda wildcards: {"dataset": wildcards.dataset, "model": ENCODER, "regime": "base"},
    script:
        "../scripts/evaluate.py"


rule tables:
    input:
        metric_files(),
    output:
        alignment_csv=f"{R}/tables/alignment.csv",
        alignment_md=f"{R}/tables/alignment.md",
        alignment_html=report(
            f"{R}/tables/alignment.html",
            caption="../report/table_alignment.rst",
            category="2. Estimators",
            subcategory="Alignment with p_ref",
        ),
        classification_csv=f"{R}/tables/classification.csv",
        classification_md=f"{R}/tables/classification.md",
        classification_html=report(
            f"{R}/tables/classification.html",
            caption="../report/table_classification.rst",
            category="2. Estimators",
            subcategory="Classification (F1)",
        ),
        # the README's headline table (make readme copies it into README.md)
        headline=f"{R}/tables/headline.md",
    log:
        f"{R}/logs/tables.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        order=TABLE_ORDER,
    script:
        "../scripts/tables.py"


# The tables (their inputs are every run's metrics file); none when no estimator is configured.
STAGE_TARGETS.append(
    lambda: (
        [f"{R}/tables/{name}.{ext}" for name in ("alignment", "classification") for ext in ("csv", "md", "html")]
        + [f"{R}/tables/headline.md"]
        if ESTIMATORS
        else []
    )
)
