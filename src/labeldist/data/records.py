"""The data stage's record types and the reference distribution p_ref (docs/methods.md section 1).

Every loader returns a `LabelledData` whose examples are built by the `example_from_*` functions
below, so gold labels, annotations and p_ref follow one set of rules whatever the source format:

- multi-label with annotators: p_ref(l) = share of annotators who chose l; p_ref(none) = share who
  chose nothing; gold = labels with share >= 0.5;
- single-label with annotators: p_ref = the vote distribution (sums to 1, none = 0); gold = the
  majority label (ties are left to the loader's documented rule);
- shipped fractions ("distribution"): p_ref = the fractions; gold = share >= 0.5 unless given;
- gold only: p_ref = 1.0 for gold labels, 0.0 otherwise, none = 1.0 when the gold set is empty.

Bad input is a DataError naming file, line and field, never a silent fix. Beyond malformed records
this covers: texts longer than MAX_TEXT_CHARS (a corrupt record, e.g. a missing closing quote that
swallowed the rest of a CSV file; a shorter text that is still longer than a model's context is cut at
generation, labeldist.context); label names that
are empty or contain a comma, a double quote, a tab or a line break (they would break the comma and
JSON label formats of the prompts); a label set holding two names that differ only in case or edge
spaces, or `none` in any case (the output parsers match names case-insensitively); a label set of fewer than MIN_LABELS labels; single-label shares
that do not sum to 1 (within SUM_TOLERANCE).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..config import NONE_LABEL, label_clash, label_key
from ..errors import DataError

SPLITS = ("train", "dev", "test")
TASKS = ("multilabel", "single_label")
P_REF_SOURCES = ("annotators", "distribution", "gold")
GOLD_THRESHOLD = 0.5
_EPS = 1e-9  # shares are k/n floats: compare `>= 0.5` with a little slack
MAX_TEXT_CHARS = 100_000
"""Longest text accepted (characters; about 25k tokens, far beyond every dataset of the study)."""
MIN_LABELS = 2
"""Smallest label set: one label plus `none` is a binary task, not a multi-label one."""
SUM_TOLERANCE = 0.02
"""How far a single-label example's shipped shares may sum away from 1 (rounded fractions)."""
_BAD_LABEL_CHARS = {",": "a comma", '"': "a double quote", "\t": "a tab", "\n": "a line break", "\r": "a line break"}


@dataclass(frozen=True)
class Origin:
    """Where a record came from: the file (or hub id) and its 1-based physical line, if known."""

    path: str
    line: int | None = None

    def error(self, message: str, field: str | None = None) -> DataError:
        """Return a DataError naming this file, line and `field`."""
        return DataError(self.path, message, line=self.line, field=field)

    def __str__(self) -> str:
        return self.path if self.line is None else f"{self.path}, line {self.line}"


