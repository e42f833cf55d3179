"""`data/{dataset}/{split}.jsonl` and `data/{dataset}/subsets.json` (docs/formats.md, "Data"): the one
writer and the one reader of each.

Every stage reads a split through `read_split`, which checks each record once against the format and
returns the five fields of the format as a `SplitRecord`; the stages derive what they need from those
(gold sets, p_ref vectors, demo pools) and never parse the file themselves.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence, TypedDict

import numpy as np

from ..errors import DataError
from ..io import iter_jsonl, read_json, write_json, write_jsonl
from .labels import LabelSet

SUBSET_NAMES = ("main", "multi", "dev", "train")
"""The subsets of subsets.json, in file order."""
SUBSET_SPLIT = {"main": "test", "multi": "test", "dev": "dev", "train": "train"}
"""The split each subset's ids come from."""


class SplitRecord(TypedDict):
    """One example of a split file: `labels` is the gold set in label order (empty = none),
    `annotations` one label list per annotator or None, `p_ref` a share in [0, 1] for every label of
    the label set and for the none label."""

    id: str
    text: str
    labels: list[str]
    annotations: list[list[str]] | None
    p_ref: dict[str, float]


def _label_list(value: Any, known: set[str], path: str | os.PathLike, line: int, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(l, str) for l in value):
        raise DataError(path, "expected a list of label strings", line=line, field=field)
    unknown = [l for l in value if l not in known]
    if unknown:
        raise DataError(path, f"labels {unknown} are not in labels.json", line=line, field=field)
    return list(value)


def _record(obj: Mapping[str, Any], label_set: LabelSet, path: str | os.PathLike, line: int) -> SplitRecord:
    """Return the checked SplitRecord of one line; DataError names file, line and field."""
    for name in ("id", "text"):
        if name not in obj:
            raise DataError(path, "missing field", line=line, field=name)
        if not isinstance(obj[name], str):
            raise DataError(path, f"expected a string, got {type(obj[name]).__name__}", line=line, field=name)
    if not obj["id"]:
        raise DataError(path, "empty id", line=line, field="id")
    known = set(label_set.labels)
    if "labels" not in obj:
        raise DataError(path, "missing field", line=line, field="labels")
    labels = _label_list(obj["labels"], known, path, line, "labels")
    annotations = obj.get("annotations")  # absent reads as null: the dataset has no annotator data
    if annotations is not None:
        if not isinstance(annotations, list):
            raise DataError(path, "expected a list of label lists or null", line=line, field="annotations")
        annotations = [_label_list(a, known, path, line, f"annotations[{i}]") for i, a in enumerate(annotations)]
    p_ref = obj.get("p_ref")
    if not isinstance(p_ref, Mapping):
        raise DataError(path, "missing p_ref object {label: share}", line=line, field="p_ref")
    shares = {}
    for label in label_set.with_none:
        value = p_ref.get(label)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) \
                or not 0.0 <= value <= 1.0:
            raise DataError(path, f"expected a share in [0, 1] for label {label!r}, got {value!r}",
                            line=line, field=f"p_ref.{label}")
        shares[label] = float(value)
    return SplitRecord(id=obj["id"], text=obj["text"], labels=labels, annotations=annotations, p_ref=shares)


def read_split(path: str | os.PathLike, label_set: LabelSet) -> list[SplitRecord]:
    """Return the records of a `{split}.jsonl` file in file order, each checked (`_record`); ids must be
    unique and the file non-empty. DataError names the file, line and field at fault."""
    records: list[SplitRecord] = []
    seen: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        rec = _record(obj, label_set, path, line)
        if rec["id"] in seen:
            raise DataError(path, f"duplicate id {rec['id']!r} (first on line {seen[rec['id']]})", line=line,
                            field="id")
        seen[rec["id"]] = line
        records.append(rec)
    if not records:
        raise DataError(path, "no records")
    return records


def write_split(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Write a split file atomically, one record per line (labeldist.data.records.Example.to_record:
    the five fields of the format, then any extras); return the number of records written."""
    return write_jsonl(path, records)


def read_subsets(path: str | os.PathLike, required: Sequence[str] = ()) -> dict[str, list[str]]:
    """Return subsets.json as {subset name: ids}; DataError names the file and the subset when it is not
    an object of id-string lists or lacks one of the `required` subsets (those the caller uses)."""
    subsets = read_json(path)
    if not isinstance(subsets, dict):
        raise DataError(path, "expected an object of id lists")
    for name in required:
        if name not in subsets:
            raise DataError(path, "missing subset", field=name)
    for name, ids in subsets.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError(path, "expected a list of id strings", field=name)
    return {name: list(ids) for name, ids in subsets.items()}


def write_subsets(path: str | os.PathLike, subsets: Mapping[str, Sequence[str]]) -> None:
    """Write subsets.json atomically (labeldist.data.subsets.make_subsets)."""
    write_json(path, {name: list(ids) for name, ids in subsets.items()})


def select_records(records: Sequence[SplitRecord], ids: Sequence[str], subsets_path: str | os.PathLike,
                   subset: str) -> list[SplitRecord]:
    """Return the records of subset `subset` in the order of its `ids`; DataError names subsets.json and
    the subset when an id is not in the split."""
    by_id = {r["id"]: r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(subsets_path, f"{len(missing)} id(s) not in the split, e.g. {missing[:3]}", field=subset)
    return [by_id[i] for i in ids]


def p_ref_matrix(records: Sequence[SplitRecord], names: Sequence[str]) -> np.ndarray:
    """Return the records' p_ref shares of `names` (labels, optionally followed by the none label) as a
    float64 array [n_records, len(names)] in record order."""
    return np.asarray([[r["p_ref"][name] for name in names] for r in records], dtype=np.float64).reshape(
        len(records), len(names))


def gold_matrix(records: Sequence[SplitRecord], labels: Sequence[str]) -> np.ndarray:
    """Return the records' gold sets as an int 0/1 array [n_records, len(labels)] in record order."""
    out = np.zeros((len(records), len(labels)), dtype=int)
    index = {label: j for j, label in enumerate(labels)}
    for i, rec in enumerate(records):
        for label in rec["labels"]:
            out[i, index[label]] = 1
    return out


def demo_pool(train: Sequence[SplitRecord], subsets: Mapping[str, Sequence[str]]) -> list[SplitRecord]:
    """Return the demonstration pool of docs/formats.md: the train split's records minus the `train`
    subset (the probes' training examples), in file order. The data stage caps that subset at half the
    train split, so the pool is never empty for its files."""
    held = set(subsets.get("train", []))
    return [r for r in train if r["id"] not in held]


__all__ = ["SUBSET_NAMES", "SUBSET_SPLIT", "SplitRecord", "demo_pool", "gold_matrix", "p_ref_matrix", "read_split", "read_subsets", "select_records", "write_split",
           "write_subsets"]
