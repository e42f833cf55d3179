"""Metrics of docs/methods.md section 6: how well per-label confidences q match p_ref and the gold labels.

For one run (dataset x model x regime x estimator x seed) `run_metrics` returns a JSON-ready dict:
alignment of q with p_ref over the L labels (none excluded), classification after thresholding q
(config threshold and a threshold tuned on the dev subset), micro ROC-AUC, expected calibration error,
the reliability bins behind the calibration figure, the generation-file counts the estimator inherits
(outputs with no label, unknown or repeated labels, hit_max_tokens, prompts whose query text was
shortened to fit the model's context) and a bootstrap over examples of every scalar metric (the same
resamples for every seed and estimator, so tables can pair them).

scikit-learn supplies F1, Jaccard, ROC-AUC, MAE, MSE and log-loss; the soft BCE (probabilistic
targets) and the ECE binning are written here because scikit-learn has neither.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    f1_score,
    jaccard_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from .errors import DataError
from .artifacts.estimates import estimates_matrix, read_estimate_table, select_estimates
from .artifacts.generations import Generation, read_generations
from .artifacts.labels import LabelSet, read_label_set
from .artifacts.splits import gold_matrix, p_ref_matrix, read_split, read_subsets

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logs
BOOTSTRAP_SEED = 0  # fixed: every run resamples the same example indices, so seeds and estimators pair up
THRESHOLD_GRID = np.round(np.linspace(0.01, 0.99, 99), 4)

ALIGNMENT_METRICS = ["l1", "mse", "bce", "nll", "ece_p_ref"]
AVERAGES = {"micro": "micro", "macro": "macro", "example": "samples"}
THRESHOLD_METRICS = [f"{kind}_{avg}" for kind in ("f1", "jaccard") for avg in AVERAGES]
CLASSIFICATION_METRICS = (
    THRESHOLD_METRICS + [f"{m}_tuned" for m in THRESHOLD_METRICS] + ["auc_micro", "ece"]
)
GENERATION_COUNTS = ["n_outputs", "no_label", "unknown", "repeated", "hit_max_tokens", "truncated"]


# ---- reading the data stage's files -------------------------------------------------------------
@dataclass
class Reference:
    """Gold labels and p_ref of a set of examples, as arrays in the label order (none excluded)."""

    ids: list[str]
    p_ref: np.ndarray  # (n, L) float: share of annotators per label
    gold: np.ndarray  # (n, L) int 0/1: the aggregate gold set

    def subset(self, ids: Sequence[str], source: str = "reference") -> "Reference":
        """Return the rows for `ids`, in that order (DataError when an id is unknown)."""
        index = {ex_id: i for i, ex_id in enumerate(self.ids)}
        missing = [ex_id for ex_id in ids if ex_id not in index]
        if missing:
            raise DataError(source, f"{len(missing)} id(s) not in the data split, e.g. {missing[:3]}", field="id")
        rows = [index[ex_id] for ex_id in ids]
        return Reference(list(ids), self.p_ref[rows], self.gold[rows])


def read_reference(path: str | Path, label_set: LabelSet, ids: Iterable[str] | None = None) -> Reference:
    """Return gold labels and p_ref of the examples of a `data/{dataset}/{split}.jsonl` file (read by
    labeldist.artifacts.splits.read_split, which names file, line and field of a malformed record).

    Only the examples in `ids` are kept when given (in file order); an id not in the file is a DataError.
    """
    records = read_split(path, label_set)
    if ids is not None:
        keep = set(ids)
        records = [r for r in records if r["id"] in keep]
        missing = sorted(keep - {r["id"] for r in records})
        if missing:
            raise DataError(path, f"{len(missing)} requested id(s) not found, e.g. {missing[:3]}", field="id")
    return Reference([r["id"] for r in records], p_ref_matrix(records, label_set.labels),
                     gold_matrix(records, label_set.labels))


# ---- metrics ------------------------------------------------------------------------------------
def _clip(q: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(q, dtype=float), EPS, 1.0 - EPS)


def soft_bce(q: np.ndarray, target: np.ndarray) -> float:
    """Return the mean binary cross-entropy (nats) of q against probabilistic targets in [0, 1].

    Hand-written: scikit-learn's log_loss takes class labels, not soft targets.
    """
    q = _clip(q)
    target = np.asarray(target, dtype=float)
    return float(np.mean(-(target * np.log(q) + (1.0 - target) * np.log1p(-q))))


def alignment_metrics(q: np.ndarray, p_ref: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Return L1 (mean |q - p_ref|), MSE (Brier against p_ref), soft BCE with p_ref targets, and the
    per-label binary NLL of the gold labels under q; every mean is over examples x labels.
    """
    q = np.asarray(q, dtype=float)
    return {
        "l1": float(mean_absolute_error(p_ref, q)),
        "mse": float(mean_squared_error(p_ref, q)),
        "bce": soft_bce(q, p_ref),
        "nll": float(log_loss(np.asarray(gold).ravel(), _clip(q).ravel(), labels=[0, 1])),
    }


