"""Estimators: from generation files to per-label confidences q(l | x) (docs/methods.md, section 4).

Every estimator is one function that returns the same thing: a long pandas DataFrame with columns
`id` (str), `label` (str) and `q` (float64 in [0, 1]), one row per example and label of labels.json in
label order (plus a `none` row where the estimator defines one), sorted by id then label order
(docs/formats.md, "Estimates").

Inputs are the records of docs/formats.md, "Generations", parsed and validated by
`labeldist.artifacts.generations` (a malformed record raises DataError naming file, line and field).
Distributions are over the labels followed by `none` (L + 1 entries); index L is `none`.

Definitions chosen here where the spec leaves room (each is tested; docs/methods.md lists them as
Decisions, with how the study's code differs). Two of them are config options (`estimation`,
`EstimationSettings`), whose defaults are ours and whose alternatives give the study's code's numbers:
- *Steps* (`label_steps`): `every_slot` (default): every entry of `steps` is a label step, whatever was
  emitted there (a label, `none`, or an unknown string with `label: null`); max_over_steps takes the max
  over all of them for every label. `first_known` (the study's): only the first slot of each distinct
  label or `none`; repeats and unknown strings are no steps, so an unknown first slot is skipped
  (`label_steps`). It decides the steps of first_step, max_over_steps (both variants of each) and
  compare_to_none (and its Platt fit); conditional and joint read the slots as recorded.
- *No label step at all* (`no_label_step`; the record has no step under `label_steps`): `empty_set`
  (default): the model committed to no label, which the output reads as the empty set. first_step,
  max_over_steps (both variants), conditional and joint then give q = EPS to every label and 1 - EPS to
  `none` (the `output` estimator's values for that output); compare_to_none gives EPS to every label and
  such records are left out of the Platt fit. `study`: first_step and max_over_steps give the labels the
  study's code's values (`study_no_label_row`); the rest as `empty_set`.
- *The `none` row of max_over_steps* is p_1(none), the first step's probability of the empty output
  (floored at EPS): `none` is an answer only at the first slot, so a later slot's p_t(none) is not a
  probability that the example has no label. (The study's code leaves that row at its 1e-8 floor.)
- *Repeated labels*: a label emitted at several slots counts once, at its first slot (conditional,
  joint); `output` reads the record's already deduplicated `labels`.
- *conditional* for a label that was not emitted: its full-vocabulary probability as the first label
  of the output, exp(whole_label_logprobs[l]) at the first label step (the same quantity the first
  emitted label gets from its `label_logprob`).
- *joint*: the running product of the distinct emitted labels' probabilities along the greedy path, up
  to and including the label; a label that was not emitted gets its conditional times the product over
  all emitted labels. `none` asserts the empty set, so it never enters another label's product; its own
  row follows the same two rules.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from .artifacts.estimates import estimate_frame
from .artifacts.generations import (
    Generation,
    PairwiseRecord,
    Step,
    UnaryRecord,
    read_generations,
    read_pairwise,
    read_unary,
)
from .artifacts.labels import read_label_set
from .artifacts.splits import p_ref_matrix, read_split
from .config import NONE_LABEL, validate_block
from .errors import DataError
from .settings import FromConfig

log = logging.getLogger(__name__)

EPS = 1e-8
"""Floor of max_over_steps and the `output` estimator's value for labels not generated."""

LOGIT_FLOOR = -1e4
"""compare_to_none replaces -inf logits (masked tokens) by this, so logit differences stay defined."""

COLUMNS = ["id", "label", "q"]


STEP_RULES = ("every_slot", "first_known")
"""Config `estimation.label_steps`: which slots of a record are its label steps (`label_steps`)."""

NO_LABEL_RULES = ("empty_set", "study")
"""Config `estimation.no_label_step`: what a record without a label step gets (`no_label_row`)."""


