"""MFRC, the Moral Foundations Reddit Corpus (Trager et al., 2022): per-annotator CSV and the shipped
annotator-fraction JSONL.

Rules (METHODS.md section 1): labels Authority, Care, Equality, Loyalty, Proportionality, Purity;
an annotation that mixes "Non-Moral" or "Thin Morality" with a foundation is dropped (counted in
`skipped_annotations`; an example left without annotations is dropped and counted in `skipped`);
a lone Non-Moral / Thin Morality annotation is the empty set ("none"); gold = share >= 0.5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from ..io import iter_jsonl
from .readers import empty_splits, iter_csv, normalise_split, require_file, seeded_split, split_list
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


def _text_id(text: str) -> str:
    """A stable id for a text without one: `mfrc-` + 12 hex digits of its SHA-1."""
    return "mfrc-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def load_mfrc(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return MFRC from a per-annotator CSV (columns text, annotator, annotation; optional id and
    split columns, config `id_field` / `split_field`): rows grouped by id (else by text) into
    annotations; splits from the split column if present, else a seeded 80/10/10 split by text."""
    path = require_file(Path(str(cfg["path"])), f"datasets.{name}.path")
    text_field = cfg.get("text_field", "text")
    id_field, split_field = cfg.get("id_field", "id"), cfg.get("split_field", "split")
    groups: dict[str, dict[str, Any]] = {}
    has_split = None
    for lineno, row in iter_csv(path, required=[text_field, "annotator", "annotation"]):
        origin = Origin(str(path), lineno)
        if has_split is None:
            has_split = split_field in row
        text = row[text_field]
        if not text.strip():
            raise origin.error("empty text", text_field)
        key = row[id_field].strip() if id_field in row else _text_id(text)
        g = groups.setdefault(key, {"text": text, "origin": origin, "annotations": [], "dropped": 0,
                                    "split": normalise_split(row[split_field], origin, split_field)
                                    if has_split else None})
        ann = parse_annotation(row["annotation"], origin)
        if ann is None:
            g["dropped"] += 1
        else:
            g["annotations"].append(ann)
    seed = int(cfg.get("split_seed", 0))
    if has_split:
        assign = {k: g["split"] for k, g in groups.items()}
        note = f"splits from the '{split_field}' column"
    else:
        by_text = seeded_split([g["text"] for g in groups.values()], seed, str(path))
        assign = {k: by_text[g["text"]] for k, g in groups.items()}
        note = f"seeded 80/10/10 split by text (split_seed={seed})"
    data = LabelledData(name, "mfrc", list(FOUNDATIONS), "multilabel", "annotators", empty_splits(),
                        notes=["MFRC: annotations mixing Non-Moral/Thin Morality with a foundation dropped; "
                               "lone Non-Moral/Thin Morality = none; gold = share >= 0.5", note])
    for key, g in groups.items():
        split = assign[key]
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
    text_field, id_field = cfg.get("text_field", "text"), cfg.get("id_field", "id")
    dist_field, split_field = cfg.get("distribution_field", "distribution"), cfg.get("split_field", "split")
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
