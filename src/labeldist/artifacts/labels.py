"""`data/{dataset}/labels.json` (docs/formats.md, "Data"): the one writer and the one reader.

Every stage that needs a dataset's label set reads it through `read_label_set`, which returns one type
(`LabelSet`) with one meaning of every field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import NONE_LABEL, label_clash
from ..errors import DataError
from ..io import read_json, write_json


@dataclass(frozen=True)
class LabelSet:
    """A dataset's labels.json: label order (none excluded), task and where p_ref comes from."""

    dataset: str
    labels: list[str]
    none_label: str = NONE_LABEL
    task: str = "multilabel"
    p_ref_source: str = "annotators"

    @property
    def with_none(self) -> list[str]:
        """The labels followed by the none label: the order of every per-step distribution."""
        return [*self.labels, self.none_label]


def read_label_set(path: str | os.PathLike) -> LabelSet:
    """Return the LabelSet of a labels.json file; DataError names the file and the field that is missing
    or malformed (`dataset`; `labels`: a non-empty list of non-empty strings, distinct labels (not
    two names differing only in case or edge spaces, not `none` in any case; labeldist.config.label_clash);
    `none_label`: a string that is not one of the labels; `task`, `p_ref_source`: strings)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError(path, "expected a JSON object")
    if "dataset" not in obj:
        raise DataError(path, "missing field", field="dataset")
    labels = obj.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(l, str) and l for l in labels):
        raise DataError(path, "expected a non-empty list of label names", field="labels")
    none_label = obj.get("none_label", NONE_LABEL)
    if not isinstance(none_label, str) or none_label in labels:
        raise DataError(path, "must be a string that is not one of the labels", field="none_label")
    clash = label_clash(labels)
    if clash is not None:
        i, j = clash
        if i < 0:
            raise DataError(path, f"label {labels[j]!r} (entry {j + 1}) is the reserved {NONE_LABEL!r} in another "
                                  f"case", field="labels")
        if labels[i] == labels[j]:
            raise DataError(path, f"label {labels[j]!r} listed twice (entries {i + 1} and {j + 1})", field="labels")
        raise DataError(path, f"labels {labels[i]!r} (entry {i + 1}) and {labels[j]!r} (entry {j + 1}) are one "
                              f"label: they differ only in case or edge spaces, and outputs are matched to label "
                              f"names case-insensitively", field="labels")
    for key in ("task", "p_ref_source"):
        if key in obj and not isinstance(obj[key], str):
            raise DataError(path, "expected a string", field=key)
    return LabelSet(dataset=str(obj["dataset"]), labels=list(labels), none_label=none_label,
                    task=obj.get("task", "multilabel"), p_ref_source=obj.get("p_ref_source", "annotators"))


def write_label_set(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write a labels.json object (labeldist.data.records.LabelledData.labels_json) atomically."""
    write_json(path, dict(payload))


__all__ = ["LabelSet", "read_label_set", "write_label_set"]
