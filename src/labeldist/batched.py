"""Several outputs of one stage in one job (a cluster-friendly DAG, docs/study_grid.md).

At study scale one job per generation file, estimate and metrics file makes ~13,000 jobs, most of
them seconds of CPU work that a SLURM scheduler turns into minutes of latency each. The rules group
them instead, each job writing the files of docs/formats.md for several subsets, seeds or estimators:

- generation: one job per (dataset, model, regime, prompting mode) writes every evaluation subset of
  that mode for every seed, loading the model once (`generate_subsets`);
- estimates and metrics: one job per (dataset, model, regime) writes, for every seed, each estimator that
  reads generation files (subsets main and dev), and the run's metrics file (`evaluate_run`).

A job's outputs are all rewritten when any of its inputs changes; a job whose inputs are unchanged is
not rerun. `evaluation_groups` and `run_estimators` say which files a grouped job writes (per-model
and per-regime prompting modes, models.<key>.prompting, give runs different sets).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

SUPERVISED = ("linear_probe", "demux", "seq_cls_head")
"""Estimators with their own training rules (probes.smk, demux.smk, finetune.smk)."""


# ---- which files a grouped job writes -----------------------------------------------------------------
@dataclass(frozen=True)
class EvalGroup:
    """The runs one grouped estimate-and-metrics rule serves: every planned (dataset, model, regime) with a
    model in `models` and a regime in `regimes` runs the prompting modes `prompting`; `rule` is its name."""

    prompting: tuple[str, ...]
    models: tuple[str, ...]
    regimes: tuple[str, ...]
    rule: str


def evaluation_groups(cfg: Mapping[str, Any]) -> list[EvalGroup]:
    """Return the grouped evaluate rules of a config, in config order: one per set of prompting modes that
    some (model, regime) runs (models.<key>.prompting), named `evaluate` when there is one set, else
    `evaluate_<modes>`. Each rule's wildcards are constrained to its models and regimes; where that
    product would take in a planned (model, regime) that runs other modes (prompting given per regime),
    the set gets one rule per model, `evaluate_<modes>_<model>`."""
    from .config import model_prompting, model_regimes

    planned = {(m, r): tuple(model_prompting(cfg, m, r)) for m in cfg["models"] for r in model_regimes(cfg, m)}
    by_prompting: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for pair, prompting in planned.items():
        by_prompting.setdefault(prompting, []).append(pair)
    single = len(by_prompting) == 1
    groups = []
    for prompting, pairs in by_prompting.items():
        name = "evaluate" if single else "evaluate_" + ("_".join(prompting) or "none")
        models = tuple(dict.fromkeys(m for m, _ in pairs))
        regimes = tuple(r for r in cfg["regimes"] if any(r == x for _, x in pairs))
        clash = any(planned.get((m, r), prompting) != prompting for m in models for r in regimes)
        if not clash:
            groups.append(EvalGroup(prompting, models, regimes, name))
            continue
        for m in models:
            own = tuple(r for r in cfg["regimes"] if (m, r) in pairs)
            groups.append(EvalGroup(prompting, (m,), own, f"{name}_{m}"))
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


# ---- generation ---------------------------------------------------------------------------------------
def generate_subsets(model_dir: str | os.PathLike, data_files: Mapping[str, str], prompting: str,
                     outputs: Mapping[tuple[str, int], str], gen_cfg: Mapping[str, Any],
                     prompt_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any],
                     hidden_outputs: Mapping[tuple[str, int], str] | None = None, device: str = "auto",
                     threads: int | None = None) -> None:
    """Load the model once and run `prompting` on each (subset, seed) of `outputs` ({(subset, seed):
    path}, seeds in ascending order), writing each generation file (and, for baseline, its hidden states
    to `hidden_outputs`) as `labeldist.generation.generate_file` does for one subset and seed."""
    from .generation import load_task_data, run_prompting, write_generation
    from .hf import set_threads
    from .models import load_causal_lm
    from .prompts import PromptSpec, chat_fallback_note

    set_threads(threads)
    spec = PromptSpec.from_config(prompt_cfg)
    model, tokenizer = load_causal_lm(model_dir, device=device, dtype=model_cfg["dtype"],
                                      load_in_4bit=bool(model_cfg["load_in_4bit"]))
    note = chat_fallback_note(spec, tokenizer, str(model_dir))
    if note:
        log.warning(note)
    data = {}
    for (subset, seed), out in sorted(outputs.items(), key=lambda item: item[0][1]):  # stable: subset order
        if subset not in data:
            data[subset] = load_task_data(data_files, subset)
        task = data[subset]
        log.info("%s on %s/%s: %d examples, %d demos in the pool, seed %d", prompting, subset, model_dir,
                 len(task.examples), len(task.pool), seed)
        result = run_prompting(model, tokenizer, task, prompting, spec, gen_cfg, seed)
        hidden = (hidden_outputs or {}).get((subset, seed)) if prompting == "baseline" else None
        write_generation(result, out, hidden)


# ---- estimates and metrics ------------------------------------------------------------------------------
def evaluate_run(estimators: Sequence[str], metric_estimators: Sequence[str],
                 generations: Mapping[tuple[str, str, int], str], outputs: Mapping[str, str],
                 supervised: Mapping[str, str], metrics_out: str, *, data: Mapping[str, str],
                 meta: Mapping[str, Any], seeds: Sequence[int], threshold: float, ece_bins: int,
                 n_bootstrap: int, estimation: Mapping[str, Any], threads: int = 1) -> list[dict[str, Any]]:
    """Write the estimate file of each generation-reading estimator in `estimators` (`outputs`:
    {estimator: path}; every seed, subsets main and dev, read from `generations`: {(prompting mode,
    subset, seed): path}), then the metrics file `metrics_out` of the run: a JSON list with the metrics
    of each estimator in `metric_estimators` and seed (labeldist.metrics.run_metrics), seeds in order.
    `supervised` ({estimator: path}) holds the estimate files other rules wrote (linear_probe,
    seq_cls_head, demux); `data` the run's test, dev, labels and subsets files; `meta` its dataset,
    model and regime; `estimation` the config `estimation` block (labeldist.estimators.EstimationSettings).
    Returns the metrics objects."""
    from .artifacts.estimates import SUBSET_ORDER, write_estimates
    from .config import ESTIMATOR_PROMPTING
    from .estimators import EstimationSettings, estimate
    from .artifacts.metrics import write_metrics
    from .metrics import run_metrics

    settings = EstimationSettings.from_config(estimation)
    for est, out in outputs.items():
        if est not in estimators:
            raise ValueError(f"evaluate_run: output for {est!r}, which is not among {list(estimators)}")
        prompting, platt = ESTIMATOR_PROMPTING[est], est == "compare_to_none_platt"
        parts = {}
        for seed in seeds:
            for subset in SUBSET_ORDER:
                parts[(subset, seed)] = estimate(
                    est, generations[(prompting, subset, seed)], data["labels"], seed=seed,
                    dev_generations=generations[("baseline", "dev", seed)] if platt else None,
                    dev_data=data["dev"] if platt else None, threads=threads, settings=settings)
        frame = write_estimates(out, parts)
        log.info("%s: %d rows (%d seeds) written to %s", est, len(frame), len(seeds), out)
    files = {**supervised, **outputs}
    results = []
    for seed in seeds:
        for est in metric_estimators:
            reads_baseline = ESTIMATOR_PROMPTING[est] == "baseline"
            results.append(run_metrics(
                estimates=files[est], seed=seed, test_data=data["test"], dev_data=data["dev"],
                labels=data["labels"], subsets=data["subsets"],
                generation=generations[("baseline", "main", seed)] if reads_baseline else None,
                meta={**meta, "estimator": est, "seed": seed}, threshold=threshold, ece_bins=ece_bins,
                n_bootstrap=n_bootstrap))
            log.info("metrics of %s, seed %s", est, seed)
    write_metrics(metrics_out, results)
    log.info("%d metrics objects written to %s", len(results), metrics_out)
    return results


# ---- rule helpers (input functions of the grouped rules; paths come from the workflow's functions) ----
def gpu_resource(n_gpus: int, kind: str = "gpu") -> int | str:
    """The value of a job's GPU resource: `n_gpus` for kind `gpu` (the SLURM plugin: --gpus=N), or the
    GRES string 'gpu:N' for kind `gres` (--gres=gpu:N; '' asks for none). Config `gpu_resource`."""
    if kind == "gres":
        return f"gpu:{n_gpus}" if n_gpus else ""
    return int(n_gpus)


def metric_estimators(cfg: Mapping[str, Any], prompting: Sequence[str], regime: str) -> list[str]:
    """The estimators in the metrics file of a (dataset, model, regime) of a model running `prompting`, in
    config order: its generation-reading estimators, linear_probe (with baseline), and seq_cls_head on
    base."""
    ests = run_estimators(cfg, prompting, supervised=True)
    if regime == "base" and "seq_cls_head" in cfg["estimators"]:
        ests.append("seq_cls_head")
    return [e for e in cfg["estimators"] if e in ests]


def evaluate_inputs(cfg: Mapping[str, Any], prompting: Sequence[str], generation_file, estimate_file,
                    data_files):
    """Input function of an evaluate rule: every generation file its estimators read (subsets main and
    dev, every seed: keys gen__{mode}__{subset}__{seed}), the other rules' estimate files it scores (keys
    est__{estimator}), and the data files test, dev, labels and subsets."""
    from .config import ESTIMATOR_PROMPTING

    seeds = cfg["seeds"]

    def inputs(wildcards):
        w = wildcards
        ests = metric_estimators(cfg, prompting, w.regime)
        modes = [m for m in ("baseline", "unary", "pairwise") if any(ESTIMATOR_PROMPTING[e] == m for e in ests)]
        files = {f"gen__{m}__{s}__{seed}": generation_file(w.dataset, w.model, w.regime, m, s, seed)
                 for m in modes for s in ("main", "dev") for seed in seeds}
        files.update({f"est__{e}": estimate_file(w.dataset, w.model, w.regime, e) for e in ests if e in SUPERVISED})
        data = data_files(w.dataset)
        files.update({k: data[k] for k in ("test", "dev", "labels", "subsets")})
        return files

    return inputs


def keyed(named: Mapping[str, str], prefix: str) -> dict[Any, str]:
    """{the key's parts after `prefix`: path} for the named inputs/outputs `prefix`..., split on '__',
    digit-only parts (seeds) as int, one part as itself (gen__baseline__main__0 -> ('baseline', 'main', 0);
    est__first_step -> 'first_step')."""
    out: dict[Any, str] = {}
    for key, path in named.items():
        if key.startswith(prefix):
            parts = tuple(int(p) if p.isdigit() else p for p in key[len(prefix):].split("__"))
            out[parts[0] if len(parts) == 1 else parts] = path
    return out
