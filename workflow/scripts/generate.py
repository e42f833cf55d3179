"""Wiring only: model folder + data files -> the generation files of every subset and seed of one
prompting mode (+ hidden states for baseline)."""

from labeldist.batched import generate_subsets, keyed
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inputs, params, out = snakemake.input, snakemake.params, dict(snakemake.output.items())  # noqa: F821
    generate_subsets(
        inputs.model,
        {key: inputs[key] for key in ("train", "dev", "test", "labels", "subsets")},
        params.prompting,
        keyed(out, "records__"),
        params.generation,
        params.prompt,
        params.model,
        hidden_outputs=keyed(out, "hidden__"),
        device=params.device,
        threads=snakemake.threads,  # noqa: F821
    )
