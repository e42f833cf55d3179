# Metrics (docs/methods.md section 6): one JSON per run (dataset x model x regime x estimator x seed), then
# the alignment and classification tables aggregated over seeds (docs/formats.md, Metrics and tables).
# Input and target functions are lambdas: `snakemake --lint` flags files that mix functions and rules.


TABLE_ORDER = {
    "dataset": DATASETS,
    "model": MODELS + [ENCODER],
    "regime": REGIMES,
    "estimator": ESTIMATORS,
}


rule metrics:
    input:
        estimates=lambda w: estimate_file(w.dataset, w.model, w.regime, w.estimator, "main", w.seed),
        dev_estimates=lambda w: estimate_file(w.dataset, w.model, w.regime, w.estimator, "dev", w.seed),
        test=lambda w: data_files(w.dataset)["test"],
        dev=lambda w: data_files(w.dataset)["dev"],
        labels=lambda w: data_files(w.dataset)["labels"],
        subsets=lambda w: data_files(w.dataset)["subsets"],
        # the baseline generation an estimator read, for its counts (none for demux, seq_cls_head, ...)
        generation=lambda w: (
            generation_file(w.dataset, w.model, w.regime, "baseline", "main", w.seed)
            if ESTIMATOR_PROMPTING[w.estimator] == "baseline"
            else []
        ),
    output:
        metric_file("{dataset}", "{model}", "{regime}", "{estimator}", "{seed}"),
    params:
        metrics=config["metrics"],
    log:
        f"{R}/logs/metrics/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/metrics/{{dataset}}/{{model}}/{{regime}}/{{estimator}}/seed{{seed}}.tsv"
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