@dataclass
class Example:
    """One example: id, text, gold label set, per-annotator label sets (or None) and p_ref."""

    id: str
    text: str
    labels: list[str]
    annotations: list[list[str]] | None
    p_ref: dict[str, float]
    origin: Origin | None = field(default=None, compare=False, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Return the JSON object of one line of `{split}.jsonl` (docs/formats.md), extras last."""
        rec: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "labels": list(self.labels),
            "annotations": None if self.annotations is None else [list(a) for a in self.annotations],
            "p_ref": dict(self.p_ref),
        }
        rec.update(self.extra)
        return rec


@dataclass
class LabelledData:
    """A loaded dataset: label order, task, p_ref source, the three splits and drop counts."""

    name: str
    loader: str
    labels: list[str]
    task: str
    p_ref_source: str
    splits: dict[str, list[Example]]
    skipped: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    skipped_annotations: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    notes: list[str] = field(default_factory=list)
    rule_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Records a documented rule touched, per rule and split (e.g. GoEmotions `neutral_with_emotion`)."""

    def labels_json(self) -> dict[str, Any]:
        """Return the content of `labels.json` (docs/formats.md)."""
        return {
            "dataset": self.name,
            "labels": list(self.labels),
            "none_label": NONE_LABEL,
            "task": self.task,
            "p_ref_source": self.p_ref_source,
            "counts": {s: len(self.splits.get(s, [])) for s in SPLITS},
            "skipped": {s: int(self.skipped.get(s, 0)) for s in SPLITS},
            "skipped_annotations": {s: int(self.skipped_annotations.get(s, 0)) for s in SPLITS},
            "loader": self.loader,
            "notes": list(self.notes),
            **({"rule_counts": {rule: {s: int(c.get(s, 0)) for s in SPLITS} for rule, c in self.rule_counts.items()}}
               if self.rule_counts else {}),
        }

    def count_rule(self, rule: str, split: str, n: int = 1) -> None:
        """Count `n` records of `split` touched by the documented rule `rule` (labels.json rule_counts)."""
        counts = self.rule_counts.setdefault(rule, {s: 0 for s in SPLITS})
        counts[split] += n


# ---- label sets ---------------------------------------------------------------------------------
def check_label_name(label: Any, origin: Origin, field: str) -> str:
    """Return `label` without edge spaces if it is a usable label name: a non-empty string without
    commas, double quotes, tabs or line breaks (they would break the prompts' label formats); else
    DataError. Edge spaces never count, in any field or in the config: "joy " is "joy"."""
    if not isinstance(label, str):
        raise origin.error(f"label must be a string, got {label!r}", field)
    if not label.strip():
        raise origin.error("empty label name", field)
    for ch, what in _BAD_LABEL_CHARS.items():
        if ch in label:
            raise origin.error(f"label {label!r} contains {what}: label names may not (they would break "
                               f"the comma and JSON label formats of the prompts)", field)
    return label.strip()


def order_labels(chosen: Iterable[str], label_set: Sequence[str], origin: Origin, field: str) -> list[str]:
    """Return `chosen` deduplicated, in `label_set` order; a label outside the set is a DataError.

    The literal "none" stands for the empty set and is dropped (it may not be combined with labels).
    """
    chosen = [lab.strip() if isinstance(lab, str) else lab for lab in chosen]  # edge spaces never count
    known = set(label_set)
    picked = set()
    for lab in chosen:
        if lab == NONE_LABEL:
            continue
        if lab not in known:
            shown = ", ".join(label_set[:12]) + (", ..." if len(label_set) > 12 else "")
            near = next((l for l in [*label_set, NONE_LABEL]
                         if isinstance(lab, str) and label_key(l) == label_key(lab)), None)
            hint = f"; label names are case-sensitive in the data: write {near!r}" if near else ""
            raise origin.error(f"label {lab!r} is not in the label set ({shown}){hint}", field)
        picked.add(lab)
    if NONE_LABEL in chosen and picked:
        raise origin.error(f"'{NONE_LABEL}' combined with labels {sorted(picked)}", field)
    return [lab for lab in label_set if lab in picked]


def check_label_set(labels: Sequence[Any], origin: Origin, field: str | None,
                    origins: Sequence[Origin] | None = None) -> list[str]:
    """Return a label set's names (edge spaces dropped) after checking each (check_label_name) and that
    they are distinct labels: two names that differ only in case or edge spaces ("Anger", "anger ") are
    one label to the output parsers (labeldist.config.label_key), and `none` is reserved in any case
    ("None"). The DataError names `origin` (or, when `origins` gives one per label, where the second
    name comes from), the field, and where the first one is."""
    places = list(origins) if origins is not None else [origin] * len(labels)
    names = [check_label_name(lab, at, field) for lab, at in zip(labels, places)]
    clash = label_clash(names)
    if clash is None:
        return names
    i, j = clash
    if i < 0:
        raise places[j].error(f"label {names[j]!r} is the reserved {NONE_LABEL!r} (the empty label set; "
                              f"reserved in any case)", field)
    first = str(places[i]) if origins is not None else f"entry {i + 1} of the label set"
    raise places[j].error(f"duplicate label {names[j]!r}: the same label as {names[i]!r} ({first}); names "
                          f"that differ only in case or edge spaces are one label, since outputs are matched "
                          f"to label names case-insensitively", field)


def normalise_shares(distribution: Mapping[Any, Any], origin: Origin, field: str) -> dict[Any, Any]:
    """Return a label -> share mapping with edge spaces dropped from its keys; two keys that are the
    same label (e.g. "joy" and "joy ") are a DataError."""
    out: dict[Any, Any] = {}
    for key, val in distribution.items():
        name = key.strip() if isinstance(key, str) else key
        if name in out:
            raise origin.error(f"duplicate label {name!r} in the distribution (edge spaces do not count)", field)
        out[name] = val
    return out


# ---- reference distributions --------------------------------------------------------------------
def p_ref_from_annotations(annotations: Sequence[Sequence[str]], labels: Sequence[str]) -> dict[str, float]:
    """Return the multi-label p_ref: per label the share of annotators who chose it, plus "none"
    (the share whose label set is empty). Per-label marginals: they do not sum to 1."""
    n = len(annotations)
    counts = Counter(lab for ann in annotations for lab in set(ann))
    p = {lab: counts.get(lab, 0) / n for lab in labels}
    p[NONE_LABEL] = sum(1 for ann in annotations if not ann) / n
    return p


def p_ref_from_votes(votes: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Return the single-label p_ref: the categorical distribution of the votes (sums to 1), none = 0."""
    n = len(votes)
    counts = Counter(votes)
    p = {lab: counts.get(lab, 0) / n for lab in labels}
    p[NONE_LABEL] = counts.get(NONE_LABEL, 0) / n
    return p


def p_ref_from_gold(gold: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Return the gold-only p_ref: 1.0 for gold labels, 0.0 otherwise; none = 1.0 iff gold is empty."""
    on = set(gold)
    p = {lab: 1.0 if lab in on else 0.0 for lab in labels}
    p[NONE_LABEL] = 0.0 if on else 1.0
    return p


def gold_from_shares(p_ref: Mapping[str, float], labels: Sequence[str],
                     threshold: float = GOLD_THRESHOLD) -> list[str]:
    """Return the labels (in label order) whose share is >= `threshold` (the aggregate gold set)."""
    return [lab for lab in labels if p_ref.get(lab, 0.0) >= threshold - _EPS]


def majority_label(votes: Sequence[str]) -> str | None:
    """Return the most voted label, or None when two or more labels tie for the most votes."""
    ranked = Counter(votes).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


# ---- example builders (all validation of one example happens here) ------------------------------
def _check_text(text: Any, origin: Origin, field: str) -> str:
    if not isinstance(text, str):
        raise origin.error(f"text must be a string, got {type(text).__name__}", field)
    if not text.strip():
        raise origin.error("empty text", field)
    if len(text) > MAX_TEXT_CHARS:
        raise origin.error(f"text of {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,} "
                           f"(labeldist.data.records.MAX_TEXT_CHARS): a corrupt record (e.g. an unclosed "
                           f"quote) or a document to shorten", field)
    return text


def _check_id(ex_id: Any, origin: Origin, field: str) -> str:
    if isinstance(ex_id, bool) or not isinstance(ex_id, (str, int)):
        raise origin.error(f"id must be a string or integer, got {type(ex_id).__name__}", field)
    ex_id = str(ex_id).strip()
    if not ex_id:
        raise origin.error("empty id", field)
    return ex_id


def example_from_annotations(ex_id: Any, text: Any, annotations: Sequence[Sequence[str]],
                             labels: Sequence[str], origin: Origin, *, task: str = "multilabel",
                             gold: Sequence[str] | None = None, text_field: str = "text",
                             id_field: str = "id", annotations_field: str = "annotations",
                             labels_field: str = "labels") -> Example:
    """Return an Example whose p_ref comes from per-annotator label sets.

    Multi-label: gold = share >= 0.5 unless `gold` is given. Single-label: every annotation holds
    exactly one label, p_ref is the vote distribution and gold (unless given) is the majority; a tie
    raises DataError, so loaders with a tie rule must resolve it before calling.
    """
    ex_id = _check_id(ex_id, origin, id_field)
    text = _check_text(text, origin, text_field)
    if annotations is None or len(annotations) == 0:
        raise origin.error("example has zero annotators", annotations_field)
    anns = []
    for i, ann in enumerate(annotations):
        if isinstance(ann, str) or not isinstance(ann, (list, tuple)):
            raise origin.error(f"annotation {i} must be a list of labels, got {ann!r}", annotations_field)
        anns.append(order_labels(ann, labels, origin, f"{annotations_field}[{i}]"))
    if task == "single_label":
        for i, ann in enumerate(anns):
            if len(ann) != 1:
                raise origin.error(f"single-label task: annotation {i} has {len(ann)} labels", annotations_field)
        votes = [a[0] for a in anns]
        p_ref = p_ref_from_votes(votes, labels)
        if gold is None:
            top = majority_label(votes)
            if top is None:
                raise origin.error("annotator votes tie: no majority label", annotations_field)
            gold = [top]
    else:
        p_ref = p_ref_from_annotations(anns, labels)
    gold_set = gold_from_shares(p_ref, labels) if gold is None else order_labels(gold, labels, origin, labels_field)
    if task == "single_label" and len(gold_set) != 1:
        raise origin.error(f"single-label task: {len(gold_set)} gold labels", labels_field)
    return Example(ex_id, text, gold_set, anns, p_ref, origin)


def example_from_distribution(ex_id: Any, text: Any, distribution: Mapping[str, Any], labels: Sequence[str],
                              origin: Origin, *, gold: Sequence[str] | None = None, text_field: str = "text",
                              id_field: str = "id", distribution_field: str = "distribution",
                              labels_field: str = "labels", task: str = "multilabel") -> Example:
    """Return an Example whose p_ref is a shipped label -> share mapping (missing labels = 0.0;
    "none" missing = 1.0 when no label has a share, else 0.0); gold = share >= 0.5 unless given.
    Single-label (`task`): the shares, none included, must sum to 1 within SUM_TOLERANCE."""
    ex_id = _check_id(ex_id, origin, id_field)
    text = _check_text(text, origin, text_field)
    if not isinstance(distribution, Mapping):
        raise origin.error(f"expected an object of label -> share, got {type(distribution).__name__}",
                           distribution_field)
    if not distribution:
        raise origin.error("empty distribution: example has zero annotators", distribution_field)
    distribution = normalise_shares(distribution, origin, distribution_field)
    order_labels([k for k in distribution if k != NONE_LABEL], labels, origin, distribution_field)
    for key, val in distribution.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 <= float(val) <= 1.0:
            raise origin.error(f"share of {key!r} must be a number in [0, 1], got {val!r}", distribution_field)
    p_ref = {lab: float(distribution.get(lab, 0.0)) for lab in labels}
    if NONE_LABEL in distribution:
        p_ref[NONE_LABEL] = float(distribution[NONE_LABEL])
    else:
        p_ref[NONE_LABEL] = 0.0 if any(v > 0 for v in p_ref.values()) else 1.0
    if task == "single_label" and abs(sum(p_ref.values()) - 1.0) > SUM_TOLERANCE:
        raise origin.error(f"single-label task: the shares sum to {sum(p_ref.values()):.4g}, not 1",
                           distribution_field)
    gold_set = gold_from_shares(p_ref, labels) if gold is None else order_labels(gold, labels, origin, labels_field)
    return Example(ex_id, text, gold_set, None, p_ref, origin)


def example_from_gold(ex_id: Any, text: Any, gold: Sequence[str], labels: Sequence[str], origin: Origin, *,
                      text_field: str = "text", id_field: str = "id", labels_field: str = "labels") -> Example:
    """Return an Example without annotators: p_ref is 1.0 on gold labels, 0.0 elsewhere."""
    ex_id = _check_id(ex_id, origin, id_field)
    text = _check_text(text, origin, text_field)
    gold_set = order_labels(gold, labels, origin, labels_field)
    return Example(ex_id, text, gold_set, None, p_ref_from_gold(gold_set, labels), origin)


# ---- whole-dataset checks -----------------------------------------------------------------------
def check_dataset(data: LabelledData) -> LabelledData:
    """Return `data` after checking it is complete: every split present and non-empty, ids unique
    within and across splits (the DataError names both places), a label set of at least MIN_LABELS
    usable names (see check_label_name)."""
    if not data.labels:
        raise DataError(f"datasets.{data.name}", "empty label set", field="labels")
    data.labels = check_label_set(data.labels, Origin(f"datasets.{data.name}"), "labels")
    if len(data.labels) < MIN_LABELS:
        raise DataError(f"datasets.{data.name}", f"label set {data.labels} has {len(data.labels)} label(s), "
                        f"need at least {MIN_LABELS} (list every label in datasets.{data.name}.labels when some "
                        f"never occur in the data)", field="labels")
    seen: dict[str, tuple[str, Origin | None]] = {}
    for split in SPLITS:
        examples = data.splits.get(split)
        if not examples:
            raise DataError(f"datasets.{data.name}", f"split '{split}' has no examples ({data.skipped.get(split, 0)} "
                            f"dropped by a documented rule; a seeded split may need more data or another "
                            f"split_seed)")
        for ex in examples:
            if ex.id in seen:
                prev_split, prev_origin = seen[ex.id]
                where = ex.origin or Origin(data.name)
                raise where.error(f"duplicate id {ex.id!r} (split '{split}'; first seen in split "
                                  f"'{prev_split}' at {prev_origin or 'an earlier record'})", "id")
            seen[ex.id] = (split, ex.origin)
    return data
