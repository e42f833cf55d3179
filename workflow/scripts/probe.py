"""Wiring only: hidden states + generations + gold labels of one (dataset, model, regime) -> the probe
stage's three files, every seed in them."""

from labeldist.batched import keyed
from labeldist.probes import run_linear_probes
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = dict(snakemake.input.items()), snakemake.output, snakemake.params  # noqa: F821
    run_linear_probes(
        hidden=keyed(inp, "hidden__"),
        generations=keyed(inp, "generations__"),
        train_data=inp["train"],
        labels_json=inp["labels"],
        seeds=params.seeds,
        estimates=out.estimates,
        layer_tables=out.layers,
        own_labels=out.own_labels,
        layers=params.probes["layers"],
        max_svd_dim=params.probes["max_svd_dim"],
        threads=snakemake.threads,  # noqa: F821
    )
