"""Thin wrapper: the metrics JSON of each estimator of one run (labeldist.batched.metrics_run)."""

from labeldist.batched import keyed, metrics_run
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (the object Snakemake injects)
    cfg, inp, wc = snakemake.params.metrics, snakemake.input, snakemake.wildcards  # noqa: F821
    outputs = {k.removeprefix("metrics__") or wc.estimator: v
               for k, v in snakemake.output.items() if k.startswith("metrics__")}  # noqa: F821
    metrics_run(
        outputs,
        keyed(dict(inp.items()), "est__"),
        test_data=inp.test,
        dev_data=inp.dev,
        labels=inp.labels,
        subsets=inp.subsets,
        baseline_generation=inp.get("generation"),
        meta={"dataset": wc.dataset, "model": wc.model, "regime": wc.regime, "seed": int(wc.seed)},
        threshold=cfg["threshold"],
        ece_bins=cfg["ece_bins"],
        n_bootstrap=cfg["bootstrap"],
    )
