"""Several outputs of one stage in one job (a cluster-friendly DAG, docs/study_grid.md).

At study scale one job per generation file, estimate and metrics file makes ~13,000 jobs, most of
them seconds of CPU work that a SLURM scheduler turns into minutes of latency each. The rules group
them instead, each job writing the very files (and bytes) the one-file jobs wrote:

- generation: one job per (dataset, model, regime, prompting mode, seed) writes every evaluation subset
  of that mode, loading the model once (`generate_subsets`);
- estimates: one job per (dataset, model, regime, seed) writes every estimator that reads generation
  files, for subsets main and dev (`estimate_run`);
- metrics: one job per (dataset, model, regime, seed) writes the metrics file of each of its
  estimators (`metrics_run`).

A job's outputs are all rewritten when any of its inputs changes; a job whose inputs are unchanged is
not rerun. `prompting_groups` and `run_estimators` say which files a grouped job writes (per-model
prompting modes, models.<key>.prompting, give models different sets).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

SUPERVISED = ("linear_probe", "demux", "seq_cls_head")
"""Estimators with their own training rules (probes.smk, demux.smk, finetune.smk)."""


# ---- which files a grouped job writes -----------------------------------------------------------------
def prompting_groups(cfg: Mapping[str, Any]) -> dict[tuple[str, ...], list[str]]:
    """Return {prompting modes: [model keys]}: models grouped by the prompting modes they run, in config
    order (one grouped estimate rule and one grouped metrics rule per group)."""
    from .config import model_prompting

    groups: dict[tuple[str, ...], list[str]] = {}
    for model in cfg["models"]:
        groups.setdefault(tuple(model_prompting(cfg, model)), []).append(model)
    return groups


def run_estimators(cfg: Mapping[str, Any], prompting: Sequence[str], *, supervised: bool = False) -> list[str]:
    """The configured estimators a (dataset, model, regime) of a model running `prompting` has, in config
    order: those reading a generation file of one of these modes, plus (with `supervised`)
    linear_probe when baseline is among them. demux and seq_cls_head are never included (they have no
    regime dimension of their own)."""
    from .config import ESTIMATOR_PROMPTING

    out = []
    for est in cfg["estimators"]:
        if est in ("demux", "seq_cls_head") or (est == "linear_probe" and not supervised):
            continue
        if ESTIMATOR_PROMPTING[est] in prompting:
            out.append(est)
    return out


def rule_suffix(prompting: Sequence[str], groups: Mapping[tuple[str, ...], list[str]]) -> str:
    """A rule-name suffix for one prompting group: '' when the config has one group, else the modes."""
    return "" if len(groups) == 1 else "_" + ("_".join(prompting) or "none")


# ---- generation ---------------------------------------------------------------------------------------
def generate_subsets(model_dir: str | os.PathLike, data_files: Mapping[str, str], prompting: str,
                     outputs: Mapping[str, str], seed: int, gen_cfg: Mapping[str, Any],
                     prompt_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any],
                     hidden_outputs: Mapping[str, str] | None = None, device: str = "auto",
                     threads: int | None = None) -> None:
    """Load the model once and run `prompting` with `seed` on each subset of `outputs` ({subset: path},
    in order), writing each generation file (and, for baseline, its hidden states to `hidden_outputs`)
    as `labeldist.generation.generate_file` does for one subset."""
    import torch

    from .generation import load_task_data, run_prompting, write_generation
    from .models import load_causal_lm
    from .prompts import PromptSpec

    if threads:
        torch.set_num_threads(int(threads))
    spec = PromptSpec.from_config(prompt_cfg)
    model, tokenizer = load_causal_lm(model_dir, device=device, dtype=model_cfg.get("dtype", "auto"),
                                      load_in_4bit=bool(model_cfg.get("load_in_4bit", False)))
    for subset, out in outputs.items():
        data = load_task_data(data_files, subset)
        log.info("%s on %s/%s: %d examples, %d demos in the pool, seed %d", prompting, subset, model_dir,
                 len(data.examples), len(data.pool), seed)
        result = run_prompting(model, tokenizer, data, prompting, spec, gen_cfg, int(seed))
        hidden = (hidden_outputs or {}).get(subset) if prompting == "baseline" else None
        write_generation(result, out, hidden)


# ---- estimates ----------------------------------------------------------------------------------------
def estimate_run(estimators: Sequence[str], generations: Mapping[tuple[str, str], str], labels_file: str,
                 outputs: Mapping[tuple[str, str], str], *, seed: int = 0, dev_data: str | None = None,
                 threads: int = 1) -> None:
    """Write the estimate of each (estimator, subset) in `outputs` from the generation files
    `generations` ({(prompting mode, subset): path}); compare_to_none_platt fits on the baseline dev
    generation and `dev_data` (labeldist.estimators.write_estimate)."""
    from .config import ESTIMATOR_PROMPTING
    from .estimators import write_estimate

    for (est, subset), out in outputs.items():
        if est not in estimators:
            raise ValueError(f"estimate_run: output for {est!r}, which is not among {list(estimators)}")
        prompting = ESTIMATOR_PROMPTING[est]
        platt = est == "compare_to_none_platt"
        write_estimate(est, generations[(prompting, subset)], labels_file, out, seed=seed,
                       dev_generations=generations[("baseline", "dev")] if platt else None,
                       dev_data=dev_data if platt else None, threads=threads)


# ---- metrics ------------------------------------------------------------------------------------------
def metrics_run(outputs: Mapping[str, str], estimates: Mapping[tuple[str, str], str], *, test_data: str,
                dev_data: str, labels: str, subsets: str, baseline_generation: str | None,
                meta: Mapping[str, Any], threshold: float, ece_bins: int, n_bootstrap: int) -> None:
    """Write the metrics JSON of each estimator in `outputs` ({estimator: path}) from its main and dev
    estimates (`estimates`: {(estimator, subset): path}); estimators reading baseline generations
    count that run's baseline main generation (labeldist.metrics.run_metrics)."""
    from .config import ESTIMATOR_PROMPTING
    from .io import write_json
    from .metrics import run_metrics

    for est, out in outputs.items():
        result = run_metrics(
            estimates=estimates[(est, "main")], dev_estimates=estimates[(est, "dev")], test_data=test_data,
            dev_data=dev_data, labels=labels, subsets=subsets,
            generation=baseline_generation if ESTIMATOR_PROMPTING[est] == "baseline" else None,
            meta={**meta, "estimator": est}, threshold=threshold, ece_bins=ece_bins, n_bootstrap=n_bootstrap)
        write_json(out, result)
        log.info("metrics of %s written to %s", est, out)


