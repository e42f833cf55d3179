"""Thin wrapper: one run's metrics JSON (labeldist.metrics.run_metrics)."""

from labeldist.io import write_json
from labeldist.metrics import run_metrics
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (the object Snakemake injects)
    cfg = snakemake.params.metrics
    wc = snakemake.wildcards
    result = run_metrics(
        estimates=snakemake.input.estimates,
        dev_estimates=snakemake.input.dev_estimates,
        test_data=snakemake.input.test,
        dev_data=snakemake.input.dev,
        labels=snakemake.input.labels,
        subsets=snakemake.input.subsets,
        generation=snakemake.input.generation or None,  # an empty list for estimators without one
        meta={"dataset": wc.dataset, "model": wc.model, "regime": wc.regime, "estimator": wc.estimator,
              "seed": int(wc.seed)},
        threshold=cfg["threshold"],
        ece_bins=cfg["ece_bins"],
        n_bootstrap=cfg["bootstrap"],
    )
    write_json(snakemake.output[0], result)
