"""Wiring only: hidden states + generations + gold labels of one (dataset, model, regime) -> the probes of
every seed."""

from labeldist.probes import run_linear_probes
from labeldist.runlog import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    for seed in params.seeds:
        run_linear_probes(
            hidden={s: inp[f"hidden_{s}__{seed}"] for s in ("train", "main", "dev")},
            generations={s: inp[f"generations_{s}__{seed}"] for s in ("train", "main")},
            train_data=inp.train,
            labels_json=inp.labels,
            estimates={s: out[f"{s}__{seed}"] for s in ("main", "dev")},
            layer_tables={s: out[f"layers_{s}__{seed}"] for s in ("main", "dev")},
            own_labels=out[f"own_labels__{seed}"],
            layers=params.probes["layers"],
            max_svd_dim=params.probes["max_svd_dim"],
            seed=seed,
            threads=snakemake.threads,  # noqa: F821
        )
