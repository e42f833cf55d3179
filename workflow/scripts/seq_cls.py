"""Wiring only: base model + data of one (dataset, model, seed) -> seq_cls_head estimates (main, dev)."""

from labeldist.runlog import rule_log
from labeldist.seq_cls import seq_cls_from_files

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    seq_cls_from_files(
        base_path=inp.base,
        data_files={key: inp[key] for key in ("train", "dev", "test", "labels", "subsets")},
        out_files={"main": out.main, "dev": out.dev},
        seq_cls_cfg=params.seq_cls,
        seed=params.seed,
        device=params.device,
        dtype=params.dtype,
        load_in_4bit=params.load_in_4bit,
        threads=snakemake.threads,  # noqa: F821
    )
