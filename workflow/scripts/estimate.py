"""Wiring only: the generation files of one (dataset, model, regime, seed) -> every estimator's parquet
for subsets main and dev."""

from labeldist.batched import estimate_run, keyed
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp = snakemake.input  # noqa: F821
    estimate_run(
        snakemake.params.estimators,  # noqa: F821
        keyed(dict(inp.items()), "gen__"),
        inp.labels,
        keyed(dict(snakemake.output.items()), "est__"),  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        dev_data=inp.get("dev_data"),
        threads=snakemake.threads,  # noqa: F821
    )
