# Metrics (docs/methods.md section 6): one JSON per run (dataset x model x regime x estimator x seed), then
# the alignment and classification tables aggregated over seeds (docs/formats.md, Metrics and tables).
# Input and target functions are lambdas: `snakemake --lint` flags files that mix functions and rules.
from labeldist.batched import metrics_inputs


TABLE_ORDER = {
    "dataset": DATASETS,
    "model": MODELS + [ENCODER],
    "regime": REGIMES,
    "estimator": ESTIMATORS,
}


# One job per (dataset, model, regime, seed) writes the metrics file of each estimator of the run (one
# rule per prompting group, as estimate.smk); Demux and the classification head, which have no regime
# of their own, keep one job per metrics file (rule metrics).
for _prompting, _models in PROMPTING_GROUPS.items():
    _estimators = run_estimators(config, _prompting, supervised=True)
    if not _estimators:
        continue

    rule:
        name:
            f"metrics_run{rule_suffix(_prompting, PROMPTING_GROUPS)}"
        input:
            unpack(metrics_inputs(estimate_file, generation_file, data_files, _estimators)),
        output:
            **{
                f"metrics__{est}": metric_file("{dataset}", "{model}", "{regime}", est, "{seed}")
                for est in _estimators
            },
        params:
            metrics=config["metrics"],
        log:
            f"{R}/logs/metrics/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.log",
        benchmark:
            f"{R}/benchmarks/metrics/{{dataset}}/{{model}}/{{regime}}/seed{{seed}}.tsv"
        wildcard_constraints:
            model="|".join(_models),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=lambda wildcards, attempt: 30 * attempt,
        script:
            "../scripts/metrics.py"


rule metrics:
    input:
        unpack(
            lambda w: metrics_inputs(estimate_file, generation_file, data_files, [w.estimator])(w)
        ),
    output:
        metrics__=metric_file("{dataset}", "{model}", "{regime}", "{estimator}", "{seed}"),
    params:
        metrics=config["metrics"],
    log:
        f"{R}/logs/metrics/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/metrics/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/seed{{seed}}.tsv"
    wildcard_constraints:
        estimator="demux|seq_cls_head",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../scripts/metrics.py"


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
    params:
        order=TABLE_ORDER,
    log:
        f"{R}/logs/tables.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
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