def threshold_metrics(q: np.ndarray, gold: np.ndarray, threshold: float) -> dict[str, float]:
    """Return micro, macro and example-based F1 and Jaccard of `q >= threshold` against gold.

    **Decision:** an example with no gold label and no prediction counts as a perfect match in the
    example-based scores (zero_division=1: "none" predicted for a "none" example); micro and macro use
    zero_division=0.
    """
    gold = np.asarray(gold, dtype=int)
    pred = (np.asarray(q) >= threshold).astype(int)
    out = {}
    for name, average in AVERAGES.items():
        zero = 1.0 if average == "samples" else 0.0
        out[f"f1_{name}"] = float(f1_score(gold, pred, average=average, zero_division=zero))
        out[f"jaccard_{name}"] = float(jaccard_score(gold, pred, average=average, zero_division=zero))
    return out


def tune_threshold(q: np.ndarray, gold: np.ndarray, default: float = 0.5,
                   grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """Return the threshold of `grid` that maximises micro F1 of `q >= t` (ties: closest to `default`)."""
    gold = np.asarray(gold, dtype=int)
    q = np.asarray(q)
    scores = np.array([f1_score(gold, (q >= t).astype(int), average="micro", zero_division=0.0)
                       for t in grid])
    best = np.flatnonzero(np.isclose(scores, scores.max()))
    candidates = np.asarray(grid)[best]
    return float(candidates[np.argmin(np.abs(candidates - default))])


def micro_auc(q: np.ndarray, gold: np.ndarray) -> float:
    """Return micro-averaged ROC-AUC of q against gold, or NaN when gold is all 0 or all 1."""
    gold = np.asarray(gold, dtype=int)
    if gold.min() == gold.max():
        return math.nan
    return float(roc_auc_score(gold, q, average="micro"))


def _bin_index(q: np.ndarray, n_bins: int) -> np.ndarray:
    # equal-width bins on [0, 1], the last one closed (sklearn.calibration_curve's "uniform" binning)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(q, dtype=float).ravel(), side="right")


def reliability_bins(q: np.ndarray, target: np.ndarray, n_bins: int) -> dict[str, list]:
    """Return per-bin count, mean q and mean target (gold 0/1 or p_ref) over equal-width bins of q.

    Empty bins have count 0 and null means. Pooled over examples x labels.
    """
    idx = _bin_index(q, n_bins)
    q_flat = np.asarray(q, dtype=float).ravel()
    t_flat = np.asarray(target, dtype=float).ravel()
    count = np.bincount(idx, minlength=n_bins)
    sum_q = np.bincount(idx, weights=q_flat, minlength=n_bins)
    sum_t = np.bincount(idx, weights=t_flat, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_q = np.where(count > 0, sum_q / np.maximum(count, 1), np.nan)
        mean_t = np.where(count > 0, sum_t / np.maximum(count, 1), np.nan)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).round(6).tolist(),
        "count": count.astype(int).tolist(),
        "mean_q": [None if np.isnan(v) else float(v) for v in mean_q],
        "mean_target": [None if np.isnan(v) else float(v) for v in mean_t],
    }


def expected_calibration_error(q: np.ndarray, target: np.ndarray, n_bins: int) -> float:
    """Return ECE: sum over equal-width bins of (bin share) x |mean target - mean q|.

    Hand-written (scikit-learn's calibration_curve gives the curve, not the bin weights); `target` is
    gold 0/1 (the usual ECE) or p_ref (calibration against annotator shares).
    """
    idx = _bin_index(q, n_bins)
    q_flat = np.asarray(q, dtype=float).ravel()
    t_flat = np.asarray(target, dtype=float).ravel()
    gap = np.abs(np.bincount(idx, weights=t_flat - q_flat, minlength=n_bins))
    return float(gap.sum() / max(len(q_flat), 1))


