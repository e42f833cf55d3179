"""Findings: the papers' claims tested on this run's outputs, each with a verdict (docs/methods.md, section 8).

For every claim and every dataset x model x regime (or pair of models / regimes where the claim
compares them) one row per *part* (a claim may need several statistics): the statistic, its estimate,
a percentile bootstrap interval over examples, the value it is tested against (`null`), the claimed
`direction` (`>` or `<`), the number of examples, a `verdict` and the `reason`:

- `not testable here`: the run lacks what the statistic needs (no such generation, estimator, second
  model or regime, annotator data, fewer than `min_examples` examples, or no bootstrap interval);
- `holds`: the whole interval lies on the claimed side of `null`;
- `does not hold`: the whole interval lies on the other side of `null` or touches it (for `>`:
  ci_high <= null; an effect of exactly zero is no improvement);
- `inconclusive`: the interval contains `null`.

A claim's verdict for one setting combines its parts (`combine_verdicts`): not testable if any part is,
else does not hold if any part does not hold, else holds if all parts hold, else inconclusive.

Statistics read from generation records are means over examples of per-example means (over the
example's label steps and the run's seeds), so long outputs do not outweigh short ones; their interval
is scipy's percentile bootstrap over examples, paired (per-example differences over the examples both
runs share) where two models or regimes are compared. Statistics read from metrics files are seed
means, and their interval comes from the metrics files' bootstrap resamples, which use the same example
indices in every run (labeldist.metrics.bootstrap_indices): the difference of two estimators is taken
resample by resample, i.e. paired.

The rules and thresholds were written down (docs/methods.md) before any result was looked at.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, linregress

from . import analysis
from .artifacts.generations import Generation
from .artifacts.labels import LabelSet
from .artifacts.metrics import read_metric_files
from .artifacts import paths as layout
from .artifacts.tables import read_training_log, write_table_csv
from .io import atomic_path
from .settings import FromConfig
from .tables import bootstrap_interval, markdown_table, to_html, to_markdown

log = logging.getLogger(__name__)

HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE = "holds", "does not hold", "inconclusive", "not testable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE)

CLAIMS: dict[str, str] = {
    "spiky": "Per-step label distributions are spiky (top probability near 1, low entropy)",
    "suppression": "All but one label is suppressed at each step (the next label jumps from step r to r+1)",
    "runner_up": "The first step's ranking does not predict the later labels (runner-up at r is rarely "
                 "the label at r+1)",
    "scale": "Larger models have lower entropy but rank labels better",
    "finetuning": "Finetuning (SFT, RL) makes the distributions spikier",
    "max_over_steps": "Max over steps improves alignment (L1, soft BCE) and F1 over the first step",
    "icl_sweep": "More multi-label demonstrations give more multi-label outputs",
    "supervised": "Supervised estimators (probes, Demux) align better than the zero-shot ones",
    "marginal": "Marginal beats conditional and joint on F1 and AUC (token-level paper)",
}
"""Claim id -> the claim as tested (docs/methods.md, section 8, cites the papers' sections)."""

ZERO_SHOT = ("first_step", "first_step_whole", "compare_to_none", "compare_to_none_platt", "max_over_steps",
             "max_over_steps_whole", "output", "conditional", "joint", "marginal", "unary", "pairwise_bt",
             "pairwise_outcome")
SUPERVISED = ("linear_probe", "demux")
ENCODER = "encoder"  # Demux's pseudo model key (docs/formats.md)
FINETUNED = ("sft", "rl")

COLUMNS = ["claim", "dataset", "model", "regime", "setting", "part", "statistic", "estimate", "ci_low",
           "ci_high", "null", "direction", "n", "verdict", "reason"]


@dataclass(frozen=True)
class Settings(FromConfig):
    """Thresholds and bootstrap settings (config `findings`; defaults: the config schema)."""

    CONFIG_BLOCK: ClassVar[str] = "findings"

    bootstrap: int
    ci_level: float
    seed: int
    min_examples: int
    spiky_top_prob: float
    spiky_entropy_bits: float
    suppression_gap: float
    runner_up_same_max: float
    ranking_estimator: str


# ---- verdict rules --------------------------------------------------------------------------------
def verdict(estimate: float, ci_low: float, ci_high: float, null: float, direction: str, n: int,
            min_examples: int) -> tuple[str, str]:
    """Return (verdict, reason) for a statistic claimed to lie on the `direction` side (`>` or `<`) of `null`."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    if n < min_examples:
        return UNTESTABLE, f"{n} examples (fewer than {min_examples})"
    if any(v is None or not math.isfinite(v) for v in (estimate, ci_low, ci_high)):
        return UNTESTABLE, "no bootstrap interval (undefined statistic or no resamples)"
    interval = f"interval [{ci_low:.3g}, {ci_high:.3g}]"
    if direction == ">":
        if ci_low > null:
            return HOLDS, f"{interval} above {null:g}"
        if ci_high <= null:
            return FAILS, f"{interval} not above {null:g}"
    else:
        if ci_high < null:
            return HOLDS, f"{interval} below {null:g}"
        if ci_low >= null:
            return FAILS, f"{interval} not below {null:g}"
    return INCONCLUSIVE, f"{interval} contains {null:g}"


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """Return a claim's verdict from its parts' (see the module docstring)."""
    vs = list(verdicts)
    if not vs or UNTESTABLE in vs:
        return UNTESTABLE
    if FAILS in vs:
        return FAILS
    if all(v == HOLDS for v in vs):
        return HOLDS
    return INCONCLUSIVE


def bootstrap_mean(values: Sequence[float], settings: Settings) -> tuple[float, float, float]:
    """Return (mean, ci_low, ci_high): scipy's percentile bootstrap of the mean over the values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2 or settings.bootstrap < 1:
        return (float(x.mean()) if len(x) else math.nan), math.nan, math.nan
    res = bootstrap((x,), np.mean, n_resamples=settings.bootstrap, confidence_level=settings.ci_level / 100,
                    method="percentile", random_state=np.random.default_rng(settings.seed), vectorized=True)
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _row(claim: str, dataset: str, model: str, regime: str, setting: str, part: str, statistic: str,
         stats: tuple[float, float, float], null: float, direction: str, n: int, settings: Settings,
         reason: str | None = None) -> dict:
    est, low, high = stats
    if reason is None:
        v, why = verdict(est, low, high, null, direction, n, settings.min_examples)
    else:
        v, why = UNTESTABLE, reason
    return {"claim": claim, "dataset": dataset, "model": model, "regime": regime, "setting": setting,
            "part": part, "statistic": statistic, "estimate": est, "ci_low": low, "ci_high": high,
            "null": null, "direction": direction, "n": int(n), "verdict": v, "reason": why}


NAN3 = (math.nan, math.nan, math.nan)


# ---- per-example statistics from generation records -------------------------------------------------
def suppression_rows(record: Generation, names: Sequence[str], kind: str = "first_token") -> list[dict]:
    """Return, for each step r whose next slot holds a known label, p_r and p_{r+1} of that next label."""
    index = {name: i for i, name in enumerate(names)}
    steps = record.steps
    dists = [analysis.step_distribution(s, kind) for s in steps]
    rows = []
    for r in range(len(steps) - 1):
        nxt = steps[r + 1].label
        if nxt is not None:
            k = index[nxt]
            rows.append({"id": record.id, "p_r": float(dists[r][k]), "p_next": float(dists[r + 1][k])})
    return rows


EXAMPLE_COLUMNS = ["id", "n_steps", "top_prob", "entropy_bits", "same", "gap"]


def example_stats(records: Sequence[Generation], label_set: LabelSet) -> pd.DataFrame:
    """Return one row per example with a label step: n_steps and the means over its steps of top_prob and
    entropy_bits, `same` (share of its intermediate steps whose runner-up is the next label; NaN without
    one) and `gap` (mean of p_{r+1}(next label) - p_r(next label); NaN without a next label).
    """
    steps = analysis.step_table(records, label_set)
    if steps.empty:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    out = steps.groupby("id").agg(n_steps=("step", "size"), top_prob=("top_prob", "mean"),
                                  entropy_bits=("entropy_bits", "mean"))
    known = steps[steps["same"].notna()]
    out["same"] = known.assign(same=known["same"].astype(float)).groupby("id")["same"].mean()
    sup = pd.DataFrame([row for rec in records for row in suppression_rows(rec, label_set.with_none)],
                       columns=["id", "p_r", "p_next"])
    out["gap"] = (sup["p_next"] - sup["p_r"]).groupby(sup["id"]).mean() if len(sup) else math.nan
    return out.reset_index()[EXAMPLE_COLUMNS]


def pool_seeds(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Return per dataset x model x regime x id the mean over seeds of `columns` (NaNs ignored)."""
    keys = ["dataset", "model", "regime", "id"]
    if frame.empty:
        return pd.DataFrame(columns=keys + list(columns))
    return frame.groupby(keys, as_index=False)[list(columns)].mean()


def icl_slopes(counts: pd.DataFrame) -> pd.DataFrame:
    """Return per dataset x model x regime x id the least-squares slope of `multi` (0/1) on the sweep
    `ratio` (scipy linregress over the example's outputs at every ratio and seed); examples seen at
    fewer than two distinct ratios are left out.
    """
    rows = []
    for key, g in counts.groupby(["dataset", "model", "regime", "id"]):
        if g["ratio"].nunique() < 2:
            continue
        rows.append({**dict(zip(["dataset", "model", "regime", "id"], key)),
                     "slope": float(linregress(g["ratio"].astype(float), g["multi"].astype(float)).slope)})
    return pd.DataFrame(rows, columns=["dataset", "model", "regime", "id", "slope"])


# ---- metrics files ------------------------------------------------------------------------------------
def index_metrics(results: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str], list[Mapping]]:
    """Return {(dataset, model, regime, estimator): metrics objects, one per seed}."""
    out: dict[tuple[str, str, str, str], list[Mapping]] = {}
    for res in results:
        out.setdefault((res["dataset"], res["model"], res["regime"], res["estimator"]), []).append(res)
    return out


def _metric(res: Mapping[str, Any], metric: str) -> float:
    for group in ("alignment", "classification"):
        if metric in (res.get(group) or {}):
            value = res[group][metric]
            return math.nan if value is None else float(value)
    return math.nan


def metric_difference(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], metric: str,
                      level: float = 95.0) -> tuple[tuple[float, float, float], int, str | None]:
    """Return ((seed mean of a - b, ci_low, ci_high), n_examples, reason it is not testable or None).

    Seeds present in both are paired; per seed the difference is taken resample by resample of the
    metrics files' bootstrap (the same example indices in every run), then averaged over seeds as
    labeldist.tables does. Runs scored on different example sets are not comparable.
    """
    by_seed_b = {r["seed"]: r for r in b}
    pairs = [(r, by_seed_b[r["seed"]]) for r in a if r["seed"] in by_seed_b]
    if not pairs:
        return NAN3, 0, "no seed in common"
    if any(ra.get("ids_sha1") != rb.get("ids_sha1") for ra, rb in pairs):
        return NAN3, 0, "scored on different example sets"
    diffs = [_metric(ra, metric) - _metric(rb, metric) for ra, rb in pairs]
    if all(math.isnan(d) for d in diffs):
        return NAN3, 0, f"{metric} undefined"
    boot = []
    for ra, rb in pairs:
        va = (ra.get("bootstrap") or {}).get("values", {}).get(metric) or []
        vb = (rb.get("bootstrap") or {}).get("values", {}).get(metric) or []
        if len(va) != len(vb):
            return NAN3, 0, "bootstrap resamples differ in number"
        boot.append([math.nan if x is None or y is None else x - y for x, y in zip(va, vb)])
    low, high = bootstrap_interval(boot, level) if boot and boot[0] else (math.nan, math.nan)
    n = int(min(min(ra.get("n_examples", 0), rb.get("n_examples", 0)) for ra, rb in pairs))
    return (float(np.nanmean(diffs)), low, high), n, None


# ---- the claims ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What the run was configured to produce: what a missing input means (not testable, and why)."""

    datasets: Sequence[str]
    models: Sequence[str]
    regimes: Sequence[str]
    prompting: Sequence[str] = ("baseline",)
    estimators: Sequence[str] = ()
    model_sizes: Mapping[str, float] | None = None
    p_ref_sources: Mapping[str, str] | None = None
    # the (dataset, model, regime) runs the config plans (models.<key>.datasets/regimes; None: the full
    # grid) and each model's prompting modes (models.<key>.prompting; None or absent: `prompting`), as a
    # list or as {regime: list}
    runs: Sequence[Sequence[str]] | None = None
    model_prompting: Mapping[str, Sequence[str] | Mapping[str, Sequence[str]]] | None = None


def _runs(ctx: Context) -> list[tuple[str, str, str]]:
    """The planned runs, datasets outermost: claims are tested on these only."""
    if ctx.runs is not None:
        return [tuple(run) for run in ctx.runs]
    return [(d, m, r) for d in ctx.datasets for m in ctx.models for r in ctx.regimes]


def _prompting(ctx: Context, model: str, regime: str) -> Sequence[str]:
    """The prompting modes `model` runs in `regime`."""
    modes = (ctx.model_prompting or {}).get(model, ctx.prompting)
    return modes.get(regime, ctx.prompting) if isinstance(modes, Mapping) else modes


def _models_on(ctx: Context, dataset: str, regime: str) -> list[str]:
    """The models planned on `dataset` in `regime`, in config order."""
    return [m for d, m, r in _runs(ctx) if d == dataset and r == regime]


def _select(frame: pd.DataFrame, d: str, m: str, r: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame["dataset"] == d) & (frame["model"] == m) & (frame["regime"] == r)]


def _one_sample(claim, d, m, r, setting, part, statistic, values, null, direction, settings, missing) -> dict:
    values = pd.Series(values, dtype=float).dropna()
    if missing:
        return _row(claim, d, m, r, setting, part, statistic, NAN3, null, direction, 0, settings, missing)
    return _row(claim, d, m, r, setting, part, statistic, bootstrap_mean(values, settings), null, direction,
                len(values), settings)


def claims_from_steps(stats: pd.DataFrame, ctx: Context, settings: Settings) -> list[dict]:
    """Rows of claims spiky, suppression and runner_up: one-sample statistics per run."""
    rows = []
    for d, m, r in _runs(ctx):
        no_baseline = None if "baseline" in _prompting(ctx, m, r) else "no baseline generations (config prompting)"
        sub = _select(stats, d, m, r)
        missing = no_baseline or (None if len(sub) else "no output with a label step")
        one = lambda *a: rows.append(_one_sample(*a, settings, missing))  # noqa: E731
        one("spiky", d, m, r, "per-step distribution", "top probability", "mean top probability per step",
            sub.get("top_prob", []), settings.spiky_top_prob, ">")
        one("spiky", d, m, r, "per-step distribution", "entropy", "mean entropy per step (bits)",
            sub.get("entropy_bits", []), settings.spiky_entropy_bits, "<")
        gap_missing = missing or (None if len(sub) and sub["gap"].notna().any()
                                  else "no output with two known label slots")
        rows.append(_one_sample("suppression", d, m, r, "next emitted label", "p_{r+1} - p_r",
                                "mean of p_{r+1}(next label) - p_r(next label)", sub.get("gap", []),
                                settings.suppression_gap, ">", settings, gap_missing))
        rows.append(_one_sample("runner_up", d, m, r, "intermediate steps", "same", "share of steps whose "
                                "runner-up is the next label", sub.get("same", []), settings.runner_up_same_max,
                                "<", settings, gap_missing))
    return rows


def _paired_examples(a: pd.DataFrame, b: pd.DataFrame, column: str) -> pd.Series:
    """Per-example a - b of `column` over the ids both have (NaNs dropped)."""
    merged = a[["id", column]].merge(b[["id", column]], on="id", suffixes=("_a", "_b"))
    return (merged[f"{column}_a"] - merged[f"{column}_b"]).dropna()


def claim_finetuning(stats: pd.DataFrame, ctx: Context, settings: Settings) -> list[dict]:
    """Rows of claim finetuning: per dataset x model, mean entropy of sft/rl minus base, paired by example."""
    rows = []
    planned = set(_runs(ctx))
    pairs = list(dict.fromkeys((d, m) for d, m, _ in _runs(ctx)))
    for d, m in pairs:
        for r in FINETUNED:
            setting = f"{r} vs base"
            missing = None
            if not all("baseline" in _prompting(ctx, m, x) for x in (r, "base")):
                missing = "no baseline generations (config prompting)"
            elif (d, m, r) not in planned or (d, m, "base") not in planned:
                absent = r if (d, m, r) not in planned else "base"
                missing = f"regime {absent} not in this run for {m} on {d}"
            diff = pd.Series(dtype=float) if missing else _paired_examples(
                _select(stats, d, m, r), _select(stats, d, m, "base"), "entropy_bits")
            if not missing and diff.empty:
                missing = "no example with label steps in both regimes"
            rows.append(_one_sample("finetuning", d, m, r, setting, "entropy", f"mean entropy {r} - base (bits)",
                                    diff, 0.0, "<", settings, missing))
    return rows


def _size_pairs(ctx: Context, models: Sequence[str]) -> tuple[list[tuple[str, str]], str | None]:
    """Consecutive pairs (smaller, larger) of `models` by configured size, or why there is none."""
    sizes = dict(ctx.model_sizes or {})
    known = sorted((m for m in models if m in sizes), key=lambda m: sizes[m])
    pairs = [(a, b) for a, b in zip(known, known[1:]) if sizes[b] > sizes[a]]
    if len(models) < 2:
        return [], "one model in this run"
    if not pairs:
        return [], "every model of this run has the same configured size (size_b)"
    return pairs, None


def claim_scale(stats: pd.DataFrame, metrics: Mapping, ctx: Context, settings: Settings) -> list[dict]:
    """Rows of claim scale: for consecutive models by size (config size_b), per dataset x regime,
    entropy (larger - smaller, paired by example, < 0) and micro AUC of the ranking estimator (> 0)."""
    rows = []
    est = settings.ranking_estimator
    for d in ctx.datasets:
        for r in ctx.regimes:
            models = _models_on(ctx, d, r)
            if not models:  # nothing planned on this dataset in this regime
                continue
            pairs, why = _size_pairs(ctx, models)
            if why:
                for part, stat, direction in (("entropy", "mean entropy larger - smaller (bits)", "<"),
                                              ("AUC", f"micro AUC of {est}, larger - smaller", ">")):
                    rows.append(_row("scale", d, "/".join(models), r, "by model size", part, stat, NAN3, 0.0,
                                     direction, 0, settings, why))
                continue
            for small, large in pairs:
                setting = f"{small} -> {large}"
                both = all("baseline" in _prompting(ctx, x, r) for x in (small, large))
                missing = None if both else "no baseline generations (config prompting)"
                diff = pd.Series(dtype=float) if missing else _paired_examples(
                    _select(stats, d, large, r), _select(stats, d, small, r), "entropy_bits")
                if not missing and diff.empty:
                    missing = "no example with label steps for both models"
                rows.append(_one_sample("scale", d, f"{small}/{large}", r, setting, "entropy",
                                        "mean entropy larger - smaller (bits)", diff, 0.0, "<", settings, missing))
                a, b = metrics.get((d, large, r, est)), metrics.get((d, small, r, est))
                if not a or not b:
                    stats3, n, reason = NAN3, 0, f"estimator {est} not scored for both models"
                else:
                    stats3, n, reason = metric_difference(a, b, "auc_micro", settings.ci_level)
                rows.append(_row("scale", d, f"{small}/{large}", r, setting, "AUC",
                                 f"micro AUC of {est}, larger - smaller", stats3, 0.0, ">", n, settings, reason))
    return rows


def claim_icl(slopes: pd.DataFrame, ctx: Context, settings: Settings) -> list[dict]:
    """Rows of claim icl_sweep: per run, the mean over examples of the slope of 'more than one label' on
    the share of multi-label demonstrations (> 0)."""
    rows = []
    for d, m, r in _runs(ctx):
        sub = _select(slopes, d, m, r)
        missing = None if "icl_sweep" in _prompting(ctx, m, r) else "no icl_sweep generations (config prompting)"
        if not missing and sub.empty:
            missing = "no example seen at two or more sweep ratios"
        rows.append(_one_sample("icl_sweep", d, m, r, "ICL sweep", "slope", "share of multi-label outputs per "
                                "unit share of multi-label demos (slope)", sub.get("slope", []), 0.0, ">",
                                settings, missing))
    return rows


def _compare(claim: str, metrics: Mapping, d: str, m: str, r: str, a_key: tuple, b_key: tuple, setting: str,
             parts: Sequence[tuple[str, str, str]], settings: Settings, gold: bool) -> list[dict]:
    """Rows comparing estimator run a_key with b_key on each (metric, part name, direction)."""
    rows = []
    a, b = metrics.get(a_key), metrics.get(b_key)
    for metric, part, direction in parts:
        stat = f"{part}: {a_key[3]} - {b_key[3]}"
        if not a or not b:
            missing = [k[3] for k, v in ((a_key, a), (b_key, b)) if not v]
            rows.append(_row(claim, d, m, r, setting, part, stat, NAN3, 0.0, direction, 0, settings,
                             f"estimator {', '.join(missing)} not in this run"))
            continue
        if gold and metric in ("l1", "mse", "bce"):
            rows.append(_row(claim, d, m, r, setting, part, stat, NAN3, 0.0, direction, 0, settings,
                             "no annotator data (p_ref = gold): alignment not meaningful"))
            continue
        stats3, n, reason = metric_difference(a, b, metric, settings.ci_level)
        rows.append(_row(claim, d, m, r, setting, part, stat, stats3, 0.0, direction, n, settings, reason))
    return rows


ALIGNMENT_PARTS = (("l1", "L1", "<"), ("bce", "soft BCE", "<"))


def claims_from_metrics(metrics: Mapping, ctx: Context, settings: Settings) -> list[dict]:
    """Rows of claims max_over_steps, supervised and marginal (paired estimator differences)."""
    rows = []
    sources = dict(ctx.p_ref_sources or {})
    for d, m, r in _runs(ctx):
        gold = sources.get(d) == "gold"
        key = lambda e, mm=m, rr=r: (d, mm, rr, e)  # noqa: E731
        rows += _compare("max_over_steps", metrics, d, m, r, key("max_over_steps"), key("first_step"),
                         "max_over_steps vs first_step",
                         (*ALIGNMENT_PARTS, ("f1_micro", "micro F1", ">")), settings, gold)
        zero_shot = [e for e in ZERO_SHOT if metrics.get(key(e))]
        for sup in SUPERVISED:
            sup_key = (d, ENCODER, "base", sup) if sup == "demux" else key(sup)
            rows += _compare("supervised", metrics, d, m, r, sup_key, key("first_step"), f"{sup} vs first_step",
                             ALIGNMENT_PARTS, settings, gold)
            for metric, part, direction in ALIGNMENT_PARTS:
                means = {e: np.nanmean([_metric(x, metric) for x in metrics[key(e)]]) for e in zero_shot}
                means = {e: v for e, v in means.items() if np.isfinite(v)}
                if not means:
                    rows.append(_row("supervised", d, m, r, f"{sup} vs best zero-shot", part,
                                     f"{part}: {sup} - best zero-shot", NAN3, 0.0, direction, 0, settings,
                                     "no zero-shot estimator scored"))
                    continue
                best = min(means, key=means.get)
                rows += _compare("supervised", metrics, d, m, r, sup_key, key(best), f"{sup} vs best zero-shot",
                                 ((metric, part, direction),), settings, gold)
        for other in ("conditional", "joint"):
            rows += _compare("marginal", metrics, d, m, r, key("marginal"), key(other), f"marginal vs {other}",
                             (("f1_micro_tuned", "micro F1 (tuned t)", ">"), ("auc_micro", "micro AUC", ">")),
                             settings, False)
    return rows


def evaluate(stats: pd.DataFrame, slopes: pd.DataFrame, metric_results: Sequence[Mapping[str, Any]],
             ctx: Context, settings: Settings) -> pd.DataFrame:
    """Return the findings table (COLUMNS): every claim's rows, in the order of CLAIMS.

    `stats`: example_stats pooled over seeds (dataset, model, regime, id, ...); `slopes`: icl_slopes;
    `metric_results`: metrics JSON objects (labeldist.tables.read_metric_files).
    """
    metrics = index_metrics(metric_results)
    rows = claims_from_steps(stats, ctx, settings)
    rows += claim_scale(stats, metrics, ctx, settings)
    rows += claim_finetuning(stats, ctx, settings)
    rows += claim_icl(slopes, ctx, settings)
    rows += claims_from_metrics(metrics, ctx, settings)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {c: i for i, c in enumerate(CLAIMS)}
    return frame.sort_values("claim", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Return one row per claim x dataset x model x regime x setting with the combined verdict of its parts."""
    keys = ["claim", "dataset", "model", "regime", "setting"]
    out = frame.groupby(keys, sort=False).agg(verdict=("verdict", combine_verdicts),
                                              parts=("part", lambda p: ", ".join(p))).reset_index()
    return out


# ---- files --------------------------------------------------------------------------------------------
def read_example_stats(paths: Sequence[str | Path], label_sets: Mapping[str, LabelSet]) -> pd.DataFrame:
    """Return example_stats of baseline generation files, pooled over seeds (labeldist.analysis readers)."""
    frame = analysis.load_generation_frames(paths, label_sets, example_stats)
    return pool_seeds(frame, ["top_prob", "entropy_bits", "same", "gap"])


def read_icl_slopes(paths: Sequence[str | Path], label_sets: Mapping[str, LabelSet]) -> pd.DataFrame:
    """Return icl_slopes of icl_sweep generation files (labeldist.analysis readers)."""
    counts = analysis.load_generation_frames(
        paths, label_sets, lambda recs, ls: analysis.output_label_counts(recs, ls.none_label))
    if counts.empty:
        return pd.DataFrame(columns=["dataset", "model", "regime", "id", "slope"])
    return icl_slopes(counts)


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def render_markdown(frame: pd.DataFrame) -> tuple[str, str]:
    """Return (Markdown, HTML) of the findings: the verdict per claim and setting, then every part."""
    summ = summary(frame)
    claim_text = summ["claim"].map(CLAIMS)
    top = pd.DataFrame({"claim": summ["claim"] + ": " + claim_text, "dataset": summ["dataset"],
                        "model": summ["model"], "regime": summ["regime"], "setting": summ["setting"],
                        "verdict": summ["verdict"]})
    detail = pd.DataFrame({
        "claim": frame["claim"], "dataset": frame["dataset"], "model": frame["model"], "regime": frame["regime"],
        "setting": frame["setting"], "statistic": frame["statistic"],
        "estimate [95% CI]": [f"{_fmt(e)} [{_fmt(lo)}, {_fmt(hi)}]"
                              for e, lo, hi in zip(frame["estimate"], frame["ci_low"], frame["ci_high"])],
        "claimed": [f"{d} {n:g}" for d, n in zip(frame["direction"], frame["null"])],
        "n": frame["n"], "verdict": frame["verdict"], "reason": frame["reason"],
    })
    note = ("Each claim of the papers tested on this run (rules: docs/methods.md, section 8). Verdicts: "
            "holds (the whole bootstrap interval on the claimed side), does not hold (the whole interval on "
            "the other side or touching the threshold), inconclusive (the interval contains it), not testable "
            "here (with the reason). Counts: " +
            ", ".join(f"{v}: {int((summ['verdict'] == v).sum())}" for v in VERDICTS) + ".")
    md = to_markdown(top, "Findings: the papers' claims on this run", note)
    md += "\n" + to_markdown(detail, "Every statistic", "").replace("# Every statistic", "## Every statistic", 1)
    html = to_html(top, "Findings: the papers' claims on this run", note)
    html = html.replace("</body></html>", "<h3>Every statistic</h3>\n" +
                        detail.to_html(index=False, border=0, classes="metrics", na_rep="n/a") + "\n</body></html>")
    return md, html


def headline_markdown(frame: pd.DataFrame) -> str:
    """Return the compact verdict table for the README: one row per claim and setting, one column per
    run (dataset · model · regime), each cell the setting's combined verdict ('' where it does not
    apply). A comparison of two models sits in the larger model's column, a regime comparison in the
    finetuned regime's. The statistics and reasons are in findings.md."""
    summ = summary(frame)
    larger = summ["model"].str.split("/").str[-1]
    summ = summ.assign(run=summ["dataset"] + " · " + larger + " · " + summ["regime"])
    # the columns: the runs every per-run claim covers (the planned ones); a row about a regime that
    # was not run (finetuning: sft vs base) goes to its model's base column
    runs = list(dict.fromkeys(summ.loc[summ["claim"] == "spiky", "run"])) or list(dict.fromkeys(summ["run"]))
    base = summ["dataset"] + " · " + larger + " · base"
    summ["run"] = summ["run"].where(summ["run"].isin(runs), base)
    rows = list(dict.fromkeys(zip(summ["claim"], summ["setting"].where(summ["claim"] != "scale", "by model size"))))
    cells = {(c, st if c != "scale" else "by model size", run): v
             for c, st, run, v in zip(summ["claim"], summ["setting"], summ["run"], summ["verdict"])}
    table = pd.DataFrame([[claim, setting, *(cells.get((claim, setting, run), "") for run in runs)]
                          for claim, setting in rows], columns=["claim", "setting", *runs])
    counts = ", ".join(f"{v}: {int((summ['verdict'] == v).sum())}" for v in VERDICTS)
    return ("Verdicts per claim and run (" + counts + "); claims, statistics, intervals and reasons: "
            "`results/tables/findings.md`, rules: docs/methods.md section 8.\n\n" + markdown_table(table))


def finetuning_markdown(frame: pd.DataFrame, training_logs: Mapping[tuple[str, str, str], pd.DataFrame]) -> str:
    """Return one Markdown sentence per (dataset, model) that was finetuned: the dev F1 of the model's own
    outputs before and after each regime's training (training_log.csv's `dev_f1`, keyed by (dataset,
    model, regime)) and the `finetuning` claim's entropy change against base with its interval and
    verdict (from the findings `frame`); empty when nothing was finetuned."""
    lines = []
    pairs = dict.fromkeys((d, m) for d, m, _ in training_logs)
    for d, m in pairs:
        parts = []
        for r in FINETUNED:
            log_frame = training_logs.get((d, m, r))
            if log_frame is None:
                continue
            dev = log_frame["dev_f1"].dropna() if "dev_f1" in log_frame else pd.Series(dtype=float)
            f1 = (f"dev F1 of its own outputs {dev.iloc[0]:.3f} -> {dev.iloc[-1]:.3f}" if len(dev) >= 2
                  else "no dev F1 logged")
            row = frame[(frame["claim"] == "finetuning") & (frame["dataset"] == d) & (frame["model"] == m)
                        & (frame["regime"] == r)]
            if len(row) and row["verdict"].iloc[0] != UNTESTABLE:
                x = row.iloc[0]
                entropy = (f"mean per-step label entropy {x['estimate']:+.3f} bits against base "
                           f"[{x['ci_low']:+.3f}, {x['ci_high']:+.3f}], n = {int(x['n'])}: spikier {x['verdict']}")
            else:
                entropy = "entropy against base " + (row["reason"].iloc[0] if len(row) else "not tested")
            parts.append(f"{r.upper() if r == 'sft' else 'RL (GRPO)'}: {f1}; {entropy}")
        if parts:
            lines.append(f"- **{d} · {m}**: " + "; ".join(parts) + ".")
    return "\n".join(lines) + ("\n" if lines else "")


def write_findings(*, generations: Sequence[str | Path], icl_generations: Sequence[str | Path],
                   metric_paths: Sequence[str | Path], label_sets: Mapping[str, LabelSet], ctx: Context,
                   settings: Settings, csv: str | Path, md: str | Path, html: str | Path,
                   headline: str | Path | None = None, tuned_models: Sequence[str | Path] = (),
                   finetuning: str | Path | None = None) -> pd.DataFrame:
    """Read the run's baseline and icl_sweep generations (main subset) and metrics files, evaluate every
    claim, write findings CSV, Markdown, HTML, (with `headline`) the compact verdict table
    (headline_markdown) and (with `finetuning`) what finetuning did to each finetuned model
    (finetuning_markdown, from the training logs of the sft/rl folders `tuned_models`) atomically, and
    return the table."""
    ctx = Context(**{**ctx.__dict__, "p_ref_sources": ctx.p_ref_sources or
                     {d: s.p_ref_source for d, s in label_sets.items()}})
    frame = evaluate(read_example_stats(generations, label_sets), read_icl_slopes(icl_generations, label_sets),
                     read_metric_files(metric_paths), ctx, settings)
    text, page = render_markdown(frame)
    write_table_csv(csv, frame)
    with atomic_path(md) as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    if headline is not None:
        with atomic_path(headline) as tmp:
            tmp.write_text(headline_markdown(frame), encoding="utf-8")
    if finetuning is not None:
        logs = {}
        for folder in tuned_models:
            meta = layout.parse(layout.TUNED_MODEL, folder, "finetuned model folder")
            logs[(meta["dataset"], meta["model"], meta["regime"])] = read_training_log(folder)
        with atomic_path(finetuning) as tmp:
            tmp.write_text(finetuning_markdown(frame, logs), encoding="utf-8")
    counts = frame.groupby("verdict").size().to_dict()
    log.info("findings: %d rows; %s", len(frame), counts)
    return frame
