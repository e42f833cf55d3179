"""Wiring only: a model's config block -> results/models/{model}/base/ (tiny model, a converted GGUF, or model_ref.json)."""

from labeldist.models import make_base_model
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inputs = snakemake.input  # noqa: F821
    make_base_model(
        snakemake.output[0],  # noqa: F821
        snakemake.params.model,  # noqa: F821
        train_path=inputs.get("train"),
        labels_path=inputs.get("labels"),
        prompt_cfg=snakemake.params.prompt,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        name=snakemake.wildcards.model,  # noqa: F821
    )