def scalar_metrics(q: np.ndarray, ref: Reference, threshold: float, tuned: float,
                   n_bins: int) -> dict[str, float]:
    """Return every scalar metric of one run (ALIGNMENT_METRICS + CLASSIFICATION_METRICS)."""
    out = alignment_metrics(q, ref.p_ref, ref.gold)
    out["ece_p_ref"] = expected_calibration_error(q, ref.p_ref, n_bins)
    out.update(threshold_metrics(q, ref.gold, threshold))
    out.update({f"{k}_tuned": v for k, v in threshold_metrics(q, ref.gold, tuned).items()})
    out["auc_micro"] = micro_auc(q, ref.gold)
    out["ece"] = expected_calibration_error(q, ref.gold, n_bins)
    return out


def bootstrap_indices(n_examples: int, n_resamples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Return an (n_resamples, n_examples) array of example indices drawn with replacement, seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_examples, size=(n_resamples, n_examples))


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), zero_division)


def _threshold_batch(gold: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """F1 and Jaccard (micro, macro, example) for a batch of resamples: gold, pred are (B, n, L) 0/1."""
    tp = (gold & pred).astype(float)
    fp = ((1 - gold) & pred).astype(float)
    fn = (gold & (1 - pred)).astype(float)
    out = {}
    # micro: pooled counts; macro: per label (axis 1 = examples), then mean; example: per example, then mean
    for name, axis, zero in (("micro", (1, 2), 0.0), ("macro", 1, 0.0), ("example", 2, 1.0)):
        t, f_p, f_n = tp.sum(axis=axis), fp.sum(axis=axis), fn.sum(axis=axis)
        f1 = _ratio(2 * t, 2 * t + f_p + f_n, zero)
        jac = _ratio(t, t + f_p + f_n, zero)
        out[f"f1_{name}"] = f1 if f1.ndim == 1 else f1.mean(axis=1)
        out[f"jaccard_{name}"] = jac if jac.ndim == 1 else jac.mean(axis=1)
    return out


def bootstrap_metrics(q: np.ndarray, ref: Reference, threshold: float, tuned: float, n_bins: int,
                      n_resamples: int, seed: int = BOOTSTRAP_SEED, chunk: int = 50) -> dict[str, np.ndarray]:
    """Return {metric: values over resamples} of every scalar metric (as scalar_metrics) over seeded
    bootstrap resamples of the examples (bootstrap_indices), computed in chunks of resamples.

    Vectorised over resamples with the textbook formulas (counts of true/false positives per label,
    example or pooled): scikit-learn's input validation costs ~8 ms per call, i.e. seconds per run at
    200 resamples. tests/test_metrics.py checks these values against scalar_metrics (scikit-learn).
    ROC-AUC still goes through roc_auc_score, one call per resample.
    """
    q = np.asarray(q, dtype=float)
    gold = np.asarray(ref.gold, dtype=int)
    indices = bootstrap_indices(len(q), n_resamples, seed)
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, n_resamples, chunk):
        idx = indices[start:start + chunk]
        qb, pb, gb = q[idx], ref.p_ref[idx], gold[idx]
        clipped = _clip(qb)
        part = {
            "l1": np.abs(qb - pb).mean(axis=(1, 2)),
            "mse": ((qb - pb) ** 2).mean(axis=(1, 2)),
            "bce": -(pb * np.log(clipped) + (1 - pb) * np.log1p(-clipped)).mean(axis=(1, 2)),
            "nll": -np.where(gb == 1, np.log(clipped), np.log1p(-clipped)).mean(axis=(1, 2)),
        }
        bins = _bin_index(qb.reshape(len(idx), -1), n_bins).reshape(len(idx), -1)
        offset = bins + n_bins * np.arange(len(idx))[:, None]
        n_cells = qb[0].size
        for key, target in (("ece_p_ref", pb), ("ece", gb)):
            gap = np.bincount(offset.ravel(), weights=(target - qb).ravel(), minlength=n_bins * len(idx))
            part[key] = np.abs(gap.reshape(len(idx), n_bins)).sum(axis=1) / n_cells
        part.update(_threshold_batch(gb, (qb >= threshold).astype(int)))
        part.update({f"{k}_tuned": v for k, v in _threshold_batch(gb, (qb >= tuned).astype(int)).items()})
        part["auc_micro"] = np.array([micro_auc(qb[b], gb[b]) for b in range(len(idx))])
        chunks.append(part)
    if not chunks:
        return {}
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


# ---- generation counts --------------------------------------------------------------------------
def generation_counts(records: Iterable[Generation]) -> dict[str, int]:
    """Return how many outputs had no label, unknown labels, repeated labels or hit max_new_tokens, and
    how many prompts had their query text shortened to fit the model's context (`truncated`).

    `unknown` and `repeated` count outputs (not strings); nothing is dropped, only counted.
    """
    counts = dict.fromkeys(GENERATION_COUNTS, 0)
    for rec in records:
        counts["n_outputs"] += 1
        counts["no_label"] += int(rec.no_label)
        counts["unknown"] += int(bool(rec.unknown))
        counts["repeated"] += int(bool(rec.repeated))
        counts["hit_max_tokens"] += int(rec.hit_max_tokens)
        counts["truncated"] += int(rec.truncated)
    return counts


