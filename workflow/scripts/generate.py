"""Wiring only: model folder + data files -> one generation file (+ hidden states for baseline)."""

from labeldist.generation import generate_file
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inputs, params = snakemake.input, snakemake.params  # noqa: F821
    generate_file(
        inputs.model,
        {key: inputs[key] for key in ("train", "dev", "test", "labels", "subsets")},
        params.prompting,
        params.subset,
        params.seed,
        params.generation,
        params.prompt,
        params.model,
        snakemake.output.records,  # noqa: F821
        hidden_output=snakemake.output.get("hidden"),  # noqa: F821
        device=params.device,
        threads=snakemake.threads,  # noqa: F821
    )
