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

# Inputs shared by several figures.
FIGURE_LABELS = [data_files(d)["labels"] for d in DATASETS]
FIGURE_TESTS = [data_files(d)["test"] for d in DATASETS]
FIGURE_BASELINE_MAIN = generation_files("baseline", "main")

# The named inputs of each figure (labeldist.plots.FIGURE_BUILDERS reads them by name) and its wall-time
# request in minutes: figures drawn from generation files read many files, the others a table or two.
FIGURE_INPUTS = {
    "step_probabilities": {"generations": FIGURE_BASELINE_MAIN, "labels": FIGURE_LABELS},
    "step_entropy": {"generations": FIGURE_BASELINE_MAIN, "labels": FIGURE_LABELS},
    "first_step_spikiness": {"generations": FIGURE_BASELINE_MAIN, "labels": FIGURE_LABELS},
    "label_order_accuracy": {
        "generations": generation_files("baseline", "multi"),
        "labels": FIGURE_LABELS,
        "test": FIGURE_TESTS,
    },
    "icl_sweep": {"generations": generation_files("icl_sweep", "main"), "labels": FIGURE_LABELS},
    "alignment_by_estimator": {"table": f"{R}/tables/alignment.csv"},
    "f1_by_estimator": {"table": f"{R}/tables/classification.csv"},
    "calibration": {"metrics": metric_files()},
    # per-layer probe estimates, written by the probe stage beside its estimates (every seed)
    "probe_layers": {
        "layers": [
            estimate_file(d, m, r, est, ".layers.csv") for d, m, r, est in estimate_combos() if est == "linear_probe"
        ],
        "labels": FIGURE_LABELS,
        "test": FIGURE_TESTS,
    },
    # the sft/rl model folders, each holding training_log.csv
    "training_curves": {"models": [model_dir(d, m, r) for d, m, r in RUNS if r != "base"]},
}
FIGURE_RUNTIME = {
    name: 15 if "generations" in inputs or "layers" in inputs else 10 for name, inputs in FIGURE_INPUTS.items()
}
FIGURE_PDF = {name: f"{R}/figures/{name}.pdf" for name in FIGURE_REPORT}


# One rule per figure of the registry, figure_{name}: figures/{name}.png flagged for the report (caption,
# category, subcategory) and the PDF beside it.
for _name, (_category, _subcategory) in FIGURE_REPORT.items():

    rule:
        name:
            f"figure_{_name}"
        input:
            **FIGURE_INPUTS[_name],
        output:
            png=report(
                f"{R}/figures/{_name}.png",
                caption=f"../report/{_name}.rst",
                category=_category,
                subcategory=_subcategory,
            ),
            pdf=FIGURE_PDF[_name],
        log:
            f"{R}/logs/figures/{_name}.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=FIGURE_RUNTIME[_name],
        params:
            **FIGURE_PARAMS,
            figure=_name,
        script:
            "../scripts/figure.py"


# PNG and PDF of every figure listed in config `figures`.
STAGE_TARGETS.append(
    lambda: [path for name in config["figures"] for path in (f"{R}/figures/{name}.png", FIGURE_PDF[name])]
)
