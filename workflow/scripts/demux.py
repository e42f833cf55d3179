"""Wiring only: a dataset's data files -> a trained Demux encoder and its main/dev estimates per seed."""

from labeldist.demux import DemuxSettings, run_demux
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    for seed in params.seeds:
        run_demux(
            data={k: inp[k] for k in ("train", "dev", "test", "labels", "subsets")},
            estimates={s: out[f"{s}__{seed}"] for s in ("main", "dev")},
            model_dir=out[f"model__{seed}"],
            settings=DemuxSettings.from_config(params.demux),
            seed=seed,
            threads=snakemake.threads,  # noqa: F821
            device=params.device,
        )
