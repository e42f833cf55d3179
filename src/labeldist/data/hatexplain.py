"""HateXplain (Mathew et al., 2021): the published dataset.json plus post_id_divisions.json.

Single-label task over hatespeech / normal / offensive (the order of the HateXplain code's label
encoder). p_ref = the distribution of the annotators' votes (sums to 1; none = 0). Gold = the
majority vote. **Decision (tie rule):** a post without a majority (e.g. three annotators, three
different labels) is "undecided" and dropped, counted in `skipped`, as the HateXplain paper does.
Splits: post_id_divisions.json (`train`, `val` -> dev, `test`) when it sits beside dataset.json,
else a seeded 80/10/10 split by post id (config `split_seed`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import DataError
from ..io import read_json
from .readers import empty_splits, normalise_split, require_file, seeded_split
from .records import LabelledData, Origin, example_from_annotations, majority_label

LABELS = ["hatespeech", "normal", "offensive"]
_KEY_OBJ = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*\{')


def object_key_lines(text: str) -> dict[str, int]:
    """Return {key: 1-based line} for each `"key": {` in a JSON text (first occurrence wins): the
    physical line where each post of dataset.json starts, for error messages."""
    out: dict[str, int] = {}
    line, pos = 1, 0
    for m in _KEY_OBJ.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        out.setdefault(m.group(1), line)
    return out


def _paths(path: Path, name: str) -> tuple[Path, Path | None]:
    if path.is_dir():
        data = require_file(path / "dataset.json", f"datasets.{name}.path")
    else:
        data = require_file(path, f"datasets.{name}.path")
    div = data.parent / "post_id_divisions.json"
    return data, div if div.is_file() else None


def read_divisions(path: Path) -> dict[str, str]:
    """Return {post_id: split} from post_id_divisions.json ({"train": [...], "val": [...], "test": [...]})."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DataError(path, "expected an object of split -> list of post ids")
    lines = object_key_lines(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for split_name, ids in raw.items():
        origin = Origin(str(path), lines.get(split_name))
        split = normalise_split(split_name, origin, split_name)
        if not isinstance(ids, list):
            raise origin.error("expected a list of post ids", split_name)
        if not ids:
            raise origin.error(f"empty official split file entry: split {split_name!r} lists no post id", split_name)
        for pid in ids:
            if str(pid) in out:
                raise origin.error(f"duplicate id {pid!r} (also in split '{out[str(pid)]}')", split_name)
            out[str(pid)] = split
    if not out:
        raise DataError(path, "empty official split file: no post ids")
    return out


def load_hatexplain(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return HateXplain: one example per post, text = the post tokens joined by spaces, annotations
    = one label per annotator; undecided posts (no majority) dropped and counted."""
    data_path, div_path = _paths(Path(str(cfg["path"])), name)
    raw = read_json(data_path)
    if not isinstance(raw, dict):
        raise DataError(data_path, "expected an object of post_id -> post", line=1)
    lines = object_key_lines(data_path.read_text(encoding="utf-8"))
    seed = int(cfg["split_seed"])
    if div_path is not None:
        assign = read_divisions(div_path)
        missing = sorted(set(assign) - set(raw))
        if missing:
            raise DataError(div_path, f"{len(missing)} post id(s) not in {data_path.name}, e.g. {missing[0]!r}")
        note = "splits from post_id_divisions.json (val -> dev)"
    else:
        assign = seeded_split(list(raw), seed, str(data_path))
        note = f"seeded 80/10/10 split by post id (split_seed={seed})"
    data = LabelledData(name, "hatexplain", list(LABELS), "single_label", "annotators", empty_splits(),
                        notes=["HateXplain: gold = majority vote; posts without a majority dropped "
                               "(counted in skipped)", note])
    outside = 0
    for pid, post in raw.items():
        origin = Origin(str(data_path), lines.get(pid))
        split = assign.get(pid)
        if split is None:
            outside += 1
            continue
        if not isinstance(post, dict):
            raise origin.error("expected an object", pid)
        annotators = post.get("annotators")
        if not isinstance(annotators, list) or not annotators:
            raise origin.error("example has zero annotators", "annotators")
        votes = []
        for i, ann in enumerate(annotators):
            lab = ann.get("label") if isinstance(ann, dict) else None
            if lab not in LABELS:
                raise origin.error(f"label {lab!r} is not in the label set ({', '.join(LABELS)})",
                                   f"annotators[{i}].label")
            votes.append(lab)
        tokens = post.get("post_tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise origin.error("expected a list of token strings", "post_tokens")
        if not " ".join(tokens).strip():
            raise origin.error("empty text", "post_tokens")
        top = majority_label(votes)
        if top is None:
            data.skipped[split] += 1
            continue
        data.splits[split].append(example_from_annotations(
            pid, " ".join(tokens), [[v] for v in votes], LABELS, origin, task="single_label", gold=[top],
            text_field="post_tokens", id_field="post_id", annotations_field="annotators"))
    if outside:
        data.notes.append(f"{outside} post(s) of dataset.json in no split of post_id_divisions.json: left out")
    return data