# ---- one run --------------------------------------------------------------------------------------
def ids_digest(ids: Sequence[str]) -> str:
    """Return a short hash of the sorted example ids (tables check that seeds were scored on one set)."""
    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:12]


def run_metrics(*, estimates: str | Path, seed: int, test_data: str | Path,
                dev_data: str | Path, labels: str | Path, subsets: str | Path,
                generation: str | Path | None, meta: Mapping[str, Any], threshold: float,
                ece_bins: int, n_bootstrap: int) -> dict[str, Any]:
    """Return the metrics JSON object of one run (docs/formats.md, Metrics).

    `estimates`: the estimator's estimate file, whose `main` and `dev` rows of `seed` are scored
    (labeldist.artifacts.estimates); `test_data`/`dev_data`:
    the data splits they come from; `subsets`: subsets.json, whose `main` ids the estimates must cover
    exactly; `generation`: the baseline generation file the estimator read (None if it reads none);
    `meta`: dataset, model, regime, estimator and seed, copied into the result.
    """
    label_set = read_label_set(labels)
    main_ids = read_subsets(subsets, required=("main",))["main"]
    table = read_estimate_table(estimates)  # main and dev of every seed: read once
    ids, q = select_estimates(table, label_set.labels, "main", seed, source=estimates)
    extra = sorted(set(ids) - set(main_ids))
    missing = sorted(set(main_ids) - set(ids))
    if extra or missing:
        raise DataError(estimates, f"ids differ from subsets.json 'main': {len(missing)} missing "
                                   f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})", field="id")
    ref = read_reference(test_data, label_set, ids).subset(ids, source=str(test_data))
    dev_ids, dev_q = select_estimates(table, label_set.labels, "dev", seed, source=estimates)
    dev_ref = read_reference(dev_data, label_set, dev_ids).subset(dev_ids, source=str(dev_data))
    tuned = tune_threshold(dev_q, dev_ref.gold, default=threshold)

    values = scalar_metrics(q, ref, threshold, tuned, ece_bins)
    boot = bootstrap_metrics(q, ref, threshold, tuned, ece_bins, n_bootstrap)
    return {
        **{k: meta[k] for k in ("dataset", "model", "regime", "estimator", "seed")},
        "task": label_set.task,
        "p_ref_source": label_set.p_ref_source,
        "labels": label_set.labels,
        "n_examples": len(ids),
        "ids_sha1": ids_digest(ids),
        "threshold": float(threshold),
        "tuned_threshold": tuned,
        "dev_n_examples": len(dev_ids),
        "alignment": {k: _json_float(values[k]) for k in ALIGNMENT_METRICS},
        "classification": {k: _json_float(values[k]) for k in CLASSIFICATION_METRICS},
        "reliability": reliability_bins(q, ref.gold, ece_bins),
        "generation": None if generation is None else generation_counts(
            read_generations(generation, label_set.labels, label_set.none_label)),
        "bootstrap": {
            "n": int(n_bootstrap), "seed": BOOTSTRAP_SEED,
            "values": {k: [_json_float(v) for v in vs] for k, vs in boot.items()},
        },
    }


def _json_float(value: float) -> float | None:
    """NaN becomes null (JSON has no NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# ---- per-layer probe estimates ------------------------------------------------------------------
def metrics_by_layer(layers: pd.DataFrame, ref: Reference, labels: Sequence[str],
                     threshold: float, source: str = "layers") -> pd.DataFrame:
    """Return one row per layer: micro F1 at `threshold`, L1 and BCE against p_ref, micro AUC.

    `ref` gives p_ref and gold for the ids of `layers` (each layer must cover the same ids).
    """
    rows = []
    for layer, frame in layers.groupby("layer", sort=True):
        ids, q = estimates_matrix(frame, labels, source=f"{source} (layer {layer})")
        sub = ref.subset(ids, source=source)
        rows.append({
            "layer": int(layer),
            "f1_micro": threshold_metrics(q, sub.gold, threshold)["f1_micro"],
            "l1": float(mean_absolute_error(sub.p_ref, q)),
            "bce": soft_bce(q, sub.p_ref),
            "auc_micro": micro_auc(q, sub.gold),
        })
    return pd.DataFrame(rows)
