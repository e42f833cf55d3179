"""Wiring only: the generation files and supervised estimates of one (dataset, model, regime) -> the
estimate file of every generation-reading estimator and the run's metrics file, every seed."""

from labeldist.batched import evaluate_run, keyed
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    cfg = params.metrics
    evaluate_run(
        params.estimators,
        params.metric_estimators,
        keyed(dict(inp.items()), "gen__"),
        keyed(dict(out.items()), "est__"),
        keyed(dict(inp.items()), "est__"),
        out.metrics,
        data={k: inp[k] for k in ("test", "dev", "labels", "subsets")},
        meta=params.meta,
        seeds=params.seeds,
        threshold=cfg["threshold"],
        ece_bins=cfg["ece_bins"],
        n_bootstrap=cfg["bootstrap"],
        estimation=params.estimation,
        threads=snakemake.threads,  # noqa: F821
    )
