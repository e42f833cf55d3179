"""Wiring only: a dataset's data files -> a trained Demux encoder per seed and the estimate file."""

from labeldist.batched import keyed
from labeldist.demux import DemuxSettings, run_demux
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    run_demux(
        data={k: inp[k] for k in ("train", "dev", "test", "labels", "subsets")},
        estimates=out.estimates,
        model_dirs=keyed(dict(out.items()), "model__"),
        settings=DemuxSettings.from_config(params.demux),
        threads=snakemake.threads,  # noqa: F821
        device=params.device,
    )
