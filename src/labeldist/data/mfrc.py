"""MFRC, the Moral Foundations Reddit Corpus (Trager et al., 2022): per-annotator CSV and the shipped
annotator-fraction JSONL.

Rules (docs/methods.md section 1): labels Authority, Care, Equality, Loyalty, Proportionality, Purity;
an annotation that mixes "Non-Moral" or "Thin Morality" with a foundation is dropped (counted in
`skipped_annotations`; an example left without annotations is dropped and counted in `skipped`);
a lone Non-Moral / Thin Morality annotation is the empty set ("none"); gold = share >= 0.5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from ..errors import DataError
from ..io import iter_jsonl
from .readers import (empty_splits, iter_csv, load_hub, normalise_split, read_split_file, require_columns,
                      require_file, seeded_split, split_list)
from .records import LabelledData, Origin, example_from_annotations, example_from_distribution

FOUNDATIONS = ["Authority", "Care", "Equality", "Loyalty", "Proportionality", "Purity"]
NON_MORAL = ("Non-Moral", "Thin Morality")
_CANON = {x.lower(): x for x in FOUNDATIONS + list(NON_MORAL)}


def parse_annotation(raw: str, origin: Origin, field: str = "annotation") -> list[str] | None:
    """Return the foundations of one MFRC annotation string ("Care,Purity"), [] for a lone
    Non-Moral / Thin Morality, or None when it mixes those with a foundation (dropped by rule).
    An empty string or an unknown foundation is a DataError."""
    items = split_list(raw)
    if not items:
        raise origin.error("empty annotation", field)
    canon = []
    for item in items:
        c = _CANON.get(item.lower())
        if c is None:
            raise origin.error(f"label {item!r} is not in the label set ({', '.join(FOUNDATIONS)}, "
                               f"{', '.join(NON_MORAL)})", field)
        canon.append(c)
    moral = [c for c in canon if c in FOUNDATIONS]
    if len(moral) < len(canon):  # some Non-Moral / Thin Morality
        return None if moral else []
    return moral


HUB_FILE = "final_mfrc_data.csv"
"""The per-annotator file of the hub dataset USC-MOLA-Lab/MFRC (text, subreddit, bucket, annotator,
annotation, confidence; one row per annotator and comment, no comment id)."""


def text_id(text: str) -> str:
    """The id of a comment without one: `mfrc-` + the first 12 hex digits of the SHA-1 of its text
    without edge spaces (the key of data/mfrc/study_splits.csv)."""
    return "mfrc-" + hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:12]


_text_id = text_id  # the former private name


def load_mfrc(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return MFRC from the per-annotator layout (columns text, annotator, annotation; optional id and
    split columns, config `id_field` / `split_field`): the hub dataset (`hub`: USC-MOLA-Lab/MFRC, file
    final_mfrc_data.csv, or a local folder in its layout) or a local CSV (`path`). Rows are grouped by
    id (else by text) into annotations. Splits: `split_file` (the study's split file: id or text ->
    split; comments it does not list are left out and noted), else the split column if present, else
    a seeded 80/10/10 split by text."""
    text_field = cfg["text_field"]
    id_field, split_field = cfg["id_field"], cfg["split_field"]
    if cfg.get("hub"):
        hub = str(cfg["hub"])
        dd = load_hub(hub, None, data_files=HUB_FILE, revision=cfg.get("hub_revision"), field=f"datasets.{name}.hub")
        source = f"{hub}/{HUB_FILE}"
        if "train" not in dd:
            raise DataError(source, f"expected one 'train' split, got {list(dd)}")
        require_columns(dd["train"], [text_field, "annotator", "annotation"], source)
        # the CSV's physical line: header on line 1 (texts with line breaks shift later lines; the
        # hub's datasets rows hold no line numbers)
        rows = ((row_no + 1, {k: ("" if v is None else v) for k, v in row.items()})
                for row_no, row in enumerate(dd["train"], start=1))
    else:
        path = require_file(Path(str(cfg["path"])), f"datasets.{name}.path")
        source = str(path)
        rows = iter_csv(path, required=[text_field, "annotator", "annotation"])
    groups: dict[str, dict[str, Any]] = {}
    has_split = None
    for lineno, row in rows:
        origin = Origin(source, lineno)
        if has_split is None:
            has_split = split_field in row
        text = row[text_field]
        if not isinstance(text, str) or not text.strip():
            raise origin.error("empty text", text_field)
        key = str(row[id_field]).strip() if id_field in row else text_id(text)
        g = groups.setdefault(key, {"text": text, "origin": origin, "annotations": [], "dropped": 0,
                                    "split": normalise_split(row[split_field], origin, split_field)
                                    if has_split else None})
        ann = parse_annotation(str(row["annotation"]), origin)
        if ann is None:
            g["dropped"] += 1
        else:
            g["annotations"].append(ann)
    seed = int(cfg["split_seed"])
    outside = 0
    if cfg.get("split_file"):
        split_path = str(cfg["split_file"])
        listed, key_col = read_split_file(split_path, f"datasets.{name}.split_file")
        assign = {}
        for k, g in groups.items():
            split = listed.get(k if key_col == "id" else g["text"])
            if split is None and key_col == "text":
                split = listed.get(g["text"].strip())
            if split is None:
                outside += 1
            else:
                assign[k] = split
        if not assign:
            raise DataError(split_path, f"no comment of {source} is listed in the split file (by {key_col}; "
                                        f"ids of comments without one are labeldist.data.mfrc.text_id(text))",
                            field=f"datasets.{name}.split_file")
        note = f"splits from {Path(split_path).name} ({len(listed)} listed, {len(assign)} found)"
    elif has_split:
        assign = {k: g["split"] for k, g in groups.items()}
        note = f"splits from the '{split_field}' column"
    else:
        by_text = seeded_split([g["text"] for g in groups.values()], seed, source)
        assign = {k: by_text[g["text"]] for k, g in groups.items()}
        note = f"seeded 80/10/10 split by text (split_seed={seed})"
    data = LabelledData(name, "mfrc", list(FOUNDATIONS), "multilabel", "annotators", empty_splits(),
                        notes=["MFRC: annotations mixing Non-Moral/Thin Morality with a foundation dropped; "
                               "lone Non-Moral/Thin Morality = none; gold = share >= 0.5", note])
    if outside:
        data.notes.append(f"{outside} comment(s) not in the split file: left out")
    for key, g in groups.items():
        split = assign.get(key)
        if split is None:
            continue
        data.skipped_annotations[split] += g["dropped"]
        if not g["annotations"]:
            data.skipped[split] += 1
            continue
        data.splits[split].append(example_from_annotations(key, g["text"], g["annotations"], FOUNDATIONS,
                                                           g["origin"], text_field=text_field,
                                                           id_field=id_field, annotations_field="annotation"))
    return data


def load_mfrc_fractions(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return MFRC from mfrc_annotator_fractions.jsonl (`id, split, text, distribution`): p_ref = the
    shipped fractions ("none" = share choosing no foundation), gold = share >= 0.5."""
    path = require_file(Path(str(cfg["path"])), f"datasets.{name}.path")
    text_field, id_field = cfg["text_field"], cfg["id_field"]
    dist_field, split_field = cfg["distribution_field"], cfg["split_field"]
    splits = empty_splits()
    for lineno, obj in iter_jsonl(path):
        origin = Origin(str(path), lineno)
        for f in (id_field, split_field, text_field, dist_field):
            if f not in obj:
                raise origin.error("missing field", f)
        split = normalise_split(obj[split_field], origin, split_field)
        splits[split].append(example_from_distribution(obj[id_field], obj[text_field], obj[dist_field],
                                                       FOUNDATIONS, origin, text_field=text_field,
                                                       id_field=id_field, distribution_field=dist_field))
    return LabelledData(name, "mfrc_fractions", list(FOUNDATIONS), "multilabel", "distribution", splits,
                        notes=["MFRC annotator fractions: p_ref = shipped fractions, gold = share >= 0.5"])
