"""Wiring only: SFT (or base) model + train split of one (dataset, model) -> merged GRPO folder."""

from labeldist.finetune import rl_from_files
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    rl_from_files(
        start_path=inp.start,
        data_files={key: inp[key] for key in ("train", "dev", "labels", "subsets")},
        out_dir=snakemake.output[0],  # noqa: F821
        prompt_cfg=params.prompt,
        rl_cfg=params.rl,
        sft_cfg=params.sft,
        gen_cfg=params.generation,
        device=params.device,
        dtype=params.dtype,
        model_load_in_4bit=params.load_in_4bit,
        threads=snakemake.threads,  # noqa: F821
    )
