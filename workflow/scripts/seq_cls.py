"""Wiring only: base model + data of one (dataset, model) -> seq_cls_head estimates (main, dev) per seed."""

from labeldist.runlog import rule_log
from labeldist.seq_cls import seq_cls_from_files

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    for seed in params.seeds:
        seq_cls_from_files(
            base_path=inp.base,
            data_files={key: inp[key] for key in ("train", "dev", "test", "labels", "subsets")},
            out_files={s: out[f"{s}__{seed}"] for s in ("main", "dev")},
            seq_cls_cfg=params.seq_cls,
            seed=seed,
            device=params.device,
            dtype=params.dtype,
            load_in_4bit=params.load_in_4bit,
            threads=snakemake.threads,  # noqa: F821
        )
