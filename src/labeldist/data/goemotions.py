"""GoEmotions (Demszky et al., 2020): the official aggregated TSVs, the datasets-hub copy, and the
raw per-rater CSVs.

Pooling (config `pooling`): `clusters` = the study's 7 clusters (a cluster is on when any member
emotion is on; METHODS.md section 1), `none` = the 27 emotions. `neutral` always means the empty
label set ("none"). The aggregated data has no annotators (p_ref_source "gold"); the rater files do:
ratings marked `example_very_unclear` are dropped (counted in `skipped_annotations`; an example left
without ratings is dropped and counted in `skipped`), and gold = pooled labels chosen by >= 50% of
the remaining raters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..io import TEXT_ENCODING, decode_error, read_json
from .readers import (empty_splits, iter_csv, iter_tsv_lines, normalise_split, require_dir, require_file,
                      seeded_split)
from .records import LabelledData, Origin, example_from_annotations, example_from_gold

EMOTIONS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
            "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
            "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
            "remorse", "sadness", "surprise", "neutral"]
NEUTRAL = "neutral"
# The study's 7-cluster pooling (METHODS.md section 1), used when emotion_clustering.json is absent.
CLUSTERS: dict[str, list[str]] = {
    "joy": ["amusement", "excitement", "joy", "love"],
    "optimism": ["desire", "optimism", "caring"],
    "admiration": ["pride", "admiration", "gratitude", "relief", "approval", "realization"],
    "surprise": ["surprise", "confusion", "curiosity"],
    "fear": ["fear", "nervousness"],
    "sadness": ["remorse", "embarrassment", "disappointment", "sadness", "grief"],
    "anger": ["anger", "disgust", "annoyance", "disapproval"],
}
RATER_COLUMNS = ["text", "id", "author", "subreddit", "link_id", "parent_id", "created_utc", "rater_id",
                 "example_very_unclear"]
TSV_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ---- pooling ------------------------------------------------------------------------------------
def read_clustering(path: Path, emotions: Sequence[str]) -> dict[str, list[str]]:
    """Return {cluster: [member emotions]} from emotion_clustering.json, checking every member is a
    known emotion and appears in one cluster only."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise DataError(path, "expected an object of cluster -> list of emotions")
    seen: dict[str, str] = {}
    for cluster, members in raw.items():
        for m in members:
            if m not in emotions or m == NEUTRAL:
                raise DataError(path, f"cluster {cluster!r}: unknown emotion {m!r}", field=cluster)
            if m in seen:
                raise DataError(path, f"emotion {m!r} in clusters {seen[m]!r} and {cluster!r}", field=cluster)
            seen[m] = cluster
    return {k: list(v) for k, v in raw.items()}


def label_space(pooling: str, clusters: Mapping[str, list[str]], emotions: Sequence[str]) \
        -> tuple[list[str], dict[str, str | None]]:
    """Return (label order, emotion -> label or None): clusters or the emotions; neutral -> None."""
    if pooling == "clusters":
        to_label: dict[str, str | None] = {m: c for c, ms in clusters.items() for m in ms}
        labels = list(clusters)
    else:
        labels = [e for e in emotions if e != NEUTRAL]
        to_label = {e: e for e in labels}
    to_label[NEUTRAL] = None
    for e in emotions:
        to_label.setdefault(e, None)  # an emotion outside every cluster pools to nothing
    return labels, to_label


def pool(emotions: Sequence[str], to_label: Mapping[str, str | None]) -> list[str]:
    """Return the distinct labels the given emotions pool to (neutral and unclustered ones vanish)."""
    out = []
    for e in emotions:
        lab = to_label[e]
        if lab is not None and lab not in out:
            out.append(lab)
    return out


