"""The generic loader: any JSONL or CSV/TSV file (format by extension), or a folder holding
{train,dev,test}.{jsonl,csv,tsv}.

Fields (config): `text_field`, `id_field`, and where p_ref comes from, decided by the first record:
`annotations_field` (a list of label lists; in CSV a JSON string) -> p_ref_source "annotators";
else `distribution_field` (label -> share; in CSV a JSON string) -> "distribution"; else
`labels_field` alone (a list, or a comma-separated string) -> "gold". When `labels_field` is present
next to annotations or a distribution it is taken as the gold set; otherwise gold = share >= 0.5
(single-label: the majority). Every later record must carry the same field.

Label set: config `labels` (in that order) or, when absent, every label seen in the data, sorted.
`none` in the data means the empty set. Names that differ only in case or edge spaces are one label,
and `none` is reserved in any case: a label set (configured or inferred) holding two such names, or
"None", is a DataError naming both places. Splits: the folder's file names, else `split_field` when
the records carry it, else a seeded 80/10/10 split by id (config `split_seed`). Config `task`:
`multilabel` (default) or `single_label`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import DataError
from ..io import iter_jsonl
from .readers import empty_splits, iter_csv, normalise_split, seeded_split, split_list
from .records import (NONE_LABEL, SPLITS, LabelledData, Origin, check_label_name, check_label_set,
                      example_from_annotations,
                      example_from_distribution, example_from_gold)

EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv"}
MODES = ("annotations", "distribution", "labels")


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, record) from a JSONL or CSV/TSV file (CSV values stay strings)."""
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"unknown file type {path.suffix!r} (expected {', '.join(EXTENSIONS)})")
    if kind == "jsonl":
        yield from iter_jsonl(path)
    else:
        yield from iter_csv(path, delimiter="\t" if kind == "tsv" else ",")


def _files(path: Path, name: str) -> list[tuple[Path, str | None]]:
    """[(file, split or None)]: the file itself, or a folder's train/dev/test files."""
    key = f"datasets.{name}.path"
    if path.is_file():
        return [(path, None)]
    if not path.is_dir():
        raise DataError(path, "file or folder not found", field=key)
    out = []
    for split in SPLITS:
        found = [path / f"{split}{ext}" for ext in EXTENSIONS if (path / f"{split}{ext}").is_file()]
        if not found:
            raise DataError(path / f"{split}.jsonl", f"file not found (a folder needs {split}.jsonl, "
                                                     f"{split}.csv or {split}.tsv)", field=key)
        out.append((found[0], split))
    return out


