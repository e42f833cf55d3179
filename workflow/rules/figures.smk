# Figures (docs/methods.md section 7): one rule per figure in config `figures`, each writing
# figures/{name}.png (in the report, with its caption) and figures/{name}.pdf.


report: "../report/workflow.rst"


FIGURE_REPORT = {
    "step_probabilities": ("1. Label generation behaviour", "Per-step probabilities"),
    "step_entropy": ("1. Label generation behaviour", "Per-step entropy"),
    "first_step_spikiness": ("1. Label generation behaviour", "First-step spikiness"),
    "label_order_accuracy": ("1. Label generation behaviour", "Label order"),
    "icl_sweep": ("1. Label generation behaviour", "Multi-label in-context sweep"),
    "alignment_by_estimator": ("2. Estimators", "Alignment with p_ref"),
    "f1_by_estimator": ("2. Estimators", "Classification (F1)"),
    "calibration": ("2. Estimators", "Calibration"),
    "probe_layers": ("3. Supervised probes", "Probes by layer"),
    "training_curves": ("4. Finetuning", "Training curves"),
}

FIGURE_PARAMS = {
    "models": MODELS + [ENCODER],
    "regimes": REGIMES,
    "estimators": ESTIMATORS,
    "kind": "first_token",  # the study's per-step distribution: softmax over label first tokens
    "threshold": config["metrics"]["threshold"],
}


# figures/{name}.png flagged for the report (caption, category, subcategory); the PDF beside it.
FIGURE_PNG = {
    name: report(
        f"{R}/figures/{name}.png",
        caption=f"../report/{name}.rst",
        category=category,
        subcategory=subcategory,
    )
    for name, (category, subcategory) in FIGURE_REPORT.items()
}
FIGURE_PDF = {name: f"{R}/figures/{name}.pdf" for name in FIGURE_REPORT}
FIGURE_LOG = {name: f"{R}/logs/figures/{name}.log" for name in FIGURE_REPORT}

# Inputs shared by several figures.
FIGURE_LABELS = [data_files(d)["labels"] for d in DATASETS]
FIGURE_TESTS = [data_files(d)["test"] for d in DATASETS]
# Per-layer probe estimates written by the probe stage beside its estimates (every seed).
FIGURE_PROBE_LAYERS = [
    estimate_file(d, m, r, est, ".layers.csv") for d, m, r, est in estimate_combos() if est == "linear_probe"
]
# The sft/rl model folders, each holding training_log.csv.
FIGURE_TRAINING_DIRS = [model_dir(d, m, r) for d, m, r in RUNS if r != "base"]


rule figure_step_probabilities:
    input:
        generations=generation_files("baseline", "main"),
        labels=FIGURE_LABELS,
    output:
        png=FIGURE_PNG["step_probabilities"],
        pdf=FIGURE_PDF["step_probabilities"],
    params:
        figure="step_probabilities",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["step_probabilities"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_step_entropy:
    input:
        generations=generation_files("baseline", "main"),
        labels=FIGURE_LABELS,
    output:
        png=FIGURE_PNG["step_entropy"],
        pdf=FIGURE_PDF["step_entropy"],
    params:
        figure="step_entropy",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["step_entropy"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_first_step_spikiness:
    input:
        generations=generation_files("baseline", "main"),
        labels=FIGURE_LABELS,
    output:
        png=FIGURE_PNG["first_step_spikiness"],
        pdf=FIGURE_PDF["first_step_spikiness"],
    params:
        figure="first_step_spikiness",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["first_step_spikiness"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_label_order_accuracy:
    input:
        generations=generation_files("baseline", "multi"),
        labels=FIGURE_LABELS,
        test=FIGURE_TESTS,
    output:
        png=FIGURE_PNG["label_order_accuracy"],
        pdf=FIGURE_PDF["label_order_accuracy"],
    params:
        figure="label_order_accuracy",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["label_order_accuracy"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_icl_sweep:
    input:
        generations=generation_files("icl_sweep", "main"),
        labels=FIGURE_LABELS,
    output:
        png=FIGURE_PNG["icl_sweep"],
        pdf=FIGURE_PDF["icl_sweep"],
    params:
        figure="icl_sweep",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["icl_sweep"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_alignment_by_estimator:
    input:
        table=f"{R}/tables/alignment.csv",
    output:
        png=FIGURE_PNG["alignment_by_estimator"],
        pdf=FIGURE_PDF["alignment_by_estimator"],
    params:
        figure="alignment_by_estimator",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["alignment_by_estimator"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"


rule figure_f1_by_estimator:
    input:
        table=f"{R}/tables/classification.csv",
    output:
        png=FIGURE_PNG["f1_by_estimator"],
        pdf=FIGURE_PDF["f1_by_estimator"],
    params:
        figure="f1_by_estimator",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["f1_by_estimator"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"


rule figure_calibration:
    input:
        metrics=metric_files(),
    output:
        png=FIGURE_PNG["calibration"],
        pdf=FIGURE_PDF["calibration"],
    params:
        figure="calibration",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["calibration"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"


rule figure_probe_layers:
    input:
        layers=FIGURE_PROBE_LAYERS,
        labels=FIGURE_LABELS,
        test=FIGURE_TESTS,
    output:
        png=FIGURE_PNG["probe_layers"],
        pdf=FIGURE_PDF["probe_layers"],
    params:
        figure="probe_layers",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["probe_layers"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/figure.py"


rule figure_training_curves:
    input:
        models=FIGURE_TRAINING_DIRS,
    output:
        png=FIGURE_PNG["training_curves"],
        pdf=FIGURE_PDF["training_curves"],
    params:
        figure="training_curves",
        **FIGURE_PARAMS,
    log:
        FIGURE_LOG["training_curves"],
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"


# PNG and PDF of every figure listed in config `figures`.
STAGE_TARGETS.append(
    lambda: [path for name in config["figures"] for path in (f"{R}/figures/{name}.png", FIGURE_PDF[name])]
)
