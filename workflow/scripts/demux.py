"""Wiring only: a dataset's data files -> a trained Demux encoder and its main/dev estimates."""

from labeldist.demux import DemuxSettings, run_demux
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out = snakemake.input, snakemake.output  # noqa: F821
    run_demux(
        data={k: inp[k] for k in ("train", "dev", "test", "labels", "subsets")},
        estimates={"main": out.main, "dev": out.dev},
        model_dir=out.model,
        settings=DemuxSettings.from_config(snakemake.params.demux),  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        device=snakemake.params.device,  # noqa: F821
    )
