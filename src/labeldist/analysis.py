"""Behavioural analyses of docs/methods.md section 7, computed from generation records (docs/formats.md).

Each function returns a tidy pandas DataFrame (one row per step, rank, emitted label or output) that
the figure functions in `labeldist.plots` draw, or a dict of summary numbers:

- per label step: top and second probability, entropy in bits, last vs intermediate step, and for
  intermediate steps p_r(label emitted next), p_{r+1}(step r's runner-up) and whether the runner-up is
  the next emitted label ("same: X%");
- sorted first-step label probabilities (spikiness);
- correctness of the 1st, 2nd, ... emitted label (label order);
- number of labels per output and the share of multi-label outputs per ICL ratio;
- training logs in long format.

A step's distribution is the softmax over the L + 1 label scores of that step (the study's definition,
`first_token_logits`), or over `whole_label_logprobs` with kind="whole_label".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import softmax
from scipy.stats import entropy

from .config import NONE_LABEL
from .errors import DataError
from .artifacts.generations import Generation, Step, read_generations
from .artifacts.labels import LabelSet
from .artifacts.paths import parse_generation_path
from .artifacts.splits import read_split

STEP_KINDS = {"first_token": "first_token_logits", "whole_label": "whole_label_logprobs"}
TRAINING_METRICS = ["loss", "reward", "dev_f1", "learning_rate"]


# ---- reading generation files ---------------------------------------------------------------------
def read_gold_sets(path: str | Path, label_set: LabelSet) -> dict[str, set[str]]:
    """Return {id: gold label set} of a data split file (`data/{dataset}/{split}.jsonl`)."""
    return {r["id"]: set(r["labels"]) for r in read_split(path, label_set)}


def load_generation_frames(paths: Iterable[str | Path], label_sets: Mapping[str, LabelSet],
                           build: Callable[[list[Generation], LabelSet], pd.DataFrame]) -> pd.DataFrame:
    """Return the concatenated `build(records, label_set)` frames of many generation files, with
    dataset, model, regime, prompting, subset and seed columns taken from each file's path.
    """
    frames = []
    for path in paths:
        meta = parse_generation_path(path)
        if meta["dataset"] not in label_sets:
            raise DataError(path, f"no labels.json given for dataset {meta['dataset']!r}")
        label_set = label_sets[meta["dataset"]]
        frame = build(read_generations(path, label_set.labels, label_set.none_label), label_set)
        frames.append(frame.assign(**meta))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


# ---- per-step distributions -----------------------------------------------------------------------
def step_distribution(step: Step, kind: str = "first_token") -> np.ndarray:
    """Return a label step's distribution over L + 1 labels: softmax of its scores of `kind`."""
    return softmax(getattr(step, STEP_KINDS[kind]))


def entropy_bits(p: np.ndarray) -> float:
    """Return the Shannon entropy of a distribution in bits."""
    return float(entropy(p, base=2))


def step_rows(record: Generation, names: Sequence[str], kind: str = "first_token") -> list[dict]:
    """Return one dict per label step r of a record (names: labels + none, the score order).

    Keys: step (1-based), n_steps, position ("last" or "intermediate"), emitted (label or None),
    top_label, top_prob, second_prob, entropy_bits; and for intermediate steps next_label (the label
    emitted at r + 1), p_next (p_r(next_label)), runner_up (the most probable label at r other than the
    one emitted at r; the second most probable where r held an unknown string), p_runner_up_next (p_{r+1}(runner_up)) and same (runner_up == next_label).
    Next-step values are None/NaN at the last step or when the next slot held an unknown string.
    """
    index = {name: i for i, name in enumerate(names)}
    steps = record.steps
    dists = [step_distribution(s, kind) for s in steps]
    rows = []
    for r, (step, p) in enumerate(zip(steps, dists)):
        order = np.argsort(-p, kind="stable")
        emitted = step.label
        if emitted is None:  # an unknown string at this slot: the runner-up is the second most probable
            runner = int(order[1])
        else:
            runner = next(int(i) for i in order if names[i] != emitted)
        row = {
            "id": record.id, "step": r + 1, "n_steps": len(steps),
            "position": "last" if r == len(steps) - 1 else "intermediate",
            "emitted": emitted, "top_label": names[int(order[0])],
            "top_prob": float(p[order[0]]), "second_prob": float(p[order[1]]),
            "entropy_bits": entropy_bits(p),
            "next_label": None, "p_next": math.nan, "runner_up": names[runner],
            "p_runner_up_next": math.nan, "same": None,
        }
        if r + 1 < len(steps):
            row["p_runner_up_next"] = float(dists[r + 1][runner])
            nxt = steps[r + 1].label
            if nxt is not None:
                row["next_label"] = nxt
                row["p_next"] = float(p[index[nxt]])
                row["same"] = bool(names[runner] == nxt)
        rows.append(row)
    return rows


STEP_COLUMNS = ["id", "step", "n_steps", "position", "emitted", "top_label", "top_prob", "second_prob",
                "entropy_bits", "next_label", "p_next", "runner_up", "p_runner_up_next", "same"]


