"""`generations/{dataset}/{model}/{regime}/{prompting}/{subset}/seed{seed}.jsonl` (docs/formats.md,
"Generations"): the one writer and the one reader of generation records.

Every stage that reads generation records (the estimators, the probes, the metrics' generation counts,
the analyses, findings and figures) gets them from `read_generations` (baseline and icl_sweep records),
`read_unary` or `read_pairwise`, which check each record once against the format and return typed
records: `Generation` (with its `Step`s in generation order), `UnaryRecord`, `PairwiseRecord`. A
malformed record raises DataError naming the file, line and field. Distributions are over the labels
followed by `none` (L + 1 entries); index L is `none`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..config import NONE_LABEL
from ..errors import DataError
from ..io import iter_jsonl, write_jsonl

PROB_TOLERANCE = 1e-6
"""How far outside [0, 1] a stored probability may drift by rounding before it is rejected."""


# ---- parsed records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One label slot of a generation: what was emitted and the scores of every label there."""

    label: str | None  # a label, `none`, or None for an unknown string
    first_token_logits: np.ndarray  # [L + 1] raw logits of each label's first token in context
    whole_label_logprobs: np.ndarray  # [L + 1] full-vocabulary log P(label's whole token sequence)
    label_logprob: float | None  # log P(emitted label's token sequence); None if not given
    position: int | None = None  # index into the generated ids where the slot starts; None if not given


@dataclass(frozen=True)
class Generation:
    """A parsed `baseline` or `icl_sweep` generation record; `source`/`line` locate it for error messages.

    `labels`: the record's known labels, deduplicated, in emission order, `none` excluded (the format's
    `labels` field: what the output says). `steps`: the label slots in generation order. `ratio`: the
    sweep ratio (icl_sweep only). The flags and lists of the format's output checks default to "clean"
    where a record leaves them out.
    """

    id: str
    labels: tuple[str, ...]
    steps: tuple[Step, ...]
    marginal: np.ndarray | None  # [L + 1] or None when the generator did not compute it
    source: str = "<records>"
    line: int | None = None
    ratio: float | None = None
    no_label: bool = False
    unknown: tuple[str, ...] = ()
    repeated: tuple[str, ...] = ()
    hit_max_tokens: bool = False
    truncated: bool = False  # the query text was shortened to fit the model's context (labeldist.context)

    @property
    def slot_labels(self) -> list[str]:
        """The labels emitted at the label slots in generation order, `none` included, unknown strings and
        repeats left out (the label-order analysis: is the k-th answer right, where `none` is an answer)."""
        out: list[str] = []
        for step in self.steps:
            if step.label is not None and step.label not in out:
                out.append(step.label)
        return out


@dataclass(frozen=True)
class UnaryRecord:
    """A parsed `unary` record: P(reasonable) for each label, in label order."""

    id: str
    p_reasonable: np.ndarray  # [L]
    source: str = "<records>"
    line: int | None = None
    truncated: bool = False


@dataclass(frozen=True)
class PairwiseRecord:
    """A parsed `pairwise` record: item indices (labels then none = L) and P(a preferred) per pair."""

    id: str
    a: np.ndarray  # [n_pairs] int
    b: np.ndarray  # [n_pairs] int
    p_a: np.ndarray  # [n_pairs] float
    source: str = "<records>"
    line: int | None = None
    truncated: bool = False


# ---- parsing and validation -----------------------------------------------------------------------
def _field(obj: Mapping, name: str, source: str, line: int | None, where: str = "") -> Any:
    if name not in obj:
        raise DataError(source, "missing field", line=line, field=where + name)
    return obj[name]


def _id(obj: Mapping, source: str, line: int | None) -> str:
    value = _field(obj, "id", source, line)
    if not isinstance(value, str) or not value:
        raise DataError(source, f"expected a non-empty string, got {value!r}", line=line, field="id")
    return value