@dataclass(frozen=True)
class EstimationSettings(FromConfig):
    """How the estimators read a baseline record: config `estimation` (defaults: the config schema's
    `estimation` definition; `default()` builds them). `label_steps` in STEP_RULES, `no_label_step` in
    NO_LABEL_RULES (module docstring)."""

    CONFIG_BLOCK: ClassVar[str] = "estimation"

    label_steps: str
    no_label_step: str

    def __post_init__(self) -> None:
        if self.label_steps not in STEP_RULES:
            raise ValueError(f"label_steps must be one of {STEP_RULES}, got {self.label_steps!r}")
        if self.no_label_step not in NO_LABEL_RULES:
            raise ValueError(f"no_label_step must be one of {NO_LABEL_RULES}, got {self.no_label_step!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "EstimationSettings":
        """Return the settings of an `estimation` block, as written or validated (the schema's defaults
        are filled in; ConfigError names a bad key)."""
        return super().from_config(validate_block("estimation", cfg, "estimation"))

    @classmethod
    def default(cls) -> "EstimationSettings":
        """Return the settings of an empty `estimation` block: the schema's defaults (ours)."""
        return cls.from_config({})


# ---- shared helpers ------------------------------------------------------------------------------
def _names(labels: Sequence[str], none_label: str, with_none: bool) -> list[str]:
    return list(labels) + ([none_label] if with_none else [])


def _settings(settings: EstimationSettings | None) -> EstimationSettings:
    return EstimationSettings.default() if settings is None else settings


def label_steps(gen: Generation, rule: str) -> tuple[Step, ...]:
    """Return the record's label steps under `rule` (config `estimation.label_steps`), in generation order.

    `every_slot`: every recorded slot (ours). `first_known`: the first slot of each distinct label or
    `none`; slots of unknown strings (`label` None) and repeats are left out (the study's code, which
    records the first occurrence of each label's first token), so an unknown first slot is skipped.
    """
    if rule not in STEP_RULES:
        raise ValueError(f"label_steps must be one of {STEP_RULES}, got {rule!r}")
    if rule == "every_slot":
        return gen.steps
    seen: set[str] = set()
    kept = []
    for step in gen.steps:
        if step.label is not None and step.label not in seen:
            seen.add(step.label)
            kept.append(step)
    return tuple(kept)


def no_label_fallback(n_labels: int) -> np.ndarray:
    """Return the [L + 1] confidences for an output without any label step: EPS per label, 1 - EPS for none."""
    q = np.full(n_labels + 1, EPS)
    q[-1] = 1.0 - EPS
    return q


def study_no_label_row(n_labels: int, max_over_steps: bool) -> np.ndarray:
    """Return the study's code's [L + 1] confidences for a record without a label step, `none` at 1 - EPS.

    first_step: 1/L per label (its first-step scores are a softmax of L zero logits). max_over_steps: its
    per-label maxima start at EPS and stay there; it falls back to those 1/L scores only when its L + 1
    floors (labels and none) sum below 10 EPS, which they do up to L = 9 (in floating point), so from 10
    labels on every label keeps EPS. The study's code has no `none` value there; ours is kept.
    """
    q = no_label_fallback(n_labels)
    falls_back = sum([EPS] * (n_labels + 1)) < 10 * EPS
    if not max_over_steps or falls_back:
        q[:-1] = 1.0 / n_labels
    return q


def no_label_row(n_labels: int, rule: str, max_over_steps: bool = False) -> np.ndarray:
    """Return the [L + 1] confidences of first_step (or, `max_over_steps`, of max_over_steps) for a record
    without a label step under `rule` (config `estimation.no_label_step`): `empty_set`,
    `no_label_fallback`; `study`, `study_no_label_row`."""
    if rule not in NO_LABEL_RULES:
        raise ValueError(f"no_label_step must be one of {NO_LABEL_RULES}, got {rule!r}")
    return no_label_fallback(n_labels) if rule == "empty_set" else study_no_label_row(n_labels, max_over_steps)


def step_distributions(steps: Sequence[Step], variant: str = "first_token") -> np.ndarray:
    """Return p_t over labels + none for each of `steps`, shape [n_steps, L + 1] (rows sum to 1; [0, 0]
    without steps).

    `first_token`: the study's softmax of the first-token logits restricted to the label set;
    `whole_label`: the whole-label log-probabilities renormalised over the label set.
    """
    if variant not in ("first_token", "whole_label"):
        raise ValueError(f"unknown distribution variant {variant!r}")
    if not steps:
        return np.zeros((0, 0))
    scores = np.stack([s.first_token_logits if variant == "first_token" else s.whole_label_logprobs
                       for s in steps])
    return softmax(scores, axis=1)


# ---- zero-shot estimators from one generation ------------------------------------------------------
def _step_estimate(gens: Sequence[Generation], labels: Sequence[str], none_label: str, variant: str,
                   settings: EstimationSettings | None, max_over: bool) -> pd.DataFrame:
    """first_step (max_over False: the first step's distribution) or max_over_steps (`max_over_steps_row`)
    of every record, under `settings`' step rule; a record without a label step gets `no_label_row`."""
    cfg = _settings(settings)
    rows = []
    for g in gens:
        steps = label_steps(g, cfg.label_steps)
        if not steps:
            rows.append(no_label_row(len(labels), cfg.no_label_step, max_over_steps=max_over))
            continue
        dists = step_distributions(steps, variant)
        rows.append(max_over_steps_row(dists) if max_over else dists[0])
    q = np.stack(rows) if rows else np.zeros((0, len(labels) + 1))
    return estimate_frame([g.id for g in gens], _names(labels, none_label, True), q)


def first_step(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL,
               settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return q(l) = p_1(l), the first label step's first-token distribution (labels + none rows).
    `settings` (None: the schema's defaults): which slots are steps, what a record without one gets."""
    return _step_estimate(gens, labels, none_label, "first_token", settings, max_over=False)


def first_step_whole(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL,
                     settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return q(l) = p_1(l) under the whole-label distribution of the first label step (labels + none
    rows); `settings` as in first_step."""
    return _step_estimate(gens, labels, none_label, "whole_label", settings, max_over=False)


def max_over_steps_row(dists: np.ndarray) -> np.ndarray:
    """Return max_over_steps' [L + 1] confidences from a record's per-step distributions [n_steps, L + 1].

    Labels: max over every step, floored at EPS; `none`: the first step's p_1(none), floored at EPS
    (module docstring). A record without steps has no distributions: use `no_label_row`.
    """
    if len(dists) == 0:
        raise ValueError("max_over_steps_row needs at least one label step")
    q = dists.max(axis=0)
    q[-1] = dists[0, -1]
    return np.maximum(q, EPS)


def max_over_steps(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL,
                   settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return q(l) = max(max over label steps t of p_t(l), EPS), first-token distributions; none: p_1(none).
    `settings` (None: the schema's defaults): which slots are steps, what a record without one gets."""
    return _step_estimate(gens, labels, none_label, "first_token", settings, max_over=True)


def max_over_steps_whole(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL,
                         settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return q(l) = max(max over label steps t of p_t(l), EPS), whole-label distributions; none: p_1(none);
    `settings` as in max_over_steps."""
    return _step_estimate(gens, labels, none_label, "whole_label", settings, max_over=True)


def compare_to_none_features(steps: Sequence[Step]) -> np.ndarray | None:
    """Return z_l - z_none for every label from the first of `steps`' first-token logits ([L]); None
    without steps."""
    if not steps:
        return None
    z = np.maximum(steps[0].first_token_logits, LOGIT_FLOOR)
    return z[:-1] - z[-1]


def compare_to_none(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL,
                    w: float = 1.0, b: float = 0.0, settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return q(l) = sigmoid(w (z_l - z_none) + b) from the first step's logits (label rows only).

    With (w, b) = (1, 0) this is p_1(l) / (p_1(l) + p_1(none)). Records without a label step get EPS
    (under either `no_label_step`). `settings.label_steps` (None: the schema's default) decides which
    slot is the first step.
    """
    rule = _settings(settings).label_steps
    rows = []
    for g in gens:
        x = compare_to_none_features(label_steps(g, rule))
        rows.append(np.full(len(labels), EPS) if x is None else expit(w * x + b))
    q = np.stack(rows) if rows else np.zeros((0, len(labels)))
    return estimate_frame([g.id for g in gens], list(labels), q)


def fit_platt(gens: Sequence[Generation], p_ref: Mapping[str, np.ndarray],
              include_none: bool = True, settings: EstimationSettings | None = None) -> tuple[float, float]:
    """Return one shared (w, b) minimising the BCE between sigmoid(w (z_l - z_none) + b) and p_ref(l).

    `settings.label_steps` (None: the schema's default) decides which slot is a record's first step.
    All labels of all records with a label step are pooled; with `include_none` (the study's fit, the
    default) each record also adds its `none` column: feature z_none - z_none = 0, target p_ref(none),
    so `p_ref[id]` must then hold L + 1 shares (labels, then none; `labeldist.artifacts.splits.p_ref_matrix` over labels + none).
    `include_none=False` fits the L label columns only (the shares that are scored; our earlier fit).
    Soft targets are fitted exactly (the optimum; the study runs 1000 Adam steps from (1, 0)) with
    scikit-learn's unpenalised LogisticRegression by the standard weighting: each (x, t) becomes a
    positive row of weight t and a negative row of weight 1 - t. Without any usable record the
    uncalibrated (1, 0) is returned (and a warning logged). DataError if a record's id has no p_ref.
    """
    from sklearn.linear_model import LogisticRegression

    rule = _settings(settings).label_steps
    xs, ts = [], []
    for g in gens:
        if g.id not in p_ref:
            raise DataError(g.source, f"id {g.id!r} has no p_ref in the data file", line=g.line, field="id")
        x = compare_to_none_features(label_steps(g, rule))
        if x is None:
            continue
        target = np.asarray(p_ref[g.id], dtype=np.float64)
        if include_none:
            if len(target) != len(x) + 1:
                raise ValueError(f"Platt fit with the none column needs {len(x) + 1} p_ref shares "
                                 f"(labels, then none) for id {g.id!r}, got {len(target)}")
            x = np.append(x, 0.0)
        else:
            target = target[:len(x)]
        xs.append(x)
        ts.append(target)
    if not xs:
        log.warning("Platt scaling: no record with a label step to fit on; using (w, b) = (1, 0)")
        return 1.0, 0.0
    x = np.concatenate(xs)
    t = np.concatenate(ts)
    model = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10)  # converged, not approximately
    model.fit(np.concatenate([x, x])[:, None], np.concatenate([np.ones_like(t), np.zeros_like(t)]),
              sample_weight=np.concatenate([t, 1.0 - t]))
    w, b = float(model.coef_[0, 0]), float(model.intercept_[0])
    log.info("Platt scaling on %d records (%d label scores): w = %.4f, b = %.4f", len(xs), x.size, w, b)
    return w, b


def compare_to_none_platt(gens: Sequence[Generation], labels: Sequence[str], none_label: str,
                          dev_gens: Sequence[Generation], dev_p_ref: Mapping[str, np.ndarray],
                          include_none: bool = True, settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return compare_to_none on `gens` with (w, b) fitted by `fit_platt` on `dev_gens` against `dev_p_ref`
    (labels then none per id; `include_none` and `settings` as in fit_platt, the same steps for both)."""
    w, b = fit_platt(dev_gens, dev_p_ref, include_none=include_none, settings=settings)
    return compare_to_none(gens, labels, none_label, w=w, b=b, settings=settings)


def output(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL) -> pd.DataFrame:
    """Return q = 1 - EPS for the record's generated labels and EPS otherwise; none = 1 - EPS iff no label."""
    index = {l: i for i, l in enumerate(labels)}
    q = np.full((len(gens), len(labels) + 1), EPS)
    for i, g in enumerate(gens):
        for l in g.labels:
            q[i, index[l]] = 1.0 - EPS
        if not g.labels:
            q[i, -1] = 1.0 - EPS
    return estimate_frame([g.id for g in gens], _names(labels, none_label, True), q)


# ---- token-level estimators (Praharaj & Kasundra) ------------------------------------------------------
def _emitted(gen: Generation, labels: Sequence[str], none_label: str) -> list[tuple[int, float]]:
    """Return (item index, exp(label_logprob)) for each distinct emitted label or none, first slot only."""
    index = {l: i for i, l in enumerate(labels)}
    index[none_label] = len(labels)
    out, seen = [], set()
    for t, step in enumerate(gen.steps):
        if step.label is None or step.label in seen:
            continue
        seen.add(step.label)
        if step.label_logprob is None:
            raise DataError(gen.source, f"needed for emitted label {step.label!r}", line=gen.line,
                            field=f"steps[{t}].label_logprob")
        out.append((index[step.label], math.exp(step.label_logprob)))
    return out


def _token_level(gen: Generation, labels: Sequence[str], none_label: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (conditional, joint) confidences over labels + none for one record (module docstring)."""
    n = len(labels)
    if not gen.steps:
        fallback = no_label_fallback(n)
        return fallback, fallback.copy()
    conditional = np.exp(gen.steps[0].whole_label_logprobs)
    joint = np.empty(n + 1)
    running = 1.0  # product over emitted labels (not none) so far
    emitted = _emitted(gen, labels, none_label)
    for k, p in emitted:
        conditional[k] = p
        joint[k] = running * p
        if k != n:
            running *= p
    done = {k for k, _ in emitted}
    for k in range(n + 1):
        if k not in done:
            joint[k] = conditional[k] * running
    return np.clip(conditional, 0.0, 1.0), np.clip(joint, 0.0, 1.0)


def conditional(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL) -> pd.DataFrame:
    """Return q(l) = P(l's tokens | greedy prefix) where l was emitted, else exp(whole_label_logprobs_1[l]).

    Labels + none rows; see the module docstring for repeats and outputs without a label step.
    """
    q = np.stack([_token_level(g, labels, none_label)[0] for g in gens]) if gens else np.zeros((0, len(labels) + 1))
    return estimate_frame([g.id for g in gens], _names(labels, none_label, True), q)


def joint(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL) -> pd.DataFrame:
    """Return q(l) = running product of the emitted labels' probabilities up to l (labels + none rows).

    Not emitted: conditional(l) times the product over all emitted labels (module docstring).
    """
    q = np.stack([_token_level(g, labels, none_label)[1] for g in gens]) if gens else np.zeros((0, len(labels) + 1))
    return estimate_frame([g.id for g in gens], _names(labels, none_label, True), q)


def marginal(gens: Sequence[Generation], labels: Sequence[str], none_label: str = NONE_LABEL) -> pd.DataFrame:
    """Return q(l) = the record's `marginal` probability that l appears anywhere in the output (labels + none).

    DataError if a record has no `marginal` (config generation.marginal is off).
    """
    rows = []
    for g in gens:
        if g.marginal is None:
            raise DataError(g.source, "missing: the marginal estimator needs generation.marginal: true",
                            line=g.line, field="marginal")
        rows.append(g.marginal)
    q = np.stack(rows) if rows else np.zeros((0, len(labels) + 1))
    return estimate_frame([g.id for g in gens], _names(labels, none_label, True), q)


# ---- extra-prompt estimators -------------------------------------------------------------------------
def unary(records: Sequence[UnaryRecord], labels: Sequence[str]) -> pd.DataFrame:
    """Return q(l) = P("reasonable") of the unary prompt for (example, l) (label rows only)."""
    q = np.stack([r.p_reasonable for r in records]) if records else np.zeros((0, len(labels)))
    return estimate_frame([r.id for r in records], list(labels), q)


TIE_RULES = ("loss", "half")
"""How pairwise_outcome scores an exact tie P(a) = 0.5: `loss` (0 for a, the study's `a > b`) or `half`."""


def hard_outcomes(p_a: np.ndarray, tie: str = "loss") -> np.ndarray:
    """Return 1.0 where p_a > 0.5, 0.0 where p_a < 0.5, and at p_a == 0.5: 0.0 (`loss`) or 0.5 (`half`).

    The two rules give the same Bradley-Terry objective only for a pair tied in both presentation
    orders (BCE(0, d) + BCE(0, -d) = 2 BCE(1/2, d)); they differ where a pair is tied in one order and
    not in the other, and for a tie where only one order was asked (every pair under config
    `generation.pairwise_orders: one`).
    """
    if tie not in TIE_RULES:
        raise ValueError(f"tie must be one of {TIE_RULES}, got {tie!r}")
    p_a = np.asarray(p_a, dtype=np.float64)
    return np.where(p_a > 0.5, 1.0, np.where(p_a < 0.5, 0.0, 0.0 if tie == "loss" else 0.5))


def _pairwise(records: Sequence[PairwiseRecord], labels: Sequence[str], hard: bool, seed: int,
              tie: str = "loss", **fit_kwargs: Any) -> pd.DataFrame:
    from .bradley_terry import fit_bradley_terry

    n_pairs = max((len(r.a) for r in records), default=0)
    shape = (len(records), max(n_pairs, 1))
    idx_a, idx_b = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    target, mask = np.full(shape, 0.5), np.zeros(shape, dtype=bool)
    for i, r in enumerate(records):
        m = len(r.a)
        idx_a[i, :m], idx_b[i, :m], mask[i, :m] = r.a, r.b, True
        target[i, :m] = hard_outcomes(r.p_a, tie) if hard else r.p_a
    empty = [r.id for r in records if len(r.a) == 0]
    if empty:
        log.warning("%d records have no pairs; their labels get q = 0.5: %s", len(empty), empty[:5])
    strengths = fit_bradley_terry(idx_a, idx_b, target, len(labels) + 1, mask, seed=seed,
                                  progress=len(records) > 500, **fit_kwargs)
    q = expit(strengths[:, :-1] - strengths[:, -1:])
    return estimate_frame([r.id for r in records], list(labels), q)


def pairwise_bt(records: Sequence[PairwiseRecord], labels: Sequence[str], seed: int = 0,
                **fit_kwargs: Any) -> pd.DataFrame:
    """Return q(l) = sigmoid(s_l - s_none), Bradley-Terry strengths fitted per example on P("a") (label rows).

    Every pair the record holds enters the fit: both presentation orders of each (config
    `generation.pairwise_orders: both`, so a constant position bias favours no item) or one (`one`, the
    study's protocol).
    `fit_kwargs` go to `fit_bradley_terry` (l2, reduction, lr, steps, threads); by default the study's
    objective: the sum of the pair losses + 0.01 ||s||^2.
    """
    return _pairwise(records, labels, hard=False, seed=seed, **fit_kwargs)


def pairwise_outcome(records: Sequence[PairwiseRecord], labels: Sequence[str], seed: int = 0,
                     tie: str = "loss", **fit_kwargs: Any) -> pd.DataFrame:
    """Return pairwise_bt fitted on hard outcomes (`hard_outcomes`: 1 if p_a > 0.5, else 0, as the study;
    `tie="half"` scores an exact tie 0.5) (label rows)."""
    return _pairwise(records, labels, hard=True, seed=seed, tie=tie, **fit_kwargs)


# ---- registry and the file-level entry point ---------------------------------------------------------------
GENERATION_ESTIMATORS: dict[str, Callable[..., pd.DataFrame]] = {
    "first_step": first_step,
    "first_step_whole": first_step_whole,
    "compare_to_none": compare_to_none,
    "max_over_steps": max_over_steps,
    "max_over_steps_whole": max_over_steps_whole,
    "output": output,
    "conditional": conditional,
    "joint": joint,
    "marginal": marginal,
}
"""Estimators of this module that read one `baseline` generation file, by config name."""

STEP_ESTIMATORS = ("first_step", "first_step_whole", "compare_to_none", "max_over_steps", "max_over_steps_whole")
"""The GENERATION_ESTIMATORS that read `EstimationSettings` (keyword `settings`; also compare_to_none_platt)."""

ESTIMATOR_NAMES: tuple[str, ...] = (*GENERATION_ESTIMATORS, "compare_to_none_platt", "unary",
                                    "pairwise_bt", "pairwise_outcome")
"""Every estimator this module computes (the estimate rule's estimator wildcard)."""


def estimate(estimator: str, generations: str | os.PathLike, labels_file: str | os.PathLike, *,
             seed: int = 0, dev_generations: str | os.PathLike | None = None,
             dev_data: str | os.PathLike | None = None, threads: int = 1,
             settings: EstimationSettings | None = None) -> pd.DataFrame:
    """Return the estimate frame of `estimator` for one generation file (see the module docstring).

    `compare_to_none_platt` also needs `dev_generations` (the dev subset's baseline generation file)
    and `dev_data` (the dev split's data file with p_ref). `seed` seeds the Bradley-Terry fits, which
    run on `threads` torch threads. `settings`: config `estimation` for the STEP_ESTIMATORS and
    compare_to_none_platt (None: the schema's defaults).
    """
    label_set = read_label_set(labels_file)
    labels, none_label = label_set.labels, label_set.none_label
    settings = _settings(settings)
    if estimator in GENERATION_ESTIMATORS:
        gens = read_generations(generations, labels, none_label)
        log.info("%s: %d records, %d without a label step (%s)", estimator, len(gens),
                 sum(not label_steps(g, settings.label_steps) for g in gens), settings.label_steps)
        extra = {"settings": settings} if estimator in STEP_ESTIMATORS else {}
        return GENERATION_ESTIMATORS[estimator](gens, labels, none_label, **extra)
    if estimator == "compare_to_none_platt":
        if dev_generations is None or dev_data is None:
            raise ValueError("compare_to_none_platt needs dev_generations and dev_data")
        gens = read_generations(generations, labels, none_label)
        dev_gens = read_generations(dev_generations, labels, none_label)
        dev_records = read_split(dev_data, label_set)
        dev_p_ref = dict(zip([r["id"] for r in dev_records], p_ref_matrix(dev_records, label_set.with_none)))
        return compare_to_none_platt(gens, labels, none_label, dev_gens, dev_p_ref, settings=settings)
    if estimator == "unary":
        return unary(read_unary(generations, labels), labels)
    if estimator in ("pairwise_bt", "pairwise_outcome"):
        records = read_pairwise(generations, labels, none_label)
        fit = pairwise_bt if estimator == "pairwise_bt" else pairwise_outcome
        return fit(records, labels, seed=seed, threads=threads)
    raise ValueError(f"unknown estimator {estimator!r}; this module computes {', '.join(ESTIMATOR_NAMES)}")