def step_table(records: Iterable[Generation], label_set: LabelSet,
               kind: str = "first_token") -> pd.DataFrame:
    """Return step_rows of every record as one frame (columns STEP_COLUMNS; no rows for no-label outputs)."""
    rows = [row for rec in records for row in step_rows(rec, label_set.with_none, kind)]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)


def runner_up_summary(steps: pd.DataFrame) -> dict[str, float]:
    """Return the runner-up statistics of intermediate steps: how many there are (n_intermediate), how
    many have a known next label (n_with_next), mean p_r(next label), mean p_{r+1}(runner-up), and the
    share of steps whose runner-up is the next emitted label (same; NaN when there is none).
    """
    inter = steps[steps["position"] == "intermediate"]
    known = inter[inter["same"].notna()]
    return {
        "n_intermediate": int(len(inter)),
        "n_with_next": int(len(known)),
        "p_next": float(known["p_next"].mean()) if len(known) else math.nan,
        "p_runner_up_next": float(inter["p_runner_up_next"].mean()) if len(inter) else math.nan,
        "same": float(known["same"].astype(bool).mean()) if len(known) else math.nan,
    }


def first_step_ranks(records: Iterable[Generation], label_set: LabelSet,
                     kind: str = "first_token") -> pd.DataFrame:
    """Return the first label step's probabilities sorted high to low: columns id, rank (1 = top),
    prob; records without a label step contribute nothing.
    """
    rows = []
    for rec in records:
        if not rec.steps:
            continue
        p = np.sort(step_distribution(rec.steps[0], kind))[::-1]
        rows += [{"id": rec.id, "rank": i + 1, "prob": float(v)} for i, v in enumerate(p)]
    return pd.DataFrame(rows, columns=["id", "rank", "prob"])


# ---- emitted labels -------------------------------------------------------------------------------
def label_order_rows(records: Iterable[Generation], gold: Mapping[str, set[str]],
                     none_label: str = NONE_LABEL, max_order: int = 2, source: str = "generation") \
        -> pd.DataFrame:
    """Return one row per record and emitted position k <= max_order: id, order (1-based), label,
    correct (the label is in the gold set; `none` is correct only for an empty gold set).
    """
    rows = []
    for rec in records:
        if rec.id not in gold:
            raise DataError(source, f"id {rec.id!r} is not in the data split", field="id")
        truth = set(gold[rec.id]) - {none_label}
        for k, label in enumerate(rec.slot_labels[:max_order], start=1):
            correct = (not truth) if label == none_label else (label in truth)
            rows.append({"id": rec.id, "order": k, "label": label, "correct": bool(correct)})
    return pd.DataFrame(rows, columns=["id", "order", "label", "correct"])


def label_order_accuracy(rows: pd.DataFrame) -> pd.DataFrame:
    """Return accuracy and count per emitted position from label_order_rows (columns order, accuracy, n)."""
    grouped = rows.groupby("order")["correct"]
    return pd.DataFrame({"accuracy": grouped.mean().astype(float), "n": grouped.size()}).reset_index()


def output_label_counts(records: Iterable[Generation], none_label: str = NONE_LABEL) -> pd.DataFrame:
    """Return one row per output: id, ratio (NaN outside icl_sweep), n_labels (distinct known labels,
    none excluded, from the record's `labels`) and multi (n_labels > 1).
    """
    rows = []
    for rec in records:
        n = len({l for l in rec.labels if l != none_label})
        rows.append({"id": rec.id, "ratio": math.nan if rec.ratio is None else rec.ratio,
                     "n_labels": n, "multi": n > 1})
    return pd.DataFrame(rows, columns=["id", "ratio", "n_labels", "multi"])


def multi_label_share(counts: pd.DataFrame) -> pd.DataFrame:
    """Return the share of outputs with more than one label per ICL ratio (columns ratio, share, n)."""
    if counts["ratio"].isna().any():
        raise DataError("icl_sweep generation", "records without a sweep ratio", field="ratio")
    grouped = counts.groupby("ratio")["multi"]
    return pd.DataFrame({"share": grouped.mean().astype(float), "n": grouped.size()}).reset_index()


# ---- training logs ----------------------------------------------------------------------------------
def training_log_long(frame: pd.DataFrame, source: str | Path = "training_log.csv") -> pd.DataFrame:
    """Return a training log (labeldist.artifacts.tables.read_training_log) in long format: step, metric,
    value for each of loss, reward and learning_rate that the log has (rows without a value are dropped,
    as trainers log them sparsely); DataError names `source` when none of them holds a number."""
    present = [m for m in TRAINING_METRICS if m in frame.columns]
    if not present:
        raise DataError(source, f"none of the columns {TRAINING_METRICS} to plot", field="columns")
    long = frame.melt(id_vars="step", value_vars=present, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    if long.empty:
        raise DataError(source, f"columns {present} hold no numbers", field=present[0])
    return long.reset_index(drop=True)