# ---- rule helpers (input functions of the grouped rules; paths come from the workflow's functions) ----
def gpu_resource(n_gpus: int, kind: str = "gpu") -> int | str:
    """The value of a job's GPU resource: `n_gpus` for kind `gpu` (the SLURM plugin: --gpus=N), or the
    GRES string 'gpu:N' for kind `gres` (--gres=gpu:N; '' asks for none). Config `gpu_resource`."""
    if kind == "gres":
        return f"gpu:{n_gpus}" if n_gpus else ""
    return int(n_gpus)


def estimate_inputs(generation_file, data_files, estimators: Sequence[str]):
    """Input function of a grouped estimate rule: every generation file its estimators read (subsets
    main and dev, keys gen__{mode}__{subset}), labels.json, and the dev split when Platt scaling runs."""
    from .config import ESTIMATOR_PROMPTING

    modes = [m for m in ("baseline", "unary", "pairwise") if any(ESTIMATOR_PROMPTING[e] == m for e in estimators)]
    platt = "compare_to_none_platt" in estimators

    def inputs(wildcards):
        files = {f"gen__{m}__{s}": generation_file(wildcards.dataset, wildcards.model, wildcards.regime, m, s,
                                                 wildcards.seed)
                 for m in modes for s in ("main", "dev")}
        data = data_files(wildcards.dataset)
        files["labels"] = data["labels"]
        if platt:
            files["dev_data"] = data["dev"]
        return files

    return inputs


def metrics_inputs(estimate_file, generation_file, data_files, estimators: Sequence[str]):
    """Input function of a grouped metrics rule: each estimator's main and dev estimates (keys
    est__{estimator}__{subset}), the data files, and the baseline main generation when an estimator
    reads baseline generations (its counts)."""
    from .config import ESTIMATOR_PROMPTING

    baseline = any(ESTIMATOR_PROMPTING[e] == "baseline" for e in estimators)

    def inputs(wildcards):
        w = wildcards
        files = {f"est__{e}__{s}": estimate_file(w.dataset, w.model, w.regime, e, s, w.seed)
                 for e in estimators for s in ("main", "dev")}
        data = data_files(w.dataset)
        files.update({k: data[k] for k in ("test", "dev", "labels", "subsets")})
        if baseline:
            files["generation"] = generation_file(w.dataset, w.model, w.regime, "baseline", "main", w.seed)
        return files

    return inputs


def keyed(named: Mapping[str, str], prefix: str) -> dict[tuple[str, ...], str]:
    """{tuple of the key's parts after `prefix`: path} for the named inputs/outputs `prefix`..., split on
    '__' (e.g. est__first_step__main -> ('first_step', 'main'))."""
    return {tuple(k[len(prefix):].split("__")): v for k, v in named.items() if k.startswith(prefix)}