def _as_list(value: Any, origin: Origin, field: str) -> list[str]:
    """The labels of a list of strings or a comma-separated string, each a usable label name."""
    if isinstance(value, str):
        items = split_list(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise origin.error(f"expected a list of labels or a comma-separated string, got {_short(value)}", field)
    return [check_label_name(v, origin, field) for v in items]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _as_json(value: Any, origin: Origin, field: str) -> Any:
    """A field's value, or the JSON it holds when it is a string (CSV cells hold JSON strings)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise origin.error(f"expected JSON (a list or an object, as text in a CSV cell), got {_short(value)}",
                           field) from None


def _parse(rec: Mapping[str, Any], mode: str, f: Mapping[str, str], origin: Origin) -> dict[str, Any]:
    """The raw parts of one record: id, text, gold (or None), annotations / distribution, split."""
    for need in (f["id"], f["text"], f[mode]):
        if need not in rec or rec[need] is None:
            raise origin.error("missing field", need)
    out: dict[str, Any] = {"id": rec[f["id"]], "text": rec[f["text"]], "origin": origin, "gold": None,
                           "split": rec.get(f["split"])}
    if mode != "labels" and rec.get(f["labels"]) is not None:
        out["gold"] = _as_list(rec[f["labels"]], origin, f["labels"])
    if mode == "labels":
        out["gold"] = _as_list(rec[f["labels"]], origin, f["labels"])
    elif mode == "annotations":
        anns = _as_json(rec[f["annotations"]], origin, f["annotations"])
        if not isinstance(anns, list):
            raise origin.error(f"expected a list of label lists, got {anns!r}", f["annotations"])
        out["annotations"] = [_as_list(a, origin, f["annotations"]) if isinstance(a, (list, str)) else a
                              for a in anns]
    else:
        out["distribution"] = _as_json(rec[f["distribution"]], origin, f["distribution"])
        if isinstance(out["distribution"], Mapping):
            for key in out["distribution"]:
                if key != NONE_LABEL:
                    check_label_name(key, origin, f["distribution"])
    return out


def _seen_labels(part: Mapping[str, Any]) -> set[str]:
    seen = set(part["gold"] or [])
    for ann in part.get("annotations") or []:
        if isinstance(ann, list):
            seen.update(ann)
    if isinstance(part.get("distribution"), Mapping):
        seen.update(k.strip() if isinstance(k, str) else k for k in part["distribution"])
    return {s for s in seen if isinstance(s, str)} - {NONE_LABEL}


def inferred_labels(parts: Sequence[Mapping[str, Any]], field: str) -> list[str]:
    """Return every label seen in the parsed records `parts` (`_parse`), sorted; two names that are one
    label (differing only in case or edge spaces) or `none` in another case are a DataError naming the
    record where each was first seen (labeldist.data.records.check_label_set)."""
    first: dict[str, Origin] = {}
    for part in parts:
        for lab in sorted(_seen_labels(part)):
            first.setdefault(lab, part["origin"])
    labels = sorted(first)
    return check_label_set(labels, Origin("inferred label set"), field, origins=[first[l] for l in labels])


def load_generic(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return a dataset from generic JSONL/CSV files (see the module docstring); works with any
    number of labels."""
    f = {"text": cfg["text_field"], "id": cfg["id_field"], "labels": cfg["labels_field"],
         "annotations": cfg["annotations_field"], "distribution": cfg["distribution_field"],
         "split": cfg["split_field"]}
    task = cfg["task"]
    mode: str | None = None
    parts: list[tuple[str | None, dict[str, Any]]] = []
    for path, file_split in _files(Path(str(cfg["path"])), name):
        for lineno, rec in iter_records(path):
            origin = Origin(str(path), lineno)
            if mode is None:
                mode = next((m for m in MODES if rec.get(f[m]) is not None), None)
                if mode is None:
                    raise origin.error(f"a record needs one of the fields {f['annotations']!r}, "
                                       f"{f['distribution']!r} or {f['labels']!r}", f["labels"])
            parts.append((file_split, _parse(rec, mode, f, origin)))
    if not parts:
        raise DataError(cfg["path"], "no records")
    labels = (check_label_set(list(cfg["labels"]), Origin(f"datasets.{name}"), "labels") if cfg.get("labels")
              else inferred_labels([p for _, p in parts], f[mode]))
    if not labels:
        raise DataError(cfg["path"], "no label found in the data and none configured", field=f["labels"])
    # splits: file names, else the split column of every record, else seeded by id
    if parts[0][0] is not None:
        assign = [s for s, _ in parts]
        note = "splits from the file names"
    elif all(p["split"] not in (None, "") for _, p in parts):
        assign = [normalise_split(p["split"], p["origin"], f["split"]) for _, p in parts]
        note = f"splits from the '{f['split']}' field"
    else:
        seed = int(cfg["split_seed"])
        by_id = seeded_split([str(p["id"]) for _, p in parts], seed, str(cfg["path"]))
        assign = [by_id[str(p["id"])] for _, p in parts]
        note = f"seeded 80/10/10 split by id (split_seed={seed})"
    source = {"annotations": "annotators", "distribution": "distribution", "labels": "gold"}[mode]
    data = LabelledData(name, "generic", labels, task, source, empty_splits(), notes=[note])
    for split, (_, p) in zip(assign, parts):
        kw = {"text_field": f["text"], "id_field": f["id"], "labels_field": f["labels"]}
        if mode == "annotations":
            ex = example_from_annotations(p["id"], p["text"], p["annotations"], labels, p["origin"], task=task,
                                          gold=p["gold"], annotations_field=f["annotations"], **kw)
        elif mode == "distribution":
            gold = p["gold"]
            if gold is None and task == "single_label":
                gold = _argmax(p["distribution"], p["origin"], f["distribution"])
            ex = example_from_distribution(p["id"], p["text"], p["distribution"], labels, p["origin"], gold=gold,
                                           distribution_field=f["distribution"], task=task, **kw)
        else:
            ex = example_from_gold(p["id"], p["text"], p["gold"], labels, p["origin"], **kw)
        if task == "single_label" and len(ex.labels) != 1:
            raise p["origin"].error(f"single-label task: {len(ex.labels)} gold labels", f["labels"])
        data.splits[split].append(ex)
    return data


def _argmax(dist: Any, origin: Origin, field: str) -> list[str]:
    if not isinstance(dist, Mapping) or not dist:
        return []  # example_from_distribution reports the problem
    items = sorted(((v, k) for k, v in dist.items() if k != NONE_LABEL and isinstance(v, (int, float))),
                   reverse=True)
    if not items or (len(items) > 1 and items[0][0] == items[1][0]):
        raise origin.error("single-label task: the distribution has no unique top label (give a labels field)",
                           field)
    return [items[0][1]]
