"""Wiring only: one generation file (+ labels.json, + dev inputs for Platt) -> one estimate parquet."""

from labeldist.estimators import write_estimate
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    write_estimate(
        snakemake.params.estimator,  # noqa: F821
        snakemake.input.generations,  # noqa: F821
        snakemake.input.labels,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        dev_generations=snakemake.input.get("dev_generations"),  # noqa: F821
        dev_data=snakemake.input.get("dev_data"),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