def _emotions_and_clusters(folder: Path | None) -> tuple[list[str], dict[str, list[str]]]:
    emotions, clusters = list(EMOTIONS), dict(CLUSTERS)
    if folder is not None and (folder / "emotions.txt").is_file():
        path = folder / "emotions.txt"
        try:
            text = path.read_text(encoding=TEXT_ENCODING)
        except UnicodeDecodeError as err:
            raise decode_error(path, err) from None
        emotions = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if NEUTRAL not in emotions:
            raise DataError(path, f"no '{NEUTRAL}' emotion in the list")
    if folder is not None and (folder / "emotion_clustering.json").is_file():
        clusters = read_clustering(folder / "emotion_clustering.json", emotions)
    return emotions, clusters


# ---- aggregated TSVs (and the hub copy) ---------------------------------------------------------
def _indices_to_emotions(raw: str, emotions: Sequence[str], origin: Origin) -> list[str]:
    field = "emotion ids"
    if not raw.strip():
        raise origin.error("no emotion ids (the aggregated data marks an unlabelled comment 'neutral')", field)
    out = []
    for tok in raw.split(","):
        tok = tok.strip()
        if not tok.isdigit() or int(tok) >= len(emotions):
            raise origin.error(f"label {tok!r} is not in the label set (emotion ids 0-{len(emotions) - 1})", field)
        out.append(emotions[int(tok)])
    return out


def is_hub_id(path: str) -> bool:
    """True when `path` is not a local file or folder but looks like a hub id `owner/name`."""
    return not Path(path).exists() and bool(_HUB_ID.match(path))


