"""Wiring only: base model + data of one (dataset, model) -> the seq_cls_head estimate file, every seed."""

from labeldist.runlog import rule_log
from labeldist.seq_cls import seq_cls_from_files

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    seq_cls_from_files(
        base_path=inp.base,
        data_files={key: inp[key] for key in ("train", "dev", "test", "labels", "subsets")},
        out_file=out.estimates,
        seq_cls_cfg=params.seq_cls,
        seeds=params.seeds,
        device=params.device,
        dtype=params.dtype,
        load_in_4bit=params.load_in_4bit,
        threads=snakemake.threads,  # noqa: F821
    )
