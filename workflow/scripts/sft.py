"""Wiring only: base model + train split of one (dataset, model) -> merged SFT folder."""

from labeldist.finetune import sft_from_files
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    sft_from_files(
        base_path=inp.base,
        data_files={key: inp[key] for key in ("train", "dev", "labels", "subsets")},
        out_dir=snakemake.output[0],  # noqa: F821
        prompt_cfg=params.prompt,
        sft_cfg=params.sft,
        gen_cfg=params.generation,
        device=params.device,
        dtype=params.dtype,
        model_load_in_4bit=params.load_in_4bit,
        threads=snakemake.threads,  # noqa: F821
    )
