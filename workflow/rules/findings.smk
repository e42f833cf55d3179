# Findings (docs/methods.md section 8): each claim of the papers tested on this run's generations and
# metrics, with a statistic, a bootstrap interval over examples and a verdict, in tables/findings.{csv,md,html}
# and figures/findings.{png,pdf}. Claims whose inputs the config does not produce are "not testable here".


FINDINGS_CATEGORY = "0. Findings"

FINDINGS_CONTEXT = {
    "datasets": DATASETS,
    "models": MODELS,
    "regimes": REGIMES,
    "prompting": PROMPTING,
    "estimators": ESTIMATORS,
    "model_sizes": {m: config["models"][m]["size_b"] for m in MODELS},
    "runs": [list(run) for run in RUNS],
    "model_prompting": {m: {r: model_prompting(config, m, r) for r in REGIMES} for m in MODELS},
}


rule findings:
    input:
        generations=generation_files("baseline", "main"),
        icl_generations=generation_files("icl_sweep", "main"),
        metrics=metric_files(),
        labels=[data_files(d)["labels"] for d in DATASETS],
        tuned_models=[model_dir(d, m, r) for d, m, r in RUNS if r != "base"],
    output:
        csv=f"{R}/tables/findings.csv",
        finetuning=f"{R}/tables/finetuning.md",
        md=f"{R}/tables/findings.md",
        headline=f"{R}/tables/findings_headline.md",
        html=report(
            f"{R}/tables/findings.html",
            caption="../report/findings.rst",
            category=FINDINGS_CATEGORY,
            subcategory="Table",
        ),
    log:
        f"{R}/logs/findings/findings.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=config["findings"],
        context=FINDINGS_CONTEXT,
    script:
        "../scripts/findings.py"


rule figure_findings:
    input:
        table=f"{R}/tables/findings.csv",
    output:
        png=report(
            f"{R}/figures/findings.png",
            caption="../report/findings.rst",
            category=FINDINGS_CATEGORY,
            subcategory="Figure",
        ),
        pdf=f"{R}/figures/findings.pdf",
    log:
        f"{R}/logs/figures/findings.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        figure="findings",
    script:
        "../scripts/figure.py"


STAGE_TARGETS.append(
    lambda: [f"{R}/tables/findings.{ext}" for ext in ("csv", "md", "html")]
    + [f"{R}/figures/findings.{ext}" for ext in ("png", "pdf")]
)