def load_goemotions(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return GoEmotions from a folder holding train/dev/test.tsv (+ emotions.txt and
    emotion_clustering.json), or from the datasets hub when `path` is a hub id (config "simplified")."""
    path = str(cfg["path"])
    pooling = cfg.get("pooling", "clusters")
    if is_hub_id(path):
        return _load_goemotions_hub(name, path, pooling)
    folder = require_dir(path, f"datasets.{name}.path")
    emotions, clusters = _emotions_and_clusters(folder)
    labels, to_label = label_space(pooling, clusters, emotions)
    splits = empty_splits()
    for split, fname in TSV_SPLITS.items():
        fpath = require_file(folder / fname, f"datasets.{name}.path")
        for lineno, (text, raw, cid) in iter_tsv_lines(fpath, 3):
            origin = Origin(str(fpath), lineno)
            gold = pool(_indices_to_emotions(raw, emotions, origin), to_label)
            splits[split].append(example_from_gold(cid, text, gold, labels, origin, id_field="comment id"))
    return LabelledData(name, "goemotions", labels, "multilabel", "gold", splits,
                        notes=[f"GoEmotions aggregated splits, pooling={pooling}, neutral -> none"])


def _load_goemotions_hub(name: str, hub_id: str, pooling: str) -> LabelledData:
    """Load the hub copy through `datasets.load_dataset(hub_id, "simplified")` (train/validation/test,
    columns text, labels = emotion ids, id)."""
    import datasets  # heavy import, only on this path

    try:
        dd = datasets.load_dataset(hub_id, "simplified")
    except Exception as err:  # offline, unknown repo, ...: say which path and why
        raise DataError(hub_id, f"not a local file or folder, and loading it from the datasets hub failed: "
                                f"{type(err).__name__}: {err}", field=f"datasets.{name}.path") from None
    splits = empty_splits()
    emotions: list[str] | None = None
    for split, hub_split in HUB_SPLITS.items():
        if hub_split not in dd:
            raise DataError(hub_id, f"the hub dataset has no '{hub_split}' split (has {list(dd)})")
        ds = dd[hub_split]
        if emotions is None:
            emotions = list(ds.features["labels"].feature.names)
            labels, to_label = label_space(pooling, CLUSTERS, emotions)
        for row_no, row in enumerate(ds, start=1):
            origin = Origin(f"{hub_id}[{hub_split}]", row_no)
            raw = ",".join(str(i) for i in row["labels"])
            gold = pool(_indices_to_emotions(raw, emotions, origin), to_label)
            splits[split].append(example_from_gold(row["id"], row["text"], gold, labels, origin))
    return LabelledData(name, "goemotions", labels, "multilabel", "gold", splits,
                        notes=[f"GoEmotions from the datasets hub ({hub_id}, simplified), pooling={pooling}"])


# ---- raw per-rater CSVs -------------------------------------------------------------------------
def _rater_files(path: Path, name: str) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("goemotions_*.csv"))
        if not files:
            raise DataError(path, "no goemotions_*.csv rater files in the folder", field=f"datasets.{name}.path")
        return files
    return [require_file(path, f"datasets.{name}.path")]


def _official_splits(folder: Path) -> dict[str, str] | None:
    """{comment id: split} from the aggregated TSVs beside the rater files, when all three are there."""
    if not all((folder / f).is_file() for f in TSV_SPLITS.values()):
        return None
    return {cid: split for split, f in TSV_SPLITS.items() for _, (_, _, cid) in iter_tsv_lines(folder / f, 3)}


def _truthy(value: str, origin: Origin, field: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0", ""):
        return False
    raise origin.error(f"expected True/False or 1/0, got {value!r}", field)


def load_goemotions_raters(name: str, cfg: Mapping[str, Any]) -> LabelledData:
    """Return GoEmotions from the raw rater CSVs (goemotions_1.csv ...; one row per rater): rows
    grouped by `id` into annotations, very-unclear ratings dropped, pooled as configured.

    Splits: the official ones when train/dev/test.tsv sit in the same folder (comments outside them
    are left out, as in the official release, and noted), else a `split_field`
    column if present, else a seeded 80/10/10 split by id (config `split_seed`).
    """
    path = Path(str(cfg["path"]))
    pooling = cfg.get("pooling", "clusters")
    folder = path if path.is_dir() else path.parent
    emotions, clusters = _emotions_and_clusters(folder)
    labels, to_label = label_space(pooling, clusters, emotions)
    split_field = cfg.get("split_field", "split")
    groups: dict[str, dict[str, Any]] = {}
    unclear: dict[str, int] = defaultdict(int)
    for fpath in _rater_files(path, name):
        for lineno, row in iter_csv(fpath, required=RATER_COLUMNS + emotions):
            origin = Origin(str(fpath), lineno)
            cid = row["id"].strip()
            if not cid:
                raise origin.error("empty id", "id")
            if not row["text"].strip():
                raise origin.error("empty text", "text")
            g = groups.setdefault(cid, {"text": row["text"], "origin": origin, "annotations": [],
                                        "split": row.get(split_field)})
            if _truthy(row["example_very_unclear"], origin, "example_very_unclear"):
                unclear[cid] += 1
                continue
            chosen = [e for e in emotions if _truthy(row[e], origin, e)]
            g["annotations"].append(pool(chosen, to_label))
    official = _official_splits(folder)
    if official is None and any(g["split"] in (None, "") for g in groups.values()):
        assign = seeded_split(list(groups), int(cfg.get("split_seed", 0)), str(path))
        split_note = f"seeded 80/10/10 split by id (split_seed={cfg.get('split_seed', 0)})"
    elif official is None:
        assign = {cid: normalise_split(g["split"], g["origin"], split_field) for cid, g in groups.items()}
        split_note = f"splits from the '{split_field}' column"
    else:
        assign = official
        split_note = "official splits from train/dev/test.tsv"
    data = LabelledData(name, "goemotions_raters", labels, "multilabel", "annotators", empty_splits(),
                        notes=[f"GoEmotions raters, pooling={pooling}, neutral -> none, very-unclear ratings "
                               f"dropped, gold = share >= 0.5", split_note])
    outside = 0
    for cid, g in groups.items():
        split = assign.get(cid)
        if split is None:  # the official splits keep only comments whose raters agreed on something
            outside += 1
            continue
        data.skipped_annotations[split] += unclear.get(cid, 0)
        if not g["annotations"]:
            data.skipped[split] += 1  # every rating was very unclear
            continue
        data.splits[split].append(example_from_annotations(cid, g["text"], g["annotations"], labels,
                                                           g["origin"], annotations_field="emotions"))
    if outside:
        data.notes.append(f"{outside} rated comment(s) in none of the official splits: left out")
    return data
