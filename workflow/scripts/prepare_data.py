"""Wiring only: a dataset's config block -> its train/dev/test.jsonl, labels.json and subsets.json."""

from labeldist.data import prepare_data
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    prepare_data(
        snakemake.params.name,  # noqa: F821
        snakemake.params.dataset,  # noqa: F821
        {key: snakemake.output[key] for key in ("train", "dev", "test", "labels", "subsets")},  # noqa: F821
    )
