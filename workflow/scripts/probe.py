"""Wiring only: hidden states + generations + gold labels of one (dataset, model, regime, seed) -> probes."""

from labeldist.probes import run_linear_probes
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out = snakemake.input, snakemake.output  # noqa: F821
    run_linear_probes(
        hidden={s: inp[f"hidden_{s}"] for s in ("train", "main", "dev")},
        generations={s: inp[f"generations_{s}"] for s in ("train", "main")},
        train_data=inp.train,
        labels_json=inp.labels,
        estimates={"main": out.main, "dev": out.dev},
        layer_tables={"main": out.layers_main, "dev": out.layers_dev},
        own_labels=out.own_labels,
        layers=snakemake.params.probes["layers"],  # noqa: F821
        max_svd_dim=snakemake.params.probes["max_svd_dim"],  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
