"""Wiring only: model folder + data files -> the generation files of every subset of one prompting mode
(+ hidden states for baseline)."""

from labeldist.batched import generate_subsets
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inputs, params, out = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
    generate_subsets(
        inputs.model,
        {key: inputs[key] for key in ("train", "dev", "test", "labels", "subsets")},
        params.prompting,
        {k.removeprefix("records__"): v for k, v in out.items() if k.startswith("records__")},
        params.seed,
        params.generation,
        params.prompt,
        params.model,
        hidden_outputs={k.removeprefix("hidden__"): v for k, v in out.items() if k.startswith("hidden__")},
        device=params.device,
        threads=snakemake.threads,  # noqa: F821
    )