def _vector(value: Any, n: int, source: str, line: int | None, field: str,
            allow_neg_inf: bool = True) -> np.ndarray:
    """Return `value` as a float64 vector of length n; NaN, +inf (and -inf unless allowed) are errors."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise DataError(source, f"expected a list of {n} numbers (labels then none), got {got}",
                        line=line, field=field)
    # JSON numbers only: numpy would silently read "1.5" and true as numbers, and nested lists as a matrix.
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value):
        raise DataError(source, "expected numbers only", line=line, field=field)
    vec = np.asarray(value, dtype=np.float64)
    if np.isnan(vec).any() or np.isposinf(vec).any() or (not allow_neg_inf and np.isneginf(vec).any()):
        raise DataError(source, "contains NaN or infinite values", line=line, field=field)
    if np.isneginf(vec).all():
        raise DataError(source, "every entry is -inf: no distribution can be formed", line=line, field=field)
    return vec


def _logprobs(value: Any, n: int, source: str, line: int | None, field: str) -> np.ndarray:
    """Return `value` as a vector of n log-probabilities (each <= 0 up to rounding, -inf allowed)."""
    vec = _vector(value, n, source, line, field)
    if np.any(vec > PROB_TOLERANCE):
        raise DataError(source, "log-probabilities must be <= 0", line=line, field=field)
    return np.minimum(vec, 0.0)


def _flag(obj: Mapping, name: str, source: str, line: int | None) -> bool:
    """Return the boolean field `name` of a record (False when absent); anything but true/false is a
    DataError."""
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise DataError(source, f"expected true or false, got {value!r}", line=line, field=name)
    return value


def _probabilities(vec: np.ndarray, source: str, line: int | None, field: str) -> np.ndarray:
    """Return `vec` clipped to [0, 1] after checking it is within rounding of that range."""
    if np.any(vec < -PROB_TOLERANCE) or np.any(vec > 1 + PROB_TOLERANCE):
        raise DataError(source, "probabilities must lie in [0, 1]", line=line, field=field)
    return np.clip(vec, 0.0, 1.0)


def parse_generation(obj: Mapping, labels: Sequence[str], none_label: str = NONE_LABEL,
                     source: str = "<records>", line: int | None = None) -> Generation:
    """Return the validated Generation of one `baseline` or `icl_sweep` record (docs/formats.md); DataError
    if malformed."""
    n = len(labels) + 1
    known = set(labels)
    slot_names = known | {none_label}
    gen_id = _id(obj, source, line)
    emitted = _field(obj, "labels", source, line)
    if not isinstance(emitted, list) or not all(isinstance(l, str) for l in emitted):
        raise DataError(source, "expected a list of label strings", line=line, field="labels")
    unknown = [l for l in emitted if l not in slot_names]
    if unknown:
        raise DataError(source, f"labels not in labels.json: {unknown}", line=line, field="labels")
    raw_steps = _field(obj, "steps", source, line)
    if not isinstance(raw_steps, list):
        raise DataError(source, "expected a list of steps", line=line, field="steps")
    steps = []
    for t, raw in enumerate(raw_steps):
        where = f"steps[{t}]."
        if not isinstance(raw, Mapping):
            raise DataError(source, "expected an object", line=line, field=f"steps[{t}]")
        label = raw.get("label")
        if label is not None and (not isinstance(label, str) or label not in slot_names):
            raise DataError(source, f"label {label!r} is neither in labels.json nor {none_label!r} "
                            "(unknown strings are stored as null)", line=line, field=where + "label")
        position = raw.get("position")
        if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
            raise DataError(source, f"expected a non-negative integer, got {position!r}", line=line,
                            field=where + "position")
        logprob = raw.get("label_logprob")
        if logprob is not None:
            if not isinstance(logprob, (int, float)) or isinstance(logprob, bool) or math.isnan(logprob) \
                    or logprob > PROB_TOLERANCE:
                raise DataError(source, f"expected a log-probability <= 0, got {logprob!r}",
                                line=line, field=where + "label_logprob")
            logprob = float(min(logprob, 0.0))
        steps.append(Step(
            label=label,
            first_token_logits=_vector(_field(raw, "first_token_logits", source, line, where), n,
                                       source, line, where + "first_token_logits"),
            whole_label_logprobs=_logprobs(_field(raw, "whole_label_logprobs", source, line, where), n,
                                           source, line, where + "whole_label_logprobs"),
            label_logprob=logprob,
            position=position,
        ))
    if all(step.position is not None for step in steps):
        steps.sort(key=lambda step: step.position)  # generation order (writers list them so already)
    marginal = obj.get("marginal")
    if marginal is not None:
        marginal = _probabilities(_vector(marginal, n, source, line, "marginal", allow_neg_inf=False),
                                  source, line, "marginal")
    ratio = obj.get("ratio")
    if ratio is not None and (not isinstance(ratio, (int, float)) or isinstance(ratio, bool)
                              or not 0.0 <= ratio <= 1.0):
        raise DataError(source, f"expected a share in [0, 1], got {ratio!r}", line=line, field="ratio")
    checks = {}
    for name in ("unknown", "repeated"):
        value = obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(source, "expected a list of strings", line=line, field=name)
        checks[name] = tuple(value)
    for name in ("no_label", "hit_max_tokens", "truncated"):
        checks[name] = _flag(obj, name, source, line)
    return Generation(id=gen_id, labels=tuple(l for l in emitted if l in known), steps=tuple(steps),
                      marginal=marginal, source=source, line=line,
                      ratio=None if ratio is None else float(ratio), **checks)


def parse_unary(obj: Mapping, labels: Sequence[str], source: str = "<records>",
                line: int | None = None) -> UnaryRecord:
    """Return the validated UnaryRecord of one `unary` record; DataError if a label is missing or bad."""
    gen_id = _id(obj, source, line)
    p = _field(obj, "p_reasonable", source, line)
    if not isinstance(p, Mapping):
        raise DataError(source, "expected an object {label: probability}", line=line, field="p_reasonable")
    missing = [l for l in labels if l not in p]
    if missing:
        raise DataError(source, f"no probability for labels {missing}", line=line, field="p_reasonable")
    vec = _vector([p[l] for l in labels], len(labels), source, line, "p_reasonable", allow_neg_inf=False)
    return UnaryRecord(id=gen_id, p_reasonable=_probabilities(vec, source, line, "p_reasonable"),
                       source=source, line=line, truncated=_flag(obj, "truncated", source, line))


def parse_pairwise(obj: Mapping, labels: Sequence[str], none_label: str = NONE_LABEL,
                   source: str = "<records>", line: int | None = None) -> PairwiseRecord:
    """Return the validated PairwiseRecord of one `pairwise` record (items: labels, then none)."""
    gen_id = _id(obj, source, line)
    index = {l: i for i, l in enumerate(labels)}
    index[none_label] = len(labels)
    pairs = _field(obj, "pairs", source, line)
    if not isinstance(pairs, list):
        raise DataError(source, "expected a list of pairs", line=line, field="pairs")
    a, b, p = [], [], []
    for j, pair in enumerate(pairs):
        where = f"pairs[{j}]"
        if not isinstance(pair, Mapping):
            raise DataError(source, "expected an object with a, b, p_a", line=line, field=where)
        for key in ("a", "b"):
            item = _field(pair, key, source, line, where + ".")
            if not isinstance(item, str) or item not in index:
                raise DataError(source, f"{pair[key]!r} is neither in labels.json nor {none_label!r}",
                                line=line, field=f"{where}.{key}")
        if pair["a"] == pair["b"]:
            raise DataError(source, "a label compared with itself", line=line, field=where)
        p_a = _field(pair, "p_a", source, line, where + ".")
        if not isinstance(p_a, (int, float)) or isinstance(p_a, bool) or not 0.0 <= p_a <= 1.0:
            raise DataError(source, f"expected a probability in [0, 1], got {p_a!r}", line=line,
                            field=f"{where}.p_a")
        a.append(index[pair["a"]])
        b.append(index[pair["b"]])
        p.append(float(p_a))
    return PairwiseRecord(id=gen_id, a=np.asarray(a, dtype=np.int64), b=np.asarray(b, dtype=np.int64),
                          p_a=np.asarray(p, dtype=np.float64), source=source, line=line,
                          truncated=_flag(obj, "truncated", source, line))


def _read_records(path: str | os.PathLike, parse: Callable[..., Any]) -> list:
    """Parse every line of a JSONL file with `parse(obj, source=, line=)`; ids must be unique (per sweep
    ratio in an icl_sweep file)."""
    records, seen = [], {}
    for lineno, obj in iter_jsonl(path):
        rec = parse(obj, source=str(path), line=lineno)
        key = (rec.id, getattr(rec, "ratio", None))
        if key in seen:
            raise DataError(path, f"duplicate id {rec.id!r} (first on line {seen[key]})",
                            line=lineno, field="id")
        seen[key] = lineno
        records.append(rec)
    return records


def read_generations(path: str | os.PathLike, labels: Sequence[str],
                     none_label: str = NONE_LABEL) -> list[Generation]:
    """Return the parsed records of a `baseline` generation file (ids unique) or of an `icl_sweep` file
    (a record per example and ratio)."""
    return _read_records(path, lambda obj, source, line: parse_generation(obj, labels, none_label,
                                                                          source, line))


def read_unary(path: str | os.PathLike, labels: Sequence[str]) -> list[UnaryRecord]:
    """Return the parsed records of a `unary` generation file (ids unique)."""
    return _read_records(path, lambda obj, source, line: parse_unary(obj, labels, source, line))


def read_pairwise(path: str | os.PathLike, labels: Sequence[str],
                  none_label: str = NONE_LABEL) -> list[PairwiseRecord]:
    """Return the parsed records of a `pairwise` generation file (ids unique)."""
    return _read_records(path, lambda obj, source, line: parse_pairwise(obj, labels, none_label,
                                                                        source, line))


def write_generation_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Write a generation file atomically, one record per line (labeldist.generation builds the records);
    return the number of records written."""
    return write_jsonl(path, records)


__all__ = ["Generation", "PairwiseRecord", "Step", "UnaryRecord", "parse_generation", "parse_pairwise",
           "parse_unary", "read_generations", "read_pairwise", "read_unary", "write_generation_records"]
